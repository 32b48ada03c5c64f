"""Merge, GGUF round trip, Ollama Modelfile and model card, on a tiny Gemma 3 with the real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from biasjudge.errors import ThinkingModeError
from biasjudge.train.card import modelfile_template, write_model_card, write_modelfile
from train_tiny import prompt, tiny_model_folder

TOKEN_KEYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
)


@pytest.fixture(scope="session")
def tiny_model(gguf_model: Path) -> Path:
    return tiny_model_folder(gguf_model)


@pytest.fixture(scope="session")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A LoRA adapter with non-zero weights (so merging changes the model)."""
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model

    from biasjudge.train.common import load_causal_lm

    torch.manual_seed(1)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(load_causal_lm(str(tiny_model)), config)
    folder = tmp_path_factory.getbasetemp() / "tiny-adapter"
    model.save_pretrained(str(folder))
    (folder / "biasjudge.json").write_text(json.dumps({"base_model": str(tiny_model), "chat_format": "gemma4"}))
    return folder


TEXTS = [
    "Hello world, how are you?",
    "  two spaces\tand\n\nnewlines",
    "Ünïcödé 日本語 🤖 <verdict>A</verdict>",
    "Response A: the old man.\n\nResponse B: unknown.",
]
"""Texts the rebuilt SentencePiece model must split like the tokenizers it stands in for."""


def _sentencepiece(tiny_model: Path):  # type: ignore[no-untyped-def]
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    processor.LoadFromFile(str(tiny_model / "tokenizer.model"))
    return processor


def test_sentencepiece_model_tokenizes_like_the_transformers_tokenizer(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    processor = _sentencepiece(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    assert processor.vocab_size() == len(tokenizer) == 262144
    assert (processor.bos_id(), processor.eos_id()) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
    for text in TEXTS:
        assert processor.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"], text


def test_sentencepiece_model_tokenizes_like_the_gguf_tokenizer(tiny_model: Path, gguf_model: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")  # under CI=true a missing llama_cpp fails (conftest)
    processor = _sentencepiece(tiny_model)
    # The GGUF's own tokenizer, as llama.cpp runs it (special tokens not parsed, as SentencePiece does).
    vocab = llama_cpp.Llama(model_path=str(gguf_model), vocab_only=True, verbose=False)
    try:
        for text in TEXTS:
            assert processor.encode(text) == vocab.tokenize(text.encode(), add_bos=False, special=False), text
    finally:
        vocab.close()


def test_sentencepiece_model_proto_sets_the_gguf_layout() -> None:
    import sentencepiece as spm

    from biasjudge.train.export import sentencepiece_model_proto

    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "b", "ab", "\u2581", "a b"]
    scores = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -0.5, -3.0, 0.0]
    types = [3, 3, 3, 3, 1, 1, 1, 1, 4]  # GGUF types the unknown piece CONTROL; user-defined pieces have spaces
    proto = sentencepiece_model_proto(
        tokens, scores, types, unk_id=3, bos_id=2, eos_id=1, pad_id=0, byte_fallback=False
    )
    assert proto.pieces[3].type == proto.pieces[3].UNKNOWN
    assert proto.pieces[8].piece == "a\u2581b" and proto.pieces[8].type == proto.pieces[8].USER_DEFINED
    assert (proto.trainer_spec.unk_piece, proto.trainer_spec.bos_piece) == ("<unk>", "<bos>")
    assert not proto.normalizer_spec.add_dummy_prefix and proto.normalizer_spec.escape_whitespaces
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto.SerializeToString())
    assert (processor.unk_id(), processor.bos_id(), processor.eos_id(), processor.pad_id()) == (3, 2, 1, 0)
    assert processor.encode("abab a b") == [6, 6, 7, 8]  # BPE merges by score, no dummy prefix


def test_merge_gives_the_peft_model_logits(tmp_path: Path, tiny_model: Path, adapter: Path) -> None:
    import torch
    from peft import PeftModel

    from biasjudge.train.common import load_causal_lm
    from biasjudge.train.export import merge_adapter

    merged_dir = merge_adapter(None, adapter, tmp_path / "merged")
    assert {"model.safetensors", "tokenizer.json", "tokenizer.model", "config.json"} <= {
        p.name for p in merged_dir.iterdir()
    }
    ids = torch.randint(5, 2000, (2, 24))
    with torch.no_grad():
        peft_logits = PeftModel.from_pretrained(load_causal_lm(str(tiny_model)), str(adapter))(input_ids=ids).logits
        base_logits = load_causal_lm(str(tiny_model))(input_ids=ids).logits
        merged_logits = load_causal_lm(str(merged_dir))(input_ids=ids).logits
    assert (peft_logits - base_logits).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.heavy  # 60 s of export; make test keeps the merge and tokenizer checks, make test-all runs it
def test_gguf_round_trip_loads_in_llama_cpp(tmp_path: Path, tiny_model: Path, adapter: Path, gguf_model: Path) -> None:
    pytest.importorskip("llama_cpp")
    from biasjudge.train.export import export_gguf, gguf_metadata, merge_adapter, verify_gguf

    merged = merge_adapter(None, adapter, tmp_path / "merged")
    out = export_gguf(merged, tmp_path / "tiny-f16.gguf", "f16")
    assert gguf_metadata(out, TOKEN_KEYS) == gguf_metadata(gguf_model, TOKEN_KEYS)  # the original vocabulary
    # The tiny model's weights are large (initializer_range 0.3, random LoRA), so its logits are sharp and
    # llama.cpp's f16 compute moves the 3-way probabilities by ~0.04; a trained 270M stays within 0.02-0.03.
    check = verify_gguf(out, merged, [prompt(i) for i in range(2)], quant="f16", tolerance=0.08)
    assert check.passed, check.to_dict()
    assert check.token_ids_match == 2
    first = check.per_prompt[0]
    # Score mode's TIE is two tokens (T + IE) in the Gemma 3 vocabulary: the check reads all of them.
    assert [len(first["choice_tokens"][v]) for v in ("A", "B", "TIE")] == [1, 1, 2]
    assert sum(first["llama_cpp"].values()) == pytest.approx(1.0)
    assert sum(first["transformers"].values()) == pytest.approx(1.0)


@pytest.mark.heavy  # 35 s, the same conversion and check as the merged round trip above: make test-all runs it
def test_a_gguf_lora_adapter_applies_in_llama_cpp(tmp_path: Path, tiny_model: Path, adapter: Path) -> None:
    pytest.importorskip("llama_cpp")
    from biasjudge.train.export import export_gguf, verify_gguf

    # The LoRA adapter as a GGUF, applied in llama.cpp on the base GGUF, against base + PEFT adapter.
    lora = export_gguf(adapter, tmp_path / "tiny-lora.gguf", "Q8_0")
    base_gguf = export_gguf(tiny_model, tmp_path / "tiny-base-f16.gguf", "f16")
    lora_check = verify_gguf(base_gguf, adapter, [prompt(i) for i in range(2)], lora_path=lora, tolerance=0.08)
    assert lora_check.passed, lora_check.to_dict()
    assert lora_check.gguf.endswith(" + " + str(lora))


def test_modelfile_writes_the_training_turns(tmp_path: Path) -> None:
    from biasjudge.prompts.render import render_prompt

    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"GGUF")
    path = write_modelfile(gguf, tmp_path / "Modelfile", "Judge fairly.", "gemma4")
    text = path.read_text()
    assert text.startswith("FROM ./judge.gguf\n")
    assert 'PARAMETER stop "<turn|>"' in text and "PARAMETER temperature 0" in text and "num_ctx 4096" in text
    # the template with System/Prompt filled in is exactly what render_prompt gives
    filled = modelfile_template("gemma4").replace("{{ if .System }}", "").replace("{{ if .Prompt }}", "")
    filled = filled.replace("{{ end }}", "").replace("{{ .System }}", "S").replace("{{ .Prompt }}", "U")
    filled = filled.replace("{{ .Response }}<turn|>", "")
    from biasjudge.records import ChatMessage

    assert filled == render_prompt([ChatMessage(role="system", content="S"), ChatMessage(role="user", content="U")])
    assert "<start_of_turn>user\n{{ if .System }}" in modelfile_template("gemma3")
    with pytest.raises(ThinkingModeError):
        write_modelfile(gguf, tmp_path / "M2", "<|think|> judge", "gemma4")


def test_model_card_front_matter_and_label_sources(tmp_path: Path) -> None:
    log = tmp_path / "predictions.json"
    log.write_text(
        json.dumps(
            {
                "run_id": "r",
                "metrics": {
                    "270m-lora": {
                        "kappa_in_dist": 0.677,
                        "kappa_in_dist_ci_low": 0.596,
                        "kappa_in_dist_ci_high": 0.75,
                        "kappa_ood_religion": 0.504,
                        "position_bias_in_dist": 0.133,
                        "parse_failure_rate": 0.0,
                    }
                },
                "detailed": [],
            }
        )
    )
    rows = tmp_path / "sft.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps({"label_source": s, "reasoning_source": "template", "verdict": "A"})
            for s in ["answer_key"] * 3 + ["human"]
        )
        + "\n"
    )
    card = write_model_card(
        tmp_path / "README.md",
        base_model="google/gemma-3-270m",
        eval_log_or_report=log,
        datasets=["krishnakartik/gemma4-social-bias-judge-pairs"],
        license="gemma",
        rows_meta=[rows],
    )
    text = card.read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["base_model"] == "google/gemma-3-270m" and front["license"] == "gemma"
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["kappa_in_dist"] == 0.677 and metrics["kappa_ood_religion"] == 0.504
    assert "| kappa_in_dist | 0.677 | [0.596, 0.750] |" in text
    assert "answer_key (3 rows)" in text and "human (1 rows)" in text
