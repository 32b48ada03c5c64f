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

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from biasjudge.io import read_records
from biasjudge.records import Label, LabelSource, Pair

RecordT = TypeVar("RecordT", bound=BaseModel)


def attach_labels(pairs: Iterable[Pair], labels: Mapping[str, Label]) -> list[Pair]:
    """Copies of `pairs` with `labels[pair_id]` appended where there is one; other pairs unchanged."""
    out: list[Pair] = []
    for pair in pairs:
        label = labels.get(pair.pair_id)
        out.append(pair if label is None else pair.model_copy(update={"labels": [*pair.labels, label]}))
    return out


def filter_confident(pairs: Iterable[Pair], source: LabelSource, min_confidence: int) -> list[Pair]:
    """Pairs whose latest label from `source` has a confidence of at least `min_confidence`.

    Pairs with no label from `source`, or whose label states no confidence, are left out.
    """
    kept: list[Pair] = []
    for pair in pairs:
        label = pair.label_from(source)
        if label is not None and label.confidence is not None and label.confidence >= min_confidence:
            kept.append(pair)
    return kept


def existing_records(path: Path, model: type[RecordT]) -> list[RecordT]:
    """Records already in a labeller's output or side file (none if it does not exist, invalid lines
    skipped): what a dry run, which writes nothing, counts as done."""
    if not path.exists():
        return []
    return read_records(path, model, allow_empty=True, skip_invalid=True).records


__all__ = ["attach_labels", "existing_records", "filter_confident"]
