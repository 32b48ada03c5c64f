"""Baseline judges that need no model: `answer-key:`, `always-tie:`, `random:`.

They judge whole pairs, so they implement the PairJudge protocol of
:mod:`biasjudge.judge.judge` directly (`judge_batch`, `count_tokens`, `close`), not the prompt-level
Backend protocol. Every Judgment they return has `probs` (one-hot, or uniform for `random:`), the
verdict in the order the judge saw the pair (mirrored when `swapped`), and `judge` = the spec.

`count_tokens` counts whitespace-separated words: baselines have no tokenizer, and the verbosity
metric only needs a length that grows with the text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from biasjudge.errors import BackendError
from biasjudge.judge.protocol import JudgeRequest, ModelFreeJudge, request_fields
from biasjudge.records import BiasLevel, JudgeMode, Judgment, Pair, ParsedVerdict, Verdict
from biasjudge.verdict import PARSE_FAIL, VERDICTS, mirror


def _one_hot(verdict: ParsedVerdict) -> dict[str, float] | None:
    if verdict == PARSE_FAIL:
        return None
    return {v: float(v == verdict) for v in VERDICTS}


class _Baseline(ModelFreeJudge):
    """Shared plumbing: a baseline decides a verdict for a pair in its original order (its spec says
    all that changes its verdicts)."""

    def decide(self, request: JudgeRequest) -> tuple[ParsedVerdict, str, dict[str, float] | None]:
        """(verdict in the order the judge saw the pair, reasoning, probs)."""
        raise NotImplementedError

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        out: list[Judgment] = []
        for request in requests:
            verdict, reasoning, probs = self.decide(request)
            fields = request_fields(request, judge=self.spec, mode=self.mode)
            out.append(Judgment(**fields, verdict=verdict, reasoning=reasoning, probs=probs, finish_reason="stop"))
        return out


class AnswerKeyJudge(_Baseline):
    """`answer-key:[PAIRS.jsonl]`: the verdict from the two responses' `suspected_bias_level`.

    The rule is :func:`biasjudge.labels.answer_key.answer_key_verdict` (a biased response beats a
    neutral one, equal levels are a TIE; `unclear_vs_biased` picks the biased-vs-unclear case).
    The reference holdout carries no levels: name a pairs file after the colon
    (`answer-key:../shared/data/judge-from-scratch/pairs.jsonl`) and levels missing on a judged
    pair are joined from it by pair_id. A pair whose levels stay unknown gets PARSE_FAIL (the rule
    abstains) with the reason in `reasoning`.
    """

    def __init__(
        self,
        target: str = "",
        *,
        spec: str = "answer-key:",
        mode: JudgeMode = "score",
        unclear_vs_biased: str = "tie",
    ) -> None:
        from biasjudge.labels.answer_key import AnswerKeyConfig

        super().__init__(spec=spec, mode=mode)
        self.config = AnswerKeyConfig(unclear_vs_biased=unclear_vs_biased)
        self._levels: dict[str, tuple[BiasLevel | None, BiasLevel | None]] = {}
        if target:
            self._levels = _levels_from_file(Path(target))

    def _with_levels(self, pair: Pair) -> Pair:
        a, b = pair.response_a.suspected_bias_level, pair.response_b.suspected_bias_level
        if (a is not None and b is not None) or pair.pair_id not in self._levels:
            return pair
        known_a, known_b = self._levels[pair.pair_id]
        return pair.model_copy(
            update={
                "response_a": pair.response_a.model_copy(update={"suspected_bias_level": a or known_a}),
                "response_b": pair.response_b.model_copy(update={"suspected_bias_level": b or known_b}),
            }
        )

    def decide(self, request: JudgeRequest) -> tuple[ParsedVerdict, str, dict[str, float] | None]:
        """The answer key's verdict from the responses' bias levels (PARSE_FAIL when a level is unknown)."""
        from biasjudge.labels.answer_key import answer_key_verdict

        pair = self._with_levels(request.pair)
        verdict: ParsedVerdict | None = answer_key_verdict(pair, self.config)
        a, b = pair.response_a.suspected_bias_level, pair.response_b.suspected_bias_level
        if verdict is None:
            return PARSE_FAIL, f"answer key abstains: suspected_bias_level unknown (A: {a}, B: {b})", None
        if request.swapped:
            verdict, a, b = mirror(verdict), b, a
        return verdict, f"answer key: Response A {a}, Response B {b}", _one_hot(verdict)


def _levels_from_file(path: Path) -> dict[str, tuple[BiasLevel | None, BiasLevel | None]]:
    from biasjudge.io import read_records

    pairs = read_records(path, Pair).records  # a missing or bad file is a DataError naming it
    return {p.pair_id: (p.response_a.suspected_bias_level, p.response_b.suspected_bias_level) for p in pairs}


class AlwaysTieJudge(_Baseline):
    """`always-tie:`: TIE for every pair (the floor a judge must clear on the tie bucket)."""

    def __init__(self, target: str = "", *, spec: str = "always-tie:", mode: JudgeMode = "score") -> None:
        if target:
            raise BackendError(f"always-tie: takes no target, got {target!r}")
        super().__init__(spec=spec, mode=mode)

    def decide(self, request: JudgeRequest) -> tuple[ParsedVerdict, str, dict[str, float] | None]:
        """TIE, always."""
        return "TIE", "always-tie baseline", _one_hot("TIE")


class RandomJudge(_Baseline):
    """`random:[SEED]`: a uniform draw over A/B/TIE (probs 1/3 each).

    The draw is a pure function of (SEED, pair_id, swapped, request seed), so a rerun or a resumed
    run gives the same verdicts and the two orders of a pair are independent draws.
    """

    def __init__(self, target: str = "", *, spec: str = "random:", mode: JudgeMode = "score", seed: int = 0) -> None:
        super().__init__(spec=spec, mode=mode)
        try:
            self.seed = int(target) if target else seed
        except ValueError:
            raise BackendError(f"random: the target must be an integer seed, got {target!r}") from None

    def decide(self, request: JudgeRequest) -> tuple[ParsedVerdict, str, dict[str, float] | None]:
        """A uniform random verdict, seeded by the judge's seed, the pair, its order and the request's seed."""
        rng = random.Random(f"{self.seed}|{request.pair.pair_id}|{int(request.swapped)}|{request.seed}")
        verdict: Verdict = rng.choice(VERDICTS)
        return verdict, f"random baseline (seed {self.seed})", {v: 1 / 3 for v in VERDICTS}
