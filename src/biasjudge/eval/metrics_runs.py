"""A checkpoint's predictions in a log, indexed for the whole-log metrics, and the checks every
whole-log metric makes of the holdout first (:mod:`biasjudge.eval.metrics`, :mod:`biasjudge.eval.metrics_agreement`).

Pure like :mod:`biasjudge.eval.metrics`: records, verdict and errors only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from biasjudge.errors import MetricInputError
from biasjudge.records import Pair, Prediction
from biasjudge.verdict import PARSE_FAIL, UNSURE

SLICES: dict[str, str] = {"in_dist": "in_dist", "ood_religion": "ood_religion"}
"""Metric-key suffix -> eval_slice."""

_CONSISTENCY_RE = re.compile(r"consistency_(\d+)\Z")


def nan_to_none(value: float | None) -> float | None:
    """A metric as stored in JSON: NaN (undefined) becomes None, anything else a float.

    >>> nan_to_none(float("nan")) is None, nan_to_none(1)
    (True, 1.0)
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


@dataclass
class CheckpointRuns:
    """Predictions of one checkpoint, indexed run_type -> pair_id -> Prediction."""

    runs: dict[str, dict[str, Prediction]] = field(default_factory=dict)
    all_verdicts: list[str] = field(default_factory=list)
    n_truncated: int = 0
    n_floored: int = 0

    def verdict(self, run: str, pair_id: str) -> str | None:
        """The scored verdict of `pair_id` in `run`, None when that run has no prediction for it."""
        pred = self.runs.get(run, {}).get(pair_id)
        return None if pred is None else scored_verdict(pred)

    def single_order(self, run: str, pair_id: str) -> str | None:
        """The single-order verdict an order-debiased judge recorded, else None."""
        pred = self.runs.get(run, {}).get(pair_id)
        return None if pred is None else pred.wrappers.single_order_verdict

    def consistency_runs(self) -> list[str]:
        """The `consistency_<n>` runs of the checkpoint, in order of n."""
        found = [(int(m.group(1)), run) for run in self.runs if (m := _CONSISTENCY_RE.match(run))]
        return [run for _, run in sorted(found)]


def scored_verdict(prediction: Prediction) -> str:
    """The verdict a metric sees: the prediction's own, as the judge settled it (a generation cut at
    the token cap whose verdict had closed keeps it; one cut before is PARSE_FAIL already).

    >>> scored_verdict(Prediction(checkpoint_name="c", pair_id="p", run_type="original", verdict="A",
    ...                           finish_reason="length"))
    'A'
    >>> scored_verdict(Prediction(checkpoint_name="c", pair_id="p", run_type="original", verdict="PARSE_FAIL",
    ...                           finish_reason="length"))
    'PARSE_FAIL'
    """
    return prediction.verdict


def index_checkpoint(predictions: Iterable[Prediction], checkpoint: str) -> CheckpointRuns:
    """The predictions of `checkpoint`, indexed by run and pair.

    Raises:
        MetricInputError: no prediction for `checkpoint`, or two for one (pair, run).
    """
    indexed = CheckpointRuns()
    seen_checkpoints: set[str] = set()
    for pred in predictions:
        seen_checkpoints.add(pred.checkpoint_name)
        if pred.checkpoint_name != checkpoint:
            continue
        by_pair = indexed.runs.setdefault(pred.run_type, {})
        if pred.pair_id in by_pair:
            raise MetricInputError(
                f"checkpoint {checkpoint!r} has two predictions for pair {pred.pair_id!r}, run {pred.run_type!r}"
            )
        by_pair[pred.pair_id] = pred
        indexed.all_verdicts.append(scored_verdict(pred))
        indexed.n_truncated += pred.finish_reason == "length" or pred.reasoning_truncated
        indexed.n_floored += bool(pred.floored_choices)
    if not indexed.runs:
        raise MetricInputError(
            f"no predictions for checkpoint {checkpoint!r}; the log has {sorted(seen_checkpoints)!r}"
        )
    return indexed


def labelled_verdicts(
    pairs: Iterable[Pair], runs: CheckpointRuns, run: str = "original"
) -> tuple[list[str], list[str], list[Pair]]:
    """(human verdicts, judge verdicts, pairs) over pairs with a human label and a parsed verdict."""
    y_true: list[str] = []
    y_pred: list[str] = []
    kept: list[Pair] = []
    for pair in pairs:
        verdict = runs.verdict(run, pair.pair_id)
        human = pair.human_verdict
        if verdict is None or verdict in (PARSE_FAIL, UNSURE) or human is None:
            continue
        y_true.append(human)
        y_pred.append(verdict)
        kept.append(pair)
    return y_true, y_pred, kept


def check_holdout(holdout: Sequence[Pair]) -> None:
    """Refuse a holdout that lists a pair twice (a MetricInputError)."""
    seen: set[str] = set()
    for pair in holdout:
        if pair.pair_id in seen:
            raise MetricInputError(f"the holdout lists pair {pair.pair_id!r} twice")
        seen.add(pair.pair_id)


def check_scorable(holdout: Sequence[Pair], runs: CheckpointRuns, checkpoint: str, *, labelled: bool) -> None:
    """Refuse to score when no holdout pair has a prediction (with `labelled`: a prediction and a
    human label). Every metric but the parse-failure rate (with `labelled`: every kappa) would be
    undefined, and a table of dashes hides a wrong or unlabelled holdout file."""
    predicted = {pair_id for by_pair in runs.runs.values() for pair_id in by_pair}
    in_holdout = [p for p in holdout if p.pair_id in predicted]
    scorable = [p for p in in_holdout if p.human_verdict is not None] if labelled else in_holdout
    if not scorable:
        n_labelled = sum(p.human_verdict is not None for p in holdout)
        wanted = "both a human label and a prediction" if labelled else "a prediction"
        raise MetricInputError(
            f"nothing to score for checkpoint {checkpoint!r}: no holdout pair has {wanted} ({len(holdout)} pairs, "
            f"{n_labelled} labelled, {len(in_holdout)} predicted); is this the labelled holdout the log was made on?"
        )
