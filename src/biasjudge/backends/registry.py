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

Backends are registered here (:func:`register_backend`); the pair-judge schemes (reader, text,
baselines, hybrid, replay, route) in :mod:`biasjudge.judge.registry`, beside the judges they make:
backends never import the judge package. A spec string is parsed once into a
:class:`~biasjudge.config.JudgeSpec`; options ride on it after `?`.

A factory imports its module only when called, so naming a backend never costs the import of
another one. :func:`biasjudge.judge.make_judge` takes specs of both kinds.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from biasjudge.backends.base import Backend
from biasjudge.config import JudgeSpec
from biasjudge.errors import BackendError

DEFAULT_JUDGE_SPEC = "reader:"
"""The judge used when none is named: the question reader (biasjudge.judge.reading), which reads the
question with a trained analysis model, then what each response chose, and writes its reasons."""
PAIRWISE_JUDGE_SPEC = "llamacpp:embedded"
"""biasjudge's pairwise judge: a LoRA adapter shipped in the package on the embedded Gemma 3 270M,
through llama.cpp, both orders combined (the default before the question reader; kept to compare)."""
EMBEDDED_BASE_SPEC = "llamacpp:embedded-base"
"""The embedded Gemma 3 270M as it comes from PyPI: pretrained, untrained as a judge."""


@dataclass(frozen=True)
class LazyClass:
    """Where a class lives; imported only by :meth:`load` (naming a scheme costs no import)."""

    module: str
    name: str

    def load(self) -> Callable[..., Any]:
        """The class."""
        constructor: Callable[..., Any] = getattr(importlib.import_module(self.module), self.name)
        return constructor


@dataclass(frozen=True)
class _Scheme:
    name: str
    loader: Callable[[], Callable[..., Any]]
    """Imports the backend module and returns its constructor `(target, *, spec, **options)`."""


_REGISTRY: dict[str, _Scheme] = {}
SCHEMES: tuple[str, ...] = ()
"""Registered backend schemes, in registration order (kept up to date by register_backend)."""


def register_backend(scheme: str) -> Callable[[Callable[[], Callable[..., Any]]], Callable[[], Callable[..., Any]]]:
    """Register a lazy factory for the backend scheme `scheme`.

    The decorated function takes no argument, imports its module and returns the constructor,
    which is called as `constructor(target, spec=spec, **options)`::

        @register_backend("mybackend")
        def _mybackend():
            from mypackage.backend import MyBackend
            return MyBackend
    """

    def decorate(loader: Callable[[], Callable[..., Any]]) -> Callable[[], Callable[..., Any]]:
        global SCHEMES
        _REGISTRY[scheme] = _Scheme(scheme, loader)
        SCHEMES = tuple(_REGISTRY)
        return loader

    return decorate


def is_backend(spec: str | JudgeSpec) -> bool:
    """Whether `spec` names a model backend (rather than a pair judge, or nothing known)."""
    return JudgeSpec.parse(spec).scheme in _REGISTRY


def unknown_scheme(spec: JudgeSpec | str, known: Sequence[str]) -> BackendError:
    """The error for a scheme nobody registered, listing the `known` ones."""
    scheme = JudgeSpec.parse(spec).scheme
    listed = ", ".join(f"'{s}:'" for s in known)
    return BackendError(f"unknown backend scheme '{scheme}:' in {str(spec)!r}; known schemes: {listed}")


def construct(kind: str, constructor: Callable[..., Any], spec: JudgeSpec, options: dict[str, Any]) -> Any:
    """`constructor(target, spec=str(spec), **options)`, after checking that it takes each option
    (an unknown one raises BackendError naming the options it takes)."""
    params = inspect.signature(constructor).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "spec"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise BackendError(
                f"option(s) {', '.join(unknown)} not understood by the '{spec.scheme}:' {kind}; "
                f"it takes: {', '.join(accepted) or 'no options'}"
            )
    return constructor(spec.target, spec=str(spec), **options)


def make_backend(spec: str | JudgeSpec, **options: Any) -> Backend:
    """Create the model backend named by `spec`; its backend options and `options` go to its constructor.

    Raises:
        BackendError: unknown scheme (the message lists the known ones), an option the backend
            does not take, a pair-judge spec (answer-key:, reader:, ...: those judge whole pairs,
            use :func:`biasjudge.judge.make_judge`), or a model that cannot be loaded.
        MissingDependency: the backend's optional package is not installed (says what to pip-install).
    """
    parsed = JudgeSpec.parse(spec)
    return build_backend(parsed, {**parsed.backend_options, **options})


def build_backend(spec: JudgeSpec, options: dict[str, Any]) -> Backend:
    """The backend of `spec` made with exactly `options` (make_backend adds the spec's own); the
    backend records `str(spec)`."""
    if spec.scheme not in _REGISTRY:
        error = unknown_scheme(spec, SCHEMES)
        raise BackendError(f"{error}; pair judges (answer-key:, reader:, ...) are made by make_judge")
    backend: Backend = construct("backend", _REGISTRY[spec.scheme].loader(), spec, options)
    return backend


# --------------------------------------------------------------------------- built-in schemes

BUILT_IN_BACKENDS: dict[str, LazyClass] = {
    "llamacpp": LazyClass("biasjudge.backends.llamacpp", "LlamaCppBackend"),
    "hf": LazyClass("biasjudge.backends.hf", "HFBackend"),
    "openai": LazyClass("biasjudge.backends.openai", "OpenAIBackend"),
    "vllm": LazyClass("biasjudge.backends.vllm", "VLLMBackend"),
}
"""The backends that come with biasjudge; add one here to add a backend."""

for _scheme, _constructor in BUILT_IN_BACKENDS.items():
    register_backend(_scheme)(_constructor.load)
