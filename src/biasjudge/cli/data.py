"""`biasjudge data ...`: the dataset stages, one command each, and `build` for the whole chain.

Pipeline order: bbq -> candidates -> classify -> pairs -> split -> label -> rows, with `check`
(leakage) and `stats` (counts) to look at any file; `statements` writes the free-text judge's
statement pairs from BBQ's metadata. `build` runs split -> label -> rows from the
judge-from-scratch files in one go (seconds, no model): it calls `biasjudge.dataset.build_dataset`
and prints the result.

Every command reads through validated readers; with --skip-invalid, invalid rows go to a
`<input>.rejects.jsonl` side file beside the command's output and the in/out/rejected counts are
printed. Every output file gets a `.meta.json` sidecar (inputs' sha256, config, counts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from pydantic import BaseModel, ConfigDict
from rich.table import Table

from biasjudge.cli.common import (
    BudgetOption,
    DataDirOption,
    DryRunOption,
    JudgeSpecOption,
    LabelMethod,
    LabelSourceChoice,
    LeakageLevelChoice,
    LeakageLevelOption,
    LedgerOption,
    PricesOption,
    SkipInvalidOption,
    SystemPromptOption,
    UnclearOption,
    UnclearVsBiasedChoice,
    console,
)

if TYPE_CHECKING:
    from biasjudge.dataset import LabelMethod as LabelMethodName
    from biasjudge.dataset import LeakageLevel, ReadReport
    from biasjudge.io import ReadResult
    from biasjudge.labels.agreement import GroupBy, LabelSet
    from biasjudge.labels.answer_key import KappaTable, UnclearVsBiased
    from biasjudge.records import LabelSource, Pair

app = typer.Typer(
    name="data",
    help="Build the dataset: BBQ -> candidates -> pairs -> holdout split -> labels -> SFT/DPO rows.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

R = TypeVar("R", bound=BaseModel)


def register(parent: typer.Typer) -> None:
    """Add the `data` command group to the top-level app."""
    parent.add_typer(app, name="data")


# --------------------------------------------------------------------------- helpers


def _print_read(report: ReadReport, skip_invalid: bool) -> None:
    """One line: in/valid(/rejected) counts and where the rejects went."""
    line = f"read {report.path}: {report.n_in} in, {report.n_valid} valid"
    if skip_invalid:
        line += f", {report.n_rejected} rejected"
    if report.rejects_path is not None:
        line += f" -> {report.rejects_path}"
    console.print(line, highlight=False)


def _report_read(result: ReadResult[Any], rejects_dir: Path | None, skip_invalid: bool) -> None:
    """Print in/out/rejected counts; write rejects to a side file (in the current folder by default)."""
    from biasjudge.dataset import record_read

    _print_read(record_read(result, rejects_dir if rejects_dir is not None else Path.cwd()), skip_invalid)


def _read_pairs(path: Path, skip_invalid: bool, rejects_dir: Path | None) -> list[Pair]:
    from biasjudge.data.holdout import load_pairs

    result = load_pairs(path, skip_invalid=skip_invalid)
    _report_read(result, rejects_dir, skip_invalid)
    return result.records


def _read(
    path: Path, model: type[R], skip_invalid: bool, rejects_dir: Path | None, unique_key: str | None = None
) -> list[R]:
    from biasjudge.io import read_records

    result = read_records(path, model, skip_invalid=skip_invalid, unique_key=unique_key)
    _report_read(result, rejects_dir, skip_invalid)
    return result.records


def _system_prompt(path: Path | None) -> tuple[str, str]:
    """(text, where it came from)."""
    from biasjudge.dataset import load_system_prompt

    return load_system_prompt(path)


def _counts_table(title: str, rows: Sequence[tuple[str, Any, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("output")
    table.add_column("rows", justify="right")
    table.add_column("notes")
    for name, n, note in rows:
        table.add_row(name, str(n), note)
    return table


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _kappa_rich(tables: dict[str, KappaTable], default: str) -> Table:
    settings = [default, *[s for s in tables if s != default]]
    table = Table(title="Answer key vs human labels (Cohen's kappa, A/B/TIE)", title_justify="left")
    table.add_column("slice")
    table.add_column("bucket")
    table.add_column("n", justify="right")
    for setting in settings:
        table.add_column(f"{setting}{' (used)' if setting == default else ''}", justify="right")
    table.add_column("agree (used)", justify="right")
    for cell in tables[default].cells:
        values = [tables[s].get(cell.slice, cell.bucket, cell.subset) for s in settings]
        agree = "—" if cell.agreement is None else f"{cell.agreement:.0%}"
        bucket = "all, levels known" if cell.subset == "known_levels" else cell.bucket
        table.add_row(cell.slice, bucket, str(cell.n), *(_fmt(v.kappa) for v in values), agree)
    return table


def _stats_tables(stats: dict[str, Any], title: str) -> list[Table]:
    tables = []
    for key, value in stats.items():
        if not isinstance(value, dict):
            continue
        table = Table(title=f"{title}: {key}", title_justify="left")
        table.add_column(key)
        table.add_column("rows", justify="right")
        for name, n in value.items():
            table.add_row(str(name), str(n))
        tables.append(table)
    return tables


# --------------------------------------------------------------------------- build


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    data_dir: DataDirOption = None,
    unclear_vs_biased: UnclearOption = UnclearVsBiasedChoice.tie,
    own_split: Annotated[
        bool,
        typer.Option(
            "--own-split",
            help="Split pairs.jsonl by question with split_holdout instead of using the reference holdout.",
        ),
    ] = False,
    leakage_level: LeakageLevelOption = LeakageLevelChoice.question,
    system_prompt_file: SystemPromptOption = None,
    sft_min_confidence: Annotated[
        int | None,
        typer.Option("--sft-min-confidence", help="Leave labels below this confidence out of SFT (default: keep all)."),
    ] = None,
    dpo_min_confidence: Annotated[
        int, typer.Option("--dpo-min-confidence", help="DPO uses labels at least this confident.")
    ] = 4,
    validation_fraction: Annotated[
        float, typer.Option("--validation-fraction", help="DPO validation share (by sha1 of pair_id).")
    ] = 0.05,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Holdout, train pool, answer-key labels, SFT and DPO rows from the judge-from-scratch files.

    Reads pairs.jsonl, eval_set_unlabeled.jsonl (the human-labelled holdout) and
    synthesis_results.jsonl (hard negatives). The train pool is every pair not in the holdout and
    not of the OOD category (religion); at --leakage-level question (default) it also leaves out
    pairs whose question is in the holdout. Writes pairs, holdout (levels attached), train_pool,
    unused, labelled, sft, dpo and answer_key_kappa.json, each with a .meta.json sidecar.
    """
    from biasjudge.config import resolve_data_dir
    from biasjudge.dataset import MissingHoldoutError, build_dataset

    try:
        built = build_dataset(
            resolve_data_dir(data_dir),
            out,
            unclear_vs_biased=cast("UnclearVsBiased", unclear_vs_biased),
            own_split=own_split,
            leakage_level=cast("LeakageLevel", leakage_level),
            system_prompt_file=system_prompt_file,
            sft_min_confidence=sft_min_confidence,
            dpo_min_confidence=dpo_min_confidence,
            validation_fraction=validation_fraction,
            skip_invalid=skip_invalid,
            on_read=lambda report: _print_read(report, skip_invalid),
        )
    except MissingHoldoutError as exc:
        raise typer.BadParameter(f"{exc.path} not found (or pass --own-split)", param_hint="--data-dir") from None

    sft, dpo = built.sft, built.dpo
    summary = [
        ("pairs.jsonl", built.rows["pairs"], "all pairs"),
        ("holdout.jsonl", built.rows["holdout"], built.notes["holdout"]),
        ("train_pool.jsonl", built.rows["train_pool"], f"leakage check ({built.leakage_level}): none shared"),
        ("unused.jsonl", built.rows["unused"], built.notes.get("unused", "never trained on")),
        (
            "labelled.jsonl",
            built.rows["labelled"],
            f"answer key ({built.unclear_vs_biased}): " + ", ".join(f"{k} {v}" for k, v in built.verdicts.items()),
        ),
        (
            "sft.jsonl",
            built.rows["sft"],
            f"{sft.n_used} pairs x 2 (swap); skipped {sft.skipped_no_label} unlabelled, "
            f"{sft.skipped_low_confidence} low confidence",
        ),
        (
            "dpo.jsonl",
            built.rows["dpo"],
            f"{dpo.n_used} pairs x 2; {dpo.rejected_sources}; split {built.dpo_stats.get('split')}",
        ),
    ]
    console.print(_counts_table(f"biasjudge data build -> {built.out}", summary))
    bucket_table = Table(title="Rows per bucket", title_justify="left")
    for column in ("bucket", "train pool", "sft", "dpo"):
        bucket_table.add_column(column, justify="left" if column == "bucket" else "right")
    for bucket, n in built.pool_buckets.items():
        bucket_table.add_row(
            bucket,
            str(n),
            str(built.sft_stats["bucket"].get(bucket, 0)),
            str(built.dpo_stats["bucket"].get(bucket, 0)),
        )
    console.print(bucket_table)
    if built.kappa:
        console.print(_kappa_rich(built.kappa, built.unclear_vs_biased))
    console.print(
        f"Wrote {built.out}/{{pairs,holdout,train_pool,unused,labelled,sft,dpo}}.jsonl"
        f"{' and answer_key_kappa.json' if built.kappa else ''}, each with a .meta.json, in {built.seconds:.1f} s.",
        highlight=False,
    )


@app.command()
def statements(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (statements-{train,validation,ood}.jsonl).")],
    data_dir: DataDirOption = None,
    ood_category: Annotated[
        list[str] | None,
        typer.Option("--ood-category", help="A category kept out of training (repeat; default religion)."),
    ] = None,
    validation_fraction: Annotated[
        float, typer.Option("--validation-fraction", help="Share of templates in the validation set.", min=0.0, max=0.9)
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the wording, padding and order.")] = 0,
) -> None:
    """Free-text statement pairs written from BBQ's metadata (no model): the free-text judge's data.

    For each negative "Who ...?" BBQ question with a stereotype target: the attribute given to the
    targeted person vs the other one, a claim vs a statement that declines it, clean and equally
    stereotyped pairs (TIE); wording, padding and order vary. Never a holdout question or template;
    the OOD category only in the ood set; a share of templates only in the validation set. Each
    file gets a .meta.json sidecar with its counts per kind, category and verdict.
    """
    from biasjudge.config import resolve_data_dir
    from biasjudge.data.statements import write_statements

    written = write_statements(
        resolve_data_dir(data_dir),
        out,
        ood_categories=ood_category or ["religion"],
        validation_fraction=validation_fraction,
        seed=seed,
        log=lambda line: console.print(line, highlight=False, markup=False),
    )
    console.print(f"Wrote {', '.join(str(p) for p in written.values())}, each with a .meta.json.", highlight=False)


# --------------------------------------------------------------------------- bbq, candidates, classify, pairs


@app.command()
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
    seed: Annotated[int, typer.Option("--seed")] = 42,
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
        questions = _read(sample_path, Question, skip_invalid, out_dir, unique_key="question_id")
        common, agree = target_agreement(raw, questions)
        share = f"{agree / common:.1%}" if common else "n/a"
        console.print(
            f"target_label agreement with {sample_path}: {agree}/{common} common items ({share})", highlight=False
        )
    elif sample is not None:
        raise typer.BadParameter(f"{sample} not found", param_hint="--sample")
    if write_sample is not None:
        from biasjudge.dataset import write_bbq_sample

        picked = write_bbq_sample(raw, write_sample, n_per_cell=n_per_cell, seed=seed, categories=found)
        console.print(f"wrote {len(picked)} questions to {write_sample}", highlight=False)


@app.command()
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
    table = Table(title=f"expand {sample} (seed {run.seed})", title_justify="left")
    table.add_column("stratum")
    table.add_column("added", justify="right")
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


@app.command()
def candidates(
    questions: Annotated[Path, typer.Option("--questions", help="Questions (bbq_sample.jsonl shape).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Candidates JSONL (appended to; resumable).")],
    judge: JudgeSpecOption,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Value of the `model` field (default: the spec).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 256,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Answer only the first N questions.")] = None,
    skip_invalid: SkipInvalidOption = False,
    ledger: LedgerOption = None,
    budget_usd: BudgetOption = None,
    dry_run: DryRunOption = False,
    prices: PricesOption = None,
) -> None:
    """Generate candidate answers with any backend (resumable: answers already in --out are kept).

    Every call is booked in the cost ledger; --budget-usd stops before a call that could cross it (exit 3).
    """
    from biasjudge.backends.base import GenerationParams
    from biasjudge.backends.registry import make_backend
    from biasjudge.cli.common import cost_control, cost_session
    from biasjudge.dataset import candidates_from_file

    control = cost_control(out, ledger, budget_usd, dry_run, prices)
    backend = make_backend(judge)
    try:
        with cost_session(control):
            run = candidates_from_file(
                questions,
                out,
                backend,
                model_name=model_name or judge,
                params=GenerationParams(temperature=temperature, max_tokens=max_tokens, seed=seed),
                batch_size=batch_size,
                limit=limit,
                skip_invalid=skip_invalid,
                on_read=lambda report: _print_read(report, skip_invalid),
                cost=control,
            )
            verb = "already" if dry_run else "now"
            console.print(
                f"{len(run.candidates)} candidates of {run.n_questions} questions {verb} in {out} "
                f"(finish: {run.finish_reasons})",
                highlight=False,
            )
    finally:
        backend.close()


@app.command()
def classify(
    questions: Annotated[Path, typer.Option("--questions", help="Questions the candidates answer.")],
    candidates_file: Annotated[Path, typer.Option("--candidates", help="Candidates JSONL.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Classified candidates JSONL.")],
    require_stop: Annotated[
        bool, typer.Option("--require-stop", help="Count truncated answers as parse_failed.")
    ] = False,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Classify candidate answers: chosen letter, answer class, hedging, suspected bias level."""
    from biasjudge.dataset import classify_file

    run = classify_file(
        questions,
        candidates_file,
        out,
        require_stop=require_stop,
        skip_invalid=skip_invalid,
        on_read=lambda report: _print_read(report, skip_invalid),
    )
    console.print(
        f"{len(run.classified)} classified -> {out}\n  classes: {run.classes}\n  levels: {run.levels}", highlight=False
    )


@app.command()
def pairs(
    questions: Annotated[Path, typer.Option("--questions", help="Questions the candidates answer.")],
    candidates_file: Annotated[Path, typer.Option("--candidates", help="Candidates JSONL (classified or not).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pairs JSONL.")],
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML with PairsConfig values.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Build pairs in the five buckets from classified candidates."""
    from biasjudge.config import load_config
    from biasjudge.data.pairs import PairsConfig
    from biasjudge.dataset import pairs_from_files

    config = load_config(PairsConfig, config_file, {"seed": seed})
    run = pairs_from_files(
        questions,
        candidates_file,
        out,
        config,
        skip_invalid=skip_invalid,
        on_read=lambda report: _print_read(report, skip_invalid),
    )
    buckets = run.buckets
    table = Table(title=f"pairs -> {out}", title_justify="left")
    table.add_column("bucket")
    table.add_column("pairs", justify="right")
    table.add_column("target", justify="right")
    for bucket, n in buckets.items():
        table.add_row(bucket, str(n), str(config.targets.get(bucket, 0)))
    console.print(table)


# --------------------------------------------------------------------------- split, check


@app.command()
def split(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="All pairs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML with HoldoutConfig values.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    ood_category: Annotated[
        str | None, typer.Option("--ood-category", help="Category held out entirely (default religion).")
    ] = None,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Split pairs by question into holdout / train_pool / unused (OOD and leftovers), then check for leakage."""
    from biasjudge.config import load_config
    from biasjudge.data.holdout import HoldoutConfig
    from biasjudge.dataset import split_file

    config = load_config(HoldoutConfig, config_file, {"seed": seed, "ood_category": ood_category})
    result = split_file(
        pairs_file, out, config, skip_invalid=skip_invalid, on_read=lambda report: _print_read(report, skip_invalid)
    ).split
    table = Table(title=f"split -> {out}", title_justify="left")
    table.add_column("bucket")
    for column in ("in_dist", "ood"):
        table.add_column(column, justify="right")
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


class _Ids(BaseModel):
    """The two fields a leakage check needs, from any pair or row file."""

    model_config = ConfigDict(extra="ignore")

    pair_id: str
    question_id: str | None = None


@app.command()
def check(
    holdout: Annotated[Path, typer.Option("--holdout", help="The evaluation holdout (pairs).")],
    train: Annotated[
        list[Path], typer.Option("--train", help="Training file(s): pairs, SFT or DPO rows (repeatable).")
    ],
    level: LeakageLevelOption = LeakageLevelChoice.question,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Leakage check: exit 1, naming the ids, when a training file shares a question (or pair) with the holdout."""
    from biasjudge.data.holdout import check_leakage

    held = _read(holdout, _Ids, skip_invalid, None, unique_key="pair_id")
    failed = False
    for path in train:
        items = _read(path, _Ids, skip_invalid, None)
        no_question = sum(item.question_id is None for item in items)
        report = check_leakage(held, items)  # type: ignore[arg-type]
        bad = report.leaks(level)  # type: ignore[arg-type]
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


# --------------------------------------------------------------------------- labels


@app.command()
def label(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Pairs to label.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Labelled pairs JSONL.")],
    labels: Annotated[
        LabelMethod,
        typer.Option("--labels", help="answer-key: BBQ's answer key (instant); teacher: a model or a file."),
    ] = LabelMethod.answer_key,
    judge: Annotated[
        str | None, typer.Option("--judge", "-j", help="Teacher backend spec (with --labels teacher).")
    ] = None,
    teacher_file: Annotated[
        Path | None,
        typer.Option(
            "--teacher-file",
            help="Import teacher labels from this file (dryrun_*.jsonl shape) instead of running a model.",
        ),
    ] = None,
    unclear_vs_biased: UnclearOption = UnclearVsBiasedChoice.tie,
    labeller_name: Annotated[
        str | None, typer.Option("--labeller-name", help="Teacher name stored with labels (default: the spec).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Teacher prompts per generate call.")] = 8,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Teacher's new-token cap per pair.")] = 768,
    temperature: Annotated[float, typer.Option("--temperature", help="Teacher's sampling temperature.")] = 0.0,
    rubric_file: Annotated[
        Path | None,
        typer.Option("--rubric-file", help="Teacher's system prompt, byte for byte (default: prompts/teacher.md)."),
    ] = None,
    skip_invalid: SkipInvalidOption = False,
    ledger: LedgerOption = None,
    budget_usd: BudgetOption = None,
    dry_run: DryRunOption = False,
    prices: PricesOption = None,
) -> None:
    """Label pairs with the answer key (instant) or a teacher model (resumable; raw output in <out>_teacher.jsonl).

    A teacher model's calls are booked in the cost ledger; --budget-usd stops before a call that could cross it
    (exit 3), --dry-run only estimates.
    """
    from contextlib import nullcontext

    from biasjudge.cli.common import cost_control, cost_session
    from biasjudge.dataset import label_file

    if labels is LabelMethod.teacher and judge is None and teacher_file is None:
        raise typer.BadParameter("--labels teacher needs --judge SPEC or --teacher-file FILE", param_hint="--judge")
    teacher = None
    rubric = None
    if rubric_file is not None:
        from biasjudge.prompts import read_prompt_file

        rubric = read_prompt_file(rubric_file)
    control = cost_control(out, ledger, budget_usd, dry_run, prices)
    if labels is LabelMethod.teacher and teacher_file is None and judge is not None:
        from biasjudge.backends.registry import make_backend

        teacher = make_backend(judge)
    try:
        from biasjudge.backends.base import GenerationParams

        with cost_session(control) if teacher is not None else nullcontext(control):
            run = label_file(
                pairs_file,
                out,
                method=cast("LabelMethodName", labels.value),
                unclear_vs_biased=cast("UnclearVsBiased", unclear_vs_biased.value),
                teacher_file=teacher_file,
                teacher=teacher,
                teacher_name=labeller_name or judge or "teacher",
                params=GenerationParams(temperature=temperature, max_tokens=max_tokens),
                batch_size=batch_size,
                skip_invalid=skip_invalid,
                on_read=lambda report: _print_read(report, skip_invalid),
                cost=control if teacher is not None else None,
                rubric=rubric,
            )
            if run.teacher is not None and not dry_run:
                t = run.teacher
                console.print(
                    f"teacher: {t.n_labelled_now} labelled now, {t.n_resumed} resumed, {t.n_dropped_now} unreadable "
                    f"(-> {t.dropped_path}), {t.n_dropped_before} dropped earlier, "
                    f"{t.n_no_confidence} without confidence",
                    highlight=False,
                )
            if not (dry_run and teacher is not None):
                console.print(
                    f"{len(run.pairs)} pairs -> {out}: {run.verdicts}, confidence {run.confidence}, "
                    f"{run.unlabelled} without a {run.source} label",
                    highlight=False,
                )
    finally:
        if teacher is not None:
            teacher.close()


@app.command("label-human")
def label_human(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Pairs to label.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Human labels JSONL (appended to; resumable).")],
    labeller: Annotated[str, typer.Option("--labeller", help="Your annotator id.")],
    show_models: Annotated[bool, typer.Option("--show-models", help="Show which model wrote each response.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Offer only the first N pairs.")] = None,
    review: Annotated[
        bool, typer.Option("--review", help="Walk through the pairs already labelled to keep, change or delete each.")
    ] = False,
    random_order: Annotated[
        bool, typer.Option("--random-order", help="Show the pairs shuffled (the same --seed gives the same order).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --random-order.")] = 0,
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Do not copy the labels file aside before the session's first write.")
    ] = False,
    break_lock: Annotated[
        bool, typer.Option("--break-lock", help="Take over a lock left on another host by a session that is over.")
    ] = False,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Label pairs by hand in the terminal: A / B / TIE / skip / quit, then confidence 1-5 (saved as you go).

    One session per labels file (a lock names the holder); a backup before the first write.
    """
    from biasjudge.labels.human import label_interactively

    todo = _read_pairs(pairs_file, skip_invalid, out.parent)
    todo = todo[:limit] if limit is not None else todo
    session = label_interactively(
        todo,
        out,
        labeller=labeller,
        show_models=show_models,
        review=review,
        random_order=random_order,
        seed=seed,
        backup=not no_backup,
        break_lock=break_lock,
    )
    if session.n_remaining and not review:
        console.print(f"{session.n_remaining} pairs left; run the same command again to go on.", highlight=False)


# --------------------------------------------------------------------------- label agreement, flips


class GroupByChoice(StrEnum):
    """What agreement and flip reports are split by (`--by`)."""

    pair_category = "pair_category"
    bias_category = "bias_category"
    eval_slice = "eval_slice"
    none = "none"


LabelFilesArgument = Annotated[
    list[str],
    typer.Argument(
        help=(
            "Label files, NAME=PATH to name one (default name: the file's stem). Flat label records "
            "(dryrun_*.jsonl, data label's <out>_teacher.jsonl, the human tool's file) or pair files "
            "with labels (data label's output, the holdout with human_verdict)."
        ),
        show_default=False,
    ),
]
PairSourceOption = Annotated[
    LabelSourceChoice | None,
    typer.Option("--source", help="Label source read from pair files (default: each pair's latest label)."),
]
GroupByOption = Annotated[
    GroupByChoice, typer.Option("--by", help="Split the per-group rows by this field of the pairs.")
]
GroupPairsOption = Annotated[
    Path | None,
    typer.Option("--pairs", help="A pairs file naming each pair's category, for label files that do not."),
]
ReportOutOption = Annotated[Path | None, typer.Option("--out", "-o", help="Write the full report as JSON here.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the full report as JSON on stdout.")]


def _label_sets(files: Sequence[str], source: LabelSourceChoice | None, skip_invalid: bool) -> list[LabelSet]:
    from biasjudge.labels.agreement import parse_named_path, read_label_set

    sets = []
    for spec in files:
        name, path = parse_named_path(spec)
        label_set = read_label_set(
            path, name=name, source=cast("LabelSource", source.value) if source else None, skip_invalid=skip_invalid
        )
        extra = f", {label_set.n_unlabelled} pairs without a label" if label_set.n_unlabelled else ""
        console.print(
            f"read {path}: {len(label_set)} labels as {label_set.name!r} ({label_set.format}{extra})", highlight=False
        )
        sets.append(label_set)
    return sets


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


@app.command()
def agreement(
    files: LabelFilesArgument,
    source: PairSourceOption = None,
    by: GroupByOption = GroupByChoice.pair_category,
    pairs_file: GroupPairsOption = None,
    out: ReportOutOption = None,
    as_json: JsonOption = False,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Cohen's kappa and raw agreement between every two label files, on the pairs both labelled, per group."""
    from biasjudge.labels.agreement import agreement_report, groups_from_pairs, save_report

    sets = _label_sets(files, source, skip_invalid)
    group_by = cast("GroupBy", by.value)
    groups = groups_from_pairs(pairs_file, group_by, skip_invalid=skip_invalid) if pairs_file else None
    report = agreement_report(sets, by=group_by, groups=groups)
    table = Table(title="Label agreement (Cohen's kappa over A/B/TIE, on shared pairs)", title_justify="left")
    for column in ("a", "b", "n a", "n b", "shared", "agree", "kappa"):
        table.add_column(column, justify="left" if column in ("a", "b") else "right")
    for cmp in report.pairwise:
        agree = f"{cmp.overall.n_agree} ({_pct(cmp.overall.agreement)})" if cmp.n_shared else "—"
        table.add_row(cmp.a, cmp.b, str(cmp.n_a), str(cmp.n_b), str(cmp.n_shared), agree, _fmt(cmp.overall.kappa))
    console.print(table)
    for cmp in report.pairwise:
        if not cmp.groups:
            continue
        detail = Table(title=f"{cmp.a} vs {cmp.b} by {report.by}", title_justify="left")
        for column in (report.by, "n", "agree", "kappa"):
            detail.add_column(column, justify="left" if column == report.by else "right")
        for cell in cmp.groups:
            detail.add_row(cell.group, str(cell.n), f"{cell.n_agree} ({_pct(cell.agreement)})", _fmt(cell.kappa))
        console.print(detail)
    if out is not None:
        console.print(f"report -> {save_report(report, out)}", highlight=False)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))


@app.command()
def flips(
    old: Annotated[str, typer.Argument(help="The earlier label version (NAME=PATH to name it).", show_default=False)],
    new: Annotated[str, typer.Argument(help="The later label version (NAME=PATH to name it).", show_default=False)],
    max_flip_rate: Annotated[
        float, typer.Option("--max-flip-rate", help="Regression when more shared pairs than this share flip verdict.")
    ] = 0.10,
    max_group_flip_rate: Annotated[
        float | None,
        typer.Option("--max-group-flip-rate", help="Regression when any one group flips more than this (default off)."),
    ] = None,
    min_group_size: Annotated[
        int, typer.Option("--min-group-size", help="Groups smaller than this are not held to --max-group-flip-rate.")
    ] = 5,
    min_shared: Annotated[
        int, typer.Option("--min-shared", help="Invalid (exit 2) when fewer pairs than this are in both versions.")
    ] = 1,
    max_lost_rate: Annotated[
        float | None,
        typer.Option("--max-lost-rate", help="Regression when more old labels than this share are missing from new."),
    ] = None,
    source: PairSourceOption = None,
    by: GroupByOption = GroupByChoice.pair_category,
    pairs_file: GroupPairsOption = None,
    out: ReportOutOption = None,
    as_json: JsonOption = False,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Which pairs changed verdict between two label versions, from what to what, per group; a gate on the rate.

    Exit 0: pass; 1: regression (a threshold crossed); 2: invalid input (an unreadable file, too few shared pairs).
    """
    from biasjudge.labels.agreement import flip_gate, flip_report, groups_from_pairs, save_report

    old_set, new_set = _label_sets([old, new], source, skip_invalid)
    if old_set.name == new_set.name:
        new_set.name = f"{new_set.name} (new)"
    group_by = cast("GroupBy", by.value)
    groups = groups_from_pairs(pairs_file, group_by, skip_invalid=skip_invalid) if pairs_file else None
    report = flip_report(old_set, new_set, by=group_by, groups=groups)
    gate = flip_gate(
        report,
        max_flip_rate=max_flip_rate,
        max_group_flip_rate=max_group_flip_rate,
        min_group_size=min_group_size,
        min_shared=min_shared,
        max_lost_rate=max_lost_rate,
    )
    n = report.n_shared
    console.print(
        f"{report.old} -> {report.new}: {report.n_old} and {report.n_new} labels, {n} shared "
        f"({report.n_only_old} only in old, {report.n_only_new} only in new)\n"
        f"  identical {report.identical}/{n}, verdict flipped {report.verdict_flipped}/{n}, "
        f"confidence shifted {report.confidence_shifted}/{n}; kappa {_fmt(report.kappa)}; "
        f"transitions {report.transitions or 'none'}",
        highlight=False,
    )
    if report.by_group:
        table = Table(title=f"Flips by {report.by}", title_justify="left")
        for column in (report.by, "shared", "flipped", "rate"):
            table.add_column(column, justify="left" if column == report.by else "right")
        for group, g in report.by_group.items():
            table.add_row(group, str(g.n), str(g.flipped), _pct(g.flip_rate))
        console.print(table)
    for flip in report.flips:
        console.print(
            f"  {flip.pair_id}  {flip.old_verdict} -> {flip.new_verdict}  "
            f"(confidence {flip.old_confidence} -> {flip.new_confidence}; {flip.group})",
            highlight=False,
        )
    colour = {"pass": "green", "regression": "red", "invalid": "red"}[gate.decision]
    console.print(f"gate: [{colour}]{gate.decision.upper()}[/{colour}]", highlight=False)
    for reason in gate.reasons:
        console.print(f"  {reason}", highlight=False, markup=False)
    if out is not None:
        console.print(f"report -> {save_report(report, out)}", highlight=False)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    if gate.exit_code:
        raise typer.Exit(gate.exit_code)


# --------------------------------------------------------------------------- hard negatives


@app.command()
def synthesize(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Labelled pairs (the output of `data label`).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Hard negatives JSONL (synthesis_results.jsonl shape; appended to, resumable)."
        ),
    ],
    judge: Annotated[str, typer.Option("--judge", "-j", help="Backend spec of the model that writes them.")],
    label_source: Annotated[
        LabelSourceChoice,
        typer.Option("--label-source", help="The label each negative must contradict (as in `data rows`)."),
    ] = LabelSourceChoice.answer_key,
    min_confidence: Annotated[
        int | None,
        typer.Option("--min-confidence", help="Only labels at least this confident (DPO's default, 4)."),
    ] = 4,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, help="Calls per pair before it is dropped (retries get the reason).")
    ] = 3,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N eligible pairs (sha1 order; 4 = one per mode).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Value of the records' `model` field (default: the spec).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per generate call.")] = 8,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="New-token cap per output.")] = 400,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.")] = 0.7,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of attempt 1 (attempt k uses seed + k - 1).")] = None,
    constrained: Annotated[
        bool | None,
        typer.Option(
            "--constrained/--free",
            help=(
                "Hold generation to the output contract's grammar, or not. Default: where the backend takes a "
                "grammar (llama.cpp; openai: with '?grammar_field=...')."
            ),
            show_default=False,
        ),
    ] = None,
    system_prompt_file: Annotated[
        Path | None, typer.Option("--system-prompt-file", help="Replaces prompts/synth.md, byte for byte.")
    ] = None,
    retry_dropped: Annotated[
        bool, typer.Option("--retry-dropped", help="Try again the pairs in <out>.dropped.jsonl.")
    ] = False,
    skip_invalid: SkipInvalidOption = False,
    ledger: LedgerOption = None,
    budget_usd: BudgetOption = None,
    dry_run: DryRunOption = False,
    prices: PricesOption = None,
) -> None:
    """Hard negatives for DPO: plausible but WRONG judge reasoning per labelled pair, in four failure modes.

    An output is kept when the verdict parser reads it and its verdict differs from the label; else it is asked
    for again (--max-attempts) and then dropped, with the reasons, to <out>.dropped.jsonl. Feed --out to
    `data rows --hard-negatives`. Every call is booked in the cost ledger.
    """
    from biasjudge.backends.base import GenerationParams
    from biasjudge.backends.registry import make_backend
    from biasjudge.cli.common import cost_control, cost_session
    from biasjudge.labels.synthesis import synthesize_file

    system_prompt = None
    if system_prompt_file is not None:
        from biasjudge.prompts import read_prompt_file

        system_prompt = read_prompt_file(system_prompt_file)
    control = cost_control(out, ledger, budget_usd, dry_run, prices)
    backend = make_backend(judge)
    try:
        with cost_session(control):
            run = synthesize_file(
                pairs_file,
                out,
                backend,
                model_name=model_name or judge,
                skip_invalid=skip_invalid,
                on_read=lambda result: _report_read(result, out.parent, skip_invalid),
                label_source=cast("LabelSource", label_source.value),
                params=GenerationParams(temperature=temperature, max_tokens=max_tokens, seed=seed),
                min_confidence=min_confidence,
                max_attempts=max_attempts,
                batch_size=batch_size,
                limit=limit,
                constrained=constrained,
                system_prompt=system_prompt,
                retry_dropped=retry_dropped,
                cost=control,
            )
            skipped = (
                f"left out: {run.skipped_no_label} without a {label_source.value} label, "
                f"{run.skipped_low_confidence} below confidence {min_confidence}, {run.skipped_tie} TIE"
            )
            if dry_run:
                console.print(f"{run.eligible} eligible pairs, {run.resumed} done already; {skipped}", highlight=False)
            else:
                console.print(
                    f"hard negatives: {run.written_now} written now {run.modes}, {run.resumed} resumed, "
                    f"{run.dropped_now} dropped (-> {run.dropped_path}), {run.dropped_before} dropped earlier; "
                    f"{run.calls} calls; rejected attempts {run.rejections}; {skipped} -> {out}",
                    highlight=False,
                )
    finally:
        backend.close()


# --------------------------------------------------------------------------- rows, stats


@app.command()
def rows(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Labelled pairs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for sft.jsonl and dpo.jsonl.")],
    label_source: Annotated[
        LabelSourceChoice, typer.Option("--label-source", help="Which label of each pair the rows are built from.")
    ] = LabelSourceChoice.answer_key,
    system_prompt_file: SystemPromptOption = None,
    min_confidence: Annotated[
        int | None, typer.Option("--min-confidence", help="SFT: leave out labels below this confidence.")
    ] = None,
    dpo_min_confidence: Annotated[int, typer.Option("--dpo-min-confidence")] = 4,
    hard_negatives: Annotated[
        Path | None, typer.Option("--hard-negatives", help="synthesis_results.jsonl-shaped rejecteds.")
    ] = None,
    validation_fraction: Annotated[float, typer.Option("--validation-fraction")] = 0.05,
    holdout: Annotated[
        Path | None, typer.Option("--holdout", help="Fail if the rows share a question with this holdout.")
    ] = None,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """SFT rows (swap-doubled) and DPO rows (confident non-TIE labels) from labelled pairs."""
    from biasjudge.dataset import rows_from_file

    written = rows_from_file(
        pairs_file,
        out,
        label_source=cast("LabelSource", label_source.value),
        system_prompt_file=system_prompt_file,
        min_confidence=min_confidence,
        dpo_min_confidence=dpo_min_confidence,
        hard_negatives_file=hard_negatives,
        validation_fraction=validation_fraction,
        holdout_file=holdout,
        skip_invalid=skip_invalid,
        on_read=lambda report: _print_read(report, skip_invalid),
    )
    sft, dpo = written.sft, written.dpo
    console.print(
        _counts_table(
            f"rows -> {out}",
            [
                (
                    "sft.jsonl",
                    len(sft.rows),
                    f"{sft.n_used} pairs x 2; skipped {sft.skipped_no_label} unlabelled, "
                    f"{sft.skipped_low_confidence} low confidence",
                ),
                (
                    "dpo.jsonl",
                    len(dpo.rows),
                    f"{dpo.n_used} pairs x 2; {dpo.skipped_tie} TIE skipped; {dpo.rejected_sources}",
                ),
            ],
        )
    )


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


@app.command()
def stats(
    file: Annotated[Path, typer.Argument(help="A pairs, SFT or DPO file.")],
    pairs_file: Annotated[
        Path | None, typer.Option("--pairs", help="Pairs the rows came from (for BBQ category and DPO buckets).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON on stdout.")] = False,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Counts per bucket, verdict, BBQ category (and swap, split, sources for rows)."""
    from biasjudge.rows import row_stats

    model = _sniff(file)
    records: list[Any] = _read(file, model, skip_invalid, None)
    lookup = _read_pairs(pairs_file, skip_invalid, None) if pairs_file is not None else None
    counts = row_stats(records, lookup)
    if as_json:
        typer.echo(json.dumps(counts, indent=2))
        return
    console.print(
        f"{file}: {counts['rows']} {model.__name__} records, {counts['pairs']} distinct pairs", highlight=False
    )
    for table in _stats_tables(counts, file.name):
        console.print(table)
