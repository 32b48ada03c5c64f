"""Judging speed of the embedded Gemma 3 270M through llama.cpp, all ways side by side in ONE run.

    .venv/bin/python bench/judge_speed.py --pairs 20

On N holdout pairs, both orders each (2N prompts), it measures:

1. generate: greedy, up to --max-tokens new tokens (384, the reference's setting). Generation is
   slow (~0.17 prompts/s on 2 cores), so it runs on the first --generate-pairs pairs only (3 by
   default); its pairs/s is over those.
2. score, no prefix reuse: every prompt evaluated from its first token.
3. score, prefix reuse: the KV cache keeps the shared system prompt and the original->swapped
   common prefix; only new suffixes are evaluated.
4. harness overhead: `Judge.judge_batch` (score mode, reuse on) against bare `backend.score` calls
   on the same prompts, each from a cold cache. Reported two ways: the end-to-end time ratio
   (noisy on a shared machine), and the harness's own time (judge time minus time inside the
   backend), which does not depend on the model's speed.

Targets: score (reuse) >= 5x generate in pairs/s; harness overhead < 5%.
The table is printed and the numbers written to bench/results/judge_speed.json. Timings on a
machine shared with other jobs vary from run to run: the JSON keeps the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from biasjudge.backends.base import Generation, GenerationParams, PromptRequest
from biasjudge.backends.llamacpp import LlamaCppBackend
from biasjudge.config import resolve_data_dir
from biasjudge.io import read_records
from biasjudge.judge.judge import Judge
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.prompts.render import SCORE_PREFIX
from biasjudge.records import Pair
from biasjudge.verdict import VERDICTS

RESULTS = Path(__file__).resolve().parent / "results" / "judge_speed.json"


class TimedBackend:
    """Passes calls through to a backend and adds up the time spent inside it."""

    def __init__(self, inner: LlamaCppBackend) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.seconds = 0.0

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        start = time.perf_counter()
        try:
            return self.inner.score(requests, choices)
        finally:
            self.seconds += time.perf_counter() - start

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        start = time.perf_counter()
        try:
            return self.inner.generate(requests, params)
        finally:
            self.seconds += time.perf_counter() - start

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        self.inner.close()


def cold(backend: LlamaCppBackend, reuse: bool) -> None:
    """Forget the KV cache (the next prompt starts from token 0) and set the reuse mode."""
    backend._llm.n_tokens = 0
    backend.reuse_prefix = reuse


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def normalised(scores: dict[str, float]) -> dict[str, float]:
    import math

    total = sum(math.exp(v) for v in scores.values())
    return {k: math.exp(v) / total for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20, help="holdout pairs to score (both orders each)")
    parser.add_argument("--generate-pairs", type=int, default=3, help="pairs to generate for (both orders each)")
    parser.add_argument("--max-tokens", type=int, default=384, help="new-token cap in generate mode")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the overhead measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--model", default="", help="GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with judge-from-scratch/")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    args = parser.parse_args()

    holdout = resolve_data_dir(args.data_dir) / "judge-from-scratch" / "eval_set_unlabeled.jsonl"
    pairs: list[Pair] = read_records(holdout, Pair, limit=args.pairs).records
    load_start = os.getloadavg()[0]
    backend = LlamaCppBackend(args.model, spec=f"llamacpp:{args.model}", n_threads=args.threads)
    timer = TimedBackend(backend)
    judge = Judge(timer, mode="score", batch_size=2 * len(pairs))  # type: ignore[arg-type]
    requests = [JudgeRequest(p, swapped=s) for p in pairs for s in (False, True)]
    prompts = [judge.prompt(r, SCORE_PREFIX) for r in requests]
    n_pairs = len(pairs)
    threads = args.threads or os.cpu_count()
    print(f"{n_pairs} pairs ({len(prompts)} prompts), model {backend.path.name}, {threads} threads", flush=True)

    # Warm-up: one prompt, so that no measurement pays first-call allocations.
    cold(backend, False)
    backend.score(prompts[:1], VERDICTS)

    cold(backend, False)
    t_full, full_scores = timed(lambda: backend.score(prompts, VERDICTS))
    print(f"score, no reuse: {t_full:.1f} s", flush=True)

    cold(backend, True)
    stats_before = dict(backend.stats)
    t_reuse, reuse_scores = timed(lambda: backend.score(prompts, VERDICTS))
    evaluated = backend.stats["evaluated_tokens"] - stats_before["evaluated_tokens"]
    total_tokens = backend.stats["prompt_tokens"] - stats_before["prompt_tokens"]
    print(f"score, reuse: {t_reuse:.1f} s ({evaluated}/{total_tokens} tokens evaluated)", flush=True)
    max_diff = max(
        abs(normalised(a)[v] - normalised(b)[v])
        for a, b in zip(full_scores, reuse_scores, strict=True)
        for v in VERDICTS
    )

    bare_times: list[float] = []
    judge_times: list[float] = []
    own_times: list[float] = []
    for _ in range(args.repeats):
        cold(backend, True)
        bare_times.append(timed(lambda: backend.score(prompts, VERDICTS))[0])
        cold(backend, True)
        timer.seconds = 0.0
        t_judge, judgments = timed(lambda: judge.judge_batch(requests))
        judge_times.append(t_judge)
        own_times.append(t_judge - timer.seconds)
    t_bare, t_judge = statistics.median(bare_times), statistics.median(judge_times)
    t_own = statistics.median(own_times)
    print(f"harness: judge {t_judge:.1f} s vs bare {t_bare:.1f} s; own time {t_own * 1000:.1f} ms", flush=True)

    gen_prompts = [PromptRequest(p.messages) for p in prompts[: 2 * args.generate_pairs]]
    params = GenerationParams(temperature=0.0, max_tokens=args.max_tokens)
    cold(backend, True)
    t_gen, generations = timed(lambda: backend.generate(gen_prompts, params))
    gen_pairs = len(gen_prompts) / 2
    generated = [g.completion_tokens or 0 for g in generations]
    print(f"generate: {t_gen:.1f} s for {len(gen_prompts)} prompts", flush=True)

    rates = {
        "generate": gen_pairs / t_gen,
        "score_no_reuse": n_pairs / t_full,
        "score_reuse": n_pairs / t_reuse,
        "judge_score_reuse": n_pairs / t_judge,
    }
    ratios = {
        "score_reuse_over_generate": rates["score_reuse"] / rates["generate"],
        "score_no_reuse_over_generate": rates["score_no_reuse"] / rates["generate"],
        "reuse_gain": rates["score_reuse"] / rates["score_no_reuse"],
        "harness_overhead_end_to_end": t_judge / t_bare - 1,
        "harness_own_time_fraction": t_own / t_judge,
    }
    rows = [
        (
            f"generate, greedy, max {args.max_tokens} tokens ({gen_pairs:g} pairs)",
            rates["generate"],
            2 * rates["generate"],
        ),
        ("score, no prefix reuse", rates["score_no_reuse"], 2 * rates["score_no_reuse"]),
        ("score, prefix reuse", rates["score_reuse"], 2 * rates["score_reuse"]),
        ("Judge.judge_batch, score, prefix reuse", rates["judge_score_reuse"], 2 * rates["judge_score_reuse"]),
    ]
    print()
    print(f"| way of judging ({n_pairs} holdout pairs, both orders) | pairs/s | prompts/s |")
    print("|---|---|---|")
    for name, pairs_s, prompts_s in rows:
        print(f"| {name} | {pairs_s:.3f} | {prompts_s:.3f} |")
    print()
    print("| ratio | value | target |")
    print("|---|---|---|")
    print(f"| score (reuse) / generate | {ratios['score_reuse_over_generate']:.1f}x | >= 5x |")
    print(f"| score (no reuse) / generate | {ratios['score_no_reuse_over_generate']:.1f}x | |")
    print(f"| prefix reuse gain | {ratios['reuse_gain']:.2f}x ({evaluated}/{total_tokens} tokens evaluated) | |")
    print(
        f"| harness overhead, end to end (median of {args.repeats}) "
        f"| {100 * ratios['harness_overhead_end_to_end']:+.1f}% | < 5% |"
    )
    print(f"| harness own time / judge time | {100 * ratios['harness_own_time_fraction']:.2f}% | < 5% |")
    print(f"| max prob. difference reuse vs no reuse | {max_diff:.4f} | < 0.05 |")
    print(f"\nload average: {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end ({os.cpu_count()} cores)")

    result = {
        "settings": {
            "pairs": n_pairs,
            "prompts": len(prompts),
            "generate_pairs": gen_pairs,
            "max_tokens": args.max_tokens,
            "threads": threads,
            "model": str(backend.path),
            "repeats": args.repeats,
        },
        "seconds": {
            "generate": t_gen,
            "score_no_reuse": t_full,
            "score_reuse": t_reuse,
            "bare_score_reuse": bare_times,
            "judge_score_reuse": judge_times,
            "judge_own": own_times,
        },
        "pairs_per_s": rates,
        "ratios": ratios,
        "tokens": {"prompt_tokens": total_tokens, "evaluated_with_reuse": evaluated, "generated": generated},
        "max_prob_diff_reuse_vs_full": max_diff,
        "verdicts": {v: sum(j.verdict == v for j in judgments) for v in VERDICTS},
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    backend.close()


if __name__ == "__main__":
    main()
