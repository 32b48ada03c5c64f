"""What every pair judge is: a :class:`JudgeRequest` in, a :class:`~biasjudge.records.Judgment` out.

The leaf of the judge package: the :class:`PairJudge` protocol, the request, the rules that turn
probabilities into a verdict, the fields every Judgment shares, and :class:`JudgeWrapper`, the base
of judges that wrap another (order-debiased, calibrated, hybrid), and :class:`ModelFreeJudge`, the
base of judges that decide without a language model (the question reader, free text, baselines).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from biasjudge.errors import BackendError, ConfigError
from biasjudge.records import JudgeMode, Judgment, Pair, Verdict
from biasjudge.verdict import VERDICTS, render


@dataclass(frozen=True)
class JudgeRequest:
    """One judging of one pair: which order, and how to sample."""

    pair: Pair
    swapped: bool = False
    """Show response_b's text first (labels A/B stay in place)."""
    temperature: float = 0.0
    """0: greedy (generate) / argmax (score)."""
    seed: int | None = None
    """Seed of the draw when temperature > 0."""


@runtime_checkable
class PairJudge(Protocol):
    """Anything that judges pairs: a model :class:`Judge` or a baseline."""

    spec: str
    """The spec it was made from (:class:`~biasjudge.config.JudgeSpec` as a string), recorded in every Judgment."""
    mode: JudgeMode

    @property
    def identity(self) -> str:
        """Everything besides the spec, the mode and the prompt that changes its verdicts (model
        files' fingerprint, prompt rendering, settings, a wrapper's own file), for the eval cache
        key; a wrapper's identity includes its inner judge's. Empty for a judge whose spec says it all."""
        ...

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """One Judgment per request, in order."""
        ...

    def count_tokens(self, text: str) -> int:
        """Length of `text` in the judge's tokens (for the verbosity metric)."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


def verdict_from_logprobs(
    logprobs: dict[str, float], temperature: float = 0.0, seed: int | None = None
) -> tuple[Verdict, dict[str, float]]:
    """(verdict, probabilities renormalised over A/B/TIE) from the choices' log-probabilities.

    Temperature 0 takes the argmax (ties go to the first of A, B, TIE); T > 0 draws from
    softmax(log p / T) with `numpy.random.default_rng(seed)`.

    >>> verdict_from_logprobs({"A": -1.0, "B": -2.0, "TIE": -3.0})[0]
    'A'
    """
    values = np.array([logprobs[v] for v in VERDICTS], dtype=np.float64)
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    if temperature <= 0:
        index = int(np.argmax(probs))
    else:
        tempered = np.exp((values - values.max()) / temperature)
        tempered /= tempered.sum()
        index = int(np.random.default_rng(seed).choice(len(VERDICTS), p=tempered))
    return VERDICTS[index], {v: float(p) for v, p in zip(VERDICTS, probs, strict=True)}


def verdict_from_probs(
    probs: dict[str, float], temperature: float = 0.0, seed: int | None = None
) -> tuple[Verdict, dict[str, float]]:
    """:func:`verdict_from_logprobs` for probabilities (a zero probability is never drawn).

    Judges that combine probabilities (order-debiased, hybrid, replayed) decide with this.

    >>> verdict, probs = verdict_from_probs({"A": 0.2, "B": 0.0, "TIE": 0.6})
    >>> verdict, round(probs["A"], 6), probs["B"]
    ('TIE', 0.25, 0.0)
    """
    return verdict_from_logprobs({v: math.log(p) if p > 0 else -math.inf for v, p in probs.items()}, temperature, seed)


def request_fields(request: JudgeRequest, *, judge: str, mode: JudgeMode) -> dict[str, Any]:
    """The Judgment fields that describe the request itself (pair, order, sampling, judge)."""
    return {
        "pair_id": request.pair.pair_id,
        "mode": mode,
        "swapped": request.swapped,
        "temperature": request.temperature,
        "seed": request.seed,
        "judge": judge,
    }


def flag(name: str, value: bool | str | None) -> bool | None:
    """A yes/no option as a spec gives it (`?constrained=false`) or as Python does; None stays None."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


class JudgeWrapper:
    """Base of a judge that wraps another: the spec (the inner judge's unless given), the system
    prompt, token counting and closing come from `inner`; the identity is the wrapper's own part
    (:attr:`own_identity`, empty by default) before the inner judge's."""

    own_identity = ""
    """What this wrapper adds to the eval cache key (a file's hash, a threshold)."""

    def __init__(self, inner: PairJudge, *, spec: str | None = None, mode: JudgeMode | None = None) -> None:
        self.inner = inner
        self.spec: str = spec or inner.spec
        self.mode: JudgeMode = mode or inner.mode
        self.system_prompt: str | None = getattr(inner, "system_prompt", None)

    @property
    def identity(self) -> str:
        """The wrapper's own identity, then the inner judge's."""
        return "|".join(part for part in (self.own_identity, self.inner.identity) if part)

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:  # pragma: no cover - abstract
        """One Judgment per request, in order."""
        raise NotImplementedError

    def around(self, inner: PairJudge, spec: str) -> JudgeWrapper | None:
        """This wrapper, as it is, around another inner judge named `spec` (a view of the judge with
        a layer below changed: the service's single-order view); None when it cannot be moved."""
        return None

    def count_tokens(self, text: str) -> int:
        """Tokens of `text`, counted by the inner judge."""
        return int(self.inner.count_tokens(text))

    def close(self) -> None:
        """Close the inner judge."""
        self.inner.close()


class ModelFreeJudge:
    """Base of a judge that decides without a language model (the question reader, the free-text
    judge, the baselines): it counts words for tokens and has nothing to free."""

    identity = ""
    """What besides the spec changes its verdicts (the eval cache key); set by a judge with model files."""

    def __init__(self, *, spec: str, mode: JudgeMode = "score") -> None:
        self.spec = spec
        self.mode: JudgeMode = mode

    def reasoned(self, request: JudgeRequest, verdict: Verdict, probs: dict[str, float], reasoning: str) -> Judgment:
        """The Judgment of a verdict, probabilities and reasoning computed without generating text:
        its raw output is the contract text."""
        return Judgment(
            **request_fields(request, judge=self.spec, mode=self.mode),
            verdict=verdict,
            probs=probs,
            reasoning=reasoning,
            raw_output=render(reasoning, verdict),
            finish_reason="stop",
        )

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words (such a judge has no tokenizer)."""
        return len(text.split())

    def close(self) -> None:
        """Nothing to free."""


def judge_checked(judge: PairJudge, requests: Sequence[JudgeRequest]) -> list[Judgment]:
    """`judge.judge_batch(requests)`, held to the protocol: one Judgment per request, in order, each
    for its request's pair; otherwise a BackendError naming the judge. The one batch step of every
    loop that runs judges (eval, robustness, judge-file local and on Ray, the service's batcher)."""
    requests = list(requests)
    judgments = judge.judge_batch(requests) if requests else []
    if len(judgments) != len(requests):
        raise BackendError(f"{judge.spec} returned {len(judgments)} judgments for {len(requests)} requests")
    for request, judgment in zip(requests, judgments, strict=True):
        if judgment.pair_id != request.pair.pair_id:
            raise BackendError(
                f"{judge.spec} answered pair {judgment.pair_id} for {request.pair.pair_id}: out of order"
            )
    return judgments
