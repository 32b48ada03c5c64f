"""Judge specs -> backends: lazy factories registered by scheme (inspect_ai's `@modelapi` style).

A spec is `SCHEME:TARGET`:

| spec | what it makes |
|---|---|
| `reader:[ANALYSIS.json]` | the default judge: reads the question, then each response (no choices: `text:`) |
| `text:[TEXT.json]` | the free-text judge: scores each open response for leaning on a stereotype, then compares |
| `llamacpp:embedded` (= `llamacpp:`) | the pairwise judge: the shipped LoRA adapter on the embedded Gemma 3 270M |
| `llamacpp:embedded-base`, `llamacpp:PATH.gguf` | llama.cpp on the CPU: the untrained embedded base, or any GGUF |
| `hf:MODEL_ID_OR_DIR`, `hf:PATH.gguf` | transformers (a .gguf file is dequantised on load) |
| `openai:http://HOST:PORT/v1#MODEL` | any OpenAI-compatible server |
| `vllm:MODEL` | offline vLLM on a GPU |
| `answer-key:[PAIRS.jsonl]`, `always-tie:`, `random:[SEED]` | baselines (they judge pairs, not prompts) |
| `hybrid:[MODEL_SPEC]` | answer-key evidence from BBQ's answer key combined with a model's probabilities |
| `replay:PREDICTIONS.json` | the verdicts of a saved eval, judged again without a model |
| `route:ROUTER.json` | an in-distribution and an out-of-distribution judge, chosen per pair by its bias category |

The pair-judge schemes (reader, text, baselines, hybrid, replay, route) are registered by :mod:`biasjudge.judge.judge`,
beside the judges they make: backends never import the judge package.

Backend options may ride on the spec after `?` (see :func:`split_options`).

A factory is registered with :func:`register_backend` and imports its module only when called, so
naming a backend never costs the import of another one. Model schemes make a
:class:`~biasjudge.backends.base.Backend`; baseline schemes make a pair judge directly
(:func:`biasjudge.judge.judge.make_judge` takes both).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from biasjudge.backends.base import Backend
from biasjudge.errors import BackendError, MissingDependency

DEFAULT_JUDGE_SPEC = "reader:"
"""The judge used when none is named: the question reader (biasjudge.judge.reading), which reads the
question with a trained analysis model, then what each response chose, and writes its reasons."""
PAIRWISE_JUDGE_SPEC = "llamacpp:embedded"
"""biasjudge's pairwise judge: a LoRA adapter shipped in the package on the embedded Gemma 3 270M,
through llama.cpp, both orders combined (the default before the question reader; kept to compare)."""
EMBEDDED_BASE_SPEC = "llamacpp:embedded-base"
"""The embedded Gemma 3 270M as it comes from PyPI: pretrained, untrained as a judge."""

SchemeKind = Literal["backend", "pair_judge"]


@dataclass(frozen=True)
class _Scheme:
    name: str
    kind: SchemeKind
    loader: Callable[[], Callable[..., Any]]
    """Imports the backend module and returns its constructor `(target, *, spec, **options)`."""


_REGISTRY: dict[str, _Scheme] = {}
SCHEMES: tuple[str, ...] = ()
"""Registered schemes, in registration order (kept up to date by register_backend)."""


def register_backend(
    scheme: str, *, kind: SchemeKind = "backend"
) -> Callable[[Callable[[], Callable[..., Any]]], Callable[[], Callable[..., Any]]]:
    """Register a lazy factory for `scheme`.

    The decorated function takes no argument, imports its module and returns the constructor,
    which is called as `constructor(target, spec=spec, **options)`::

        @register_backend("mybackend")
        def _mybackend():
            from mypackage.backend import MyBackend
            return MyBackend
    """

    def decorate(loader: Callable[[], Callable[..., Any]]) -> Callable[[], Callable[..., Any]]:
        global SCHEMES
        _REGISTRY[scheme] = _Scheme(scheme, kind, loader)
        SCHEMES = tuple(_REGISTRY)
        return loader

    return decorate


def import_optional(module: str, package: str, extra: str | None, feature: str = "") -> ModuleType:
    """Import an optional heavy package, or raise MissingDependency with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(package, extra, feature) from None


def _option_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def split_options(spec: str) -> tuple[str, dict[str, Any]]:
    """(spec without options, options) for `SCHEME:TARGET?key=value&key=value`.

    Options ride on the spec so that every command naming a judge can carry them, e.g.
    `llamacpp:embedded-base?lora_path=runs/judge/adapter.gguf` or `hf:google/gemma-3-270m?adapter=runs/sft/adapter`.
    Values `true`/`false` become booleans, numbers become int or float.

    >>> split_options("llamacpp:model.gguf?lora_path=a.gguf&n_ctx=2048")
    ('llamacpp:model.gguf', {'lora_path': 'a.gguf', 'n_ctx': 2048})
    """
    base, sep, query = spec.partition("?")
    if not sep:
        return spec, {}
    options: dict[str, Any] = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise BackendError(f"judge spec {spec!r}: options after '?' must be key=value, got {item!r}")
        options[key.strip()] = _option_value(value.strip())
    return base, options


def parse_spec(spec: str) -> tuple[str, str]:
    """Split `SCHEME:TARGET`; an unknown or missing scheme raises BackendError listing the known ones."""
    scheme, sep, target = split_options(spec)[0].partition(":")
    scheme = scheme.strip().lower()
    if not sep or scheme not in _REGISTRY:
        known = ", ".join(f"'{s}:'" for s in SCHEMES)
        what = f"unknown backend scheme '{scheme}:'" if sep else "a judge spec must look like SCHEME:TARGET"
        hint = " (for a GGUF file, write 'llamacpp:PATH.gguf')" if spec.endswith(".gguf") and not sep else ""
        raise BackendError(f"{what} in {spec!r}{hint}; known schemes: {known}")
    return scheme, target.strip()


def scheme_kind(spec: str) -> SchemeKind:
    """'backend' for a model scheme, 'pair_judge' for a baseline."""
    return _REGISTRY[parse_spec(spec)[0]].kind


def _construct(spec: str, options: dict[str, Any]) -> Any:
    scheme, target = parse_spec(spec)
    options = {**split_options(spec)[1], **options}
    constructor = _REGISTRY[scheme].loader()
    params = inspect.signature(constructor).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "spec"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise BackendError(
                f"option(s) {', '.join(unknown)} not understood by the '{scheme}:' backend; "
                f"it takes: {', '.join(accepted) or 'no options'}"
            )
    return constructor(target, spec=spec, **options)


def make_backend(spec: str, **options: Any) -> Backend:
    """Create the model backend named by `spec`; `options` go to its constructor.

    Raises:
        BackendError: unknown scheme (the message lists the known ones), an option the backend
            does not take, a baseline spec (those judge pairs: use make_judge), or a model that
            cannot be loaded.
        MissingDependency: the backend's optional package is not installed (says what to pip-install).
    """
    if scheme_kind(spec) != "backend":
        raise BackendError(f"{spec!r} is a baseline that judges whole pairs, not prompts; use make_judge")
    backend: Backend = _construct(spec, options)
    return backend


def make_pair_judge(spec: str, *, mode: str = "score", **options: Any) -> Any:
    """Create the baseline named by `spec` (a PairJudge); used by judge.make_judge."""
    if scheme_kind(spec) != "pair_judge":
        raise BackendError(f"{spec!r} is a model backend, not a baseline")
    return _construct(spec, {"mode": mode, **options})


# --------------------------------------------------------------------------- built-in schemes


@register_backend("llamacpp")
def _llamacpp() -> Callable[..., Any]:
    from biasjudge.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend


@register_backend("hf")
def _hf() -> Callable[..., Any]:
    from biasjudge.backends.hf import HFBackend

    return HFBackend


@register_backend("openai")
def _openai() -> Callable[..., Any]:
    from biasjudge.backends.openai import OpenAIBackend

    return OpenAIBackend


@register_backend("vllm")
def _vllm() -> Callable[..., Any]:
    from biasjudge.backends.vllm import VLLMBackend

    return VLLMBackend
