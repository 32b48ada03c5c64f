"""`biasjudge data ...`: the dataset stages, one command each, and `build` for the whole chain.

Pipeline order: bbq -> candidates -> classify -> pairs -> split -> label -> rows, with `check`
(leakage) and `stats` (counts) to look at any file; `statements` writes the free-text judge's
statement pairs from BBQ's metadata. `build` runs split -> label -> rows from the
judge-from-scratch files in one go (seconds, no model): it calls `biasjudge.dataset.build.build_dataset`
and prints the result.

Every command reads through validated readers; with --skip-invalid, invalid rows go to a
`<input>.rejects.jsonl` side file beside the command's output and the in/out/rejected counts are
printed. Every output file gets a `.meta.json` sidecar (inputs' sha256, config, counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from biasjudge.cli import data_labels, data_stages
from biasjudge.cli.common import (
    DataDirOption,
    SkipInvalidOption,
    console,
    defaults_from,
    option_groups,
)
from biasjudge.cli.data_common import counts_table, fmt, make_table, on_read
from biasjudge.data.statements import write_statements
from biasjudge.dataset.build import BuildConfig, build_dataset

if TYPE_CHECKING:
    from biasjudge.labels.answer_key import KappaTable

app = typer.Typer(
    name="data",
    help="Build the dataset: BBQ -> candidates -> pairs -> holdout split -> labels -> SFT/DPO rows.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(parent: typer.Typer) -> None:
    """Add the `data` command group to the top-level app."""
    parent.add_typer(app, name="data")


# --------------------------------------------------------------------------- build, statements


def _kappa_rich(tables: dict[str, KappaTable], default: str) -> Table:
    settings = [default, *[s for s in tables if s != default]]
    columns = [f"{setting}{' (used)' if setting == default else ''}" for setting in settings]
    table = make_table(
        "Answer key vs human labels (Cohen's kappa, A/B/TIE)", "slice", "bucket", "n", *columns, "agree (used)", left=2
    )
    for cell in tables[default].cells:
        values = [tables[s].get(cell.slice, cell.bucket, cell.subset) for s in settings]
        agree = "—" if cell.agreement is None else f"{cell.agreement:.0%}"
        bucket = "all, levels known" if cell.subset == "known_levels" else cell.bucket
        table.add_row(cell.slice, bucket, str(cell.n), *(fmt(v.kappa) for v in values), agree)
    return table


@option_groups
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    data_dir: DataDirOption = None,
    skip_invalid: SkipInvalidOption = False,
    *,
    build_config: BuildConfig,
) -> None:
    """Holdout, train pool, answer-key labels, SFT and DPO rows from the judge-from-scratch files.

    Reads pairs.jsonl, eval_set_unlabeled.jsonl (the human-labelled holdout) and
    synthesis_results.jsonl (hard negatives). The train pool is every pair not in the holdout and
    not of the OOD category (religion); at --leakage-level question (default) it also leaves out
    pairs whose question is in the holdout. Writes pairs, holdout (levels attached), train_pool,
    unused, labelled, sft, dpo and answer_key_kappa.json, each with a .meta.json sidecar.
    """
    from biasjudge.config import resolve_data_dir
    from biasjudge.dataset.build import MissingHoldoutError

    try:
        built = build_dataset(
            resolve_data_dir(data_dir), out, build_config, skip_invalid=skip_invalid, on_read=on_read(skip_invalid)
        )
    except MissingHoldoutError as exc:
        raise typer.BadParameter(f"{exc.path} not found (or pass --own-split)", param_hint="--data-dir") from None

    sft, dpo = built.written.sft, built.written.dpo
    summary = [
        ("pairs.jsonl", built.rows["pairs"], "all pairs"),
        ("holdout.jsonl", built.rows["holdout"], built.notes["holdout"]),
        ("train_pool.jsonl", built.rows["train_pool"], f"leakage check ({built.config.leakage_level}): none shared"),
        ("unused.jsonl", built.rows["unused"], built.notes.get("unused", "never trained on")),
        (
            "labelled.jsonl",
            built.rows["labelled"],
            f"answer key ({built.config.unclear_vs_biased}): "
            + ", ".join(f"{k} {v}" for k, v in built.verdicts.items()),
        ),
        (
            "sft.jsonl",
            built.rows["sft"],
            f"{sft.n_used} pairs x 2 (swap); skipped {sft.left_out.no_label} unlabelled, "
            f"{sft.left_out.low_confidence} low confidence",
        ),
        (
            "dpo.jsonl",
            built.rows["dpo"],
            f"{dpo.n_used} pairs x 2; {dpo.rejected_sources}; split {built.written.dpo_stats.get('split')}",
        ),
    ]
    console.print(counts_table(f"biasjudge data build -> {built.out}", summary))
    bucket_table = make_table("Rows per bucket", "bucket", "train pool", "sft", "dpo")
    for bucket, n in built.pool_buckets.items():
        bucket_table.add_row(
            bucket,
            str(n),
            str(built.written.sft_stats["bucket"].get(bucket, 0)),
            str(built.written.dpo_stats["bucket"].get(bucket, 0)),
        )
    console.print(bucket_table)
    if built.kappa:
        console.print(_kappa_rich(built.kappa, built.config.unclear_vs_biased))
    console.print(
        f"Wrote {built.out}/{{pairs,holdout,train_pool,unused,labelled,sft,dpo}}.jsonl"
        f"{' and answer_key_kappa.json' if built.kappa else ''}, each with a .meta.json, in {built.seconds:.1f} s.",
        highlight=False,
    )


@defaults_from(write_statements, ood_category="ood_categories")
def statements(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (statements-{train,validation,ood}.jsonl).")],
    data_dir: DataDirOption = None,
    *,
    ood_category: Annotated[
        list[str], typer.Option("--ood-category", help="A category kept out of training (repeat).")
    ],
    validation_fraction: Annotated[
        float, typer.Option("--validation-fraction", help="Share of templates in the validation set.", min=0.0, max=0.9)
    ],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the wording, padding and order.")],
) -> None:
    """Free-text statement pairs written from BBQ's metadata (no model): the free-text judge's data.

    For each negative "Who ...?" BBQ question with a stereotype target: the attribute given to the
    targeted person vs the other one, a claim vs a statement that declines it, clean and equally
    stereotyped pairs (TIE); wording, padding and order vary. Never a holdout question or template;
    the OOD category only in the ood set; a share of templates only in the validation set. Each
    file gets a .meta.json sidecar with its counts per kind, category and verdict.
    """
    from biasjudge.config import resolve_data_dir

    written = write_statements(
        resolve_data_dir(data_dir),
        out,
        ood_categories=list(ood_category),
        validation_fraction=validation_fraction,
        seed=seed,
        log=lambda line: console.print(line, highlight=False, markup=False),
    )
    console.print(f"Wrote {', '.join(str(p) for p in written.values())}, each with a .meta.json.", highlight=False)


# --------------------------------------------------------------------------- the group, in pipeline order


for _name, _command in (
    ("build", build),
    ("statements", statements),
    ("bbq", data_stages.bbq),
    ("expand", data_stages.expand),
    ("candidates", data_stages.candidates),
    ("classify", data_stages.classify),
    ("pairs", data_stages.pairs),
    ("split", data_stages.split),
    ("check", data_stages.check),
    ("label", data_labels.label),
    ("label-human", data_labels.label_human),
    ("agreement", data_labels.agreement),
    ("flips", data_labels.flips),
    ("synthesize", data_labels.synthesize),
    ("rows", data_stages.rows),
    ("stats", data_stages.stats),
):
    app.command(_name)(_command)
