"""Micro-batching in front of the judge: requests that arrive together are judged in one call.

Score mode shares the KV cache of the prompt prefix across a batch, so judging 16 pairs in one
call costs far less than 16 calls. One worker thread owns the model (llama.cpp and transformers
are not thread-safe); the asyncio side only queues and waits.

Nothing is lost: a pair accepted into the queue gets exactly one answer, its judgment or an
error. A request that times out cancels its futures, and the worker skips cancelled items instead
of judging them for nobody. The queue is bounded; a request that does not fit is refused whole
(:class:`QueueFull`), before any of its pairs is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biasjudge.judge.protocol import PairJudge
    from biasjudge.records import Judgment, Pair


class QueueFull(Exception):
    """The request does not fit into the queue now; retry after a moment (503)."""


@dataclass(frozen=True)
class JudgeKey:
    """Which judge a pair goes to: the mode and whether both orders are combined."""

    mode: str
    debias: bool


@dataclass
class Done:
    """A judged pair, with where its time went."""

    judgment: Judgment
    queued_s: float
    judge_s: float
    batch_size: int


@dataclass
class _Item:
    pair: Pair
    key: JudgeKey
    future: asyncio.Future[Done]
    enqueued: float = field(default_factory=time.perf_counter)


class JudgePool:
    """One judge per :class:`JudgeKey`, made on first use (in the model thread) from a factory."""

    def __init__(self, factory: Callable[[JudgeKey], PairJudge]) -> None:
        self._factory = factory
        self._judges: dict[JudgeKey, PairJudge] = {}

    def get(self, key: JudgeKey) -> PairJudge:
        """The judge for `key`, built on first use and kept."""
        if key not in self._judges:
            self._judges[key] = self._factory(key)
        return self._judges[key]

    def loaded(self, key: JudgeKey) -> bool:
        """Whether the judge for `key` is built already."""
        return key in self._judges

    def close(self) -> None:
        """Close every judge built so far."""
        for judge in self._judges.values():
            judge.close()
        self._judges.clear()


class MicroBatcher:
    """A bounded queue of pairs and one worker that judges them in batches of up to `max_batch`.

    `on_batch(size)` is called once per model call (for the batch-size histogram).
    """

    def __init__(
        self,
        pool: JudgePool,
        *,
        max_queue: int,
        max_batch: int,
        wait_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.pool = pool
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biasjudge-model")

    @property
    def depth(self) -> int:
        """Pairs waiting for the model."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Create the bounded queue and start the worker task."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._worker = asyncio.create_task(self._run(), name="biasjudge-batcher")

    async def run_in_model_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function` in the thread that owns the model (e.g. loading a judge)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def stop(self) -> None:
        """Stop the worker, fail what is still queued with QueueFull, and close the judges."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._queue is not None:
            while not self._queue.empty():  # answer whatever is left rather than leave it hanging
                item = self._queue.get_nowait()
                if not item.future.done():
                    item.future.set_exception(QueueFull("the server is shutting down"))
        await self.run_in_model_thread(self.pool.close)
        self._executor.shutdown(wait=True)

    def submit(self, pairs: Sequence[Pair], key: JudgeKey) -> list[asyncio.Future[Done]]:
        """Queue every pair of one request, or none of them (QueueFull)."""
        if self._queue is None:
            raise QueueFull("the batcher is not started yet")
        if self.max_queue - self._queue.qsize() < len(pairs):
            raise QueueFull(f"{self._queue.qsize()} pairs are waiting; the queue holds {self.max_queue}")
        loop = asyncio.get_running_loop()
        items = [_Item(pair, key, loop.create_future()) for pair in pairs]
        for item in items:
            self._queue.put_nowait(item)
        return [item.future for item in items]

    async def _next_batch(self) -> list[_Item]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [item for item in batch if not item.future.done()]  # timed-out requests cancelled theirs

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            groups: dict[JudgeKey, list[_Item]] = {}
            for item in batch:
                groups.setdefault(item.key, []).append(item)
            for key, items in groups.items():
                await self._judge(key, items)

    async def _judge(self, key: JudgeKey, items: list[_Item]) -> None:
        from biasjudge.judge.protocol import JudgeRequest, judge_checked

        started = time.perf_counter()
        self._on_batch(len(items))

        def call() -> list[Judgment]:
            return judge_checked(self.pool.get(key), [JudgeRequest(item.pair) for item in items])

        try:
            judgments = await self.run_in_model_thread(call)
        except Exception as exc:  # the error goes to every waiting request, the worker lives on
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        took = time.perf_counter() - started
        for item, judgment in zip(items, judgments, strict=True):
            if not item.future.done():
                item.future.set_result(Done(judgment, started - item.enqueued, took, len(items)))
