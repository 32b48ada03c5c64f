"""Push an exported judge folder to the Hugging Face Hub: one model repo, one commit.

:func:`plan_push` checks the folder before anything touches the network, and says what would go up:

* a model, one of: a merged model (`config.json` + `*.safetensors`, from `biasjudge export merge`),
  a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`, a training run's `adapter/`),
  or a GGUF (`*.gguf`: `biasjudge export gguf`'s file, or a GGUF LoRA with its manifest as the
  shipped judge has);
* a model card: `README.md`, or `MODEL_CARD.md` (what the shipped judge's folder holds), which is
  pushed as `README.md`, the file the Hub renders.

Hidden files, `__pycache__/` and training checkpoints (`checkpoint-*/`, optimizer states the judge
does not need) stay behind. :func:`push_judge` then creates the repo (`exist_ok`, so a second push
is a new commit) and uploads the planned files with `upload_folder`. Every failure a user can
cause, before or during the push, is a :class:`PushError` or a ConfigError naming the repo and
the cause, which the CLI prints as one line (exit 2).

huggingface_hub is imported inside the functions (the `hub` extra).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from biasjudge.errors import BiasJudgeError, ConfigError, MissingDependency

CARD_NAMES = ("README.md", "MODEL_CARD.md")
"""Model card file names, in order of preference; the card is always pushed as README.md."""
HUB_CARD = "README.md"


class PushError(BiasJudgeError):
    """The Hub could not be reached, or refused the push (offline, no network, bad token, no rights)."""


@dataclass(frozen=True)
class PushPlan:
    """What :func:`push_judge` uploads: checked, nothing sent yet."""

    folder: Path
    repo_id: str
    kind: str
    """`merged model`, `PEFT adapter` or `GGUF`."""
    files: tuple[tuple[str, Path], ...]
    """(path in the repo, local file), sorted by path in the repo."""
    private: bool = False

    @property
    def total_bytes(self) -> int:
        """Bytes to upload, all files together."""
        return sum(path.stat().st_size for _, path in self.files)

    def lines(self) -> list[str]:
        """One line per file (`path in repo  size`, and where a card was renamed), for --dry-run."""
        out = []
        for name, path in self.files:
            note = f"  (from {path.name})" if path.name != Path(name).name else ""
            out.append(f"{name}  {path.stat().st_size:,} bytes{note}")
        return out


def _require_hub() -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise MissingDependency("huggingface_hub", "hub", "biasjudge export push") from None


def _skipped(relative: Path) -> bool:
    parts = relative.parts
    return any(p.startswith(".") or p == "__pycache__" or p.startswith("checkpoint-") for p in parts)


def _model_kind(names: set[str]) -> str | None:
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return "merged model"
    if "adapter_config.json" in names and ({"adapter_model.safetensors", "adapter_model.bin"} & names):
        return "PEFT adapter"
    if any(n.endswith(".gguf") for n in names):
        return "GGUF"
    return None


def plan_push(folder: str | Path, repo_id: str, *, private: bool = False) -> PushPlan:
    """Check an exported judge folder and list what pushing it to `repo_id` would upload.

    Raises:
        ConfigError: `repo_id` is not a valid Hub id, the folder is missing, or it lacks a model
            or a model card (the message names the folder and what is missing). No network call
            is made.
    """
    _require_hub()
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"--repo-id {repo_id!r} is not a Hugging Face repo id (owner/name): {exc}") from None
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder to push to {repo_id}")
    found = sorted(
        (p.relative_to(folder), p) for p in folder.rglob("*") if p.is_file() and not _skipped(p.relative_to(folder))
    )
    top = {str(rel) for rel, _ in found if len(rel.parts) == 1}
    kind = _model_kind(top)
    if kind is None:
        raise ConfigError(
            f"{folder}: no model to push to {repo_id}: expected a merged model (config.json + *.safetensors, "
            "`biasjudge export merge`), a PEFT adapter (adapter_config.json + adapter_model.safetensors) or a "
            "*.gguf (`biasjudge export gguf`)"
        )
    card = next((folder / name for name in CARD_NAMES if name in top), None)
    if card is None or not card.read_text(encoding="utf-8", errors="replace").strip():
        what = "is empty" if card is not None else f"has no model card ({' or '.join(CARD_NAMES)})"
        raise ConfigError(
            f"{card or folder}: {what}; write one with `biasjudge export card --out {folder / HUB_CARD}` "
            f"before pushing to {repo_id}"
        )
    files = {str(rel.as_posix()): path for rel, path in found if str(rel) not in CARD_NAMES}
    files[HUB_CARD] = card
    return PushPlan(folder, repo_id, kind, tuple(sorted(files.items())), private)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hub_call(repo_id: str, call: Callable[[], object]) -> object:
    """`call()`, with what the Hub or the network throws turned into one PushError line."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled

    try:
        return call()
    except OfflineModeIsEnabled:
        raise PushError(
            f"cannot push to the Hugging Face Hub repo {repo_id}: offline mode is on (HF_HUB_OFFLINE); unset it"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " (check the token: --token or HF_TOKEN)" if status in (401, 403) else ""
        raise PushError(
            f"the Hugging Face Hub refused the push to {repo_id} (HTTP {status}){hint}: {_one_line(exc)}"
        ) from None
    except (HTTPError, OSError) as exc:
        raise PushError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to push {repo_id}: "
            f"{type(exc).__name__}: {_one_line(exc)}"
        ) from None


def push_judge(plan: PushPlan, *, token: str | None = None, commit_message: str | None = None) -> str:
    """Create `plan.repo_id` (if needed) and upload the planned files in one commit; returns the commit URL.

    The token is `token`, else `$HF_TOKEN`, else the one `hf auth login` saved. The files are
    linked into a temporary folder laid out as the repo will be (the card as README.md), which
    `upload_folder` sends.

    Raises:
        ConfigError: no token at all (before any network call).
        PushError: offline mode, the Hub unreachable, or the Hub refusing (bad token, no rights).
    """
    from huggingface_hub import HfApi, get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise ConfigError(
            f"no Hugging Face token to push {plan.repo_id}: pass --token, set HF_TOKEN, or run `hf auth login`"
        )
    api = HfApi(token=token)
    message = commit_message or f"biasjudge export push: {plan.kind} from {plan.folder.name}"
    _hub_call(plan.repo_id, lambda: api.create_repo(plan.repo_id, private=plan.private or None, exist_ok=True))
    with tempfile.TemporaryDirectory(prefix="biasjudge-push-") as staging:
        for name, path in plan.files:
            target = Path(staging) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())  # upload_folder reads through the link; nothing is copied
        info = _hub_call(
            plan.repo_id,
            lambda: api.upload_folder(repo_id=plan.repo_id, folder_path=staging, commit_message=message),
        )
    return str(getattr(info, "commit_url", None) or f"{api.endpoint}/{plan.repo_id}")


__all__ = ["CARD_NAMES", "PushError", "PushPlan", "plan_push", "push_judge"]
