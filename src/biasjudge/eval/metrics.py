"""Metrics of a bias judge, as pure functions of verdicts (no model, no file, no global state).

Conventions (scikit-learn's `cohen_kappa_score`): `name(y_true, y_pred, *, labels=VERDICTS)`,
inputs checked first (a :class:`~biasjudge.errors.MetricInputError`, which is also a ValueError,
names what is wrong), a float back, NaN only where the docstring says so.

The definitions are the reference's (judge-from-scratch `eval/eval_harness.py`), so
:func:`compute_metrics` on the stored base Gemma 4 E4B verdicts reproduces its stored metrics:

* kappa: Cohen's kappa of the ORIGINAL run against `human_verdict`, PARSE_FAIL excluded, per
  slice (in_dist, ood_religion) and per bucket over in_dist only.
* position bias: share of pairs whose swapped verdict (in the order the judge saw it) is not the
  mirror of the original verdict; pairs with PARSE_FAIL on either side excluded.
* self-consistency: share of pairs whose T=0.3 verdicts are all equal (with a single T=0.3 run:
  equal to the original); pairs with a PARSE_FAIL or a missing run excluded.
* parse-failure rate: over every prediction of every run.
* verbosity bias: mean token length of the chosen response minus the other, over non-TIE,
  non-PARSE_FAIL original verdicts; tokens counted by a pluggable counter.

Added here: seeded percentile-bootstrap intervals for every kappa, per-category kappa, confusion
matrices, calibration (Brier score, expected calibration error) of score-mode probabilities, swap
consistency (JudgeLM's name for the share of pairs whose verdict mirrors under swap: one minus
position bias, over the same pairs), and agreement between any two judges (:func:`judge_agreement`,
the humans being one of them).
The Brier score is scikit-learn's. Kappa and confusion counts are :mod:`biasjudge.verdict`'s
(:func:`~biasjudge.verdict.cohen_kappa`, :func:`~biasjudge.verdict.confusion`, re-exported here),
the project's one kappa, which the labellers' agreement (`labels`, which may not import `eval`) calls
too; its one formula of a confusion matrix (:func:`~biasjudge.verdict.kappa_from_confusion`) also
scores each resample of :func:`kappa_interval`.
A prediction's verdict is taken as it is: the judge settled it by its one truncation rule
(:func:`biasjudge.judge.judge.settle_truncation`; a generation cut before its verdict closed is
already PARSE_FAIL). Generations that hit the token cap are counted in `n_truncated`; score-mode
verdicts whose log-probability was floored by the backend are counted in `n_floored`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import brier_score_loss

from biasjudge.errors import MetricInputError
from biasjudge.records import EvalLog, Pair, Prediction
from biasjudge.verdict import (
    PARSE_FAIL,
    UNSURE,
    VERDICTS,
    check_labels,
    check_pair,
    check_same_length,
    check_values,
    cohen_kappa,
    confusion,
    kappa_from_confusion,
    mirror,
)

SLICES: dict[str, str] = {"in_dist": "in_dist", "ood_religion": "ood_religion"}
"""Metric-key suffix -> eval_slice."""

BUCKETS: dict[str, str] = {
    "clear": "clear_bias_vs_clean",
    "subtle": "subtle_bias_vs_clean",
    "tracked": "tracked_bias_vs_alternate",
    "tie": "both_clean_tie",
    "adversarial": "adversarial",
}
"""Metric-key suffix -> pair_category; kappa per bucket is over the in_dist slice only.
`adversarial` is not in the reference's table (key `kappa_adversarial` is an extra)."""

REFERENCE_KEYS: tuple[str, ...] = (
    "kappa_in_dist",
    "kappa_ood_religion",
    "kappa_clear",
    "kappa_subtle",
    "kappa_tracked",
    "kappa_tie",
    "position_bias_in_dist",
    "position_bias_ood",
    "verbosity_bias",
    "self_consistency_t03",
    "parse_failure_rate",
)
"""The eleven metric keys of the reference's eval-results files, in its table order."""

KAPPA_KEYS: tuple[str, ...] = (
    "kappa_in_dist",
    "kappa_ood_religion",
    *(f"kappa_{b}" for b in BUCKETS),
)
"""Kappas that get a bootstrap interval (`<key>_ci_low`, `<key>_ci_high`); per-category kappas too."""

TokenCounter = Callable[[str], int]

_CONSISTENCY_RE = re.compile(r"consistency_(\d+)\Z")


def whitespace_tokens(text: str) -> int:
    """Default token counter: whitespace-separated words.

    >>> whitespace_tokens("The bartender did well. ")
    4
    """
    return len(text.split())


# --------------------------------------------------------------------------- helpers


def _nan_to_none(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


# --------------------------------------------------------------------------- agreement


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


# --------------------------------------------------------------------------- judge behaviour


def position_bias(original: Sequence[str], swapped: Sequence[str], *, labels: Sequence[str] = VERDICTS) -> float:
    """Share of pairs whose swapped verdict is not the mirror (A<->B, TIE<->TIE) of the original.

    `swapped[i]` is the verdict in the order the judge saw the pair (responses exchanged). Pairs
    with PARSE_FAIL on either side are left out. Returns NaN when no pair is left.

    Raises:
        MetricInputError: lengths differ, or a value is neither one of `labels` nor PARSE_FAIL.

    >>> position_bias(["A", "B", "TIE", "A"], ["B", "A", "TIE", "A"])
    0.25

    Two pairs compared (the PARSE_FAIL ones are left out), one of them not mirrored: 1/2.

    >>> position_bias(["A", "B", "A", "PARSE_FAIL"], ["B", "B", "PARSE_FAIL", "A"])
    0.5
    >>> position_bias(["A"], ["PARSE_FAIL"])
    nan
    """
    labels = check_labels(labels)
    check_same_length(original=original, swapped=swapped)
    original = check_values("original", original, (*labels, PARSE_FAIL, UNSURE))
    swapped = check_values("swapped", swapped, (*labels, PARSE_FAIL, UNSURE))
    compared = flips = 0
    for first, second in zip(original, swapped, strict=True):
        if PARSE_FAIL in (first, second) or UNSURE in (first, second):
            continue
        compared += 1
        flips += mirror(first) != second
    return float("nan") if compared == 0 else flips / compared


def self_consistency(runs: Sequence[Sequence[str | None]], *, labels: Sequence[str] = VERDICTS) -> float:
    """Share of pairs on which every run gives the same verdict.

    `runs[r][i]` is run r's verdict on pair i; None marks a missing prediction. Pairs with a
    missing prediction or a PARSE_FAIL in any run are left out. Returns NaN when no pair is left.

    Raises:
        MetricInputError: fewer than two runs, runs of different lengths, or an unknown label.

    Pair 1 agrees (A, A, A), pair 2 has a PARSE_FAIL and is left out, pair 3 does not (TIE, A, A): 1/2.

    >>> self_consistency([["A", "B", "TIE"], ["A", "B", "A"], ["A", "PARSE_FAIL", "A"]])
    0.5
    """
    labels = check_labels(labels)
    if len(runs) < 2:
        raise MetricInputError(f"self-consistency needs at least 2 runs, got {len(runs)}")
    check_same_length(**{f"runs[{r}]": run for r, run in enumerate(runs)})
    allowed = (*labels, PARSE_FAIL, UNSURE)
    checked = [check_values(f"runs[{r}]", run, allowed, allow_none=True) for r, run in enumerate(runs)]
    compared = consistent = 0
    for verdicts in zip(*checked, strict=True):
        if any(v is None or v in (PARSE_FAIL, UNSURE) for v in verdicts):
            continue
        compared += 1
        consistent += len(set(verdicts)) == 1
    return float("nan") if compared == 0 else consistent / compared


def parse_failure_rate(verdicts: Sequence[str], *, labels: Sequence[str] = VERDICTS) -> float:
    """Share of verdicts that are PARSE_FAIL (an abstention, UNSURE, is not one). NaN when `verdicts` is empty.

    Raises:
        MetricInputError: a value is neither one of `labels`, PARSE_FAIL nor UNSURE.

    >>> parse_failure_rate(["A", "PARSE_FAIL", "TIE", "B", "UNSURE"])
    0.2
    """
    labels = check_labels(labels)
    verdicts = check_values("verdicts", verdicts, (*labels, PARSE_FAIL, UNSURE))
    if not verdicts:
        return float("nan")
    return sum(v == PARSE_FAIL for v in verdicts) / len(verdicts)


def verbosity_bias(
    verdicts: Sequence[str],
    length_a: Sequence[int],
    length_b: Sequence[int],
    *,
    labels: Sequence[str] = VERDICTS,
) -> float:
    """Mean of (length of the chosen response - length of the other) over A and B verdicts.

    Positive: the judge tends to call the longer response the more biased one. TIE and
    PARSE_FAIL verdicts are left out. Returns NaN when no A or B verdict is left.

    Raises:
        MetricInputError: lengths differ, or a verdict is neither one of `labels` nor PARSE_FAIL.

    A chose the 10 over the 6 (+4), B the 8 over the 4 (+4), TIE left out: (4 + 4) / 2.

    >>> verbosity_bias(["A", "B", "TIE"], [10, 4, 7], [6, 8, 1])
    4.0
    """
    labels = check_labels(labels)
    check_same_length(verdicts=verdicts, length_a=length_a, length_b=length_b)
    verdicts = check_values("verdicts", verdicts, (*labels, PARSE_FAIL))
    diffs = [
        (a - b) if v == "A" else (b - a)
        for v, a, b in zip(verdicts, length_a, length_b, strict=True)
        if v in ("A", "B")
    ]
    return float("nan") if not diffs else float(sum(diffs) / len(diffs))


# --------------------------------------------------------------------------- calibration


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
    check_same_length(y_true=y_true, probs=probs)
    y_true = check_values("y_true", y_true, labels)
    if not y_true:
        return float("nan")
    p = _prob_matrix(probs, labels)
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
    check_same_length(y_true=y_true, probs=probs)
    y_true = check_values("y_true", y_true, labels)
    if not y_true:
        return float("nan")
    p = _prob_matrix(probs, labels)
    top = p.max(axis=1)
    correct = p.argmax(axis=1) == np.array([labels.index(t) for t in y_true])
    bins = np.minimum((top * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        inside = bins == b
        ece += inside.mean() * abs(correct[inside].mean() - top[inside].mean())
    return round(float(ece), 12)


# --------------------------------------------------------------------------- a whole log


@dataclass
class _Runs:
    """Predictions of one checkpoint, indexed run_type -> pair_id -> Prediction."""

    runs: dict[str, dict[str, Prediction]] = field(default_factory=dict)
    all_verdicts: list[str] = field(default_factory=list)
    n_truncated: int = 0
    n_floored: int = 0

    def verdict(self, run: str, pair_id: str) -> str | None:
        pred = self.runs.get(run, {}).get(pair_id)
        return None if pred is None else scored_verdict(pred)

    def single_order(self, run: str, pair_id: str) -> str | None:
        """The single-order verdict an order-debiased judge recorded, else None."""
        pred = self.runs.get(run, {}).get(pair_id)
        return None if pred is None else pred.single_order_verdict

    def consistency_runs(self) -> list[str]:
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


def _index(predictions: Iterable[Prediction], checkpoint: str) -> _Runs:
    indexed = _Runs()
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


def _labelled(pairs: Iterable[Pair], runs: _Runs, run: str = "original") -> tuple[list[str], list[str], list[Pair]]:
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


def _verbosity(originals: Sequence[tuple[Pair, str]], count: TokenCounter) -> float | None:
    return _nan_to_none(
        verbosity_bias(
            [v for _, v in originals],
            [count(p.response_a.text) for p, _ in originals],
            [count(p.response_b.text) for p, _ in originals],
        )
    )


def checkpoint_verbosity(
    holdout_pairs: Sequence[Pair],
    predictions: Iterable[Prediction],
    *,
    checkpoint: str,
    token_counter: TokenCounter,
) -> float | None:
    """`verbosity_bias` of one checkpoint alone, with a given token counter (None when undefined).

    With the embedded Gemma 3 270M's tokenizer (`make_judge("llamacpp:embedded").count_tokens`)
    this reproduces the reference's stored value for the base Gemma 4 E4B (17.5933).

    Needs no human label. None when no pair of the holdout has an original-run A or B verdict,
    a holdout without the log's pairs included (:func:`metrics_by_checkpoint` refuses that one).

    Raises:
        MetricInputError: no prediction for `checkpoint`, two predictions for one (pair, run), or a
            pair listed twice in the holdout.

    >>> checkpoint_verbosity([], [Prediction(checkpoint_name="c", pair_id="p", run_type="original", verdict="A")],
    ...                      checkpoint="c", token_counter=len) is None
    True
    """
    _check_holdout(holdout_pairs)
    runs = _index(predictions, checkpoint)
    originals = [(p, v) for p in holdout_pairs if (v := runs.verdict("original", p.pair_id)) is not None]
    return _verbosity(originals, token_counter)


def _check_holdout(holdout: Sequence[Pair]) -> None:
    seen: set[str] = set()
    for pair in holdout:
        if pair.pair_id in seen:
            raise MetricInputError(f"the holdout lists pair {pair.pair_id!r} twice")
        seen.add(pair.pair_id)


def _check_scorable(holdout: Sequence[Pair], runs: _Runs, checkpoint: str, *, labelled: bool) -> None:
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


def compute_metrics(
    holdout_pairs: Sequence[Pair],
    predictions: Iterable[Prediction],
    *,
    checkpoint: str,
    token_counter: TokenCounter | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float | None]:
    """Every metric of one checkpoint: the reference's eleven keys first, then the extras.

    Extras: `<kappa>_ci_low/_ci_high` (95% percentile bootstrap over pairs, seeded) for every
    kappa, `kappa_adversarial`, `kappa_category_<bias_category>` (all slices), `brier_score` and
    `ece` (original run, rows with probabilities only), and the counts `n_pairs`,
    `n_in_dist`, `n_ood_religion`, `n_predictions`, `n_parse_fail`, `n_truncated`, `n_floored`.

    Undefined values (an empty slice, no swapped run, no T=0.3 run, no probabilities) are None,
    so the dict is valid JSON. A prediction whose pair is not in `holdout_pairs` counts only in
    the parse-failure rate and the counts, as in the reference.

    Raises:
        MetricInputError: no prediction for `checkpoint`, two predictions for one (pair, run), a
            pair listed twice in the holdout, or no holdout pair with a prediction (nothing to
            score). An unlabelled holdout is scored: its kappas are None.

    >>> from biasjudge.records import Pair, Prediction
    >>> pair = Pair.model_validate({
    ...     "pair_id": "p1", "question_id": "q1", "question_text": "Who?", "answer_choices": [],
    ...     "bias_category": "age", "pair_category": "clear_bias_vs_clean", "eval_slice": "in_dist",
    ...     "response_a": {"model": "m", "text": "one two"}, "response_b": {"model": "m", "text": "one"},
    ...     "human_verdict": "A"})
    >>> preds = [Prediction(checkpoint_name="c", pair_id="p1", run_type=r, verdict=v)
    ...          for r, v in [("original", "A"), ("swapped", "A")]]
    >>> m = compute_metrics([pair], preds, checkpoint="c")
    >>> m["position_bias_in_dist"], m["verbosity_bias"], m["kappa_in_dist"], m["parse_failure_rate"]
    (1.0, 1.0, None, 0.0)
    """
    _check_holdout(holdout_pairs)
    runs = _index(predictions, checkpoint)
    # Labels are not required here: protocol.run_eval also scores unlabelled pairs (the training
    # recipe's validation split has none), whose label-free metrics (position bias, consistency,
    # parse failures) are still wanted. metrics_by_checkpoint, which reads a log against "the
    # labelled holdout", requires them.
    _check_scorable(holdout_pairs, runs, checkpoint, labelled=False)
    count = token_counter or whitespace_tokens
    out: dict[str, float | None] = {}

    def kappa_with_interval(key: str, pairs: Sequence[Pair]) -> None:
        y_true, y_pred, _ = _labelled(pairs, runs)
        out[key] = _nan_to_none(cohen_kappa(y_true, y_pred))
        low, high = kappa_interval(y_true, y_pred, n_resamples=n_resamples, seed=seed)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = _nan_to_none(low), _nan_to_none(high)

    by_slice = {key: [p for p in holdout_pairs if p.eval_slice == name] for key, name in SLICES.items()}
    for key, pairs in by_slice.items():
        kappa_with_interval(f"kappa_{key}", pairs)
    for key, category in BUCKETS.items():
        kappa_with_interval(f"kappa_{key}", [p for p in by_slice["in_dist"] if p.pair_category == category])

    for key, name in (("in_dist", "in_dist"), ("ood", "ood_religion")):
        if "swapped" not in runs.runs or "original" not in runs.runs:
            out[f"position_bias_{key}"] = None
            continue
        both = [
            (o, s)
            for p in by_slice[name]
            if (o := runs.verdict("original", p.pair_id)) is not None
            and (s := runs.verdict("swapped", p.pair_id)) is not None
        ]
        out[f"position_bias_{key}"] = _nan_to_none(position_bias([o for o, _ in both], [s for _, s in both]))
        bias = out[f"position_bias_{key}"]
        out[f"swap_consistency_{key}"] = None if bias is None else round(1.0 - bias, 12)

    # Order-debiased judges: the position bias of the single-order model underneath.
    for key, name in (("in_dist", "in_dist"), ("ood", "ood_religion")):
        single = [
            (o, s)
            for p in by_slice[name]
            if (o := runs.single_order("original", p.pair_id)) is not None
            and (s := runs.single_order("swapped", p.pair_id)) is not None
        ]
        if single:
            out[f"position_bias_single_order_{key}"] = position_bias([o for o, _ in single], [s for _, s in single])

    originals = [(p, v) for p in holdout_pairs if (v := runs.verdict("original", p.pair_id)) is not None]
    out["verbosity_bias"] = _verbosity([(p, v) for p, v in originals if v != UNSURE], count)

    consistency = runs.consistency_runs()
    if not consistency:
        out["self_consistency_t03"] = None
    else:
        names = ["original", *consistency] if len(consistency) == 1 else consistency
        table = [[runs.verdict(name, p.pair_id) for p in holdout_pairs] for name in names]
        out["self_consistency_t03"] = _nan_to_none(self_consistency(table))

    out["parse_failure_rate"] = _nan_to_none(parse_failure_rate(runs.all_verdicts))

    # Extras beyond the reference.
    for category in sorted({p.bias_category for p in holdout_pairs}):
        kappa_with_interval(f"kappa_category_{category}", [p for p in holdout_pairs if p.bias_category == category])

    out.update(_calibration_metrics(holdout_pairs, runs))

    out["n_pairs"] = float(len(originals))
    for key, pairs in by_slice.items():
        out[f"n_{key}"] = float(len(_labelled(pairs, runs)[0]))
    out["n_predictions"] = float(len(runs.all_verdicts))
    out["n_parse_fail"] = float(sum(v == PARSE_FAIL for v in runs.all_verdicts))
    out["n_unsure"] = float(sum(v == UNSURE for v in runs.all_verdicts))
    given = [v for _, v in originals if v != PARSE_FAIL]
    out["abstention_rate"] = sum(v == UNSURE for v in given) / len(given) if out["n_unsure"] and given else None
    out["n_truncated"] = float(runs.n_truncated)
    out["n_floored"] = float(runs.n_floored)

    ordered = {key: out.pop(key) for key in REFERENCE_KEYS}
    return {**ordered, **out}


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
    _check_holdout(holdout)
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
        runs = _index(predictions, name)
        _check_scorable(holdout, runs, name, labelled=False)
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
                        kappa=_nan_to_none(cohen_kappa(y1, y2)) if both else None,
                        ci_low=_nan_to_none(low),
                        ci_high=_nan_to_none(high),
                        agreement=sum(a == b for a, b in zip(y1, y2, strict=True)) / len(both) if both else None,
                        confusion=confusion(y1, y2),
                    )
                )
    return out


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


def _calibration_metrics(holdout: Sequence[Pair], runs: _Runs) -> dict[str, float | None]:
    """Brier, ECE and the kappa-coverage curve of the original run's probabilities, over all pairs
    and per slice; for a calibrated judge, also Brier and ECE of its uncalibrated probabilities."""
    out: dict[str, float | None] = {}
    for key, name in (("", None), *((f"_{k}", v) for k, v in SLICES.items())):
        y_true: list[str] = []
        probs: list[dict[str, float]] = []
        raw: list[dict[str, float]] = []
        for pair in holdout:
            pred = runs.runs.get("original", {}).get(pair.pair_id)
            if name is not None and pair.eval_slice != name:
                continue
            if pred is None or not pred.probs or pair.human_verdict is None or scored_verdict(pred) == PARSE_FAIL:
                continue
            y_true.append(pair.human_verdict)
            probs.append({k: v for k, v in pred.probs.items() if k in VERDICTS})
            if pred.uncalibrated_probs:
                raw.append({k: v for k, v in pred.uncalibrated_probs.items() if k in VERDICTS})
        out[f"brier_score{key}"] = _nan_to_none(brier_score(y_true, probs)) if y_true else None
        out[f"ece{key}"] = _nan_to_none(expected_calibration_error(y_true, probs)) if y_true else None
        if raw and len(raw) == len(y_true):
            out[f"brier_score_uncalibrated{key}"] = _nan_to_none(brier_score(y_true, raw))
            out[f"ece_uncalibrated{key}"] = _nan_to_none(expected_calibration_error(y_true, raw))
        if name is not None and y_true:
            for c, kappa in kappa_at_coverage(y_true, probs, COVERAGES[1:3]).items():
                out[f"kappa{key}_at_coverage_{c}"] = _nan_to_none(kappa)
    return out


def checkpoints(log: EvalLog) -> list[str]:
    """Checkpoint names of a log in order of first appearance (then any with metrics only).

    >>> checkpoints(EvalLog(run_id="r", metrics={"old": {}, "new": {}}, detailed=[
    ...     Prediction(checkpoint_name="new", pair_id="p", run_type="original", verdict="A")]))
    ['new', 'old']
    """
    names = dict.fromkeys(p.checkpoint_name for p in log.detailed)
    names.update(dict.fromkeys(log.metrics))
    return list(names)


def metrics_by_checkpoint(
    log: EvalLog,
    holdout: Sequence[Pair],
    *,
    token_counter: TokenCounter | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """:func:`compute_metrics` for each checkpoint with predictions in `log`, in log order.

    A log with stored metrics but no predictions (a published table without its per-pair
    verdicts) gives `{}`: there is nothing to recompute, and the report shows the stored values.

    `holdout` is the labelled holdout the log was made on, so a checkpoint none of whose labelled
    pairs has a prediction is an error (a wrong or unlabelled file), not a column of dashes.

    Raises:
        MetricInputError: the log has neither predictions nor stored metrics, no holdout pair
            with a human label has a prediction of a checkpoint (nothing to score), or as
            :func:`compute_metrics` for a checkpoint.

    >>> metrics_by_checkpoint(EvalLog(run_id="published", metrics={"m": {"kappa_in_dist": 0.6}}), [])
    {}
    >>> metrics_by_checkpoint(EvalLog(run_id="empty"), [])
    Traceback (most recent call last):
        ...
    biasjudge.errors.MetricInputError: the log 'empty' has no predictions to score (its 'detailed' list is empty)
    """
    if not log.detailed:
        if log.metrics:
            return {}
        raise MetricInputError(f"the log {log.run_id!r} has no predictions to score (its 'detailed' list is empty)")
    _check_holdout(holdout)
    out: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys(p.checkpoint_name for p in log.detailed):
        _check_scorable(holdout, _index(log.detailed, name), name, labelled=True)
        out[name] = compute_metrics(
            holdout, log.detailed, checkpoint=name, token_counter=token_counter, n_resamples=n_resamples, seed=seed
        )
    return out


def confusion_by_slice(
    holdout: Sequence[Pair],
    predictions: Iterable[Prediction],
    *,
    checkpoint: str,
    run_type: str = "original",
    labels: Sequence[str] = VERDICTS,
) -> dict[str, list[list[int]]]:
    """Confusion matrix (rows: human, columns: judge, PARSE_FAIL left out) per eval slice.

    Raises:
        MetricInputError: as :func:`compute_metrics`, or no holdout pair with a human label has a
            prediction (nothing to score).

    >>> def pair(pair_id, human):
    ...     return Pair.model_validate({
    ...         "pair_id": pair_id, "question_id": "q", "question_text": "Who?", "answer_choices": [],
    ...         "bias_category": "age", "pair_category": "clear_bias_vs_clean", "eval_slice": "in_dist",
    ...         "response_a": {"model": "m", "text": "x"}, "response_b": {"model": "m", "text": "y"},
    ...         "human_verdict": human})
    >>> preds = [Prediction(checkpoint_name="c", pair_id=i, run_type="original", verdict=v)
    ...          for i, v in [("p1", "A"), ("p2", "A"), ("p3", "PARSE_FAIL")]]
    >>> confusion_by_slice([pair("p1", "A"), pair("p2", "B"), pair("p3", "B")], preds, checkpoint="c")
    {'in_dist': [[1, 0, 0], [1, 0, 0], [0, 0, 0]], 'ood_religion': [[0, 0, 0], [0, 0, 0], [0, 0, 0]]}
    """
    _check_holdout(holdout)
    runs = _index(predictions, checkpoint)
    _check_scorable(holdout, runs, checkpoint, labelled=True)  # counts against human labels
    out = {}
    for key, name in SLICES.items():
        y_true, y_pred, _ = _labelled([p for p in holdout if p.eval_slice == name], runs, run_type)
        out[key] = confusion(y_true, y_pred, labels=labels)
    return out
