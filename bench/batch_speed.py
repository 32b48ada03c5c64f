"""Throughput of `biasjudge judge-file`: the local engine and Ray Data side by side, in ONE run.

    .venv/bin/python bench/batch_speed.py --pairs 40

The same job (the first N holdout pairs, JSONL in and out, the shipped judge `llamacpp:embedded`,
both orders of every pair) runs three ways, one after another:

1. local: in this process;
2. Ray, 1 actor (Ray's default for one actor here: both CPUs);
3. Ray, 2 actors x 1 CPU each: what a second actor (and its core) buys.

Threads: an actor's llama.cpp judge runs as many threads (prompt evaluation, all of score mode,
included) as the CPUs Ray gives it: 2 for one actor, 1 each for two actors.

Each Ray run starts a local runtime of 2 CPUs and stops it, as `biasjudge judge-file --engine ray`
does. Two rates per run: rows/s of the whole job (start-up included: Ray, actors, model load) and
rows/s after the first batch came back (the steady rate, which is what scales with actors on a
cluster). The verdicts of every Ray run are compared with the local run's. The numbers go to
bench/results/batch_speed.json, with the load average at start and end (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from biasjudge.batch.judge_file import BatchSummary, judge_file
from biasjudge.batch.ray_engine import RayOptions
from biasjudge.config import resolve_data_dir

RESULTS = Path(__file__).resolve().parent / "results" / "batch_speed.json"
RUNS: dict[str, RayOptions | None] = {
    "local": None,
    "ray_1_actor": RayOptions(actors=1, num_cpus=2),
    "ray_2_actors": RayOptions(actors=2, num_cpus=2),
}


def _verdicts(path: Path) -> list[tuple[int, str, str]]:
    return [(r["line"], r["pair_id"], r["verdict"]) for r in map(json.loads, path.read_text().splitlines())]


def _run(source: Path, folder: Path, name: str, options: RayOptions | None, args: argparse.Namespace) -> BatchSummary:
    out = folder / f"{name}.jsonl"
    print(f"{name}: judging {args.pairs} pairs ...", flush=True)
    summary = judge_file(
        source,
        out,
        judge=args.judge,
        batch_size=args.batch_size,
        engine="local" if options is None else "ray",
        ray=options,
        progress=False,
    )
    print(
        f"{name}: {summary.elapsed_s:.1f} s, {summary.rows_per_s:.3f} rows/s, steady {summary.steady_rows_per_s} "
        f"rows/s, first verdict after {summary.first_row_s} s",
        flush=True,
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40, help="First N holdout pairs.")
    parser.add_argument("--batch-size", type=int, default=8, help="Rows per judge call and per Ray batch.")
    parser.add_argument("--judge", default="llamacpp:embedded", help="Judge spec.")
    parser.add_argument("--data-dir", type=Path, default=None, help="Data folder (default: ../shared/data).")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where the JSON goes.")
    args = parser.parse_args()

    holdout = resolve_data_dir(args.data_dir) / "judge-from-scratch" / "eval_set_unlabeled.jsonl"
    load_start = os.getloadavg()
    started = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="batch-speed-") as tmp:
        folder = Path(tmp)
        source = folder / "pairs.jsonl"
        source.write_text("".join(f"{line}\n" for line in holdout.read_text().splitlines()[: args.pairs]))
        reference: list[tuple[int, str, str]] | None = None
        for name, options in RUNS.items():
            summary = _run(source, folder, name, options, args)
            verdicts = _verdicts(folder / f"{name}.jsonl")
            reference = reference or verdicts
            runs[name] = {
                "elapsed_s": summary.elapsed_s,
                "first_row_s": summary.first_row_s,
                "rows_per_s": summary.rows_per_s,
                "steady_rows_per_s": summary.steady_rows_per_s,
                "judged": summary.judged,
                "verdicts": summary.verdicts,
                "same_verdicts_as_local": verdicts == reference,
            }

    def ratio(a: str, b: str, key: str) -> float | None:
        x, y = runs[a][key], runs[b][key]
        return round(x / y, 3) if x and y else None

    result = {
        "settings": {
            "pairs": args.pairs,
            "batch_size": args.batch_size,
            "judge": args.judge,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
            "bench_s": round(time.perf_counter() - started, 1),
        },
        "runs": runs,
        "ratios": {
            "rows_per_s_vs_local": {name: ratio(name, "local", "rows_per_s") for name in RUNS},
            "steady_rows_per_s_vs_local": {name: ratio(name, "local", "steady_rows_per_s") for name in RUNS},
            "ray_2_actors_over_1_actor": {
                "rows_per_s": ratio("ray_2_actors", "ray_1_actor", "rows_per_s"),
                "steady_rows_per_s": ratio("ray_2_actors", "ray_1_actor", "steady_rows_per_s"),
            },
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
