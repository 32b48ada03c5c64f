"""The portable llama.cpp build and the smoke check (biasjudge.backends.llamacpp_build, `biasjudge llama`).

The crash the check exists for is produced for real: a child process executes `ud2`, the x86
instruction defined to raise an invalid-opcode fault, so the kernel kills it with SIGILL exactly as
it kills llama.cpp on a machine that refuses an AMX instruction.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biasjudge.backends import llamacpp_build as build
from biasjudge.cli.main import app
from biasjudge.errors import BackendError

X86 = build.is_x86_64()
ILLEGAL_INSTRUCTION_CHILD = r"""
import ctypes, mmap
print("SYSTEM_INFO CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 |", flush=True)
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(b"\x0f\x0b")  # ud2
ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
print("OK", flush=True)
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "biasjudge"


def test_portable_flags_leave_out_what_a_vm_may_refuse() -> None:
    flags = build.cmake_args("portable")
    if X86:
        for off in ("GGML_NATIVE", "GGML_AVX512", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
            assert f"-D{off}=OFF" in flags
        for on in ("GGML_AVX2", "GGML_FMA", "GGML_F16C"):
            assert f"-D{on}=ON" in flags
    else:
        assert flags[0] == "-DGGML_NATIVE=OFF"
    assert build.cmake_args("native")[0] == "-DGGML_NATIVE=ON"
    # Every flag carries its reason.
    assert all(reason for _, reason in build.PORTABLE_CMAKE_ARGS + build.NATIVE_CMAKE_ARGS)


def test_only_the_portable_wheel_is_cached_and_its_key_names_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    key = build.wheel_cache_key("portable")
    assert key is not None and key == build.wheel_cache_key("portable")
    assert build.wheel_cache_key("native") is None
    monkeypatch.setattr(build, "PORTABLE_CMAKE_ARGS", (*build.PORTABLE_CMAKE_ARGS, ("-DGGML_LTO=ON", "other")))
    monkeypatch.setattr(build, "GENERIC_CMAKE_ARGS", (*build.GENERIC_CMAKE_ARGS, ("-DGGML_LTO=ON", "other")))
    assert build.wheel_cache_key("portable") != key


def test_a_cached_portable_wheel_is_reused_without_compiling(cache: Path) -> None:
    key = build.wheel_cache_key("portable")
    assert key is not None
    folder = cache / "wheels" / key
    folder.mkdir(parents=True)
    wheel = folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.write_bytes(b"not compiled here")
    # A python that cannot run pip would fail any compile: the cached wheel must come back untouched.
    assert build.build_wheel("portable", python="/nonexistent/python") == (wheel, True)


def test_a_failed_build_names_its_log(cache: Path) -> None:
    with pytest.raises(build.LlamaBuildError, match=r"compiling llama-cpp-python 0\.0\.0 \(native\) failed.*log: "):
        build.build_wheel("native", version="0.0.0")
    assert not (cache / "wheels").exists()  # nothing half-built was cached


def test_the_installed_build_is_portable_and_runs(gguf_model: Path) -> None:
    result = build.smoke_check(gguf_model)
    assert result.ok, build.failure_message(result)
    assert result.returncode == 0 and result.signal_name is None
    if X86:
        # make's venv installs the portable build: AVX2, and none of what a VM may refuse.
        assert "AVX2" in result.build_features
        assert not [f for f in result.build_features if f.startswith(("AVX512", "AMX"))], result.build_features


@pytest.mark.skipif(not X86, reason="ud2 is an x86 instruction")
def test_an_illegal_instruction_becomes_one_clear_message() -> None:
    result = build.smoke_check(Path("model.gguf"), child_program=ILLEGAL_INSTRUCTION_CHILD)
    assert not result.ok
    assert result.signal_name == "SIGILL"
    assert result.build_features == ["SSE3", "AVX", "AVX2", "AVX512", "AMX_INT8", "OPENMP"]
    listed = {"avx", "avx2", "avx512f", "amx_int8", "pni"}
    message = build.failure_message(result, listed)
    assert "killed by SIGILL (illegal instruction)" in message
    assert "uses: SSE3, AVX, AVX2, AVX512, AMX_INT8." in message
    assert "This CPU lists AVX512, AMX_INT8" in message
    assert build.REBUILD_HINT in message
    # On a CPU that lacks a feature the build uses, the message names it.
    assert "This CPU does not list: AMX_INT8." in build.failure_message(result, {"avx", "avx2", "avx512f", "pni"})


def test_a_hung_child_is_a_timeout_not_a_hang() -> None:
    result = build.smoke_check(Path("model.gguf"), child_program="import time; time.sleep(30)", timeout_s=1)
    assert not result.ok and result.returncode is None
    assert "did not answer in time" in build.failure_message(result, set())


@pytest.mark.skipif(not X86, reason="ud2 is an x86 instruction")
def test_the_backend_refuses_to_load_a_build_that_crashes(cache: Path, gguf_model: Path) -> None:
    calls: list[Path] = []

    def crashing(model: Path) -> build.SmokeResult:
        calls.append(model)
        return build.smoke_check(model, child_program=ILLEGAL_INSTRUCTION_CHILD)

    with pytest.raises(BackendError, match="SIGILL"):
        build.ensure_llama_runs(gguf_model, check=crashing)
    with pytest.raises(BackendError, match="SIGILL"):
        build.ensure_llama_runs(gguf_model, check=crashing)
    assert len(calls) == 2  # a failure is never stamped: it is checked again next time
    assert not list(cache.glob("llama-checks/*.json"))


def test_a_passing_build_is_checked_once(cache: Path, gguf_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def counting(model: Path) -> build.SmokeResult:
        calls.append(model)
        return build.smoke_check(model)

    build.ensure_llama_runs(gguf_model, check=counting)
    build.ensure_llama_runs(gguf_model, check=counting)
    assert calls == [gguf_model]
    stamps = list((cache / "llama-checks").glob("*.json"))
    assert len(stamps) == 1
    assert json.loads(stamps[0].read_text())["model"] == str(gguf_model)
    monkeypatch.setenv(build.CHECK_ENV, "0")
    stamps[0].unlink()
    build.ensure_llama_runs(gguf_model, check=counting)
    assert len(calls) == 1  # switched off: not run


def test_cli_check_passes_here_and_fails_clearly_on_a_bad_model(tmp_path: Path, gguf_model: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["llama", "check"])
    assert ok.exit_code == 0, ok.output
    assert "evaluated a prompt" in ok.output
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really")
    failed = runner.invoke(app, ["llama", "check", "--model", str(bad)])
    assert failed.exit_code != 0
    assert isinstance(failed.exception, BackendError)
    assert f"could not load {bad}" in str(failed.exception)
    assert "exited with status 1" in str(failed.exception)


def test_cli_check_exits_2_with_one_message(tmp_path: Path, gguf_model: Path) -> None:
    import subprocess

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really")
    done = subprocess.run(
        [sys.executable, "-m", "biasjudge.cli.main", "llama", "check", "--model", str(bad)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "error:" in done.stderr and "could not load" in done.stderr
    assert "Traceback" not in done.stderr
