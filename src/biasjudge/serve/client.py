"""A Python client of the service, sync (:class:`Client`) and async (:class:`AsyncClient`).

Both retry a 503 (queue full, still loading) honouring its Retry-After, with a bounded number of
attempts, and raise :class:`ServiceError` with the server's error type, message and field for
every other error. Exposed as `biasjudge.Client` / `biasjudge.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from biasjudge.errors import BackendError
from biasjudge.serve.schemas import BatchResult, JudgeResult, PairFields


class ServiceError(BackendError):
    """The service answered with an error: `status`, `kind` (its error type), `field`."""

    def __init__(self, status: int, kind: str, message: str, field: str | None = None) -> None:
        self.status, self.kind, self.field = status, kind, field
        where = f" (field {field})" if field else ""
        super().__init__(f"server said {status} {kind}: {message}{where}")


def _payload(pairs: Sequence[PairFields | dict[str, Any]]) -> list[dict[str, Any]]:
    return [p.model_dump(exclude_none=True) if isinstance(p, PairFields) else dict(p) for p in pairs]


def _judge_body(
    question: str,
    choices: Sequence[str],
    response_a: str,
    response_b: str,
    *,
    mode: str,
    debias: bool | None,
    id: str | None,
) -> dict[str, Any]:
    # Not validated here: the server is the one authority on what it accepts (its 422 names the field).
    body = {"question": question, "choices": list(choices), "response_a": response_a, "response_b": response_b}
    options = {"mode": mode, **({"debias": debias} if debias is not None else {})}
    return {**body, **options, **({"id": id} if id is not None else {})}


def _error(response: Any) -> ServiceError:
    try:
        error = response.json()["error"]
        return ServiceError(
            response.status_code, error.get("type", "error"), error.get("message", ""), error.get("field")
        )
    except (ValueError, KeyError, TypeError):
        return ServiceError(response.status_code, "error", response.text[:200])


def _retry_after(response: Any, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


class Client:
    """`Client("http://127.0.0.1:8000", api_key=...)`; `judge(...)` one pair, `judge_batch([...])` many."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0, max_retries: int = 5
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.max_retries = max_retries

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = self._client.post(path, json=body)
        for _ in range(self.max_retries):
            if response.status_code != 503:
                break
            time.sleep(_retry_after(response, 1.0))
            response = self._client.post(path, json=body)
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    def judge(
        self,
        question: str = "",
        choices: Sequence[str] = (),
        response_a: str = "",
        response_b: str = "",
        *,
        mode: str = "score",
        debias: bool | None = None,
        id: str | None = None,
    ) -> JudgeResult:
        """Judge one pair: two responses to `question` (the prompt, may be empty), with its answer
        choices where it has them (none: open text). `debias` unset: the server's default for `mode`."""
        body = _judge_body(question, choices, response_a, response_b, mode=mode, debias=debias, id=id)
        return JudgeResult.model_validate(self._post("/v1/judge", body))

    def judge_batch(
        self, pairs: Sequence[PairFields | dict[str, Any]], *, mode: str = "score", debias: bool | None = None
    ) -> list[JudgeResult]:
        """Judge many pairs (dicts with question, choices, response_a, response_b, id); results in order."""
        body = {"pairs": _payload(pairs), "mode": mode, **({"debias": debias} if debias is not None else {})}
        return BatchResult.model_validate(self._post("/v1/judge/batch", body)).results

    def ready(self) -> bool:
        """Whether the server has its judge loaded."""
        return self._client.get("/readyz").status_code == 200

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The async twin of :class:`Client` (httpx.AsyncClient)."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0, max_retries: int = 5
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.max_retries = max_retries

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._client.post(path, json=body)
        for _ in range(self.max_retries):
            if response.status_code != 503:
                break
            await asyncio.sleep(_retry_after(response, 1.0))
            response = await self._client.post(path, json=body)
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    async def judge(
        self,
        question: str = "",
        choices: Sequence[str] = (),
        response_a: str = "",
        response_b: str = "",
        *,
        mode: str = "score",
        debias: bool | None = None,
        id: str | None = None,
    ) -> JudgeResult:
        """Judge one pair: two responses to `question` (the prompt, may be empty), with its answer
        choices where it has them (none: open text). `debias` unset: the server's default for `mode`."""
        body = _judge_body(question, choices, response_a, response_b, mode=mode, debias=debias, id=id)
        return JudgeResult.model_validate(await self._post("/v1/judge", body))

    async def judge_batch(
        self, pairs: Sequence[PairFields | dict[str, Any]], *, mode: str = "score", debias: bool | None = None
    ) -> list[JudgeResult]:
        """Judge many pairs; results in order."""
        body = {"pairs": _payload(pairs), "mode": mode, **({"debias": debias} if debias is not None else {})}
        return BatchResult.model_validate(await self._post("/v1/judge/batch", body)).results

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
