"""What a portable llama.cpp build costs, against a native one, in ONE run on this machine.

    .venv/bin/python bench/llama_build.py                       # portable vs native, compiled as needed
    .venv/bin/python bench/llama_build.py --wheel avx512=PATH.whl --eval-runs original,swapped

Each build variant (a llama-cpp-python wheel) is installed into a folder of its own and measured
in child processes that import it first (PYTHONPATH), one variant after the other, never side by side:

1. the smoke check (one token of the embedded 270M): a variant that crashes here is recorded with
   its signal and measured no further;
2. llama.cpp's raw prefill: tokens/s evaluating a 512-token prompt from an empty cache (n_batch
   512, every core), best and median of --repeats;
3. the default judge's holdout eval (`biasjudge eval`, the reference's runs; --eval-runs narrows
   them): wall seconds, pairs judged, and its kappas, which must not depend on the build.

Variants: `portable` (biasjudge's own build, from its cache or compiled), `native` (-march=native,
compiled here, about 5 minutes), and any `--wheel NAME=PATH`. Writes bench/results/llama_build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from biasjudge.backends.llamacpp_build import build_wheel, cmake_args, smoke_check
from biasjudge.config import resolve_data_dir

RESULTS = Path(__file__).resolve().parent / "results" / "llama_build.json"

PREFILL_CHILD = r"""
import json, os, statistics, sys, time
import llama_cpp
from biasjudge.backends.embedded import embedded_gguf_path
llm = llama_cpp.Llama(model_path=str(embedded_gguf_path()), n_ctx=1024, n_batch=512, n_ubatch=512,
                      n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), verbose=False)
text = ("The grandson and the grandfather were outside the store trying to book a cab. " * 60).encode()
tokens = llm.tokenize(text, add_bos=True)[:512]
times = []
for i in range(int(sys.argv[1]) + 1):
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    if i:  # the first evaluation warms up
        times.append(time.perf_counter() - start)
print(json.dumps({"tokens": len(tokens), "seconds": times,
                  "best_tok_s": len(tokens) / min(times), "median_tok_s": len(tokens) / statistics.median(times),
                  "system_info": llama_cpp.llama_print_system_info().decode()}))
"""


def install(wheel: Path, folder: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-cache-dir",
            "--target",
            str(folder),
            str(wheel),
        ],
        check=True,
    )


def measure(name: str, wheel: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    folder = work / name
    install(wheel, folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    result: dict[str, Any] = {"wheel": str(wheel)}
    smoke = smoke_check(env=env)
    result["smoke"] = {"ok": smoke.ok, "signal": smoke.signal_name, "returncode": smoke.returncode}
    result["features"] = smoke.build_features
    print(f"[{name}] smoke check: {'ok' if smoke.ok else smoke.signal_name or smoke.returncode}", flush=True)
    if not smoke.ok:
        return result
    done = subprocess.run(
        [sys.executable, "-c", PREFILL_CHILD, str(args.repeats)], env=env, capture_output=True, text=True, check=True
    )
    prefill = json.loads(done.stdout.strip().splitlines()[-1])
    result["prefill"] = {k: prefill[k] for k in ("tokens", "seconds", "best_tok_s", "median_tok_s")}
    print(f"[{name}] prefill: {prefill['best_tok_s']:.0f} tok/s best, {prefill['median_tok_s']:.0f} median", flush=True)
    if args.skip_eval:
        return result
    out = work / f"eval-{name}"
    command = [sys.executable, "-m", "biasjudge.cli.main", "eval", "--judge", args.judge, "--out", str(out)]
    command += ["--data-dir", str(args.data_dir)] + (["--runs", args.eval_runs] if args.eval_runs else [])
    command += ["--limit", str(args.limit)] if args.limit else []
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    [log_file] = list(out.glob("*/predictions.json"))
    log = json.loads(log_file.read_text())
    metrics = next(iter(log["metrics"].values()))
    result["eval"] = {
        "seconds": seconds,
        "judge": args.judge,
        "runs": args.eval_runs or "all",
        "judgments": len(log["detailed"]),
        "kappa_in_dist": metrics.get("kappa_in_dist"),
        "kappa_ood": metrics.get("kappa_ood"),
    }
    print(f"[{name}] eval: {seconds:.0f} s, {len(log['detailed'])} judgments", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", action="append", default=[], help="NAME=PATH of a llama-cpp-python wheel.")
    parser.add_argument("--no-native", action="store_true", help="Do not compile and measure a native build.")
    parser.add_argument("--judge", default="llamacpp:embedded", help="The judge whose holdout eval is timed.")
    parser.add_argument("--eval-runs", default=None, help="Runs of the eval (default: all seven).")
    parser.add_argument("--limit", type=int, default=None, help="Holdout pairs (default: all 300).")
    parser.add_argument("--repeats", type=int, default=5, help="Prefill repeats per variant.")
    parser.add_argument("--skip-eval", action="store_true", help="Prefill only.")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    args.data_dir = resolve_data_dir(args.data_dir)
    wheels: dict[str, Path] = {"portable": build_wheel("portable")[0]}
    if not args.no_native:
        wheels["native"] = build_wheel("native")[0]
    for item in args.wheel:
        name, _, path = item.partition("=")
        wheels[name] = Path(path)
    work = Path(tempfile.mkdtemp(prefix="bench-llama-build-"))
    started, load_start = time.time(), os.getloadavg()
    try:
        variants = {name: measure(name, wheel, args, work) for name, wheel in wheels.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios: dict[str, Any] = {}
    base = variants["portable"]
    for name, other in variants.items():
        if name == "portable" or "prefill" not in other:
            continue
        ratios[f"prefill portable/{name}"] = base["prefill"]["best_tok_s"] / other["prefill"]["best_tok_s"]
        if "eval" in other and "eval" in base:
            ratios[f"eval seconds {name}/portable"] = other["eval"]["seconds"] / base["eval"]["seconds"]
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "loadavg_start_end": [load_start, os.getloadavg()],
        },
        "portable_cmake_args": cmake_args("portable"),
        "variants": variants,
        "ratios": ratios,
        "minutes": (time.time() - started) / 60,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
