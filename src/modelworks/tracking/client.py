"""The SDK's run handle: log params, metrics, tags and artifacts to one run.

Metrics and tags never wait for storage: ``log_metric`` appends to an in-memory buffer
(microseconds, no I/O) and a background thread sends the buffer with ``log_batch`` when it
holds :attr:`ActiveRun.batch_size` items or every :attr:`ActiveRun.flush_interval_s`.
Everything left is sent when the run ends, on :meth:`ActiveRun.flush` and at interpreter
exit. Params are logged at once, so that a conflicting value raises where it was logged.

>>> import modelworks as mw
>>> with mw.start_run(experiment="churn") as run:  # doctest: +SKIP
...     run.log_params({"lr": 0.1, "depth": 6})
...     for step in range(100):
...         run.log_metric("loss", 1 / (step + 1), step=step)
...     run.log_artifact("confusion.png")
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from modelworks.core.errors import Conflict, InvalidInput
from modelworks.core.html_tables import html_table
from modelworks.tracking.schemas import ArtifactOut, MetricIn, RunOut, check_key
from modelworks.tracking.system_info import collect_system_info
from modelworks.transport import TrackingBackend, is_transient

if TYPE_CHECKING:
    from modelworks.client import Workspace

__all__ = ["ActiveRun", "current_run", "start_run"]

MAX_BATCH = 10_000  # metric points per log_batch request
FINAL_FLUSH_ATTEMPTS = 4  # at run end, transient failures are retried this often
_MetricItem = tuple[str, float | None, int, int]  # key, value, step, timestamp_ms

_known_keys: set[str] = set()
_MAX_KNOWN_KEYS = 100_000

# The active runs of each thread, innermost last. A thread-local rather than a ContextVar:
# notebook kernels may run each cell in a fresh context, which would forget the run.
_local = threading.local()
# Runs not yet ended (or with unsent items): ended, or flushed, at interpreter exit.
_live: set[ActiveRun] = set()
_live_lock = threading.Lock()


def _stack() -> list[ActiveRun]:
    stack: list[ActiveRun] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def current_run() -> ActiveRun | None:
    """The innermost run started (and not yet ended) in this thread, or None."""
    for run in reversed(_stack()):
        if not run._direct:  # ended from another thread: its entry here is stale
            return run
    return None


def _check_key(kind: str, key: Any) -> str:
    # Cache keys already checked: loops log a handful of keys millions of times.
    if key in _known_keys:
        return str(key)
    check_key(kind, key)
    if len(_known_keys) >= _MAX_KNOWN_KEYS:
        _known_keys.clear()
    _known_keys.add(key)
    return str(key)


def _number(key: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"Metric {key!r} must be a number; got {type(value).__name__} {value!r}."
        ) from None


class ActiveRun:
    """A run being logged to; returned by ``start_run`` and used as a context manager.

    On normal exit of the ``with`` block the run is FINISHED; if the block raises, what was
    logged is flushed, the run is marked FAILED and the exception propagates; on Ctrl-C
    (KeyboardInterrupt) it is KILLED.

    >>> with ws.start_run(experiment="churn") as run:  # doctest: +SKIP
    ...     run.log_param("model", "lgbm")
    ...     run.log_metrics({"auc": 0.91, "f1": 0.72}, step=3)
    ...     run.set_tag("team", "growth")
    >>> run.info.status  # doctest: +SKIP
    'FINISHED'
    """

    batch_size = 1000
    flush_interval_s = 0.5

    def __init__(
        self, backend: TrackingBackend, info: RunOut, *, workspace: Workspace | None = None
    ) -> None:
        self._backend = backend
        self._info = info
        self.id = info.id
        self.workspace = workspace
        self._lock = threading.Lock()  # guards the buffer
        self._flush_lock = threading.Lock()  # one flush at a time
        self._metrics: list[_MetricItem] = []
        self._tags: dict[str, str] = {}
        self._error: BaseException | None = None  # a background flush that cannot succeed
        self._retry_at = 0.0
        self._failures = 0
        self._ended = False
        # Set once the run is ending: no flusher thread any more, so log calls go straight to
        # storage (logging to an ended run is allowed, as in MLflow).
        self._direct = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._flush_loop, name=f"modelworks-flush-{self.id[-8:]}", daemon=True
        )
        self._thread.start()
        with _live_lock:
            _live.add(self)

    # ---- what the run is -------------------------------------------------------------------
    @property
    def info(self) -> RunOut:
        """The run as last read (at start, at end, or by :meth:`refresh`)."""
        return self._info

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def pending(self) -> int:
        """Metric points and tags buffered and not yet stored."""
        with self._lock:
            return len(self._metrics) + len(self._tags)

    def refresh(self) -> RunOut:
        """Flush the buffer and re-read the run (params, latest metrics, tags, status)."""
        self.flush()
        self._info = self._backend.get_run(self.id)
        return self._info

    # ---- logging ---------------------------------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        """Log one param (stored as a string). Params cannot change once logged.

        >>> run.log_param("lr", 0.1)  # doctest: +SKIP
        """
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params now, in one call; raises ``Conflict`` if one was logged with another
        value.

        >>> run.log_params({"lr": 0.1, "depth": 6})  # doctest: +SKIP
        """
        self._raise_pending_error()
        if params:
            self._backend.log_batch(self.id, params=dict(params))

    def log_metric(
        self, key: str, value: Any, step: int | None = None, timestamp_ms: int | None = None
    ) -> None:
        """Buffer one metric point (step defaults to 0, the time to now); returns at once.

        >>> for epoch in range(10):  # doctest: +SKIP
        ...     run.log_metric("loss", 1 / (epoch + 1), step=epoch)
        """
        if self._direct or self._error is not None:
            self._slow_log({key: value}, step, timestamp_ms)
            return
        if key not in _known_keys:
            _check_key("Metric", key)
        item = (
            key,
            _number(key, value),
            0 if step is None else int(step),
            int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms),
        )
        with self._lock:
            self._metrics.append(item)
            full = len(self._metrics) >= self.batch_size
        if full and not self._wake.is_set():
            self._wake.set()

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int | None = None, timestamp_ms: int | None = None
    ) -> None:
        """Buffer several metrics at the same step.

        >>> run.log_metrics({"auc": 0.91, "f1": 0.7}, step=3)  # doctest: +SKIP
        """
        if self._direct or self._error is not None:
            self._slow_log(metrics, step, timestamp_ms)
            return
        now = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        s = 0 if step is None else int(step)
        items = [(_check_key("Metric", k), _number(k, v), s, now) for k, v in metrics.items()]
        with self._lock:
            self._metrics.extend(items)
            full = len(self._metrics) >= self.batch_size
        if full and not self._wake.is_set():
            self._wake.set()

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (buffered; tags, unlike params, may change).

        >>> run.set_tag("team", "growth")  # doctest: +SKIP
        """
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags (buffered)."""
        self._raise_pending_error()
        checked = {_check_key("Tag", k): str(v) for k, v in tags.items()}
        if self._direct:
            self._backend.log_batch(self.id, tags=checked)
            return
        with self._lock:
            self._tags.update(checked)

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactOut:
        """Store a file as ``artifact_path/<file name>`` (or ``<file name>``).

        >>> run.log_artifact("confusion.png", artifact_path="plots")  # doctest: +SKIP
        ArtifactOut(path='plots/confusion.png', ...)
        """
        self._raise_pending_error()
        name = Path(local_path).name
        path = f"{artifact_path.rstrip('/')}/{name}" if artifact_path else name
        return self._backend.log_artifact(self.id, path, local_path)

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactOut]:
        """Store every file under ``local_dir``, keeping relative paths (under
        ``artifact_path``).

        >>> run.log_artifacts("outputs/", artifact_path="model")  # doctest: +SKIP
        """
        self._raise_pending_error()
        return self._backend.log_artifacts(self.id, local_dir, artifact_path)

    def log_text(self, text: str, path: str) -> ArtifactOut:
        """Store ``text`` (UTF-8) as the artifact ``path``.

        >>> run.log_text("all good", "notes/summary.txt")  # doctest: +SKIP
        """
        self._raise_pending_error()
        return self._backend.log_artifact(self.id, path, text.encode("utf-8"))

    def log_input(self, dataset: Any, relation: str = "trained_on") -> Any:
        """Record that this run read a dataset version (``"churn@3"`` or a DatasetVersion);
        ``modelworks data lineage churn@3`` then shows the run.

        >>> run.log_input(ws.datasets.get("churn@latest"))  # doctest: +SKIP
        """
        if self.workspace is None:
            raise RuntimeError("This run has no workspace; start it with ws.start_run().")
        return self.workspace.runs.log_input(self.id, dataset, relation)

    def log_dict(self, obj: Any, path: str) -> ArtifactOut:
        """Store ``obj`` as YAML if ``path`` ends in .yaml/.yml, else as JSON.

        >>> run.log_dict({"threshold": 0.42}, "config.json")  # doctest: +SKIP
        """
        self._raise_pending_error()
        try:
            if path.lower().endswith((".yaml", ".yml")):
                import yaml

                text = yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
            else:
                text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
        except Exception as exc:  # json: TypeError/ValueError; yaml: YAMLError
            raise InvalidInput(
                f"Cannot write {type(obj).__name__} as {path!r}: {exc}. Use plain dicts, lists, "
                "strings, numbers and booleans."
            ) from exc
        return self._backend.log_artifact(self.id, path, text.encode("utf-8"))

    # ---- flushing --------------------------------------------------------------------------
    def flush(self) -> None:
        """Store everything buffered now. A failure is raised; nothing buffered is lost."""
        self._raise_pending_error()
        self._flush_pending()
        self._raise_pending_error()  # a background flush that failed while we waited

    def _slow_log(self, metrics: Mapping[str, Any], step: int | None, ts: int | None) -> None:
        self._raise_pending_error()
        now = int(time.time() * 1000) if ts is None else int(ts)
        s = 0 if step is None else int(step)
        items = [(_check_key("Metric", k), _number(k, v), s, now) for k, v in metrics.items()]
        if self._direct:  # the run has ended: no thread to hand the points to
            self._backend.log_batch(self.id, metrics=_metric_objects(items))
            return
        with self._lock:
            self._metrics.extend(items)

    def _raise_pending_error(self) -> None:
        err = self._error
        if err is not None:
            self._error = None
            raise err

    def _flush_pending(self, *, background: bool = False) -> None:
        """Send the buffer. Transient failures put the unsent items back; any other failure
        drops them (they can never be stored) and says so on the raised error, which a
        background flush also keeps for the user's next call."""
        with self._flush_lock:
            with self._lock:
                metrics, self._metrics = self._metrics, []
                tags, self._tags = self._tags, {}
            sent = 0
            tags_sent = not tags
            try:
                while sent < len(metrics) or not tags_sent:
                    chunk = metrics[sent : sent + MAX_BATCH]
                    self._backend.log_batch(
                        self.id,
                        metrics=_metric_objects(chunk),
                        tags=None if tags_sent else tags,
                    )
                    sent += len(chunk)
                    tags_sent = True
            except Exception as exc:
                rest = metrics[sent:]
                if is_transient(exc):
                    with self._lock:
                        self._metrics[:0] = rest
                        if not tags_sent:
                            self._tags = {**tags, **self._tags}
                else:
                    lost = f"{len(rest)} metric points" + ("" if tags_sent else " and tags")
                    exc.add_note(f"{lost} of run {self.id} were not stored.")
                    if background and self._error is None:
                        self._error = exc
                raise

    def _flush_loop(self) -> None:
        while True:
            backoff = self._retry_at - time.monotonic()
            if backoff > 0:
                self._stop.wait(backoff)
            else:
                self._wake.wait(self.flush_interval_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self._flush_pending(background=True)
                self._failures, self._retry_at = 0, 0.0
            except Exception as exc:
                if is_transient(exc):
                    self._failures += 1
                    self._retry_at = time.monotonic() + min(0.5 * 2**self._failures, 30.0)

    def _stop_flusher(self) -> None:
        self._direct = True
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)

    def _final_flush(self) -> None:
        for attempt in range(1, FINAL_FLUSH_ATTEMPTS + 1):
            try:
                self._flush_pending()
                return
            except Exception as exc:
                if not is_transient(exc) or attempt == FINAL_FLUSH_ATTEMPTS:
                    raise
                time.sleep(0.5 * 2 ** (attempt - 1))

    # ---- ending ----------------------------------------------------------------------------
    def end(self, status: str = "FINISHED") -> RunOut:
        """Flush, then set the run's final status (FINISHED, FAILED or KILLED).

        Ending twice is harmless. If the buffer cannot be stored (server unreachable), the
        status is still set where possible and the error is raised; the unsent items stay
        buffered for :meth:`flush` and for the last attempt at interpreter exit.
        """
        if self._ended:
            return self._info
        self._stop_flusher()
        error: BaseException | None = self._error
        self._error = None
        try:
            self._final_flush()
        except Exception as exc:
            error = error or exc
        try:
            self._info = self._backend.update_run(self.id, status=status)
            self._ended = True
        except Exception as exc:
            error = error or exc
        finally:
            stack = _stack()
            if self in stack:
                stack.remove(self)
            if self._ended and not self.pending:
                with _live_lock:
                    _live.discard(self)
        if error is not None:
            raise error
        return self._info

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end("FINISHED")
            return
        if issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            status = "FINISHED"
        else:
            status = "FAILED"
        try:
            self.end(status)
        except Exception as end_exc:
            # The user's exception matters more; report ours without hiding theirs.
            print(
                f"modelworks: WARNING: could not mark run {self.id} {status}: {end_exc}",
                file=sys.stderr,
            )

    # ---- display ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        i = self._info
        state = i.status if self._ended else "RUNNING"
        return (
            f"<ActiveRun {self.id} name={i.name!r} experiment={i.experiment_name!r} status={state}>"
        )

    def _repr_html_(self) -> str:
        i = self._info
        rows = [
            ("id", i.id),
            ("name", i.name),
            ("experiment", i.experiment_name),
            ("status", i.status if self._ended else "RUNNING"),
            ("parent", i.parent_run_id or ""),
        ]
        rows += [(f"params.{k}", v) for k, v in i.params.items()]
        rows += [(f"metrics.{k}", "" if v is None else f"{v:.6g}") for k, v in i.metrics.items()]
        rows += [(f"tags.{k}", v) for k, v in i.tags.items()]
        return html_table("Modelworks run", rows)


def _metric_objects(items: list[_MetricItem]) -> list[MetricIn]:
    # Keys and values were checked when logged; skip validation (NaN is stored as null).
    return [
        MetricIn.model_construct(
            key=k,
            value=None if v is None or math.isnan(v) else v,
            step=s,
            timestamp_ms=t,
        )
        for k, v, s, t in items
    ]


def start_run(
    backend: TrackingBackend,
    project: str,
    experiment: str,
    *,
    name: str | None = None,
    description: str = "",
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    parent: str | RunOut | ActiveRun | None = None,
    nested: bool = False,
    workspace: Workspace | None = None,
) -> ActiveRun:
    """Create a run (capturing system info) and make it the active one.

    With a run already active in this thread, ``nested=True`` makes the new run its child
    and ``nested=False`` raises, as in MLflow. ``parent`` names the parent explicitly.
    """
    active = current_run()
    parent_id: str | None
    if parent is not None:
        parent_id = parent if isinstance(parent, str) else parent.id
    elif active is not None:
        if not nested:
            raise Conflict(
                f"Run {active.id} is already active; end it first, or pass nested=True to "
                "start a child run inside it."
            )
        parent_id = active.id
    else:
        parent_id = None
    info = backend.create_run(
        project,
        experiment,
        name=name,
        description=description,
        tags={_check_key("Tag", k): str(v) for k, v in (tags or {}).items()},
        params=dict(params or {}),
        parent_run_id=parent_id,
        system_info=collect_system_info(),
    )
    run = ActiveRun(backend, info, workspace=workspace)
    _stack().append(run)
    return run


def live_runs() -> list[ActiveRun]:
    """Runs not yet ended, or ended with items still buffered."""
    with _live_lock:
        return list(_live)


@atexit.register
def _end_live_runs() -> None:
    """Flush (and end) what is left when the interpreter exits; warn on what cannot be."""
    crashed = getattr(sys, "last_value", None) is not None and not hasattr(sys, "ps1")
    for run in live_runs():
        try:
            if run._ended:
                run._final_flush()
            else:
                run.end("FAILED" if crashed else "FINISHED")
        except Exception as exc:
            print(
                f"modelworks: WARNING: run {run.id}: {run.pending} buffered metric points and "
                f"tags could not be stored at exit: {exc}",
                file=sys.stderr,
            )


def _forget_after_fork() -> None:
    # A forked child has no flusher threads; the parent's runs are the parent's to end.
    global _live_lock
    _live_lock = threading.Lock()  # another thread may have held it at the fork
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
