"""The input side of `judge-file` (:mod:`biasjudge.batch.judge_file`): the rows of a JSONL or
Parquet file, each a Pair to judge or a reject, read lazily after the resume point; and the two
records a row ends as, a :class:`FileJudgment` in OUT or a :class:`RejectedRow` in the rejects file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from biasjudge.errors import DataError
from biasjudge.io import check_input_file, iter_parquet_rows, iter_text_lines, parse_json_line, validation_message
from biasjudge.records import Judgment, Pair, PairRequest, Record

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


# --------------------------------------------------------------------------- reading rows


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


def _jsonl_objects(path: Path, after: int) -> Iterator[tuple[int, str, Any]]:
    """(line, text, parsed object or a DataError) of each non-blank line after line `after`."""
    for number, text, has_newline in iter_text_lines(path):
        if number > after:  # lines done before are not even parsed
            yield number, text, parse_json_line(path, number, text, has_newline)


def _parquet_objects(path: Path, after: int) -> Iterator[tuple[int, str, Any]]:
    """(row number, row as JSON, row) of each row after row `after`, streamed by
    :func:`biasjudge.io.iter_parquet_rows` (row groups done before are skipped unread).

    A null cell is a missing field (tools write a missing value as null): every optional field of
    Pair and PairRequest has a default, and a required one is then reported missing by name.
    """
    for number, row in iter_parquet_rows(path, after=after):
        row = {k: v for k, v in row.items() if v is not None}
        yield number, json.dumps(row, ensure_ascii=False, default=str), row


def iter_objects(path: Path, *, after: int = 0) -> Iterator[tuple[int, str, Any]]:
    """(line or row number, raw text, parsed object or a DataError) of each row after `after`, of a
    JSONL or a Parquet file (by suffix), not yet classified."""
    return _parquet_objects(path, after) if path.suffix == ".parquet" else _jsonl_objects(path, after)


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
    first = after == 0
    for number, raw, obj in iter_objects(path, after=after):
        row = classify(obj, number, raw, path)
        if first and row.reject is not None:
            # The first row decides whether this is a file of pairs at all.
            if isinstance(obj, DataError) and raw in ("{", "["):
                raise DataError(str(path), None, None, "this is one JSON document, not JSON Lines of pairs")
            if kind := _another_kind(obj):
                raise DataError(str(path), None, None, f"this file holds {kind} records, not pairs or pair requests")
        first = False
        yield row
