"""The `biasjudge data` stages one at a time, file in and file out, as the commands run them.

The pure stages are declared as data and run by :func:`biasjudge.dataset.runner.run_stage`:
:data:`CLASSIFY`, :data:`PAIRS`, :data:`SPLIT` and :data:`ROWS`. The stages that call a model append as they go
and resume after a kill, so they keep their own loops: `candidates_from_file` (`data candidates`)
and `label_file` (`data label`); `write_bbq_sample` is `data bbq --write-sample`. Each counts what
it read (rejects to a side file with skip_invalid) and writes its output with a `.meta.json`
sidecar, through the helpers of :mod:`biasjudge.dataset.build`. Nothing here prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from biasjudge.config import ConfigModel
from biasjudge.data.holdout import HoldoutConfig, Split, load_pairs
from biasjudge.data.pairs import PairsConfig
from biasjudge.dataset.build import ReadReport, RowsBuilt, build_rows, counting_reader, write_output
from biasjudge.dataset.rows import RowsConfig, read_hard_negatives
from biasjudge.dataset.runner import ONE_FILE, Stage, StageInput, StageOutput
from biasjudge.errors import ConfigError
from biasjudge.io import ReadResult, read_records, side_path, write_meta
from biasjudge.labels.answer_key import UnclearVsBiased
from biasjudge.records import CandidateResponse, HardNegative, LabelSourceChoice, Pair, Question

if TYPE_CHECKING:
    from biasjudge.backends.base import Backend, GenerationParams
    from biasjudge.backends.costs import CostControl
    from biasjudge.labels.teacher import TeacherRun
    from biasjudge.records import LabelSource


# --------------------------------------------------------------------------- labels

LabelMethod = Literal["answer-key", "teacher"]


@dataclass
class LabelRun:
    """What `label_file` wrote: the labelled pairs and the counts `biasjudge data label` prints."""

    pairs: list[Pair]
    """Every input pair, with its new label where it got one."""
    source: LabelSource
    """`answer_key` or `teacher`."""
    verdicts: dict[str, int]
    """Verdicts of the new labels, sorted."""
    confidence: dict[str, int]
    """Confidences of the new labels, sorted."""
    unlabelled: int
    """Pairs left without a label of `source`."""
    teacher: TeacherRun | None = None
    """The teacher run (resumed, dropped, raw file) when a teacher model labelled."""
    reads: list[ReadReport] = field(default_factory=list)
    """The input files read, in order."""


class LabelConfig(ConfigModel):
    """How `data label` labels pairs (its flags, or a YAML file of them with `--config`)."""

    method: LabelMethod = Field(default="answer-key", json_schema_extra={"flags": ["--labels"]})
    """answer-key: BBQ's answer key (instant); teacher: a model (--judge) or a file (--teacher-file)."""
    unclear_vs_biased: UnclearVsBiased = "tie"
    """Answer key, a biased response against an unclear one: 'tie' (kappa 0.816 in-dist against humans) or
    'biased_wins' (0.722)."""
    labeller_name: str | None = None
    """Teacher name stored with the labels (default: the judge spec)."""
    batch_size: int = Field(default=8, ge=1)
    """Teacher prompts per generate call."""
    max_tokens: int = Field(default=768, ge=1)
    """The teacher's new-token cap per pair."""
    temperature: float = Field(default=0.0, ge=0.0)
    """The teacher's sampling temperature."""


def label_file(
    pairs_file: Path,
    out: Path,
    config: LabelConfig,
    *,
    teacher_file: Path | None = None,
    teacher: Backend | None = None,
    skip_invalid: bool = False,
    on_read: Callable[[ReadReport], None] | None = None,
    cost: CostControl | None = None,
    rubric: str | None = None,
) -> LabelRun:
    """`biasjudge data label`: label a pairs file into `out` (with its .meta.json sidecar).

    `config.method="answer-key"` labels from BBQ's answer key (instant); `"teacher"` imports the
    labels of `teacher_file` (dryrun_*.jsonl shape) or runs the `teacher` backend (resumable: its
    raw output goes to `<out>_teacher.jsonl`, unreadable outputs to `<out>_teacher.dropped.jsonl`;
    `cost` books its calls and may stop it at a budget, see :mod:`biasjudge.backends.costs`; a dry run
    writes nothing; `rubric` replaces prompts/teacher.md).
    """
    from biasjudge.labels import attach_labels

    reads: list[ReadReport] = []
    read = counting_reader(reads, out.parent, on_read)

    pairs_in: list[Pair] = read(load_pairs(pairs_file, skip_invalid=skip_invalid))
    inputs = [pairs_file]
    sidecar: dict[str, Any] = {"labels": config.method}
    teacher_run = None
    source: LabelSource
    if config.method == "answer-key":
        from biasjudge.labels.answer_key import AnswerKeyConfig, label_pairs

        answer_key = AnswerKeyConfig(unclear_vs_biased=config.unclear_vs_biased)
        labelled = label_pairs(pairs_in, answer_key)
        sidecar.update(answer_key.model_dump())
        source = "answer_key"
    elif teacher_file is not None:
        from biasjudge.labels.teacher import read_teacher_records

        records = read(read_teacher_records(teacher_file, skip_invalid=skip_invalid))
        labelled = attach_labels(pairs_in, {r.pair_id: r.to_label() for r in records})
        inputs.append(teacher_file)
        sidecar["teacher_file"] = str(teacher_file)
        source = "teacher"
    elif teacher is not None:
        from biasjudge.backends.base import GenerationParams
        from biasjudge.labels.teacher import teacher_label

        params = GenerationParams(temperature=config.temperature, max_tokens=config.max_tokens)
        teacher_name = config.labeller_name or "teacher"
        teacher_run = teacher_label(
            pairs_in,
            teacher,
            side_path(out, "_teacher.jsonl"),
            params=params,
            labeller_name=teacher_name,
            batch_size=config.batch_size,
            rubric=rubric,
            cost=cost,
        )
        if cost is not None and cost.dry_run:  # estimated, nothing to write
            return LabelRun(teacher_run.pairs, "teacher", {}, {}, 0, teacher_run, reads)
        labelled = teacher_run.pairs
        sidecar.update({"judge": teacher_name, "max_tokens": params.max_tokens, "temperature": params.temperature})
        source = "teacher"
    else:
        raise ConfigError("teacher labels need a teacher backend (--judge SPEC) or a teacher file (--teacher-file)")
    new_labels = [label for label in (p.label_from(source) for p in labelled) if label is not None]
    verdicts: dict[str, int] = dict(sorted(Counter(label.verdict for label in new_labels).items()))
    confidence: dict[str, int] = dict(sorted(Counter(str(label.confidence) for label in new_labels).items()))
    unlabelled = len(labelled) - len(new_labels)
    write_output(
        out,
        labelled,
        stage=f"data/label/{source}",
        inputs=inputs,
        config=sidecar,
        counts={"verdicts": verdicts, "confidence": confidence, "unlabelled": unlabelled},
    )
    return LabelRun(labelled, source, verdicts, confidence, unlabelled, teacher_run, reads)


# --------------------------------------------------------------------------- single stages


def write_bbq_sample(
    questions: Sequence[Question], out: Path, *, n_per_cell: int, seed: int, categories: Sequence[str]
) -> list[Question]:
    """`biasjudge data bbq --write-sample`: a stratified sample of raw BBQ questions into `out`."""
    from biasjudge.data.bbq import stratified_sample

    picked = stratified_sample(list(questions), n_per_cell, seed)
    write_output(
        out,
        picked,
        stage="data/bbq/sample",
        config={"n_per_cell": n_per_cell, "seed": seed, "categories": list(categories)},
        counts={"by_category": dict(sorted(Counter(q.category for q in picked).items()))},
    )
    return picked


@dataclass
class CandidatesRun:
    """What `candidates_from_file` wrote."""

    candidates: list[CandidateResponse]
    """Every candidate in the output file (earlier runs' included)."""
    n_questions: int
    """Questions answered."""
    finish_reasons: dict[str, int]
    """Candidates per finish reason."""
    reads: list[ReadReport] = field(default_factory=list)
    """The input files read."""


class CandidatesConfig(ConfigModel):
    """How `data candidates` answers the questions (its flags, or a YAML file of them with `--config`)."""

    model_name: str | None = None
    """Value of each candidate's `model` field (default: the judge spec)."""
    batch_size: int = Field(default=8, ge=1)
    """Questions per model call."""
    max_tokens: int = Field(default=256, ge=1)
    """Most tokens one answer may take."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Sampling temperature (0: greedy)."""
    seed: int | None = None
    """Sampling seed (default: the backend's)."""
    limit: int | None = Field(default=None, ge=1)
    """Answer only the first N questions."""

    def params(self) -> GenerationParams:
        """The generation parameters of these settings."""
        from biasjudge.backends.base import GenerationParams

        return GenerationParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)


def candidates_from_file(
    questions_file: Path,
    out: Path,
    backend: Backend,
    config: CandidatesConfig,
    *,
    model_name: str,
    skip_invalid: bool = False,
    on_read: Callable[[ReadReport], None] | None = None,
    cost: CostControl | None = None,
) -> CandidatesRun:
    """`biasjudge data candidates`: answer each question with `backend` into `out` (appended to;
    resumable: answers already there are kept), with its .meta.json sidecar. `cost` books the calls
    and may stop the run at a budget (:mod:`biasjudge.backends.costs`); a dry run writes nothing."""
    from biasjudge.data.candidates import generate_candidates

    reads: list[ReadReport] = []
    read = counting_reader(reads, out.parent, on_read)
    questions: list[Question] = read(_read_questions(questions_file, skip_invalid))
    questions = questions[: config.limit] if config.limit is not None else questions
    params = config.params()
    done = generate_candidates(
        questions, backend, out, model_name=model_name, params=params, batch_size=config.batch_size, cost=cost
    )
    finish = dict(Counter(c.finish_reason or "unknown" for c in done))
    if cost is not None and cost.dry_run:
        return CandidatesRun(list(done), len(questions), finish, reads)
    write_meta(
        out,
        stage="data/candidates",
        inputs=[questions_file],
        config={"judge": model_name, "max_tokens": params.max_tokens, "temperature": params.temperature},
        counts={"rows": len(done), "finish_reason": finish},
    )
    return CandidatesRun(list(done), len(questions), finish, reads)


# --------------------------------------------------------------------------- pure stages (run by run_stage)


def _read_questions(path: Path, skip_invalid: bool) -> ReadResult[Question]:
    return read_records(path, Question, skip_invalid=skip_invalid, unique_key="question_id")


def _read_candidates(path: Path, skip_invalid: bool) -> ReadResult[CandidateResponse]:
    return read_records(path, CandidateResponse, skip_invalid=skip_invalid)


def _read_pairs(path: Path, skip_invalid: bool) -> ReadResult[Pair]:
    return load_pairs(path, skip_invalid=skip_invalid)


QUESTIONS = StageInput("questions", "Questions the candidates answer (bbq_sample.jsonl shape).", _read_questions)
CANDIDATES = StageInput("candidates", "Candidates JSONL (the output of `data candidates`).", _read_candidates)


class ClassifyConfig(ConfigModel):
    """How `data classify` reads the candidates' answers."""

    require_stop: bool = False
    """Count truncated answers (stopped by the token cap) as parse_failed."""


def classify(
    config: ClassifyConfig, *, questions: list[Question], candidates: list[CandidateResponse]
) -> StageOutput[dict[str, dict[str, int]]]:
    """Chosen letter, answer class, hedging and suspected bias level of every candidate."""
    from biasjudge.data.classify import classify_all

    by_id = {q.question_id: q for q in questions}
    classified = classify_all(candidates, by_id, require_stop=config.require_stop)
    counts = {
        "answer_class": dict(sorted(Counter(str(c.answer_class) for c in classified).items())),
        "level": dict(sorted(Counter(str(c.suspected_bias_level) for c in classified).items())),
    }
    return StageOutput({ONE_FILE: classified}, counts, {ONE_FILE: counts})


CLASSIFY: Stage[ClassifyConfig, dict[str, dict[str, int]]] = Stage(
    "classify",
    "Classify candidate answers: chosen letter, answer class, hedging, suspected bias level.",
    (QUESTIONS, CANDIDATES),
    ClassifyConfig,
    classify,
    out_help="Classified candidates JSONL.",
)


def pairs(
    config: PairsConfig, *, questions: list[Question], candidates: list[CandidateResponse]
) -> StageOutput[dict[str, int]]:
    """Pairs in the five buckets from classified candidates (pairs per bucket as the result)."""
    from biasjudge.data.pairs import build_pairs, count_by_bucket

    built = build_pairs({q.question_id: q for q in questions}, candidates, config)
    buckets = count_by_bucket(built)
    return StageOutput({ONE_FILE: built}, buckets, {ONE_FILE: {"by_bucket": buckets}})


PAIRS: Stage[PairsConfig, dict[str, int]] = Stage(
    "pairs",
    "Build pairs in the five buckets from classified candidates.",
    (QUESTIONS, CANDIDATES),
    PairsConfig,
    pairs,
    out_help="Pairs JSONL.",
)

SPLIT_FILES = ("holdout", "train_pool", "unused_ood", "unused_in_dist")


def split(config: HoldoutConfig, *, pairs: list[Pair]) -> StageOutput[Split]:
    """Pairs split by question into holdout / train pool / unused (OOD and leftovers); LeakageError
    if the train pool shares a question with the holdout."""
    from biasjudge.data.holdout import assert_no_leakage, split_holdout

    result = split_holdout(pairs, config)
    assert_no_leakage(
        result.holdout, result.train_pool, holdout_source="holdout.jsonl", train_source="train_pool.jsonl"
    )
    return StageOutput(
        {name: getattr(result, name) for name in SPLIT_FILES}, result, {"holdout": {"shortfalls": result.shortfalls}}
    )


SPLIT: Stage[HoldoutConfig, Split] = Stage(
    "split",
    "Split pairs by question into holdout / train_pool / unused (OOD and leftovers), then check for leakage.",
    (StageInput("pairs", "All pairs.", _read_pairs),),
    HoldoutConfig,
    split,
    outputs=SPLIT_FILES,
    out_help="Output folder.",
)


class RowsStageConfig(RowsConfig):
    """How `data rows` makes SFT and DPO rows: the rows' settings and which label they are built from."""

    label_source: LabelSourceChoice = "answer_key"
    """Which label of each pair the rows are built from."""


def _read_hard_negatives(path: Path, skip_invalid: bool) -> ReadResult[HardNegative]:
    return read_hard_negatives(path, skip_invalid=skip_invalid)


def rows(
    config: RowsStageConfig, *, pairs: list[Pair], hard_negatives: list[HardNegative] | None, holdout: list[Pair] | None
) -> StageOutput[RowsBuilt]:
    """SFT rows (swap-doubled) and DPO rows (confident non-TIE labels); with a holdout, none may share
    a question with it."""
    built = build_rows(
        pairs,
        config,
        label_source=config.label_source,
        hard_negatives=hard_negatives or (),
        holdout=holdout,
        holdout_source="given with --holdout",
    )
    made_from = {"sft": ("pairs",), "dpo": ("pairs", "hard_negatives")}
    return StageOutput(built.records(), built, built.sidecar_counts(), built.sidecar_configs(), made_from)


ROWS: Stage[RowsStageConfig, RowsBuilt] = Stage(
    "rows",
    "SFT rows (swap-doubled) and DPO rows (confident non-TIE labels) from labelled pairs.",
    (
        StageInput("pairs", "Labelled pairs.", _read_pairs),
        StageInput("hard_negatives", "synthesis_results.jsonl-shaped rejecteds.", _read_hard_negatives, required=False),
        StageInput("holdout", "Fail if the rows share a question with this holdout.", _read_pairs, required=False),
    ),
    RowsStageConfig,
    rows,
    outputs=("sft", "dpo"),
    out_help="Output folder for sft.jsonl and dpo.jsonl.",
)
