"""What the SFT and DPO runs share: loading the model and tokenizer, rendering and tokenising rows
exactly as inference does, the label-positions-only LM head, and the run folder's bookkeeping.

Prompts are rendered with :mod:`biasjudge.prompts.render` (the shared prompt contract), and tokenised
by the llama.cpp backend's rule: BOS added unless the text starts with it; the completion's tokens
are those of `prompt + completion` after the prompt's tokens (or of the completion alone when
tokenising across the boundary would change the prompt's tokens).

torch, transformers and peft are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from biasjudge.errors import ConfigError, MissingDependency, ThinkingModeError
from biasjudge.io import atomic_open, sha256_file, write_json
from biasjudge.prompts.render import (
    DEFAULT_TURN_FORMAT,
    SCORE_PREFIX,
    THINK_TOKEN,
    refuse_thinking,
    render_prompt,
    template_end_of_turn,
    tokenizer_chat_template,
    turn_format,
)
from biasjudge.records import ChatMessage, Verdict
from biasjudge.train.config import RunConfigBase, Target, resolve_model

if TYPE_CHECKING:
    import torch

LOG_FILE = "log.jsonl"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
ADAPTER_DIR = "adapter"
ADAPTER_META = "biasjudge.json"
"""Written beside an adapter (and a merged model): base model, chat format, end of turn, target."""

DEFAULT_MAX_LENGTH = 2048

TRL_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 100,
    "save_total_limit": 2,
    "max_length": DEFAULT_MAX_LENGTH,
    "dataloader_num_workers": 0,
}
"""Values passed to TRL's SFTConfig and DPOConfig unless the run config's `trl` mapping sets them."""


# --------------------------------------------------------------------------- imports


def require_training_packages() -> None:
    """Raise MissingDependency naming the extra when torch/transformers/trl/peft are missing."""
    for package in ("torch", "transformers", "trl", "peft", "datasets"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependency(package, "train", "training") from None


# --------------------------------------------------------------------------- model and tokenizer


def split_gguf(ref: str) -> tuple[str, str | None]:
    """(`from_pretrained` folder or id, gguf_file name or None) for a model reference."""
    if ref.endswith(".gguf"):
        path = Path(ref)
        if not path.is_file():
            raise ConfigError(f"key 'model': GGUF file {ref} not found")
        return str(path.parent), path.name
    return ref, None


def load_tokenizer(ref: str) -> Any:
    """A transformers tokenizer from a hub id, a folder, a `.gguf` file or `embedded`."""
    from transformers import AutoTokenizer

    source, gguf_file = split_gguf(resolve_model(ref))
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template:
        refuse_thinking(tokenizer.chat_template, "model's chat template")
    return tokenizer


def detach_gguf_quantizer(model: Any) -> Any:
    """Make a model loaded with `gguf_file=` (dequantised) a plain model again.

    transformers keeps a GGUF quantizer on such a model, which refuses `save_pretrained` ("quantized
    with gguf and is not serializable") and marks it not trainable. The weights are plain tensors
    once dequantised, so the quantizer is dropped. Packed GGUF modules (with the `kernels` package)
    cannot be detached: load with `GgufConfig(dequantize=True)` (as :func:`load_causal_lm` does).
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if str(getattr(method, "value", method)) != "gguf":
        return model
    if getattr(quantizer, "packed_modules", None):
        raise ConfigError("the GGUF model was loaded with packed weights; load it with dequantize=True")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def load_causal_lm(ref: str, *, dtype: Any = None, quantize_4bit: bool = False) -> Any:
    """A causal LM from a hub id, a folder, a `.gguf` file (dequantised) or `embedded`."""
    import torch
    from transformers import AutoModelForCausalLM

    source, gguf_file = split_gguf(resolve_model(ref))
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if gguf_file:
        from transformers import GgufConfig

        kwargs["gguf_file"] = gguf_file
        kwargs["quantization_config"] = GgufConfig(gguf_file=gguf_file, dequantize=True)
    elif quantize_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingDependency("bitsandbytes", None, "4-bit QLoRA") from None
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype or torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if gguf_file:
        detach_gguf_quantizer(model)
    return model


@dataclass(frozen=True)
class Placement:
    """Where and how a run computes."""

    device: str
    """cuda or cpu."""
    bf16: bool
    fp16: bool
    quantize_4bit: bool
    note: str = ""


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 or AMX), where bf16 autocast is faster than fp32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


def decide_placement(config: RunConfigBase) -> Placement:
    """Resolve `quantization: auto` and `precision: auto` for this machine."""
    import torch

    cuda = torch.cuda.is_available()
    notes: list[str] = []
    if config.quantization == "4bit" and not cuda:
        raise ConfigError("key 'quantization': 4bit (QLoRA) needs a CUDA GPU; this machine has none")
    quantize = config.quantization == "4bit"
    if config.quantization == "auto" and cuda:
        gguf = resolve_model(config.model).endswith(".gguf")
        try:
            import bitsandbytes  # noqa: F401

            has_bnb = True
        except ImportError:
            has_bnb = False
        quantize = has_bnb and not gguf
        if not quantize:
            notes.append("QLoRA off: " + ("GGUF base" if gguf else "bitsandbytes not installed"))
    precision = config.precision
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("key 'precision': fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return Placement(
        device="cuda" if cuda else "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        quantize_4bit=quantize,
        note="; ".join(notes),
    )


def lora_config(config: RunConfigBase, task_type: str = "CAUSAL_LM") -> Any:
    """PEFT's LoraConfig from the run config's `lora` keys (rank, alpha, dropout, target modules)."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=int(config.lora.alpha),
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        bias="none",
        task_type=task_type,
    )


# --------------------------------------------------------------------------- rendering and tokenising


class RowEncoder:
    """Renders prompt messages and targets as text and token ids, the way inference does.

    The rule is the backends' rule: the tokenizer's own chat template when it has one (thinking
    off), else the built-in turn format `chat_format`. `format_name` (`chat_template` or the
    format's name) is what a run records and what its judge is run with.
    """

    def __init__(self, tokenizer: Any, chat_format: str | None, target: Target) -> None:
        self.tokenizer = tokenizer
        self.target = target
        template = tokenizer_chat_template(tokenizer)
        self.template = template
        if template is not None:
            self.format_name = "chat_template"
            self.end_of_turn = template_end_of_turn(tokenizer)
        else:
            fmt = turn_format(chat_format or DEFAULT_TURN_FORMAT)
            self.format_name = fmt.name
            self.end_of_turn = fmt.end_of_turn
        refuse_thinking(self.end_of_turn, "end-of-turn marker")
        self.bos_text: str = tokenizer.bos_token or ""

    def prompt_text(self, messages: Sequence[ChatMessage]) -> str:
        """The rendered prompt of a row's messages, ending in `<verdict>` for the verdict target."""
        prefix = SCORE_PREFIX if self.target == "verdict" else ""
        if self.template is not None:
            return render_prompt(messages, template=self.template, assistant_prefix=prefix)
        return render_prompt(messages, chat_format=self.format_name, assistant_prefix=prefix)

    def target_text(self, completion: str, verdict: Verdict) -> str:
        """What the model learns to write after the prompt, end of turn included."""
        if THINK_TOKEN in completion:
            raise ThinkingModeError(f"a training completion contains {THINK_TOKEN}")
        if self.target == "verdict":
            return f"{verdict}</verdict>{self.end_of_turn}"
        return completion + self.end_of_turn

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, with BOS added unless the text already starts with it."""
        add_bos = not (self.bos_text and text.startswith(self.bos_text))
        ids: list[int] = self.tokenizer(text, add_special_tokens=add_bos)["input_ids"]
        return ids

    def encode(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) by the backend's rule (see the module docstring)."""
        prompt_ids = self.tokenize(prompt)
        joint = self.tokenize(prompt + completion)
        if joint[: len(prompt_ids)] == prompt_ids:
            return prompt_ids, joint[len(prompt_ids) :]
        completion_ids: list[int] = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        return prompt_ids, completion_ids


# --------------------------------------------------------------------------- the label-positions head


def label_position_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits only where a next-token label is set: (logits [N, vocab], targets [N], mask [B, L-1]).

    Runs the model's body for the hidden states, keeps the positions whose shifted label is not
    -100, and applies the output head (and the final logit soft-capping, where the model has one)
    there only. The 262k-vocabulary projection at every position is what makes naive SFT of a
    small Gemma slow on a CPU; a judge's loss needs it at a handful of positions per row.
    Works through PEFT wrappers (the LoRA layers sit inside the body).
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.base_model
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != -100
    selected = hidden[:, :-1][mask]
    head = base.get_output_embeddings()
    logits = head(selected.to(head.weight.dtype) if selected.dtype != head.weight.dtype else selected)
    cap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float(), targets[mask], mask


# --------------------------------------------------------------------------- run folder


def git_commit(cwd: str | Path | None = None) -> str:
    """`git rev-parse HEAD` of the working tree, or "unknown" outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def package_versions() -> dict[str, str]:
    """Installed versions of biasjudge and the training libraries, for the run's record."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("biasjudge", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_run_files(
    config: RunConfigBase,
    *,
    stage: str,
    placement: Placement,
    row_counts: dict[str, Any],
    resumed_from: str | None,
) -> dict[str, Any]:
    """Write config.yaml and run.json (data sha256s, git commit, versions) into the run folder."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / CONFIG_FILE) as handle:
        yaml.safe_dump(config.model_dump(mode="json"), handle, sort_keys=False)
    inputs = [p for p in (config.train_file, config.eval_file) if p is not None]
    adapter = getattr(config, "sft_adapter", None)
    run: dict[str, Any] = {
        "stage": stage,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "model": config.model,
        "model_resolved": resolve_model(config.model),
        "sft_adapter": str(adapter) if adapter else None,
        "target": config.target,
        "inputs": {str(p): sha256_file(p) for p in inputs},
        "rows": row_counts,
        "placement": placement.__dict__,
        "resumed_from": resumed_from,
        "host": platform.node(),
        "python": platform.python_version(),
        "versions": package_versions(),
    }
    previous = out / RUN_FILE
    if previous.exists() and resumed_from:
        with contextlib.suppress(OSError, json.JSONDecodeError):
            before = json.loads(previous.read_text())
            run["previous_starts_utc"] = [*before.get("previous_starts_utc", []), before.get("created_utc")]
    write_json(out / RUN_FILE, run)
    return run


def make_log_callback(path: Path) -> Any:
    """A TrainerCallback appending every log event (loss, lr, eval) to a JSONL file, fsynced."""
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        def __init__(self) -> None:
            self.path = path
            self.start = time.time()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            row = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "epoch": state.epoch,
                "elapsed_s": round(time.time() - self.start, 2),
                "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                **{k: (float(v) if isinstance(v, int | float) else v) for k, v in logs.items()},
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    return JsonlLogCallback()


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` folder in output_dir, or None."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    found: str | None = get_last_checkpoint(str(folder))
    return found


@dataclass
class RunResult:
    """What a training run produced."""

    output_dir: Path
    """The run folder."""
    adapter_dir: Path
    """The final LoRA adapter (and tokenizer)."""
    global_step: int
    """Optimizer steps done in total (across resumes)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Trainer metrics of the final run (train_loss, runtime, ...), and the final eval metrics."""
    resumed_from: str | None = None
    """Checkpoint the run resumed from, if any."""
    rows: dict[str, Any] = field(default_factory=dict)
    """Row counts: read, used, dropped (too long / unusable)."""

    @property
    def log_file(self) -> Path:
        """The run's log.jsonl (every logged loss)."""
        return self.output_dir / LOG_FILE


def finish_run(
    trainer: Any, config: RunConfigBase, result_metrics: dict[str, Any], rows: dict[str, Any], resumed: str | None
) -> RunResult:
    """Save the final adapter + tokenizer and metrics.json; return the RunResult."""
    out = Path(config.output_dir)
    adapter_dir = out / ADAPTER_DIR
    model = trainer.model
    if hasattr(model, "peft_config") and "ref" in getattr(model, "peft_config", {}):
        model.save_pretrained(str(adapter_dir), selected_adapters=["default"])
    else:
        model.save_pretrained(str(adapter_dir))
    trainer.processing_class.save_pretrained(str(adapter_dir))
    write_json(
        adapter_dir / ADAPTER_META,
        {
            "base_model": config.model,
            "chat_format": rows.get("format"),
            "end_of_turn": rows.get("end_of_turn"),
            "target": config.target,
            "stage": "dpo" if hasattr(config, "sft_adapter") else "sft",
            "sft_adapter": str(getattr(config, "sft_adapter", None) or "") or None,
        },
    )
    metrics = {k: v for k, v in result_metrics.items()}
    if config.eval_file is not None:
        metrics.update(trainer.evaluate())
    metrics["global_step"] = trainer.state.global_step
    write_json(out / METRICS_FILE, metrics)
    return RunResult(
        output_dir=out,
        adapter_dir=adapter_dir,
        global_step=trainer.state.global_step,
        metrics=metrics,
        resumed_from=resumed,
        rows=rows,
    )


def make_progress_callback(description: str = "training", *, budget_s: float | None = None) -> Any:
    """A TrainerCallback drawing a Rich progress bar (steps, loss, tokens/s) on stderr.

    With `budget_s`, training also stops (saving the adapter as usual) once that many seconds of
    optimizer steps have run in this process: a wall-clock cap for machines of unknown speed.
    """
    from rich.progress import Progress
    from transformers import TrainerCallback

    from biasjudge.io.progress import progress_bar

    class RichProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None
            self.start = 0.0
            self.last: dict[str, float] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not state.is_world_process_zero:
                return
            self.progress = progress_bar()
            self.progress.start()
            self.task = self.progress.add_task(description, total=state.max_steps, completed=state.global_step, info="")
            self.start = time.time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
            if budget_s is not None and time.time() - self.start >= budget_s:
                control.should_training_stop = True
                control.should_save = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if self.progress is None or not logs:
                return
            self.last.update({k: float(v) for k, v in logs.items() if isinstance(v, int | float)})
            info = f"loss {self.last['loss']:.3f}" if "loss" in self.last else ""
            self.progress.update(self.task, info=info)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichProgressCallback()
