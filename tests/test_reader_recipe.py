"""`biasjudge train reader` on a small data folder: what it trains on, what it writes, what it installs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biasjudge.cli.main import app
from biasjudge.io import meta_path, read_records
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.recipes.reader import ReaderRecipeConfig, train_reader
from biasjudge.records import AnalysisRow, Pair


@pytest.fixture
def small_data(shared_data: Path, tmp_path: Path) -> Path:
    """One BBQ category file (and religion, which must stay out), the sample and the holdout."""
    root = tmp_path / "data"
    (root / "bbq").mkdir(parents=True)
    (root / "judge-from-scratch").mkdir()
    for name in ("Sexual_orientation.jsonl", "Religion.jsonl"):
        (root / "bbq" / name).symlink_to(shared_data / "bbq" / name)
    for name in ("bbq_sample.jsonl", "eval_set_unlabeled.jsonl"):
        (root / "judge-from-scratch" / name).symlink_to(shared_data / "judge-from-scratch" / name)
    return root


def test_the_recipe_never_trains_on_the_holdout_or_religion_and_reports_both_levels(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "package" / "reading-judge" / "analysis.json"
    monkeypatch.setattr("biasjudge.judge.reading.judge.shipped_analysis", lambda: installed)
    config = ReaderRecipeConfig(
        data_dir=small_data,
        output_dir=tmp_path / "run",
        c_grid=[10.0],
        holdout_runs="original,swapped",
        text_train_pairs=300,
        validation_fraction=0.05,
    )
    result = train_reader(config, install=True, log=lambda line: None)
    holdout = read_records(small_data / "judge-from-scratch" / "eval_set_unlabeled.jsonl", Pair).records
    held_questions = {p.question_id for p in holdout}
    held_templates = {"::".join(p.question_id.split("::")[:2]) for p in holdout}
    for level in ("question", "template"):
        rows = read_records(tmp_path / "run" / "data" / f"analysis-{level}.jsonl", AnalysisRow).records
        assert rows and not {r.question_id for r in rows} & held_questions
        assert not [r for r in rows if r.category == "religion"]
        assert {r.split for r in rows} == {"train", "validation"}
        if level == "template":
            assert not {r.template_id for r in rows} & held_templates
        meta = json.loads(meta_path(tmp_path / "run" / "data" / f"analysis-{level}.jsonl").read_text())
        assert meta["counts"]["rows"] == len(rows)
        entry = result.report["levels"][level]
        assert entry["holdout_eval"]["position_bias_in_dist"] == 0.0
        assert set(entry["holdout_analysis"]["by_slice"]) == {"in_dist", "ood_religion"}
    # The free-text judge: statement pairs with no holdout template, religion only in the OOD set.
    held_templates_all = {"::".join(q.split("::")[:2]) for q in held_questions}
    sets = {
        n: read_records(tmp_path / "run" / "data" / f"statements-{n}.jsonl", Pair).records for n in ("train", "ood")
    }
    assert sets["train"] and not {"::".join(p.question_id.split("::")[:2]) for p in sets["train"]} & held_templates_all
    assert "religion" not in {p.bias_category for p in sets["train"]}
    assert {p.bias_category for p in sets["ood"]} == {"religion"}
    text = result.report["text"]
    assert text["fitted_on"]["pairs"] == 300 and text["ood"]["n"] == len(sets["ood"])
    assert text["holdout_without_choices"]["position_bias_in_dist"] == 0.0
    card = result.card.read_text() if result.card else ""
    assert "## Leakage level: question" in card and "## Leakage level: template" in card
    assert "## The free-text judge" in card
    assert (installed.parent / "text.json").read_bytes() == (tmp_path / "run" / "text" / "text.json").read_bytes()
    # Installed, the fitted model is what the default judge runs.
    assert installed.read_bytes() == (tmp_path / "run" / "question" / "analysis.json").read_bytes()
    judge = make_judge()
    [judgment] = judge.judge_batch([JudgeRequest(holdout[0])])
    assert judgment.judge == "reader:" and judgment.reasoning
    [free] = judge.judge_batch([JudgeRequest(holdout[0].model_copy(update={"answer_choices": []}))])
    assert free.reasoning and free.probs  # the installed free-text model read it


def test_the_command_refuses_a_bad_config_key(tmp_path: Path) -> None:
    config = tmp_path / "reader.yaml"
    config.write_text("c_grid: []\n")
    result = CliRunner().invoke(app, ["train", "reader", "--config", str(config)])
    assert result.exit_code != 0
    assert "c_grid" in str(result.exception)
