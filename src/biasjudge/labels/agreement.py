"""How far labellers agree: Cohen's kappa between label sets (:mod:`biasjudge.labels.label_sets`).

:func:`agreement_report` scores every two label sets on the pairs both labelled: n, raw agreement,
Cohen's kappa over A/B/TIE (the project's one kappa, :func:`biasjudge.verdict.cohen_kappa`, over
the fixed label set so a group missing a class still scores comparably), the confusion of
verdicts, and the same per pair category (or BBQ category, or eval slice). Two sets with no pair
in common are reported with n = 0 and kappa None, never left out.

Two versions of one labelling are compared pair by pair in :mod:`biasjudge.labels.flips`. The
label sets and the flip report are re-exported here, where `biasjudge data agreement` and `data
flips` import them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from biasjudge.errors import ConfigError
from biasjudge.io import write_json
from biasjudge.labels.flips import Flip, FlipReport, Gate, flip_gate, flip_report
from biasjudge.labels.label_sets import (
    GroupBy,
    LabelEntry,
    LabelFormat,
    LabelSet,
    group_of,
    groups_from_pairs,
    kappa,
    parse_named_path,
    read_label_set,
)
from biasjudge.records import LabelSource
from biasjudge.verdict import VERDICTS, confusion


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
            ga, gb = by_group.setdefault(group_of(pid, by, lookup, groups), ([], []))
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
