"""Stage 1: raw BBQ loading, target_label derivation checked against the sample, stratified sampling."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from biasjudge.data import bbq
from biasjudge.data.sources import BBQ_CATEGORIES, bbq_dir, download_bbq, jfs_dir, load_hub_dataset
from biasjudge.errors import BiasJudgeError, ConfigError, DataError
from biasjudge.records import Question

LOCAL = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]


@pytest.fixture(scope="module")
def raw(shared_data: Path) -> tuple[list[Question], list[str], list[str]]:
    return bbq.load_raw_bbq(bbq_dir(shared_data))


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> list[Question]:
    return bbq.load_sample(jfs_dir(shared_data) / "bbq_sample.jsonl")


def test_eleven_official_categories() -> None:
    assert len(BBQ_CATEGORIES) == 11
    assert bbq.BBQ_CATEGORIES is BBQ_CATEGORIES
    assert {bbq.category_key(c) for c in BBQ_CATEGORIES} >= {"race_x_ses", "race_x_gender", "ses", "age"}


def test_reads_the_local_subset_and_says_what_is_missing(raw: tuple[list[Question], list[str], list[str]]) -> None:
    questions, found, missing = raw
    assert found == LOCAL
    assert missing == ["Gender_identity", "Race_ethnicity", "Race_x_SES", "Race_x_gender", "SES"]
    per_category = Counter(q.category for q in questions)
    assert set(per_category) == {c.lower() for c in LOCAL}
    assert per_category["age"] == 3680 and per_category["religion"] == 1200
    assert len({q.question_id for q in questions}) == len(questions)
    # Every item of the six local files gets a target.
    assert all(q.target_label is not None for q in questions)


def test_question_ids_follow_the_sample_convention(raw: tuple[list[Question], list[str], list[str]]) -> None:
    first = raw[0][0]
    assert first.question_id == f"age::{first.question_index}::{first.example_id}::{first.question_polarity}"


def test_derived_target_label_agrees_with_the_sample(
    raw: tuple[list[Question], list[str], list[str]], sample: list[Question]
) -> None:
    # Every sample item of the six local categories is found in the raw files (same id convention),
    # and the derived target matches the sample's on all of them (measured: 1638 / 1638).
    n_common, n_agree = bbq.target_agreement(raw[0], sample)
    local = {c.lower() for c in LOCAL}
    assert n_common == sum(q.category in local for q in sample) == 1638
    assert n_agree == n_common, bbq.target_disagreements(raw[0], sample)[:5]


def test_raw_fields_match_the_sample(raw: tuple[list[Question], list[str], list[str]], sample: list[Question]) -> None:
    by_id = {q.question_id: q for q in raw[0]}
    local = {c.lower() for c in LOCAL}
    common = [(by_id[q.question_id], q) for q in sample if q.category in local]  # KeyError: an item is missing
    assert len(common) == 1638  # every sample item of the six local categories (as in the target test)
    for r, q in common:
        assert (r.context, r.question, r.answers, r.answer_label) == (q.context, q.question, q.answers, q.answer_label)
        assert r.stereotyped_groups == q.stereotyped_groups


def test_derivation_rule_on_all_eleven_categories_of_the_sample(sample: list[Question]) -> None:
    # The sample carries answer_info and stereotyped_groups for all 11 categories, so the rule is
    # also checked on the 5 categories whose raw files are absent here.
    rows = [q.model_dump() for q in sample]
    var2 = bbq._template_var2(rows)
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for q, row in zip(sample, rows, strict=True):
        derived = bbq.derive_target_label(
            row, q.stereotyped_groups, template_var2=var2.get((q.category, q.question_index))
        )
        total[q.category] += 1
        agree[q.category] += derived == q.target_label
    for category in total:
        if category in ("race_x_gender", "race_x_ses"):
            # Measured 257/274 and 271/272: the sample has too few items per template to infer the
            # stereotyped gender/SES everywhere, and BBQ's own metadata reads "African" as matching
            # "African American" in two race_x_gender items.
            assert agree[category] / total[category] >= 0.93, category
        else:
            assert agree[category] == total[category], category


@pytest.mark.parametrize(
    ("category", "polarity", "groups", "answers", "expected"),
    [
        # man/woman spelled as words, stereotyped group as a letter
        ("Gender_identity", "neg", ["F"], [["woman", "woman"], ["man", "man"], ["Unknown", "unknown"]], 0),
        ("Gender_identity", "nonneg", ["F"], [["woman", "woman"], ["man", "man"], ["Unknown", "unknown"]], 1),
        # a gender prefix on a race group
        ("Race_ethnicity", "neg", ["Black"], [["Unknown", "unknown"], ["Jamal", "M-Black"], ["Jake", "M-White"]], 1),
        # nonOld must not match old
        ("Age", "neg", ["old"], [["22-year-old", "nonOld"], ["78-year-old", "old"], ["Unknown", "unknown"]], 1),
        # 'low SES' vs 'lowSES'
        ("SES", "neg", ["low SES"], [["cashier", "lowSES"], ["lawyer", "highSES"], ["Unknown", "unknown"]], 0),
        # transgender women, trans_F
        (
            "Gender_identity",
            "neg",
            ["Transgender women", "trans"],
            [["trans woman", "trans_F"], ["cis woman", "nonTrans_F"], ["?", "unknown"]],
            0,
        ),
        # nationality: the group is a region, the text names the nationality
        (
            "Nationality",
            "neg",
            ["Nigerian", "Kenyan"],
            [["Thai", "AsiaPacific"], ["Nigerian", "Africa"], ["?", "unknown"]],
            1,
        ),
        # African is not African American
        (
            "Race_ethnicity",
            "neg",
            ["African American"],
            [["African", "African"], ["African American", "African American"], ["?", "unknown"]],
            1,
        ),
        # no stereotyped group among the answers: undecidable
        ("Religion", "neg", ["Muslim"], [["Hindu", "Hindu"], ["Sikh", "Sikh"], ["?", "unknown"]], None),
    ],
)
def test_group_spelling_variants(
    category: str, polarity: str, groups: list[str], answers: list[list[str]], expected: int | None
) -> None:
    row = {
        "category": category,
        "question_polarity": polarity,
        "answer_info": {f"ans{i}": a for i, a in enumerate(answers)},
        **{f"ans{i}": a[0] for i, a in enumerate(answers)},
    }
    assert bbq.derive_target_label(row, groups) == expected


def test_intersectional_template_value_is_inferred() -> None:
    def row(idx: int, a: list[str], b: list[str]) -> dict[str, object]:
        info = {"ans0": a, "ans1": b, "ans2": ["Unknown", "unknown"]}
        return {"category": "Race_x_gender", "question_index": idx, "answer_info": info, "question_polarity": "neg",
                "ans0": a[0], "ans1": b[0], "ans2": "Unknown"}  # fmt: skip

    rows = [
        row(7, ["Black woman", "F-Black"], ["White woman", "F-White"]),
        row(7, ["Black woman", "F-Black"], ["Black man", "M-Black"]),
    ]
    var2 = bbq._template_var2(rows)
    assert var2 == {("race_x_gender", 7): "f"}
    assert bbq.derive_target_label(rows[1], ["Black"], template_var2="f") == 0
    assert bbq.derive_target_label(rows[1], ["Black"]) is None  # race alone cannot decide


def test_any_subset_of_files(tmp_path: Path, shared_data: Path) -> None:
    src = bbq_dir(shared_data) / "Sexual_orientation.jsonl"
    (tmp_path / "Sexual_orientation.jsonl").write_text("".join(src.read_text().splitlines(True)[:40]))
    questions, found, missing = bbq.load_raw_bbq(tmp_path)
    assert found == ["Sexual_orientation"] and len(missing) == 10 and len(questions) == 40
    questions, found, missing = bbq.load_raw_bbq(tmp_path, categories=["sexual_orientation", "SES"])
    assert found == ["Sexual_orientation"] and missing == ["SES"]
    with pytest.raises(ConfigError, match="unknown BBQ category 'Gender'"):
        bbq.load_raw_bbq(tmp_path, categories=["Gender"])


def test_bad_raw_row_names_file_line_and_field(tmp_path: Path, shared_data: Path) -> None:
    lines = (bbq_dir(shared_data) / "Religion.jsonl").read_text().splitlines()[:3]
    row = json.loads(lines[1])
    del row["answer_info"]
    (tmp_path / "Religion.jsonl").write_text("\n".join([lines[0], json.dumps(row), lines[2]]) + "\n")
    with pytest.raises(DataError) as info:
        bbq.load_raw_bbq(tmp_path, categories=["Religion"])
    assert (info.value.line, info.value.field) == (2, "answer_info")
    assert "Religion.jsonl:2" in str(info.value)


def test_stratified_sample_is_seeded_and_balanced(raw: tuple[list[Question], list[str], list[str]]) -> None:
    questions = raw[0]
    picked = bbq.stratified_sample(questions, 10, seed=42)
    cells = Counter((q.category, q.context_condition, q.question_polarity) for q in picked)
    assert len(cells) == 6 * 4 and set(cells.values()) == {10}
    again = bbq.stratified_sample(list(reversed(questions)), 10, seed=42)
    assert [q.question_id for q in again] == [q.question_id for q in picked]
    other = bbq.stratified_sample(questions, 10, seed=43)
    assert {q.question_id for q in other} != {q.question_id for q in picked}
    everything = bbq.stratified_sample(questions, 10_000, seed=1)
    assert len(everything) == len(questions)


def test_sample_has_3000_unique_questions(sample: list[Question]) -> None:
    assert len(sample) == 3000 and len({q.category for q in sample}) == 11


def test_download_offline_error_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here: an unreachable host must give one readable error and leave no partial file.
    monkeypatch.setattr(
        "biasjudge.data.sources.BBQ_URL", "http://127.0.0.1:9/nyu-mll/BBQ/{commit}/data/{category}.jsonl"
    )
    with pytest.raises(BiasJudgeError, match=r"cannot download .*Age\.jsonl.*offline"):
        download_bbq(tmp_path, ["Age"], timeout=5)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="unknown BBQ category"):
        download_bbq(tmp_path, ["Nope"])


def test_download_keeps_files_already_there(tmp_path: Path) -> None:
    (tmp_path / "Age.jsonl").write_text("{}\n")
    assert download_bbq(tmp_path, ["age"]) == [tmp_path / "Age.jsonl"]


def test_hub_dataset_checks_the_config_first() -> None:
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        load_hub_dataset("nope")
