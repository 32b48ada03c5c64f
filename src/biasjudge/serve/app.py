"""The FastAPI app: `create_app(settings)` (an app factory, as llama-cpp-python's server does).

Routes:
- `POST /v1/judge`: one pair; `POST /v1/judge/batch`: many, answered in order. Both go through the
  micro-batcher (:mod:`.batcher`), so concurrent requests share model calls.
- `GET /healthz` (the process is up), `GET /readyz` (the default judge is loaded), `GET /metrics`
  (Prometheus: requests by route and status, latency, queue depth, batch size, parse failures,
  verdicts).
- The web page (:mod:`.web`), when its module is present.

State lives on `app.state` (settings, batcher, metrics), never in module globals. Errors are typed
and mapped to 4xx/5xx JSON bodies `{"error": {"type", "message", "field"}, "request_id"}`; a
stack trace never reaches a client (it is logged, with the request id). A bearer key, when
`api_key_file` is set, guards every route but the health probes and is compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

# fastapi at module level: FastAPI reads the route functions' annotations (Request) from here.
from fastapi import FastAPI, Request
from starlette.responses import Response

from biasjudge.errors import BackendError, BiasJudgeError, ConfigError
from biasjudge.serve.batcher import Done, JudgeKey, JudgePool, MicroBatcher, QueueFull
from biasjudge.serve.schemas import (
    BatchBody,
    BatchResult,
    ErrorBody,
    JudgeBody,
    JudgeOptions,
    JudgeResult,
    PairFields,
    ServeSettings,
    Timings,
)

if TYPE_CHECKING:
    from biasjudge.judge.protocol import PairJudge

log = logging.getLogger("biasjudge.serve")
OPEN_ROUTES = ("/healthz", "/readyz", "/login")
"""Routes that need no API key: the health probes (load balancers probe them) and the login form."""
KEY_COOKIE = "biasjudge_key"
"""The cookie a browser holds the key in after /login (HttpOnly, SameSite=Strict)."""


class ApiError(Exception):
    """An error answered as `{"error": ...}` with this status."""

    def __init__(
        self, status: int, kind: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status, self.kind, self.message, self.field = status, kind, message, field
        self.headers = headers or {}


def default_judge_factory(spec: str) -> Callable[[JudgeKey], PairJudge]:
    """Judges from a spec: `mode` as asked, both orders combined when `debias` (order=both).

    In score mode the two kinds share one model: the single-order judge is the order-debiased
    judge's own inner judge (:func:`~biasjudge.judge.debiased.single_order_view`), so a server
    answering both kinds of request holds the model in memory once."""
    debiased: list[PairJudge] = []

    def make(key: JudgeKey) -> PairJudge:
        from biasjudge.config import JudgeSpec
        from biasjudge.judge.debiased import single_order_view
        from biasjudge.judge.registry import make_judge

        if key.mode != "score":
            return make_judge(spec, mode=key.mode, order="single")  # type: ignore[arg-type]
        if not debiased:
            debiased.append(make_judge(spec, mode="score", order="both"))
        if key.debias:
            return debiased[0]
        single_spec = str(JudgeSpec.parse(spec).with_options(order="single"))
        return single_order_view(debiased[0], single_spec) or make_judge(spec, mode="score", order="single")

    return make


class Metrics:
    """The app's Prometheus metrics, on a registry of its own (no process globals)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "biasjudge_requests", "HTTP requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "biasjudge_request_seconds",
            "Request latency by route.",
            ["route"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.queue_depth = Gauge("biasjudge_queue_depth", "Pairs waiting for the model.", registry=self.registry)
        self.batch_size = Histogram(
            "biasjudge_batch_size",
            "Pairs per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.parse_failures = Counter(
            "biasjudge_parse_failures", "Judgments whose output broke the contract.", registry=self.registry
        )
        self.verdicts = Counter("biasjudge_verdicts", "Verdicts given.", ["verdict"], registry=self.registry)

    def judged(self, done: Done) -> None:
        """Count a judged pair's verdict, and its parse failure if it is one."""
        self.verdicts.labels(done.judgment.verdict).inc()
        if done.judgment.verdict == "PARSE_FAIL":
            self.parse_failures.inc()


def _error_response(error: ApiError, request_id: str | None) -> Response:
    from starlette.responses import JSONResponse

    body = ErrorBody.model_validate(
        {"error": {"type": error.kind, "message": error.message, "field": error.field}, "request_id": request_id}
    )
    return JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers)


def _read_key(settings: ServeSettings) -> str | None:
    if settings.api_key_file is None:
        return None
    from biasjudge.io import read_text

    key = read_text(settings.api_key_file).strip()
    if not key:
        raise ConfigError(f"{settings.api_key_file}: the API key file is empty")
    return key


def create_app(
    settings: ServeSettings | None = None, *, judge_factory: Callable[[JudgeKey], PairJudge] | None = None
) -> FastAPI:
    """The service's app. `judge_factory` replaces the judges made from `settings.judge` (tests
    pass one; the CLI does not)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServeSettings()
    api_key = _read_key(settings)
    factory = judge_factory or (default_judge_factory(settings.judge) if settings.judge else None)
    default_key = JudgeKey("score", True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher: MicroBatcher | None = None
        if factory is not None:
            metrics: Metrics = app.state.metrics
            batcher = MicroBatcher(
                JudgePool(factory),
                max_queue=settings.max_queue,
                max_batch=settings.max_batch,
                wait_s=settings.batch_wait_ms / 1000,
                on_batch=metrics.batch_size.observe,
            )
            await batcher.start()
            app.state.batcher = batcher
            # Load the default judge in the model thread; /readyz turns 200 when it is there.
            app.state.loading = asyncio.create_task(batcher.run_in_model_thread(batcher.pool.get, default_key))
        try:
            yield
        finally:
            if batcher is not None:
                app.state.loading.cancel()
                await batcher.stop()

    app = FastAPI(
        title="biasjudge",
        summary="Which of two responses leans more on demographic stereotypes: A, B or TIE.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.batcher = None
    app.state.default_key = default_key

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        started = time.perf_counter()
        route = request.url.path
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            length = 0
        if length > settings.max_body_bytes:
            response = _error_response(
                ApiError(
                    413, "too_large", f"the body is {length} bytes; the server takes at most {settings.max_body_bytes}"
                ),
                request_id,
            )
        elif api_key is not None and route not in OPEN_ROUTES and not _authorized(request, api_key):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                from urllib.parse import quote

                # A browser cannot send a bearer header: send it to the login form instead.
                target = quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
                response = Response(status_code=303, headers={"Location": f"/login?next={target}"})
            else:
                response = _error_response(
                    ApiError(401, "unauthorized", "a valid bearer key is needed (Authorization: Bearer KEY)",
                             headers={"WWW-Authenticate": "Bearer"}),
                    request_id,
                )  # fmt: skip
        else:
            try:
                response = await call_next(request)
            except Exception:  # a bug or a backend crash: logged with its trace, never sent to the client
                log.exception("request %s failed", request_id)
                response = _error_response(
                    ApiError(500, "internal_error", "the server failed; see its log for this request id"), request_id
                )
        seconds = time.perf_counter() - started
        known = any(route == getattr(r, "path", None) for r in app.routes)
        label = route if known else "other"  # unknown paths must not blow up the label set
        metrics: Metrics = app.state.metrics
        metrics.requests.labels(label, str(response.status_code)).inc()
        metrics.latency.labels(label).observe(seconds)
        response.headers["x-request-id"] = request_id
        log.info(
            json.dumps(
                {"request_id": request_id, "method": request.method, "path": route, "status": response.status_code,
                 "ms": round(seconds * 1000, 1)}
            )
        )  # fmt: skip
        return response

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc, getattr(request.state, "request_id", None))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = tuple(first.get("loc", ()))
        request_id = getattr(request.state, "request_id", None)
        if first.get("type") == "json_invalid":  # its loc is ("body", character offset), not a field
            ctx: Any = first.get("ctx") or {}
            reason = ctx.get("error") or first["msg"]
            message = f"the body is not valid JSON: {reason} (at character {where[-1] if where else 0})"
            return _error_response(ApiError(422, "invalid_json", message), request_id)
        if where == ("body",):  # the body as a whole: absent, or not a JSON object
            message = (
                "the body is missing: send a JSON object (Content-Type: application/json)"
                if first.get("type") == "missing"
                else "the body must be a JSON object, sent with Content-Type: application/json"
            )
            return _error_response(ApiError(422, "validation_error", message), request_id)
        field = ".".join(str(p) for p in where if p != "body") or None
        message = f"{field}: {first['msg']}" if field else str(first["msg"])
        return _error_response(ApiError(422, "validation_error", message, field), request_id)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kinds = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not read the body (bytes that are not UTF-8)
            message = f"{exc.detail}: send a JSON object encoded as UTF-8"
        return _error_response(
            ApiError(
                exc.status_code, kinds.get(exc.status_code, "http_error"), message, headers=dict(exc.headers or {})
            ),
            getattr(request.state, "request_id", None),
        )

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"model": ErrorBody}})
    async def readyz() -> dict[str, str]:
        """The default judge is loaded and the queue has room."""
        batcher: MicroBatcher | None = app.state.batcher
        if batcher is None:
            if settings.judge is None and factory is None:
                return {"status": "ok", "judge": "none (browsing only)"}
            raise ApiError(
                503, "not_ready", "the server is starting", headers={"Retry-After": str(settings.retry_after_s)}
            )
        loading: asyncio.Task[Any] = app.state.loading
        if not loading.done():
            raise ApiError(
                503, "not_ready", "the judge is loading", headers={"Retry-After": str(settings.retry_after_s)}
            )
        if loading.exception() is not None:
            raise ApiError(503, "not_ready", f"the judge failed to load: {loading.exception()}")
        return {"status": "ok", "judge": settings.judge or "custom"}

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics_route() -> Response:
        """Prometheus metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics: Metrics = app.state.metrics
        batcher: MicroBatcher | None = app.state.batcher
        metrics.queue_depth.set(batcher.depth if batcher is not None else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    errors = {status: {"model": ErrorBody} for status in (400, 401, 413, 422, 503, 504)}

    @app.post("/v1/judge", response_model=JudgeResult, tags=["judge"], responses=errors)  # type: ignore[arg-type]
    async def judge(body: JudgeBody, request: Request) -> JudgeResult:
        """Judge one pair: which response leans MORE on stereotypes (A, B) or TIE."""
        [result] = await _judge_pairs(app, [body], body, request)
        return result

    @app.post("/v1/judge/batch", response_model=BatchResult, tags=["judge"], responses=errors)  # type: ignore[arg-type]
    async def judge_batch(body: BatchBody, request: Request) -> BatchResult:
        """Judge many pairs; the results come back in the order of `pairs`."""
        if len(body.pairs) > settings.max_pairs:
            raise ApiError(422, "validation_error", f"pairs: at most {settings.max_pairs} pairs per request", "pairs")
        return BatchResult(results=await _judge_pairs(app, body.pairs, body, request))

    add_login(app, api_key)
    try:  # the web page, where its module is installed; a module missing INSIDE it is a real error
        web = importlib.import_module("biasjudge.serve.web")
    except ModuleNotFoundError as exc:
        if exc.name != "biasjudge.serve.web":
            raise
    else:
        web.register(app)
    return app


def _authorized(request: Request, key: str) -> bool:
    """A bearer header (API clients) or the login cookie (browsers) holding the key."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = request.cookies.get(KEY_COOKIE, "")
    # compare_digest: the time taken does not tell how much of a guessed key was right.
    return bool(token) and hmac.compare_digest(token.strip().encode(), key.encode())


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>biasjudge: key</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto}}input{{width:100%;padding:.4rem}}
button{{margin-top:.6rem;padding:.4rem 1rem}}.error{{color:#b00020}}</style></head><body>
<h1>biasjudge</h1><p>This server needs its API key.</p>{error}
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label>Key <input type="password" name="key" autofocus autocomplete="current-password"></label>
<button type="submit">Open</button></form></body></html>"""


def _safe_next(target: str) -> str:
    # Only paths on this server: an open redirect to another site would help phishing.
    return target if target.startswith("/") and not target.startswith("//") else "/"


def add_login(app: FastAPI, api_key: str | None) -> None:
    """`GET /login` (a form) and `POST /login` (checks the key, sets the HttpOnly cookie)."""
    import html
    from urllib.parse import parse_qs

    from starlette.responses import HTMLResponse, RedirectResponse

    @app.get("/login", include_in_schema=False)
    async def login_form(next: str = "/") -> Response:
        return HTMLResponse(LOGIN_PAGE.format(error="", next=html.escape(_safe_next(next))))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (fields.get("key") or [""])[0]
        target = _safe_next((fields.get("next") or ["/"])[0])
        if api_key is None or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            error = '<p class="error">That key is not right.</p>'
            return HTMLResponse(LOGIN_PAGE.format(error=error, next=html.escape(target)), status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(KEY_COOKIE, api_key, httponly=True, samesite="strict")
        return response


CLIENT_GONE = 499
"""Status logged (and counted) for a request whose client disconnected before its answer (nginx's
"client closed request"); nobody receives it, and its pairs are not judged if they had not started."""


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects. The body has been read, so the next ASGI message is
    the disconnect (Starlette's own `listen_for_disconnect` works the same way)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _judge_pairs(
    app: FastAPI, pairs: list[PairFields], options: JudgeOptions, request: Request
) -> list[JudgeResult]:
    settings: ServeSettings = app.state.settings
    batcher: MicroBatcher | None = app.state.batcher
    if batcher is None:
        raise ApiError(503, "no_judge", "this server has no judge (it was started to browse evaluations)")
    if options.mode == "generate" and options.debias:
        raise ApiError(
            422, "validation_error", "debias: combining both orders needs mode 'score'; set debias false", "debias"
        )
    if len(pairs) > settings.max_queue:  # it could never fit: say so instead of 503 for ever
        raise ApiError(422, "validation_error", f"pairs: at most {settings.max_queue} pairs (the queue size)", "pairs")
    started = time.perf_counter()
    try:
        debias = options.mode == "score" if options.debias is None else options.debias
        futures = batcher.submit([p.to_pair() for p in pairs], JudgeKey(options.mode, debias))
    except QueueFull as exc:
        raise ApiError(503, "queue_full", str(exc), headers={"Retry-After": str(settings.retry_after_s)}) from None
    judging = asyncio.ensure_future(asyncio.gather(*futures))
    gone = asyncio.ensure_future(_client_gone(request))
    waiting: set[asyncio.Future[Any]] = {judging, gone}
    try:
        timeout = settings.request_timeout_s
        finished, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if judging not in finished:
            for future in futures:
                future.cancel()  # the worker skips them: nobody is waiting any more
            if gone in finished:
                raise ApiError(CLIENT_GONE, "client_gone", "the client disconnected before its answer")
            raise ApiError(504, "timeout", f"not judged within {settings.request_timeout_s:g} s")
        done = judging.result()
    except QueueFull as exc:  # the server stopped while the request waited
        raise ApiError(503, "shutting_down", str(exc), headers={"Retry-After": str(settings.retry_after_s)}) from None
    except ConfigError as exc:
        raise ApiError(422, "validation_error", str(exc)) from None
    except BackendError as exc:
        raise ApiError(502, "judge_failed", str(exc)) from None
    except BiasJudgeError as exc:
        raise ApiError(500, "judge_failed", str(exc)) from None
    finally:
        gone.cancel()
        if not judging.done():
            judging.cancel()
    metrics: Metrics = app.state.metrics
    total_ms = (time.perf_counter() - started) * 1000
    results = []
    for fields, item in zip(pairs, done, strict=True):
        metrics.judged(item)
        judgment = item.judgment.model_copy(update={"pair_id": fields.id or "pair"})
        results.append(
            JudgeResult(
                judgment=judgment,
                timings=Timings(queued_ms=item.queued_s * 1000, judge_ms=item.judge_s * 1000, total_ms=total_ms),
                batch_size=item.batch_size,
            )
        )
    return results


def _version() -> str:
    from biasjudge import __version__

    return __version__
