"""`biasjudge serve` (the judge over HTTP, with its web page) and `biasjudge view` (the page alone,
browsing an eval folder, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from biasjudge.backends.registry import DEFAULT_JUDGE_SPEC
from biasjudge.cli.common import JudgeSpecOption, console

if TYPE_CHECKING:
    from biasjudge.serve.schemas import ServeSettings

HostOption = Annotated[str, typer.Option("--host", help="Interface to bind (loopback by default; 0.0.0.0 for all).")]
PortOption = Annotated[int, typer.Option("--port", help="TCP port.")]
EvalDirOption = Annotated[
    Path | None,
    typer.Option("--eval-dir", help="An eval output folder (biasjudge eval --out) the web page can browse."),
]


def serve_command(
    judge: JudgeSpecOption = DEFAULT_JUDGE_SPEC,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="File with a bearer key every route but /healthz and /readyz requires."),
    ] = None,
    eval_dir: EvalDirOption = None,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Pending pairs before 503 + Retry-After.")] = 256,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most pairs per model call.")] = 16,
    batch_wait_ms: Annotated[
        float, typer.Option("--batch-wait-ms", min=0, help="How long to wait for more requests to batch.")
    ] = 5.0,
    request_timeout_s: Annotated[
        float, typer.Option("--request-timeout", min=0.001, help="Seconds before an unanswered request gets 504.")
    ] = 120.0,
    max_pairs: Annotated[int, typer.Option("--max-pairs", min=1, help="Most pairs per batch request.")] = 64,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Allow this browser origin (repeatable); CORS is off.")
    ] = None,
) -> None:
    """Serve a judge over HTTP: POST /v1/judge, /v1/judge/batch; /healthz, /readyz, /metrics; the web page at /."""
    from biasjudge.serve.schemas import ServeSettings

    settings = ServeSettings(
        judge=judge,
        host=host,
        port=port,
        api_key_file=api_key_file,
        eval_dir=eval_dir,
        max_queue=max_queue,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        request_timeout_s=request_timeout_s,
        max_pairs=max_pairs,
        cors_origins=list(cors_origin or []),
    )
    _run(settings)


def view_command(
    eval_dir: Annotated[Path, typer.Argument(help="An eval output folder (biasjudge eval --out).")],
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
) -> None:
    """Browse an evaluation in the browser (no model is loaded)."""
    from biasjudge.io import check_input_file
    from biasjudge.serve.schemas import ServeSettings

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
