"""Supervised fine-tuning of a judge: TRL's SFTTrainer, LoRA (QLoRA on CUDA), completion-only loss.

Rows are SFTRow JSONL (`biasjudge data build` writes them). Each row's prompt messages are
rendered with :mod:`biasjudge.prompts.render` exactly as the judge renders them at inference; the
completion is the target text plus the turn format's end-of-turn marker (the EOS of a judge's
turn). With `target: verdict` the prompt ends in `<verdict>` and the completion is `X</verdict>`
+ end of turn: the task of score mode, and the fast path on a CPU.

The one change to TRL: :class:`CompletionOnlySFTTrainer` overrides `compute_loss` to apply the
output head only at the positions that carry a label (see
:func:`biasjudge.train.common.label_position_logits`). With a 262k vocabulary, projecting every
position costs more than the model body; a judge's loss needs a handful of positions per row.

A run folder holds config.yaml, run.json (data sha256s, git commit, versions), log.jsonl (every
logged loss), checkpoint-N/ folders (a killed run resumes from the newest), adapter/ (the final
LoRA adapter and tokenizer) and metrics.json.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biasjudge.errors import DataError
from biasjudge.io import read_records
from biasjudge.records import SFTRow
from biasjudge.train.common import Placement, RowEncoder, RunResult, label_position_logits, require_training_packages
from biasjudge.train.config import SFTRunConfig
from biasjudge.train.steps import autocast_for, load_run_model, make_trainer, start_run, train_to_end, trl_arguments
from biasjudge.verdict import parse


def encode_sft_rows(
    rows: Sequence[SFTRow], encoder: RowEncoder, *, max_length: int, source: str = "rows"
) -> tuple[dict[str, list[list[int]]], dict[str, Any]]:
    """Token ids and labels (-100 on the prompt) of each row, and counts of what was used.

    Rows longer than `max_length` tokens are dropped (counted), never truncated: a cut prompt
    would teach the judge to answer a pair it has not read.
    """
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    dropped_long = 0
    lengths: list[int] = []
    for number, row in enumerate(rows, start=1):
        if encoder.target == "completion":
            verdict, _ = parse(row.completion)
            if verdict != row.verdict:
                raise DataError(source, number, "completion", f"does not parse to the row's verdict {row.verdict!r}")
        prompt_ids, completion_ids = encoder.encode(
            encoder.prompt_text(row.prompt), encoder.target_text(row.completion, row.verdict)
        )
        total = len(prompt_ids) + len(completion_ids)
        if total > max_length:
            dropped_long += 1
            continue
        lengths.append(total)
        input_ids.append(prompt_ids + completion_ids)
        labels.append([-100] * len(prompt_ids) + completion_ids)
    counts = {
        "read": len(rows),
        "used": len(input_ids),
        "dropped_too_long": dropped_long,
        "mean_tokens": round(sum(lengths) / len(lengths), 1) if lengths else 0,
        "max_tokens": max(lengths, default=0),
        "label_source": dict(Counter(r.label_source for r in rows)),
        "reasoning_source": dict(Counter(r.reasoning_source for r in rows)),
        "verdict": dict(Counter(r.verdict for r in rows)),
        "swapped": sum(r.swap for r in rows),
    }
    return {"input_ids": input_ids, "labels": labels}, counts


def read_sft_rows(path: Path, max_rows: int | None = None) -> list[SFTRow]:
    """Read SFT rows (validated), at most `max_rows` of them."""
    return read_records(path, SFTRow, limit=max_rows).records


def _trainer_class() -> type:
    """CompletionOnlySFTTrainer, built on first use so that trl is imported lazily."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class CompletionOnlySFTTrainer(SFTTrainer):
        """SFTTrainer whose loss applies the output head only where a label is set."""

        placement: Placement | None = None

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            mode = "train" if model.training else "eval"
            context = autocast_for(self.placement) if self.placement else torch.autocast("cpu", enabled=False)
            with context:
                logits, targets, mask = label_position_logits(
                    model, inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"]
                )
            loss_sum = F.cross_entropy(logits, targets, reduction="sum")
            count = mask.sum()
            denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
            loss = loss_sum / torch.as_tensor(denominator, device=loss_sum.device).clamp(min=1)
            with torch.no_grad():
                correct = (logits.argmax(dim=-1) == targets).sum()
                self._metrics[mode]["mean_token_accuracy"].append((correct / count).item() if count > 0 else 0.0)
                if mode == "train" and "attention_mask" in inputs:
                    self._total_train_tokens += int(inputs["attention_mask"].sum().item())
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, {"loss": loss}) if return_outputs else loss

    return CompletionOnlySFTTrainer


def train_sft(config: SFTRunConfig, *, callbacks: Sequence[Any] = ()) -> RunResult:
    """Fine-tune `config.model` on SFTRow rows; resume from the newest checkpoint when there is one.

    Args:
        config: the run config (see :class:`biasjudge.train.config.SFTRunConfig`).
        callbacks: extra transformers TrainerCallbacks (tests use one to interrupt a run).

    Returns:
        RunResult with the adapter folder, the global step and the final metrics.

    Raises:
        ConfigError: a bad key (named), a missing file, or a setting this machine cannot run.
        DataError: an invalid row (file, line, field).
        ThinkingModeError: a prompt or template would turn Gemma's thinking mode on.
    """
    require_training_packages()
    from datasets import Dataset
    from trl import SFTConfig

    start = start_run(config, SFTConfig, source="sft config")
    encoder, max_length = start.encoder, start.max_length

    train_rows = read_sft_rows(config.train_file, config.max_rows)
    train_data, counts = encode_sft_rows(train_rows, encoder, max_length=max_length, source=str(config.train_file))
    if not train_data["input_ids"]:
        raise DataError(str(config.train_file), None, None, f"no usable rows (all longer than {max_length} tokens?)")
    eval_dataset = None
    row_counts = start.row_counts(counts)
    if config.eval_file is not None:
        eval_data, eval_counts = encode_sft_rows(
            read_sft_rows(config.eval_file), encoder, max_length=max_length, source=str(config.eval_file)
        )
        eval_dataset = Dataset.from_dict(eval_data)
        row_counts["eval"] = eval_counts

    model, peft_config, resumed = load_run_model(config, start, stage="sft", row_counts=row_counts)
    args = SFTConfig(**trl_arguments(config, start, has_eval=eval_dataset is not None, completion_only_loss=True))
    trainer = make_trainer(
        _trainer_class(), args, config, start, model, peft_config, train_data, eval_dataset, callbacks
    )
    return train_to_end(trainer, config, start, row_counts, resumed)
