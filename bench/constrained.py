"""Generate mode with and without the contract grammar, side by side in ONE run (issue 14).

    .venv/bin/python bench/constrained.py --pairs 60

For each judge (default: the shipped adapter in one order, `llamacpp:embedded?order=single`,
and the untrained base, `llamacpp:embedded-base`), the first N holdout pairs are judged in
generate mode (original order, greedy, --max-tokens) twice: `constrained=false` (free
generation, read by the strict parser) and `constrained=true` (llama.cpp holds the output to
`verdict.CONTRACT_GRAMMAR`; an output cut at the cap is closed and its verdict scored). The two
alternate per chunk of pairs (ABBA), so a change in the machine's load falls on both alike.

Reported per judge and setting: parse-failure rate, Cohen's kappa against the human labels (over
the parsed verdicts, and with parse failures counted as wrong: kappa over all pairs, a
PARSE_FAIL scored as TIE), outputs cut at the cap, generated tokens per second (completion
tokens / wall time of the generate calls) and wall time. Writes bench/results/constrained.json.
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
from biasjudge.eval.metrics import cohen_kappa
from biasjudge.io import read_records
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.records import Judgment, Pair

RESULTS = Path(__file__).resolve().parent / "results" / "constrained.json"
JUDGES = ("llamacpp:embedded?order=single", "llamacpp:embedded-base")


def _scores(pairs: list[Pair], judged: list[Judgment], wall_s: float) -> dict[str, Any]:
    labelled = [(p.human_verdict, j.verdict) for p, j in zip(pairs, judged, strict=True) if p.human_verdict]
    parsed = [(h, v) for h, v in labelled if v != "PARSE_FAIL"]
    tokens = sum(j.completion_tokens or 0 for j in judged)

    def kappa(rows: Sequence[tuple[str, str]]) -> float | None:
        value = cohen_kappa([h for h, _ in rows], [v for _, v in rows]) if rows else float("nan")
        return None if value != value else round(value, 4)

    return {
        "pairs": len(judged),
        "parse_failures": sum(j.verdict == "PARSE_FAIL" for j in judged),
        "parse_failure_rate": round(sum(j.verdict == "PARSE_FAIL" for j in judged) / len(judged), 4),
        "cut_at_cap": sum(j.finish_reason == "length" for j in judged),
        "closed_and_scored": sum(j.reasoning_truncated for j in judged),
        "kappa_parsed": kappa(parsed),
        "kappa_all_parse_fail_as_tie": kappa([(h, "TIE" if v == "PARSE_FAIL" else v) for h, v in labelled]),
        "verdicts": {v: sum(j.verdict == v for j in judged) for v in ("A", "B", "TIE", "PARSE_FAIL")},
        "completion_tokens": tokens,
        "wall_s": round(wall_s, 1),
        "tokens_per_s": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "mean_reasoning_chars": round(sum(len(j.reasoning or "") for j in judged) / len(judged), 1),
        "example": judged[0].raw_output[:200],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--chunk", type=int, default=10, help="pairs per alternation (ABBA)")
    parser.add_argument("--judge", action="append", default=None, help=f"judge spec (repeat; default {JUDGES})")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pairs = read_records(resolve_data_dir(args.data_dir) / "judge-from-scratch" / "eval_set_unlabeled.jsonl", Pair)
    chosen = pairs.records[: args.pairs]
    started, load_start = time.perf_counter(), os.getloadavg()
    results: dict[str, Any] = {}
    for spec in args.judge or JUDGES:
        judges = {
            c: make_judge(spec, mode="generate", max_tokens=args.max_tokens, constrained=c) for c in (False, True)
        }
        judged: dict[bool, list[Judgment]] = {False: [], True: []}
        wall = {False: 0.0, True: 0.0}
        try:
            for k, start in enumerate(range(0, len(chosen), args.chunk)):
                chunk = chosen[start : start + args.chunk]
                order = (False, True) if k % 4 in (0, 3) else (True, False)  # ABBA
                for constrained in order:
                    t = time.perf_counter()
                    judged[constrained] += judges[constrained].judge_batch([JudgeRequest(p) for p in chunk])
                    wall[constrained] += time.perf_counter() - t
        finally:
            for judge in judges.values():
                judge.close()
        results[spec] = {("constrained" if c else "free"): _scores(chosen, judged[c], wall[c]) for c in (False, True)}
        print(spec, json.dumps(results[spec], indent=1), flush=True)
    out = {
        "command": f"python bench/constrained.py --pairs {args.pairs} --max-tokens {args.max_tokens} "
                   f"--chunk {args.chunk}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_start": load_start,
                    "load_end": os.getloadavg()},
        "bench_s": round(time.perf_counter() - started, 1),
        "results": results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
