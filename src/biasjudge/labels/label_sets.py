"""Label sets: what one labeller wrote, read from any label or pair file, and the one kappa two
label lists are compared with.

A *label set* is whatever a labeller wrote, read from any of the files this project writes or
reads (the format is told from the first record):

* flat label records, one `{pair_id, verdict, confidence?, pair_category?}` per line: a teacher's
  dry run (the reference's `dryrun_sonnet.jsonl` / `dryrun_opus.jsonl`), the raw output of
  `biasjudge data label --labels teacher` (`<out>_teacher.jsonl`), the human tool's labels file;
* pair files, whose pairs carry labels: `data label`'s output (`labelled.jsonl`), the human holdout
  (`eval_set_unlabeled.jsonl`, whose `human_verdict` is a human label). A pair gives the latest
  label of the asked source (default: its latest label of any source); a pair without one is
  counted as unlabelled, not guessed.

Label sets are compared by :mod:`biasjudge.labels.agreement` (every two sets) and
:mod:`biasjudge.labels.flips` (two versions of one labelling).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from biasjudge.errors import ConfigError, DataError
from biasjudge.io import ReadResult, iter_text_lines, parse_json_line, read_records
from biasjudge.records import LabelSource, PairCategory, Verdict
from biasjudge.verdict import cohen_kappa

GroupBy = Literal["pair_category", "bias_category", "eval_slice", "none"]
"""What the per-group rows of a report are split by (`none`: the overall row only)."""

GROUP_UNKNOWN = "unknown"
"""Group of a pair whose category no input names."""

LabelFormat = Literal["labels", "pairs"]


class LabelEntry(BaseModel):
    """One pair's label in a label set, with what is known of the pair."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    verdict: Verdict
    """A, B or TIE: which response leans more on stereotypes."""
    confidence: int | None = None
    """1-5, where the labeller gave one."""
    pair_category: str | None = None
    """Bucket of the pair, where the file names it."""
    bias_category: str | None = None
    """BBQ category, where the file names it (pair files)."""
    eval_slice: str | None = None
    """Holdout slice, where the file names it (the holdout)."""

    def group(self, by: GroupBy) -> str | None:
        """The pair's value of `by`, None when unknown (or `by` is `none`)."""
        return None if by == "none" else getattr(self, by)


class _FlatLabel(BaseModel):
    """A flat label record: the shared fields of TeacherRecord, HumanLabelRecord and dryrun_*.jsonl."""

    model_config = ConfigDict(extra="ignore")

    pair_id: str
    verdict: Verdict
    confidence: int | None = Field(default=None, ge=1, le=5)
    pair_category: PairCategory | None = None


class _AnyRow(BaseModel):
    model_config = ConfigDict(extra="allow")


@dataclass
class LabelSet:
    """The labels of one labeller (one file), keyed by pair_id."""

    name: str
    """Short name used in reports (the file's stem unless given)."""
    path: Path
    """The file read."""
    format: LabelFormat
    """`labels` (flat label records) or `pairs` (a pair file)."""
    labels: dict[str, LabelEntry]
    """pair_id -> label."""
    n_unlabelled: int = 0
    """Pairs of a pair file without a label of the asked source (left out)."""
    source: LabelSource | None = None
    """Label source read from a pair file (None: each pair's latest label)."""

    def __len__(self) -> int:
        return len(self.labels)


def _sniff(path: Path) -> LabelFormat:
    """`pairs` when the first record has responses, `labels` when it has a verdict."""
    if path.suffix == ".parquet":
        first = read_records(path, _AnyRow, limit=1).records[0]
        keys: set[str] = set(first.model_extra or {})
        line: int | None = None
    else:
        keys = set()
        line = None
        for number, text, has_newline in iter_text_lines(path):
            line = number
            obj = parse_json_line(path, number, text, has_newline)
            if isinstance(obj, DataError):
                raise obj
            if not isinstance(obj, dict):
                raise DataError(str(path), number, None, "expected a JSON object")
            keys = set(obj)
            break
        else:
            raise DataError(str(path), None, None, "empty file: no labels")
    if {"response_a", "response_b"} & keys or "labels" in keys or "human_verdict" in keys:
        return "pairs"
    if "verdict" in keys:
        return "labels"
    raise DataError(
        str(path),
        line,
        None,
        "neither a label file (pair_id, verdict per line) nor a pairs file (pair_id, response_a, response_b, labels)",
    )


def read_label_set(
    path: str | Path,
    *,
    name: str | None = None,
    source: LabelSource | None = None,
    skip_invalid: bool = False,
) -> LabelSet:
    """Read a label set from a flat label file or a pair file (see the module docstring).

    Args:
        path: the file.
        name: name in reports (default: the file's stem, `dryrun_sonnet`).
        source: for pair files, the label source to read (`human`, `teacher`, `answer_key`, ...);
            default each pair's latest label. Ignored for flat label files.
        skip_invalid: skip invalid lines instead of raising at the first one.

    Raises:
        DataError: naming file, line and field: a broken or invalid record, a repeated pair_id,
            a file that is neither kind.
    """
    path = Path(path)
    fmt = _sniff(path)
    labels: dict[str, LabelEntry] = {}
    n_unlabelled = 0
    if fmt == "labels":
        flat: ReadResult[_FlatLabel] = read_records(path, _FlatLabel, unique_key="pair_id", skip_invalid=skip_invalid)
        for rec in flat.records:
            labels[rec.pair_id] = LabelEntry(
                verdict=rec.verdict, confidence=rec.confidence, pair_category=rec.pair_category
            )
    else:
        from biasjudge.data.holdout import load_pairs

        for pair in load_pairs(path, skip_invalid=skip_invalid).records:
            label = pair.label_from(source) if source is not None else (pair.labels[-1] if pair.labels else None)
            if label is None:
                n_unlabelled += 1
                continue
            labels[pair.pair_id] = LabelEntry(
                verdict=label.verdict,
                confidence=label.confidence,
                pair_category=pair.pair_category,
                bias_category=pair.bias_category,
                eval_slice=pair.eval_slice,
            )
    stem = path.name.removesuffix(".jsonl").removesuffix(".parquet")
    return LabelSet(
        name=name or stem,
        path=path,
        format=fmt,
        labels=labels,
        n_unlabelled=n_unlabelled,
        source=source if fmt == "pairs" else None,
    )


def parse_named_path(text: str) -> tuple[str | None, Path]:
    """`NAME=PATH` -> (NAME, PATH); a bare path -> (None, PATH).

    >>> parse_named_path("sonnet=runs/dryrun_sonnet.jsonl"), parse_named_path("a/b.jsonl")
    (('sonnet', PosixPath('runs/dryrun_sonnet.jsonl')), (None, PosixPath('a/b.jsonl')))
    """
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name and rest:
        return name, Path(rest)
    return None, Path(text)


def groups_from_pairs(path: str | Path, by: GroupBy, *, skip_invalid: bool = False) -> dict[str, str]:
    """pair_id -> group value from a pairs file (for label files that do not name it)."""
    from biasjudge.data.holdout import load_pairs

    if by == "none":
        return {}
    out: dict[str, str] = {}
    for pair in load_pairs(path, skip_invalid=skip_invalid).records:
        value = getattr(pair, by)
        if value is not None:
            out[pair.pair_id] = str(value)
    return out


def group_of(pair_id: str, by: GroupBy, sets: Sequence[LabelSet], groups: Mapping[str, str] | None) -> str:
    """The group of a pair: from `groups` (pair_id -> value) where given, else from the first of
    `sets` whose label names it, else :data:`GROUP_UNKNOWN`."""
    if groups is not None and pair_id in groups:
        return groups[pair_id]
    for label_set in sets:
        entry = label_set.labels.get(pair_id)
        if entry is not None and (value := entry.group(by)) is not None:
            return value
    return GROUP_UNKNOWN


def kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over A/B/TIE (:func:`biasjudge.verdict.cohen_kappa`); None when
    undefined (no items, or both raters give one and the same label throughout).

    The labels' one conversion of the kappa's NaN to None (their reports are JSON, as
    `eval.metrics`' are); `answer_key` scores with this too.

    >>> round(kappa(["A", "B", "TIE", "A"], ["A", "B", "TIE", "B"]) or 0, 4)
    0.6364
    >>> kappa(["A", "A"], ["A", "A"]) is None, kappa([], []) is None
    (True, True)
    """
    if len(a) != len(b):
        raise ConfigError(f"kappa needs two equally long label lists, got {len(a)} and {len(b)}")
    value = cohen_kappa(a, b)
    return None if math.isnan(value) else value


__all__ = [
    "GROUP_UNKNOWN",
    "GroupBy",
    "LabelEntry",
    "LabelFormat",
    "LabelSet",
    "group_of",
    "groups_from_pairs",
    "kappa",
    "parse_named_path",
    "read_label_set",
]
