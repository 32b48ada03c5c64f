"""A served judge through the `openai:` backend, side by side with the in-process judge, in ONE run:

    flock /tmp/biasjudge-heavy.lock .venv/bin/python bench/served_judge.py [--pairs 40] [--concurrency 1 4]

The server is llama-cpp-python's (`python -m llama_cpp.server`) on loopback, running the shipped
judge's weights: the embedded Gemma 3 270M GGUF with the shipped adapter (`--lora_path`), the
in-process backend's context (4096) and threads (every core). The client is the shipped judge's
recipe through `openai:` (as deploy/client.py builds it): the manifest's system prompt, its turn
format rendered here and sent to /v1/completions, both orders of each pair combined, the shipped
calibration; score mode (the top-20 log-probs after `<verdict>`), as `llamacpp:embedded` judges.

1. in-process: `llamacpp:embedded`, one pair at a time (`judge_batch([pair])`): latency, pairs/s.
2. served, for each concurrency C: C client threads, each judging one pair at a time, through one
   backend with C HTTP requests in flight at most (`?concurrency=C`): pairs/s, p50/p99 latency per
   pair, parse failures (PARSE_FAIL verdicts), errors, floored choices, and the HTTP requests per
   pair the server logged. (llama-cpp-python's server answers one request at a time and reuses the
   KV cache of the previous prompt: interleaved requests share less of it.)
3. agreement: served verdicts against the in-process ones on the same pairs, and the largest
   difference of a probability.
4. one cost of the server apart: llama-cpp-python's server needs `logits_all` for log-probs, i.e.
   the vocabulary's logits at every prompt position; the same judge prompt (one holdout pair's,
   its full length) evaluated from an empty cache with and without it, in process (best of 3).

One warm-up pair (not counted) before each phase: model load, the tokenizer probe. The CPUs may be
shared: the load average is recorded around each phase. Writes bench/results/served_judge.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from biasjudge.backends.embedded import embedded_gguf_path
from biasjudge.config import resolve_data_dir
from biasjudge.io import read_records, write_json
from biasjudge.judge import registry
from biasjudge.judge.protocol import JudgeRequest, PairJudge
from biasjudge.judge.registry import make_judge
from biasjudge.judge.shipped import ADAPTER_FILE, shipped_dir, shipped_manifest
from biasjudge.prompts.render import SCORE_PREFIX
from biasjudge.records import Judgment, Pair
from biasjudge.verdict import PARSE_FAIL, VERDICTS

RESULTS = Path(__file__).resolve().parent / "results" / "served_judge.json"
SERVED_NAME = "biasjudge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def llama_server(log_path: Path, threads: int) -> Iterator[tuple[str, list[str]]]:
    """The shipped judge's weights behind llama-cpp-python's server: (its /v1 URL, the command)."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()),
        "--lora_path", str(shipped_dir() / ADAPTER_FILE), "--model_alias", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
    ]  # fmt: skip
    with log_path.open("wb") as log:  # a file, not a pipe: llama.cpp logs enough to fill a pipe
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
                try:
                    if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("llama_cpp.server did not answer /v1/models within 120 s")
                time.sleep(0.2)
            yield url, command
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def served_judge(url: str, concurrency: int) -> PairJudge:
    """The shipped judge's recipe through `openai:` (the construction deploy/client.py uses too)."""
    return registry.served_judge(f"openai:{url}#{SERVED_NAME}", shipped_manifest(), concurrency=concurrency)


def judge_pairs(judge: PairJudge, pairs: list[Pair], clients: int) -> tuple[float, list[float], list[Judgment | None]]:
    """(wall seconds, latency per pair, judgment per pair or None on an error) with `clients` threads
    each judging one pair at a time."""
    latencies = [0.0] * len(pairs)
    out: list[Judgment | None] = [None] * len(pairs)
    queue = iter(range(len(pairs)))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                i = next(queue, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                out[i] = judge.judge_batch([JudgeRequest(pairs[i])])[0]
            except Exception as exc:  # counted, never the end of the run
                print(f"pair {pairs[i].pair_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
            latencies[i] = time.perf_counter() - start

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, out


def summary(seconds: float, latencies: list[float], judgments: list[Judgment | None]) -> dict[str, Any]:
    done = [j for j in judgments if j is not None]
    return {
        "seconds": round(seconds, 2),
        "pairs_per_s": round(len(judgments) / seconds, 3),
        "p50_latency_s": round(float(np.percentile(latencies, 50)), 3),
        "p99_latency_s": round(float(np.percentile(latencies, 99)), 3),
        "max_latency_s": round(max(latencies), 3),
        "parse_failures": sum(j.verdict == PARSE_FAIL for j in done),
        "errors": len(judgments) - len(done),
        "floored_choices": sum(len(j.floored_choices) for j in done),
        "verdicts": dict(Counter(j.verdict for j in done)),
    }


def agreement(served: list[Judgment | None], local: list[Judgment | None]) -> dict[str, Any]:
    both = [(s, t) for s, t in zip(served, local, strict=True) if s is not None and t is not None]
    diffs = [abs(s.probs[v] - t.probs[v]) for s, t in both if s.probs and t.probs for v in VERDICTS]
    return {
        "pairs": len(both),
        "same_verdict": sum(s.verdict == t.verdict for s, t in both),
        "rate": round(sum(s.verdict == t.verdict for s, t in both) / len(both), 4) if both else None,
        # Each disagreement with both probability vectors: how close to a tie between two verdicts it was.
        "disagreeing_pairs": [
            {
                "pair_id": s.pair_id,
                "served": [s.verdict, {v: round(p, 4) for v, p in (s.probs or {}).items()}],
                "in_process": [t.verdict, {v: round(p, 4) for v, p in (t.probs or {}).items()}],
            }
            for s, t in both
            if s.verdict != t.verdict
        ],
        "max_abs_prob_difference": round(max(diffs), 4) if diffs else None,
        "mean_abs_prob_difference": round(float(np.mean(diffs)), 5) if diffs else None,
    }


def server_requests(log_path: Path, since: int) -> tuple[Counter[str], int]:
    """Requests the server logged after byte `since`, by path; and the log's new end."""
    text = log_path.read_bytes()
    found = Counter(re.findall(rb'"POST (\S+) HTTP', text[since:]))
    return Counter({k.decode(): v for k, v in found.items()}), len(text)


def prefill_seconds(llm: Any, tokens: list[int], repeats: int = 3) -> float:
    """Best time to evaluate `tokens` from an empty cache."""
    best = math.inf
    for _ in range(repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        best = min(best, time.perf_counter() - start)
    llm.reset()
    return best


def logits_all_cost(judge: PairJudge, pair: Pair, threads: int) -> dict[str, Any]:
    """Prefill of one judge prompt by the in-process backend, and by a twin Llama with logits_all."""
    import llama_cpp

    inner: Any = judge
    while not hasattr(inner, "backend"):  # calibrated -> order-debiased -> Judge
        inner = inner.inner
    backend = inner.backend
    tokens = backend.tokenize(backend.render(inner.prompt(JudgeRequest(pair), SCORE_PREFIX)))
    without = prefill_seconds(backend._llm, tokens)
    twin = llama_cpp.Llama(
        model_path=str(embedded_gguf_path()), lora_path=str(shipped_dir() / ADAPTER_FILE), n_ctx=4096,
        n_threads=threads, n_threads_batch=threads, n_batch=512, n_ubatch=512, swa_full=True, logits_all=True,
        verbose=False,
    )  # fmt: skip
    with_all = prefill_seconds(twin, tokens)
    twin.close()
    return {
        "prompt_tokens": len(tokens),
        "seconds_last_position_logits": round(without, 3),
        "seconds_logits_all": round(with_all, 3),
        "ratio": round(with_all / without, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data folder (default: resolved)")
    parser.add_argument("--pairs", type=int, default=40, help="holdout pairs judged in each phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="client threads, one phase each")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args()
    holdout_path = resolve_data_dir(args.data_dir) / "judge-from-scratch" / "eval_set_unlabeled.jsonl"
    records = read_records(holdout_path, Pair, limit=args.pairs + 1).records
    warmup, pairs = records[0], records[1 : args.pairs + 1]
    threads = os.cpu_count() or 1
    phases: dict[str, Any] = {}

    # 1. in-process (the server is not running yet: nothing else competes for the cores).
    load = os.getloadavg()
    local_judge = make_judge("llamacpp:embedded")
    local_judge.judge_batch([JudgeRequest(warmup)])
    seconds, latencies, local = judge_pairs(local_judge, pairs, 1)
    prefill = logits_all_cost(local_judge, pairs[0], threads)
    local_judge.close()
    phases["in_process"] = {
        "judge": "llamacpp:embedded",
        "concurrency": 1,
        **summary(seconds, latencies, local),
        "load_start_end": [load, os.getloadavg()],
    }
    print(f"in-process: {phases['in_process']['pairs_per_s']} pairs/s", file=sys.stderr)

    # 2. served, at each concurrency.
    with tempfile.TemporaryDirectory() as tmp, llama_server(Path(tmp) / "server.log", threads) as (url, command):
        log_path = Path(tmp) / "server.log"
        for clients in args.concurrency:
            judge = served_judge(url, clients)
            judge.judge_batch([JudgeRequest(warmup)])
            _, mark = server_requests(log_path, 0)
            load = os.getloadavg()
            seconds, latencies, served = judge_pairs(judge, pairs, clients)
            requests, _ = server_requests(log_path, mark)
            judge.close()
            phases[f"served_c{clients}"] = {
                "concurrency": clients,
                **summary(seconds, latencies, served),
                "http_requests_per_pair": {k: round(v / len(pairs), 2) for k, v in sorted(requests.items())},
                "agreement_with_in_process": agreement(served, local),
                "load_start_end": [load, os.getloadavg()],
            }
            print(f"served c={clients}: {phases[f'served_c{clients}']['pairs_per_s']} pairs/s", file=sys.stderr)
        server_command = command

    base = phases["in_process"]
    for name, phase in phases.items():
        if name != "in_process":
            phase["throughput_ratio_vs_in_process"] = round(phase["pairs_per_s"] / base["pairs_per_s"], 3)
            phase["p50_latency_ratio_vs_in_process"] = round(phase["p50_latency_s"] / base["p50_latency_s"], 3)
    result = {
        "command": " ".join(["python", "bench/served_judge.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"llama_cpp_python": version("llama_cpp_python"), "biasjudge": version("biasjudge")},
        "pairs": len(pairs),
        "holdout": str(holdout_path),
        "server": {
            "command": " ".join(Path(c).name if os.sep in c else c for c in server_command),
            "note": "llama-cpp-python's server computes the logits of every prompt position "
            "(logits_all, which its log-probs need); the in-process backend computes the last one only",
        },
        "client": {
            "spec": f"openai:{{url}}#{SERVED_NAME}?order=both&calibration=<shipped>",
            "mode": "score",
            "backend_concurrency": "= clients (HTTP requests in flight at most)",
        },
        "phases": phases,
        "prefill_with_and_without_logits_all": prefill,
    }
    write_json(args.out, result)  # atomic: a killed run leaves the last complete results
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
