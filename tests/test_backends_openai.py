"""OpenAI-compatible backend: against a REAL llama.cpp server running the embedded 270M, and a
scripted loopback server (tests/http_stub.py) for retries, Retry-After, malformed replies and
missing log-probs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from biasjudge.backends.base import ChoiceScores, GenerationParams, PromptRequest
from biasjudge.backends.llamacpp import LlamaCppBackend
from biasjudge.backends.openai import OpenAIBackend, retry_after_seconds
from biasjudge.errors import BackendError
from biasjudge.eval.protocol import prediction_from
from biasjudge.io import read_records
from biasjudge.judge.judge import Judge
from biasjudge.judge.protocol import verdict_from_logprobs
from biasjudge.prompts import load_prompt
from biasjudge.prompts.render import SCORE_PREFIX, judge_messages
from biasjudge.records import ChatMessage, Judgment, Pair
from biasjudge.verdict import CONTRACT_GRAMMAR
from http_stub import Reply, StubServer, completion, stub_server
from llama_server import free_port, llama_server_process
from test_judge import make_pair

CHOICES = ("A", "B", "TIE")
SERVER_TOLERANCE = 0.05
"""Max difference of a normalised A/B/TIE probability between the server and the in-process
llama.cpp backend: same weights and kernels, but the server evaluates every prompt from scratch
with all logits kept, and scores TIE through the text "...<verdict>T" re-tokenised (ANCHORS.md:
batch splits move Q4 logits by up to 0.5). Measured differences are below 0.01."""

SERVER_LOGPROB_TOLERANCE = 0.1
"""Max difference (nats) of a choice's log-prob between the server and the in-process backend (same
kernels, other batch splits; see the contract test's LLAMA_TOLERANCE). Measured: below 1e-4."""


def normalise(scores: dict[str, float]) -> dict[str, float]:
    """A/B/TIE probabilities renormalised, as the judge computes them."""
    return verdict_from_logprobs(scores)[1]


# --------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(gguf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Its own server: scoring reads the log-probs of every position (--logits_all).
    with llama_server_process(
        gguf_model, tmp_path_factory.mktemp("server"), "--n_ctx", "4096", "--logits_all", "true"
    ) as url:
        yield url


@pytest.fixture(scope="module")
def prompts(jfs: Path) -> list[PromptRequest]:
    pairs = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=2).records
    system = load_prompt("judge_system")
    return [PromptRequest(tuple(judge_messages(p, system)), SCORE_PREFIX) for p in pairs]


@pytest.fixture(scope="module")
def remote(server: str) -> Iterator[OpenAIBackend]:
    backend = OpenAIBackend(server, spec=f"openai:{server}", concurrency=2)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def local(gguf_model: Path) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(str(gguf_model))
    yield backend
    backend.close()


@pytest.mark.heavy  # a faster test covers the same path; `make test-all` runs it
@pytest.mark.slow
def test_score_matches_the_in_process_backend(
    remote: OpenAIBackend, local: LlamaCppBackend, prompts: list[PromptRequest]
) -> None:
    for a, b in zip(remote.score(prompts, CHOICES), local.score(prompts, CHOICES), strict=True):
        assert set(a) == set(CHOICES)
        pa, pb = normalise(a), normalise(b)
        assert max(abs(pa[c] - pb[c]) for c in CHOICES) < SERVER_TOLERANCE
        # The same rule, not only the same ranking: every log-prob, TIE = log p(T) + log p(IE | T).
        assert max(abs(a[c] - b[c]) for c in CHOICES) < SERVER_LOGPROB_TOLERANCE
        assert isinstance(a, ChoiceScores) and a.floored == ()
    assert remote.floored == 0
    assert remote._server_tokenizer() is not None  # TIE was split by the server's own tokenizer


@pytest.mark.slow
def test_generate_through_completions(
    remote: OpenAIBackend, local: LlamaCppBackend, prompts: list[PromptRequest]
) -> None:
    requests = [PromptRequest(p.messages) for p in prompts]
    params = GenerationParams(max_tokens=10)
    generations = remote.generate(requests, params)
    assert [g.finish_reason for g in generations] == ["length", "length"]
    assert all(g.completion_tokens == 10 and g.text for g in generations)
    # Our rendering reaches the server unchanged: it counts the same prompt tokens as llama.cpp here.
    assert [g.prompt_tokens for g in generations] == [len(local.tokenize(local.render(r))) for r in requests]


@pytest.mark.slow
def test_count_tokens_uses_the_server_tokenizer(remote: OpenAIBackend, local: LlamaCppBackend) -> None:
    text = "Response A leans on a stereotype about age; TIE."
    assert remote.count_tokens(text) == local.count_tokens(text)


def test_dead_port_is_a_clear_error_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(f"{url}#m", max_retries=2, backoff=0.01, timeout=2)
    try:
        with pytest.raises(BackendError) as err:
            backend.generate([PromptRequest((ChatMessage(role="user", content="hi"),))], GenerationParams(max_tokens=2))
    finally:
        backend.close()
    assert f"{url}/completions" in str(err.value) and "3 attempts" in str(err.value)


def test_bad_target_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="openai:http"):
        OpenAIBackend("localhost:8000")


# --------------------------------------------------------------------------- a scripted loopback server

MESSAGES = (ChatMessage(role="user", content="Which?"),)


def backend_for(stub: StubServer, **options: Any) -> OpenAIBackend:
    options = {"backoff": 0.01, **options}
    return OpenAIBackend(f"{stub.url}#m", **options)


def test_429_and_5xx_are_retried_with_backoff() -> None:
    script = [
        Reply(429, {"error": "slow down"}),
        Reply(503, {"error": "busy"}),
        Reply(200, completion("<verdict>A</verdict>")),
    ]
    with stub_server(script) as stub:
        backend = backend_for(stub, max_retries=3)
        try:
            (generation,) = backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=5, seed=4))
        finally:
            backend.close()
    assert generation.text == "<verdict>A</verdict>" and len(stub.seen("/v1/completions")) == 3
    sent = stub.requests[-1].body
    assert sent["model"] == "m" and sent["seed"] == 4 and "<turn|>" in sent["stop"]
    assert sent["prompt"].endswith("<|turn>model\n")


def test_a_dotted_grammar_field_nests_the_grammar_as_vllms_server_reads_it() -> None:
    """vLLM's server (0.12 on) takes a grammar as `structured_outputs.grammar`; vLLM cannot run
    here, so a scripted server records the body the backend sends."""
    with stub_server([Reply(200, completion("<reasoning>x</reasoning><verdict>B</verdict>"))]) as stub:
        backend = backend_for(stub, grammar_field="structured_outputs.grammar")
        try:
            backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=9, grammar=CONTRACT_GRAMMAR))
        finally:
            backend.close()
    sent = stub.requests[-1].body
    assert sent["structured_outputs"] == {"grammar": CONTRACT_GRAMMAR} and "grammar" not in sent


def test_retry_after_is_honoured() -> None:
    """A 429 with `Retry-After: 1`: the next attempt comes at least a second later (server clock),
    although the backoff alone would wait 10 ms."""
    script = [Reply(429, {"error": "slow down"}, {"Retry-After": "1"}), Reply(200, completion("ok"))]
    with stub_server(script) as stub:
        backend = backend_for(stub, max_retries=2)
        try:
            (generation,) = backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=2))
        finally:
            backend.close()
    first, second = stub.seen("/v1/completions")
    assert generation.text == "ok"
    assert second.time - first.time >= 0.95


def test_backoff_grows_exponentially_between_attempts() -> None:
    script = [Reply(503, {"error": "busy"}), Reply(503, {"error": "busy"}), Reply(200, completion("ok"))]
    with stub_server(script) as stub:
        backend = backend_for(stub, max_retries=2, backoff=0.2)
        try:
            backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=2))
        finally:
            backend.close()
    times = [r.time for r in stub.seen("/v1/completions")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39  # backoff * 2^k, plus jitter


def test_a_retry_after_beyond_max_wait_stops_at_once() -> None:
    with stub_server([Reply(503, {"error": "down for maintenance"}, {"Retry-After": "120"})]) as stub:
        backend = backend_for(stub, max_retries=5, max_wait=5)
        try:
            with pytest.raises(BackendError, match=r"retry after 120 s, more than max_wait=5 s"):
                backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=2))
        finally:
            backend.close()
    assert len(stub.seen("/v1/completions")) == 1


def test_retries_are_bounded() -> None:
    with stub_server([Reply(500, {"error": "boom"})] * 5) as stub:
        backend = backend_for(stub, max_retries=2)
        try:
            with pytest.raises(BackendError, match="failed after 3 attempts: HTTP 500"):
                backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=2))
        finally:
            backend.close()
    assert len(stub.seen("/v1/completions")) == 3


def test_retry_after_header_forms() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Tue, 01 Jan 2030 12:00:03 GMT", now=now) == 3.0
    assert retry_after_seconds("Tue, 01 Jan 2030 11:00:00 GMT", now=now) == 0.0  # in the past: no wait
    assert retry_after_seconds(None) is None and retry_after_seconds("later") is None


def test_a_client_error_is_not_retried() -> None:
    with stub_server([Reply(400, {"error": "bad request"})]) as stub:
        backend = backend_for(stub, max_retries=3)
        try:
            with pytest.raises(BackendError, match="HTTP 400"):
                backend.score([PromptRequest(MESSAGES, SCORE_PREFIX)], CHOICES)
        finally:
            backend.close()
    assert len(stub.seen("/v1/completions")) == 1


SCORE_TOP = {"A": -0.5, "B": -1.5, "T": -2.0}

BAD_REPLIES = [
    # (what is called, reply, words the error must contain)
    ("score", Reply(200, "<html>gateway</html>"), "not JSON"),
    ("score", Reply(200, {}), "no 'choices'"),
    ("score", Reply(200, {"choices": []}), "no 'choices[0]'"),
    ("score", Reply(200, {"choices": "A"}), "'choices' is str, expected a list"),
    ("score", Reply(200, {"choices": [{"text": "A"}]}), "no 'choices[0].logprobs'"),
    ("score", Reply(200, {"choices": [{"text": "A", "logprobs": None}]}), "no 'choices[0].logprobs'"),
    ("score", Reply(200, {"choices": [{"logprobs": {"tokens": ["A"]}}]}), "no 'choices[0].logprobs.top_logprobs'"),
    ("score", Reply(200, {"choices": [{"logprobs": {"top_logprobs": "A"}}]}), "top_logprobs' is str, expected list"),
    (
        "score",
        Reply(200, {"choices": [{"logprobs": {"top_logprobs": []}}]}),
        "empty 'choices[0].logprobs.top_logprobs'",
    ),
    ("score", Reply(200, {"choices": [{"logprobs": {"top_logprobs": [["A"]]}}]}), "is list, expected dict"),
    ("score", Reply(200, {"choices": [{"logprobs": {"top_logprobs": [{"A": "high"}]}}]}), "to numbers"),
    ("generate", Reply(200, ["not", "an", "object"]), "the body is list, expected an object"),
    ("generate", Reply(200, {"choices": [{"text": 7}]}), "'choices[0].text' is int, expected str or null"),
    ("generate", Reply(200, {"choices": [{"finish_reason": "stop"}]}), "no 'choices[0].text'"),
    ("chat", Reply(200, {"choices": [{"message": "hi"}]}), "'choices[0].message' is str, expected dict"),
    ("chat", Reply(200, {"choices": [{"message": {"role": "assistant"}}]}), "no 'choices[0].message.content'"),
    ("models", Reply(200, {"data": [{"name": "m"}]}), "no 'data[0].id'"),
    ("models", Reply(200, {"object": "list"}), "no 'data'"),
]


@pytest.mark.parametrize(("call", "reply", "words"), BAD_REPLIES, ids=[w for _, _, w in BAD_REPLIES])
def test_an_unexpected_reply_is_a_backend_error_naming_the_field(call: str, reply: Reply, words: str) -> None:
    with stub_server([reply]) as stub:
        target = stub.url if call == "models" else f"{stub.url}#m"
        backend = OpenAIBackend(target, max_retries=0, use_chat=call == "chat")
        try:
            with pytest.raises(BackendError) as err:
                if call == "score":
                    backend.score([PromptRequest(MESSAGES, SCORE_PREFIX)], CHOICES)
                else:
                    backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=2))
        finally:
            backend.close()
    assert words in str(err.value)
    assert stub.url in str(err.value)  # names the server too


def test_multi_token_choice_follows_its_tokens_and_a_missing_choice_is_floored() -> None:
    """No tokenize endpoint: the most probable listed token that continues the choice (T, not TI)."""
    script = [
        Reply(200, completion(top={"A": -0.5, "B": -1.5, "T": -2.0, "TI": -6.0})),
        Reply(200, completion(top={"IE": -0.1, "rue": -3.0})),  # after "T"
    ]
    with stub_server(script) as stub:
        backend = backend_for(stub, concurrency=1)
        try:
            (scores,) = backend.score([PromptRequest(MESSAGES, SCORE_PREFIX)], ["A", "TIE", "C"])
        finally:
            backend.close()
    assert scores["A"] == -0.5
    assert scores["TIE"] == pytest.approx(-2.0 + -0.1)  # the teacher-forced sum along one tokenisation
    assert scores["C"] == -6.0  # the smallest listed log-prob, an upper bound ...
    assert isinstance(scores, ChoiceScores) and scores.floored == ("C",) and backend.floored == 1  # ... reported
    prompts = [r.body["prompt"] for r in stub.seen("/v1/completions")]
    assert stub.seen("/v1/completions")[0].body["max_tokens"] == 1 and prompts[0].endswith(SCORE_PREFIX)
    assert prompts[1] == prompts[0] + "T"


def test_a_choice_missing_from_top_logprobs_is_reported_in_the_judgment_and_the_log() -> None:
    """TIE has no token among the server's top log-probs: its floor shows in Judgment and Prediction."""
    with stub_server([Reply(200, completion(top={"A": -0.5, "B": -1.5, "X": -4.0}))] * 2) as stub:
        judge = Judge(backend_for(stub), mode="score")
        try:
            judgment = judge.judge(make_pair())
        finally:
            judge.close()
    assert judgment.floored_choices == ["TIE"] and judgment.verdict == "A"
    assert judgment.probs is not None and judgment.probs["TIE"] == pytest.approx(
        math.exp(-4.0) / (math.exp(-0.5) + math.exp(-1.5) + math.exp(-4.0))
    )
    prediction = prediction_from(judgment, checkpoint_name="c", run="original", model="m")
    assert prediction.floored_choices == ["TIE"]
    assert Judgment.model_validate_json(judgment.model_dump_json()).floored_choices == ["TIE"]


def test_nothing_floored_is_an_empty_list() -> None:
    script = [Reply(200, completion(top={"A": -0.5, "B": -1.5, "T": -2.0})), Reply(200, completion(top={"IE": -0.1}))]
    with stub_server(script) as stub:
        judge = Judge(backend_for(stub, concurrency=1), mode="score")
        try:
            judgment = judge.judge(make_pair())
        finally:
            judge.close()
    assert judgment.floored_choices == []


def test_chat_mode_turns_thinking_off_and_refuses_a_forced_prefix() -> None:
    reply = {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    with stub_server([Reply(200, reply)]) as stub:
        backend = backend_for(stub, use_chat=True, max_retries=0)
        try:
            (generation,) = backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=2))
            with pytest.raises(BackendError, match="use_chat"):
                backend.generate([PromptRequest(MESSAGES, "<reasoning>")], GenerationParams())
        finally:
            backend.close()
    assert generation.text == "hi"
    (sent,) = stub.seen("/v1/chat/completions")
    assert sent.body["chat_template_kwargs"] == {"enable_thinking": False}


def test_empty_and_zero_token_choices_are_backend_errors() -> None:
    with stub_server() as stub:
        backend = backend_for(stub, max_retries=0)
        try:
            with pytest.raises(BackendError, match="choice list is empty"):
                backend.score([PromptRequest(MESSAGES, SCORE_PREFIX)], [])
            with pytest.raises(BackendError, match="has no tokens"):
                backend.score([PromptRequest(MESSAGES, SCORE_PREFIX)], ["A", ""])
        finally:
            backend.close()
    assert stub.requests == []  # refused before any request


@pytest.mark.heavy  # 30 s; held on hf: in make test, on llama.cpp (here and in-process) in make test-all
def test_the_contract_grammar_reaches_llama_cpps_server(server: str, jfs: Path) -> None:
    """Constrained generate mode through the real llama.cpp server (`grammar_field=grammar`): the
    untrained 270M, which never writes the contract freely, writes it every time."""
    from biasjudge.judge.judge import Judge
    from biasjudge.judge.protocol import JudgeRequest
    from biasjudge.verdict import parse

    pairs = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=2).records
    plain = OpenAIBackend(server, spec=f"openai:{server}")
    held = OpenAIBackend(server, spec=f"openai:{server}", grammar_field="grammar")
    try:
        assert not plain.supports_grammar and held.supports_grammar
        assert Judge(plain, mode="generate").constrained is False  # OpenAI's own API has no grammar field
        judge = Judge(held, mode="generate", max_tokens=48)
        assert judge.constrained is True
        judged = judge.judge_batch([JudgeRequest(p) for p in pairs])
        for judgment in judged:
            assert judgment.verdict in ("A", "B", "TIE"), judgment.raw_output
            if not judgment.reasoning_truncated:
                assert parse(judgment.raw_output, "strict")[0] == judgment.verdict
        free = Judge(plain, mode="generate", max_tokens=48).judge_batch([JudgeRequest(p) for p in pairs])
        assert {j.verdict for j in free} == {"PARSE_FAIL"}
    finally:
        plain.close()
        held.close()
