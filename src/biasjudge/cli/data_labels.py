"""`biasjudge data` commands of the labels: label (answer key or teacher), label-human, agreement,
flips, and synthesize (hard negatives for DPO); registered on the group by :mod:`biasjudge.cli.data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel

from biasjudge.cli.common import (
    CostOptions,
    SkipInvalidOption,
    console,
    option_groups,
)
from biasjudge.cli.data_common import (
    fmt,
    make_table,
    model_stage,
    on_read,
    pct,
    prompt_text,
    read_pairs,
    report_read,
)
from biasjudge.dataset.stages import LabelConfig
from biasjudge.labels.flips import GateThresholds, flip_gate
from biasjudge.labels.human import LabelSessionConfig, label_interactively
from biasjudge.labels.label_sets import GroupBy
from biasjudge.labels.synthesis import SynthesisConfig
from biasjudge.records import LabelSourceChoice

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from biasjudge.backends.base import Backend
    from biasjudge.backends.costs import CostControl
    from biasjudge.labels.agreement import LabelSet


# --------------------------------------------------------------------------- labels


@option_groups
def label(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Pairs to label.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Labelled pairs JSONL.")],
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
    rubric_file: Annotated[
        Path | None,
        typer.Option("--rubric-file", help="Teacher's system prompt, byte for byte (default: prompts/teacher.md)."),
    ] = None,
    skip_invalid: SkipInvalidOption = False,
    *,
    settings: LabelConfig,
    cost: CostOptions,
) -> None:
    """Label pairs with the answer key (instant) or a teacher model (resumable; raw output in <out>_teacher.jsonl).

    A teacher model's calls are booked in the cost ledger; --budget-usd stops before a call that could cross it
    (exit 3), --dry-run only estimates.
    """
    from contextlib import nullcontext

    from biasjudge.dataset.stages import label_file

    teacher_method = settings.method == "teacher"
    if teacher_method and judge is None and teacher_file is None:
        raise typer.BadParameter("--labels teacher needs --judge SPEC or --teacher-file FILE", param_hint="--judge")
    rubric = prompt_text(rubric_file)
    stage: AbstractContextManager[tuple[Backend | None, CostControl]]
    if teacher_method and teacher_file is None and judge is not None:
        stage = model_stage(out, judge, cost)
    else:  # no model is called, so no cost session
        stage = nullcontext((None, cost.control(out)))
    with stage as (teacher, control):
        run = label_file(
            pairs_file,
            out,
            settings.model_copy(update={"labeller_name": settings.labeller_name or judge}),
            teacher_file=teacher_file,
            teacher=teacher,
            skip_invalid=skip_invalid,
            on_read=on_read(skip_invalid),
            cost=control if teacher is not None else None,
            rubric=rubric,
        )
        if run.teacher is not None and not cost.dry_run:
            t = run.teacher
            console.print(
                f"teacher: {t.n_written_now} labelled now, {t.n_resumed} resumed, {t.n_dropped_now} unreadable "
                f"(-> {t.dropped_path}), {t.n_dropped_before} dropped earlier, "
                f"{t.n_no_confidence} without confidence",
                highlight=False,
            )
        if not (cost.dry_run and teacher is not None):
            console.print(
                f"{len(run.pairs)} pairs -> {out}: {run.verdicts}, confidence {run.confidence}, "
                f"{run.unlabelled} without a {run.source} label",
                highlight=False,
            )


@option_groups
def label_human(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Pairs to label.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Human labels JSONL (appended to; resumable).")],
    limit: Annotated[int | None, typer.Option("--limit", help="Offer only the first N pairs.")] = None,
    skip_invalid: SkipInvalidOption = False,
    *,
    session_config: LabelSessionConfig,
) -> None:
    """Label pairs by hand in the terminal: A / B / TIE / skip / quit, then confidence 1-5 (saved as you go).

    One session per labels file (a lock names the holder); a backup before the first write.
    """

    todo = read_pairs(pairs_file, skip_invalid, out.parent)
    todo = todo[:limit] if limit is not None else todo
    session = label_interactively(todo, out, session_config)
    if session.n_remaining and not session_config.review:
        console.print(f"{session.n_remaining} pairs left; run the same command again to go on.", highlight=False)


# --------------------------------------------------------------------------- label agreement, flips


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


GroupByOption = Annotated[GroupBy, typer.Option("--by", help="Split the per-group rows by this field of the pairs.")]


GroupPairsOption = Annotated[
    Path | None,
    typer.Option("--pairs", help="A pairs file naming each pair's category, for label files that do not."),
]


ReportOutOption = Annotated[Path | None, typer.Option("--out", "-o", help="Write the full report as JSON here.")]


JsonOption = Annotated[bool, typer.Option("--json", help="Print the full report as JSON on stdout.")]


@dataclass(frozen=True)
class ReportOptions:
    """What `data agreement` and `data flips` read the labels with, and where the report goes (an option group)."""

    source: PairSourceOption = None
    by: GroupByOption = "pair_category"
    pairs_file: GroupPairsOption = None
    out: ReportOutOption = None
    as_json: JsonOption = False
    skip_invalid: SkipInvalidOption = False


def _label_sets(files: Sequence[str], options: ReportOptions) -> list[LabelSet]:
    from biasjudge.labels.agreement import parse_named_path, read_label_set

    source, skip_invalid = options.source, options.skip_invalid
    sets = []
    for spec in files:
        name, path = parse_named_path(spec)
        label_set = read_label_set(path, name=name, source=source, skip_invalid=skip_invalid)
        extra = f", {label_set.n_unlabelled} pairs without a label" if label_set.n_unlabelled else ""
        console.print(
            f"read {path}: {len(label_set)} labels as {label_set.name!r} ({label_set.format}{extra})", highlight=False
        )
        sets.append(label_set)
    return sets


def _groups(options: ReportOptions) -> tuple[GroupBy, dict[str, str] | None]:
    """What the report is split by, and each pair's group from --pairs (None: from the label files)."""
    from biasjudge.labels.agreement import groups_from_pairs

    group_by, pairs_file = options.by, options.pairs_file
    return group_by, groups_from_pairs(pairs_file, group_by, skip_invalid=options.skip_invalid) if pairs_file else None


def _write_report(report: BaseModel, options: ReportOptions) -> None:
    """The full report: written as JSON to --out, and printed on stdout with --json."""
    from biasjudge.labels.agreement import save_report

    if options.out is not None:
        console.print(f"report -> {save_report(report, options.out)}", highlight=False)
    if options.as_json:
        typer.echo(report.model_dump_json(indent=2))


@option_groups
def agreement(
    files: LabelFilesArgument,
    *,
    options: ReportOptions,
) -> None:
    """Cohen's kappa and raw agreement between every two label files, on the pairs both labelled, per group."""
    from biasjudge.labels.agreement import agreement_report

    sets = _label_sets(files, options)
    group_by, groups = _groups(options)
    report = agreement_report(sets, by=group_by, groups=groups)
    table = make_table(
        "Label agreement (Cohen's kappa over A/B/TIE, on shared pairs)",
        *("a", "b", "n a", "n b", "shared", "agree", "kappa"),
        left=2,
    )
    for cmp in report.pairwise:
        agree = f"{cmp.overall.n_agree} ({pct(cmp.overall.agreement)})" if cmp.n_shared else "—"
        table.add_row(cmp.a, cmp.b, str(cmp.n_a), str(cmp.n_b), str(cmp.n_shared), agree, fmt(cmp.overall.kappa))
    console.print(table)
    for cmp in report.pairwise:
        if not cmp.groups:
            continue
        detail = make_table(f"{cmp.a} vs {cmp.b} by {report.by}", report.by, "n", "agree", "kappa")
        for cell in cmp.groups:
            detail.add_row(cell.group, str(cell.n), f"{cell.n_agree} ({pct(cell.agreement)})", fmt(cell.kappa))
        console.print(detail)
    _write_report(report, options)


@option_groups
def flips(
    old: Annotated[str, typer.Argument(help="The earlier label version (NAME=PATH to name it).", show_default=False)],
    new: Annotated[str, typer.Argument(help="The later label version (NAME=PATH to name it).", show_default=False)],
    *,
    gate: GateThresholds,
    options: ReportOptions,
) -> None:
    """Which pairs changed verdict between two label versions, from what to what, per group; a gate on the rate.

    Exit 0: pass; 1: regression (a threshold crossed); 2: invalid input (an unreadable file, too few shared pairs).
    """
    from biasjudge.labels.agreement import flip_report

    old_set, new_set = _label_sets([old, new], options)
    if old_set.name == new_set.name:
        new_set.name = f"{new_set.name} (new)"
    group_by, groups = _groups(options)
    report = flip_report(old_set, new_set, by=group_by, groups=groups)
    decision = flip_gate(report, **gate.model_dump())
    n = report.n_shared
    console.print(
        f"{report.old} -> {report.new}: {report.n_old} and {report.n_new} labels, {n} shared "
        f"({report.n_only_old} only in old, {report.n_only_new} only in new)\n"
        f"  identical {report.identical}/{n}, verdict flipped {report.verdict_flipped}/{n}, "
        f"confidence shifted {report.confidence_shifted}/{n}; kappa {fmt(report.kappa)}; "
        f"transitions {report.transitions or 'none'}",
        highlight=False,
    )
    if report.by_group:
        table = make_table(f"Flips by {report.by}", report.by, "shared", "flipped", "rate")
        for group, g in report.by_group.items():
            table.add_row(group, str(g.n), str(g.flipped), pct(g.flip_rate))
        console.print(table)
    for flip in report.flips:
        console.print(
            f"  {flip.pair_id}  {flip.old_verdict} -> {flip.new_verdict}  "
            f"(confidence {flip.old_confidence} -> {flip.new_confidence}; {flip.group})",
            highlight=False,
        )
    colour = {"pass": "green", "regression": "red", "invalid": "red"}[decision.decision]
    console.print(f"gate: [{colour}]{decision.decision.upper()}[/{colour}]", highlight=False)
    for reason in decision.reasons:
        console.print(f"  {reason}", highlight=False, markup=False)
    _write_report(report, options)
    if decision.exit_code:
        raise typer.Exit(decision.exit_code)


# --------------------------------------------------------------------------- hard negatives


@option_groups
def synthesize(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="Labelled pairs (the output of `data label`).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Hard negatives JSONL (synthesis_results.jsonl shape; appended to, resumable)."
        ),
    ],
    judge: Annotated[str, typer.Option("--judge", "-j", help="Backend spec of the model that writes them.")],
    system_prompt_file: Annotated[
        Path | None, typer.Option("--system-prompt-file", help="Replaces prompts/synth.md, byte for byte.")
    ] = None,
    skip_invalid: SkipInvalidOption = False,
    *,
    settings: SynthesisConfig,
    cost: CostOptions,
) -> None:
    """Hard negatives for DPO: plausible but WRONG judge reasoning per labelled pair, in four failure modes.

    An output is kept when the verdict parser reads it and its verdict differs from the label; else it is asked
    for again (--max-attempts) and then dropped, with the reasons, to <out>.dropped.jsonl. Feed --out to
    `data rows --hard-negatives`. Every call is booked in the cost ledger.
    """
    from biasjudge.labels.synthesis import synthesize_file

    system_prompt = prompt_text(system_prompt_file)
    with model_stage(out, judge, cost) as (backend, control):
        run = synthesize_file(
            pairs_file,
            out,
            backend,
            settings,
            model_name=settings.model_name or judge,
            skip_invalid=skip_invalid,
            on_read=lambda result: report_read(result, out.parent, skip_invalid),
            system_prompt=system_prompt,
            cost=control,
        )
        skipped = (
            f"left out: {run.left_out.no_label} without a {settings.label_source} label, "
            f"{run.left_out.low_confidence} below confidence {settings.min_confidence}, {run.left_out.tie} TIE"
        )
        if cost.dry_run:
            console.print(f"{run.eligible} eligible pairs, {run.n_resumed} done already; {skipped}", highlight=False)
        else:
            console.print(
                f"hard negatives: {run.n_written_now} written now {run.modes}, {run.n_resumed} resumed, "
                f"{run.n_dropped_now} dropped (-> {run.dropped_path}), {run.n_dropped_before} dropped earlier; "
                f"{run.calls} calls; rejected attempts {run.rejections}; {skipped} -> {out}",
                highlight=False,
            )
