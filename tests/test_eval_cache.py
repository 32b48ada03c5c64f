"""A re-exported model in the same eval folder is judged again, and the eval says so."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from biasjudge.eval.protocol import CACHE_NAME, run_eval, select_runs
from biasjudge.io import read_records
from biasjudge.judge.judge import Judge
from biasjudge.records import Pair
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
