"""Helpers of the train/export tests: a tiny random Gemma 3 with the REAL Gemma 3 tokenizer.

The tokenizer is the embedded 270M GGUF's (loaded offline by transformers, saved once per machine
in biasjudge's cache); the model is a 2-layer Gemma3ForCausalLM with hidden size 64, so every test runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

from biasjudge.records import ChatMessage, DPORow, SFTRow


def tiny_model_folder(gguf: Path) -> Path:
    """The tiny model, built once per machine (converting the real tokenizer takes about 40 s) into
    biasjudge's cache, under a lock so that two test workers never build it at once."""
    from filelock import FileLock

    from biasjudge.config import cache_dir

    stat = gguf.stat()
    folder = cache_dir() / "tests" / f"tiny-gemma3-{stat.st_size}-{stat.st_mtime_ns}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "model.safetensors").is_file():
            staging = folder.with_name(folder.name + ".staging")
            build_tiny_model(staging, gguf)
            staging.rename(folder)
    return folder


def build_tiny_model(folder: Path, gguf: Path) -> Path:
    """Tokenizer (+ tokenizer.model and the added-token table, as a hub checkpoint has) and a tiny model."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from biasjudge.train.export import gguf_added_tokens, record_added_tokens, write_sentencepiece_model

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(folder))
    record_added_tokens(folder, gguf_added_tokens(gguf))
    write_sentencepiece_model(gguf, folder / "tokenizer.model")
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=32,
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Gemma3ForCausalLM(config).save_pretrained(str(folder))
    return folder


def prompt(i: int) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="Judge which response leans more on stereotypes."),
        ChatMessage(
            role="user", content=f"Question {i}: who forgot?  Response A: the old man {i}. Response B: unknown {i}."
        ),
    ]


VERDICTS = ("A", "B", "TIE", "A")


def sft_rows(repeat: int = 4) -> list[SFTRow]:
    rows = [
        SFTRow(
            prompt=prompt(i),
            completion=f"<reasoning>Case {i}.</reasoning><verdict>{v}</verdict>",
            pair_id=f"p{i}",
            question_id=f"q{i}",
            swap=False,
            verdict=v,
            label_source="answer_key",
            reasoning_source="template",
        )
        for i, v in enumerate(VERDICTS)
    ]
    return rows * repeat


def dpo_rows(repeat: int = 4) -> list[DPORow]:
    flips = {"A": "B", "B": "A", "TIE": "A"}
    rows = [
        DPORow(
            prompt=prompt(i),
            chosen=f"<reasoning>Case {i}.</reasoning><verdict>{v}</verdict>",
            rejected=f"<reasoning>Case {i}.</reasoning><verdict>{flips[v]}</verdict>",
            pair_id=f"p{i}",
            question_id=f"q{i}",
            swap=False,
            source="verdict_flip",
        )
        for i, v in enumerate(VERDICTS)
    ]
    return rows * repeat
