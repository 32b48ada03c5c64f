"""The evaluation protocol as data, and the resumable loop that runs it.

The reference protocol is seven runs per pair (:data:`REFERENCE_RUNS`): `original` (T=0),
`swapped` (T=0, responses exchanged) and `consistency_0..4` (T=0.3, seeds 0-4). :func:`run_eval`
judges every (pair, run), appends each Judgment to `out_dir/cache.jsonl` as soon as its batch
returns, and writes `out_dir/predictions.json` (an :class:`EvalLog` in the reference's layout)
with the metrics computed from it.

A killed evaluation restarts where it stopped: finished judgments are read back from the cache
(a torn last line is cut off) and never recomputed. The cache key is (checkpoint name, pair,
run, judge spec, judge mode, prompt hash), the prompt hash covering the system prompt and the
rendered user message, so changing any of them judges afresh instead of reusing stale verdicts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from biasjudge.errors import ConfigError
from biasjudge.eval.metrics import compute_metrics
from biasjudge.io import JsonlAppender, write_json
from biasjudge.io.progress import progress_bar
from biasjudge.prompts.render import user_message
from biasjudge.records import SHARED_WITH_JUDGMENT, EvalLog, JudgeMode, Judgment, Pair, Prediction, Record

if TYPE_CHECKING:
    from biasjudge.judge.protocol import JudgeRequest, PairJudge

CACHE_NAME = "cache.jsonl"
PREDICTIONS_NAME = "predictions.json"


@dataclass(frozen=True)
class RunSpec:
    """One pass over the holdout: a name (the log's `run_type`), sampling settings, and order."""

    name: str
    """run_type in the log: original, swapped, consistency_K."""
    temperature: float = 0.0
    """0 = greedy / argmax."""
    swapped: bool = False
    """True: responses exchanged; the verdict is recorded in the swapped order."""
    seed: int | None = None
    """Sampling seed (runs at temperature > 0)."""


CONSISTENCY_TEMPERATURE = 0.3
N_CONSISTENCY_RUNS = 5

REFERENCE_RUNS: tuple[RunSpec, ...] = (
    RunSpec("original", 0.0, False, None),
    RunSpec("swapped", 0.0, True, None),
    *(RunSpec(f"consistency_{k}", CONSISTENCY_TEMPERATURE, False, k) for k in range(N_CONSISTENCY_RUNS)),
)
"""The reference's seven runs per pair."""


def select_runs(spec: str | int | Sequence[str]) -> tuple[RunSpec, ...]:
    """Runs by name: `"all"` (the seven), a comma list (`"original,swapped"`), or a number N.

    A number N means original + swapped + the first N consistency runs (N=1 is the reference's
    one-sampled-run mode, where self-consistency compares that run with the original).

    >>> [r.name for r in select_runs("original,swapped")]
    ['original', 'swapped']
    >>> [r.name for r in select_runs(1)]
    ['original', 'swapped', 'consistency_0']
    """
    by_name = {r.name: r for r in REFERENCE_RUNS}
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        n = int(spec)
        if not 0 <= n <= N_CONSISTENCY_RUNS:
            raise ConfigError(f"--runs: a number of T=0.3 runs must be 0-{N_CONSISTENCY_RUNS}, got {n}")
        return REFERENCE_RUNS[: 2 + n]
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    names = [n for n in names if n]
    if names == ["all"]:
        return REFERENCE_RUNS
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise ConfigError(
            f"--runs: unknown run {', '.join(unknown) or '(none given)'}; use 'all', a number 0-5, "
            f"or names from {', '.join(by_name)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--runs: a run is listed twice in {spec!r}")
    return tuple(by_name[n] for n in names)


class CacheEntry(Record):
    """One finished judgment in `cache.jsonl`, with everything its cache key is made of."""

    checkpoint_name: str
    """Column name of the evaluated judge."""
    pair_id: str
    """Pair judged."""
    run: str
    """RunSpec name (original, swapped, consistency_K)."""
    judge: str
    """Judge spec."""
    mode: str
    """generate or score."""
    prompt_hash: str
    """sha256 (16 hex) of system prompt + user message as rendered for this run."""
    model_identity: str = ""
    """What else decides the verdict (see :func:`judge_identity`): model files, prompt rendering, settings."""
    judgment: Judgment
    """The judge's result."""

    def key(self) -> tuple[str, ...]:
        """The cache key: checkpoint, pair, run, judge, mode, prompt hash and model identity."""
        return tuple(getattr(self, name) for name in CACHE_KEY_FIELDS)

    @classmethod
    def from_key(cls, key: tuple[str, ...], judgment: Judgment) -> CacheEntry:
        """The entry for a judgment under `key` (the fields of :meth:`key`, in its order)."""
        return cls(**dict(zip(CACHE_KEY_FIELDS, key, strict=True)), judgment=judgment)


CACHE_KEY_FIELDS = tuple(name for name in CacheEntry.model_fields if name != "judgment")
"""The fields of a cache entry's key, in their order (every field but the judgment)."""


@dataclass(frozen=True)
class JudgeToEval:
    """One column of an evaluation."""

    spec: str
    """The judge spec (see biasjudge.backends.registry)."""
    name: str
    """Column name; the judge's log goes to `<out>/<slug(name)>/`."""
    system_prompt: str | None = None
    """A system prompt for this judge only (default: the eval's)."""


def judges_to_eval(specs: Sequence[str] | None, names: Sequence[str] | None) -> list[JudgeToEval]:
    """The columns of `--judge SPEC` (repeated; default: the shipped judge) named by `--name`
    (one per judge, or none: each column is named by its spec)."""
    from biasjudge.judge import DEFAULT_JUDGE_SPEC

    chosen, named = list(specs or [DEFAULT_JUDGE_SPEC]), list(names or [])
    if named and len(named) != len(chosen):
        raise ConfigError(f"--name given {len(named)} times for {len(chosen)} --judge; give one per judge or none")
    return [JudgeToEval(spec, column) for spec, column in zip(chosen, named or chosen, strict=True)]


def check_columns(judges: Sequence[JudgeToEval], mode: str) -> None:
    """A run over several judges (eval, robustness) needs a known mode and a name, and a folder, per judge."""
    if mode not in ("score", "generate"):
        raise ConfigError(f"mode must be 'score' or 'generate', got {mode!r}")
    names = [judge.name for judge in judges]
    if len(set(names)) != len(names) or len({slug(n) for n in names}) != len(names):
        raise ConfigError(f"every judge needs its own name (and folder), got {names}")


@contextmanager
def opened_judge(entry: JudgeToEval, *, system_prompt: str | None, mode: JudgeMode) -> Iterator[PairJudge]:
    """The judge of one column (its own system prompt, else the run's), closed when the block ends."""
    from biasjudge.judge.registry import make_judge

    prompt = entry.system_prompt if entry.system_prompt is not None else system_prompt
    judge = make_judge(entry.spec, system_prompt=prompt, mode=mode)
    try:
        yield judge
    finally:
        judge.close()


def prompt_hash(system_prompt: str | None, pair: Pair, *, swapped: bool) -> str:
    """Hash of what the judge reads for one pair in one order (system prompt + user message)."""
    digest = hashlib.sha256()
    digest.update((system_prompt or "").encode())
    digest.update(b"\x00")
    digest.update(user_message(pair, swapped=swapped).encode())
    return digest.hexdigest()[:16]


def judge_identity(judge: PairJudge) -> str:
    """Everything besides the spec, the mode and the prompt that changes a judge's verdicts, as one
    string for the eval cache key: the judge's :attr:`~biasjudge.judge.protocol.PairJudge.identity`
    (a wrapper's includes its inner judge's; how a wrapper judges is in its spec, which the cache
    key holds already)."""
    return judge.identity


def _stale_entries(entries: Iterable[CacheEntry], checkpoint_name: str, todo: set[tuple[str, str]]) -> int:
    """How many of the (pair, run)s still to judge have a cache entry under another key."""
    return len({(e.pair_id, e.run) for e in entries if e.checkpoint_name == checkpoint_name} & todo)


def slug(name: str) -> str:
    """A file-system-safe folder name for a checkpoint name.

    >>> slug("Base Gemma 4 E4B")
    'base-gemma-4-e4b'
    """
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", name).strip("-.").lower() or "judge"


CacheKey = tuple[str, ...]


def judge_into_cache(
    judge: PairJudge,
    groups: Sequence[Sequence[tuple[CacheKey, JudgeRequest]]],
    cache: JsonlAppender[CacheEntry],
    *,
    batch_size: int,
    task: str,
    console: Console,
    progress: bool,
) -> None:
    """The one resumable judging loop of eval and robustness: judge every request whose key is not
    in `cache`, in batches of about `batch_size` requests that never split a group (a pair's runs,
    a pair and its twins: a score-mode judge shares forward passes inside one, a backend's prefix
    cache reuses what they share), through the one checked batch step
    (:func:`~biasjudge.judge.protocol.judge_checked`), appending each judgment as it comes."""
    from biasjudge.judge.protocol import judge_checked

    todo = [[(key, request) for key, request in group if key not in cache] for group in groups]
    todo = [group for group in todo if group]
    total = sum(map(len, groups))
    remaining = sum(map(len, todo))
    bar = progress_bar(console=console, enabled=progress)
    with bar:
        bar_task = bar.add_task(task, total=total, completed=total - remaining, info="")
        started = datetime.now(UTC)
        done_now = 0
        for batch in group_batches(todo, batch_size):
            judgments = judge_checked(judge, [request for _, request in batch])
            for (key, _), judgment in zip(batch, judgments, strict=True):
                cache.append(CacheEntry.from_key(key, judgment))
            done_now += len(batch)
            seconds = (datetime.now(UTC) - started).total_seconds()
            bar.update(bar_task, advance=len(batch), info=f"{done_now / seconds:.1f}/s" if seconds > 0 else "")


T = TypeVar("T")


def group_batches(groups: Sequence[Sequence[T]], batch_size: int) -> Iterator[list[T]]:
    """Batches of about `batch_size` items made of whole groups: a group is never split, so a batch
    runs past `batch_size` by less than one group."""
    batch: list[T] = []
    for i, group in enumerate(groups):
        batch += group
        if len(batch) >= batch_size or i + 1 == len(groups):
            yield batch
            batch = []


def prediction_from(judgment: Judgment, *, checkpoint_name: str, run: str, model: str) -> Prediction:
    """A log row from a judgment, settled by the judge's one truncation rule
    (:func:`biasjudge.judge.judge.settle_truncation`: a generation cut before its verdict closed is
    PARSE_FAIL; a score-mode verdict stands, its cut reasoning flagged), which also covers
    judgments cached before the rule."""
    from biasjudge.judge.judge import settle_truncation

    judgment = settle_truncation(judgment)
    return Prediction(
        checkpoint_name=checkpoint_name,
        run_type=run,
        model=model,
        **judgment.model_dump(include=set(SHARED_WITH_JUDGMENT)),
    )


def run_eval(
    judge: PairJudge,
    holdout: Sequence[Pair],
    out_dir: str | Path,
    *,
    checkpoint_name: str,
    runs: Sequence[RunSpec] = REFERENCE_RUNS,
    limit: int | None = None,
    batch_size: int = 8,
    note: str = "",
    console: Console | None = None,
    progress: bool = True,
) -> EvalLog:
    """Judge every (pair, run), resumably, and write `out_dir/predictions.json`.

    Args:
        judge: any PairJudge (`make_judge(spec)`).
        holdout: the labelled pairs (levels attached for the answer-key baseline).
        out_dir: folder of `cache.jsonl` and `predictions.json` for this checkpoint.
        checkpoint_name: the column name in reports (`checkpoint_name` of every prediction).
        runs: the runs to do (:func:`select_runs`).
        limit: judge only the first N pairs of the holdout.
        batch_size: requests per `judge_batch` call, rounded up so one pair's runs stay together.
        note: free text stored in the log.
        console: where progress and warnings go (default stderr).
        progress: show a Rich progress bar.

    Returns:
        The EvalLog written to `out_dir/predictions.json`, metrics included (verbosity bias in the
        judge's own tokens, via `judge.count_tokens`).
    """
    from biasjudge.judge.protocol import JudgeRequest

    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if not runs:
        raise ConfigError("runs must name at least one run")
    console = console or Console(stderr=True)
    pairs = list(holdout)[:limit] if limit is not None else list(holdout)
    out_dir = Path(out_dir)
    system_prompt = getattr(judge, "system_prompt", None)
    hashes = {
        (p.pair_id, s): prompt_hash(system_prompt, p, swapped=s) for p in pairs for s in {r.swapped for r in runs}
    }

    identity = judge_identity(judge)

    def key(pair: Pair, run: RunSpec) -> tuple[str, ...]:
        return (
            checkpoint_name,
            pair.pair_id,
            run.name,
            judge.spec,
            judge.mode,
            hashes[pair.pair_id, run.swapped],
            identity,
        )

    groups = [
        [
            (key(pair, run), JudgeRequest(pair=pair, swapped=run.swapped, temperature=run.temperature, seed=run.seed))
            for run in runs
        ]
        for pair in pairs
    ]
    with JsonlAppender(out_dir / CACHE_NAME, CacheEntry, key=CacheEntry.key) as cache:
        todo = [(pair, run) for pair in pairs for run in runs if key(pair, run) not in cache]
        total = len(pairs) * len(runs)
        if total - len(todo):
            console.print(f"{checkpoint_name}: {total - len(todo)} of {total} judgments found in {cache.path}")
        stale = _stale_entries(cache.done.values(), checkpoint_name, {(p.pair_id, r.name) for p, r in todo})
        if stale:
            console.print(
                f"{checkpoint_name}: {stale} cached judgments in {cache.path} were made with another model file, "
                "prompt or setting; judging them afresh"
            )
        judge_into_cache(
            judge, groups, cache, batch_size=batch_size, task=checkpoint_name, console=console, progress=progress
        )
        predictions = [
            prediction_from(
                cache.done[key(pair, run)].judgment, checkpoint_name=checkpoint_name, run=run.name, model=judge.spec
            )
            for run in runs
            for pair in pairs
        ]

    metrics = compute_metrics(pairs, predictions, checkpoint=checkpoint_name, token_counter=judge.count_tokens)
    truncated = int(metrics.get("n_truncated") or 0)
    if truncated:
        console.print(
            f"[yellow]warning:[/yellow] {checkpoint_name}: {truncated} of {len(predictions)} generations hit the "
            "token cap; those cut before their verdict closed count as PARSE_FAIL "
            "(score mode keeps the scored verdict)."
        )
    floored = int(metrics.get("n_floored") or 0)
    if floored:
        console.print(
            f"[yellow]warning:[/yellow] {checkpoint_name}: {floored} of {len(predictions)} verdicts had a choice "
            "missing from the server's top log-probabilities (floored): raise its top_logprobs."
        )
    now = datetime.now(UTC)
    log = EvalLog(
        run_id=f"{slug(checkpoint_name)}-{now.strftime('%Y%m%dT%H%M%S')}",
        note=note
        or f"{checkpoint_name}: judge {judge.spec} ({judge.mode} mode), runs {', '.join(r.name for r in runs)}",
        metrics={checkpoint_name: metrics},
        detailed=predictions,
        judge=judge.spec,
        mode=judge.mode,
        runs=[r.name for r in runs],
        n_pairs=len(pairs),
        created_utc=now.isoformat(timespec="seconds"),
    )
    write_json(out_dir / PREDICTIONS_NAME, log)
    return log


def merge_logs(logs: Sequence[EvalLog], *, run_id: str | None = None, note: str | None = None) -> EvalLog:
    """Several logs side by side in one (one column per checkpoint in a report).

    Raises:
        ConfigError: two logs share a checkpoint name (rename one with `--name`).
    """
    seen: dict[str, int] = {}
    for i, log in enumerate(logs):
        for name in dict.fromkeys([*(p.checkpoint_name for p in log.detailed), *log.metrics]):
            if name in seen:
                raise ConfigError(
                    f"checkpoint {name!r} is in log {seen[name]} ({logs[seen[name]].run_id}) and log {i} ({log.run_id})"
                )
            seen[name] = i
    return EvalLog(
        run_id=run_id or "+".join(log.run_id for log in logs),
        note=note if note is not None else " | ".join(log.note for log in logs if log.note),
        metrics={name: values for log in logs for name, values in log.metrics.items()},
        detailed=[p for log in logs for p in log.detailed],
    )
