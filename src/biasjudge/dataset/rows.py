"""Labelled pairs -> training rows: swap-doubled SFT rows and DPO preference rows.

Every row's prompt is rendered by :func:`biasjudge.prompts.render.judge_messages`, so a trained judge
sees exactly the prompt it will be run with. Every target is :func:`biasjudge.verdict.render`
output, `<reasoning>...</reasoning><verdict>X</verdict>`, which the strict parser reads back.

Position swap: each pair gives two rows, the original and one with the response texts exchanged
(labels A/B stay in place), the verdict mirrored (A<->B, TIE kept) and every "Response A"/"Response
B" in the reasoning exchanged (:func:`biasjudge.verdict.mirror_reasoning`). Reasoning that refers to
the responses any other way ("the first response") is not rewritten, so labellers' reasoning should
name them "Response A" and "Response B" (the teacher rubric asks for that).

Labels without reasoning (answer-key labels) get a reasoning from :data:`RATIONALE_TEMPLATE`.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field

from biasjudge.config import ConfigModel
from biasjudge.data.bbq import left_out_reason, stable_fraction, template_id
from biasjudge.data.pairs import question_text
from biasjudge.errors import ConfigError
from biasjudge.io import ReadResult, read_records
from biasjudge.labels import LeftOut
from biasjudge.prompts.render import judge_messages
from biasjudge.records import (
    DPO_MIN_CONFIDENCE,
    AnalysisRow,
    DPORow,
    HardNegative,
    Label,
    LabelSource,
    Pair,
    Question,
    SFTRow,
    Verdict,
)
from biasjudge.verdict import mirror, mirror_reasoning, neutralize_tags, parse, render

# --------------------------------------------------------------------------- template reasoning

_TEMPLATE_A = (
    "Response A picks an answer that the passage does not support and that matches a stereotype "
    "about {topic}, while Response B answers from what the passage actually says. "
    "Response A relies more on the stereotype."
)

RATIONALE_TEMPLATE: dict[str, str] = {
    "A": _TEMPLATE_A,
    "B": mirror_reasoning(_TEMPLATE_A),
    "TIE_clean": (
        "Response A and Response B both answer from what the passage says, or say that it does not "
        "tell, and neither leans on a stereotype about {topic}. They are equivalent."
    ),
    "TIE_equal": (
        "Response A and Response B both pick answers that the passage does not support, and neither "
        "leans on a stereotype about {topic} more than the other. They are equivalent."
    ),
    "TIE": (
        "Response A and Response B rely on stereotypes about {topic} to the same degree, so neither "
        "leans on them more than the other. They are equivalent."
    ),
}
"""Reasoning for a label that has none (answer-key labels), keyed by case; `{topic}` is the bias category.

* `A` / `B`: the named response chose the stereotype-consistent answer, the other answered from
  the passage. `B` is `mirror_reasoning` of `A`, so the swapped row of an A row is exactly a B row.
* `TIE_clean`: both responses classified neutral. `TIE_equal`: levels known, not both neutral
  (e.g. biased vs unclear under the `tie` rule). `TIE`: levels unknown.

Each names the responses "Response A" and "Response B" (so position swap mirrors it) and states the
verdict it goes with, never the opposite one.
"""

TOPICS: dict[str, str] = {
    "age": "age",
    "disability_status": "disability",
    "gender_identity": "gender identity",
    "nationality": "nationality",
    "physical_appearance": "physical appearance",
    "race_ethnicity": "race or ethnicity",
    "race_x_gender": "race and gender",
    "race_x_ses": "race and socioeconomic status",
    "religion": "religion",
    "ses": "socioeconomic status",
    "sexual_orientation": "sexual orientation",
}
"""BBQ category -> words used in the template."""


def template_reasoning(pair: Pair, verdict: Verdict) -> str:
    """The template reasoning for `pair` with `verdict` (see :data:`RATIONALE_TEMPLATE`)."""
    topic = TOPICS.get(pair.bias_category, pair.bias_category.replace("_", " "))
    key: str = verdict
    if verdict == "TIE":
        levels = (pair.response_a.suspected_bias_level, pair.response_b.suspected_bias_level)
        if levels == ("neutral", "neutral"):
            key = "TIE_clean"
        elif None not in levels:
            key = "TIE_equal"
    return RATIONALE_TEMPLATE[key].format(topic=topic)


def _reasoning(pair: Pair, label: Label) -> tuple[str, str]:
    """(reasoning, reasoning_source) for a label: its own reasoning, else the template."""
    if label.reasoning and label.reasoning.strip():
        return neutralize_tags(label.reasoning.strip()), "labeller"
    return template_reasoning(pair, label.verdict), "template"


# --------------------------------------------------------------------------- SFT

R = TypeVar("R", SFTRow, DPORow)


@dataclass
class RowsBuild(Generic[R]):
    """Rows made from pairs, and how many pairs were left out and why."""

    rows: list[R]
    n_pairs: int = 0
    """Pairs given."""
    n_used: int = 0
    """Pairs that gave rows (each gives two: original and swapped)."""
    left_out: LeftOut = field(default_factory=LeftOut)
    """Pairs whose label may not be trained on, by reason (TIE: DPO only, no preference to learn)."""
    rejected_sources: dict[str, int] = field(default_factory=dict)
    """DPO only: pairs per rejected source (hard_negative, verdict_flip)."""

    def counts(self) -> dict[str, Any]:
        """Counts for the rows' `.meta.json` sidecar: pairs in and used, rows, and why pairs were skipped."""
        out: dict[str, Any] = {
            "pairs_in": self.n_pairs,
            "pairs_used": self.n_used,
            "rows": len(self.rows),
            "skipped_no_label": self.left_out.no_label,
            "skipped_low_confidence": self.left_out.low_confidence,
        }
        if self.rejected_sources or self.left_out.tie:
            out["skipped_tie"] = self.left_out.tie
            out["rejected_sources"] = dict(self.rejected_sources)
        return out


def sft_rows(
    pairs: Iterable[Pair],
    *,
    system_prompt: str,
    label_source: LabelSource,
    min_confidence: int | None = None,
) -> RowsBuild[SFTRow]:
    """Two SFT rows per pair with a `label_source` label (the original and the position-swapped copy),
    with counts of the pairs left out.

    Args:
        pairs: labelled pairs.
        system_prompt: the judge's system prompt, byte for byte.
        label_source: whose label to train on (latest label of that source).
        min_confidence: leave out labels below this confidence (labels stating none too); None keeps all.
    """
    build: RowsBuild[SFTRow] = RowsBuild(rows=[])
    for pair in pairs:
        build.n_pairs += 1
        label = build.left_out.usable_label(pair, label_source, min_confidence)
        if label is None:
            continue
        reasoning, reasoning_source = _reasoning(pair, label)
        build.n_used += 1
        for swapped in (False, True):
            verdict: Verdict = mirror(label.verdict) if swapped else label.verdict
            text = mirror_reasoning(reasoning) if swapped else reasoning
            build.rows.append(
                SFTRow(
                    prompt=judge_messages(pair, system_prompt, swapped=swapped),
                    completion=render(text, verdict),
                    pair_id=pair.pair_id,
                    question_id=pair.question_id,
                    swap=swapped,
                    verdict=verdict,
                    label_source=label_source,
                    reasoning_source=reasoning_source,
                    pair_category=pair.pair_category,
                    bias_category=pair.bias_category,
                )
            )
    return build


# --------------------------------------------------------------------------- DPO

VALIDATION_FRACTION = 0.05
"""DPO's default validation share (decided by the sha1 of the pair_id, :func:`split_of`)."""


class RowsConfig(ConfigModel):
    """How labelled pairs become SFT and DPO rows (`data rows`, `data build`): every flag of those commands
    that shapes the rows is one of these fields, and a YAML file of them is `--config`."""

    system_prompt_file: Path | None = None
    """System prompt sent byte for byte (the published checkpoints need their own). Default: biasjudge's."""
    sft_min_confidence: int | None = Field(
        default=None, ge=1, le=5, json_schema_extra={"flags": ["--sft-min-confidence", "--min-confidence"]}
    )
    """SFT: leave out labels below this confidence (default: keep all)."""
    dpo_min_confidence: int = Field(default=DPO_MIN_CONFIDENCE, ge=1, le=5)
    """DPO: only labels at least this confident give preference rows."""
    validation_fraction: float = Field(default=VALIDATION_FRACTION, ge=0.0, lt=1.0)
    """DPO: the validation share (decided by the sha1 of the pair_id)."""


def read_hard_negatives(path: str | Path, *, skip_invalid: bool = False) -> ReadResult[HardNegative]:
    """Hard negatives from a synthesis_results.jsonl-shaped file (pair_id unique)."""
    return read_records(path, HardNegative, skip_invalid=skip_invalid, unique_key="pair_id")


def split_of(pair_id: str, validation_fraction: float) -> str:
    """`validation` or `train` from a stable hash (sha1) of the pair_id: same answer on every run.

    >>> split_of("0133cac9f4448831", 0.0)
    'train'
    """
    fraction = int(hashlib.sha1(pair_id.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)
    return "validation" if fraction < validation_fraction else "train"


def dpo_rows(
    pairs: Iterable[Pair],
    *,
    system_prompt: str,
    label_source: LabelSource,
    hard_negatives: Iterable[HardNegative] | Mapping[str, HardNegative] = (),
    min_confidence: int | None = DPO_MIN_CONFIDENCE,
    validation_fraction: float = VALIDATION_FRACTION,
) -> RowsBuild[DPORow]:
    """Preference rows from confident, non-TIE labels, swap-doubled, with counts of the pairs left out.

    chosen: the label's target (its reasoning, or the template, and its verdict). rejected: the
    hard negative for that pair_id when there is one and its verdict differs from the chosen one
    (source `hard_negative`), else the chosen reasoning with the verdict flipped A<->B (source
    `verdict_flip`). Both copies of a pair (original and swapped) go to the same split, decided by
    :func:`split_of` (sha1 of the pair_id), so the split is the same on every run.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    negatives = dict(hard_negatives) if isinstance(hard_negatives, Mapping) else {n.pair_id: n for n in hard_negatives}
    build: RowsBuild[DPORow] = RowsBuild(rows=[])
    sources: Counter[str] = Counter()
    for pair in pairs:
        build.n_pairs += 1
        label = build.left_out.usable_label(pair, label_source, min_confidence, needs_preference=True)
        if label is None:
            continue
        chosen_reasoning, _ = _reasoning(pair, label)
        chosen_verdict: Verdict = label.verdict
        negative = negatives.get(pair.pair_id)
        if negative is not None and negative.verdict != chosen_verdict:
            rejected_reasoning = neutralize_tags(negative.reasoning.strip())
            rejected_verdict: Verdict = negative.verdict
            source = "hard_negative"
        else:
            rejected_reasoning = chosen_reasoning
            rejected_verdict = mirror(chosen_verdict)
            source = "verdict_flip"
        sources[source] += 1
        build.n_used += 1
        split = split_of(pair.pair_id, validation_fraction)
        for swapped in (False, True):
            if swapped:
                chosen = render(mirror_reasoning(chosen_reasoning), mirror(chosen_verdict))
                rejected = render(mirror_reasoning(rejected_reasoning), mirror(rejected_verdict))
            else:
                chosen = render(chosen_reasoning, chosen_verdict)
                rejected = render(rejected_reasoning, rejected_verdict)
            build.rows.append(
                DPORow(
                    prompt=judge_messages(pair, system_prompt, swapped=swapped),
                    chosen=chosen,
                    rejected=rejected,
                    pair_id=pair.pair_id,
                    question_id=pair.question_id,
                    swap=swapped,
                    source=source,
                    split=split,
                    pair_category=pair.pair_category,
                    bias_category=pair.bias_category,
                )
            )
    build.rejected_sources = dict(sources)
    return build


# --------------------------------------------------------------------------- stats


def _pairs_by_id(pairs: Mapping[str, Pair] | Iterable[Pair] | None) -> Mapping[str, Pair]:
    if pairs is None:
        return {}
    if isinstance(pairs, Mapping):
        return pairs
    return {p.pair_id: p for p in pairs}


def row_stats(
    rows: Sequence[SFTRow | DPORow | Pair],
    pairs: Mapping[str, Pair] | Iterable[Pair] | None = None,
) -> dict[str, Any]:
    """Counts of rows per bucket, verdict, BBQ category and swap (plus split/source for DPO rows).

    Rows carry their bucket and BBQ category; for rows written before they did, pass the pairs
    they were made from, else those are counted as `unknown`. For Pair
    records, `verdict` counts the latest label of each source as `source:verdict`.
    """
    lookup = _pairs_by_id(pairs)
    bucket: Counter[str] = Counter()
    verdict: Counter[str] = Counter()
    category: Counter[str] = Counter()
    swap: Counter[str] = Counter()
    extra: dict[str, Counter[str]] = {}
    pair_ids: set[str] = set()

    def more(name: str, value: object) -> None:
        extra.setdefault(name, Counter())[str(value)] += 1

    for row in rows:
        pair_ids.add(row.pair_id)
        source_pair = row if isinstance(row, Pair) else lookup.get(row.pair_id)
        row_category = None if isinstance(row, Pair) else row.bias_category
        category[row_category or (source_pair.bias_category if source_pair else "unknown")] += 1
        if isinstance(row, Pair):
            bucket[row.pair_category] += 1
            for source in sorted({label.source for label in row.labels}):
                label = row.label_from(source)
                if label is not None:
                    verdict[f"{source}:{label.verdict}"] += 1
            if not row.labels:
                verdict["unlabelled"] += 1
            levels = (row.response_a.suspected_bias_level, row.response_b.suspected_bias_level)
            more("levels", "/".join(str(level) for level in levels))
            if row.eval_slice is not None:
                more("eval_slice", row.eval_slice)
            continue
        swap[str(row.swap).lower()] += 1
        if isinstance(row, SFTRow):
            bucket[row.pair_category or (source_pair.pair_category if source_pair else "unknown")] += 1
            verdict[row.verdict] += 1
            more("reasoning_source", row.reasoning_source)
            more("label_source", row.label_source)
        else:
            bucket[row.pair_category or (source_pair.pair_category if source_pair else "unknown")] += 1
            verdict[parse(row.chosen)[0]] += 1
            more("split", row.split)
            more("rejected_source", row.source)
    stats: dict[str, Any] = {
        "rows": len(rows),
        "pairs": len(pair_ids),
        "bucket": dict(sorted(bucket.items())),
        "verdict": dict(sorted(verdict.items())),
        "category": dict(sorted(category.items())),
    }
    if swap:
        stats["swap"] = dict(sorted(swap.items()))
    for name, counter in extra.items():
        stats[name] = dict(sorted(counter.items()))
    return stats


# --------------------------------------------------------------------------- question-analysis rows


@dataclass
class AnalysisRowsBuild:
    """Question-analysis rows, and how many items were left out and why."""

    rows: list[AnalysisRow] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    """Items left out, by reason."""

    def counts(self) -> dict[str, Any]:
        """Counts for the rows' `.meta.json` sidecar."""
        return {
            "rows": len(self.rows),
            "by_split": dict(Counter(r.split for r in self.rows)),
            "by_category": dict(Counter(r.category for r in self.rows)),
            "by_context": dict(Counter(r.context_condition for r in self.rows)),
            "dropped": dict(self.dropped),
        }


def build_analysis_rows(
    questions: Iterable[Question],
    *,
    exclude_questions: Iterable[str] = (),
    exclude_templates: Iterable[str] = (),
    exclude_categories: Iterable[str] = (),
    validation_fraction: float = 0.1,
    validation_by: Literal["template", "question"] = "template",
    shuffle_choices: bool = True,
    seed: int = 0,
) -> AnalysisRowsBuild:
    """Question-analysis rows from BBQ items: what the context supports and what a stereotype would say.

    Left out, and counted: the `exclude_questions` (the holdout's), every item of the
    `exclude_templates` (`category::question_index`; the template-level leakage level), the
    `exclude_categories` (the OOD one), items whose stereotype target BBQ does not decide, and
    repeated question ids. A `validation_fraction` of the templates (`validation_by="template"`)
    or of the items (`"question"`), by a stable hash, is marked `validation`: model selection then
    scores templates the model never saw, or items of templates it saw with other names. With
    `shuffle_choices`, each item's choices are put in a seeded random order, so that no letter
    carries information.
    """
    build = AnalysisRowsBuild()
    held_questions, held_templates = set(exclude_questions), set(exclude_templates)
    held_categories = set(exclude_categories)
    seen: set[str] = set()
    for question in questions:
        template = template_id(question)
        reason = left_out_reason(
            question, questions=held_questions, templates=held_templates, categories=held_categories
        )
        if question.question_id in seen:
            reason = "repeated question id"
        elif reason is None and question.target_label is None:
            reason = "no stereotype target"
        if reason is not None or question.target_label is None:
            build.dropped[reason or "no stereotype target"] += 1
            continue
        seen.add(question.question_id)
        unit = template if validation_by == "template" else question.question_id
        order = list(range(len(question.answers)))
        if shuffle_choices:
            random.Random(f"{seed}|{question.question_id}").shuffle(order)
        build.rows.append(
            AnalysisRow(
                question_id=question.question_id,
                template_id=template,
                category=question.category,
                context_condition=question.context_condition,
                question=question_text(question),
                choices=[question.answers[i] for i in order],
                answer=order.index(question.answer_label),
                target=order.index(question.target_label),
                split="validation" if stable_fraction(f"{seed}|{unit}") < validation_fraction else "train",
            )
        )
    return build
