"""How far labellers agree: Cohen's kappa between label sets, and a flip report with a gate.

A *label set* is whatever a labeller wrote, read from any of the files this project writes or
reads (the format is told from the first record):

* flat label records, one `{pair_id, verdict, confidence?, pair_category?}` per line: a teacher's
  dry run (the reference's `dryrun_sonnet.jsonl` / `dryrun_opus.jsonl`), the raw output of
  `biasjudge data label --labels teacher` (`<out>_teacher.jsonl`), the human tool's labels file;
* pair files, whose pairs carry labels: `data label`'s output (`labelled.jsonl`), the human holdout
  (`eval_set_unlabeled.jsonl`, whose `human_verdict` is a human label). A pair gives the latest
  label of the asked source (default: its latest label of any source); a pair without one is
  counted as unlabelled, not guessed.

:func:`agreement_report` scores every two label sets on the pairs both labelled: n, raw agreement,
Cohen's kappa over A/B/TIE (the project's one kappa, :func:`biasjudge.verdict.cohen_kappa`, over
the fixed label set so a group missing a class still scores comparably), the confusion of
verdicts, and the same per pair category (or BBQ category, or eval slice). Two sets with no pair
in common are reported with n = 0 and kappa None, never left out.

:func:`flip_report` compares two *versions* of one labelling (a rerun of a teacher, a new prompt,
a human's second pass) the way the reference's `scripts/compare_dryruns.py` does: identical,
verdict flipped, confidence shifted, which pairs flipped from what to what, per category; and
:func:`flip_gate` decides pass / regression / invalid from thresholds (`biasjudge data flips`
exits 0 / 1 / 2 on them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from biasjudge.errors import ConfigError, DataError
from biasjudge.io import ReadResult, iter_text_lines, parse_json_line, read_records, write_json
from biasjudge.records import LabelSource, PairCategory, Verdict
from biasjudge.verdict import VERDICTS, cohen_kappa, confusion

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


# --------------------------------------------------------------------------- kappa


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


class AgreementCell(BaseModel):
    """Agreement of two label sets on one group of their shared pairs."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    group: str
    """`all`, or the group's value (a pair category, ...)."""
    n: int
    """Pairs both sets labelled, in this group."""
    n_agree: int
    """Of those, pairs with the same verdict."""
    agreement: float | None
    """n_agree / n; None when n = 0."""
    kappa: float | None
    """Cohen's kappa over A/B/TIE; None when undefined (n = 0, or one class only on both sides)."""


class PairwiseAgreement(BaseModel):
    """Agreement of two label sets on the pairs both labelled."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    a: str
    """Name of the first set."""
    b: str
    """Name of the second set."""
    n_a: int
    """Labels in the first set."""
    n_b: int
    """Labels in the second set."""
    n_shared: int
    """Pairs labelled by both; every figure below is over these."""
    overall: AgreementCell
    """All shared pairs."""
    groups: list[AgreementCell] = Field(default_factory=list)
    """Per group (sorted by name)."""
    confusion: dict[str, dict[str, int]] = Field(default_factory=dict)
    """a's verdict -> b's verdict -> pairs."""
    confidence_agreement: dict[str, AgreementCell] = Field(default_factory=dict)
    """By the lower of the two confidences ("3", "4", "5", "none"): do confident labels agree more?"""


class LabelSetSummary(BaseModel):
    """What one label set holds."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    name: str
    """Name in the report."""
    path: str
    """The file read."""
    format: LabelFormat
    """`labels` or `pairs`."""
    source: LabelSource | None
    """Label source read from a pair file (None: latest label, or a flat file)."""
    n: int
    """Labels."""
    n_unlabelled: int
    """Pairs of a pair file without a label of the asked source."""
    verdicts: dict[str, int]
    """Labels per verdict."""
    confidence: dict[str, int]
    """Labels per confidence ("None": none given)."""


class AgreementReport(BaseModel):
    """Every two label sets' agreement, and what each set holds."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    by: GroupBy
    """What `groups` are split by."""
    sets: list[LabelSetSummary]
    """Each label set, in the order given."""
    pairwise: list[PairwiseAgreement]
    """Every two sets: (0, 1), (0, 2), ..., (1, 2), ..."""

    def get(self, a: str, b: str) -> PairwiseAgreement:
        """The comparison of `a` and `b` (in either order)."""
        for cmp in self.pairwise:
            if (cmp.a, cmp.b) in ((a, b), (b, a)):
                return cmp
        raise ConfigError(f"no comparison of {a!r} and {b!r}; sets: {[s.name for s in self.sets]}")


def _group_of(pair_id: str, by: GroupBy, sets: Sequence[LabelSet], groups: Mapping[str, str] | None) -> str:
    if groups is not None and pair_id in groups:
        return groups[pair_id]
    for label_set in sets:
        entry = label_set.labels.get(pair_id)
        if entry is not None and (value := entry.group(by)) is not None:
            return value
    return GROUP_UNKNOWN


def _cell(group: str, a: Sequence[str], b: Sequence[str]) -> AgreementCell:
    n_agree = sum(x == y for x, y in zip(a, b, strict=True))
    return AgreementCell(
        group=group, n=len(a), n_agree=n_agree, agreement=n_agree / len(a) if a else None, kappa=kappa(a, b)
    )


def compare_two(
    a: LabelSet,
    b: LabelSet,
    *,
    by: GroupBy = "pair_category",
    groups: Mapping[str, str] | None = None,
    context: Sequence[LabelSet] = (),
) -> PairwiseAgreement:
    """Agreement of `a` and `b` on the pairs both labelled, overall and per group.

    A pair's group comes from `groups` (pair_id -> value) where given, else from the first of
    `a`, `b`, `context` that names it, else `unknown`.
    """
    shared = sorted(set(a.labels) & set(b.labels))
    lookup = [a, b, *context]
    va = [a.labels[p].verdict for p in shared]
    vb = [b.labels[p].verdict for p in shared]
    by_group: dict[str, tuple[list[str], list[str]]] = {}
    by_conf: dict[str, tuple[list[str], list[str]]] = {}
    for pid, x, y in zip(shared, va, vb, strict=True):
        if by != "none":
            ga, gb = by_group.setdefault(_group_of(pid, by, lookup, groups), ([], []))
            ga.append(x)
            gb.append(y)
        ca, cb = a.labels[pid].confidence, b.labels[pid].confidence
        key = "none" if ca is None or cb is None else str(min(ca, cb))
        fa, fb = by_conf.setdefault(key, ([], []))
        fa.append(x)
        fb.append(y)
    return PairwiseAgreement(
        a=a.name,
        b=b.name,
        n_a=len(a),
        n_b=len(b),
        n_shared=len(shared),
        overall=_cell("all", va, vb),
        groups=[_cell(g, *by_group[g]) for g in sorted(by_group)],
        confusion={
            x: dict(zip(VERDICTS, row, strict=True)) for x, row in zip(VERDICTS, confusion(va, vb), strict=True)
        },
        confidence_agreement={k: _cell(k, *by_conf[k]) for k in sorted(by_conf)},
    )


def _summary(label_set: LabelSet) -> LabelSetSummary:
    entries = label_set.labels.values()
    return LabelSetSummary(
        name=label_set.name,
        path=str(label_set.path),
        format=label_set.format,
        source=label_set.source,
        n=len(label_set),
        n_unlabelled=label_set.n_unlabelled,
        verdicts={v: sum(e.verdict == v for e in entries) for v in VERDICTS},
        confidence=dict(sorted(Counter(str(e.confidence) for e in entries).items())),
    )


def agreement_report(
    sets: Sequence[LabelSet], *, by: GroupBy = "pair_category", groups: Mapping[str, str] | None = None
) -> AgreementReport:
    """Every two of `sets` compared (in the order given: (0,1), (0,2), ..., (1,2), ...).

    Raises:
        ConfigError: fewer than two sets, or two with the same name.
    """
    if len(sets) < 2:
        raise ConfigError(f"agreement needs at least two label sets, got {len(sets)}")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ConfigError(f"label sets need distinct names (give NAME=PATH), got {names}")
    pairwise = [
        compare_two(sets[i], sets[j], by=by, groups=groups, context=sets)
        for i in range(len(sets))
        for j in range(i + 1, len(sets))
    ]
    return AgreementReport(by=by, sets=[_summary(s) for s in sets], pairwise=pairwise)


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


# --------------------------------------------------------------------------- flips


class Flip(BaseModel):
    """A pair whose verdict (or only confidence) changed between two versions."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    pair_id: str
    """The pair."""
    group: str
    """The pair's group (pair category by default)."""
    old_verdict: Verdict
    """Verdict in the old version."""
    new_verdict: Verdict
    """Verdict in the new version."""
    old_confidence: int | None
    """Confidence in the old version."""
    new_confidence: int | None
    """Confidence in the new version."""


class GroupFlips(BaseModel):
    """Flips in one group."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    n: int
    """Shared pairs in the group."""
    flipped: int
    """Of those, pairs whose verdict changed."""
    flip_rate: float | None
    """flipped / n; None when n = 0."""


class Gate(BaseModel):
    """The decision on a flip report."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    decision: Literal["pass", "regression", "invalid"]
    """pass (exit 0), regression (exit 1: a threshold is crossed), invalid (exit 2: too little to compare)."""
    reasons: list[str]
    """One line per check, passed or failed."""
    thresholds: dict[str, float | int | None]
    """The thresholds applied."""

    @property
    def exit_code(self) -> int:
        """0 pass, 1 regression, 2 invalid: the exit code of `biasjudge data flips`."""
        return {"pass": 0, "regression": 1, "invalid": 2}[self.decision]


class FlipReport(BaseModel):
    """Two versions of one labelling compared pair by pair (shape of the reference's comparison JSON, plus groups)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    old: str
    """Name of the old version."""
    new: str
    """Name of the new version."""
    old_path: str
    """File of the old version."""
    new_path: str
    """File of the new version."""
    by: GroupBy
    """What `by_group` is split by."""
    n_old: int
    """Labels in the old version."""
    n_new: int
    """Labels in the new version."""
    n_shared: int
    """Pairs labelled in both; the rates are over these."""
    n_only_old: int
    """Pairs labelled in the old version and not in the new one (labels lost)."""
    n_only_new: int
    """Pairs labelled only in the new version."""
    identical: int
    """Same verdict and same confidence."""
    verdict_flipped: int
    confidence_shifted: int
    """Same verdict, another confidence."""
    flip_rate: float | None
    """verdict_flipped / n_shared; None when nothing is shared."""
    kappa: float | None
    """Cohen's kappa of the two versions on the shared pairs."""
    transitions: dict[str, int]
    """`old->new` verdict -> pairs, for the flipped ones (e.g. `B->TIE`)."""
    by_group: dict[str, GroupFlips]
    """Shared pairs and flips per group."""
    flips: list[Flip]
    """Every verdict flip, by pair_id."""
    shifts: list[Flip]
    """Every confidence shift (same verdict)."""
    only_old_ids: list[str]
    """pair_ids labelled only in the old version."""
    only_new_ids: list[str]
    """pair_ids labelled only in the new version."""
    gate: Gate | None = None
    """Set by :func:`flip_gate`."""


def flip_report(
    old: LabelSet,
    new: LabelSet,
    *,
    by: GroupBy = "pair_category",
    groups: Mapping[str, str] | None = None,
) -> FlipReport:
    """Compare two versions of a labelling on their shared pairs (joined by pair_id)."""
    shared = sorted(set(old.labels) & set(new.labels))
    flips: list[Flip] = []
    shifts: list[Flip] = []
    identical = 0
    per_group: dict[str, list[int]] = {}
    for pid in shared:
        a, b = old.labels[pid], new.labels[pid]
        group = _group_of(pid, by, [old, new], groups) if by != "none" else "all"
        counts = per_group.setdefault(group, [0, 0])
        counts[0] += 1
        flip = Flip(
            pair_id=pid,
            group=group,
            old_verdict=a.verdict,
            new_verdict=b.verdict,
            old_confidence=a.confidence,
            new_confidence=b.confidence,
        )
        if a.verdict != b.verdict:
            flips.append(flip)
            counts[1] += 1
        elif a.confidence != b.confidence:
            shifts.append(flip)
        else:
            identical += 1
    transitions = dict(sorted(Counter(f"{f.old_verdict}->{f.new_verdict}" for f in flips).items()))
    return FlipReport(
        old=old.name,
        new=new.name,
        old_path=str(old.path),
        new_path=str(new.path),
        by=by,
        n_old=len(old),
        n_new=len(new),
        n_shared=len(shared),
        n_only_old=len(set(old.labels) - set(new.labels)),
        n_only_new=len(set(new.labels) - set(old.labels)),
        identical=identical,
        verdict_flipped=len(flips),
        confidence_shifted=len(shifts),
        flip_rate=len(flips) / len(shared) if shared else None,
        kappa=kappa([old.labels[p].verdict for p in shared], [new.labels[p].verdict for p in shared]),
        transitions=transitions,
        by_group={
            g: GroupFlips(n=n, flipped=f, flip_rate=f / n if n else None) for g, (n, f) in sorted(per_group.items())
        },
        flips=flips,
        shifts=shifts,
        only_old_ids=sorted(set(old.labels) - set(new.labels)),
        only_new_ids=sorted(set(new.labels) - set(old.labels)),
    )


def flip_gate(
    report: FlipReport,
    *,
    max_flip_rate: float = 0.10,
    max_group_flip_rate: float | None = None,
    min_group_size: int = 5,
    min_shared: int = 1,
    max_lost_rate: float | None = None,
) -> Gate:
    """Pass, regression or invalid for a flip report (also stored as `report.gate`).

    Args:
        max_flip_rate: most verdict flips per shared pair overall (the reference's 0.10).
        max_group_flip_rate: most flips per shared pair within any one group (None: not checked).
        min_group_size: groups with fewer shared pairs are not held to `max_group_flip_rate`
            (one flip in a group of 2 is 50%).
        min_shared: fewer shared pairs than this is `invalid`: too little to vouch for anything.
            The reference passes when nothing is shared; here it is never a pass.
        max_lost_rate: most labels of the old version missing from the new one, per old label
            (None: not checked).

    Raises:
        ConfigError: a rate outside [0, 1] or a negative count.
    """
    for name, rate in (
        ("max_flip_rate", max_flip_rate),
        ("max_group_flip_rate", max_group_flip_rate),
        ("max_lost_rate", max_lost_rate),
    ):
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {rate}")
    if min_shared < 1 or min_group_size < 1:
        raise ConfigError(f"min_shared and min_group_size must be at least 1, got {min_shared}, {min_group_size}")
    thresholds: dict[str, float | int | None] = {
        "max_flip_rate": max_flip_rate,
        "max_group_flip_rate": max_group_flip_rate,
        "min_group_size": min_group_size,
        "min_shared": min_shared,
        "max_lost_rate": max_lost_rate,
    }
    n = report.n_shared
    if n < min_shared:
        gate = Gate(
            decision="invalid",
            reasons=[f"only {n} shared pairs between {report.old} and {report.new} (need at least {min_shared})"],
            thresholds=thresholds,
        )
        report.gate = gate
        return gate
    failed: list[str] = []
    passed: list[str] = []
    rate = report.verdict_flipped / n
    line = f"verdict-flip rate {report.verdict_flipped}/{n} = {rate:.1%} (max {max_flip_rate:.1%})"
    (passed if rate <= max_flip_rate else failed).append(line)
    if max_group_flip_rate is not None:
        for group, g in report.by_group.items():
            if g.n < min_group_size or g.flip_rate is None:
                continue
            line = f"{group}: {g.flipped}/{g.n} = {g.flip_rate:.1%} (max {max_group_flip_rate:.1%})"
            (passed if g.flip_rate <= max_group_flip_rate else failed).append(line)
    if max_lost_rate is not None and report.n_old:
        lost = report.n_only_old / report.n_old
        line = f"labels lost {report.n_only_old}/{report.n_old} = {lost:.1%} (max {max_lost_rate:.1%})"
        (passed if lost <= max_lost_rate else failed).append(line)
    gate = Gate(
        decision="regression" if failed else "pass",
        reasons=[f"FAIL {r}" for r in failed] + [f"ok {r}" for r in passed],
        thresholds=thresholds,
    )
    report.gate = gate
    return gate


def save_report(report: BaseModel, path: str | Path) -> Path:
    """Write a report (agreement or flips) as one JSON document, atomically."""
    write_json(path, report)
    return Path(path)


__all__ = [
    "AgreementCell",
    "AgreementReport",
    "Flip",
    "FlipReport",
    "Gate",
    "GroupBy",
    "LabelEntry",
    "LabelSet",
    "PairwiseAgreement",
    "agreement_report",
    "compare_two",
    "flip_gate",
    "flip_report",
    "groups_from_pairs",
    "kappa",
    "parse_named_path",
    "read_label_set",
    "save_report",
]
