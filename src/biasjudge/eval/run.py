"""The eval job: judges x holdout -> one resumable log per judge, then the reports.

`evaluate` is what `biasjudge eval` runs and `quickstart` is `evaluate` with a fixed set of
judges (what `biasjudge quickstart` runs). Both lock the output folder (a second process on the
same folder is refused, never interleaved) and print progress to the console they are given.
The CLI parses flags and calls these; nothing here parses flags.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from biasjudge.errors import DataError
from biasjudge.eval.protocol import JudgeToEval
from biasjudge.eval.settings import EvalSettings
from biasjudge.io import check_input_file, folder_lock

if TYPE_CHECKING:
    from rich.console import Console

    from biasjudge.records import EvalLog, Pair

HOLDOUT_NAME = "eval_set_unlabeled.jsonl"
"""The reference's human-labelled holdout, in `<data dir>/judge-from-scratch/`."""
PAIRS_NAME = "pairs.jsonl"
"""The reference's pairs (with suspected_bias_level, which the holdout lacks)."""
REFERENCE_LOG = Path("eval-results") / "base_gemma4_e4b_verdicts.json"
"""The published base Gemma 4 E4B verdicts, an extra column of the quick start."""
LOCK_NAME = ".eval.lock"
"""The lock file an eval holds in its output folder."""

QUICKSTART_JUDGES: tuple[tuple[str, str], ...] = (
    ("reader:", "biasjudge reader (default)"),
    ("llamacpp:embedded", "biasjudge 270M pairwise"),
    ("answer-key:", "Answer-key rule"),
)
"""(spec, column name) of the judges the quick start evaluates: the default judge (the question
reader), the pairwise LoRA judge it replaced as the default, and the answer-key rule (the reference's
levels, a baseline that reads the labels' own source)."""


def jfs_folder(data_dir: Path | None) -> Path:
    """`<data dir>/judge-from-scratch` (data dir: explicit, $BIASJUDGE_DATA_DIR, or ../shared/data)."""
    from biasjudge.config import resolve_data_dir

    return resolve_data_dir(data_dir) / "judge-from-scratch"


def _need(path: Path, what: str) -> Path:
    try:
        return check_input_file(path)
    except DataError as exc:
        raise DataError(exc.path, None, None, f"{what}: {exc.message}") from None


def load_holdout(path: Path, levels_from: Path | None = None, *, console: Console | None = None) -> list[Pair]:
    """The holdout pairs, with suspected_bias_level joined from `levels_from` when given."""
    from biasjudge.data.holdout import attach_levels, has_levels, load_pairs

    pairs = load_pairs(_need(path, "holdout file")).records
    if levels_from is None:
        return pairs
    pairs = attach_levels(pairs, load_pairs(_need(levels_from, "levels file")).records)
    if console is not None:
        console.print(
            f"levels (suspected_bias_level) from {levels_from}: {sum(map(has_levels, pairs))} of {len(pairs)} pairs"
        )
    return pairs


def resolve_holdout(
    holdout: Path | None, levels_from: Path | None, data_dir: Path | None, *, console: Console | None = None
) -> list[Pair]:
    """The holdout to evaluate on: `holdout`, else the reference's; levels from `levels_from`, else
    from pairs.jsonl beside the holdout when there is one."""
    path = holdout if holdout is not None else jfs_folder(data_dir) / HOLDOUT_NAME
    if levels_from is None and (path.parent / PAIRS_NAME).exists() and path.name != PAIRS_NAME:
        levels_from = path.parent / PAIRS_NAME
    return load_holdout(path, levels_from, console=console)


def read_logs(paths: Sequence[Path]) -> list[EvalLog]:
    """Saved eval logs (predictions.json or the reference's eval-results JSON)."""
    from biasjudge.eval.report import read_log

    return [read_log(_need(p, "eval log")) for p in paths]


@dataclass
class EvalResult:
    """What an evaluation wrote."""

    logs: list[EvalLog]
    """One log per judge evaluated (imported logs not included)."""
    markdown: Path
    """report.md"""
    html: Path
    """report.html"""
    table: str
    """The Markdown metrics table."""


def evaluate(
    judges: Sequence[JudgeToEval],
    holdout: list[Pair],
    out: Path,
    settings: EvalSettings | None = None,
    *,
    system_prompt: str | None = None,
    imports: Sequence[Path] = (),
    title: str = "biasjudge evaluation",
    console: Console | None = None,
) -> EvalResult:
    """Evaluate each judge into `out/<slug(name)>/` (resumable), then write `out/report.{md,html}`
    with the imported logs as extra columns.

    Raises:
        ConfigError: a bad mode, two judges with one name (or folder), or another eval is writing
            to `out` (its lock is held).
    """
    from biasjudge.eval.protocol import check_columns, opened_judge, run_eval, select_runs, slug
    from biasjudge.eval.report import write_reports

    settings = settings or EvalSettings()
    mode, limit = settings.mode, settings.limit
    check_columns(judges, mode)
    run_specs = select_runs(settings.runs)
    imported = read_logs(imports)
    evaluated_pairs = holdout[:limit] if limit is not None else holdout
    logs = []
    with folder_lock(out, LOCK_NAME, what="an eval"):
        for entry in judges:
            started = time.perf_counter()
            with opened_judge(entry, system_prompt=system_prompt, mode=mode) as judge:
                log = run_eval(
                    judge,
                    holdout,
                    out / slug(entry.name),
                    checkpoint_name=entry.name,
                    runs=run_specs,
                    limit=limit,
                    batch_size=settings.batch_size,
                    console=console,
                )
            if console is not None:
                console.print(
                    f"{entry.name}: {len(log.detailed)} judgments in {time.perf_counter() - started:.1f} s -> "
                    f"{out / slug(entry.name) / 'predictions.json'}"
                )
            logs.append(log)
        if limit is not None:
            title = f"{title} (first {len(evaluated_pairs)} holdout pairs)"
        md, html, table = write_reports([*logs, *imported], evaluated_pairs, out, title=title)
    return EvalResult(logs, md, html, table)


def quickstart(
    data_dir: Path | None,
    out: Path,
    settings: EvalSettings | None = None,
    *,
    console: Console | None = None,
) -> EvalResult:
    """The main job: `evaluate` with the quick start's judges (:data:`QUICKSTART_JUDGES`) on the
    reference holdout (in score mode unless `settings` say otherwise), beside the published base
    Gemma 4 E4B verdicts when present."""
    jfs = jfs_folder(data_dir)
    pairs = load_holdout(jfs / HOLDOUT_NAME, _need(jfs / PAIRS_NAME, "pairs file"), console=console)
    reference = jfs / REFERENCE_LOG
    imports = [reference] if reference.exists() else []
    if not imports and console is not None:
        console.print(f"[yellow]note:[/yellow] {reference} not found; no reference column")
    judges = [JudgeToEval(spec, name) for spec, name in QUICKSTART_JUDGES]
    return evaluate(
        judges,
        pairs,
        out,
        settings,
        imports=imports,
        title="biasjudge quick start",
        console=console,
    )
