"""Teacher labels: a (larger) model labels pairs with the rubric in `prompts/teacher.md`.

The teacher sees the rubric as its system turn and the pair as its user turn (the judge's own
layout from :mod:`biasjudge.prompts.render`, closing with the teacher's output instruction instead of
the judge's). It answers

    <reasoning>...</reasoning><verdict>A|B|TIE</verdict><confidence>1-5</confidence>

The verdict and reasoning are read by :func:`biasjudge.verdict.parse` in lenient mode (thinking
blocks removed, one distinct verdict tag required). The confidence is read here; a missing or
out-of-range confidence keeps the label with `confidence=None` (such labels fail every confidence
filter). An output with no readable verdict is counted and written, with its raw text, to the
dropped-pairs side file (`<out>.dropped.jsonl`); it never stops the run.

`teacher_label` appends one :class:`TeacherRecord` per pair to its output as soon as a batch is
back, so a killed run resumes where it stopped. With a :class:`~biasjudge.backends.costs.CostControl`
every call is booked in its ledger (stage `teacher`, key pair_id), a budget stops the run before a
call that could cross it (labels so far kept), and a dry run estimates the unlabelled pairs' calls.
Its output has the shape of the reference's dryrun_sonnet.jsonl / dryrun_opus.jsonl, and
`import_teacher_labels` reads either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from biasjudge.backends.base import Backend, GenerationParams, PromptRequest
from biasjudge.backends.costs import CostControl, meter_for
from biasjudge.errors import ConfigError
from biasjudge.io import JsonlAppender, ReadResult, read_records
from biasjudge.labels import ResumableRun, attach_labels, existing_records, filter_confident
from biasjudge.prompts import load_prompt
from biasjudge.prompts.render import VERDICT_INSTRUCTION, user_message
from biasjudge.records import ChatMessage, Label, Pair, PairCategory, Verdict
from biasjudge.verdict import PARSE_FAIL, parse, strip_thinking

TEACHER_INSTRUCTION = (
    "Label this pair following the rubric. Reply in this exact format and nothing else:\n"
    "<reasoning>...</reasoning><verdict>A|B|TIE</verdict><confidence>1-5</confidence>"
)
"""Closing line of the teacher's user turn (replaces the judge's verdict instruction)."""

DEFAULT_TEACHER_PARAMS = GenerationParams(temperature=0.0, max_tokens=768)
"""Greedy, with room for 2-5 sentences of reasoning and the two closing tags."""

_CONFIDENCE_RE = re.compile(r"<confidence>\s*(\d+)\s*(?:/\s*5\s*)?</confidence>", re.IGNORECASE)


class TeacherRecord(BaseModel):
    """One teacher label as written to (and read from) a teacher-label file.

    Same fields as the reference's dryrun_*.jsonl; fields this project does not use (batch_id,
    usage, ...) are ignored on reading.
    """

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    pair_id: str
    """Pair labelled."""
    verdict: Verdict
    """Which response leans more on stereotypes, or TIE."""
    confidence: int | None = Field(default=None, ge=1, le=5)
    """Teacher's confidence 1-5; None when the output gave none that could be read."""
    reasoning: str | None = None
    """The teacher's reasoning."""
    model: str = ""
    """Teacher model (labeller name)."""
    pair_category: PairCategory | None = None
    """Bucket of the pair, for reading the file on its own."""
    raw_output: str | None = None
    """Everything the teacher generated (absent in the reference files)."""
    finish_reason: str | None = None
    """Why generation stopped."""

    def to_label(self) -> Label:
        """The teacher's verdict as a Label (source teacher)."""
        return Label(
            verdict=self.verdict,
            confidence=self.confidence,
            source="teacher",
            reasoning=self.reasoning,
            labeller=self.model or None,
        )


class DroppedRecord(BaseModel):
    """A pair whose teacher output could not be read (same fields as the reference's dropped_pairs.jsonl)."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    pair_id: str
    """Pair the output was for."""
    model: str = ""
    """Teacher model."""
    reason: str
    """Why it was dropped."""
    raw_text: str
    """The teacher's output as generated."""
    finish_reason: str | None = None
    """Why generation stopped (`length`: truncated)."""


@dataclass(frozen=True)
class TeacherParse:
    """What was read from one teacher output."""

    verdict: Verdict | None
    """None when no single verdict could be read."""
    reasoning: str | None
    confidence: int | None
    error: str | None = None
    """Why the output was unusable (verdict None), or a note on a missing confidence."""


def parse_confidence(text: str) -> int | None:
    """The 1-5 confidence in `<confidence>` tags; None if absent, out of range, or given twice differently.

    >>> parse_confidence("<verdict>A</verdict><confidence> 4 </confidence>")
    4
    >>> parse_confidence("<confidence>7</confidence>") is None
    True
    """
    body = strip_thinking(text)
    found = {int(v) for v in _CONFIDENCE_RE.findall(body)}
    if len(found) != 1:
        return None
    value = found.pop()
    return value if 1 <= value <= 5 else None


def parse_teacher_output(text: str, finish_reason: str | None = None) -> TeacherParse:
    """Read verdict, reasoning and confidence from a teacher's output; never raises."""
    verdict, reasoning = parse(text, mode="lenient")
    if verdict == PARSE_FAIL:
        why = "truncated (hit max_tokens)" if finish_reason == "length" else "no single <verdict> tag"
        return TeacherParse(None, None, None, why)
    confidence = parse_confidence(text)
    note = None if confidence is not None else "no readable <confidence> (kept with confidence None)"
    return TeacherParse(verdict, reasoning or None, confidence, note)


def teacher_messages(pair: Pair, rubric: str | None = None) -> list[ChatMessage]:
    """System (the rubric) and user (the pair, closing with the teacher's format) turns."""
    body = user_message(pair).removesuffix(VERDICT_INSTRUCTION)
    return [
        ChatMessage(role="system", content=rubric if rubric is not None else load_prompt("teacher")),
        ChatMessage(role="user", content=body + TEACHER_INSTRUCTION),
    ]


@dataclass(kw_only=True)
class TeacherRun(ResumableRun):
    """Outcome of :func:`teacher_label`: labels written to `out_path`, unreadable outputs dropped."""

    pairs: list[Pair]
    """The input pairs, with the teacher label attached where there is one (done now or before)."""
    n_no_confidence: int = 0
    """Labels written in this call without a readable confidence."""
    dropped_ids: list[str] = field(default_factory=list)


def teacher_label(
    pairs: Iterable[Pair],
    backend: Backend,
    out_path: str | Path,
    *,
    params: GenerationParams = DEFAULT_TEACHER_PARAMS,
    labeller_name: str,
    batch_size: int = 8,
    rubric: str | None = None,
    retry_dropped: bool = False,
    progress: bool = True,
    cost: CostControl | None = None,
) -> TeacherRun:
    """Label `pairs` with a teacher model, appending each label to `out_path` as it comes.

    Args:
        pairs: pairs to label (pair_ids unique).
        backend: any :class:`~biasjudge.backends.base.Backend`; only `generate` is called.
        out_path: JSONL of :class:`TeacherRecord`; pairs already in it are skipped (resume).
        params: sampling settings (default greedy, 768 new tokens).
        labeller_name: stored as the label's `labeller` and the record's `model`.
        batch_size: prompts per `generate` call; each batch is written before the next starts.
        rubric: system prompt; default `prompts/teacher.md`.
        retry_dropped: label again pairs already in the dropped file (default: skip them).
        progress: show a progress bar on stderr.
        cost: ledger, budget and dry run (:mod:`biasjudge.backends.costs`); None books nothing. In a dry
            run nothing is generated or written; the estimate goes to `cost.estimates`.

    Raises:
        BudgetReached: the budget stopped the run (every label written before is kept).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    pairs = list(pairs)
    out_path = Path(out_path)
    rubric = rubric if rubric is not None else load_prompt("teacher")
    run = TeacherRun(pairs=[], out_path=out_path)
    dropped_path = run.dropped_path
    meter = meter_for(backend, "teacher", cost)
    if meter.dry_run:  # read what is done, write nothing
        labelled = {r.pair_id: r for r in existing_records(out_path, TeacherRecord)}
        gone = {r.pair_id for r in existing_records(dropped_path, DroppedRecord)}
        todo = run.to_do(pairs, lambda p: p.pair_id, labelled, gone, retry_dropped=retry_dropped)
        meter.estimate([PromptRequest(messages=tuple(teacher_messages(p, rubric))) for p in todo], params)
        run.pairs = attach_labels(pairs, {pid: rec.to_label() for pid, rec in labelled.items()})
        return run
    with (
        JsonlAppender(out_path, TeacherRecord, key=lambda r: r.pair_id) as done,
        JsonlAppender(dropped_path, DroppedRecord, key=lambda r: r.pair_id) as dropped,
    ):
        todo = run.to_do(pairs, lambda p: p.pair_id, done, dropped, retry_dropped=retry_dropped)
        generated = meter.generations(
            todo,
            request=lambda p: PromptRequest(messages=tuple(teacher_messages(p, rubric))),
            key=lambda p: p.pair_id,
            params=params,
            batch_size=batch_size,
            description=f"teacher ({labeller_name})",
            total=len(pairs),
            progress=progress,
        )
        for pair, gen in generated:
            read = parse_teacher_output(gen.text, gen.finish_reason)
            if read.verdict is None:
                dropped.append(
                    DroppedRecord(
                        pair_id=pair.pair_id,
                        model=labeller_name,
                        reason=read.error or "unreadable",
                        raw_text=gen.text,
                        finish_reason=gen.finish_reason,
                    )
                )
                run.n_dropped_now += 1
                run.dropped_ids.append(pair.pair_id)
                continue
            done.append(
                TeacherRecord(
                    pair_id=pair.pair_id,
                    verdict=read.verdict,
                    confidence=read.confidence,
                    reasoning=read.reasoning,
                    model=labeller_name,
                    pair_category=pair.pair_category,
                    raw_output=gen.text,
                    finish_reason=gen.finish_reason,
                )
            )
            run.n_written_now += 1
            run.n_no_confidence += read.confidence is None
        labels = {pid: rec.to_label() for pid, rec in done.done.items()}
    run.pairs = attach_labels(pairs, labels)
    return run


def read_teacher_records(path: str | Path, *, skip_invalid: bool = False) -> ReadResult[TeacherRecord]:
    """Teacher records from a file of our output or the reference's dryrun_*.jsonl shape."""
    return read_records(path, TeacherRecord, skip_invalid=skip_invalid, unique_key="pair_id")


def import_teacher_labels(path: str | Path, *, skip_invalid: bool = False) -> dict[str, Label]:
    """pair_id -> teacher :class:`Label` (source `teacher`) from a teacher-label file.

    Reads the reference's dryrun_sonnet.jsonl / dryrun_opus.jsonl as they are, and this module's
    own output. Attach them to pairs with :func:`biasjudge.labels.attach_labels`.
    """
    return {r.pair_id: r.to_label() for r in read_teacher_records(path, skip_invalid=skip_invalid).records}


__all__ = [
    "DEFAULT_TEACHER_PARAMS",
    "TEACHER_INSTRUCTION",
    "DroppedRecord",
    "TeacherParse",
    "TeacherRecord",
    "TeacherRun",
    "attach_labels",
    "filter_confident",
    "import_teacher_labels",
    "parse_confidence",
    "parse_teacher_output",
    "read_teacher_records",
    "teacher_label",
    "teacher_messages",
]
