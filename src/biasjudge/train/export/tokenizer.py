"""The tokenizer files a merged model needs so that llama.cpp's converter keeps the base's vocabulary.

A Gemma GGUF carries its SentencePiece vocabulary as metadata only. Without a `tokenizer.model`
beside the merged safetensors, llama.cpp's converter falls back to tokenizer.json and writes a BPE
vocabulary with different token ids; without the added-token table in tokenizer_config.json it types
the control and whitespace tokens NORMAL. This module rebuilds both from the base:

* :func:`write_sentencepiece_model`: `tokenizer.model` from the GGUF's vocabulary, written with
  SentencePiece's own ModelProto (`sentencepiece.sentencepiece_model_pb2`, needs `protobuf`);
* :func:`gguf_added_tokens` and :func:`record_added_tokens`: the added-token table;
* :func:`tokenizer_model_for` and :func:`base_added_tokens`: both, for any base reference
  (a GGUF, a local folder, a hub id).
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biasjudge.errors import MissingDependency
from biasjudge.io import write_json
from biasjudge.train.config import resolve_model

GGUF_VOCAB_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_space_prefix",
)
CONTROL, USER_DEFINED = 3, 4
"""GGUF's `tokenizer.ggml.token_type` numbering, which SentencePiece's piece types share
(1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)."""


def gguf_metadata(path: str | Path, keys: Sequence[str]) -> dict[str, Any]:
    """Values of the given metadata keys of a GGUF file (missing keys are absent)."""
    try:
        import gguf
    except ImportError:
        raise MissingDependency("gguf", "hf", "reading GGUF metadata") from None
    reader = gguf.GGUFReader(str(path))
    found: dict[str, Any] = {}
    for key in keys:
        item = reader.fields.get(key)
        if item is not None:
            found[key] = item.contents()
    return found


@functools.lru_cache(maxsize=2)
def gguf_vocab(gguf_path: str) -> dict[str, Any]:
    """The tokenizer metadata of a GGUF file (read once per path; reading 262k strings takes seconds)."""
    return gguf_metadata(gguf_path, GGUF_VOCAB_KEYS)


def sentencepiece_model_proto(
    tokens: Sequence[str],
    scores: Sequence[float],
    types: Sequence[int],
    *,
    unk_id: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    byte_fallback: bool = True,
) -> Any:
    """A SentencePiece `ModelProto` (BPE, identity normaliser, no dummy prefix) for a GGUF vocabulary.

    llama.cpp's converter writes user-defined pieces with plain spaces; SentencePiece matches them
    escaped (`▁`). The special pieces are named as well as numbered: SentencePiece looks their ids
    up by piece.
    """
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:  # sentencepiece itself, or the protobuf runtime its generated module needs
        raise MissingDependency("protobuf", "train", "rebuilding tokenizer.model from a GGUF") from None
    sp_pb2: Any = sentencepiece_model_pb2  # generated code: its classes are made at import, unseen by mypy
    model = sp_pb2.ModelProto()
    for index, (piece, score, kind) in enumerate(zip(tokens, scores, types, strict=True)):
        if index == unk_id:
            kind = sp_pb2.ModelProto.SentencePiece.UNKNOWN  # SentencePiece needs it typed so (GGUF may say CONTROL)
        if int(kind) == USER_DEFINED:
            piece = piece.replace(" ", "\u2581")
        model.pieces.add(piece=piece, score=float(score), type=int(kind))
    trainer = model.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = byte_fallback
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = unk_id, bos_id, eos_id, pad_id
    for name, special in (("unk_piece", unk_id), ("bos_piece", bos_id), ("eos_piece", eos_id), ("pad_piece", pad_id)):
        if 0 <= special < len(tokens):
            setattr(trainer, name, tokens[special])
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model


def write_sentencepiece_model(gguf_path: str | Path, out: str | Path) -> Path | None:
    """Write `tokenizer.model` rebuilt from a GGUF's SentencePiece vocabulary; None if it has none."""
    meta = gguf_vocab(str(gguf_path))
    if meta.get("tokenizer.ggml.model") != "llama" or "tokenizer.ggml.scores" not in meta:
        return None
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        return None  # a dummy-prefix SentencePiece model; not the Gemma layout this writer knows
    model = sentencepiece_model_proto(
        meta["tokenizer.ggml.tokens"],
        meta["tokenizer.ggml.scores"],
        meta["tokenizer.ggml.token_type"],
        unk_id=int(meta.get("tokenizer.ggml.unknown_token_id", 0)),
        bos_id=int(meta.get("tokenizer.ggml.bos_token_id", -1)),
        eos_id=int(meta.get("tokenizer.ggml.eos_token_id", -1)),
        pad_id=int(meta.get("tokenizer.ggml.padding_token_id", -1)),
    )
    out = Path(out)
    out.write_bytes(model.SerializeToString())
    return out


def gguf_added_tokens(gguf_path: str | Path) -> list[dict[str, Any]]:
    """The control (special) and user-defined tokens of a GGUF, as tokenizer.json `added_tokens` entries."""
    meta = gguf_vocab(str(gguf_path))
    found = []
    for index, (token, kind) in enumerate(
        zip(meta.get("tokenizer.ggml.tokens", []), meta.get("tokenizer.ggml.token_type", []), strict=True)
    ):
        if int(kind) in (CONTROL, USER_DEFINED):
            # user-defined pieces are stored with plain spaces in GGUF, escaped (▁) in the vocabulary
            content = token if int(kind) == CONTROL else token.replace(" ", "\u2581")
            found.append(
                {
                    "id": index,
                    "content": content,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": int(kind) == CONTROL,
                }
            )
    return found


def record_added_tokens(folder: Path, extra: Sequence[dict[str, Any]] = ()) -> int:
    """Copy tokenizer.json's added tokens into tokenizer_config.json's `added_tokens_decoder`.

    transformers 5 keeps them in tokenizer.json only; llama.cpp's converter reads token types from
    `added_tokens_decoder` (special -> CONTROL, else USER_DEFINED), so without this the Gemma
    control and whitespace tokens would be typed NORMAL in the GGUF. `extra` entries (e.g. from
    :func:`gguf_added_tokens`) fill ids tokenizer.json lacks. Returns the count recorded.
    """
    tokenizer_json = folder / "tokenizer.json"
    config_json = folder / "tokenizer_config.json"
    if not tokenizer_json.is_file() or not config_json.is_file():
        return 0
    added = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", [])
    config = json.loads(config_json.read_text(encoding="utf-8"))
    decoder = config.get("added_tokens_decoder") or {}
    for token in [*added, *extra]:
        entry = {
            k: token[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special") if k in token
        }
        decoder.setdefault(str(token["id"]), entry)
    config["added_tokens_decoder"] = decoder
    write_json(config_json, config)
    return len(added)


def base_added_tokens(base: str) -> list[dict[str, Any]]:
    """Added tokens the base declares (GGUF control/user-defined tokens, or its tokenizer_config's)."""
    resolved = resolve_model(base)
    if resolved.endswith(".gguf"):
        return gguf_added_tokens(resolved)
    config = Path(resolved) / "tokenizer_config.json"
    if not config.is_file():
        return []
    decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
    return [{"id": int(key), **value} for key, value in decoder.items()]


def tokenizer_model_for(base: str, out_dir: Path) -> Path | None:
    """Put a SentencePiece tokenizer.model for `base` into out_dir where one can be had."""
    resolved = resolve_model(base)
    target = out_dir / "tokenizer.model"
    if resolved.endswith(".gguf"):
        return write_sentencepiece_model(resolved, target)
    local = Path(resolved) / "tokenizer.model"
    if local.is_file():
        shutil.copyfile(local, target)
        return target
    if not Path(resolved).exists():
        try:
            from huggingface_hub import hf_hub_download

            shutil.copyfile(hf_hub_download(resolved, "tokenizer.model"), target)
            return target
        except Exception:  # no such file on the hub, or offline: the converter falls back to tokenizer.json
            return None
    return None
