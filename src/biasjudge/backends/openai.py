"""OpenAI-compatible server backend (llama.cpp server, vLLM serve, Ollama, ...), over httpx.

Spec: `openai:http://HOST:PORT/v1#MODEL` (`#MODEL` optional: the server's first model is used).
The API key comes from the `api_key` option or `$OPENAI_API_KEY` (none needed for local servers).

Generate:
* `use_chat=False` (default): biasjudge renders the prompt itself (built-in turn format
  `chat_format`, assistant prefix appended, `<|think|>` refused) and sends it to `/completions`, so a
  judge sees exactly the prompt it was trained on.
* `use_chat=True`: the messages go to `/chat/completions` and the server applies the model's
  template, with `chat_template_kwargs={"enable_thinking": false}` (vLLM and llama.cpp read it;
  set `chat_template_kwargs={}` for a server that rejects unknown fields). A forced assistant
  prefix cannot be expressed there and is refused.

Score follows the scoring rule of :mod:`biasjudge.backends.base`: the sum of the choice's tokens'
log-probabilities, teacher-forced. Over HTTP each term is read from `/completions` with
`max_tokens=1`, `logprobs=top_logprobs`: the first token's from the top log-probs after the
prompt, the next one's from a request on prompt + the first token's text, and so on.

* The choice's tokens are the server's own tokenisation of prompt + choice after the prompt,
  through its tokenize/detokenize endpoints (llama-cpp-python `/extras/tokenize`, llama.cpp and
  vLLM `/tokenize`). A server without them: at each step the most probable listed token that
  continues the choice (the model's own preferred split, which is its tokenizer's for the short
  verdict strings).
* A token missing from the top log-probs gets a floor, the smallest log-prob listed at that step
  (an upper bound of its true value; `logprob_floor` sets a fixed value instead), and the
  choice's later tokens add nothing, so its score is an upper bound. The choice is named in the
  result's :attr:`~biasjudge.backends.base.ChoiceScores.floored` (and so in
  `Judgment.floored_choices`), counted in `floored`, and a warning is logged.

Transport: requests run on a thread pool of `concurrency` workers. 429, 5xx, timeouts and
connection errors are retried with tenacity, at most `max_retries` times. Each wait is the
exponential backoff with jitter (`backoff` * 2^k, at most `max_backoff`, plus up to `backoff` at
random), or the server's `Retry-After` (seconds or an HTTP date) where that is longer; a
`Retry-After` beyond `max_wait` ends the retries at once. Any error that remains names the URL. A reply that is
not JSON, or lacks a field the backend reads (`choices`, `logprobs`, ...), or has it with the
wrong type, is a BackendError naming that field.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from biasjudge.backends import base
from biasjudge.backends.base import ChoiceScores, Generation, GenerationParams, PromptRequest
from biasjudge.errors import BackendError
from biasjudge.prompts.render import DEFAULT_TURN_FORMAT, refuse_thinking, render_prompt, turn_format

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
T = TypeVar("T")
NO_THINKING: dict[str, Any] = {"enable_thinking": False}
"""Default `chat_template_kwargs` of chat requests: the judge runs with thinking off."""


def parse_target(target: str) -> tuple[str, str | None]:
    """`http://host:port/v1#model` -> (base URL without trailing slash, model or None)."""
    url, _, model = target.partition("#")
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"openai: expected 'openai:http://HOST:PORT/v1#MODEL', got 'openai:{target}'")
    return url, (model.strip() or None)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None if absent or unreadable.

    >>> retry_after_seconds("1")
    1.0
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:05 GMT", now=datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC))
    5.0
    >>> retry_after_seconds("soon") is None
    True
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


_MISSING = object()


def reply_field(body: Any, path: str, kind: type | tuple[type, ...], *, where: str) -> Any:
    """The value at `path` in a JSON reply (`choices.0.logprobs`), checked to be of `kind`.

    Raises BackendError naming the first step that is missing or has the wrong type, never a raw
    KeyError/TypeError/IndexError.

    >>> reply_field({"choices": [{"text": "A"}]}, "choices.0.text", str, where="/completions")
    'A'
    >>> reply_field({"choices": []}, "choices.0.text", str, where="/completions")
    Traceback (most recent call last):
    ...
    biasjudge.errors.BackendError: /completions reply has no 'choices[0]'
    """
    current: Any = body
    shown = ""
    for step in path.split("."):
        parent = repr(shown) if shown else "the body"
        if step.isdigit():
            shown += f"[{step}]"
            if not isinstance(current, list):
                raise BackendError(f"{where} reply: {parent} is {type(current).__name__}, expected a list")
            current = current[int(step)] if int(step) < len(current) else _MISSING
        else:
            shown = f"{shown}.{step}" if shown else step
            if not isinstance(current, dict):
                raise BackendError(f"{where} reply: {parent} is {type(current).__name__}, expected an object")
            current = current.get(step, _MISSING)
        if current is _MISSING or (current is None and type(None) not in _kinds(kind)):
            raise BackendError(f"{where} reply has no {shown!r}")
    if not isinstance(current, kind) or (isinstance(current, bool) and bool not in _kinds(kind)):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in _kinds(kind))
        raise BackendError(f"{where} reply: {shown!r} is {type(current).__name__}, expected {names}")
    return current


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


class _Retryable(Exception):
    """A failure worth another attempt (429/5xx/timeout/connection), with the server's Retry-After."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Tokenizer:
    """The server's tokenizer endpoints: text -> token ids, and token ids -> text."""

    tokenize: Callable[[str], list[int]]
    detokenize: Callable[[list[int]], str]


def put_field(body: dict[str, Any], path: str, value: Any) -> None:
    """Set `value` at a dotted `path` of a request body, making the objects on the way.

    >>> body: dict[str, Any] = {"structured_outputs": {"backend": "x"}}
    >>> put_field(body, "structured_outputs.grammar", "root ::= \\"A\\"")
    >>> body
    {'structured_outputs': {'backend': 'x', 'grammar': 'root ::= "A"'}}
    """
    *parents, last = path.split(".")
    for name in parents:
        body = body.setdefault(name, {})
    body[last] = value


class OpenAIBackend:
    """A model behind an OpenAI-compatible HTTP API.

    Args:
        target: `http://HOST:PORT/v1#MODEL`.
        spec: the spec string.
        use_chat: generate through /chat/completions (server-side template) instead of /completions.
        chat_format: built-in turn format used to render prompts for /completions.
        api_key: bearer token (default: $OPENAI_API_KEY, else none).
        timeout: seconds per HTTP request.
        max_retries: retries after a 429/5xx/timeout/connection error (attempts = max_retries + 1).
        backoff: first retry delay in seconds (doubles each retry, plus up to `backoff` of jitter).
        max_backoff: cap of one backoff delay in seconds.
        max_wait: longest `Retry-After` honoured, in seconds; a longer one ends the retries.
        concurrency: requests in flight at once.
        top_logprobs: how many top log-probs to ask for when scoring.
        logprob_floor: fixed log-prob for a token missing from the top log-probs (default: the
            smallest listed value).
        chat_template_kwargs: sent with chat requests (default: `{"enable_thinking": False}`).
        grammar_field: the request field a GBNF grammar goes in, for servers that hold generation to
            one: `grammar` (llama.cpp's server, llama-cpp-python's), `structured_outputs.grammar`
            (vLLM's server from 0.12; a dot nests the field), `guided_grammar` (vLLM before 0.12).
            Set, the backend supports constrained generation (`?grammar_field=grammar`); unset (the
            default), it does not, as OpenAI's own API has no such field.
    """

    def __init__(
        self,
        target: str,
        *,
        spec: str = "",
        use_chat: bool = False,
        chat_format: str = DEFAULT_TURN_FORMAT,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_wait: float = 60.0,
        concurrency: int = 4,
        top_logprobs: int = 20,
        logprob_floor: float | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        grammar_field: str | None = None,
    ) -> None:
        import httpx

        tenacity = base.import_optional("tenacity", "tenacity", None, "the openai: backend's retries")
        self.base_url, self._model = parse_target(target)
        self.spec = spec or f"openai:{target}"
        self.use_chat = use_chat
        self._format = turn_format(chat_format)
        self.render_format = "server chat template" if use_chat else self._format.name
        """How prompts are rendered (by the server, or locally in a built-in format); in the eval cache key."""
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.max_wait = max_wait
        self.top_logprobs = top_logprobs
        self.logprob_floor = logprob_floor
        self.chat_template_kwargs = dict(NO_THINKING if chat_template_kwargs is None else chat_template_kwargs)
        self.grammar_field = grammar_field or None
        self.supports_grammar = self.grammar_field is not None
        """Whether generation can be held to a grammar (the server's `grammar_field`)."""
        self.floored = 0
        """Choices scored with the floor because the server's top log-probs did not contain them."""
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._httpx = httpx
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="biasjudge-openai")
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._tokenizer: _Tokenizer | None = None
        self._tokenizer_probed = False
        self._count: Callable[[str], int] | None = None
        backoff_wait = tenacity.wait_exponential(multiplier=backoff, max=max_backoff) + tenacity.wait_random(0, backoff)

        def wait(state: Any) -> float:
            # At least what the server asked for; the backoff (with its jitter) when it asked less.
            exc = state.outcome.exception() if state.outcome else None
            delay = float(backoff_wait(state))
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            return delay

        def asked_too_long(state: Any) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return isinstance(exc, _Retryable) and (exc.retry_after or 0.0) > self.max_wait

        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(self.max_retries + 1) | asked_too_long,
            wait=wait,
            reraise=True,
            before_sleep=lambda state: log.info(
                "%s: attempt %d failed (%s); retrying", self.base_url, state.attempt_number, state.outcome.exception()
            ),
        )

    # ------------------------------------------------------------------ transport

    def _attempt(self, method: str, url: str, payload: dict[str, Any] | None) -> Any:
        try:
            response = self._client.request(method, url, json=payload)
        except (self._httpx.TimeoutException, self._httpx.TransportError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code in RETRY_STATUS:
            raise _Retryable(
                f"HTTP {response.status_code}: {response.text[:300]}",
                retry_after_seconds(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            raise BackendError(f"{url} answered HTTP {response.status_code}: {response.text[:500]}")
        try:
            return response.json()
        except ValueError:
            raise BackendError(f"{url} answered with something that is not JSON: {response.text[:200]!r}") from None

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None, *, root: bool = False) -> Any:
        """JSON request with retries; BackendError naming the URL when it fails for good."""
        base = self.base_url.removesuffix("/v1") if root else self.base_url
        url = f"{base}{path}"
        try:
            return self._retrying(self._attempt, method, url, payload)
        except _Retryable as exc:
            attempts = self._retrying.statistics.get("attempt_number", self.max_retries + 1)
            if exc.retry_after is not None and exc.retry_after > self.max_wait:
                raise BackendError(
                    f"{url} asked to retry after {exc.retry_after:.0f} s, more than max_wait={self.max_wait:g} s "
                    f"(attempt {attempts}): {exc}"
                ) from None
            raise BackendError(f"{url} failed after {attempts} attempts: {exc}") from None

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        return list(self._pool.map(fn, items))

    @property
    def model(self) -> str:
        """The model name sent with every request (the server's first model when the spec names none)."""
        if self._model is None:
            where = f"{self.base_url}/models"
            body = self._request("GET", "/models")
            if not reply_field(body, "data", list, where=where):
                raise BackendError(f"{where} lists no model; name one: openai:{self.base_url}#MODEL")
            self._model = str(reply_field(body, "data.0.id", str, where=where))
        return self._model

    # ------------------------------------------------------------------ rendering

    def render(self, request: PromptRequest) -> str:
        """The prompt text biasjudge sends to `/completions`: the built-in turns and the assistant prefix."""
        return render_prompt(request.messages, chat_format=self._format.name, assistant_prefix=request.assistant_prefix)

    # ------------------------------------------------------------------ Backend protocol

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        """Generate one completion per request on the server, with retries and bounded concurrency."""
        model = self.model
        common: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_tokens,
            "temperature": max(0.0, params.temperature),
        }
        # In completions mode the end-of-turn marker is ours to stop at; in chat mode the server's.
        stop = list(params.stop) if self.use_chat else [self._format.end_of_turn, *params.stop]
        if stop:
            common["stop"] = stop
        if params.seed is not None:
            common["seed"] = params.seed
        if params.grammar is not None:
            if self.grammar_field is None:
                raise BackendError(f"{self.spec}: no grammar_field set, so this server is sent no grammar")
            put_field(common, self.grammar_field, params.grammar)

        def one(request: PromptRequest) -> Generation:
            if self.use_chat:
                if request.assistant_prefix:
                    raise BackendError(
                        f"{self.spec}: use_chat=True cannot force the start of the reply "
                        f"({request.assistant_prefix!r}); use the default completions mode"
                    )
                messages = [{"role": m.role, "content": m.content} for m in request.messages]
                for m in messages:
                    refuse_thinking(m["content"], f"{m['role']} message")
                payload = {**common, "messages": messages}
                if self.chat_template_kwargs:
                    payload["chat_template_kwargs"] = self.chat_template_kwargs
                where = f"{self.base_url}/chat/completions"
                body = self._request("POST", "/chat/completions", payload)
                reply_field(body, "choices.0.message", dict, where=where)
                text = reply_field(body, "choices.0.message.content", (str, type(None)), where=where) or ""
            else:
                where = f"{self.base_url}/completions"
                body = self._request("POST", "/completions", {**common, "prompt": self.render(request)})
                text = reply_field(body, "choices.0.text", (str, type(None)), where=where) or ""
            choice = reply_field(body, "choices.0", dict, where=where)
            finish = choice.get("finish_reason")
            usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
            return Generation(
                text=text,
                finish_reason=finish if isinstance(finish, str) else None,
                prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
                completion_tokens=_int_or_none(usage.get("completion_tokens")),
            )

        return self._map(one, requests)

    def _top_logprobs(self, prompt: str) -> dict[str, float]:
        """The top log-probs of the next token after `prompt` (text -> log-prob)."""
        where = f"{self.base_url}/completions"
        body = self._request(
            "POST",
            "/completions",
            {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": self.top_logprobs},
        )
        reply_field(body, "choices.0.logprobs", dict, where=where)
        top = reply_field(body, "choices.0.logprobs.top_logprobs", list, where=where)
        if not top:
            raise BackendError(f"{where} reply has an empty 'choices[0].logprobs.top_logprobs'")
        first = reply_field(top, "0", dict, where=f"{where} top_logprobs")
        bad = {k: v for k, v in first.items() if isinstance(v, bool) or not isinstance(v, int | float)}
        if not first or bad:
            raise BackendError(
                f"{where} reply: 'choices[0].logprobs.top_logprobs[0]' must map token texts to numbers, got {first!r}"
            )
        return {str(k): float(v) for k, v in first.items()}

    def _floor(self, top: dict[str, float]) -> float:
        return self.logprob_floor if self.logprob_floor is not None else min(top.values())

    def _choice_pieces(self, prompt: str, choice: str) -> list[str] | None:
        """The texts of the choice's tokens by the server's tokenizer; None without one (or when its
        token texts do not spell the choice)."""
        tokenizer = self._server_tokenizer()
        if tokenizer is None:
            return None
        prompt_ids = tokenizer.tokenize(prompt)

        def alone() -> list[int]:
            empty = tokenizer.tokenize("")  # BOS, where the endpoint adds one
            ids = tokenizer.tokenize(choice)
            return ids[len(empty) :] if ids[: len(empty)] == empty else ids

        ids = base.continuation_tokens(prompt_ids, tokenizer.tokenize(prompt + choice), alone, choice, self.spec)
        pieces: list[str] = []
        done = ""
        for k in range(1, len(ids)):
            text = tokenizer.detokenize(ids[:k])
            if not (text.startswith(done) and choice.startswith(text)) or text == done:
                return None  # byte-level pieces that are not whole characters, or a tokenizer quirk
            pieces.append(text[len(done) :])
            done = text
        pieces.append(choice[len(done) :])
        return pieces if all(pieces) else None

    def _choice_logprob(
        self, prompt: str, choice: str, top_at: Callable[[str], dict[str, float]]
    ) -> tuple[float, bool]:
        """(log p(choice | prompt) by the scoring rule, floored?)."""
        pieces = self._choice_pieces(prompt, choice)
        total = 0.0
        text, rest = prompt, choice
        while rest:
            top = top_at(text)
            if pieces is not None:
                piece = pieces[0]
                pieces = pieces[1:]
                listed = piece in top
            else:
                # No tokenizer: the most probable listed token that continues the choice.
                candidates = [(lp, token) for token, lp in top.items() if token and rest.startswith(token)]
                listed = bool(candidates)
                piece = max(candidates)[1] if candidates else ""
            if not listed:
                return total + self._floor(top), True
            total += top[piece]
            text, rest = text + piece, rest[len(piece) :]
        return total, False

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability of each choice after each request's prompt, from the server's logprobs."""
        choices = base.check_choices(choices, self.spec)
        empty = [c for c in choices if not c]
        if empty:  # zero characters are zero tokens, with or without the server's tokenizer
            raise BackendError(f"{self.spec}: choice {empty[0]!r} has no tokens; every choice needs at least one")

        def one(request: PromptRequest) -> dict[str, float]:
            prompt = self.render(request)
            seen: dict[str, dict[str, float]] = {}

            def top_at(text: str) -> dict[str, float]:
                # Choices sharing leading tokens (TIE and TRUE after T) share the request.
                if text not in seen:
                    seen[text] = self._top_logprobs(text)
                return seen[text]

            values: dict[str, float] = {}
            floored: list[str] = []
            for choice in choices:
                values[choice], was_floored = self._choice_logprob(prompt, choice, top_at)
                if was_floored:
                    floored.append(choice)
                    log.warning("%s: %r not among the top %d log-probs; floored", self.spec, choice, self.top_logprobs)
            with self._lock:
                self.floored += len(floored)
            return ChoiceScores(values, floored=floored)

        return self._map(one, requests)

    # ------------------------------------------------------------------ the server's tokenizer

    def _server_tokenizer(self) -> _Tokenizer | None:
        """The server's tokenize + detokenize endpoints, probed once; None when it has none."""
        with self._probe_lock:
            if not self._tokenizer_probed:
                self._tokenizer = self._find_tokenizer()
                self._tokenizer_probed = True
            return self._tokenizer

    def _find_tokenizer(self) -> _Tokenizer | None:
        model = self.model
        base = self.base_url.removesuffix("/v1")
        # (tokenize path, its payload, detokenize path, the text field of its reply)
        candidates: list[tuple[str, Callable[[str], dict[str, Any]], str, tuple[str, ...]]] = [
            # llama-cpp-python
            ("/extras/tokenize", lambda t: {"input": t, "model": model}, "/extras/detokenize", ("text",)),
            (
                "/tokenize",  # llama.cpp server (content) and vLLM (prompt)
                lambda t: {"content": t, "prompt": t, "model": model, "add_special_tokens": False},
                "/detokenize",
                ("content", "prompt"),
            ),
        ]
        for path, payload, detok_path, text_fields in candidates:

            def tokenize(text: str, path: str = path, payload: Any = payload) -> list[int]:
                tokens = reply_field(
                    self._request("POST", path, payload(text), root=True), "tokens", list, where=f"{base}{path}"
                )
                if not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
                    raise BackendError(f"{base}{path} reply: 'tokens' must be a list of token ids")
                return list(tokens)

            def detokenize(ids: list[int], path: str = detok_path, fields: tuple[str, ...] = text_fields) -> str:
                body = self._request("POST", path, {"tokens": ids, "model": model}, root=True)
                for name in fields:
                    if isinstance(body, dict) and isinstance(body.get(name), str):
                        return str(body[name])
                raise BackendError(f"{base}{path} reply has no {' or '.join(map(repr, fields))}")

            try:
                tokenize("")
            except BackendError:
                continue
            return _Tokenizer(tokenize, detokenize)
        log.warning("%s: the server has no tokenize endpoint", self.base_url)
        return None

    def count_tokens(self, text: str) -> int:
        """Tokens by the server's tokenize endpoint (llama.cpp, vLLM); words if it has none."""
        if self._count is None:
            tokenizer = self._server_tokenizer()
            if tokenizer is None:
                self._count = lambda t: len(t.split())
            else:
                empty = len(tokenizer.tokenize(""))  # BOS, where the endpoint adds one
                self._count = lambda t: len(tokenizer.tokenize(t)) - empty
        return self._count(text)

    def close(self) -> None:
        """Stop the request pool and close the HTTP client."""
        self._pool.shutdown(wait=True)
        self._client.close()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
