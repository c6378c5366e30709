"""Following a stream into a dataset, and the exactly-once promise under crashes.

The restart tests run the consumer in a subprocess on the test's store and SIGKILL it at
random moments and at each step of a batch (read, written, published, inside the commit),
then check that the dataset holds every produced sequence number exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis

from modelworks.core.auth import Principal, local_principal
from modelworks.core.config import Settings
from modelworks.core.errors import Conflict, NotFound, ServiceUnavailable
from modelworks.core.store import Store
from modelworks.data.schemas import IngestResult
from modelworks.data.service import DataService
from modelworks.data.sources.streams import NatsStreamSource, RedisStreamSource
from modelworks.data.stream_consumer import ConsumeStats, consume

PROJECT = "default"


@pytest.fixture
def service(store: Store) -> DataService:
    return DataService(store)


@pytest.fixture
def principal() -> Principal:
    return local_principal()


@pytest.fixture
def rstream(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url)
    key = f"mwtest:consume:{uuid.uuid4().hex}"
    yield client, key
    client.delete(key)
    client.close()


def produce_redis(client: redis.Redis, key: str, numbers: range) -> None:
    pipe = client.pipeline()
    for n in numbers:
        pipe.xadd(key, {"data": json.dumps({"n": n, "payload": f"message {n}"})})
    pipe.execute()


async def _js(url: str, fn: Callable[[Any], Any]) -> Any:
    import nats

    nc = await nats.connect(url)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def produce_nats(url: str, subject: str, numbers: range) -> None:
    async def go(j: Any) -> None:
        for n in numbers:
            await j.publish(subject, json.dumps({"n": n, "payload": f"message {n}"}).encode())

    asyncio.run(_js(url, go))


@pytest.fixture
def nstream(nats_url: str) -> Iterator[str]:
    name = f"mwtest_{uuid.uuid4().hex[:12]}"
    asyncio.run(_js(nats_url, lambda j: j.add_stream(name=name, subjects=[f"{name}.>"])))
    yield name
    asyncio.run(_js(nats_url, lambda j: j.delete_stream(name)))


def numbers_in(service: DataService, principal: Principal, name: str) -> list[int]:
    """The ``n`` column of the dataset's latest version, in read order."""
    version, paths = service.read_paths(principal, PROJECT, name)
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT n FROM read_parquet($paths, union_by_name = true)", {"paths": paths}
        ).fetchall()
    assert version.row_count == len(rows)
    return [int(r[0]) for r in rows]


def version_count(service: DataService, principal: Principal, name: str) -> int:
    try:
        return service.get_dataset(principal, PROJECT, name).version_count
    except NotFound:
        return 0


# ---- the loop, in process --------------------------------------------------------------------


@pytest.mark.redis
def test_consume_appends_micro_batches_until_idle(
    service: DataService, principal: Principal, rstream: tuple[redis.Redis, str], redis_url: str
) -> None:
    client, key = rstream
    produce_redis(client, key, range(1, 26))
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data", max_messages=10)
    seen: list[IngestResult] = []
    stats = consume(
        service, principal, PROJECT, "events", src, interval=0.01, until_idle=True,
        on_batch=seen.append,
    )  # fmt: skip
    assert (stats.batches, stats.rows, stats.polls, stats.stopped) == (3, 25, 4, "idle")
    assert [(r.version.version, r.rows) for r in seen if r.version] == [(1, 10), (2, 10), (3, 5)]
    assert numbers_in(service, principal, "events") == list(range(1, 26))
    # A restart goes on from the stored position.
    produce_redis(client, key, range(26, 31))
    stats = consume(service, principal, PROJECT, "events", src, interval=0.01, until_idle=True)
    assert (stats.batches, stats.rows, stats.last_version) == (1, 5, 4)
    assert numbers_in(service, principal, "events") == list(range(1, 31))
    v = service.get_version(principal, PROJECT, "events@4")
    assert (v.mode, v.parent_version, v.source["kind"]) == ("append", 3, "redis_stream")


@pytest.mark.redis
def test_consume_stops_after_max_batches(
    service: DataService, principal: Principal, rstream: tuple[redis.Redis, str], redis_url: str
) -> None:
    client, key = rstream
    produce_redis(client, key, range(1, 31))
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data", max_messages=10)
    stats = consume(service, principal, PROJECT, "ev", src, interval=0.01, max_batches=2)
    assert (stats.batches, stats.rows, stats.stopped) == (2, 20, "max_batches")
    assert numbers_in(service, principal, "ev") == list(range(1, 21))


def test_consume_follows_until_the_stop_event(
    service: DataService, principal: Principal, nstream: str, nats_url: str
) -> None:
    src = NatsStreamSource(url=nats_url, stream=nstream, max_messages=100)
    stop = threading.Event()
    batches: list[int] = []
    out: list[ConsumeStats] = []

    def on_batch(result: IngestResult) -> None:
        batches.append(result.rows)

    def follow() -> None:
        out.append(
            consume(
                service, principal, PROJECT, "follow", src, interval=0.05, stop=stop,
                on_batch=on_batch,
            )
        )  # fmt: skip

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        produce_nats(nats_url, f"{nstream}.a", range(1, 6))
        deadline = time.monotonic() + 20
        while sum(batches) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        produce_nats(nats_url, f"{nstream}.b", range(6, 9))
        while sum(batches) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert out[0].stopped == "stop"
    assert out[0].rows == 8
    assert numbers_in(service, principal, "follow") == list(range(1, 9))


def test_consume_unreachable_broker_at_start_is_an_error(
    service: DataService, principal: Principal
) -> None:
    src = NatsStreamSource(url="nats://127.0.0.1:1", stream="s", timeout=1)
    with pytest.raises(ServiceUnavailable, match=r"Cannot connect to NATS at 127\.0\.0\.1:1\b"):
        consume(service, principal, PROJECT, "x", src, interval=0.01)


class FakeService:
    """Answers ``ingest`` from a script: results, or errors to raise."""

    def __init__(self, script: list[IngestResult | Exception], stop: threading.Event) -> None:
        self.script = script
        self.stop = stop
        self.calls = 0

    def get_dataset(self, *args: Any) -> Any:
        return type("DatasetOut", (), {"deleted": False})()

    def ingest(self, *args: Any, **kwargs: Any) -> IngestResult:
        assert kwargs["mode"] == "append"
        self.calls += 1
        step = self.script.pop(0)
        if not self.script:
            self.stop.set()
        if isinstance(step, Exception):
            raise step
        return step


def test_consume_retries_conflicts_and_outages_after_the_first_poll(
    principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelworks.data.stream_consumer as sc

    waits: list[float | None] = []
    stop = threading.Event()

    def no_wait(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return stop.is_set()

    monkeypatch.setattr(stop, "wait", no_wait)
    nothing = IngestResult(version=None, rows=0)
    fake = FakeService(
        [
            nothing,
            ServiceUnavailable("down"),
            ServiceUnavailable("still down"),
            Conflict("someone else committed"),
            nothing,
        ],
        stop,
    )
    src = RedisStreamSource(stream="s")
    stats = sc.consume(fake, principal, PROJECT, "d", src, interval=0.5, stop=stop)  # type: ignore[arg-type]
    assert fake.calls == 5
    assert (stats.polls, stats.retries, stats.stopped) == (2, 3, "stop")
    # interval after the empty poll, a growing pause for the outage, a short one for the conflict
    assert waits[:3] == [0.5, 1.0, 2.0]
    assert waits[3] is not None and 0.01 <= waits[3] <= 0.2
    assert waits[4:] == [0.5]


@pytest.mark.redis
def test_consume_gives_up_on_a_lasting_conflict(
    service: DataService, principal: Principal, rstream: tuple[redis.Redis, str], redis_url: str
) -> None:
    client, key = rstream
    produce_redis(client, key, range(1, 4))
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data")
    assert consume(service, principal, PROJECT, "gone", src, until_idle=True).rows == 3
    service.delete_dataset(principal, PROJECT, "gone")
    produce_redis(client, key, range(4, 6))
    with pytest.raises(Conflict, match="was deleted"):
        consume(service, principal, PROJECT, "gone", src, interval=0.01)


@pytest.mark.redis
@pytest.mark.slow
def test_two_consumers_of_one_stream_store_each_message_once(
    service: DataService, principal: Principal, rstream: tuple[redis.Redis, str], redis_url: str
) -> None:
    client, key = rstream
    produce_redis(client, key, range(1, 301))
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data", max_messages=15)
    results: list[ConsumeStats] = []

    def run() -> None:
        results.append(
            consume(service, principal, PROJECT, "shared", src, interval=0.01, until_idle=True)
        )

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # One may have gone idle while the other still had a batch in flight: drain the rest.
    assert len(results) == 2, "a consumer thread failed"
    results.append(consume(service, principal, PROJECT, "shared", src, until_idle=True))
    assert sum(r.rows for r in results) == 300
    assert numbers_in(service, principal, "shared") == list(range(1, 301))


# ---- crash and restart, in a subprocess -----------------------------------------------------

CONSUMER_SCRIPT = r'''
"""Test-only consumer: stream_consumer.consume on MODELWORKS_HOME's store, with a pause
point the test can kill it at (MW_TEST_HOOK: scan | write | publish | commit)."""
import json
import os
import sys
import time
from pathlib import Path

from modelworks.core import audit
from modelworks.core.auth import local_principal
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.service import DataService
from modelworks.data.sources import streams
from modelworks.data.stream_consumer import consume

spec = json.loads(os.environ["MW_TEST_SOURCE"])
kinds = {"redis_stream": streams.RedisStreamSource, "nats_jetstream": streams.NatsStreamSource}
cls = kinds[spec["kind"]]
hook = os.environ.get("MW_TEST_HOOK", "")
let_through = int(os.environ.get("MW_TEST_HOOK_AFTER", "0"))
pause_s = float(os.environ.get("MW_TEST_HOOK_PAUSE", "120"))
marker = Path(os.environ["MW_TEST_MARKER"])
reached = {"n": 0}


def pause(point):
    if point != hook:
        return
    reached["n"] += 1
    if reached["n"] > let_through:
        marker.write_text(point)
        time.sleep(pause_s)  # the test kills (or interrupts) us here


def wrap(owner, attr, before=None, after=None):
    original = getattr(owner, attr)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        if after is not None:
            after(args, result)
        return result

    setattr(owner, attr, wrapped)


# After the messages were read, before anything is written.
wrap(cls, "scan", after=lambda a, scan: scan.relation is not None and pause("scan"))
# Parquet parts written in the staging folder, not yet in the artifact store.
wrap(storage, "write_parts", after=lambda a, r: pause("write"))
# Parts adopted into the artifact store, no version row yet.
wrap(storage, "publish_parts", after=lambda a, r: pause("publish"))
# Inside the commit transaction: version row and cursor flushed, not committed.
wrap(audit, "record", after=lambda a, r: a[2] == "dataset.version.create" and pause("commit"))

source = cls.model_validate(spec)
store = Store()
Path(os.environ["MW_TEST_READY"]).write_text("ready")
stats = consume(
    DataService(store), local_principal(), "default", os.environ["MW_TEST_DATASET"], source,
    interval=0.05, until_idle=os.environ.get("MW_TEST_UNTIL_IDLE") == "1",
)
print(json.dumps({"batches": stats.batches, "rows": stats.rows, "stopped": stats.stopped}))
'''


class ConsumerProcess:
    """Starts the consumer script on the test's store; knows its marker files."""

    def __init__(self, tmp_path: Path, spec: dict[str, Any], dataset: str) -> None:
        self.dir = tmp_path / "consumer"
        self.dir.mkdir(exist_ok=True)
        self.script = self.dir / "consumer.py"
        self.script.write_text(CONSUMER_SCRIPT)
        self.spec = spec
        self.dataset = dataset
        self.runs = 0

    def start(
        self,
        *,
        hook: str = "",
        let_through: int = 0,
        pause_s: float = 120,
        until_idle: bool = False,
        max_messages: int | None = None,
    ) -> tuple[subprocess.Popen[str], Path, Path]:
        self.runs += 1
        marker = self.dir / f"marker{self.runs}"
        ready = self.dir / f"ready{self.runs}"
        env = {
            **os.environ,  # MODELWORKS_HOME: the test's store
            "MW_TEST_SOURCE": json.dumps(
                {**self.spec, "max_messages": max_messages or self.spec["max_messages"]}
            ),
            "MW_TEST_DATASET": self.dataset,
            "MW_TEST_HOOK": hook,
            "MW_TEST_HOOK_AFTER": str(let_through),
            "MW_TEST_HOOK_PAUSE": str(pause_s),
            "MW_TEST_MARKER": str(marker),
            "MW_TEST_READY": str(ready),
            "MW_TEST_UNTIL_IDLE": "1" if until_idle else "0",
        }
        proc = subprocess.Popen(
            [sys.executable, str(self.script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return proc, marker, ready


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the consumer exited with {proc.returncode} before {path.name}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the consumer did not reach {path.name} within {timeout} s")
        time.sleep(0.01)


def kill(proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, "the consumer ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def crash_and_recover(
    tmp_path: Path,
    settings: Settings,
    spec: dict[str, Any],
    produce: Callable[[range], None],
    *,
    seed: int,
) -> None:
    """Kill the consumer at every step of a batch and at random moments; then check that
    the dataset holds 1..N exactly once, in order."""
    store = Store(settings)  # migrated before any consumer starts
    service = DataService(store)
    principal = local_principal()
    dataset = "crash-" + uuid.uuid4().hex[:8]
    consumer = ConsumerProcess(tmp_path, spec, dataset)
    rng = random.Random(seed)
    produced = 0

    def produce_more(count: int) -> None:
        nonlocal produced
        produce(range(produced + 1, produced + count + 1))
        produced += count

    try:
        produce_more(250)
        # Deterministic kills: let one batch commit, then kill the next one at this step.
        for point in ("scan", "write", "publish", "commit"):
            before = version_count(service, principal, dataset)
            proc, marker, _ = consumer.start(hook=point, let_through=1)
            wait_for(marker, proc)
            kill(proc)
            # The batch killed in flight left no version behind, only the one before it.
            assert version_count(service, principal, dataset) == before + 1, point
            produce_more(50)
        # Kills at random moments, with messages still arriving.
        for _ in range(2):
            proc, _, ready = consumer.start()
            wait_for(ready, proc)
            time.sleep(rng.uniform(0.05, 0.6))
            kill(proc)
            produce_more(50)
        # A run left alone drains the stream and stops. Its bigger batches keep the stored
        # position: the batch size is not part of the source's identity.
        proc, _, _ = consumer.start(until_idle=True, max_messages=1000)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["stopped"] == "idle"
        numbers = numbers_in(service, principal, dataset)
        assert len(numbers) == produced == 550
        assert numbers == list(range(1, produced + 1))  # none lost, none twice, in order
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.redis
def test_redis_consumer_killed_mid_batch_loses_and_repeats_nothing(
    tmp_path: Path, settings: Settings, rstream: tuple[redis.Redis, str], redis_url: str
) -> None:
    client, key = rstream
    spec = {
        "kind": "redis_stream", "url": redis_url, "stream": key, "json_field": "data",
        "max_messages": 40,
    }  # fmt: skip
    crash_and_recover(
        tmp_path, settings, spec, lambda ns: produce_redis(client, key, ns), seed=20240611
    )


@pytest.mark.slow
def test_nats_consumer_killed_mid_batch_loses_and_repeats_nothing(
    tmp_path: Path, settings: Settings, nstream: str, nats_url: str
) -> None:
    spec = {
        "kind": "nats_jetstream", "url": nats_url, "stream": nstream,
        "subject": f"{nstream}.orders", "max_messages": 40,
    }  # fmt: skip

    def produce(ns: range) -> None:
        # Messages on another subject interleave: the filter and the stream sequence
        # positions must skip them without losing any of ours.
        produce_nats(nats_url, f"{nstream}.orders", ns)
        produce_nats(nats_url, f"{nstream}.noise", range(3))

    crash_and_recover(tmp_path, settings, spec, produce, seed=4222)


@pytest.mark.redis
@pytest.mark.slow
def test_ctrl_c_finishes_the_batch_in_flight_then_exits(
    tmp_path: Path, settings: Settings, rstream: tuple[redis.Redis, str], redis_url: str
) -> None:
    client, key = rstream
    produce_redis(client, key, range(1, 101))
    spec = {"kind": "redis_stream", "url": redis_url, "stream": key, "json_field": "data",
            "max_messages": 30}  # fmt: skip
    store = Store(settings)
    try:
        consumer = ConsumerProcess(tmp_path, spec, "interrupted")
        # Pause 1.5 s after reading the second batch; Ctrl-C arrives during the pause.
        proc, marker, _ = consumer.start(hook="scan", let_through=1, pause_s=1.5)
        wait_for(marker, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {
            "batches": 2, "rows": 60, "stopped": "interrupt",
        }  # fmt: skip
        service = DataService(store)
        assert numbers_in(service, local_principal(), "interrupted") == list(range(1, 61))
    finally:
        store.close()
