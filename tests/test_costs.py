"""Cost control (biasjudge.backends.costs): prices, the ledger, the budget, the dry run, in-flight calls.

The arithmetic is checked with a stand-in backend whose token counts are fixed, so a budget that
admits exactly k calls can be stated; the stages that would call a paid API (candidates, teacher
labels; synthesis in test_synthesis.py) run through the CLI against a REAL OpenAI-compatible
server (llama-cpp-python's, the embedded 270M), killed with SIGKILL mid-run and stopped by a
budget. A scripted server is used once: to show that a dry run sends no generate request, which
the real server cannot tell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from biasjudge.backends.base import Generation, GenerationParams, PromptRequest
from biasjudge.backends.costs import (
    BUDGET_EXIT_CODE,
    BudgetReached,
    CostControl,
    LedgerEntry,
    ModelPrice,
    PriceTable,
    load_prices,
    read_ledger,
)
from biasjudge.backends.registry import make_backend
from biasjudge.cli import data as data_cli
from biasjudge.data.bbq import load_sample
from biasjudge.data.candidates import candidate_messages, generate_candidates
from biasjudge.errors import ConfigError
from biasjudge.io import read_records, side_path
from biasjudge.labels.teacher import teacher_messages
from biasjudge.records import CandidateResponse, Pair, Question
from http_stub import stub_server

MODEL = "gemma-3-270m"
PRICES_YAML = f"models:\n  {MODEL}: {{input: 1000.0, output: 1000.0}}\n"
"""A made-up price for the local model ($0.001 a token), so budgets are round numbers."""


class Counted:
    """Stands in for a priced API model: every call reports `prompt` and `completion` tokens."""

    def __init__(self, spec: str = "openai:stand-in#m", prompt: int = 100, completion: int = 4) -> None:
        self.spec = spec
        self.model = spec.rsplit("#", 1)[-1]
        self.prompt, self.completion = prompt, completion
        self.calls = 0

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        self.calls += len(requests)
        return [
            Generation("<answer>A</answer>", "stop", prompt_tokens=self.prompt, completion_tokens=self.completion)
            for _ in requests
        ]

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def per_output_token(usd: float) -> PriceTable:
    """Prices where a call costs `usd` per completion token and nothing for its prompt."""
    return PriceTable(models={"m": ModelPrice(input=0.0, output=usd * 1_000_000)})


@pytest.fixture(scope="module")
def questions(jfs: Path) -> list[Question]:
    return load_sample(jfs / "bbq_sample.jsonl")[:5]


# --------------------------------------------------------------------------- prices


def test_prices_shipped_and_a_users_file_laid_over_them(tmp_path: Path) -> None:
    shipped = load_prices()
    sonnet = shipped.price_of("claude-sonnet-4-6")
    assert sonnet is not None and (sonnet.input, sonnet.output) == (3.0, 15.0)
    own = tmp_path / "prices.yaml"
    own.write_text("as_of: 2026-06-01\nmodels:\n  gpt-4o: {input: 1.0, output: 2.0}\n  local-*: {input: 0, output: 0}")
    table = load_prices(own)
    assert table.price_of("gpt-4o") == ModelPrice(input=1.0, output=2.0)  # overridden
    assert table.price_of("claude-sonnet-4-6") == sonnet  # kept
    assert table.price_of("local-gemma") == ModelPrice(input=0, output=0)  # a pattern
    assert table.price_of("nobody") is None
    assert ModelPrice(input=3.0, output=15.0).usd(1_000_000, 100_000) == pytest.approx(4.5)

    with pytest.raises(ConfigError, match="prices file not found"):
        load_prices(tmp_path / "absent.yaml")
    own.write_text("models:\n  gpt-4o: {input: -1, output: 2}\n")
    with pytest.raises(ConfigError, match=r"key 'models.gpt-4o.input'"):
        load_prices(own)


def test_an_unpriced_api_model_is_refused_under_a_budget_and_free_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = Counted("openai:stand-in#mystery")
    with (
        CostControl(tmp_path / "ledger.jsonl", prices=PriceTable(), budget_usd=1.0) as control,
        pytest.raises(ConfigError, match=r"'mystery' has no price.*--prices FILE"),
    ):
        control.meter(backend, "candidates")
    with caplog.at_level(logging.WARNING), CostControl(tmp_path / "ledger.jsonl", prices=PriceTable()) as control:
        meter = control.meter(backend, "candidates")
        meter.generate([PromptRequest(())], GenerationParams(max_tokens=5), ["q1"])
    assert "'mystery' has no price" in caplog.text
    (entry,) = read_ledger(tmp_path / "ledger.jsonl")
    assert (entry.priced, entry.usd, entry.prompt_tokens, entry.tokens_from) == (False, 0.0, 100, "server")
    # An in-process backend is the user's own compute: free, without a warning.
    with CostControl(tmp_path / "ledger.jsonl", prices=PriceTable(), budget_usd=0.0) as control:
        assert control.meter(Counted("llamacpp:model.gguf"), "candidates").price == ModelPrice(input=0, output=0)


# --------------------------------------------------------------------------- the budget


def test_a_budget_stops_before_the_call_that_could_cross_it_and_a_rerun_goes_on(
    tmp_path: Path, questions: list[Question]
) -> None:
    out, ledger = tmp_path / "candidates.jsonl", tmp_path / "ledger.jsonl"
    params = GenerationParams(max_tokens=10)  # a call's bound: 10 output tokens = $10; it spends $4

    def run(budget: float) -> tuple[Counted, BudgetReached | None]:
        backend = Counted()
        try:
            with CostControl(ledger, prices=per_output_token(1.0), budget_usd=budget) as cost:
                generate_candidates(questions, backend, out, model_name="m", params=params, batch_size=2, cost=cost)
        except BudgetReached as exc:
            return backend, exc
        return backend, None

    # $25: batch 1 (bounds 10 + 10) goes out and spends 8; of batch 2 one call fits (8 + 10 + 10 > 25), spends 4,
    # then the other is weighed against what was really spent (12 + 10 <= 25) and goes out; 16 + 10 > 25 stops.
    backend, stop = run(25.0)
    assert stop is not None and backend.calls == 4
    assert (stop.spent, stop.next_usd, stop.key) == (pytest.approx(16.0), pytest.approx(10.0), questions[4].question_id)
    assert len(read_records(out, CandidateResponse).records) == 4
    assert sum(e.usd for e in read_ledger(ledger)) == pytest.approx(16.0)  # <= 25

    backend, stop = run(25.0)  # the same budget again: refused before any call, nothing changes
    assert stop is not None and backend.calls == 0 and stop.spent == pytest.approx(16.0)
    assert len(read_ledger(ledger)) == 4

    backend, stop = run(100.0)  # more budget: the rest, and nothing twice
    assert stop is None and backend.calls == 1
    ids = [c.question_id for c in read_records(out, CandidateResponse, unique_key="question_id").records]
    assert sorted(ids) == sorted(q.question_id for q in questions)
    entries = read_ledger(ledger)
    assert [e.key for e in entries] == [q.question_id for q in questions]
    assert {(e.stage, e.model, e.prompt_tokens, e.completion_tokens, e.usd) for e in entries} == {
        ("candidates", "m", 100, 4, 4.0)
    }


def test_calls_in_flight_when_a_run_was_killed_are_booked_at_their_bound(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    control = CostControl(ledger, prices=per_output_token(1.0)).open()
    meter = control.meter(Counted(), "teacher")
    params = GenerationParams(max_tokens=7)
    meter.generate([PromptRequest(())], params, ["p0"])  # booked normally
    done = read_ledger(ledger)[0]
    in_flight = [
        LedgerEntry(time="t", stage="teacher", model="m", key="p1", prompt_tokens=50, completion_tokens=7, usd=7.0,
                    tokens_from="in_flight", call_id="c1"),
        done.model_copy(update={"tokens_from": "in_flight"}),  # written to the ledger before the kill
    ]  # fmt: skip
    control.mark_in_flight(in_flight)
    control.close()  # what a SIGKILL leaves: the in-flight file, no ledger line for p1

    with CostControl(ledger, prices=per_output_token(1.0), budget_usd=12.0) as again:
        assert again.booked_in_flight == 1 and again.spent == pytest.approx(4.0 + 7.0)
        assert not again.inflight_path.exists()
        with pytest.raises(BudgetReached):  # 11 + a bound of 7 > 12
            again.meter(Counted(), "teacher").generate([PromptRequest(())], params, ["p2"])
    assert [(e.key, e.tokens_from) for e in read_ledger(ledger)] == [("p0", "server"), ("p1", "in_flight")]


def test_a_second_run_over_the_same_ledger_is_refused(tmp_path: Path) -> None:
    with CostControl(tmp_path / "ledger.jsonl"), pytest.raises(ConfigError, match="another run over this ledger"):
        CostControl(tmp_path / "ledger.jsonl").open()
    with pytest.raises(ConfigError, match="--budget-usd must be"):
        CostControl(tmp_path / "ledger.jsonl", budget_usd=-1.0)


# --------------------------------------------------------------------------- the CLI: dry run


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    data_cli.register(app)
    return app


def test_a_dry_run_estimates_and_sends_no_generate_request(
    tmp_path: Path, questions: list[Question], jfs: Path
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  m: {input: 2.0, output: 10.0}\n")
    out = tmp_path / "candidates.jsonl"
    with stub_server() as stub:
        result = CliRunner().invoke(
            _app(),
            ["data", "candidates", "--questions", str(jfs / "bbq_sample.jsonl"), "--limit", "3", "--out", str(out),
             "--judge", f"openai:{stub.url}#m", "--max-tokens", "50", "--prices", str(prices), "--dry-run"],
            env={"COLUMNS": "200"},
        )  # fmt: skip
        # The same bound through the library: the dry run printed what the budget check would use.
        control = CostControl(tmp_path / "cost_ledger.jsonl", prices=load_prices(prices), dry_run=True)
        backend = make_backend(f"openai:{stub.url}#m")
        try:
            meter = control.meter(backend, "candidates")
            bounds = [meter.bound(PromptRequest(tuple(candidate_messages(q))), GenerationParams(max_tokens=50))
                      for q in questions[:3]]  # fmt: skip
        finally:
            backend.close()
    assert result.exit_code == 0, result.output
    assert stub.seen("/v1/completions") == [] and stub.seen("/v1/chat/completions") == []
    assert not out.exists() and not (tmp_path / "cost_ledger.jsonl").exists()
    usd = sum(b[1] for b in bounds)
    printed = " ".join(result.output.split())  # Rich wraps at the terminal's width
    assert f"candidates (m): 3 calls, {sum(b[0] for b in bounds)} prompt tokens, at most 150 output" in printed
    assert f"at most ${usd:.4f}" in printed


# --------------------------------------------------------------------------- the stages, on the real server


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "biasjudge.cli.main", "data", *map(str, args)]


def lines(*paths: Path) -> list[dict[str, object]]:
    """The complete JSON lines of `paths` (a torn last line left by a kill is skipped)."""
    rows: list[dict[str, object]] = []
    for path in paths:
        if path.exists():
            for text in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    rows.append(json.loads(text))
    return rows


def budget_then_kill_then_resume(
    command: list[str],
    outputs: Sequence[Path],
    ledger: Path,
    expected: set[str],
    first_bound: float,
    ledger_key: Callable[[str], str] = lambda key: key,
) -> None:
    """One stage's CLI, three times: stopped by a budget, killed mid-run, finished.

    `outputs`: the files an item ends in (an output and its dropped file); every item of
    `expected` (pair or question ids) must end in exactly one of them, once.
    """
    env = {**os.environ, "COLUMNS": "200"}
    # 1. A budget that holds the first call's bound only: stops before the second (exit 3).
    budget = first_bound
    first = subprocess.run([*command, "--budget-usd", f"{budget!r}"], capture_output=True, text=True, env=env)
    assert first.returncode == BUDGET_EXIT_CODE, first.stdout + first.stderr
    assert "budget reached" in first.stderr
    done = lines(*outputs)
    assert len(done) == 1  # the second call's bound did not fit
    spent = sum(e.usd for e in read_ledger(ledger))
    assert 0 < spent <= budget

    # 2. More budget, killed with SIGKILL once it has written an item and the next call is in flight.
    in_flight = side_path(ledger, ".inflight.json")
    child = subprocess.Popen([*command, "--budget-usd", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (len(lines(*outputs)) > len(done) and in_flight.exists()) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL  # killed, not finished
    assert in_flight.exists() and len(lines(*outputs)) == len(done) + 1 < len(expected)
    paid_before = len(read_ledger(ledger))

    # 3. Rerun: finishes the rest, nothing lost, nothing twice, every call in the ledger.
    last = subprocess.run([*command, "--budget-usd", "1000"], capture_output=True, text=True, env=env)
    assert last.returncode == 0, last.stdout + last.stderr
    keys = [str(row["pair_id"] if "pair_id" in row else row["question_id"]) for row in lines(*outputs)]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))
    entries = read_ledger(ledger)
    served = {e.key for e in entries if e.tokens_from == "server"}
    assert {ledger_key(k) for k in expected} <= served  # every item's call was booked with the server's usage
    assert all(e.model == MODEL and e.prompt_tokens > 0 for e in entries)
    # The call the kill cut off was booked at its bound (it may have been billed), and redone.
    assert [e.tokens_from for e in entries[paid_before:]] == ["in_flight", "server"]
    assert not in_flight.exists()
    assert sum(e.usd for e in entries) <= 1000


def shortest_questions(jfs: Path, n: int) -> list[Question]:
    questions = load_sample(jfs / "bbq_sample.jsonl")
    return sorted(questions, key=lambda q: len(q.context) + len(q.question))[:n]


def shortest_pairs(path: Path, n: int, keep: Callable[[Pair], bool] = lambda p: True) -> list[Pair]:
    pairs = [p for p in read_records(path, Pair).records if keep(p)]
    return sorted(pairs, key=lambda p: len(p.question_text + p.response_a.text + p.response_b.text))[:n]


def first_bound(url: str, request: PromptRequest, max_tokens: int, prices: Path, stage: str) -> float:
    """The budget check's bound of one call, as the CLI will compute it."""
    backend = make_backend(f"openai:{url}#{MODEL}")
    try:
        control = CostControl(prices.parent / "unused.jsonl", prices=load_prices(prices), dry_run=True)
        return control.meter(backend, stage).bound(request, GenerationParams(max_tokens=max_tokens))[1]
    finally:
        backend.close()


@pytest.mark.heavy  # 11 s; the teacher labels run the same budget-and-resume path on a real server
def test_candidates_on_a_real_server_stop_at_the_budget_and_resume_after_a_kill(
    tmp_path: Path, jfs: Path, llama_server: str
) -> None:
    picked = shortest_questions(jfs, 3)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(q.model_dump_json() + "\n" for q in picked))
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES_YAML)
    out = tmp_path / "candidates.jsonl"
    command = cli("candidates", "--questions", questions, "--out", out, "--judge", f"openai:{llama_server}#{MODEL}",
                  "--batch-size", "1", "--max-tokens", "4", "--prices", prices)  # fmt: skip
    bound = first_bound(llama_server, PromptRequest(tuple(candidate_messages(picked[0]))), 4, prices, "candidates")
    budget_then_kill_then_resume(command, [out], tmp_path / "cost_ledger.jsonl", {q.question_id for q in picked}, bound)


RUBRIC = (
    "Say which response leans MORE on a stereotype about a group: A, B, or TIE. Reply only "
    "<reasoning>one sentence</reasoning><verdict>A|B|TIE</verdict><confidence>1-5</confidence>."
)


@pytest.mark.slow
def test_teacher_labels_on_a_real_server_stop_at_the_budget_and_resume_after_a_kill(
    tmp_path: Path, jfs: Path, llama_server: str
) -> None:
    picked = shortest_pairs(jfs / "pairs_to_label.jsonl", 3)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(p.model_dump_json() + "\n" for p in picked))
    rubric, prices = tmp_path / "rubric.md", tmp_path / "prices.yaml"
    rubric.write_text(RUBRIC)
    prices.write_text(PRICES_YAML)
    out = tmp_path / "labelled.jsonl"
    command = cli("label", "--pairs", pairs, "--out", out, "--labels", "teacher",
                  "--judge", f"openai:{llama_server}#{MODEL}", "--batch-size", "1", "--max-tokens", "8",
                  "--rubric-file", rubric, "--prices", prices)  # fmt: skip
    request = PromptRequest(tuple(teacher_messages(picked[0], RUBRIC)))
    bound = first_bound(llama_server, request, 8, prices, "teacher")
    raw = side_path(out, "_teacher.jsonl")
    outputs = [raw, side_path(raw, ".dropped.jsonl")]  # a label, or an unreadable output
    budget_then_kill_then_resume(command, outputs, tmp_path / "cost_ledger.jsonl", {p.pair_id for p in picked}, bound)
    assert len(read_records(out, Pair).records) == 3  # the labelled pairs file, written at the end
