"""`biasjudge data ...` end to end through Typer's test runner, on the real judge-from-scratch files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from biasjudge.backends.base import Generation, GenerationParams, PromptRequest
from biasjudge.cli import data as data_cli
from biasjudge.data.holdout import check_leakage, load_pairs
from biasjudge.io import meta_path, read_json, read_records
from biasjudge.records import SCHEMA_VERSION, DPORow, SFTRow
from biasjudge.verdict import parse


def _app() -> typer.Typer:
    # A fresh app with only the data group: the test does not depend on the other command groups.
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    data_cli.register(app)
    return app


runner = CliRunner()


def invoke(*args: str | Path) -> typer.testing.Result:  # type: ignore[name-defined]
    return runner.invoke(_app(), ["data", *map(str, args)], env={"COLUMNS": "160"})


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    result = invoke("build", "--data-dir", shared_data, "--out", out)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


OUTPUTS = ["pairs", "holdout", "train_pool", "unused", "labelled", "sft", "dpo"]


def test_build_writes_every_file_with_a_sidecar(built: Path) -> None:
    for name in OUTPUTS:
        assert (built / f"{name}.jsonl").exists(), name
        meta = read_json(meta_path(built / f"{name}.jsonl"))
        assert meta["stage"] == f"data/build/{name}" and meta["schema_version"] == SCHEMA_VERSION
        assert meta["counts"]["rows"] == sum(1 for _ in (built / f"{name}.jsonl").open())
        assert meta["inputs"] and all(len(sha) == 64 for sha in meta["inputs"].values()), name
    assert read_json(built / "answer_key_kappa.meta.json")["stage"] == "data/build/answer_key_kappa"


def test_build_counts_and_no_leakage(built: Path) -> None:
    holdout = load_pairs(built / "holdout.jsonl").records
    train = load_pairs(built / "train_pool.jsonl").records
    sft = read_records(built / "sft.jsonl", SFTRow).records
    dpo = read_records(built / "dpo.jsonl", DPORow).records
    # reference holdout; train pool = pairs_to_label less the 441 pairs whose question is held out
    assert (len(load_pairs(built / "pairs.jsonl").records), len(holdout), len(train)) == (2370, 300, 1497)
    assert len(load_pairs(built / "unused.jsonl").records) == 132 + 441
    assert all(p.response_a.suspected_bias_level and p.human_verdict for p in holdout)  # levels attached
    assert (len(sft), len(dpo)) == (2 * 1497, 2 * 971)
    for items in (train, sft, dpo):
        assert check_leakage(holdout, items).ok
    assert all(p.label_from("answer_key") for p in load_pairs(built / "labelled.jsonl").records)
    assert all(parse(r.completion)[0] == r.verdict for r in sft)
    assert all(parse(r.chosen)[0] != parse(r.rejected)[0] for r in dpo)
    meta = read_json(built / "dpo.meta.json")
    assert meta["counts"]["rejected_sources"] == {"hard_negative": 543, "verdict_flip": 428}


def test_build_kappa_file(built: Path) -> None:
    kappa = read_json(built / "answer_key_kappa.json")
    assert kappa["used"] == "tie"
    cells = {(c["slice"], c["bucket"], c["subset"]): c for c in kappa["settings"]["tie"]["cells"]}
    assert round(cells["in_dist", "all", "all"]["kappa"], 3) == 0.816
    assert round(cells["ood_religion", "all", "known_levels"]["kappa"], 3) == 0.754
    wins = {(c["slice"], c["bucket"], c["subset"]): c for c in kappa["settings"]["biased_wins"]["cells"]}
    assert round(wins["in_dist", "all", "all"]["kappa"], 3) == 0.722


def test_build_at_pair_level_reproduces_pairs_to_label(shared_data: Path, tmp_path: Path, jfs: Path) -> None:
    result = invoke("build", "--data-dir", shared_data, "--out", tmp_path, "--leakage-level", "pair")
    assert result.exit_code == 0, result.output
    train = {p.pair_id for p in load_pairs(tmp_path / "train_pool.jsonl").records}
    assert train == {p.pair_id for p in load_pairs(jfs / "pairs_to_label.jsonl").records}
    assert sum(1 for _ in (tmp_path / "sft.jsonl").open()) == 3876
    assert sum(1 for _ in (tmp_path / "dpo.jsonl").open()) == 2596
    assert "0.816" in result.output and "sft.jsonl" in result.output


def test_check_passes_on_the_build_and_fails_on_a_planted_leak(built: Path, tmp_path: Path) -> None:
    ok = invoke("check", "--holdout", built / "holdout.jsonl", "--train", built / "train_pool.jsonl",
                "--train", built / "sft.jsonl", "--train", built / "dpo.jsonl")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("ok") >= 3

    planted = load_pairs(built / "holdout.jsonl").records[7]
    leaky = tmp_path / "leaky.jsonl"
    shutil.copy(built / "train_pool.jsonl", leaky)
    with leaky.open("a") as handle:
        handle.write(planted.model_copy(update={"pair_id": "planted0000000000", "labels": []}).model_dump_json() + "\n")
    bad = invoke("check", "--holdout", built / "holdout.jsonl", "--train", leaky)
    assert bad.exit_code != 0
    assert planted.question_id in bad.output and "LEAK" in bad.output
    # at pair level the same file passes (new pair_id), planting the pair itself fails
    assert (
        invoke("check", "--holdout", built / "holdout.jsonl", "--train", leaky, "--leakage-level", "pair").exit_code
        == 0
    )
    with leaky.open("a") as handle:
        handle.write(planted.model_dump_json() + "\n")
    bad_pair = invoke("check", "--holdout", built / "holdout.jsonl", "--train", leaky, "--leakage-level", "pair")
    assert bad_pair.exit_code != 0 and planted.pair_id in bad_pair.output


def test_stats_json(built: Path) -> None:
    result = runner.invoke(
        _app(), ["data", "stats", str(built / "sft.jsonl"), "--pairs", str(built / "labelled.jsonl"), "--json"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["rows"] == 2994 and stats["swap"] == {"false": 1497, "true": 1497}
    assert "unknown" not in stats["category"] and sum(stats["bucket"].values()) == 2994
    table = invoke("stats", built / "dpo.jsonl")
    assert table.exit_code == 0 and "split" in table.output


def test_split_of_pairs_without_the_ood_category_prints_its_table(jfs: Path, tmp_path: Path) -> None:
    """A new bias axis's pairs may hold no pair of the OOD category: the split still reports (0 OOD)."""
    lines = (jfs / "pairs.jsonl").read_text().splitlines(keepends=True)
    no_religion = tmp_path / "pairs.jsonl"
    no_religion.write_text("".join(line for line in lines if '"bias_category": "religion"' not in line))
    result = invoke("split", "--pairs", no_religion, "--out", tmp_path / "split")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "unused_ood 0" in result.output and (tmp_path / "split" / "holdout.jsonl").exists()


def test_skip_invalid_writes_rejects(jfs: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "judge-from-scratch").mkdir(parents=True)
    for name in ("eval_set_unlabeled.jsonl", "synthesis_results.jsonl"):
        shutil.copy(jfs / name, data_dir / "judge-from-scratch" / name)
    broken = data_dir / "judge-from-scratch" / "pairs.jsonl"
    lines = (jfs / "pairs.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["pair_category"] = "not_a_bucket"
    broken.write_text("\n".join([json.dumps(first), *lines[1:], "{broken json"]) + "\n")

    strict = invoke("build", "--data-dir", data_dir, "--out", tmp_path / "strict")
    assert strict.exit_code != 0 and "pair_category" in str(strict.exception)

    out = tmp_path / "lenient"
    result = invoke("build", "--data-dir", data_dir, "--out", out, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "2371 in, 2369 valid, 2 rejected" in result.output
    rejects = [json.loads(line) for line in (out / "pairs.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(1, "pair_category"), (2371, None)]


def test_label_and_rows_commands(jfs: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text("".join((jfs / "pairs_to_label.jsonl").read_text().splitlines(keepends=True)[:40]))
    labelled = tmp_path / "labelled.jsonl"
    result = invoke("label", "--pairs", small, "--out", labelled, "--labels", "answer-key")
    assert result.exit_code == 0, result.output
    assert all(p.label_from("answer_key") for p in load_pairs(labelled).records)
    assert read_json(tmp_path / "labelled.meta.json")["config"]["unclear_vs_biased"] == "tie"

    rows_out = tmp_path / "rows"
    result = invoke("rows", "--pairs", labelled, "--out", rows_out, "--hard-negatives", jfs / "synthesis_results.jsonl")
    assert result.exit_code == 0, result.output
    assert len(read_records(rows_out / "sft.jsonl", SFTRow).records) == 80
    assert (rows_out / "dpo.meta.json").exists()


def test_label_teacher_from_reference_file(jfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "teacher_labelled.jsonl"
    result = invoke("label", "--pairs", jfs / "pairs.jsonl", "--out", out, "--labels", "teacher",
                    "--teacher-file", jfs / "dryrun_sonnet.jsonl")  # fmt: skip
    assert result.exit_code == 0, result.output
    labelled = [p for p in load_pairs(out).records if p.label_from("teacher")]
    assert len(labelled) == 50


class _FixedBackend:
    """Answers every prompt with one fixed teacher output."""

    def __init__(self, target: str, *, spec: str) -> None:
        self.spec = spec

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        text = "<reasoning>Response A leans on a stereotype.</reasoning><verdict>A</verdict><confidence>4</confidence>"
        return [Generation(text=text, finish_reason="stop") for _ in requests]

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return 0

    def close(self) -> None:
        pass


def test_label_teacher_through_a_backend_spec(jfs: Path, tmp_path: Path, scratch_registry: None) -> None:
    from biasjudge.backends.registry import register_backend

    register_backend("fixed-teacher-test")(lambda: _FixedBackend)
    small = tmp_path / "small.jsonl"
    small.write_text("".join((jfs / "pairs_to_label.jsonl").read_text().splitlines(keepends=True)[:5]))
    out = tmp_path / "labelled.jsonl"
    result = invoke("label", "--pairs", small, "--out", out, "--labels", "teacher", "--judge", "fixed-teacher-test:")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "5 labelled now" in result.output
    pairs = load_pairs(out).records
    assert all(p.label_from("teacher").verdict == "A" for p in pairs)  # type: ignore[union-attr]
    again = invoke("label", "--pairs", small, "--out", out, "--labels", "teacher", "--judge", "fixed-teacher-test:")
    assert "0 labelled now, 5 resumed" in again.output


class _LetterBackend:
    """A candidate model that always answers the letter named in its spec (`letter-test:A`)."""

    def __init__(self, target: str, *, spec: str) -> None:
        self.spec = spec
        self.letter = target or "A"

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        text = f"The passage decides it. <answer>{self.letter}</answer>"
        return [Generation(text=text, finish_reason="stop") for _ in requests]

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return 0

    def close(self) -> None:
        pass


def test_candidates_classify_pairs_commands(jfs: Path, tmp_path: Path, scratch_registry: None) -> None:
    from biasjudge.backends.registry import register_backend
    from biasjudge.records import CandidateResponse

    register_backend("letter-test")(lambda: _LetterBackend)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join((jfs / "bbq_sample.jsonl").read_text().splitlines(keepends=True)[:30]))
    cands = tmp_path / "candidates.jsonl"
    for spec in ("letter-test:A", "letter-test:B", "letter-test:C"):
        result = invoke("candidates", "--questions", questions, "--out", cands, "--judge", spec, "--limit", "20")
        assert result.exit_code == 0, result.output + repr(result.exception)
    again = invoke("candidates", "--questions", questions, "--out", cands, "--judge", "letter-test:A", "--limit", "20")
    assert again.exit_code == 0
    assert len(read_records(cands, CandidateResponse).records) == 60  # resumed: nothing generated twice

    classified = tmp_path / "classified.jsonl"
    result = invoke("classify", "--questions", questions, "--candidates", cands, "--out", classified)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = read_records(classified, CandidateResponse).records
    assert len(rows) == 60
    # Each answer is read as the letter its model wrote (`letter-test:B` always answers B).
    assert [c.chosen_letter for c in rows] == [c.model.rsplit(":", 1)[1] for c in rows]
    assert all(c.answer_class in ("correct", "biased", "incorrect_other") for c in rows)

    pairs_out = tmp_path / "pairs.jsonl"
    result = invoke("pairs", "--questions", questions, "--candidates", classified, "--out", pairs_out)
    assert result.exit_code == 0, result.output + repr(result.exception)
    built = load_pairs(pairs_out).records
    assert built and read_json(tmp_path / "pairs.meta.json")["counts"]["rows"] == len(built)
    assert "both_clean_tie" in result.output


def test_label_human_command_reads_stdin(jfs: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text("".join((jfs / "eval_set_unlabeled.jsonl").read_text().splitlines(keepends=True)[:3]))
    out = tmp_path / "human.jsonl"
    args = ["data", "label-human", "--pairs", str(small), "--out", str(out), "--labeller", "me"]
    result = runner.invoke(_app(), args, input="b\n4\nsubtle\nq\n")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Response B" in result.stdout and "2 pairs left" in result.output
    second = runner.invoke(_app(), args, input="t\n5\n\n")
    assert second.exit_code == 0
    from biasjudge.labels.human import import_human_labels

    labels = import_human_labels(out)
    assert [(label.verdict, label.confidence, label.notes) for label in labels.values()] == [
        ("B", 4, "subtle"),
        ("TIE", 5, None),
    ]
