"""The service: a real uvicorn server on a free loopback port, real HTTP from httpx and the client.

Most tests judge with a stand-in judge (fast, and it records the batches it was given, so the
micro-batching can be seen); the embedded model is served for real once, and `biasjudge serve`
is run as a subprocess once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.records import WRAPPER_FIELDS, Judgment
from biasjudge.serve.app import create_app
from biasjudge.serve.batcher import JudgeKey
from biasjudge.serve.client import AsyncClient, Client, ServiceError
from biasjudge.serve.schemas import EXAMPLE_PAIR, PairFields, ServeSettings

PAIR = dict(EXAMPLE_PAIR)


class RecordingJudge:
    """A PairJudge that records the batch sizes it was given, and can be held: with a `gate`, each
    call waits for the test to set it (so a test decides when the model is busy, with no timing).

    Its verdict is a fixed function of the pair: A when response A mentions "older", else B.
    """

    mode = "score"
    identity = ""

    def __init__(
        self, key: JudgeKey, delay: float = 0.0, fail: bool = False, gate: threading.Event | None = None
    ) -> None:
        self.spec = f"recording:{key.mode}:{key.debias}"
        self.delay = delay
        self.fail = fail
        self.gate = gate
        self.started: list[int] = []
        """Batch sizes as each call began (a held call is counted here before it returns)."""
        self.calls: list[int] = []

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        if self.fail:
            raise RuntimeError("secret internal detail /home/judge/model.gguf")
        self.started.append(len(requests))
        if self.gate is not None and not self.gate.wait(60):
            raise RuntimeError("the test never released the judge")
        time.sleep(self.delay)
        self.calls.append(len(requests))
        out = []
        for request in requests:
            verdict = "A" if "older" in request.pair.response_a.text else "B"
            probs = {"A": 0.7, "B": 0.2, "TIE": 0.1} if verdict == "A" else {"A": 0.2, "B": 0.7, "TIE": 0.1}
            out.append(
                Judgment(pair_id=request.pair.pair_id, verdict=verdict, probs=probs, mode="score", judge=self.spec)
            )
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def recording(
    delay: float = 0.0, fail: bool = False, gate: threading.Event | None = None
) -> tuple[Callable[[JudgeKey], RecordingJudge], list[RecordingJudge]]:
    made: list[RecordingJudge] = []

    def factory(key: JudgeKey) -> RecordingJudge:
        made.append(RecordingJudge(key, delay, fail, gate))
        return made[-1]

    return factory, made


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll `condition` until it holds (a generous deadline: a loaded machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.02)


def _metric(url: str, sample: str) -> float:
    """The value of one sample of the server's /metrics (`name` or `name{labels}`), 0 when absent."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if httpx.get(f"{url}/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("never ready")


@pytest.fixture
def served() -> Iterator[tuple[str, list[RecordingJudge]]]:
    factory, made = recording()
    with running(create_app(ServeSettings(judge=None), judge_factory=factory)) as url:
        _wait_ready(url)
        yield url, made


# --------------------------------------------------------------------------- judging


def test_judge_returns_the_judges_verdict_probabilities_and_timings(served: tuple[str, list[RecordingJudge]]) -> None:
    url, _ = served
    reply = httpx.post(f"{url}/v1/judge", json={**PAIR, "id": "p1"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["judgment"]["pair_id"] == "p1" and body["judgment"]["verdict"] == "A"
    assert body["judgment"]["probs"] == {"A": 0.7, "B": 0.2, "TIE": 0.1}
    assert body["judgment"]["wrappers"] == {"single_order_verdict": None, "uncalibrated_probs": None, "route": None}
    assert body["timings"]["total_ms"] >= body["timings"]["judge_ms"] >= 0 and body["batch_size"] == 1
    assert reply.headers["x-request-id"]


def test_a_batch_is_answered_in_order(served: tuple[str, list[RecordingJudge]]) -> None:
    url, _ = served
    pairs = [
        {**PAIR, "id": f"p{i}", "response_a": "The older one." if i % 3 == 0 else "The younger one."} for i in range(10)
    ]
    reply = httpx.post(f"{url}/v1/judge/batch", json={"pairs": pairs})
    assert reply.status_code == 200, reply.text
    got = [(r["judgment"]["pair_id"], r["judgment"]["verdict"]) for r in reply.json()["results"]]
    assert got == [(f"p{i}", "A" if i % 3 == 0 else "B") for i in range(10)]


def test_the_debias_and_mode_options_choose_the_judge(served: tuple[str, list[RecordingJudge]]) -> None:
    url, made = served
    assert httpx.post(f"{url}/v1/judge", json={**PAIR, "debias": False}).status_code == 200
    assert {j.spec for j in made} == {"recording:score:True", "recording:score:False"}
    # Unset, debias is on in score mode and off in generate mode; asked for in generate mode, refused.
    assert httpx.post(f"{url}/v1/judge", json={**PAIR, "mode": "generate"}).status_code == 200
    assert "recording:generate:False" in {j.spec for j in made}
    refused = httpx.post(f"{url}/v1/judge", json={**PAIR, "mode": "generate", "debias": True})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "debias"


def test_concurrent_requests_are_micro_batched() -> None:
    gate = threading.Event()
    factory, made = recording(gate=gate)
    settings = ServeSettings(judge=None, max_batch=16, batch_wait_ms=50)
    with running(create_app(settings, judge_factory=factory)) as url:
        _wait_ready(url)
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/judge", json={**PAIR, "id": f"c{i}"}) for i in range(12)]
            try:  # the model is held on its first batch until all 12 pairs are in (that batch or the queue)
                _wait_until(
                    lambda: (
                        bool(made and made[0].started)
                        and sum(made[0].started) + _metric(url, "biasjudge_queue_depth") == 12
                    ),
                    "all 12 pairs to be accepted",
                )
            finally:
                gate.set()
            replies = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in replies)
    assert sum(made[0].calls) == 12 and len(made[0].calls) < 12 and max(made[0].calls) > 1, made[0].calls
    assert max(r.json()["batch_size"] for r in replies) == max(made[0].calls)


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing() -> None:
    gate = threading.Event()
    factory, made = recording(gate=gate)
    settings = ServeSettings(judge=None, max_queue=2, max_batch=1, batch_wait_ms=0)
    with running(create_app(settings, judge_factory=factory)) as url:
        _wait_ready(url)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/judge", json={**PAIR, "id": f"q{i}"}) for i in range(8)]
            try:  # the model holds one pair and the queue two: of 8 pairs, at least 5 are refused at once
                _wait_until(lambda: sum(f.done() for f in futures) >= 5, "the refusals")
                refused_while_held = [f.result().status_code for f in futures if f.done()]
            finally:
                gate.set()
            replies = [f.result() for f in futures]
        assert set(refused_while_held) == {503}
        statuses = sorted(r.status_code for r in replies)
        full = [r for r in replies if r.status_code == 503]
        assert full and set(statuses) <= {200, 503}, statuses
        assert all(r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "queue_full" for r in full)
        judged = sum(made[0].calls)
        assert judged == statuses.count(200)  # every accepted pair judged once, refused ones never
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_slow_judgment_times_out_with_504_and_is_not_judged_for_nobody() -> None:
    gate = threading.Event()
    factory, made = recording(gate=gate)
    settings = ServeSettings(judge=None, request_timeout_s=0.2, max_batch=1, batch_wait_ms=0)
    with running(create_app(settings, judge_factory=factory)) as url:
        _wait_ready(url)
        try:  # the model is held on the first pair: every request gives up after its 0.2 s
            with ThreadPoolExecutor(3) as pool:
                replies = list(
                    pool.map(lambda i: httpx.post(f"{url}/v1/judge", json={**PAIR, "id": f"t{i}"}), range(3))
                )
        finally:
            gate.set()
        assert [r.status_code for r in replies] == [504, 504, 504]
        assert all(r.json()["error"]["type"] == "timeout" for r in replies)
        _wait_until(lambda: _metric(url, "biasjudge_queue_depth") == 0, "the queue to drain")
        # The model call for a batch is counted as the worker takes it, so once the queue is empty no
        # call can still be on its way: only the pair the model had started was judged.
        assert _metric(url, "biasjudge_batch_size_count") == 1
        _wait_until(lambda: sum(made[0].calls) == 1, "the held call to finish")


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "kind", "field"),
    [
        ("post", "/v1/judge", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422,
         "invalid_json", None),
        ("post", "/v1/judge", {"json": {**PAIR, "choices": "A, B"}}, 422, "validation_error", "choices"),
        ("post", "/v1/judge", {"json": {k: v for k, v in PAIR.items() if k != "response_b"}}, 422,
         "validation_error", "response_b"),
        ("post", "/v1/judge", {"json": {**PAIR, "response_a": "x" * 20_001}}, 422, "validation_error", "response_a"),
        ("post", "/v1/judge", {"json": {**PAIR, "mode": "vibes"}}, 422, "validation_error", "mode"),
        ("post", "/v1/judge", {"json": {**PAIR, "surprise": 1}}, 422, "validation_error", "surprise"),
        ("post", "/v1/judge/batch", {"json": {"pairs": [PAIR] * 65}}, 422, "validation_error", "pairs"),
        ("post", "/v1/judge", {"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}}, 413,
         "too_large", None),
        ("get", "/v1/judge", {}, 405, "method_not_allowed", None),
        ("get", "/no/such/route", {}, 404, "not_found", None),
    ],
)  # fmt: skip
def test_a_bad_request_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving(
    served: tuple[str, list[RecordingJudge]],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    kind: str,
    field: str | None,
) -> None:
    url, _ = served
    reply = httpx.request(method.upper(), f"{url}{path}", **kwargs)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["type"] == kind and error["message"]
    if field is not None:
        assert error["field"] is not None and error["field"].startswith(field), error
    assert httpx.post(f"{url}/v1/judge", json=PAIR).status_code == 200  # still serving


def test_a_failing_judge_gives_500_without_a_stack_trace() -> None:
    factory, _ = recording(fail=True)
    with running(create_app(ServeSettings(judge=None), judge_factory=factory)) as url:
        _wait_ready(url)
        reply = httpx.post(f"{url}/v1/judge", json=PAIR)
        assert reply.status_code == 500
        text = reply.text
        assert "Traceback" not in text and "secret" not in text and "RuntimeError" not in text
        assert reply.json()["request_id"] == reply.headers["x-request-id"]
        assert httpx.post(f"{url}/v1/judge", json=PAIR).status_code == 500  # the worker survived


# --------------------------------------------------------------------------- security, probes, metrics


def test_the_api_key_guards_every_route_but_the_health_probes(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    factory, _ = recording()
    with running(create_app(ServeSettings(judge=None, api_key_file=key_file), judge_factory=factory)) as url:
        _wait_ready(url)  # /readyz is open
        assert httpx.get(f"{url}/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
            reply = httpx.post(f"{url}/v1/judge", json=PAIR, headers=headers)
            assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        ok = httpx.post(f"{url}/v1/judge", json=PAIR, headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200
        with Client(url, api_key="s3cret-key") as client:
            assert client.judge(**{k: v for k, v in PAIR.items()}).judgment.verdict == "A"  # type: ignore[arg-type]


def test_readyz_waits_for_the_judge_to_load() -> None:
    loading = threading.Event()

    def slow_factory(key: JudgeKey) -> RecordingJudge:
        loading.wait(60)  # the judge loads when the test says so
        return RecordingJudge(key)

    with running(create_app(ServeSettings(judge=None), judge_factory=slow_factory)) as url:
        try:
            first = httpx.get(f"{url}/readyz")
            assert first.status_code == 503 and first.headers["retry-after"] == "1"
            assert httpx.get(f"{url}/healthz").status_code == 200
        finally:
            loading.set()
        _wait_ready(url)


def test_metrics_count_requests_verdicts_and_batches(served: tuple[str, list[RecordingJudge]]) -> None:
    url, _ = served
    httpx.post(f"{url}/v1/judge", json=PAIR)
    httpx.post(f"{url}/v1/judge", json={**PAIR, "response_a": "The younger one."})
    httpx.post(f"{url}/v1/judge", json={"bad": 1})
    text = httpx.get(f"{url}/metrics").text
    assert 'biasjudge_requests_total{route="/v1/judge",status="200"} 2.0' in text
    assert 'biasjudge_requests_total{route="/v1/judge",status="422"} 1.0' in text
    assert 'biasjudge_verdicts_total{verdict="A"} 1.0' in text and 'biasjudge_verdicts_total{verdict="B"} 1.0' in text
    assert "biasjudge_batch_size_count 2.0" in text and "biasjudge_queue_depth 0.0" in text
    assert "biasjudge_request_seconds_bucket" in text and "biasjudge_parse_failures_total 0.0" in text


def test_cors_is_off_unless_asked_for() -> None:
    factory, _ = recording()
    origin = {"Origin": "http://example.test"}
    with running(create_app(ServeSettings(judge=None), judge_factory=factory)) as url:
        assert "access-control-allow-origin" not in httpx.get(f"{url}/healthz", headers=origin).headers
    with running(
        create_app(ServeSettings(judge=None, cors_origins=["http://example.test"]), judge_factory=factory)
    ) as url:
        assert (
            httpx.get(f"{url}/healthz", headers=origin).headers["access-control-allow-origin"] == "http://example.test"
        )


def test_the_openapi_example_is_a_valid_request(served: tuple[str, list[RecordingJudge]]) -> None:
    url, _ = served
    schema = httpx.get(f"{url}/openapi.json").json()
    example = schema["components"]["schemas"]["JudgeBody"]["example"]
    assert set(example) >= {"question", "choices", "response_a", "response_b"}
    assert httpx.post(f"{url}/v1/judge", json=example).status_code == 200
    batch_example = schema["components"]["schemas"]["BatchBody"]["example"]
    assert httpx.post(f"{url}/v1/judge/batch", json=batch_example).status_code == 200
    wrappers = schema["components"]["schemas"]["Judgment"]["properties"]["wrappers"]
    assert wrappers["$ref"].endswith("/WrapperMetadata")  # the wrappers' fields are typed in the schema
    assert list(schema["components"]["schemas"]["WrapperMetadata"]["properties"]) == list(WRAPPER_FIELDS)


# --------------------------------------------------------------------------- the client


def test_the_clients_retry_a_full_queue_honouring_retry_after() -> None:
    factory, made = recording(delay=0.3)
    settings = ServeSettings(judge=None, max_queue=2, max_batch=1, batch_wait_ms=0)
    with running(create_app(settings, judge_factory=factory)) as url:
        _wait_ready(url)

        def one(i: int) -> str:
            with Client(url, max_retries=20) as client:
                return client.judge(**PAIR, id=f"r{i}").judgment.pair_id  # type: ignore[arg-type]

        with ThreadPoolExecutor(6) as pool:
            assert sorted(pool.map(one, range(6))) == [f"r{i}" for i in range(6)]  # all answered despite 503s
        assert sum(made[0].calls) == 6
        text = httpx.get(f"{url}/metrics").text
        assert 'biasjudge_requests_total{route="/v1/judge",status="503"}' in text  # the retries really happened

        async def both() -> list[str]:
            async with AsyncClient(url, max_retries=20) as client:
                results = await asyncio.gather(*(client.judge(**PAIR, id=f"a{i}") for i in range(3)))  # type: ignore[arg-type]
                batch = await client.judge_batch([PairFields(**PAIR, id="b0"), {**PAIR, "id": "b1"}])  # type: ignore[arg-type]
            return [r.judgment.pair_id for r in [*results, *batch]]

        assert asyncio.run(both()) == ["a0", "a1", "a2", "b0", "b1"]
        too_many = httpx.post(f"{url}/v1/judge/batch", json={"pairs": [PAIR] * 3})  # can never fit a queue of 2
        assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "pairs"
        with Client(url, max_retries=0) as client, pytest.raises(ServiceError, match="choices") as info:
            client.judge(PAIR["question"], ["only one"], "a", "b")  # type: ignore[arg-type]
        assert info.value.status == 422 and info.value.field == "choices"


# --------------------------------------------------------------------------- real model, real command


def test_the_embedded_judge_served_answers_as_it_does_in_process(jfs: Path, gguf_model: Path) -> None:
    from biasjudge.io import read_records
    from biasjudge.records import Pair

    pair = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=1).records[0]
    fields = {
        "id": pair.pair_id,
        "question": pair.question_text,
        "choices": [c.text for c in pair.answer_choices],
        "response_a": pair.response_a.text,
        "response_b": pair.response_b.text,
    }
    local = make_judge()
    try:
        expected = local.judge_batch([JudgeRequest(PairFields(**fields).to_pair())])[0]  # type: ignore[arg-type]
    finally:
        local.close()
    with running(create_app(ServeSettings())) as url:
        _wait_ready(url)
        with Client(url) as client:
            got = client.judge(**fields).judgment  # type: ignore[arg-type]
    assert got.verdict == expected.verdict
    assert got.wrappers.single_order_verdict == expected.wrappers.single_order_verdict
    assert got.probs == pytest.approx(expected.probs, abs=1e-6)


def test_biasjudge_serve_runs_as_a_command_and_judge_server_asks_it(tmp_path: Path) -> None:
    port = _free_socket().getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    code = "from biasjudge.cli.main import main; main()"
    server = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--judge", "random:3", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline and server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.1)
        result = subprocess.run(
            [sys.executable, "-c", code, "judge", "--server", url, "--question", PAIR["question"],
             *[a for c in PAIR["choices"] for a in ("--choice", c)],  # type: ignore[union-attr]
             "--response-a", PAIR["response_a"], "--response-b", PAIR["response_b"], "--json"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        judgment = json.loads(result.stdout)
        # The random baseline's draw is a function of (seed, pair id): the CLI sends its pair as id "cli".
        pair = PairFields(**PAIR, id="cli").to_pair()  # type: ignore[arg-type]
        expected = make_judge("random:3").judge_batch([JudgeRequest(pair)])[0]
        assert judgment["verdict"] == expected.verdict and judgment["judge"].startswith("random:3")
        assert judgment["pair_id"] == "cli"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode in (0, -15)


def test_every_request_is_logged_as_one_json_line_with_its_request_id(
    served: tuple[str, list[RecordingJudge]], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    url, _ = served
    with caplog.at_level(logging.INFO, logger="biasjudge.serve"):
        reply = httpx.post(f"{url}/v1/judge", json=PAIR, headers={"X-Request-ID": "trace-me-42"})
        bad = httpx.post(f"{url}/v1/judge", json={})
    assert reply.headers["x-request-id"] == "trace-me-42"  # a caller's id is kept
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "biasjudge.serve"]
    mine = next(line for line in lines if line["request_id"] == "trace-me-42")
    assert mine["path"] == "/v1/judge" and mine["status"] == 200 and mine["ms"] >= 0
    assert any(line["request_id"] == bad.headers["x-request-id"] and line["status"] == 422 for line in lines)


def test_a_browser_logs_in_once_and_holds_the_key_in_an_httponly_cookie(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key")
    factory, _ = recording()
    with running(create_app(ServeSettings(judge=None, api_key_file=key_file), judge_factory=factory)) as url:
        _wait_ready(url)
        page = httpx.get(f"{url}/metrics?x=1", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/metrics%3Fx%3D1"
        assert httpx.get(f"{url}/metrics").status_code == 401  # an API client still gets 401, not a redirect
        form = httpx.get(f"{url}/login?next=/metrics")
        assert form.status_code == 200 and 'name="key"' in form.text and 'value="/metrics"' in form.text
        wrong = httpx.post(f"{url}/login", data={"key": "nope", "next": "/metrics"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        evil = httpx.post(f"{url}/login", data={"key": "s3cret-key", "next": "//evil.example/x"})
        assert evil.status_code == 303 and evil.headers["location"] == "/"  # no open redirect
        ok = httpx.post(f"{url}/login", data={"key": "s3cret-key", "next": "/metrics"})
        cookie = ok.headers["set-cookie"]
        assert ok.status_code == 303 and ok.headers["location"] == "/metrics"
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        with httpx.Client(base_url=url, cookies=ok.cookies) as browser:
            assert browser.get("/metrics").status_code == 200
            assert browser.post("/v1/judge", json=PAIR).status_code == 200


def test_a_request_whose_client_left_is_not_judged() -> None:
    gate = threading.Event()
    factory, made = recording(gate=gate)
    settings = ServeSettings(judge=None, max_batch=1)
    with running(create_app(settings, judge_factory=factory)) as url:
        _wait_ready(url)
        first: dict[str, Any] = {}
        busy = threading.Thread(target=lambda: first.update(reply=httpx.post(f"{url}/v1/judge", json=PAIR)))
        try:
            busy.start()  # the model is busy with this one until the gate opens
            _wait_until(lambda: bool(made and made[0].started), "the model to start on the first pair")
            with pytest.raises(httpx.ReadTimeout):  # this one waits in the queue; its client gives up
                httpx.post(f"{url}/v1/judge", json={**PAIR, "id": "left"}, timeout=0.3)
            gone = 'biasjudge_requests_total{route="/v1/judge",status="499"}'
            _wait_until(lambda: _metric(url, gone) == 1, "the server to see the client leave")
        finally:
            gate.set()
        busy.join()
        assert first["reply"].status_code == 200
        _wait_until(lambda: _metric(url, "biasjudge_queue_depth") == 0, "the queue to drain")
        assert _metric(url, "biasjudge_batch_size_count") == 1  # the abandoned pair was skipped, not judged
        assert made[0].calls == [1]
        assert httpx.post(f"{url}/v1/judge", json=PAIR).status_code == 200  # still serving


@pytest.mark.slow
@pytest.mark.heavy  # the pairwise judge's shared model (the served default is checked above); `make test-all`
def test_the_served_score_judges_share_one_model(jfs: Path, gguf_model: Path) -> None:
    from biasjudge.io import read_records
    from biasjudge.records import Pair
    from biasjudge.serve.app import default_judge_factory

    def backend_of(judge: Any) -> Any:
        while not hasattr(judge, "backend"):
            judge = judge.inner
        return judge.backend

    make = default_judge_factory("llamacpp:embedded")
    both, single = make(JudgeKey("score", True)), make(JudgeKey("score", False))
    alone = make_judge("llamacpp:embedded", mode="score", order="single")
    try:
        assert backend_of(both) is backend_of(single)  # one model in memory for both kinds of request
        pair = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[0]
        [shared], [own] = single.judge_batch([JudgeRequest(pair)]), alone.judge_batch([JudgeRequest(pair)])
        assert shared.judge == own.judge == "llamacpp:embedded?order=single"
        assert shared.probs == pytest.approx(own.probs) and shared.verdict == own.verdict
        assert shared.wrappers.single_order_verdict is None  # a single-order judgment, not a combined one
        [combined] = both.judge_batch([JudgeRequest(pair)])
        assert combined.wrappers.single_order_verdict == own.verdict
    finally:
        for judge in (both, single, alone):
            judge.close()
