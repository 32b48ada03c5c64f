"""The human labelling tool's safety: the lock (a holder named, a stale lock reported), one backup
per session, review mode, seeded random order, nothing saved lost to a kill, and two labellers' kappa."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from biasjudge.cli import data as data_cli
from biasjudge.data.holdout import load_pairs
from biasjudge.labels.human import (
    HumanSession,
    LabelSessionConfig,
    human_agreement,
    label_interactively,
    order_pairs,
    read_human_labels,
)
from biasjudge.labels.human_safety import LabelsLockedError, backup_paths, labels_lock, lock_path_for
from biasjudge.records import Pair


@pytest.fixture
def pairs_file(jfs: Path, tmp_path: Path) -> Path:
    """Six real holdout pairs."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join((jfs / "eval_set_unlabeled.jsonl").read_text().splitlines(keepends=True)[:6]))
    return path


@pytest.fixture
def pairs(pairs_file: Path) -> list[Pair]:
    return load_pairs(pairs_file).records


def session(pairs: list[Pair], out: Path, script: str, **kwargs: Any) -> tuple[HumanSession, str]:
    screen = io.StringIO()
    config = LabelSessionConfig(labeller=str(kwargs.pop("labeller", "tester")), **kwargs)
    result = label_interactively(pairs, out, config, input_stream=io.StringIO(script), output_stream=screen)
    return result, screen.getvalue()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def n_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def label_human_process(pairs_file: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """`biasjudge data label-human` in its own process, answers fed through stdin."""
    command = [sys.executable, "-m", "biasjudge.cli.main", "data", "label-human"]
    command += ["--pairs", str(pairs_file), "--out", str(out), "--labeller", "bob", *extra]
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )


# --------------------------------------------------------------------------- the lock


HOLDER = textwrap.dedent(
    """
    import sys, time
    from biasjudge.labels.human_safety import labels_lock

    with labels_lock(sys.argv[1], labeller="alice"):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_a_second_session_is_refused_naming_the_holder(pairs: list[Pair], tmp_path: Path) -> None:
    out = tmp_path / "human.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LabelsLockedError) as refused:
            session(pairs, out, "a\n5\n\n")
        message = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "alice" in message
        assert str(lock_path_for(out)) in message
        assert not out.exists()  # nothing was written by the refused session
    finally:
        holder.kill()
        holder.wait()
    # Killed, the holder leaves its lock file behind: stale, reported, taken over.
    assert json.loads(lock_path_for(out).read_text())["pid"] == holder.pid
    result, shown = session(pairs, out, "a\n5\n\nq\n")
    assert result.stale_lock is not None and result.stale_lock.pid == holder.pid
    assert "stale lock" in shown and f"pid {holder.pid}" in shown
    assert result.n_labelled == 1 and not lock_path_for(out).exists()  # released at the end


def test_one_process_cannot_open_a_file_twice(tmp_path: Path) -> None:
    out = tmp_path / "human.jsonl"
    refused = pytest.raises(LabelsLockedError, match=rf"pid {os.getpid()}")
    with labels_lock(out, labeller="a"), refused, labels_lock(out, labeller="b"):
        pass
    with labels_lock(out, labeller="b") as stale:  # released: free again, and not stale
        assert stale is None


def test_a_lock_from_another_host_needs_break_lock(pairs: list[Pair], tmp_path: Path) -> None:
    out = tmp_path / "human.jsonl"
    lock_path_for(out).write_text(
        json.dumps({"pid": 4242, "host": "labelling-box-2", "labeller": "carol", "started_utc": "2026-01-01T00:00:00"})
    )
    with pytest.raises(LabelsLockedError, match=r"labelling-box-2.*--break-lock"):
        session(pairs, out, "a\n5\n\n")
    result, _ = session(pairs, out, "a\n5\n\nq\n", break_lock=True)
    assert result.stale_lock is not None and result.stale_lock.host == "labelling-box-2"
    assert result.n_labelled == 1


# --------------------------------------------------------------------------- killed mid-session


def test_a_killed_session_loses_no_saved_label(pairs_file: Path, pairs: list[Pair], tmp_path: Path) -> None:
    out = tmp_path / "human.jsonl"
    child = label_human_process(pairs_file, out)
    try:
        assert child.stdin is not None
        child.stdin.write("a\n5\nfirst\nb\n4\n\n")  # two labels, then it waits for the third pair
        child.stdin.flush()
        wait_for(lambda: n_lines(out) == 2, "two saved labels")
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    records = read_human_labels(out).records
    assert [(r.pair_id, r.verdict, r.confidence, r.notes) for r in records] == [
        (pairs[0].pair_id, "A", 5, "first"),
        (pairs[1].pair_id, "B", 4, None),
    ]
    result, shown = session(pairs, out, "t\n3\n\nq\n")
    assert result.n_resumed == 2 and result.n_labelled == 1
    assert result.stale_lock is not None and result.stale_lock.pid == child.pid
    assert pairs[0].pair_id not in shown and pairs[2].pair_id in shown
    assert [r.pair_id for r in read_human_labels(out).records] == [p.pair_id for p in pairs[:3]]


def test_a_kill_during_review_keeps_every_saved_change(pairs_file: Path, pairs: list[Pair], tmp_path: Path) -> None:
    out = tmp_path / "human.jsonl"
    session(pairs, out, "a\n5\n\nb\n4\n\nt\n3\n\nq\n")
    child = label_human_process(pairs_file, out, "--review")
    try:
        assert child.stdin is not None
        child.stdin.write("t\n\n\n")  # first pair: A -> TIE, confidence and notes kept; then it waits
        child.stdin.flush()
        wait_for(lambda: '"verdict":"TIE"' in out.read_text().splitlines()[0], "the changed label")
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    records = read_human_labels(out).records  # whole and valid: the rewrite is atomic
    assert [(r.pair_id, r.verdict, r.confidence) for r in records] == [
        (pairs[0].pair_id, "TIE", 5),
        (pairs[1].pair_id, "B", 4),
        (pairs[2].pair_id, "TIE", 3),
    ]
    assert records[0].revised_utc is not None and records[1].revised_utc is None
    assert len(backup_paths(out)) == 1


# --------------------------------------------------------------------------- backup, review, order


def test_one_backup_before_the_first_write_of_a_session(pairs: list[Pair], tmp_path: Path) -> None:
    out = tmp_path / "human.jsonl"
    first, _ = session(pairs, out, "a\n5\n\nb\n4\n\nq\n")
    assert first.backup_path is None and backup_paths(out) == []  # nothing to back up yet
    before = out.read_bytes()
    second, shown = session(pairs, out, "t\n3\n\na\n2\n\nq\n")
    assert second.n_labelled == 2 and backup_paths(out) == [second.backup_path]
    assert second.backup_path is not None and second.backup_path.read_bytes() == before and "Backup" in shown
    third, _ = session(pairs, out, "q\n")  # writes nothing: no backup
    assert third.backup_path is None and len(backup_paths(out)) == 1
    fourth, _ = session(pairs, out, "a\n1\n\nq\n", backup=False)
    assert fourth.n_labelled == 1 and len(backup_paths(out)) == 1


def test_review_keeps_changes_and_deletes(pairs: list[Pair], tmp_path: Path) -> None:
    out = tmp_path / "human.jsonl"
    session(pairs, out, "a\n5\nolder\nb\n4\n\nt\n3\n\nq\n")
    lines = out.read_text().splitlines()
    # p0: Enter keeps; p1: b again, same confidence, no note = unchanged; p2: delete; p3+: not labelled
    kept, _ = session(pairs, out, "\nb\n\n\nd\n", review=True, labeller="reviewer")
    assert (kept.n_kept, kept.n_changed, kept.n_deleted) == (2, 0, 1)
    assert out.read_text().splitlines() == lines[:2]  # the untouched lines byte for byte
    # a change: p1 B -> A with confidence 2 and a note; quit at p0's... order is file order here
    changed, shown = session(pairs, out, "\na\n2\nsecond look\n", review=True, labeller="reviewer")
    assert changed.n_changed == 1 and "Current label: B, confidence 4" in shown
    records = read_human_labels(out).records
    assert [(r.pair_id, r.verdict, r.confidence, r.notes, r.labeller) for r in records] == [
        (pairs[0].pair_id, "A", 5, "older", "tester"),
        (pairs[1].pair_id, "A", 2, "second look", "reviewer"),
    ]
    assert records[1].revised_utc is not None and records[1].labelled_utc == json.loads(lines[1])["labelled_utc"]
    # the deleted pair is unlabelled again: labelling mode offers it
    again, shown = session(pairs, out, "q\n")
    assert again.n_resumed == 2 and pairs[2].pair_id in shown


def test_random_order_is_seeded_and_the_same_in_every_session(pairs: list[Pair], tmp_path: Path) -> None:
    order = [p.pair_id for p in order_pairs(pairs, random_order=True, seed=5)]
    assert sorted(order) == sorted(p.pair_id for p in pairs)
    assert order != [p.pair_id for p in pairs] and order != [
        p.pair_id for p in order_pairs(pairs, random_order=True, seed=6)
    ]
    out = tmp_path / "human.jsonl"
    session(pairs, out, "a\n5\n\nb\n5\n\nq\n", random_order=True, seed=5)
    assert [r.pair_id for r in read_human_labels(out).records] == order[:2]
    # the next session goes on in the same order, the skipped pair coming back after
    session(pairs, out, "s\nt\n4\n\nq\n", random_order=True, seed=5)
    assert [r.pair_id for r in read_human_labels(out).records] == [*order[:2], order[3]]


# --------------------------------------------------------------------------- two labellers


def test_two_labellers_agreement(pairs_file: Path, pairs: list[Pair], tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice.jsonl", tmp_path / "bob.jsonl"
    session(pairs, alice, "a\n5\n\nb\n4\n\nt\n5\n\na\n3\n\nb\n5\n\nq\n", labeller="alice")
    session(pairs, bob, "a\n4\n\nb\n4\n\na\n2\n\ns\nb\n3\n\nq\n", labeller="bob")  # skips the 4th
    cmp = human_agreement(alice, bob, pairs_file=pairs_file)
    a, b = ["A", "B", "TIE", "B"], ["A", "B", "A", "B"]  # the four pairs both labelled
    assert (cmp.n_a, cmp.n_b, cmp.n_shared, cmp.overall.n_agree) == (5, 4, 4, 3)
    observed = 3 / 4
    chance = sum((a.count(v) / 4) * (b.count(v) / 4) for v in ("A", "B", "TIE"))
    assert cmp.overall.kappa == pytest.approx((observed - chance) / (1 - chance))
    buckets = {p.pair_id: p.pair_category for p in pairs}
    assert sum(c.n for c in cmp.groups) == 4 and {c.group for c in cmp.groups} <= set(buckets.values())

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    data_cli.register(app)
    result = CliRunner().invoke(
        app, ["data", "agreement", str(alice), str(bob), "--pairs", str(pairs_file)], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    assert "alice" in result.output and "3 (75.0%)" in result.output
