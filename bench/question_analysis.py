"""Which model reads the question best: the question analysis, model against model, in ONE run.

    .venv/bin/python bench/question_analysis.py                    # the three below, 2,000 LoRA items
    .venv/bin/python bench/question_analysis.py --variants lr,minilm

Every variant is fitted on the same question-level rows (`biasjudge train reader`'s: no holdout
question, no religion) and scored on the same two validation sets: items of templates it was fitted
on (other names; the holdout's situation at the question level) and templates it never saw. Scored:
the supported option in ambiguous and disambiguated contexts, per category, and speed.

* `lr` (shipped): the people anonymised, a logistic regression over n-grams and question-word x
  context-n-gram pairs (biasjudge.judge.reading.analysis).
* `minilm`: the same anonymised text embedded by the shipped MiniLM (frozen), a logistic regression.
* `lora`: the 270M with a LoRA (r 16, all linear layers, bf16 autocast) reading the same anonymised
  text and answering X, Y or unknown at one position, `--lora-items` items, one epoch.

Writes bench/results/question_analysis.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biasjudge.config import resolve_data_dir
from biasjudge.data.bbq import holdout_keys, load_questions
from biasjudge.data.holdout import load_pairs
from biasjudge.dataset.rows import build_analysis_rows
from biasjudge.judge.reading.analysis import analyze, answer_text, fit_analysis
from biasjudge.judge.reading.entities import anonymize
from biasjudge.records import AnalysisRow

RESULTS = Path(__file__).resolve().parent / "results" / "question_analysis.json"
Predict = Callable[[Sequence[AnalysisRow]], list[int]]


def score(rows: Sequence[AnalysisRow], predicted: Sequence[int]) -> dict[str, Any]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row, best in zip(rows, predicted, strict=True):
        for key in ("all", row.category):
            counts[key][f"{row.context_condition}_n"] += 1
            counts[key][f"{row.context_condition}_ok"] += best == row.answer
    return {
        key: {c: round(b[f"{c}_ok"] / b[f"{c}_n"], 4) if b[f"{c}_n"] else None for c in ("ambig", "disambig")}
        for key, b in sorted(counts.items())
    }


def label_of(row: AnalysisRow) -> str:
    return anonymize_row(row)[2][row.answer] or "U"


def anonymize_row(row: AnalysisRow) -> tuple[str, str, tuple[str | None, ...]]:
    from biasjudge.judge.reading.analysis import split_question

    context, asked = split_question(row.question)
    anon = anonymize(asked, context, row.choices)
    return anon.question, anon.context, anon.placeholders


def to_index(row: AnalysisRow, label: str) -> int:
    placeholders = anonymize_row(row)[2]
    if label == "U":
        unknown = [i for i, p in enumerate(placeholders) if p is None]
        return unknown[0] if unknown else len(row.choices)
    return placeholders.index(label) if label in placeholders else len(row.choices)


def fit_lr(train: Sequence[AnalysisRow]) -> Predict:
    model = fit_analysis(train, c=10.0)
    return lambda rows: [analyze(model, r.question, r.choices).best_correct for r in rows]


def fit_minilm(train: Sequence[AnalysisRow]) -> Predict:
    from sklearn.linear_model import LogisticRegression

    from biasjudge.backends.embedded import minilm_embeddings

    def features(rows: Sequence[AnalysisRow]) -> np.ndarray:
        texts = [f"{q} || {c}" for q, c, _ in map(anonymize_row, rows)]
        mentions = np.array([answer_text(r.question, r.choices)[1] for r in rows])
        return np.hstack([minilm_embeddings(texts), mentions])

    model = LogisticRegression(C=10.0, max_iter=5000).fit(features(train), [label_of(r) for r in train])
    return lambda rows: [to_index(r, str(label)) for r, label in zip(rows, model.predict(features(rows)), strict=True)]


def fit_lora(train: Sequence[AnalysisRow], items: int, seed: int) -> Predict:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    from biasjudge.train.common import label_position_logits, load_causal_lm, load_tokenizer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer("embedded")
    answers = {
        k: tokenizer(v, add_special_tokens=False)["input_ids"][0]
        for k, v in (("X", " X"), ("Y", " Y"), ("U", " unknown"))
    }

    def encode(row: AnalysisRow) -> list[int]:
        question, context, _ = anonymize_row(row)
        prompt = (
            f"<start_of_turn>user\nQuestion: {question}\nPassage: {context}<end_of_turn>\n<start_of_turn>model\nAnswer:"
        )
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def batch(rows: Sequence[AnalysisRow], with_label: bool) -> tuple[Any, Any, Any]:
        encoded = [encode(r) + ([answers[label_of(r)]] if with_label else [answers["U"]]) for r in rows]
        width = max(map(len, encoded))
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, seq in enumerate(encoded):
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(seq) - 1] = seq[-1]
            mask[i, : len(seq)] = 1
        return ids, mask, labels

    model = get_peft_model(
        load_causal_lm("embedded"), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    chosen = random.Random(seed).sample(list(train), min(items, len(train)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    steps = math.ceil(len(chosen) / 8)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    for start in range(0, len(chosen), 8):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, targets, _ = label_position_logits(model, *batch(chosen[start : start + 8], True))
        F.cross_entropy(logits, targets).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    candidates = [answers[k] for k in "XYU"]

    def predict(rows: Sequence[AnalysisRow]) -> list[int]:
        out = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for start in range(0, len(rows), 16):
                chunk = rows[start : start + 16]
                logits, _, _ = label_position_logits(model, *batch(chunk, False))
                best = logits[:, candidates].argmax(-1).tolist()
                out += [to_index(r, "XYU"[b]) for r, b in zip(chunk, best, strict=True)]
        return out

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="lr,minilm,lora")
    parser.add_argument("--lora-items", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=600, help="Items per validation set.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    questions = load_questions(data_dir, print)
    holdout = load_pairs(data_dir / "judge-from-scratch" / "eval_set_unlabeled.jsonl").records
    held_questions, _ = holdout_keys(holdout)
    rows = build_analysis_rows(
        questions, exclude_questions=held_questions, exclude_categories=["religion"], validation_by="template"
    ).rows
    unseen = [r for r in rows if r.split == "validation"]
    seen_templates = [r for r in rows if r.split == "train"]
    random.Random(args.seed).shuffle(seen_templates)
    same_templates, train = seen_templates[: args.validation], seen_templates[args.validation :]
    unseen = unseen[: args.validation]
    fitters: dict[str, Callable[[], Predict]] = {
        "lr": lambda: fit_lr(train),
        "minilm": lambda: fit_minilm(train),
        "lora": lambda: fit_lora(train, args.lora_items, args.seed),
    }
    results: dict[str, Any] = {
        "train_rows": len(train),
        "validation": {"seen_templates": len(same_templates), "unseen_templates": len(unseen)},
    }
    for name in args.variants.split(","):
        started = time.perf_counter()
        predict = fitters[name]()
        fitted = time.perf_counter() - started
        started = time.perf_counter()
        seen_score = score(same_templates, predict(same_templates))
        rate = len(same_templates) / (time.perf_counter() - started)
        results[name] = {
            "fit_seconds": round(fitted, 1),
            "questions_per_s": round(rate, 1),
            "seen_templates": seen_score,
            "unseen_templates": score(unseen, predict(unseen)),
            **({"lora_items": args.lora_items} if name == "lora" else {}),
        }
        print(
            name, json.dumps({k: results[name][k]["all"] for k in ("seen_templates", "unseen_templates")}), flush=True
        )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
