"""Label agreement and the flip gate, on the real dry runs of two teachers and the human holdout."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from biasjudge.cli import data as data_cli
from biasjudge.errors import ConfigError, DataError
from biasjudge.io import read_json
from biasjudge.labels.agreement import agreement_report, compare_two
from biasjudge.labels.answer_key import kappa_table
from biasjudge.labels.flips import flip_gate, flip_report
from biasjudge.labels.label_sets import kappa, read_label_set
from biasjudge.records import Pair

runner = CliRunner()
Version = tuple[Path, dict[str, str], set[str], set[str]]
"""A second version of a label file: (path, pair_id -> new verdict, pairs dropped, pairs shifted)."""


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    data_cli.register(app)
    return app


def invoke(*args: str | Path) -> Result:
    return runner.invoke(_app(), ["data", *map(str, args)], env={"COLUMNS": "160"})


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hand_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa written out, to check the library against something that is not scikit-learn."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    chance = sum((a.count(v) / n) * (b.count(v) / n) for v in ("A", "B", "TIE"))
    return (observed - chance) / (1 - chance)


@pytest.fixture(scope="module")
def dryruns(jfs: Path) -> tuple[Path, Path]:
    return jfs / "dryrun_sonnet.jsonl", jfs / "dryrun_opus.jsonl"


@pytest.fixture(scope="module")
def dryrun_pairs(jfs: Path, dryruns: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 50 dry-run pairs, as real lines of pairs.jsonl."""
    ids = {r["pair_id"] for r in rows(dryruns[0])}
    out = tmp_path_factory.mktemp("pairs") / "dryrun_pairs.jsonl"
    lines = (jfs / "pairs.jsonl").read_text().splitlines(keepends=True)
    out.write_text("".join(line for line in lines if json.loads(line)["pair_id"] in ids))
    return out


# --------------------------------------------------------------------------- agreement


def test_two_teachers_agree_as_the_files_say(dryruns: tuple[Path, Path], jfs: Path) -> None:
    sonnet_path, opus_path = dryruns
    sonnet = {r["pair_id"]: r for r in rows(sonnet_path)}
    opus = {r["pair_id"]: r for r in rows(opus_path)}
    shared = sorted(set(sonnet) & set(opus))
    a = [sonnet[p]["verdict"] for p in shared]
    b = [opus[p]["verdict"] for p in shared]

    holdout = jfs / "eval_set_unlabeled.jsonl"
    report = agreement_report([read_label_set(sonnet_path), read_label_set(opus_path), read_label_set(holdout)])
    cmp = report.get("dryrun_sonnet", "dryrun_opus")
    assert (cmp.n_a, cmp.n_b, cmp.n_shared) == (len(sonnet), len(opus), len(shared))
    assert cmp.overall.n_agree == sum(x == y for x, y in zip(a, b, strict=True))
    assert cmp.overall.kappa == pytest.approx(hand_kappa(a, b))
    assert sum(sum(row.values()) for row in cmp.confusion.values()) == len(shared)
    # per bucket: the counts add up, and each bucket's kappa is that bucket's own
    assert sum(cell.n for cell in cmp.groups) == len(shared)
    for cell in cmp.groups:
        ids = [p for p in shared if sonnet[p]["pair_category"] == cell.group]
        ga, gb = [sonnet[p]["verdict"] for p in ids], [opus[p]["verdict"] for p in ids]
        assert cell.n == len(ids)
        if len(set(ga) | set(gb)) > 1:
            assert cell.kappa == pytest.approx(hand_kappa(ga, gb))
        else:  # one class on both sides: undefined, reported as None (both_clean_tie is all TIE)
            assert cell.kappa is None and cell.agreement == 1.0

    # The dry runs were drawn from the training pool: no pair is in the human holdout. That is
    # reported as n = 0 with no kappa, never silently left out.
    human_ids = {r["pair_id"] for r in rows(holdout)}
    for name in ("dryrun_sonnet", "dryrun_opus"):
        vs_human = report.get(name, "eval_set_unlabeled")
        assert vs_human.n_shared == len(set(sonnet) & human_ids) == 0
        assert vs_human.overall.kappa is None and vs_human.n_b == len(human_ids)
    assert [s.n for s in report.sets] == [50, 50, 300]


def test_kappa_is_symmetric_and_ignores_row_order(dryruns: tuple[Path, Path], tmp_path: Path) -> None:
    sonnet, opus = (read_label_set(p) for p in dryruns)
    forward, backward = compare_two(sonnet, opus), compare_two(opus, sonnet)
    assert forward.overall.kappa == pytest.approx(backward.overall.kappa)
    assert [c.kappa for c in forward.groups] == [c.kappa for c in backward.groups]
    lines = dryruns[1].read_text().splitlines(keepends=True)
    random.Random(3).shuffle(lines)
    shuffled = tmp_path / "opus_shuffled.jsonl"
    shuffled.write_text("".join(lines))
    again = compare_two(sonnet, read_label_set(shuffled))
    assert again.overall == forward.overall and again.groups == forward.groups
    assert kappa(["A", "B"], ["B", "A"]) == pytest.approx(-1.0)


def test_answer_key_against_humans_matches_the_answer_key_module(
    jfs: Path, tmp_path: Path, holdout_with_levels: list[Pair]
) -> None:
    # `data label` (answer key) writes a pair file; agreement reads it against the holdout's
    # human_verdict and must give what answer_key.kappa_table computes by its own path.
    labelled = tmp_path / "answer_key.jsonl"
    result = invoke("label", "--pairs", jfs / "pairs.jsonl", "--out", labelled)
    assert result.exit_code == 0, result.output
    human = read_label_set(jfs / "eval_set_unlabeled.jsonl", name="human", source="human")
    key = read_label_set(labelled, name="answer_key", source="answer_key")
    cmp = agreement_report([human, key], by="eval_slice").get("human", "answer_key")
    table = kappa_table(holdout_with_levels)
    assert cmp.n_shared == len(human) == 300
    for cell in cmp.groups:
        assert cell.kappa == pytest.approx(table.get(cell.group).kappa)
        assert cell.n == table.get(cell.group).n_scored


@pytest.fixture(scope="module")
def holdout_with_levels(jfs: Path) -> list[Pair]:
    from biasjudge.data.holdout import attach_levels, load_pairs

    return attach_levels(load_pairs(jfs / "eval_set_unlabeled.jsonl").records, load_pairs(jfs / "pairs.jsonl").records)


def test_label_command_output_reads_like_the_dry_run(
    dryruns: tuple[Path, Path], dryrun_pairs: Path, tmp_path: Path
) -> None:
    # What `biasjudge data label --labels teacher` writes (a pair file with teacher labels) is read
    # as the same label set as the dry-run file it was made from.
    out = tmp_path / "labelled.jsonl"
    result = invoke("label", "--pairs", dryrun_pairs, "--out", out, "--labels", "teacher", "--teacher-file", dryruns[0])
    assert result.exit_code == 0, result.output
    from_pairs = read_label_set(out, source="teacher")
    flat = read_label_set(dryruns[0])
    assert from_pairs.format == "pairs" and flat.format == "labels"
    assert from_pairs.labels.keys() == flat.labels.keys()
    assert all(from_pairs.labels[p].verdict == flat.labels[p].verdict for p in flat.labels)
    opus = read_label_set(dryruns[1])
    assert flip_report(from_pairs, opus).flips == flip_report(flat, opus).flips
    # the same file read for another source has none of those labels
    assert read_label_set(out, source="human").labels == {} and read_label_set(out, source="human").n_unlabelled == 50


def test_cli_agreement_writes_the_report(dryruns: tuple[Path, Path], jfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "agreement.json"
    holdout = jfs / "eval_set_unlabeled.jsonl"
    result = invoke("agreement", f"sonnet={dryruns[0]}", f"opus={dryruns[1]}", f"human={holdout}", "--out", out)
    assert result.exit_code == 0, result.output
    report = read_json(out)
    by_names = {(p["a"], p["b"]): p for p in report["pairwise"]}
    assert set(by_names) == {("sonnet", "opus"), ("sonnet", "human"), ("opus", "human")}
    assert by_names[("sonnet", "opus")]["n_shared"] == 50
    assert "sonnet vs opus by pair_category" in result.output
    same_name = invoke("agreement", dryruns[0], dryruns[0])
    assert isinstance(same_name.exception, ConfigError) and "distinct names" in str(same_name.exception)


# --------------------------------------------------------------------------- flips and the gate


def _edited_copy(src: Path, dst: Path, flip: dict[str, str], drop: set[str], shift: set[str]) -> None:
    out = []
    for row in rows(src):
        if row["pair_id"] in drop:
            continue
        if row["pair_id"] in flip:
            row["verdict"] = flip[row["pair_id"]]
        if row["pair_id"] in shift:
            row["confidence"] = 1 if row["confidence"] != 1 else 2
        out.append(json.dumps(row))
    dst.write_text("\n".join(out) + "\n")


@pytest.fixture
def second_version(dryruns: tuple[Path, Path], tmp_path: Path) -> Version:
    """A v2 of the sonnet dry run: three verdicts flipped, one confidence shifted, two pairs lost."""
    original = rows(dryruns[0])
    by_bucket: dict[str, list[dict[str, Any]]] = {}
    for row in original:
        by_bucket.setdefault(row["pair_category"], []).append(row)
    a, b, c = (by_bucket[k] for k in sorted(by_bucket)[:3])
    new_verdict = {"A": "B", "B": "TIE", "TIE": "A"}
    flip = {r["pair_id"]: new_verdict[r["verdict"]] for r in (a[0], a[1], b[0])}
    shift = {c[0]["pair_id"]}
    drop = {c[1]["pair_id"], c[2]["pair_id"]}
    v2 = tmp_path / "dryrun_sonnet_v2.jsonl"
    _edited_copy(dryruns[0], v2, flip, drop, shift)
    return v2, flip, drop, shift


def test_flip_report_names_every_change(dryruns: tuple[Path, Path], second_version: Version) -> None:
    v2, flip, drop, shift = second_version
    old = read_label_set(dryruns[0])
    original = {r["pair_id"]: r for r in rows(dryruns[0])}
    report = flip_report(old, read_label_set(v2))
    assert (report.n_old, report.n_new, report.n_shared) == (50, 48, 48)
    assert report.only_old_ids == sorted(drop) and report.n_only_new == 0
    assert report.verdict_flipped == len(flip) and report.confidence_shifted == len(shift)
    assert report.identical == 48 - len(flip) - len(shift)
    assert {(f.pair_id, f.old_verdict, f.new_verdict) for f in report.flips} == {
        (p, original[p]["verdict"], v) for p, v in flip.items()
    }
    assert [s.pair_id for s in report.shifts] == sorted(shift)
    expected_transitions: dict[str, int] = {}
    for p, v in flip.items():
        key = f"{original[p]['verdict']}->{v}"
        expected_transitions[key] = expected_transitions.get(key, 0) + 1
    assert report.transitions == expected_transitions
    for group, g in report.by_group.items():
        assert g.flipped == sum(original[p]["pair_category"] == group for p in flip)
    assert report.flip_rate == pytest.approx(3 / 48)


def test_gate_pass_regression_invalid(dryruns: tuple[Path, Path], second_version: Version, jfs: Path) -> None:
    v2 = second_version[0]
    old, new = read_label_set(dryruns[0]), read_label_set(v2)
    assert flip_gate(flip_report(old, new), max_flip_rate=0.10).decision == "pass"  # 3/48 = 6.25%
    assert flip_gate(flip_report(old, new), max_flip_rate=0.05).decision == "regression"
    # two flips in one bucket of 10: 20% > 15%
    gate = flip_gate(flip_report(old, new), max_flip_rate=0.10, max_group_flip_rate=0.15)
    assert gate.decision == "regression" and gate.reasons[0].startswith("FAIL") and "2/10" in gate.reasons[0]
    assert flip_gate(flip_report(old, new), max_lost_rate=0.01).decision == "regression"  # 2/50 lost
    assert flip_gate(flip_report(old, new), max_lost_rate=0.05).decision == "pass"
    holdout = read_label_set(jfs / "eval_set_unlabeled.jsonl")
    invalid = flip_gate(flip_report(old, holdout))
    assert invalid.decision == "invalid" and invalid.exit_code == 2
    with pytest.raises(ConfigError, match="max_flip_rate"):
        flip_gate(flip_report(old, new), max_flip_rate=1.5)


def test_cli_flips_exit_codes(dryruns: tuple[Path, Path], second_version: Version, jfs: Path, tmp_path: Path) -> None:
    v2 = second_version[0]
    out = tmp_path / "flips.json"
    passed = invoke("flips", dryruns[0], v2, "--out", out)
    assert passed.exit_code == 0, passed.output
    assert "gate: PASS" in passed.output and read_json(out)["gate"]["decision"] == "pass"
    assert read_json(out)["verdict_flipped"] == 3
    regression = invoke("flips", dryruns[0], v2, "--max-flip-rate", "0.05")
    assert regression.exit_code == 1 and "gate: REGRESSION" in regression.output
    invalid = invoke("flips", dryruns[0], jfs / "eval_set_unlabeled.jsonl")
    assert invalid.exit_code == 2 and "gate: INVALID" in invalid.output
    # the two teachers: the one flip is listed with its bucket
    teachers = invoke("flips", f"sonnet={dryruns[0]}", f"opus={dryruns[1]}", "--json")
    assert teachers.exit_code == 0
    report = json.loads(teachers.stdout[teachers.stdout.index("{") :])
    assert report["old"] == "sonnet" and len(report["flips"]) == report["verdict_flipped"]


def test_invalid_input_exits_2_naming_file_line_and_field(dryruns: tuple[Path, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pair_id": "x", "verdict": "A"}\n{"pair_id": "y", "verdict": "C"}\n')
    # the real entry point: a BiasJudgeError is one red line and exit 2
    done = subprocess.run(
        [sys.executable, "-m", "biasjudge.cli.main", "data", "flips", str(bad), str(dryruns[1])],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert f"{bad}:2: field 'verdict'" in done.stderr

    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"pair_id": "x", "verdict": "A"}\n{"pair_id": "x", "verdict": "B"}\n')
    with pytest.raises(DataError, match=r"dup.jsonl:2: field 'pair_id': duplicate 'x' \(first at line 1\)"):
        read_label_set(dup)
    neither = tmp_path / "neither.jsonl"
    neither.write_text('{"pair_id": "x", "score": 3}\n')
    with pytest.raises(DataError, match=r"neither.jsonl:1: neither a label file"):
        read_label_set(neither)
