"""The judge biasjudge ships: a LoRA adapter (GGUF) trained by `biasjudge train judge`, applied by
llama.cpp on top of the unchanged embedded Gemma 3 270M base, with the system prompt it was
trained on.

A trained adapter travels with a manifest, `<adapter>.json` beside `<adapter>.gguf`:

- `system_prompt` (the text, byte for byte) and `system_prompt_sha256`: a judge is only meaningful
  with the prompt it learnt; running it with another one is refused (:func:`check_system_prompt`).
- `adapter_sha256`: checked against the file when the shipped judge loads.
- `chat_format`, `order` (`both`: order-debiased by default), `base`, and what it was trained on.

The shipped one lives in the package (`biasjudge/assets/embedded-judge/`), beside its model card;
`llamacpp:embedded` loads it, `llamacpp:embedded-base` is the untrained base.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from biasjudge.errors import ConfigError
from biasjudge.io.files import sha256_file

SHIPPED_DIR_NAME = "embedded-judge"
ADAPTER_FILE = "adapter.gguf"
MANIFEST_SUFFIX = ".json"
CARD_FILE = "MODEL_CARD.md"


def sha256_text(text: str) -> str:
    """Hex SHA-256 of `text` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AdapterManifest:
    """What a trained adapter needs at inference, read from `<adapter>.json`."""

    adapter: Path
    """The GGUF LoRA file."""
    system_prompt: str
    """The system prompt it was trained with, byte for byte."""
    system_prompt_sha256: str
    adapter_sha256: str | None = None
    """sha256 of the adapter file when it was written (None: not recorded)."""
    chat_format: str = "gemma4"
    order: str = "both"
    """`both`: combine both orders of a pair by default; `single`: judge the shown order only."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Everything else in the manifest (training data hashes, config, commit, metrics)."""


def manifest_path(adapter: Path) -> Path:
    """The manifest beside an adapter: the same name with the manifest suffix."""
    return adapter.with_suffix(MANIFEST_SUFFIX)


def write_manifest(adapter: Path, *, system_prompt: str, chat_format: str, order: str, **extra: Any) -> Path:
    """Write `<adapter>.json` for a trained GGUF adapter; returns its path."""
    data = {
        "adapter": adapter.name,
        "adapter_sha256": sha256_file(adapter),
        "system_prompt": system_prompt,
        "system_prompt_sha256": sha256_text(system_prompt),
        "chat_format": chat_format,
        "order": order,
        **extra,
    }
    path = manifest_path(adapter)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_manifest(adapter: Path) -> AdapterManifest | None:
    """The manifest beside `adapter`, or None when it has none (an adapter from elsewhere)."""
    path = manifest_path(adapter)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        prompt = data.pop("system_prompt")
        return AdapterManifest(
            adapter=adapter,
            system_prompt=prompt,
            system_prompt_sha256=data.pop("system_prompt_sha256", sha256_text(prompt)),
            adapter_sha256=data.pop("adapter_sha256", None),
            chat_format=data.pop("chat_format", "gemma4"),
            order=data.pop("order", "both"),
            extra=data,
        )
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid adapter manifest ({exc})") from None


def shipped_dir() -> Path:
    """Folder of the shipped judge inside the installed package."""
    return Path(str(resources.files("biasjudge") / "assets" / SHIPPED_DIR_NAME))


READING_DIR_NAME = "reading-judge"
"""Folder of the default judge's model files (question analysis, free-text model) in the package."""


def shipped_reading_dir() -> Path:
    """Folder of the default judge's model files inside the installed package."""
    return Path(str(resources.files("biasjudge") / "assets" / READING_DIR_NAME))


def shipped_manifest(*, verify: bool = True) -> AdapterManifest:
    """The shipped judge's manifest; with `verify`, the adapter file's sha256 must match it."""
    adapter = shipped_dir() / ADAPTER_FILE
    manifest = read_manifest(adapter) if adapter.is_file() else None
    if manifest is None:
        raise ConfigError(
            f"the shipped judge is missing from this install ({adapter}); rebuild it with "
            "`biasjudge train judge --config configs/embedded-judge.yaml --install`, or use "
            "'llamacpp:embedded-base' for the untrained base model"
        )
    if verify and manifest.adapter_sha256 and sha256_file(adapter) != manifest.adapter_sha256:
        raise ConfigError(f"{adapter}: sha256 differs from its manifest; the shipped judge is damaged, reinstall")
    return manifest


def check_system_prompt(manifest: AdapterManifest, system_prompt: str | None) -> str:
    """The prompt to judge with: the manifest's, or `system_prompt` if it is byte-identical to it."""
    if system_prompt is None or system_prompt == manifest.system_prompt:
        return manifest.system_prompt
    raise ConfigError(
        f"the adapter {manifest.adapter.name} was trained with another system prompt "
        f"(sha256 {manifest.system_prompt_sha256[:12]}, given {sha256_text(system_prompt)[:12]}); a trained judge "
        "only works with its own prompt. Drop --system-prompt-file, or use the base model "
        "('llamacpp:embedded-base') to try other prompts."
    )
