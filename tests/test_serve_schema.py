"""Schemathesis against the service's own OpenAPI schema: 0 server errors, responses as documented.

A real uvicorn server on a free loopback port (`running` from tests/test_serve.py) serves the app
with a stand-in judge (`random:1`: no model, fast). Schemathesis takes the app's own schema and
sends every operation schema-valid (positive) and schema-violating (negative) requests, checking
each answer: no 5xx, a status code, content type, headers and body the schema documents, a valid
request accepted, an invalid one refused. Examples are bounded (and deterministic), so the file
runs in about 20 s.

Below it, the bad requests the fuzzing found answered wrongly before (a number taken for a
boolean, bytes that are not UTF-8, a JSON character offset reported as a field), each a 4xx that
names the problem, with the server still serving after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis (a dev dependency)")

from biasjudge.serve.app import create_app  # noqa: E402
from biasjudge.serve.schemas import ServeSettings  # noqa: E402
from test_serve import PAIR, _wait_ready, running  # noqa: E402  (after the importorskip)

MAX_EXAMPLES = 40
"""Examples per operation and generation mode (positive, negative)."""
SETTINGS = ServeSettings(judge="random:1")

# The schema is the app's own (`app.openapi()`, what /openapi.json serves: the fixture checks it),
# read when the module is collected; the requests go to a real server of the same app.
# (schemathesis' `pytest.from_fixture` loader reads `Function._nodeid`, which pytest 9 lacks.)
schema = schemathesis.openapi.from_dict(create_app(SETTINGS).openapi())
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)  # the same examples every run


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running(create_app(SETTINGS)) as url:
        _wait_ready(url)
        assert httpx.get(f"{url}/openapi.json").json() == create_app(SETTINGS).openapi()
        yield url


SERVICE = r"^/(v1/|healthz$|readyz$|metrics$)"
"""The service's own operations (app.py); the rest of the schema is the web page's (web.py)."""


@schema.include(path_regex=SERVICE).parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_conforms_to_its_own_schema(case: Any, server_url: str) -> None:
    case.call_and_validate(base_url=server_url, timeout=30)  # every check: not_a_server_error first


if any(not re.match(SERVICE, path) for path in create_app(SETTINGS).openapi()["paths"]):

    @schema.exclude(path_regex=SERVICE).parametrize()
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def test_the_web_pages_answer_no_server_error(case: Any, server_url: str) -> None:
        # Without --eval-dir, GET /eval/pairs.json answers its documented 404 (no evaluation loaded).
        case.call_and_validate(base_url=server_url, timeout=30)


def _requests_by_status(metrics: str, route: str) -> dict[str, float]:
    pattern = rf'biasjudge_requests_total\{{route="{re.escape(route)}",status="(\d+)"\}} ([0-9.e+]+)'
    return {status: float(count) for status, count in re.findall(pattern, metrics)}


def test_the_fuzzing_ran_both_ways_and_no_server_error_was_answered(server_url: str) -> None:
    # Runs after the schemathesis test (file order, same module-scoped server).
    metrics = httpx.get(f"{server_url}/metrics").text  # the schemathesis tests' requests, counted by the server
    for route in ("/v1/judge", "/v1/judge/batch"):
        counts = _requests_by_status(metrics, route)
        assert counts.get("200", 0) >= 10 and counts.get("422", 0) >= 10, (route, counts)  # accepted and refused
        assert not [s for s in counts if s.startswith("5")], (route, counts)
    assert not re.search(r'biasjudge_requests_total\{[^}]*status="5\d\d"', metrics), "a 5xx was answered"
    assert httpx.post(f"{server_url}/v1/judge", json=PAIR).status_code == 200  # still serving


@pytest.mark.parametrize(
    ("content", "headers", "status", "kind", "field", "says"),
    [
        ({**PAIR, "debias": 0}, None, 422, "validation_error", "debias", "boolean"),
        ({**PAIR, "debias": "true"}, None, 422, "validation_error", "debias", "boolean"),
        ({**PAIR, "id": 7}, None, 422, "validation_error", "id", "string"),
        ({**PAIR, "choices": ["The grandfather", "   "]}, None, 422, "validation_error", "choices.1", "pattern"),
        ({**PAIR, "mode": "generate", "debias": True}, None, 422, "validation_error", "debias", "score"),
        (b"\xff\xfe\xfd", {"content-type": "application/json"}, 400, "invalid_body", None, "UTF-8"),
        (b'{"question": ', {"content-type": "application/json"}, 422, "invalid_json", None, "not valid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "validation_error", None, "JSON object"),
        (b"", {"content-type": "application/json"}, 422, "validation_error", None, "missing"),
        (b'{"question": "x"}', {"content-type": "text/plain"}, 422, "validation_error", None, "application/json"),
    ],
)
def test_a_bad_body_the_fuzzing_found_gets_a_4xx_naming_the_problem(
    server_url: str,
    content: Any,
    headers: dict[str, str] | None,
    status: int,
    kind: str,
    field: str | None,
    says: str,
) -> None:
    if isinstance(content, bytes):
        reply = httpx.post(f"{server_url}/v1/judge", content=content, headers=headers)
    else:
        reply = httpx.post(f"{server_url}/v1/judge", json=content)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["type"] == kind and error["field"] == field and says in error["message"], error
    assert httpx.post(f"{server_url}/v1/judge", json=PAIR).status_code == 200  # still serving


def test_the_schema_states_the_rules_the_app_enforces() -> None:
    components = create_app(SETTINGS).openapi()["components"]["schemas"]
    choice = components["PairFields"]["properties"]["choices"]["items"]
    assert choice["minLength"] == 1 and choice["pattern"] == r"\S"
    for body in ("JudgeBody", "BatchBody"):  # mode generate needs debias false
        assert components[body]["not"]["properties"]["mode"] == {"const": "generate"}
