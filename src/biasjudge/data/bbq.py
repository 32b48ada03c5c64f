"""Stage 1: BBQ questions, from the raw nyu-mll files or the reference's stratified sample.

Raw BBQ has no `target_label`; :func:`derive_target_label` derives it the way BBQ's own analysis
script (`analysis_scripts/BBQ_results_metadata.R`) finds its `target_loc`, then applies the
question's polarity:

1. Each non-unknown answer's group (`answer_info[ansK][-1]`) is tested against the item's
   `stereotyped_groups` after normalising spelling variants: case and punctuation dropped,
   `M-`/`F-` prefixes dropped (`F-Black` -> Black), man/boy -> M and woman/girl -> F,
   `low SES` == `lowSES`, `trans_F`/`trans_M` count as `trans` when any stereotyped group names
   transgender people. Groups are compared whole, so `nonOld` never matches `old` and `African`
   never matches `African American`.
2. Nationality answers carry a region as their group (`Africa`), so there the answer's own text
   (`Nigerian`) is compared with the stereotyped nationalities.
3. Intersectional categories (Race_x_gender, Race_x_SES) list only races as stereotyped groups;
   the stereotyped gender or SES of a template is not in the JSONL. It is inferred per
   (category, question_index) as the one gender / SES value that occurs in every item of that
   template (the stereotyped person appears in every item). An answer is stereotyped when its
   race is a stereotyped group and its gender / SES is that value. An empty group (one BBQ
   template writes `["The Latina woman", ""]`) is read from the text as F-Latino.
4. With exactly one stereotyped and one non-stereotyped answer: for `neg` questions the target
   is the stereotyped answer, for `nonneg` questions the other one. Otherwise the item has no
   target (None). On the six categories present in ../shared/data every item gets one, and it
   equals bbq_sample.jsonl's target_label on all 1,638 items the two share.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from biasjudge.data.sources import BBQ_CATEGORIES, resolve_categories
from biasjudge.errors import ConfigError, DataError
from biasjudge.io import iter_text_lines, read_records, validation_message
from biasjudge.records import Question

__all__ = [
    "BBQ_CATEGORIES",
    "category_key",
    "derive_target_label",
    "load_raw_bbq",
    "load_sample",
    "make_question_id",
    "stratified_sample",
    "target_agreement",
    "target_disagreements",
]

_ANSWERS = ("ans0", "ans1", "ans2")
_INTERSECTIONAL = ("race_x_gender", "race_x_ses")
_GENDER_WORDS = {"man": "m", "boy": "m", "men": "m", "woman": "f", "girl": "f", "women": "f"}


def category_key(name: str) -> str:
    """Lower snake-case category as used in question ids (`Race_x_SES` -> `race_x_ses`)."""
    return name.strip().lower()


def make_question_id(category: str, question_index: int | str, example_id: int | str, polarity: str) -> str:
    """`category::question_index::example_id::polarity`, the id convention of bbq_sample.jsonl."""
    return f"{category_key(category)}::{int(question_index)}::{int(example_id)}::{polarity}"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def _stereo_set(groups: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for g in groups:
        n = _norm(g)
        out.add(_GENDER_WORDS.get(n, n))
        if "trans" in n and not n.startswith("non"):
            out.add("trans")
    return out


def _base_group_matches(group: str, stereo: set[str]) -> bool:
    """Non-intersectional rule: the normalised group, without a gender prefix, is stereotyped."""
    n = _norm(group)
    n = _GENDER_WORDS.get(n, n)
    if n in stereo:
        return True
    parts = group.split("-")
    if len(parts) == 2 and parts[0] in ("M", "F") and _norm(parts[1]) in stereo:
        return True  # race_ethnicity's F-Black, M-Latino ...
    return "trans" in stereo and n.startswith("trans")  # trans_F, trans_M, trans


def _split_intersectional(group: str, text: str) -> tuple[str, str]:
    """(var2, race) of an intersectional group: `lowSES-M-Black` -> (lowses, black); `F-Arab` -> (f, arab)."""
    if not group:  # one template leaves the group empty: "The Latina woman"
        gender = "f" if re.search(r"\bwoman\b|\bLatina\b", text) else "m"
        return gender, "latino"
    parts = group.split("-")
    var2 = _norm(parts[0])
    race = _norm(parts[-1])
    return var2, race


def _template_var2(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], str | None]:
    """Per intersectional template: the gender/SES value present in every one of its items."""
    seen: dict[tuple[str, int], set[str] | None] = {}
    for row in rows:
        cat = category_key(row["category"])
        if cat not in _INTERSECTIONAL:
            continue
        key = (cat, int(row["question_index"]))
        values = {
            _split_intersectional(info[-1], info[0])[0]
            for info in (row["answer_info"][a] for a in _ANSWERS)
            if info[-1] != "unknown"
        }
        prev = seen.get(key)
        seen[key] = values if prev is None else prev & values
    return {k: (next(iter(v)) if v and len(v) == 1 else None) for k, v in seen.items()}


def _stereotyped_flags(row: dict[str, Any], stereotyped_groups: Sequence[str], var2: str | None) -> dict[str, bool]:
    """answer key -> is this answer's group a stereotyped one (unknown answers left out)."""
    stereo = _stereo_set(stereotyped_groups)
    cat = category_key(row["category"])
    flags: dict[str, bool] = {}
    for a in _ANSWERS:
        info = row["answer_info"][a]
        group = info[-1]
        if group == "unknown":
            continue
        if cat in _INTERSECTIONAL:
            v2, race = _split_intersectional(group, " ".join(info[:-1]))
            flags[a] = race in stereo and (var2 is None or v2 == var2)
        elif cat == "nationality":
            flags[a] = any(_norm(t) in stereo for t in (info[0], info[-2], row[a]))
        else:
            flags[a] = _base_group_matches(group, stereo)
    return flags


def derive_target_label(
    row: dict[str, Any], stereotyped_groups: Sequence[str], *, template_var2: str | None = None
) -> int | None:
    """Index (0-2) of the stereotype-consistent answer for the row's polarity, or None if undecidable.

    `row` is a raw BBQ row (or a sample row: only category, question_polarity, answer_info and
    ans0-ans2 are read). `template_var2` is the stereotyped gender/SES of an intersectional
    template (see the module docstring); without it an intersectional item is decided by race only.
    """
    flags = _stereotyped_flags(row, stereotyped_groups, template_var2)
    yes = [a for a, v in flags.items() if v]
    no = [a for a, v in flags.items() if not v]
    if len(yes) != 1 or len(no) != 1:
        return None
    target = yes[0] if row["question_polarity"] == "neg" else no[0]
    return _ANSWERS.index(target)


def _question_from_raw(row: dict[str, Any], target: int | None) -> Question:
    meta = row.get("additional_metadata") or {}
    groups = meta.get("stereotyped_groups") or []
    return Question(
        question_id=make_question_id(
            row["category"], row["question_index"], row["example_id"], row["question_polarity"]
        ),
        category=category_key(row["category"]),
        context_condition=row["context_condition"],
        question_polarity=row["question_polarity"],
        example_id=int(row["example_id"]),
        question_index=int(row["question_index"]),
        context=row["context"],
        question=row["question"],
        ans0=row["ans0"],
        ans1=row["ans1"],
        ans2=row["ans2"],
        answer_label=int(row["label"]),
        target_label=target,
        answer_info={k: list(v) for k, v in row["answer_info"].items()},
        stereotyped_groups=[str(g) for g in groups if g],
    )


_RAW_FIELDS = (
    "example_id", "question_index", "question_polarity", "context_condition", "category",
    "answer_info", "context", "question", "ans0", "ans1", "ans2", "label",
)  # fmt: skip


def _read_raw_file(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, text, _ in iter_text_lines(path):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(str(path), number, None, f"broken JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(str(path), number, None, "expected a JSON object")
        for field in _RAW_FIELDS:
            if field not in row:
                raise DataError(str(path), number, field, "missing field")
        row["_line"] = number
        rows.append(row)
    if not rows:
        raise DataError(str(path), None, None, "empty file: no BBQ rows")
    return rows


def load_raw_bbq(
    bbq_dir: str | Path, categories: Sequence[str] | None = None
) -> tuple[list[Question], list[str], list[str]]:
    """Read the raw BBQ files present in `bbq_dir`: (questions, categories found, categories missing).

    Any subset of the 11 files may be present; `categories` (default: all 11) says which to look
    for. target_label is derived with :func:`derive_target_label` (None where BBQ's metadata does
    not decide it).

    Raises:
        ConfigError: an unknown category name.
        DataError: a malformed row (naming file, line and field) or a repeated question id.
    """
    bbq_dir = Path(bbq_dir)
    found: list[str] = []
    missing: list[str] = []
    questions: list[Question] = []
    seen: dict[str, str] = {}
    for name in resolve_categories(categories):
        path = bbq_dir / f"{name}.jsonl"
        if not path.exists():
            missing.append(name)
            continue
        found.append(name)
        rows = _read_raw_file(path)
        var2 = _template_var2(rows)
        for row in rows:
            where = f"{path}:{row['_line']}"
            groups = (row.get("additional_metadata") or {}).get("stereotyped_groups") or []
            key = (category_key(row["category"]), int(row["question_index"]))
            target = derive_target_label(row, groups, template_var2=var2.get(key))
            try:
                question = _question_from_raw(row, target)
            except ValidationError as exc:
                raise DataError(str(path), row["_line"], *validation_message(exc)) from None
            except (TypeError, ValueError) as exc:  # a non-numeric example_id or question_index
                raise DataError(str(path), row["_line"], None, str(exc)) from None
            if question.question_id in seen:
                raise DataError(
                    str(path), row["_line"], "example_id",
                    f"duplicate question id {question.question_id!r} (first at {seen[question.question_id]})",
                )  # fmt: skip
            seen[question.question_id] = where
            questions.append(question)
    return questions, found, missing


def load_sample(path: str | Path, *, skip_invalid: bool = False) -> list[Question]:
    """Questions of a bbq_sample.jsonl file (with answer_label and target_label), validated."""
    return read_records(path, Question, unique_key="question_id", skip_invalid=skip_invalid).records


def target_agreement(raw: Iterable[Question], sample: Iterable[Question]) -> tuple[int, int]:
    """(items in both, items whose derived target_label equals the sample's), matched by question_id."""
    derived = {q.question_id: q.target_label for q in raw}
    n_common = n_agree = 0
    for q in sample:
        if q.question_id in derived:
            n_common += 1
            n_agree += derived[q.question_id] == q.target_label
    return n_common, n_agree


def target_disagreements(
    raw: Iterable[Question], sample: Iterable[Question]
) -> list[tuple[str, int | None, int | None]]:
    """(question_id, derived, sample's) for every common item whose target_label differs."""
    derived = {q.question_id: q.target_label for q in raw}
    return [
        (q.question_id, derived[q.question_id], q.target_label)
        for q in sample
        if q.question_id in derived and derived[q.question_id] != q.target_label
    ]


def stratified_sample(questions: Sequence[Question], n_per_cell: int, seed: int) -> list[Question]:
    """Up to `n_per_cell` questions per (category, context_condition, polarity) cell, seeded.

    Deterministic for a given input and seed, whatever the input order: each cell is sorted by
    question_id before sampling, and cells are visited in sorted order. A cell with fewer items
    than `n_per_cell` gives all of them.
    """
    if n_per_cell < 0:
        raise ConfigError(f"n_per_cell must be >= 0, got {n_per_cell}")
    cells: dict[tuple[str, str, str], list[Question]] = defaultdict(list)
    for q in questions:
        cells[(q.category, q.context_condition, q.question_polarity)].append(q)
    rng = random.Random(seed)
    out: list[Question] = []
    for key in sorted(cells):
        pool = sorted(cells[key], key=lambda q: q.question_id)
        out.extend(pool if len(pool) <= n_per_cell else rng.sample(pool, n_per_cell))
    return out
