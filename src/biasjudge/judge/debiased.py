"""An order-debiased judge: score both orders of a pair and combine them.

A single-order judge can prefer the response shown first (or second); the reference measures this
as the position-bias rate. :class:`OrderDebiasedJudge` wraps a score-mode :class:`Judge` and, for
every request, scores the pair as given AND with the responses exchanged, mirrors the swapped
order's probabilities back (its A is the original B) and averages the two:

    p(A) = (p_orig(A) + p_swap(B)) / 2,  p(B) = (p_orig(B) + p_swap(A)) / 2,  p(TIE) = mean of both.

The combined distribution does not depend on which order the pair arrived in, so the verdict of
the swapped run is exactly the mirror of the original's: position bias 0 by construction. The
T=0.3 runs draw from softmax(log p / T) of the combined probabilities, seeded, like any score-mode
judge. Each Judgment also records `wrappers.single_order_verdict`, the verdict of the shown order alone,
so reports can still show the model's own position bias.

Cost: the two prompts of a pair share everything up to the first response's text, and the
llama.cpp backend keeps that prefix in its KV cache, so the second order evaluates only the two
responses again (see `bench/judge_speed.py`). Requests for the same pair in one batch share both
forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from biasjudge.errors import ConfigError
from biasjudge.judge.protocol import JudgeRequest, JudgeWrapper, PairJudge, request_fields, verdict_from_probs
from biasjudge.records import Judgment, Verdict, WrapperMetadata
from biasjudge.verdict import PARSE_FAIL, VERDICTS, as_verdict, mirror


def combine_orders(original: dict[str, float], swapped: dict[str, float]) -> dict[str, float]:
    """Probabilities in the original order from both orders' probabilities (arithmetic mean).

    >>> combine_orders({"A": 0.8, "B": 0.1, "TIE": 0.1}, {"A": 0.6, "B": 0.2, "TIE": 0.2})
    {'A': 0.5, 'B': 0.35, 'TIE': 0.15000000000000002}
    """
    return {v: (original[v] + swapped[mirror(v)]) / 2 for v in VERDICTS}


class OrderDebiasedJudge(JudgeWrapper):
    """A PairJudge that judges both orders of each pair with `inner` and combines the probabilities.

    Args:
        inner: a score-mode Judge (the probabilities are what is combined).
        spec: the spec string recorded in every Judgment (default: the inner judge's spec).
    """

    def __init__(self, inner: PairJudge, *, spec: str | None = None) -> None:
        if inner.mode != "score":
            raise ConfigError("order debiasing combines verdict probabilities: it needs --mode score")
        super().__init__(inner, spec=spec)

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """One Judgment per request, in order; both orders of each pair are scored once per batch."""
        requests = list(requests)
        orders = [JudgeRequest(r.pair, swapped=s) for r in requests for s in (False, True)]
        judged = self.inner.judge_batch(orders)
        out: list[Judgment] = []
        for i, request in enumerate(requests):
            original, swapped = judged[2 * i], judged[2 * i + 1]
            shown = swapped if request.swapped else original
            single: Verdict | None = as_verdict(shown.verdict)
            # Choices floored in either order, named as the shown order names them.
            other = original if request.swapped else swapped
            floored = sorted({*shown.floored_choices, *(mirror(cast(Verdict, c)) for c in other.floored_choices)})
            common = {
                **request_fields(request, judge=self.spec, mode=self.mode),
                "wrappers": WrapperMetadata(single_order_verdict=single),
                "floored_choices": floored,
            }
            if original.probs is None or swapped.probs is None:
                reason = original.raw_output if original.probs is None else swapped.raw_output
                out.append(Judgment(verdict=PARSE_FAIL, raw_output=reason, **common))
                continue
            combined = combine_orders(original.probs, swapped.probs)
            if request.swapped:
                combined = {v: combined[mirror(v)] for v in VERDICTS}
            verdict, probs = verdict_from_probs(combined, request.temperature, request.seed)
            out.append(Judgment(verdict=verdict, probs=probs, **common))
        return out


def single_order_view(judge: PairJudge, spec: str) -> PairJudge | None:
    """The single-order judge inside an order-debiased one (under the wrappers that can move, such as
    a calibration), sharing its model: a shallow copy of the inner :class:`Judge` named `spec`, wrapped
    as `judge` is. None when `judge` does not combine orders (a baseline, a single-order judge)."""
    import copy

    if isinstance(judge, OrderDebiasedJudge):
        single = copy.copy(judge.inner)
        single.spec = spec
        return single
    if isinstance(judge, JudgeWrapper):
        inner = single_order_view(judge.inner, spec)
        return None if inner is None else judge.around(inner, spec)
    return None
