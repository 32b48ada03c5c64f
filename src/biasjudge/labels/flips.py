"""Flips: two *versions* of one labelling (a rerun of a teacher, a new prompt, a human's second
pass) compared the way the reference's `scripts/compare_dryruns.py` does: identical, verdict
flipped, confidence shifted, which pairs flipped from what to what, per category; and
:func:`flip_gate`, which decides pass / regression / invalid from thresholds (`biasjudge data
flips` exits 0 / 1 / 2 on them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from biasjudge.config import ConfigModel
from biasjudge.errors import ConfigError
from biasjudge.io import validation_message
from biasjudge.labels.label_sets import GroupBy, LabelSet, group_of, kappa
from biasjudge.records import Verdict


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
        group = group_of(pid, by, [old, new], groups) if by != "none" else "all"
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


class GateThresholds(ConfigModel):
    """The thresholds of the flip gate (`biasjudge data flips`)."""

    max_flip_rate: float = Field(default=0.10, ge=0.0, le=1.0)
    """Regression when more shared pairs than this share flip verdict (the reference's 0.10)."""
    max_group_flip_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Regression when any one group flips more than this (default off)."""
    min_group_size: int = Field(default=5, ge=1)
    """Groups smaller than this are not held to max_group_flip_rate (one flip in a group of 2 is 50%)."""
    min_shared: int = Field(default=1, ge=1)
    """Invalid (exit 2) when fewer pairs than this are in both versions: too little to vouch for anything
    (the reference passes when nothing is shared; here it is never a pass)."""
    max_lost_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Regression when more old labels than this share are missing from the new version (default off)."""


def flip_gate(report: FlipReport, **thresholds: float | int | None) -> Gate:
    """Pass, regression or invalid for a flip report (also stored as `report.gate`).

    Args:
        thresholds: fields of :class:`GateThresholds`; the others keep their defaults.

    Raises:
        ConfigError: an unknown threshold, a rate outside [0, 1] or a count below 1.
    """
    try:
        limits = GateThresholds.model_validate(thresholds)
    except ValidationError as exc:
        key, message = validation_message(exc)
        raise ConfigError(f"flip gate: {key}: {message}") from None
    n, need = report.n_shared, limits.min_shared
    if n < need:
        gate = Gate(
            decision="invalid",
            reasons=[f"only {n} shared pairs between {report.old} and {report.new} (need at least {need})"],
            thresholds=limits.model_dump(),
        )
        report.gate = gate
        return gate
    failed: list[str] = []
    passed: list[str] = []
    rate = report.verdict_flipped / n
    line = f"verdict-flip rate {report.verdict_flipped}/{n} = {rate:.1%} (max {limits.max_flip_rate:.1%})"
    (passed if rate <= limits.max_flip_rate else failed).append(line)
    if limits.max_group_flip_rate is not None:
        for group, g in report.by_group.items():
            if g.n < limits.min_group_size or g.flip_rate is None:
                continue
            line = f"{group}: {g.flipped}/{g.n} = {g.flip_rate:.1%} (max {limits.max_group_flip_rate:.1%})"
            (passed if g.flip_rate <= limits.max_group_flip_rate else failed).append(line)
    if limits.max_lost_rate is not None and report.n_old:
        lost = report.n_only_old / report.n_old
        line = f"labels lost {report.n_only_old}/{report.n_old} = {lost:.1%} (max {limits.max_lost_rate:.1%})"
        (passed if lost <= limits.max_lost_rate else failed).append(line)
    gate = Gate(
        decision="regression" if failed else "pass",
        reasons=[f"FAIL {r}" for r in failed] + [f"ok {r}" for r in passed],
        thresholds=limits.model_dump(),
    )
    report.gate = gate
    return gate


__all__ = ["Flip", "FlipReport", "Gate", "GateThresholds", "GroupFlips", "flip_gate", "flip_report"]
