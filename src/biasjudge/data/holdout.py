"""Stage 5: the evaluation holdout, split by question so that it cannot leak into training.

:func:`split_holdout` works on questions, not pairs: every pair of a held-out question is either
in the holdout or set aside, never in the training pool. The out-of-distribution category (default
religion) is held out entirely: its pairs beyond the OOD holdout go to `unused_ood`, never to
training. The holdout is stratified by slice (in_dist, OOD) and by bucket, with the reference's
per-bucket targets as defaults.

:func:`check_leakage` / :func:`assert_no_leakage` verify any training file against a holdout,
at question level by default (a shared question_id is a leak even when the pair differs).
Measured on judge-from-scratch's own files: eval_set_unlabeled.jsonl and pairs_to_label.jsonl share
no pair_id, but 201 of the holdout's question_ids have other pairs in pairs_to_label.jsonl: the
reference split by pair. At `level="pair"` that split passes; at the default question level it
fails, and the error names the questions.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field, model_validator

from biasjudge.config import ConfigModel
from biasjudge.errors import ConfigError, DataError, LeakageError
from biasjudge.io import ReadResult, Reject, iter_text_lines, read_records
from biasjudge.records import PAIR_CATEGORIES, Pair, Response


def ood_slice(category: str) -> str:
    """eval_slice written on the holdout pairs of the held-out category: `ood_<category>`."""
    return f"ood_{category}"


REFERENCE_TARGETS: dict[str, tuple[int, int]] = {
    "clear_bias_vs_clean": (110, 28),
    "subtle_bias_vs_clean": (50, 12),
    "tracked_bias_vs_alternate": (35, 9),
    "both_clean_tie": (25, 6),
    "adversarial": (20, 5),
}
"""judge-from-scratch's holdout: bucket -> (in-dist pairs, OOD pairs), 240 + 60 in all."""


class HoldoutConfig(ConfigModel):
    """Settings of the holdout split (defaults: judge-from-scratch's 240 in-dist + 60 OOD pairs)."""

    ood_category: str = "religion"
    """bias_category held out entirely: its pairs are OOD holdout or unused, never training."""
    in_dist_targets: dict[str, int] = Field(default_factory=lambda: {b: n for b, (n, _) in REFERENCE_TARGETS.items()})
    """Holdout pairs per bucket from the other categories."""
    ood_targets: dict[str, int] = Field(default_factory=lambda: {b: n for b, (_, n) in REFERENCE_TARGETS.items()})
    """Holdout pairs per bucket from the OOD category."""
    seed: int = 42
    """Seed of the question order."""
    strict: bool = False
    """Fail when a bucket's supply is below its target (else take what there is and report it)."""

    @model_validator(mode="after")
    def _check(self) -> HoldoutConfig:
        for name, targets in (("in_dist_targets", self.in_dist_targets), ("ood_targets", self.ood_targets)):
            unknown = set(targets) - set(PAIR_CATEGORIES)
            if unknown:
                raise ValueError(f"{name}: unknown bucket(s) {sorted(unknown)}; known: {list(PAIR_CATEGORIES)}")
            if any(v < 0 for v in targets.values()):
                raise ValueError(f"{name}: targets must be >= 0")
        return self


@dataclass
class Split:
    """Result of :func:`split_holdout`. Every input pair is in exactly one of the four lists."""

    holdout: list[Pair]
    """Evaluation pairs, eval_slice set (in_dist or ood_<category>)."""
    train_pool: list[Pair]
    """Pairs that may be labelled and trained on: no question in common with the holdout."""
    unused_ood: list[Pair]
    """OOD-category pairs not in the holdout: never trained on."""
    unused_in_dist: list[Pair] = field(default_factory=list)
    """Other pairs of held-out in-dist questions (beyond a bucket's target): never trained on."""
    shortfalls: dict[str, int] = field(default_factory=dict)
    """`slice/bucket` -> how many pairs short of the target (only buckets with too little supply)."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Holdout pairs per slice and bucket."""
        names = ["in_dist", *sorted({p.eval_slice for p in self.holdout if p.eval_slice and p.eval_slice != "in_dist"})]
        out: dict[str, dict[str, int]] = {}
        for name in names:
            c = Counter[str](p.pair_category for p in self.holdout if p.eval_slice == name)
            out[name] = {b: c.get(b, 0) for b in PAIR_CATEGORIES}
        return out


def _by_question(pairs: Iterable[Pair]) -> dict[str, list[Pair]]:
    grouped: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        grouped[p.question_id].append(p)
    return {q: sorted(ps, key=lambda p: p.pair_id) for q, ps in sorted(grouped.items())}


def _select(
    grouped: dict[str, list[Pair]], targets: Mapping[str, int], rng: random.Random
) -> tuple[list[Pair], list[Pair], set[str]]:
    """(picked, leftovers of picked questions, picked question ids) meeting `targets` by whole questions.

    Pass 1 takes questions all of whose pairs fit in the remaining need (nothing wasted); pass 2
    takes questions that still help a short bucket, setting their extra pairs aside.
    """
    need = {b: targets.get(b, 0) for b in PAIR_CATEGORIES}
    order = list(grouped)
    rng.shuffle(order)
    picked: list[Pair] = []
    leftover: list[Pair] = []
    taken: set[str] = set()
    for allow_waste in (False, True):
        for qid in order:
            if qid in taken or not any(need.values()):
                continue
            pairs = grouped[qid]
            per_bucket = Counter[str](p.pair_category for p in pairs)
            fits = all(n <= need[b] for b, n in per_bucket.items())
            helps = any(need[b] > 0 for b in per_bucket)
            if not (fits or (allow_waste and helps)):
                continue
            taken.add(qid)
            for p in pairs:
                if need[p.pair_category] > 0:
                    need[p.pair_category] -= 1
                    picked.append(p)
                else:
                    leftover.append(p)
    return picked, leftover, taken


def split_holdout(pairs: Sequence[Pair], config: HoldoutConfig | None = None) -> Split:
    """Split pairs into holdout / train_pool / unused_ood (/ unused_in_dist), by question_id.

    Deterministic for a given input (any order) and seed. Raises ValueError with `strict` when a
    bucket cannot reach its target.
    """
    config = config or HoldoutConfig()
    seen: set[str] = set()
    for p in pairs:
        if p.pair_id in seen:
            raise DataError("pairs", None, "pair_id", f"duplicate pair_id {p.pair_id!r} in the input")
        seen.add(p.pair_id)
    ood = [p for p in pairs if p.bias_category == config.ood_category]
    in_dist = [p for p in pairs if p.bias_category != config.ood_category]
    rng = random.Random(config.seed)

    shortfalls: dict[str, int] = {}
    holdout: list[Pair] = []
    slices = (("in_dist", in_dist, config.in_dist_targets), (ood_slice(config.ood_category), ood, config.ood_targets))
    leftovers: dict[str, list[Pair]] = {}
    held_questions: dict[str, set[str]] = {}
    for name, pool, targets in slices:
        picked, leftover, taken = _select(_by_question(pool), targets, rng)
        got = Counter[str](p.pair_category for p in picked)
        for bucket, target in targets.items():
            if got.get(bucket, 0) < target:
                shortfalls[f"{name}/{bucket}"] = target - got.get(bucket, 0)
        holdout += [p.model_copy(update={"eval_slice": name}) for p in picked]
        leftovers[name] = leftover
        held_questions[name] = taken
    if shortfalls and config.strict:
        detail = ", ".join(f"{k} short by {v}" for k, v in shortfalls.items())
        raise ConfigError(f"holdout targets not met (strict: true): {detail}")

    held = held_questions["in_dist"]
    picked_ids = {p.pair_id for p in holdout}
    train_pool = [p for p in in_dist if p.question_id not in held]
    unused_ood = [p for p in ood if p.pair_id not in picked_ids]
    return Split(
        holdout=holdout,
        train_pool=train_pool,
        unused_ood=unused_ood,
        unused_in_dist=leftovers["in_dist"],
        shortfalls=shortfalls,
    )


class _HasIds(Protocol):
    @property
    def pair_id(self) -> str: ...

    @property
    def question_id(self) -> str: ...


@dataclass
class LeakageReport:
    """What a training set shares with a holdout."""

    n_holdout: int
    """Holdout pairs checked."""
    n_train: int
    """Training items checked."""
    shared_pair_ids: list[str]
    """pair_ids present on both sides (sorted)."""
    shared_question_ids: list[str]
    """question_ids present on both sides (sorted)."""
    n_train_items_leaking: int
    """Training items whose question_id is a holdout question."""

    @property
    def ok(self) -> bool:
        """True when nothing is shared (a shared pair implies a shared question)."""
        return not self.shared_question_ids and not self.shared_pair_ids

    def leaks(self, level: Literal["question", "pair"] = "question") -> list[str]:
        """The offending ids at `level`."""
        return self.shared_question_ids if level == "question" else self.shared_pair_ids


def check_leakage(holdout_pairs: Iterable[_HasIds], train_items: Iterable[_HasIds]) -> LeakageReport:
    """Pair and question overlap between a holdout and training items (Pair, SFTRow, DPORow, ...)."""
    holdout = list(holdout_pairs)
    h_pairs = {p.pair_id for p in holdout}
    h_questions = {p.question_id for p in holdout}
    shared_p: set[str] = set()
    shared_q: set[str] = set()
    n_train = n_leaking = 0
    for item in train_items:
        n_train += 1
        if item.pair_id in h_pairs:
            shared_p.add(item.pair_id)
        if item.question_id in h_questions:
            shared_q.add(item.question_id)
            n_leaking += 1
    return LeakageReport(
        n_holdout=len(holdout),
        n_train=n_train,
        shared_pair_ids=sorted(shared_p),
        shared_question_ids=sorted(shared_q),
        n_train_items_leaking=n_leaking,
    )


def assert_no_leakage(
    holdout_pairs: Iterable[_HasIds],
    train_items: Iterable[_HasIds],
    *,
    holdout_source: str = "holdout",
    train_source: str = "training set",
    level: Literal["question", "pair"] = "question",
    show: int = 10,
) -> LeakageReport:
    """Raise LeakageError naming the files and the shared ids; return the report when clean.

    `level="question"` (default) fails on any shared question_id; `level="pair"` only on shared
    pair_ids (the reference's weaker guarantee).
    """
    report = check_leakage(holdout_pairs, train_items)
    bad = report.leaks(level)
    if bad:
        listed = ", ".join(bad[:show]) + (f" ... (+{len(bad) - show} more)" if len(bad) > show else "")
        extra = f" ({report.n_train_items_leaking} training items affected)" if level == "question" else ""
        raise LeakageError(
            f"{train_source} shares {len(bad)} {level}_id(s) with the holdout {holdout_source}{extra}: {listed}"
        )
    return report


def _with_levels(side: Response, source: Response) -> Response:
    return side.model_copy(update={"suspected_bias_level": source.suspected_bias_level})


def attach_levels(holdout: Iterable[Pair], source_pairs: Iterable[Pair]) -> list[Pair]:
    """Holdout pairs with suspected_bias_level copied from the same pair_id in `source_pairs`.

    Sides are matched by model (the holdout keeps the slots of pairs.jsonl, but matching by model
    is safe either way). A pair with no match, or whose models differ, is returned unchanged:
    count `has_levels` to see how many matched.
    """
    by_id = {p.pair_id: p for p in source_pairs}
    out: list[Pair] = []
    for pair in holdout:
        src = by_id.get(pair.pair_id)
        if src is not None:
            by_model = {src.response_a.model: src.response_a, src.response_b.model: src.response_b}
            a, b = by_model.get(pair.response_a.model), by_model.get(pair.response_b.model)
            if a is not None and b is not None and a is not b:
                pair = pair.model_copy(
                    update={
                        "response_a": _with_levels(pair.response_a, a),
                        "response_b": _with_levels(pair.response_b, b),
                    }
                )
        out.append(pair)
    return out


def has_levels(pair: Pair) -> bool:
    """True when both sides of `pair` carry a suspected_bias_level."""
    return pair.response_a.suspected_bias_level is not None and pair.response_b.suspected_bias_level is not None


_HOLDOUT_FIELDS = {"verdict": "human_verdict", "confidence": "confidence", "notes": "notes"}


def _reference_field(field_name: str | None, raw_has_human_verdict: bool) -> str | None:
    """Name a holdout-label error by the file's own field (human_verdict), not the record's (labels.0.verdict)."""
    if field_name and raw_has_human_verdict and field_name.startswith("labels."):
        return _HOLDOUT_FIELDS.get(field_name.rsplit(".", 1)[-1], field_name)
    return field_name


def load_pairs(path: str | Path, *, skip_invalid: bool = False) -> ReadResult[Pair]:
    """Read a pairs file (pairs.jsonl, pairs_to_label.jsonl, the holdout, ...) into validated Pairs.

    pair_id must be unique. Errors name the file, the line and the field (as the file spells it:
    `human_verdict`, not the record's `labels.0.verdict`). With `skip_invalid`, invalid lines come
    back in `.rejects` (records in = `.records` + `.rejects`).
    """
    try:
        result = read_records(path, Pair, skip_invalid=skip_invalid, unique_key="pair_id")
    except DataError as exc:
        raise DataError(
            exc.path, exc.line, _reference_field(exc.field, _raw_has_verdict(path, exc.line)), exc.message
        ) from None
    result.rejects = [
        Reject(r.line, _reference_field(r.field, '"human_verdict"' in r.raw), r.message, r.raw) for r in result.rejects
    ]
    return result


def _raw_has_verdict(path: str | Path, line: int | None) -> bool:
    if line is None:
        return False
    for number, text, _ in iter_text_lines(path):
        if number == line:
            return '"human_verdict"' in text
    return False
