"""The dataset build: the stages glued together, as the `biasjudge data` commands run them.

`build_rows` turns labelled pairs into SFT and DPO rows (`data rows` is its stage); `build_dataset`
(`data build`) runs split -> label -> rows in one go. The single stages (`data label`,
`candidates`, `classify`, `pairs`, `split`, `rows`, the BBQ sample) are :mod:`biasjudge.dataset.stages`, built on
the helpers here (reads counted with their rejects written, outputs written with their sidecars).
`build_dataset` is what `biasjudge data build` runs. From the judge-from-scratch folder
(pairs.jsonl, eval_set_unlabeled.jsonl, synthesis_results.jsonl) it takes the holdout (the
reference's human-labelled one, or its own `split_holdout`), the train pool, checks leakage,
labels the pool with the answer key, builds SFT and DPO rows, compares the answer key with the
human labels (kappa) and writes every output with a `.meta.json` sidecar. Seconds, no model.

It sits after data, labels and rows in the pipeline and imports only those (and io, records,
prompts, and the Backend protocol a teacher is given as); it never imports cli, train, eval or a
backend implementation. The CLI prints the returned records; nothing here prints.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from biasjudge.dataset.rows import RowsConfig
from biasjudge.errors import ConfigError
from biasjudge.io import (
    ReadResult,
    rejects_path,
    write_json,
    write_meta,
    write_records,
    write_rejects,
)
from biasjudge.labels.answer_key import UnclearVsBiased
from biasjudge.records import Pair

if TYPE_CHECKING:
    from biasjudge.data.holdout import LeakageReport
    from biasjudge.dataset.rows import RowsBuild
    from biasjudge.labels.answer_key import KappaTable
    from biasjudge.records import DPORow, HardNegative, LabelSource, SFTRow

LeakageLevel = Literal["question", "pair"]


class BuildConfig(RowsConfig):
    """Settings of `data build`: how the holdout and the train pool are made and labelled, then the
    rows' settings (:class:`~biasjudge.dataset.rows.RowsConfig`)."""

    unclear_vs_biased: UnclearVsBiased = "tie"
    """Answer key, a biased response against an unclear one: 'tie' (kappa 0.816 in-dist against humans) or
    'biased_wins' (0.722)."""
    own_split: bool = False
    """Split pairs.jsonl by question with split_holdout instead of using the reference holdout."""
    leakage_level: LeakageLevel = "question"
    """question: no question_id may be shared with the holdout; pair: only no shared pair_id (the reference's
    split)."""


OUTPUTS = ("pairs", "holdout", "train_pool", "unused", "labelled", "sft", "dpo")
"""The JSONL files `build_dataset` writes, in order (each with a .meta.json sidecar)."""


# --------------------------------------------------------------------------- shared helpers


@dataclass
class ReadReport:
    """One input file read: how many rows came in, how many were valid, where the rejects went."""

    path: Path
    """The file read."""
    n_in: int
    """Rows in the file (valid + rejected)."""
    n_valid: int
    """Rows that validated."""
    n_rejected: int
    """Rows rejected (only ever non-zero with skip_invalid)."""
    rejects_path: Path | None = None
    """The `<input>.rejects.jsonl` side file, when there were rejects."""


def record_read(result: ReadResult[Any], rejects_dir: Path) -> ReadReport:
    """Count a read and write its rejects (if any) to `<rejects_dir>/<input stem>.rejects.jsonl`."""
    side = None
    if result.rejects:
        side = rejects_path(result.path, rejects_dir)
        write_rejects(side, result.rejects, result.path)
    return ReadReport(
        path=result.path,
        n_in=len(result.records) + len(result.rejects),
        n_valid=len(result.records),
        n_rejected=len(result.rejects),
        rejects_path=side,
    )


def counting_reader(reads: list[ReadReport], rejects_dir: Path, on_read: Callable[[ReadReport], None] | None) -> Any:
    """A function that counts a read (appending its ReadReport to `reads`, writing its rejects to
    `rejects_dir`, calling `on_read`) and returns its records."""

    def read(result: ReadResult[Any]) -> list[Any]:
        reads.append(record_read(result, rejects_dir))
        if on_read is not None:
            on_read(reads[-1])
        return result.records

    return read


def write_output(
    path: Path,
    records: Iterable[BaseModel],
    *,
    stage: str,
    inputs: Sequence[Path] = (),
    config: dict[str, Any] | None = None,
    counts: dict[str, Any] | None = None,
) -> int:
    """Write records atomically and a `.meta.json` sidecar (existing inputs' sha256, config, counts)."""
    n = write_records(path, records)
    write_meta(
        path, stage=stage, inputs=[p for p in inputs if p.exists()], config=config, counts={"rows": n, **(counts or {})}
    )
    return n


def load_system_prompt(path: Path | None) -> tuple[str, str]:
    """The judge system prompt and where it came from: biasjudge's own, or `path` byte for byte."""
    from biasjudge.prompts import load_prompt, read_prompt_file

    if path is None:
        return load_prompt("judge_system"), "biasjudge:judge_system.md"
    return read_prompt_file(path), str(path)


class MissingHoldoutError(ConfigError):
    """The reference holdout (eval_set_unlabeled.jsonl) is missing and no own split was asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} not found (or build with own_split=True)")


# --------------------------------------------------------------------------- build


@dataclass
class DatasetBuild:
    """What `build_dataset` wrote and the numbers behind it (everything `biasjudge data build` prints)."""

    out: Path
    """The output folder."""
    files: dict[str, Path]
    """Output name (`pairs`, ..., `dpo`, and `answer_key_kappa` when written) -> file path."""
    rows: dict[str, int]
    """Output name -> rows written (the JSONL files only)."""
    notes: dict[str, str]
    """One-line notes: `holdout` (which holdout, levels attached or shortfalls) and, with the
    reference holdout, `unused` (OOD vs shared-question pairs)."""
    config: BuildConfig
    """The settings it ran with (the leakage level of every check, the answer-key setting, the rows')."""
    leakage: LeakageReport
    """Train pool vs holdout (clean at `config.leakage_level`, else the build raised LeakageError)."""
    verdicts: dict[str, int]
    """Answer-key verdicts in labelled.jsonl, sorted by verdict."""
    written: RowsBuilt
    """The SFT and DPO rows, how many pairs each used or skipped, and their stats (as in their .meta.json)."""
    pool_buckets: dict[str, int]
    """Train-pool pairs per bucket (pair_category), sorted by bucket."""
    kappa: dict[str, KappaTable] = field(default_factory=dict)
    """Answer key vs human labels per `unclear_vs_biased` setting; empty without a reference holdout."""
    reads: list[ReadReport] = field(default_factory=list)
    """The input files read, in order."""
    seconds: float = 0.0
    """Wall time of the build."""


def build_dataset(
    data_dir: str | Path,
    out: str | Path,
    config: BuildConfig | None = None,
    *,
    skip_invalid: bool = False,
    on_read: Callable[[ReadReport], None] | None = None,
) -> DatasetBuild:
    """Holdout, train pool, answer-key labels, SFT and DPO rows from the judge-from-scratch files.

    Reads `<data_dir>/judge-from-scratch/` pairs.jsonl, eval_set_unlabeled.jsonl (the
    human-labelled holdout) and synthesis_results.jsonl (hard negatives, optional). The train pool
    is every pair not in the holdout and not of the OOD category (religion); at
    `config.leakage_level="question"` (default) it also leaves out pairs whose question is in the
    holdout. With `config.own_split`, pairs.jsonl is split by question with `split_holdout` instead (human labels
    of the reference holdout travel with any pair it also holds out).

    Writes pairs, holdout (levels attached), train_pool, unused, labelled, sft and dpo `.jsonl` and
    answer_key_kappa.json (with a reference holdout) into `out`, each with a .meta.json sidecar.
    With `skip_invalid`, invalid input rows go to `<input>.rejects.jsonl` in `out`; `on_read` is
    called after each input file is read (the CLI prints there).

    Raises MissingHoldoutError without eval_set_unlabeled.jsonl unless `config.own_split`, DataError on an
    invalid row (without `skip_invalid`), LeakageError if the train pool, SFT or DPO rows share a
    question (or pair, at `leakage_level="pair"`) with the holdout.
    """
    # The stage modules load here, so the small helpers above stay cheap for other commands.
    from biasjudge.data.holdout import (
        HoldoutConfig,
        assert_no_leakage,
        attach_levels,
        has_levels,
        load_pairs,
        split_holdout,
    )
    from biasjudge.data.sources import jfs_dir
    from biasjudge.dataset.rows import read_hard_negatives
    from biasjudge.labels.answer_key import AnswerKeyConfig, compare_settings, label_pairs

    started = time.perf_counter()
    config = config or BuildConfig()
    own_split, leakage_level, unclear_vs_biased = config.own_split, config.leakage_level, config.unclear_vs_biased
    answer_key = AnswerKeyConfig(unclear_vs_biased=unclear_vs_biased)
    out = Path(out)
    jfs = jfs_dir(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs_in, holdout_in, negatives_in = (
        jfs / "pairs.jsonl",
        jfs / "eval_set_unlabeled.jsonl",
        jfs / "synthesis_results.jsonl",
    )
    holdout_cfg = HoldoutConfig()
    reads: list[ReadReport] = []
    read = counting_reader(reads, out, on_read)

    pairs: list[Pair] = read(load_pairs(pairs_in, skip_invalid=skip_invalid))
    reference_holdout: list[Pair] = []
    if holdout_in.exists():
        reference_holdout = attach_levels(read(load_pairs(holdout_in, skip_invalid=skip_invalid)), pairs)
    elif not own_split:
        raise MissingHoldoutError(holdout_in)

    # 1. holdout, train pool, unused
    notes: dict[str, str] = {}
    if own_split:
        split = split_holdout(pairs, holdout_cfg)
        holdout, train_pool = split.holdout, split.train_pool
        unused = [*split.unused_ood, *split.unused_in_dist]
        # Human labels of the reference holdout travel with any pair the own split also holds out.
        human = {p.pair_id: p.labels for p in reference_holdout}
        holdout = [p.model_copy(update={"labels": human.get(p.pair_id, p.labels)}) for p in holdout]
        notes["holdout"] = f"own split (seed {holdout_cfg.seed}); shortfalls {split.shortfalls or 'none'}"
        holdout_source = "split_holdout(pairs.jsonl)"
    else:
        holdout = reference_holdout
        held_pairs = {p.pair_id for p in holdout}
        held_questions = {p.question_id for p in holdout}
        candidates = [p for p in pairs if p.pair_id not in held_pairs]
        unused = [p for p in candidates if p.bias_category == holdout_cfg.ood_category]
        train_pool = [p for p in candidates if p.bias_category != holdout_cfg.ood_category]
        overlap = [p for p in train_pool if p.question_id in held_questions] if leakage_level == "question" else []
        if overlap:
            dropped = {p.pair_id for p in overlap}
            train_pool = [p for p in train_pool if p.pair_id not in dropped]
            unused += overlap
        notes["holdout"] = (
            f"reference holdout; {sum(has_levels(p) for p in holdout)}/{len(holdout)} with levels from pairs.jsonl"
        )
        notes["unused"] = (
            f"{len(unused) - len(overlap)} {holdout_cfg.ood_category} (OOD) + "
            f"{len(overlap)} sharing a question with the holdout"
        )
        holdout_source = str(holdout_in)

    # 2. leakage, labels, rows
    leakage = assert_no_leakage(
        holdout, train_pool, holdout_source=holdout_source, train_source="train pool", level=leakage_level
    )
    labelled = label_pairs(train_pool, answer_key)
    negatives: list[HardNegative] = []
    if negatives_in.exists():
        negatives = read(read_hard_negatives(negatives_in, skip_invalid=skip_invalid))

    # 3. write every output with its sidecar
    files = {name: out / f"{name}.jsonl" for name in OUTPUTS}
    n_rows: dict[str, int] = {}
    common = {"leakage_level": leakage_level, "own_split": own_split, "ood_category": holdout_cfg.ood_category}

    def output(name: str, records: Sequence[BaseModel], inputs: list[Path], **sidecar: Any) -> None:
        n_rows[name] = write_output(files[name], records, stage=f"data/build/{name}", inputs=inputs, **sidecar)

    split_inputs = [pairs_in, holdout_in]
    output("pairs", pairs, [pairs_in])
    by_slice = dict(Counter(str(p.eval_slice) for p in holdout))
    output("holdout", holdout, split_inputs, config=common, counts={"by_slice": by_slice})
    shared = {"shared_question_ids": len(leakage.shared_question_ids), "shared_pair_ids": len(leakage.shared_pair_ids)}
    output("train_pool", train_pool, split_inputs, config=common, counts=shared)
    output("unused", unused, split_inputs, config=common)
    answer_key_labels = [label for label in (p.label_from("answer_key") for p in labelled) if label]
    verdicts: dict[str, int] = dict(sorted(Counter(label.verdict for label in answer_key_labels).items()))
    output(
        "labelled",
        labelled,
        [pairs_in],
        config=answer_key.model_dump(),
        counts={"verdicts": verdicts, "unlabelled": len(labelled) - len(answer_key_labels)},
    )
    written = build_rows(
        labelled,
        config,
        label_source="answer_key",
        hard_negatives=negatives,
        holdout=holdout,
        holdout_source=holdout_source,
        leakage_level=leakage_level,
    )
    row_records, row_configs, row_counts = written.records(), written.sidecar_configs(), written.sidecar_counts()
    for name, made_from in (("sft", [pairs_in]), ("dpo", [pairs_in, negatives_in])):
        sidecar = {"config": {**row_configs[name], **answer_key.model_dump()}, "counts": row_counts[name]}
        output(name, row_records[name], made_from, **sidecar)

    # 4. answer key vs human labels
    tables = compare_settings(reference_holdout) if reference_holdout else {}
    if tables:
        kappa_path = out / "answer_key_kappa.json"
        write_json(
            kappa_path,
            {
                "used": unclear_vs_biased,
                "holdout": str(holdout_in),
                "settings": {k: t.to_json() for k, t in tables.items()},
            },
        )
        write_meta(kappa_path, stage="data/build/answer_key_kappa", inputs=split_inputs, config=answer_key.model_dump())
        files["answer_key_kappa"] = kappa_path

    return DatasetBuild(
        out=out,
        files=files,
        rows=n_rows,
        notes=notes,
        config=config,
        leakage=leakage,
        verdicts=verdicts,
        written=written,
        pool_buckets=dict(sorted(Counter(p.pair_category for p in train_pool).items())),
        kappa=tables,
        reads=reads,
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- rows


@dataclass
class RowsBuilt:
    """SFT and DPO rows built from labelled pairs, with their stats and what each file's sidecar records."""

    sft: RowsBuild[SFTRow]
    """SFT rows (swap-doubled) and how many pairs were used or skipped."""
    dpo: RowsBuild[DPORow]
    """DPO rows, skipped pairs and rejected sources."""
    sft_stats: dict[str, Any]
    """`row_stats` of the SFT rows."""
    dpo_stats: dict[str, Any]
    """`row_stats` of the DPO rows."""
    prompt_source: str
    """Where the system prompt came from (biasjudge's, or the file given)."""
    label_source: LabelSource
    """Which label of each pair the rows were built from."""
    config: RowsConfig
    """The settings they were built with."""

    def records(self) -> dict[str, Sequence[BaseModel]]:
        """`sft` and `dpo` -> their rows."""
        return {"sft": self.sft.rows, "dpo": self.dpo.rows}

    def sidecar_configs(self) -> dict[str, dict[str, Any]]:
        """`sft` and `dpo` -> the settings each file was built with (its sidecar's config)."""
        common = {"label_source": self.label_source, "system_prompt": self.prompt_source}
        config = self.config
        return {
            "sft": {**common, "min_confidence": config.sft_min_confidence},
            "dpo": {
                **common,
                "min_confidence": config.dpo_min_confidence,
                "validation_fraction": config.validation_fraction,
            },
        }

    def sidecar_counts(self) -> dict[str, dict[str, Any]]:
        """`sft` and `dpo` -> pairs used and left out, and the rows' stats (each sidecar's counts)."""
        return {
            "sft": {**self.sft.counts(), "stats": self.sft_stats},
            "dpo": {**self.dpo.counts(), "stats": self.dpo_stats},
        }


def build_rows(
    labelled: Sequence[Pair],
    config: RowsConfig,
    *,
    label_source: LabelSource,
    hard_negatives: Sequence[HardNegative] = (),
    holdout: Sequence[Pair] | None = None,
    holdout_source: str = "holdout",
    leakage_level: LeakageLevel = "question",
) -> RowsBuilt:
    """SFT rows (swap-doubled) and DPO rows from labelled pairs, checked against the holdout
    (LeakageError on a shared question, or pair at `leakage_level="pair"`). Writes nothing."""
    from biasjudge.data.holdout import assert_no_leakage
    from biasjudge.dataset.rows import dpo_rows, row_stats, sft_rows

    system_prompt, prompt_source = load_system_prompt(config.system_prompt_file)
    sft = sft_rows(
        labelled, system_prompt=system_prompt, label_source=label_source, min_confidence=config.sft_min_confidence
    )
    dpo = dpo_rows(
        labelled,
        system_prompt=system_prompt,
        label_source=label_source,
        hard_negatives=hard_negatives,
        min_confidence=config.dpo_min_confidence,
        validation_fraction=config.validation_fraction,
    )
    if holdout is not None:
        for name, built_rows in (("sft", sft.rows), ("dpo", dpo.rows)):
            assert_no_leakage(
                holdout, built_rows, holdout_source=holdout_source, train_source=f"{name} rows", level=leakage_level
            )
    sft_stats, dpo_stats = row_stats(sft.rows, labelled), row_stats(dpo.rows, labelled)
    return RowsBuilt(sft, dpo, sft_stats, dpo_stats, prompt_source, label_source, config)
