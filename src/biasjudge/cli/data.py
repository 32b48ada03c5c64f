"""`biasjudge data ...`: the dataset stages, one command each, and `build` for the whole chain.

Pipeline order: bbq -> candidates -> classify -> pairs -> split -> label -> rows, with `check`
(leakage) and `stats` (counts) to look at any file. `build` runs split -> label -> rows from the
judge-from-scratch files in one go (seconds, no model): it calls `biasjudge.dataset.build_dataset`
and prints the result.

Every command reads through validated readers; with --skip-invalid, invalid rows go to a
`<input>.rejects.jsonl` side file beside the command's output and the in/out/rejected counts are
printed. Every output file gets a `.meta.json` sidecar (inputs' sha256, config, counts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from pydantic import BaseModel, ConfigDict
from rich.table import Table

from biasjudge.cli.common import (
    DataDirOption,
    JudgeSpecOption,
    LabelMethod,
    LabelSourceChoice,
    LeakageLevelChoice,
    LeakageLevelOption,
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
) -> None:
    """Generate candidate answers with any backend (resumable: answers already in --out are kept)."""
    from biasjudge.backends.base import GenerationParams
    from biasjudge.backends.registry import make_backend
    from biasjudge.dataset import candidates_from_file

    backend = make_backend(judge)
    try:
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
        )
    finally:
        backend.close()
    console.print(
        f"{len(run.candidates)} candidates of {run.n_questions} questions in {out} (finish: {run.finish_reasons})",
        highlight=False,
    )


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
    ood_name = next(k for k in counts if k != "in_dist")
    for bucket in counts["in_dist"]:
        table.add_row(bucket, str(counts["in_dist"][bucket]), str(counts[ood_name][bucket]))
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
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 768,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Label pairs with the answer key (instant) or a teacher model (resumable; raw output in <out>_teacher.jsonl)."""
    from biasjudge.dataset import label_file

    if labels is LabelMethod.teacher and judge is None and teacher_file is None:
        raise typer.BadParameter("--labels teacher needs --judge SPEC or --teacher-file FILE", param_hint="--judge")
    teacher = None
    if labels is LabelMethod.teacher and teacher_file is None and judge is not None:
        from biasjudge.backends.registry import make_backend

        teacher = make_backend(judge)
    try:
        from biasjudge.backends.base import GenerationParams

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
        )
    finally:
        if teacher is not None:
            teacher.close()
    if run.teacher is not None:
        t = run.teacher
        console.print(
            f"teacher: {t.n_labelled_now} labelled now, {t.n_resumed} resumed, {t.n_dropped_now} unreadable "
            f"(-> {t.dropped_path}), {t.n_dropped_before} dropped earlier, {t.n_no_confidence} without confidence",
            highlight=False,
        )
    console.print(
        f"{len(run.pairs)} pairs -> {out}: {run.verdicts}, confidence {run.confidence}, "
        f"{run.unlabelled} without a {run.source} label",
        highlight=False,
    )


@app.command("label-human")
def label_human(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Pairs to label.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Human labels JSONL (appended to; resumable).")],
    labeller: Annotated[str, typer.Option("--labeller", help="Your annotator id.")],
    show_models: Annotated[bool, typer.Option("--show-models", help="Show which model wrote each response.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Offer only the first N pairs.")] = None,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Label pairs by hand in the terminal: A / B / TIE / skip / quit, then confidence 1-5 (saved as you go)."""
    from biasjudge.labels.human import label_interactively

    todo = _read_pairs(pairs_file, skip_invalid, out.parent)
    todo = todo[:limit] if limit is not None else todo
    session = label_interactively(todo, out, labeller=labeller, show_models=show_models)
    if session.n_remaining:
        console.print(f"{session.n_remaining} pairs left; run the same command again to go on.", highlight=False)


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
