"""Hard negatives for DPO: a model writes plausible but WRONG judge reasoning for labelled pairs.

A DPO row teaches the judge to prefer the chosen completion (the label's reasoning and verdict)
over the rejected one. A rejected completion that only flips the verdict under the chosen
reasoning is easy to tell apart; a hard negative is reasoning that sounds like a judge and goes
wrong the way judges do. This stage asks a backend (through the `prompts/synth.md` instruction)
for such reasoning, for each labelled pair, in one of four failure modes, and keeps it only when
the project's one verdict parser reads it (:func:`biasjudge.verdict.parse`, strict), its verdict
differs from the label, and its reasoning names the responses (:func:`check_negative`).

The failure modes, the prompt and the checks are :mod:`biasjudge.labels.hard_negatives`'s (and
re-exported here); this module picks the pairs and runs the stage.

Only pairs DPO can use are sent: those with a label of `label_source`, confident enough (the DPO
default, 4), and not TIE (`rows.dpo_rows` skips TIE labels). An output that fails the checks
(:func:`check_negative`) is logged to `<out>.rejected.jsonl` and asked for again with the reason
appended (up to `max_attempts` calls per pair, counted across runs); a pair that still fails goes
to the side file `<out>.dropped.jsonl` with every attempt's reason. Output is appended as it comes
(resume by pair_id: pairs in the output or the dropped file are skipped; a pair in the output is
done whatever the dropped file says), each line a :class:`SynthesisRecord`, the shape of the reference's
synthesis_results.jsonl, which `biasjudge data rows --hard-negatives` reads
(:func:`biasjudge.dataset.rows.read_hard_negatives`). Every call goes through the cost ledger
(:mod:`biasjudge.backends.costs`; stage `synthesis`, key `pair_id#attempt`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from biasjudge.backends.base import Backend, GenerationParams, PromptRequest
from biasjudge.backends.costs import CostControl, meter_for
from biasjudge.config import ConfigModel
from biasjudge.io import JsonlAppender, ReadResult, read_records, side_path, write_meta
from biasjudge.io.progress import progress_bar
from biasjudge.labels import LeftOut, ResumableRun, existing_records
from biasjudge.labels.hard_negatives import (
    FAILURE_MODES,
    MIN_REASONING_WORDS,
    MODE_NAMES,
    FailureMode,
    NegativeCheck,
    check_negative,
    failure_mode_for,
    mode_by_name,
    synth_messages,
)
from biasjudge.records import DPO_MIN_CONFIDENCE, HardNegative, Label, LabelSource, Pair, Verdict
from biasjudge.verdict import CONTRACT_GRAMMAR


class SynthesisConfig(ConfigModel):
    """How `data synthesize` writes hard negatives (its flags, or a YAML file of them with `--config`)."""

    label_source: LabelSource = "answer_key"
    """The label each negative must contradict (as in `data rows --label-source`)."""
    min_confidence: int | None = Field(default=DPO_MIN_CONFIDENCE, ge=1, le=5)
    """Only labels at least this confident (DPO's floor); none keeps all."""
    max_attempts: int = Field(default=3, ge=1)
    """Calls per pair before it is dropped (retries get the reason; 1: no retry)."""
    limit: int | None = Field(default=None, ge=1)
    """Only the first N eligible pairs (round-robin order over the modes; 4 gives one per mode)."""
    model_name: str | None = None
    """Value of the records' `model` field (default: the judge spec)."""
    batch_size: int = Field(default=8, ge=1)
    """Pairs per generate call (retries of a batch go together)."""
    max_tokens: int = Field(default=400, ge=1)
    """New-token cap per output: room for five sentences and the two tags."""
    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature: sampled, so that retries differ."""
    seed: int | None = None
    """Seed of attempt 1 (attempt k uses seed + k - 1)."""
    constrained: bool | None = Field(default=None, json_schema_extra={"flags": ["--constrained/--free"]})
    """Hold generation to the output contract's grammar, or not. Default: where the backend takes a grammar
    (llama.cpp; openai: with '?grammar_field=...')."""
    retry_dropped: bool = False
    """Try again the pairs in <out>.dropped.jsonl (each gets max_attempts more)."""

    def params(self) -> GenerationParams:
        """The sampling parameters of these settings."""
        return GenerationParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)


# --------------------------------------------------------------------------- records


class SynthesisRecord(HardNegative):
    """One hard negative as written to the output (a synthesis_results.jsonl line).

    `sonnet_verdict` (the reference's name) holds the label the negative was written against.
    """

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    label_source: LabelSource | None = None
    """Source of that label (answer_key, teacher, human)."""
    target_verdict: Verdict | None = None
    """The wrong verdict the writer was asked for (the one `verdict` usually equals)."""
    model: str = ""
    """Model that wrote it."""
    attempts: int = 1
    """Calls it took (1 = the first output passed)."""
    finish_reason: str | None = None
    """Why generation stopped."""


class SynthesisDrop(BaseModel):
    """A pair whose outputs all failed the checks (a `<out>.dropped.jsonl` line)."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    pair_id: str
    """Pair the negatives were for."""
    reason: str
    """Why the last attempt was rejected."""
    reasons: list[str] = Field(default_factory=list)
    """Why each attempt was rejected, in order."""
    attempts: int
    """Calls made."""
    failure_mode: str
    """Mode that was asked for."""
    target_verdict: Verdict
    """Wrong verdict that was asked for."""
    label_verdict: Verdict
    """The label it had to differ from."""
    raw_text: str
    """The last output as generated."""
    finish_reason: str | None = None
    """Why the last generation stopped."""
    model: str = ""
    """Model that wrote them."""


class SynthesisAttempt(BaseModel):
    """One rejected output (a `<out>.rejected.jsonl` line): how many attempts a pair has had, across runs."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    pair_id: str
    """Pair it was for."""
    attempt: int = Field(ge=1)
    """Which attempt (1 = the first call for the pair)."""
    reason: str
    """Why it was rejected."""
    raw_text: str
    """The output as generated."""
    finish_reason: str | None = None
    """Why generation stopped."""
    failure_mode: str = ""
    """Mode that was asked for."""
    model: str = ""
    """Model that wrote it."""


def rejected_path_for(out_path: str | Path) -> Path:
    """Side file of rejected attempts: `synthesis_results.jsonl` -> `synthesis_results.rejected.jsonl`."""
    return side_path(out_path, ".rejected.jsonl")


def read_synthesis(path: str | Path, *, skip_invalid: bool = False) -> ReadResult[SynthesisRecord]:
    """Records of a synthesis output (or of the reference's synthesis_results.jsonl)."""
    return read_records(path, SynthesisRecord, skip_invalid=skip_invalid, unique_key="pair_id")


# --------------------------------------------------------------------------- which pairs


@dataclass
class Eligible:
    """The pairs synthesis may write negatives for, in round-robin order, and the ones left out."""

    items: list[tuple[Pair, Label]] = field(default_factory=list)
    """(pair, label) sorted by sha1 of pair_id; item i gets failure_mode_for(i)."""
    left_out: LeftOut = field(default_factory=LeftOut)
    """Pairs a DPO row could not be built from, by reason (TIE: no preference to learn)."""


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def eligible_pairs(
    pairs: Iterable[Pair], label_source: LabelSource, min_confidence: int | None = DPO_MIN_CONFIDENCE
) -> Eligible:
    """The pairs a DPO row can be built from (a non-TIE `label_source` label at least that confident)."""
    found = Eligible()
    for pair in pairs:
        label = found.left_out.usable_label(pair, label_source, min_confidence, needs_preference=True)
        if label is not None:
            found.items.append((pair, label))
    found.items.sort(key=lambda item: _sha1(item[0].pair_id))
    return found


# --------------------------------------------------------------------------- the stage


@dataclass
class _Job:
    """One pair in the making: its mode, its rejected attempts so far, the calls it may still get."""

    pair: Pair
    label: Label
    mode: FailureMode
    history: list[SynthesisAttempt]
    left: int
    finished: bool = False

    @property
    def target(self) -> Verdict:
        return self.mode.wrong_verdict(self.label.verdict)

    @property
    def next_attempt(self) -> int:
        return (self.history[-1].attempt if self.history else 0) + 1

    def request(self, system_prompt: str | None) -> PromptRequest:
        why = self.history[-1].reason if self.history else None
        messages = synth_messages(
            self.pair, self.label.verdict, self.mode, system_prompt=system_prompt, rejected_because=why
        )
        return PromptRequest(messages=tuple(messages))


@dataclass(kw_only=True)
class SynthesisRun(ResumableRun):
    """Outcome of :func:`synthesize`: negatives written to `out_path`, pairs out of attempts dropped."""

    eligible: int = 0
    """Pairs that qualified (after --limit)."""
    calls: int = 0
    """Generate calls made now (attempts, retries included)."""
    left_out: LeftOut = field(default_factory=LeftOut)
    """Pairs that did not qualify, by reason."""
    modes: dict[str, int] = field(default_factory=dict)
    """Negatives written now, per failure mode."""
    rejections: dict[str, int] = field(default_factory=dict)
    """Rejected attempts now, per reason."""


def synthesize(
    pairs: Iterable[Pair],
    backend: Backend,
    out_path: str | Path,
    config: SynthesisConfig | None = None,
    *,
    model_name: str,
    system_prompt: str | None = None,
    progress: bool = True,
    cost: CostControl | None = None,
) -> SynthesisRun:
    """Write a hard negative for every eligible pair not done yet, appending each to `out_path`.

    Args:
        pairs: labelled pairs (pair_ids unique).
        backend: any backend; only `generate` is called.
        out_path: JSONL of :class:`SynthesisRecord` (synthesis_results.jsonl shape); resumed by pair_id.
        config: which pairs, how many attempts, the sampling (:class:`SynthesisConfig`; default: its
            defaults). With a `seed`, attempt k uses seed + k - 1; `constrained` None holds generation to
            the contract's grammar where the backend supports grammars (llama.cpp, `openai:` servers
            with `grammar_field`).
        model_name: stored in each record's `model`.
        system_prompt: replaces prompts/synth.md.
        progress: show a progress bar on stderr.
        cost: ledger, budget and dry run (:mod:`biasjudge.backends.costs`). A dry run writes nothing and
            bounds the first attempts (`Estimate.usd_worst` covers every retry).

    Every rejected output is logged to `<out>.rejected.jsonl`, so a pair's attempts count across
    runs: a run stopped (budget) or killed between two attempts of a pair goes on with the next
    attempt, the last rejection's reason in its prompt, and never gives a pair more than
    `max_attempts` calls (`retry_dropped` gives a dropped pair `max_attempts` more).

    Raises:
        BudgetReached: the budget stopped the run; everything finished and every rejection is kept.
    """
    config = config or SynthesisConfig()
    max_attempts, batch_size, retry_dropped = config.max_attempts, config.batch_size, config.retry_dropped
    params = config.params()
    out_path = Path(out_path)
    found = eligible_pairs(pairs, config.label_source, config.min_confidence)
    items = found.items[: config.limit] if config.limit is not None else found.items
    run = SynthesisRun(out_path=out_path, eligible=len(items), left_out=found.left_out)
    dropped_path = run.dropped_path
    supports = bool(getattr(backend, "supports_grammar", False))
    use_grammar = supports if config.constrained is None else config.constrained
    if use_grammar:
        params = replace(params, grammar=CONTRACT_GRAMMAR)
    meter = meter_for(backend, "synthesis", cost)
    indexed = [(i, pair, label) for i, (pair, label) in enumerate(items)]

    rejected_path = rejected_path_for(out_path)

    def jobs_for(
        rows: list[tuple[int, Pair, Label]], history: dict[str, list[SynthesisAttempt]], retry: set[str]
    ) -> list[_Job]:
        jobs = []
        for i, pair, label in rows:
            seen = sorted(history.get(pair.pair_id, []), key=lambda a: a.attempt)
            left = max_attempts if pair.pair_id in retry else max_attempts - len(seen)
            jobs.append(_Job(pair, label, failure_mode_for(i), seen, left))
        return jobs

    if meter.dry_run:
        done = {r.pair_id for r in existing_records(out_path, SynthesisRecord)}
        gone = {r.pair_id for r in existing_records(dropped_path, SynthesisDrop)}
        todo_rows = run.to_do(indexed, lambda row: row[1].pair_id, done, gone, retry_dropped=retry_dropped)
        history: dict[str, list[SynthesisAttempt]] = {}
        for a in existing_records(rejected_path, SynthesisAttempt):
            history.setdefault(a.pair_id, []).append(a)
        jobs = [j for j in jobs_for(todo_rows, history, gone if retry_dropped else set()) if j.left > 0]
        meter.estimate([j.request(system_prompt) for j in jobs], params, max_attempts=max_attempts)
        return run

    written: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    with (
        JsonlAppender(out_path, SynthesisRecord, key=lambda r: r.pair_id) as out,
        JsonlAppender(dropped_path, SynthesisDrop, key=lambda r: r.pair_id) as dropped,
        JsonlAppender(rejected_path, SynthesisAttempt, key=lambda r: (r.pair_id, r.attempt)) as attempts_log,
    ):
        history = {}
        for a in attempts_log.done.values():
            history.setdefault(a.pair_id, []).append(a)
        todo_rows = run.to_do(indexed, lambda row: row[1].pair_id, out, dropped, retry_dropped=retry_dropped)
        retry = {pair.pair_id for _, pair, _ in todo_rows if pair.pair_id in dropped}
        bar = progress_bar(enabled=progress)

        def drop(job: _Job) -> None:
            last = job.history[-1]
            dropped.append(
                SynthesisDrop(
                    pair_id=job.pair.pair_id,
                    reason=last.reason,
                    reasons=[a.reason for a in job.history],
                    attempts=last.attempt,
                    failure_mode=job.mode.name,
                    target_verdict=job.target,
                    label_verdict=job.label.verdict,
                    raw_text=last.raw_text,
                    finish_reason=last.finish_reason,
                    model=model_name,
                )
            )
            run.n_dropped_now += 1
            bar.advance(task, 1)

        with bar:
            task = bar.add_task(
                f"hard negatives ({model_name})",
                total=len(indexed),
                completed=len(indexed) - len(todo_rows),
                info="",
            )
            for start in range(0, len(todo_rows), batch_size):
                jobs = jobs_for(todo_rows[start : start + batch_size], history, retry)
                for job in [j for j in jobs if j.left <= 0]:  # every attempt was made before a kill or stop
                    drop(job)
                jobs = [j for j in jobs if j.left > 0]
                while jobs:
                    # One generate call per attempt number (its seed): seed + attempt - 1.
                    for number in sorted({j.next_attempt for j in jobs}):
                        group = [j for j in jobs if j.next_attempt == number]
                        call_params = params if params.seed is None else replace(params, seed=params.seed + number - 1)
                        keys = [f"{j.pair.pair_id}#{number}" for j in group]
                        generations = meter.generate([j.request(system_prompt) for j in group], call_params, keys)
                        run.calls += len(generations)
                        for job, gen in zip(group[: len(generations)], generations, strict=True):
                            check = check_negative(gen.text, job.label.verdict, gen.finish_reason)
                            if check.verdict is not None and check.reasoning is not None:
                                out.append(
                                    SynthesisRecord(
                                        pair_id=job.pair.pair_id,
                                        reasoning=check.reasoning,
                                        verdict=check.verdict,
                                        sonnet_verdict=job.label.verdict,
                                        failure_mode=job.mode.name,
                                        label_source=config.label_source,
                                        target_verdict=job.target,
                                        model=model_name,
                                        attempts=number,
                                        finish_reason=gen.finish_reason,
                                    )
                                )
                                job.left = 0
                                job.finished = True
                                written[job.mode.name] += 1
                                run.n_written_now += 1
                                bar.advance(task, 1)
                                continue
                            error = check.error or "rejected"
                            rejected[error.split(":")[0]] += 1
                            attempt = SynthesisAttempt(
                                pair_id=job.pair.pair_id,
                                attempt=number,
                                reason=error,
                                raw_text=gen.text,
                                finish_reason=gen.finish_reason,
                                failure_mode=job.mode.name,
                                model=model_name,
                            )
                            attempts_log.append(attempt)
                            job.history.append(attempt)
                            job.left -= 1
                            if job.left <= 0:
                                drop(job)
                                job.finished = True
                        run.modes, run.rejections = dict(written), dict(rejected)
                        meter.check()  # the budget stopped this call: what came back is written, the rest waits
                    jobs = [j for j in jobs if not j.finished]
    run.modes, run.rejections = dict(written), dict(rejected)
    return run


def synthesize_file(
    pairs_file: Path,
    out: Path,
    backend: Backend,
    config: SynthesisConfig,
    *,
    model_name: str,
    skip_invalid: bool = False,
    on_read: Callable[[ReadResult[Any]], None] | None = None,
    system_prompt: str | None = None,
    cost: CostControl | None = None,
) -> SynthesisRun:
    """`biasjudge data synthesize`: hard negatives for a labelled pairs file into `out` (appended
    to; resumable), with a .meta.json sidecar describing the whole file (not written by a dry run).

    `config`, `system_prompt` and `cost` go to :func:`synthesize`.
    """
    from biasjudge.data.holdout import load_pairs

    result = load_pairs(pairs_file, skip_invalid=skip_invalid)
    if on_read is not None:
        on_read(result)
    run = synthesize(
        result.records, backend, out, config, model_name=model_name, system_prompt=system_prompt, cost=cost
    )
    if cost is not None and cost.dry_run:
        return run
    records = read_records(out, SynthesisRecord, allow_empty=True).records if out.exists() else []
    write_meta(
        out,
        stage="data/synthesize",
        inputs=[pairs_file],
        config={
            "judge": model_name,
            "label_source": config.label_source,
            "min_confidence": config.min_confidence,
            "max_attempts": config.max_attempts,
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "failure_modes": list(MODE_NAMES),
        },
        counts={
            "rows": len(records),
            "failure_mode": dict(sorted(Counter(str(r.failure_mode) for r in records).items())),
            "label_to_verdict": dict(sorted(Counter(f"{r.sonnet_verdict}->{r.verdict}" for r in records).items())),
            "dropped": len({r.pair_id for r in existing_records(run.dropped_path, SynthesisDrop)}),
        },
    )
    return run


__all__ = [
    "FAILURE_MODES",
    "MIN_REASONING_WORDS",
    "MODE_NAMES",
    "Eligible",
    "FailureMode",
    "NegativeCheck",
    "SynthesisAttempt",
    "SynthesisConfig",
    "SynthesisDrop",
    "SynthesisRecord",
    "SynthesisRun",
    "check_negative",
    "eligible_pairs",
    "failure_mode_for",
    "mode_by_name",
    "read_synthesis",
    "rejected_path_for",
    "synth_messages",
    "synthesize",
    "synthesize_file",
]
