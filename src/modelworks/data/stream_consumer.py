"""Follow a stream: ingest micro-batches into one dataset until told to stop.

``modelworks data ingest --follow`` runs :func:`consume`. Each micro-batch is one ordinary
``DataService.ingest(..., mode="append")``: the source reads after the stored position and
the service stores the new position in the same transaction as the version. The loop keeps
no state of its own, so it may be killed at any moment: the next run continues from the
last committed batch, losing nothing and repeating nothing.

Stopping: a ``stop`` event, or Ctrl-C (SIGINT) in the main thread, ends the loop after the
batch in progress is committed; a second Ctrl-C interrupts at once, which is safe too
(the batch is simply read again by the next run).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from modelworks.core.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from modelworks.data.sources.base import source_from_spec

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.data.schemas import BadRows, IngestResult
    from modelworks.data.service import DataService
    from modelworks.data.sources.base import Source

log = logging.getLogger("modelworks.data.stream_consumer")

StopReason = Literal["stop", "interrupt", "max_batches", "idle"]
MAX_BACKOFF_S = 60.0
# Consecutive conflicts before giving up. Consumers racing on one dataset each lose some
# commits but all make progress; this only bounds a case nobody foresaw.
MAX_CONFLICTS = 100


@dataclass
class ConsumeStats:
    """What a :func:`consume` run did."""

    batches: int = 0  # ingests that made a version
    rows: int = 0  # rows those versions added
    polls: int = 0  # ingests run, with or without new rows
    rejected: int = 0  # messages set aside (bad_rows="quarantine")
    retries: int = 0  # ingests retried after a conflict or an unreachable server
    last_version: int | None = None
    seconds: float = 0.0
    stopped: StopReason | None = None


def consume(
    service: DataService,
    principal: Principal,
    project: str,
    name: str,
    source: Source | dict[str, Any],
    *,
    interval: float = 1.0,
    max_batches: int | None = None,
    stop: threading.Event | None = None,
    on_batch: Callable[[IngestResult], None] | None = None,
    bad_rows: BadRows = "fail",
    until_idle: bool = False,
) -> ConsumeStats:
    """Ingest micro-batches from ``source`` into dataset ``name`` until stopped.

    ``interval``: seconds to wait after an ingest that found nothing new (a full batch is
    followed by the next one at once). ``max_batches``: stop after this many versions.
    ``until_idle``: stop at the first ingest that finds nothing new (drain, then exit).
    ``on_batch`` is called with the result of every ingest that made a version.

    Another consumer committing first (``Conflict``) is retried after a short random pause,
    unless the dataset was deleted (that conflict lasts). An unreachable broker after the
    first successful poll is retried with a growing pause (up to a minute): a follower
    should outlive a broker restart. Any other error ends the run, as it needs a person
    (bad data, a schema change, a missing permission).
    """
    if interval < 0:
        raise InvalidInput(f"interval must be 0 or more seconds; got {interval}.")
    src = source_from_spec(source)
    stop = stop or threading.Event()
    stats = ConsumeStats()
    started = time.perf_counter()
    backoff = 0.0
    conflicts = 0
    with _sigint_sets(stop, stats):
        while True:
            if stop.is_set():
                stats.stopped = stats.stopped or "stop"
                break
            if max_batches is not None and stats.batches >= max_batches:
                stats.stopped = "max_batches"
                break
            try:
                result = service.ingest(
                    principal, project, name, src, mode="append", bad_rows=bad_rows
                )
            except Conflict as exc:
                # The other ingest stored its batch and position; ours stored nothing, and
                # the next poll reads after the position the other one moved to.
                conflicts += 1
                if conflicts > MAX_CONFLICTS or _deleted(service, principal, project, name):
                    raise
                stats.retries += 1
                log.info("%s: %s", name, exc.detail)
                # Random, so that consumers polling in step fall out of step.
                stop.wait(random.uniform(0.01, 0.2))
                continue
            except ServiceUnavailable as exc:
                if stats.polls == 0:
                    raise  # never reached it: a wrong address, not an outage
                stats.retries += 1
                backoff = min(MAX_BACKOFF_S, backoff * 2 or max(interval, 1.0))
                log.warning("%s: %s Retrying in %.0f s.", name, exc.detail, backoff)
                stop.wait(backoff)
                continue
            backoff = 0.0
            conflicts = 0
            stats.polls += 1
            if result.rejects is not None:
                stats.rejected += result.rejects.count
            if result.version is None:
                log.debug("%s: %s", name, result.message)
                if until_idle:
                    stats.stopped = "idle"
                    break
                stop.wait(interval)
                continue
            stats.batches += 1
            stats.rows += result.rows
            stats.last_version = result.version.version
            log.info(
                "%s@%d: +%d rows (%d in all) in %.2f s%s",
                name,
                result.version.version,
                result.rows,
                result.version.row_count,
                result.seconds,
                f", {result.rejects.count} set aside" if result.rejects else "",
            )
            if on_batch is not None:
                on_batch(result)
    stats.seconds = time.perf_counter() - started
    return stats


def _deleted(service: DataService, principal: Principal, project: str, name: str) -> bool:
    try:
        return service.get_dataset(principal, project, name).deleted
    except NotFound:
        return False  # not created yet: another consumer's first version is being made


@contextmanager
def _sigint_sets(stop: threading.Event, stats: ConsumeStats) -> Iterator[None]:
    """While inside, the first Ctrl-C sets ``stop`` instead of interrupting the batch."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only delivered to the main thread
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # second Ctrl-C: stop now; the batch is read again later
        stats.stopped = "interrupt"
        stop.set()
        log.warning("Stopping after the current batch (Ctrl-C again to stop now).")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
