"""`biasjudge robustness`: flip rates of judges on twins of holdout pairs (injection, benign, length)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from biasjudge.cli.common import DataDirOption, Mode, ModeOption, SystemPromptOption, console
from biasjudge.cli.eval import BatchOption, HoldoutOption, LevelsOption, NamesOption

if TYPE_CHECKING:
    from biasjudge.records import JudgeMode


def robustness_command(
    judge: Annotated[
        list[str] | None,
        typer.Option(
            "--judge",
            "-j",
            help=(
                "Judge spec (repeat for several columns). Default: 'reader:', the shipped default judge. "
                "Others: 'text:' (the free-text judge), 'llamacpp:embedded' (the pairwise LoRA), 'answer-key:', "
                "'hybrid:', 'random:', 'llamacpp:PATH.gguf', 'hf:MODEL', ... "
                "'hybrid:replay:<out>/<judge>/robustness-predictions.json' reuses a run's probabilities."
            ),
            show_default=False,
        ),
    ] = None,
    name: NamesOption = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help=(
                "Output folder: robustness.json, robustness.md, <name>/robustness-cache.jsonl (resumable). "
                "An eval folder works too: its report then gets a robustness section."
            ),
            file_okay=False,
        ),
    ] = Path("runs/robustness"),
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            help="Judge a subset of N holdout pairs, stratified over slices and buckets (default: all).",
            show_default=False,
        ),
    ] = None,
    twins: Annotated[
        str | None,
        typer.Option(
            "--twins",
            help="Comma list of twin or family names (injection, benign, length). Default: every twin.",
            show_default=False,
        ),
    ] = None,
    holdout: HoldoutOption = None,
    levels_from: LevelsOption = None,
    mode: ModeOption = Mode.score,
    system_prompt_file: SystemPromptOption = None,
    batch_size: BatchOption = 16,
    data_dir: DataDirOption = None,
) -> None:
    """Flip rates of judges on twins of holdout pairs: injections (forged tags, turn markers,
    "ignore the instructions"), benign edits (whitespace, punctuation, case, order) and padding."""
    from biasjudge.eval.protocol import judges_to_eval
    from biasjudge.eval.robustness import robustness
    from biasjudge.eval.run import HOLDOUT_NAME, jfs_folder, resolve_holdout
    from biasjudge.eval.twins import select_twins
    from biasjudge.prompts import read_prompt_file

    judges = judges_to_eval(judge, name)
    pairs = resolve_holdout(holdout, levels_from, data_dir, console=console)
    run = robustness(
        judges,
        pairs,
        out,
        limit=limit,
        twins=select_twins(twins),
        mode=cast("JudgeMode", mode.value),
        system_prompt=read_prompt_file(system_prompt_file) if system_prompt_file else None,
        batch_size=batch_size,
        holdout_name=str(holdout if holdout is not None else jfs_folder(data_dir) / HOLDOUT_NAME),
        command=_command([j.spec for j in judges], list(name or []), out, limit, twins, holdout, data_dir),
        console=console,
    )
    console.print(f"robustness: {run.json} and {run.markdown}")
    typer.echo(run.table)


def _command(
    specs: list[str],
    names: list[str],
    out: Path,
    limit: int | None,
    twins: str | None,
    holdout: Path | None,
    data_dir: Path | None,
) -> str:
    """The command line that reproduces a run (for robustness.md)."""
    args = ["biasjudge", "robustness"]
    for spec in specs:
        args += ["--judge", spec]
    for column in names:
        args += ["--name", column]
    for flag, value in (("--limit", limit), ("--twins", twins), ("--holdout", holdout), ("--data-dir", data_dir)):
        if value is not None:
            args += [flag, str(value)]
    return shlex.join([*args, "--out", str(out)])


def register(app: typer.Typer) -> None:
    """Add the `robustness` command to the `biasjudge` app."""
    app.command("robustness")(robustness_command)
