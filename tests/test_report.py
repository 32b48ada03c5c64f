"""Reports: the card's table (a column per checkpoint) and a self-contained HTML page with plots."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from biasjudge.errors import BiasJudgeError, DataError, MetricInputError
from biasjudge.eval.protocol import merge_logs, run_eval, select_runs
from biasjudge.eval.report import (
    CARD_ROWS,
    log_metrics,
    markdown_table,
    read_log,
    write_html_report,
    write_reports,
)
from biasjudge.io import read_records
from biasjudge.judge.registry import make_judge
from biasjudge.records import EvalLog, Pair

REFERENCE_FILE = Path("eval-results") / "base_gemma4_e4b_verdicts.json"


@pytest.fixture(scope="module")
def holdout(jfs: Path) -> list[Pair]:
    return read_records(jfs / "eval_set_unlabeled.jsonl", Pair).records


@pytest.fixture(scope="module")
def logs(jfs: Path, holdout: list[Pair], tmp_path_factory: pytest.TempPathFactory) -> list[EvalLog]:
    out = tmp_path_factory.mktemp("logs")
    ours = run_eval(
        make_judge("random:"), holdout, out, checkpoint_name="Random", runs=select_runs("all"), progress=False
    )
    return [ours, read_log(jfs / REFERENCE_FILE)]


def test_table_has_a_column_per_checkpoint_and_the_reference_rows(logs: list[EvalLog], holdout: list[Pair]) -> None:
    metrics = {n: v for log in logs for n, v in log_metrics(log, holdout).items()}
    table = markdown_table(metrics)
    lines = table.splitlines()
    assert lines[0] == "| Metric | Random | Base Gemma 4 E4B |"
    assert all(line.count("|") == 4 for line in lines)
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    reference_rows = [label for label, _, _, shown in CARD_ROWS if shown == "always"]
    assert len(reference_rows) == 11 and labels[: len(reference_rows)] == reference_rows
    in_dist = lines[2].split("|")[3].strip()
    assert re.fullmatch(r"0\.481 \[0\.\d{3}, 0\.\d{3}\]", in_dist), in_dist
    assert "| Verbosity bias score |" in table and "+17.6 |" in table  # the stored (Gemma 4 tokenizer) value
    assert "| 21.2% |" in table  # position bias in-dist of the reference


def test_missing_values_show_a_dash() -> None:
    table = markdown_table({"x": {"kappa_in_dist": None}, "y": {}})
    assert "| Overall κ (in-dist) | — | — |" in table
    assert markdown_table({}) == "(no results)"


def test_stored_verbosity_is_kept_and_the_whitespace_value_added(logs: list[EvalLog], holdout: list[Pair]) -> None:
    reference = log_metrics(logs[1], holdout)["Base Gemma 4 E4B"]
    assert reference["verbosity_bias"] == pytest.approx(17.593301435406698)
    assert reference["verbosity_bias_whitespace"] == pytest.approx(13.421, abs=1e-3)
    # On part of the log's pairs the stored value (over all 300) would not match the other rows.
    part = log_metrics(logs[1], holdout[:20])["Base Gemma 4 E4B"]
    assert part["verbosity_bias"] == part["verbosity_bias_whitespace"] != reference["verbosity_bias_whitespace"]


def test_html_page_is_self_contained_with_the_plots(logs: list[EvalLog], holdout: list[Pair], tmp_path: Path) -> None:
    path = write_html_report(logs, holdout, tmp_path / "report.html")
    page = path.read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    alts = [alt for alt, _ in images]
    assert alts == [
        "kappa per bucket with 95% bootstrap intervals",
        "position bias per slice",
        "confusion matrices",
        "reliability diagrams per slice",
        "kappa against coverage per slice",
    ]
    for _, data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<th>Random</th>" in page and "<th>Base Gemma 4 E4B</th>" in page
    assert not re.search(r'(src|href)="(https?:|/|\.\.)', page), "the page must not load anything"


def test_write_reports_writes_both_files(logs: list[EvalLog], holdout: list[Pair], tmp_path: Path) -> None:
    md, html, table = write_reports([merge_logs(logs)], holdout, tmp_path)
    assert table.splitlines()[0] == "| Metric | Random | Base Gemma 4 E4B |"
    assert md.read_text().startswith("# biasjudge evaluation\n\n" + table)
    page = html.read_text()
    assert "<th>Random</th>" in page and "<th>Base Gemma 4 E4B</th>" in page


def test_a_log_with_nothing_to_score_is_an_error_not_an_empty_table(logs: list[EvalLog], holdout: list[Pair]) -> None:
    """`biasjudge metrics` prints such errors as one line: each is a BiasJudgeError."""
    with pytest.raises(BiasJudgeError, match="no predictions"):
        log_metrics(EvalLog(run_id="empty"), holdout)
    # The log's pairs, but none with a human label: every kappa would be undefined.
    unlabelled = [pair.model_copy(update={"labels": []}) for pair in holdout]
    with pytest.raises(MetricInputError, match="nothing to score for checkpoint 'Base Gemma 4 E4B'"):
        log_metrics(logs[1], unlabelled)


def test_stored_metrics_without_predictions_are_kept(holdout: list[Pair]) -> None:
    published = EvalLog(run_id="published", metrics={"Published SFT": {"kappa_in_dist": 0.647}})
    metrics = log_metrics(published, holdout)
    assert metrics == {"Published SFT": {"kappa_in_dist": 0.647}}
    assert "| Overall κ (in-dist) | 0.647 |" in markdown_table(metrics)


def test_read_log_names_the_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"run_id": "x", "detailed": [{"pair_id": "p"}]}))
    with pytest.raises(DataError, match=r"bad\.json: field 'detailed\.0\.checkpoint_name'"):
        read_log(bad)
    bad.write_text("{")
    with pytest.raises(DataError, match="broken JSON"):
        read_log(bad)


def test_the_report_shows_the_robustness_table_when_its_folder_has_one(
    logs: list[EvalLog], holdout: list[Pair], tmp_path: Path
) -> None:
    from biasjudge.eval.robustness import robustness, robustness_table
    from biasjudge.eval.run import JudgeToEval
    from biasjudge.eval.settings import RobustnessSettings

    md, html, _ = write_reports([merge_logs(logs)], holdout, tmp_path)
    assert "Robustness" not in md.read_text() and "Robustness" not in html.read_text()
    run = robustness([JudgeToEval("random:", "Random")], holdout, tmp_path, RobustnessSettings(limit=6))  # same folder
    assert (tmp_path / "robustness.json").is_file() and run.table == robustness_table(run.results.results)
    md, html, table = write_reports([merge_logs(logs)], holdout, tmp_path)
    text = md.read_text()
    assert text.startswith("# biasjudge evaluation\n\n" + table)  # the metrics table stays first
    section = text[text.index("## Robustness (flip rates on twins of holdout pairs)") : text.index("## Logs")]
    assert "6 pairs (a stratified subset)" in section and run.table in section
    page = html.read_text()
    assert "<h2>Robustness (flip rates on twins of holdout pairs)</h2>" in page
    assert "<th>Twin</th><th>Family</th><th>Random</th>" in page and "<td>all injection twins</td>" in page
    (tmp_path / "robustness.json").write_text("{}")
    with pytest.raises(DataError, match=r"robustness\.json: field 'results'"):
        write_reports([merge_logs(logs)], holdout, tmp_path)


def test_the_report_has_a_judge_vs_judge_matrix_per_slice(
    logs: list[EvalLog], holdout: list[Pair], tmp_path: Path
) -> None:
    md, html, _ = write_reports([merge_logs(logs)], holdout, tmp_path)
    text = md.read_text()
    section = text[text.index("## Agreement between judges") :]
    for key, n in (("all", 300), ("in_dist", 240), ("ood_religion", 60)):
        block = section[section.index(f"**{key}**") :]
        header, _, human, random_row, base = block.splitlines()[2:7]
        assert header == "| | human | Random | Base Gemma 4 E4B |"
        assert human.startswith("| human | 1 | ") and f"(n={n})" in human
        assert random_row.split(" | ")[2] == "1"  # the diagonal
        # Symmetric: the Random row's Base cell is the Base row's Random cell.
        assert random_row.split(" | ")[3].rstrip(" |") == base.split(" | ")[2]
    # The random judge agrees with nobody beyond chance; the base model with the humans somewhat.
    kappa = lambda row, col: float(section.splitlines()[6 + row].split(" | ")[col].split()[0])  # noqa: E731
    assert abs(kappa(1, 1)) < 0.15 and kappa(2, 1) > 0.2
    assert "<h2>Agreement between judges</h2>" in html.read_text() and "<h3>ood_religion</h3>" in html.read_text()


def test_one_judge_gets_no_agreement_section(logs: list[EvalLog], holdout: list[Pair], tmp_path: Path) -> None:
    md, html, _ = write_reports([logs[1]], holdout, tmp_path)
    assert "Agreement between judges" not in md.read_text() and "Agreement between judges" not in html.read_text()


def test_the_html_report_has_reliability_and_coverage_plots_for_judges_with_probabilities(
    logs: list[EvalLog], holdout: list[Pair], tmp_path: Path
) -> None:
    from biasjudge.eval.report import confidence_rows

    rows = confidence_rows(logs, holdout)
    assert set(rows) == {"Random"}  # the reference's base-model log has no probabilities
    assert {name: len(labels) for name, (labels, _, _) in rows["Random"].items()} == {
        "in_dist": 240,
        "ood_religion": 60,
    }
    page = write_html_report(logs, holdout, tmp_path / "r.html").read_text()
    for heading in ("Reliability (calibration)", "κ against coverage (abstention)"):
        assert f"<h2>{heading}</h2>" in page
    md = write_reports(logs, holdout, tmp_path)[0].read_text()
    assert "| ECE (in-dist) |" in md and "| κ at 90% coverage (in-dist) |" in md
