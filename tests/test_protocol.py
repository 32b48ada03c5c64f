"""The 7-run protocol: run selection, the resumable cache (SIGKILL and torn lines), the log layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console

from biasjudge.errors import ConfigError
from biasjudge.eval.protocol import (
    CACHE_NAME,
    PREDICTIONS_NAME,
    REFERENCE_RUNS,
    group_batches,
    merge_logs,
    prompt_hash,
    run_eval,
    select_runs,
)
from biasjudge.eval.report import read_log
from biasjudge.io import read_records
from biasjudge.judge.judge import Judge
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.records import EvalLog, Judgment, Pair, WrapperMetadata


@pytest.fixture(scope="module")
def holdout(jfs: Path) -> list[Pair]:
    return read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records


def _cache_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / CACHE_NAME).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- runs


def test_reference_runs_are_the_seven() -> None:
    assert [(r.name, r.temperature, r.swapped, r.seed) for r in REFERENCE_RUNS] == [
        ("original", 0.0, False, None),
        ("swapped", 0.0, True, None),
        *((f"consistency_{k}", 0.3, False, k) for k in range(5)),
    ]


def test_select_runs() -> None:
    assert select_runs("all") == REFERENCE_RUNS
    assert [r.name for r in select_runs("original, swapped")] == ["original", "swapped"]
    assert [r.name for r in select_runs("0")] == ["original", "swapped"]
    assert len(select_runs(5)) == 7
    assert [r.name for r in select_runs(["consistency_2"])] == ["consistency_2"]
    for bad, message in [
        ("original,nope", "unknown run nope"),
        ("9", "0-5"),
        ("", "none given"),
        ("original,original", "twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            select_runs(bad)


def test_batches_keep_a_pairs_runs_together(holdout: list[Pair]) -> None:
    groups = [[(p, r, ()) for r in REFERENCE_RUNS] for p in holdout[:5]]
    items = [item for group in groups for item in group]
    batches = list(group_batches(groups, 8))
    assert sum(len(b) for b in batches) == len(items)
    for batch in batches:
        assert Counter(p.pair_id for p, _, _ in batch) == dict.fromkeys({p.pair_id for p, _, _ in batch}, 7)


def test_prompt_hash_covers_system_prompt_and_order(holdout: list[Pair]) -> None:
    pair = holdout[0]
    assert prompt_hash("s", pair, swapped=False) != prompt_hash("t", pair, swapped=False)
    assert prompt_hash("s", pair, swapped=False) != prompt_hash("s", pair, swapped=True)
    assert prompt_hash(None, pair, swapped=False) == prompt_hash("", pair, swapped=False)


# --------------------------------------------------------------------------- run_eval


def test_run_eval_writes_the_reference_layout(tmp_path: Path, holdout: list[Pair]) -> None:
    log = run_eval(make_judge("random:"), holdout, tmp_path, checkpoint_name="Random", limit=20, progress=False)
    assert len(log.detailed) == 20 * 7
    assert Counter(p.run_type for p in log.detailed) == {r.name: 20 for r in REFERENCE_RUNS}
    saved = json.loads((tmp_path / PREDICTIONS_NAME).read_text())
    assert {"run_id", "note", "metrics", "detailed"} <= set(saved)
    row = saved["detailed"][0]
    assert {"checkpoint_name", "pair_id", "run_type", "verdict", "model", "probs"} <= set(row)
    assert row["model"] == "random:" and row["checkpoint_name"] == "Random"
    assert read_log(tmp_path / PREDICTIONS_NAME).metrics == log.metrics
    metrics = log.metrics["Random"]
    assert metrics["n_pairs"] == 20 and metrics["parse_failure_rate"] == 0.0
    assert metrics["brier_score"] == pytest.approx(2 / 3)  # uniform probabilities


def test_rerun_recomputes_nothing(tmp_path: Path, holdout: list[Pair]) -> None:
    run_eval(make_judge("random:"), holdout, tmp_path, checkpoint_name="R", limit=6, progress=False)
    before = (tmp_path / CACHE_NAME).read_bytes()

    class Refuses:
        spec, mode, system_prompt, identity = "random:", "score", None, ""

        def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
            raise AssertionError("a cached judgment was recomputed")

        def count_tokens(self, text: str) -> int:
            return len(text.split())

        def close(self) -> None:
            pass

    log = run_eval(Refuses(), holdout, tmp_path, checkpoint_name="R", limit=6, progress=False)  # type: ignore[arg-type]
    assert (tmp_path / CACHE_NAME).read_bytes() == before and len(log.detailed) == 42


def test_cache_key_separates_checkpoints_and_runs(tmp_path: Path, holdout: list[Pair]) -> None:
    run_eval(
        make_judge("random:"),
        holdout,
        tmp_path,
        checkpoint_name="R",
        limit=3,
        runs=select_runs("original"),
        progress=False,
    )
    run_eval(
        make_judge("random:"),
        holdout,
        tmp_path,
        checkpoint_name="S",
        limit=3,
        runs=select_runs("original"),
        progress=False,
    )
    run_eval(
        make_judge("random:"), holdout, tmp_path, checkpoint_name="S", limit=3, runs=select_runs("all"), progress=False
    )
    rows = _cache_rows(tmp_path)
    assert len(rows) == 3 + 3 + 3 * 6


SLOW_EVAL = textwrap.dedent(
    """
    import sys, time
    from biasjudge.eval.protocol import run_eval
    from biasjudge.io import read_records
    from biasjudge.judge.registry import make_judge
    from biasjudge.records import Pair

    class Slow:
        # random: with a pause per batch, so the test can kill it half way.
        def __init__(self):
            self.inner = make_judge("random:")
            self.spec, self.mode, self.identity = self.inner.spec, self.inner.mode, self.inner.identity
        def judge_batch(self, requests):
            time.sleep(0.02)
            return self.inner.judge_batch(requests)
        def count_tokens(self, text):
            return self.inner.count_tokens(text)
        def close(self):
            pass

    holdout = read_records(sys.argv[1], Pair).records
    run_eval(Slow(), holdout, sys.argv[2], checkpoint_name="Random", batch_size=7, progress=False)
    """
)


def test_resume_after_sigkill(tmp_path: Path, jfs: Path, holdout: list[Pair]) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVAL, str(jfs / "eval_set_unlabeled.jsonl"), str(out)], env=env)
    cache = out / CACHE_NAME
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if cache.exists() and cache.read_bytes().count(b"\n") >= 100:
                break
            assert proc.poll() is None, "the evaluation ended before it could be killed"
            time.sleep(0.005)
        else:
            pytest.fail("the cache never reached 100 lines")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / PREDICTIONS_NAME).exists()
    killed = cache.read_bytes()
    complete = killed[: killed.rfind(b"\n") + 1]
    n_before = complete.count(b"\n")
    assert 100 <= n_before < 2100

    log = run_eval(make_judge("random:"), holdout, out, checkpoint_name="Random", progress=False)

    after = cache.read_bytes()
    assert after.startswith(complete), "earlier cache lines must stay byte-identical"
    rows = _cache_rows(out)
    keys = Counter((r["pair_id"], r["run"]) for r in rows)
    assert len(rows) == 300 * 7 and set(keys.values()) == {1}, "a (pair, run) is duplicated"
    assert set(keys) == {(p.pair_id, r.name) for p in holdout for r in REFERENCE_RUNS}, "a (pair, run) is missing"
    assert len(log.detailed) == 2100
    # The resumed log is the same as an uninterrupted one (random: is a pure function of its inputs).
    fresh = run_eval(make_judge("random:"), holdout, tmp_path / "fresh", checkpoint_name="Random", progress=False)
    assert [p.model_dump() for p in fresh.detailed] == [p.model_dump() for p in log.detailed]


def test_torn_last_cache_line_is_recovered(tmp_path: Path, holdout: list[Pair]) -> None:
    run_eval(make_judge("random:"), holdout, tmp_path, checkpoint_name="R", limit=4, progress=False)
    cache = tmp_path / CACHE_NAME
    lines = cache.read_bytes().splitlines(keepends=True)
    kept = b"".join(lines[:10])
    cache.write_bytes(kept + lines[10][: len(lines[10]) // 2])  # a kill in the middle of a write
    log = run_eval(make_judge("random:"), holdout, tmp_path, checkpoint_name="R", limit=4, progress=False)
    assert cache.read_bytes().startswith(kept)
    rows = _cache_rows(tmp_path)
    assert len(rows) == 28 and len({(r["pair_id"], r["run"]) for r in rows}) == 28
    assert len(log.detailed) == 28


class Truncating:
    """A generate-mode judge whose every third output hit the token cap after a verdict."""

    spec, mode, system_prompt, identity = "fake:truncating", "generate", "sys", ""

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        return [
            Judgment(
                pair_id=r.pair.pair_id,
                verdict="A",
                finish_reason="length" if i % 3 == 0 else "stop",
                swapped=r.swapped,
                judge=self.spec,
            )
            for i, r in enumerate(requests)
        ]

    def count_tokens(self, text: str) -> int:
        return len(text)

    def close(self) -> None:
        pass


def test_truncated_generations_are_counted_and_reported(tmp_path: Path, holdout: list[Pair]) -> None:
    console = Console(record=True, width=200)
    log = run_eval(
        Truncating(),  # type: ignore[arg-type]
        holdout,
        tmp_path,
        checkpoint_name="T",
        limit=9,
        runs=select_runs("original"),
        batch_size=3,
        console=console,
        progress=False,
    )
    truncated = [p for p in log.detailed if p.finish_reason == "length"]
    assert len(truncated) == 3 and all(p.verdict == "PARSE_FAIL" for p in truncated)
    assert log.metrics["T"]["n_truncated"] == 3
    assert log.metrics["T"]["parse_failure_rate"] == pytest.approx(1 / 3)
    assert "3 of 9 generations hit the token cap" in console.export_text()


def test_merge_logs(tmp_path: Path, holdout: list[Pair]) -> None:
    a = run_eval(make_judge("random:"), holdout, tmp_path / "a", checkpoint_name="A", limit=3, progress=False)
    b = run_eval(make_judge("always-tie:"), holdout, tmp_path / "b", checkpoint_name="B", limit=3, progress=False)
    merged = merge_logs([a, b])
    assert list(merged.metrics) == ["A", "B"] and len(merged.detailed) == 42
    # Side by side and unchanged: each log's rows in order (3 pairs x 7 runs each), its own metrics.
    assert merged.detailed == [*a.detailed, *b.detailed]
    assert merged.metrics == {"A": a.metrics["A"], "B": b.metrics["B"]}
    assert merged.run_id == f"{a.run_id}+{b.run_id}"
    with pytest.raises(ConfigError, match="checkpoint 'A' is in log 0"):
        merge_logs([a, a])
    assert EvalLog.model_validate_json(merged.model_dump_json()) == merged  # the merged log round-trips


def test_every_setting_that_changes_a_verdict_is_in_the_cache_key(tmp_path: Path) -> None:
    from biasjudge.backends.base import files_identity
    from biasjudge.eval.protocol import judge_identity

    class Backend:
        spec = "fake:"
        identity = "model.gguf:1:1"
        render_format = "gemma4"

    base = Judge(Backend(), mode="score")  # type: ignore[arg-type]
    seen = {judge_identity(base)}
    for change in (
        {"parse_mode": "lenient"},
        {"max_tokens": 17},
        {"score_with_reasoning": True},
    ):
        judge = Judge(Backend(), mode="score", **change)  # type: ignore[arg-type]
        seen.add(judge_identity(judge))
    other_format = Backend()
    other_format.render_format = "chat_template:abc"
    seen.add(judge_identity(Judge(other_format, mode="score")))  # type: ignore[arg-type]
    assert len(seen) == 5  # each setting moves the key

    # A model folder re-written in place (a re-export) gets a new fingerprint, and so does an adapter file.
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"v1")
    before = files_identity(folder)
    (folder / "model.safetensors").write_bytes(b"v2-longer")
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"weights 1")
    first = files_identity(adapter)
    adapter.write_bytes(b"weights 2")
    assert files_identity(folder) != before and files_identity(adapter) != first
    assert files_identity("google/gemma-3-270m") == "google/gemma-3-270m"  # a hub id is itself


class _Reversed:
    """random: whose answers come back in reverse order (or one short), breaking the protocol."""

    def __init__(self, drop: bool = False) -> None:
        self.inner, self.drop = make_judge("random:"), drop
        self.spec, self.mode, self.identity = "reversed:", "score", ""

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        judged = self.inner.judge_batch(requests)[::-1]
        return judged[1:] if self.drop else judged

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def test_every_judging_loop_refuses_answers_out_of_order(tmp_path: Path, holdout: list[Pair]) -> None:
    from biasjudge.errors import BackendError
    from biasjudge.eval.robustness import run_robustness
    from biasjudge.judge.protocol import judge_checked

    requests = [JudgeRequest(pair) for pair in holdout[:3]]
    with pytest.raises(BackendError, match=r"reversed: answered pair .* out of order"):
        judge_checked(_Reversed(), requests)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match=r"reversed: returned 2 judgments for 3 requests"):
        judge_checked(_Reversed(drop=True), requests)  # type: ignore[arg-type]
    # eval and robustness run the same checked step.
    with pytest.raises(BackendError, match="out of order"):
        run_eval(_Reversed(), holdout, tmp_path / "eval", checkpoint_name="R", limit=3, progress=False)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="out of order"):
        run_robustness(_Reversed(), holdout[:2], tmp_path / "robust", name="R", progress=False)  # type: ignore[arg-type]


def test_a_prediction_keeps_every_field_it_shares_with_its_judgment() -> None:
    from biasjudge.eval.protocol import prediction_from
    from biasjudge.records import SHARED_WITH_JUDGMENT

    judgment = Judgment(
        pair_id="p",
        verdict="B",
        reasoning="why",
        probs={"A": 0.1, "B": 0.8, "TIE": 0.1},
        mode="score",
        floored_choices=["TIE"],
        wrappers=WrapperMetadata(
            uncalibrated_probs={"A": 0.2, "B": 0.7, "TIE": 0.1}, route="ood: religion", single_order_verdict="A"
        ),
        judge="route:r.json",
    )
    prediction = prediction_from(judgment, checkpoint_name="R", run="original", model="route:r.json")
    assert prediction.wrappers.route == "ood: religion"  # the field prediction_from used to drop
    for name in SHARED_WITH_JUDGMENT:
        assert getattr(prediction, name) == getattr(judgment, name), name
    assert (prediction.checkpoint_name, prediction.run_type, prediction.model) == ("R", "original", "route:r.json")
