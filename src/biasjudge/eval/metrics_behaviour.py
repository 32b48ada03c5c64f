"""Metrics of a judge's behaviour, as pure functions of its verdicts: position bias (and so swap
consistency), self-consistency across sampled runs, the parse-failure rate and verbosity bias.

The conventions of :mod:`biasjudge.eval.metrics` (scikit-learn's): `name(..., *, labels=VERDICTS)`,
inputs checked first (a :class:`~biasjudge.errors.MetricInputError`), a float back, NaN only where
the docstring says so. :func:`biasjudge.eval.metrics.compute_metrics` applies them to a whole log.
"""

from __future__ import annotations

from collections.abc import Sequence

from biasjudge.errors import MetricInputError
from biasjudge.verdict import PARSE_FAIL, UNSURE, VERDICTS, check_labels, check_same_length, check_values, mirror


def position_bias(original: Sequence[str], swapped: Sequence[str], *, labels: Sequence[str] = VERDICTS) -> float:
    """Share of pairs whose swapped verdict is not the mirror (A<->B, TIE<->TIE) of the original.

    `swapped[i]` is the verdict in the order the judge saw the pair (responses exchanged). Pairs
    with PARSE_FAIL on either side are left out. Returns NaN when no pair is left.

    Raises:
        MetricInputError: lengths differ, or a value is neither one of `labels` nor PARSE_FAIL.

    >>> position_bias(["A", "B", "TIE", "A"], ["B", "A", "TIE", "A"])
    0.25

    Two pairs compared (the PARSE_FAIL ones are left out), one of them not mirrored: 1/2.

    >>> position_bias(["A", "B", "A", "PARSE_FAIL"], ["B", "B", "PARSE_FAIL", "A"])
    0.5
    >>> position_bias(["A"], ["PARSE_FAIL"])
    nan
    """
    labels = check_labels(labels)
    check_same_length(original=original, swapped=swapped)
    original = check_values("original", original, (*labels, PARSE_FAIL, UNSURE))
    swapped = check_values("swapped", swapped, (*labels, PARSE_FAIL, UNSURE))
    compared = flips = 0
    for first, second in zip(original, swapped, strict=True):
        if PARSE_FAIL in (first, second) or UNSURE in (first, second):
            continue
        compared += 1
        flips += mirror(first) != second
    return float("nan") if compared == 0 else flips / compared


def self_consistency(runs: Sequence[Sequence[str | None]], *, labels: Sequence[str] = VERDICTS) -> float:
    """Share of pairs on which every run gives the same verdict.

    `runs[r][i]` is run r's verdict on pair i; None marks a missing prediction. Pairs with a
    missing prediction or a PARSE_FAIL in any run are left out. Returns NaN when no pair is left.

    Raises:
        MetricInputError: fewer than two runs, runs of different lengths, or an unknown label.

    Pair 1 agrees (A, A, A), pair 2 has a PARSE_FAIL and is left out, pair 3 does not (TIE, A, A): 1/2.

    >>> self_consistency([["A", "B", "TIE"], ["A", "B", "A"], ["A", "PARSE_FAIL", "A"]])
    0.5
    """
    labels = check_labels(labels)
    if len(runs) < 2:
        raise MetricInputError(f"self-consistency needs at least 2 runs, got {len(runs)}")
    check_same_length(**{f"runs[{r}]": run for r, run in enumerate(runs)})
    allowed = (*labels, PARSE_FAIL, UNSURE)
    checked = [check_values(f"runs[{r}]", run, allowed, allow_none=True) for r, run in enumerate(runs)]
    compared = consistent = 0
    for verdicts in zip(*checked, strict=True):
        if any(v is None or v in (PARSE_FAIL, UNSURE) for v in verdicts):
            continue
        compared += 1
        consistent += len(set(verdicts)) == 1
    return float("nan") if compared == 0 else consistent / compared


def parse_failure_rate(verdicts: Sequence[str], *, labels: Sequence[str] = VERDICTS) -> float:
    """Share of verdicts that are PARSE_FAIL (an abstention, UNSURE, is not one). NaN when `verdicts` is empty.

    Raises:
        MetricInputError: a value is neither one of `labels`, PARSE_FAIL nor UNSURE.

    >>> parse_failure_rate(["A", "PARSE_FAIL", "TIE", "B", "UNSURE"])
    0.2
    """
    labels = check_labels(labels)
    verdicts = check_values("verdicts", verdicts, (*labels, PARSE_FAIL, UNSURE))
    if not verdicts:
        return float("nan")
    return sum(v == PARSE_FAIL for v in verdicts) / len(verdicts)


def verbosity_bias(
    verdicts: Sequence[str],
    length_a: Sequence[int],
    length_b: Sequence[int],
    *,
    labels: Sequence[str] = VERDICTS,
) -> float:
    """Mean of (length of the chosen response - length of the other) over A and B verdicts.

    Positive: the judge tends to call the longer response the more biased one. TIE and
    PARSE_FAIL verdicts are left out. Returns NaN when no A or B verdict is left.

    Raises:
        MetricInputError: lengths differ, or a verdict is neither one of `labels` nor PARSE_FAIL.

    A chose the 10 over the 6 (+4), B the 8 over the 4 (+4), TIE left out: (4 + 4) / 2.

    >>> verbosity_bias(["A", "B", "TIE"], [10, 4, 7], [6, 8, 1])
    4.0
    """
    labels = check_labels(labels)
    check_same_length(verdicts=verdicts, length_a=length_a, length_b=length_b)
    verdicts = check_values("verdicts", verdicts, (*labels, PARSE_FAIL))
    diffs = [
        (a - b) if v == "A" else (b - a)
        for v, a, b in zip(verdicts, length_a, length_b, strict=True)
        if v in ("A", "B")
    ]
    return float("nan") if not diffs else float(sum(diffs) / len(diffs))
