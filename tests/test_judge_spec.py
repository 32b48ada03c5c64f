"""Judge specs: parsed once into a JudgeSpec, which gives its string back; options routed by kind;
the pair-judge registry imports nothing until a judge is made."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biasjudge.backends import registry
from biasjudge.backends.registry import make_backend, register_backend
from biasjudge.config import JudgeSpec
from biasjudge.errors import BackendError
from biasjudge.judge.registry import PAIR_JUDGES, make_judge

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_./-", min_size=1, max_size=12)


@given(
    scheme=st.sampled_from(["reader", "llamacpp", "hf", "openai", "answer-key", "route"]),
    target=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_./#:-", max_size=20),
    options=st.lists(st.tuples(WORD, WORD), max_size=4, unique_by=lambda kv: kv[0]),
)
def test_a_spec_gives_its_string_back(scheme: str, target: str, options: list[tuple[str, str]]) -> None:
    text = f"{scheme}:{target}" + ("?" + "&".join(f"{k}={v}" for k, v in options) if options else "")
    spec = JudgeSpec.parse(text)
    assert str(spec) == text
    assert JudgeSpec.parse(str(spec)) == spec
    assert (spec.scheme, spec.target) == (scheme, target)


def test_options_are_routed_to_backend_judge_and_wrappers() -> None:
    spec = JudgeSpec.parse("hf:m?batch_size=4&backend.batch_size=2&order=single&dtype=float32")
    assert spec.backend_options == {"batch_size": 2, "order": "single", "dtype": "float32"}
    assert spec.judge_options == {"batch_size": 4}
    with pytest.raises(BackendError, match="parse_mode, max_tokens"):
        JudgeSpec.parse("hf:m?judge.batchsize=2")
    with pytest.raises(BackendError, match="SCHEME:TARGET"):
        JudgeSpec.parse("model.gguf")


def test_with_options_replaces_or_appends() -> None:
    spec = JudgeSpec.parse("llamacpp:embedded?order=both&n_ctx=1024")
    assert str(spec.with_options(order="single")) == "llamacpp:embedded?order=single&n_ctx=1024"
    assert str(spec.with_options(abstain_below=0.6)) == "llamacpp:embedded?order=both&n_ctx=1024&abstain_below=0.6"


def test_a_prefixed_option_reaches_the_backend_the_bare_one_the_judge(scratch_registry: None) -> None:
    class Echo:
        def __init__(self, target: str, *, spec: str, batch_size: int = 1) -> None:
            self.spec, self.batch_size = spec, batch_size

        def count_tokens(self, text: str) -> int:
            return len(text.split())

        def close(self) -> None:
            pass

    register_backend("echo-spec")(lambda: Echo)
    judge = make_judge("echo-spec:x?backend.batch_size=3&batch_size=5&order=single")
    assert judge.backend.batch_size == 3 and judge.batch_size == 5  # type: ignore[attr-defined]
    assert judge.spec == "echo-spec:x?backend.batch_size=3&batch_size=5&order=single"
    assert make_backend("echo-spec:x?backend.batch_size=7").batch_size == 7  # type: ignore[attr-defined]


def test_an_unknown_option_names_the_options_the_scheme_takes() -> None:
    with pytest.raises(BackendError, match=r"not understood by the 'random:' judge; it takes: mode"):
        make_judge("random:?temperature=1")
    with pytest.raises(BackendError, match=r"unknown backend scheme 'ollama:'") as err:
        make_judge("ollama:gemma3")
    assert "'reader:'" in str(err.value) and "'llamacpp:'" in str(err.value)  # both kinds listed


def test_wrappers_given_as_arguments_are_written_into_the_spec() -> None:
    judge = make_judge("answer-key:", order="single", calibration=None)
    assert judge.spec == "answer-key:?order=single"
    assert make_judge("answer-key:?order=both", order="single").spec == "answer-key:?order=both"


def test_the_registries_import_no_judge_until_one_is_made() -> None:
    code = (
        "import sys, biasjudge.judge.registry as r\n"
        "loaded = sorted({s.module for s in r.PAIR_JUDGES.values()} & set(sys.modules))\n"
        "r.make_judge('always-tie:')\n"
        "print(loaded, 'biasjudge.judge.baselines' in sys.modules, 'biasjudge.judge.reading.judge' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True", "False"]
    assert set(PAIR_JUDGES).isdisjoint(registry.SCHEMES)  # one registry per kind
