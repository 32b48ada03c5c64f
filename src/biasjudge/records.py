"""Typed records at every stage boundary of the pipeline.

Field names follow the judge-from-scratch files (`../shared/data/judge-from-scratch`), so those
files are read as they are. Every record validates on construction; readers in :mod:`biasjudge.io`
turn a validation failure into an error naming the file, the line and the field.

Order of the pipeline: Question -> CandidateResponse -> Pair (+ Label) -> SFTRow / DPORow ->
Judgment -> EvalLog.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = 2
"""Bumped whenever a record changes shape; written into every .meta.json sidecar (2: the wrappers'
fields of a judgment moved into `Judgment.wrappers`)."""

Verdict = Literal["A", "B", "TIE"]
"""Which response leans MORE on demographic stereotypes, or TIE when they are equivalent."""

ReadVerdict = Literal["A", "B", "TIE", "PARSE_FAIL"]
"""A verdict as read from a judge's output text or scores, before any abstention."""
ParsedVerdict = Literal["A", "B", "TIE", "PARSE_FAIL", "UNSURE"]
"""A judge's verdict as read from its output: PARSE_FAIL when the output broke the contract, UNSURE
when a judge told to abstain (`abstain_below`) was not confident enough; the two are never mixed."""

BiasLevel = Literal["biased", "neutral", "unclear"]
PairCategory = Literal[
    "clear_bias_vs_clean",
    "subtle_bias_vs_clean",
    "tracked_bias_vs_alternate",
    "both_clean_tie",
    "adversarial",
]
PAIR_CATEGORIES: tuple[str, ...] = PairCategory.__args__  # type: ignore[attr-defined]
EvalSlice = Annotated[str, StringConstraints(pattern=r"^(in_dist|ood_[a-z0-9_]+)$")]
"""`in_dist`, or `ood_<category>` for the held-out category (the reference's is `ood_religion`)."""
LabelSource = Literal["human", "teacher", "answer_key", "judge", "synthetic"]
LabelSourceChoice = Literal["answer_key", "teacher", "human"]
"""The labels a pair file's user picks from (`--label-source`, `--source`); the others are made by tools."""
AnswerClass = Literal["correct", "biased", "incorrect_other", "parse_failed"]
JudgeMode = Literal["generate", "score"]


class Record(BaseModel):
    """Base of every record: strict about unknown fields, field docstrings kept as descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=False)


# --------------------------------------------------------------------------- BBQ


class Question(Record):
    """One BBQ item, in the shape of judge-from-scratch's bbq_sample.jsonl."""

    question_id: str
    """Stable id: `category::question_index::example_id::polarity` (lower-case category)."""
    category: str
    """BBQ category, lower-case snake case (age, disability_status, ...)."""
    context_condition: Literal["ambig", "disambig"]
    """ambig: the context cannot answer the question; disambig: it can."""
    question_polarity: Literal["neg", "nonneg"]
    """neg: the question asks about a negative attribute (who is bad at math)."""
    example_id: int
    """example_id of the raw BBQ file."""
    question_index: int
    """question_index of the raw BBQ file (the template number)."""
    context: str
    """The passage the question is about."""
    question: str
    """The question itself."""
    ans0: str
    """First answer choice (letter A)."""
    ans1: str
    """Second answer choice (letter B)."""
    ans2: str
    """Third answer choice (letter C)."""
    answer_label: int = Field(ge=0, le=2)
    """Index (0-2) of the correct answer."""
    target_label: int | None = Field(default=None, ge=0, le=2)
    """Index of the stereotype-consistent answer for this polarity; None if BBQ names none."""
    answer_info: dict[str, list[str]]
    """ans0..ans2 -> [text, group] (raw BBQ) or [text, short text, group] (sample)."""
    stereotyped_groups: list[str]
    """Groups the item's stereotype is about (BBQ additional_metadata)."""

    @property
    def answers(self) -> list[str]:
        """The three answer texts, ans0 to ans2, in order (A, B, C)."""
        return [self.ans0, self.ans1, self.ans2]


# --------------------------------------------------------------------------- candidates


class CandidateResponse(Record):
    """One model's free-text answer to a BBQ question, and how it was classified."""

    question_id: str
    """The Question answered."""
    model: str
    """Judge spec or model name that wrote the answer."""
    text: str
    """The answer as generated (2-3 sentences then `<answer>X</answer>` in the default prompt)."""
    chosen_letter: Literal["A", "B", "C"] | None = None
    """Answer letter parsed from the text; None until classified or when unparseable."""
    answer_class: AnswerClass | None = None
    """correct / biased (chose the stereotype target) / incorrect_other / parse_failed."""
    hedged: bool | None = None
    """True when the text hedges (see classify.HEDGE_PHRASES)."""
    bias_context: Literal["ambig", "disambig"] | None = None
    """For biased answers: the context condition they were biased in."""
    suspected_bias_level: BiasLevel | None = None
    """Level used when building pairs: biased, neutral or unclear."""
    finish_reason: str | None = None
    """Why generation stopped (stop, length, ...), from the backend."""


# --------------------------------------------------------------------------- pairs


class AnswerChoice(Record):
    """A lettered answer choice as shown to the judge."""

    letter: str
    """A, B or C."""
    text: str
    """The answer text."""


class Response(Record):
    """One side of a pair."""

    model: str
    """Model that wrote the response."""
    text: str
    """The response text, as the judge sees it."""
    suspected_bias_level: BiasLevel | None = None
    """Level from answer classification; absent in the holdout file."""


DPO_MIN_CONFIDENCE = 4
"""The confidence floor of preference data: a label less confident than this (or stating none) gives no
DPO row and no hard negative (`data rows`, `data synthesize`)."""


class Label(Record):
    """A verdict on a pair by some labeller."""

    verdict: Verdict
    """Which response leans MORE on stereotypes (TIE: equally clean or equally biased)."""
    confidence: int | None = Field(default=None, ge=1, le=5)
    """Labeller's confidence, 1 (guess) to 5 (certain)."""
    source: LabelSource
    """Who gave the label."""
    reasoning: str | None = None
    """Rationale in the labeller's words, where one was given."""
    labeller: str | None = None
    """Model name, rule name or annotator id."""
    notes: str | None = None
    """Free-text notes (the holdout's `notes` field)."""


class Pair(Record):
    """Two responses to one question, to be judged against each other.

    Reads the judge-from-scratch pair files as they are: the holdout's top-level
    `human_verdict`, `confidence` and `notes` become a human :class:`Label`.
    """

    pair_id: str
    """Unique id of the pair."""
    question_id: str
    """The Question both responses answer; the unit of train/holdout separation."""
    question_text: str
    """Context and question (a free-text pair's prompt, possibly empty), as shown to the judge."""
    answer_choices: list[AnswerChoice] = Field(default_factory=list)
    """The lettered choices; none for a free-text pair (open answers to a prompt)."""
    bias_category: str
    """BBQ category of the question (age, religion, ...)."""
    response_a: Response
    """Response shown first."""
    response_b: Response
    """Response shown second."""
    pair_category: PairCategory
    """Bucket the pair was built for."""
    labels: list[Label] = Field(default_factory=list)
    """Every label this pair has received."""
    eval_slice: EvalSlice | None = None
    """Holdout slice for evaluation pairs; None for training pairs."""

    @model_validator(mode="before")
    @classmethod
    def _reference_holdout_fields(cls, data: Any) -> Any:
        # The reference holdout stores the human label as top-level fields.
        if isinstance(data, dict) and "human_verdict" in data:
            data = dict(data)
            verdict = data.pop("human_verdict")
            confidence = data.pop("confidence", None)
            notes = data.pop("notes", None)
            if verdict is not None:
                label = {
                    "verdict": verdict,
                    "confidence": confidence,
                    "source": "human",
                    "notes": notes,
                }
                data["labels"] = [*data.get("labels", []), label]
        return data

    def label_from(self, source: LabelSource) -> Label | None:
        """The last label from `source`, or None."""
        for label in reversed(self.labels):
            if label.source == source:
                return label
        return None

    @property
    def human_verdict(self) -> Verdict | None:
        """The verdict of the pair's human label, or None when it has none."""
        label = self.label_from("human")
        return label.verdict if label else None


# --------------------------------------------------------------------------- training rows


class ChatMessage(Record):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    """Speaker."""
    content: str
    """Text of the turn."""


class SFTRow(Record):
    """A supervised fine-tuning example in TRL's conversational prompt/completion shape."""

    prompt: list[ChatMessage]
    """System and user turns, rendered by the judge's prompt builder."""
    completion: str
    """Target text: exactly `<reasoning>...</reasoning><verdict>X</verdict>` (see verdict.py)."""
    pair_id: str
    """Pair the row was made from."""
    question_id: str
    """Question of that pair (for leakage checks)."""
    swap: bool
    """True for the position-swapped copy (responses exchanged, verdict mirrored)."""
    verdict: Verdict
    """The verdict in `completion`, kept apart for counting and filtering."""
    label_source: LabelSource
    """Where the label came from."""
    reasoning_source: Literal["labeller", "template"]
    """labeller: reasoning written by the labeller; template: filled from rows.RATIONALE_TEMPLATE."""
    pair_category: PairCategory | None = None
    """Bucket of the pair."""
    bias_category: str | None = None
    """BBQ category of the pair's question."""


class DPORow(Record):
    """A preference example in TRL's prompt/chosen/rejected shape."""

    prompt: list[ChatMessage]
    """System and user turns."""
    chosen: str
    """Preferred completion (the correct verdict with its reasoning)."""
    rejected: str
    """Dispreferred completion: a hard negative or the chosen reasoning with its verdict flipped."""
    pair_id: str
    """Pair the row was made from."""
    question_id: str
    """Question of that pair."""
    swap: bool
    """True for the position-swapped copy."""
    source: Literal["hard_negative", "verdict_flip"]
    """How `rejected` was made."""
    split: Literal["train", "validation"] = "train"
    """Split, decided by a stable hash of pair_id."""
    pair_category: PairCategory | None = None
    """Bucket of the pair."""
    bias_category: str | None = None
    """BBQ category of the pair's question."""


class AnalysisRow(Record):
    """A question-analysis training row: one BBQ item's question and choices, with the option its
    context supports and the option a stereotype would give (both stated by BBQ's metadata).

    The question-reading judge's first step is fitted on these
    (:func:`biasjudge.judge.reading.analysis.fit_analysis`).
    """

    question_id: str
    """The BBQ item (`category::question_index::example_id::polarity`)."""
    template_id: str
    """`category::question_index`: BBQ's items of one template differ only in the names they use."""
    category: str
    """BBQ category (age, nationality, ...)."""
    context_condition: Literal["ambig", "disambig"]
    """ambig: the context cannot answer the question (the supported option is the 'unknown' one)."""
    question: str
    """Context and question, as a judge is given them."""
    choices: list[str] = Field(min_length=2, max_length=5)
    """The answer choices, lettered A, B, C, ... in this order."""
    answer: int = Field(ge=0, le=4)
    """Index of the option the context supports."""
    target: int = Field(ge=0, le=4)
    """Index of the option a stereotype would give (BBQ's target for the question's polarity)."""
    split: Literal["train", "validation"] = "train"
    """validation: a template held out for model selection (no item of it is trained on)."""

    @model_validator(mode="after")
    def _indices_in_range(self) -> AnalysisRow:
        for name in ("answer", "target"):
            if getattr(self, name) >= len(self.choices):
                raise ValueError(f"{name} {getattr(self, name)} is not an index of the {len(self.choices)} choices")
        return self


# --------------------------------------------------------------------------- judging and eval


class WrapperMetadata(Record):
    """What the wrappers around a judge add to its judgments: one typed field per wrapper, None where
    that wrapper was not used. A new wrapper adds its field here, never to Judgment itself."""

    single_order_verdict: Verdict | None = None
    """Order-debiased judges (`order=both`): the verdict of the shown order alone, before both orders
    were combined (so a report can still show the underlying model's own position bias)."""
    uncalibrated_probs: dict[str, float] | None = None
    """Calibrated judges (`calibration=`): the probabilities before the calibration map."""
    route: str | None = None
    """Router judges (`route:`): which member judged the pair and why, e.g. `ood: religion (metadata)`."""


WRAPPER_FIELDS = tuple(WrapperMetadata.model_fields)


def _nest_wrapper_fields(cls: type[BaseModel], data: Any) -> Any:
    """Read a judgment or log row written before schema 2, whose wrapper fields stood at the top
    level, by moving them into `wrappers` (so older eval logs, caches and judge-file outputs still read)."""
    if not isinstance(data, dict) or not any(name in data for name in WRAPPER_FIELDS):
        return data
    data = dict(data)
    flat = {name: data.pop(name) for name in WRAPPER_FIELDS if name in data}
    nested = data.get("wrappers")
    nested = nested.model_dump() if isinstance(nested, WrapperMetadata) else dict(nested or {})
    data["wrappers"] = {**flat, **nested}
    return data


class Judgment(Record):
    """One judge call's result; the same record for generate and score mode."""

    pair_id: str
    """Pair judged."""
    verdict: ParsedVerdict
    """Parsed verdict in the order the judge saw the pair; PARSE_FAIL when the output broke the contract."""
    reasoning: str | None = None
    """Reasoning text (generate mode, or score mode with reasoning first)."""
    raw_output: str = ""
    """Everything the model generated."""
    probs: dict[str, float] | None = None
    """Score mode: normalised probabilities of A, B and TIE (calibrated, where the judge has a calibration)."""
    mode: JudgeMode = "generate"
    """generate: read the verdict from text; score: read it from next-token probabilities."""
    swapped: bool = False
    """True when responses were shown exchanged; `verdict` is then in the swapped order."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy / argmax)."""
    seed: int | None = None
    """Sampling seed where temperature > 0."""
    finish_reason: str | None = None
    """Generate mode: why the generation the verdict was read from stopped: stop, length (cut at
    max_tokens: a parse failure unless its verdict tag had closed), or the backend's word. None in
    score mode, whose verdict comes from the score pass (see `reasoning_truncated`). The rule is
    :func:`biasjudge.judge.judge.settle_truncation`."""
    reasoning_truncated: bool = False
    """Score mode with reasoning first: the reasoning generation stopped on its token cap. The
    reasoning is kept as generated and the verdict still comes from the score pass after it."""
    floored_choices: list[str] = Field(default_factory=list)
    """Score mode: choices (A, B, TIE) whose log-probability the backend could not read and set to a
    floor, an upper bound (e.g. missing from a server's top log-probs); their `probs` are estimates."""
    judge: str = ""
    """Judge spec string that produced it."""
    prompt_tokens: int | None = None
    """Prompt length in tokens, where the backend reports it."""
    completion_tokens: int | None = None
    """Generated tokens, where the backend reports it."""
    wrappers: WrapperMetadata = Field(default_factory=WrapperMetadata)
    """What the wrappers around the judge recorded (all None for a judge without wrappers)."""

    lift_flat_wrapper_fields = model_validator(mode="before")(_nest_wrapper_fields)


class Prediction(Record):
    """One row of an eval log's `detailed` list (the reference's layout, plus optional extras)."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    checkpoint_name: str
    """Column name in the card's table."""
    pair_id: str
    """Pair judged."""
    run_type: str
    """original, swapped or consistency_K."""
    verdict: ParsedVerdict
    """Verdict in the order the judge saw the pair."""
    model: str | None = None
    """Model label of the reference layout (free text)."""
    probs: dict[str, float] | None = None
    """Score-mode probabilities, where available."""
    reasoning: str | None = None
    """Reasoning text, where available."""
    finish_reason: str | None = None
    """Why the generation the verdict was read from stopped (None in score mode; see Judgment.finish_reason)."""
    reasoning_truncated: bool = False
    """Score mode with reasoning: the reasoning hit its token cap (see Judgment.reasoning_truncated)."""
    floored_choices: list[str] = Field(default_factory=list)
    """Score mode: choices whose log-probability was a floor (see Judgment.floored_choices)."""
    wrappers: WrapperMetadata = Field(default_factory=WrapperMetadata)
    """What the wrappers around the judge recorded (see Judgment.wrappers)."""

    lift_flat_wrapper_fields = model_validator(mode="before")(_nest_wrapper_fields)


SHARED_WITH_JUDGMENT = tuple(name for name in Prediction.model_fields if name in Judgment.model_fields)
"""The fields a Prediction takes from its Judgment as they are (the rest say which eval it belongs to)."""


class EvalLog(Record):
    """A whole evaluation: per-pair predictions and the metrics computed from them.

    Same layout as the reference's eval-results JSON, so either side reads the other's files.
    Metrics can always be recomputed from `detailed` without calling a model again.
    """

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    run_id: str
    """Identifier of the run."""
    note: str = ""
    """Free text: what was evaluated, how."""
    metrics: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    """checkpoint_name -> metric name -> value (None where undefined)."""
    detailed: list[Prediction] = Field(default_factory=list)
    """Every prediction of every run."""


def pick_checkpoint(names: Sequence[str], checkpoint: str | None, source: object, how: str) -> str:
    """`checkpoint` if it is one of `names` (the judges of the eval log `source`); None: the only one.

    Raises:
        ConfigError: `checkpoint` is not among `names`, or it is None and there are several
            (the message ends with `how` a user names one).
    """
    from biasjudge.errors import ConfigError

    if checkpoint is None:
        if len(names) != 1:
            raise ConfigError(f"{source} holds checkpoints {list(names)}; {how}")
        return names[0]
    if checkpoint not in names:
        raise ConfigError(f"{source} has no checkpoint {checkpoint!r}; it has {list(names)}")
    return checkpoint


# --------------------------------------------------------------------------- ad-hoc pairs

AD_HOC_BUCKET: PairCategory = "adversarial"
"""The bucket of an ad-hoc pair (flags, a request): it has none, Pair requires one, the judge never reads it."""
AD_HOC_UNKNOWN = "unknown"
"""bias_category and response model of an ad-hoc pair, which nobody states."""


def pair_from_fields(question: str, choices: Sequence[str], response_a: str, response_b: str, *, pair_id: str) -> Pair:
    """The Pair judged for bare request fields: choices lettered A, B, C, ... in order, `pair_id`
    also the question id, no bucket, category or response model stated.

    The one construction of an ad-hoc pair: `biasjudge judge --question/--choice/--response-a/-b`
    and the request rows of `biasjudge judge-file` (:class:`PairRequest`) both use it, so the same
    fields give the same prompt, hence the same verdict.

    >>> pair = pair_from_fields("Who was late?", ["The uncle", "The niece"], "The uncle.", "Unknown.", pair_id="r1")
    >>> [c.letter for c in pair.answer_choices], pair.question_id, pair.response_b.text
    (['A', 'B'], 'r1', 'Unknown.')
    """
    return Pair(
        pair_id=pair_id,
        question_id=pair_id,
        question_text=question,
        answer_choices=[AnswerChoice(letter=chr(ord("A") + i), text=c) for i, c in enumerate(choices)],
        bias_category=AD_HOC_UNKNOWN,
        response_a=Response(model=AD_HOC_UNKNOWN, text=response_a),
        response_b=Response(model=AD_HOC_UNKNOWN, text=response_b),
        pair_category=AD_HOC_BUCKET,
    )


LONE_CHOICE = "give no choices (free text) or 2 to 5, not one"
"""Why a request's single choice is refused: none (open text) or 2 to 5."""


def no_lone_choice(choices: list[str]) -> list[str]:
    """A request's choices as they are, unless there is one (:data:`LONE_CHOICE`): the validator of
    every request that names choices (`AfterValidator(no_lone_choice)`)."""
    if len(choices) == 1:
        raise ValueError(LONE_CHOICE)
    return choices


REQUEST_MAX_CHOICES = 5
"""Most answer choices a request may have (the service's limit, so its requests are valid rows too)."""
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Choice = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]


class PairRequest(Record):
    """One pair to judge given by its bare fields: the service's request fields, a row of `judge-file`.

    It becomes a :class:`Pair` through :func:`pair_from_fields`, as the flags of `biasjudge judge` do.
    """

    id: NonEmpty | None = None
    """The caller's id of the pair; it becomes `pair_id` (judge-file uses `line-<n>` when absent)."""
    question: str = ""
    """The prompt both responses answer (a context and question, an instruction), as shown to the
    judge; it may be empty."""
    choices: Annotated[list[Choice], AfterValidator(no_lone_choice)] = Field(
        default_factory=list, max_length=REQUEST_MAX_CHOICES
    )
    """The answer choices in order (lettered A, B, C, ...): none (free text) or 2 to 5, none of them
    blank; BBQ's have 3."""
    response_a: NonEmpty
    """Text of the response shown first."""
    response_b: NonEmpty
    """Text of the response shown second."""

    def to_pair(self, default_id: str) -> Pair:
        """The Pair judged for this request; `default_id` is its pair_id when the request has no id."""
        return pair_from_fields(
            self.question, self.choices, self.response_a, self.response_b, pair_id=self.id or default_id
        )


# --------------------------------------------------------------------------- hard negatives


class HardNegative(BaseModel):
    """A plausible-but-wrong judgement of a pair (the reference's synthesis_results.jsonl rows)."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    pair_id: str
    """Pair it was written for."""
    reasoning: str
    """The wrong reasoning (names the responses as Response A / Response B)."""
    verdict: Verdict
    """The wrong verdict it lands on."""
    sonnet_verdict: Verdict | None = None
    """The teacher's verdict the negative was written against."""
    failure_mode: str | None = None
    """How it goes wrong: stereotype_aligned, verbose_hedging, surface_engagement, length_burying."""
