"""llama.cpp backend on the embedded Gemma 3 270M: rendering, score with KV-cache reuse, generation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from biasjudge.backends.base import GenerationParams, PromptRequest
from biasjudge.backends.llamacpp import LlamaCppBackend, common_prefix_length, jinja_chat_template
from biasjudge.errors import BackendError, ThinkingModeError
from biasjudge.io import read_records
from biasjudge.judge.protocol import verdict_from_logprobs
from biasjudge.prompts import load_prompt
from biasjudge.prompts.render import SCORE_PREFIX, TURN_FORMATS, judge_messages, render_builtin
from biasjudge.records import ChatMessage, Pair

CHOICES = ("A", "B", "TIE")
REUSE_TOLERANCE = 0.05
"""Max difference of a normalised probability between prefix reuse and a full evaluation: the Q4
CPU kernels change logits slightly with the batch split (ANCHORS.md); measured differences are
below 0.01."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(gguf_model: Path) -> Iterator[LlamaCppBackend]:
    b = LlamaCppBackend(str(gguf_model), spec="llamacpp:test")
    yield b
    b.close()


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


def test_the_embedded_model_has_no_template_and_renders_gemma4_turns(backend: LlamaCppBackend) -> None:
    assert backend.chat_template is None
    messages = (ChatMessage(role="system", content="S"), ChatMessage(role="user", content="U"))
    text = backend.render(PromptRequest(messages, "<verdict>"))
    assert text == "<|turn>system\nS<turn|>\n<|turn>user\nU<turn|>\n<|turn>model\n<verdict>"
    tokens = backend.tokenize(text)
    assert tokens[0] == backend._bos_id and tokens.count(backend._bos_id) == 1
    with pytest.raises(ThinkingModeError):
        backend.render(PromptRequest((ChatMessage(role="system", content="<|think|>S"),)))


def test_tie_is_two_tokens_and_scored_as_their_sum(backend: LlamaCppBackend, prompts: list[PromptRequest]) -> None:
    request = prompts[0]
    text = backend.render(request)
    tokens = backend.tokenize(text)
    assert len(backend.choice_tokens(text, tokens, "A")) == 1
    assert len(backend.choice_tokens(text, tokens, "TIE")) == 2
    (scores,) = backend.score([request], ["TIE", "T"])
    (after_t,) = backend.score([PromptRequest(request.messages, request.assistant_prefix + "T")], ["IE"])
    assert scores["TIE"] == pytest.approx(scores["T"] + after_t["IE"], abs=0.05)


def test_score_gives_log_probabilities(backend: LlamaCppBackend, prompts: list[PromptRequest]) -> None:
    results = backend.score(prompts, CHOICES)
    assert len(results) == len(prompts)
    for scores in results:
        assert set(scores) == set(CHOICES)
        assert all(math.isfinite(v) and v < 0 for v in scores.values())
        assert sum(math.exp(v) for v in scores.values()) < 1.0


def test_prefix_reuse_matches_full_evaluation(
    backend: LlamaCppBackend, gguf_model: Path, prompts: list[PromptRequest]
) -> None:
    fresh = LlamaCppBackend(str(gguf_model), reuse_prefix=False)
    try:
        full = fresh.score(prompts, CHOICES)
    finally:
        fresh.close()
    before = dict(backend.stats)
    reused = backend.score(prompts, CHOICES)
    evaluated = backend.stats["evaluated_tokens"] - before["evaluated_tokens"]
    total = backend.stats["prompt_tokens"] - before["prompt_tokens"]
    assert evaluated < 0.7 * total  # the shared system prompt and the common prefixes came from the cache
    for a, b in zip(full, reused, strict=True):
        pa, pb = normalise(a), normalise(b)
        assert max(abs(pa[c] - pb[c]) for c in CHOICES) < REUSE_TOLERANCE


@pytest.mark.heavy  # 27 s; test_judge.test_real_model_score_mode checks order on the real model
def test_results_come_back_in_request_order(backend: LlamaCppBackend, prompts: list[PromptRequest]) -> None:
    forward = backend.score(prompts, CHOICES)
    backward = backend.score(prompts[::-1], CHOICES)[::-1]
    for a, b in zip(forward, backward, strict=True):
        assert max(abs(normalise(a)[c] - normalise(b)[c]) for c in CHOICES) < REUSE_TOLERANCE


def test_generate_greedy_is_deterministic_and_reports_length(
    backend: LlamaCppBackend, prompts: list[PromptRequest]
) -> None:
    request = PromptRequest(prompts[0].messages)
    params = GenerationParams(temperature=0.0, max_tokens=12)
    first, second = backend.generate([request, request], params)
    assert first.text == second.text
    assert first.finish_reason == "length" and first.completion_tokens == 12
    assert first.prompt_tokens == len(backend.tokenize(backend.render(request)))
    sampled = GenerationParams(temperature=0.9, max_tokens=12, seed=3)
    assert backend.generate([request], sampled)[0].text == backend.generate([request], sampled)[0].text


def test_generation_stops_at_the_end_of_turn_marker(backend: LlamaCppBackend) -> None:
    messages = (
        ChatMessage(role="user", content="Say hi."),
        ChatMessage(role="assistant", content="Hi."),
        ChatMessage(role="user", content="Say hi."),
        ChatMessage(role="assistant", content="Hi."),
        ChatMessage(role="user", content="Say hi."),
    )
    (generation,) = backend.generate([PromptRequest(messages, "Hi.")], GenerationParams(max_tokens=40))
    # Greedy, measured: the 270M writes "\n<|turn>user\nSay hi." and then `<turn|>` (12 tokens).
    # Without the marker as a stop string it runs on to the 40-token cap ('length') with the marker
    # in its text, so each of these fails on a backend that forgets the stop.
    assert generation.finish_reason == "stop"
    assert generation.completion_tokens is not None and generation.completion_tokens < 40
    assert TURN_FORMATS["gemma4"].end_of_turn not in generation.text


def test_count_tokens(backend: LlamaCppBackend) -> None:
    assert backend.count_tokens("TIE") == 2
    assert backend.count_tokens("") == 0


def test_missing_file_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not found"):
        LlamaCppBackend(str(tmp_path / "nope.gguf"))


def test_jinja_chat_template_renders_like_the_builtin_format() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}"
        "{{ '<|turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' + m['content'] + '<turn|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|turn>model\n' }}{% endif %}"
    )
    template = jinja_chat_template(source, bos_token="<bos>")
    messages = [ChatMessage(role="system", content="S"), ChatMessage(role="user", content="U")]
    rendered = template([{"role": m.role, "content": m.content} for m in messages])
    assert rendered == "<bos>" + render_builtin(messages, TURN_FORMATS["gemma4"])


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0


def test_threads_follow_the_cpus_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp gets a thread per CPU this process may run on (a taskset or cpuset), else per core."""
    import os

    from biasjudge.backends.llamacpp import usable_cpus

    assert usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS
    assert usable_cpus() == (os.cpu_count() or 1)
