"""The one progress bar of every long job (candidates, teacher labels, eval, training), on stderr.

Every bar shows the same columns: what runs, the bar, done/total, a free `info` field the job
fills (a rate, a loss), elapsed and remaining time. stdout stays clean for `--json` output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def progress_bar(*, console: Console | None = None, enabled: bool = True) -> Progress:
    """A Rich progress bar; add tasks with `bar.add_task(description, total=N, info="")`.

    >>> bar = progress_bar(enabled=False)
    >>> task = bar.add_task("judging", total=4, info="")
    >>> bar.advance(task, 3); int(bar.tasks[0].completed)
    3
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
    )
