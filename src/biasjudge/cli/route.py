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

from biasjudge.cli.common import DataDirOption, console, defaults_from
from biasjudge.judge.router import fit_router

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
@defaults_from(fit_router, ood_category="ood_categories", quantile="open_set_quantile")
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
    ood_category: Annotated[
        list[str],
        typer.Option("--ood-category", help="A category the in-distribution judge was not trained on (repeat)."),
    ],
    trained_category: Annotated[
        list[str] | None,
        typer.Option(
            "--trained-category",
            help="The trained categories (repeat). Default: every category of --questions but the --ood-category ones.",
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        str, typer.Option("--features", help="minilm (sentence embeddings, needs biasjudge[router]) or tfidf.")
    ],
    open_set: Annotated[
        bool,
        typer.Option(
            "--open-set/--closed-set",
            help="Open set: fit the classifier on the trained categories only, and call a question "
            "unseen when its top probability is low. Closed set (default): it knows every category of --questions.",
        ),
    ] = False,
    quantile: Annotated[
        float,
        typer.Option(
            "--open-set-quantile",
            min=0.0,
            max=0.5,
            help="Open set: the share of known-category questions (out of fold) allowed to be called unseen.",
        ),
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Fit the category classifier and write the router file."""
    from biasjudge.judge.router import FEATURES

    if features not in FEATURES:
        raise typer.BadParameter(f"must be one of {', '.join(FEATURES)}", param_hint="--features")
    config = fit_router(
        in_dist=in_dist,
        ood=ood,
        questions=_pairs(questions, data_dir, "pairs.jsonl"),
        exclude=_pairs(exclude, data_dir, "eval_set_unlabeled.jsonl"),
        ood_categories=list(ood_category),
        trained_categories=trained_category or None,
        features=features,
        open_set=open_set,
        open_set_quantile=quantile,
        out=out,
    )
    fitted = config.fitted_on
    console.print(
        f"router: {out} ({features} classifier on {fitted['questions']} questions of "
        f"{len(fitted['categories'])} categories; trained: {', '.join(config.trained_categories)})"
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
