"""transformers backend on the embedded 270M GGUF (dequantised to fp32), checked against llama.cpp.

Loading the GGUF through transformers takes about 45 s on an idle 2-core machine, so the model is
loaded once for this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from biasjudge.backends.base import GenerationParams, PromptRequest
from biasjudge.backends.hf import HFBackend
from biasjudge.backends.llamacpp import LlamaCppBackend
from biasjudge.io import read_records
from biasjudge.judge.protocol import verdict_from_logprobs
from biasjudge.prompts import load_prompt
from biasjudge.prompts.render import SCORE_PREFIX, judge_messages
from biasjudge.records import ChatMessage, Pair

pytest.importorskip("transformers")
# The GGUF's dequantised load alone takes about a minute: `make test-all` runs this module; the
# hf: backend's logic (scoring rule, batching, the grammar) is in CI on tiny models
# (test_backend_contract.py, test_gemma4_tiny.py).
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

CHOICES = ("A", "B", "TIE")
Q4_TOLERANCE = 0.05
"""Max difference of a normalised A/B/TIE probability between llama.cpp (Q4_K_M kernels, int8
activations) and transformers (the same weights dequantised to fp32). Measured: below 0.01."""


@pytest.fixture(scope="module")
def hf(gguf_model: Path) -> Iterator[HFBackend]:
    backend = HFBackend(str(gguf_model), spec="hf:test", batch_size=4)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def llama(gguf_model: Path) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(str(gguf_model))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def prompts(jfs: Path) -> list[PromptRequest]:
    pairs = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=2).records
    system = load_prompt("judge_system")
    return [
        PromptRequest(tuple(judge_messages(p, system, swapped=s)), SCORE_PREFIX) for p in pairs for s in (False, True)
    ]


def normalise(scores: dict[str, float]) -> dict[str, float]:
    """A/B/TIE probabilities renormalised, as the judge computes them."""
    return verdict_from_logprobs(scores)[1]


def test_same_prompt_text_and_token_ids_as_llamacpp(
    hf: HFBackend, llama: LlamaCppBackend, prompts: list[PromptRequest]
) -> None:
    assert hf.chat_template is None and hf.model_type == "gemma3_text"
    for request in prompts:
        text = hf.render(request)
        assert text == llama.render(request)
        assert hf.tokenize(text) == llama.tokenize(text)


def test_score_agrees_with_llamacpp(hf: HFBackend, llama: LlamaCppBackend, prompts: list[PromptRequest]) -> None:
    for a, b in zip(hf.score(prompts, CHOICES), llama.score(prompts, CHOICES), strict=True):
        pa, pb = normalise(a), normalise(b)
        assert max(abs(pa[c] - pb[c]) for c in CHOICES) < Q4_TOLERANCE


def test_batched_score_equals_one_by_one(hf: HFBackend, prompts: list[PromptRequest]) -> None:
    """Left padding with positions from the mask: a padded row scores as it would alone."""
    batched = hf.score(prompts, CHOICES)
    for request, together in zip(prompts, batched, strict=True):
        (alone,) = hf.score([request], CHOICES)
        for c in CHOICES:
            assert together[c] == pytest.approx(alone[c], abs=1e-3)


def test_generate_reports_length_and_is_greedy(hf: HFBackend, prompts: list[PromptRequest]) -> None:
    requests = [PromptRequest(p.messages) for p in prompts[:2]]
    params = GenerationParams(max_tokens=8)
    first = hf.generate(requests, params)
    assert [g.finish_reason for g in first] == ["length", "length"]
    assert all(g.completion_tokens == 8 and g.text for g in first)
    assert [g.text for g in hf.generate(requests[:1], params)] == [first[0].text]


def test_tie_is_the_teacher_forced_sum_of_its_tokens(hf: HFBackend) -> None:
    """The scoring rule on the real 270M: score() (kept last-position logits, one shared path) equals a
    plain forward pass of prompt + T + IE with every position's logits (a short prompt: the full
    logits of the 262k vocabulary cost 1 MB a position)."""
    import torch

    request = PromptRequest((ChatMessage(role="user", content="Which response is biased, A or B?"),), SCORE_PREFIX)
    text = hf.render(request)
    prompt = hf.tokenize(text)
    tie = hf.tokenize(text + "TIE")[len(prompt) :]
    assert len(tie) == 2  # T + IE
    with torch.inference_mode():
        logits = hf.model(input_ids=torch.tensor([prompt + tie], device=hf.device)).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    expected = sum(float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(tie))
    (scores,) = hf.score([request], CHOICES)
    assert scores["TIE"] == pytest.approx(expected, abs=1e-3)
    assert scores["A"] == pytest.approx(float(logprobs[len(prompt) - 1, hf.tokenize(text + "A")[-1]]), abs=1e-3)


def test_the_contract_grammar_holds_transformers_generation(hf: HFBackend, prompts: list[PromptRequest]) -> None:
    """The untrained 270M never writes the contract freely; held to the GBNF grammar (llguidance
    logits processor), every complete output passes the strict parser, in a batch of two rows."""
    from biasjudge.judge.judge import Judge
    from biasjudge.verdict import CONTRACT_GRAMMAR, parse

    requests = [PromptRequest(p.messages) for p in prompts[:2]]
    free = hf.generate(requests, GenerationParams(max_tokens=40))
    held = hf.generate(requests, GenerationParams(max_tokens=40, grammar=CONTRACT_GRAMMAR))
    assert [parse(g.text, "strict")[0] for g in free] == ["PARSE_FAIL", "PARSE_FAIL"]
    assert hf.supports_grammar and Judge(hf, mode="generate").constrained is True
    for generation in held:
        assert generation.text.startswith("<reasoning>"), generation.text
        if generation.finish_reason == "stop":
            assert parse(generation.text, "strict")[0] in ("A", "B", "TIE"), generation.text
        else:  # cut at the cap: still inside the reasoning, where no tag can open
            assert "<" not in generation.text[len("<reasoning>") :]
