"""The steps an SFT and a DPO run share, in the order a run takes them.

:func:`start_run` checks the config and loads the tokenizer and row encoder; the stage reads and
encodes its rows; :func:`load_run_model` writes the run files and loads the model;
:func:`trl_arguments` and :func:`make_trainer` build the trainer; the trainer computes
under :func:`autocast_for` on a CPU. torch and peft are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biasjudge.errors import ConfigError
from biasjudge.train.common import (
    DEFAULT_MAX_LENGTH,
    LOG_FILE,
    TRL_DEFAULTS,
    Placement,
    RowEncoder,
    RunResult,
    decide_placement,
    finish_run,
    latest_checkpoint,
    load_causal_lm,
    load_tokenizer,
    lora_config,
    make_log_callback,
    write_run_files,
)
from biasjudge.train.config import RunConfigBase, check_trl_keys, require_file


@dataclass
class RunStart:
    """What an SFT or DPO run has decided before it reads its rows (see :func:`start_run`)."""

    placement: Placement
    """Where and how the run computes."""
    tokenizer: Any
    """The tokenizer of `config.tokenizer`, else of the model."""
    encoder: RowEncoder
    """Renders and tokenises rows the way inference does."""
    max_length: int
    """The longest row in tokens (`trl.max_length`, default DEFAULT_MAX_LENGTH); longer rows are dropped."""

    def row_counts(self, train_counts: dict[str, Any]) -> dict[str, Any]:
        """The run's row counts (run.json's `rows`): the training rows' counts and the turn format."""
        return {"train": train_counts, "format": self.encoder.format_name, "end_of_turn": self.encoder.end_of_turn}


def start_run(config: RunConfigBase, trl_config_cls: type[Any], *, source: str) -> RunStart:
    """Check a run config (its `trl` keys against TRL's `trl_config_cls`, its files, a DPO run's
    SFT adapter), decide where the run computes, and load the tokenizer and the row encoder.

    Raises:
        ConfigError: a bad key (named), a missing file or adapter, a setting this machine cannot run.
    """
    check_trl_keys(config, trl_config_cls, source=source)
    require_file(config.train_file, "train_file")
    require_file(config.eval_file, "eval_file")
    adapter = getattr(config, "sft_adapter", None)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"key 'sft_adapter': {adapter} has no adapter_config.json (an SFT run's adapter/)")
    placement = decide_placement(config)
    tokenizer = load_tokenizer(config.tokenizer or config.model)
    encoder = RowEncoder(tokenizer, config.chat_format, config.target)
    return RunStart(placement, tokenizer, encoder, int(config.trl.get("max_length") or DEFAULT_MAX_LENGTH))


def load_run_model(
    config: RunConfigBase, start: RunStart, *, stage: str, row_counts: dict[str, Any]
) -> tuple[Any, Any, str | None]:
    """Write the run files, then load the base model (prepared for k-bit training under QLoRA) and
    what it trains: a DPO run's SFT adapter, loaded trainable, or else a fresh LoRA.

    Returns:
        (the model, the LoraConfig for the trainer or None, the checkpoint the run resumes from or None).
    """
    resumed = latest_checkpoint(config.output_dir) if config.resume else None
    write_run_files(config, stage=stage, placement=start.placement, row_counts=row_counts, resumed_from=resumed)
    model = load_causal_lm(config.model, quantize_4bit=start.placement.quantize_4bit)
    if start.placement.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    adapter = getattr(config, "sft_adapter", None)
    if adapter is None:
        return model, lora_config(config), resumed
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True), None, resumed


def trl_arguments(config: RunConfigBase, start: RunStart, *, has_eval: bool, **fixed: Any) -> dict[str, Any]:
    """The arguments of TRL's SFTConfig or DPOConfig: TRL_DEFAULTS, then the config's `trl` keys,
    then what the run decides (its folder, max length and precision, and `fixed`). Without an eval
    set there is no evaluation; with one, `eval_strategy` defaults to steps."""
    values = {**TRL_DEFAULTS, **config.trl}
    values.update(
        output_dir=str(config.output_dir),
        max_length=start.max_length,
        bf16=start.placement.bf16 and start.placement.device == "cuda",
        fp16=start.placement.fp16,
        **fixed,
    )
    if has_eval:
        values.setdefault("eval_strategy", "steps")
    else:
        values["eval_strategy"] = "no"
    return values


def make_trainer(
    trainer_cls: type,
    args: Any,
    config: RunConfigBase,
    start: RunStart,
    model: Any,
    peft_config: Any,
    train_data: dict[str, list[list[int]]],
    eval_dataset: Any,
    callbacks: Sequence[Any],
    **extra: Any,
) -> Any:
    """The TRL trainer of a run: the encoded training rows as a Dataset, the run's tokenizer, and
    the callbacks: the writer of the run folder's log.jsonl, then `callbacks`."""
    from datasets import Dataset

    return trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(train_data),
        eval_dataset=eval_dataset,
        processing_class=start.tokenizer,
        peft_config=peft_config,
        callbacks=[make_log_callback(Path(config.output_dir) / LOG_FILE), *callbacks],
        **extra,
    )


def train_to_end(
    trainer: Any, config: RunConfigBase, start: RunStart, row_counts: dict[str, Any], resumed: str | None
) -> RunResult:
    """Train (from the checkpoint `resumed`, if any), then save the adapter and metrics.json."""
    trainer.placement = start.placement
    output = trainer.train(resume_from_checkpoint=resumed)
    return finish_run(trainer, config, dict(output.metrics), row_counts, resumed)


def autocast_for(placement: Placement) -> Any:
    """The autocast context of a run (bf16 on a CPU with native bf16, the TRL precision on CUDA)."""
    import torch

    if placement.bf16:
        return torch.autocast(placement.device, dtype=torch.bfloat16)
    if placement.fp16:
        return torch.autocast(placement.device, dtype=torch.float16)
    return contextlib.nullcontext()
