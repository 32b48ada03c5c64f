"""Fitting a calibration map on a calibration split, and how well it does (issue: calibrated confidence).

The map itself, and the judge that applies it, are :mod:`biasjudge.judge.calibration`. Here: the
two fits (temperature scaling by the log loss; isotonic regression, one-vs-rest, scikit-learn's),
the rows they are fitted on (a log's original-order probabilities against labels of the same
pairs), and the scores before and after (top-label ECE with 10 equal-width bins, Brier, log loss).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from biasjudge.errors import ConfigError, MetricInputError
from biasjudge.eval.metrics import SLICES, brier_score, expected_calibration_error
from biasjudge.eval.settings import CalibrateSettings, CalibrationMethod, LabelChoice
from biasjudge.judge.calibration import PROB_FLOOR, Calibration, IsotonicMap, Method, tempered
from biasjudge.records import EvalLog, Pair, pick_checkpoint
from biasjudge.verdict import PARSE_FAIL, VERDICTS

METHODS: tuple[str, ...] = get_args(CalibrationMethod)
"""`auto` picks the method with the lower cross-validated Brier score on the calibration rows."""
CV_FOLDS = 5
"""Folds of the cross-validation that `auto` chooses by (rows shuffled with seed 0)."""
MIN_ROWS = 10
"""Fewest labelled rows a map is fitted on."""


def _matrix(probs: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Rows of A, B, TIE probabilities, renormalised."""
    p = np.array([[max(float(row.get(v, 0.0)), 0.0) for v in VERDICTS] for row in probs], dtype=np.float64)
    return p / p.sum(axis=1, keepdims=True)


def log_loss(labels: Sequence[str], probs: Sequence[Mapping[str, float]]) -> float:
    """Mean negative log-likelihood of the labels (natural log).

    >>> round(log_loss(["A"], [{"A": 0.5, "B": 0.25, "TIE": 0.25}]), 4)
    0.6931
    """
    p = _matrix(probs)
    index = np.array([VERDICTS.index(label) for label in labels])
    return float(-np.mean(np.log(np.clip(p[np.arange(len(index)), index], PROB_FLOOR, 1.0))))


def fit_temperature(labels: Sequence[str], probs: Sequence[Mapping[str, float]]) -> float:
    """The temperature that minimises the log loss (bounded search over log T in [log 0.05, log 20]).

    >>> over = [{"A": 0.99, "B": 0.005, "TIE": 0.005}] * 6 + [{"A": 0.005, "B": 0.99, "TIE": 0.005}] * 4
    >>> fit_temperature(["A"] * 4 + ["B"] * 2 + ["B"] * 4, over) > 1  # over-confident: T > 1 softens
    True
    """
    from scipy.optimize import minimize_scalar

    _check_rows(labels, probs)
    p = _matrix(probs)
    index = np.array([VERDICTS.index(label) for label in labels])

    def loss(log_t: float) -> float:
        q = tempered(p, math.exp(log_t))
        return float(-np.mean(np.log(np.clip(q[np.arange(len(index)), index], PROB_FLOOR, 1.0))))

    found = minimize_scalar(loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(found.x))


def fit_isotonic(labels: Sequence[str], probs: Sequence[Mapping[str, float]]) -> dict[str, IsotonicMap]:
    """One increasing map per choice, p(choice) -> share of rows labelled that choice (scikit-learn)."""
    from sklearn.isotonic import IsotonicRegression

    _check_rows(labels, probs)
    p = _matrix(probs)
    out: dict[str, IsotonicMap] = {}
    for i, verdict in enumerate(VERDICTS):
        target = np.array([label == verdict for label in labels], dtype=np.float64)
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, i], target)
        out[verdict] = IsotonicMap(x=[float(x) for x in model.X_thresholds_], y=[float(y) for y in model.y_thresholds_])
    return out


def _check_rows(labels: Sequence[str], probs: Sequence[Mapping[str, float]]) -> None:
    if len(labels) != len(probs):
        raise MetricInputError(f"{len(labels)} labels for {len(probs)} probability rows")
    if len(labels) < MIN_ROWS:
        raise MetricInputError(
            f"a calibration needs at least {MIN_ROWS} labelled rows with probabilities, got {len(labels)}"
        )
    unknown = sorted({label for label in labels if label not in VERDICTS})
    if unknown:
        raise MetricInputError(f"labels must be A, B or TIE; got {unknown}")


def cross_validate(labels: Sequence[str], probs: Sequence[Mapping[str, float]], method: Method) -> dict[str, float]:
    """Mean ECE, Brier and log loss after `method` over CV_FOLDS folds, each fitted on the others."""
    order = np.random.default_rng(0).permutation(len(labels))
    scores: dict[str, list[float]] = {}
    for fold in np.array_split(order, CV_FOLDS):
        held = set(fold.tolist())
        train = [i for i in order if i not in held]
        fitted = _fit(method, [labels[i] for i in train], [probs[i] for i in train])
        found = evaluate_calibration(fitted, [labels[i] for i in fold], [probs[i] for i in fold])
        for key, value in found.items():
            if key.endswith("_after"):
                scores.setdefault(key.removesuffix("_after"), []).append(value)
    return {key: round(float(np.mean(values)), 6) for key, values in scores.items()}


def _fit(method: Method, labels: Sequence[str], probs: Sequence[Mapping[str, float]]) -> Calibration:
    if method == "temperature":
        return Calibration(method=method, temperature=fit_temperature(labels, probs))
    if method == "isotonic":
        return Calibration(method=method, isotonic=fit_isotonic(labels, probs))
    raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")


def fit_calibration(
    labels: Sequence[str],
    probs: Sequence[Mapping[str, float]],
    method: Method | Literal["auto"] = "auto",
    *,
    fitted_on: dict[str, Any] | None = None,
) -> Calibration:
    """Fit `method` on (label, probabilities) rows; the result says how it did on them, and, for
    `auto`, both methods' cross-validated scores and why it chose the one it did."""
    _check_rows(labels, probs)
    chosen: Method
    cv: dict[str, Any] = {}
    if method == "auto":
        cv = {m: cross_validate(labels, probs, m) for m in ("temperature", "isotonic")}
        chosen = min(("temperature", "isotonic"), key=lambda m: cv[m]["brier"])
        cv["chosen_by"] = f"lower {CV_FOLDS}-fold cross-validated Brier score"
    else:
        chosen = method
    calibration = _fit(chosen, labels, probs)
    fit_split = {
        "n": len(labels),
        "binning": "top-label ECE, 10 equal-width bins over the top probability",
        **evaluate_calibration(calibration, labels, probs),
        **({"cross_validated": cv} if cv else {}),
    }
    return calibration.model_copy(update={"fitted_on": fitted_on or {}, "fit_split": fit_split})


# --------------------------------------------------------------------------- from files


def label_of(pair: Pair, source: LabelChoice) -> str | None:
    """The pair's label from `source` (`human`: its human_verdict, else its last human label)."""
    if source == "human" and pair.human_verdict is not None:
        return pair.human_verdict
    label = pair.label_from(source)
    return None if label is None else label.verdict


def calibration_rows(
    log: EvalLog, pairs: Sequence[Pair], source: LabelChoice, checkpoint: str | None = None
) -> tuple[list[str], list[dict[str, float]]]:
    """(labels, original-order probabilities) of the log's pairs that have both; the probabilities
    before any calibration map (`wrappers.uncalibrated_probs`) where the log has them."""
    names = list(dict.fromkeys(p.checkpoint_name for p in log.detailed))
    checkpoint = pick_checkpoint(names, checkpoint, "the log", "name the one to calibrate (--checkpoint)")
    by_id = {p.pair_id: p for p in pairs}
    labels: list[str] = []
    probs: list[dict[str, float]] = []
    for pred in log.detailed:
        if pred.checkpoint_name != checkpoint or pred.run_type != "original" or pred.pair_id not in by_id:
            continue
        row = pred.wrappers.uncalibrated_probs or pred.probs
        label = label_of(by_id[pred.pair_id], source)
        if row is None or label is None or pred.verdict == PARSE_FAIL:
            continue
        labels.append(label)
        probs.append({k: float(v) for k, v in row.items() if k in VERDICTS})
    if len(labels) < MIN_ROWS:
        raise MetricInputError(
            f"only {len(labels)} pairs of judge {checkpoint!r} have score-mode probabilities and a {source} label "
            f"(at least {MIN_ROWS} needed): is the log from score mode, and do the pairs carry {source} labels?"
        )
    return labels, probs


def evaluate_calibration(
    calibration: Calibration, labels: Sequence[str], probs: Sequence[Mapping[str, float]]
) -> dict[str, float]:
    """ECE, Brier and log loss of `probs` before and after `calibration` (rows not used to fit it)."""
    after = [calibration.apply(p) for p in probs]
    return {
        f"{name}_{when}": round(fn(labels, rows), 6)
        for when, rows in (("before", list(probs)), ("after", after))
        for name, fn in (("ece", expected_calibration_error), ("brier", brier_score), ("log_loss", log_loss))
    }


def calibrate_file(
    predictions: Path,
    pairs: Path,
    out: Path,
    settings: CalibrateSettings,
    *,
    check_predictions: Path | None = None,
    holdout: Sequence[Pair] | None = None,
) -> Calibration:
    """`biasjudge calibrate`: fit a map on a log of the calibration split against `settings.labels`,
    check it on a holdout log (per slice) when given one, and write it to `out` (atomically)."""
    from biasjudge.eval.report import read_log
    from biasjudge.io import read_records, sha256_file, write_json

    labels, checkpoint = settings.labels, settings.checkpoint
    log = read_log(predictions)
    y, probs = calibration_rows(log, read_records(pairs, Pair).records, labels, checkpoint)
    fitted_on = {
        "predictions": str(predictions),
        "predictions_sha256": sha256_file(predictions),
        "pairs": str(pairs),
        "labels": labels,
        "checkpoint": checkpoint or log.detailed[0].checkpoint_name,
    }
    calibration = fit_calibration(y, probs, settings.method, fitted_on=fitted_on)
    if check_predictions is not None:
        if holdout is None:
            raise ConfigError("checking a calibration on a holdout log needs the holdout pairs")
        check_log = read_log(check_predictions)
        parts = {"all": list(holdout), **{s: [p for p in holdout if p.eval_slice == s] for s in SLICES.values()}}
        checks: dict[str, Any] = {}
        for name, part in parts.items():
            hy, hp = calibration_rows(check_log, part, "human", checkpoint)
            checks[name] = {"n": len(hy), **evaluate_calibration(calibration, hy, hp)}
        calibration = calibration.model_copy(update={"holdout_check": checks})
    write_json(out, calibration)
    return calibration
