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

This module scores whole logs and is the one to import from; the single metrics live beside it, a
module per concern, and are re-exported here: :mod:`~biasjudge.eval.metrics_behaviour` (position
bias, self-consistency, parse failures, verbosity), :mod:`~biasjudge.eval.metrics_calibration`
(Brier, ECE, kappa at coverage), :mod:`~biasjudge.eval.metrics_agreement` (kappa intervals, judge
vs judge) and :mod:`~biasjudge.eval.metrics_runs` (a checkpoint's predictions indexed, the holdout
checks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from biasjudge.errors import MetricInputError
from biasjudge.eval.metrics_agreement import AGREEMENT_SLICES, HUMAN, Agreement, judge_agreement, kappa_interval
from biasjudge.eval.metrics_behaviour import parse_failure_rate, position_bias, self_consistency, verbosity_bias
from biasjudge.eval.metrics_calibration import (
    COVERAGES,
    brier_score,
    expected_calibration_error,
    kappa_at_coverage,
)
from biasjudge.eval.metrics_runs import (
    SLICES,
    CheckpointRuns,
    check_holdout,
    check_scorable,
    index_checkpoint,
    labelled_verdicts,
    nan_to_none,
    scored_verdict,
)
from biasjudge.records import EvalLog, Pair, Prediction
from biasjudge.verdict import PARSE_FAIL, UNSURE, VERDICTS, cohen_kappa, confusion

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


def whitespace_tokens(text: str) -> int:
    """Default token counter: whitespace-separated words.

    >>> whitespace_tokens("The bartender did well. ")
    4
    """
    return len(text.split())


def _verbosity(originals: Sequence[tuple[Pair, str]], count: TokenCounter) -> float | None:
    return nan_to_none(
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
    check_holdout(holdout_pairs)
    runs = index_checkpoint(predictions, checkpoint)
    originals = [(p, v) for p in holdout_pairs if (v := runs.verdict("original", p.pair_id)) is not None]
    return _verbosity(originals, token_counter)


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
    check_holdout(holdout_pairs)
    runs = index_checkpoint(predictions, checkpoint)
    # Labels are not required here: protocol.run_eval also scores unlabelled pairs (the training
    # recipe's validation split has none), whose label-free metrics (position bias, consistency,
    # parse failures) are still wanted. metrics_by_checkpoint, which reads a log against "the
    # labelled holdout", requires them.
    check_scorable(holdout_pairs, runs, checkpoint, labelled=False)
    count = token_counter or whitespace_tokens
    out: dict[str, float | None] = {}

    def kappa_with_interval(key: str, pairs: Sequence[Pair]) -> None:
        y_true, y_pred, _ = labelled_verdicts(pairs, runs)
        out[key] = nan_to_none(cohen_kappa(y_true, y_pred))
        low, high = kappa_interval(y_true, y_pred, n_resamples=n_resamples, seed=seed)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = nan_to_none(low), nan_to_none(high)

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
        out[f"position_bias_{key}"] = nan_to_none(position_bias([o for o, _ in both], [s for _, s in both]))
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
        out["self_consistency_t03"] = nan_to_none(self_consistency(table))

    out["parse_failure_rate"] = nan_to_none(parse_failure_rate(runs.all_verdicts))

    # Extras beyond the reference.
    for category in sorted({p.bias_category for p in holdout_pairs}):
        kappa_with_interval(f"kappa_category_{category}", [p for p in holdout_pairs if p.bias_category == category])

    out.update(_calibration_metrics(holdout_pairs, runs))

    out["n_pairs"] = float(len(originals))
    for key, pairs in by_slice.items():
        out[f"n_{key}"] = float(len(labelled_verdicts(pairs, runs)[0]))
    out["n_predictions"] = float(len(runs.all_verdicts))
    out["n_parse_fail"] = float(sum(v == PARSE_FAIL for v in runs.all_verdicts))
    out["n_unsure"] = float(sum(v == UNSURE for v in runs.all_verdicts))
    given = [v for _, v in originals if v != PARSE_FAIL]
    out["abstention_rate"] = sum(v == UNSURE for v in given) / len(given) if out["n_unsure"] and given else None
    out["n_truncated"] = float(runs.n_truncated)
    out["n_floored"] = float(runs.n_floored)

    ordered = {key: out.pop(key) for key in REFERENCE_KEYS}
    return {**ordered, **out}


def _calibration_metrics(holdout: Sequence[Pair], runs: CheckpointRuns) -> dict[str, float | None]:
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
            if pred.wrappers.uncalibrated_probs:
                raw.append({k: v for k, v in pred.wrappers.uncalibrated_probs.items() if k in VERDICTS})
        out[f"brier_score{key}"] = nan_to_none(brier_score(y_true, probs)) if y_true else None
        out[f"ece{key}"] = nan_to_none(expected_calibration_error(y_true, probs)) if y_true else None
        if raw and len(raw) == len(y_true):
            out[f"brier_score_uncalibrated{key}"] = nan_to_none(brier_score(y_true, raw))
            out[f"ece_uncalibrated{key}"] = nan_to_none(expected_calibration_error(y_true, raw))
        if name is not None and y_true:
            for c, kappa in kappa_at_coverage(y_true, probs, COVERAGES[1:3]).items():
                out[f"kappa{key}_at_coverage_{c}"] = nan_to_none(kappa)
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
    log: EvalLog, holdout: Sequence[Pair], *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float | None]]:
    """:func:`compute_metrics` for each checkpoint with predictions in `log`, in log order, verbosity
    bias in whitespace tokens (:func:`biasjudge.eval.report.log_metrics` counts a judge's own).

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
    check_holdout(holdout)
    out: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys(p.checkpoint_name for p in log.detailed):
        check_scorable(holdout, index_checkpoint(log.detailed, name), name, labelled=True)
        out[name] = compute_metrics(holdout, log.detailed, checkpoint=name, n_resamples=n_resamples, seed=seed)
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
    check_holdout(holdout)
    runs = index_checkpoint(predictions, checkpoint)
    check_scorable(holdout, runs, checkpoint, labelled=True)  # counts against human labels
    out = {}
    for key, name in SLICES.items():
        y_true, y_pred, _ = labelled_verdicts([p for p in holdout if p.eval_slice == name], runs, run_type)
        out[key] = confusion(y_true, y_pred, labels=labels)
    return out


__all__ = [
    "AGREEMENT_SLICES",
    "BUCKETS",
    "COVERAGES",
    "HUMAN",
    "KAPPA_KEYS",
    "REFERENCE_KEYS",
    "SLICES",
    "Agreement",
    "TokenCounter",
    "brier_score",
    "checkpoint_verbosity",
    "checkpoints",
    "cohen_kappa",
    "compute_metrics",
    "confusion",
    "confusion_by_slice",
    "expected_calibration_error",
    "judge_agreement",
    "kappa_at_coverage",
    "kappa_interval",
    "metrics_by_checkpoint",
    "parse_failure_rate",
    "position_bias",
    "scored_verdict",
    "self_consistency",
    "verbosity_bias",
    "whitespace_tokens",
]
