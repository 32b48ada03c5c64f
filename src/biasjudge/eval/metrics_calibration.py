"""Calibration of score-mode probabilities, as pure functions: the Brier score, the top-label
expected calibration error, and kappa over the most confident pairs (the kappa-coverage curve).

The conventions of :mod:`biasjudge.eval.metrics`; each probability row is a mapping label ->
probability, renormalised to sum to 1. Fitting a calibration is :mod:`biasjudge.eval.calibration`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import brier_score_loss

from biasjudge.errors import MetricInputError
from biasjudge.verdict import VERDICTS, check_labels, check_same_length, check_values, cohen_kappa


def _prob_matrix(probs: Sequence[Mapping[str, float]], labels: tuple[str, ...]) -> np.ndarray:
    matrix = np.zeros((len(probs), len(labels)))
    for i, row in enumerate(probs):
        unknown = set(row) - set(labels)
        if unknown:
            raise MetricInputError(f"probs[{i}] has keys {sorted(unknown)!r} that are not labels {labels!r}")
        values = [float(row.get(label, 0.0)) for label in labels]
        if any(v < 0 or math.isnan(v) for v in values) or sum(values) <= 0:
            raise MetricInputError(f"probs[{i}] must be non-negative and sum to more than 0, got {dict(row)!r}")
        matrix[i] = values
    return matrix / matrix.sum(axis=1, keepdims=True) if len(probs) else matrix


def _checked_rows(
    y_true: Sequence[str], probs: Sequence[Mapping[str, float]], labels: tuple[str, ...]
) -> tuple[list[str], np.ndarray] | None:
    """The checked labels and the renormalised probability matrix; None when there are no rows."""
    check_same_length(y_true=y_true, probs=probs)
    checked = check_values("y_true", y_true, labels)
    return (checked, _prob_matrix(probs, labels)) if checked else None


def brier_score(
    y_true: Sequence[str], probs: Sequence[Mapping[str, float]], *, labels: Sequence[str] = VERDICTS
) -> float:
    """Multi-class Brier score: mean over rows of sum_k (p_k - [y = k])^2; 0 is perfect, 2 the worst.

    scikit-learn's `brier_score_loss` (multi-class since 1.7), unscaled so that the range is 0..2
    for any number of labels. Each probability row is renormalised to sum to 1 (a missing label
    counts as 0). NaN when empty.

    Raises:
        MetricInputError: fewer than 2 labels, lengths differ, an unknown label, or a negative /
            all-zero probability row.

    Row 1 is certain and right (0); row 2 gives TIE 0.5: (0.5 - 0)^2 + 0^2 + (0.5 - 1)^2 = 0.5.

    >>> brier_score(["A", "TIE"], [{"A": 1.0, "B": 0.0, "TIE": 0.0}, {"A": 0.5, "B": 0.0, "TIE": 0.5}])
    0.25
    """
    labels = check_labels(labels)
    if len(labels) < 2:
        # One label is always certain and always right; scikit-learn would read one column as
        # the positive-class probability of a binary problem instead.
        raise MetricInputError(f"brier_score needs at least 2 labels, got {labels!r}")
    checked = _checked_rows(y_true, probs, labels)
    if checked is None:
        return float("nan")
    y_true, p = checked
    # scikit-learn reads the columns in sorted label order (LabelBinarizer's), whatever the order
    # of `labels`; ours follow `labels`, so reorder them.
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    return float(brier_score_loss(y_true, p[:, order], labels=[labels[i] for i in order], scale_by_half=False))


def expected_calibration_error(
    y_true: Sequence[str],
    probs: Sequence[Mapping[str, float]],
    *,
    labels: Sequence[str] = VERDICTS,
    n_bins: int = 10,
) -> float:
    """Top-label expected calibration error: bins of equal width over the top probability,
    sum over bins of (share of rows) * |accuracy - mean top probability|. NaN when empty.

    Ties for the top probability go to the first label in `labels` order. numpy, not
    scikit-learn: scikit-learn has no top-label ECE (`calibration_curve` is binary only).

    Raises:
        MetricInputError: lengths differ, an unknown label, a bad probability row, or `n_bins` < 1.

    Row 1 (top 0.9, right) in bin 9, row 2 (top 0.8, wrong) in bin 8:
    1/2 * |1 - 0.9| + 1/2 * |0 - 0.8| = 0.05 + 0.4.

    >>> expected_calibration_error(["A", "B"], [{"A": 0.9, "B": 0.1}, {"A": 0.8, "B": 0.2}])
    0.45
    """
    labels = check_labels(labels)
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be at least 1, got {n_bins}")
    checked = _checked_rows(y_true, probs, labels)
    if checked is None:
        return float("nan")
    y_true, p = checked
    top = p.max(axis=1)
    correct = p.argmax(axis=1) == np.array([labels.index(t) for t in y_true])
    bins = np.minimum((top * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        inside = bins == b
        ece += inside.mean() * abs(correct[inside].mean() - top[inside].mean())
    return round(float(ece), 12)


COVERAGES: tuple[int, ...] = (100, 90, 80, 70, 60, 50)
"""Coverage levels (percent of pairs judged) of the kappa-coverage curve."""


def kappa_at_coverage(
    y_true: Sequence[str], probs: Sequence[Mapping[str, float]], coverages: Sequence[int] = COVERAGES
) -> dict[int, float]:
    """Kappa over the most confident share of pairs, at each coverage (percent): what a judge that
    abstains below a probability threshold would score on the pairs it still judges.

    Pairs are ranked by their top probability (ties keep input order); coverage c keeps the first
    ceil(c% of n). The verdict is each row's argmax (ties to the first of A, B, TIE). NaN where
    kappa is undefined.

    >>> y = ["A", "B", "TIE", "A"]
    >>> p = [{"A": .9, "B": .05, "TIE": .05}, {"A": .1, "B": .8, "TIE": .1}, {"A": .1, "B": .2, "TIE": .7},
    ...      {"A": .3, "B": .4, "TIE": .3}]
    >>> {c: round(k, 3) for c, k in kappa_at_coverage(y, p, (100, 75)).items()}  # the unsure 4th pair left out
    {100: 0.636, 75: 1.0}
    """
    check_same_length(y_true=y_true, probs=probs)
    y_true = check_values("y_true", y_true, VERDICTS)
    if not y_true:
        return {c: float("nan") for c in coverages}
    p = _prob_matrix(probs, VERDICTS)
    order = np.argsort(-p.max(axis=1), kind="stable")
    pred = [VERDICTS[i] for i in p.argmax(axis=1)]
    out = {}
    for c in coverages:
        if not 0 < c <= 100:
            raise MetricInputError(f"a coverage is a percent in (0, 100], got {c}")
        keep = order[: math.ceil(len(y_true) * c / 100)]
        out[c] = cohen_kappa([y_true[i] for i in keep], [pred[i] for i in keep])
    return out
