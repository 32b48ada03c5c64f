"""Metrics: the reference's stored numbers reproduced, hand-computed and published values, properties in
scikit-learn's test_common style, input checks, and the extras (intervals, calibration, truncation).

Each metric is pinned by at least one value computed by hand (the arithmetic is in a comment) and
by properties a wrong implementation breaks; the comments say which wrong implementation a test
is there to catch.
"""

from __future__ import annotations

import doctest
import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from biasjudge.errors import BiasJudgeError, MetricInputError
from biasjudge.eval import metrics as M
from biasjudge.io import read_records
from biasjudge.records import EvalLog, Pair, Prediction
from biasjudge.verdict import PARSE_FAIL, mirror

REFERENCE_FILE = Path("eval-results") / "base_gemma4_e4b_verdicts.json"
COMPARED_KEYS = [k for k in M.REFERENCE_KEYS if k != "verbosity_bias"]
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)

labels = st.sampled_from(["A", "B", "TIE"])
parsed = st.sampled_from(["A", "B", "TIE", PARSE_FAIL])
RENAME = {"A": "B", "B": "TIE", "TIE": "A"}  # a permutation of the label names


@st.composite
def rated(draw: st.DrawFn, min_size: int = 1, max_size: int = 60) -> tuple[list[str], list[str]]:
    n = draw(st.integers(min_size, max_size))
    return draw(st.lists(labels, min_size=n, max_size=n)), draw(st.lists(labels, min_size=n, max_size=n))


def same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN (undefined on both sides is agreement)."""
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


# --------------------------------------------------------------------------- the reference


@pytest.fixture(scope="module")
def reference(jfs: Path) -> tuple[dict, list[Pair]]:
    stored = json.loads((jfs / REFERENCE_FILE).read_text())
    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records
    return stored, holdout


def test_reproduces_reference_metrics_to_4_decimals(reference: tuple[dict, list[Pair]]) -> None:
    """All ten tokenizer-free keys match the stored metrics. verbosity_bias needs the Gemma
    tokenizer (whitespace words give 13.4 against the stored 17.6): see the next test."""
    stored, holdout = reference
    log = EvalLog.model_validate(stored)
    ours = M.metrics_by_checkpoint(log, holdout)
    assert list(ours) == list(stored["metrics"]) == ["Base Gemma 4 E4B"]
    for name, values in ours.items():
        for key in COMPARED_KEYS:
            assert values[key] is not None, key
            assert round(values[key], 4) == round(stored["metrics"][name][key], 4), key
        assert list(values)[: len(M.REFERENCE_KEYS)] == list(M.REFERENCE_KEYS)


def test_verbosity_with_the_embedded_gemma_tokenizer_reproduces_the_reference(
    reference: tuple[dict, list[Pair]], gguf_model: Path
) -> None:
    """The embedded Gemma 3 270M's tokenizer counts the reference's responses as its Gemma 4 one did."""
    from biasjudge.judge.registry import make_judge

    stored, holdout = reference
    judge = make_judge("llamacpp:embedded")
    try:
        value = M.checkpoint_verbosity(
            holdout,
            EvalLog.model_validate(stored).detailed,
            checkpoint="Base Gemma 4 E4B",
            token_counter=judge.count_tokens,
        )
    finally:
        judge.close()
    assert value is not None
    assert round(value, 4) == round(stored["metrics"]["Base Gemma 4 E4B"]["verbosity_bias"], 4)


def test_reference_extras_are_sane(reference: tuple[dict, list[Pair]]) -> None:
    stored, holdout = reference
    values = M.compute_metrics(holdout, EvalLog.model_validate(stored).detailed, checkpoint="Base Gemma 4 E4B")
    for key in M.KAPPA_KEYS:
        assert values[f"{key}_ci_low"] <= values[key] <= values[f"{key}_ci_high"], key
    assert values["n_in_dist"] == 240 and values["n_ood_religion"] == 60 and values["n_predictions"] == 2100
    assert values["kappa_category_religion"] == pytest.approx(values["kappa_ood_religion"])
    assert values["brier_score"] is None and values["ece"] is None  # the reference stored no probabilities
    matrices = M.confusion_by_slice(holdout, EvalLog.model_validate(stored).detailed, checkpoint="Base Gemma 4 E4B")
    assert sum(map(sum, matrices["in_dist"])) == 240 and sum(map(sum, matrices["ood_religion"])) == 60


def test_single_consistency_run_is_compared_with_the_original(reference: tuple[dict, list[Pair]]) -> None:
    stored, holdout = reference
    rows = [p for p in EvalLog.model_validate(stored).detailed if p.run_type in ("original", "consistency_3")]
    values = M.compute_metrics(holdout, rows, checkpoint="Base Gemma 4 E4B")
    by_run = {(p.run_type, p.pair_id): p.verdict for p in rows}
    expected = np.mean([by_run["original", p.pair_id] == by_run["consistency_3", p.pair_id] for p in holdout])
    assert values["self_consistency_t03"] == pytest.approx(expected)
    assert values["position_bias_in_dist"] is None  # no swapped run


def test_doctests_run() -> None:
    from biasjudge.eval import protocol, report

    for module in (M, protocol, report):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# --------------------------------------------------------------------------- kappa


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # Wikipedia, "Cohen's kappa", worked example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10,
        # no/no 15. p_o = 35/50 = 0.7; p_e = (25*30 + 25*20) / 50**2 = 0.5; kappa = 0.2 / 0.5.
        ([[20, 5], [10, 15]], 0.4),
        # Wikipedia, same p_o = 0.6, different kappa. (45, 15 / 25, 15): p_e = (60*70 + 40*30) / 100**2
        # = 0.54, kappa = 0.06 / 0.46. (25, 35 / 5, 35): p_e = (60*30 + 40*70) / 100**2 = 0.46,
        # kappa = 0.14 / 0.54.
        ([[45, 15], [25, 15]], 0.06 / 0.46),
        ([[25, 35], [5, 35]], 0.14 / 0.54),
        # Three labels: p_o = 3/4, p_e = (2*1 + 1*2 + 1*1) / 16 = 5/16, kappa = (12 - 5) / (16 - 5).
        ([[1, 1, 0], [0, 1, 0], [0, 0, 1]], 7 / 11),
        # Complete disagreement on balanced marginals: p_o = 0, p_e = 1/2, kappa = -1.
        ([[0, 1], [1, 0]], -1.0),
        # Raters independent of each other: p_o = p_e = 1/2, kappa = 0.
        ([[1, 1], [1, 1]], 0.0),
    ],
)
def test_kappa_hand_computed_and_published_values(counts: list[list[int]], expected: float) -> None:
    """Rows as rater 1, columns as rater 2, expanded to verdict lists (labels A, B[, TIE])."""
    names = ["A", "B", "TIE"][: len(counts)]
    y_true = [names[i] for i, row in enumerate(counts) for j, c in enumerate(row) for _ in range(c)]
    y_pred = [names[j] for i, row in enumerate(counts) for j, c in enumerate(row) for _ in range(c)]
    assert M.cohen_kappa(y_true, y_pred, labels=names) == pytest.approx(expected, abs=1e-12)
    assert M.confusion(y_true, y_pred, labels=names) == counts


def test_kappa_of_a_large_nearly_unanimous_sample_is_defined() -> None:
    """One disagreement each way among 300,000 A/A rows: counts (A,A) n-2, (A,B) 1, (B,A) 1, rows and
    columns (n-1, 1), so kappa = (n(n-2) - (n-1)**2 - 1) / (n**2 - (n-1)**2 - 1) = -2 / (2n - 2).
    Catches an "undefined" test done in floats (isclose(p_e, 1): here 1 - p_e is 6.7e-6)."""
    n = 300_000
    value = M.cohen_kappa(["A"] * (n - 1) + ["B"], ["B"] + ["A"] * (n - 1))
    assert value == pytest.approx(-1 / (n - 1), rel=1e-9)


@PROPERTY
@given(rated())
def test_kappa_is_symmetric(data: tuple[list[str], list[str]]) -> None:
    y_true, y_pred = data
    assert same(M.cohen_kappa(y_true, y_pred), M.cohen_kappa(y_pred, y_true))


@PROPERTY
@given(rated(), st.randoms(use_true_random=False))
def test_kappa_ignores_row_order(data: tuple[list[str], list[str]], rnd: random.Random) -> None:
    y_true, y_pred = data
    order = list(range(len(y_true)))
    rnd.shuffle(order)
    a = M.cohen_kappa(y_true, y_pred)
    assert same(a, M.cohen_kappa([y_true[i] for i in order], [y_pred[i] for i in order]))


@PROPERTY
@given(rated())
def test_kappa_ignores_label_names_and_their_order(data: tuple[list[str], list[str]]) -> None:
    """Kappa is a function of the agreement pattern, not of which label is called what: catches a
    formula that weights labels by position (a weighted kappa, or a diagonal read off the wrong order)."""
    y_true, y_pred = data
    a = M.cohen_kappa(y_true, y_pred)
    assert same(a, M.cohen_kappa(y_true, y_pred, labels=("TIE", "A", "B")))
    assert same(a, M.cohen_kappa([RENAME[v] for v in y_true], [RENAME[v] for v in y_pred]))


@PROPERTY
@given(rated())
def test_kappa_is_one_exactly_when_the_raters_agree(data: tuple[list[str], list[str]]) -> None:
    """In counts kappa = (n * agreements - chance) / (n**2 - chance): exactly 1 when every row agrees,
    below 1 otherwise. Catches a kappa that is observed agreement alone, or not chance-corrected."""
    y_true, y_pred = data
    agree = M.cohen_kappa(y_true, y_true)
    assert agree == 1.0 or (math.isnan(agree) and len(set(y_true)) == 1)  # one label throughout: undefined
    value = M.cohen_kappa(y_true, y_pred)
    assert math.isnan(value) or (-1.0 <= value <= 1.0 and (value == 1.0) == (y_true == y_pred))


@PROPERTY
@given(rated())
def test_kappa_agrees_with_sklearns_cohen_kappa_score(data: tuple[list[str], list[str]]) -> None:
    """scikit-learn's `cohen_kappa_score` is an independent implementation (ours is one formula of
    the confusion matrix, shared with the bootstrap), so this is an oracle, not ours against itself.
    Undefined is NaN in both (scikit-learn warns; before 1.9 its NaN came from 0/0)."""
    y_true, y_pred = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = float(cohen_kappa_score(y_true, y_pred, labels=["A", "B", "TIE"]))
    assert same(M.cohen_kappa(y_true, y_pred), theirs)


# --------------------------------------------------------------------------- the bootstrap


def _sklearn_bootstrap(
    y_true: list[str], y_pred: list[str], *, n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float]:
    """The obvious bootstrap: the same seeded draws, one scikit-learn kappa per resample."""
    rows = np.random.default_rng(seed).integers(0, len(y_true), size=(n_resamples, len(y_true)))
    kappas = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for draw in rows:
            kappas.append(
                float(cohen_kappa_score([y_true[i] for i in draw], [y_pred[i] for i in draw], labels=["A", "B", "TIE"]))
            )
    defined = [k for k in kappas if not math.isnan(k)]
    if not defined:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(rated(min_size=3, max_size=40), st.integers(0, 2**16))
def test_bootstrap_equals_a_resample_by_resample_sklearn_bootstrap(
    data: tuple[list[str], list[str]], seed: int
) -> None:
    """The vectorised bootstrap (one bincount for every resample's confusion matrix) gives exactly
    the interval of the slow loop over the same draws: catches resamples mixed up in the bincount
    offsets or the reshape, and undefined resamples kept in the percentiles."""
    y_true, y_pred = data
    ours = M.kappa_interval(y_true, y_pred, n_resamples=60, seed=seed)
    theirs = _sklearn_bootstrap(y_true, y_pred, n_resamples=60, seed=seed)
    assert same(ours[0], theirs[0]) and same(ours[1], theirs[1])


def test_bootstrap_leaves_undefined_resamples_out() -> None:
    # Two rows that agree, (A, A) and (B, B): a resample is undefined (one label throughout) or
    # has both rows and kappa exactly 1; with undefined ones left out the interval is (1, 1).
    assert M.kappa_interval(["A", "B"], ["A", "B"]) == (1.0, 1.0)
    # One row: every resample is undefined.
    assert all(math.isnan(v) for v in M.kappa_interval(["TIE"], ["TIE"]))


@PROPERTY
@given(rated(min_size=5, max_size=40), st.integers(0, 2**16))
def test_a_higher_confidence_gives_a_wider_interval_around_the_narrower_one(
    data: tuple[list[str], list[str]], seed: int
) -> None:
    """Same seed, same draws: the 95% interval contains the 50% one. Catches tails computed from
    `confidence` instead of `1 - confidence` (the intervals would nest the other way)."""
    y_true, y_pred = data
    low50, high50 = M.kappa_interval(y_true, y_pred, n_resamples=200, confidence=0.5, seed=seed)
    low95, high95 = M.kappa_interval(y_true, y_pred, n_resamples=200, confidence=0.95, seed=seed)
    assert math.isnan(low50) == math.isnan(low95)
    assert math.isnan(low50) or low95 <= low50 <= high50 <= high95


def test_more_pairs_give_a_narrower_interval_around_the_same_kappa() -> None:
    """The same 20-row pattern repeated 16 times: same kappa, standard error about 1/4."""
    rng = random.Random(1)
    y_true = [rng.choice(["A", "B", "TIE"]) for _ in range(20)]
    y_pred = [t if rng.random() < 0.7 else rng.choice(["A", "B", "TIE"]) for t in y_true]
    small = M.kappa_interval(y_true, y_pred)
    large = M.kappa_interval(y_true * 16, y_pred * 16)
    assert M.cohen_kappa(y_true, y_pred) == pytest.approx(M.cohen_kappa(y_true * 16, y_pred * 16))
    assert small[0] < large[0] < M.cohen_kappa(y_true, y_pred) < large[1] < small[1]
    assert (large[1] - large[0]) < 0.4 * (small[1] - small[0])


def test_bootstrap_is_seeded() -> None:
    rng = random.Random(1)
    y_true = [rng.choice("AB") for _ in range(80)]
    y_pred = [t if rng.random() < 0.7 else rng.choice(["A", "B", "TIE"]) for t in y_true]
    assert M.kappa_interval(y_true, y_pred, seed=3) == M.kappa_interval(y_true, y_pred, seed=3)
    assert M.kappa_interval(y_true, y_pred, seed=3) != M.kappa_interval(y_true, y_pred, seed=4)


# --------------------------------------------------------------------------- confusion


@PROPERTY
@given(rated(min_size=0))
def test_confusion_rows_are_the_truth_and_columns_the_prediction(data: tuple[list[str], list[str]]) -> None:
    """Row sums count y_true, column sums count y_pred, the diagonal counts agreements, all in the
    order of `labels`: catches a transposed matrix and labels sorted instead of taken as given."""
    y_true, y_pred = data
    order = ("TIE", "A", "B")
    matrix = M.confusion(y_true, y_pred, labels=order)
    assert [sum(row) for row in matrix] == [y_true.count(label) for label in order]
    assert [sum(column) for column in zip(*matrix, strict=True)] == [y_pred.count(label) for label in order]
    assert sum(matrix[i][i] for i in range(3)) == sum(t == p for t, p in zip(y_true, y_pred, strict=True))


# --------------------------------------------------------------------------- position bias


@PROPERTY
@given(st.lists(parsed, max_size=50))
def test_perfect_mirror_has_no_position_bias(original: list[str]) -> None:
    result = M.position_bias(original, [mirror(v) for v in original])  # type: ignore[arg-type]
    assert result == 0.0 or (math.isnan(result) and all(v == PARSE_FAIL for v in original))


@PROPERTY
@given(st.lists(labels, min_size=1, max_size=50))
def test_a_judge_that_never_changes_its_letter_is_position_biased_on_every_non_tie(original: list[str]) -> None:
    expected = sum(v != "TIE" for v in original) / len(original)
    assert M.position_bias(original, original) == pytest.approx(expected)


def test_position_bias_leaves_parse_failures_out_of_the_denominator() -> None:
    # Compared: (A, B) mirrored, (B, B) not; (A, PF) and (PF, A) left out: 1/2, not 1/4.
    assert M.position_bias(["A", "B", "A", PARSE_FAIL], ["B", "B", PARSE_FAIL, "A"]) == 0.5


@PROPERTY
@given(
    st.integers(0, 40).flatmap(
        lambda n: st.tuples(st.lists(parsed, min_size=n, max_size=n), st.lists(parsed, min_size=n, max_size=n))
    )
)
def test_position_bias_is_symmetric_and_blind_to_which_order_came_first(data: tuple[list[str], list[str]]) -> None:
    """Swapping the roles of the two runs, or mirroring both, describes the same judge."""
    original, swapped = data
    value = M.position_bias(original, swapped)
    assert same(value, M.position_bias(swapped, original))
    assert same(value, M.position_bias([mirror(v) for v in original], [mirror(v) for v in swapped]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- self-consistency


def test_self_consistency_hand_computed() -> None:
    # Pair 2 is missing in run 1 (None): left out. Pairs 1 and 3 agree: 2/2.
    assert M.self_consistency([["A", None, "B"], ["A", "B", "B"]]) == 1.0
    # Three runs: pair 1 (A, A, A) agrees, pair 2 (B, A, B) does not: 1/2.
    assert M.self_consistency([["A", "B"], ["A", "A"], ["A", "B"]]) == 0.5
    # Every pair has a PARSE_FAIL somewhere: nothing compared.
    assert math.isnan(M.self_consistency([["A", PARSE_FAIL], [PARSE_FAIL, "B"]]))


@PROPERTY
@given(st.lists(st.lists(labels, min_size=6, max_size=6), min_size=2, max_size=5), st.randoms(use_true_random=False))
def test_self_consistency_ignores_run_order_and_pair_order_and_a_run_cannot_raise_it(
    runs: list[list[str]], rnd: random.Random
) -> None:
    value = M.self_consistency(runs)
    assert value == M.self_consistency(runs[::-1])
    order = list(range(6))
    rnd.shuffle(order)
    assert value == pytest.approx(M.self_consistency([[run[i] for i in order] for run in runs]))
    # Another run can only break agreements (no pair is left out: no PARSE_FAIL, nothing missing).
    assert M.self_consistency([*runs, runs[0][::-1]]) <= value
    assert M.self_consistency([runs[0], runs[0]]) == 1.0


# --------------------------------------------------------------------------- verbosity


@PROPERTY
@given(
    st.integers(0, 30).flatmap(
        lambda n: st.tuples(
            st.lists(parsed, min_size=n, max_size=n),
            st.lists(st.integers(0, 500), min_size=n, max_size=n),
            st.lists(st.integers(0, 500), min_size=n, max_size=n),
        )
    )
)
def test_verbosity_bias_does_not_depend_on_which_response_was_shown_first(
    data: tuple[list[str], list[int], list[int]],
) -> None:
    """Exchanging the responses (their lengths) and mirroring the verdicts is the same judgement;
    catches a sign error on B verdicts and TIE counted as a choice."""
    verdicts, length_a, length_b = data
    value = M.verbosity_bias(verdicts, length_a, length_b)
    assert same(value, M.verbosity_bias([mirror(v) for v in verdicts], length_b, length_a))  # type: ignore[arg-type]


def test_verbosity_bias_is_negative_for_a_judge_that_picks_the_shorter_response() -> None:
    # A chose 2 over 9 (-7), B chose 3 over 4 (-1), TIE and PARSE_FAIL left out: (-7 - 1) / 2.
    assert M.verbosity_bias(["A", "B", "TIE", PARSE_FAIL], [2, 4, 1, 1], [9, 3, 100, 100]) == -4.0


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: M.cohen_kappa(["A", "B"], ["A"]), "same length: y_true has 2, y_pred has 1"),
        (lambda: M.cohen_kappa(["A", "C"], ["A", "B"]), "y_true[1] is 'C'"),
        (lambda: M.cohen_kappa(["A"], [PARSE_FAIL]), "y_pred[0] is 'PARSE_FAIL'"),
        (lambda: M.cohen_kappa(["A"], ["A"], labels=()), "labels must not be empty"),
        (lambda: M.cohen_kappa(["A"], ["A"], labels=("A", "A")), "labels must be unique"),
        (lambda: M.kappa_interval(["A"], ["A"], n_resamples=0), "n_resamples"),
        (lambda: M.kappa_interval(["A"], ["A"], confidence=1.0), "confidence"),
        (lambda: M.confusion(["A"], ["X"]), "y_pred[0] is 'X'"),
        (lambda: M.position_bias(["A"], ["A", "B"]), "original has 1, swapped has 2"),
        (lambda: M.position_bias(["a"], ["A"]), "original[0] is 'a'"),
        (lambda: M.self_consistency([["A"]]), "at least 2 runs"),
        (lambda: M.self_consistency([["A"], ["A", "B"]]), "same length"),
        (lambda: M.parse_failure_rate(["X"]), "verdicts[0] is 'X'"),
        (lambda: M.verbosity_bias(["A"], [1, 2], [1]), "same length"),
        (lambda: M.brier_score(["A"], [{"A": 1.0, "Z": 0.0}]), "not labels"),
        (lambda: M.brier_score(["A"], [{"A": -1.0}]), "non-negative"),
        (lambda: M.brier_score(["A"], [{"A": 1.0}], labels=("A",)), "at least 2 labels"),
        (lambda: M.expected_calibration_error(["A"], [{"A": 1.0}], n_bins=0), "n_bins"),
    ],
)
def test_bad_inputs_raise_a_metric_input_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    """A BiasJudgeError (the CLI prints one line) that is also a ValueError (as scikit-learn's are)."""
    with pytest.raises(MetricInputError) as info:
        call()
    assert isinstance(info.value, BiasJudgeError) and isinstance(info.value, ValueError)
    assert message in str(info.value)


def test_nan_only_where_documented() -> None:
    assert math.isnan(M.cohen_kappa([], []))
    assert math.isnan(M.cohen_kappa(["A", "A"], ["A", "A"]))  # undefined: chance agreement is 1
    # p_o = 1/2, p_e = (2 * 1) / 4 = 1/2: kappa 0, defined although y_true has one label.
    assert M.cohen_kappa(["A", "A"], ["A", "B"]) == 0.0
    assert math.isnan(M.position_bias([PARSE_FAIL], ["A"]))
    assert math.isnan(M.parse_failure_rate([]))
    assert math.isnan(M.verbosity_bias(["TIE"], [1], [2]))
    assert math.isnan(M.brier_score([], []))
    assert all(math.isnan(v) for v in M.kappa_interval([], []))


# --------------------------------------------------------------------------- calibration


def test_calibration_numbers() -> None:
    sure = [{"A": 1.0, "B": 0.0, "TIE": 0.0}, {"A": 0.0, "B": 1.0, "TIE": 0.0}]
    assert M.brier_score(["A", "B"], sure) == 0.0
    assert M.brier_score(["B", "A"], sure) == 2.0  # per row (1 - 0)^2 + (0 - 1)^2
    assert M.expected_calibration_error(["A", "B"], sure) == 0.0
    assert M.expected_calibration_error(["B", "A"], sure) == 1.0
    uniform = [{"A": 1.0, "B": 1.0, "TIE": 1.0}]  # renormalised to 1/3 each
    assert M.brier_score(["A"], uniform) == pytest.approx((2 / 3) ** 2 + 2 * (1 / 3) ** 2)


def test_brier_score_follows_the_order_of_labels() -> None:
    """(1 - 0.7)^2 + 0.2^2 + 0.1^2 = 0.14 whatever order `labels` lists them in. scikit-learn reads
    probability columns in sorted label order; without the reordering, labels (TIE, B, A) would
    score A at 0.1: 0.9^2 + 0.2^2 + 0.7^2 = 1.34."""
    probs = [{"A": 0.7, "B": 0.2, "TIE": 0.1}]
    assert M.brier_score(["A"], probs) == pytest.approx(0.14)
    assert M.brier_score(["A"], probs, labels=("TIE", "B", "A")) == pytest.approx(0.14)


def test_brier_score_keeps_the_0_to_2_range_with_two_labels_and_fills_missing_labels() -> None:
    # Two labels, certain and wrong: (0 - 1)^2 + (1 - 0)^2 = 2 (scikit-learn's default halves it).
    assert M.brier_score(["A"], [{"A": 0.0, "B": 1.0}], labels=("A", "B")) == 2.0
    # {A: 2, B: 2} renormalised to (0.5, 0.5, 0 for the missing TIE): 0.5^2 + 0.5^2 + 0 = 0.5.
    assert M.brier_score(["A"], [{"A": 2.0, "B": 2.0}]) == pytest.approx(0.5)


def test_expected_calibration_error_bins_and_ties() -> None:
    rows = [{"A": 0.9, "B": 0.1}, {"A": 0.8, "B": 0.2}]
    # Ten bins (the docstring): 0.5 * |1 - 0.9| + 0.5 * |0 - 0.8| = 0.45. One bin pools them:
    # |accuracy 0.5 - mean top 0.85| = 0.35.
    assert M.expected_calibration_error(["A", "B"], rows) == pytest.approx(0.45)
    assert M.expected_calibration_error(["A", "B"], rows, n_bins=1) == pytest.approx(0.35)
    # A tie for the top probability goes to the first label: right when the truth is A
    # (|1 - 0.4| = 0.6), wrong when it is B (|0 - 0.4| = 0.4).
    tied = [{"A": 0.4, "B": 0.4, "TIE": 0.2}]
    assert M.expected_calibration_error(["A"], tied) == pytest.approx(0.6)
    assert M.expected_calibration_error(["B"], tied) == pytest.approx(0.4)


# --------------------------------------------------------------------------- compute_metrics


def _pair(pair_id: str, human: str | None, *, slice_: str = "in_dist", bucket: str = "clear_bias_vs_clean") -> Pair:
    record = {
        "pair_id": pair_id,
        "question_id": f"q-{pair_id}",
        "question_text": "Who?",
        "answer_choices": [],
        "bias_category": "age",
        "pair_category": bucket,
        "eval_slice": slice_,
        "response_a": {"model": "m", "text": "a b c"},
        "response_b": {"model": "m", "text": "a"},
    }
    if human is not None:
        record["human_verdict"] = human
    return Pair.model_validate(record)


def _pred(pair_id: str, run: str, verdict: str, **extra: object) -> Prediction:
    return Prediction(checkpoint_name="c", pair_id=pair_id, run_type=run, verdict=verdict, **extra)  # type: ignore[arg-type]


def test_compute_metrics_on_a_small_log_by_hand() -> None:
    """Each number is checked against hand arithmetic, so a metric computed on the wrong run, the
    wrong slice or the wrong consistency runs gives a different number."""
    pairs = [
        _pair("p1", "A"),
        _pair("p2", "B"),
        _pair("p3", "TIE"),
        _pair("p4", "A"),
        _pair("p5", "B", slice_="ood_religion"),
    ]
    runs = {  # verdicts of p1..p5 per run
        "original": ["A", "B", "TIE", "B", "A"],
        "swapped": ["B", "TIE", "TIE", "A", "A"],
        "consistency_1": ["B", "B", "TIE", "B", "A"],
        "consistency_2": ["B", "A", "TIE", "B", "A"],
    }
    preds = [_pred(f"p{i + 1}", run, v) for run, verdicts in runs.items() for i, v in enumerate(verdicts)]
    m = M.compute_metrics(pairs, preds, checkpoint="c", n_resamples=50)
    # in_dist, original run: human (A, B, TIE, A) against (A, B, TIE, B): 7/11 (see the kappa table).
    # The swapped run, as seen or mirrored back, would give p_o = 2/4, p_e = 5/16: (8 - 5) / 11.
    assert m["kappa_in_dist"] == pytest.approx(7 / 11)
    # ood: one pair, human B, judge A: p_o = 0, p_e = 0 (rows B, columns A), kappa 0.
    assert m["kappa_ood_religion"] == 0.0
    # Category "age" spans both slices: human (A, B, TIE, A, B) vs (A, B, TIE, B, A): p_o = 3/5,
    # p_e = (2*2 + 2*2 + 1*1) / 25 = 9/25, kappa = (15 - 9) / (25 - 9) = 0.375.
    assert m["kappa_category_age"] == pytest.approx(0.375)
    assert m["kappa_clear"] == pytest.approx(7 / 11) and m["kappa_tie"] is None
    # Swapped verdicts against the mirror of the original: in_dist p2 (B, then TIE instead of A) is
    # the one flip of 4; ood p5 (A then A) is 1 of 1.
    assert m["position_bias_in_dist"] == 0.25 and m["position_bias_ood"] == 1.0
    # Two consistency runs are compared with each other only: p2 (B, A) disagrees, 4/5. Adding the
    # original would also break p1 (A against B, B): 3/5.
    assert m["self_consistency_t03"] == pytest.approx(0.8)
    # Original verdicts vs "a b c" (3 words) and "a" (1): A +2, B -2, TIE out, B -2, A +2: 0.
    assert m["verbosity_bias"] == 0.0
    assert (m["n_pairs"], m["n_in_dist"], m["n_ood_religion"], m["n_predictions"]) == (5.0, 4.0, 1.0, 20.0)
    assert m["parse_failure_rate"] == 0.0 and m["brier_score"] is None


def test_truncated_generations_are_counted_and_scored_as_the_judge_settled_them() -> None:
    # The judge's one truncation rule has already run: a generation cut after its verdict closed
    # keeps it (p2), one cut before is PARSE_FAIL (p3). Metrics count both, and re-decide neither.
    pairs = [_pair("p1", "A"), _pair("p2", "B"), _pair("p3", "B")]
    preds = [
        _pred("p1", "original", "A"),
        _pred("p2", "original", "B", finish_reason="length"),
        _pred("p3", "original", "PARSE_FAIL", finish_reason="length"),
    ]
    values = M.compute_metrics(pairs, preds, checkpoint="c")
    assert values["n_truncated"] == 2 and values["n_parse_fail"] == 1
    assert values["parse_failure_rate"] == pytest.approx(1 / 3)
    assert values["kappa_in_dist"] == 1.0  # p1 and p2 both agree; p3 is left out as a parse failure


def test_floored_verdicts_are_counted() -> None:
    pairs = [_pair("p1", "A"), _pair("p2", "B")]
    preds = [_pred("p1", "original", "A"), _pred("p2", "original", "B")]
    preds[1] = preds[1].model_copy(update={"floored_choices": ["TIE"]})
    assert M.compute_metrics(pairs, preds, checkpoint="c")["n_floored"] == 1


def test_token_counter_is_pluggable_and_verbosity_signed() -> None:
    pairs = [_pair("p1", "A"), _pair("p2", "B")]
    preds = [_pred("p1", "original", "A"), _pred("p2", "original", "B")]
    assert M.compute_metrics(pairs, preds, checkpoint="c")["verbosity_bias"] == 0.0  # +2 and -2 words
    chars = M.compute_metrics(pairs, [_pred("p1", "original", "A")], checkpoint="c", token_counter=len)
    assert chars["verbosity_bias"] == 4.0  # "a b c" minus "a"


def test_calibration_from_probs_in_compute_metrics() -> None:
    pairs = [_pair("p1", "A"), _pair("p2", "B")]
    probs = {"A": 0.8, "B": 0.1, "TIE": 0.1}
    preds = [_pred("p1", "original", "A", probs=probs), _pred("p2", "original", "A", probs=probs)]
    values = M.compute_metrics(pairs, preds, checkpoint="c")
    # Truth A: 0.2^2 + 0.1^2 + 0.1^2 = 0.06; truth B: 0.8^2 + 0.9^2 + 0.1^2 = 1.46; mean 0.76.
    assert values["brier_score"] == pytest.approx(0.76)
    # One bin (top 0.8), accuracy 1/2: |0.5 - 0.8|.
    assert values["ece"] == pytest.approx(0.3)


def test_compute_metrics_refuses_duplicates_and_unknown_checkpoints() -> None:
    pairs = [_pair("p1", "A")]
    with pytest.raises(MetricInputError, match="two predictions for pair 'p1', run 'original'"):
        M.compute_metrics(pairs, [_pred("p1", "original", "A"), _pred("p1", "original", "B")], checkpoint="c")
    with pytest.raises(MetricInputError, match="no predictions for checkpoint 'x'"):
        M.compute_metrics(pairs, [_pred("p1", "original", "A")], checkpoint="x")
    with pytest.raises(MetricInputError, match="twice"):
        M.compute_metrics(pairs * 2, [_pred("p1", "original", "A")], checkpoint="c")


@pytest.mark.parametrize(
    "holdout",
    [
        pytest.param([], id="empty holdout"),
        pytest.param([_pair("other", "A")], id="predictions of other pairs (a wrong holdout file)"),
    ],
)
def test_nothing_to_score_is_an_error_not_a_table_of_dashes(holdout: list[Pair]) -> None:
    preds = [_pred("p1", "original", "A"), _pred("p2", "original", "B")]
    for call in (
        lambda: M.compute_metrics(holdout, preds, checkpoint="c"),
        lambda: M.confusion_by_slice(holdout, preds, checkpoint="c"),
        lambda: M.metrics_by_checkpoint(EvalLog(run_id="r", detailed=preds), holdout),
    ):
        with pytest.raises(MetricInputError, match="nothing to score for checkpoint 'c'"):
            call()


def test_an_unlabelled_holdout_is_scored_by_compute_metrics_but_refused_against_a_log() -> None:
    """run_eval scores unlabelled pairs too (the recipe's validation split has no human label): the
    label-free metrics stand, the kappas are None. Read back from a log against "the labelled
    holdout", or as confusion counts against human labels, it is nothing to score."""
    holdout = [_pair("p1", None), _pair("p2", None)]
    preds = [_pred("p1", "original", "A"), _pred("p2", "original", "B")]
    preds += [_pred("p1", "swapped", "B"), _pred("p2", "swapped", "A")]
    values = M.compute_metrics(holdout, preds, checkpoint="c")
    assert values["kappa_in_dist"] is None and values["n_in_dist"] == 0.0
    assert values["position_bias_in_dist"] == 0.0 and values["n_pairs"] == 2.0
    for call in (
        lambda: M.confusion_by_slice(holdout, preds, checkpoint="c"),
        lambda: M.metrics_by_checkpoint(EvalLog(run_id="r", detailed=preds), holdout),
    ):
        with pytest.raises(MetricInputError, match="no holdout pair has both a human label and a prediction"):
            call()


def test_a_labelled_pair_with_only_a_parse_failure_is_still_scored() -> None:
    """A judge that never parses has a parse-failure rate of 1: a result, not "nothing to score"."""
    values = M.compute_metrics([_pair("p1", "A")], [_pred("p1", "original", PARSE_FAIL)], checkpoint="c")
    assert values["parse_failure_rate"] == 1.0 and values["kappa_in_dist"] is None


def test_a_log_without_predictions() -> None:
    with pytest.raises(MetricInputError, match="the log 'r' has no predictions to score"):
        M.metrics_by_checkpoint(EvalLog(run_id="r"), [_pair("p1", "A")])
    # Stored metrics only (a published table): nothing to recompute; the report keeps them.
    assert M.metrics_by_checkpoint(EvalLog(run_id="r", metrics={"m": {"kappa_in_dist": 0.5}}), [_pair("p1", "A")]) == {}


def test_empty_slices_are_none_not_nan() -> None:
    values = M.compute_metrics([_pair("p1", "A")], [_pred("p1", "original", "A")], checkpoint="c")
    assert values["kappa_ood_religion"] is None and values["position_bias_ood"] is None
    assert values["self_consistency_t03"] is None
    json.dumps(values, allow_nan=False)


# --------------------------------------------------------------------------- judge vs judge


def _two_judges(reference: tuple[dict, list[Pair]]) -> tuple[list[Pair], list[Prediction]]:
    """The reference's base-model verdicts as judge `base`, and `flipper`: the same verdicts with
    every third original-order A turned into B."""
    stored, holdout = reference
    base = [Prediction.model_validate(p) for p in stored["detailed"]]
    flipper = [
        p.model_copy(
            update={
                "checkpoint_name": "flipper",
                "verdict": "B" if p.run_type == "original" and p.verdict == "A" and i % 3 == 0 else p.verdict,
            }
        )
        for i, p in enumerate(base)
    ]
    return holdout, [*base, *flipper]


def test_the_human_cell_of_the_agreement_is_the_judges_kappa(reference: tuple[dict, list[Pair]]) -> None:
    holdout, predictions = _two_judges(reference)
    [name] = {p["checkpoint_name"] for p in reference[0]["detailed"]}
    metrics = M.compute_metrics(holdout, predictions, checkpoint=name)
    found = {(a.first, a.second, a.slice): a for a in M.judge_agreement(holdout, predictions)}
    assert [k[:2] for k in found if k[2] == "all"] == [("human", name), ("human", "flipper"), (name, "flipper")]
    for key, slice_ in (("kappa_in_dist", "in_dist"), ("kappa_ood_religion", "ood_religion")):
        cell = found["human", name, slice_]
        assert cell.kappa == pytest.approx(metrics[key])
        assert (cell.ci_low, cell.ci_high) == pytest.approx((metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"]))
        assert cell.n == metrics[f"n_{slice_}"]


def test_judge_agreement_counts_what_differs(reference: tuple[dict, list[Pair]]) -> None:
    holdout, predictions = _two_judges(reference)
    [name] = {p["checkpoint_name"] for p in reference[0]["detailed"]}
    cell = next(
        a for a in M.judge_agreement(holdout, predictions) if (a.first, a.second, a.slice) == (name, "flipper", "all")
    )
    originals = [p for p in predictions if p.run_type == "original"]
    base = {p.pair_id: p.verdict for p in originals if p.checkpoint_name == name}
    other = {p.pair_id: p.verdict for p in originals if p.checkpoint_name == "flipper"}
    changed = sum(base[k] != other[k] for k in base)
    assert changed > 10
    assert cell.n == sum(base[k] != PARSE_FAIL for k in base)
    assert cell.agreement == pytest.approx(1 - changed / cell.n)
    assert cell.confusion[0][1] == changed and sum(map(sum, cell.confusion)) == cell.n  # A -> B only
    assert cell.kappa is not None and 0 < cell.kappa < 1
    # Agreement with itself is perfect.
    [same_cell] = [
        a for a in M.judge_agreement(holdout, predictions, judges=[name, name], with_humans=False) if a.slice == "all"
    ]
    assert (same_cell.kappa, same_cell.agreement) == (1.0, 1.0)


def test_judge_agreement_refuses_an_unknown_judge_or_a_single_one() -> None:
    pair = Pair.model_validate(
        {
            "pair_id": "p", "question_id": "q", "question_text": "Who?", "answer_choices": [], "bias_category": "age",
            "pair_category": "clear_bias_vs_clean", "eval_slice": "in_dist",
            "response_a": {"model": "m", "text": "x"}, "response_b": {"model": "m", "text": "y"},
        }
    )  # fmt: skip
    preds = [Prediction(checkpoint_name="c", pair_id="p", run_type="original", verdict="A")]
    with pytest.raises(MetricInputError, match="no predictions of judge"):
        M.judge_agreement([pair], preds, judges=["c", "nobody"])
    with pytest.raises(MetricInputError, match="needs two judges"):
        M.judge_agreement([pair], preds)  # no human labels either


def test_swap_consistency_is_one_minus_position_bias(reference: tuple[dict, list[Pair]]) -> None:
    stored, holdout = reference
    [name] = {p["checkpoint_name"] for p in stored["detailed"]}
    metrics = M.compute_metrics(holdout, [Prediction.model_validate(p) for p in stored["detailed"]], checkpoint=name)
    for key in ("in_dist", "ood"):
        assert metrics[f"swap_consistency_{key}"] == pytest.approx(1 - metrics[f"position_bias_{key}"])
        assert 0 < metrics[f"swap_consistency_{key}"] < 1
