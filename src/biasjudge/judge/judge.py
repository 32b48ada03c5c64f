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

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from biasjudge.backends.base import Backend, Generation, GenerationParams, PromptRequest, floored_choices
from biasjudge.backends.registry import (
    DEFAULT_JUDGE_SPEC,
    make_backend,
    make_pair_judge,
    register_backend,
    scheme_kind,
)
from biasjudge.errors import BackendError, ConfigError
from biasjudge.prompting import SCORE_PREFIX, judge_messages, refuse_thinking
from biasjudge.prompts import load_prompt
from biasjudge.records import JudgeMode, Judgment, Pair, ParsedVerdict, Verdict
from biasjudge.verdict import CONTRACT_GRAMMAR, PARSE_FAIL, VERDICTS, ParseMode, parse, render

__all__ = [
    "DEFAULT_JUDGE_SPEC",
    "JUDGE_OPTIONS",
    "Judge",
    "JudgeRequest",
    "PairJudge",
    "make_judge",
    "settle_truncation",
    "verdict_from_logprobs",
]

REASONING_PREFIX = "<reasoning>"
"""Forced start of the model's turn when reasoning is generated before scoring."""
REASONING_STOPS = ("</reasoning>", "<verdict>")
"""Where reasoning generation stops in score-with-reasoning mode (the stop text is not kept)."""
JUDGE_OPTIONS = ("parse_mode", "max_tokens", "score_with_reasoning", "batch_size", "constrained")
"""Options of :class:`Judge` that :func:`make_judge` takes apart from the backend's options."""


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
    mode: JudgeMode

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


def reasoned_judgment(
    request: JudgeRequest, *, judge: str, mode: JudgeMode, verdict: Verdict, probs: dict[str, float], reasoning: str
) -> Judgment:
    """The Judgment of a judge that computes its verdict, probabilities and reasoning without
    generating text (the question reader, the free-text judge): its raw output is the contract text."""
    return Judgment(
        **request_fields(request, judge=judge, mode=mode),
        verdict=verdict,
        probs=probs,
        reasoning=reasoning,
        raw_output=render(reasoning, verdict),
        finish_reason="stop",
    )


K = TypeVar("K", bound=Hashable)


def _group(indices: Sequence[int], key: Callable[[int], K]) -> dict[K, list[int]]:
    groups: dict[K, list[int]] = {}
    for i in indices:
        groups.setdefault(key(i), []).append(i)
    return groups


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
        wanted = _flag("constrained", constrained)
        if wanted and not supported:
            raise ConfigError(f"{backend.spec}: this backend cannot hold generation to a grammar (constrained=false)")
        self.constrained = supported if wanted is None else wanted
        self.system_prompt = load_prompt("judge_system") if system_prompt is None else system_prompt
        refuse_thinking(self.system_prompt, "system prompt")

    # ------------------------------------------------------------------ public API

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
            order = list(unique.values())
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                generations = self.backend.generate([prompts[g[0]] for g in chunk], params)
                for group, generation in zip(chunk, generations, strict=True):
                    for i in group:
                        out[i] = generation
        missing = [i for i, g in enumerate(out) if g is None]
        if missing:  # pragma: no cover - a backend returned fewer generations than asked
            raise BackendError(f"{self.spec}: no generation for prompts {missing}")
        return [g for g in out if g is not None]

    def _run_score(self, prompts: Sequence[PromptRequest]) -> list[dict[str, float]]:
        """Score each prompt over A/B/TIE; identical prompts share one backend.score call."""
        unique = list(_group(range(len(prompts)), lambda i: _prompt_key(prompts[i])).values())
        out: list[dict[str, float]] = [{}] * len(prompts)
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            scores = self.backend.score([prompts[g[0]] for g in chunk], VERDICTS)
            for group, score in zip(chunk, scores, strict=True):
                for i in group:
                    out[i] = score
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
            judgments.append(
                self._judgment(
                    request,
                    verdict=verdict,
                    reasoning=reasoning,
                    raw_output=generation.text,
                    finish_reason=generation.finish_reason,
                    prompt_tokens=generation.prompt_tokens,
                    completion_tokens=generation.completion_tokens,
                )
            )
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
            fields: dict[str, Any] = {
                "raw_output": generation.text,
                "reasoning": _cut_reasoning(generation.text).strip(),
                "finish_reason": generation.finish_reason,
                "reasoning_truncated": True,
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
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
                    raw_output=generation.text if generation else "",
                    # The verdict came from the score pass: the reasoning's cap is a flag, not a finish.
                    reasoning_truncated=bool(generation and generation.finish_reason == TRUNCATED),
                    prompt_tokens=generation.prompt_tokens if generation else None,
                    completion_tokens=generation.completion_tokens if generation else None,
                )
            )
        return judgments


def _cut_reasoning(text: str) -> str:
    """The reasoning of a constrained output cut at its cap: after `<reasoning>`, or none when the
    cap fell inside that opening tag itself.

    >>> _cut_reasoning("<reasoning>Response A assu"), _cut_reasoning("<reason")
    ('Response A assu', '')
    """
    return text[len(REASONING_PREFIX) :] if text.startswith(REASONING_PREFIX) else ""


def _flag(name: str, value: bool | str | None) -> bool | None:
    """A yes/no option as a spec gives it (`?constrained=false`) or as Python does; None stays None."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _sampling_key(request: JudgeRequest) -> tuple[float, int | None]:
    # The seed only matters when sampling.
    return (request.temperature, request.seed) if request.temperature > 0 else (0.0, None)


def _prompt_key(prompt: PromptRequest) -> tuple[tuple[tuple[str, str], ...], str]:
    return tuple((m.role, m.content) for m in prompt.messages), prompt.assistant_prefix


def make_judge(
    spec: str = DEFAULT_JUDGE_SPEC,
    *,
    system_prompt: str | None = None,
    mode: JudgeMode = "score",
    **backend_options: Any,
) -> PairJudge:
    """A judge from a spec string: a baseline as it is, or `Judge(make_backend(spec, ...))`.

    `backend_options` (and options after `?` in the spec) go to the backend's constructor, except
    the :data:`JUDGE_OPTIONS` (`parse_mode`, `max_tokens`, `score_with_reasoning`, `batch_size`),
    which go to :class:`Judge`, and `order` (`both` or `single`, see below). Baselines ignore them,
    and the system prompt: they read no prompt.

    Trained adapters: `llamacpp:embedded` (the default) is biasjudge's shipped judge, i.e. the
    embedded base with the packaged adapter (`lora_path`) and the system prompt it was trained
    with; a `lora_path` with a manifest beside it (`<adapter>.json`, written by
    `biasjudge train judge`) brings its prompt likewise. A different `system_prompt` is refused
    (ConfigError). Such judges combine both orders of every pair (`order=both`, an
    :class:`~biasjudge.judge.debiased.OrderDebiasedJudge`) unless `order=single`.

    Confidence (score mode): `calibration=PATH` maps the probabilities through a fitted
    calibration (`biasjudge calibrate`); the shipped judge applies its own `calibration.json`
    unless `calibration=none`. `abstain_below=P` turns a verdict whose top probability is under P
    into UNSURE. Both wrap the judge in a :class:`~biasjudge.judge.calibration.CalibratedJudge`.
    """
    from biasjudge.backends.registry import split_options

    base_spec, spec_options = split_options(spec)
    for name in ("order", "calibration", "abstain_below"):
        if backend_options.get(name) is not None and name not in spec_options:
            # These change verdicts: keep them in the spec, which the eval cache keys on.
            spec = f"{spec}{'&' if '?' in spec else '?'}{name}={backend_options[name]}"
    options = {**spec_options, **backend_options}
    calibration = options.pop("calibration", None)
    abstain_below = options.pop("abstain_below", None)
    judge = _make_uncalibrated(spec, base_spec, options, system_prompt, mode)
    return _with_confidence(judge, spec, calibration, abstain_below)


def _with_confidence(judge: PairJudge, spec: str, calibration: Any, abstain_below: Any) -> PairJudge:
    """`judge` with its calibration (the shipped one's by default) and abstention, when it has any."""
    from biasjudge.judge.calibration import CALIBRATION_FILE, CalibratedJudge, read_calibration

    path: Any = calibration
    if calibration is None and _is_shipped(spec) and judge.mode == "score":
        from biasjudge.judge.shipped import shipped_dir

        shipped = shipped_dir() / CALIBRATION_FILE
        path = shipped if shipped.is_file() else None
    elif str(calibration).lower() == "none":
        path = None
    if path is None and abstain_below is None:
        return judge
    try:
        threshold = None if abstain_below is None else float(abstain_below)
    except ValueError:
        raise ConfigError(f"abstain_below must be a probability, got {abstain_below!r}") from None
    return CalibratedJudge(judge, read_calibration(path) if path is not None else None, abstain_below=threshold)


def _is_shipped(spec: str) -> bool:
    from biasjudge.backends.registry import parse_spec

    try:
        scheme, target = parse_spec(spec)
    except ConfigError:
        return False
    return scheme == "llamacpp" and target in SHIPPED_TARGETS


def _make_uncalibrated(
    spec: str, base_spec: str, options: dict[str, Any], system_prompt: str | None, mode: JudgeMode
) -> PairJudge:
    from biasjudge.backends.registry import parse_spec

    judge_options = {k: options.pop(k) for k in JUDGE_OPTIONS if k in options}
    order = options.pop("order", None)
    if order not in (None, "both", "single"):
        raise ConfigError(f"order must be 'both' or 'single', got {order!r}")
    if scheme_kind(spec) == "pair_judge":
        baseline: PairJudge = make_pair_judge(base_spec, mode=mode, **options)
        if hasattr(baseline, "spec"):
            baseline.spec = spec
        return baseline
    scheme, target = parse_spec(spec)
    if scheme == "llamacpp" and "adapter" in options:
        options["lora_path"] = options.pop("adapter")  # one option name for an adapter on every backend
    manifest = None
    if scheme == "llamacpp" and target in SHIPPED_TARGETS:
        from biasjudge.judge.shipped import shipped_manifest

        manifest = shipped_manifest()
        options.setdefault("lora_path", str(manifest.adapter))
    elif options.get("lora_path"):
        from pathlib import Path

        from biasjudge.judge.shipped import read_manifest

        manifest = read_manifest(Path(str(options["lora_path"])))
    if manifest is not None:
        from biasjudge.judge.shipped import check_system_prompt

        system_prompt = check_system_prompt(manifest, system_prompt)
        order = order or manifest.order
        # Judge in the turn format the adapter was trained with (recorded in its manifest).
        options.setdefault("chat_format", manifest.chat_format)
    backend = make_backend(base_spec, **options)
    backend.spec = spec
    judge = Judge(backend, system_prompt=system_prompt, mode=mode, **judge_options)
    if (order or "single") == "single":
        return judge
    from biasjudge.judge.debiased import OrderDebiasedJudge

    return OrderDebiasedJudge(judge)


SHIPPED_TARGETS = ("", "embedded")
"""`llamacpp:` targets that name the shipped trained judge (`embedded-base` is the bare model)."""


# Pair-judge schemes are registered here, not in backends.registry: they judge whole pairs, and
# backends never import the judge package.
@register_backend("answer-key", kind="pair_judge")
def _answer_key() -> Callable[..., Any]:
    from biasjudge.judge.baselines import AnswerKeyJudge

    return AnswerKeyJudge


@register_backend("always-tie", kind="pair_judge")
def _always_tie() -> Callable[..., Any]:
    from biasjudge.judge.baselines import AlwaysTieJudge

    return AlwaysTieJudge


@register_backend("random", kind="pair_judge")
def _random() -> Callable[..., Any]:
    from biasjudge.judge.baselines import RandomJudge

    return RandomJudge


@register_backend("hybrid", kind="pair_judge")
def _hybrid() -> Callable[..., Any]:
    from biasjudge.judge.hybrid import HybridJudge

    return HybridJudge


@register_backend("route", kind="pair_judge")
def _route() -> Callable[..., Any]:
    from biasjudge.judge.router import RouterJudge

    return RouterJudge


@register_backend("reader", kind="pair_judge")
def _reader() -> Callable[..., Any]:
    from biasjudge.judge.reading.judge import ReadingJudge

    return ReadingJudge


@register_backend("text", kind="pair_judge")
def _text() -> Callable[..., Any]:
    from biasjudge.judge.freetext import TextJudge

    return TextJudge


@register_backend("replay", kind="pair_judge")
def _replay() -> Callable[..., Any]:
    from biasjudge.judge.replay import ReplayJudge

    return ReplayJudge
