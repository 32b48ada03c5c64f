"""Spec strings -> backends: known schemes, clear errors, lazy optional imports."""

from __future__ import annotations

import sys

import pytest

from biasjudge.backends import registry
from biasjudge.backends.registry import (
    DEFAULT_JUDGE_SPEC,
    PAIRWISE_JUDGE_SPEC,
    SCHEMES,
    make_backend,
    register_backend,
)
from biasjudge.config import JudgeSpec
from biasjudge.errors import BackendError, MissingDependency
from biasjudge.judge.registry import PAIR_JUDGES, scheme_kind


def parse_spec(spec: str) -> tuple[str, str]:
    parsed = JudgeSpec.parse(spec)
    return parsed.scheme, parsed.target


def test_builtin_schemes_are_registered() -> None:
    assert {"llamacpp", "hf", "openai", "vllm"} <= set(SCHEMES)
    assert {"answer-key", "always-tie", "random"} <= set(PAIR_JUDGES)
    assert DEFAULT_JUDGE_SPEC == "reader:" and scheme_kind(DEFAULT_JUDGE_SPEC) == "pair_judge"
    assert PAIRWISE_JUDGE_SPEC == "llamacpp:embedded" and scheme_kind(PAIRWISE_JUDGE_SPEC) == "backend"
    assert scheme_kind("answer-key:") == "pair_judge"
    assert scheme_kind("hf:google/gemma-3-270m") == "backend"


def test_parse_spec_keeps_the_whole_target() -> None:
    assert parse_spec("openai:http://127.0.0.1:8080/v1#gemma") == ("openai", "http://127.0.0.1:8080/v1#gemma")
    assert parse_spec("llamacpp:") == ("llamacpp", "")
    assert parse_spec("LlamaCpp:/m.gguf") == ("llamacpp", "/m.gguf")


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(BackendError) as err:
        make_backend("ollama:gemma3")
    message = str(err.value)
    assert "unknown backend scheme 'ollama:'" in message
    for scheme in SCHEMES:
        assert f"'{scheme}:'" in message


def test_spec_without_scheme_hints_at_llamacpp_for_gguf() -> None:
    with pytest.raises(BackendError, match=r"llamacpp:PATH\.gguf"):
        make_backend("model.gguf")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(MissingDependency) as err:
        make_backend("llamacpp:")
    assert "pip install 'biasjudge[llamacpp]'" in str(err.value)
    assert "llama-cpp-python" in str(err.value)


def test_vllm_without_vllm_is_a_clear_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # this machine has no vllm (nor GPU) either way
    with pytest.raises(MissingDependency, match=r"pip install 'biasjudge\[vllm\]'"):
        make_backend("vllm:google/gemma-3-270m")


def test_unknown_option_lists_accepted_ones() -> None:
    with pytest.raises(BackendError) as err:
        make_backend("openai:http://127.0.0.1:9/v1#m", temprature=0.3)
    assert "temprature" in str(err.value) and "use_chat" in str(err.value)


def test_baselines_are_not_prompt_backends() -> None:
    with pytest.raises(BackendError, match="make_judge"):
        make_backend("answer-key:")


def test_register_backend_adds_a_lazy_scheme(scratch_registry: None) -> None:
    loaded: list[str] = []

    class Echo:
        def __init__(self, target: str, *, spec: str, greeting: str = "hi") -> None:
            self.spec, self.target, self.greeting = spec, target, greeting

    @register_backend("echo")
    def _echo() -> type[Echo]:
        loaded.append("echo")
        return Echo

    assert loaded == []  # registering imports nothing
    assert "echo" in registry.SCHEMES
    backend = make_backend("echo:x", greeting="hello")
    assert loaded == ["echo"]
    assert (backend.spec, backend.target, backend.greeting) == ("echo:x", "x", "hello")  # type: ignore[attr-defined]
