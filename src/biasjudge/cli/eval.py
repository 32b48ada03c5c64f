"""`biasjudge metrics | eval | report | quickstart`: score judges on the holdout and report.

`metrics` and `report` read saved logs only (no judge, no backend, no torch), so they start fast.
`eval` and `quickstart` import the judge machinery inside their bodies.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from biasjudge.cli.common import DataDirOption, SystemPromptOption, console, option_groups
from biasjudge.eval.settings import CalibrateSettings, EvalSettings

HoldoutOption = Annotated[
    Path | None,
    typer.Option(
        "--holdout",
        help="Labelled holdout pairs (JSONL/Parquet). Default: <data dir>/judge-from-scratch/eval_set_unlabeled.jsonl.",
        show_default=False,
    ),
]
LevelsOption = Annotated[
    Path | None,
    typer.Option(
        "--levels-from",
        help=(
            "Pairs file whose suspected_bias_level is copied onto the holdout (the answer-key "
            "baseline needs it). Default: pairs.jsonl beside the holdout, when there is one."
        ),
        show_default=False,
    ),
]
JudgesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--judge",
        "-j",
        help=(
            "Judge spec (repeat for several columns). Default: 'reader:', the shipped default judge. Others: "
            "'text:' (the free-text judge), 'llamacpp:embedded' (the pairwise LoRA), "
            "'llamacpp:embedded-base' (untrained), 'llamacpp:PATH.gguf?lora_path=ADAPTER.gguf', "
            "'hf:MODEL?adapter=PEFT_DIR', 'openai:URL#MODEL', 'hybrid:', 'answer-key:', 'random:', ... "
            "'hybrid:replay:PREDICTIONS.json' reuses the probabilities of a saved run."
        ),
        show_default=False,
    ),
]
NamesOption = Annotated[
    list[str] | None,
    typer.Option("--name", help="Column name per --judge, in the same order (default: the spec).", show_default=False),
]


def _json_safe(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


# --------------------------------------------------------------------------- commands


def metrics_command(
    predictions: Annotated[
        Path,
        typer.Option("--predictions", help="Eval log (predictions.json or the reference's eval-results JSON)."),
    ],
    holdout: Annotated[Path, typer.Option("--holdout", help="The labelled holdout the log was made on.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help=(
                "Count verbosity-bias tokens with this judge's tokenizer (e.g. 'llamacpp:embedded', whose "
                "Gemma tokenizer reproduces the reference's value) instead of taking the log's stored value."
            ),
            show_default=False,
        ),
    ] = None,
    agreement: Annotated[
        bool,
        typer.Option(
            "--agreement",
            help=(
                "Instead of the metrics: Cohen's kappa (with its interval) and the confusion counts between "
                "every two judges of the log and the human labels, per slice."
            ),
        ),
    ] = False,
) -> None:
    """Metrics per checkpoint, recomputed from a saved log without calling a model.

    Verbosity bias is the log's stored value (counted in the judge's own tokenizer) where it has
    one, or counted with --tokenizer; `verbosity_bias_whitespace` is the same metric in
    whitespace words. With --agreement: judge against judge (the humans being one of them).
    """
    from biasjudge.eval.report import log_metrics
    from biasjudge.eval.run import load_holdout, read_logs

    [log] = read_logs([predictions])
    pairs = load_holdout(holdout)
    if agreement:
        _print_agreement(log, pairs, as_json)
        return
    if tokenizer is None:
        metrics = log_metrics(log, pairs, source=predictions, stored_fallback=False)
    else:
        from biasjudge.judge.registry import make_judge

        counter = make_judge(tokenizer)
        try:
            metrics = log_metrics(
                log, pairs, token_counter=counter.count_tokens, source=predictions, stored_fallback=False
            )
        finally:
            counter.close()
    if as_json:
        safe = {name: {k: _json_safe(v) for k, v in values.items()} for name, values in metrics.items()}
        typer.echo(json.dumps(safe, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{predictions.name}: {log.run_id}")
    table.add_column("metric")
    for name in metrics:
        table.add_column(name, justify="right")
    keys = list(dict.fromkeys(k for values in metrics.values() for k in values))
    for key in keys:
        cells = []
        for values in metrics.values():
            value = values.get(key)
            cells.append("—" if value is None or math.isnan(value) else f"{value:.4f}")
        table.add_row(key, *cells)
    Console().print(table)


def _print_agreement(log: Any, pairs: Any, as_json: bool) -> None:
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from biasjudge.eval.metrics import judge_agreement
    from biasjudge.eval.report import agreement_matrices
    from biasjudge.verdict import VERDICTS

    found = judge_agreement(pairs, log.detailed)
    out = Console()
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(a) for a in found], indent=2))
        return
    for key, names, rows in agreement_matrices(found):
        table = Table(title=f"Cohen's kappa between judges, {key} (original order)")
        table.add_column("")
        for name in names:
            table.add_column(name, justify="right")
        for name, row in zip(names, rows, strict=True):
            table.add_row(name, *row)
        out.print(table)
    for a in (a for a in found if a.slice == "all" and a.n):
        table = Table(
            title=f"{a.first} vs {a.second}",
            caption=f"rows: {a.first}, columns: {a.second}; all slices, {a.agreement:.1%} of {a.n} pairs agree",
        )
        table.add_column("")
        for label in VERDICTS:
            table.add_column(label, justify="right")
        for label, counts in zip(VERDICTS, a.confusion, strict=True):
            table.add_row(label, *map(str, counts))
        out.print(table)


@option_groups
def eval_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output folder: <out>/<name>/predictions.json, report.md, report.html.", file_okay=False
        ),
    ],
    judge: JudgesOption = None,
    holdout: HoldoutOption = None,
    levels_from: LevelsOption = None,
    system_prompt_file: SystemPromptOption = None,
    name: NamesOption = None,
    import_predictions: Annotated[
        list[Path] | None,
        typer.Option(
            "--import-predictions",
            help="Saved eval log (e.g. the reference's base Gemma 4 E4B verdicts) added as columns.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    drop_choices: Annotated[
        bool,
        typer.Option(
            "--drop-choices",
            help="Judge every pair as open text: its answer choices removed (the prompt is its context and question).",
        ),
    ] = False,
    *,
    settings: EvalSettings,
) -> None:
    """Evaluate judges on the holdout with the reference protocol (resumable), then report.

    The holdout may be free text (pairs without answer choices): the same metrics, kappa per slice,
    bucket and bias category."""
    from biasjudge.eval.protocol import judges_to_eval
    from biasjudge.eval.run import evaluate, resolve_holdout
    from biasjudge.prompts import read_prompt_file

    judges = judges_to_eval(judge, name)
    pairs = resolve_holdout(holdout, levels_from, data_dir, console=console)
    if drop_choices:
        pairs = [p.model_copy(update={"answer_choices": []}) for p in pairs]
    result = evaluate(
        judges,
        pairs,
        out,
        settings,
        system_prompt=read_prompt_file(system_prompt_file) if system_prompt_file else None,
        imports=import_predictions or [],
        console=console,
    )
    console.print(f"report: {result.markdown} and {result.html}")
    typer.echo(result.table)


def report_command(
    logs: Annotated[
        list[Path],
        typer.Argument(help="Eval logs (predictions.json files or reference eval-results JSON)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md and report.html.", file_okay=False)],
    holdout: HoldoutOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Markdown table and HTML page (with plots) from saved logs; no model is called."""
    from biasjudge.eval.report import write_reports
    from biasjudge.eval.run import HOLDOUT_NAME, jfs_folder, load_holdout, read_logs

    pairs = load_holdout(holdout if holdout is not None else jfs_folder(data_dir) / HOLDOUT_NAME)
    md, html, table = write_reports(read_logs(logs), pairs, out)
    console.print(f"report: {md} and {html}")
    typer.echo(table)


@option_groups
def quickstart_command(
    data_dir: DataDirOption = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.", file_okay=False)] = Path("runs/quickstart"),
    *,
    settings: EvalSettings,
) -> None:
    """The main job: the default judge (the question reader), the pairwise judge it replaced (Gemma 3
    270M + biasjudge's adapter, both orders) and the answer-key rule on the 300-pair holdout, 7 runs
    per pair, beside the published base Gemma 4 E4B verdicts."""
    from biasjudge.eval.run import quickstart

    started = time.perf_counter()
    result = quickstart(data_dir, out, settings, console=console)
    console.print(f"report: {result.markdown} and {result.html}")
    typer.echo(result.table)
    console.print(f"quick start finished in {time.perf_counter() - started:.0f} s")


@option_groups
def calibrate_command(
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions",
            help="Eval log of the judge in score mode on the CALIBRATION split (never the holdout), e.g. "
            "runs/embedded-judge/eval/validation/predictions.json.",
        ),
    ],
    pairs: Annotated[Path, typer.Option("--pairs", help="The labelled pairs of that split (JSONL/Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Where the calibration goes (calibration.json).", dir_okay=False)],
    check_predictions: Annotated[
        Path | None,
        typer.Option(
            "--check-predictions",
            help="An eval log of the same judge on the holdout: report ECE and Brier before and after, per slice.",
        ),
    ] = None,
    holdout: HoldoutOption = None,
    data_dir: DataDirOption = None,
    *,
    settings: CalibrateSettings,
) -> None:
    """Fit a calibration map of a judge's verdict probabilities, and save it.

    Apply it with `--judge 'SPEC?calibration=calibration.json'` anywhere a judge is named; the
    shipped judge applies the calibration.json beside its adapter unless `?calibration=none`.
    """
    from rich.console import Console
    from rich.table import Table

    from biasjudge.eval.calibration import calibrate_file
    from biasjudge.eval.run import resolve_holdout

    held = resolve_holdout(holdout, None, data_dir) if check_predictions is not None else None
    calibration = calibrate_file(predictions, pairs, out, settings, check_predictions=check_predictions, holdout=held)
    fit = calibration.fit_split
    table = Table(title=f"{calibration.method} calibration fitted on {fit['n']} pairs ({settings.labels} labels)")
    for column in ("rows", "ECE before", "ECE after", "Brier before", "Brier after"):
        table.add_column(column, justify="right")
    keys = ("ece_before", "ece_after", "brier_before", "brier_after")
    table.add_row(f"fit split (in-sample, n={fit['n']})", *(f"{fit[k]:.4f}" for k in keys))
    for name, found in calibration.holdout_check.items():
        table.add_row(f"holdout {name} (n={found['n']})", *(f"{found[k]:.4f}" for k in keys))
    Console().print(table)
    if calibration.temperature is not None:
        console.print(f"temperature {calibration.temperature:.4f}")
    console.print(f"written: {out}")


def register(app: typer.Typer) -> None:
    """Add the eval commands to the `biasjudge` app."""
    app.command("metrics")(metrics_command)
    app.command("calibrate")(calibrate_command)
    app.command("eval")(eval_command)
    app.command("report")(report_command)
    app.command("quickstart")(quickstart_command)
