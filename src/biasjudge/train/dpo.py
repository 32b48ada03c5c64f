"""Preference tuning of a judge: TRL's DPOTrainer on DPORow files, continuing from the SFT adapter.

The model is the base with the SFT adapter loaded trainable (PEFT), and `ref_model=None`: TRL then
keeps a frozen copy of the SFT adapter as the reference, so the reference model is the SFT model
(DPO's usual anchor) at no memory cost beyond one adapter. Without `sft_adapter` a fresh LoRA is
trained and the reference is the base model (adapters disabled).

Rows are rendered and tokenised exactly as for SFT (:class:`biasjudge.train.common.RowEncoder`),
so the prompt DPO sees is the prompt the judge sees. With `target: verdict` the prompt ends in
`<verdict>` and chosen/rejected are `X</verdict>` + end of turn, read from the rows' completions.

On a CPU, the trainer's log-probabilities are computed only at completion positions (the same
label-positions head as SFT): TRL computes them at every position off Triton devices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biasjudge.errors import DataError
from biasjudge.io import read_records
from biasjudge.records import DPORow
from biasjudge.train.common import Placement, RowEncoder, RunResult, label_position_logits, require_training_packages
from biasjudge.train.config import DPORunConfig
from biasjudge.train.steps import autocast_for, load_run_model, make_trainer, start_run, train_to_end, trl_arguments
from biasjudge.verdict import parse


def _verdict_of(text: str) -> str:
    verdict, _ = parse(text)
    if verdict == "PARSE_FAIL":
        verdict, _ = parse(text, mode="lenient")
    return verdict


def encode_dpo_rows(
    rows: Sequence[DPORow], encoder: RowEncoder, *, max_length: int, max_prompt_length: int | None, source: str = "rows"
) -> tuple[dict[str, list[list[int]]], dict[str, Any]]:
    """prompt_ids / chosen_ids / rejected_ids per row, and counts of what was used.

    Rows longer than `max_length` (or whose prompt is longer than `max_prompt_length`) are dropped
    and counted, never truncated. With `target: verdict`, rows whose chosen and rejected carry the
    same verdict teach nothing in score mode and are dropped (counted).
    """
    data: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    dropped_long = dropped_same = 0
    for number, row in enumerate(rows, start=1):
        chosen_verdict = _verdict_of(row.chosen)
        rejected_verdict = _verdict_of(row.rejected)
        if encoder.target == "verdict":
            if chosen_verdict == "PARSE_FAIL":
                raise DataError(source, number, "chosen", "has no verdict to train on")
            if rejected_verdict in ("PARSE_FAIL", chosen_verdict):
                dropped_same += 1
                continue
        prompt = encoder.prompt_text(row.prompt)
        prompt_ids, chosen_ids = encoder.encode(prompt, encoder.target_text(row.chosen, chosen_verdict))  # type: ignore[arg-type]
        _, rejected_ids = encoder.encode(prompt, encoder.target_text(row.rejected, rejected_verdict))  # type: ignore[arg-type]
        too_long = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids)) > max_length
        if too_long or (max_prompt_length is not None and len(prompt_ids) > max_prompt_length):
            dropped_long += 1
            continue
        data["prompt_ids"].append(prompt_ids)
        data["chosen_ids"].append(chosen_ids)
        data["rejected_ids"].append(rejected_ids)
    counts = {
        "read": len(rows),
        "used": len(data["prompt_ids"]),
        "dropped_too_long": dropped_long,
        "dropped_same_verdict": dropped_same,
        "source": dict(Counter(r.source for r in rows)),
        "swapped": sum(r.swap for r in rows),
    }
    return data, counts


def install_label_position_head(model: Any) -> None:
    """Make `model(..., labels=, fused_lm_head=True)` compute log-probs at labelled positions only.

    TRL's fused head (which DPOTrainer calls) projects every position off Triton devices; this
    replacement keeps its output type and fields, computed from
    :func:`biasjudge.train.common.label_position_logits`.
    """
    import functools
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    previous = model.forward

    @functools.wraps(type(model).forward)
    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: Any = None,
        shift_labels: Any = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head or shift_labels is not None or args:
            return previous(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        logits, targets, mask = label_position_logits(self, kwargs["input_ids"], kwargs.get("attention_mask"), labels)
        logp = torch.log_softmax(logits, dim=-1)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            probs = logp.exp()
            entropy = -(probs * logp).sum(-1)
            mean_logits = logits.mean(-1)
            is_top1 = logits.argmax(-1) == targets
            log_sum_sq = torch.logsumexp(2 * logp, dim=-1)

        def scatter(values: torch.Tensor) -> torch.Tensor:
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        log_probs = scatter(token_logp)
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            log_probs=log_probs,
            entropy=scatter(entropy),
            log_sum_sq_probs=scatter(log_sum_sq),
            mean_logits=scatter(mean_logits),
            is_top1=scatter(is_top1),
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)


def _trainer_class() -> type:
    from trl import DPOTrainer

    class JudgeDPOTrainer(DPOTrainer):
        """DPOTrainer reading rows we tokenised ourselves, with the label-positions head on a CPU."""

        placement: Placement | None = None

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if "prompt_ids" in dataset.column_names:
                return dataset  # tokenised by RowEncoder, the inference rule
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            if self.placement is None or self.placement.device == "cuda":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            with autocast_for(self.placement):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return JudgeDPOTrainer


def read_dpo_rows(path: Path, max_rows: int | None = None, *, split: str | None = "train") -> list[DPORow]:
    """Read DPO rows (validated) of one `split` (all with None), at most `max_rows` of them."""
    rows = read_records(path, DPORow).records
    if split is not None:
        rows = [r for r in rows if r.split == split]
    return rows[:max_rows] if max_rows else rows


def train_dpo(config: DPORunConfig, *, callbacks: Sequence[Any] = ()) -> RunResult:
    """DPO on DPORow rows, continuing from `config.sft_adapter`; resumes from the newest checkpoint.

    Rows with `split: validation` in train_file are held out as the eval set when no eval_file is
    given.

    Raises:
        ConfigError: a bad key (named), a missing file or adapter.
        DataError: an invalid row (file, line, field).
    """
    require_training_packages()
    from datasets import Dataset
    from trl import DPOConfig

    start = start_run(config, DPOConfig, source="dpo config")
    encoder, max_length = start.encoder, start.max_length
    max_prompt = config.max_prompt_length

    train_rows = read_dpo_rows(config.train_file, config.max_rows, split="train")
    train_data, counts = encode_dpo_rows(
        train_rows, encoder, max_length=max_length, max_prompt_length=max_prompt, source=str(config.train_file)
    )
    if not train_data["prompt_ids"]:
        raise DataError(str(config.train_file), None, None, "no usable preference rows")
    row_counts = start.row_counts(counts)
    eval_rows = (
        read_dpo_rows(config.eval_file, split=None)
        if config.eval_file is not None
        else read_dpo_rows(config.train_file, split="validation")
    )
    eval_dataset = None
    if eval_rows:
        eval_data, eval_counts = encode_dpo_rows(
            eval_rows, encoder, max_length=max_length, max_prompt_length=max_prompt
        )
        if eval_data["prompt_ids"]:
            eval_dataset = Dataset.from_dict(eval_data)
            row_counts["eval"] = eval_counts

    model, peft_config, resumed = load_run_model(config, start, stage="dpo", row_counts=row_counts)
    args = DPOConfig(**trl_arguments(config, start, has_eval=eval_dataset is not None))
    trainer = make_trainer(
        _trainer_class(), args, config, start, model, peft_config, train_data, eval_dataset, callbacks, ref_model=None
    )
    if start.placement.device == "cpu":
        unwrapped = trainer.model
        install_label_position_head(unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped)
    return train_to_end(trainer, config, start, row_counts, resumed)
