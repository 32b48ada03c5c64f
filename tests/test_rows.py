"""SFT and DPO rows: swap mirroring (property-tested), exact targets, hard negatives, stable splits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biasjudge.dataset.rows import (
    RATIONALE_TEMPLATE,
    HardNegative,
    dpo_rows,
    read_hard_negatives,
    row_stats,
    sft_rows,
    split_of,
    template_reasoning,
)
from biasjudge.errors import ConfigError
from biasjudge.io import read_records
from biasjudge.labels.answer_key import label_pairs
from biasjudge.prompts import load_prompt
from biasjudge.prompts.render import judge_messages
from biasjudge.records import AnswerChoice, Label, Pair, Response
from biasjudge.verdict import mirror_reasoning, neutralize_tags, parse, render

SYSTEM = "You judge bias."


def make_pair(label: Label | None = None, pair_id: str = "p1", a: str = "biased", b: str = "neutral") -> Pair:
    return Pair(
        pair_id=pair_id,
        question_id=f"age::1::{pair_id}::neg",
        question_text="An old man and a young man tried the new phone. Who struggled?",
        answer_choices=[AnswerChoice(letter="A", text="The old man"), AnswerChoice(letter="B", text="Unknown")],
        bias_category="age",
        response_a=Response(model="m1", text="FIRST text: the old man.", suspected_bias_level=a),  # type: ignore[arg-type]
        response_b=Response(model="m2", text="SECOND text: unknown.", suspected_bias_level=b),  # type: ignore[arg-type]
        pair_category="clear_bias_vs_clean",
        labels=[label] if label else [],
    )


# --------------------------------------------------------------------------- swap mirroring

mention = st.sampled_from(["Response A", "Response B", "response a", "RESPONSE B", "response  A", "Responses A"])
reasoning_text = st.lists(st.one_of(st.text(max_size=20), mention), min_size=1, max_size=8).map(" ".join)
verdicts = st.sampled_from(["A", "B", "TIE"])


@settings(max_examples=200, deadline=None)
@given(text=reasoning_text)
def test_mirroring_twice_is_identity(text: str) -> None:
    assert mirror_reasoning(mirror_reasoning(text)) == text


@settings(max_examples=200, deadline=None)
@given(text=reasoning_text, verdict=verdicts)
def test_swapped_row_mirrors_the_original(text: str, verdict: str) -> None:
    pair = make_pair(Label(verdict=verdict, source="teacher", reasoning=text, confidence=5))  # type: ignore[arg-type]
    rows = sft_rows([pair], system_prompt=SYSTEM, label_source="teacher").rows
    assert [r.swap for r in rows] == [False, True]
    original, swapped = rows
    # the swapped prompt shows the responses exchanged, labels A/B in place
    assert original.prompt == judge_messages(pair, SYSTEM)
    assert swapped.prompt == judge_messages(pair, SYSTEM, swapped=True)
    assert original.prompt[1].content.index("FIRST text") < original.prompt[1].content.index("SECOND text")
    assert swapped.prompt[1].content.index("SECOND text") < swapped.prompt[1].content.index("FIRST text")
    # verdict mirrored, TIE kept (written out, not computed with mirror())
    assert original.verdict == verdict and swapped.verdict == {"A": "B", "B": "A", "TIE": "TIE"}[verdict]
    # targets are exactly render(reasoning, verdict), strict-parseable, reasoning mirrored
    got_v, got_r = parse(original.completion)
    assert got_v == verdict
    if text.strip():  # the labeller's own reasoning
        expected, source = neutralize_tags(text.strip()), "labeller"
    else:  # a blank reasoning: the template stands in
        expected, source = template_reasoning(pair, verdict), "template"  # type: ignore[arg-type]
    assert original.reasoning_source == swapped.reasoning_source == source
    assert original.completion == render(expected, verdict)  # type: ignore[arg-type]
    assert swapped.completion == render(mirror_reasoning(expected), swapped.verdict)
    sv, sr = parse(swapped.completion)
    assert sv == swapped.verdict and sr is not None and got_r is not None
    assert mirror_reasoning(sr) == got_r  # mirroring the swapped row gives the original back


def test_template_reasoning_names_both_and_matches_the_verdict() -> None:
    for verdict in ("A", "B"):
        text = template_reasoning(make_pair(), verdict)  # type: ignore[arg-type]
        assert "Response A" in text and "Response B" in text and "age" in text
        assert text.endswith(f"Response {verdict} relies more on the stereotype.")
    assert RATIONALE_TEMPLATE["B"] == mirror_reasoning(RATIONALE_TEMPLATE["A"])
    assert "equivalent" in template_reasoning(make_pair(a="neutral", b="neutral"), "TIE")
    assert template_reasoning(make_pair(a="neutral", b="neutral"), "TIE").startswith(
        "Response A and Response B both answer"
    )
    assert template_reasoning(make_pair(a="biased", b="unclear"), "TIE").startswith(
        "Response A and Response B both pick"
    )
    # the swap of an A row is exactly the B row of the same pair
    pair = make_pair(Label(verdict="A", source="answer_key", confidence=5))
    _, swapped = sft_rows([pair], system_prompt=SYSTEM, label_source="answer_key").rows
    assert swapped.completion == render(template_reasoning(pair, "B"), "B")
    assert swapped.reasoning_source == "template"


def test_sft_skips_and_counts() -> None:
    pairs = [
        make_pair(Label(verdict="A", source="answer_key", confidence=5), "p1"),
        make_pair(Label(verdict="A", source="answer_key", confidence=2), "p2"),
        make_pair(Label(verdict="A", source="answer_key"), "p3"),  # no confidence
        make_pair(Label(verdict="B", source="human", confidence=5), "p4"),
        make_pair(None, "p5"),
    ]
    build = sft_rows(pairs, system_prompt=SYSTEM, label_source="answer_key", min_confidence=3)
    assert [r.pair_id for r in build.rows] == ["p1", "p1"]
    assert (build.left_out.no_label, build.left_out.low_confidence, build.n_used) == (2, 2, 1)
    assert len(sft_rows(pairs, system_prompt=SYSTEM, label_source="answer_key").rows) == 6


# --------------------------------------------------------------------------- DPO


def test_dpo_hard_negative_or_flip() -> None:
    pairs = [
        make_pair(Label(verdict="A", source="answer_key", confidence=5), "p1"),
        make_pair(Label(verdict="A", source="answer_key", confidence=5), "p2"),
        make_pair(Label(verdict="B", source="answer_key", confidence=5), "p3"),
        make_pair(Label(verdict="TIE", source="answer_key", confidence=5), "p4"),
        make_pair(Label(verdict="A", source="answer_key", confidence=3), "p5"),
    ]
    negatives = [
        HardNegative(pair_id="p1", reasoning="Response B seems to assume.", verdict="B", failure_mode="x"),
        HardNegative(pair_id="p2", reasoning="Response A assumes.", verdict="A"),  # agrees: not used
    ]
    build = dpo_rows(pairs, system_prompt=SYSTEM, label_source="answer_key", hard_negatives=negatives)
    assert (build.left_out.tie, build.left_out.low_confidence) == (1, 1)
    assert build.rejected_sources == {"hard_negative": 1, "verdict_flip": 2}
    rows = {(r.pair_id, r.swap): r for r in build.rows}
    assert len(rows) == 6
    p1, p1s = rows["p1", False], rows["p1", True]
    assert p1.source == "hard_negative" and p1.rejected == render("Response B seems to assume.", "B")
    assert p1s.rejected == render("Response A seems to assume.", "A")
    assert p1s.chosen == render(template_reasoning(pairs[0], "B"), "B")
    assert rows["p2", False].source == "verdict_flip"
    assert rows["p2", False].rejected == render(template_reasoning(pairs[1], "A"), "B")
    for row in build.rows:
        assert parse(row.chosen)[0] != parse(row.rejected)[0]
        assert row.prompt == judge_messages(pairs[int(row.pair_id[1]) - 1], SYSTEM, swapped=row.swap)


def test_split_is_stable_and_proportional() -> None:
    ids = [f"pair{i:05d}" for i in range(4000)]
    first = [split_of(i, 0.05) for i in ids]
    assert first == [split_of(i, 0.05) for i in ids]
    share = first.count("validation") / len(ids)
    assert 0.04 < share < 0.06
    assert all(split_of(i, 0.0) == "train" for i in ids[:50])
    with pytest.raises(ConfigError, match="validation_fraction"):
        dpo_rows([], system_prompt=SYSTEM, label_source="answer_key", validation_fraction=1.0)


# --------------------------------------------------------------------------- on the real rows


@pytest.fixture(scope="module")
def labelled(jfs: Path) -> list[Pair]:
    return label_pairs(read_records(jfs / "pairs_to_label.jsonl", Pair).records)


def test_sft_rows_on_real_pairs(labelled: list[Pair]) -> None:
    system = load_prompt("judge_system")
    build = sft_rows(labelled, system_prompt=system, label_source="answer_key")
    assert (build.n_pairs, build.n_used, len(build.rows)) == (1938, 1938, 3876)
    stats = row_stats(build.rows, labelled)
    assert stats["verdict"] == {"A": 1298, "B": 1298, "TIE": 1280}
    assert stats["swap"] == {"false": 1938, "true": 1938}
    assert stats["bucket"]["tracked_bias_vs_alternate"] == 324
    assert sum(stats["category"].values()) == 3876 and "unknown" not in stats["category"]
    for row in build.rows:
        verdict, reasoning = parse(row.completion)
        assert verdict == row.verdict and reasoning
        assert row.prompt[0].content == system


def test_dpo_rows_on_real_pairs(labelled: list[Pair], jfs: Path) -> None:
    negatives = read_hard_negatives(jfs / "synthesis_results.jsonl").records
    assert len(negatives) == 779
    kwargs = {"system_prompt": "s", "label_source": "answer_key", "hard_negatives": negatives}
    build = dpo_rows(labelled, **kwargs)  # type: ignore[arg-type]
    assert (build.n_used, len(build.rows), build.left_out.tie) == (1298, 2596, 478)
    assert build.rejected_sources == {"hard_negative": 716, "verdict_flip": 582}
    for row in build.rows:
        chosen, rejected = parse(row.chosen)[0], parse(row.rejected)[0]
        assert chosen in ("A", "B") and rejected != chosen
    again = dpo_rows(labelled, **kwargs).rows  # type: ignore[arg-type]
    assert [(r.pair_id, r.swap, r.split) for r in again] == [(r.pair_id, r.swap, r.split) for r in build.rows]
    splits: dict[str, set[str]] = {}
    for row in build.rows:
        splits.setdefault(row.pair_id, set()).add(row.split)
    assert all(len(s) == 1 for s in splits.values())  # both copies of a pair in one split
    stats = row_stats(build.rows, labelled)
    assert stats["split"] == {"train": 2460, "validation": 136}
    assert stats["rejected_source"] == {"hard_negative": 1432, "verdict_flip": 1164}
    assert set(stats["bucket"]) == {"adversarial", "clear_bias_vs_clean", "subtle_bias_vs_clean"}


def test_row_stats_of_pairs(labelled: list[Pair]) -> None:
    stats = row_stats(labelled)
    assert stats["rows"] == 1938 and "swap" not in stats
    assert stats["verdict"] == {"answer_key:A": 628, "answer_key:B": 670, "answer_key:TIE": 640}
    assert stats["levels"]["neutral/neutral"] == 478
