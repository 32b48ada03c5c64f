"""vLLM backend for GPU users: `vllm:MODEL` (hub id or local folder), offline `vllm.LLM`.

Needs `pip install 'biasjudge[vllm]'` and a GPU; without the package, making the backend raises
MissingDependency with that command. Prompts are rendered like the hf: backend (the tokenizer's
chat template with `enable_thinking=False`, else the built-in `chat_format`; `<|think|>` refused)
and passed as token ids.

Score follows the scoring rule of :mod:`biasjudge.backends.base` (the sum of the choice's tokens'
log-probabilities, teacher-forced): each choice's tokens (:func:`~biasjudge.backends.base.continuation_tokens`)
are appended to the prompt's tokens and one token is generated with `prompt_logprobs=0`, which
returns the log-prob of every prompt token given the tokens before it; the choice's positions are
summed by :func:`continuation_logprob` (`TIE` = `T` + `IE` in the Gemma 3 vocabulary). Prefix
caching is on, so the three sequences of one prompt share its KV blocks and cost about one prefill.

Constrained generation: a `params.grammar` (GBNF) goes to vLLM's structured outputs
(`SamplingParams(structured_outputs=StructuredOutputsParams(grammar=...))`, vLLM 0.10.2 on; before
that `guided_decoding=GuidedDecodingParams(grammar=...)`). Not run here (no GPU): the wiring is
tested on a stand-in for vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from biasjudge.backends import base
from biasjudge.backends.base import ChoiceScores, Generation, GenerationParams, PromptRequest, import_optional
from biasjudge.errors import BackendError
from biasjudge.prompts.render import DEFAULT_TURN_FORMAT, PromptRendering, turn_format


def continuation_logprob(
    prompt_logprobs: Sequence[Mapping[int, Any] | None], sequence: Sequence[int], start: int, where: str = "vllm"
) -> float:
    """Sum of the log-probs of `sequence[start:]` read from vLLM's `prompt_logprobs`.

    `prompt_logprobs[k]` maps token ids to vLLM `Logprob` objects (or plain floats) for position k,
    given the tokens before it (position 0 has none); with `prompt_logprobs=0` it holds the
    sequence's own token. Teacher-forced by construction: every position read the real sequence.

    >>> continuation_logprob([None, {5: -0.5}, {6: -1.0, 9: -0.1}], [1, 5, 6], 1)
    -1.5
    """
    if start < 1 or start >= len(sequence):
        raise BackendError(f"{where}: no choice tokens to read at positions {start}..{len(sequence) - 1}")
    total = 0.0
    for k in range(start, len(sequence)):
        entry = prompt_logprobs[k] if k < len(prompt_logprobs) else None
        if entry is None or sequence[k] not in entry:
            raise BackendError(f"{where}: vLLM returned no prompt log-prob for token {sequence[k]} at position {k}")
        value = entry[sequence[k]]
        total += float(getattr(value, "logprob", value))
    return total


class VLLMBackend:
    """A model served in-process by vLLM.

    Args:
        target: hub id or local folder.
        spec: the spec string.
        chat_format: built-in turn format for models without a chat template.
        dtype: vLLM dtype ('auto', 'bfloat16', ...).
        gpu_memory_utilization: fraction of GPU memory vLLM may take.
        max_model_len: context length.
        llm_options: further keyword arguments for `vllm.LLM`.
    """

    def __init__(
        self,
        target: str,
        *,
        spec: str = "",
        chat_format: str = DEFAULT_TURN_FORMAT,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int = 4096,
        llm_options: dict[str, Any] | None = None,
    ) -> None:
        vllm = import_optional("vllm", "vllm", "vllm", "the vllm: backend")
        self._vllm = vllm
        self.spec = spec or f"vllm:{target}"
        self._format = turn_format(chat_format)
        self._llm = vllm.LLM(
            model=target,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_prefix_caching=True,
            **(llm_options or {}),
        )
        self.tokenizer = self._llm.get_tokenizer()
        self._prompts = PromptRendering.of_tokenizer(self.tokenizer, self._format)
        self.chat_template = self._prompts.chat_template
        self.render_format = self._prompts.render_format
        """How prompts are rendered (template hash or built-in format); part of the eval cache key."""

    def _ids(self, text: str) -> list[int]:
        """Prompt tokens: BOS added unless the text already starts with it (as the hf: backend)."""
        bos = self.tokenizer.bos_token
        ids: list[int] = self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos))).input_ids
        return ids

    def _tokens(self, request: PromptRequest) -> tuple[str, list[int]]:
        text = self._prompts.render(request.messages, request.assistant_prefix)
        return text, self._ids(text)

    supports_grammar = True
    """Generation can be held to a GBNF grammar (vLLM's structured outputs)."""

    def _grammar_options(self, grammar: str | None) -> dict[str, Any]:
        """SamplingParams keywords that hold generation to `grammar`, in this vLLM's API."""
        if grammar is None:
            return {}
        module = getattr(self._vllm, "sampling_params", self._vllm)
        if hasattr(module, "StructuredOutputsParams"):
            return {"structured_outputs": module.StructuredOutputsParams(grammar=grammar)}
        if hasattr(module, "GuidedDecodingParams"):
            return {"guided_decoding": module.GuidedDecodingParams(grammar=grammar)}
        raise BackendError(f"{self.spec}: this vLLM has no structured outputs; upgrade vllm or use constrained=false")

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        """Generate for every prompt in one vLLM call, held to `params.grammar` when given."""
        sampling = self._vllm.SamplingParams(
            temperature=max(0.0, params.temperature),
            max_tokens=params.max_tokens,
            seed=params.seed,
            stop=[self._format.end_of_turn, *params.stop],
            **self._grammar_options(params.grammar),
        )
        prompts = [{"prompt_token_ids": self._tokens(r)[1]} for r in requests]
        outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
        result: list[Generation] = []
        for prompt, output in zip(prompts, outputs, strict=True):
            completion = output.outputs[0]
            result.append(
                Generation(
                    text=completion.text,
                    finish_reason=completion.finish_reason,
                    prompt_tokens=len(prompt["prompt_token_ids"]),
                    completion_tokens=len(completion.token_ids),
                )
            )
        return result

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        """Each choice's teacher-forced log-probability, read from vLLM's prompt log-probs."""
        choices = base.check_choices(choices, self.spec)
        sampling = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        jobs: list[tuple[int, str, int, list[int]]] = []
        for i, request in enumerate(requests):
            text, ids = self._tokens(request)
            for choice in choices:

                def alone(choice: str = choice) -> list[int]:
                    tokens: list[int] = self.tokenizer(choice, add_special_tokens=False).input_ids
                    return tokens

                ctoks = base.continuation_tokens(ids, self._ids(text + choice), alone, choice, self.spec)
                jobs.append((i, choice, len(ids), ids + ctoks))
        outputs = self._llm.generate([{"prompt_token_ids": j[3]} for j in jobs], sampling, use_tqdm=False)
        scores: list[dict[str, float]] = [ChoiceScores() for _ in requests]
        for (i, choice, n_prompt, seq), output in zip(jobs, outputs, strict=True):
            scores[i][choice] = continuation_logprob(output.prompt_logprobs, seq, n_prompt, self.spec)
        return scores

    def count_tokens(self, text: str) -> int:
        """Length of `text` in the model's tokens (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def close(self) -> None:
        """Drop the engine."""
        self._llm = None
