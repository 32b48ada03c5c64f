"""`biasjudge metrics | eval | report | quickstart`: score judges on the holdout and report.

`metrics` and `report` read saved logs only (no judge, no backend, no torch), so they start fast.
`eval` and `quickstart` import the judge machinery inside their bodies.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from biasjudge.cli.common import DataDirOption, ModeOption, SystemPromptOption, console
from biasjudge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from biasjudge.records import EvalLog, Pair

HOLDOUT_NAME = "eval_set_unlabeled.jsonl"
PAIRS_NAME = "pairs.jsonl"
REFERENCE_LOG = Path("eval-results") / "base_gemma4_e4b_verdicts.json"

QUICKSTART_JUDGES: tuple[tuple[str, str], ...] = (
    ("llamacpp:embedded", "biasjudge 270M judge"),
    ("llamacpp:embedded-base", "Gemma 3 270M (untrained)"),
    ("answer-key:", "Answer-key rule"),
    ("hybrid:", "Hybrid (answer key + judge)"),
)
"""(spec, column name) of the judges the quick start evaluates: the shipped judge, the same base
model before training (with the shipped judge's system prompt, so only the training differs), the
answer-key rule and the hybrid."""

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
RunsOption = Annotated[
    str,
    typer.Option(
        "--runs",
        help=(
            "'all' (original, swapped, consistency_0..4 at T=0.3), a comma list of run names, "
            "or N = original + swapped + N runs at T=0.3."
        ),
    ),
]
LimitOption = Annotated[
    int | None, typer.Option("--limit", min=1, help="Judge only the first N holdout pairs.", show_default=False)
]
BatchOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Requests per judge call (one pair's runs stay together).")
]


# --------------------------------------------------------------------------- helpers


def _jfs(data_dir: Path | None) -> Path:
    from biasjudge.config import resolve_data_dir

    return resolve_data_dir(data_dir) / "judge-from-scratch"


def _need(path: Path, what: str) -> Path:
    from biasjudge.io import check_input_file

    try:
        return check_input_file(path)
    except DataError as exc:
        raise DataError(exc.path, None, None, f"{what}: {exc.message}") from None


def load_holdout(path: Path, levels_from: Path | None = None) -> list[Pair]:
    """The holdout pairs, with suspected_bias_level joined from `levels_from` when given."""
    from biasjudge.data.holdout import attach_levels, has_levels, load_pairs

    pairs = load_pairs(_need(path, "holdout file")).records
    if levels_from is None:
        return pairs
    pairs = attach_levels(pairs, load_pairs(_need(levels_from, "levels file")).records)
    console.print(
        f"levels (suspected_bias_level) from {levels_from}: {sum(map(has_levels, pairs))} of {len(pairs)} pairs"
    )
    return pairs


def _resolve_holdout(holdout: Path | None, levels_from: Path | None, data_dir: Path | None) -> list[Pair]:
    path = holdout if holdout is not None else _jfs(data_dir) / HOLDOUT_NAME
    if levels_from is None and (path.parent / PAIRS_NAME).exists() and path.name != PAIRS_NAME:
        levels_from = path.parent / PAIRS_NAME
    return load_holdout(path, levels_from)


def _read_logs(paths: Sequence[Path]) -> list[EvalLog]:
    from biasjudge.eval.report import read_log

    return [read_log(_need(p, "eval log")) for p in paths]


def _json_safe(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def evaluate(
    judges: Sequence[tuple[str, str] | tuple[str, str, str | None]],
    holdout: list[Pair],
    out: Path,
    *,
    runs: str = "all",
    limit: int | None = None,
    mode: str = "score",
    system_prompt: str | None = None,
    imports: Sequence[Path] = (),
    batch_size: int = 8,
    title: str = "biasjudge evaluation",
) -> str:
    """Evaluate each (spec, name) judge into `out/<slug(name)>/`, write `out/report.{md,html}`
    with imported logs as extra columns, and return the Markdown table."""
    from biasjudge.eval.protocol import run_eval, select_runs, slug
    from biasjudge.eval.report import write_reports
    from biasjudge.judge.judge import make_judge

    if mode not in ("score", "generate"):
        raise ConfigError(f"--mode must be 'score' or 'generate', got {mode!r}")
    names = [judge[1] for judge in judges]
    if len(set(names)) != len(names) or len({slug(n) for n in names}) != len(names):
        raise ConfigError(f"--name: every judge needs its own name (and folder), got {names}")
    run_specs = select_runs(runs)
    imported = _read_logs(imports)
    evaluated_pairs = holdout[:limit] if limit is not None else holdout
    logs = []
    for entry in judges:
        spec, name = entry[0], entry[1]
        prompt = entry[2] if len(entry) > 2 else system_prompt
        started = time.perf_counter()
        judge = make_judge(spec, system_prompt=prompt, mode=mode)  # type: ignore[arg-type]
        try:
            log = run_eval(
                judge,
                holdout,
                out / slug(name),
                checkpoint_name=name,
                runs=run_specs,
                limit=limit,
                batch_size=batch_size,
                console=console,
            )
        finally:
            judge.close()
        console.print(
            f"{name}: {len(log.detailed)} judgments in {time.perf_counter() - started:.1f} s -> "
            f"{out / slug(name) / 'predictions.json'}"
        )
        logs.append(log)
    if limit is not None:
        title = f"{title} (first {len(evaluated_pairs)} holdout pairs)"
    md, html, table = write_reports([*logs, *imported], evaluated_pairs, out, title=title)
    console.print(f"report: {md} and {html}")
    return table


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
) -> None:
    """Metrics per checkpoint, recomputed from a saved log without calling a model.

    Verbosity bias is the log's stored value (counted in the judge's own tokenizer) where it has
    one, or counted with --tokenizer; `verbosity_bias_whitespace` is the same metric in
    whitespace words.
    """
    from biasjudge.eval.report import log_metrics

    [log] = _read_logs([predictions])
    pairs = load_holdout(holdout)
    if tokenizer is None:
        metrics = log_metrics(log, pairs, source=predictions, stored_fallback=False)
    else:
        from biasjudge.judge.judge import make_judge

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


def eval_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output folder: <out>/<name>/predictions.json, report.md, report.html.", file_okay=False
        ),
    ],
    judge: Annotated[
        list[str] | None,
        typer.Option(
            "--judge",
            "-j",
            help=(
                "Judge spec (repeat for several). Default: 'llamacpp:embedded', the shipped trained judge. "
                "Others: 'llamacpp:embedded-base' (untrained), 'llamacpp:PATH.gguf?lora_path=ADAPTER.gguf', "
                "'hf:MODEL?adapter=PEFT_DIR', 'openai:URL#MODEL', 'hybrid:', 'answer-key:', 'random:', ..."
            ),
            show_default=False,
        ),
    ] = None,
    holdout: HoldoutOption = None,
    levels_from: LevelsOption = None,
    runs: RunsOption = "all",
    limit: LimitOption = None,
    mode: ModeOption = "score",
    system_prompt_file: SystemPromptOption = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name", help="Column name per --judge, in the same order (default: the spec).", show_default=False
        ),
    ] = None,
    import_predictions: Annotated[
        list[Path] | None,
        typer.Option(
            "--import-predictions",
            help="Saved eval log (e.g. the reference's base Gemma 4 E4B verdicts) added as columns.",
            show_default=False,
        ),
    ] = None,
    batch_size: BatchOption = 8,
    data_dir: DataDirOption = None,
) -> None:
    """Evaluate judges on the holdout with the reference protocol (resumable), then report."""
    from biasjudge.backends.registry import DEFAULT_JUDGE_SPEC
    from biasjudge.prompts import read_prompt_file

    judge = list(judge or [DEFAULT_JUDGE_SPEC])
    names = list(name or [])
    if names and len(names) != len(judge):
        raise ConfigError(f"--name given {len(names)} times for {len(judge)} --judge; give one per judge or none")
    judges = list(zip(judge, names or judge, strict=True))
    pairs = _resolve_holdout(holdout, levels_from, data_dir)
    system_prompt = read_prompt_file(system_prompt_file) if system_prompt_file else None
    table = evaluate(
        judges,
        pairs,
        out,
        runs=runs,
        limit=limit,
        mode=mode,
        system_prompt=system_prompt,
        imports=import_predictions or [],
        batch_size=batch_size,
    )
    typer.echo(table)


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

    pairs = load_holdout(holdout if holdout is not None else _jfs(data_dir) / HOLDOUT_NAME)
    md, html, table = write_reports(_read_logs(logs), pairs, out)
    console.print(f"report: {md} and {html}")
    typer.echo(table)


def quickstart_command(
    data_dir: DataDirOption = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.", file_okay=False)] = Path("runs/quickstart"),
    limit: LimitOption = None,
    runs: RunsOption = "all",
    batch_size: BatchOption = 8,
) -> None:
    """The main job: the shipped trained judge (Gemma 3 270M + biasjudge's adapter, both orders),
    the same base untrained, the answer-key rule and the hybrid on the 300-pair holdout, 7 runs per
    pair, beside the published base Gemma 4 E4B verdicts."""
    from biasjudge.judge.shipped import shipped_manifest

    started = time.perf_counter()
    jfs = _jfs(data_dir)
    pairs = load_holdout(jfs / HOLDOUT_NAME, _need(jfs / PAIRS_NAME, "pairs file"))
    reference = jfs / REFERENCE_LOG
    imports = [reference] if reference.exists() else []
    if not imports:
        console.print(f"[yellow]note:[/yellow] {reference} not found; no reference column")
    from biasjudge.eval.protocol import slug

    shipped_prompt = shipped_manifest().system_prompt
    shipped_log = out / slug(QUICKSTART_JUDGES[0][1]) / "predictions.json"
    judges: list[tuple[str, str, str | None]] = []
    for spec, name in QUICKSTART_JUDGES:
        if spec == "hybrid:":
            # The shipped judge's probabilities were just computed: replay them, do not judge again.
            spec = f"hybrid:replay:{shipped_log}?questions={jfs / 'bbq_sample.jsonl'}"
        judges.append((spec, name, shipped_prompt if spec == "llamacpp:embedded-base" else None))
    table = evaluate(
        judges,
        pairs,
        out,
        runs=runs,
        limit=limit,
        mode="score",
        imports=imports,
        batch_size=batch_size,
        title="biasjudge quick start",
    )
    typer.echo(table)
    console.print(f"quick start finished in {time.perf_counter() - started:.0f} s")


def register(app: typer.Typer) -> None:
    """Add the eval commands to the `biasjudge` app."""
    app.command("metrics")(metrics_command)
    app.command("eval")(eval_command)
    app.command("report")(report_command)
    app.command("quickstart")(quickstart_command)
