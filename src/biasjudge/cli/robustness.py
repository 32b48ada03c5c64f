"""`biasjudge robustness`: flip rates of judges on twins of holdout pairs (injection, benign, length)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from biasjudge.cli.common import DataDirOption, SystemPromptOption, console, option_groups
from biasjudge.cli.eval import HoldoutOption, JudgesOption, LevelsOption, NamesOption
from biasjudge.eval.settings import RobustnessSettings


@option_groups
def robustness_command(
    judge: JudgesOption = None,
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
    holdout: HoldoutOption = None,
    levels_from: LevelsOption = None,
    system_prompt_file: SystemPromptOption = None,
    data_dir: DataDirOption = None,
    *,
    settings: RobustnessSettings,
) -> None:
    """Flip rates of judges on twins of holdout pairs: injections (forged tags, turn markers,
    "ignore the instructions"), benign edits (whitespace, punctuation, case, order) and padding."""
    from biasjudge.eval.protocol import judges_to_eval
    from biasjudge.eval.robustness import robustness
    from biasjudge.eval.run import HOLDOUT_NAME, jfs_folder, resolve_holdout
    from biasjudge.prompts import read_prompt_file

    judges = judges_to_eval(judge, name)
    pairs = resolve_holdout(holdout, levels_from, data_dir, console=console)
    run = robustness(
        judges,
        pairs,
        out,
        settings,
        system_prompt=read_prompt_file(system_prompt_file) if system_prompt_file else None,
        holdout_name=str(holdout if holdout is not None else jfs_folder(data_dir) / HOLDOUT_NAME),
        command=_command(
            [j.spec for j in judges], list(name or []), out, settings.limit, settings.twins, holdout, data_dir
        ),
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
