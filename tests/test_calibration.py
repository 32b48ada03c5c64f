"""Calibrated confidence and abstention: the fits, the judge that applies them, UNSURE in the metrics.

Fits run on synthetic rows whose true calibration is known; the judges are real (`random:`,
`hybrid:` over the holdout's answer key, and the shipped GGUF for the packaged calibration).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from biasjudge.cli import eval as cli_eval
from biasjudge.errors import ConfigError, MetricInputError
from biasjudge.eval import metrics as M
from biasjudge.eval.calibration import (
    calibration_rows,
    cross_validate,
    evaluate_calibration,
    fit_calibration,
    fit_isotonic,
    fit_temperature,
)
from biasjudge.eval.protocol import judge_identity
from biasjudge.io import read_records
from biasjudge.judge.calibration import CalibratedJudge, Calibration, read_calibration
from biasjudge.judge.debiased import OrderDebiasedJudge, single_order_view
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.records import EvalLog, Pair, Prediction, WrapperMetadata
from biasjudge.verdict import UNSURE, VERDICTS

HOLDOUT = "eval_set_unlabeled.jsonl"


def _rows(n: int, true_t: float, seed: int = 0) -> tuple[list[str], list[dict[str, float]]]:
    """Labels drawn from softmax(z), probabilities reported as softmax(z / true_t): a judge whose
    calibrating temperature is exactly `true_t`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 3))
    truth = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    shown = np.exp(z / true_t) / np.exp(z / true_t).sum(axis=1, keepdims=True)
    labels = [VERDICTS[rng.choice(3, p=row)] for row in truth]
    return labels, [dict(zip(VERDICTS, map(float, row), strict=True)) for row in shown]


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.0])
def test_temperature_scaling_recovers_the_true_temperature(true_t: float) -> None:
    labels, probs = _rows(4000, true_t)
    # softmax(z / t) needs T = 1 / t to get back to softmax(z).
    assert fit_temperature(labels, probs) == pytest.approx(1 / true_t, rel=0.08)


def test_calibrating_an_over_confident_judge_lowers_its_ece_and_brier_on_new_rows() -> None:
    labels, probs = _rows(2000, 0.4)  # over-confident: its probabilities are too sharp
    new_labels, new_probs = _rows(2000, 0.4, seed=1)
    for method in ("temperature", "isotonic"):
        scores = evaluate_calibration(fit_calibration(labels, probs, method), new_labels, new_probs)  # type: ignore[arg-type]
        assert scores["ece_after"] < scores["ece_before"] / 2, (method, scores)
        assert scores["brier_after"] < scores["brier_before"], (method, scores)


def test_temperature_keeps_every_verdict_and_every_map_gives_a_distribution() -> None:
    labels, probs = _rows(500, 0.5)
    temperature = fit_calibration(labels, probs, "temperature")
    isotonic = fit_calibration(labels, probs, "isotonic")
    for row in probs:
        for calibration in (temperature, isotonic):
            out = calibration.apply(row)
            assert set(out) == set(VERDICTS) and sum(out.values()) == pytest.approx(1.0)
            assert all(0.0 <= v <= 1.0 for v in out.values())
        after = temperature.apply(row)
        assert max(after, key=after.__getitem__) == max(row, key=row.__getitem__)


def test_isotonic_maps_are_increasing() -> None:
    labels, probs = _rows(800, 0.6)
    for one in fit_isotonic(labels, probs).values():
        assert one.x == sorted(one.x) and one.y == sorted(one.y)


def test_auto_picks_the_method_with_the_lower_cross_validated_brier() -> None:
    labels, probs = _rows(300, 0.5)
    fitted = fit_calibration(labels, probs, "auto", fitted_on={"what": "synthetic"})
    cv = fitted.fit_split["cross_validated"]
    assert cv["temperature"] == cross_validate(labels, probs, "temperature")  # seeded folds: reproducible
    assert fitted.method == min(("temperature", "isotonic"), key=lambda m: cv[m]["brier"])
    assert fitted.fitted_on == {"what": "synthetic"} and fitted.fit_split["n"] == 300


def test_bad_rows_are_refused() -> None:
    labels, probs = _rows(30, 1.0)
    with pytest.raises(MetricInputError, match="at least 10"):
        fit_calibration(labels[:5], probs[:5])
    with pytest.raises(MetricInputError, match="30 labels for 29"):
        fit_calibration(labels, probs[:29])
    with pytest.raises(MetricInputError, match="A, B or TIE"):
        fit_calibration(["PARSE_FAIL", *labels[1:]], probs)
    with pytest.raises(ConfigError, match="method"):
        fit_calibration(labels, probs, "platt")  # type: ignore[arg-type]


def test_a_calibration_file_round_trips_and_a_bad_one_names_its_field(tmp_path: Path) -> None:
    labels, probs = _rows(200, 0.5)
    fitted = fit_calibration(labels, probs, "isotonic")
    path = tmp_path / "calibration.json"
    path.write_text(fitted.model_dump_json())
    assert read_calibration(path) == fitted and read_calibration(path).digest == fitted.digest
    path.write_text(json.dumps({"method": "temperature", "temperature": -1}))
    with pytest.raises(Exception, match=r"calibration.json.*temperature"):
        read_calibration(path)


# --------------------------------------------------------------------------- the judge


@pytest.fixture(scope="module")
def pairs(jfs: Path) -> list[Pair]:
    return read_records(jfs / HOLDOUT, Pair).records[:40]


def test_abstention_alone_keeps_the_inner_verdicts_and_turns_the_unsure_ones(pairs: list[Pair]) -> None:
    plain = make_judge("random:7")
    abstaining = make_judge("random:7", abstain_below=0.5)  # random: gives 1/3 each: never sure
    requests = [JudgeRequest(p) for p in pairs[:10]]
    assert isinstance(abstaining, CalibratedJudge) and abstaining.spec == "random:7?abstain_below=0.5"
    judged = abstaining.judge_batch(requests)
    assert {j.verdict for j in judged} == {UNSURE}
    assert [j.probs for j in judged] == [j.probs for j in plain.judge_batch(requests)]  # probabilities kept
    # T > 0 (an eval's consistency runs) never abstains.
    drawn = abstaining.judge_batch([JudgeRequest(p, temperature=0.3, seed=1) for p in pairs[:10]])
    assert UNSURE not in {j.verdict for j in drawn}


def test_a_calibration_from_the_spec_is_applied_and_keys_the_cache(
    pairs: list[Pair], tmp_path: Path, jfs: Path
) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(Calibration(method="temperature", temperature=3.0).model_dump_json())
    spec = f"hybrid:answer-key:{jfs / 'pairs.jsonl'}"
    raw = make_judge(spec)
    calibrated = make_judge(f"{spec}?calibration={path}")
    requests = [JudgeRequest(p) for p in pairs]
    before, after = raw.judge_batch(requests), calibrated.judge_batch(requests)
    assert [j.verdict for j in before] == [j.verdict for j in after]  # a temperature keeps the argmax
    for b, a in zip(before, after, strict=True):
        assert a.wrappers.uncalibrated_probs == b.probs
        assert max(a.probs.values()) <= max(b.probs.values()) + 1e-12  # T = 3 softens
    assert judge_identity(calibrated) != judge_identity(raw)
    assert "calibration=" in judge_identity(calibrated)


def test_the_single_order_view_is_wrapped_as_the_debiased_judge_is(pairs: list[Pair]) -> None:
    """The service's single-order judge shares the debiased one's inner judge, under the same
    calibration and abstention; a judge that does not combine orders has no such view."""
    inner = make_judge("random:7")
    debiased = OrderDebiasedJudge(inner)
    view = single_order_view(CalibratedJudge(debiased, None, abstain_below=0.5), "random:7?order=single")
    assert isinstance(view, CalibratedJudge) and view.abstain_below == 0.5 and view.spec == "random:7?order=single"
    assert view.inner is not inner and view.inner.spec == "random:7?order=single"
    requests = [JudgeRequest(p) for p in pairs[:5]]
    assert [j.probs for j in view.judge_batch(requests)] == [j.probs for j in inner.judge_batch(requests)]
    assert single_order_view(inner, "random:7") is None
    assert single_order_view(CalibratedJudge(inner, None, abstain_below=0.5), "random:7") is None


def test_calibration_and_abstention_need_score_mode() -> None:
    with pytest.raises(ConfigError, match="score"):
        CalibratedJudge(make_judge("random:", mode="generate"), None, abstain_below=0.5)
    with pytest.raises(ConfigError, match="abstain_below"):
        make_judge("random:", abstain_below="often")


@pytest.mark.heavy  # 13 s on the pairwise judge; the calibration map is tested on fast judges
def test_the_shipped_judge_applies_its_packaged_calibration(gguf_model: Path, pairs: list[Pair]) -> None:
    from biasjudge.judge.shipped import shipped_dir

    packaged = read_calibration(shipped_dir() / "calibration.json")
    shipped, bare = make_judge("llamacpp:embedded"), make_judge("llamacpp:embedded?calibration=none")
    try:
        assert isinstance(shipped, CalibratedJudge) and shipped.calibration == packaged
        assert not isinstance(bare, CalibratedJudge)
        [with_map] = shipped.judge_batch([JudgeRequest(pairs[0])])
        [without] = bare.judge_batch([JudgeRequest(pairs[0])])
        assert with_map.wrappers.uncalibrated_probs == pytest.approx(without.probs)
        assert with_map.probs == pytest.approx(packaged.apply(without.probs))
    finally:
        shipped.close()
        bare.close()


# --------------------------------------------------------------------------- metrics


def _pair(pair_id: str, human: str, eval_slice: str = "in_dist") -> Pair:
    return Pair.model_validate(
        {
            "pair_id": pair_id, "question_id": pair_id, "question_text": "Who?", "answer_choices": [],
            "bias_category": "age", "pair_category": "clear_bias_vs_clean", "eval_slice": eval_slice,
            "response_a": {"model": "m", "text": "x"}, "response_b": {"model": "m", "text": "y"},
            "human_verdict": human,
        }
    )  # fmt: skip


def test_unsure_is_counted_apart_from_parse_failures_and_left_out_of_kappa() -> None:
    holdout = [_pair(f"p{i}", h) for i, h in enumerate(["A", "B", "TIE", "A", "B", "A"])]
    verdicts = ["A", "B", "TIE", UNSURE, "PARSE_FAIL", "B"]
    preds = [
        Prediction(checkpoint_name="c", pair_id=p.pair_id, run_type=run, verdict=v)
        for p, v in zip(holdout, verdicts, strict=True)
        for run in ("original", "swapped")
    ]
    m = M.compute_metrics(holdout, preds, checkpoint="c", n_resamples=10)
    assert (m["n_unsure"], m["n_parse_fail"], m["parse_failure_rate"]) == (2.0, 2.0, 2 / 12)
    assert m["n_in_dist"] == 4  # the UNSURE and the PARSE_FAIL pairs are not scored
    assert m["abstention_rate"] == pytest.approx(1 / 5)  # one of five original verdicts given
    assert m["kappa_in_dist"] == pytest.approx(M.cohen_kappa(["A", "B", "TIE", "A"], ["A", "B", "TIE", "B"]))


def test_kappa_at_coverage_keeps_the_most_confident_pairs() -> None:
    labels, probs = _rows(400, 1.0, seed=3)
    curve = M.kappa_at_coverage(labels, probs, (100, 80, 50))
    argmax = [max(p, key=p.__getitem__) for p in probs]
    assert curve[100] == pytest.approx(M.cohen_kappa(labels, argmax))
    top = sorted(range(400), key=lambda i: -max(probs[i].values()))[:200]
    assert curve[50] == pytest.approx(M.cohen_kappa([labels[i] for i in top], [argmax[i] for i in top]))
    assert curve[50] > curve[80] > curve[100]  # a calibrated judge is right more often where it is sure


def test_calibration_metrics_per_slice_and_before_after() -> None:
    labels, probs = _rows(60, 0.5, seed=4)
    holdout = [_pair(f"p{i}", y, "in_dist" if i < 40 else "ood_religion") for i, y in enumerate(labels)]
    calibration = Calibration(method="temperature", temperature=2.0)
    preds = [
        Prediction(
            checkpoint_name="c", pair_id=p.pair_id, run_type="original", verdict=max(q, key=q.__getitem__),
            probs=calibration.apply(q), wrappers=WrapperMetadata(uncalibrated_probs=q),
        )
        for p, q in zip(holdout, probs, strict=True)
    ]  # fmt: skip
    m = M.compute_metrics(holdout, preds, checkpoint="c", n_resamples=10)
    assert m["ece_uncalibrated_in_dist"] == pytest.approx(M.expected_calibration_error(labels[:40], probs[:40]))
    assert m["brier_score_ood_religion"] == pytest.approx(
        M.brier_score(labels[40:], [calibration.apply(q) for q in probs[40:]])
    )
    assert m["ece"] is not None and m["ece_uncalibrated"] is not None
    assert {"kappa_in_dist_at_coverage_90", "kappa_ood_religion_at_coverage_80"} <= set(m)


# --------------------------------------------------------------------------- the command


def test_biasjudge_calibrate_fits_a_log_and_checks_it_on_the_holdout(jfs: Path, tmp_path: Path) -> None:
    holdout = read_records(jfs / HOLDOUT, Pair).records
    labels, probs = _rows(len(holdout), 0.5, seed=5)
    # A log whose probabilities are over-confident about the humans' labels, on the calibration
    # split (the first 150 pairs here) and on the holdout alike.
    log = EvalLog(
        run_id="synthetic",
        detailed=[
            Prediction(checkpoint_name="j", pair_id=p.pair_id, run_type="original", verdict="A", probs=q)
            for p, q in zip(holdout, probs, strict=True)
        ],
    )
    holdout = [
        p.model_copy(update={"labels": [p.labels[0].model_copy(update={"verdict": y, "source": "human"})]})
        for p, y in zip(holdout, labels, strict=True)
    ]
    (tmp_path / "log.json").write_text(log.model_dump_json())
    split = tmp_path / "split.jsonl"
    split.write_text("".join(p.model_dump_json() + "\n" for p in holdout[:150]))
    hold = tmp_path / "holdout.jsonl"
    hold.write_text("".join(p.model_dump_json() + "\n" for p in holdout))
    app = typer.Typer()
    cli_eval.register(app)
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(
        app,
        [
            "calibrate", "--predictions", str(tmp_path / "log.json"), "--pairs", str(split), "--labels", "human",
            "--method", "temperature", "--out", str(out), "--check-predictions", str(tmp_path / "log.json"),
            "--holdout", str(hold),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fitted = read_calibration(out)
    assert fitted.method == "temperature" and fitted.temperature == pytest.approx(2.0, rel=0.3)
    assert fitted.fit_split["n"] == 150 and fitted.fitted_on["labels"] == "human"
    check = fitted.holdout_check
    assert check["all"]["n"] == len(holdout) and check["all"]["ece_after"] < check["all"]["ece_before"]
    assert {"in_dist", "ood_religion"} <= set(check)
    # The rows it fitted on are the ones calibration_rows reads.
    y, _ = calibration_rows(log, holdout[:150], "human")
    assert len(y) == 150


def test_the_judge_command_abstains_below_the_threshold() -> None:
    from biasjudge.cli import judge as cli_judge

    app = typer.Typer()
    cli_judge.register(app)
    cli_eval.register(app)  # two commands, so `judge` is a subcommand as in the real app
    args = ["judge", "--judge", "random:3", "--question", "Who?", "--choice", "x", "--choice", "y"]
    args += ["--response-a", "one", "--response-b", "two"]
    sure, unsure = CliRunner().invoke(app, args), CliRunner().invoke(app, [*args, "--abstain-below", "0.5"])
    assert sure.exit_code == 0 and unsure.exit_code == 0, (sure.output, unsure.output)
    assert "verdict: UNSURE" not in sure.stdout
    assert "verdict: UNSURE" in unsure.stdout and "probabilities: A 0.333" in unsure.stdout
    bad = CliRunner().invoke(app, [*args, "--abstain-below", "1.5"])
    assert bad.exit_code == 2 and "--abstain-below" in bad.output and "less than or equal to 1" in bad.output
