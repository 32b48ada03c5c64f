"""Agreement between judges: the seeded bootstrap interval of a kappa, and :func:`judge_agreement`,
every two judges of a log (the humans being one of them) compared per slice.

Pure like :mod:`biasjudge.eval.metrics`: records, verdict, errors and numpy only. The kappa is
:func:`biasjudge.verdict.cohen_kappa`, the project's one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from biasjudge.errors import MetricInputError
from biasjudge.eval.metrics_runs import SLICES, check_holdout, check_scorable, index_checkpoint, nan_to_none
from biasjudge.records import Pair, Prediction
from biasjudge.verdict import (
    PARSE_FAIL,
    VERDICTS,
    check_labels,
    check_pair,
    cohen_kappa,
    confusion,
    kappa_from_confusion,
)


def kappa_interval(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    *,
    labels: Sequence[str] = VERDICTS,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of :func:`cohen_kappa`, resampling rows (pairs) with replacement.

    Seeded, so the same inputs always give the same interval. Resamples on which kappa is
    undefined are left out. Returns `(nan, nan)` when the inputs are empty or every resample is
    undefined.

    Raises:
        MetricInputError: lengths differ, a value is not one of `labels`, `n_resamples` < 1, or
            `confidence` is not strictly between 0 and 1.

    Perfect agreement gives kappa 1 on every resample that has two labels (the one-label resamples
    are undefined and left out):

    >>> kappa_interval(["A", "B", "TIE"] * 5, ["A", "B", "TIE"] * 5)
    (1.0, 1.0)
    >>> low, high = kappa_interval(["A", "B", "TIE", "A"] * 10, ["A", "B", "TIE", "B"] * 10)
    >>> round(low, 2), round(high, 2)
    (0.45, 0.81)
    >>> kappa_interval(["A"], ["A"])
    (nan, nan)
    """
    labels = check_labels(labels)
    y_true, y_pred = check_pair(y_true, y_pred, labels)
    if n_resamples < 1:
        raise MetricInputError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise MetricInputError(f"confidence must be strictly between 0 and 1, got {confidence}")
    n = len(y_true)
    if n == 0:
        return float("nan"), float("nan")
    k = len(labels)
    index = {label: i for i, label in enumerate(labels)}
    # Row i as one code, true * k + predicted; a resample's confusion matrix is then a bincount of
    # its codes, offset by k * k per resample so that one bincount fills the whole stack.
    codes = np.array([index[t] * k + index[p] for t, p in zip(y_true, y_pred, strict=True)])
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=(n_resamples, n))
    flat = codes[rows] + (np.arange(n_resamples) * k * k)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_resamples * k * k).reshape(n_resamples, k, k)
    # Each resample scored by the one kappa formula (plain Python, a few microseconds a matrix:
    # about 7 ms per 1000-resample interval; scikit-learn's `cohen_kappa_score` per resample took 0.9 s).
    kappas = np.array([kappa_from_confusion(matrix) for matrix in counts.tolist()])
    kappas = kappas[~np.isnan(kappas)]
    if kappas.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(kappas, [tail, 100.0 - tail])
    return float(low), float(high)


HUMAN = "human"
"""The name of the human labels among the judges of :func:`judge_agreement`."""
AGREEMENT_SLICES: dict[str, str | None] = {"all": None, **SLICES}
"""Slice key -> eval_slice of an agreement (None: every pair)."""


@dataclass(frozen=True)
class Agreement:
    """How two judges agree on the pairs both gave a verdict (PARSE_FAIL left out) of one slice."""

    first: str
    second: str
    slice: str
    """`all`, `in_dist` or `ood_religion`."""
    n: int
    """Pairs with a verdict of both."""
    kappa: float | None
    """Cohen's kappa between the two (None when undefined: no pair, or one label only)."""
    ci_low: float | None
    ci_high: float | None
    agreement: float | None
    """Share of those pairs with the same verdict."""
    confusion: list[list[int]]
    """Counts, rows: the first judge's verdict, columns: the second's, in VERDICTS order."""


def judge_agreement(
    holdout: Sequence[Pair],
    predictions: Iterable[Prediction],
    *,
    judges: Sequence[str] | None = None,
    run_type: str = "original",
    with_humans: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[Agreement]:
    """Agreement of every two judges (and of each with the humans) on the holdout pairs, per slice.

    Judge vs judge is the same kappa as judge vs human (:func:`cohen_kappa`, seeded bootstrap
    interval), over the pairs both judges gave an A/B/TIE verdict in `run_type`. `judges` default:
    every checkpoint of `predictions` in order of appearance; with `with_humans`, :data:`HUMAN`
    (the pairs' `human_verdict`) comes first when any pair has a label.

    Raises:
        MetricInputError: fewer than two judges, an unknown judge, or as :func:`compute_metrics`.

    >>> pair = lambda i, h: Pair.model_validate({
    ...     "pair_id": i, "question_id": "q", "question_text": "Who?", "answer_choices": [],
    ...     "bias_category": "age", "pair_category": "clear_bias_vs_clean", "eval_slice": "in_dist",
    ...     "response_a": {"model": "m", "text": "x"}, "response_b": {"model": "m", "text": "y"},
    ...     "human_verdict": h})
    >>> preds = [Prediction(checkpoint_name=c, pair_id=i, run_type="original", verdict=v)
    ...          for c, i, v in [("x", "p1", "A"), ("x", "p2", "B"), ("y", "p1", "A"), ("y", "p2", "TIE")]]
    >>> found = judge_agreement([pair("p1", "A"), pair("p2", "B")], preds, n_resamples=0)
    >>> [(a.first, a.second, a.n, a.agreement) for a in found if a.slice == "all"]
    [('human', 'x', 2, 1.0), ('human', 'y', 2, 0.5), ('x', 'y', 2, 0.5)]
    """
    check_holdout(holdout)
    predictions = list(predictions)
    present = list(dict.fromkeys(p.checkpoint_name for p in predictions))
    names = list(judges) if judges is not None else present
    unknown = [n for n in names if n not in present and n != HUMAN]
    if unknown:
        raise MetricInputError(f"no predictions of judge(s) {', '.join(map(repr, unknown))}; the log has {present}")
    if with_humans and HUMAN not in names and any(p.human_verdict is not None for p in holdout):
        names.insert(0, HUMAN)
    if len(names) < 2:
        raise MetricInputError(f"agreement needs two judges or a judge and human labels; got {names}")
    verdicts: dict[str, dict[str, str]] = {}
    for name in names:
        if name == HUMAN:
            verdicts[name] = {p.pair_id: p.human_verdict for p in holdout if p.human_verdict is not None}
            continue
        runs = index_checkpoint(predictions, name)
        check_scorable(holdout, runs, name, labelled=False)
        verdicts[name] = {
            p.pair_id: v for p in holdout if (v := runs.verdict(run_type, p.pair_id)) is not None and v != PARSE_FAIL
        }
    out = []
    for key, eval_slice in AGREEMENT_SLICES.items():
        ids = [p.pair_id for p in holdout if eval_slice is None or p.eval_slice == eval_slice]
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                both = [pid for pid in ids if pid in verdicts[first] and pid in verdicts[second]]
                y1, y2 = [verdicts[first][pid] for pid in both], [verdicts[second][pid] for pid in both]
                low, high = kappa_interval(y1, y2, n_resamples=n_resamples, seed=seed) if n_resamples else (None, None)
                out.append(
                    Agreement(
                        first=first,
                        second=second,
                        slice=key,
                        n=len(both),
                        kappa=nan_to_none(cohen_kappa(y1, y2)) if both else None,
                        ci_low=nan_to_none(low),
                        ci_high=nan_to_none(high),
                        agreement=sum(a == b for a, b in zip(y1, y2, strict=True)) / len(both) if both else None,
                        confusion=confusion(y1, y2),
                    )
                )
    return out
