"""llama.cpp backend (llama-cpp-python, CPU): `llamacpp:PATH.gguf`, or `llamacpp:` for the embedded 270M.

Prompts are rendered here: with the GGUF's `tokenizer.chat_template` (jinja) when it has one,
else with the built-in turn format `chat_format` (default `gemma4`; the embedded Gemma 3 270M is
a pretrained model without a template). Generation stops at the format's end-of-turn marker and
at the model's end-of-generation tokens.

Score mode and the KV cache
---------------------------
`score` keeps the tokens currently in the llama.cpp context. For each new prompt it finds the
longest common token prefix with them, rewinds `n_tokens` to that length rounded DOWN to a
multiple of 4 (and at least two tokens short of the prompt: the last position is evaluated in a
batch, as in a fresh evaluation, never alone), and evaluates only the rest. Judging many pairs
with one system prompt thus evaluates the shared system-prompt prefix once, and the swapped
order of a pair only from where it departs from the original order; with `reuse_prefix=True` a
batch is also processed in sorted token order (results come back in request order) so that
neighbours share the longest prefixes.
The Q4 CPU kernels compute in row groups of 4: a rewind to a multiple of 4 keeps the row
grouping of a fresh evaluation, and the whole rest is evaluated in one decode call (`n_batch`
defaults to the context), so the logits agree with a no-reuse run (tests still compare with a
tolerance, not for equality).
`reuse_prefix=False` evaluates every prompt from its first token.

Multi-token choices follow the scoring rule of :mod:`biasjudge.backends.base` (the sum of the
choice's tokens' log-probabilities, teacher-forced). In the Gemma 3 vocabulary `A` and `B` are one
token each and `TIE` is `T` + `IE`: its score takes one extra one-token decode after the prompt
(to read log p(IE | prompt, T)); the next prompt's prefix match then rewinds past that token.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from biasjudge.backends import base
from biasjudge.backends.base import ChoiceScores, Generation, GenerationParams, PromptRequest, files_identity
from biasjudge.backends.llamacpp_build import ensure_llama_runs
from biasjudge.errors import BackendError
from biasjudge.prompts.render import DEFAULT_TURN_FORMAT, ChatTemplate, PromptRendering, turn_format

EMBEDDED_TARGETS = ("", "embedded", "embedded-base")
"""Targets that name the embedded base GGUF. (`llamacpp:embedded` as a judge spec is the shipped
trained judge: :func:`biasjudge.judge.registry.make_judge` adds its adapter and prompt.)"""
REUSE_ALIGN = 4
"""Rewind points are rounded down to a multiple of this (the Q4 kernels' row-group size)."""


def jinja_chat_template(source: str, *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A :data:`~biasjudge.prompts.render.ChatTemplate` from a jinja chat template (HF/GGUF style)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise BackendError(f"chat template error: {message}")

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        template = env.from_string(source)
    except jinja2.TemplateError as exc:
        raise BackendError(f"the model's chat template does not compile: {exc}") from None

    def render(messages: list[dict[str, str]]) -> str:
        try:
            return template.render(
                messages=messages,
                bos_token=bos_token,
                eos_token=eos_token,
                add_generation_prompt=True,
                enable_thinking=False,
            )
        except jinja2.TemplateError as exc:
            raise BackendError(f"the model's chat template failed: {exc}") from None

    return render


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (C libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from a vector of logits, in float64."""
    values = logits.astype(np.float64)
    shifted = values - values.max()
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum())
    return result


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n])
    y = np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset, a container's cpuset), not every core the machine
    has; where the OS cannot say (macOS), every core."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


class LlamaCppBackend:
    """A GGUF model run by llama.cpp on the CPU.

    Args:
        target: path of a .gguf file; '' or 'embedded' = the embedded Gemma 3 270M.
        spec: the spec string (for Judgment.judge).
        n_ctx: context length (prompt + generated tokens).
        n_threads: CPU threads, for prompt evaluation (all of score mode) and generation alike
            (default: all cores).
        n_batch: prompt tokens per decode call (default: the whole context). A prompt evaluated in
            one piece gives the same logits whatever prefix was reused from the cache; split across
            decode calls at a point that depends on the reuse, its logits differ (measured up to 3.7
            with the portable AVX2 build on a 700-token prompt).
        chat_format: built-in turn format for models without a chat template.
        reuse_prefix: keep the KV cache between score calls and evaluate only new suffixes.
        lora_path: a GGUF LoRA adapter applied on top of the model.
        seed: default sampling seed when a request gives none.
        verbose: let llama.cpp print its logs.
    """

    def __init__(
        self,
        target: str = "",
        *,
        spec: str = "",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int | None = None,
        chat_format: str = DEFAULT_TURN_FORMAT,
        reuse_prefix: bool = True,
        lora_path: str | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        llama_cpp = base.import_optional("llama_cpp", "llama-cpp-python", "llamacpp", "the llamacpp: backend")
        if target in EMBEDDED_TARGETS:
            from biasjudge.backends.embedded import embedded_gguf_path

            path = embedded_gguf_path()
        else:
            path = Path(target).expanduser()
        if not path.is_file():
            raise BackendError(f"llamacpp: GGUF file {path} not found")
        if lora_path is not None and not Path(lora_path).is_file():
            raise BackendError(f"llamacpp: LoRA adapter {lora_path} not found")
        # A build that uses an instruction this machine refuses kills the process on load (SIGILL):
        # find out once per build in a child process, and say so instead.
        ensure_llama_runs(path)
        self.spec = spec or f"llamacpp:{target}"
        self.path = path
        self.reuse_prefix = reuse_prefix
        self.seed = seed
        self._format = turn_format(chat_format)
        # llama.cpp prints adapter-loading notes to stderr even with verbose=False.
        quiet: Any = contextlib.nullcontext() if verbose else _quiet_stderr()
        threads = n_threads or usable_cpus()
        try:
            with quiet:
                self._llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,  # llama-cpp-python would give prompt evaluation every core
                    n_batch=n_batch or n_ctx,
                    n_ubatch=n_batch or n_ctx,
                    logits_all=False,
                    swa_full=True,
                    lora_path=lora_path,
                    seed=seed,
                    verbose=verbose,
                )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llamacpp: could not load {path}: {exc}") from None
        self.identity = files_identity(path, lora_path)
        """Identifies the model files (see :func:`model_identity`); part of the eval cache key."""
        self._n_ctx = n_ctx
        self._llama_cpp = llama_cpp
        self._bos_id = self._llm.token_bos()
        self._bos_text = self._token_text(self._bos_id)
        self._eos_text = self._token_text(self._llm.token_eos())
        source = self._llm.metadata.get("tokenizer.chat_template") or None
        template = jinja_chat_template(source, bos_token=self._bos_text, eos_token=self._eos_text) if source else None
        self._prompts = PromptRendering(self._format, source, template)
        self.chat_template = self._prompts.chat_template
        self.render_format = self._prompts.render_format
        """How prompts are rendered (template hash or built-in format); part of the eval cache key."""
        self.stats = {"prompt_tokens": 0, "evaluated_tokens": 0}
        """Tokens of scored prompts, and tokens actually evaluated for them (the rest came from the cache)."""

    # ------------------------------------------------------------------ helpers

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, request: PromptRequest) -> str:
        """The prompt text for a request (template or built-in format, plus the assistant prefix)."""
        return self._prompts.render(request.messages, request.assistant_prefix)

    def tokenize(self, text: str) -> list[int]:
        """Prompt tokens: special tokens parsed, BOS added unless the text already starts with it."""
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return tokens

    def choice_tokens(self, prompt_text: str, prompt_tokens: Sequence[int], choice: str) -> list[int]:
        """Tokens of `choice` as a continuation of the prompt (:func:`~biasjudge.backends.base.continuation_tokens`)."""

        def alone() -> list[int]:
            tokens: list[int] = self._llm.tokenize(choice.encode("utf-8"), add_bos=False, special=False)
            return tokens

        return base.continuation_tokens(prompt_tokens, self.tokenize(prompt_text + choice), alone, choice, self.spec)

    def _check_length(self, n: int) -> None:
        if n >= self._n_ctx:
            raise BackendError(
                f"{self.spec}: prompt of {n} tokens does not fit the context of {self._n_ctx} "
                "(pass n_ctx=... to the backend)"
            )

    def _eval_from(self, tokens: Sequence[int], keep: int) -> np.ndarray:
        """Keep the first `keep` cached tokens, evaluate the rest, return the last position's log-probs."""
        llm = self._llm
        llm.n_tokens = keep
        llm.eval(list(tokens[keep:]))
        ptr = self._llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))
        return log_softmax(logits)

    def _reusable(self, tokens: Sequence[int]) -> int:
        if not self.reuse_prefix:
            return 0
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens]
        # At least two tokens are evaluated afresh: llama.cpp computes a lone token with other kernels
        # than a batch, and the last position's logits would then differ from a fresh evaluation's.
        keep = min(common_prefix_length(cached, tokens), len(tokens) - 2)
        return max(0, keep - keep % REUSE_ALIGN)

    def _score_one(self, text: str, choices: Sequence[str]) -> ChoiceScores:
        tokens = self.tokenize(text)
        per_choice = {c: self.choice_tokens(text, tokens, c) for c in choices}
        self._check_length(len(tokens) + max(len(t) for t in per_choice.values()))
        keep = self._reusable(tokens)
        self.stats["prompt_tokens"] += len(tokens)
        self.stats["evaluated_tokens"] += len(tokens) - keep
        first = self._eval_from(tokens, keep)
        scores = ChoiceScores()
        for choice, ctoks in per_choice.items():
            total = float(first[ctoks[0]])
            for j in range(1, len(ctoks)):
                # Teacher forcing: decode the choice's own tokens so far, read the next one.
                logprobs = self._eval_from([*tokens, *ctoks[:j]], len(tokens) + j - 1)
                total += float(logprobs[ctoks[j]])
            scores[choice] = total
        return scores

    # ------------------------------------------------------------------ Backend protocol

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability of each choice after each request's prompt (see the scoring rule)."""
        choices = base.check_choices(choices, self.spec)
        texts = [self.render(r) for r in requests]
        order = list(range(len(texts)))
        if self.reuse_prefix and len(texts) > 1:
            order.sort(key=lambda i: texts[i])  # neighbours share the longest prefixes
        out: list[dict[str, float]] = [{}] * len(texts)
        for i in order:
            out[i] = self._score_one(texts[i], choices)
        return out

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        """Generate one completion per request, stopping at the end of the model's turn."""
        stop = [self._format.end_of_turn, *params.stop]
        out: list[Generation] = []
        for request in requests:
            tokens = self.tokenize(self.render(request))
            max_tokens = min(params.max_tokens, self._n_ctx - len(tokens))
            self._check_length(len(tokens) + 1)
            greedy = params.temperature <= 0
            result: Any = self._llm.create_completion(
                tokens,
                max_tokens=max_tokens,
                temperature=0.0 if greedy else params.temperature,
                top_k=0 if not greedy else 40,
                top_p=1.0,
                min_p=0.0,
                repeat_penalty=1.0,
                seed=params.seed if params.seed is not None else self.seed,
                stop=stop,
                grammar=self._grammar(params.grammar),
            )
            choice = result["choices"][0]
            usage = result.get("usage", {})
            out.append(
                Generation(
                    text=choice["text"],
                    finish_reason=choice.get("finish_reason"),
                    prompt_tokens=usage.get("prompt_tokens"),
                    completion_tokens=usage.get("completion_tokens"),
                )
            )
        return out

    supports_grammar = True
    """Generation can be held to a GBNF grammar (llama.cpp's own sampler)."""

    def _grammar(self, text: str | None) -> Any:
        """The compiled grammar (compiled once per text), or None."""
        if text is None:
            return None
        cache: dict[str, Any] = self.__dict__.setdefault("_grammars", {})
        if text not in cache:
            llama_cpp = base.import_optional("llama_cpp", "llama-cpp-python", "llamacpp", "the llamacpp: backend")
            with _quiet_stderr():
                cache[text] = llama_cpp.LlamaGrammar.from_string(text, verbose=False)
        return cache[text]

    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` in the model's vocabulary (no BOS)."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        """Free the model."""
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None
