"""Expanding a locked BBQ sample: stratified new rows, existing lines byte for byte, an independent
seed, the sidecar updated; atomic under a kill; candidate generation then answers only the new rows."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from biasjudge.backends.base import Generation, GenerationParams, PromptRequest
from biasjudge.cli import data as data_cli
from biasjudge.data.bbq import allocate, expand_sample, expand_sample_file, load_raw_bbq, load_sample
from biasjudge.data.candidates import candidate_user_message, generate_candidates
from biasjudge.errors import ConfigError
from biasjudge.io import read_json

CATEGORIES = ("Religion", "Sexual_orientation")


@pytest.fixture(scope="module")
def raw_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real raw BBQ category files (links to the read-only originals)."""
    folder = tmp_path_factory.mktemp("bbq")
    for name in CATEGORIES:
        (folder / f"{name}.jsonl").symlink_to(shared_data / "bbq" / f"{name}.jsonl")
    return folder


def _sample_lines(jfs: Path, per_cell: int, categories: Sequence[str]) -> list[str]:
    """Real lines of bbq_sample.jsonl: the first `per_cell` of each stratum of `categories`."""
    taken: Counter[tuple[str, str, str]] = Counter()
    out = []
    for line in (jfs / "bbq_sample.jsonl").read_text().splitlines(keepends=True):
        row = json.loads(line)
        cell = (row["category"], row["context_condition"], row["question_polarity"])
        if row["category"] in categories and taken[cell] < per_cell:
            taken[cell] += 1
            out.append(line)
    return out


@pytest.fixture
def sample(jfs: Path, tmp_path: Path) -> Path:
    """A locked sample of 16 real rows (2 per stratum of religion and sexual_orientation) and the
    real sidecar (sample seed 42, one expansion with seed 43)."""
    path = tmp_path / "bbq_sample.jsonl"
    path.write_text("".join(_sample_lines(jfs, 2, ("religion", "sexual_orientation"))))
    (tmp_path / "bbq_sample.meta.json").write_bytes((jfs / "bbq_sample.meta.json").read_bytes())
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_expansion_adds_stratified_rows_and_keeps_every_existing_byte(sample: Path, raw_dir: Path) -> None:
    before = sample.read_bytes()
    meta_before = read_json(sample.with_name("bbq_sample.meta.json"))
    run = expand_sample_file(sample, raw_dir, 10)

    after = sample.read_bytes()
    assert after.startswith(before)  # existing lines byte-identical, in place
    new_rows = [json.loads(line) for line in after[len(before) :].decode().splitlines()]
    assert len(new_rows) == run.n_added == 10 and run.n_existing == 16
    old_ids = {q.question_id for q in load_sample(sample)[:16]}
    assert not old_ids & {r["question_id"] for r in new_rows}
    assert len(load_sample(sample)) == 26  # validates; no repeated question_id
    # 10 rows over 8 strata: each gets 1, two get 2 (as even as it goes)
    per_cell = Counter((r["category"], r["context_condition"], r["question_polarity"]) for r in new_rows)
    assert len(per_cell) == 8 and sorted(per_cell.values()) == [1] * 6 + [2] * 2
    assert run.per_cell == {"/".join(cell): n for cell, n in sorted(per_cell.items())}
    # the rows are raw BBQ's, with the derived target label
    raw = {q.question_id: q for q in load_raw_bbq(raw_dir)[0]}
    assert all(raw[r["question_id"]].model_dump(mode="json") == r for r in new_rows)
    # written in the sample's own JSON spelling (the reference's, with spaces)
    assert all(line.startswith('{"question_id": "') for line in after[len(before) :].decode().splitlines())

    meta = read_json(sample.with_name("bbq_sample.meta.json"))
    assert {k: v for k, v in meta.items() if k not in ("expansions", "n_rows_actual")} == {
        k: v for k, v in meta_before.items() if k not in ("expansions", "n_rows_actual")
    }
    assert meta["expansions"][:-1] == meta_before["expansions"]
    entry = meta["expansions"][-1]
    # an independent seed: one past the largest the sidecar names (42 sample, 43 first expansion)
    assert run.seed == entry["expansion_seed"] == 44
    assert (entry["n_added"], entry["n_total_after_expansion"], meta["n_rows_actual"]) == (10, 26, 26)
    assert (entry["sha256_before"], entry["sha256_after"]) == (sha(before), sha(after))
    assert entry["categories"] == ["religion", "sexual_orientation"] and entry["warnings"] == []

    # A second expansion appends again and takes the next seed.
    second = expand_sample_file(sample, raw_dir, 3)
    assert sample.read_bytes().startswith(after) and second.seed == 45 and second.n_total == 29


def test_seed_decides_the_rows_and_a_used_seed_is_refused(sample: Path, raw_dir: Path, tmp_path: Path) -> None:
    raw = load_raw_bbq(raw_dir)[0]
    copies = []
    for name in ("one", "two", "three"):
        folder = tmp_path / name
        folder.mkdir()
        copies.append(folder / sample.name)
        copies[-1].write_bytes(sample.read_bytes())
    shuffled = list(raw)
    random.Random(1).shuffle(shuffled)  # the order of the raw questions does not matter
    expand_sample(copies[0], raw, 8, seed=7)
    expand_sample(copies[1], shuffled, 8, seed=7)
    expand_sample(copies[2], raw, 8, seed=8)
    assert copies[0].read_bytes() == copies[1].read_bytes() != copies[2].read_bytes()
    for used in (42, 43):  # the sample's seed and the first expansion's, from the real sidecar
        with pytest.raises(ConfigError, match=f"seed {used} was already used"):
            expand_sample(sample, raw, 4, seed=used)


def test_short_pools_take_all_and_say_so(jfs: Path, tmp_path: Path, raw_dir: Path) -> None:
    sample = tmp_path / "s.jsonl"
    sample.write_text("".join(_sample_lines(jfs, 1, ("sexual_orientation", "ses"))))
    raw = load_raw_bbq(raw_dir, ["Sexual_orientation"])[0]
    run = expand_sample(sample, raw, len(raw) + 50, out=tmp_path / "out.jsonl")
    assert run.n_added == len(raw) - 4  # every raw question not in the sample
    assert any("added all of them" in w for w in run.warnings)
    assert any("no raw BBQ questions for ses" in w for w in run.warnings)  # a sample category without raw data
    assert sample.read_text() == "".join(_sample_lines(jfs, 1, ("sexual_orientation", "ses")))  # --out: untouched
    assert not (tmp_path / "s.meta.json").exists() and (tmp_path / "out.meta.json").exists()
    assert run.seed == 43  # no sidecar names a seed: the reference's first-expansion seed


def test_allocate_is_even_within_capacities() -> None:
    rng = random.Random(0)
    for _ in range(200):
        caps = {(str(i), "c", "p"): rng.randrange(0, 9) for i in range(rng.randrange(1, 7))}
        n = rng.randrange(0, 40)
        got = allocate(n, caps, random.Random(rng.random()))
        assert sum(got.values()) == min(n, sum(caps.values()))
        assert all(0 <= got[c] <= caps[c] for c in caps)
        not_full = [got[c] for c in caps if got[c] < caps[c]]
        # a cell below its capacity never has fewer than any other cell minus one
        assert all(v >= max(got.values()) - 1 for v in not_full)


def test_the_sample_spelling_is_kept(jfs: Path, tmp_path: Path, raw_dir: Path) -> None:
    # A sample written by biasjudge itself (compact JSON) gets compact lines.
    questions = [q for q in load_sample(jfs / "bbq_sample.jsonl") if q.category == "religion"][:4]
    compact = tmp_path / "compact.jsonl"
    compact.write_text("".join(q.model_dump_json() + "\n" for q in questions))
    before = compact.read_bytes()
    expand_sample_file(compact, raw_dir, 2)
    new = compact.read_bytes()[len(before) :].decode().splitlines()
    assert len(new) == 2 and all(line.startswith('{"question_id":"') for line in new)


# --------------------------------------------------------------------------- killed mid-write

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from biasjudge.data.bbq import expand_sample_file

    real_fsync, calls = os.fsync, [0]

    def stalling_fsync(fd):
        # atomic writes fsync their temp file just before the rename: stall there to be killed
        calls[0] += 1
        if calls[0] == int(sys.argv[4]):
            print("stalled", flush=True)
            time.sleep(120)
        real_fsync(fd)

    os.fsync = stalling_fsync
    expand_sample_file(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize("killed_at", [1, 2], ids=["writing-sidecar", "writing-sample"])
def test_a_kill_mid_expansion_loses_nothing_and_the_rerun_finishes(
    sample: Path, raw_dir: Path, tmp_path: Path, killed_at: int
) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in ("bbq_sample.jsonl", "bbq_sample.meta.json"):
        (reference / name).write_bytes((sample.parent / name).read_bytes())
    expand_sample_file(reference / "bbq_sample.jsonl", raw_dir, 12)  # the same expansion, not interrupted

    before, meta_before = sample.read_bytes(), sample.with_name("bbq_sample.meta.json").read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(sample), str(raw_dir), "12", str(killed_at)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "stalled"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert sample.read_bytes() == before  # the sample is whole: the old one
    meta = read_json(sample.with_name("bbq_sample.meta.json"))
    if killed_at == 1:
        assert sample.with_name("bbq_sample.meta.json").read_bytes() == meta_before
    else:  # the sidecar got its entry; the sample did not: the entry says which file it was for
        assert meta["expansions"][-1]["sha256_before"] == sha(before)

    rerun = expand_sample_file(sample, raw_dir, 12)
    assert (rerun.recovered is not None) == (killed_at == 2)
    assert sample.read_bytes() == (reference / "bbq_sample.jsonl").read_bytes()
    assert [e["expansion_seed"] for e in read_json(sample.with_name("bbq_sample.meta.json"))["expansions"]] == [43, 44]


# --------------------------------------------------------------------------- then candidates resume


class Counting:
    """A real backend, with the prompts it was sent counted."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.prompts: list[str] = []

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        self.prompts += [r.messages[-1].content for r in requests]
        out: list[Generation] = self.backend.generate(requests, params)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


@pytest.mark.slow
def test_candidates_answer_only_the_new_rows(jfs: Path, tmp_path: Path, raw_dir: Path, gguf_model: Path) -> None:
    from biasjudge.backends.registry import make_backend

    sample = tmp_path / "bbq_sample.jsonl"
    sample.write_text(_sample_lines(jfs, 1, ("sexual_orientation",))[0])
    candidates = tmp_path / "candidates.jsonl"
    params = GenerationParams(max_tokens=2)
    backend = Counting(make_backend(f"llamacpp:{gguf_model}"))
    try:
        generate_candidates(load_sample(sample), backend, candidates, model_name="g", params=params, progress=False)
        first = candidates.read_bytes()
        run = expand_sample_file(sample, raw_dir, 1)
        backend.prompts.clear()
        got = generate_candidates(load_sample(sample), backend, candidates, model_name="g", params=params)
    finally:
        backend.close()
    # the resume key (question_id, model) sends only the new question to the model
    assert len(run.added) == 1 and backend.prompts == [candidate_user_message(q) for q in run.added]
    assert candidates.read_bytes().startswith(first)  # the earlier answers are untouched
    assert [c.question_id for c in got] == [q.question_id for q in load_sample(sample)]


# --------------------------------------------------------------------------- the command


def test_cli_expand_dry_run_then_for_real(sample: Path, raw_dir: Path, tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    data_cli.register(app)
    runner = CliRunner()
    before = sample.read_bytes()
    args = ["data", "expand", "--sample", str(sample), "--n", "6", "--bbq-dir", str(raw_dir)]
    dry = runner.invoke(app, [*args, "--dry-run"], env={"COLUMNS": "160"})
    assert dry.exit_code == 0, dry.output
    assert "would add 6 of 6" in dry.output and sample.read_bytes() == before
    real = runner.invoke(app, [*args, "--seed", "100"], env={"COLUMNS": "160"})
    assert real.exit_code == 0, real.output
    assert "16 existing rows kept, added 6 of 6 asked, 22 in all" in real.output
    assert "(seed 100)" in real.output and sample.read_bytes().startswith(before)
    again = runner.invoke(app, [*args, "--seed", "100"])
    assert isinstance(again.exception, ConfigError)  # 100 is used now
