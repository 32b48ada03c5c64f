"""Shared fixtures.

`shared_data` is the one way tests reach `../shared/data`: missing data skips the test with the
reason. Under CI=true no test may skip (missing data, a missing model, `pytest.importorskip` of an
extra): every skip is turned into a failure, so CI cannot pass by testing less.
`scratch_registry` lets a test register backend schemes; the autouse check fails any test that
leaves a scheme (or any other global registration) behind.
`gguf_model` is the embedded Gemma 3 270M GGUF from PyPI, assembled once per session.
`llama_server` is a real OpenAI-compatible server (llama-cpp-python's) running it on loopback, one
per session (tests/llama_server.py), for the stages that would call a paid API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from biasjudge.backends import registry
from biasjudge.config import resolve_data_dir

IN_CI = os.environ.get("CI") == "true"


def _missing(reason: str) -> None:
    pytest.skip(reason)


def _fail_skips_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


LONGEST_FIRST = (
    "test_reader_recipe.py",
    "test_batch.py",
    "test_backends_openai.py",
    "test_bad_input.py",
    "test_backends_llamacpp.py",
    "test_packaging.py",
    "test_web.py",
    "test_train_sft.py",
    "test_judge.py",
    "test_serve.py",
    "test_train_dpo.py",
    "test_costs.py",
)
"""The test files that take longest, longest first (measured with --durations=0: 37 s down to
11 s each). Under pytest-xdist `--dist loadfile --no-loadscope-reorder` (the Makefile's) a file runs whole
on one worker, in collection order: started last, a long file leaves the other worker idle at the end;
started first, the short files fill in beside it."""


def _one_cpu_per_worker(index: int) -> None:
    """Pin this worker to one CPU and its torch and OpenMP pools to one thread. Left to themselves,
    two workers on two cores each ran torch and llama.cpp with a thread per core: four busy threads
    on two cores, which spend their time waiting on each other. The llama.cpp backend sizes its
    threads by the CPUs the process may use, so it follows the pin; subprocesses inherit it."""
    if not hasattr(os, "sched_setaffinity"):  # macOS: no CPU pinning
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest files first (:data:`LONGEST_FIRST`), every other file after them in its order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker keeps to one CPU of its own, and the controller assembles the
    embedded GGUF once, before the workers start, so that two workers never assemble the same file
    at the same time."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        _one_cpu_per_worker(int(worker["workerid"].removeprefix("gw")))
        return
    if not config.getoption("numprocesses", None):
        return
    try:
        from biasjudge.backends.embedded import embedded_gguf_path

        embedded_gguf_path()
    except Exception:  # the gguf_model fixture reports a missing model, per test
        pass


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the backend registry for this test: schemes it registers vanish afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "SCHEMES", registry.SCHEMES)


@pytest.fixture(autouse=True)
def _no_leaked_registrations() -> Iterator[None]:
    before = registry.SCHEMES
    yield
    leaked = sorted(set(registry.SCHEMES) - set(before))
    assert not leaked, f"the test left backend schemes registered: {leaked} (use the scratch_registry fixture)"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = resolve_data_dir()
    if not (root / "judge-from-scratch" / "pairs.jsonl").exists():
        _missing(f"shared data not found at {root}; set BIASJUDGE_DATA_DIR")
    return root


@pytest.fixture(scope="session")
def jfs(shared_data: Path) -> Path:
    """The judge-from-scratch folder."""
    return shared_data / "judge-from-scratch"


@pytest.fixture(scope="session")
def gguf_model() -> Path:
    try:
        from biasjudge.backends.embedded import embedded_gguf_path
    except ImportError as exc:  # pragma: no cover - depends on the environment
        _missing(f"embedded model support missing: {exc}")
    try:
        return embedded_gguf_path()
    except Exception as exc:  # the package is an optional extra
        _missing(f"embedded GGUF not available: {exc}")
        raise


@pytest.fixture(scope="session")
def llama_server(gguf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The `/v1` URL of llama-cpp-python's server running the embedded GGUF (any model name is accepted)."""
    from llama_server import llama_server_process

    with llama_server_process(gguf_model, tmp_path_factory.mktemp("llama_server"), "--n_ctx", "2048") as url:
        yield url
