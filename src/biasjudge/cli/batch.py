"""`biasjudge judge-file IN OUT`: judge every pair of a file, streaming and resumable (locally or on Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from biasjudge.batch.judge_file import Engine, judge_file
from biasjudge.batch.ray_engine import RayOptions
from biasjudge.cli.common import JudgeSpecOption, ModeOption, SystemPromptOption, console, defaults_from, option_groups

if TYPE_CHECKING:
    from biasjudge.batch.judge_file import BatchSummary


def _describe(summary: BatchSummary) -> list[str]:
    verdicts = ", ".join(f"{k} {v}" for k, v in summary.verdicts.items())
    rate = f" ({summary.rows_per_s:.2f} rows/s)" if summary.rows_per_s else ""
    lines = [
        f"{summary.rows_in} rows in {summary.input}: {summary.judged} judged, {summary.invalid} invalid"
        + ("" if summary.complete else " (NOT complete: run the same command again)"),
        f"this run: {summary.judged_now} judged, {summary.invalid_now} invalid, {summary.resumed} found done, "
        f"{summary.elapsed_s:.1f} s{rate}",
        f"verdicts: {verdicts}; parse failures: {summary.parse_failures}",
        f"verdicts: {summary.output}",
    ]
    if summary.rejects:
        lines.append(f"invalid rows, with line and reason: {summary.rejects}")
    return lines


@option_groups
@defaults_from(judge_file)
def judge_file_command(
    in_path: Annotated[
        Path,
        typer.Argument(
            metavar="IN",
            help=(
                "Pairs to judge, one per row: JSON Lines, or Parquet (.parquet). A row is a Pair record (the "
                "holdout file is a valid input) or request fields: id (optional), question (the prompt, optional), "
                "choices (none for open text, or 2 to 5), response_a, response_b. Invalid rows go to OUT's "
                ".rejects.jsonl with their line and reason."
            ),
            show_default=False,
        ),
    ],
    out_path: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help=(
                "Verdicts, one per valid row in input order (the Judgment, its row key as pair_id, its input line): "
                "JSON Lines, or Parquet (.parquet; written at the end from the resumable OUT.partial.jsonl). "
                "Killed at any point, the same command resumes: every row is judged exactly once."
            ),
            show_default=False,
        ),
    ],
    *,
    judge: JudgeSpecOption,
    mode: ModeOption,
    system_prompt_file: SystemPromptOption = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Pairs per judge call (and per Ray batch). A kill loses at most the batches in flight.",
        ),
    ],
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help=(
                "local: judge in this process. ray: the same job on Ray Data, an actor pool with one judge per "
                "actor (pip install 'ray[data]'); reading, rejects and writing stay in this process."
            ),
        ),
    ],
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the progress bar (rows, rate, time left) on stderr.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON on stdout.")] = False,
    ray: RayOptions,
) -> None:
    """Judge every pair of a JSONL or Parquet file: streaming, resumable, invalid rows to a side file.

    Prints a summary (rows, verdict counts, parse failures, rows/s), also written to OUT's .summary.json.
    """
    from biasjudge.prompts import read_prompt_file

    system_prompt = read_prompt_file(system_prompt_file) if system_prompt_file else None
    where = f" on Ray ({ray.actors} actor{'s' if ray.actors > 1 else ''})" if engine == "ray" else ""
    console.print(f"judging {in_path} with {judge} ({mode} mode){where} -> {out_path}", highlight=False)
    summary = judge_file(
        in_path,
        out_path,
        judge=judge,
        mode=mode,
        system_prompt=system_prompt,
        batch_size=batch_size,
        engine=engine,
        ray=ray,
        progress=progress,
        console=console,
    )
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    for line in _describe(summary):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add `judge-file` to the `biasjudge` app."""
    app.command("judge-file")(judge_file_command)
