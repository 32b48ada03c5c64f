"""Speed of the default judge's two paths and of the pairwise judge, side by side in ONE run.

    .venv/bin/python bench/default_judges.py                 # 300 holdout pairs, both orders
    .venv/bin/python bench/default_judges.py --pairwise-pairs 10

On the holdout's pairs, both orders of each (what a debiased service call judges), one judge after
the other:

1. `reader:` on the pairs as they are (answer choices: the question reader);
2. `reader:` on the same pairs with their choices removed (open text: the free-text judge, MiniLM
   on the CPU), which is what a user who sends open text gets;
3. `text:` on the same open-text pairs (the free-text judge alone: the default adds nothing);
4. `llamacpp:embedded`, the pairwise LoRA judge, on the first --pairwise-pairs pairs only (it is
   about 100 times slower).

Each judge is loaded first (the load is timed on its own), then judges in batches of --batch-size
requests. pairs/s counts pairs (both orders of a pair = one pair). Writes
bench/results/default_judges.json with the load average at start and end (a shared machine varies).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biasjudge.config import resolve_data_dir
from biasjudge.io import read_records
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.records import Pair

RESULTS = Path(__file__).resolve().parent / "results" / "default_judges.json"


def measure(spec: str, pairs: Sequence[Pair], batch_size: int) -> dict[str, Any]:
    started = time.perf_counter()
    judge = make_judge(spec)
    try:
        # The first judgment loads what the judge loads lazily (the free-text judge's MiniLM).
        judge.judge_batch([JudgeRequest(pairs[0])])
        loaded = time.perf_counter() - started
        requests = [JudgeRequest(p, swapped=s) for p in pairs for s in (False, True)]
        started = time.perf_counter()
        judgments = []
        for i in range(0, len(requests), batch_size):
            judgments += judge.judge_batch(requests[i : i + batch_size])
        seconds = time.perf_counter() - started
    finally:
        judge.close()
    verdicts = [j.verdict for j in judgments]
    return {
        "pairs": len(pairs),
        "judgments": len(judgments),
        "load_seconds": round(loaded, 2),
        "seconds": round(seconds, 3),
        "pairs_per_s": round(len(pairs) / seconds, 2),
        "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300, help="Holdout pairs for the reader and text judges.")
    parser.add_argument("--pairwise-pairs", type=int, default=20, help="Holdout pairs for the pairwise judge.")
    parser.add_argument("--batch-size", type=int, default=16, help="Requests per judge call.")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()

    holdout_file = resolve_data_dir(args.data_dir) / "judge-from-scratch" / "eval_set_unlabeled.jsonl"
    pairs = read_records(holdout_file, Pair).records[: args.pairs]
    open_text = [p.model_copy(update={"answer_choices": []}) for p in pairs]
    load_start = os.getloadavg()
    results = {
        "reader: (with choices)": measure("reader:", pairs, args.batch_size),
        "reader: (choices removed: free text)": measure("reader:", open_text, args.batch_size),
        "text: (choices removed)": measure("text:", open_text, args.batch_size),
        "llamacpp:embedded (with choices)": measure("llamacpp:embedded", pairs[: args.pairwise_pairs], args.batch_size),
    }
    base = results["reader: (with choices)"]["pairs_per_s"]
    report = {
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "loadavg_start_end": [load_start, os.getloadavg()],
        },
        "command": "python bench/default_judges.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "results": results,
        "ratios_to_reader_with_choices": {name: round(r["pairs_per_s"] / base, 4) for name, r in results.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'judge':42} {'pairs':>6} {'load s':>7} {'pairs/s':>9}")
    for name, found in results.items():
        print(f"{name:42} {found['pairs']:>6} {found['load_seconds']:>7} {found['pairs_per_s']:>9}")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
