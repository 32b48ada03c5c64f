"""Calibrated confidence: a map from a judge's verdict probabilities to calibrated ones, and abstention.

A score-mode judge's probabilities of A, B and TIE are its confidence; they are only worth reading
if a verdict given with probability 0.8 is right about 80% of the time. Two maps are fitted on a
calibration split (never the holdout) and compared there:

* temperature scaling (Guo et al. 2017): `softmax(log p / T)`, one number T fitted by minimising
  the log loss; it keeps the ranking of the three choices, so the verdict never changes;
* isotonic regression (scikit-learn's `IsotonicRegression`, one-vs-rest per choice, then the three
  renormalised): more flexible, and it can change the verdict.

Fitting lives in :mod:`biasjudge.eval.calibration` (it scores the fit with the eval's metrics). A
:class:`Calibration` is a small JSON file (`calibration.json`, beside the shipped adapter) that
:func:`biasjudge.judge.registry.make_judge` applies wherever the judge runs (CLI, eval, service)
through :class:`CalibratedJudge`, which also abstains: with `abstain_below=P`, a verdict whose top
calibrated probability is under P becomes `UNSURE`, its probabilities kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from biasjudge.errors import BackendError, ConfigError
from biasjudge.io import read_document
from biasjudge.judge.protocol import JudgeRequest, JudgeWrapper, PairJudge, verdict_from_probs
from biasjudge.records import Judgment, Record
from biasjudge.verdict import PARSE_FAIL, UNSURE, VERDICTS

CALIBRATION_FILE = "calibration.json"
"""File name of a judge's calibration, beside its adapter."""
Method = Literal["temperature", "isotonic"]
PROB_FLOOR = 1e-12
"""Probabilities are clipped to [eps, 1] before a log is taken."""


class IsotonicMap(Record):
    """One choice's isotonic map: piecewise-linear through (x, y), clipped at both ends."""

    x: list[float]
    y: list[float]


class Calibration(Record):
    """A fitted calibration map and what it was fitted on.

    >>> probs = Calibration(method="temperature", temperature=2.0).apply({"A": 0.8, "B": 0.2, "TIE": 0.0})
    >>> {k: round(v, 4) for k, v in probs.items()}  # sqrt(0.8) : sqrt(0.2), TIE at the 1e-12 floor's root
    {'A': 0.6667, 'B': 0.3333, 'TIE': 0.0}
    """

    method: Method
    temperature: float | None = Field(default=None, gt=0)
    """Temperature scaling: the T of softmax(log p / T)."""
    isotonic: dict[str, IsotonicMap] | None = None
    """Isotonic: one map per choice (A, B, TIE), renormalised after."""
    fitted_on: dict[str, Any] = Field(default_factory=dict)
    """Where the map comes from: the log, the labels, the number of rows, their label source."""
    fit_split: dict[str, Any] = Field(default_factory=dict)
    """ECE (top label, 10 equal-width bins), Brier score and log loss on the fitting rows, before and after."""
    holdout_check: dict[str, Any] = Field(default_factory=dict)
    """The same scores on a holdout log, per slice, where `biasjudge calibrate --check-predictions` gave one."""

    def apply(self, probs: Mapping[str, float]) -> dict[str, float]:
        """Calibrated probabilities of A, B, TIE (summing to 1)."""
        p = np.array([max(float(probs.get(v, 0.0)), 0.0) for v in VERDICTS])
        if p.sum() <= 0:
            raise BackendError(f"the judge gave probabilities that sum to zero: {dict(probs)}")
        p = p / p.sum()
        if self.method == "temperature":
            if self.temperature is None:
                raise ConfigError("a temperature calibration without its temperature")
            out = tempered(p[None, :], self.temperature)[0]
        else:
            if not self.isotonic or set(self.isotonic) != set(VERDICTS):
                raise ConfigError(f"an isotonic calibration needs a map for each of {', '.join(VERDICTS)}")
            out = np.array([np.interp(p[i], self.isotonic[v].x, self.isotonic[v].y) for i, v in enumerate(VERDICTS)])
            # All three maps at 0 (possible at the ends of the fitted range): fall back to the input.
            out = out / out.sum() if out.sum() > 0 else p
        return {v: float(x) for v, x in zip(VERDICTS, out, strict=True)}

    @property
    def digest(self) -> str:
        """A short hash of the map itself (for the eval cache key)."""
        body = self.model_dump(include={"method", "temperature", "isotonic"}, mode="json")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def read_calibration(path: str | Path) -> Calibration:
    """A calibration file; a DataError naming the file and field when it is not one."""
    return read_document(path, Calibration)


def tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of probabilities through softmax(log p / T) (log p clipped at log 1e-12)."""
    logits = np.log(np.clip(p, PROB_FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return np.asarray(out / out.sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------- the judge


class CalibratedJudge(JudgeWrapper):
    """A PairJudge whose score-mode probabilities go through a calibration map, and which abstains.

    With a calibration, each request is judged by `inner` at temperature 0; its probabilities are
    calibrated (the uncalibrated ones kept in `Judgment.wrappers.uncalibrated_probs`), and the verdict is
    drawn from the calibrated ones as any score-mode judge draws (argmax at T=0, softmax(log p / T)
    above), so the T=0.3 runs of an eval sample the calibrated distribution. Without one, the inner
    judge's verdicts stand. With `abstain_below`, a T=0 verdict whose top probability is under it
    becomes `UNSURE`, its probabilities kept.

    Args:
        inner: a score-mode judge.
        calibration: the map, or None for abstention alone.
        abstain_below: a probability in (0, 1], or None never to abstain.
    """

    def __init__(
        self,
        inner: PairJudge,
        calibration: Calibration | None,
        *,
        abstain_below: float | None = None,
        spec: str | None = None,
    ) -> None:
        if inner.mode != "score":
            raise ConfigError("calibration and abstention read verdict probabilities: they need --mode score")
        if abstain_below is not None and not 0.0 < abstain_below <= 1.0:
            raise ConfigError(f"abstain_below must be in (0, 1], got {abstain_below}")
        super().__init__(inner, spec=spec)
        self.calibration = calibration
        self.abstain_below = abstain_below
        parts = [f"calibration={calibration.digest}" if calibration else "calibration=none"]
        if abstain_below is not None:
            parts.append(f"abstain_below={abstain_below:g}")
        self.own_identity = ",".join(parts)

    def around(self, inner: PairJudge, spec: str) -> CalibratedJudge:
        """The same calibration and abstention around `inner`."""
        return CalibratedJudge(inner, self.calibration, abstain_below=self.abstain_below, spec=spec)

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """Judge each request with the inner judge, then calibrate its probabilities and abstain below the threshold."""
        requests = list(requests)
        if self.calibration is None:  # abstention alone: the inner judge's verdicts, as it drew them
            return [self._abstain(r, j.model_copy(update={"judge": self.spec})) for r, j in zip(
                requests, self.inner.judge_batch(requests), strict=True
            )]  # fmt: skip
        greedy = [JudgeRequest(r.pair, swapped=r.swapped) for r in requests]
        out = []
        for request, judged in zip(requests, self.inner.judge_batch(greedy), strict=True):
            if judged.probs is None or judged.verdict == PARSE_FAIL:
                out.append(judged.model_copy(update={"judge": self.spec}))
                continue
            verdict, probs = verdict_from_probs(self.calibration.apply(judged.probs), request.temperature, request.seed)
            calibrated = judged.model_copy(
                update={
                    "verdict": verdict,
                    "probs": probs,
                    "wrappers": judged.wrappers.model_copy(update={"uncalibrated_probs": dict(judged.probs)}),
                    "temperature": request.temperature,
                    "seed": request.seed,
                    "judge": self.spec,
                }
            )
            out.append(self._abstain(request, calibrated))
        return out

    def _abstain(self, request: JudgeRequest, judged: Judgment) -> Judgment:
        """UNSURE for a T=0 verdict whose top probability is under the threshold."""
        if (
            self.abstain_below is None
            or request.temperature > 0
            or judged.probs is None
            or judged.verdict == PARSE_FAIL
            or max(judged.probs.values()) >= self.abstain_below
        ):
            return judged
        return judged.model_copy(update={"verdict": UNSURE})
