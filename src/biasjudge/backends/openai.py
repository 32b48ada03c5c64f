"""OpenAI-compatible server backend (llama.cpp server, vLLM serve, Ollama, ...), over httpx.

Spec: `openai:http://HOST:PORT/v1#MODEL` (`#MODEL` optional: the server's first model is used).
The API key comes from the `api_key` option or `$OPENAI_API_KEY` (none needed for local servers).

Generate:
* `use_chat=False` (default): biasjudge renders the prompt itself (built-in turn format
  `chat_format`, assistant prefix appended, `<|think|>` refused) and sends it to `/completions`, so a
  judge sees exactly the prompt it was trained on.
* `use_chat=True`: the messages go to `/chat/completions` and the server applies the model's
  template. A forced assistant prefix cannot be expressed there and is refused.

Score: `/completions` on the rendered prompt + assistant prefix with `max_tokens=1`,
`logprobs=top_logprobs`. A choice's log-probability is read from the returned top log-probs:
a token equal to the choice counts directly; a token that is a proper prefix of the choice (`T` of
`TIE`, also `TI`) is followed with one more request on prompt + that token, and the
probabilities of all paths found are summed (the string's probability over the tokenisations the
server shows). A choice with no path among the top log-probs gets a floor, the smallest log-prob
listed at the point the path ended (an upper bound of its true value; `logprob_floor` sets a fixed
value instead), and is flagged: `floored` counts such choices and a warning is logged.

Transport: requests run on a thread pool of `concurrency` workers; 429, 5xx, timeouts and
connection errors are retried `max_retries` times with exponential backoff (`backoff` * 2^k
seconds); any error that remains names the URL.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from biasjudge.backends.base import Generation, GenerationParams, PromptRequest
from biasjudge.errors import BackendError
from biasjudge.prompting import DEFAULT_TURN_FORMAT, refuse_thinking, render_prompt, turn_format

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
T = TypeVar("T")


def parse_target(target: str) -> tuple[str, str | None]:
    """`http://host:port/v1#model` -> (base URL without trailing slash, model or None)."""
    url, _, model = target.partition("#")
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"openai: expected 'openai:http://HOST:PORT/v1#MODEL', got 'openai:{target}'")
    return url, (model.strip() or None)


class OpenAIBackend:
    """A model behind an OpenAI-compatible HTTP API.

    Args:
        target: `http://HOST:PORT/v1#MODEL`.
        spec: the spec string.
        use_chat: generate through /chat/completions (server-side template) instead of /completions.
        chat_format: built-in turn format used to render prompts for /completions.
        api_key: bearer token (default: $OPENAI_API_KEY, else none).
        timeout: seconds per HTTP request.
        max_retries: retries after a 429/5xx/timeout/connection error.
        backoff: first retry delay in seconds (doubles each retry).
        concurrency: requests in flight at once.
        top_logprobs: how many top log-probs to ask for when scoring.
        logprob_floor: fixed log-prob for a choice missing from the top log-probs (default: the
            smallest listed value).
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
        concurrency: int = 4,
        top_logprobs: int = 20,
        logprob_floor: float | None = None,
    ) -> None:
        import httpx

        self.base_url, self._model = parse_target(target)
        self.spec = spec or f"openai:{target}"
        self.use_chat = use_chat
        self._format = turn_format(chat_format)
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.top_logprobs = top_logprobs
        self.logprob_floor = logprob_floor
        self.floored = 0
        """Choices scored with the floor because the server's top log-probs did not contain them."""
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._httpx = httpx
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="biasjudge-openai")
        self._tokenize: Callable[[str], int] | None = None

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None, *, root: bool = False) -> Any:
        """JSON request with retries; BackendError naming the URL when it fails for good."""
        base = self.base_url.removesuffix("/v1") if root else self.base_url
        url = f"{base}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.request(method, url, json=payload)
            except (self._httpx.TimeoutException, self._httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            if response.status_code >= 400:
                raise BackendError(f"{url} answered HTTP {response.status_code}: {response.text[:500]}")
            try:
                return response.json()
            except ValueError:
                raise BackendError(f"{url} answered with something that is not JSON: {response.text[:200]}") from None
        raise BackendError(f"{url} failed after {self.max_retries + 1} attempts: {last}")

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        return list(self._pool.map(fn, items))

    @property
    def model(self) -> str:
        """The model name sent with every request (the server's first model when the spec names none)."""
        if self._model is None:
            listing = self._request("GET", "/models")
            data = listing.get("data") or []
            if not data:
                raise BackendError(f"{self.base_url}/models lists no model; name one: openai:{self.base_url}#MODEL")
            self._model = str(data[0]["id"])
        return self._model

    # ------------------------------------------------------------------ rendering

    def render(self, request: PromptRequest) -> str:
        return render_prompt(request.messages, chat_format=self._format.name, assistant_prefix=request.assistant_prefix)

    # ------------------------------------------------------------------ Backend protocol

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
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
                body = self._request("POST", "/chat/completions", {**common, "messages": messages})
                choice = body["choices"][0]
                text = (choice.get("message") or {}).get("content") or ""
            else:
                body = self._request("POST", "/completions", {**common, "prompt": self.render(request)})
                choice = body["choices"][0]
                text = choice.get("text") or ""
            usage = body.get("usage") or {}
            return Generation(
                text=text,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
            )

        return self._map(one, requests)

    def _top_logprobs(self, prompt: str) -> dict[str, float]:
        body = self._request(
            "POST",
            "/completions",
            {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": self.top_logprobs},
        )
        logprobs = body["choices"][0].get("logprobs") or {}
        top = logprobs.get("top_logprobs") or []
        if not top or not isinstance(top[0], dict):
            raise BackendError(
                f"{self.base_url}/completions returned no top_logprobs; the server must support logprobs"
            )
        return {str(k): float(v) for k, v in top[0].items()}

    def _choice_logprob(self, prompt: str, choice: str, top: dict[str, float], depth: int = 0) -> tuple[float, bool]:
        """(log p(choice | prompt) summed over the token paths visible in the top log-probs, floored?)."""
        total = -math.inf
        for token, lp in top.items():
            if token == choice:
                total = float(np.logaddexp(total, lp))
            elif token and choice.startswith(token) and depth < len(choice):
                rest, floored = self._choice_logprob(
                    prompt + token, choice[len(token) :], self._top_logprobs(prompt + token), depth + 1
                )
                if not floored:
                    total = float(np.logaddexp(total, lp + rest))
        if total > -math.inf:
            return total, False
        return (self.logprob_floor if self.logprob_floor is not None else min(top.values())), True

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        def one(request: PromptRequest) -> dict[str, float]:
            prompt = self.render(request)
            top = self._top_logprobs(prompt)
            scores: dict[str, float] = {}
            for choice in choices:
                scores[choice], floored = self._choice_logprob(prompt, choice, top)
                if floored:
                    self.floored += 1
                    log.warning("%s: %r not among the top %d log-probs; floored", self.spec, choice, self.top_logprobs)
            return scores

        return self._map(one, requests)

    def count_tokens(self, text: str) -> int:
        """Tokens by the server's tokenize endpoint (llama.cpp, vLLM); words if it has none."""
        if self._tokenize is None:
            self._tokenize = self._find_tokenizer()
        return self._tokenize(text)

    def _find_tokenizer(self) -> Callable[[str], int]:
        candidates: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
            ("/extras/tokenize", lambda t: {"input": t, "model": self.model}, "tokens"),  # llama-cpp-python
            (
                "/tokenize",
                lambda t: {"content": t, "prompt": t, "model": self.model, "add_special_tokens": False},
                "tokens",
            ),
        ]
        for path, payload, field in candidates:
            try:
                empty = len(self._request("POST", path, payload(""), root=True)[field])
            except (BackendError, KeyError, TypeError):
                continue

            def count(
                text: str, path: str = path, payload: Any = payload, field: str = field, empty: int = empty
            ) -> int:
                return len(self._request("POST", path, payload(text), root=True)[field]) - empty

            return count
        log.warning("%s: the server has no tokenize endpoint; counting words instead of tokens", self.base_url)
        return lambda text: len(text.split())

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
