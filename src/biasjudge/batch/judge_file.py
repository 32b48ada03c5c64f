"""`biasjudge judge-file IN OUT`: judge every pair of a JSONL or Parquet file, streaming and resumable.

Rows in: one pair per row, either a :class:`~biasjudge.records.Pair` record (the holdout file is a
valid input) or the service's request fields (:class:`~biasjudge.records.PairRequest`: `id`,
`question`, `choices`, `response_a`, `response_b`). A row is a Pair if it validates as one, else a
request, else it is invalid: it goes to the side file `<out>.rejects.jsonl` with its line, field
and reason, and the job goes on. The row key is the pair_id, the request's id, else `line-<n>`;
it is the `pair_id` of the row's verdict.

Rows out: one :class:`FileJudgment` per valid row (the Judgment plus the row's input `line`), in
input order. A Parquet OUT is written at the end, atomically, from the resumable JSON Lines file
`<out>.partial.jsonl`.

Exactly once, in O(1) memory. Rows are judged and appended in input order, every record carries its
input line, and each appended line is flushed before the next one is written (fsynced whenever the
writing switches between OUT and the rejects file, and after every batch), so OUT and the rejects
file together always hold a prefix of the input. A restarted job cuts a torn last line (a kill in
the middle of a write), then resumes after the largest input line found in either file: nothing is
judged twice and nothing is lost. No set of keys is kept, so memory does not grow with the file
(and a key that repeats is judged each time: the line is the identity of a row).

The job refuses to resume into an OUT that another judge, mode or input wrote (it compares the last
record's judge and mode, and the input rows at the resume point), and holds an OS lock on OUT so
that two jobs never interleave lines in it.

Engines: `local` judges in this process; `ray` sends the same valid rows through Ray Data (see
:mod:`biasjudge.batch.ray_engine`), while the reading, the rejects and the writing stay here, in
the driver, so exactly-once holds the same way.
"""

from __future__ import annotations

import json
import os
import time
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from biasjudge.backends.registry import DEFAULT_JUDGE_SPEC
from biasjudge.errors import BackendError, ConfigError, DataError
from biasjudge.io import (
    atomic_open,
    check_input_file,
    folder_lock,
    iter_text_lines,
    side_path,
    validation_message,
    write_json,
)
from biasjudge.records import SCHEMA_VERSION, JudgeMode, Judgment, Pair, PairRequest, Record
from biasjudge.verdict import PARSE_FAIL, VERDICTS

if TYPE_CHECKING:
    from rich.console import Console

    from biasjudge.batch.ray_engine import RayOptions
    from biasjudge.judge.judge import PairJudge

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")

PARQUET_BATCH_ROWS = 1024
"""Rows per Arrow batch when Parquet is read or written (what is held in memory at once)."""
MAX_WINDOW_ROWS = 1024
"""A window of rows judged together also closes at this many rows (valid or not), so a long run of
invalid rows is not held in memory."""
_TAIL_BLOCK = 1 << 16
"""Bytes read at a time when a log's last line is looked up from the end of the file."""

R = TypeVar("R", bound=BaseModel)


# --------------------------------------------------------------------------- records


STREAMING = ConfigDict(cache_strings=False)
"""Config of the records a job parses by the million: pydantic would keep up to 16k of the strings
it parsed (every row's unique key) alive in its cache, which only grows with the file."""


class FileJudgment(Judgment):
    """The verdict of one input row: a Judgment (its `pair_id` is the row key) and the row's input line."""

    model_config = Judgment.model_config | STREAMING

    line: int = Field(ge=1)
    """Where the row sits in the input: the 1-based line number of a JSONL file, the 1-based row number
    of a Parquet file. A resumed job continues after the largest line found in OUT."""


class RejectedRow(Record):
    """An input row that is neither a Pair nor a request, with the reason (the rejects file's rows,
    in the same shape as every other rejects file of biasjudge: see :func:`biasjudge.io.write_rejects`)."""

    model_config = Record.model_config | STREAMING

    source: str
    """The input file."""
    line: int = Field(ge=1)
    """Its line (JSONL) or row number (Parquet), 1-based."""
    field: str | None
    """The dotted path of the invalid field, where one field is to blame."""
    error: str
    """Why the row was rejected."""
    raw: str
    """The row as it was read (a Parquet row as JSON)."""


class BatchSummary(Record):
    """What a judge-file run did; printed, returned, and written to `<out>.summary.json`."""

    schema_version: int = SCHEMA_VERSION
    """biasjudge's record schema version."""
    input: str
    """The input file."""
    output: str
    """The verdicts file (JSONL or Parquet)."""
    rejects: str | None
    """The rejects side file, when any row was invalid."""
    engine: Engine
    """local or ray."""
    judge: str
    """The judge spec."""
    mode: JudgeMode
    """score or generate."""
    batch_size: int
    """Rows per judge call."""
    rows_in: int
    """Rows in the input (non-blank lines of a JSONL file, rows of a Parquet file)."""
    judged: int
    """Rows in OUT, from this run and earlier ones."""
    invalid: int
    """Rows in the rejects file, from this run and earlier ones."""
    resumed: int
    """Rows found done (judged or rejected) when this run started."""
    judged_now: int
    """Rows judged by this run."""
    invalid_now: int
    """Rows rejected by this run."""
    complete: bool
    """Every input row is in OUT or in the rejects file, exactly once (judged + invalid == rows_in)."""
    verdicts: dict[str, int]
    """Verdict counts over OUT: A, B, TIE and PARSE_FAIL (and UNSURE, for a judge that abstains)."""
    parse_failures: int
    """Rows of OUT whose judge output broke the verdict contract (verdict PARSE_FAIL)."""
    elapsed_s: float
    """Wall time of this run, from the start to the summary (model load and Ray start-up included)."""
    first_row_s: float | None
    """Seconds until this run wrote its first verdict (start-up: model load, Ray, the first batch)."""
    rows_per_s: float | None
    """judged_now / elapsed_s: this run's throughput, start-up included."""
    steady_rows_per_s: float | None
    """Rows judged per second after the first batch was written (start-up excluded); None with fewer
    than two batches."""


# --------------------------------------------------------------------------- reading rows


@dataclass(frozen=True)
class JudgeSettings:
    """How to build the judge: what `biasjudge judge` takes, and what each Ray actor rebuilds."""

    spec: str = DEFAULT_JUDGE_SPEC
    """The judge spec (see :mod:`biasjudge.backends.registry`)."""
    mode: JudgeMode = "score"
    """score or generate."""
    system_prompt: str | None = None
    """A system prompt sent byte for byte; None = the judge's own."""

    def make(self, **options: Any) -> PairJudge:
        """The judge (loads the model); `options` go to :func:`biasjudge.judge.judge.make_judge`."""
        from biasjudge.judge.judge import make_judge

        return make_judge(self.spec, system_prompt=self.system_prompt, mode=self.mode, **options)


@dataclass(frozen=True)
class Row:
    """One non-blank input row: a Pair to judge, or a reject."""

    line: int
    """1-based line (JSONL) or row number (Parquet)."""
    raw: str
    """The row's text (a Parquet row as JSON)."""
    pair: Pair | None = None
    """The pair to judge; None when the row is invalid."""
    reject: RejectedRow | None = None
    """Why the row is invalid; None when it is a pair."""


_PAIR_KEYS = set(Pair.model_fields) | {"human_verdict", "confidence", "notes"}
_REQUEST_KEYS = set(PairRequest.model_fields)


def row_key(obj: dict[str, Any], line: int) -> str:
    """The key of a row: its pair_id, else its id, else `line-<n>`.

    >>> row_key({"pair_id": "p1"}, 3), row_key({"id": "r7"}, 3), row_key({"question": "?"}, 3)
    ('p1', 'r7', 'line-3')
    """
    for name in ("pair_id", "id"):
        if isinstance(obj.get(name), str) and obj[name]:
            return str(obj[name])
    return f"line-{line}"


def classify(obj: Any, line: int, raw: str, source: Path) -> Row:
    """The Row of one parsed input row: a Pair if it validates as one, else a PairRequest turned
    into a Pair (the same way as `biasjudge judge`'s flags), else a reject naming the field.

    `obj` may be a DataError (a line that is not JSON), which becomes a reject with its message.
    Of the two validation errors of an invalid object, the one of the kind whose fields the row
    shares more of is reported (a Pair with a bad field is reported as a Pair).
    """

    def rejected(field_name: str | None, message: str) -> Row:
        return Row(
            line, raw, reject=RejectedRow(source=str(source), line=line, field=field_name, error=message, raw=raw)
        )

    if isinstance(obj, DataError):
        return rejected(obj.field, obj.message)
    if not isinstance(obj, dict):
        return rejected(None, "expected a JSON object: a Pair record or request fields (question, choices, ...)")
    try:
        return Row(line, raw, pair=Pair.model_validate(obj))
    except ValidationError as pair_error:
        try:
            request = PairRequest.model_validate(obj)
        except ValidationError as request_error:
            as_request = len(_REQUEST_KEYS & set(obj)) > len(_PAIR_KEYS & set(obj))
            field_name, message = validation_message(request_error if as_request else pair_error)
            what = "a pair request (id, question, choices, response_a, response_b)" if as_request else "a Pair record"
            return rejected(field_name, f"not {what}: {message}")
    return Row(line, raw, pair=request.to_pair(row_key(obj, line)))


def _parse_line(path: Path, number: int, text: str, has_newline: bool) -> Any:
    """The JSON value of one line, or a DataError saying why it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = "; the last line has no newline: was the file cut off?" if not has_newline else ""
        return DataError(str(path), number, None, f"broken JSON: {exc.msg}{cut}")


def _jsonl_objects(path: Path, after: int) -> Iterator[tuple[int, str, Any]]:
    """(line, text, parsed object or a DataError) of each non-blank line after line `after`."""
    for number, text, has_newline in iter_text_lines(path):
        if number > after:  # lines done before are not even parsed
            yield number, text, _parse_line(path, number, text, has_newline)


def _parquet_file(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(str(path), None, None, f"not a readable Parquet file: {exc}") from None


def _parquet_objects(path: Path, after: int) -> Iterator[tuple[int, str, Any]]:
    """(row number, row as JSON, row) of each row after row `after`, one Arrow batch in memory at a time.

    Row groups done before are skipped from the file's metadata, without being read. A null cell
    is a missing field (tools write a missing value as null): every optional field of Pair and
    PairRequest has a default, and a required one is then reported missing by name.
    """
    import pyarrow as pa

    handle = _parquet_file(path)
    meta = handle.metadata
    group, number = 0, 0
    while group < meta.num_row_groups and number + meta.row_group(group).num_rows <= after:
        number += meta.row_group(group).num_rows
        group += 1
    if group >= meta.num_row_groups:
        return
    try:
        batches = handle.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=list(range(group, meta.num_row_groups)))
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                if number <= after:
                    continue
                row = {k: v for k, v in row.items() if v is not None}
                yield number, json.dumps(row, ensure_ascii=False, default=str), row
    except (pa.ArrowException, OSError) as exc:
        raise DataError(str(path), number + 1, None, f"not a readable Parquet row: {exc}") from None


def _another_kind(obj: Any) -> str | None:
    """The kind of record `obj` is when it is some other biasjudge record (a judge-file output, a
    judgment, an eval log, ...), else None."""
    from biasjudge.io import _kind_of  # the readers' own sniffing, so every reader names kinds alike

    if not isinstance(obj, dict):
        return None
    try:
        FileJudgment.model_validate(obj)
        return "judge-file output"
    except ValidationError:
        pass
    return _kind_of(obj, Pair)


def iter_rows(path: str | Path, *, after: int = 0) -> Iterator[Row]:
    """The rows of a JSONL or Parquet file after line `after`, read lazily: a generator holding one
    line (JSONL) or one Arrow batch (Parquet) at a time, so a file of any size streams through.

    Raises:
        DataError: a missing path or a folder; bytes that are not UTF-8 (naming the line); an
            unreadable Parquet file; a file whose first row is another kind of biasjudge record (a
            judge-file output, an eval log, ...) or one JSON document instead of JSON Lines.
    """
    path = check_input_file(path)
    objects = _parquet_objects(path, after) if path.suffix == ".parquet" else _jsonl_objects(path, after)
    first = after == 0
    for number, raw, obj in objects:
        row = classify(obj, number, raw, path)
        if first and row.reject is not None:
            # The first row decides whether this is a file of pairs at all.
            if isinstance(obj, DataError) and raw in ("{", "["):
                raise DataError(str(path), None, None, "this is one JSON document, not JSON Lines of pairs")
            if kind := _another_kind(obj):
                raise DataError(str(path), None, None, f"this file holds {kind} records, not pairs or pair requests")
        first = False
        yield row


# --------------------------------------------------------------------------- resumable logs


def _rfind_newline(handle: IO[bytes], before: int) -> int:
    """Offset of the last newline byte before offset `before`, or -1; reads backwards in blocks."""
    end = before
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        handle.seek(start)
        at = handle.read(end - start).rfind(b"\n")
        if at >= 0:
            return start + at
        end = start
    return -1


def _read_span(handle: IO[bytes], start: int, end: int) -> bytes:
    handle.seek(start)
    return handle.read(end - start)


def _line_number(handle: IO[bytes], offset: int) -> int:
    """1-based number of the line starting at `offset` (a streaming count; only for error messages)."""
    handle.seek(0)
    count = 0
    while (done := handle.tell()) < offset:
        count += handle.read(min(_TAIL_BLOCK, offset - done)).count(b"\n")
    return count + 1


def recover_log(path: Path, model: type[R]) -> R | None:
    """Make a resumable JSONL log whole after a kill and return its last record (None if empty).

    What :class:`biasjudge.io.JsonlAppender` does on open, in O(1) memory: the file is read from its
    end. A torn last line (a kill in the middle of a write) is cut off; a whole record that only
    lacks its newline is kept, and the newline added. An invalid complete line raises a DataError
    naming the line.
    """
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = _rfind_newline(handle, size)
        tail = _read_span(handle, end + 1, size)
        if tail.strip():
            try:
                record = model.model_validate_json(tail)
            except ValidationError:
                handle.truncate(end + 1)  # a torn last line from a kill: cut it off
            else:
                handle.seek(size)
                handle.write(b"\n")  # a whole record whose newline was not written yet: keep it
                return record
        while end >= 0:  # the last complete non-blank line
            start = _rfind_newline(handle, end) + 1
            chunk = _read_span(handle, start, end)
            if start == 0:
                chunk = chunk.removeprefix(b"\xef\xbb\xbf")
            if chunk.strip():
                try:
                    return model.model_validate_json(chunk)
                except ValidationError as exc:
                    loc, msg = validation_message(exc)
                    raise DataError(str(path), _line_number(handle, start), loc, msg) from None
            end = start - 1
    return None


class LineLog(Generic[R]):
    """An append-only JSONL file of records that carry an input `line`, resumable in O(1) memory.

    :class:`biasjudge.io.JsonlAppender` keeps every record in memory (`done`), which a job over a
    file of any size cannot afford. Here rows are appended in input order, so the last record holds
    the largest line and is all a restart needs (`last`). The file is created on the first append.
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


def read_log(path: Path, model: type[R]) -> Iterator[R]:
    """The records of a JSONL log, one at a time; an invalid line raises a DataError naming it."""
    if not path.exists():
        return
    for number, text, _ in iter_text_lines(path):
        try:
            yield model.model_validate_json(text)
        except ValidationError as exc:
            loc, msg = validation_message(exc)
            raise DataError(str(path), number, loc, msg) from None


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
    if row["probs"] is not None and set(row["probs"]) - set(VERDICTS):
        raise BackendError(f"line {record.line}: probabilities of {sorted(row['probs'])}, not of {list(VERDICTS)}")
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
    handle = _parquet_file(parquet)
    target = LineLog(log, FileJudgment)
    try:
        for batch in handle.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                try:
                    target.append(FileJudgment.model_validate(row))
                except ValidationError as exc:
                    loc, msg = validation_message(exc)
                    raise DataError(str(parquet), None, loc, f"not a judge-file output row: {msg}") from None
        target.sync()
    finally:
        target.close()


# --------------------------------------------------------------------------- the job


@dataclass
class _Scan:
    rows_in: int = 0
    """Non-blank rows of the input."""
    done: int = 0
    """Rows at or before the resume point."""
    last_line: int = 0
    """The input's last line number."""


def _expected(sink: Sink) -> dict[int, tuple[str, str]]:
    """input line -> (what, value) the input must hold there for OUT to be its verdicts."""
    out: dict[int, tuple[str, str]] = {}
    if sink.rejects.last is not None:
        out[sink.rejects.last.line] = ("raw", sink.rejects.last.raw)
    if sink.output.last is not None:
        out[sink.output.last.line] = ("key", sink.output.last.pair_id)
    return out


def _check_row(row: Row, what: str, value: str, output: Path, source: Path) -> None:
    found = row.raw if what == "raw" else (row.pair.pair_id if row.pair else None)
    if found != value:
        raise ConfigError(
            f"{output} does not hold the verdicts of {source}: its line {row.line} is {value!r}, but that line of "
            f"{source} is {found!r}; write to another OUT, or delete it (and its side files) to start over"
        )


def scan_input(source: Path, resume: int, expected: dict[int, tuple[str, str]], output: Path) -> _Scan:
    """Count the input's rows (the progress bar's total), those done before, and check that the
    rows at the resume point are the ones OUT recorded. One cheap pass: rows are not validated."""
    scan = _Scan()
    if source.suffix == ".parquet":
        scan.rows_in = scan.last_line = _parquet_file(source).metadata.num_rows
        scan.done = min(resume, scan.rows_in)
        for line, (what, value) in expected.items():
            for number, raw, obj in _parquet_objects(source, line - 1):
                _check_row(classify(obj, number, raw, source), what, value, output, source)
                break
    else:
        for number, text, has_newline in iter_text_lines(source):
            scan.rows_in += 1
            scan.last_line = number
            scan.done += number <= resume
            if number in expected:
                row = classify(_parse_line(source, number, text, has_newline), number, text, source)
                _check_row(row, *expected[number], output, source)
    if scan.rows_in == 0:
        raise DataError(str(source), None, None, "empty file: no pairs to judge")
    if resume > scan.last_line:
        raise ConfigError(
            f"{output} holds rows up to line {resume}, but {source} ends at line {scan.last_line}: it was written from "
            "another input; write to another OUT, or delete it (and its side files) to start over"
        )
    return scan


def _check_same_judge(sink: Sink, settings: JudgeSettings, output: Path) -> None:
    last = sink.output.last
    if last is not None and (last.judge, last.mode) != (settings.spec, settings.mode):
        raise ConfigError(
            f"{output} holds verdicts of --judge {last.judge} in {last.mode} mode; resume it with those, "
            f"or write the verdicts of {settings.spec} ({settings.mode} mode) to another OUT"
        )


class _LazyJudge:
    """The judge, loaded on the first batch that has a pair (a finished job reruns without a model)."""

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self.judge: PairJudge | None = None

    def judge_batch(self, pairs: list[Pair]) -> list[Judgment]:
        from biasjudge.judge.judge import JudgeRequest

        if self.judge is None:
            self.judge = self.settings.make()
        judgments = self.judge.judge_batch([JudgeRequest(pair=p) for p in pairs])
        if len(judgments) != len(pairs):
            raise BackendError(f"{self.settings.spec} returned {len(judgments)} judgments for {len(pairs)} pairs")
        return judgments

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()


def _judge_local(
    rows: Iterator[Row], judge: _LazyJudge, sink: Sink, batch_size: int, on_batch: Callable[[], None]
) -> None:
    """Judge windows of `batch_size` pairs (rejects in between kept in their place), each window's
    rows written in input order, then synced."""
    window: list[Row] = []
    valid = 0

    def flush() -> None:
        pairs = [row.pair for row in window if row.pair is not None]
        judgments = iter(judge.judge_batch(pairs) if pairs else [])
        for row in window:
            if row.pair is None:
                sink.rejected(row)
            else:
                sink.judged(row, next(judgments))
        sink.sync()
        on_batch()

    for row in rows:
        window.append(row)
        valid += row.pair is not None
        if valid >= batch_size or len(window) >= MAX_WINDOW_ROWS:
            flush()
            window, valid = [], 0
    if window:
        flush()


@dataclass
class _Paths:
    output: Path
    log: Path
    """Where verdicts are appended: OUT itself, or `<out>.partial.jsonl` for a Parquet OUT."""
    rejects: Path
    summary: Path
    parquet: bool = field(default=False)


def output_paths(output: str | Path) -> _Paths:
    """OUT and its side files.

    >>> paths = output_paths("runs/verdicts.parquet")
    >>> paths.log.name, paths.rejects.name, paths.summary.name
    ('verdicts.parquet.partial.jsonl', 'verdicts.parquet.rejects.jsonl', 'verdicts.parquet.summary.json')
    """
    output = Path(output)
    parquet = output.suffix == ".parquet"
    return _Paths(
        output=output,
        log=side_path(output, ".partial.jsonl") if parquet else output,
        rejects=side_path(output, ".rejects.jsonl"),
        summary=side_path(output, ".summary.json"),
        parquet=parquet,
    )


def _check_arguments(source: Path, paths: _Paths, batch_size: int, engine: str, mode: str) -> None:
    if not source.is_file():
        raise DataError(str(source), None, None, "not a regular file (it is read twice: to count, then to judge)")
    if paths.output.is_dir():
        raise DataError(str(paths.output), None, None, "is a folder; OUT must be a file (.jsonl or .parquet)")
    own = {paths.output, paths.log, paths.rejects, paths.summary}
    if any(p.exists() and p.resolve() == source.resolve() for p in own):
        raise ConfigError(f"OUT ({paths.output}) and its side files must not be the input {source}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if mode not in ("score", "generate"):
        raise ConfigError(f"mode must be 'score' or 'generate', got {mode!r}")


def _totals(paths: _Paths) -> tuple[Counter[str], int]:
    """(verdict counts over OUT, rows in the rejects file); writes the Parquet OUT from its partial."""
    verdicts: Counter[str] = Counter({v: 0 for v in (*VERDICTS, PARSE_FAIL)})  # UNSURE counted when it occurs

    def counted(records: Iterable[FileJudgment]) -> Iterator[FileJudgment]:
        for record in records:
            verdicts[record.verdict] += 1
            yield record

    if paths.parquet:
        write_parquet(counted(read_log(paths.log, FileJudgment)), paths.output)
        paths.log.unlink(missing_ok=True)
    else:
        for _ in counted(read_log(paths.log, FileJudgment)):
            pass
        paths.log.touch()  # every row invalid: OUT still exists, empty
    invalid = sum(1 for _ in iter_text_lines(paths.rejects)) if paths.rejects.exists() else 0
    return verdicts, invalid


def judge_file(
    input_path: str | Path,
    output_path: str | Path,
    *,
    judge: str = DEFAULT_JUDGE_SPEC,
    mode: JudgeMode = "score",
    system_prompt: str | None = None,
    batch_size: int = 8,
    engine: Engine = "local",
    ray: RayOptions | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> BatchSummary:
    """Judge every row of `input_path` into `output_path`, resuming what an earlier run left.

    Args:
        input_path: `.parquet`, or JSON Lines (any other suffix): Pair records or request fields.
        output_path: `.parquet` (written at the end from `<out>.partial.jsonl`) or JSON Lines.
        judge: the judge spec, as `biasjudge judge --judge` takes it.
        mode: `score` or `generate`, as `biasjudge judge --mode` takes it.
        system_prompt: the system prompt's text (default: the judge's own).
        batch_size: pairs per judge call (and per Ray batch); a kill loses at most the batches
            in flight, which the restart judges again.
        engine: `local` (this process) or `ray` (Ray Data, see :mod:`biasjudge.batch.ray_engine`).
        ray: the Ray engine's options (actors, CPUs and GPUs per actor, cluster address).
        progress: show the progress bar (rows, rate, time left) on the console.
        console: where progress and messages go (default: stderr).

    Returns:
        The run's :class:`BatchSummary`, also written to `<out>.summary.json`.

    Raises:
        DataError: a missing or unreadable input, bytes that are not UTF-8 (naming the line), a
            file of another kind of record, an OUT that is a folder or holds an invalid line.
        ConfigError: a bad option; an OUT written by another judge, mode or input; another job
            writing to OUT.
    """
    from rich.console import Console

    from biasjudge.progress import progress_bar

    started = time.perf_counter()
    console = console or Console(stderr=True)
    source = check_input_file(input_path)
    paths = output_paths(output_path)
    _check_arguments(source, paths, batch_size, engine, mode)
    settings = JudgeSettings(judge, mode, system_prompt)
    folder = paths.output.parent
    with folder_lock(folder, f".{paths.output.name}.lock", what="a judge-file job"):
        if paths.parquet and paths.output.exists() and not paths.log.exists():
            parquet_to_log(paths.output, paths.log)  # a finished Parquet OUT: resume from its rows
        sink = Sink(paths.log, paths.rejects)
        try:
            _check_same_judge(sink, settings, paths.output)
            resume = sink.last_line
            scan = scan_input(source, resume, _expected(sink), paths.output)
            if scan.done:
                console.print(f"resuming {paths.output}: {scan.done} of {scan.rows_in} rows were done", highlight=False)
            bar = progress_bar(console=console, enabled=progress)
            with bar:
                task = bar.add_task(f"judging {source.name}", total=scan.rows_in, completed=scan.done, info="")

                def on_batch() -> None:
                    seconds = time.perf_counter() - started
                    rate = f"{sink.judged_now / seconds:.2f} rows/s" if seconds > 0 else ""
                    bar.update(task, completed=scan.done + sink.rows_now, info=rate)

                if engine == "ray":
                    from biasjudge.batch.ray_engine import RayOptions, judge_with_ray

                    judge_with_ray(
                        lambda: iter_rows(source, after=resume),
                        sink,
                        settings,
                        ray or RayOptions(),
                        batch_size=batch_size,
                        remaining=scan.rows_in - scan.done,
                        stage_dir=folder,
                        on_batch=on_batch,
                    )
                else:
                    lazy = _LazyJudge(settings)
                    try:
                        _judge_local(iter_rows(source, after=resume), lazy, sink, batch_size, on_batch)
                    finally:
                        lazy.close()
        finally:
            sink.close()
        verdicts, invalid = _totals(paths)
        elapsed = time.perf_counter() - started
        judged = sum(verdicts.values())
        first, last = sink.first_sync, sink.last_sync
        summary = BatchSummary(
            input=str(source),
            output=str(paths.output),
            rejects=str(paths.rejects) if invalid else None,
            engine=engine,
            judge=judge,
            mode=mode,
            batch_size=batch_size,
            rows_in=scan.rows_in,
            judged=judged,
            invalid=invalid,
            resumed=scan.done,
            judged_now=sink.judged_now,
            invalid_now=sink.invalid_now,
            complete=judged + invalid == scan.rows_in,
            verdicts=dict(verdicts),
            parse_failures=verdicts[PARSE_FAIL],
            elapsed_s=round(elapsed, 3),
            first_row_s=round(first[0] - started, 3) if first else None,
            rows_per_s=round(sink.judged_now / elapsed, 4) if sink.judged_now and elapsed > 0 else None,
            steady_rows_per_s=(
                round((last[1] - first[1]) / (last[0] - first[0]), 4) if first and last and last[0] > first[0] else None
            ),
        )
        write_json(paths.summary, summary)
    return summary
