"""`biasjudge route fit | check`: a router judge (`route:ROUTER.json`) choosing a checkpoint per pair.

`fit` writes the router file (the two judges, the trained categories, the category classifier);
`check` measures how well it routes, without calling a judge. Evaluate the routed judge like any
other: `biasjudge eval --judge route:router.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from biasjudge.cli.common import DataDirOption, console, option_groups
from biasjudge.judge.router import RouterFitConfig, fit_router

if TYPE_CHECKING:
    from biasjudge.records import Pair

group = typer.Typer(
    help="A router judge: the in-distribution judge for trained bias categories, another for the rest.",
    no_args_is_help=True,
)


def _pairs(path: Path | None, data_dir: Path | None, name: str) -> list[Pair]:
    from biasjudge.eval.run import jfs_folder
    from biasjudge.io import read_records
    from biasjudge.records import Pair

    chosen = path if path is not None else jfs_folder(data_dir) / name
    return read_records(chosen, Pair).records


@group.command("fit")
@option_groups
def fit_command(
    in_dist: Annotated[str, typer.Option("--in-dist", help="Judge spec for pairs of a trained category.")],
    ood: Annotated[str, typer.Option("--ood", help="Judge spec for pairs of any other category.")],
    out: Annotated[Path, typer.Option("--out", help="The router file to write (JSON).", dir_okay=False)],
    *,
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            help="Pairs (JSONL/Parquet) whose question_text and bias_category train the classifier. "
            "Default: <data dir>/judge-from-scratch/pairs.jsonl.",
            show_default=False,
        ),
    ] = None,
    exclude: Annotated[
        Path | None,
        typer.Option(
            "--exclude",
            help="Pairs whose questions the classifier must not see. Default: the holdout "
            "(<data dir>/judge-from-scratch/eval_set_unlabeled.jsonl).",
            show_default=False,
        ),
    ] = None,
    config: RouterFitConfig,
    data_dir: DataDirOption = None,
) -> None:
    """Fit the category classifier and write the router file."""
    router = fit_router(
        in_dist,
        ood,
        _pairs(questions, data_dir, "pairs.jsonl"),
        config,
        exclude=_pairs(exclude, data_dir, "eval_set_unlabeled.jsonl"),
        out=out,
    )
    fitted = router.fitted_on
    console.print(
        f"router: {out} ({config.features} classifier on {fitted['questions']} questions of "
        f"{len(fitted['categories'])} categories; trained: {', '.join(router.trained_categories)})"
    )


@group.command("check")
def check_command(
    router: Annotated[Path, typer.Option("--router", help="The router file.", dir_okay=False)],
    pairs: Annotated[
        Path | None,
        typer.Option(
            "--pairs",
            help="Pairs that state their bias_category (the truth). Default: the holdout.",
            show_default=False,
        ),
    ] = None,
    use_metadata: Annotated[
        bool,
        typer.Option(
            "--use-metadata/--classifier-only",
            help="Route by the stated category where there is one, or (default) by the classifier alone.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Routing accuracy on pairs whose category is known: no judge is called."""
    from rich.table import Table

    from biasjudge.judge.router import read_router, routing_report

    report = routing_report(
        read_router(router), _pairs(pairs, data_dir, "eval_set_unlabeled.jsonl"), use_metadata=use_metadata
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table(title=f"Routing on {report['pairs']} pairs: accuracy {report['routing_accuracy']:.3f}")
    for column in ("category", "pairs", "routed right"):
        table.add_column(column, justify="right")
    for category, entry in report["per_category"].items():
        table.add_row(category, str(entry["n"]), f"{entry['routed_right'] / entry['n']:.3f}")
    console.print(table)
    console.print(f"category accuracy (classifier): {report['category_accuracy']:.3f}")


def register(app: typer.Typer) -> None:
    """Add the `route` group to the `biasjudge` app."""
    app.add_typer(group, name="route")
