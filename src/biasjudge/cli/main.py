"""Entry point of the `biasjudge` command.

Each command module exposes `register(app)`; modules are listed in pipeline order. Commands
import heavy libraries only inside their bodies, so `biasjudge --help` starts fast.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from biasjudge.cli import batch, data, eval, export, judge, llama, robustness, route, serve, train
from biasjudge.errors import BiasJudgeError

app = typer.Typer(
    name="biasjudge",
    help=(
        "Build, evaluate and serve LLM judges of social bias.\n\n"
        "A judge reads two responses (to a prompt, or to a multiple-choice question such as BBQ's, with "
        "its choices) and says which leans MORE on demographic stereotypes (A, B) or TIE, and why. "
        "Pipeline order: data -> judge -> eval -> "
        "train -> export."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

for module in (llama, data, judge, route, batch, eval, robustness, train, export, serve):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"biasjudge {version('biasjudge')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the installed version and exit."
    ),
) -> None:
    """Build, evaluate and serve LLM judges of social bias."""


def main() -> None:
    """Run the CLI. What a user can cause prints one red line and exits 2 instead of a traceback:
    a BiasJudgeError (bad input, config, spec, missing package) or an OSError (a path that cannot
    be written, a full disk). Anything else is a bug in biasjudge and keeps its traceback."""
    try:
        app()
    except (BiasJudgeError, OSError) as exc:
        message = str(exc) if isinstance(exc, BiasJudgeError) else _os_error_message(exc)
        # Escaped: a message may quote '[...]' from the user's data, which is not Rich markup.
        Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _os_error_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


if __name__ == "__main__":
    main()
