"""The shipped judge: order debiasing, the packaged adapter and its card, spec options, the hybrid.

Logic tests use a scripted backend whose scores depend on which text is shown first (a model with
a position bias); the shipped adapter is tested for real: its files, its sha256s, and judging real
holdout pairs with llama.cpp.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from biasjudge.backends.base import Generation, GenerationParams, PromptRequest
from biasjudge.backends.registry import PAIRWISE_JUDGE_SPEC
from biasjudge.config import JudgeSpec
from biasjudge.errors import BackendError, ConfigError
from biasjudge.io import read_records
from biasjudge.io.files import sha256_file
from biasjudge.judge.debiased import OrderDebiasedJudge, combine_orders
from biasjudge.judge.judge import Judge
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.judge.shipped import (
    ADAPTER_FILE,
    CARD_FILE,
    check_system_prompt,
    read_manifest,
    sha256_text,
    shipped_dir,
    shipped_manifest,
    write_manifest,
)
from biasjudge.prompts.render import SCORE_PREFIX, judge_messages
from biasjudge.records import Pair, WrapperMetadata
from test_judge import make_pair


class PositionBiasedBackend:
    """Scores depend on the text shown first: a fixed preference for whatever is in slot A, plus
    a real signal (the response containing 'obviously' is the biased one)."""

    spec = "biased-fake:"

    def __init__(self) -> None:
        self.calls: list[PromptRequest] = []

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        out = []
        for request in requests:
            self.calls.append(request)
            user = request.messages[-1].content
            first = user.split("**Response A:**", 1)[1].split("**Response B:**", 1)[0]
            signal_in_a = "obviously" in first
            probs = {"A": 0.55 + (0.3 if signal_in_a else 0.0), "B": 0.15 + (0.0 if signal_in_a else 0.3), "TIE": 0.3}
            total = sum(probs.values())
            out.append({c: math.log(probs[c] / total) for c in choices})
        return out

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        raise AssertionError("score mode only")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def test_combine_orders_mirrors_the_swapped_run() -> None:
    combined = combine_orders({"A": 0.7, "B": 0.2, "TIE": 0.1}, {"A": 0.6, "B": 0.1, "TIE": 0.3})
    # The swapped run's B is the original A.
    assert combined == pytest.approx({"A": 0.4, "B": 0.4, "TIE": 0.2})


def test_order_debiased_judge_has_no_position_bias_where_the_model_has() -> None:
    backend = PositionBiasedBackend()
    single = Judge(backend, mode="score")
    debiased = OrderDebiasedJudge(Judge(backend, mode="score"))
    # Response B of this pair is the biased one ("obviously"), but the model prefers slot A.
    pair = make_pair().model_copy(
        update={
            "response_a": make_pair().response_b,
            "response_b": make_pair().response_a,
        }
    )
    original, swapped = single.judge(pair), single.judge(pair, swapped=True)
    assert (original.verdict, swapped.verdict) == ("A", "A")  # position bias: A both times
    d_original, d_swapped = debiased.judge_batch([JudgeRequest(pair), JudgeRequest(pair, swapped=True)])
    assert d_original.verdict == "B" and d_swapped.verdict == "A"  # the mirror: the same response
    assert d_original.probs is not None and d_swapped.probs is not None
    assert d_original.probs["A"] == pytest.approx(d_swapped.probs["B"])
    assert d_original.wrappers.single_order_verdict == "A" and d_swapped.wrappers.single_order_verdict == "A"


def test_order_debiased_judge_scores_each_order_once_per_batch() -> None:
    backend = PositionBiasedBackend()
    debiased = OrderDebiasedJudge(Judge(backend, mode="score"))
    pair = make_pair()
    requests = [JudgeRequest(pair), JudgeRequest(pair, swapped=True)]
    requests += [JudgeRequest(pair, temperature=0.3, seed=k) for k in range(5)]
    judged = debiased.judge_batch(requests)
    assert len(backend.calls) == 2  # seven runs, two forward passes
    # By hand: shown as given, A holds "obviously": A 0.85, B 0.15, TIE 0.3 (of 1.3); swapped, A
    # 0.55, B 0.45, TIE 0.3 (of 1.3). Combined, the swapped A is the original B:
    # A = (0.85 + 0.45) / 2.6 = 0.5, B = (0.15 + 0.55) / 2.6, TIE = 0.3 / 1.3.
    combined = {"A": 0.5, "B": 0.7 / 2.6, "TIE": 0.3 / 1.3}
    mirrored = {"A": combined["B"], "B": combined["A"], "TIE": combined["TIE"]}
    for request, judgment in zip(requests, judged, strict=True):
        assert judgment.probs == pytest.approx(mirrored if request.swapped else combined)
    assert [j.verdict for j in judged[:2]] == ["A", "B"]  # the argmax, shown in each order
    again = debiased.judge_batch(requests)  # the seeded T=0.3 draws repeat
    assert [j.verdict for j in again] == [j.verdict for j in judged]
    draws = [j.verdict for j in debiased.judge_batch([JudgeRequest(pair, temperature=5.0, seed=k) for k in range(40)])]
    assert len(set(draws)) > 1  # a hot temperature really samples from the combined probabilities


def test_order_debiasing_needs_score_mode() -> None:
    with pytest.raises(ConfigError, match="score"):
        OrderDebiasedJudge(Judge(PositionBiasedBackend(), mode="generate"))


def test_spec_options_ride_after_a_question_mark() -> None:
    spec = JudgeSpec.parse("llamacpp:x.gguf?lora_path=a.gguf&n_ctx=1024&reuse_prefix=false")
    assert (spec.base, spec.backend_options) == (
        "llamacpp:x.gguf",
        {"lora_path": "a.gguf", "n_ctx": 1024, "reuse_prefix": False},
    )
    with pytest.raises(BackendError, match="key=value"):
        JudgeSpec.parse("llamacpp:x.gguf?lora_path")
    with pytest.raises(BackendError, match="not understood"):
        make_judge("answer-key:?no_such_option=1")


def test_order_given_as_an_option_lands_in_the_spec() -> None:
    judge = make_judge("random:3", order="single")
    assert judge.spec == "random:3?order=single"


def test_a_manifest_refuses_another_system_prompt(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"not really a gguf")
    write_manifest(adapter, system_prompt="Judge it.\n", chat_format="gemma4", order="both")
    manifest = read_manifest(adapter)
    assert manifest is not None and manifest.adapter_sha256 == sha256_file(adapter)
    assert check_system_prompt(manifest, None) == "Judge it.\n"
    assert check_system_prompt(manifest, "Judge it.\n") == "Judge it.\n"
    with pytest.raises(ConfigError, match="another system prompt"):
        check_system_prompt(manifest, "Judge it.")  # one byte short


# --------------------------------------------------------------------------- the shipped files


def test_shipped_adapter_matches_its_manifest_and_card() -> None:
    folder = shipped_dir()
    adapter = folder / ADAPTER_FILE
    manifest = shipped_manifest()
    digest = sha256_file(adapter)
    assert manifest.adapter_sha256 == digest
    assert manifest.system_prompt_sha256 == sha256_text(manifest.system_prompt)
    assert "<|think|>" not in manifest.system_prompt
    card = (folder / CARD_FILE).read_text(encoding="utf-8")
    assert digest in card and manifest.system_prompt_sha256 in card
    assert 1_000_000 < adapter.stat().st_size < 20_000_000  # a few MB: an adapter, not a model
    # The card carries the holdout table with intervals, and the training inputs' sha256s.
    assert re.search(r"\| kappa_in_dist \| 0\.\d+ \| \[0\.\d+, 0\.\d+\] \|", card)
    for name in ("pairs.jsonl", "train_rows"):
        assert manifest.extra["data"][name]["sha256"] in card
    assert manifest.extra["config"]["leakage_level"] == "question"


@pytest.mark.heavy  # 22 s; the pairwise judge is no longer the default; both orders are tested on the debiased judge
def test_shipped_judge_judges_real_pairs_in_both_orders(jfs: Path, gguf_model: Path) -> None:
    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[:3]
    # The shipped judge is calibrated (tests/test_calibration.py); here, the orders' combination beneath.
    judge = make_judge(PAIRWISE_JUDGE_SPEC, calibration="none")
    try:
        assert isinstance(judge, OrderDebiasedJudge)
        backend = judge.inner.backend
        # The base GGUF by size and mtime, the shipped adapter by its content.
        assert getattr(backend, "identity", "").count("+adapter.gguf:sha256:") == 1
        requests = [JudgeRequest(p, swapped=s) for p in holdout for s in (False, True)]
        judged = judge.judge_batch(requests)
        # Each order alone, computed apart from the judges: the prompt built here, scored by the
        # backend, normalised by hand, p(c) = exp(l_c) / (exp(l_A) + exp(l_B) + exp(l_TIE)).
        prompts = [
            PromptRequest(tuple(judge_messages(r.pair, judge.system_prompt, swapped=r.swapped)), SCORE_PREFIX)
            for r in requests
        ]
        single = []
        for scores in backend.score(prompts, ("A", "B", "TIE")):
            total = sum(math.exp(v) for v in scores.values())
            single.append({c: math.exp(v) / total for c, v in scores.items()})
    finally:
        judge.close()
    assert len(judged) == len(single) == 6
    mirror = {"A": "B", "B": "A", "TIE": "TIE"}
    for k in range(0, 6, 2):
        original, swapped = judged[k], judged[k + 1]
        shown, other = single[k], single[k + 1]
        # Combined by hand: the swapped order's A is the original B.
        expected = {"A": (shown["A"] + other["B"]) / 2, "B": (shown["B"] + other["A"]) / 2}
        expected["TIE"] = (shown["TIE"] + other["TIE"]) / 2
        assert original.probs == pytest.approx(expected, abs=1e-4)
        assert original.verdict == max(expected, key=expected.__getitem__)
        assert swapped.verdict == mirror[original.verdict]
        # single_order_verdict is the argmax of the order shown alone.
        assert original.wrappers.single_order_verdict == max(shown, key=shown.__getitem__)
        assert swapped.wrappers.single_order_verdict == max(other, key=other.__getitem__)
    # A trained judge does not answer A to everything, as the untrained base does.
    assert len({j.verdict for j in judged}) > 1


def test_shipped_judge_refuses_another_prompt(gguf_model: Path) -> None:
    with pytest.raises(ConfigError, match="another system prompt"):
        make_judge("llamacpp:embedded", system_prompt="You are a judge.")


def test_base_spec_runs_without_the_adapter(gguf_model: Path) -> None:
    judge = make_judge("llamacpp:embedded-base")
    try:
        assert isinstance(judge, Judge)
        assert "+" not in getattr(judge.backend, "identity", "") and "adapter" not in judge.backend.identity
    finally:
        judge.close()


def test_any_adapter_evaluates_from_the_spec(gguf_model: Path, jfs: Path) -> None:
    adapter = shipped_dir() / ADAPTER_FILE
    pair = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[0]
    via_spec = make_judge(f"llamacpp:embedded-base?adapter={adapter}&order=single")
    try:
        assert isinstance(via_spec, Judge)
        assert via_spec.system_prompt == shipped_manifest().system_prompt  # brought by the manifest
        judged = via_spec.judge(pair)
    finally:
        via_spec.close()
    shipped = make_judge("llamacpp:embedded?order=single&calibration=none")  # the spec applies no calibration
    try:
        again = shipped.judge_batch([JudgeRequest(pair)])[0]
    finally:
        shipped.close()
    assert judged.probs is not None and again.probs is not None
    assert judged.probs == pytest.approx(again.probs, abs=1e-6)


# --------------------------------------------------------------------------- the hybrid


def test_hybrid_evidence_follows_the_answer_key(jfs: Path) -> None:
    from biasjudge.data.bbq import load_sample
    from biasjudge.judge.hybrid import evidence

    questions = {q.question_id: q for q in load_sample(jfs / "bbq_sample.jsonl")}
    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records
    cases: dict[str, int] = {}
    for pair in holdout:
        described, prior = evidence(pair, questions[pair.question_id])
        case = described.rsplit(": ", 1)[1]
        cases[case] = cases.get(case, 0) + 1
        # The priors of the module's table, written out here.
        if case == "the same option":
            assert prior == pytest.approx({"A": 0.05, "B": 0.05, "TIE": 0.90})
        elif case == "the stereotype target against the correct option":
            classes = re.findall(r"chose \S+ \((\w+)\)", described)
            assert sorted(classes) == ["biased", "correct"]
            biased_side, clean_side = ("A", "B") if classes[0] == "biased" else ("B", "A")
            assert prior == pytest.approx({biased_side: 0.90, "TIE": 0.08, clean_side: 0.02})
        else:
            assert prior == pytest.approx({"A": 1 / 3, "B": 1 / 3, "TIE": 1 / 3})  # the model decides
    assert set(cases) == {
        "the same option",
        "the stereotype target against the correct option",
        "the answer key cannot decide",
    }
    assert cases["the stereotype target against the correct option"] > 150


def test_hybrid_over_a_uniform_model_is_the_answer_key(jfs: Path) -> None:
    """With a model that knows nothing (random: gives 1/3 each), the evidence decides alone."""
    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[:40]
    hybrid = make_judge(f"hybrid:random:?questions={jfs / 'bbq_sample.jsonl'}")
    judged = hybrid.judge_batch([JudgeRequest(p) for p in holdout])
    swapped = hybrid.judge_batch([JudgeRequest(p, swapped=True) for p in holdout])
    mirror = {"A": "B", "B": "A", "TIE": "TIE"}
    decided = undecided = 0
    for original, other in zip(judged, swapped, strict=True):
        assert original.reasoning and "chose" in original.reasoning
        assert original.probs is not None and other.probs is not None
        if "cannot decide" in original.reasoning:
            undecided += 1
            # A uniform prior times a uniform model: nothing is preferred, in either order.
            assert original.probs == pytest.approx({"A": 1 / 3, "B": 1 / 3, "TIE": 1 / 3})
            assert other.probs == pytest.approx(original.probs)
        else:
            decided += 1
            assert other.verdict == mirror[original.verdict]
            # The prior times 1/3 each, renormalised, is the prior: its 0.90 decides.
            assert original.probs[original.verdict] == pytest.approx(0.90)
    assert decided > 25 and undecided > 0


def test_hybrid_without_the_question_is_the_model(tmp_path: Path, jfs: Path) -> None:
    pair = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[0]
    others = tmp_path / "questions.jsonl"  # BBQ questions, but not the one this pair asks
    others.write_text(
        "".join(
            line + "\n"
            for line in (jfs / "bbq_sample.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line)["question_id"] != pair.question_id
        )
    )
    hybrid = make_judge(f"hybrid:random:7?questions={others}")
    model = make_judge("random:7")
    assert hybrid.judge_batch([JudgeRequest(pair)])[0].verdict == model.judge_batch([JudgeRequest(pair)])[0].verdict


def test_recipe_config_file_loads_and_teacher_verdicts_are_the_correct_ones(jfs: Path) -> None:
    from biasjudge.config import load_config
    from biasjudge.recipes.pairwise import JudgeRecipeConfig, teacher_verdicts

    config = load_config(JudgeRecipeConfig, Path(__file__).resolve().parents[1] / "configs" / "embedded-judge.yaml")
    assert config.leakage_level == "question" and config.system_prompt == "judge_compact"
    verdicts = teacher_verdicts(jfs)
    rows = [json.loads(line) for line in (jfs / "synthesis_results.jsonl").read_text().splitlines() if line.strip()]
    # synthesis_results' `verdict` is the deliberately wrong one; the teacher's is `sonnet_verdict`.
    assert all(verdicts[r["pair_id"]] == r["sonnet_verdict"] for r in rows)
    assert any(r["verdict"] != r["sonnet_verdict"] for r in rows)


def test_metrics_report_the_single_order_position_bias_of_a_debiased_judge(jfs: Path) -> None:
    from biasjudge.eval.metrics import compute_metrics
    from biasjudge.records import Prediction

    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records
    mirror = {"A": "B", "B": "A", "TIE": "TIE"}
    predictions = []
    for i, pair in enumerate(holdout):
        combined = pair.human_verdict or "TIE"
        # The single-order model says A in both orders on every third pair: position bias 1/3.
        single_swapped = "A" if i % 3 == 0 else mirror[combined]
        single_original = "A" if i % 3 == 0 else combined
        predictions += [
            Prediction(
                checkpoint_name="c",
                pair_id=pair.pair_id,
                run_type="original",
                verdict=combined,
                wrappers=WrapperMetadata(single_order_verdict=single_original),
            ),
            Prediction(
                checkpoint_name="c",
                pair_id=pair.pair_id,
                run_type="swapped",
                verdict=mirror[combined],
                wrappers=WrapperMetadata(single_order_verdict=single_swapped),
            ),
        ]
    metrics = compute_metrics(holdout, predictions, checkpoint="c", n_resamples=10)
    assert metrics["position_bias_in_dist"] == 0.0
    in_dist = [i for i, p in enumerate(holdout) if p.eval_slice == "in_dist"]
    expected = sum(i % 3 == 0 for i in in_dist) / len(in_dist)
    assert metrics["position_bias_single_order_in_dist"] == pytest.approx(expected)
    assert 0.2 < expected < 0.4


def test_replay_answers_from_a_saved_log_as_the_judge_did(tmp_path: Path, jfs: Path) -> None:
    from biasjudge.eval.protocol import run_eval, select_runs

    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[:5]
    judge = OrderDebiasedJudge(Judge(PositionBiasedBackend(), mode="score"))
    log = run_eval(judge, holdout, tmp_path, checkpoint_name="j", runs=select_runs("original,swapped"), progress=False)
    replay = make_judge(f"replay:{tmp_path / 'predictions.json'}")
    for swapped in (False, True):
        replayed = replay.judge_batch([JudgeRequest(p, swapped=swapped) for p in holdout])
        saved = [p for p in log.detailed if p.run_type == ("swapped" if swapped else "original")]
        assert len(saved) == len(replayed) == 5
        assert [r.verdict for r in replayed] == [p.verdict for p in saved]
        assert [r.wrappers.single_order_verdict for r in replayed] == [p.wrappers.single_order_verdict for p in saved]
    other = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[10]
    assert replay.judge_batch([JudgeRequest(other)])[0].verdict == "PARSE_FAIL"


def test_a_changed_model_file_is_judged_again_not_read_from_the_cache(tmp_path: Path, jfs: Path) -> None:
    from biasjudge.eval.protocol import CACHE_NAME, run_eval, select_runs

    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records[:3]
    runs = select_runs("original,swapped")

    def lines_after(identity: str) -> int:
        backend = PositionBiasedBackend()
        backend.identity = identity  # type: ignore[attr-defined]
        run_eval(
            OrderDebiasedJudge(Judge(backend, mode="score")),
            holdout,
            tmp_path,
            checkpoint_name="j",
            runs=runs,
            progress=False,
        )
        return (tmp_path / CACHE_NAME).read_text().count("\n")

    assert lines_after("model.gguf:1:1+adapter.gguf:sha256:aaaa") == 6
    assert lines_after("model.gguf:1:1+adapter.gguf:sha256:aaaa") == 6  # same files: all from the cache
    assert lines_after("model.gguf:1:1+adapter.gguf:sha256:bbbb") == 12  # a re-exported adapter: judged afresh


def test_a_choice_floored_in_either_order_is_reported_in_the_shown_orders_names() -> None:
    from biasjudge.backends.base import ChoiceScores
    from biasjudge.judge.protocol import JudgeRequest

    class FlooringWhenSwapped(PositionBiasedBackend):
        """Floors 'A' only in the swapped order (the server did not list it there)."""

        def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
            scores = super().score(requests, choices)
            swapped = ["**Response A:** " + make_pair().response_b.text in r.messages[-1].content for r in requests]
            return [ChoiceScores(s, floored=["A"] if w else []) for s, w in zip(scores, swapped, strict=True)]

    debiased = OrderDebiasedJudge(Judge(FlooringWhenSwapped(), mode="score"))
    shown, flipped = debiased.judge_batch([JudgeRequest(make_pair()), JudgeRequest(make_pair(), swapped=True)])
    # The swapped order's A is the original B: named B when the original order is shown, A when swapped.
    assert shown.floored_choices == ["B"] and flipped.floored_choices == ["A"]


def test_an_adapter_is_judged_in_the_chat_format_it_was_trained_with(tmp_path: Path, gguf_model: Path) -> None:
    import shutil

    from biasjudge.judge.shipped import shipped_manifest, write_manifest

    shipped = shipped_manifest()
    adapter = tmp_path / "adapter.gguf"
    shutil.copy(shipped.adapter, adapter)
    write_manifest(adapter, system_prompt=shipped.system_prompt, chat_format="gemma3", order="single")
    judge = make_judge(f"llamacpp:embedded-base?adapter={adapter}")
    try:
        assert isinstance(judge, Judge)  # the manifest's order: single
        assert judge.backend.render_format == "gemma3"  # type: ignore[attr-defined]
        assert judge.system_prompt == shipped.system_prompt
    finally:
        judge.close()
