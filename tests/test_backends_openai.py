"""OpenAI-compatible backend: against a REAL llama.cpp server running the embedded 270M, and a stub
server for retries and missing log-probs."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from biasjudge.backends.base import GenerationParams, PromptRequest
from biasjudge.backends.llamacpp import LlamaCppBackend
from biasjudge.backends.openai import OpenAIBackend
from biasjudge.errors import BackendError
from biasjudge.io import read_records
from biasjudge.judge.judge import verdict_from_logprobs
from biasjudge.prompting import SCORE_PREFIX, judge_messages
from biasjudge.prompts import load_prompt
from biasjudge.records import ChatMessage, Pair

CHOICES = ("A", "B", "TIE")
SERVER_TOLERANCE = 0.05
"""Max difference of a normalised A/B/TIE probability between the server and the in-process
llama.cpp backend: same weights and kernels, but the server evaluates every prompt from scratch
with all logits kept, and scores TIE through the text "...<verdict>T" re-tokenised (ANCHORS.md:
batch splits move Q4 logits by up to 0.5). Measured differences are below 0.01."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def normalise(scores: dict[str, float]) -> dict[str, float]:
    """A/B/TIE probabilities renormalised, as the judge computes them."""
    return verdict_from_logprobs(scores)[1]


# --------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(gguf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf_model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--logits_all",
        "true",
    ]
    log_path = tmp_path_factory.mktemp("server") / "llama_server.log"
    log = log_path.open("wb")  # a file, not a pipe: llama.cpp logs enough to fill a pipe and block
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


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


@pytest.mark.slow
def test_score_matches_the_in_process_backend(
    remote: OpenAIBackend, local: LlamaCppBackend, prompts: list[PromptRequest]
) -> None:
    for a, b in zip(remote.score(prompts, CHOICES), local.score(prompts, CHOICES), strict=True):
        assert set(a) == set(CHOICES)
        pa, pb = normalise(a), normalise(b)
        assert max(abs(pa[c] - pb[c]) for c in CHOICES) < SERVER_TOLERANCE
    assert remote.floored == 0


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


# --------------------------------------------------------------------------- a stub server


class Stub:
    """A tiny HTTP server answering from a script of (status, body) replies."""

    def __init__(self, replies: list[tuple[int, dict[str, Any]]]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                stub.requests.append(json.loads(self.rfile.read(length) or b"{}"))
                status, body = stub.replies.pop(0) if stub.replies else (500, {"error": "script ended"})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def completion(text: str = "", top: dict[str, float] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"text": text, "finish_reason": "stop", "index": 0}
    if top is not None:
        choice["logprobs"] = {"top_logprobs": [top]}
    return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


MESSAGES = (ChatMessage(role="user", content="Which?"),)


def test_429_and_5xx_are_retried_with_backoff() -> None:
    stub = Stub([(429, {"error": "slow down"}), (503, {"error": "busy"}), (200, completion("<verdict>A</verdict>"))])
    backend = OpenAIBackend(f"{stub.url}#m", max_retries=3, backoff=0.01)
    try:
        (generation,) = backend.generate([PromptRequest(MESSAGES)], GenerationParams(max_tokens=5, seed=4))
    finally:
        backend.close()
        stub.close()
    assert generation.text == "<verdict>A</verdict>" and len(stub.requests) == 3
    sent = stub.requests[-1]
    assert sent["model"] == "m" and sent["seed"] == 4 and "<turn|>" in sent["stop"]
    assert sent["prompt"].endswith("<|turn>model\n")


def test_a_client_error_is_not_retried() -> None:
    stub = Stub([(400, {"error": "bad request"})])
    backend = OpenAIBackend(f"{stub.url}#m", max_retries=3, backoff=0.01)
    try:
        with pytest.raises(BackendError, match="HTTP 400"):
            backend.score([PromptRequest(MESSAGES, SCORE_PREFIX)], CHOICES)
    finally:
        backend.close()
        stub.close()
    assert len(stub.requests) == 1


def test_multi_token_choice_follows_its_tokens_and_a_missing_choice_is_floored() -> None:
    stub = Stub(
        [
            (200, completion(top={"A": -0.5, "B": -1.5, "T": -2.0, "TI": -6.0})),
            (200, completion(top={"IE": -0.1, "rue": -3.0})),  # after "T"
            (200, completion(top={"E": -0.2})),  # after "TI"
        ]
    )
    backend = OpenAIBackend(f"{stub.url}#m", backoff=0.01, concurrency=1)
    try:
        (scores,) = backend.score([PromptRequest(MESSAGES, SCORE_PREFIX)], ["A", "TIE", "C"])
    finally:
        backend.close()
        stub.close()
    assert scores["A"] == -0.5
    assert scores["TIE"] == pytest.approx(math.log(math.exp(-2.1) + math.exp(-6.2)))
    assert scores["C"] == -6.0 and backend.floored == 1  # the smallest listed log-prob, flagged
    assert stub.requests[0]["max_tokens"] == 1 and stub.requests[0]["prompt"].endswith(SCORE_PREFIX)
    assert {r["prompt"][-1:] for r in stub.requests[1:]} == {"T", "I"}


def test_chat_mode_refuses_a_forced_prefix() -> None:
    backend = OpenAIBackend("http://127.0.0.1:9/v1#m", use_chat=True, max_retries=0)
    try:
        with pytest.raises(BackendError, match="use_chat"):
            backend.generate([PromptRequest(MESSAGES, "<reasoning>")], GenerationParams())
    finally:
        backend.close()
