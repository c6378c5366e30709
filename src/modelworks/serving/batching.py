"""Dynamic batching: requests that arrive together share one model call.

``await batcher.submit(records)`` queues the request's rows. A collector task takes the
oldest waiting request, lets others join it for up to ``max_wait_ms`` (counted from when
that request arrived, so a request that already waited for the previous batch goes at
once), up to ``max_batch_size`` rows, and hands the batch to a worker thread, where the
runtime checks and converts each request, runs the model once over all of them and the
answers are split back to their callers. The event loop only queues and wakes.

With the default ``max_wait_ms=0`` nobody waits on purpose: a request that finds the model
idle runs at once (lowest latency when traffic is light), and the requests that arrive
while a batch runs share the next model call (batches grow with the load by themselves).
A positive wait trades latency for bigger batches, which pays when one model call costs
much more than its rows (large neural networks, GPUs).

One batch runs at a time per batcher: while it runs, the next one fills up, which is
where batching pays off under load. A request with more rows than ``max_batch_size``
goes alone. When ``max_queue`` requests are already waiting, ``submit`` raises
``ServiceUnavailable`` (the server answers 503 with ``Retry-After``) rather than letting
latency grow without bound.

>>> batcher = DynamicBatcher(runtime, max_batch_size=64)  # doctest: +SKIP
>>> answer = await batcher.submit([{"tenure": 3, "plan": "pro"}])  # doctest: +SKIP
>>> await batcher.aclose()  # finishes what was queued  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelworks.core.errors import InvalidInput, ServiceUnavailable
from modelworks.serving.runtime import ModelInput, ModelRuntime, PredictionBatch

__all__ = ["BATCH_SIZE_BUCKETS", "BatchStats", "DynamicBatcher"]

log = logging.getLogger("modelworks.serving")

# Rows per model call, for the batch-size histogram.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
RETRY_AFTER_S = 1


@dataclass
class BatchStats:
    """Counters since the batcher started (a snapshot; see ``DynamicBatcher.stats``)."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    rejected: int = 0
    busy_seconds: float = 0.0
    # rows per batch: counts of batches with at most BATCH_SIZE_BUCKETS[i] rows (not
    # cumulative; the last slot counts batches larger than every bucket)
    size_counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SIZE_BUCKETS) + 1))

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """``(upper bound, batches at most that big)`` pairs, Prometheus style (the last
        bound is infinity)."""
        out, total = [], 0
        for bound, count in zip([*BATCH_SIZE_BUCKETS, math.inf], self.size_counts, strict=True):
            total += count
            out.append((bound, total))
        return out


@dataclass(slots=True, eq=False)
class _Item:
    payload: ModelInput
    future: asyncio.Future[PredictionBatch]
    arrived: float


class DynamicBatcher:
    """Coalesce concurrent requests for one runtime into batched model calls (asyncio).

    The batcher binds to the event loop of its first ``submit``; ``aclose`` drains it.
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        name: str = "",
    ) -> None:
        if max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be at least 1; got {max_batch_size}.")
        if max_wait_ms < 0:
            raise InvalidInput(f"max_wait_ms must be 0 or more; got {max_wait_ms}.")
        if max_queue < 1:
            raise InvalidInput(f"max_queue must be at least 1; got {max_queue}.")
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.name = name or runtime.name
        self._pending: collections.deque[_Item] = collections.deque()
        self._pending_rows = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._in_flight = 0
        self._stats = BatchStats()
        self._stats_lock = threading.Lock()
        self._retire_task: asyncio.Task[None] | None = None

    # ---- what callers use -------------------------------------------------------------
    async def submit(self, records: list[dict[str, Any]]) -> PredictionBatch:
        """The answers for ``records``, predicted together with other waiting requests."""
        return await self.submit_input(ModelInput.records(records))

    async def submit_columns(self, columns: dict[str, list[Any]]) -> PredictionBatch:
        """Like :meth:`submit`, for ``{"column": [values...], ...}``."""
        return await self.submit_input(ModelInput.columns(columns))

    def submit_input(self, payload: ModelInput) -> asyncio.Future[PredictionBatch]:
        """Queue ``payload`` now (before returning: nothing can run between a caller's
        routing and its request being queued) and return the future of its answer."""
        if self._closing:
            raise ServiceUnavailable(
                f"{self.name} is shutting down and takes no new requests; retry shortly.",
                retry_after=RETRY_AFTER_S,
            )
        if len(self._pending) >= self.max_queue:
            with self._stats_lock:
                self._stats.rejected += 1
            raise ServiceUnavailable(
                f"{self.name} has {len(self._pending)} requests waiting (max_queue="
                f"{self.max_queue}); retry after {RETRY_AFTER_S} s, or raise max_queue or add "
                "replicas if this persists.",
                retry_after=RETRY_AFTER_S,
            )
        loop = self._start()
        future: asyncio.Future[PredictionBatch] = loop.create_future()
        self._pending.append(_Item(payload, future, loop.time()))
        self._pending_rows += payload.rows
        assert self._wake is not None
        if len(self._pending) == 1 or self._pending_rows >= self.max_batch_size:
            self._wake.set()
        return future

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the batch running now)."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Requests in the batch the worker is running now."""
        return self._in_flight

    @property
    def closed(self) -> bool:
        return self._closing

    def stats(self) -> BatchStats:
        """A snapshot of the counters (batches, requests, rows, batch-size histogram)."""
        with self._stats_lock:
            s = self._stats
            return BatchStats(
                s.batches, s.requests, s.rows, s.rejected, s.busy_seconds, list(s.size_counts)
            )

    async def aclose(self) -> None:
        """Stop taking requests, answer every queued one, then stop the worker."""
        self._closing = True
        if self._task is None:
            self._shutdown_executor()
            return
        assert self._wake is not None
        self._wake.set()
        await asyncio.shield(self._task)
        self._shutdown_executor()

    def close_soon(self) -> None:
        """:meth:`aclose` from any thread, without waiting: for a deployment being replaced,
        whose already-queued requests still finish on it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._closing = True
            self._shutdown_executor()
            return

        def start() -> None:
            self._retire_task = loop.create_task(self.aclose())

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            start()
        else:
            loop.call_soon_threadsafe(start)

    # ---- the collector ---------------------------------------------------------------
    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        if self._loop is not None and self._loop.is_running() and not self._loop.is_closed():
            raise RuntimeError(
                f"The batcher for {self.name} runs on another event loop; use one batcher per loop."
            )
        # First use, or the loop it ran on has ended (a test client's per-request loop):
        # start over on this one.
        self._loop = loop
        self._wake = asyncio.Event()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"modelworks-batch-{self.name}",
                initializer=self.runtime.limit_threads,
            )
        self._task = loop.create_task(self._collect(), name=f"batcher:{self.name}")
        return loop

    async def _collect(self) -> None:
        try:
            await self._collect_until_closed()
        finally:
            if not self._closing:  # cancelled (the loop is ending): nobody will answer these
                for item in self._pending:
                    item.future.cancel()
                self._pending.clear()
                self._pending_rows = 0

    async def _collect_until_closed(self) -> None:
        assert self._loop is not None and self._wake is not None
        loop, wake = self._loop, self._wake
        while True:
            if not self._pending:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
                continue
            if self.max_wait_s > 0 and self._pending_rows < self.max_batch_size:
                delay = self._pending[0].arrived + self.max_wait_s - loop.time()
                if delay > 0 and not self._closing:
                    wake.clear()
                    timer = loop.call_later(delay, wake.set)
                    await wake.wait()  # set by the timer, or by a submit that fills the batch
                    timer.cancel()
                    if (
                        self._pending_rows < self.max_batch_size
                        and (self._pending[0].arrived + self.max_wait_s - loop.time() > 0)
                        and not self._closing
                    ):
                        continue  # woken early by a new request that did not fill the batch
            batch = self._take()
            if batch:
                await self._run(batch)

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        while self._pending:
            item = self._pending[0]
            if batch and rows + item.payload.rows > self.max_batch_size:
                break
            self._pending.popleft()
            self._pending_rows -= item.payload.rows
            if item.future.cancelled():  # the caller went away while it waited
                continue
            batch.append(item)
            rows += item.payload.rows
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        assert self._loop is not None
        self._in_flight = len(batch)
        started = time.perf_counter()
        results: list[PredictionBatch | BaseException]
        try:
            results = await self._loop.run_in_executor(
                self._executor, self.runtime.predict_many, [item.payload for item in batch]
            )
        except asyncio.CancelledError:
            for item in batch:
                item.future.cancel()
            raise
        except Exception as exc:  # the worker itself failed: every caller gets it
            log.exception("batch of %d requests for %s failed", len(batch), self.name)
            results = [exc] * len(batch)
        finally:
            self._in_flight = 0
        rows = sum(item.payload.rows for item in batch)
        with self._stats_lock:
            s = self._stats
            s.batches += 1
            s.requests += len(batch)
            s.rows += rows
            s.busy_seconds += time.perf_counter() - started
            s.size_counts[bisect.bisect_left(BATCH_SIZE_BUCKETS, rows)] += 1
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def __repr__(self) -> str:
        return (
            f"<DynamicBatcher {self.name} max_batch_size={self.max_batch_size} "
            f"max_wait_ms={self.max_wait_s * 1000:g} queued={len(self._pending)}>"
        )
