"""The judge runtime: a pair in, a :class:`~biasjudge.records.Judgment` out, in either mode.

* generate: render the judge prompt, let the model write `<reasoning>..</reasoning><verdict>X</verdict>`,
  read the verdict with :func:`biasjudge.verdict.parse` (strict or lenient). An output that breaks
  the contract is a PARSE_FAIL judgment, never an exception.
* score: force the model's turn to start with `<verdict>` and read the log-probabilities of
  `A`, `B` and `TIE` at that point (one forward pass; a multi-token choice such as `TIE` gets the
  sum of its tokens' log-probs, teacher-forced: the scoring rule of :mod:`biasjudge.backends.base`).
  The three are renormalised into `Judgment.probs`; temperature 0 takes the argmax, temperature
  T > 0 draws from softmax(log p / T) with `numpy.random.default_rng(seed)`. Requests for the same
  prompt (same pair, same order) share ONE backend.score call, so the seeded repeats of a
  consistency run cost nothing. Choices the backend floored are listed in `Judgment.floored_choices`.
* score with reasoning (`score_with_reasoning=True`): generate the reasoning first (the turn forced
  to start with `<reasoning>`, stopped at `</reasoning>`), then score with the prefix
  `<reasoning>` + reasoning + `</reasoning><verdict>`.

Truncation (one rule, :func:`settle_truncation`, which the eval harness applies too): in score
mode the verdict always comes from the score pass; reasoning cut at its token cap is kept and
flagged (`Judgment.reasoning_truncated`). In generate mode an output cut at max_tokens
(finish_reason 'length') is a PARSE_FAIL unless its verdict tag had closed.

`Judgment.verdict` is always in the order the judge SAW the pair: for `swapped=True` the texts were
exchanged, and "A" names the text shown first. The eval harness mirrors where it needs to.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from biasjudge.backends.base import Backend, Generation, GenerationParams, PromptRequest, floored_choices
from biasjudge.errors import BackendError, ConfigError
from biasjudge.judge.protocol import JudgeRequest, flag, request_fields, verdict_from_logprobs
from biasjudge.prompts import load_prompt
from biasjudge.prompts.render import SCORE_PREFIX, judge_messages, refuse_thinking
from biasjudge.records import JudgeMode, Judgment, Pair, ParsedVerdict
from biasjudge.verdict import CONTRACT_GRAMMAR, PARSE_FAIL, VERDICTS, ParseMode, parse

__all__ = ["Judge", "settle_truncation"]

REASONING_PREFIX = "<reasoning>"
"""Forced start of the model's turn when reasoning is generated before scoring."""
REASONING_STOPS = ("</reasoning>", "<verdict>")
"""Where reasoning generation stops in score-with-reasoning mode (the stop text is not kept)."""
TRUNCATED = "length"
"""The finish_reason of a generation that stopped on its token cap."""


def settle_truncation(judgment: Judgment) -> Judgment:
    """The judgment as it counts under the truncation rule (the ONE place the rule is decided).

    * score mode: the verdict is the score pass's, whatever happened to the reasoning before it.
      Reasoning cut at its token cap is kept and flagged `reasoning_truncated`; a
      `finish_reason` of 'length' (as judgments cached before the flag existed carry it) is
      moved to that flag, so that nothing downstream reads the score verdict as a cut generation.
    * generate mode: an output cut at max_tokens (finish_reason 'length') is a PARSE_FAIL unless
      its verdict tag had closed (the text holds a complete `<verdict>X</verdict>`), or a
      constrained judge closed it and scored the verdict (`reasoning_truncated`).

    Returns the same object when nothing changes, else an updated copy. The judge applies it to
    every judgment it makes; :func:`biasjudge.eval.protocol.prediction_from` applies it again,
    so judgments from other judges or older caches follow the same rule.

    >>> j = Judgment(pair_id="p", verdict="A", mode="score", finish_reason="length")
    >>> settled = settle_truncation(j)
    >>> settled.verdict, settled.finish_reason, settled.reasoning_truncated
    ('A', None, True)
    >>> cut = Judgment(pair_id="p", verdict="A", raw_output="<verdict>A", finish_reason="length")
    >>> settle_truncation(cut).verdict
    'PARSE_FAIL'
    """
    if judgment.mode == "score":
        if judgment.finish_reason != TRUNCATED:
            return judgment
        return judgment.model_copy(update={"finish_reason": None, "reasoning_truncated": True})
    if judgment.finish_reason != TRUNCATED or judgment.verdict == PARSE_FAIL:
        return judgment
    if judgment.reasoning_truncated:
        return judgment  # a constrained judge closed the cut reasoning and scored the verdict after it
    if parse(judgment.raw_output, "lenient")[0] == judgment.verdict:
        return judgment  # the verdict tag closed before the cap: the verdict stands
    return judgment.model_copy(update={"verdict": PARSE_FAIL})


K = TypeVar("K", bound=Hashable)


def _group(indices: Sequence[int], key: Callable[[int], K]) -> dict[K, list[int]]:
    groups: dict[K, list[int]] = {}
    for i in indices:
        groups.setdefault(key(i), []).append(i)
    return groups


def _answer_groups(
    out: list[Any],
    groups: list[list[int]],
    batch_size: int,
    call: Callable[[list[PromptRequest]], Sequence[Any]],
    prompts: Sequence[PromptRequest],
) -> None:
    """Ask `call` for the first prompt of each group of identical prompts, `batch_size` groups per call;
    every member of a group gets its group's answer in `out`."""
    for start in range(0, len(groups), batch_size):
        chunk = groups[start : start + batch_size]
        for group, answer in zip(chunk, call([prompts[g[0]] for g in chunk]), strict=True):
            for i in group:
                out[i] = answer


class Judge:
    """A :class:`PairJudge` around a model :class:`~biasjudge.backends.base.Backend`.

    Args:
        backend: the model (see :func:`biasjudge.backends.registry.make_backend`).
        system_prompt: sent byte for byte; None = biasjudge's `judge_system` prompt.
        mode: `generate` (verdict read from text) or `score` (verdict from next-token probabilities).
        parse_mode: `strict` or `lenient` reading of generated text (see verdict.parse).
        max_tokens: cap on generated tokens (generate mode, and reasoning in score-with-reasoning).
        score_with_reasoning: in score mode, generate the reasoning first and score after it.
        batch_size: prompts per backend call.
        constrained: generate mode: hold the output to the contract's grammar
            (:data:`~biasjudge.verdict.CONTRACT_GRAMMAR`), and close an output cut at `max_tokens`
            by scoring the verdict after its reasoning, so that no verdict is lost to parsing.
            Default: on where the backend supports grammars (`supports_grammar`).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        system_prompt: str | None = None,
        mode: JudgeMode = "generate",
        parse_mode: ParseMode = "strict",
        max_tokens: int = 512,
        score_with_reasoning: bool = False,
        batch_size: int = 8,
        constrained: bool | str | None = None,
    ) -> None:
        if mode not in ("generate", "score"):
            raise ConfigError(f"judge mode must be 'generate' or 'score', got {mode!r}")
        if parse_mode not in ("strict", "lenient"):
            raise ConfigError(f"parse_mode must be 'strict' or 'lenient', got {parse_mode!r}")
        if batch_size < 1 or max_tokens < 1:
            raise ConfigError(f"batch_size and max_tokens must be >= 1, got {batch_size} and {max_tokens}")
        self.backend = backend
        self.spec = backend.spec
        self.mode: JudgeMode = mode
        self.parse_mode: ParseMode = parse_mode
        self.max_tokens = max_tokens
        self.score_with_reasoning = score_with_reasoning
        self.batch_size = batch_size
        supported = bool(getattr(backend, "supports_grammar", False))
        wanted = flag("constrained", constrained)
        if wanted and not supported:
            raise ConfigError(f"{backend.spec}: this backend cannot hold generation to a grammar (constrained=false)")
        self.constrained = supported if wanted is None else wanted
        self.system_prompt = load_prompt("judge_system") if system_prompt is None else system_prompt
        refuse_thinking(self.system_prompt, "system prompt")

    # ------------------------------------------------------------------ public API

    @property
    def identity(self) -> str:
        """The model files' fingerprint (the backend's `identity`), how prompts are rendered (its
        `render_format`: chat template hash or built-in format) and this judge's settings."""
        parts = [str(part) for part in (getattr(self.backend, "identity", None),) if part]
        render_format = getattr(self.backend, "render_format", None)
        if render_format:
            parts.append(f"format={render_format}")
        parts.append(f"parse={self.parse_mode},max_tokens={self.max_tokens},with_reasoning={self.score_with_reasoning}")
        if self.mode == "generate" and self.constrained:
            parts.append("constrained=contract-grammar")  # score mode never generates a verdict
        return "|".join(parts)

    def judge(
        self, pair: Pair, *, swapped: bool = False, temperature: float = 0.0, seed: int | None = None
    ) -> Judgment:
        """Judge one pair (see judge_batch)."""
        return self.judge_batch([JudgeRequest(pair, swapped, temperature, seed)])[0]

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """One Judgment per request, in order; backend calls are batched and shared where possible."""
        requests = list(requests)
        if not requests:
            return []
        if self.mode == "generate":
            return self._judge_generate(requests)
        return self._judge_score(requests)

    def count_tokens(self, text: str) -> int:
        """Length of `text` in the backend's tokens."""
        return self.backend.count_tokens(text)

    def close(self) -> None:
        """Close the backend (free the model)."""
        self.backend.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prompt(self, request: JudgeRequest, assistant_prefix: str = "") -> PromptRequest:
        """The backend request for `request` (system + user turns, forced start of the model turn)."""
        messages = judge_messages(request.pair, self.system_prompt, swapped=request.swapped)
        return PromptRequest(messages=tuple(messages), assistant_prefix=assistant_prefix)

    # ------------------------------------------------------------------ internals

    def _run_generate(
        self,
        prompts: Sequence[PromptRequest],
        requests: Sequence[JudgeRequest],
        stop: tuple[str, ...] = (),
        grammar: str | None = None,
    ) -> list[Generation]:
        """Generate for each prompt with its request's sampling; identical greedy prompts run once."""
        out: list[Generation | None] = [None] * len(prompts)
        sampling = _group(range(len(prompts)), lambda i: _sampling_key(requests[i]))
        for (temperature, seed), members in sampling.items():
            params = GenerationParams(
                temperature=temperature, max_tokens=self.max_tokens, seed=seed, stop=stop, grammar=grammar
            )
            # Greedy outputs of the same prompt are identical: generate each distinct prompt once.
            unique = (
                _group(members, lambda i: _prompt_key(prompts[i])) if temperature <= 0 else {i: [i] for i in members}
            )
            generate = functools.partial(self.backend.generate, params=params)
            _answer_groups(out, list(unique.values()), self.batch_size, generate, prompts)
        missing = [i for i, g in enumerate(out) if g is None]
        if missing:  # pragma: no cover - a backend returned fewer generations than asked
            raise BackendError(f"{self.spec}: no generation for prompts {missing}")
        return [g for g in out if g is not None]

    def _run_score(self, prompts: Sequence[PromptRequest]) -> list[dict[str, float]]:
        """Score each prompt over A/B/TIE; identical prompts share one backend.score call."""
        unique = list(_group(range(len(prompts)), lambda i: _prompt_key(prompts[i])).values())
        out: list[dict[str, float]] = [{}] * len(prompts)
        _answer_groups(out, unique, self.batch_size, lambda firsts: self.backend.score(firsts, VERDICTS), prompts)
        return out

    def _judgment(self, request: JudgeRequest, **fields: Any) -> Judgment:
        judgment = Judgment(**request_fields(request, judge=self.spec, mode=self.mode), **fields)
        return settle_truncation(judgment)

    def _judge_generate(self, requests: list[JudgeRequest]) -> list[Judgment]:
        prompts = [self.prompt(r) for r in requests]
        generations = self._run_generate(prompts, requests, grammar=CONTRACT_GRAMMAR if self.constrained else None)
        closed = self._close_cut(requests, generations) if self.constrained else {}
        judgments: list[Judgment] = []
        for i, (request, generation) in enumerate(zip(requests, generations, strict=True)):
            if i in closed:
                judgments.append(closed[i])
                continue
            verdict: ParsedVerdict
            # A cut output (finish_reason 'length') is settled by settle_truncation in _judgment.
            verdict, reasoning = parse(generation.text, self.parse_mode)
            judgments.append(self._judgment(request, verdict=verdict, reasoning=reasoning, **_generated(generation)))
        return judgments

    def _close_cut(self, requests: list[JudgeRequest], generations: list[Generation]) -> dict[int, Judgment]:
        """Constrained outputs cut at max_tokens inside their reasoning: the contract closed after
        the reasoning so far, and the verdict scored there (as score mode with reasoning does).
        Under the grammar, a cut output is the only one without a verdict."""
        cut = [
            i
            for i, g in enumerate(generations)
            if g.finish_reason == TRUNCATED and parse(g.text, "lenient")[0] == PARSE_FAIL
        ]
        if not cut:
            return {}
        closing = [f"{REASONING_PREFIX}{_cut_reasoning(generations[i].text)}</reasoning>{SCORE_PREFIX}" for i in cut]
        prompts = [self.prompt(requests[i], prefix) for i, prefix in zip(cut, closing, strict=True)]
        out = {}
        for i, logprobs in zip(cut, self._run_score(prompts), strict=True):
            generation = generations[i]
            fields = {
                **_generated(generation),
                "reasoning": _cut_reasoning(generation.text).strip(),
                "reasoning_truncated": True,
            }
            if not all(math.isfinite(logprobs.get(v, math.nan)) for v in VERDICTS):
                out[i] = self._judgment(requests[i], verdict=PARSE_FAIL, **fields)
                continue
            verdict, probs = verdict_from_logprobs(logprobs, requests[i].temperature, requests[i].seed)
            out[i] = self._judgment(requests[i], verdict=verdict, probs=probs, **fields)
        return out

    def _judge_score(self, requests: list[JudgeRequest]) -> list[Judgment]:
        generations: list[Generation | None] = [None] * len(requests)
        if self.score_with_reasoning:
            reasoning_prompts = [self.prompt(r, REASONING_PREFIX) for r in requests]
            reasoned = self._run_generate(reasoning_prompts, requests, stop=REASONING_STOPS)
            generations = list(reasoned)
            prompts = [
                self.prompt(r, f"{REASONING_PREFIX}{g.text}</reasoning>{SCORE_PREFIX}")
                for r, g in zip(requests, reasoned, strict=True)
            ]
        else:
            prompts = [self.prompt(r, SCORE_PREFIX) for r in requests]
        judgments: list[Judgment] = []
        for request, logprobs, generation in zip(requests, self._run_score(prompts), generations, strict=True):
            if not all(math.isfinite(logprobs.get(v, math.nan)) for v in VERDICTS):
                judgments.append(
                    self._judgment(request, verdict=PARSE_FAIL, raw_output=f"non-finite scores {logprobs}")
                )
                continue
            verdict, probs = verdict_from_logprobs(logprobs, request.temperature, request.seed)
            judgments.append(
                self._judgment(
                    request,
                    verdict=verdict,
                    probs=probs,
                    floored_choices=[c for c in floored_choices(logprobs) if c in VERDICTS],
                    reasoning=generation.text.strip() if generation else None,
                    # The verdict came from the score pass: the reasoning's cap is a flag, not a finish.
                    reasoning_truncated=bool(generation and generation.finish_reason == TRUNCATED),
                    **(_generated(generation) | {"finish_reason": None} if generation else {}),
                )
            )
        return judgments


def _generated(generation: Generation) -> dict[str, Any]:
    """The Judgment fields a generation fills: its text, why it stopped, and its token counts."""
    return {
        "raw_output": generation.text,
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
    }


def _cut_reasoning(text: str) -> str:
    """The reasoning of a constrained output cut at its cap: after `<reasoning>`, or none when the
    cap fell inside that opening tag itself.

    >>> _cut_reasoning("<reasoning>Response A assu"), _cut_reasoning("<reason")
    ('Response A assu', '')
    """
    return text[len(REASONING_PREFIX) :] if text.startswith(REASONING_PREFIX) else ""


def _sampling_key(request: JudgeRequest) -> tuple[float, int | None]:
    # The seed only matters when sampling.
    return (request.temperature, request.seed) if request.temperature > 0 else (0.0, None)


def _prompt_key(prompt: PromptRequest) -> tuple[tuple[tuple[str, str], ...], str]:
    return tuple((m.role, m.content) for m in prompt.messages), prompt.assistant_prefix
