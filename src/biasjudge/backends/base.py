"""The one interface every judge backend implements: `generate` and `score`, both batched.

A backend receives chat messages (plus an optional forced start of the model's turn) and renders
them itself: with the model's chat template where it has one, else with a built-in turn format
from :mod:`biasjudge.prompting`. Heavy imports (torch, llama_cpp, vllm, ...) live inside the
backend modules, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

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


@dataclass(frozen=True)
class Generation:
    """Text a backend generated for one prompt."""

    text: str
    finish_reason: str | None = None
    """'stop' (ended on its own or at a stop string), 'length' (hit max_tokens), or the backend's word."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class Backend(Protocol):
    """A model a judge can call."""

    spec: str
    """The spec string the backend was made from (e.g. `llamacpp:model.gguf`)."""

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        """Continue each prompt; one Generation per request, in order."""
        ...

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability of each choice string as the continuation of each prompt.

        Returns, per request, `{choice: log p(choice | prompt + assistant_prefix)}`; a choice of
        several tokens gets the sum of its tokens' log-probabilities.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Length of `text` in this model's tokens (for verbosity bias)."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...
