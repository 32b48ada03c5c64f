"""The Ray Data engine of `judge-file` (`--engine ray`): the same job, judged by an actor pool.

The driver (the `judge-file` process) keeps everything that makes the job exactly-once: it reads
the input, writes the rejects, and appends the verdicts in input order (see
:mod:`biasjudge.batch.judge_file`). Only the judging moves to Ray:

1. the valid remaining rows are staged, streaming, as small JSON Lines files beside OUT (a bounded
   number of files, so no file is ever read whole into memory);
2. ONE dataset reads them (`ray.data.read_text`, the read tasks pinned to the driver's node, where
   the files are), `map_batches(JudgeActor, compute=ActorPoolStrategy(size=actors))`: each actor
   builds one judge with `make_judge` in `__init__`, so a model loads once per actor, never per
   batch; `preserve_order` is on;
3. the driver iterates the results as they come and writes them, each checked against the input
   row it belongs to, the rejects in their places between them.

A kill loses only the batches in flight; the restart stages what is left and judges it.

Ray is imported inside the functions (`pip install 'ray[data]'`), so `biasjudge --help` never
loads it. On a cluster (`address`), run the driver on a cluster node (e.g. `ray job submit -- biasjudge
judge-file ...`), with biasjudge installed on every node: the staged files are read on the
driver's node and the judging runs wherever the actors are placed (`gpus_per_actor=1` puts each on
a GPU, for the `vllm:` backend).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field

from biasjudge.backends.base import import_optional
from biasjudge.batch.output import Sink
from biasjudge.batch.rows import Row
from biasjudge.batch.settings import JudgeSettings
from biasjudge.config import ConfigModel, JudgeSpec
from biasjudge.errors import BackendError, ConfigError
from biasjudge.io import write_json_lines
from biasjudge.records import Judgment, Pair

if TYPE_CHECKING:
    import numpy as np

NODE_LABEL = "ray.io/node-id"
"""The label every Ray node carries with its id (read tasks are pinned to the driver's node by it)."""
MAX_STAGE_FILES = 2000
"""At most this many staged files (one Ray block each): a file holds at least one batch, more for a
big input, so Ray's per-block overhead stays small while results still stream back batch by batch."""


class RayOptions(ConfigModel):
    """Where and how wide the Ray engine runs (`judge-file --engine ray`)."""

    model_config = ConfigDict(frozen=True)

    actors: int = Field(default=1, ge=1)
    """Ray: actors in the pool, each loading one judge (one model in memory per actor)."""
    cpus_per_actor: float | None = Field(default=None, gt=0)
    """Ray: CPUs reserved per actor; a llama.cpp judge runs that many threads. Default: the local
    runtime's CPUs divided among the actors; 1 on a cluster."""
    gpus_per_actor: float = Field(default=0.0, ge=0)
    """Ray: GPUs per actor (1 for --judge vllm:MODEL on GPU workers)."""
    address: str | None = Field(default=None, json_schema_extra={"flags": ["--ray-address"]})
    """Ray: a cluster to join ('auto' on a cluster node, ray://HOST:10001 or HOST:6379); run the command
    on a cluster node. Default: start a local Ray runtime."""
    num_cpus: int | None = Field(default=None, ge=1, json_schema_extra={"flags": ["--ray-cpus"]})
    """Ray: CPUs of the local runtime (default: all of this machine's); ignored with an address."""


class JudgeActor:
    """A Ray Data actor holding ONE judge, built in `__init__`: the model loads once per actor.

    Args:
        settings: the judge to build (spec, mode, system prompt).
        threads: `n_threads` of a llama.cpp judge (its CPUs in the pool), unless the spec sets it
            itself (for prompt evaluation and generation both): llama.cpp would otherwise take every
            core of the node, and the actors sharing a node would fight over them.
    """

    def __init__(self, settings: JudgeSettings, threads: int | None = None) -> None:
        options: dict[str, Any] = {}
        if threads and _is_llamacpp(settings.spec):
            options["n_threads"] = threads
        self.judge = settings.make(**options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Staged rows (`text`: {"line", "pair"} as JSON) -> their lines and Judgments (as JSON)."""
        import numpy as np

        from biasjudge.judge.protocol import JudgeRequest, judge_checked

        rows = [json.loads(text) for text in batch["text"]]
        requests = [JudgeRequest(pair=Pair.model_validate_json(row["pair"])) for row in rows]
        judgments = judge_checked(self.judge, requests)
        return {
            "line": np.array([row["line"] for row in rows], dtype=np.int64),
            "judgment": np.array([j.model_dump_json() for j in judgments], dtype=object),
        }


@contextmanager
def _quiet_console() -> Iterator[None]:
    """Ray Data's console handler at ERROR for the block: it logs each execution's start and end
    and warns that its own progress bars are off, which biasjudge's bar already says. Its log
    file (`ray-data.log` in the Ray session folder) keeps everything; errors come back as exceptions."""
    import_optional("ray.data", "ray[data]", "ray", "--engine ray")  # configures its logging on import
    handlers = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def _is_llamacpp(spec: str) -> bool:
    """A llama.cpp judge whose spec does not set its threads itself."""
    parsed = JudgeSpec.parse(spec)
    return parsed.scheme == "llamacpp" and "n_threads" not in parsed.backend_options


def _failure(exc: BaseException) -> str:
    """The message of a biasjudge error raised inside a Ray worker (Ray wraps it in a long report
    with the worker's traceback), else the report's first line."""
    found = re.findall(r"biasjudge\.errors\.\w+: (.+)", str(exc))
    return found[-1] if found else str(exc).strip().splitlines()[0]


def stage_rows(rows: Iterator[Row], folder: Path, rows_per_file: int) -> list[Path]:
    """Write the valid rows, in order, as JSON Lines files of `rows_per_file` rows; their paths in order."""
    files: list[Path] = []
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        files.append(folder / f"rows-{len(files):06d}.jsonl")
        write_json_lines(files[-1], chunk)

    for row in rows:
        if row.pair is None:
            continue
        chunk.append({"line": row.line, "pair": row.pair.model_dump_json()})
        if len(chunk) >= rows_per_file:
            flush()
            chunk = []
    if chunk:
        flush()
    return files


def _cpus_per_actor(ray: Any, options: RayOptions) -> float:
    if options.cpus_per_actor is not None:
        return options.cpus_per_actor
    if options.address is not None:
        return 1.0
    total = float(ray.cluster_resources().get("CPU", 1))
    return max(1.0, math.floor(total / options.actors))


def _check_fits(ray: Any, options: RayOptions, cpus: float) -> None:
    """On the local runtime, an actor pool that cannot be placed would wait forever: refuse it."""
    if options.address is not None:
        return
    total = float(ray.cluster_resources().get("CPU", 0))
    if options.actors * cpus > total:
        raise ConfigError(
            f"{options.actors} actors x {cpus:g} CPUs need {options.actors * cpus:g} CPUs, but the local Ray "
            f"runtime has {total:g}; use fewer actors, fewer CPUs per actor or more runtime CPUs"
        )
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if options.actors * options.gpus_per_actor > gpus:
        raise ConfigError(
            f"{options.actors} actors x {options.gpus_per_actor:g} GPUs need more GPUs than the local runtime "
            f"has ({gpus:g})"
        )


def _results(
    ray: Any, files: list[Path], settings: JudgeSettings, options: RayOptions, batch_size: int
) -> Iterator[tuple[list[int], list[str]]]:
    """(lines, Judgments as JSON) of each result block, in input order, as Ray produces them."""
    data = import_optional("ray.data", "ray[data]", "ray", "--engine ray")
    context = data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results come back in input order
    context.enable_progress_bars = False  # biasjudge's own bar shows progress
    context.print_on_execution_start = False
    cpus = _cpus_per_actor(ray, options)
    _check_fits(ray, options, cpus)
    # The staged files live on the driver's node: read them there (no CPU reserved, so reading
    # never waits for the CPUs the actors hold), judge wherever the actors are.
    dataset = data.read_text(
        [str(f) for f in files],
        num_cpus=0,
        concurrency=options.actors,  # enough to keep the actors fed; more would only spawn idle workers
        override_num_blocks=len(files),
        label_selector={NODE_LABEL: ray.get_runtime_context().get_node_id()},
    ).map_batches(
        JudgeActor,
        fn_constructor_kwargs={"settings": settings, "threads": max(1, int(cpus))},
        compute=data.ActorPoolStrategy(size=options.actors),
        batch_size=batch_size,
        num_cpus=cpus,
        num_gpus=options.gpus_per_actor or None,
        batch_format="numpy",
    )
    for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        yield [int(x) for x in block["line"]], [str(x) for x in block["judgment"]]


def _write_in_order(
    rows: Iterator[Row], results: Iterator[tuple[list[int], list[str]]], sink: Sink, on_batch: Callable[[], None]
) -> None:
    """Walk the input again beside the results: each verdict is written at its row, each reject at
    its own; the files are synced before the next result block is taken."""
    pending: deque[tuple[int, str]] = deque()
    for row in rows:
        if row.pair is None:
            sink.rejected(row)
            continue
        if not pending:
            sink.sync()
            on_batch()
            for lines, judgments in results:
                pending.extend(zip(lines, judgments, strict=True))
                if pending:
                    break
        if not pending:
            raise BackendError(f"Ray returned no verdict for line {row.line}")
        line, text = pending.popleft()
        if line != row.line:
            raise BackendError(f"Ray returned the verdict of line {line} where line {row.line} was due: order was lost")
        sink.judged(row, Judgment.model_validate_json(text))
    if pending or next(results, None) is not None:
        raise BackendError("Ray returned more verdicts than there were rows to judge")
    sink.sync()
    on_batch()


def judge_with_ray(
    rows: Callable[[], Iterator[Row]],
    sink: Sink,
    settings: JudgeSettings,
    options: RayOptions,
    *,
    batch_size: int,
    remaining: int,
    stage_dir: Path,
    on_batch: Callable[[], None],
) -> None:
    """Judge the rows of `rows()` (an input reader, called twice: to stage, then to write) on Ray Data.

    Starts a local Ray runtime (or joins `options.address`) unless Ray is initialised already, and
    shuts down only what it started.
    """
    _is_llamacpp(settings.spec)  # a spec that does not parse fails here, before Ray starts
    ray = import_optional("ray", "ray[data]", "ray", "--engine ray")
    stage_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=stage_dir, prefix=".judge-file-stage-") as folder:
        rows_per_file = max(batch_size, math.ceil(remaining / MAX_STAGE_FILES))
        files = stage_rows(rows(), Path(folder), rows_per_file)
        if not files:  # nothing valid left: no runtime to start
            _write_in_order(rows(), iter(()), sink, on_batch)
            return
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=options.address,
                num_cpus=(options.num_cpus or os.cpu_count()) if options.address is None else None,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,  # the model's own logging stays in the workers' log files
            )
        try:
            with _quiet_console():
                _write_in_order(rows(), _results(ray, files, settings, options, batch_size), sink, on_batch)
        except ray.exceptions.RayError as exc:
            # A judge that fails in an actor (a model that does not load, ...) is one line for the user.
            raise BackendError(f"the Ray engine failed: {_failure(exc)}") from exc
        finally:
            if started_here:
                ray.shutdown()
