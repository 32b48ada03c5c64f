"""Speed of the shipped judge (the embedded base + biasjudge's adapter, both orders), side by side
with llama.cpp's raw prefill rate, in ONE run:

    .venv/bin/python bench/shipped_judge.py [--pairs 300]

1. raw prefill: one long batch of prompt tokens (holdout prompts joined, about 2,000 tokens, as
   n_batch-sized decode calls from an empty cache) through the same model with the same adapter:
   the ceiling tokens/s of this machine for this model.
2. the shipped judge: `llamacpp:embedded` (an OrderDebiasedJudge) on N holdout pairs, both orders
   (2N prompts) through `Judge.judge_batch`, as `biasjudge eval` calls it: wall time, prompts/s,
   tokens evaluated (the KV cache serves the rest) and evaluated tokens/s, whose ratio to (1) is
   the share of the ceiling the judge reaches.
3. the cost of the second order: tokens evaluated for the swapped prompts against the original
   ones (the common prefix up to the first response is reused).
4. the same without the adapter (`llamacpp:embedded-base`, single order), for the adapter's cost.
5. with `--merged PEFT_ADAPTER_DIR`: the adapter merged into the base and exported as one Q8_0
   GGUF (the alternative to shipping an adapter), judged the same way: its time and how far its
   probabilities are from the shipped judge's.

Targets (issue 10): 600 prompts in <= 180 s; evaluated tokens/s >= 85% of the raw prefill rate.
Writes bench/results/shipped_judge.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from biasjudge.backends.llamacpp import LlamaCppBackend
from biasjudge.config import resolve_data_dir
from biasjudge.io import read_records
from biasjudge.judge.debiased import OrderDebiasedJudge
from biasjudge.judge.judge import Judge
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.prompts.render import SCORE_PREFIX
from biasjudge.records import Pair

RESULTS = Path(__file__).resolve().parent / "results" / "shipped_judge.json"


def raw_prefill(backend: LlamaCppBackend, tokens: list[int], repeats: int = 3) -> float:
    """Best tokens/s of evaluating `tokens` from an empty cache in n_batch-sized decode calls."""
    llm = backend._llm
    best = 0.0
    for _ in range(repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        best = max(best, len(tokens) / (time.perf_counter() - start))
    llm.reset()
    return best


def long_batch(judge: Judge, pairs: list[Pair], n_tokens: int) -> list[int]:
    """About `n_tokens` prompt tokens: holdout prompts rendered and joined."""
    backend: Any = judge.backend
    tokens: list[int] = []
    for pair in pairs:
        text = backend.render(judge.prompt(JudgeRequest(pair), SCORE_PREFIX))
        tokens += backend.tokenize(text)
        if len(tokens) >= n_tokens:
            break
    return tokens[:n_tokens]


def judge_all(judge: Any, pairs: list[Pair]) -> tuple[float, list[Any]]:
    requests = [JudgeRequest(p, swapped=s) for p in pairs for s in (False, True)]
    start = time.perf_counter()
    out: list[Any] = []
    for i in range(0, len(requests), 16):
        out += judge.judge_batch(requests[i : i + 16])
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--merged", type=Path, default=None, help="PEFT adapter folder to merge and compare")
    parser.add_argument("--compare-pairs", type=int, default=100, help="pairs for the comparisons (4) and (5)")
    args = parser.parse_args()
    holdout = read_records(
        resolve_data_dir(args.data_dir) / "judge-from-scratch" / "eval_set_unlabeled.jsonl", Pair
    ).records[: args.pairs]
    load = os.getloadavg()

    shipped = make_judge("llamacpp:embedded")
    assert isinstance(shipped, OrderDebiasedJudge)
    inner = shipped.inner
    backend: Any = inner.backend
    prefill = raw_prefill(backend, long_batch(inner, holdout, args.prefill_tokens))

    backend.stats = {"prompt_tokens": 0, "evaluated_tokens": 0}
    seconds, judgments = judge_all(shipped, holdout)
    stats = dict(backend.stats)
    evaluated_per_s = stats["evaluated_tokens"] / seconds

    # The second order's cost: each pair's original prompt, then its swapped one, counted apart.
    backend._llm.reset()
    per_order = {"original": 0, "swapped": 0}
    for pair in holdout[:40]:
        for swapped in (False, True):
            before = backend.stats["evaluated_tokens"]
            inner.judge_batch([JudgeRequest(pair, swapped=swapped)])
            per_order["swapped" if swapped else "original"] += backend.stats["evaluated_tokens"] - before
    second_order_share = per_order["swapped"] / per_order["original"]
    shipped.close()

    base = make_judge("llamacpp:embedded-base", system_prompt=inner.system_prompt)
    base_backend: Any = base.backend  # type: ignore[attr-defined]
    base_backend.stats = {"prompt_tokens": 0, "evaluated_tokens": 0}
    compared = holdout[: args.compare_pairs]
    shipped_compared_seconds = seconds * len(compared) / len(holdout)
    base_seconds, _ = judge_all(base, compared)
    base_prefill = raw_prefill(base_backend, long_batch(base, holdout, args.prefill_tokens))  # type: ignore[arg-type]
    base_stats = dict(base_backend.stats)
    base.close()

    probs = np.array([[j.probs[v] for v in ("A", "B", "TIE")] for j in judgments if j.probs])
    merged: dict[str, Any] = {}
    if args.merged is not None:
        import tempfile

        from biasjudge.train.export import export_gguf, merge_adapter

        with tempfile.TemporaryDirectory() as tmp:
            folder = merge_adapter("embedded", args.merged, Path(tmp) / "merged")
            gguf = export_gguf(folder, Path(tmp) / "merged-q8_0.gguf", "Q8_0")
            merged_judge = OrderDebiasedJudge(
                Judge(LlamaCppBackend(str(gguf)), system_prompt=inner.system_prompt, mode="score")
            )
            merged_seconds, merged_judgments = judge_all(merged_judge, compared)
            merged_judge.close()
            merged_probs = np.array([[j.probs[v] for v in ("A", "B", "TIE")] for j in merged_judgments])
            merged = {
                "gguf_bytes": gguf.stat().st_size,
                "seconds": round(merged_seconds, 1),
                "prompts_per_s": round(2 * len(compared) / merged_seconds, 2),
                "pairs": len(compared),
                "seconds_shipped_adapter_same_pairs_prorated": round(shipped_compared_seconds, 1),
                "max_abs_prob_difference_vs_adapter": round(
                    float(np.abs(merged_probs - probs[: len(merged_probs)]).max()), 4
                ),
                "verdict_agreement_vs_adapter": round(
                    float(np.mean([a.verdict == b.verdict for a, b in zip(judgments, merged_judgments, strict=False)])),
                    4,
                ),
            }
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_start": load,
            "load_end": os.getloadavg(),
        },
        "pairs": len(holdout),
        "prompts": 2 * len(holdout),
        "raw_prefill_tokens_per_s": round(prefill, 1),
        "shipped_judge": {
            "seconds": round(seconds, 1),
            "prompts_per_s": round(2 * len(holdout) / seconds, 2),
            "prompt_tokens": stats["prompt_tokens"],
            "evaluated_tokens": stats["evaluated_tokens"],
            "evaluated_tokens_per_s": round(evaluated_per_s, 1),
            "share_of_raw_prefill": round(evaluated_per_s / prefill, 3),
            "mean_probs": [round(float(x), 3) for x in probs.mean(axis=0)],
        },
        "second_order": {
            "pairs": 40,
            "tokens_original_order": per_order["original"],
            "tokens_swapped_order": per_order["swapped"],
            "share_of_a_full_pass": round(second_order_share, 3),
        },
        "base_without_adapter": {
            "pairs": len(compared),
            "seconds": round(base_seconds, 1),
            "prompts_per_s": round(2 * len(compared) / base_seconds, 2),
            "evaluated_tokens_per_s": round(base_stats["evaluated_tokens"] / base_seconds, 1),
            "raw_prefill_tokens_per_s": round(base_prefill, 1),
        },
        "merged_q8_0_instead_of_adapter": merged or None,
        "targets": {
            "600_prompts_within_180_s": seconds <= 180 if len(holdout) >= 300 else None,
            "evaluated_at_least_85pct_of_prefill": evaluated_per_s >= 0.85 * prefill,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
