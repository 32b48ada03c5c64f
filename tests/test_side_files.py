"""Sidecars and reject files are unique per data file: two files never share one."""

from __future__ import annotations

import json
from pathlib import Path

from biasjudge.dataset.build import record_read, write_output
from biasjudge.io import meta_path, read_json, read_records
from biasjudge.records import Pair


def test_a_jsonl_and_a_parquet_of_the_same_name_keep_their_own_sidecar_and_rejects(jfs: Path, tmp_path: Path) -> None:
    pairs = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=3).records
    write_output(tmp_path / "pairs.jsonl", pairs, stage="jsonl")
    write_output(tmp_path / "pairs.parquet", pairs[:2], stage="parquet")
    assert meta_path(tmp_path / "pairs.jsonl") != meta_path(tmp_path / "pairs.parquet")
    assert read_json(meta_path(tmp_path / "pairs.jsonl"))["counts"]["rows"] == 3
    assert read_json(meta_path(tmp_path / "pairs.parquet"))["counts"]["rows"] == 2

    bad = tmp_path / "in"
    bad.mkdir()
    for name in ("pairs.jsonl", "pairs.v2.jsonl"):
        lines = (jfs / "eval_set_unlabeled.jsonl").read_text().splitlines()[:2]
        (bad / name).write_text(lines[0] + "\n" + json.dumps({"pair_id": name}) + "\n")
    sides = {
        record_read(read_records(bad / name, Pair, skip_invalid=True), tmp_path).rejects_path
        for name in ("pairs.jsonl", "pairs.v2.jsonl")
    }
    assert sides == {tmp_path / "pairs.rejects.jsonl", tmp_path / "pairs.v2.rejects.jsonl"}
