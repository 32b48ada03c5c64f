"""Stage 4: pairs rebuilt from the reference's own candidate answers, bucket by bucket."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from biasjudge.config import ConfigError, load_config
from biasjudge.data.bbq import load_sample
from biasjudge.data.classify import is_hedged, is_uncertain
from biasjudge.data.holdout import load_pairs
from biasjudge.data.pairs import (
    PairsConfig,
    answer_choices,
    bucket_supply,
    build_pairs,
    candidates_from_pairs,
    count_by_bucket,
    make_pair_id,
    question_text,
)
from biasjudge.errors import DataError
from biasjudge.records import CandidateResponse, Pair, Question, Response


@pytest.fixture(scope="module")
def questions(jfs: Path) -> dict[str, Question]:
    return {q.question_id: q for q in load_sample(jfs / "bbq_sample.jsonl")}


@pytest.fixture(scope="module")
def reference(jfs: Path) -> list[Pair]:
    return load_pairs(jfs / "pairs.jsonl").records


@pytest.fixture(scope="module")
def candidates(reference: list[Pair]) -> list[CandidateResponse]:
    return candidates_from_pairs(reference)


@pytest.fixture(scope="module")
def built(questions: dict[str, Question], candidates: list[CandidateResponse]) -> list[Pair]:
    return build_pairs(questions, candidates, PairsConfig())


def _sides(pair: Pair) -> tuple[Response, Response]:
    return pair.response_a, pair.response_b


def _level(pair: Pair, level: str) -> list[Response]:
    return [s for s in _sides(pair) if s.suspected_bias_level == level]


def test_pair_id_and_layout_match_the_reference(reference: list[Pair], questions: dict[str, Question]) -> None:
    for pair in reference:
        q = questions[pair.question_id]
        assert make_pair_id(pair.question_id, pair.response_a.model, pair.response_b.model) == pair.pair_id
        assert make_pair_id(pair.question_id, pair.response_b.model, pair.response_a.model) == pair.pair_id
        assert question_text(q) == pair.question_text
        assert answer_choices(q) == pair.answer_choices
        assert pair.bias_category == q.category


def test_reference_pairs_follow_the_bucket_rules(reference: list[Pair]) -> None:
    # The rules of pairs.py hold on every one of the reference's 2,370 pairs.
    _check_bucket_rules(reference, PairsConfig())


def _check_bucket_rules(pairs: list[Pair], config: PairsConfig) -> None:
    for p in pairs:
        biased, neutral, unclear = _level(p, "biased"), _level(p, "neutral"), _level(p, "unclear")
        cross = p.response_a.model != p.response_b.model
        if p.pair_category == "clear_bias_vs_clean":
            assert len(biased) == len(neutral) == 1 and cross and not is_hedged(biased[0].text), p.pair_id
        elif p.pair_category == "subtle_bias_vs_clean":
            assert len(biased) == len(neutral) == 1 and is_hedged(biased[0].text), p.pair_id
        elif p.pair_category == "tracked_bias_vs_alternate":
            assert len(biased) == len(unclear) == 1 and cross, p.pair_id
        elif p.pair_category == "both_clean_tie":
            assert len(neutral) == 2 and cross, p.pair_id
        else:
            assert len(biased) == len(neutral) == 1 and cross, p.pair_id
            b, n = biased[0].text, neutral[0].text
            confidence = not is_hedged(b) and is_uncertain(n)
            wn, wb = len(n.split()), len(b.split())
            length = wn >= config.length_floor_words and wb >= config.length_ratio * wn
            assert confidence or length, p.pair_id


def test_rebuilt_pairs_meet_the_targets_and_the_rules(
    built: list[Pair], questions: dict[str, Question], candidates: list[CandidateResponse]
) -> None:
    config = PairsConfig()
    supply = bucket_supply(questions, candidates, config)
    # Supply from the reference's own answers covers every default target ...
    assert supply["tracked_bias_vs_alternate"] == 220 and supply["clear_bias_vs_clean"] >= 800
    # ... so every bucket is filled exactly.
    assert count_by_bucket(built) == config.targets
    _check_bucket_rules(built, config)
    assert len({p.pair_id for p in built}) == len(built)
    for p in built:
        q = questions[p.question_id]
        assert p.question_text == question_text(q) and [c.letter for c in p.answer_choices] == ["A", "B", "C"]
        assert p.pair_id == make_pair_id(p.question_id, p.response_a.model, p.response_b.model)
    by_question: dict[tuple[str, str], int] = {}
    for p in built:
        key = (p.question_id, p.pair_category)
        by_question[key] = by_question.get(key, 0) + 1
    assert max(by_question.values()) <= config.max_per_question


def test_slots_are_randomised(built: list[Pair]) -> None:
    with_bias = [p for p in built if p.pair_category != "both_clean_tie"]
    share_a = sum(p.response_a.suspected_bias_level == "biased" for p in with_bias) / len(with_bias)
    assert 0.45 <= share_a <= 0.55


def test_deterministic_under_a_seed(
    built: list[Pair], questions: dict[str, Question], candidates: list[CandidateResponse]
) -> None:
    shuffled = list(candidates)
    random.Random(7).shuffle(shuffled)
    again = build_pairs(questions, shuffled, PairsConfig())
    assert [p.model_dump() for p in again] == [p.model_dump() for p in built]
    other = build_pairs(questions, candidates, PairsConfig(seed=43))
    assert {p.pair_id for p in other} != {p.pair_id for p in built}


def test_targets_are_ceilings(questions: dict[str, Question], candidates: list[CandidateResponse]) -> None:
    config = PairsConfig(
        targets={"clear_bias_vs_clean": 10, "tracked_bias_vs_alternate": 1000, "adversarial": 6},
        adversarial_split={"confidence_asym": 2, "length_asym": 4},
    )
    counts = count_by_bucket(build_pairs(questions, candidates, config))
    assert counts == {
        "clear_bias_vs_clean": 10,
        "subtle_bias_vs_clean": 0,
        "tracked_bias_vs_alternate": 220,  # all the supply there is
        "both_clean_tie": 0,
        "adversarial": 6,
    }


def test_unclassified_candidates_are_classified(questions: dict[str, Question]) -> None:
    q = next(q for q in questions.values() if q.context_condition == "ambig" and q.target_label is not None)
    target, key = "ABC"[q.target_label or 0], "ABC"[q.answer_label]
    cands = [
        CandidateResponse(question_id=q.question_id, model="m1", text=f"<answer>{target}</answer>"),
        CandidateResponse(question_id=q.question_id, model="m2", text=f"It cannot be told.\n<answer>{key}</answer>"),
        CandidateResponse(question_id=q.question_id, model="m3", text=f"<answer>{key}</answer>"),
    ]
    pairs = build_pairs({q.question_id: q}, cands, PairsConfig(adversarial_split={}, targets={}))
    assert pairs == []
    pairs = build_pairs({q.question_id: q}, cands, PairsConfig(targets={"clear_bias_vs_clean": 5, "both_clean_tie": 5}))
    assert count_by_bucket(pairs)["clear_bias_vs_clean"] == 2 and count_by_bucket(pairs)["both_clean_tie"] == 1


def test_adversarial_bucket_target_caps_its_sub_buckets(
    questions: dict[str, Question], candidates: list[CandidateResponse]
) -> None:
    counts = count_by_bucket(build_pairs(questions, candidates, PairsConfig(targets={"adversarial": 10})))
    assert counts["adversarial"] == 10 and sum(counts.values()) == 10


def test_bad_inputs(questions: dict[str, Question]) -> None:
    with pytest.raises(ValueError, match="unknown bucket"):
        PairsConfig(targets={"clear": 5})
    with pytest.raises(ValueError, match="unknown sub-bucket"):
        PairsConfig(adversarial_split={"style_asym": 5})
    with pytest.raises(DataError, match="unknown question 'nope'"):
        build_pairs(questions, [CandidateResponse(question_id="nope", model="m", text="")])
    qid = next(iter(questions))
    twice = [CandidateResponse(question_id=qid, model="m", text=t) for t in ("a", "b")]
    with pytest.raises(DataError, match="several candidates from 'm'"):
        build_pairs(questions, twice)


def test_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "pairs.yaml"
    path.write_text("seed: 7\nlength_ratio: 3\n")
    config = load_config(PairsConfig, path, {"max_per_question": 2})
    assert (config.seed, config.length_ratio, config.max_per_question) == (7, 3.0, 2)
    path.write_text("length_ratio: 0.5\n")
    with pytest.raises(ConfigError, match="length_ratio"):
        load_config(PairsConfig, path)
