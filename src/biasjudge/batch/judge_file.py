"""`biasjudge judge-file IN OUT`: judge every pair of a JSONL or Parquet file, streaming and resumable.

Rows in: one pair per row, either a :class:`~biasjudge.records.Pair` record (the holdout file is a
valid input) or the service's request fields (:class:`~biasjudge.records.PairRequest`: `id`,
`question`, `choices`, `response_a`, `response_b`). A row is a Pair if it validates as one, else a
request, else it is invalid: it goes to the side file `<out>.rejects.jsonl` with its line, field
and reason, and the job goes on. The row key is the pair_id, the request's id, else `line-<n>`;
it is the `pair_id` of the row's verdict.

Rows out: one :class:`~biasjudge.batch.rows.FileJudgment` per valid row (the Judgment plus the row's input `line`), in
input order. A Parquet OUT is written at the end, atomically, from the resumable JSON Lines file
`<out>.partial.jsonl`.

Exactly once, in O(1) memory. Rows are judged and appended in input order, every record carries its
input line, and each appended line is flushed before the next one is written (fsynced whenever the
writing switches between OUT and the rejects file, and after every batch), so OUT and the rejects
file together always hold a prefix of the input. A restarted job cuts a torn last line (a kill in
the middle of a write), then resumes after the largest input line found in either file: nothing is
judged twice and nothing is lost. No set of keys is kept, so memory does not grow with the file
(and a key that repeats is judged each time: the line is the identity of a row).

The job refuses to resume into an OUT that another judge, mode or input wrote (it compares the last
record's judge and mode, and the input rows at the resume point), and holds an OS lock on OUT so
that two jobs never interleave lines in it.

Engines: `local` judges in this process; `ray` sends the same valid rows through Ray Data (see
:mod:`biasjudge.batch.ray_engine`), while the reading, the rejects and the writing stay here, in
the driver, so exactly-once holds the same way.

The job is here; how rows are read is :mod:`biasjudge.batch.rows`, where they are written
:mod:`biasjudge.batch.output`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from biasjudge.backends.registry import DEFAULT_JUDGE_SPEC
from biasjudge.batch.output import Sink, parquet_to_log, write_parquet
from biasjudge.batch.rows import FileJudgment, Row, classify, iter_objects, iter_rows
from biasjudge.batch.settings import JudgeSettings
from biasjudge.errors import ConfigError, DataError
from biasjudge.io import (
    check_input_file,
    folder_lock,
    iter_jsonl_records,
    iter_text_lines,
    open_parquet,
    parse_json_line,
    side_path,
    write_json,
)
from biasjudge.records import SCHEMA_VERSION, JudgeMode, Judgment, Pair, Record
from biasjudge.verdict import PARSE_FAIL, VERDICTS

if TYPE_CHECKING:
    from rich.console import Console

    from biasjudge.batch.ray_engine import RayOptions
    from biasjudge.judge.protocol import PairJudge

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")

MAX_WINDOW_ROWS = 1024
"""A window of rows judged together also closes at this many rows (valid or not), so a long run of
invalid rows is not held in memory."""


# --------------------------------------------------------------------------- records


class BatchSummary(Record):
    """What a judge-file run did; printed, returned, and written to `<out>.summary.json`."""

    schema_version: int = SCHEMA_VERSION
    """biasjudge's record schema version."""
    input: str
    """The input file."""
    output: str
    """The verdicts file (JSONL or Parquet)."""
    rejects: str | None
    """The rejects side file, when any row was invalid."""
    engine: Engine
    """local or ray."""
    judge: str
    """The judge spec."""
    mode: JudgeMode
    """score or generate."""
    batch_size: int
    """Rows per judge call."""
    rows_in: int
    """Rows in the input (non-blank lines of a JSONL file, rows of a Parquet file)."""
    judged: int
    """Rows in OUT, from this run and earlier ones."""
    invalid: int
    """Rows in the rejects file, from this run and earlier ones."""
    resumed: int
    """Rows found done (judged or rejected) when this run started."""
    judged_now: int
    """Rows judged by this run."""
    invalid_now: int
    """Rows rejected by this run."""
    complete: bool
    """Every input row is in OUT or in the rejects file, exactly once (judged + invalid == rows_in)."""
    verdicts: dict[str, int]
    """Verdict counts over OUT: A, B, TIE and PARSE_FAIL (and UNSURE, for a judge that abstains)."""
    parse_failures: int
    """Rows of OUT whose judge output broke the verdict contract (verdict PARSE_FAIL)."""
    elapsed_s: float
    """Wall time of this run, from the start to the summary (model load and Ray start-up included)."""
    first_row_s: float | None
    """Seconds until this run wrote its first verdict (start-up: model load, Ray, the first batch)."""
    rows_per_s: float | None
    """judged_now / elapsed_s: this run's throughput, start-up included."""
    steady_rows_per_s: float | None
    """Rows judged per second after the first batch was written (start-up excluded); None with fewer
    than two batches."""


# --------------------------------------------------------------------------- the job


@dataclass
class _Scan:
    rows_in: int = 0
    """Non-blank rows of the input."""
    done: int = 0
    """Rows at or before the resume point."""
    last_line: int = 0
    """The input's last line number."""


def _expected(sink: Sink) -> dict[int, tuple[str, str]]:
    """input line -> (what, value) the input must hold there for OUT to be its verdicts."""
    out: dict[int, tuple[str, str]] = {}
    if sink.rejects.last is not None:
        out[sink.rejects.last.line] = ("raw", sink.rejects.last.raw)
    if sink.output.last is not None:
        out[sink.output.last.line] = ("key", sink.output.last.pair_id)
    return out


def _check_row(row: Row, what: str, value: str, output: Path, source: Path) -> None:
    found = row.raw if what == "raw" else (row.pair.pair_id if row.pair else None)
    if found != value:
        raise ConfigError(
            f"{output} does not hold the verdicts of {source}: its line {row.line} is {value!r}, but that line of "
            f"{source} is {found!r}; write to another OUT, or delete it (and its side files) to start over"
        )


def scan_input(source: Path, resume: int, expected: dict[int, tuple[str, str]], output: Path) -> _Scan:
    """Count the input's rows (the progress bar's total), those done before, and check that the
    rows at the resume point are the ones OUT recorded. One cheap pass: rows are not validated."""
    scan = _Scan()
    if source.suffix == ".parquet":
        scan.rows_in = scan.last_line = open_parquet(source).metadata.num_rows
        scan.done = min(resume, scan.rows_in)
        for line, (what, value) in expected.items():
            for number, raw, obj in iter_objects(source, after=line - 1):
                _check_row(classify(obj, number, raw, source), what, value, output, source)
                break
    else:
        for number, text, has_newline in iter_text_lines(source):
            scan.rows_in += 1
            scan.last_line = number
            scan.done += number <= resume
            if number in expected:
                row = classify(parse_json_line(source, number, text, has_newline), number, text, source)
                _check_row(row, *expected[number], output, source)
    if scan.rows_in == 0:
        raise DataError(str(source), None, None, "empty file: no pairs to judge")
    if resume > scan.last_line:
        raise ConfigError(
            f"{output} holds rows up to line {resume}, but {source} ends at line {scan.last_line}: it was written from "
            "another input; write to another OUT, or delete it (and its side files) to start over"
        )
    return scan


def _check_same_judge(sink: Sink, settings: JudgeSettings, output: Path) -> None:
    last = sink.output.last
    if last is not None and (last.judge, last.mode) != (settings.spec, settings.mode):
        raise ConfigError(
            f"{output} holds verdicts of --judge {last.judge} in {last.mode} mode; resume it with those, "
            f"or write the verdicts of {settings.spec} ({settings.mode} mode) to another OUT"
        )


class _LazyJudge:
    """The judge, loaded on the first batch that has a pair (a finished job reruns without a model)."""

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self.judge: PairJudge | None = None

    def judge_batch(self, pairs: list[Pair]) -> list[Judgment]:
        from biasjudge.judge.protocol import JudgeRequest, judge_checked

        if self.judge is None:
            self.judge = self.settings.make()
        return judge_checked(self.judge, [JudgeRequest(pair=p) for p in pairs])

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()


def _judge_local(
    rows: Iterator[Row], judge: _LazyJudge, sink: Sink, batch_size: int, on_batch: Callable[[], None]
) -> None:
    """Judge windows of `batch_size` pairs (rejects in between kept in their place), each window's
    rows written in input order, then synced."""
    window: list[Row] = []
    valid = 0

    def flush() -> None:
        pairs = [row.pair for row in window if row.pair is not None]
        judgments = iter(judge.judge_batch(pairs) if pairs else [])
        for row in window:
            if row.pair is None:
                sink.rejected(row)
            else:
                sink.judged(row, next(judgments))
        sink.sync()
        on_batch()

    for row in rows:
        window.append(row)
        valid += row.pair is not None
        if valid >= batch_size or len(window) >= MAX_WINDOW_ROWS:
            flush()
            window, valid = [], 0
    if window:
        flush()


@dataclass
class _Paths:
    output: Path
    log: Path
    """Where verdicts are appended: OUT itself, or `<out>.partial.jsonl` for a Parquet OUT."""
    rejects: Path
    summary: Path
    parquet: bool = field(default=False)


def output_paths(output: str | Path) -> _Paths:
    """OUT and its side files.

    >>> paths = output_paths("runs/verdicts.parquet")
    >>> paths.log.name, paths.rejects.name, paths.summary.name
    ('verdicts.parquet.partial.jsonl', 'verdicts.parquet.rejects.jsonl', 'verdicts.parquet.summary.json')
    """
    output = Path(output)
    parquet = output.suffix == ".parquet"
    return _Paths(
        output=output,
        log=side_path(output, ".partial.jsonl") if parquet else output,
        rejects=side_path(output, ".rejects.jsonl"),
        summary=side_path(output, ".summary.json"),
        parquet=parquet,
    )


def _check_arguments(source: Path, paths: _Paths, batch_size: int, engine: str, mode: str) -> None:
    if not source.is_file():
        raise DataError(str(source), None, None, "not a regular file (it is read twice: to count, then to judge)")
    if paths.output.is_dir():
        raise DataError(str(paths.output), None, None, "is a folder; OUT must be a file (.jsonl or .parquet)")
    own = {paths.output, paths.log, paths.rejects, paths.summary}
    if any(p.exists() and p.resolve() == source.resolve() for p in own):
        raise ConfigError(f"OUT ({paths.output}) and its side files must not be the input {source}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if mode not in ("score", "generate"):
        raise ConfigError(f"mode must be 'score' or 'generate', got {mode!r}")


def _totals(paths: _Paths) -> tuple[Counter[str], int]:
    """(verdict counts over OUT, rows in the rejects file); writes the Parquet OUT from its partial."""
    verdicts: Counter[str] = Counter({v: 0 for v in (*VERDICTS, PARSE_FAIL)})  # UNSURE counted when it occurs

    def counted(records: Iterable[FileJudgment]) -> Iterator[FileJudgment]:
        for record in records:
            verdicts[record.verdict] += 1
            yield record

    if paths.parquet:
        write_parquet(counted(iter_jsonl_records(paths.log, FileJudgment)), paths.output)
        paths.log.unlink(missing_ok=True)
    else:
        for _ in counted(iter_jsonl_records(paths.log, FileJudgment)):
            pass
        paths.log.touch()  # every row invalid: OUT still exists, empty
    invalid = sum(1 for _ in iter_text_lines(paths.rejects)) if paths.rejects.exists() else 0
    return verdicts, invalid


def judge_file(
    input_path: str | Path,
    output_path: str | Path,
    *,
    judge: str = DEFAULT_JUDGE_SPEC,
    mode: JudgeMode = "score",
    system_prompt: str | None = None,
    batch_size: int = 8,
    engine: Engine = "local",
    ray: RayOptions | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> BatchSummary:
    """Judge every row of `input_path` into `output_path`, resuming what an earlier run left.

    Args:
        input_path: `.parquet`, or JSON Lines (any other suffix): Pair records or request fields.
        output_path: `.parquet` (written at the end from `<out>.partial.jsonl`) or JSON Lines.
        judge: the judge spec, as `biasjudge judge --judge` takes it.
        mode: `score` or `generate`, as `biasjudge judge --mode` takes it.
        system_prompt: the system prompt's text (default: the judge's own).
        batch_size: pairs per judge call (and per Ray batch); a kill loses at most the batches
            in flight, which the restart judges again.
        engine: `local` (this process) or `ray` (Ray Data, see :mod:`biasjudge.batch.ray_engine`).
        ray: the Ray engine's options (actors, CPUs and GPUs per actor, cluster address).
        progress: show the progress bar (rows, rate, time left) on the console.
        console: where progress and messages go (default: stderr).

    Returns:
        The run's :class:`BatchSummary`, also written to `<out>.summary.json`.

    Raises:
        DataError: a missing or unreadable input, bytes that are not UTF-8 (naming the line), a
            file of another kind of record, an OUT that is a folder or holds an invalid line.
        ConfigError: a bad option; an OUT written by another judge, mode or input; another job
            writing to OUT.
    """
    from rich.console import Console

    from biasjudge.io.progress import progress_bar

    started = time.perf_counter()
    console = console or Console(stderr=True)
    source = check_input_file(input_path)
    paths = output_paths(output_path)
    _check_arguments(source, paths, batch_size, engine, mode)
    settings = JudgeSettings(judge, mode, system_prompt)
    folder = paths.output.parent
    with folder_lock(folder, f".{paths.output.name}.lock", what="a judge-file job"):
        if paths.parquet and paths.output.exists() and not paths.log.exists():
            parquet_to_log(paths.output, paths.log)  # a finished Parquet OUT: resume from its rows
        sink = Sink(paths.log, paths.rejects)
        try:
            _check_same_judge(sink, settings, paths.output)
            resume = sink.last_line
            scan = scan_input(source, resume, _expected(sink), paths.output)
            if scan.done:
                console.print(f"resuming {paths.output}: {scan.done} of {scan.rows_in} rows were done", highlight=False)
            bar = progress_bar(console=console, enabled=progress)
            with bar:
                task = bar.add_task(f"judging {source.name}", total=scan.rows_in, completed=scan.done, info="")

                def on_batch() -> None:
                    seconds = time.perf_counter() - started
                    rate = f"{sink.judged_now / seconds:.2f} rows/s" if seconds > 0 else ""
                    bar.update(task, completed=scan.done + sink.rows_now, info=rate)

                if engine == "ray":
                    from biasjudge.batch.ray_engine import RayOptions, judge_with_ray

                    judge_with_ray(
                        lambda: iter_rows(source, after=resume),
                        sink,
                        settings,
                        ray or RayOptions(),
                        batch_size=batch_size,
                        remaining=scan.rows_in - scan.done,
                        stage_dir=folder,
                        on_batch=on_batch,
                    )
                else:
                    lazy = _LazyJudge(settings)
                    try:
                        _judge_local(iter_rows(source, after=resume), lazy, sink, batch_size, on_batch)
                    finally:
                        lazy.close()
        finally:
            sink.close()
        verdicts, invalid = _totals(paths)
        elapsed = time.perf_counter() - started
        judged = sum(verdicts.values())
        first, last = sink.first_sync, sink.last_sync
        summary = BatchSummary(
            input=str(source),
            output=str(paths.output),
            rejects=str(paths.rejects) if invalid else None,
            engine=engine,
            judge=judge,
            mode=mode,
            batch_size=batch_size,
            rows_in=scan.rows_in,
            judged=judged,
            invalid=invalid,
            resumed=scan.done,
            judged_now=sink.judged_now,
            invalid_now=sink.invalid_now,
            complete=judged + invalid == scan.rows_in,
            verdicts=dict(verdicts),
            parse_failures=verdicts[PARSE_FAIL],
            elapsed_s=round(elapsed, 3),
            first_row_s=round(first[0] - started, 3) if first else None,
            rows_per_s=round(sink.judged_now / elapsed, 4) if sink.judged_now and elapsed > 0 else None,
            steady_rows_per_s=(
                round((last[1] - first[1]) / (last[0] - first[0]), 4) if first and last and last[0] > first[0] else None
            ),
        )
        write_json(paths.summary, summary)
    return summary
