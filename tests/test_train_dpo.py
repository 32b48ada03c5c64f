"""DPO on a tiny random Gemma 3 with the real tokenizer, continuing from an SFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biasjudge.io import write_records
from train_tiny import dpo_rows, tiny_model_folder

pytest.importorskip("trl")


@pytest.fixture(scope="session")
def tiny_model(gguf_model: Path) -> Path:
    return tiny_model_folder(gguf_model)


def test_label_position_head_matches_trl_fused_head(tiny_model: Path) -> None:
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from biasjudge.train.common import load_causal_lm
    from biasjudge.train.dpo import install_label_position_head

    ids = torch.randint(5, 1000, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 12:] = ids[:, 12:]
    trl_model = load_causal_lm(str(tiny_model))
    add_fused_lm_head(trl_model, outputs=("log_probs", "entropy", "is_top1"))
    ours = load_causal_lm(str(tiny_model))
    add_fused_lm_head(ours)
    install_label_position_head(ours)
    with torch.no_grad():
        expected = trl_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
        got = ours(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
    torch.testing.assert_close(got.log_probs, expected.log_probs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.entropy, expected.entropy, atol=1e-3, rtol=1e-3)
    assert torch.equal(got.label_mask, expected.label_mask)


def test_verdict_target_drops_rows_without_a_preference(tiny_model: Path) -> None:
    from biasjudge.train.common import RowEncoder, load_tokenizer
    from biasjudge.train.dpo import encode_dpo_rows

    rows = dpo_rows(repeat=1)
    same = rows[0].model_copy(update={"rejected": rows[0].chosen.replace("Case 0", "Other")})
    encoder = RowEncoder(load_tokenizer(str(tiny_model)), None, "verdict")
    data, counts = encode_dpo_rows([*rows, same], encoder, max_length=2048, max_prompt_length=1024)
    assert counts["used"] == 4 and counts["dropped_same_verdict"] == 1
    tokenizer = encoder.tokenizer
    assert tokenizer.decode(data["chosen_ids"][0]) == "A</verdict><turn|>"
    assert tokenizer.decode(data["rejected_ids"][0]) == "B</verdict><turn|>"
    assert tokenizer.decode(data["prompt_ids"][0]).endswith("<verdict>")


def test_dpo_from_sft_adapter_loss_falls(tmp_path: Path, tiny_model: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from biasjudge.train.common import load_causal_lm
    from biasjudge.train.config import DPORunConfig
    from biasjudge.train.dpo import train_dpo

    sft_adapter = tmp_path / "sft-adapter"
    peft_model = get_peft_model(
        load_causal_lm(str(tiny_model)), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    )
    peft_model.save_pretrained(str(sft_adapter))
    rows = tmp_path / "dpo.jsonl"
    write_records(rows, dpo_rows())
    config = DPORunConfig(
        model=str(tiny_model),
        sft_adapter=sft_adapter,
        train_file=rows,
        output_dir=tmp_path / "run",
        target="verdict",
        precision="fp32",
        trl={
            "learning_rate": 5e-3,
            "max_steps": 10,
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "save_steps": 100,
            "seed": 0,
            "beta": 0.1,
        },
    )
    result = train_dpo(config)
    logs = [json.loads(line) for line in result.log_file.read_text().splitlines()]
    losses = [r["loss"] for r in logs if "loss" in r]
    assert abs(losses[0] - 0.6931) < 0.02  # the policy starts as its reference (the SFT model)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.02, losses
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert not (result.adapter_dir / "ref").exists()  # only the trained adapter is saved
