"""A re-exported model in the same eval folder is judged again, and the eval says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from biasjudge.eval.protocol import CACHE_NAME, PREDICTIONS_NAME, run_eval, select_runs
from biasjudge.eval.report import read_log
from biasjudge.io import read_records
from biasjudge.judge.debiased import OrderDebiasedJudge
from biasjudge.judge.judge import Judge
from biasjudge.records import WRAPPER_FIELDS, Pair
from test_shipped_judge import PositionBiasedBackend


def test_a_changed_fingerprint_re_judges_and_says_so(tmp_path: Path, jfs: Path) -> None:
    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=3).records

    def run(identity: str) -> str:
        backend = PositionBiasedBackend()
        backend.identity = identity  # type: ignore[attr-defined]
        console = Console(record=True, width=200)
        run_eval(
            Judge(backend, mode="score"),  # type: ignore[arg-type]
            holdout,
            tmp_path,
            checkpoint_name="j",
            runs=select_runs("original,swapped"),
            progress=False,
            console=console,
        )
        return console.export_text()

    first = run("merged/:aaaa")
    assert "judging them afresh" not in first
    again = run("merged/:aaaa")
    assert "6 of 6 judgments found" in again and "afresh" not in again
    re_exported = run("merged/:bbbb")  # the same folder written again: a new fingerprint
    assert "6 cached judgments" in re_exported and "judging them afresh" in re_exported
    assert (tmp_path / CACHE_NAME).read_text().count("\n") == 12


def test_wrapper_metadata_is_written_nested_and_schema_1_logs_still_read(tmp_path: Path, jfs: Path) -> None:
    """Every log holds a judgment's wrapper fields under `wrappers`; a cache or eval log written
    before schema 2, with those fields at the top level, still reads (and loses none of them)."""
    holdout = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=3).records

    def run() -> str:
        console = Console(record=True, width=200)
        judge = OrderDebiasedJudge(Judge(PositionBiasedBackend(), mode="score"))
        runs = select_runs("original,swapped")
        run_eval(judge, holdout, tmp_path, checkpoint_name="j", runs=runs, progress=False, console=console)
        return console.export_text()

    run()
    log_path, cache_path = tmp_path / PREDICTIONS_NAME, tmp_path / CACHE_NAME
    written = json.loads(log_path.read_text())
    rows = written["detailed"]
    assert all(set(row["wrappers"]) == set(WRAPPER_FIELDS) for row in rows)
    assert {row["wrappers"]["single_order_verdict"] for row in rows} <= {"A", "B", "TIE"}
    assert not any("single_order_verdict" in row for row in rows)
    cached = [json.loads(line) for line in cache_path.read_text().splitlines()]
    assert all(entry["judgment"]["wrappers"]["single_order_verdict"] for entry in cached)

    def flattened(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "wrappers"} | row["wrappers"]

    log_path.write_text(json.dumps(written | {"detailed": [flattened(row) for row in rows]}))
    old_log = read_log(log_path)
    assert [p.wrappers.model_dump() for p in old_log.detailed] == [row["wrappers"] for row in rows]
    assert not any(p.model_extra for p in old_log.detailed)  # no field left behind as an extra
    old_cache = [entry | {"judgment": flattened(entry["judgment"])} for entry in cached]
    cache_path.write_text("".join(json.dumps(entry) + "\n" for entry in old_cache))
    assert "6 of 6 judgments found" in run()  # the schema-1 cache is read, nothing judged again
    assert json.loads(log_path.read_text())["detailed"] == rows
