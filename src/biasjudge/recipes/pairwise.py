"""The shipped judge's recipe, end to end: `biasjudge train judge --config configs/embedded-judge.yaml`.

1. Dataset: :func:`biasjudge.dataset.build.build_dataset` (holdout, leakage check, answer-key labels)
   with the judge's own system prompt.
2. Labels: the answer-key rule, or (``teacher_labels: true``) the reference's teacher verdicts where
   the shared data has them (synthesis_results.jsonl `sonnet_verdict`, the two dry runs), the rule
   elsewhere. Holdout questions and the OOD category never enter (the build checks).
3. Split: a validation set of the training pool, by question (a stable hash), for model selection.
   The holdout is only ever reported, never selected on.
4. Train: LoRA SFT on the score-mode task (prompt + `<verdict>` -> `X</verdict>`), swap-doubled rows,
   resumable from the run folder's checkpoints, a Rich progress bar.
5. Export: the adapter to a GGUF LoRA (f16) with its manifest (system prompt and its sha256, chat
   format, adapter sha256, training data sha256s, config, commit).
6. Evaluate, order-debiased, with llama.cpp on the unchanged base GGUF: the validation split
   (kappa against its labels), on which the calibration of the verdict probabilities is fitted
   (`calibration.json` beside the adapter; temperature or isotonic, whichever cross-validates
   better), and the 300-pair holdout with that calibration (the reference protocol, 7 runs); then
   the model card. `install=True` copies adapter, manifest, calibration and card into the package
   (`biasjudge/assets/embedded-judge/`), which makes them `llamacpp:embedded`.

Every stage writes into `output_dir`; a killed run restarts where it stopped (training resumes
from its newest checkpoint, the evaluations from their caches).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from biasjudge.config import ConfigModel, resolve_data_dir
from biasjudge.errors import ConfigError
from biasjudge.io import read_records, sha256_file, write_json, write_records
from biasjudge.records import Label, Pair, SFTRow, Verdict

TEACHER_FILES = ("synthesis_results.jsonl", "dryrun_sonnet.jsonl", "dryrun_opus.jsonl")
"""judge-from-scratch files with a teacher verdict per pair_id (first file wins). In
synthesis_results.jsonl the teacher's verdict is `sonnet_verdict` (its `verdict` is the
deliberately WRONG one written for DPO); in the dry runs it is `verdict`."""
CHECKPOINT_NAME = "biasjudge 270M judge"


class JudgeRecipeConfig(ConfigModel):
    """Settings of `biasjudge train judge` (configs/embedded-judge.yaml)."""

    default_file = "embedded-judge"

    data_dir: Path | None = None
    """Folder with judge-from-scratch/ (default: $BIASJUDGE_DATA_DIR, else ../shared/data)."""
    output_dir: Path = Path("runs/embedded-judge")
    """Run folder: data/, run/ (training), adapter.gguf + adapter.json, eval/, MODEL_CARD.md."""
    leakage_level: Literal["question", "pair"] = "question"
    """question: no training pair shares a question with the holdout (honest). pair: the reference's
    pool (it shares 201 questions with the holdout; the published checkpoints were trained on it)."""
    teacher_labels: bool = Field(default=False, json_schema_extra={"flags": ["--teacher-labels/--answer-key-labels"]})
    """Prefer the reference's teacher verdicts over the answer-key rule where the shared data has them."""
    system_prompt: str = "judge_compact"
    """A shipped prompt's name (biasjudge.prompts) or a file path; stored byte for byte with the adapter."""
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of training-pool questions held out for validation (model selection)."""
    model: str = "embedded"
    """Base model; `embedded` = the PyPI Gemma 3 270M GGUF (the adapter is applied on it unchanged)."""
    lora: dict[str, Any] = Field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.0})
    """LoRA settings (biasjudge.train.config.LoraSettings)."""
    trl: dict[str, Any] = Field(default_factory=dict)
    """Passed to trl.SFTConfig as it is (learning_rate, max_steps, seed, ...)."""
    budget_minutes: float | None = None
    """Optional wall-clock cap on training in this process (the adapter is saved when it is hit)."""
    quant: Literal["f16", "Q8_0"] = "f16"
    """GGUF type of the adapter."""
    evaluate_holdout: bool = True
    """Evaluate on the 300-pair holdout (report only) and write the model card from it."""
    holdout_runs: str = "all"
    """Runs of the holdout eval: 'all' (the reference's seven) or a comma list."""


@dataclass
class RecipeResult:
    """What `train_judge` produced."""

    output_dir: Path
    adapter: Path
    manifest: Path
    card: Path | None
    validation: dict[str, Any]
    holdout_metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    installed_to: Path | None = None


def resolve_system_prompt(value: str) -> str:
    """The text of a shipped prompt by name, or of a file (byte for byte)."""
    from biasjudge.prompts import PROMPT_NAMES, load_prompt, read_prompt_file

    return load_prompt(value) if value in PROMPT_NAMES else read_prompt_file(value)


class DryRunVerdict(BaseModel):
    """The one field of a dry-run teacher row the recipe needs (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    pair_id: str
    verdict: Verdict


def teacher_verdicts(jfs: Path) -> dict[str, Verdict]:
    """pair_id -> teacher verdict from the judge-from-scratch teacher files that exist (first file wins)."""
    from biasjudge.dataset.rows import read_hard_negatives

    found: dict[str, Verdict] = {}
    synthesis = jfs / TEACHER_FILES[0]
    if synthesis.is_file():
        for negative in read_hard_negatives(synthesis).records:
            if negative.sonnet_verdict is not None:
                found.setdefault(negative.pair_id, negative.sonnet_verdict)
    for name in TEACHER_FILES[1:]:
        if (jfs / name).is_file():
            for row in read_records(jfs / name, DryRunVerdict).records:
                found.setdefault(row.pair_id, row.verdict)
    return found


def with_teacher_labels(pairs: Sequence[Pair], verdicts: dict[str, Verdict]) -> list[Pair]:
    """Copies of `pairs` with a teacher Label appended where `verdicts` has one."""
    out = []
    for pair in pairs:
        verdict = verdicts.get(pair.pair_id)
        if verdict is None:
            out.append(pair)
            continue
        label = Label(verdict=verdict, source="teacher", labeller="judge-from-scratch teacher")
        out.append(pair.model_copy(update={"labels": [*pair.labels, label]}))
    return out


def training_label(pair: Pair, prefer_teacher: bool) -> Label | None:
    """The label a pair is trained on: the teacher's if preferred and present, else the answer key's."""
    if prefer_teacher and (teacher := pair.label_from("teacher")) is not None:
        return teacher
    return pair.label_from("answer_key")


def build_rows(pairs: Sequence[Pair], *, system_prompt: str, prefer_teacher: bool) -> list[SFTRow]:
    """Swap-doubled SFT rows, each pair with its :func:`training_label`."""
    from biasjudge.dataset.rows import sft_rows

    rows: list[SFTRow] = []
    for source in ("teacher", "answer_key"):
        chosen = [
            p for p in pairs if (label := training_label(p, prefer_teacher)) is not None and label.source == source
        ]
        rows += sft_rows(chosen, system_prompt=system_prompt, label_source=source).rows
    return rows


def validation_kappa(pairs: Sequence[Pair], log: Any, prefer_teacher: bool) -> dict[str, Any]:
    """Kappa of the original-order verdicts against the validation pairs' training labels."""
    from biasjudge.eval.metrics import cohen_kappa

    verdicts = {p.pair_id: p.verdict for p in log.detailed if p.run_type == "original"}
    truth: list[str] = []
    pred: list[str] = []
    teacher_truth: list[str] = []
    teacher_pred: list[str] = []
    for pair in pairs:
        label = training_label(pair, prefer_teacher)
        verdict = verdicts.get(pair.pair_id)
        if label is None or verdict is None:
            continue
        truth.append(label.verdict)
        pred.append(verdict)
        if (teacher := pair.label_from("teacher")) is not None:
            teacher_truth.append(teacher.verdict)
            teacher_pred.append(verdict)
    return {
        "n": len(truth),
        "kappa_vs_training_labels": cohen_kappa(truth, pred) if truth else None,
        "n_teacher": len(teacher_truth),
        "kappa_vs_teacher": cohen_kappa(teacher_truth, teacher_pred) if teacher_truth else None,
    }


def _evaluate(
    adapter: Path, pairs: Sequence[Pair], out: Path, runs: str, name: str, calibration: Path | None = None
) -> Any:
    from biasjudge.eval.protocol import run_eval, select_runs
    from biasjudge.judge.registry import make_judge

    options: dict[str, Any] = {"calibration": str(calibration)} if calibration is not None else {}
    judge = make_judge("llamacpp:embedded-base", lora_path=str(adapter), **options)
    try:
        return run_eval(judge, pairs, out, checkpoint_name=name, runs=select_runs(runs))
    finally:
        judge.close()


def _calibrate(log: Any, pairs: Sequence[Pair], prefer_teacher: bool, out: Path) -> str:
    """Fit the judge's calibration on the validation split against its training labels (never the
    holdout) and write it beside the adapter; a one-line summary of what was fitted."""
    from biasjudge.eval.calibration import calibration_rows, fit_calibration
    from biasjudge.io import write_json

    source = "teacher" if prefer_teacher and any(p.label_from("teacher") for p in pairs) else "answer_key"
    labels, probs = calibration_rows(log, pairs, source)  # type: ignore[arg-type]
    fitted = fit_calibration(labels, probs, "auto", fitted_on={"split": "validation", "labels": source})
    write_json(out, fitted)
    found = fitted.fit_split
    return f"{fitted.method} on {found['n']} validation pairs: ECE {found['ece_before']} -> {found['ece_after']}"


def train_judge(
    config: JudgeRecipeConfig, *, install: bool = False, log: Callable[[str], None] = print
) -> RecipeResult:
    """Run the whole recipe (see the module docstring) and return what it wrote."""
    from biasjudge.dataset.build import BuildConfig, build_dataset
    from biasjudge.dataset.rows import split_of
    from biasjudge.judge.calibration import CALIBRATION_FILE
    from biasjudge.judge.shipped import ADAPTER_FILE, CARD_FILE, manifest_path, shipped_dir, write_manifest
    from biasjudge.prompts.render import DEFAULT_TURN_FORMAT
    from biasjudge.train.common import git_commit, make_progress_callback
    from biasjudge.train.config import LoraSettings, SFTRunConfig
    from biasjudge.train.export import export_gguf
    from biasjudge.train.sft import train_sft

    seconds: dict[str, float] = {}
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    data_dir = resolve_data_dir(config.data_dir)
    jfs = data_dir / "judge-from-scratch"
    system_prompt = resolve_system_prompt(config.system_prompt)
    prompt_file = out / "system_prompt.md"
    prompt_file.write_bytes(system_prompt.encode("utf-8"))

    # 1-3. dataset, labels, split
    started = time.perf_counter()
    build = build_dataset(
        data_dir, out / "data", BuildConfig(leakage_level=config.leakage_level, system_prompt_file=prompt_file)
    )
    pool = read_records(build.files["labelled"], Pair).records
    teacher = teacher_verdicts(jfs)
    pool = with_teacher_labels(pool, teacher)
    train_pairs = [p for p in pool if split_of(p.question_id, config.validation_fraction) == "train"]
    validation_pairs = [p for p in pool if split_of(p.question_id, config.validation_fraction) == "validation"]
    rows = build_rows(train_pairs, system_prompt=system_prompt, prefer_teacher=config.teacher_labels)
    rows_file = out / "data" / "sft-train.jsonl"
    write_records(rows_file, rows)
    write_records(out / "data" / "validation.jsonl", validation_pairs)
    counts = {
        "pool_pairs": len(pool),
        "train_pairs": len(train_pairs),
        "validation_pairs": len(validation_pairs),
        "train_rows": len(rows),
        "label_source": dict(Counter(r.label_source for r in rows)),
        "teacher_verdicts_in_pool": sum(p.label_from("teacher") is not None for p in pool),
    }
    seconds["data"] = round(time.perf_counter() - started, 1)
    log(f"data: {json.dumps(counts)}")

    # 4. train
    started = time.perf_counter()
    trl = {
        "learning_rate": 2.0e-4,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "per_device_train_batch_size": 8,
        "weight_decay": 0.01,
        "logging_steps": 5,
        "save_steps": 25,
        "save_total_limit": 2,
        "seed": 3407,
        "gradient_checkpointing": False,
        "train_sampling_strategy": "group_by_length",
        "disable_tqdm": True,
        **config.trl,
    }
    sft_config = SFTRunConfig(
        model=config.model,
        train_file=rows_file,
        output_dir=out / "run",
        target="verdict",
        lora=LoraSettings(**config.lora),
        resume=True,
        trl=trl,
    )
    budget = config.budget_minutes * 60 if config.budget_minutes else None
    run = train_sft(sft_config, callbacks=[make_progress_callback("training the judge", budget_s=budget)])
    seconds["train"] = round(time.perf_counter() - started, 1)
    log(f"trained: {run.global_step} steps in {seconds['train']} s -> {run.adapter_dir}")

    # 5. export
    started = time.perf_counter()
    adapter = out / ADAPTER_FILE
    export_gguf(run.adapter_dir, adapter, config.quant, base=config.model)
    train_log = [json.loads(line) for line in run.log_file.read_text().splitlines() if line.strip()]
    tokens = max((float(r.get("num_tokens", 0)) for r in train_log), default=0.0)
    runtime = float(run.metrics.get("train_runtime") or 0.0)
    training = {
        "steps": run.global_step,
        "epochs": run.metrics.get("epoch"),
        "train_runtime_s": runtime,
        "real_tokens": tokens,
        "real_tokens_per_s": round(tokens / runtime, 1) if runtime else None,
        "train_loss": run.metrics.get("train_loss"),
        "rows": run.rows.get("train"),
    }
    manifest_extra = {
        "base": config.model,
        "trained_by": "biasjudge train judge",
        "git_commit": git_commit(),
        "config": config.model_dump(mode="json"),
        "data": {
            "train_rows": {"path": str(rows_file), "sha256": sha256_file(rows_file)},
            **{
                name: {"path": str(jfs / name), "sha256": sha256_file(jfs / name)}
                for name in ("pairs.jsonl", "eval_set_unlabeled.jsonl", *TEACHER_FILES)
                if (jfs / name).is_file()
            },
        },
        "counts": counts,
        "training": training,
    }
    write_manifest(
        adapter, system_prompt=system_prompt, chat_format=DEFAULT_TURN_FORMAT, order="both", **manifest_extra
    )
    seconds["export"] = round(time.perf_counter() - started, 1)

    # 6. evaluate: validation (selection), holdout (report)
    started = time.perf_counter()
    validation: dict[str, Any] = {}
    if validation_pairs:
        val_log = _evaluate(adapter, validation_pairs, out / "eval" / "validation", "original,swapped", "validation")
        validation = validation_kappa(validation_pairs, val_log, config.teacher_labels)
        calibration = _calibrate(val_log, validation_pairs, config.teacher_labels, adapter.parent / CALIBRATION_FILE)
        log(f"calibration: {calibration}")
    seconds["validation_eval"] = round(time.perf_counter() - started, 1)
    log(f"validation: {json.dumps(validation)}")
    holdout_metrics: dict[str, Any] = {}
    card: Path | None = None
    if config.evaluate_holdout:
        started = time.perf_counter()
        holdout = read_records(build.files["holdout"], Pair).records
        holdout_dir = out / "eval" / "holdout"
        calibrated = adapter.parent / CALIBRATION_FILE
        hold_log = _evaluate(
            adapter,
            holdout,
            holdout_dir,
            config.holdout_runs,
            CHECKPOINT_NAME,
            calibrated if calibrated.is_file() else None,
        )
        holdout_metrics = dict(hold_log.metrics[CHECKPOINT_NAME])
        seconds["holdout_eval"] = round(time.perf_counter() - started, 1)
    manifest_extra["validation"] = validation
    manifest_extra["holdout"] = {k: holdout_metrics.get(k) for k in _CARD_KEYS if k in holdout_metrics}
    manifest_extra["seconds"] = seconds
    write_manifest(
        adapter, system_prompt=system_prompt, chat_format=DEFAULT_TURN_FORMAT, order="both", **manifest_extra
    )
    card = write_card(out / CARD_FILE, adapter, holdout_dir=out / "eval" / "holdout" if holdout_metrics else None)

    installed: Path | None = None
    if install:
        installed = shipped_dir()
        installed.mkdir(parents=True, exist_ok=True)
        calibration_file = adapter.parent / CALIBRATION_FILE
        for source in (adapter, manifest_path(adapter), card, calibration_file):
            if source.is_file():
                shutil.copyfile(source, installed / source.name)
        log(f"installed into {installed}")
    write_json(
        out / "recipe.json",
        {
            "counts": counts,
            "training": training,
            "validation": validation,
            "holdout": manifest_extra["holdout"],
            "seconds": seconds,
        },
    )
    return RecipeResult(out, adapter, manifest_path(adapter), card, validation, holdout_metrics, seconds, installed)


_CARD_KEYS = (
    "kappa_in_dist", "kappa_in_dist_ci_low", "kappa_in_dist_ci_high",
    "kappa_ood_religion", "kappa_ood_religion_ci_low", "kappa_ood_religion_ci_high",
    "kappa_clear", "kappa_subtle", "kappa_tracked", "kappa_tie", "kappa_adversarial",
    "position_bias_in_dist", "position_bias_ood",
    "position_bias_single_order_in_dist", "position_bias_single_order_ood",
    "self_consistency_t03", "parse_failure_rate", "verbosity_bias", "ece", "brier_score",
)  # fmt: skip
"""Holdout metrics recorded in the manifest (the card has them all)."""


def _calibration_note(path: Path) -> list[str]:
    """The card's line on the calibration beside the adapter, when there is one."""
    from biasjudge.judge.calibration import read_calibration

    if not path.is_file():
        return []
    calibration = read_calibration(path)
    fit = calibration.fit_split
    what = f"temperature T = {calibration.temperature:.3f}" if calibration.temperature else calibration.method
    return [
        f"- calibration (`{path.name}`): {what}, fitted on {fit.get('n')} validation pairs "
        f"({calibration.fitted_on.get('labels', '?')} labels); ECE there {fit.get('ece_before')} -> "
        f"{fit.get('ece_after')}; applied wherever the judge runs (`?calibration=none` turns it off)"
    ]


def write_card(path: Path, adapter: Path, *, holdout_dir: Path | None) -> Path:
    """The shipped judge's model card: what it was trained on, how, its sha256s and its holdout metrics."""
    from biasjudge.judge.calibration import CALIBRATION_FILE
    from biasjudge.judge.shipped import read_manifest
    from biasjudge.train.card import write_model_card

    manifest = read_manifest(adapter)
    if manifest is None:
        raise ConfigError(f"{adapter}: no manifest beside it")
    extra = manifest.extra
    data_lines = "\n".join(f"| {name} | `{info['sha256']}` |" for name, info in extra.get("data", {}).items())
    training = extra.get("training", {})
    notes = "\n".join(
        [
            f"Trained by `biasjudge train judge` at commit `{extra.get('git_commit')}` on base `{extra.get('base')}`"
            " (the PyPI Gemma 3 270M Q4_K_M GGUF, applied unchanged; the adapter is a GGUF LoRA).",
            "",
            f"- adapter `{adapter.name}`, sha256 `{manifest.adapter_sha256}`",
            f"- system prompt sha256 `{manifest.system_prompt_sha256}`: `{manifest.system_prompt.strip()}`",
            f"- chat format `{manifest.chat_format}`, judged in both orders (`order: {manifest.order}`)",
            f"- steps {training.get('steps')}, epochs {training.get('epochs')}, "
            f"{training.get('real_tokens_per_s')} real tokens/s, train loss {training.get('train_loss')}",
            f"- validation split: {json.dumps(extra.get('validation', {}))}",
            *_calibration_note(adapter.parent / CALIBRATION_FILE),
            "",
            "| input | sha256 |",
            "|---|---|",
            data_lines,
            "",
            "Config:",
            "",
            "```json",
            json.dumps(extra.get("config", {}), indent=2),
            "```",
        ]
    )
    eval_log = holdout_dir / "predictions.json" if holdout_dir is not None else None
    train_rows = Path(extra.get("data", {}).get("train_rows", {}).get("path", ""))
    rows_meta: Any = [train_rows] if train_rows.is_file() else extra.get("counts", {}).get("label_source", {})
    if isinstance(rows_meta, dict):
        rows_meta = {"label_source": rows_meta}
    return write_model_card(
        path,
        base_model="google/gemma-3-270m",
        eval_log_or_report=eval_log if eval_log is not None and eval_log.is_file() else None,
        datasets=["krishnakartik/gemma4-social-bias-judge-pairs"],
        license="gemma",
        rows_meta=rows_meta,
        model_name="biasjudge-gemma3-270m-judge",
        checkpoint=CHECKPOINT_NAME if eval_log is not None else None,
        notes=notes,
    )
