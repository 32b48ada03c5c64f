"""Stage 5: a question-level holdout split, the leakage check, levels for the holdout, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biasjudge.data.holdout import (
    HoldoutConfig,
    assert_no_leakage,
    attach_levels,
    check_leakage,
    has_levels,
    load_pairs,
    split_holdout,
)
from biasjudge.errors import ConfigError, DataError, LeakageError
from biasjudge.records import ChatMessage, Pair, SFTRow


@pytest.fixture(scope="module")
def pairs(jfs: Path) -> list[Pair]:
    return load_pairs(jfs / "pairs.jsonl").records


@pytest.fixture(scope="module")
def reference_holdout(jfs: Path) -> list[Pair]:
    return load_pairs(jfs / "eval_set_unlabeled.jsonl").records


def test_own_split_meets_every_target_with_no_shared_question(pairs: list[Pair]) -> None:
    config = HoldoutConfig()
    split = split_holdout(pairs, config)
    assert split.counts() == {"in_dist": config.in_dist_targets, "ood_religion": config.ood_targets}
    assert split.shortfalls == {}
    # Measured: 300 holdout, 1,938 to train on, 132 religion pairs unused, no pair wasted.
    assert (len(split.holdout), len(split.train_pool), len(split.unused_ood), len(split.unused_in_dist)) == (
        300, 1938, 132, 0,
    )  # fmt: skip
    report = assert_no_leakage(split.holdout, split.train_pool)
    assert report.ok and report.n_train == 1938
    assert all(p.bias_category != "religion" for p in split.train_pool)
    assert all(p.bias_category == "religion" for p in split.unused_ood)
    ids = [
        p.pair_id for part in (split.holdout, split.train_pool, split.unused_ood, split.unused_in_dist) for p in part
    ]
    assert sorted(ids) == sorted(p.pair_id for p in pairs)  # a partition: nothing lost, nothing twice
    assert {p.eval_slice for p in split.holdout} == {"in_dist", "ood_religion"}
    assert all(p.eval_slice is None for p in split.train_pool)


def test_split_is_deterministic(pairs: list[Pair]) -> None:
    first = split_holdout(pairs)
    again = split_holdout(list(reversed(pairs)))
    assert [p.pair_id for p in again.holdout] == [p.pair_id for p in first.holdout]
    other = split_holdout(pairs, HoldoutConfig(seed=1))
    assert {p.pair_id for p in other.holdout} != {p.pair_id for p in first.holdout}


def test_any_category_can_be_ood(pairs: list[Pair]) -> None:
    split = split_holdout(pairs, HoldoutConfig(ood_category="age"))
    assert not any(p.bias_category == "age" for p in split.train_pool)
    assert {p.bias_category for p in split.holdout if p.eval_slice == "ood_age"} == {"age"}
    assert check_leakage(split.holdout, split.train_pool).ok


def test_short_supply_is_reported_or_refused(pairs: list[Pair]) -> None:
    greedy = {"tracked_bias_vs_alternate": 500}
    split = split_holdout(pairs, HoldoutConfig(in_dist_targets=greedy, ood_targets={}))
    assert split.shortfalls == {"in_dist/tracked_bias_vs_alternate": 500 - 197}  # all 197 in-dist tracked pairs
    assert check_leakage(split.holdout, split.train_pool).ok
    with pytest.raises(ConfigError, match="in_dist/tracked_bias_vs_alternate short by 303"):
        split_holdout(pairs, HoldoutConfig(in_dist_targets=greedy, ood_targets={}, strict=True))


def test_reference_split_shares_no_pair_but_shares_questions(jfs: Path, reference_holdout: list[Pair]) -> None:
    """judge-from-scratch split by pair: its training pool repeats 201 of the holdout's questions."""
    to_label = load_pairs(jfs / "pairs_to_label.jsonl").records
    report = check_leakage(reference_holdout, to_label)
    assert report.shared_pair_ids == []
    assert len(report.shared_question_ids) == 201 and report.n_train_items_leaking == 441
    assert_no_leakage(reference_holdout, to_label, level="pair")  # the reference's own guarantee holds
    with pytest.raises(LeakageError, match=r"pairs_to_label\.jsonl shares 201 question_id"):
        assert_no_leakage(
            reference_holdout, to_label, holdout_source="eval_set_unlabeled.jsonl", train_source="pairs_to_label.jsonl"
        )
    unused = load_pairs(jfs / "pairs_unused_religion.jsonl").records
    assert check_leakage(reference_holdout, unused).shared_pair_ids == []


def test_planted_leak_fails_loudly_naming_it(pairs: list[Pair]) -> None:
    split = split_holdout(pairs)
    victim = split.holdout[17]
    # A different pair of a held-out question, slipped into training, and the same held-out pair.
    sneaky = victim.model_copy(update={"pair_id": "ffffffffffffffff", "eval_slice": None})
    with pytest.raises(LeakageError) as info:
        assert_no_leakage(
            split.holdout, [*split.train_pool, sneaky], holdout_source="eval.jsonl", train_source="train.jsonl"
        )
    message = str(info.value)
    assert victim.question_id in message and "train.jsonl" in message and "eval.jsonl" in message
    with pytest.raises(LeakageError, match=victim.pair_id):
        assert_no_leakage(split.holdout, [*split.train_pool, victim], level="pair")


def test_training_rows_are_checked_too(pairs: list[Pair]) -> None:
    split = split_holdout(pairs)
    victim = split.holdout[0]
    row = SFTRow(
        prompt=[ChatMessage(role="user", content="x")], completion="<reasoning>r</reasoning><verdict>A</verdict>",
        pair_id="0000", question_id=victim.question_id, swap=False, verdict="A",
        label_source="answer_key", reasoning_source="template",
    )  # fmt: skip
    report = check_leakage(split.holdout, [row])
    assert report.shared_question_ids == [victim.question_id] and not report.ok


def test_levels_attach_to_all_300_holdout_pairs(reference_holdout: list[Pair], pairs: list[Pair]) -> None:
    assert not any(has_levels(p) for p in reference_holdout)
    with_levels = attach_levels(reference_holdout, pairs)
    assert sum(has_levels(p) for p in with_levels) == 300
    assert [p.human_verdict for p in with_levels] == [p.human_verdict for p in reference_holdout]
    source = {p.pair_id: p for p in pairs}
    for p in with_levels:
        assert p.response_a.suspected_bias_level == source[p.pair_id].response_a.suspected_bias_level
    assert sum(has_levels(p) for p in attach_levels(reference_holdout, pairs[:100])) < 300


def _holdout_lines(jfs: Path, n: int) -> list[dict]:
    with (jfs / "eval_set_unlabeled.jsonl").open() as handle:
        return [json.loads(next(handle)) for _ in range(n)]


def test_bad_input_names_file_line_and_field(tmp_path: Path, jfs: Path) -> None:
    rows = _holdout_lines(jfs, 6)
    missing = dict(rows[2])
    del missing["question_text"]
    unknown_verdict = dict(rows[3], human_verdict="MAYBE")
    duplicate = dict(rows[4], pair_id=rows[0]["pair_id"])
    lines = [
        json.dumps(rows[0]),
        '{"pair_id": "broken", "question_id": ',  # broken JSON
        json.dumps(missing),
        json.dumps(unknown_verdict),
        json.dumps(duplicate),
        json.dumps(rows[5]),
    ]
    path = tmp_path / "holdout.jsonl"
    path.write_text("\n".join(lines) + "\n")

    expected = {2: None, 3: "question_text", 4: "human_verdict", 5: "pair_id"}
    for line, field in expected.items():
        trimmed = tmp_path / f"upto{line}.jsonl"
        kept = [lines[0], *lines[line - 1 : line]] if line > 1 else lines[:1]
        trimmed.write_text("\n".join(kept) + "\n")
        with pytest.raises(DataError) as info:
            load_pairs(trimmed)
        assert (info.value.path, info.value.line, info.value.field) == (str(trimmed), 2, field)
        assert str(trimmed) in str(info.value)

    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert info.value.line == 2 and "broken JSON" in str(info.value)

    result = load_pairs(path, skip_invalid=True)
    assert len(result.records) == 2 and len(result.rejects) == 4
    assert len(result.records) + len(result.rejects) == len(lines)  # in = out + rejects
    assert [(r.line, r.field) for r in result.rejects] == [
        (2, None), (3, "question_text"), (4, "human_verdict"), (5, "pair_id"),
    ]  # fmt: skip
    assert "duplicate" in result.rejects[3].message and "'A', 'B' or 'TIE'" in result.rejects[2].message
