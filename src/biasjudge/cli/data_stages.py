"""`biasjudge data` commands, one per dataset stage: bbq, expand, candidates, classify, pairs,
split, check, rows, stats (registered on the group by :mod:`biasjudge.cli.data`, in pipeline order).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ConfigDict
from rich.table import Table

from biasjudge.cli.common import (
    CostOptions,
    DataDirOption,
    JudgeSpecOption,
    LeakageLevelOption,
    SkipInvalidOption,
    console,
    option_groups,
)
from biasjudge.cli.data_common import counts_table, make_table, model_stage, on_read, read, read_pairs
from biasjudge.data.holdout import HoldoutConfig, Split
from biasjudge.data.pairs import PairsConfig
from biasjudge.dataset.build import RowsBuilt
from biasjudge.dataset.runner import Stage, StageRun, run_stage
from biasjudge.dataset.stages import CLASSIFY, PAIRS, ROWS, SPLIT, CandidatesConfig

R = TypeVar("R")


# --------------------------------------------------------------------------- bbq, candidates


def bbq(
    data_dir: DataDirOption = None,
    categories: Annotated[
        list[str] | None, typer.Option("--category", help="BBQ category file to look for (repeatable; default all 11).")
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            "--sample", help="A bbq_sample.jsonl to compare target_label with (default: judge-from-scratch's)."
        ),
    ] = None,
    write_sample: Annotated[
        Path | None, typer.Option("--write-sample", help="Write a stratified sample of the raw questions here.")
    ] = None,
    n_per_cell: Annotated[
        int, typer.Option("--n-per-cell", help="Questions per category x context x polarity cell.")
    ] = 34,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the stratified sample.")] = 42,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Raw BBQ: categories found and missing, target_label agreement with a sample, optionally a stratified sample."""
    from biasjudge.config import resolve_data_dir
    from biasjudge.data.bbq import load_raw_bbq, target_agreement
    from biasjudge.data.sources import bbq_dir, jfs_dir
    from biasjudge.records import Question

    root = resolve_data_dir(data_dir)
    raw, found, missing = load_raw_bbq(bbq_dir(root), categories or None)
    console.print(f"raw BBQ in {bbq_dir(root)}: {len(raw)} questions from {len(found)} categories", highlight=False)
    console.print(f"  found: {', '.join(found) or 'none'}", highlight=False)
    console.print(f"  missing: {', '.join(missing) or 'none'}", highlight=False)
    sample_path = sample if sample is not None else jfs_dir(root) / "bbq_sample.jsonl"
    out_dir = write_sample.parent if write_sample is not None else None
    if sample_path.exists():
        questions = read(sample_path, Question, skip_invalid, out_dir, unique_key="question_id")
        common, agree = target_agreement(raw, questions)
        share = f"{agree / common:.1%}" if common else "n/a"
        console.print(
            f"target_label agreement with {sample_path}: {agree}/{common} common items ({share})", highlight=False
        )
    elif sample is not None:
        raise typer.BadParameter(f"{sample} not found", param_hint="--sample")
    if write_sample is not None:
        from biasjudge.dataset.stages import write_bbq_sample

        picked = write_bbq_sample(raw, write_sample, n_per_cell=n_per_cell, seed=seed, categories=found)
        console.print(f"wrote {len(picked)} questions to {write_sample}", highlight=False)


def expand(
    sample: Annotated[
        Path, typer.Option("--sample", help="The locked sample (bbq_sample.jsonl shape) to add rows to.")
    ],
    n_additional: Annotated[int, typer.Option("--n", help="Rows to add.")],
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of this expansion (default: one past the largest the sidecar names)."),
    ] = None,
    data_dir: DataDirOption = None,
    bbq_folder: Annotated[
        Path | None, typer.Option("--bbq-dir", help="Folder of raw BBQ category files (default: <data-dir>/bbq).")
    ] = None,
    categories: Annotated[
        list[str] | None,
        typer.Option("--category", help="Category to expand (repeatable; default: the sample's categories)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the expanded sample here instead of over --sample (sidecar too)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be added; write nothing.")] = False,
) -> None:
    """Add N stratified rows of raw BBQ to a locked sample; existing lines stay byte for byte, the sidecar records it.

    `data candidates` on the expanded sample then answers only the new questions (it resumes by question_id).
    """
    from biasjudge.config import resolve_data_dir
    from biasjudge.data.bbq import expand_sample_file
    from biasjudge.data.sources import bbq_dir

    folder = bbq_folder if bbq_folder is not None else bbq_dir(resolve_data_dir(data_dir))
    run = expand_sample_file(
        sample, folder, n_additional, seed=seed, categories=categories or None, out=out, dry_run=dry_run
    )
    if run.recovered:
        console.print(f"[yellow]{run.recovered}[/yellow]", highlight=False)
    table = make_table(f"expand {sample} (seed {run.seed})", "stratum", "added")
    for cell, n in run.per_cell.items():
        table.add_row(cell, str(n))
    console.print(table)
    for warning in run.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    verb = "would add" if dry_run else "added"
    where = "" if dry_run else f" -> {run.out_path} (sidecar {run.meta_path})"
    console.print(
        f"{run.n_existing} existing rows kept, {verb} {run.n_added} of {run.n_requested} asked, "
        f"{run.n_total} in all{where}",
        highlight=False,
    )


@option_groups
def candidates(
    questions: Annotated[Path, typer.Option("--questions", help="Questions (bbq_sample.jsonl shape).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Candidates JSONL (appended to; resumable).")],
    judge: JudgeSpecOption,
    skip_invalid: SkipInvalidOption = False,
    *,
    settings: CandidatesConfig,
    cost: CostOptions,
) -> None:
    """Generate candidate answers with any backend (resumable: answers already in --out are kept).

    Every call is booked in the cost ledger; --budget-usd stops before a call that could cross it (exit 3).
    """
    from biasjudge.dataset.stages import candidates_from_file

    with model_stage(out, judge, cost) as (backend, control):
        run = candidates_from_file(
            questions,
            out,
            backend,
            settings,
            model_name=settings.model_name or judge,
            skip_invalid=skip_invalid,
            on_read=on_read(skip_invalid),
            cost=control,
        )
        verb = "already" if cost.dry_run else "now"
        console.print(
            f"{len(run.candidates)} candidates of {run.n_questions} questions {verb} in {out} "
            f"(finish: {run.finish_reasons})",
            highlight=False,
        )


# ----------------------------------------------------------------------- classify, pairs, split, rows: stages as data


def stage_command(stage: Stage[Any, R], report: Callable[[StageRun[R], Path, Any], None]) -> Callable[..., None]:
    """The command of a stage declared as data (:class:`~biasjudge.dataset.runner.Stage`): an option
    per input file (`--<name>`, which may be left out for an optional one), `--out`, `--skip-invalid`
    and the options of the stage's config (:func:`~biasjudge.cli.common.option_groups`, `--config
    FILE.yaml` among them); it runs the stage with :func:`~biasjudge.dataset.runner.run_stage`, then
    `report(run, out, config)` prints."""

    def command(*, out: Path, skip_invalid: bool, config: Any, **inputs: Path) -> None:
        run = run_stage(stage, config, inputs, out, skip_invalid=skip_invalid, on_read=on_read(skip_invalid))
        report(run, out, config)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter(
            i.name,
            keyword,
            annotation=Annotated[Path if i.required else Path | None, typer.Option(i.flag, help=i.help)],
            default=inspect.Parameter.empty if i.required else None,
        )
        for i in stage.inputs
    ]
    parameters += [
        inspect.Parameter("out", keyword, annotation=Annotated[Path, typer.Option("--out", "-o", help=stage.out_help)]),
        inspect.Parameter("skip_invalid", keyword, annotation=SkipInvalidOption, default=False),
        inspect.Parameter("config", keyword, annotation=stage.config),
    ]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__, command.__name__ = stage.help, stage.name.replace("-", "_")
    return option_groups(command)


def _report_classify(run: StageRun[dict[str, dict[str, int]]], out: Path, config: Any) -> None:
    classes, levels = run.result["answer_class"], run.result["level"]
    console.print(
        f"{sum(classes.values())} classified -> {out}\n  classes: {classes}\n  levels: {levels}", highlight=False
    )


def _report_pairs(run: StageRun[dict[str, int]], out: Path, config: PairsConfig) -> None:
    table = make_table(f"pairs -> {out}", "bucket", "pairs", "target")
    for bucket, n in run.result.items():
        table.add_row(bucket, str(n), str(config.targets.get(bucket, 0)))
    console.print(table)


def _report_split(run: StageRun[Split], out: Path, config: HoldoutConfig) -> None:
    result = run.result
    table = make_table(f"split -> {out}", "bucket", "in_dist", "ood")
    counts = result.counts()
    # Pairs of a new bias axis may hold no pair of the OOD category: its column is then all 0.
    ood_counts = next((v for k, v in counts.items() if k != "in_dist"), {})
    for bucket in counts["in_dist"]:
        table.add_row(bucket, str(counts["in_dist"][bucket]), str(ood_counts.get(bucket, 0)))
    console.print(table)
    console.print(
        f"holdout {len(result.holdout)}, train_pool {len(result.train_pool)}, unused_ood {len(result.unused_ood)}, "
        f"unused_in_dist {len(result.unused_in_dist)}; shortfalls: {result.shortfalls or 'none'}; no leakage.",
        highlight=False,
    )


classify = stage_command(CLASSIFY, _report_classify)
pairs = stage_command(PAIRS, _report_pairs)
split = stage_command(SPLIT, _report_split)


# --------------------------------------------------------------------------- check


class _Ids(BaseModel):
    """The two fields a leakage check needs, from any pair or row file."""

    model_config = ConfigDict(extra="ignore")

    pair_id: str
    question_id: str | None = None


def check(
    holdout: Annotated[Path, typer.Option("--holdout", help="The evaluation holdout (pairs).")],
    train: Annotated[
        list[Path], typer.Option("--train", help="Training file(s): pairs, SFT or DPO rows (repeatable).")
    ],
    level: LeakageLevelOption = "question",
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Leakage check: exit 1, naming the ids, when a training file shares a question (or pair) with the holdout."""
    from biasjudge.data.holdout import check_leakage

    held = read(holdout, _Ids, skip_invalid, None, unique_key="pair_id")
    failed = False
    for path in train:
        items = read(path, _Ids, skip_invalid, None)
        no_question = sum(item.question_id is None for item in items)
        report = check_leakage(held, items)  # type: ignore[arg-type]
        bad = report.leaks(level)
        note = f" ({no_question} items without question_id: checked by pair_id only)" if no_question else ""
        if bad:
            failed = True
            console.print(
                f"[red]LEAK[/red] {path} shares {len(bad)} {level}_id(s) with {holdout} "
                f"({report.n_train_items_leaking} items affected){note}:",
                highlight=False,
            )
            for item_id in bad:
                console.print(f"  {item_id}", highlight=False)
        else:
            console.print(
                f"[green]ok[/green] {path}: {report.n_train} items, no shared {level}_id{note}", highlight=False
            )
    if failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- rows, stats


def _report_rows(run: StageRun[RowsBuilt], out: Path, config: Any) -> None:
    sft, dpo = run.result.sft, run.result.dpo
    console.print(
        counts_table(
            f"rows -> {out}",
            [
                (
                    "sft.jsonl",
                    len(sft.rows),
                    f"{sft.n_used} pairs x 2; skipped {sft.left_out.no_label} unlabelled, "
                    f"{sft.left_out.low_confidence} low confidence",
                ),
                (
                    "dpo.jsonl",
                    len(dpo.rows),
                    f"{dpo.n_used} pairs x 2; {dpo.left_out.tie} TIE skipped; {dpo.rejected_sources}",
                ),
            ],
        )
    )


rows = stage_command(ROWS, _report_rows)


def _sniff(path: Path) -> type[BaseModel]:
    """Pair, SFTRow or DPORow, by the keys of the first non-blank line."""
    from biasjudge.io import iter_text_lines
    from biasjudge.records import DPORow, Pair, SFTRow

    for _, text, _ in iter_text_lines(path):
        try:
            keys = set(json.loads(text))
        except (json.JSONDecodeError, TypeError):
            break
        if "completion" in keys:
            return SFTRow
        if "chosen" in keys:
            return DPORow
        return Pair
    return Pair


def _stats_tables(stats: dict[str, Any], title: str) -> list[Table]:
    tables = []
    for key, value in stats.items():
        if not isinstance(value, dict):
            continue
        table = make_table(f"{title}: {key}", key, "rows")
        for name, n in value.items():
            table.add_row(str(name), str(n))
        tables.append(table)
    return tables


def stats(
    file: Annotated[Path, typer.Argument(help="A pairs, SFT or DPO file.")],
    pairs_file: Annotated[
        Path | None, typer.Option("--pairs", help="Pairs the rows came from (for BBQ category and DPO buckets).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON on stdout.")] = False,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Counts per bucket, verdict, BBQ category (and swap, split, sources for rows)."""
    from biasjudge.dataset.rows import row_stats

    model = _sniff(file)
    records: list[Any] = read(file, model, skip_invalid, None)
    lookup = read_pairs(pairs_file, skip_invalid, None) if pairs_file is not None else None
    counts = row_stats(records, lookup)
    if as_json:
        typer.echo(json.dumps(counts, indent=2))
        return
    console.print(
        f"{file}: {counts['rows']} {model.__name__} records, {counts['pairs']} distinct pairs", highlight=False
    )
    for table in _stats_tables(counts, file.name):
        console.print(table)
