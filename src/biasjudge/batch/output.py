"""The output side of `judge-file` (:mod:`biasjudge.batch.judge_file`): the resumable JSONL logs
of verdicts and rejects, appended in input order in O(1) memory (:class:`Sink`), and the Parquet
OUT written from the verdicts' log at the end.
"""

from __future__ import annotations

import os
import time
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from biasjudge.batch.rows import FileJudgment, RejectedRow, Row
from biasjudge.errors import BackendError, ConfigError, DataError
from biasjudge.io import PARQUET_BATCH_ROWS, atomic_open, iter_parquet_rows, recover_log, validation_message
from biasjudge.records import Judgment
from biasjudge.verdict import VERDICTS

R = TypeVar("R", bound=BaseModel)


# --------------------------------------------------------------------------- resumable logs


class LineLog(Generic[R]):
    """An append-only JSONL file of records that carry an input `line`, resumable in O(1) memory.

    :class:`biasjudge.io.JsonlAppender` keeps every record in memory (`done`), which a job over a
    file of any size cannot afford. Here rows are appended in input order, so the last record holds
    the largest line and is all a restart needs (`last`, read from the file's end by
    :func:`biasjudge.io.recover_log`). The file is created on the first append.
    """

    def __init__(self, path: Path, model: type[R]) -> None:
        self.path = path
        self.model = model
        self._handle: IO[str] | None = None
        if path.is_dir():
            raise DataError(str(path), None, None, "is a folder; a file was expected")
        self.last: R | None = recover_log(path, model) if path.exists() else None

    def append(self, record: R) -> None:
        """Write one record as one line, flushed to the OS (it survives a kill of this process)."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(record.model_dump_json() + "\n")
        self._handle.flush()
        self.last = record

    def sync(self) -> None:
        """fsync what was appended (it survives a crash of the machine too)."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file, if open."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Sink:
    """Where the rows of a job go, in input order: verdicts to OUT (or its partial JSONL), invalid
    rows to the rejects file. Keeps this run's counts and the times of its writes."""

    def __init__(self, output: Path, rejects: Path) -> None:
        self.output = LineLog(output, FileJudgment)
        self.rejects = LineLog(rejects, RejectedRow)
        self._last_written: LineLog[Any] | None = None
        self.judged_now = 0
        self.invalid_now = 0
        self.first_sync: tuple[float, int] | None = None
        """(time, rows judged by then) of the first sync that followed a verdict of this run."""
        self.last_sync: tuple[float, int] | None = None
        """The same for the last such sync."""

    @property
    def last_line(self) -> int:
        """The largest input line already in OUT or in the rejects file (0 for a fresh job)."""
        return max(self.output.last.line if self.output.last else 0, self.rejects.last.line if self.rejects.last else 0)

    @property
    def rows_now(self) -> int:
        """Rows written in this run: verdicts plus rejects."""
        return self.judged_now + self.invalid_now

    def _write(self, log: LineLog[Any], record: BaseModel) -> None:
        if self._last_written is not None and self._last_written is not log:
            # Earlier lines must be on disk before a later line lands in the other file: the two
            # files together stay a prefix of the input even after a crash of the machine.
            self._last_written.sync()
        log.append(record)
        self._last_written = log

    def judged(self, row: Row, judgment: Judgment) -> None:
        """Append a row's verdict; a verdict of another pair than the row's is a BackendError."""
        if row.pair is None or judgment.pair_id != row.pair.pair_id:
            raise BackendError(
                f"{judgment.judge}: the verdict of pair {judgment.pair_id!r} came back for line {row.line}"
            )
        self._write(self.output, FileJudgment.model_validate({**judgment.model_dump(), "line": row.line}))
        self.judged_now += 1

    def rejected(self, row: Row) -> None:
        """Append an invalid row to the rejects file."""
        if row.reject is None:
            raise BackendError(f"line {row.line} is a pair, not a reject")
        self._write(self.rejects, row.reject)
        self.invalid_now += 1

    def sync(self) -> None:
        """fsync both files (after every batch) and note the time for the throughput figures."""
        self.output.sync()
        self.rejects.sync()
        if self.judged_now:
            now = (time.perf_counter(), self.judged_now)
            self.first_sync = self.first_sync or now
            self.last_sync = now

    def close(self) -> None:
        """Close the verdicts and rejects files."""
        self.output.close()
        self.rejects.close()


# --------------------------------------------------------------------------- Parquet output


def _arrow_type(annotation: Any, name: str) -> Any:
    """The Arrow type of a record field's annotation (nullable types map to their inner type)."""
    import pyarrow as pa

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _arrow_type(args[0], name)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _arrow_type(inner[0], name)
    if origin is Literal and all(isinstance(a, str) for a in args):
        return pa.string()
    if origin is list:
        return pa.list_(_arrow_type(args[0], name))
    if origin is dict and args == (str, float):
        # Verdict probabilities: a struct of A, B and TIE reads back as the dict it was (a Parquet
        # map would read back as a list of pairs, which the record does not accept).
        return pa.struct([(v, pa.float64()) for v in VERDICTS])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(
            [pa.field(n, _arrow_type(i.annotation, f"{name}.{n}")) for n, i in annotation.model_fields.items()]
        )
    simple = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    if annotation in simple:
        return simple[annotation]
    raise ConfigError(f"field {name!r} of type {annotation!r} has no Parquet column type in judge-file")


def arrow_schema(model: type[BaseModel]) -> Any:
    """The Arrow schema of a record class, derived from its fields (a new field gets a column too).

    >>> str(arrow_schema(RejectedRow).field("line").type)
    'int64'
    """
    import pyarrow as pa

    return pa.schema([pa.field(name, _arrow_type(info.annotation, name)) for name, info in model.model_fields.items()])


def _parquet_row(record: FileJudgment) -> dict[str, Any]:
    row = record.model_dump(mode="json")
    for probs in (row["probs"], row["wrappers"]["uncalibrated_probs"]):
        if probs is not None and set(probs) - set(VERDICTS):
            raise BackendError(f"line {record.line}: probabilities of {sorted(probs)}, not of {list(VERDICTS)}")
    return row


def write_parquet(records: Iterable[FileJudgment], path: Path) -> int:
    """Write verdicts to a Parquet file atomically, one Arrow batch in memory at a time; the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(FileJudgment)
    n = 0
    with atomic_open(path, "wb") as handle:
        writer = pq.ParquetWriter(handle, schema)
        rows: list[dict[str, Any]] = []
        for record in records:
            rows.append(_parquet_row(record))
            n += 1
            if len(rows) >= PARQUET_BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        writer.close()
    return n


def parquet_to_log(parquet: Path, log: Path) -> None:
    """Rebuild the resumable JSONL of a finished Parquet OUT (to judge rows added since), streaming."""
    target = LineLog(log, FileJudgment)
    try:
        for _, row in iter_parquet_rows(parquet):
            try:
                target.append(FileJudgment.model_validate(row))
            except ValidationError as exc:
                loc, msg = validation_message(exc)
                raise DataError(str(parquet), None, loc, f"not a judge-file output row: {msg}") from None
        target.sync()
    finally:
        target.close()
