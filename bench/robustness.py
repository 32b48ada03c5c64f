"""The robustness suite on the shipped judge, the answer-key rule and the hybrid, side by side in ONE run:

    .venv/bin/python bench/robustness.py [--pairs 40] [--out runs/bench-robustness]

A stratified subset of the holdout (slices x buckets, in proportion), each pair with its twelve
twins (seven injections, four benign edits, one padding; see `biasjudge.eval.robustness.TWINS`):

1. the shipped judge, `llamacpp:embedded` (both orders of every case combined), judges originals
   and twins: the only model calls of the run;
2. the answer-key rule, `answer-key:` (levels joined from pairs.jsonl, as `biasjudge eval` does);
3. the hybrid on the shipped judge's probabilities of step 1, `hybrid:replay:...` (what `hybrid:`
   computes, without judging the same prompts again; the quick start measures the hybrid the same way).

It is the command

    biasjudge robustness --judge llamacpp:embedded --judge answer-key: \\
        --judge hybrid:replay:<out>/llamacpp-embedded/robustness-predictions.json --limit 40 --out <out>

as a library call, timed (resumable: `judged_in_this_run` says how many judgments were made rather
than read from <out>'s caches). Target (issue 13): the shipped judge's flip rate under injection is
no higher than under the benign twins. Writes bench/results/robustness.json (rates and intervals,
without the per-case rows, which stay in <out>/robustness.json) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from biasjudge.eval.protocol import slug
from biasjudge.eval.robustness import CACHE_NAME, PREDICTIONS_NAME, robustness
from biasjudge.eval.run import JudgeToEval, jfs_folder, resolve_holdout
from biasjudge.eval.settings import RobustnessSettings
from biasjudge.eval.twins import TWINS

RESULTS = Path(__file__).resolve().parent / "results" / "robustness.json"
SHIPPED = "llamacpp:embedded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-robustness"))
    args = parser.parse_args()
    jfs = jfs_folder(args.data_dir)
    holdout = resolve_holdout(jfs / "eval_set_unlabeled.jsonl", None, args.data_dir)
    replay = args.out / slug(SHIPPED) / PREDICTIONS_NAME
    hybrid = f"hybrid:replay:{replay}?questions={jfs / 'bbq_sample.jsonl'}"
    judges = [JudgeToEval(SHIPPED, SHIPPED), JudgeToEval("answer-key:", "answer-key:"), JudgeToEval(hybrid, "hybrid:")]
    command = (
        f"biasjudge robustness --judge {SHIPPED} --judge answer-key: --judge {hybrid} --name {SHIPPED} "
        f"--name answer-key: --name hybrid: --limit {args.pairs} --out {args.out}"
    )

    def cached() -> dict[str, int]:
        folders = {j.name: args.out / slug(j.name) / CACHE_NAME for j in judges}
        return {name: len(p.read_text().splitlines()) if p.exists() else 0 for name, p in folders.items()}

    before = cached()
    load = os.getloadavg()
    started = time.perf_counter()
    run = robustness(
        judges,
        holdout,
        args.out,
        RobustnessSettings(limit=args.pairs),
        holdout_name=str(jfs / "eval_set_unlabeled.jsonl"),
        command=command,
    )
    seconds = time.perf_counter() - started
    judged = {name: n - before[name] for name, n in cached().items()}
    shipped = run.results.results[0]
    families = {f.family: f for f in shipped.families}
    injection, benign = families["injection"], families["benign"]
    assert injection.rate is not None and benign.rate is not None
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_start": load,
            "load_end": os.getloadavg(),
        },
        "pairs": shipped.n_pairs,
        "twins": [{"name": t.name, "family": t.family, "description": t.description} for t in TWINS],
        "cases_per_judge": len(shipped.cases),
        "seconds": round(seconds, 1),
        "judged_in_this_run": judged,
        "shipped_judge_prompts_per_s": round(2 * judged[SHIPPED] / seconds, 2) if judged[SHIPPED] else None,
        "command": command,
        "table": run.table,
        "results": [r.model_dump(exclude={"cases"}) for r in run.results.results],
        "targets": {
            "shipped_injection_flip_rate_at_most_benign": injection.rate <= benign.rate,
            "shipped_injection_minus_benign": shipped.injection_minus_benign,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(run.table)
    shown = ("pairs", "seconds", "judged_in_this_run", "shipped_judge_prompts_per_s", "targets")
    print(json.dumps({k: result[k] for k in shown}, indent=2))


if __name__ == "__main__":
    main()
