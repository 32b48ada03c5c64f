"""Stage 1: BBQ questions, from the raw nyu-mll files or the reference's stratified sample.

Raw BBQ has no `target_label`; :func:`derive_target_label` (:mod:`biasjudge.data.bbq_targets`,
re-exported here) derives it the way BBQ's own analysis script finds its `target_loc`, then
applies the question's polarity. On the six categories present in ../shared/data every item gets
one, and it equals bbq_sample.jsonl's target_label on all 1,638 items the two share.

Here: reading the raw files (:func:`load_raw_bbq`) and the sample (:func:`load_sample`), drawing a
stratified sample, expanding a locked sample (:func:`expand_sample`), and the keys that keep the
holdout's questions and templates out of training (:func:`left_out_reason`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from biasjudge.data.bbq_targets import _template_var2, category_key, derive_target_label
from biasjudge.data.sources import BBQ_CATEGORIES, resolve_categories
from biasjudge.errors import ConfigError, DataError
from biasjudge.io import (
    atomic_open,
    check_input_file,
    iter_text_lines,
    meta_path,
    read_json,
    read_records,
    validation_message,
    write_json,
)
from biasjudge.records import Pair, Question

__all__ = [
    "BBQ_CATEGORIES",
    "Expansion",
    "category_key",
    "derive_target_label",
    "expand_sample",
    "expand_sample_file",
    "load_raw_bbq",
    "load_sample",
    "make_question_id",
    "stratified_sample",
    "target_agreement",
    "target_disagreements",
]


def make_question_id(category: str, question_index: int | str, example_id: int | str, polarity: str) -> str:
    """`category::question_index::example_id::polarity`, the id convention of bbq_sample.jsonl."""
    return f"{category_key(category)}::{int(question_index)}::{int(example_id)}::{polarity}"


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


# --------------------------------------------------------------------------- expanding a locked sample

Cell = tuple[str, str, str]
"""(category, context_condition, question_polarity): a stratum of the sample."""

DEFAULT_FIRST_EXPANSION_SEED = 43
"""Seed of a first expansion when the sidecar names no seed (the reference: sample 42, expansion 43)."""


def _cell_name(cell: Cell) -> str:
    return "/".join(cell)


def allocate(n: int, capacity: dict[Cell, int], rng: random.Random) -> dict[Cell, int]:
    """Spread `n` rows over cells as evenly as their capacities allow (water-filling).

    Every cell gets the same number L of rows, or all it has when it has fewer; L is as high as
    `n` allows, and the rows left over go one each to cells with more than L, drawn with `rng`.
    The total is min(n, sum of capacities), and no cell with room left has fewer than any other
    cell minus one.

    >>> allocate(10, {("a", "x", "y"): 2, ("b", "x", "y"): 100, ("c", "x", "y"): 100}, random.Random(0))
    {('a', 'x', 'y'): 2, ('b', 'x', 'y'): 4, ('c', 'x', 'y'): 4}
    """
    cells = sorted(capacity)
    level = 0
    while level < max(capacity.values(), default=0) and sum(min(capacity[c], level + 1) for c in cells) <= n:
        level += 1
    given = {c: min(capacity[c], level) for c in cells}
    room = [c for c in cells if capacity[c] > level]
    for cell in rng.sample(room, min(len(room), n - sum(given.values()))):
        given[cell] += 1
    return given


@dataclass
class Expansion:
    """What :func:`expand_sample` added (or, in a dry run, would add)."""

    sample_path: Path
    """The locked sample read."""
    out_path: Path
    """Where the expanded sample went (the sample itself unless told otherwise)."""
    seed: int
    """Seed of this expansion (independent of the sample's and earlier expansions')."""
    n_requested: int
    """Rows asked for."""
    n_existing: int
    """Rows of the sample before, kept byte for byte."""
    added: list[Question] = dataclasses.field(default_factory=list)
    """The new rows, in the order written (after the existing ones)."""
    per_cell: dict[str, int] = dataclasses.field(default_factory=dict)
    """category/context_condition/polarity -> rows added."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Shortfalls, categories without raw BBQ, a sidecar that does not describe the file."""
    recovered: str | None = None
    """An earlier expansion that was interrupted before it wrote the sample, and was redone."""
    dry_run: bool = False
    """True when nothing was written."""
    meta_path: Path | None = None
    """The sidecar written (None in a dry run)."""

    @property
    def n_added(self) -> int:
        """Rows added (fewer than asked when the pools ran short)."""
        return len(self.added)

    @property
    def n_total(self) -> int:
        """Rows of the expanded sample."""
        return self.n_existing + self.n_added


def _used_seeds(meta: dict[str, Any]) -> list[int]:
    seeds: list[Any] = [meta.get("seed"), (meta.get("config") or {}).get("seed")]
    seeds += [e.get("expansion_seed") for e in meta.get("expansions") or [] if isinstance(e, dict)]
    return [s for s in seeds if isinstance(s, int)]


def _line_style(first_line: bytes) -> bool:
    """True when the sample spells its JSON with spaces (`json.dumps`, the reference's files)."""
    return b'", "' in first_line or b'": ' in first_line


def _dump_question(question: Question, spaced: bool) -> str:
    if spaced:
        return json.dumps(question.model_dump(mode="json"), ensure_ascii=False)
    return question.model_dump_json()


def expand_sample(
    sample_path: str | Path,
    raw: Sequence[Question],
    n_additional: int,
    *,
    seed: int | None = None,
    categories: Sequence[str] | None = None,
    out: str | Path | None = None,
    source: str = "",
    dry_run: bool = False,
) -> Expansion:
    """Add `n_additional` rows from `raw` to a locked sample, stratified, existing lines untouched.

    The new rows are raw questions not in the sample, spread evenly over the strata
    (category x context_condition x question_polarity) of the sample's categories that `raw`
    has (or of `categories`), each stratum drawn with `seed` from its pool sorted by question_id,
    so one seed and one input give one result. They are appended after the existing lines, which
    stay byte for byte as they were (a missing final newline is added), in the sample's own JSON
    spelling.

    Writes, in this order and each atomically (temp file, then rename): the sidecar
    (`<sample>.meta.json`, every key kept, an entry appended to `expansions` with the seed, the
    counts and the sample's sha256 before and after), then the sample. A kill between the two
    leaves the old sample and an entry whose `sha256_before` is the sample's: the next expansion
    sees it was never finished, drops it and runs again (`recovered` says so).

    Args:
        sample_path: the locked sample (bbq_sample.jsonl shape).
        raw: the raw BBQ questions to draw from (:func:`load_raw_bbq`).
        n_additional: rows to add; fewer when the pools run short (a warning says where).
        seed: the expansion's seed; default one past the largest seed the sidecar names (the
            sample's and earlier expansions'), or 43 without one. A seed already used is refused.
        categories: categories to expand (any case; default the sample's).
        out: write the expanded sample (and its sidecar) here instead of over the sample.
        source: where `raw` came from, for the sidecar.
        dry_run: compute and return the rows, write nothing.

    Raises:
        DataError: an invalid sample row (file, line, field) or sidecar.
        ConfigError: n_additional < 0, a seed already used, an unknown category, a Parquet file.
    """
    if n_additional < 0:
        raise ConfigError(f"n_additional must be >= 0, got {n_additional}")
    sample_path = check_input_file(sample_path)
    out_path = Path(out) if out is not None else sample_path
    for path in (sample_path, out_path):
        if path.suffix == ".parquet":  # lines are appended: only a line-per-row file keeps its bytes
            raise ConfigError(f"{path}: expansion appends JSON lines; give a .jsonl sample, not Parquet")
    existing = load_sample(sample_path)
    data = sample_path.read_bytes()
    sha_before = hashlib.sha256(data).hexdigest()

    sidecar = meta_path(sample_path)
    meta: dict[str, Any] = {}
    if sidecar.exists():
        loaded = read_json(sidecar)
        if not isinstance(loaded, dict):
            raise DataError(str(sidecar), None, None, "expected a JSON object")
        meta = loaded
    expansions = [e for e in meta.get("expansions") or [] if isinstance(e, dict)]
    warnings: list[str] = []
    recovered = None
    if expansions and "sha256_after" in expansions[-1]:
        last = expansions[-1]
        if sha_before == last.get("sha256_before") and sha_before != last["sha256_after"]:
            recovered = (
                f"the expansion with seed {last.get('expansion_seed')} of {last.get('expanded_at_utc')} was "
                "interrupted before it wrote the sample; its sidecar entry is dropped and the expansion redone"
            )
            expansions = expansions[:-1]
        elif sha_before != last["sha256_after"]:
            warnings.append(
                f"{sample_path} is not the file its sidecar's last expansion wrote (edited since?); "
                "existing rows are kept as they are"
            )
    meta = {**meta, "expansions": expansions}

    used = _used_seeds(meta)
    if seed is None:
        seed = max(used) + 1 if used else DEFAULT_FIRST_EXPANSION_SEED
    elif seed in used:
        raise ConfigError(
            f"seed {seed} was already used by {sample_path} (its sampling or an earlier expansion: {sorted(used)}); "
            f"an expansion needs a seed of its own, e.g. --seed {max(used) + 1}"
        )

    raw_categories = {q.category for q in raw}
    if categories is not None:
        wanted = [category_key(c) for c in resolve_categories(categories)]
    else:
        wanted = sorted({q.category for q in existing})
    missing = [c for c in wanted if c not in raw_categories]
    if missing:
        warnings.append(f"no raw BBQ questions for {', '.join(missing)}: not expanded")
    have = {q.question_id for q in existing}
    pools: dict[Cell, list[Question]] = defaultdict(list)
    for q in raw:
        if q.category in wanted and q.question_id not in have:
            pools[(q.category, q.context_condition, q.question_polarity)].append(q)
    rng = random.Random(seed)
    quota = allocate(n_additional, {c: len(p) for c, p in pools.items()}, rng)
    added: list[Question] = []
    per_cell: dict[str, int] = {}
    for cell, k in quota.items():
        pool = sorted(pools[cell], key=lambda q: q.question_id)
        added.extend(rng.sample(pool, k))
        per_cell[_cell_name(cell)] = k
    if len(added) < n_additional:
        warnings.append(
            f"asked for {n_additional} rows, the raw pools not yet in the sample hold {len(added)}: added all of them"
        )
    result = Expansion(
        sample_path=sample_path,
        out_path=out_path,
        seed=seed,
        n_requested=n_additional,
        n_existing=len(existing),
        added=added,
        per_cell=per_cell,
        warnings=warnings,
        recovered=recovered,
        dry_run=dry_run,
    )
    if dry_run:
        return result

    spaced = _line_style(data.split(b"\n", 1)[0])
    body = data if data.endswith(b"\n") or not data else data + b"\n"
    body += "".join(_dump_question(q, spaced) + "\n" for q in added).encode("utf-8")
    from biasjudge import __version__

    entry = {
        "stage": "data/expand",
        "expansion_seed": seed,
        "n_additional": n_additional,
        "n_added": len(added),
        "n_total_after_expansion": result.n_total,
        "expanded_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "categories": [c for c in wanted if c in raw_categories],
        "per_cell_added": per_cell,
        "source": source,
        "input": str(sample_path),
        "sha256_before": sha_before,
        "sha256_after": hashlib.sha256(body).hexdigest(),
        "biasjudge_version": __version__,
        "warnings": warnings,
    }
    meta["expansions"] = [*expansions, entry]
    if "n_rows_actual" in meta:  # the reference's sidecar
        meta["n_rows_actual"] = result.n_total
    if isinstance(meta.get("counts"), dict) and "rows" in meta["counts"]:  # ours (io.write_meta)
        meta["counts"] = {**meta["counts"], "rows": result.n_total}
    result.meta_path = meta_path(out_path)
    write_json(result.meta_path, meta)  # first: a kill before the next line is detected and redone
    with atomic_open(out_path, "wb") as handle:
        handle.write(body)
    return result


def expand_sample_file(
    sample_path: str | Path,
    bbq_dir: str | Path,
    n_additional: int,
    *,
    seed: int | None = None,
    categories: Sequence[str] | None = None,
    out: str | Path | None = None,
    dry_run: bool = False,
) -> Expansion:
    """:func:`expand_sample` drawing from the raw BBQ files in `bbq_dir` (those of `categories`,
    default the sample's categories that are there; the others are named in the warnings)."""
    wanted = categories
    if wanted is None:
        in_sample = {q.category for q in load_sample(sample_path)}
        wanted = [name for name in BBQ_CATEGORIES if category_key(name) in in_sample]
    raw, _, _ = load_raw_bbq(bbq_dir, wanted)
    return expand_sample(
        sample_path,
        raw,
        n_additional,
        seed=seed,
        categories=categories,
        out=out,
        source=str(bbq_dir),
        dry_run=dry_run,
    )


def load_questions(data_dir: Path, log: Callable[[str], None] = print) -> list[Question]:
    """BBQ items of the raw files present and of bbq_sample.jsonl, each question id once (raw first)."""
    raw, found, missing = load_raw_bbq(data_dir / "bbq")
    sample_file = data_dir / "judge-from-scratch" / "bbq_sample.jsonl"
    sample = load_sample(sample_file) if sample_file.is_file() else []
    log(f"BBQ files: {', '.join(found) or 'none'}" + (f" (absent: {', '.join(missing)})" if missing else ""))
    seen: dict[str, Question] = {}
    for question in [*raw, *sample]:
        seen.setdefault(question.question_id, question)
    return list(seen.values())


def holdout_keys(pairs: Sequence[Pair]) -> tuple[set[str], set[str]]:
    """(question ids, templates `category::question_index`) of the holdout's pairs."""
    questions = {p.question_id for p in pairs}
    templates = {"::".join(q.split("::")[:2]) for q in questions}
    return questions, templates


def template_id(question: Question) -> str:
    """`category::question_index`: the BBQ template a question was generated from."""
    return f"{question.category}::{question.question_index}"


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` (sha256): a split that does not move when rows are added."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12


def left_out_reason(
    question: Question, *, questions: set[str], templates: set[str], categories: set[str]
) -> str | None:
    """Why a BBQ item must not be trained on, or None: its category is held out (the OOD one), it
    is a holdout question, or it comes from a holdout template (`category::question_index`)."""
    if question.category in categories:
        return "held-out category"
    if question.question_id in questions:
        return "holdout question"
    if template_id(question) in templates:
        return "holdout template"
    return None
