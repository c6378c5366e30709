"""DynamicBatcher: concurrent requests share model calls, answers go back to their callers,
a full queue refuses with 503, closing drains."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelworks.core.errors import InvalidInput, ServiceUnavailable
from modelworks.serving.batching import BATCH_SIZE_BUCKETS, DynamicBatcher
from modelworks.serving.runtime import ModelInput, ModelRuntime, PredictionBatch
from modelworks.training.package import load_package, save_package


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> ModelRuntime:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = np.where(X["a"] + X["b"] > 0, "yes", "no")
    path: Path = tmp_path_factory.mktemp("batching") / "pkg"
    save_package(LogisticRegression().fit(X, y), path, input_example=X.head())
    return ModelRuntime(load_package(path), name="m", version="m@1")


def rows(i: int, n: int = 1) -> list[dict[str, Any]]:
    """``n`` distinct rows for request ``i`` (so a mix-up between callers shows)."""
    return [{"a": i / 10.0 - 2.0, "b": (j - i) / 7.0} for j in range(n)]


class GatedRuntime:
    """Stands in for a ModelRuntime: records every batch and can hold the worker at a gate."""

    def __init__(self, inner: ModelRuntime) -> None:
        self.inner = inner
        self.name = "gated"
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def limit_threads(self) -> None:
        self.inner.limit_threads()

    def predict_many(self, payloads: Sequence[ModelInput]) -> list[PredictionBatch | BaseException]:
        self.batches.append([p.rows for p in payloads])
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.inner.predict_many(payloads)


def assert_answers(got: Sequence[Any], expected: Sequence[PredictionBatch]) -> None:
    """The same labels and versions; probabilities equal up to the last bits (a batch of many
    rows takes other BLAS paths than one row, so the last digit may differ)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert isinstance(g, PredictionBatch)
        assert (g.predictions, g.classes, g.model_version) == (
            e.predictions,
            e.classes,
            e.model_version,
        )
        np.testing.assert_allclose(g.probabilities, e.probabilities, rtol=1e-9, atol=1e-15)


async def until(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_concurrent_submits_share_model_calls_and_get_their_own_answers(
    runtime: ModelRuntime,
) -> None:
    expected = [runtime.predict_records(rows(i, 1 + i % 3)) for i in range(48)]

    async def main() -> list[PredictionBatch]:
        batcher = DynamicBatcher(runtime, max_batch_size=64, max_wait_ms=20)
        before = runtime.model_calls
        answers = await asyncio.gather(*(batcher.submit(rows(i, 1 + i % 3)) for i in range(48)))
        calls = runtime.model_calls - before
        stats = batcher.stats()
        assert calls < 48, "requests were not coalesced"
        assert stats.batches == calls and stats.requests == 48
        assert stats.rows == sum(1 + i % 3 for i in range(48))
        await batcher.aclose()
        return answers

    assert_answers(asyncio.run(main()), expected)


def test_batches_stay_within_max_batch_size(runtime: ModelRuntime) -> None:
    gated = GatedRuntime(runtime)

    async def main() -> None:
        batcher = DynamicBatcher(gated, max_batch_size=8, max_wait_ms=5)  # type: ignore[arg-type]
        answers = await asyncio.gather(*(batcher.submit(rows(i, 3)) for i in range(10)))
        assert [len(a) for a in answers] == [3] * 10
        # 3-row requests, at most 8 rows a batch: two requests per batch
        assert all(sum(b) <= 8 for b in gated.batches)
        assert sum(len(b) for b in gated.batches) == 10
        big = await batcher.submit(rows(99, 20))  # larger than a batch: goes alone
        assert len(big) == 20 and gated.batches[-1] == [20]
        stats = batcher.stats()
        buckets = dict(stats.cumulative_buckets())
        assert buckets[math.inf] == stats.batches
        assert buckets[4] == 0 and buckets[8] == stats.batches - 1
        assert buckets[16] == buckets[8] and buckets[32] == stats.batches
        assert len(stats.size_counts) == len(BATCH_SIZE_BUCKETS) + 1
        await batcher.aclose()

    asyncio.run(main())


def test_a_bad_request_fails_alone(runtime: ModelRuntime) -> None:
    async def main() -> None:
        batcher = DynamicBatcher(runtime, max_wait_ms=20)
        good = batcher.submit(rows(1))
        bad = batcher.submit([{"a": "x", "b": 1.0}])
        other = batcher.submit(rows(2))
        results = await asyncio.gather(good, bad, other, return_exceptions=True)
        assert_answers([results[0], results[2]], [runtime.predict_records(rows(i)) for i in (1, 2)])
        assert isinstance(results[1], InvalidInput)
        assert "row 0: 'a' must be a number, got 'x'" in results[1].detail
        assert batcher.stats().batches == 1
        await batcher.aclose()

    asyncio.run(main())


def test_a_full_queue_refuses_with_retry_after(runtime: ModelRuntime) -> None:
    gated = GatedRuntime(runtime)
    gated.gate.clear()

    async def main() -> None:
        batcher = DynamicBatcher(gated, max_queue=2, max_wait_ms=0)  # type: ignore[arg-type]
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await until(lambda: batcher.in_flight == 1)  # the worker holds the first request
        queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2)]
        await until(lambda: batcher.queue_depth == 2)
        with pytest.raises(ServiceUnavailable, match=r"2 requests waiting \(max_queue=2\)") as info:
            await batcher.submit(rows(3))
        assert info.value.extra["retry_after"] == 1
        assert batcher.stats().rejected == 1
        gated.gate.set()
        answers = await asyncio.gather(running, *queued)
        assert_answers(answers, [runtime.predict_records(rows(i)) for i in range(3)])
        await batcher.aclose()

    asyncio.run(main())


def test_close_answers_everything_queued_then_refuses(runtime: ModelRuntime) -> None:
    gated = GatedRuntime(runtime)
    gated.gate.clear()

    async def main() -> None:
        batcher = DynamicBatcher(gated, max_batch_size=2, max_wait_ms=0)  # type: ignore[arg-type]
        pending = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(7)]
        await until(lambda: batcher.in_flight > 0)
        closing = asyncio.ensure_future(batcher.aclose())
        await asyncio.sleep(0.01)
        with pytest.raises(ServiceUnavailable, match=r"shutting down"):
            await batcher.submit(rows(9))
        assert not closing.done()
        gated.gate.set()
        await closing
        answers = await asyncio.gather(*pending)
        assert_answers(answers, [runtime.predict_records(rows(i)) for i in range(7)])
        assert batcher.closed and batcher.queue_depth == 0

    asyncio.run(main())


def test_close_soon_from_another_thread_drains(runtime: ModelRuntime) -> None:
    gated = GatedRuntime(runtime)
    gated.gate.clear()

    async def main() -> None:
        batcher = DynamicBatcher(gated, max_wait_ms=0)  # type: ignore[arg-type]
        pending = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
        await until(lambda: batcher.in_flight > 0)
        closer = threading.Thread(target=batcher.close_soon)
        closer.start()
        closer.join()
        await until(lambda: batcher.closed)
        gated.gate.set()
        answers = await asyncio.gather(*pending)
        assert_answers(answers, [runtime.predict_records(rows(i)) for i in range(3)])

    asyncio.run(main())


def test_a_caller_that_gave_up_is_skipped(runtime: ModelRuntime) -> None:
    gated = GatedRuntime(runtime)
    gated.gate.clear()

    async def main() -> None:
        batcher = DynamicBatcher(gated, max_wait_ms=0)  # type: ignore[arg-type]
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await until(lambda: batcher.in_flight == 1)
        gone = asyncio.ensure_future(batcher.submit(rows(1)))
        kept = asyncio.ensure_future(batcher.submit(rows(2)))
        await until(lambda: batcher.queue_depth == 2)
        gone.cancel()
        gated.gate.set()
        assert_answers([await kept], [runtime.predict_records(rows(2))])
        await first
        assert gated.batches[-1] == [1]  # only the request still waited for
        await batcher.aclose()

    asyncio.run(main())


def test_submit_columns_and_immediate_dispatch(runtime: ModelRuntime) -> None:
    async def main() -> None:
        batcher = DynamicBatcher(runtime, max_wait_ms=0)
        answer = await batcher.submit_columns({"a": [0.5, -1.0], "b": [1.0, 2.0]})
        expected = runtime.predict_records([{"a": 0.5, "b": 1.0}, {"a": -1.0, "b": 2.0}])
        assert_answers([answer], [expected])
        await batcher.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, r"max_batch_size must be at least 1; got 0"),
        ({"max_wait_ms": -1}, r"max_wait_ms must be 0 or more; got -1"),
        ({"max_queue": 0}, r"max_queue must be at least 1; got 0"),
    ],
)
def test_settings_are_checked(runtime: ModelRuntime, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        DynamicBatcher(runtime, **kwargs)
