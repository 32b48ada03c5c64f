"""Labelling stage: verdicts on pairs from the answer key, a teacher model, or a human.

- :mod:`~biasjudge.labels.answer_key`: a rule from the responses' classified bias levels; free,
  instant and measured against the human holdout labels (`kappa_table`).
- :mod:`~biasjudge.labels.teacher`: a teacher model labels with the rubric in `prompts/teacher.md`
  through any backend; resumable.
- :mod:`~biasjudge.labels.human`: a terminal tool for people; resumable.

Every labeller appends a :class:`~biasjudge.records.Label` to `Pair.labels`; `rows.py` turns the
labels into SFT and DPO rows.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from biasjudge.io import read_records, side_path
from biasjudge.records import Label, LabelSource, Pair

RecordT = TypeVar("RecordT", bound=BaseModel)
ItemT = TypeVar("ItemT")


def attach_labels(pairs: Iterable[Pair], labels: Mapping[str, Label]) -> list[Pair]:
    """Copies of `pairs` with `labels[pair_id]` appended where there is one; other pairs unchanged."""
    out: list[Pair] = []
    for pair in pairs:
        label = labels.get(pair.pair_id)
        out.append(pair if label is None else pair.model_copy(update={"labels": [*pair.labels, label]}))
    return out


@dataclass
class LeftOut:
    """Pairs whose label may not be trained on, counted by reason: the one rule of SFT rows, DPO rows
    and hard-negative synthesis (:meth:`usable_label`)."""

    no_label: int = 0
    """Pairs with no label of the requested source."""
    low_confidence: int = 0
    """Pairs whose label is below the confidence threshold (or states none)."""
    tie: int = 0
    """Pairs labelled TIE where a preference is needed (DPO rows, hard negatives)."""

    def usable_label(
        self, pair: Pair, source: LabelSource, min_confidence: int | None, *, needs_preference: bool = False
    ) -> Label | None:
        """The pair's latest `source` label if it may be trained on; else None, counted with the reason.

        A label needs a stated confidence of at least `min_confidence` (None: any label), and with
        `needs_preference` a verdict other than TIE.
        """
        label = pair.label_from(source)
        if label is None:
            self.no_label += 1
        elif min_confidence is not None and (label.confidence is None or label.confidence < min_confidence):
            self.low_confidence += 1
        elif needs_preference and label.verdict == "TIE":
            self.tie += 1
        else:
            return label
        return None


def filter_confident(pairs: Iterable[Pair], source: LabelSource, min_confidence: int) -> list[Pair]:
    """Pairs whose latest label from `source` has a confidence of at least `min_confidence`.

    Pairs with no label from `source`, or whose label states no confidence, are left out.
    """
    left_out = LeftOut()
    return [pair for pair in pairs if left_out.usable_label(pair, source, min_confidence) is not None]


def dropped_path_for(out_path: str | Path) -> Path:
    """Side file of the pairs a model labeller could not use: `labels.jsonl` -> `labels.dropped.jsonl`."""
    return side_path(out_path, ".dropped.jsonl")


@dataclass(kw_only=True)
class ResumableRun:
    """What one call of a resumable model labeller did (the teacher, hard-negative synthesis). Each
    record is appended to `out_path` as it comes; a pair whose output could not be used goes to the
    dropped side file, which later calls skip unless they retry it."""

    out_path: Path
    n_written_now: int = 0
    """Records written to `out_path` in this call."""
    n_resumed: int = 0
    """Pairs already in `out_path` (skipped)."""
    n_dropped_now: int = 0
    """Pairs dropped in this call."""
    n_dropped_before: int = 0
    """Pairs already in the dropped file and not retried (skipped)."""

    @property
    def dropped_path(self) -> Path:
        """The dropped side file of `out_path`."""
        return dropped_path_for(self.out_path)

    def to_do(
        self,
        items: Iterable[ItemT],
        pair_id: Callable[[ItemT], str],
        done: Container[str],
        dropped: Container[str],
        *,
        retry_dropped: bool,
    ) -> list[ItemT]:
        """The items still to do, in order: not in `done` and, unless retried, not in `dropped`. The
        others are counted as resumed or dropped before."""
        todo: list[ItemT] = []
        for item in items:
            key = pair_id(item)
            if key in done:
                self.n_resumed += 1
            elif key in dropped and not retry_dropped:
                self.n_dropped_before += 1
            else:
                todo.append(item)
        return todo


def existing_records(path: Path, model: type[RecordT]) -> list[RecordT]:
    """Records already in a labeller's output or side file (none if it does not exist, invalid lines
    skipped): what a dry run, which writes nothing, counts as done."""
    if not path.exists():
        return []
    return read_records(path, model, allow_empty=True, skip_invalid=True).records


__all__ = ["LeftOut", "ResumableRun", "attach_labels", "dropped_path_for", "existing_records", "filter_confident"]
