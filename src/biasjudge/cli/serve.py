"""`biasjudge serve` (the judge over HTTP, with its web page) and `biasjudge view` (the page alone,
browsing an eval folder, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biasjudge.cli.common import console, defaults_from, option_groups
from biasjudge.serve.schemas import ServeSettings


@option_groups
def serve_command(settings: ServeSettings) -> None:
    """Serve a judge over HTTP: POST /v1/judge, /v1/judge/batch; /healthz, /readyz, /metrics; the web page at /.

    Every option is a field of the service's settings; `--config serve.yaml` gives them from a file.
    """
    _run(settings)


@option_groups
@defaults_from(ServeSettings)
def view_command(
    eval_dir: Annotated[Path, typer.Argument(help="An eval output folder (biasjudge eval --out).")],
    *,
    host: Annotated[str, typer.Option("--host", help=ServeSettings.model_fields["host"].description)],
    port: Annotated[int, typer.Option("--port", help=ServeSettings.model_fields["port"].description)],
) -> None:
    """Browse an evaluation in the browser (no model is loaded)."""
    from biasjudge.io import check_input_file

    if not eval_dir.is_dir():
        check_input_file(eval_dir)  # says what it is instead (missing, or a file)
        raise typer.BadParameter(f"{eval_dir} is not a folder", param_hint="EVAL_DIR")
    _run(ServeSettings(judge=None, host=host, port=port, eval_dir=eval_dir))


def _run(settings: ServeSettings) -> None:
    import logging

    import uvicorn

    from biasjudge.serve.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(settings)
    console.print(f"serving {settings.judge or 'no judge (view only)'} on http://{settings.host}:{settings.port}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add `serve` and `view` to the `biasjudge` app."""
    app.command("serve")(serve_command)
    app.command("view")(view_command)
