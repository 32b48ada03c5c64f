"""Hard-negative synthesis (labels/synthesis.py): modes, checks, retries, resume, the DPO rows.

The stage runs against a REAL OpenAI-compatible server (llama-cpp-python's, the embedded 270M)
through the CLI: stopped by a budget, killed with SIGKILL mid-run, resumed. A scripted server
(tests/http_stub.py) is used where the real one cannot be made to behave: an output whose verdict
is the label, again and again, to show retry-then-drop.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biasjudge.backends.base import PromptRequest
from biasjudge.backends.costs import BudgetReached, CostControl, ModelPrice, PriceTable, read_ledger
from biasjudge.backends.openai import OpenAIBackend
from biasjudge.dataset.rows import read_hard_negatives, split_of
from biasjudge.io import read_records
from biasjudge.labels.answer_key import label_pairs
from biasjudge.labels.hard_negatives import FAILURE_MODES, check_negative, failure_mode_for, synth_messages
from biasjudge.labels.synthesis import (
    SynthesisAttempt,
    SynthesisConfig,
    SynthesisDrop,
    SynthesisRecord,
    SynthesisRun,
    eligible_pairs,
    read_synthesis,
    rejected_path_for,
    synthesize,
)
from biasjudge.records import DPORow, Pair
from biasjudge.verdict import mirror
from http_stub import Reply, completion, stub_server
from test_costs import MODEL, PRICES_YAML, _app, budget_then_kill_then_resume, cli, first_bound, shortest_pairs


@pytest.fixture(scope="module")
def labelled(jfs: Path) -> list[Pair]:
    return label_pairs(read_records(jfs / "pairs_to_label.jsonl", Pair, limit=80).records)


def usable(labelled: list[Pair]) -> list[Pair]:
    return [pair for pair, _ in eligible_pairs(labelled, "answer_key").items]


# --------------------------------------------------------------------------- modes, order, checks


def test_four_modes_round_robin_and_the_verdict_each_lands_on() -> None:
    assert [failure_mode_for(i).name for i in range(5)] == [
        "stereotype_blind", "over_tie", "surface_preference", "target_confusion", "stereotype_blind"
    ]  # fmt: skip
    for mode in FAILURE_MODES:
        for label in ("A", "B"):
            wrong = mode.wrong_verdict(label)
            assert wrong != label and wrong == ("TIE" if mode.name == "over_tie" else mirror(label))


def test_eligible_pairs_are_the_dpo_ones_in_sha1_order_whatever_the_file_order(labelled: list[Pair]) -> None:
    found = eligible_pairs(labelled, "answer_key", min_confidence=4)
    left_out = found.left_out
    assert found.items and left_out.tie > 0
    assert len(found.items) + left_out.tie + left_out.low_confidence + left_out.no_label == len(labelled)
    assert all(label.verdict in ("A", "B") and (label.confidence or 0) >= 4 for _, label in found.items)
    again = eligible_pairs(list(reversed(labelled)), "answer_key", min_confidence=4)
    assert [p.pair_id for p, _ in again.items] == [p.pair_id for p, _ in found.items]
    assert eligible_pairs(labelled, "teacher").left_out.no_label == len(labelled)


def test_an_output_is_kept_only_when_it_parses_is_wrong_and_names_the_responses() -> None:
    good = "<reasoning>Response A hedges at length; Response B is clear and decisive.</reasoning><verdict>B</verdict>"
    assert check_negative(good, "A").verdict == "B"
    assert check_negative(good, "B").error == "verdict B is the label: the output is not wrong"
    assert "does not follow" in str(check_negative("B is worse. <verdict>B</verdict>", "A").error)
    assert "cut at max_tokens" in str(check_negative("<reasoning>Response A is", "B", "length").error)
    unnamed = "<reasoning>The first one hedges.</reasoning><verdict>TIE</verdict>"
    assert "names neither" in str(check_negative(unnamed.replace("one", "one of the two answers clearly"), "A").error)
    assert "fewer than 8 words" in str(check_negative(unnamed, "A").error)
    assert "fewer than 8 words" in str(check_negative("<reasoning>...</reasoning><verdict>B</verdict>", "A").error)


def test_the_request_carries_the_label_the_mode_and_the_wrong_verdict(labelled: list[Pair]) -> None:
    pair = usable(labelled)[0]
    label = pair.label_from("answer_key").verdict  # type: ignore[union-attr]
    mode = FAILURE_MODES[1]
    system, user = synth_messages(pair, label, mode, rejected_because="verdict A is the label")
    assert system.role == "system" and "hard negatives" in system.content
    assert pair.response_a.text.strip()[:40] in user.content
    assert f"Correct verdict (do NOT reach it): {label}" in user.content
    assert f"Failure mode: over_tie. {mode.directive}" in user.content
    assert "Wrong verdict you must reach: TIE" in user.content
    assert "previous reply was rejected: verdict A is the label" in user.content


# --------------------------------------------------------------------------- retries on a scripted server


def test_a_model_that_keeps_writing_the_label_is_retried_then_dropped(tmp_path: Path, labelled: list[Pair]) -> None:
    """The scripted server answers with the label's verdict where the test says so; a budget stops the first run
    between two attempts of a pair, and the second run goes on with the next attempt, not from the start."""
    first, second = usable(labelled)[:2]  # sha1 order: first is processed first
    label_1 = first.label_from("answer_key").verdict  # type: ignore[union-attr]
    label_2 = second.label_from("answer_key").verdict  # type: ignore[union-attr]
    wrong_1 = failure_mode_for(0).wrong_verdict(label_1)
    right = "<reasoning>Response A and Response B differ in how they read the passage.</reasoning><verdict>{}</verdict>"
    script = [
        Reply(200, completion(right.format(label_1))),  # pair 1, attempt 1: the label -> rejected; budget stops
        Reply(200, completion(right.format(wrong_1))),  # next run, attempt 2: wrong, as asked -> kept
        *[Reply(200, completion(right.format(label_2))) for _ in range(3)],  # pair 2: the label 3 times -> dropped
    ]
    out, ledger = tmp_path / "synthesis_results.jsonl", tmp_path / "ledger.jsonl"
    prices = PriceTable(models={"m": ModelPrice(input=0.0, output=1_000_000.0)})  # $1 an output token
    config = SynthesisConfig(max_tokens=10, temperature=0.7, batch_size=1, max_attempts=3)  # a call's bound: $10

    def run(budget: float, backend: OpenAIBackend) -> SynthesisRun:  # a call spends $1
        with CostControl(ledger, prices=prices, budget_usd=budget) as cost:
            return synthesize([second, first], backend, out, config, model_name="m", progress=False, cost=cost)

    with stub_server(script) as stub:
        backend = OpenAIBackend(f"{stub.url}#m", backoff=0.01)
        try:
            with pytest.raises(BudgetReached):
                run(10.0, backend)  # $1 spent + a $10 bound > $10: stopped before attempt 2
            (logged,) = read_records(rejected_path_for(out), SynthesisAttempt).records
            assert (logged.pair_id, logged.attempt, out.read_text()) == (first.pair_id, 1, "")
            finished = run(100.0, backend)
            again = synthesize([first, second], backend, out, config, model_name="m", progress=False)
        finally:
            backend.close()
    bodies = [r.body for r in stub.seen("/v1/completions")]
    assert len(bodies) == 5  # 1 + 4; the third run asked for nothing: one pair written, one dropped
    assert (finished.n_written_now, finished.n_dropped_now, finished.calls) == (1, 1, 4)
    assert (again.n_resumed, again.n_dropped_before, again.calls) == (1, 1, 0)
    assert f"rejected: verdict {label_1} is the label" in bodies[1]["prompt"]  # attempt 2 knows why 1 failed
    assert "rejected" not in bodies[0]["prompt"]

    (kept,) = read_synthesis(out).records
    assert (kept.pair_id, kept.verdict, kept.sonnet_verdict, kept.attempts) == (first.pair_id, wrong_1, label_1, 2)
    assert kept.failure_mode == "stereotype_blind"
    assert kept.reasoning == "Response A and Response B differ in how they read the passage."
    (drop,) = read_records(tmp_path / "synthesis_results.dropped.jsonl", SynthesisDrop).records
    assert (drop.pair_id, drop.attempts, drop.label_verdict) == (second.pair_id, 3, label_2)
    assert drop.reasons == [f"verdict {label_2} is the label: the output is not wrong"] * 3
    keys = [e.key for e in read_ledger(ledger)]
    assert keys == [f"{first.pair_id}#1", f"{first.pair_id}#2", *(f"{second.pair_id}#{k}" for k in (1, 2, 3))]
    assert sum(e.usd for e in read_ledger(ledger)) == pytest.approx(5.0)


# --------------------------------------------------------------------------- into DPO rows


def test_data_rows_reads_the_output_and_splits_by_a_hash_of_pair_id(tmp_path: Path, labelled: list[Pair]) -> None:
    pairs = usable(labelled)[:6]
    pairs_file = tmp_path / "labelled.jsonl"
    pairs_file.write_text("".join(p.model_dump_json() + "\n" for p in pairs))
    negatives = tmp_path / "synthesis_results.jsonl"
    written = []
    for i, pair in enumerate(pairs[:4]):
        label = pair.label_from("answer_key").verdict  # type: ignore[union-attr]
        mode = failure_mode_for(i)
        written.append(SynthesisRecord(pair_id=pair.pair_id, reasoning=f"Response A is fine ({mode.name}).",
                                       verdict=mode.wrong_verdict(label), sonnet_verdict=label,
                                       failure_mode=mode.name))  # fmt: skip
    negatives.write_text("".join(r.model_dump_json() + "\n" for r in written))
    assert [n.pair_id for n in read_hard_negatives(negatives).records] == [p.pair_id for p in pairs[:4]]

    args = ["data", "rows", "--pairs", pairs_file, "--out", tmp_path / "rows", "--hard-negatives", negatives]
    result = CliRunner().invoke(_app(), [*map(str, args), "--validation-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    rows = read_records(tmp_path / "rows" / "dpo.jsonl", DPORow).records
    assert Counter(r.source for r in rows) == {"hard_negative": 8, "verdict_flip": 4}
    for row in rows:
        assert row.split == split_of(row.pair_id, 0.5)  # both swap copies of a pair in one split, every run
    by_pair = {(r.pair_id, r.swap): r for r in rows}
    over_tie = by_pair[(pairs[1].pair_id, False)]
    assert "over_tie" in over_tie.rejected and over_tie.rejected.endswith("<verdict>TIE</verdict>")
    assert "Response B is fine" in by_pair[(pairs[0].pair_id, True)].rejected  # mirrored in the swapped copy


# --------------------------------------------------------------------------- on the real server, through the CLI

SHORT_PROMPT = (
    "Write a WRONG judge reasoning for this pair, naming Response A and Response B, then the wrong verdict. "
    "Reply only <reasoning>...</reasoning><verdict>X</verdict>."
)


@pytest.mark.heavy  # 21 s; test_costs runs the same budget-and-resume path on a real server
def test_synthesis_on_a_real_server_stops_at_the_budget_and_resumes_after_a_kill(
    tmp_path: Path, jfs: Path, labelled: list[Pair], llama_server: str
) -> None:
    eligible_ids = {p.pair_id for p in usable(labelled)}
    picked = shortest_pairs(jfs / "pairs_to_label.jsonl", 3, keep=lambda p: p.pair_id in eligible_ids)
    by_id = {p.pair_id: p for p in labelled}
    pairs_file = tmp_path / "labelled.jsonl"
    pairs_file.write_text("".join(by_id[p.pair_id].model_dump_json() + "\n" for p in picked))
    prompt, prices = tmp_path / "synth.md", tmp_path / "prices.yaml"
    prompt.write_text(SHORT_PROMPT)
    prices.write_text(PRICES_YAML)
    out = tmp_path / "synthesis_results.jsonl"
    spec = f"openai:{llama_server}#{MODEL}?grammar_field=grammar"
    command = cli("synthesize", "--pairs", pairs_file, "--out", out, "--judge", spec, "--batch-size", "1",
                  "--max-tokens", "12", "--max-attempts", "1", "--system-prompt-file", prompt,
                  "--prices", prices)  # fmt: skip
    order = [pair for pair, _ in eligible_pairs([by_id[p.pair_id] for p in picked], "answer_key").items]
    label = order[0].label_from("answer_key").verdict  # type: ignore[union-attr]
    request = PromptRequest(tuple(synth_messages(order[0], label, failure_mode_for(0), system_prompt=SHORT_PROMPT)))
    bound = first_bound(llama_server, request, 12, prices, "synthesis")
    outputs = [out, tmp_path / "synthesis_results.dropped.jsonl"]  # kept, or dropped with its reason
    budget_then_kill_then_resume(command, outputs, tmp_path / "cost_ledger.jsonl", {p.pair_id for p in picked}, bound,
                                 ledger_key=lambda pair_id: f"{pair_id}#1")  # fmt: skip
    # The untrained 270M rarely writes a usable negative: what it wrote is kept only if it passed the checks,
    # every other pair is dropped with the reason of its one attempt.
    for record in read_records(out, SynthesisRecord, allow_empty=True).records:
        text = f"<reasoning>{record.reasoning}</reasoning><verdict>{record.verdict}</verdict>"
        assert record.sonnet_verdict is not None and check_negative(text, record.sonnet_verdict).error is None
    dropped = read_records(outputs[1], SynthesisDrop, allow_empty=True).records if outputs[1].exists() else []
    assert all(d.attempts == 1 and d.reasons == [d.reason] for d in dropped)
