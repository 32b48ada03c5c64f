"""What the `biasjudge data` commands share (:mod:`biasjudge.cli.data`): reading through validated
readers with the in/valid/rejected counts printed, the tables they print, and the backend and cost
control of a stage that calls a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from rich.table import Table

from biasjudge.cli.common import console

if TYPE_CHECKING:
    from biasjudge.backends.base import Backend
    from biasjudge.backends.costs import CostControl
    from biasjudge.cli.common import CostOptions
    from biasjudge.dataset.build import ReadReport
    from biasjudge.io import ReadResult
    from biasjudge.records import Pair

R = TypeVar("R", bound=BaseModel)


# --------------------------------------------------------------------------- reading


def print_read(report: ReadReport, skip_invalid: bool) -> None:
    """One line: in/valid(/rejected) counts and where the rejects went."""
    line = f"read {report.path}: {report.n_in} in, {report.n_valid} valid"
    if skip_invalid:
        line += f", {report.n_rejected} rejected"
    if report.rejects_path is not None:
        line += f" -> {report.rejects_path}"
    console.print(line, highlight=False)


def on_read(skip_invalid: bool) -> Callable[[ReadReport], None]:
    """The `on_read` callback of a dataset stage: :func:`print_read` of each file it reads."""
    return lambda report: print_read(report, skip_invalid)


def report_read(result: ReadResult[Any], rejects_dir: Path | None, skip_invalid: bool) -> None:
    """Print in/out/rejected counts; write rejects to a side file (in the current folder by default)."""
    from biasjudge.dataset.build import record_read

    print_read(record_read(result, rejects_dir if rejects_dir is not None else Path.cwd()), skip_invalid)


def read_pairs(path: Path, skip_invalid: bool, rejects_dir: Path | None) -> list[Pair]:
    """The pairs of `path` (with their labels), the counts printed."""
    from biasjudge.data.holdout import load_pairs

    result = load_pairs(path, skip_invalid=skip_invalid)
    report_read(result, rejects_dir, skip_invalid)
    return result.records


def read(
    path: Path, model: type[R], skip_invalid: bool, rejects_dir: Path | None, unique_key: str | None = None
) -> list[R]:
    """The `model` records of `path`, the counts printed."""
    from biasjudge.io import read_records

    result = read_records(path, model, skip_invalid=skip_invalid, unique_key=unique_key)
    report_read(result, rejects_dir, skip_invalid)
    return result.records


def prompt_text(path: Path | None) -> str | None:
    """The text of a prompt file given by an option, byte for byte (None when none is given)."""
    if path is None:
        return None
    from biasjudge.prompts import read_prompt_file

    return read_prompt_file(path)


# --------------------------------------------------------------------------- tables


def make_table(title: str, *columns: str, left: int = 1) -> Table:
    """A table titled at the left: its first `left` columns name things, the others are right-justified."""
    made = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        made.add_column(column, justify="left" if i < left else "right")
    return made


def counts_table(title: str, rows: Sequence[tuple[str, Any, str]]) -> Table:
    """Rows written per output file, with a note each."""
    made = make_table(title, "output", "rows")
    made.add_column("notes")
    for name, n, note in rows:
        made.add_row(name, str(n), note)
    return made


def fmt(value: float | None) -> str:
    """A kappa (3 decimals), or a dash when there is none."""
    return "—" if value is None else f"{value:.3f}"


def pct(value: float | None) -> str:
    """A share as a percentage (1 decimal), or a dash when there is none."""
    return "—" if value is None else f"{value:.1%}"


# --------------------------------------------------------------------------- model calls


@contextmanager
def model_stage(out: Path, spec: str, cost: CostOptions) -> Iterator[tuple[Backend, CostControl]]:
    """The backend of `spec` and the cost control of a stage writing `out`, for the block.

    Every call is booked in the ledger (beside `out` by default); the costs are printed after the
    block, and a run the budget stopped exits 3. The backend is closed after the block.
    """
    from biasjudge.backends.registry import make_backend
    from biasjudge.cli.common import cost_session

    control = cost.control(out)
    backend = make_backend(spec)
    try:
        with cost_session(control):
            yield backend, control
    finally:
        backend.close()
