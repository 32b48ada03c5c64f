"""A Python client of the service, sync (:class:`Client`) and async (:class:`AsyncClient`).

Both retry a 503 (queue full, still loading) honouring its Retry-After, with a bounded number of
attempts, and raise :class:`ServiceError` with the server's error type, message and field for
every other error. Exposed as `biasjudge.Client` / `biasjudge.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from biasjudge.errors import BackendError
from biasjudge.serve.schemas import BatchResult, JudgeResult, PairFields

if TYPE_CHECKING:
    import httpx


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


def _json(response: Any) -> Any:
    """The answer's JSON; :class:`ServiceError` for an error status."""
    if response.status_code >= 400:
        raise _error(response)
    return response.json()


J = TypeVar("J")
"""What `judge` returns: a JudgeResult (:class:`Client`) or an awaitable of one (:class:`AsyncClient`)."""
B = TypeVar("B")
"""What `judge_batch` returns: the results, or an awaitable of them."""


class _Judging(Generic[J, B]):
    """What the two clients share: how they connect, and the requests of `judge` and `judge_batch`;
    each client sends a request (:meth:`_request`) its own way."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0, max_retries: int = 5
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = self._connect(httpx, base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.max_retries = max_retries

    def _connect(self, httpx: Any, **settings: Any) -> Any:
        raise NotImplementedError

    def _request(self, path: str, body: dict[str, Any], parse: Callable[[Any], Any]) -> Any:
        """POST `body`, retrying a 503 (honouring Retry-After) up to `max_retries` times; `parse` of the answer."""
        raise NotImplementedError

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
    ) -> J:
        """Judge one pair: two responses to `question` (the prompt, may be empty), with its answer
        choices where it has them (none: open text). `debias` unset: the server's default for `mode`."""
        body = _judge_body(question, choices, response_a, response_b, mode=mode, debias=debias, id=id)
        return cast("J", self._request("/v1/judge", body, JudgeResult.model_validate))

    def judge_batch(
        self, pairs: Sequence[PairFields | dict[str, Any]], *, mode: str = "score", debias: bool | None = None
    ) -> B:
        """Judge many pairs (dicts with question, choices, response_a, response_b, id); results in order."""
        body = {"pairs": _payload(pairs), "mode": mode, **({"debias": debias} if debias is not None else {})}
        return cast("B", self._request("/v1/judge/batch", body, lambda data: BatchResult.model_validate(data).results))


class Client(_Judging[JudgeResult, list[JudgeResult]], AbstractContextManager["Client"]):
    """`Client("http://127.0.0.1:8000", api_key=...)`; `judge(...)` one pair, `judge_batch([...])` many."""

    _client: httpx.Client

    def _connect(self, httpx: Any, **settings: Any) -> httpx.Client:
        return httpx.Client(**settings)

    def _request(self, path: str, body: dict[str, Any], parse: Callable[[Any], Any]) -> Any:
        response = self._client.post(path, json=body)
        for _ in range(self.max_retries):
            if response.status_code != 503:
                break
            time.sleep(_retry_after(response, 1.0))
            response = self._client.post(path, json=body)
        return parse(_json(response))

    def ready(self) -> bool:
        """Whether the server has its judge loaded."""
        return self._client.get("/readyz").status_code == 200

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(
    _Judging[Awaitable[JudgeResult], Awaitable[list[JudgeResult]]], AbstractAsyncContextManager["AsyncClient"]
):
    """The async twin of :class:`Client` (httpx.AsyncClient): `await client.judge(...)`."""

    _client: httpx.AsyncClient

    def _connect(self, httpx: Any, **settings: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**settings)

    async def _request(self, path: str, body: dict[str, Any], parse: Callable[[Any], Any]) -> Any:
        response = await self._client.post(path, json=body)
        for _ in range(self.max_retries):
            if response.status_code != 503:
                break
            await asyncio.sleep(_retry_after(response, 1.0))
            response = await self._client.post(path, json=body)
        return parse(_json(response))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
