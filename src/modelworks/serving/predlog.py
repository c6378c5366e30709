"""The prediction log: every prediction a deployment serves, kept as hourly Parquet files.

Serving must not wait for the log. :meth:`PredictionLog.append` only puts the record objects
on an in-memory queue (no serialisation, no I/O: about a microsecond for one record); a
background thread takes everything queued every ``flush_seconds`` (sooner once
``flush_rows`` are waiting), turns it into one zstd Parquet file per (deployment, UTC hour),
puts the files into the content-addressed artifact store and records them all in
``prediction_log_files`` in one transaction. Readers only see files that have a row, so a
crash between storing an object and recording it leaves an unreferenced object and no
half-visible partition; a failed write puts the records back at the head of the queue for
the next flush, so nothing is lost to a transient error.

When the queue holds more than ``max_pending`` records (the store is down for long, or
traffic outruns the writer) the oldest are dropped and counted: the log never blocks or
fails a prediction, and memory stays bounded.

Columns of every file: ``request_id``, ``deployment``, ``model_version``, ``version_id``,
``role``, ``ts`` (timestamp, UTC), ``latency_ms``, ``inputs`` and ``outputs`` (JSON text).
Where the inputs (or outputs) are flat records, each scalar field also gets a typed column,
``input.<name>`` (``output.<name>``), for monitoring to read features without parsing JSON;
a field whose values are nested, or whose types clash within a file, stays in the JSON only.

Ground truth arrives later, by request id (:meth:`PredictionLog.record_feedback`), and is
joined back with :meth:`PredictionLog.read_with_feedback`.

A busy deployment gets a file per flush, up to ~1,800 an hour. :meth:`PredictionLog.compact`
rewrites each closed hour (ended more than a grace period ago) that has several files as
one file, sorted by ``ts``, and swaps the rows in one transaction, so a reader sees either
the old files or the new one. The server runs it in the background every ten minutes
(:meth:`PredictionLog.start_compaction`). The replaced objects stay in the artifact store,
unreferenced: the project has no artifact garbage collection yet.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from modelworks.core.errors import InvalidInput, NotFound
from modelworks.core.ids import new_id, utcnow
from modelworks.core.store import Store
from modelworks.governance.models import Project
from modelworks.serving.host import PredictionRecord  # the rows the model host hands over
from modelworks.serving.predlog_models import PredictionFeedback, PredictionLogFile

logger = logging.getLogger(__name__)

MAX_DEPLOYMENT_NAME = 100  # prediction_log_files.deployment / prediction_feedback.deployment
MAX_REQUEST_ID = 200  # prediction_feedback.request_id
MAX_TYPED_COLUMNS = 256  # more distinct keys than this is not a feature record: JSON only
FEEDBACK_CHUNK = 1000  # request ids per IN (...) when fetching feedback
MAX_RETRY_WAIT_S = 60.0
# Late flushes (a retried write, a worker's last flush at shutdown) may still add files to
# an hour for a while after it ends; compaction leaves an hour alone until then.
COMPACTION_GRACE = timedelta(minutes=5)
COMPACTION_INTERVAL_S = 600.0
COMPACTION_FIRST_DELAY_S = 60.0  # at most; random, so workers started together spread out
COMPACTED_ROW_GROUP = 128 * 1024  # rows: a few MB per column chunk, read in parallel
DELETE_CHUNK = 1000  # file ids per DELETE ... IN (...)

TS_TYPE = pa.timestamp("us", tz="UTC")
BASE_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("deployment", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("version_id", pa.string()),
        pa.field("role", pa.string()),
        pa.field("ts", TS_TYPE),
        pa.field("latency_ms", pa.float64()),
        pa.field("inputs", pa.string()),
        pa.field("outputs", pa.string()),
    ]
)
FEEDBACK_COLUMNS = [
    pa.field("ground_truth", pa.string()),
    pa.field("feedback_ts", TS_TYPE),
]
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True)
class PredictionLogStats:
    """Counters since the log was created (records, not requests)."""

    appended: int  # handed to append()
    written: int  # in committed files
    dropped: int  # oldest records dropped because the queue was full, or appended after close
    invalid: int  # records that could not be logged (no usable ts, deployment...): skipped
    pending: int  # queued or being written right now
    files: int  # Parquet files committed
    errors: int  # failed write attempts (their records were put back on the queue)


@dataclass(frozen=True)
class CompactionStats:
    """What one :meth:`PredictionLog.compact` call did."""

    partitions: int  # (deployment, hour) partitions rewritten as one file each
    files_replaced: int  # the files they had before (their objects are now unreferenced)
    rows: int  # rows in the rewritten partitions
    skipped: int  # partitions compacted by someone else meanwhile: this work was discarded
    failed: int  # partitions that could not be compacted (logged, left as they were)
    seconds: float


class _Superseded(Exception):
    """Another compaction replaced some of a partition's files first."""


class _Row(NamedTuple):
    """A malformed batch's record, checked and normalised (same attributes as a record)."""

    request_id: str
    deployment: str
    model_version: str | None
    version_id: str | None
    role: str | None
    ts: datetime
    latency_ms: float
    inputs: Any
    outputs: Any


class PredictionLog:
    """Buffers predictions in memory and writes them as hourly Parquet partitions.

    One per serving process. Call :meth:`close` on shutdown; an open log is also closed
    when the interpreter exits normally (see :func:`_close_open_logs`), so an ordinary exit
    writes whatever is still queued.
    """

    def __init__(
        self,
        store: Store,
        *,
        flush_rows: int = 5000,
        flush_seconds: float = 2.0,
        max_pending: int = 100_000,
        project_id: str | None = None,
    ) -> None:
        if flush_rows < 1:
            raise InvalidInput(f"flush_rows must be at least 1, not {flush_rows}.")
        if not flush_seconds > 0:
            raise InvalidInput(
                f"flush_seconds must be a positive number of seconds, not {flush_seconds}."
            )
        if max_pending < 1:
            raise InvalidInput(
                f"max_pending must be at least 1 (records held in memory), not {max_pending}."
            )
        if project_id is not None:
            with store.read() as s:
                if s.get(Project, project_id) is None:
                    raise NotFound(
                        f"Project {project_id!r} does not exist, so its predictions cannot be "
                        "logged under it. Give the id of an existing project, or leave "
                        "project_id out."
                    )
        self._store = store
        # Open the artifact store now: at interpreter exit, where the last flush may happen,
        # its backend (fsspec, which starts thread pools) can no longer be imported.
        _ = store.artifacts
        self._flush_rows = flush_rows
        self._flush_seconds = float(flush_seconds)
        self._max_pending = max_pending
        self._project_id = project_id

        self._lock = threading.Lock()  # guards the queue and the counters; never held for I/O
        self._write_lock = threading.Lock()  # one writer at a time (thread, flush(), close())
        self._queue: deque[Any] = deque()
        self._in_flight = 0
        self._appended = self._written = self._dropped = self._invalid = 0
        self._files = self._errors = 0
        self._closed = False
        self._warned_closed = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._compactor: threading.Thread | None = None
        self._compact_lock = threading.Lock()  # one compaction at a time in this process

    # ---- the serving path --------------------------------------------------------------
    def append(self, records: Sequence[PredictionRecord]) -> None:
        """Queue ``records`` for the background writer; returns at once and never raises.

        Only references are queued: the records are serialised later, on the writer thread,
        so they must not be mutated after this call.
        """
        n = len(records)
        if n == 0:
            return
        with self._lock:
            if self._closed:
                self._dropped += n
                warn = not self._warned_closed
                self._warned_closed = True
            else:
                warn = False
                queue = self._queue
                self._appended += n
                if n >= self._max_pending:
                    self._dropped += len(queue) + n - self._max_pending
                    queue.clear()
                    queue.extend(records[n - self._max_pending :])
                else:
                    queue.extend(records)
                    over = len(queue) - self._max_pending
                    if over > 0:
                        self._dropped += over
                        for _ in range(over):
                            queue.popleft()
                if self._thread is None:
                    self._start()
                if len(queue) >= self._flush_rows and not self._wake.is_set():
                    self._wake.set()
        if warn:
            logger.warning(
                "Predictions appended to a closed prediction log are dropped; "
                "create a new PredictionLog after close()."
            )

    def stats(self) -> PredictionLogStats:
        with self._lock:
            return PredictionLogStats(
                appended=self._appended,
                written=self._written,
                dropped=self._dropped,
                invalid=self._invalid,
                pending=len(self._queue) + self._in_flight,
                files=self._files,
                errors=self._errors,
            )

    # ---- writing -----------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything appended so far, on the calling thread.

        Raises what the write raised (the records stay queued for the next flush).
        """
        self._write_pending()

    def close(self) -> None:
        """Stop the background thread and write what is left.

        Idempotent. Later appends are dropped (and counted). If the final write fails, the
        error is raised and the records stay queued, so calling close() again retries.
        """
        with self._lock:
            self._closed = True
            thread = self._thread
            compactor = self._compactor
        self._stop.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if compactor is not None and compactor is not threading.current_thread():
            # It stops between partitions; one partition is at most an hour's predictions.
            compactor.join(timeout=60)
        self._write_pending()
        _OPEN_LOGS.discard(self)

    def _start(self) -> None:
        """Start the writer thread (called with ``_lock`` held, on the first append)."""
        thread = threading.Thread(target=self._run, name="modelworks-prediction-log", daemon=True)
        self._thread = thread
        thread.start()
        _OPEN_LOGS.add(self)
        _register_exit_hook()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() writes the rest on its own thread, where errors surface
            try:
                self._write_pending()
                failures = 0
            except Exception:
                failures += 1
                wait = min(self._flush_seconds * 2 ** min(failures, 16), MAX_RETRY_WAIT_S)
                logger.exception(
                    "Writing the prediction log failed (attempt %d); the records stay queued "
                    "and are retried in %.1f s.",
                    failures,
                    wait,
                )
                self._stop.wait(wait)

    def _write_pending(self) -> None:
        with self._write_lock:
            with self._lock:
                batch = self._queue
                self._queue = deque()
                self._in_flight = len(batch)
            if not batch:
                return
            valid: list[Any] = list(batch)
            invalid = 0
            try:
                table, valid = _prepare(valid)
                invalid = len(batch) - len(valid)
                if invalid:
                    logger.warning("%d predictions could not be logged: skipped.", invalid)
                files = self._write_files(table, valid)
            except BaseException:
                with self._lock:
                    self._invalid += invalid
                    self._errors += 1
                    self._requeue(valid)
                raise
            with self._lock:
                self._invalid += invalid
                self._in_flight = 0
                self._written += len(valid)
                self._files += files

    def _requeue(self, records: list[Any]) -> None:
        """Put a failed batch back before what was appended meanwhile (``_lock`` held)."""
        queue: deque[Any] = deque(records)
        queue.extend(self._queue)
        over = len(queue) - self._max_pending
        if over > 0:
            self._dropped += over
            for _ in range(over):
                queue.popleft()
        self._queue = queue
        self._in_flight = 0

    def _write_files(self, table: pa.Table, records: list[Any]) -> int:
        """Store one Parquet file per (deployment, hour), then record them all at once."""
        if table.num_rows == 0:
            return 0
        entries: list[PredictionLogFile] = []
        for group in _split(table):
            first, last = group.slice(0, 1), group.slice(group.num_rows - 1, 1)
            hour = first["_hour"][0].as_py()
            positions = group["_pos"].to_pylist()
            data = group.drop_columns(["_hour", "_pos"])
            for prefix, attribute in (("input.", "inputs"), ("output.", "outputs")):
                values = [getattr(records[i], attribute) for i in positions]
                for name, column in _typed_columns(prefix, values).items():
                    data = data.append_column(name, column)
            sink = pa.BufferOutputStream()
            pq.write_table(data, sink, compression="zstd")
            info = self._store.artifacts.put_bytes(sink.getvalue().to_pybytes())
            entries.append(
                PredictionLogFile(
                    id=new_id(),
                    project_id=self._project_id,
                    deployment=first["deployment"][0].as_py(),
                    hour=hour,
                    sha256=info.sha256,
                    size=info.size,
                    rows=group.num_rows,
                    min_ts=first["ts"][0].as_py(),
                    max_ts=last["ts"][0].as_py(),
                    created_at=utcnow(),
                )
            )
        # The objects are stored; only this commit makes them part of the log.
        with self._store.transaction() as s:
            s.add_all(entries)
        return len(entries)

    # ---- compaction --------------------------------------------------------------------
    def compact(
        self,
        deployment: str | None = None,
        *,
        before: datetime | None = None,
        grace: timedelta = COMPACTION_GRACE,
    ) -> CompactionStats:
        """Rewrite every closed hour that has more than one file as a single file.

        An hour is closed when ``hour + 1 h + grace`` is not after ``before`` (default:
        now). Its files are read, concatenated, sorted by ``ts`` then ``request_id`` and
        written as one zstd Parquet file; one transaction then deletes the old rows and adds
        the new one. If another process compacted some of those files first, the
        transaction is rolled back and the hour skipped, so no row is counted twice. Runs
        on the calling thread and needs no writer thread; a partition that fails is logged
        and counted in ``failed``, the others go on.
        """
        if deployment is not None:
            _check_name("deployment", deployment, MAX_DEPLOYMENT_NAME)
        if before is None:
            before = utcnow()
        elif not isinstance(before, datetime) or before.tzinfo is None:
            raise InvalidInput(
                f"before {before!r} must be a timezone-aware datetime (e.g. with tzinfo=UTC)."
            )
        if not isinstance(grace, timedelta) or grace < timedelta(0):
            raise InvalidInput(f"grace must be a timedelta of zero or more, not {grace!r}.")
        return self._compact(deployment, before - timedelta(hours=1) - grace, None)

    def start_compaction(self, interval: float = COMPACTION_INTERVAL_S) -> None:
        """Compact closed hours on a background thread every ``interval`` seconds until
        :meth:`close`. Errors are logged, never raised. Idempotent."""
        if not interval > 0:
            raise InvalidInput(f"interval must be a positive number of seconds, not {interval}.")
        with self._lock:
            if self._closed or self._compactor is not None:
                return
            self._compactor = threading.Thread(
                target=self._compact_loop,
                args=(float(interval),),
                name="modelworks-prediction-log-compaction",
                daemon=True,
            )
            self._compactor.start()

    def _compact_loop(self, interval: float) -> None:
        delay = random.uniform(0, min(interval, COMPACTION_FIRST_DELAY_S))
        while not self._stop.wait(delay):
            delay = interval
            try:
                cutoff = utcnow() - timedelta(hours=1) - COMPACTION_GRACE
                stats = self._compact(None, cutoff, self._stop)
            except Exception:
                logger.exception(
                    "Compacting the prediction log failed; retrying in %.0f s.", interval
                )
                continue
            if stats.partitions or stats.failed:
                logger.info(
                    "Prediction log compacted: %d files into %d (%d rows) in %.1f s; "
                    "%d hours failed, %d compacted elsewhere.",
                    stats.files_replaced,
                    stats.partitions,
                    stats.rows,
                    stats.seconds,
                    stats.failed,
                    stats.skipped,
                )

    def _compact(
        self, deployment: str | None, last_hour: datetime, stop: threading.Event | None
    ) -> CompactionStats:
        """Compact the partitions of hours up to ``last_hour`` (until ``stop`` is set)."""
        started = time.perf_counter()
        f = PredictionLogFile
        query = (
            select(f.deployment, f.hour, f.project_id)
            .where(f.hour <= last_hour)
            .group_by(f.deployment, f.hour, f.project_id)
            .having(func.count() > 1)
            .order_by(f.deployment, f.hour)
        )
        if deployment is not None:
            query = query.where(f.deployment == deployment)
        partitions = files = rows = skipped = failed = 0
        with self._compact_lock:
            with self._store.read() as s:
                found = list(s.execute(query))
            for name, hour, project_id in found:
                if stop is not None and stop.is_set():
                    break
                try:
                    replaced, written = self._compact_partition(name, hour, project_id)
                except _Superseded:
                    skipped += 1
                    continue
                except Exception:
                    failed += 1
                    logger.exception(
                        "Could not compact the prediction log of %s for %s; its files stay "
                        "as they are.",
                        name,
                        hour.isoformat(),
                    )
                    continue
                partitions += 1
                files += replaced
                rows += written
        return CompactionStats(
            partitions=partitions,
            files_replaced=files,
            rows=rows,
            skipped=skipped,
            failed=failed,
            seconds=time.perf_counter() - started,
        )

    def _compact_partition(
        self, deployment: str, hour: datetime, project_id: str | None
    ) -> tuple[int, int]:
        """One (deployment, hour) rewritten as one file: (files replaced, rows)."""
        f = PredictionLogFile
        with self._store.read() as s:
            files = list(
                s.execute(
                    select(f.id, f.sha256, f.rows)
                    .where(
                        f.deployment == deployment,
                        f.hour == hour,
                        f.project_id.is_not_distinct_from(project_id),
                    )
                    .order_by(f.min_ts, f.id)
                )
            )
        if len(files) < 2:
            raise _Superseded  # compacted since it was listed
        tables = []
        for _, sha, _ in files:
            with self._store.artifacts.open_verified(sha) as fh:
                tables.append(pq.read_table(fh))
        table = _concat(tables).sort_by([("ts", "ascending"), ("request_id", "ascending")])
        expected = sum(n for _, _, n in files)
        if table.num_rows != expected:
            raise ValueError(
                f"The files hold {table.num_rows} rows but their records say {expected}."
            )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=COMPACTED_ROW_GROUP)
        info = self._store.artifacts.put_bytes(sink.getvalue().to_pybytes())
        ts = table["ts"]
        entry = PredictionLogFile(
            id=new_id(),
            project_id=project_id,
            deployment=deployment,
            hour=hour,
            sha256=info.sha256,
            size=info.size,
            rows=table.num_rows,
            min_ts=ts[0].as_py(),
            max_ts=ts[-1].as_py(),
            created_at=utcnow(),
        )
        ids = [file_id for file_id, _, _ in files]
        with self._store.transaction() as s:
            deleted = 0
            for chunk in _chunks(ids, DELETE_CHUNK):
                result = s.execute(delete(f).where(f.id.in_(chunk)))
                assert isinstance(result, CursorResult)
                deleted += result.rowcount
            if deleted != len(ids):
                raise _Superseded  # rolls the deletes back
            s.add(entry)
        return len(ids), table.num_rows

    # ---- feedback ----------------------------------------------------------------------
    def record_feedback(
        self,
        deployment: str,
        request_id: str,
        ground_truth: Any,
        *,
        ts: datetime | None = None,
    ) -> None:
        """Store the ground truth for a logged prediction (replacing any earlier one)."""
        _check_name("deployment", deployment, MAX_DEPLOYMENT_NAME)
        _check_name("request_id", request_id, MAX_REQUEST_ID)
        if ts is None:
            ts = utcnow()
        elif not isinstance(ts, datetime) or ts.tzinfo is None:
            raise InvalidInput(
                f"Feedback ts {ts!r} must be a timezone-aware datetime; "
                "use datetime.now(UTC) or attach a tzinfo."
            )
        try:
            value = orjson.loads(orjson.dumps(ground_truth, option=_JSON_OPTIONS))
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise InvalidInput(
                f"Ground truth for request {request_id!r} is not JSON-serialisable ({exc}); "
                "send a number, string, boolean, list or object."
            ) from exc
        row = {
            "id": new_id(),
            "deployment": deployment,
            "request_id": request_id,
            "ground_truth": {"value": value},
            "ts": ts.astimezone(UTC),
            "created_at": utcnow(),
        }
        with self._store.transaction() as s:
            ins = _insert(s)(PredictionFeedback).values(row)
            s.execute(
                ins.on_conflict_do_update(
                    index_elements=["deployment", "request_id"],
                    set_={
                        "ground_truth": ins.excluded.ground_truth,
                        "ts": ins.excluded.ts,
                        "created_at": ins.excluded.created_at,
                    },
                )
            )

    # ---- reading -----------------------------------------------------------------------
    def read_predictions(
        self,
        deployment: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pa.Table:
        """Logged predictions of ``deployment`` with ``start <= ts < end``, oldest first.

        Only files whose time range overlaps the window are opened; every file is read
        through the artifact store's checksum verification. Records still queued in memory
        are not included (call :meth:`flush` first).
        """
        _check_window(start, end)
        query = select(PredictionLogFile.sha256).where(PredictionLogFile.deployment == deployment)
        if start is not None:
            query = query.where(PredictionLogFile.max_ts >= start)
        if end is not None:
            query = query.where(PredictionLogFile.min_ts < end)
        query = query.order_by(PredictionLogFile.hour, PredictionLogFile.min_ts)
        with self._store.read() as s:
            shas = list(s.scalars(query))
        tables = []
        for sha in shas:
            with self._store.artifacts.open_verified(sha) as f:
                table = pq.read_table(f)
            ts = table["ts"]
            mask = None
            if start is not None:
                mask = pc.greater_equal(ts, pa.scalar(start, TS_TYPE))
            if end is not None:
                before = pc.less(ts, pa.scalar(end, TS_TYPE))
                mask = before if mask is None else pc.and_(mask, before)
            tables.append(table if mask is None else table.filter(mask))
        if not tables:
            return BASE_SCHEMA.empty_table()
        return _concat(tables).sort_by([("ts", "ascending")])

    def read_with_feedback(
        self,
        deployment: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        include_unlabeled: bool = False,
    ) -> pa.Table:
        """Predictions in the window joined with their ground truth by ``request_id``.

        Adds ``ground_truth`` (JSON text) and ``feedback_ts``. Only predictions that have
        feedback are returned, unless ``include_unlabeled`` (then those columns are null).
        """
        predictions = self.read_predictions(deployment, start, end)
        ids = pc.unique(predictions["request_id"]).to_pylist()
        found: dict[str, list[Any]] = {"request_id": [], "ground_truth": [], "feedback_ts": []}
        with self._store.read() as s:
            for chunk in _chunks(ids, FEEDBACK_CHUNK):
                rows = s.execute(
                    select(
                        PredictionFeedback.request_id,
                        PredictionFeedback.ground_truth,
                        PredictionFeedback.ts,
                    ).where(
                        PredictionFeedback.deployment == deployment,
                        PredictionFeedback.request_id.in_(chunk),
                    )
                )
                for request_id, truth, ts in rows:
                    found["request_id"].append(request_id)
                    found["ground_truth"].append(_dumps(truth["value"]))
                    found["feedback_ts"].append(ts)
        feedback = pa.table(
            found, schema=pa.schema([pa.field("request_id", pa.string()), *FEEDBACK_COLUMNS])
        )
        joined = predictions.join(
            feedback,
            keys="request_id",
            join_type="left outer" if include_unlabeled else "inner",
        )
        return joined.sort_by([("ts", "ascending"), ("request_id", "ascending")])


# ---- shutdown ------------------------------------------------------------------------------
_OPEN_LOGS: weakref.WeakSet[PredictionLog] = weakref.WeakSet()
_EXIT_HOOK_LOCK = threading.Lock()
_exit_hook_registered = False


def _close_open_logs() -> None:
    """Write what every open log still holds, at interpreter exit."""
    for log in list(_OPEN_LOGS):
        try:
            log.close()
        except Exception:
            logger.exception(
                "The prediction log could not write %d queued predictions at exit.",
                log.stats().pending,
            )


def _register_exit_hook() -> None:
    """Close open logs when the interpreter exits normally, once per process.

    ``threading._register_atexit`` (what ``concurrent.futures`` uses) runs before threads
    are shut down; a plain :mod:`atexit` handler runs after, when the artifact store can no
    longer start what it needs (fsspec's imports and thread pools fail with "can't register
    atexit after shutdown"). Plain atexit is the fallback where the hook is missing.
    """
    global _exit_hook_registered
    with _EXIT_HOOK_LOCK:
        if _exit_hook_registered:
            return
        register = getattr(threading, "_register_atexit", None) or atexit.register
        try:
            register(_close_open_logs)
        except RuntimeError:
            return  # the interpreter is already shutting down: nothing can be written
        _exit_hook_registered = True


# ---- helpers ---------------------------------------------------------------------------
class _Malformed(ValueError):
    """A batch holds a record the fast path cannot take: check record by record."""


def _prepare(records: list[Any]) -> tuple[pa.Table, list[Any]]:
    """The batch as one Arrow table (plus ``_hour`` and ``_pos``), and the records kept.

    Column by column first, which keeps the per-record Python work (it holds the GIL that
    serving threads need) to attribute reads and one orjson call per JSON value. Only if
    some record is malformed is the batch checked record by record; a record that cannot be
    logged (no datetime ``ts``, no deployment name, inputs that are not JSON) is skipped
    rather than retried, since it would fail every flush forever.
    """
    try:
        return _build(records), records
    except Exception as exc:
        logger.debug("A prediction batch needs a record-by-record check: %s", exc)
    cleaned: list[_Row] = []
    valid: list[Any] = []
    for record in records:
        try:
            cleaned.append(_clean(record))
        except Exception as exc:
            logger.debug("Skipping an unloggable prediction record: %s", exc)
            continue
        valid.append(record)
    return _build(cleaned), valid


def _build(records: Sequence[Any]) -> pa.Table:
    """The fixed columns of ``records``; raises if any value does not fit its column."""
    ts = pa.array([r.ts for r in records], TS_TYPE)
    deployment = pa.array([r.deployment for r in records], pa.string())
    request_id = pa.array([r.request_id for r in records], pa.string())
    if ts.null_count or deployment.null_count or request_id.null_count:
        raise _Malformed("a record has no ts, deployment or request_id")
    if len(records):
        lengths = pc.min_max(pc.utf8_length(deployment)).as_py()
        if lengths["min"] < 1 or lengths["max"] > MAX_DEPLOYMENT_NAME:
            raise _Malformed("a deployment name is empty or too long")
    return pa.table(
        {
            "request_id": request_id,
            "deployment": deployment,
            "model_version": pa.array([r.model_version for r in records], pa.string()),
            "version_id": pa.array([r.version_id for r in records], pa.string()),
            "role": pa.array([r.role for r in records], pa.string()),
            "ts": ts,
            "latency_ms": pa.array([r.latency_ms for r in records], pa.float64()),
            "inputs": _json_column([r.inputs for r in records]),
            "outputs": _json_column([r.outputs for r in records]),
            "_hour": pc.floor_temporal(ts, unit="hour"),
            "_pos": pa.array(range(len(records)), pa.int64()),
        }
    )


def _clean(record: Any) -> _Row:
    """One record checked and normalised (strings, float latency, UTC ts)."""
    ts = record.ts
    if not isinstance(ts, datetime):
        raise TypeError(f"ts is {type(ts).__name__}, not a datetime")
    deployment = record.deployment
    if not isinstance(deployment, str) or not 0 < len(deployment) <= MAX_DEPLOYMENT_NAME:
        raise ValueError(f"deployment {deployment!r} is not a name of 1-100 characters")
    if record.request_id is None:
        raise ValueError("request_id is None")
    _dumps(record.inputs)
    _dumps(record.outputs)
    return _Row(
        request_id=str(record.request_id),
        deployment=deployment,
        model_version=_str_or_none(record.model_version),
        version_id=_str_or_none(record.version_id),
        role=_str_or_none(record.role),
        ts=ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts,
        latency_ms=float(record.latency_ms),
        inputs=record.inputs,
        outputs=record.outputs,
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _split(table: pa.Table) -> list[pa.Table]:
    """One table per (deployment, hour), each sorted by ts."""
    table = table.sort_by(
        [("deployment", "ascending"), ("_hour", "ascending"), ("ts", "ascending")]
    )
    n = table.num_rows
    if n < 2:
        return [table]
    deployment = table["deployment"].combine_chunks()
    hour = table["_hour"].combine_chunks()
    changed = pc.or_(
        pc.not_equal(deployment.slice(1), deployment.slice(0, n - 1)),
        pc.not_equal(hour.slice(1), hour.slice(0, n - 1)),
    )
    bounds = [0, *(np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1).tolist(), n]
    return [table.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


def _json_column(values: list[Any]) -> pa.Array:
    """JSON text of each value (decoded to str: Arrow takes str faster than bytes)."""
    dumps, option = orjson.dumps, _JSON_OPTIONS
    return pa.array([dumps(v, default=str, option=option).decode() for v in values], pa.string())


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS).decode()


def _is_scalar_type(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
    )


def _typed_columns(prefix: str, records: list[Any]) -> dict[str, pa.Array]:
    """One typed column per scalar field of flat dict records (missing fields are null).

    Arrow infers one struct type for all records at once; if that fails (a field with
    clashing types, a record that is not a dict) the fields are tried one by one and those
    that do not fit one type are left to the JSON column.
    """
    try:
        array = pa.array(records)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return _typed_columns_by_field(prefix, records)
    if not pa.types.is_struct(array.type) or array.type.num_fields > MAX_TYPED_COLUMNS:
        return {}
    return {
        prefix + field.name: child
        for field, child in zip(array.type, array.flatten(), strict=True)
        if _is_scalar_type(field.type)
    }


def _typed_columns_by_field(prefix: str, records: list[Any]) -> dict[str, pa.Array]:
    keys: dict[str, None] = {}
    for record in records:
        if isinstance(record, dict):
            for key in record:
                if isinstance(key, str):
                    keys[key] = None
            if len(keys) > MAX_TYPED_COLUMNS:
                return {}
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [r.get(key) if isinstance(r, dict) else None for r in records]
        try:
            array = pa.array(values)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            continue  # mixed types: the JSON column keeps the values
        if _is_scalar_type(array.type):
            columns[prefix + key] = array
    return columns


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Concatenate files whose typed columns may differ (missing, int vs float...).

    A typed column whose types cannot be reconciled across files (a field that was a
    number in one hour and text in another) is left out; its values remain in the JSON.
    """
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            types.setdefault(field.name, set()).add(field.type)
    clashing = set()
    for name, seen in types.items():
        if len(seen) < 2:
            continue
        try:
            pa.unify_schemas(
                [pa.schema([pa.field(name, t)]) for t in seen], promote_options="permissive"
            )
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            clashing.add(name)
    trimmed = [t.drop_columns([c for c in t.column_names if c in clashing]) for t in tables]
    return pa.concat_tables(trimmed, promote_options="permissive")


def _check_name(what: str, value: Any, limit: int) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidInput(
            f"{what} {value!r} must be a non-empty string of at most {limit} characters."
        )


def _check_window(start: datetime | None, end: datetime | None) -> None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidInput(
                f"{name} {value!r} must be a timezone-aware datetime (e.g. with tzinfo=UTC)."
            )
    if start is not None and end is not None and start >= end:
        raise InvalidInput(
            f"The window is empty: start {start.isoformat()} is not before end "
            f"{end.isoformat()}. Give start < end (start is included, end is not)."
        )


def _insert(s: Session) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT on SQLite and PostgreSQL alike."""
    return postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
