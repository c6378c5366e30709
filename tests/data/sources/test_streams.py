"""Stream sources against the real Redis and NATS JetStream servers.

Each test scans with a ScanContext over a real DuckDB connection, writes what it returns
with ``storage.write_parts`` (as the dataset service does) and checks the Parquet rows and
the position it hands back.
"""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis
from pydantic import ValidationError

from modelworks.core.config import Settings
from modelworks.core.errors import CorruptData, InvalidInput, NotFound, ServiceUnavailable
from modelworks.data import storage
from modelworks.data.schemas import BadRows
from modelworks.data.sources.base import Scan, ScanContext, source_from_spec
from modelworks.data.sources.streams import NatsStreamSource, RedisStreamSource

pytestmark = pytest.mark.redis

MakeCtx = Callable[..., ScanContext]


@pytest.fixture
def make_ctx(settings: Settings, tmp_path: Path) -> Iterator[MakeCtx]:
    """``make_ctx(cursor=..., bad_rows=...)``: a fresh ScanContext as the service builds one."""
    cons = []

    def make(cursor: dict[str, Any] | None = None, bad_rows: BadRows = "fail") -> ScanContext:
        con = storage.connect(settings)
        cons.append(con)
        workdir = tmp_path / f"scan{len(cons)}"
        workdir.mkdir()
        return ScanContext(
            con=con, settings=settings, workdir=workdir, cursor=cursor, bad_rows=bad_rows
        )

    yield make
    for con in cons:
        con.close()


def written(ctx: ScanContext, scan: Scan) -> list[dict[str, Any]]:
    """Write the scan like the dataset service does and read the Parquet rows back."""
    assert scan.relation is not None
    parts = storage.write_parts(ctx.con, scan.relation, ctx.workdir / "parts")
    assert parts, "no Parquet part written"
    return [row for p in parts for row in pq.read_table(p).to_pylist()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parquet_types(ctx: ScanContext) -> dict[str, str]:
    schema = storage.arrow_schema(sorted((ctx.workdir / "parts").glob("*.parquet")))
    return {f.name: str(f.type) for f in schema}


# ---- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def rstream(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a stream key no other test uses; deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    key = f"mwtest:stream:{uuid.uuid4().hex}"
    yield client, key
    client.delete(key)
    client.close()


def xadd(client: redis.Redis, key: str, fields: dict[str, str], id: str = "*") -> str:
    """XADD, returning the entry id as text."""
    entry_id = client.xadd(key, fields, id=id)  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def xadd_json(client: redis.Redis, key: str, payloads: list[Any], field: str = "data") -> list[str]:
    pipe = client.pipeline()
    for p in payloads:
        pipe.xadd(key, {field: json.dumps(p), "producer": "test"})
    return [i.decode() for i in pipe.execute()]


def test_redis_fields_become_string_columns(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    ids = [
        xadd(client, key, {"user": "ann", "amount": "12.5"}, id="1700000000123-0"),
        xadd(client, key, {"user": "bob", "city": "Oslo"}, id="1700000000456-7"),
    ]
    ctx = make_ctx()
    scan = RedisStreamSource(url=redis_url, stream=key).scan(ctx)
    assert scan.cursor == {"last_id": "1700000000456-7"}
    rows = written(ctx, scan)
    assert [r["_id"] for r in rows] == ids
    assert rows[0]["_ts"] == datetime(2023, 11, 14, 22, 13, 20, 123000)
    assert rows == [
        {"_id": "1700000000123-0", "_ts": rows[0]["_ts"], "user": "ann", "amount": "12.5",
         "city": None},
        {"_id": "1700000000456-7", "_ts": datetime(2023, 11, 14, 22, 13, 20, 456000),
         "user": "bob", "amount": None, "city": "Oslo"},
    ]  # fmt: skip
    # Fields stay text: a producer's "12.5" must not become a double in one batch only.
    assert parquet_types(ctx) == {
        "_id": "string", "_ts": "timestamp[us]", "user": "string", "amount": "string",
        "city": "string",
    }  # fmt: skip


def test_redis_json_field_is_flattened_into_typed_columns(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    xadd_json(
        client,
        key,
        [
            {"n": 1, "price": 2.5, "ok": True, "tags": ["a", "b"], "geo": {"lat": 59.9}},
            {"n": 2, "price": 3, "ok": False, "tags": [], "geo": {"lat": 60.1}, "note": "x"},
        ],
    )
    ctx = make_ctx()
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data", timestamps=False)
    rows = written(ctx, src.scan(ctx))
    assert [{k: v for k, v in r.items() if k != "_id"} for r in rows] == [
        {"n": 1, "price": 2.5, "ok": True, "tags": ["a", "b"], "geo": {"lat": 59.9}, "note": None},
        {"n": 2, "price": 3.0, "ok": False, "tags": [], "geo": {"lat": 60.1}, "note": "x"},
    ]
    types = parquet_types(ctx)
    assert types["n"] == "int64"
    assert types["price"] == "double"
    assert types["geo"] == "struct<lat: double>"
    assert list(types)[:2] == ["_id", "n"]  # the added column comes first; no _ts when off
    # Other fields of the entry ("producer") are not columns in json_field mode.
    assert "producer" not in types


def test_redis_reads_strictly_after_the_position_in_batches(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    ids = xadd_json(client, key, [{"n": i} for i in range(1, 26)])
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data", max_messages=10)
    seen: list[int] = []
    cursors = []
    cursor = None
    while True:
        ctx = make_ctx(cursor=cursor)
        scan = src.scan(ctx)
        if scan.relation is None:
            assert scan.cursor is None
            break
        seen += [r["n"] for r in written(ctx, scan)]
        cursor = scan.cursor
        cursors.append(cursor)
    assert seen == list(range(1, 26))
    assert cursors == [{"last_id": ids[9]}, {"last_id": ids[19]}, {"last_id": ids[24]}]
    # A position from the middle: the next entry is the first one after it, never it.
    ctx = make_ctx(cursor={"last_id": ids[16]})
    assert [r["n"] for r in written(ctx, src.scan(ctx))] == list(range(18, 26))


def test_redis_empty_or_missing_stream_gives_nothing(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    src = RedisStreamSource(url=redis_url, stream=key)
    scan = src.scan(make_ctx())  # the key does not exist yet
    assert (scan.relation, scan.cursor) == (None, None)
    last = xadd(client, key, {"a": "1"})
    scan = src.scan(make_ctx(cursor={"last_id": last}))
    assert (scan.relation, scan.cursor) == (None, None)


def test_redis_block_ms_waits_for_the_first_message(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    timer = threading.Timer(0.3, lambda: client.xadd(key, {"late": "yes"}))
    timer.start()
    started = time.monotonic()
    ctx = make_ctx()
    scan = RedisStreamSource(url=redis_url, stream=key, block_ms=5000).scan(ctx)
    waited = time.monotonic() - started
    timer.join()
    assert [r["late"] for r in written(ctx, scan)] == ["yes"]
    assert 0.2 < waited < 4.0


def test_redis_start_latest_skips_what_was_there(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    xadd_json(client, key, [{"n": 1}, {"n": 2}])
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data", start="latest")
    assert src.scan(make_ctx()).relation is None
    timer = threading.Timer(0.2, lambda: xadd_json(client, key, [{"n": 3}]))
    timer.start()
    ctx = make_ctx()
    scan = src.model_copy(update={"block_ms": 5000}).scan(ctx)
    timer.join()
    assert [r["n"] for r in written(ctx, scan)] == [3]
    # Once a position is stored, start no longer matters: "earliest" goes on from it.
    ctx = make_ctx(cursor=scan.cursor)
    assert src.model_copy(update={"start": "earliest"}).scan(ctx).relation is None


def test_redis_bad_message_fails_and_names_it(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    xadd_json(client, key, [{"n": 1}])
    bad = xadd(client, key, {"data": "{not json"})
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data")
    with pytest.raises(InvalidInput) as err:
        src.scan(make_ctx())
    assert f"Message {bad} in Redis stream {key!r} cannot be read" in err.value.detail
    assert "not valid JSON" in err.value.detail
    assert "bad_rows='quarantine'" in err.value.detail


def test_redis_quarantine_sets_bad_messages_aside_and_moves_on(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    first = xadd_json(client, key, [{"n": 1}])[0]
    not_json = xadd(client, key, {"data": "oops"})
    array = xadd(client, key, {"data": "[1, 2]"})
    no_field = xadd(client, key, {"other": "x"})
    clash = xadd(client, key, {"data": json.dumps({"_id": "mine", "n": 9})})
    last = xadd_json(client, key, [{"n": 2}])[0]
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data")
    ctx = make_ctx(bad_rows="quarantine")
    scan = src.scan(ctx)
    assert [(r["_id"], r["n"]) for r in written(ctx, scan)] == [(first, 1), (last, 2)]
    assert scan.cursor == {"last_id": last}
    assert scan.rejects is not None
    rejects = scan.rejects()
    assert rejects is not None and rejects.count == 4 and rejects.side_file is not None
    with rejects.side_file.open(newline="") as f:
        side = list(csv.DictReader(f))
    assert [r["position"] for r in side] == [not_json, array, no_field, clash]
    assert [r["raw"] for r in side[:3]] == ["oops", "[1, 2]", "other=x"]
    assert "not valid JSON" in side[0]["error"]
    assert "JSON list, not an object" in side[1]["error"]
    assert "no field 'data'" in side[2]["error"]
    assert "'_id'" in side[3]["error"] and "clash" in side[3]["error"]
    assert [e["position"] for e in rejects.examples] == [not_json, array, no_field, clash]


def test_redis_only_bad_messages_in_a_full_batch_reads_on(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    """A batch of only bad messages could store no position; the scan must read past it."""
    client, key = rstream
    for _ in range(5):
        client.xadd(key, {"data": "bad"})
    good = xadd_json(client, key, [{"n": 7}])[0]
    src = RedisStreamSource(url=redis_url, stream=key, json_field="data", max_messages=2)
    ctx = make_ctx(bad_rows="quarantine")
    scan = src.scan(ctx)
    assert [r["n"] for r in written(ctx, scan)] == [7]
    assert scan.cursor == {"last_id": good}
    assert scan.rejects is not None
    rejects = scan.rejects()
    assert rejects is not None and rejects.count == 5
    # Only bad messages up to the end: nothing to store, and it says so.
    client.xadd(key, {"data": "bad again"})
    scan = src.scan(make_ctx(cursor={"last_id": good}, bad_rows="quarantine"))
    assert scan.relation is None
    assert "1 bad message(s) and no good one" in scan.message


def test_redis_declared_columns_give_every_batch_the_same_schema(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    ids = xadd_json(client, key, [{"n": 1, "price": 3, "extra": "dropped"}, {"n": 2}])
    src = RedisStreamSource(
        url=redis_url, stream=key, json_field="data",
        columns={"n": "BIGINT", "price": "DOUBLE", "day": "DATE"},
    )  # fmt: skip
    ctx = make_ctx()
    rows = written(ctx, src.scan(ctx))
    assert [(r["n"], r["price"], r["day"]) for r in rows] == [(1, 3.0, None), (2, None, None)]
    assert parquet_types(ctx) == {
        "_id": "string", "_ts": "timestamp[us]", "n": "int64", "price": "double",
        "day": "date32[day]",
    }  # fmt: skip
    with pytest.raises(InvalidInput, match=r"columns\['n'\]: unknown type 'BIGNUMBER'"):
        src.model_copy(update={"columns": {"n": "BIGNUMBER"}}).scan(make_ctx())
    with pytest.raises(ValidationError, match="_id are added by the source itself"):
        RedisStreamSource(url=redis_url, stream=key, columns={"_id": "BIGINT"})
    # A value the declared type cannot hold is reported with the message it came from.
    bad = xadd_json(client, key, [{"n": "many"}])[0]
    with pytest.raises(InvalidInput) as err:
        src.scan(make_ctx(cursor={"last_id": ids[-1]}))
    assert f"message {bad}" in err.value.detail
    assert "columns" in err.value.detail


def test_redis_url_secret_is_expanded_only_when_reading(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    client, key = rstream
    hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    monkeypatch.setenv("MODELWORKS_SECRET_MW_TEST_REDIS_HOST", hostport)
    client.xadd(key, {"a": "1"})
    src = RedisStreamSource(url="redis://${secret:MW_TEST_REDIS_HOST}/0", stream=key)
    ctx = make_ctx()
    assert [r["a"] for r in written(ctx, src.scan(ctx))] == ["1"]
    assert src.describe()["url"] == "redis://${secret:MW_TEST_REDIS_HOST}/0"


def test_redis_literal_password_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"\$\{secret:NAME\}"):
        RedisStreamSource(url="redis://:hunter2@127.0.0.1:6379/0", stream="s")
    with pytest.raises(ValidationError, match="store it as a secret"):
        RedisStreamSource.model_validate({"url": "redis://u:pw@h:6379", "stream": "s"})
    ok = RedisStreamSource(url="redis://:${secret:REDIS_PW}@127.0.0.1:6379/0", stream="s")
    assert "${secret:REDIS_PW}" in ok.describe()["url"]


def test_redis_unreachable_names_server_not_secret(
    make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELWORKS_SECRET_MW_TEST_PW", "s3cr3t-value")
    port = free_port()
    src = RedisStreamSource(url=f"redis://:${{secret:MW_TEST_PW}}@127.0.0.1:{port}/0", stream="s")
    with pytest.raises(ServiceUnavailable) as err:
        src.scan(make_ctx())
    assert f"Redis at 127.0.0.1:{port}" in err.value.detail
    assert "Check that the server runs" in err.value.detail
    assert "s3cr3t-value" not in err.value.detail


def test_redis_key_of_another_type_is_invalid(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    client.set(key, "a string")
    with pytest.raises(InvalidInput, match="is not a stream"):
        RedisStreamSource(url=redis_url, stream=key).scan(make_ctx())


def test_redis_damaged_position_is_corrupt_data(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    _, key = rstream
    with pytest.raises(CorruptData, match="not a Redis stream id"):
        RedisStreamSource(url=redis_url, stream=key).scan(make_ctx(cursor={"last_id": "x"}))


def test_redis_deleted_entries_are_reported(
    rstream: tuple[redis.Redis, str], redis_url: str, make_ctx: MakeCtx
) -> None:
    client, key = rstream
    ids = xadd_json(client, key, [{"n": i} for i in range(1, 11)])
    client.xdel(key, *ids[:7])  # entries 1..7 go; we had read up to 2
    ctx = make_ctx(cursor={"last_id": ids[1]})
    scan = RedisStreamSource(url=redis_url, stream=key, json_field="data").scan(ctx)
    assert [r["n"] for r in written(ctx, scan)] == [8, 9, 10]
    assert f"Entries after {ids[1]} (the newest one {ids[6]}) were deleted" in scan.message
    ctx = make_ctx(cursor=scan.cursor)  # past the deleted ones: no warning any more
    assert RedisStreamSource(url=redis_url, stream=key).scan(ctx).message == ""


def test_identity_ignores_batch_knobs_and_start() -> None:
    base = RedisStreamSource(url="redis://h:6379/0", stream="events")
    same = RedisStreamSource(
        url="redis://h:6379/0", stream="events", max_messages=5, block_ms=100, start="latest",
        json_field="data", columns={"n": "BIGINT"}, timestamps=False,
    )  # fmt: skip
    assert base.source_key == same.source_key
    assert base.identity() == {
        "kind": "redis_stream",
        "url": "redis://h:6379/0",
        "stream": "events",
    }
    assert RedisStreamSource(url="redis://h:6379/0", stream="other").source_key != base.source_key
    assert RedisStreamSource(url="redis://h:6379/1", stream="events").source_key != base.source_key
    # The stored parameters keep everything, for lineage.
    assert same.describe()["max_messages"] == 5
    assert base.label() == "redis_stream events at h:6379"


def test_specs_build_stream_sources() -> None:
    for module_missing in ("files", "sql", "http"):
        pytest.importorskip(f"modelworks.data.sources.{module_missing}")
    src = source_from_spec({"kind": "redis_stream", "stream": "e", "max_messages": 5})
    assert isinstance(src, RedisStreamSource) and src.max_messages == 5
    nsrc = source_from_spec({"kind": "nats_jetstream", "stream": "E", "subject": "e.>"})
    assert isinstance(nsrc, NatsStreamSource) and nsrc.resumable
    with pytest.raises(InvalidInput, match="max_messages"):
        source_from_spec({"kind": "redis_stream", "stream": "e", "max_messages": 0})


# ---- NATS JetStream --------------------------------------------------------------------------


async def _js_call(url: str, fn: Callable[[Any], Any]) -> Any:
    import nats

    nc = await nats.connect(url)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def js(url: str, fn: Callable[[Any], Any]) -> Any:
    """Run ``await fn(jetstream_context)`` on a fresh connection."""
    return asyncio.run(_js_call(url, fn))


def publish(url: str, subject: str, payloads: list[bytes]) -> list[int]:
    """Publish and wait for each ack; returns the stream sequences."""

    async def go(j: Any) -> list[int]:
        return [(await j.publish(subject, p)).seq for p in payloads]

    return list(js(url, go))


@pytest.fixture
def nstream(nats_url: str) -> Iterator[str]:
    """A JetStream stream ``S`` with subjects ``S.>``, no other test uses; deleted afterwards."""
    name = f"mwtest_{uuid.uuid4().hex[:12]}"
    js(nats_url, lambda j: j.add_stream(name=name, subjects=[f"{name}.>"]))
    yield name
    js(nats_url, lambda j: j.delete_stream(name))


def consumers_of(url: str, stream: str) -> int:
    async def go(j: Any) -> int:
        return int((await j.stream_info(stream)).state.consumer_count)

    return int(js(url, go))


def test_nats_json_payloads_become_columns(nstream: str, nats_url: str, make_ctx: MakeCtx) -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    seqs = publish(
        nats_url,
        f"{nstream}.orders",
        [json.dumps({"n": i, "item": f"sku-{i}", "qty": i * 1.5}).encode() for i in (1, 2, 3)],
    )
    ctx = make_ctx()
    scan = NatsStreamSource(url=nats_url, stream=nstream).scan(ctx)
    assert scan.cursor == {"seq": seqs[-1]}
    rows = written(ctx, scan)
    assert [(r["_seq"], r["_subject"], r["n"], r["item"], r["qty"]) for r in rows] == [
        (1, f"{nstream}.orders", 1, "sku-1", 1.5),
        (2, f"{nstream}.orders", 2, "sku-2", 3.0),
        (3, f"{nstream}.orders", 3, "sku-3", 4.5),
    ]
    after = datetime.now(UTC).replace(tzinfo=None)
    assert all(before.replace(microsecond=0) <= r["_ts"] <= after for r in rows)
    assert list(parquet_types(ctx))[:3] == ["_seq", "_subject", "_ts"]
    assert consumers_of(nats_url, nstream) == 0  # the ephemeral consumer was deleted


def test_nats_reads_after_the_position_with_a_subject_filter(
    nstream: str, nats_url: str, make_ctx: MakeCtx
) -> None:
    for i in range(1, 13):
        publish(nats_url, f"{nstream}.{'even' if i % 2 == 0 else 'odd'}", [b'{"n": %d}' % i])
    src = NatsStreamSource(url=nats_url, stream=nstream, subject=f"{nstream}.even", max_messages=4)
    ctx = make_ctx()
    scan = src.scan(ctx)
    assert [r["n"] for r in written(ctx, scan)] == [2, 4, 6, 8]
    assert scan.cursor == {"seq": 8}  # the stream sequence, so odd messages between are skipped
    ctx = make_ctx(cursor=scan.cursor)
    scan = src.scan(ctx)
    assert [r["n"] for r in written(ctx, scan)] == [10, 12]
    assert scan.cursor == {"seq": 12}
    assert src.scan(make_ctx(cursor=scan.cursor)).relation is None
    # Newer messages, but all on other subjects: nothing new, and no waiting for it.
    publish(nats_url, f"{nstream}.odd", [b'{"n": 13}'])
    started = time.monotonic()
    assert src.scan(make_ctx(cursor=scan.cursor)).relation is None
    assert time.monotonic() - started < 2.0
    # Without the filter, the same stream in batches of 5 from sequence 9.
    every = NatsStreamSource(url=nats_url, stream=nstream, max_messages=5)
    ctx = make_ctx(cursor={"seq": 8})
    assert [r["n"] for r in written(ctx, every.scan(ctx))] == [9, 10, 11, 12, 13]


def test_nats_empty_stream_gives_nothing_fast(
    nstream: str, nats_url: str, make_ctx: MakeCtx
) -> None:
    started = time.monotonic()
    scan = NatsStreamSource(url=nats_url, stream=nstream).scan(make_ctx())
    assert (scan.relation, scan.cursor) == (None, None)
    assert time.monotonic() - started < 2.0


def test_nats_block_ms_waits_for_the_first_message(
    nstream: str, nats_url: str, make_ctx: MakeCtx
) -> None:
    timer = threading.Timer(0.3, lambda: publish(nats_url, f"{nstream}.x", [b'{"late": 1}']))
    timer.start()
    ctx = make_ctx()
    started = time.monotonic()
    scan = NatsStreamSource(url=nats_url, stream=nstream, block_ms=5000).scan(ctx)
    waited = time.monotonic() - started
    timer.join()
    assert [r["late"] for r in written(ctx, scan)] == [1]
    assert scan.cursor == {"seq": 1}
    assert waited < 4.0
    assert consumers_of(nats_url, nstream) == 0


def test_nats_start_latest(nstream: str, nats_url: str, make_ctx: MakeCtx) -> None:
    publish(nats_url, f"{nstream}.x", [b'{"n": 1}', b'{"n": 2}'])
    src = NatsStreamSource(url=nats_url, stream=nstream, start="latest")
    assert src.scan(make_ctx()).relation is None
    timer = threading.Timer(0.3, lambda: publish(nats_url, f"{nstream}.x", [b'{"n": 3}']))
    timer.start()
    ctx = make_ctx()
    scan = src.model_copy(update={"block_ms": 5000}).scan(ctx)
    timer.join()
    assert [r["n"] for r in written(ctx, scan)] == [3]


def test_nats_bad_payloads(nstream: str, nats_url: str, make_ctx: MakeCtx) -> None:
    publish(nats_url, f"{nstream}.x", [b'{"n": 1}', b"plain text", b'"a string"', b'{"n": 2}'])
    src = NatsStreamSource(url=nats_url, stream=nstream)
    with pytest.raises(InvalidInput, match=rf"Message 2 in NATS stream '{nstream}'"):
        src.scan(make_ctx())
    ctx = make_ctx(bad_rows="quarantine")
    scan = src.scan(ctx)
    assert [r["n"] for r in written(ctx, scan)] == [1, 2]
    assert scan.cursor == {"seq": 4}
    assert scan.rejects is not None
    rejects = scan.rejects()
    assert rejects is not None and rejects.count == 2
    assert [(e["position"], e["raw"]) for e in rejects.examples] == [
        ("2", "plain text"),
        ("3", '"a string"'),
    ]
    assert consumers_of(nats_url, nstream) == 0


def test_nats_messages_removed_by_limits_are_reported(nats_url: str, make_ctx: MakeCtx) -> None:
    name = f"mwtest_{uuid.uuid4().hex[:12]}"
    js(nats_url, lambda j: j.add_stream(name=name, subjects=[f"{name}.>"], max_msgs=3))
    try:
        publish(nats_url, f"{name}.x", [b'{"n": %d}' % i for i in range(1, 9)])
        ctx = make_ctx(cursor={"seq": 2})
        scan = NatsStreamSource(url=nats_url, stream=name).scan(ctx)
        assert [r["n"] for r in written(ctx, scan)] == [6, 7, 8]
        assert "Messages 3 to 5 were removed from the stream by its limits" in scan.message
    finally:
        js(nats_url, lambda j: j.delete_stream(name))


def test_nats_missing_stream_is_not_found(nats_url: str, make_ctx: MakeCtx) -> None:
    with pytest.raises(NotFound, match="has no stream 'mwtest_absent'"):
        NatsStreamSource(url=nats_url, stream="mwtest_absent").scan(make_ctx())


def test_nats_connection_refused_names_the_server(make_ctx: MakeCtx) -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        NatsStreamSource(url=f"nats://127.0.0.1:{port}", stream="s", timeout=2).scan(make_ctx())
    assert f"Cannot connect to NATS at 127.0.0.1:{port}" in err.value.detail
    assert "Check that nats-server runs there" in err.value.detail
    assert time.monotonic() - started < 10


def test_nats_scan_from_threads_and_running_loops_leaks_nothing(
    nstream: str, nats_url: str, make_ctx: MakeCtx
) -> None:
    """FastAPI calls sync endpoints from a threadpool; notebooks have a running loop."""
    publish(nats_url, f"{nstream}.x", [b'{"n": %d}' % i for i in range(1, 4)])
    src = NatsStreamSource(url=nats_url, stream=nstream)
    threads_before = threading.active_count()

    def in_thread() -> list[int]:
        ctx = make_ctx()
        return [r["n"] for r in written(ctx, src.scan(ctx))]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: in_thread(), range(4)))
    assert results == [[1, 2, 3]] * 4

    async def inside_a_loop() -> Scan:
        return src.scan(make_ctx())

    scan = asyncio.run(inside_a_loop())
    assert scan.cursor == {"seq": 3}
    assert threading.active_count() == threads_before
    assert consumers_of(nats_url, nstream) == 0


def test_nats_identity_and_label() -> None:
    a = NatsStreamSource(url="nats://n1:4222", stream="ORDERS", subject="orders.>")
    b = NatsStreamSource(
        url="nats://n1:4222", stream="ORDERS", subject="orders.>", max_messages=10,
        block_ms=50, timeout=1, start="latest",
    )  # fmt: skip
    assert a.source_key == b.source_key
    assert a.source_key != NatsStreamSource(url="nats://n1:4222", stream="ORDERS").source_key
    assert a.label() == "nats_jetstream ORDERS at n1:4222"
    with pytest.raises(ValidationError, match="password"):
        NatsStreamSource(url="nats://u:pw@n1:4222", stream="ORDERS")
