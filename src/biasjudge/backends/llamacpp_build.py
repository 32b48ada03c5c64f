"""Build llama-cpp-python so that it runs on any x86-64 machine, and check that it runs.

Why this exists: llama-cpp-python compiles llama.cpp when pip installs it, and by default with
`-march=native` (`GGML_NATIVE=ON`): the binary uses every instruction the build machine's CPUID
lists. That breaks in two ways, both seen on this project's machines:

* a virtual machine whose CPU lists AMX (and AVX-512) without enabling their register state: ggml
  picks its AMX kernels and the first AMX instruction kills the process with SIGILL
  ("Illegal instruction"), with no Python exception to catch;
* pip's wheel cache keys a built wheel by its source, not by `CMAKE_ARGS` or the CPU: a native wheel
  built on one machine is reused on another (a shared cache, a copied home folder, a CI cache).

So biasjudge builds the wheel itself (:func:`build_wheel`, `biasjudge llama build`): portable flags by
default (:data:`PORTABLE_CMAKE_ARGS`, the reason beside each), never pip's cache, and its own cache
keyed by the version and the exact flags, so a portable wheel is reused only where it is valid
everywhere. ggml can also build every CPU variant and pick one at run time (`GGML_CPU_ALL_VARIANTS`),
but its picker reads CPUID, not what the OS enables (its own source says so: "this does not check for
OS support"), so on the machines above it picks the AMX variant and crashes the same way; an AVX2
baseline is the variant that runs everywhere it should. A native build (`--native`) is opt-in and
kept only when the smoke check passes.

The smoke check (:func:`smoke_check`, `biasjudge llama check`) loads a GGUF (the embedded Gemma 3
270M by default) and evaluates a short prompt and one more token in a child process, so a crash is a returncode and a
signal, turned into one message (:func:`failure_message`): what failed, the signal, the CPU features
the build uses against those the CPU lists, and the command that rebuilds portably.
:func:`ensure_llama_runs` runs it once per llama.cpp build (a stamp in the cache) before the llamacpp
backend loads a model, so the judge never dies on first contact.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from biasjudge.config import cache_dir
from biasjudge.errors import BackendError, BiasJudgeError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The llama-cpp-python release biasjudge builds (the one its tests and figures were measured with)."""

Variant = Literal["portable", "native"]

PORTABLE_CMAKE_ARGS: tuple[tuple[str, str], ...] = (
    ("-DGGML_NATIVE=OFF", "no -march=native: the binary must not depend on the CPU that compiled it"),
    ("-DGGML_SSE42=ON", "SSE4.2: every x86-64 CPU of the last 15 years"),
    ("-DGGML_AVX=ON", "AVX: part of the AVX2 baseline"),
    ("-DGGML_AVX2=ON", "AVX2, the baseline: Intel since Haswell (2013), AMD since Excavator (2015) and every Zen"),
    ("-DGGML_FMA=ON", "FMA: shipped with AVX2 on every such CPU"),
    ("-DGGML_F16C=ON", "F16C: shipped with AVX2 on every such CPU"),
    ("-DGGML_BMI2=ON", "BMI2: shipped with AVX2 on every such CPU"),
    ("-DGGML_AVX_VNNI=OFF", "AVX-VNNI: Intel Alder Lake and later only"),
    ("-DGGML_AVX512=OFF", "AVX-512: absent on many AMD and older or client Intel CPUs"),
    ("-DGGML_AVX512_VBMI=OFF", "AVX-512 VBMI: as AVX-512"),
    ("-DGGML_AVX512_VNNI=OFF", "AVX-512 VNNI: as AVX-512"),
    ("-DGGML_AVX512_BF16=OFF", "AVX-512 BF16: as AVX-512"),
    ("-DGGML_AMX_TILE=OFF", "AMX: a VM may list it in CPUID without enabling its tile state (SIGILL)"),
    ("-DGGML_AMX_INT8=OFF", "AMX INT8: as AMX"),
    ("-DGGML_AMX_BF16=OFF", "AMX BF16: as AMX"),
    ("-DLLAVA_BUILD=OFF", "the multimodal library: biasjudge never loads it, and it is a fifth of the compile"),
)
"""CMake flags of the portable x86-64 build, each with the reason it is set."""
GENERIC_CMAKE_ARGS: tuple[tuple[str, str], ...] = (
    ("-DGGML_NATIVE=OFF", "no -march=native: the compiler's generic target for this architecture"),
    ("-DLLAVA_BUILD=OFF", "the multimodal library: biasjudge never loads it"),
)
"""The portable build on other architectures (ARM and others): ggml's generic target."""
NATIVE_CMAKE_ARGS: tuple[tuple[str, str], ...] = (
    ("-DGGML_NATIVE=ON", "-march=native: every instruction this CPU lists (kept only if the smoke check passes)"),
    ("-DLLAVA_BUILD=OFF", "the multimodal library: biasjudge never loads it"),
)
"""CMake flags of the opt-in native build."""

CHECK_ENV = "BIASJUDGE_LLAMA_CHECK"
"""Set to 0 to skip the once-per-build smoke check before the llamacpp backend loads a model."""
REBUILD_HINT = "biasjudge llama build   (inside a checkout: make rebuild-llama)"
"""The command that replaces the installed llama-cpp-python with the portable build."""

# Features whose names llama.cpp's system info and Linux's /proc/cpuinfo spell differently.
_CPUINFO_NAME = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
    "AMX_BF16": "amx_bf16",
}


def is_x86_64() -> bool:
    """True on x86-64 (the portable flags are x86 flags)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def cmake_args(variant: Variant) -> list[str]:
    """The CMake flags of a build variant, in order.

    >>> "-DGGML_AMX_INT8=OFF" in cmake_args("portable") or not is_x86_64()
    True
    >>> cmake_args("native")[0]
    '-DGGML_NATIVE=ON'
    """
    portable = PORTABLE_CMAKE_ARGS if is_x86_64() else GENERIC_CMAKE_ARGS
    table = NATIVE_CMAKE_ARGS if variant == "native" else portable
    return [flag for flag, _ in table]


def wheel_cache_key(variant: Variant, version: str = LLAMA_CPP_PYTHON_VERSION) -> str | None:
    """The folder name a built wheel is cached under, or None for a build that is never cached.

    A portable wheel is the same whichever machine built it, so it is keyed by version, Python,
    architecture and the exact flags. A native wheel is only valid on the CPU (and OS) that built it,
    and nothing reliable tells that machine apart from another with the same CPUID: it is never cached.

    >>> wheel_cache_key("native") is None
    True
    >>> wheel_cache_key("portable").startswith(f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-portable-")
    True
    """
    if variant == "native":
        return None
    digest = hashlib.sha256(" ".join(cmake_args(variant)).encode()).hexdigest()[:12]
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return f"llama-cpp-python-{version}-{variant}-{python}-{platform.machine().lower()}-{digest}"


class LlamaBuildError(BiasJudgeError):
    """Building or installing llama-cpp-python failed; the message names the log file."""


def _run_logged(command: Sequence[str], *, env: dict[str, str], log: Path, what: str) -> None:
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(list(command), env=env, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise LlamaBuildError(f"{what} failed (exit {done.returncode}); log: {log}\n" + "\n".join(tail))


def build_wheel(
    variant: Variant = "portable",
    *,
    python: str = sys.executable,
    version: str = LLAMA_CPP_PYTHON_VERSION,
    jobs: int | None = None,
    log: Path | None = None,
    rebuild: bool = False,
) -> tuple[Path, bool]:
    """(the llama-cpp-python wheel of `variant`, whether it came from biasjudge's cache).

    The wheel is compiled from the source distribution with `pip wheel --no-cache-dir
    --no-binary llama-cpp-python` (pip's own cache is neither read nor written) and `CMAKE_ARGS`
    = :func:`cmake_args`; a portable one is kept in `<cache>/wheels/<key>/` and reused (unless
    `rebuild`). Compiling takes about 5 minutes on 2 cores.
    """
    key = wheel_cache_key(variant, version)
    cached_dir = cache_dir() / "wheels" / key if key else None
    if cached_dir is not None and not rebuild:
        found = sorted(cached_dir.glob("llama_cpp_python-*.whl"))
        if found:
            return found[0], True
    work = Path(tempfile.mkdtemp(prefix="biasjudge-llama-build-"))
    log = log or work / "build.log"
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(cmake_args(variant))
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(jobs or os.cpu_count() or 1)
    env.pop("FORCE_CMAKE", None)
    command = [
        python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--no-binary", "llama-cpp-python",
        "-w", str(work / "dist"), f"llama-cpp-python=={version}",
    ]  # fmt: skip
    _run_logged(command, env=env, log=log, what=f"compiling llama-cpp-python {version} ({variant})")
    wheels = sorted((work / "dist").glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise LlamaBuildError(f"pip built no llama-cpp-python wheel; log: {log}")
    if cached_dir is None:
        return wheels[0], False
    # Into the cache through a staging folder and a rename, so a killed build leaves no half entry.
    cached_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cached_dir.parent, prefix=".staging-"))
    shutil.copy2(wheels[0], staging / wheels[0].name)
    (staging / "cmake_args.json").write_text(json.dumps(cmake_args(variant), indent=1) + "\n")
    if cached_dir.exists():
        shutil.rmtree(cached_dir)
    staging.rename(cached_dir)
    return cached_dir / wheels[0].name, False


def install_wheel(wheel: Path, *, python: str = sys.executable, log: Path | None = None) -> None:
    """Install `wheel` in place of any llama-cpp-python there, with its server extra's dependencies.

    `--force-reinstall --no-deps` replaces the package even at the same version (pip would keep a
    native build of it otherwise); the second install only adds what the `[server]` extra needs.
    """
    log = log or Path(tempfile.mkdtemp(prefix="biasjudge-llama-install-")) / "install.log"
    env = dict(os.environ)
    pip = [python, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"]
    _run_logged([*pip, "--force-reinstall", "--no-deps", str(wheel)], env=env, log=log, what="installing the wheel")
    _run_logged([*pip, f"{wheel}[server]"], env=env, log=log, what="installing llama-cpp-python's server extra")


# --------------------------------------------------------------------------- the smoke check

_CHILD = r"""
import sys
import llama_cpp
print("SYSTEM_INFO " + llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(), flush=True)
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, n_batch=64, verbose=False)
tokens = llm.tokenize(b"A grandson and his grandfather were outside the store, trying to book a cab. "
                      b"Who was not comfortable using the phone?", add_bos=True)
llm.eval(tokens)  # a prompt: the batched matrix kernels (ggml's AMX ones, where a build has them)
llm.eval([tokens[-1]])  # one token: the decode kernels
print("OK", flush=True)
"""
"""The child's program: print the build's CPU features, load the model, evaluate a short prompt,
then one more token. One token alone is not enough: a native build on a VM that lists AMX without
enabling it evaluates one token fine and dies with SIGILL on the first batch of two or more
(measured here: ggml runs its AMX kernels only for batched matrix products)."""


@dataclass
class SmokeResult:
    """What the smoke check's child process did."""

    ok: bool
    """Loaded the model and evaluated a prompt and a token."""
    returncode: int | None
    """The child's exit status (negative: killed by that signal); None when it timed out."""
    model: str
    """The GGUF it loaded."""
    seconds: float
    build_features: list[str] = field(default_factory=list)
    """CPU features the llama.cpp build uses (its system info), e.g. AVX2, AVX512, AMX_INT8."""
    output: str = ""
    """The child's last output lines (stdout and stderr), traceback frames left out."""

    @property
    def signal_name(self) -> str | None:
        """SIGILL, SIGSEGV, ... when the child was killed by a signal."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


def parse_system_info(text: str) -> list[str]:
    """The CPU features switched on in llama.cpp's system info line (`AVX2 = 1 | ...`).

    >>> parse_system_info("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 1 | OPENMP = 1 |")
    ['SSE3', 'AVX2', 'AMX_INT8', 'OPENMP']
    """
    found = []
    for part in text.replace("CPU :", "|").split("|"):
        name, _, value = part.partition("=")
        if value.strip() == "1":
            found.append(name.strip())
    return found


def cpu_listed_features() -> set[str]:
    """The CPU feature flags the OS lists (/proc/cpuinfo on Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def default_check_model() -> Path:
    """The GGUF the smoke check loads by default: the embedded Gemma 3 270M."""
    from biasjudge.backends.embedded import embedded_gguf_path

    return embedded_gguf_path()


def smoke_check(
    model: Path | None = None,
    *,
    python: str = sys.executable,
    timeout_s: float = 300.0,
    child_program: str = _CHILD,
    env: dict[str, str] | None = None,
) -> SmokeResult:
    """Load `model` (default: the embedded 270M) and evaluate a short prompt and one token in a child process.

    A crash of llama.cpp (SIGILL from an instruction the machine refuses, SIGSEGV, an abort) ends
    the child, not the caller: the result carries the returncode and what the child printed.
    `child_program` is the Python source the child runs (`argv[1]` = the model path).
    """
    path = model or default_check_model()
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [python, "-c", child_program, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            errors="replace",
        )
        returncode: int | None = done.returncode
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = None
        output = _text(exc.stdout) + _text(exc.stderr) + f"\n(no answer in {timeout_s:.0f} s)"
    seconds = time.perf_counter() - start
    features: list[str] = []
    for line in output.splitlines():
        if line.startswith("SYSTEM_INFO "):
            features = parse_system_info(line[len("SYSTEM_INFO ") :])
    ok = returncode == 0 and any(line.strip() == "OK" for line in output.splitlines())
    # The child's own words, without a Python traceback's frames (its last line says what failed).
    said = [line for line in output.splitlines() if line.strip() and not line.startswith((" ", "Traceback", "SYSTEM"))]
    tail = "\n".join(said[-6:])
    return SmokeResult(ok, returncode, str(path), seconds, features, tail)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


SIGNAL_MEANING = {
    "SIGILL": "illegal instruction",
    "SIGSEGV": "segmentation fault",
    "SIGABRT": "abort",
    "SIGBUS": "bus error",
    "SIGKILL": "killed (out of memory?)",
}


def failure_message(result: SmokeResult, listed: set[str] | None = None) -> str:
    """One message for a failed smoke check: what failed, the signal, the CPU features involved,
    and the command that rebuilds llama-cpp-python portably."""
    listed = cpu_listed_features() if listed is None else listed
    what = f"llama.cpp could not load {result.model} and evaluate a short prompt"
    if result.returncode is None:
        cause = "it did not answer in time"
    elif result.signal_name:
        meaning = SIGNAL_MEANING.get(result.signal_name, "killed by a signal")
        cause = f"the process was killed by {result.signal_name} ({meaning})"
    else:
        cause = f"the process exited with status {result.returncode}"
    simd = [f for f in result.build_features if f in _CPUINFO_NAME]
    lines = [f"{what}: {cause}."]
    if simd:
        lines.append("The installed llama.cpp build uses: " + ", ".join(simd) + ".")
    if listed and simd:
        missing = [f for f in simd if _CPUINFO_NAME[f] not in listed]
        if missing:
            lines.append("This CPU does not list: " + ", ".join(missing) + ".")
        risky = [f for f in simd if f.startswith(("AMX", "AVX512")) and _CPUINFO_NAME[f] in listed]
        if risky and result.signal_name == "SIGILL":
            lines.append(
                "This CPU lists " + ", ".join(risky) + ", but the machine refuses an instruction: a virtual "
                "machine can list a feature it does not enable (AMX, AVX-512), and a wheel built "
                "for another CPU (pip's cache) uses what this one lacks."
            )
    if result.signal_name == "SIGILL" or not simd:
        lines.append(f"Rebuild llama-cpp-python portably (AVX2 baseline, about 5 minutes): {REBUILD_HINT}")
    if result.output and not result.signal_name:  # a signal's victim says nothing useful (llama.cpp's notes)
        lines.append("Its last output:\n" + result.output)
    return "\n".join(lines)


# --------------------------------------------------------------------------- once per build


def build_fingerprint() -> str | None:
    """A hash identifying the installed llama.cpp build (its shared libraries' paths, sizes and
    modification times) and this CPU's listed features; None when llama_cpp is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    parts = [str(lib), platform.machine(), " ".join(sorted(cpu_listed_features()))]
    for path in sorted(lib.glob("*.so*")) + sorted(lib.glob("*.dylib")) + sorted(lib.glob("*.dll")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def ensure_llama_runs(model: Path | None = None, *, check: Callable[..., SmokeResult] = smoke_check) -> None:
    """Raise BackendError with :func:`failure_message` if this llama.cpp build crashes here.

    Runs the smoke check once per build and machine (a stamp under `<cache>/llama-checks/`), so
    loading a model later cannot kill the process with an illegal instruction. `model` is loaded
    when the embedded GGUF is not installed. Skipped when $BIASJUDGE_LLAMA_CHECK is 0.
    """
    if os.environ.get(CHECK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    fingerprint = build_fingerprint()
    if fingerprint is None:
        return  # llama_cpp is missing: the backend raises MissingDependency itself
    stamp = cache_dir() / "llama-checks" / f"{fingerprint}.json"
    if stamp.is_file():
        return
    try:
        target = default_check_model()
    except BiasJudgeError:
        if model is None:
            return
        target = model
    result = check(target)
    if not result.ok:
        raise BackendError(failure_message(result))
    stamp.parent.mkdir(parents=True, exist_ok=True)
    staging = stamp.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps({"model": result.model, "features": result.build_features}) + "\n")
    staging.replace(stamp)
