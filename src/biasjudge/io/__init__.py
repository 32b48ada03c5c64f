"""All file I/O of records: validated reads, atomic writes, resumable appends, meta sidecars.

The file primitives below the records (atomic writes, locks, hashes, side-file names) live in
:mod:`biasjudge.io.files` and are exported here too.

Readers name the file, the line and the field of every invalid record. With
`skip_invalid=True` they go on and hand back the rejects, so a caller can write them to a side
file: nothing is ever dropped silently (records in = records out + rejects).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from biasjudge.errors import DataError
from biasjudge.io.files import atomic_open as atomic_open
from biasjudge.io.files import folder_lock as folder_lock
from biasjudge.io.files import meta_path as meta_path
from biasjudge.io.files import rejects_path as rejects_path
from biasjudge.io.files import sha256_file as sha256_file
from biasjudge.io.files import side_path as side_path
from biasjudge.records import SCHEMA_VERSION

R = TypeVar("R", bound=BaseModel)


@dataclass
class Reject:
    """A line that did not validate."""

    line: int
    field: str | None
    message: str
    raw: str


@dataclass
class ReadResult(Generic[R]):
    """Records read from a file, and the lines rejected (only with skip_invalid)."""

    path: Path
    records: list[R]
    rejects: list[Reject] = field(default_factory=list)


def validation_message(exc: ValidationError) -> tuple[str | None, str]:
    """(dotted field path or None, message) of a pydantic ValidationError: the first error, and
    how many more there are. The one formatter every reader and config loader uses."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
    return loc, err["msg"] + more


def _validate(model: type[R], obj: Any, path: Path, line: int | None) -> R:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        loc, msg = validation_message(exc)
        raise DataError(str(path), line, loc, msg) from None


def check_input_file(path: str | Path) -> Path:
    """`path` as a Path if it names an existing file; else a DataError saying what it is instead."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, None, "no such file")
    if path.is_dir():
        raise DataError(str(path), None, None, "is a folder; a file was expected")
    return path


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            str(path), line, None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        ) from None


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str, bool]]:
    """(1-based line number, text, ends with a newline?) for each non-blank line of a UTF-8 file.

    Streams the file. What is merely unusual gives the same lines as the clean file: a UTF-8
    byte-order mark is dropped, CRLF line ends and trailing whitespace are stripped, blank lines
    are skipped. Bytes that are not UTF-8 raise a DataError naming the line.
    """
    path = check_input_file(path)
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                text = _decode(raw, path, number).rstrip()
                if text:
                    yield number, text, raw.endswith(b"\n")
    except OSError as exc:
        raise DataError(str(path), None, None, f"cannot be read: {exc.strerror or exc}") from None


def read_text(path: str | Path) -> str:
    """The whole text of a UTF-8 file (a byte-order mark dropped; CRLF kept: callers that care
    about line ends split with `splitlines`). Missing, folder, unreadable or non-UTF-8 input
    raises a DataError naming the file (and the line of a bad byte)."""
    path = check_input_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(str(path), None, None, f"cannot be read: {exc.strerror or exc}") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(str(path), line, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


PARQUET_BATCH_ROWS = 1024
"""Rows per Arrow batch when a Parquet file is read (what is held in memory at once)."""


def open_parquet(path: str | Path) -> Any:
    """pyarrow's ParquetFile of `path`; a file that is not Parquet raises a DataError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(str(path), None, None, f"not a readable Parquet file: {exc}") from None


def iter_parquet_rows(path: str | Path, *, after: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, row) of each row of a Parquet file after row `after`, streamed: one
    Arrow batch in memory at a time; row groups at or before `after` are skipped unread."""
    import pyarrow as pa

    handle = open_parquet(path)
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
                if number > after:
                    yield number, row
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: a string column that is not UTF-8
        raise DataError(str(path), number + 1, None, f"not a readable Parquet row: {exc}") from None


def parse_json_line(path: str | Path, number: int, text: str, has_newline: bool) -> Any:
    """The JSON value of line `number` of a JSON Lines file, or a DataError (returned, not raised)
    saying why it is not JSON, and whether the file looks cut off there."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = "; the last line has no newline: was the file cut off?" if not has_newline else ""
        return DataError(str(path), number, None, f"broken JSON: {exc.msg}{cut}")


def _raw_rows(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, raw text, parsed object or a DataError) for each non-blank row."""
    path = check_input_file(path)
    if path.suffix == ".parquet":
        for number, row in iter_parquet_rows(path):
            yield number, json.dumps(row, default=str), row
        return
    for number, text, has_newline in iter_text_lines(path):
        yield number, text, parse_json_line(path, number, text, has_newline)


def _record_kinds() -> dict[str, type[BaseModel]]:
    from biasjudge import records

    return {
        "pair": records.Pair,
        "SFT row": records.SFTRow,
        "DPO row": records.DPORow,
        "analysis row": records.AnalysisRow,
        "BBQ question": records.Question,
        "candidate response": records.CandidateResponse,
        "prediction": records.Prediction,
        "judgment": records.Judgment,
        "eval log": records.EvalLog,
    }


def _kind_of(obj: Any, expected: type[BaseModel]) -> str | None:
    """The name of the record kind `obj` validates as, when it is not `expected`; else None."""
    if not isinstance(obj, dict):
        return None
    for name, model in _record_kinds().items():
        if model is expected:
            continue
        try:
            model.model_validate(obj)
        except ValidationError:
            continue
        return name
    return None


def _wrong_kind(path: Path, expected: type[BaseModel]) -> DataError | None:
    """A DataError saying what the file is, when it holds some other kind of record (checked on
    the first row, or on the whole file when it is one JSON document instead of JSON Lines)."""
    what = expected.__name__
    text = read_text(path) if path.suffix != ".parquet" else ""
    try:
        document = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        document = None
    # One object on one line is a valid JSON Lines file; one spread over lines is a document.
    if isinstance(document, dict) and document and "\n" in text.strip():
        kind = _kind_of(document, expected)
        found = f"one JSON document ({kind})" if kind else "one JSON document"
        return DataError(str(path), None, None, f"this is {found}, not JSON Lines of {what} records")
    for _, _, obj in _raw_rows(path):
        kind = _kind_of(obj, expected)
        if kind:
            return DataError(str(path), None, None, f"this file holds {kind} records, not {what} records")
        break
    return None


def read_records(
    path: str | Path,
    model: type[R],
    *,
    skip_invalid: bool = False,
    unique_key: str | None = None,
    limit: int | None = None,
    allow_empty: bool = False,
) -> ReadResult[R]:
    """Read a JSONL or Parquet file into validated records.

    Args:
        path: `.jsonl` or `.parquet` file.
        model: the record class each row must validate as.
        skip_invalid: collect invalid rows as rejects instead of raising at the first one.
        unique_key: a field that must not repeat (e.g. `pair_id`); a repeat is an invalid row.
        limit: stop after this many valid records.
        allow_empty: accept a file with no records (an empty result) instead of raising.

    Raises:
        DataError: naming file, line and field, at the first invalid row (unless skip_invalid);
            also for a missing path, a folder, bytes that are not UTF-8, a file with no records
            (unless allow_empty) and a file of another kind of record (says which kind it is).
    """
    path = check_input_file(path)
    records: list[R] = []
    rejects: list[Reject] = []
    seen: dict[Any, int] = {}
    for line, raw, obj in _raw_rows(path):
        try:
            if isinstance(obj, DataError):
                raise obj
            if not isinstance(obj, dict):
                raise DataError(str(path), line, None, "expected a JSON object")
            record = _validate(model, obj, path, line)
            if unique_key is not None:
                key = getattr(record, unique_key)
                if key in seen:
                    raise DataError(str(path), line, unique_key, f"duplicate {key!r} (first at line {seen[key]})")
                seen[key] = line
        except DataError as exc:
            if not records and not rejects and (wrong := _wrong_kind(path, model)) is not None:
                raise wrong from None  # the first row fails because the whole file is another kind
            if not skip_invalid:
                raise
            rejects.append(Reject(line, exc.field, exc.message, raw.rstrip("\n")))
            continue
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    if not records and not rejects and not allow_empty:
        raise DataError(str(path), None, None, f"empty file: no {model.__name__} records")
    return ReadResult(path, records, rejects)


def write_rejects(path: str | Path, rejects: Iterable[Reject], source: str | Path) -> None:
    """Write rejected lines to a side file, one JSON object each, saying why."""
    rows = [
        {"source": str(source), "line": r.line, "field": r.field, "error": r.message, "raw": r.raw} for r in rejects
    ]
    write_json_lines(path, rows)


def _dump(record: BaseModel | dict[str, Any]) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json(exclude_none=False)
    return json.dumps(record, ensure_ascii=False)


def write_json_lines(path: str | Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Atomically write records (or plain dicts) as JSONL; returns the count written."""
    n = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(_dump(row) + "\n")
            n += 1
    return n


def write_records(path: str | Path, records: Iterable[BaseModel]) -> int:
    """Atomically write records to `.jsonl` or `.parquet` (chosen by suffix); returns the count."""
    path = Path(path)
    if path.suffix != ".parquet":
        return write_json_lines(path, records)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r.model_dump(mode="json") for r in records]
    with atomic_open(path, "wb") as handle:
        pq.write_table(pa.Table.from_pylist(rows), handle)
    return len(rows)


def read_json(path: str | Path) -> Any:
    """Read one JSON document; a syntax error names the file, line and column.

    A JSON Lines file given where one document is expected is named as such.
    """
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise DataError(str(path), None, None, "empty file: expected a JSON document")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            raise DataError(
                str(path), exc.lineno, None, "this is JSON Lines (one record per line), not one JSON document"
            ) from None
        raise DataError(str(path), exc.lineno, None, f"broken JSON at column {exc.colno}: {exc.msg}") from None


def read_document(path: str | Path, model: type[R]) -> R:
    """Read one JSON document validated as `model` (e.g. an EvalLog); errors name file and field."""
    path = Path(path)
    obj = read_json(path)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        kind = _kind_of(obj, model)
        if kind:
            raise DataError(str(path), None, None, f"this is {kind}, not {model.__name__}") from None
        loc, msg = validation_message(exc)
        raise DataError(str(path), None, loc, msg) from None


def write_json(path: str | Path, obj: BaseModel | dict[str, Any] | list[Any]) -> None:
    """Atomically write one JSON document (indented)."""
    text = obj.model_dump_json(indent=2) if isinstance(obj, BaseModel) else json.dumps(obj, indent=2)
    with atomic_open(path) as handle:
        handle.write(text + "\n")


_TAIL_BLOCK = 1 << 16
"""Bytes read at a time when a log's last line is looked up from the end of the file."""


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


def _mend_last_line(handle: IO[bytes], model: type[R]) -> tuple[int, R | None]:
    """Make a JSONL log whole after a kill, reading only its end: a torn last line (a kill in the
    middle of a write) is cut off; a whole record that only lacks its newline is kept, and the
    newline added. Returns (offset of the last newline or -1, the record kept or None)."""
    size = handle.seek(0, os.SEEK_END)
    end = _rfind_newline(handle, size)
    tail = _read_span(handle, end + 1, size)
    if tail:
        try:
            record = model.model_validate_json(tail)
        except ValidationError:
            handle.truncate(end + 1)  # a torn last line from a kill: cut it off
        else:
            handle.seek(size)
            handle.write(b"\n")  # a whole record whose newline was not written yet: keep it
            return size, record
    return end, None


def recover_log(path: str | Path, model: type[R]) -> R | None:
    """Make a resumable JSONL log whole after a kill and return its last record (None if empty).

    What :class:`JsonlAppender` does on open, in O(1) memory: the file is read from its end (see
    :func:`_mend_last_line`). An invalid last complete line raises a DataError naming the line.
    """
    path = Path(path)
    with path.open("r+b") as handle:
        end, record = _mend_last_line(handle, model)
        if record is not None:
            return record
        while end >= 0:  # the last complete non-blank line
            start = _rfind_newline(handle, end) + 1
            chunk = _read_span(handle, start, end)
            if start == 0:
                chunk = chunk.removeprefix(codecs.BOM_UTF8)
            if chunk.strip():
                try:
                    return model.model_validate_json(chunk)
                except ValidationError as exc:
                    loc, msg = validation_message(exc)
                    raise DataError(str(path), _line_number(handle, start), loc, msg) from None
            end = start - 1
    return None


def iter_jsonl_records(path: str | Path, model: type[R]) -> Iterator[R]:
    """The records of a JSON Lines log, one at a time (none when the file does not exist yet); an
    invalid line raises a DataError naming it. For the logs biasjudge writes itself: no rejects,
    no sniffing of other record kinds (see :func:`read_records` for input files)."""
    path = Path(path)
    if not path.exists():
        return
    for number, text, _ in iter_text_lines(path):
        try:
            yield model.model_validate_json(text)
        except ValidationError as exc:
            loc, msg = validation_message(exc)
            raise DataError(str(path), number, loc, msg) from None


class JsonlAppender(Generic[R]):
    """Append-only JSONL file for long, resumable stages.

    On open, the valid rows already in the file are read back (`done`), and a torn last line left
    by a kill is cut off, so a restarted job skips finished items and loses none. Each append is
    flushed and fsynced before the call returns.
    """

    def __init__(self, path: str | Path, model: type[R], key: Callable[[R], Any]) -> None:
        self.path = Path(path)
        self.model = model
        self.key = key
        self.done: dict[Any, R] = {}
        if self.path.is_dir():
            raise DataError(str(self.path), None, None, "is a folder; a file was expected")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._recover()
        self._handle = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        with self.path.open("r+b") as handle:
            _mend_last_line(handle, self.model)
        for record in iter_jsonl_records(self.path, self.model):
            self.done[self.key(record)] = record

    def __contains__(self, key: object) -> bool:
        return key in self.done

    def append(self, record: R) -> None:
        """Write one record as a line, flushed and fsynced, and remember its key as done."""
        self._handle.write(record.model_dump_json() + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done[self.key(record)] = record

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> JsonlAppender[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_meta(
    output: str | Path,
    *,
    stage: str,
    inputs: Iterable[str | Path] = (),
    config: dict[str, Any] | None = None,
    counts: dict[str, Any] | None = None,
) -> Path:
    """Write the `.meta.json` sidecar of a stage's output: inputs' sha256, config, counts."""
    from biasjudge import __version__

    meta = {
        "stage": stage,
        "schema_version": SCHEMA_VERSION,
        "biasjudge_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "output": str(output),
        "inputs": {str(p): sha256_file(p) for p in inputs},
        "config": config or {},
        "counts": counts or {},
    }
    target = meta_path(output)
    write_json(target, meta)
    return target
