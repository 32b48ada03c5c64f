"""SFT on a tiny random Gemma 3 with the real tokenizer: configs, rendering, the label-positions loss,
a falling loss on a memorisation set, the run folder, and resuming after a kill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from biasjudge.errors import ConfigError, ThinkingModeError
from biasjudge.io import write_records
from biasjudge.records import ChatMessage
from biasjudge.train.config import SFTRunConfig, check_trl_keys, load_run_config
from train_tiny import prompt, sft_rows, tiny_model_folder

pytest.importorskip("trl")


@pytest.fixture(scope="session")
def tiny_model(gguf_model: Path) -> Path:
    return tiny_model_folder(gguf_model)


def _config(tmp_path: Path, model: Path, **trl: Any) -> SFTRunConfig:
    rows = tmp_path / "sft.jsonl"
    write_records(rows, sft_rows())
    values = {
        "learning_rate": 1e-2,
        "max_steps": 12,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "save_steps": 100,
        "seed": 0,
        **trl,
    }
    return SFTRunConfig(
        model=str(model), train_file=rows, output_dir=tmp_path / "run", target="verdict", precision="fp32", trl=values
    )


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_file: a.jsonl\noutput_dir: out\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'learning_rate'"):
        load_run_config(SFTRunConfig, bad)
    bad.write_text("train_file: a.jsonl\noutput_dir: out\ntrl: {output_dir: x}\n")
    with pytest.raises(ConfigError, match=r"key 'trl'.*output_dir"):
        load_run_config(SFTRunConfig, bad)
    bad.write_text("train_file: a.jsonl\noutput_dir: out\ntrl: {completion_only_loss: false}\n")
    with pytest.raises(ConfigError, match=r"completion_only_loss.*target"):
        load_run_config(SFTRunConfig, bad)
    bad.write_text("train_file: a.jsonl\neval_file: a.jsonl\noutput_dir: out\n")
    with pytest.raises(ConfigError, match="eval_file and train_file"):
        load_run_config(SFTRunConfig, bad)
    from trl import SFTConfig

    config = SFTRunConfig(train_file=Path("a"), output_dir=Path("o"), trl={"learning_rat": 1})
    with pytest.raises(ConfigError, match=r"trl\.learning_rat"):
        check_trl_keys(config, SFTConfig, source="f.yaml")


def test_shipped_configs_load() -> None:
    from trl import DPOConfig, SFTConfig

    from biasjudge.train.config import DPORunConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("sft", "sft-cpu"):
        config = load_run_config(SFTRunConfig, root / f"{name}.yaml")
        check_trl_keys(config, SFTConfig)
    reference = load_run_config(SFTRunConfig, root / "sft.yaml")
    assert (reference.lora.r, reference.lora.alpha, reference.trl["learning_rate"], reference.trl["seed"]) == (
        16,
        32,
        2e-4,
        3407,
    )
    for name in ("dpo", "dpo-cpu"):
        dpo = load_run_config(DPORunConfig, root / f"{name}.yaml")
        check_trl_keys(dpo, DPOConfig)
        assert dpo.trl["beta"] == 0.1 and dpo.sft_adapter is not None


def test_rows_render_like_inference(tiny_model: Path) -> None:
    from biasjudge.prompts.render import SCORE_PREFIX, render_prompt
    from biasjudge.train.common import RowEncoder, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model))
    encoder = RowEncoder(tokenizer, None, "verdict")
    text = encoder.prompt_text(prompt(0))
    assert text == render_prompt(prompt(0), assistant_prefix=SCORE_PREFIX)
    assert encoder.target_text("<reasoning>x</reasoning><verdict>B</verdict>", "B") == "B</verdict><turn|>"
    prompt_ids, completion_ids = encoder.encode(text, "B</verdict><turn|>")
    assert prompt_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(completion_ids) == "B</verdict><turn|>"
    full = RowEncoder(tokenizer, "gemma3", "completion")
    assert full.target_text("<reasoning>x</reasoning><verdict>A</verdict>", "A").endswith("<end_of_turn>")
    with pytest.raises(ThinkingModeError):
        encoder.prompt_text([ChatMessage(role="system", content="<|think|> on"), *prompt(0)[1:]])


def test_label_positions_loss_equals_full_logits(tiny_model: Path) -> None:
    import torch

    from biasjudge.train.common import label_position_logits, load_causal_lm

    model = load_causal_lm(str(tiny_model))
    ids = torch.randint(5, 1000, (2, 20))
    labels = torch.full_like(ids, -100)
    labels[0, 15:] = ids[0, 15:]
    labels[1, 10:12] = ids[1, 10:12]
    logits, targets, mask = label_position_logits(model, ids, torch.ones_like(ids), labels)
    full = model(input_ids=ids).logits[:, :-1][mask]
    assert logits.shape == (7, model.config.vocab_size)
    torch.testing.assert_close(logits, full.float(), atol=1e-5, rtol=1e-5)
    assert targets.tolist() == labels[:, 1:][mask].tolist()


def test_sft_loss_falls_and_run_folder_is_complete(tmp_path: Path, tiny_model: Path) -> None:
    from biasjudge.train.sft import train_sft

    result = train_sft(_config(tmp_path, tiny_model))
    logs = [json.loads(line) for line in result.log_file.read_text().splitlines()]
    losses = [r["loss"] for r in logs if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    out = result.output_dir
    run = json.loads((out / "run.json").read_text())
    assert run["git_commit"] and len(next(iter(run["inputs"].values()))) == 64
    assert run["rows"]["train"]["label_source"] == {"answer_key": 16}
    assert (out / "config.yaml").is_file() and (out / "metrics.json").is_file()
    assert (result.adapter_dir / "adapter_config.json").is_file()
    meta = json.loads((result.adapter_dir / "biasjudge.json").read_text())
    assert meta["chat_format"] == "gemma4" and meta["target"] == "verdict"


def test_resume_after_kill_continues_from_checkpoint(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import TrainerCallback

    from biasjudge.train.sft import train_sft

    class Kill(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 5:
                raise KeyboardInterrupt("killed")

    config = _config(tmp_path, tiny_model, max_steps=8, save_steps=4)
    with pytest.raises(KeyboardInterrupt):
        train_sft(config, callbacks=[Kill()])
    assert (config.output_dir / "checkpoint-4").is_dir()
    result = train_sft(config)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-4")
    assert result.global_step == 8
    steps = [json.loads(line)["step"] for line in result.log_file.read_text().splitlines()]
    assert steps[:5] == [1, 2, 3, 4, 5] and steps[5:9] == [5, 6, 7, 8]
