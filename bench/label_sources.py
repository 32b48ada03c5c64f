"""How far each label source can be trusted, before any training: agreement (Cohen's kappa) of
label sources with the reference's teacher on the training pool and with the humans on the holdout.

    .venv/bin/python bench/label_sources.py

Sources compared:
- `answer_key`: the answer-key rule on the reference's levels (pairs.jsonl), biased vs another
  wrong answer = TIE (biasjudge's default and the shipped judge's labels);
- `answer_key_reread`: the same rule on levels re-read by biasjudge's classifier from each
  response's text and BBQ's answer key, two responses with the same option = TIE (the evidence
  the `hybrid:` judge uses);
- per evidence case (see biasjudge.judge.hybrid.evidence): what the teacher (training pool,
  question-level clean) and the humans (holdout) say, relative to the response that chose the
  stereotype target ("first") -- where teacher and humans part ways.

Teacher verdicts: synthesis_results.jsonl `sonnet_verdict` and the two dry runs. There is no
teacher verdict on a holdout pair, so teacher-vs-human agreement cannot be measured directly.
Writes bench/results/label_sources.json.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from biasjudge.config import resolve_data_dir
from biasjudge.data.bbq import load_sample
from biasjudge.data.classify import answer_class, parse_answer_letter
from biasjudge.data.holdout import attach_levels, load_pairs
from biasjudge.eval.metrics import cohen_kappa
from biasjudge.labels.answer_key import answer_key_verdict
from biasjudge.recipes.pairwise import teacher_verdicts
from biasjudge.records import Pair, Question

RESULTS = Path(__file__).resolve().parent / "results" / "label_sources.json"
LEVEL = {"correct": "neutral", "biased": "biased", "incorrect_other": "unclear", "parse_failed": None}
RANK = {"biased": 0, "incorrect_other": 1, "correct": 2, "parse_failed": 3}


def reread(pair: Pair, question: Question) -> str | None:
    """The answer-key rule on levels re-read from the responses (same option = TIE)."""
    letter_a = parse_answer_letter(pair.response_a.text, question)
    letter_b = parse_answer_letter(pair.response_b.text, question)
    if letter_a is not None and letter_a == letter_b:
        return "TIE"
    level_a = LEVEL[answer_class(letter_a, question)] or pair.response_a.suspected_bias_level
    level_b = LEVEL[answer_class(letter_b, question)] or pair.response_b.suspected_bias_level
    if level_a is None or level_b is None:
        return None
    if {level_a, level_b} == {"biased", "neutral"}:
        return "A" if level_a == "biased" else "B"
    return "TIE"


def kappa(pairs: Sequence[Pair], truth: Callable[[Pair], str | None], rule: Callable[[Pair], str | None]) -> dict:
    rows = [(t, rule(p) or "TIE") for p in pairs if (t := truth(p)) is not None]
    return {"kappa": round(cohen_kappa([t for t, _ in rows], [r for _, r in rows]), 4), "n": len(rows)}


def case(pair: Pair, question: Question) -> tuple[str, bool]:
    letter_a = parse_answer_letter(pair.response_a.text, question)
    letter_b = parse_answer_letter(pair.response_b.text, question)
    class_a, class_b = answer_class(letter_a, question), answer_class(letter_b, question)
    if letter_a is not None and letter_a == letter_b:
        return "same option", False
    flip = RANK[class_b] < RANK[class_a]
    first, second = (class_b, class_a) if flip else (class_a, class_b)
    return f"{first} vs {second}", flip


def relative(verdict: str, flip: bool) -> str:
    if verdict == "TIE":
        return "TIE"
    return ("first" if verdict == "A" else "second") if not flip else ("first" if verdict == "B" else "second")


def main() -> None:
    jfs = resolve_data_dir(None) / "judge-from-scratch"
    pairs = load_pairs(jfs / "pairs.jsonl").records
    holdout = attach_levels(load_pairs(jfs / "eval_set_unlabeled.jsonl").records, pairs)
    questions = {q.question_id: q for q in load_sample(jfs / "bbq_sample.jsonl")}
    held_pairs, held_questions = {p.pair_id for p in holdout}, {p.question_id for p in holdout}
    pool = [
        p
        for p in pairs
        if p.pair_id not in held_pairs and p.question_id not in held_questions and p.bias_category != "religion"
    ]
    teacher = teacher_verdicts(jfs)
    rules: dict[str, Callable[[Pair], str | None]] = {
        "answer_key": answer_key_verdict,
        "answer_key_reread": lambda p: reread(p, questions[p.question_id]),
    }
    result: dict[str, Any] = {"sources": {}, "cases": {}}
    for name, rule in rules.items():
        result["sources"][name] = {
            "vs_teacher_on_pool": kappa(pool, lambda p: teacher.get(p.pair_id), rule),
            "vs_humans_in_dist": kappa(
                [p for p in holdout if p.eval_slice == "in_dist"], lambda p: p.human_verdict, rule
            ),
            "vs_humans_ood": kappa([p for p in holdout if p.eval_slice != "in_dist"], lambda p: p.human_verdict, rule),
        }
    for name, members, truth in (
        ("teacher_on_pool", [p for p in pool if p.pair_id in teacher], lambda p: teacher[p.pair_id]),
        ("humans_on_holdout", holdout, lambda p: p.human_verdict),
    ):
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for pair in members:
            label, flip = case(pair, questions[pair.question_id])
            table[label][relative(truth(pair), flip)] += 1
        result["cases"][name] = {k: dict(v) for k, v in sorted(table.items())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
