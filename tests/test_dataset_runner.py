"""Stages as data: one runner reads, sets rejects aside, calls the pure function and writes every output
with its sidecar; a stage's command is generated from its declaration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from biasjudge.cli.main import app
from biasjudge.data.holdout import HoldoutConfig
from biasjudge.dataset.build import ReadReport
from biasjudge.dataset.runner import ONE_FILE, Stage, StageOutput, run_stage
from biasjudge.dataset.stages import CLASSIFY, PAIRS, ROWS, SPLIT, SPLIT_FILES, RowsStageConfig
from biasjudge.io import meta_path, read_records, write_records
from biasjudge.records import Pair

runner = CliRunner()


def _pairs_with_a_broken_line(jfs: Path, tmp_path: Path, n: int = 400) -> Path:
    lines = (jfs / "pairs.jsonl").read_text().splitlines(keepends=True)[:n]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(lines) + '{"pair_id": "broken"}\n')
    return path


def test_the_runner_reads_sets_rejects_aside_and_writes_each_output_with_its_sidecar(jfs: Path, tmp_path: Path) -> None:
    pairs_file = _pairs_with_a_broken_line(jfs, tmp_path)
    reads: list[ReadReport] = []
    out = tmp_path / "split"
    run = run_stage(SPLIT, HoldoutConfig(seed=7), {"pairs": pairs_file}, out, skip_invalid=True, on_read=reads.append)
    assert [(r.n_in, r.n_valid, r.n_rejected) for r in reads] == [(401, 400, 1)]
    assert reads[0].rejects_path is not None and reads[0].rejects_path.parent == out
    assert set(run.files) == set(SPLIT_FILES)
    for name, path in run.files.items():
        meta = json.loads(meta_path(path).read_text())
        assert meta["stage"] == f"data/split/{name}" and meta["config"]["seed"] == 7
        assert (
            meta["counts"]["rows"]
            == len(getattr(run.result, name))
            == len(read_records(path, Pair, allow_empty=True).records)
        )
    assert json.loads(meta_path(run.files["holdout"]).read_text())["counts"]["shortfalls"] == run.result.shortfalls


def test_a_stage_is_any_pure_function_with_declared_inputs(jfs: Path, tmp_path: Path) -> None:
    """A new stage is a declaration: the runner needs nothing else."""

    def first_n(config: HoldoutConfig, *, pairs: list[Pair]) -> StageOutput[int]:
        kept = pairs[: config.seed]
        return StageOutput({ONE_FILE: kept}, len(kept), {ONE_FILE: {"kept": len(kept)}})

    stage = Stage("first-n", "Keep the first N pairs.", (SPLIT.inputs[0],), HoldoutConfig, first_n)
    out = tmp_path / "first.jsonl"
    run = run_stage(stage, HoldoutConfig(seed=5), {"pairs": jfs / "pairs.jsonl"}, out)
    assert run.result == 5 and len(read_records(out, Pair).records) == 5
    assert json.loads(meta_path(out).read_text())["counts"] == {"rows": 5, "kept": 5}


def test_each_stage_command_is_generated_from_its_declaration() -> None:
    commands = typer.main.get_command(app).commands["data"].commands  # type: ignore[attr-defined]
    for stage in (CLASSIFY, PAIRS, SPLIT, ROWS):
        command = commands[stage.name]
        options = {p.name: p for p in command.params}
        assert command.help == stage.help
        for stage_input in stage.inputs:
            option = options[stage_input.name]
            assert option.required == stage_input.required and option.help == stage_input.help
            assert option.opts == [f"--{stage_input.name.replace('_', '-')}"]
        assert options["out"].help == stage.out_help
        assert set(stage.config.model_fields) - {
            "targets",
            "adversarial_split",
            "in_dist_targets",
            "ood_targets",
        } <= set(options)
        assert "config_file" in options


def test_a_generated_command_reads_its_config_file_under_its_flags(jfs: Path, tmp_path: Path) -> None:
    pairs_file = _pairs_with_a_broken_line(jfs, tmp_path)
    config = tmp_path / "split.yaml"
    config.write_text("seed: 3\nood_category: religion\n")
    out = tmp_path / "split"
    args = ["data", "split", "--pairs", str(pairs_file), "--out", str(out), "--config", str(config), "--skip-invalid"]
    result = runner.invoke(app, [*args, "--seed", "11"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    meta = json.loads(meta_path(out / "holdout.jsonl").read_text())
    assert meta["config"]["seed"] == 11 and meta["config"]["ood_category"] == "religion"
    assert (out / "pairs.rejects.jsonl").exists()
    broken = runner.invoke(app, ["data", "split", "--pairs", str(pairs_file), "--out", str(out)])
    assert broken.exit_code != 0 and "pairs.jsonl:401" in str(broken.exception)


def test_an_optional_input_may_be_left_out_and_each_sidecar_names_the_inputs_its_file_is_made_from(
    jfs: Path, tmp_path: Path
) -> None:
    from biasjudge.errors import ConfigError, LeakageError
    from biasjudge.labels.answer_key import label_pairs

    labelled = tmp_path / "labelled.jsonl"
    write_records(labelled, label_pairs(read_records(jfs / "pairs.jsonl", Pair, limit=60).records))
    negatives = jfs / "synthesis_results.jsonl"
    config = RowsStageConfig(dpo_min_confidence=3)
    alone = run_stage(ROWS, config, {"pairs": labelled, "hard_negatives": None}, tmp_path / "alone")
    both = run_stage(ROWS, config, {"pairs": labelled, "hard_negatives": negatives}, tmp_path / "both")
    assert len(alone.result.sft.rows) == len(both.result.sft.rows) > 0
    assert set(alone.result.dpo.rejected_sources) == {"verdict_flip"}  # no negatives: flipped verdicts only
    assert both.result.dpo.rejected_sources.get("hard_negative", 0) > 0
    sidecars = {name: json.loads(meta_path(path).read_text()) for name, path in both.files.items()}
    assert [Path(p).name for p in sidecars["sft"]["inputs"]] == ["labelled.jsonl"]
    assert [Path(p).name for p in sidecars["dpo"]["inputs"]] == ["labelled.jsonl", "synthesis_results.jsonl"]
    assert sidecars["dpo"]["config"]["min_confidence"] == 3 and sidecars["sft"]["config"]["min_confidence"] is None
    assert sidecars["dpo"]["counts"]["rows"] == len(both.result.dpo.rows)
    with pytest.raises(ConfigError, match="--pairs"):
        run_stage(ROWS, config, {"hard_negatives": negatives}, tmp_path / "none")
    with pytest.raises(LeakageError, match="--holdout"):
        run_stage(ROWS, config, {"pairs": labelled, "holdout": labelled}, tmp_path / "leak")
