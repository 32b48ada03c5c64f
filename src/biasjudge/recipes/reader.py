"""The question-reading judge's recipe, end to end: `biasjudge train reader [--install]`.

1. Questions: BBQ's raw category files found in `<data dir>/bbq/` and judge-from-scratch's
   `bbq_sample.jsonl` (all eleven categories), one row per item (:func:`biasjudge.dataset.rows.build_analysis_rows`):
   never a holdout question; with `leakage_level: template`, never a holdout template; never the
   OOD category (religion). A share of templates is the validation split.
2. Fit the question analysis on the train split and score the validation split (templates it
   never saw), per category and context condition; then fit again on every row (the shipped model).
3. Report on the holdout (never selected on): the question analysis against BBQ's key for the
   holdout's questions, and the reference's seven-run eval of `reader:analysis.json`.
4. The free-text judge (`text_judge`): statement pairs from BBQ's metadata
   (:func:`biasjudge.data.statements.statement_sets`: no holdout question or template, religion
   only in the OOD set, a share of templates only in validation), the judge fitted on the train
   set, scored per category on validation and OOD, and run on the holdout with its choices removed.
5. Write the model card; with `install`, copy the models and card into the package
   (`biasjudge/assets/reading-judge/`), which makes them the default judge.

Both leakage levels are fitted and reported (`report_levels`); the `leakage_level` one is shipped.
Everything is written into `output_dir`; the whole recipe takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from biasjudge.config import ConfigModel, resolve_data_dir
from biasjudge.data.bbq import holdout_keys, load_questions
from biasjudge.io import sha256_file, write_json, write_meta, write_records
from biasjudge.records import AnalysisRow, Pair, Question

if TYPE_CHECKING:
    from biasjudge.judge.freetext import TextModel

LeakageLevel = Literal["question", "template"]
LEAKAGE_LEVELS: tuple[LeakageLevel, ...] = ("question", "template")
CHECKPOINT_NAME = "biasjudge reader"


class ReaderRecipeConfig(ConfigModel):
    """Settings of `biasjudge train reader` (configs/reading-judge.yaml)."""

    default_file = "reading-judge"

    data_dir: Path | None = None
    """Folder with bbq/ and judge-from-scratch/ (default: $BIASJUDGE_DATA_DIR, else ../shared/data)."""
    output_dir: Path = Path("runs/reading-judge")
    """Run folder: data/, <level>/analysis.json, eval/, MODEL_CARD.md, recipe.json."""
    leakage_level: LeakageLevel = "question"
    """The shipped model's: question = no holdout question in training; template = no holdout template."""
    report_levels: list[LeakageLevel] = Field(default_factory=lambda: list(LEAKAGE_LEVELS))
    """Levels fitted and reported in the card (the shipped one always is)."""
    ood_categories: list[str] = Field(default_factory=lambda: ["religion"])
    """Categories kept out of training entirely (the holdout's OOD slice)."""
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share held out for validation: of the items at the question level (other names, templates
    seen), of the templates at the template level (templates never seen), as the holdout is."""
    c_grid: list[float] = Field(default_factory=lambda: [1.0, 3.0, 10.0, 30.0, 100.0], min_length=1)
    """Inverse regularisation strengths tried (scikit-learn's C); the best on validation is kept."""
    seed: int = 0
    """Seed of the choice order and of the validation split."""
    evaluate_holdout: bool = True
    """Report the holdout (question analysis and the seven-run eval) and write the card from it."""
    holdout_runs: str = "all"
    """Runs of the holdout eval: 'all' (the reference's seven) or a comma list."""
    text_judge: bool = True
    """Also build the statement pairs and fit the free-text judge (`text.json`) on them."""
    text_train_pairs: int = Field(default=13000, ge=100)
    """Statement pairs the free-text judge is fitted on (a seeded sample of the train set; the
    MiniLM encoding of their responses is most of the recipe's time)."""
    text_c: float = Field(default=1.0, gt=0.0)
    """Inverse regularisation strength of the free-text judge's statement regression."""
    text_pair_c: float = Field(default=3.0, gt=0.0)
    """... and of its pair regression (3.0: the best of 0.3, 1, 3 on the validation templates)."""


@dataclass
class ReaderResult:
    """What `train_reader` produced."""

    output_dir: Path
    model: Path
    card: Path | None
    report: dict[str, Any] = field(default_factory=dict)
    installed_to: Path | None = None


def accuracy_report(model: Any, rows: Sequence[AnalysisRow]) -> dict[str, Any]:
    """Correct-option accuracy by context condition and target accuracy, overall and per category."""
    from biasjudge.judge.reading.analysis import analyze

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        analysis = analyze(model, row.question, row.choices)
        for key in ("all", row.category):
            bucket = counts[key]
            bucket[f"{row.context_condition}_n"] += 1
            bucket[f"{row.context_condition}_ok"] += analysis.best_correct == row.answer
            bucket["target_n"] += 1
            bucket["target_ok"] += analysis.best_target == row.target
    report: dict[str, Any] = {}
    for key, bucket in sorted(counts.items()):
        report[key] = {
            name: round(bucket[f"{name}_ok"] / bucket[f"{name}_n"], 4) if bucket[f"{name}_n"] else None
            for name in ("ambig", "disambig", "target")
        } | {"n": bucket["target_n"]}
    return report


_VALIDATION_OF = {"question": "items of templates fitted on", "template": "templates never fitted on"}


def select_c(
    train_rows: Sequence[AnalysisRow], validation_rows: Sequence[AnalysisRow], grid: Sequence[float]
) -> tuple[dict[str, Any], float]:
    """(the validation report of the best C, that C): the best supported-option accuracy on validation."""
    from biasjudge.judge.reading.analysis import fit_analysis

    if not validation_rows:
        return {}, grid[0]
    best: tuple[float, dict[str, Any], float] | None = None
    for c in grid:
        report = accuracy_report(fit_analysis(train_rows, c=c), validation_rows)
        overall = report["all"]
        n_ambig = sum(r.context_condition == "ambig" for r in validation_rows)
        n_dis = len(validation_rows) - n_ambig
        score = ((overall["ambig"] or 0) * n_ambig + (overall["disambig"] or 0) * n_dis) / len(validation_rows)
        if best is None or score > best[0]:
            best = (score, report, c)
    assert best is not None
    return best[1], best[2]


def holdout_rows(pairs: Sequence[Pair], questions: dict[str, Question]) -> list[AnalysisRow]:
    """The holdout's questions as analysis rows (their key from BBQ), in the holdout's choice order."""
    from biasjudge.data.bbq import template_id

    rows: dict[str, AnalysisRow] = {}
    for pair in pairs:
        question = questions.get(pair.question_id)
        if question is None or question.target_label is None or pair.question_id in rows:
            continue
        choices = [c.text for c in pair.answer_choices]
        if choices != question.answers:
            continue
        rows[pair.question_id] = AnalysisRow(
            question_id=question.question_id,
            template_id=template_id(question),
            category=question.category,
            context_condition=question.context_condition,
            question=pair.question_text,
            choices=choices,
            answer=question.answer_label,
            target=question.target_label,
            split="validation",
        )
    return list(rows.values())


def _slice_of(pair: Pair) -> str:
    return pair.eval_slice or "in_dist"


def train_reader(
    config: ReaderRecipeConfig, *, install: bool = False, log: Callable[[str], None] = print
) -> ReaderResult:
    """Run the whole recipe (see the module docstring) and return what it wrote."""
    from biasjudge.data.holdout import load_pairs
    from biasjudge.dataset.rows import build_analysis_rows
    from biasjudge.judge.reading.analysis import fit_analysis
    from biasjudge.judge.reading.judge import ANALYSIS_FILE
    from biasjudge.judge.shipped import READING_DIR_NAME
    from biasjudge.train.common import git_commit

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    data_dir = resolve_data_dir(config.data_dir)
    jfs = data_dir / "judge-from-scratch"
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    questions = load_questions(data_dir, log)
    holdout_file = jfs / "eval_set_unlabeled.jsonl"
    holdout = load_pairs(holdout_file).records
    held_questions, held_templates = holdout_keys(holdout)
    by_id = {q.question_id: q for q in questions}
    seconds["data"] = round(time.perf_counter() - started, 1)

    levels = list(dict.fromkeys([config.leakage_level, *config.report_levels]))
    report: dict[str, Any] = {"levels": {}, "commit": git_commit(), "config": config.model_dump(mode="json")}
    shipped: Path | None = None
    for level in levels:
        started = time.perf_counter()
        build = build_analysis_rows(
            questions,
            exclude_questions=held_questions,
            exclude_templates=held_templates if level == "template" else (),
            exclude_categories=config.ood_categories,
            validation_fraction=config.validation_fraction,
            validation_by=level,
            seed=config.seed,
        )
        rows_file = out / "data" / f"analysis-{level}.jsonl"
        write_records(rows_file, build.rows)
        inputs = [p for p in (data_dir / "judge-from-scratch" / "bbq_sample.jsonl", holdout_file) if p.is_file()]
        write_meta(
            rows_file, stage="analysis rows", inputs=inputs, config={"leakage_level": level}, counts=build.counts()
        )
        train_rows = [r for r in build.rows if r.split == "train"]
        validation_rows = [r for r in build.rows if r.split == "validation"]
        log(f"[{level}] rows: {json.dumps(build.counts()['by_split'])}, left out: {json.dumps(dict(build.dropped))}")
        validation, best_c = select_c(train_rows, validation_rows, config.c_grid)
        log(f"[{level}] validation ({_VALIDATION_OF[level]}), C={best_c}: {json.dumps(validation.get('all', {}))}")
        fitted_on = {
            "leakage_level": level,
            "rows": len(build.rows),
            "by_category": build.counts()["by_category"],
            "excluded": dict(build.dropped),
            "c": best_c,
            "seed": config.seed,
            "rows_sha256": sha256_file(rows_file),
        }
        model = fit_analysis(build.rows, c=best_c, fitted_on=fitted_on)
        model_file = out / level / ANALYSIS_FILE
        model_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(model_file, model)
        entry: dict[str, Any] = {
            "counts": build.counts(),
            "validation": validation,
            "c": best_c,
            "model": str(model_file),
        }
        if config.evaluate_holdout:
            entry["holdout_analysis"] = holdout_analysis_report(model, holdout, by_id)
            log(f"[{level}] holdout questions: {json.dumps(entry['holdout_analysis'].get('by_slice', {}))}")
            entry["holdout_eval"] = _holdout_eval(model_file, holdout, out / "eval" / level, config.holdout_runs)
            log(f"[{level}] holdout eval: {json.dumps({k: entry['holdout_eval'].get(k) for k in _HEADLINE})}")
        seconds[level] = round(time.perf_counter() - started, 1)
        report["levels"][level] = entry
        if level == config.leakage_level:
            shipped = model_file
    assert shipped is not None
    text_file = None
    if config.text_judge:
        started = time.perf_counter()
        report["text"] = train_text(config, questions, held_questions, held_templates, holdout, data_dir, out, log)
        text_file = Path(report["text"]["model"])
        seconds["text"] = round(time.perf_counter() - started, 1)
    report["seconds"] = seconds
    write_json(out / "recipe.json", report)
    card = write_reader_card(out / "MODEL_CARD.md", report, config.leakage_level)
    installed = None
    if install:
        from biasjudge.judge.freetext import TEXT_FILE
        from biasjudge.judge.reading.judge import shipped_analysis

        installed = shipped_analysis().parent
        installed.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped, installed / ANALYSIS_FILE)
        if text_file is not None:
            shutil.copyfile(text_file, installed / TEXT_FILE)
        shutil.copyfile(card, installed / card.name)
        log(f"installed into {installed} ({READING_DIR_NAME})")
    return ReaderResult(out, shipped, card, report, installed)


def train_text(
    config: ReaderRecipeConfig,
    questions: Sequence[Question],
    held_questions: set[str],
    held_templates: set[str],
    holdout: Sequence[Pair],
    data_dir: Path,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The free-text judge: its statement sets (written with sidecars), its fit, its report on the
    held-out sets per category, and the holdout's seven runs with the choices removed."""
    import random

    from biasjudge.data.statements import statement_sets, stereotyped_labels, write_statement_sets
    from biasjudge.judge.freetext import TEXT_FILE, fit_text_model

    sets = statement_sets(
        questions,
        holdout_questions=held_questions,
        holdout_templates=held_templates,
        ood_categories=config.ood_categories,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
    )
    settings = {
        "ood_categories": config.ood_categories,
        "validation_fraction": config.validation_fraction,
        "seed": config.seed,
    }
    write_statement_sets(sets, out / "data", data_dir, settings, log=lambda line: None)
    log(f"[text] statement pairs: {json.dumps({k: len(v.pairs) for k, v in sets.items()})}")
    train = list(sets["train"].pairs)
    random.Random(config.seed).shuffle(train)
    train = train[: config.text_train_pairs]
    labelled = stereotyped_labels(train)
    fitted_on = {
        "pairs": len(train),
        "by_kind": dict(Counter(p.labels[0].notes for p in train)),
        "c": config.text_c,
        "pair_c": config.text_pair_c,
        "seed": config.seed,
    }
    model = fit_text_model(
        [t for t, _ in labelled],
        [s for _, s in labelled],
        [(p.response_a.text, p.response_b.text, p.labels[0].verdict) for p in train],
        c=config.text_c,
        pair_c=config.text_pair_c,
        fitted_on=fitted_on,
    )
    model_file = out / "text" / TEXT_FILE
    model_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(model_file, model)
    report: dict[str, Any] = {"model": str(model_file), "fitted_on": fitted_on}
    for name in ("validation", "ood"):
        report[name] = score_statement_pairs(model, sets[name].pairs)
        log(f"[text] {name}: {json.dumps({k: report[name][k] for k in ('n', 'accuracy', 'kappa', 'tie_recall')})}")
    if config.evaluate_holdout:
        stripped = [p.model_copy(update={"answer_choices": []}) for p in holdout]
        report["holdout_without_choices"] = _holdout_eval(
            model_file, stripped, out / "eval" / "text", config.holdout_runs, scheme="text"
        )
        log(
            "[text] holdout without choices: "
            + json.dumps({k: report["holdout_without_choices"].get(k) for k in _HEADLINE})
        )
    return report


def score_statement_pairs(model: TextModel, pairs: Sequence[Pair]) -> dict[str, Any]:
    """Accuracy and kappa of the model's likeliest verdicts against the pairs' first labels: overall,
    per bias category and per pair kind (the label's notes), and the recall of the TIE pairs."""
    from biasjudge.eval.metrics import cohen_kappa

    readings = model.read_pairs([(p.response_a.text, p.response_b.text) for p in pairs])
    truth = [p.labels[0].verdict for p in pairs]
    predicted = [max(r.probs, key=lambda k: r.probs[k]) for r in readings]

    def summary(indices: Sequence[int]) -> dict[str, Any]:
        t, p = [truth[i] for i in indices], [predicted[i] for i in indices]
        return {
            "n": len(indices),
            "accuracy": round(sum(a == b for a, b in zip(t, p, strict=True)) / len(indices), 4) if indices else None,
            "kappa": round(cohen_kappa(t, p), 4) if len(set(t)) > 1 else None,
        }

    ties = [i for i, t in enumerate(truth) if t == "TIE"]
    out = summary(range(len(pairs)))
    out["tie_recall"] = round(sum(predicted[i] == "TIE" for i in ties) / len(ties), 4) if ties else None
    for field_name, key in (("by_category", lambda p: p.bias_category), ("by_kind", lambda p: p.labels[0].notes)):
        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            groups.setdefault(str(key(pair)), []).append(i)
        out[field_name] = {name: summary(idx) for name, idx in sorted(groups.items())}
    return out


def holdout_analysis_report(model: Any, holdout: Sequence[Pair], questions: dict[str, Question]) -> dict[str, Any]:
    """The question analysis on the holdout's questions, against BBQ's key: per slice and category."""
    rows = holdout_rows(holdout, questions)
    slice_of = {p.question_id: _slice_of(p) for p in holdout}
    by_slice = {
        name: accuracy_report(model, [r for r in rows if slice_of[r.question_id] == name]).get("all", {})
        for name in sorted(set(slice_of.values()))
    }
    return {"questions": len(rows), "by_slice": by_slice, "by_category": accuracy_report(model, rows)}


_HEADLINE = (
    "kappa_in_dist", "kappa_ood_religion", "kappa_subtle", "kappa_tie", "kappa_tracked",
    "position_bias_in_dist", "position_bias_ood", "self_consistency_t03",
)  # fmt: skip


def _holdout_eval(
    model_file: Path, holdout: Sequence[Pair], out: Path, runs: str, scheme: str = "reader"
) -> dict[str, Any]:
    from biasjudge.eval.protocol import run_eval, select_runs
    from biasjudge.judge.registry import make_judge

    judge = make_judge(f"{scheme}:{model_file}")
    started = time.perf_counter()
    try:
        log = run_eval(judge, list(holdout), out, checkpoint_name=CHECKPOINT_NAME, runs=select_runs(runs))
    finally:
        judge.close()
    metrics = dict(log.metrics[CHECKPOINT_NAME])
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def _metrics_table(title: str, metrics: dict[str, Any], keys: Sequence[str]) -> list[str]:
    return [f"| {title} | value |", "|---|---|", *(f"| {key} | {metrics.get(key)} |" for key in keys), ""]


def write_reader_card(path: Path, report: dict[str, Any], shipped_level: str) -> Path:
    """The reading judge's model card: data, the question analysis per level, the holdout eval."""
    lines = [
        "# biasjudge reader: the judge that reads the question first",
        "",
        "Question analysis (a logistic regression over anonymised n-grams, stored as numbers), response",
        "reading (biasjudge's answer classifier), the level rule, and an explanation written from the evidence.",
        f"Shipped: the `{shipped_level}`-level model. Built by `biasjudge train reader` at commit "
        f"`{report['commit']}`.",
        "",
    ]
    for level, entry in report["levels"].items():
        lines += [f"## Leakage level: {level}", "", f"Rows: `{json.dumps(entry['counts']['by_split'])}`", ""]
        val = entry.get("validation", {}).get("all", {})
        lines += [
            f"Validation ({_VALIDATION_OF.get(level, level)}): ambiguous {val.get('ambig')}, disambiguated "
            f"{val.get('disambig')}, target {val.get('target')}; C = {entry.get('c')}",
            "",
        ]
        holdout = entry.get("holdout_analysis")
        if holdout:
            lines += ["| holdout questions | ambiguous | disambiguated | target |", "|---|---|---|---|"]
            for name, acc in holdout["by_slice"].items():
                lines.append(f"| {name} | {acc.get('ambig')} | {acc.get('disambig')} | {acc.get('target')} |")
            lines.append("")
        metrics = entry.get("holdout_eval")
        if metrics:
            lines += _metrics_table("holdout (7-run protocol)", metrics, (*_HEADLINE, "parse_failure_rate", "seconds"))
    text = report.get("text")
    if text:
        lines += [
            "## The free-text judge (`text.json`, pairs without answer choices)",
            "",
            f"Fitted on {text['fitted_on']['pairs']} statement pairs written from BBQ's metadata "
            f"(`{json.dumps(text['fitted_on']['by_kind'])}`).",
            "",
            "| held-out statement pairs | n | accuracy | kappa | TIE recall |",
            "|---|---|---|---|---|",
        ]
        for name in ("validation", "ood"):
            found = text[name]
            lines.append(f"| {name} | {found['n']} | {found['accuracy']} | {found['kappa']} | {found['tie_recall']} |")
            for category, by in found["by_category"].items():
                lines.append(f"| {name}: {category} | {by['n']} | {by['accuracy']} | {by['kappa']} | |")
        lines.append("")
        metrics = text.get("holdout_without_choices")
        if metrics:
            lines += _metrics_table("holdout, choices removed (7-run protocol)", metrics, (*_HEADLINE, "seconds"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
