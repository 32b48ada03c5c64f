"""The one interface every judge backend implements: `generate` and `score`, both batched.

A backend receives chat messages (plus an optional forced start of the model's turn) and renders
them itself: with the model's chat template where it has one (always with `enable_thinking=False`,
see :func:`biasjudge.prompts.render.tokenizer_chat_template`), else with a built-in turn format from
:mod:`biasjudge.prompts.render`. Heavy imports (torch, llama_cpp, vllm, ...) live inside the backend
modules, never here.

The scoring rule
----------------
Every backend's `score(requests, choices)` gives, per request, `{choice: log p(choice | prompt)}`
where `prompt` is the rendered chat plus the request's `assistant_prefix` (`<verdict>` in score
mode), and for a choice whose tokens are `t_1 .. t_n`::

    log p(choice | prompt) = sum over k of log p(t_k | prompt, t_1 .. t_{k-1})

* The choice's tokens are the model's own tokenisation of the choice as a continuation of the
  prompt: the tokens of `prompt + choice` after the prompt's tokens, or, when tokenising across
  the boundary changes the prompt's tokens, the choice tokenised alone
  (:func:`continuation_tokens`). In the Gemma 3 vocabulary `A` and `B` are one token each and
  `TIE` is `T` + `IE`.
* Teacher-forced: the k-th term conditions on the choice's own first k-1 tokens, never on what
  the model would have generated.
* Nothing else: no renormalisation over the choices (the judge does that), no length
  normalisation, no sum over other tokenisations of the same string.
* A backend that cannot read some term (a server whose top log-probs do not list the token) puts
  an upper bound there (a floor) and names the choice in :attr:`ChoiceScores.floored`, which the
  judge copies into `Judgment.floored_choices`.
* An empty choice list, a repeated choice, or a choice with zero tokens is a
  :class:`~biasjudge.errors.BackendError` (:func:`check_choices`, :func:`continuation_tokens`):
  a zero-token choice would otherwise score log p = 0, i.e. certainty.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Protocol, runtime_checkable

from biasjudge.errors import BackendError, MissingDependency
from biasjudge.io.files import sha256_file
from biasjudge.records import ChatMessage


@dataclass(frozen=True)
class PromptRequest:
    """One prompt: the chat so far, and text forced at the start of the model's turn."""

    messages: tuple[ChatMessage, ...]
    assistant_prefix: str = ""
    """Score mode puts `<verdict>` (or generated reasoning + `<verdict>`) here."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of a generate call."""

    temperature: float = 0.0
    """0 = greedy."""
    max_tokens: int = 512
    """New-token cap; an output that hits it has finish_reason 'length'."""
    seed: int | None = None
    """Seed for sampling; ignored when greedy."""
    stop: tuple[str, ...] = field(default_factory=tuple)
    """Extra stop strings (the end-of-turn marker is always a stop)."""
    grammar: str | None = None
    """A GBNF grammar the output must follow (backends whose `supports_grammar` is true)."""


@dataclass(frozen=True)
class Generation:
    """Text a backend generated for one prompt."""

    text: str
    finish_reason: str | None = None
    """'stop' (ended on its own or at a stop string), 'length' (hit max_tokens), or the backend's word."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChoiceScores(dict[str, float]):
    """One request's score result: `{choice: log-probability}` (the scoring rule above), plus
    :attr:`floored`.

    A plain dict to every caller that only reads the log-probabilities, so a backend written
    before this class (returning plain dicts) still satisfies the protocol; read the flag with
    :func:`floored_choices`, which treats a plain dict as "nothing floored".
    """

    floored: tuple[str, ...]
    """Choices whose log-probability is a floor (an upper bound), not a value the model gave."""

    def __init__(
        self, logprobs: Mapping[str, float] | Iterable[tuple[str, float]] = (), *, floored: Iterable[str] = ()
    ):
        super().__init__(logprobs)
        self.floored = tuple(floored)
        unknown = [c for c in self.floored if c not in self]
        if unknown:
            raise ValueError(f"floored choices {unknown} have no score")

    def __repr__(self) -> str:
        return f"ChoiceScores({dict(self)!r}, floored={self.floored!r})"


def floored_choices(scores: Mapping[str, float]) -> list[str]:
    """The choices of one score result that were floored (none for a plain dict)."""
    return list(scores.floored) if isinstance(scores, ChoiceScores) else []


def check_choices(choices: Sequence[str], where: str = "score") -> tuple[str, ...]:
    """The choices as a tuple; BackendError for an empty list, a non-string or a repeated choice."""
    if isinstance(choices, str):
        raise BackendError(f"{where}: choices must be a sequence of strings, got the string {choices!r}")
    items = tuple(choices)
    if not items:
        raise BackendError(f"{where}: the choice list is empty; give at least one choice to score")
    bad = [c for c in items if not isinstance(c, str)]
    if bad:
        raise BackendError(f"{where}: choices must be strings, got {bad!r}")
    repeated = sorted({c for c in items if items.count(c) > 1})
    if repeated:
        raise BackendError(f"{where}: choice(s) {repeated} listed more than once")
    return items


def continuation_tokens(
    prompt_tokens: Sequence[int],
    joint_tokens: Sequence[int],
    alone: Callable[[], Sequence[int]],
    choice: str,
    where: str = "score",
) -> list[int]:
    """A choice's tokens as a continuation of the prompt (the scoring rule's tokenisation).

    Args:
        prompt_tokens: the prompt's tokens.
        joint_tokens: the tokens of the prompt text + the choice text, tokenised the same way.
        alone: the choice tokenised on its own (no special tokens); called only when tokenising
            across the boundary changed the prompt's tokens.
        choice: the choice text (for the error message).
        where: the backend spec (for the error message).

    Raises:
        BackendError: the choice has no tokens (an empty choice, or one the tokenizer drops).

    >>> continuation_tokens([1, 2], [1, 2, 7, 8], lambda: [9], "TIE")
    [7, 8]
    >>> continuation_tokens([1, 2], [1, 5, 8], lambda: [7, 8], "TIE")  # the boundary merged
    [7, 8]
    """
    n = len(prompt_tokens)
    if len(joint_tokens) > n and list(joint_tokens[:n]) == list(prompt_tokens):
        tokens = list(joint_tokens[n:])
    else:
        tokens = list(alone())
    if not tokens:
        raise BackendError(f"{where}: choice {choice!r} has no tokens; every choice needs at least one")
    return tokens


def files_identity(*paths: str | Path | None) -> str:
    """A fingerprint of the model files a judgment depends on, for the eval cache key.

    A file counts by name, size and mtime (hashing a 253 MB GGUF on every start would cost
    seconds); a folder (a transformers model or a PEFT adapter) by each file's relative name, size
    and mtime; a small file (an adapter, under 64 MB) by its sha256, so re-exporting an adapter to
    the same path is noticed even within one second. A hub id that is not a local path counts as
    itself. Re-exporting a model to the same path therefore changes the fingerprint.
    """
    parts: list[str] = []
    for raw in paths:
        if raw is None:
            continue
        path = Path(raw)
        if path.is_dir():
            digest = hashlib.sha256()
            for file in sorted(f for f in path.rglob("*") if f.is_file()):
                stat = file.stat()
                digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
            parts.append(f"{path.name}/:{digest.hexdigest()[:16]}")
        elif path.is_file():
            stat = path.stat()
            if stat.st_size < SMALL_FILE:
                parts.append(f"{path.name}:sha256:{sha256_file(path)[:16]}")
            else:
                parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
        else:
            parts.append(str(raw))
    return "+".join(parts)


SMALL_FILE = 64 << 20
"""Files below this size are fingerprinted by content (sha256), larger ones by size and mtime."""


@runtime_checkable
class Backend(Protocol):
    """A model a judge can call."""

    spec: str
    """The spec string the backend was made from (e.g. `llamacpp:model.gguf`)."""

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        """Continue each prompt; one Generation per request, in order."""
        ...

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability of each choice string as the continuation of each prompt, by the
        scoring rule of this module's docstring.

        Returns, per request and in request order, `{choice: log p(choice | prompt + assistant_prefix)}`;
        the built-in backends return :class:`ChoiceScores` (a dict that also names floored
        choices). Raises BackendError for an empty choice list or a choice with no tokens.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Length of `text` in this model's tokens (for verbosity bias)."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


def import_optional(module: str, package: str, extra: str | None, feature: str = "") -> ModuleType:
    """Import an optional heavy package, or raise MissingDependency with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(package, extra, feature) from None
