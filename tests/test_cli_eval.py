"""`biasjudge metrics | eval | report | quickstart` through Typer's test runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from biasjudge.cli import eval as cli_eval
from biasjudge.eval.metrics import REFERENCE_KEYS

REFERENCE_FILE = Path("eval-results") / "base_gemma4_e4b_verdicts.json"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    cli_eval.register(app)
    return app


def _ok(result) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, (result.output, result.exception)


def test_metrics_json_gives_the_stored_numbers(app: typer.Typer, jfs: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "metrics",
            "--predictions",
            str(jfs / REFERENCE_FILE),
            "--holdout",
            str(jfs / "eval_set_unlabeled.jsonl"),
            "--json",
        ],
    )
    _ok(result)
    ours = json.loads(result.stdout)
    stored = json.loads((jfs / REFERENCE_FILE).read_text())["metrics"]
    assert list(ours) == list(stored)
    for name, values in stored.items():
        for key in REFERENCE_KEYS:  # verbosity_bias: the log's stored value (Gemma 4 tokens) is kept
            assert round(ours[name][key], 4) == round(values[key], 4), key
        assert ours[name]["kappa_in_dist_ci_low"] < ours[name]["kappa_in_dist"] < ours[name]["kappa_in_dist_ci_high"]


def test_metrics_with_the_embedded_tokenizer_gives_all_eleven_stored_numbers(
    app: typer.Typer, jfs: Path, gguf_model: Path
) -> None:
    args = ["metrics", "--predictions", str(jfs / REFERENCE_FILE), "--holdout", str(jfs / "eval_set_unlabeled.jsonl")]
    result = CliRunner().invoke(app, [*args, "--json", "--tokenizer", "llamacpp:embedded"])
    _ok(result)
    ours = json.loads(result.stdout)["Base Gemma 4 E4B"]
    stored = json.loads((jfs / REFERENCE_FILE).read_text())["metrics"]["Base Gemma 4 E4B"]
    assert {k: round(ours[k], 4) for k in REFERENCE_KEYS} == {k: round(stored[k], 4) for k in REFERENCE_KEYS}
    assert ours["verbosity_bias_whitespace"] != ours["verbosity_bias"]


def test_metrics_table(app: typer.Typer, jfs: Path) -> None:
    result = CliRunner().invoke(
        app, ["metrics", "--predictions", str(jfs / REFERENCE_FILE), "--holdout", str(jfs / "eval_set_unlabeled.jsonl")]
    )
    _ok(result)
    assert "Base Gemma 4 E4B" in result.stdout and "kappa_in_dist" in result.stdout and "0.4807" in result.stdout


def test_metrics_command_loads_no_judge_or_backend(jfs: Path) -> None:
    code = (
        "import sys, typer\n"
        "from typer.testing import CliRunner\n"
        "from biasjudge.cli import eval as e\n"
        "app = typer.Typer(); e.register(app)\n"
        f"r = CliRunner().invoke(app, ['metrics', '--predictions', {str(jfs / REFERENCE_FILE)!r}, "
        f"'--holdout', {str(jfs / 'eval_set_unlabeled.jsonl')!r}, '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = ('torch', 'transformers', 'llama_cpp', 'matplotlib', 'biasjudge.backends', 'biasjudge.judge.judge')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_eval_baselines_with_reference_column_then_report(app: typer.Typer, jfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--judge",
            "random:",
            "--judge",
            "answer-key:",
            "--name",
            "Random",
            "--name",
            "Answer key",
            "--holdout",
            str(jfs / "eval_set_unlabeled.jsonl"),
            "--out",
            str(out),
            "--limit",
            "30",
            "--runs",
            "all",
            "--import-predictions",
            str(jfs / REFERENCE_FILE),
        ],
    )
    _ok(result)
    header = result.stdout.strip().splitlines()[0]
    assert header == "| Metric | Random | Answer key | Base Gemma 4 E4B |"
    for folder in ("random", "answer-key"):
        log = json.loads((out / folder / "predictions.json").read_text())
        assert len(log["detailed"]) == 30 * 7
    answer_key = json.loads((out / "answer-key" / "predictions.json").read_text())["metrics"]["Answer key"]
    assert answer_key["position_bias_in_dist"] == 0.0  # the rule mirrors by construction
    assert answer_key["self_consistency_t03"] == 1.0
    assert (out / "report.md").read_text().count("| Metric | Random | Answer key | Base Gemma 4 E4B |") == 1
    assert "(first 30 holdout pairs)" in (out / "report.md").read_text()
    assert "data:image/png;base64," in (out / "report.html").read_text()

    again = CliRunner().invoke(
        app,
        [
            "report",
            str(out / "random" / "predictions.json"),
            str(jfs / REFERENCE_FILE),
            "--holdout",
            str(jfs / "eval_set_unlabeled.jsonl"),
            "--out",
            str(tmp_path / "report"),
        ],
    )
    _ok(again)
    assert again.stdout.splitlines()[0] == "| Metric | Random | Base Gemma 4 E4B |"
    assert (tmp_path / "report" / "report.html").exists()


def test_eval_refuses_mismatched_names(app: typer.Typer, jfs: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--judge",
            "random:",
            "--judge",
            "always-tie:",
            "--name",
            "only one",
            "--holdout",
            str(jfs / "eval_set_unlabeled.jsonl"),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0
    assert "--name given 1 times for 2 --judge" in str(result.exception)


@pytest.mark.heavy  # a faster test covers the same path; `make test-all` runs it
@pytest.mark.slow
def test_eval_with_the_embedded_270m(app: typer.Typer, jfs: Path, gguf_model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--judge",
            "llamacpp:embedded",
            "--mode",
            "score",
            "--holdout",
            str(jfs / "eval_set_unlabeled.jsonl"),
            "--out",
            str(tmp_path),
            "--limit",
            "4",
            "--runs",
            "all",
        ],
    )
    _ok(result)
    log = json.loads((tmp_path / "llamacpp-embedded" / "predictions.json").read_text())
    assert len(log["detailed"]) == 4 * 7
    assert all(set(p["probs"]) == {"A", "B", "TIE"} for p in log["detailed"])
    assert log["metrics"]["llamacpp:embedded"]["parse_failure_rate"] == 0.0
    assert "| Metric | llamacpp:embedded |" in result.stdout


@pytest.mark.slow
def test_quickstart_small(app: typer.Typer, shared_data: Path, gguf_model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["quickstart", "--data-dir", str(shared_data), "--out", str(tmp_path), "--limit", "1"]
    )
    _ok(result)
    assert result.stdout.splitlines()[0] == (
        "| Metric | biasjudge reader (default) | biasjudge 270M pairwise | Answer-key rule | Base Gemma 4 E4B |"
    )
    assert (tmp_path / "report.html").exists() and (tmp_path / "answer-key-rule" / "predictions.json").exists()
    pairwise = json.loads((tmp_path / "biasjudge-270m-pairwise" / "predictions.json").read_text())
    metrics = pairwise["metrics"]["biasjudge 270M pairwise"]
    assert metrics["position_bias_in_dist"] == 0.0  # both orders combined
    assert metrics["position_bias_single_order_in_dist"] is not None  # the model's own, still reported
    reader = json.loads((tmp_path / "biasjudge-reader-default" / "predictions.json").read_text())
    assert reader["metrics"]["biasjudge reader (default)"]["position_bias_in_dist"] == 0.0  # each response read alone
    assert all(p["reasoning"] and p["reasoning"].startswith("Response A ") for p in reader["detailed"])


def test_metrics_agreement_gives_judge_vs_judge_and_human(app: typer.Typer, jfs: Path, tmp_path: Path) -> None:
    log = json.loads((jfs / REFERENCE_FILE).read_text())
    [name] = {p["checkpoint_name"] for p in log["detailed"]}
    ties = [{**p, "checkpoint_name": "all ties", "verdict": "TIE"} for p in log["detailed"]]
    path = tmp_path / "two.json"
    path.write_text(json.dumps({**log, "metrics": {}, "detailed": log["detailed"] + ties}))
    args = ["metrics", "--predictions", str(path), "--holdout", str(jfs / "eval_set_unlabeled.jsonl"), "--agreement"]
    result = CliRunner().invoke(app, [*args, "--json"])
    _ok(result)
    found = {(a["first"], a["second"], a["slice"]): a for a in json.loads(result.stdout)}
    assert set(found) == {
        (a, b, s)
        for a, b in (("human", name), ("human", "all ties"), (name, "all ties"))
        for s in ("all", "in_dist", "ood_religion")
    }
    tie_column = found["human", "all ties", "all"]
    assert tie_column["kappa"] == 0.0 and [row[:2] for row in tie_column["confusion"]] == [[0, 0]] * 3
    assert 0.3 < found["human", name, "in_dist"]["kappa"] < 0.6  # the base model's stored in-dist kappa is 0.48
    table = CliRunner().invoke(app, args, terminal_width=200)
    _ok(table)
    assert "Cohen's kappa between judges, ood_religion" in table.stdout and "all ties" in table.stdout
