"""Merge a trained LoRA adapter into its base: one safetensors folder that other tools convert.

The merged folder gets the tokenizer and, from :mod:`.tokenizer`, a SentencePiece `tokenizer.model`
and the added-token table, so that llama.cpp's converter writes the base's own vocabulary. What
training recorded beside the adapter (base model, chat format; :data:`ADAPTER_META`) is read here
and carried into the merged folder, for the converter and the GGUF check to find.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biasjudge.errors import ConfigError
from biasjudge.io import write_json
from biasjudge.train.common import ADAPTER_META, load_causal_lm, load_tokenizer
from biasjudge.train.export.tokenizer import base_added_tokens, record_added_tokens, tokenizer_model_for


def adapter_meta(adapter_dir: str | Path) -> dict[str, Any]:
    """What training recorded beside an adapter (base model, chat format, target), or {}."""
    path = Path(adapter_dir) / ADAPTER_META
    return json.loads(path.read_text()) if path.is_file() else {}


def adapter_base(adapter_dir: Path, base: str | None = None) -> str:
    """`base` if given, else the base model training recorded beside the adapter."""
    if base:
        return base
    recorded = adapter_meta(adapter_dir).get("base_model")
    if not recorded:
        raise ConfigError(f"{adapter_dir}: no {ADAPTER_META} naming the base model; pass the base model")
    return str(recorded)


def _dtype(name: str) -> Any:
    import torch

    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"dtype must be one of {', '.join(table)}, got {name!r}") from None


def merge_adapter(base: str | None, adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Merge a LoRA adapter into its base and save safetensors + tokenizer (+ tokenizer.model).

    Args:
        base: the base model (hub id, folder, `.gguf`, `embedded`); None: the one training recorded.
        adapter_dir: a PEFT adapter folder (an SFT/DPO run's `adapter/`).
        out_dir: folder to write.
        dtype: float32, bfloat16 or float16.

    Returns:
        out_dir.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir}: not a PEFT adapter folder (no adapter_config.json)")
    base = adapter_base(adapter_dir, base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_causal_lm(base, dtype=_dtype(dtype))
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer_source = str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else base
    load_tokenizer(tokenizer_source).save_pretrained(str(out))
    sp_model = tokenizer_model_for(base, out)
    record_added_tokens(out, base_added_tokens(base))
    meta = {
        **adapter_meta(adapter_dir),
        "base_model": base,
        "adapter": str(adapter_dir),
        "dtype": dtype,
        "tokenizer_model": sp_model is not None,
    }
    write_json(out / ADAPTER_META, meta)
    return out
