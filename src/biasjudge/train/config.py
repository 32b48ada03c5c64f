"""Run configs of the trainers, beside them (TRL's `sft_config.py` convention).

Our own keys say WHAT is trained (model, row files, target, LoRA, quantization); the `trl`
mapping is handed as it is to TRL's own `SFTConfig` / `DPOConfig` (learning rate, schedule, batch,
epochs, save/log steps, ...), so TRL's fields are not re-wrapped here. Keys TRL would take but
that we own (`output_dir`, `model_init_kwargs`, ...) are refused inside `trl`, and unknown TRL keys
are refused when the run starts, naming the file and the key.

`model` is a hub id, a local folder, a `.gguf` file (loaded by transformers with `gguf_file=`
and dequantised), or `embedded`: the Gemma 3 270M GGUF shipped by the `llamacpp` extra.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from biasjudge.config import ConfigModel, load_config
from biasjudge.errors import ConfigError
from biasjudge.prompts.render import THINK_TOKEN, TURN_FORMATS

EMBEDDED_MODEL = "embedded"
"""The `model` value meaning the embedded Gemma 3 270M GGUF."""
EMBEDDED_BASE_ID = "google/gemma-3-270m"
"""Hub id of the model the embedded GGUF was made from (for model cards)."""

Target = Literal["completion", "verdict"]
Quantization = Literal["auto", "4bit", "none"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]

# TRL/transformers fields that this config sets itself, so they may not appear under `trl`.
OWNED_TRL_KEYS = {
    "output_dir": "output_dir",
    "model_init_kwargs": "model (and quantization)",
    "dataset_kwargs": "train_file",
    "dataset_text_field": "train_file",
    "resume_from_checkpoint": "resume",
    "bf16": "precision",
    "fp16": "precision",
    "use_cpu": "precision",
    "eos_token": "chat_format",
    "padding_free": "(not supported: the loss gathers positions per row)",
    "packing": "(not supported: judge prompts are trained one per row)",
    "assistant_only_loss": "target",
}


class LoraSettings(ConfigModel):
    """LoRA adapter shape (PEFT `LoraConfig`)."""

    r: int = Field(16, ge=1)
    """Rank of the LoRA update matrices."""
    alpha: int = Field(32, gt=0)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    target_modules: str | list[str] = "all-linear"
    """Modules to adapt: `all-linear` (every linear layer but the output head) or a list of names."""


class RunConfigBase(ConfigModel):
    """Keys shared by the SFT and DPO runs."""

    model: str = EMBEDDED_MODEL
    """Base model: hub id, local folder, `.gguf` file, or `embedded` (the packaged Gemma 3 270M GGUF)."""
    tokenizer: str | None = None
    """Tokenizer source when it differs from `model` (hub id, folder or `.gguf`); default: the model's."""
    train_file: Path
    """Training rows (JSONL written by `biasjudge data build`)."""
    eval_file: Path | None = None
    """Optional evaluation rows of the same kind, scored every `trl.eval_steps`."""
    output_dir: Path
    """Run folder: checkpoints, the final adapter, config.yaml, run.json, log.jsonl, metrics.json."""
    chat_format: str | None = None
    """Built-in turn format (`gemma4`, `gemma3`); None: the model's chat template, else `gemma4`.
    Inference must use the same (it is written into run.json and the Ollama Modelfile)."""
    target: Target = "completion"
    """completion: `<reasoning>..</reasoning><verdict>X</verdict>` + end of turn after the prompt.
    verdict: the prompt plus `<verdict>`, then `X</verdict>` + end of turn (score mode; fast on CPU)."""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    """LoRA adapter settings."""
    quantization: Quantization = "auto"
    """auto: 4-bit bitsandbytes (QLoRA) when CUDA and bitsandbytes are present, else none. 4bit: require it."""
    precision: Precision = "auto"
    """auto: bf16 on CUDA with bf16 support and on CPUs with native bf16 (autocast), else fp32."""
    resume: bool = True
    """Resume from the newest checkpoint in output_dir when there is one."""
    max_rows: int | None = Field(None, ge=1)
    """Use only the first N training rows (quick runs); None: all."""
    trl: dict[str, Any] = Field(default_factory=dict)
    """Passed through to TRL's own config class (learning_rate, num_train_epochs, save_steps, ...)."""

    @field_validator("chat_format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in TURN_FORMATS:
            raise ValueError(f"unknown chat format {value!r}; built-in formats: {', '.join(TURN_FORMATS)}")
        return value

    @field_validator("model", "tokenizer")
    @classmethod
    def _no_thinking(cls, value: str | None) -> str | None:
        if value is not None and THINK_TOKEN in value:
            raise ValueError(f"{THINK_TOKEN} is not a model")
        return value

    @field_validator("trl")
    @classmethod
    def _trl_keys_we_own(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in OWNED_TRL_KEYS:
                raise ValueError(f"'trl.{key}' is set by the top-level key {OWNED_TRL_KEYS[key]}; remove it from trl")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfigBase:
        if self.eval_file is not None and Path(self.eval_file) == Path(self.train_file):
            raise ValueError("eval_file and train_file are the same file; evaluate on rows the run does not train on")
        if self.quantization == "4bit" and (self.model.endswith(".gguf") or self.model == EMBEDDED_MODEL):
            raise ValueError(
                "quantization: 4bit cannot be combined with model: a GGUF file (it is dequantised on load); "
                "set quantization: none or auto, or point model at a safetensors checkpoint"
            )
        if self.quantization == "4bit" and self.precision == "fp32":
            raise ValueError("quantization: 4bit computes in bf16/fp16; precision: fp32 contradicts it")
        return self


class SFTRunConfig(RunConfigBase):
    """Supervised fine-tuning of a judge with LoRA (QLoRA on CUDA) on SFTRow files."""

    @model_validator(mode="after")
    def _sft_checks(self) -> SFTRunConfig:
        if self.trl.get("completion_only_loss") is False:
            raise ValueError(
                "trl.completion_only_loss: false contradicts target: the loss is computed on the completion only "
                "(the prompt is the judged pair, not text to imitate)"
            )
        return self


class DPORunConfig(RunConfigBase):
    """Preference tuning (DPO) on DPORow files, continuing from an SFT adapter."""

    sft_adapter: Path | None = None
    """Folder of the SFT adapter to continue from (the SFT run's `adapter/`). The reference model is
    then the SFT model (a frozen copy of this adapter). None: train a fresh LoRA; the reference is the
    base model (adapters disabled)."""
    max_prompt_length: int | None = Field(1024, ge=1)
    """Rows whose prompt is longer (in tokens) are dropped, never truncated; None: no limit."""

    @model_validator(mode="after")
    def _dpo_checks(self) -> DPORunConfig:
        if self.sft_adapter is not None and Path(self.sft_adapter).resolve() == Path(self.output_dir).resolve():
            raise ValueError("sft_adapter and output_dir are the same folder; DPO writes a new run folder")
        max_length = self.trl.get("max_length")
        if self.max_prompt_length is not None and isinstance(max_length, int) and self.max_prompt_length >= max_length:
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be below trl.max_length ({max_length}): "
                "the completion needs room after the prompt"
            )
        return self


C = TypeVar("C", bound=RunConfigBase)


def load_run_config(
    cls: type[C],
    path: str | Path | None,
    *,
    overrides: dict[str, Any] | None = None,
    trl_overrides: dict[str, Any] | None = None,
) -> C:
    """Load a run config from YAML; flags in `overrides` (top level) and `trl_overrides` win.

    Relative paths in the file are read relative to the current directory (like every CLI path).

    Raises:
        ConfigError: naming the file (or the flag) and the key.
    """
    config = load_config(cls, path)
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    trl_extra = {k: v for k, v in (trl_overrides or {}).items() if v is not None}
    if not extra and not trl_extra:
        return config
    values = config.model_dump()
    values.update(extra)
    values["trl"] = {**config.trl, **trl_extra}
    try:
        return cls.model_validate(values)
    except ValueError as exc:
        raise ConfigError(f"command-line overrides {sorted({*extra, *trl_extra})}: {exc}") from None


def trl_config_fields(config_cls: type[Any]) -> set[str]:
    """Field names of a TRL config dataclass (SFTConfig, DPOConfig)."""
    return {f.name for f in dataclasses.fields(config_cls)}


def check_trl_keys(config: RunConfigBase, config_cls: type[Any], source: str = "config") -> None:
    """Refuse `trl` keys that TRL's config class does not have, naming the key."""
    known = trl_config_fields(config_cls)
    for key in config.trl:
        if key not in known:
            raise ConfigError(
                f"{source}: key 'trl.{key}': not a field of trl.{config_cls.__name__} "
                f"(see https://huggingface.co/docs/trl/ for its fields)"
            )


def resolve_model(ref: str) -> str:
    """`embedded` -> the path of the embedded GGUF; anything else unchanged."""
    if ref == EMBEDDED_MODEL:
        from biasjudge.backends.embedded import embedded_gguf_path

        return str(embedded_gguf_path())
    return ref


def base_model_id(ref: str) -> str:
    """What a model card names as base_model for `ref`."""
    if ref == EMBEDDED_MODEL:
        return EMBEDDED_BASE_ID
    return ref


def require_file(path: Path | None, key: str) -> None:
    """Raise ConfigError naming `key` when `path` is given but does not exist."""
    if path is not None and not Path(path).exists():
        raise ConfigError(f"key '{key}': {path} not found")
