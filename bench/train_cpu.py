"""Fine-tune the REAL embedded Gemma 3 270M on the CPU and measure the gain on the 300-pair holdout.

What it does (defaults in brackets):

1. Rows: the training pool (`judge-from-scratch/pairs_to_label.jsonl`, holdout questions removed),
   answer-key labels (`biasjudge.labels.answer_key`, default settings), swap-doubled SFT rows with
   biasjudge's judge system prompt; `target: verdict` (the score-mode task: prompt + `<verdict>`,
   loss on `X</verdict>` + end of turn only).
2. Train: LoRA r16 / alpha 32 all-linear, lr 2e-4 constant after 10 warm-up steps, batch 8, bf16
   autocast where the CPU has it, for a wall-clock budget [15 min] or `--max-steps`.
   A callback stops the run when the budget is spent (the adapter is saved as usual).
3. Export: the adapter -> a GGUF LoRA (llama.cpp's convert_lora_to_gguf.py, f16).
4. Evaluate in score mode with the judge runtime (original + swapped runs) on the 300 pairs:
   after training (`llamacpp:` + `lora_path=`) and before (`llamacpp:`), kappa in-dist and OOD with
   95% bootstrap intervals, position bias.
5. Write bench/results/train_cpu.json (and log progress to stdout).

Run: `python bench/train_cpu.py --data-dir ../shared/data [--budget-min 15] [--max-steps N]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from biasjudge.backends.embedded import embedded_gguf_path
from biasjudge.config import resolve_data_dir
from biasjudge.dataset.rows import sft_rows
from biasjudge.eval.protocol import run_eval, select_runs
from biasjudge.io import read_records, write_json, write_records
from biasjudge.judge.registry import make_judge
from biasjudge.labels.answer_key import label_pairs
from biasjudge.prompts import load_prompt
from biasjudge.records import Pair
from biasjudge.train.config import LoraSettings, SFTRunConfig
from biasjudge.train.export import export_gguf
from biasjudge.train.sft import train_sft

KEYS = ("kappa_in_dist", "kappa_ood_religion", "position_bias_in_dist", "position_bias_ood", "parse_failure_rate")


def budget_callback(seconds: float) -> Any:
    from transformers import TrainerCallback

    class Budget(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.start: float | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.start is None:
                self.start = time.time()
            if time.time() - self.start >= seconds:
                control.should_training_stop = True
                control.should_save = True

    return Budget()


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: metrics.get(k) for k in KEYS}
    for k in ("kappa_in_dist", "kappa_ood_religion"):
        out[f"{k}_ci"] = [metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")]
    return out


def evaluate(
    spec_options: dict[str, Any], holdout: list[Pair], out: Path, name: str, system_prompt: str
) -> dict[str, Any]:
    start = time.time()
    judge = make_judge("llamacpp:", system_prompt=system_prompt, mode="score", **spec_options)
    try:
        log = run_eval(
            judge, holdout, out / name, checkpoint_name=name, runs=select_runs("original,swapped"), progress=False
        )
    finally:
        judge.close()
    metrics = dict(log.metrics.get(name, {}))
    result = {"metrics": summary(metrics), "all_metrics": metrics, "seconds": round(time.time() - start, 1)}
    print(f"[{name}] {json.dumps(result['metrics'])} in {result['seconds']} s", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--budget-min", type=float, default=15.0, help="training wall-clock budget (minutes)")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after N steps (-1: budget only)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N holdout pairs only")
    parser.add_argument("--skip-before", action="store_true", help="skip the untrained evaluation")
    args = parser.parse_args()

    data = resolve_data_dir(args.data_dir) / "judge-from-scratch"
    work = args.out / "train_cpu"
    work.mkdir(parents=True, exist_ok=True)
    result_path = args.out / "train_cpu.json"
    result: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}

    def save() -> None:
        write_json(result_path, result)

    system_prompt = load_prompt("judge_system")
    holdout = read_records(data / "eval_set_unlabeled.jsonl", Pair).records
    held_questions = {p.question_id for p in holdout}
    pool = [p for p in read_records(data / "pairs_to_label.jsonl", Pair).records if p.question_id not in held_questions]
    rows = sft_rows(label_pairs(pool), system_prompt=system_prompt, label_source="answer_key")
    rows_file = work / "sft.jsonl"
    write_records(rows_file, rows)
    result["rows"] = {"pool_pairs": len(pool), "sft_rows": len(rows)}
    print(f"rows: {len(rows)} from {len(pool)} pairs", flush=True)
    save()

    config = SFTRunConfig(
        model="embedded",
        train_file=rows_file,
        output_dir=work / "run",
        target="verdict",
        lora=LoraSettings(r=16, alpha=32, dropout=0.0),
        resume=True,
        trl={
            "learning_rate": args.lr,
            "lr_scheduler_type": "constant_with_warmup",
            "warmup_steps": 10,
            "per_device_train_batch_size": args.batch,
            "gradient_accumulation_steps": 1,
            "num_train_epochs": 3,
            "max_steps": args.max_steps,
            "weight_decay": 0.01,
            "logging_steps": 5,
            "save_steps": 50,
            "save_total_limit": 1,
            "seed": 3407,
            "max_length": 2048,
            # 24 GiB hold a 270M model's activations easily; recomputing them would cost ~30% time.
            "gradient_checkpointing": False,
        },
    )
    start = time.time()
    run = train_sft(config, callbacks=[budget_callback(args.budget_min * 60)])
    wall = time.time() - start
    runtime = float(run.metrics.get("train_runtime", wall))
    logs = [json.loads(line) for line in run.log_file.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in logs if "loss" in r]
    tokens = max((r.get("num_tokens", 0) for r in logs), default=0)
    result["train"] = {
        "steps": run.global_step,
        "examples": run.global_step * args.batch,
        "epochs": run.metrics.get("epoch"),
        "train_runtime_s": round(runtime, 1),
        "wall_s_with_loading": round(wall, 1),
        "s_per_step": round(runtime / max(run.global_step, 1), 3),
        "s_per_example": round(runtime / max(run.global_step * args.batch, 1), 3),
        "tokens_per_s": round(tokens / runtime, 1) if runtime else None,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "rows": run.rows.get("train"),
    }
    print(f"train: {json.dumps(result['train'])}", flush=True)
    save()

    adapter_gguf = work / "adapter-f16.gguf"
    export_gguf(run.adapter_dir, adapter_gguf, "f16", base="embedded")
    result["adapter_gguf"] = {"path": str(adapter_gguf), "bytes": adapter_gguf.stat().st_size}
    save()

    holdout_eval = holdout[: args.limit] if args.limit else holdout
    result["after"] = evaluate({"lora_path": str(adapter_gguf)}, holdout_eval, work, "270m-cpu-lora", system_prompt)
    save()
    if not args.skip_before:
        result["before"] = evaluate({}, holdout_eval, work, "270m-base", system_prompt)
        before, after = result["before"]["metrics"], result["after"]["metrics"]
        result["gain_outside_intervals"] = {
            k: (
                after[f"{k}_ci"][0] is not None
                and before[f"{k}_ci"][1] is not None
                and after[f"{k}_ci"][0] > before[f"{k}_ci"][1]
            )
            for k in ("kappa_in_dist", "kappa_ood_religion")
        }
        print(f"gain outside intervals: {result['gain_outside_intervals']}", flush=True)
    result["embedded_gguf"] = str(embedded_gguf_path())
    save()
    print(f"wrote {result_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
