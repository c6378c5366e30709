"""The deployments one model server serves, and how a request finds its model.

A :class:`ModelHost` maps deployment names to a :class:`Deployment`: the primary model and,
optionally, a canary (a share of the traffic, or callers pinned to it by a sticky key) and
a shadow (gets a copy of every request after the answer went out; its answers are only
logged). Each model of a deployment has its own :class:`DynamicBatcher`.

``host.put(name, runtime, config)`` replaces a deployment in one step: requests that were
already routed finish on the old models (their batchers drain, then stop), new requests
go to the new ones, and none fails because of the swap.

Predictions are handed to ``prediction_sink`` (a callable taking a list of
:class:`PredictionRecord`, one per row) from a background thread, in batches, never on the
request's path; when the sink falls behind by ``sink_max_pending`` requests, further
records are dropped and counted rather than slowing the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelworks.core.errors import InvalidInput, ModelworksError, NotFound, ServiceUnavailable
from modelworks.serving.batching import DynamicBatcher
from modelworks.serving.runtime import ModelInput, ModelRuntime, PredictionBatch

__all__ = [
    "CanaryConfig",
    "Deployment",
    "DeploymentConfig",
    "ModelHost",
    "PredictionRecord",
    "PredictionSink",
    "RateLimited",
    "Role",
    "ServedModel",
    "ShadowConfig",
    "TokenBucket",
]

log = logging.getLogger("modelworks.serving")

Role = Literal["primary", "canary", "shadow"]
DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SINK_INTERVAL_S = 0.05  # how often the prediction sink thread takes what requests queued
MiB = 1 << 20


# ---- configuration --------------------------------------------------------------------------
class CanaryConfig(BaseModel):
    """Send ``percent`` of the requests (or of the sticky keys) to ``version``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(description="The canary's model version, e.g. churn@4.")
    percent: float = Field(ge=0, le=100, description="Share of the traffic, 0-100.")


class ShadowConfig(BaseModel):
    """Run every request on ``version`` too, after answering; its answers are only logged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(description="The shadow's model version, e.g. churn@5.")


class DeploymentConfig(BaseModel):
    """How a deployment is served: batching, limits, logging, rollout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=64, ge=1, le=65536, description="Rows per model call.")
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=10_000,
        description="How long a request may wait for others to batch with (0: a request "
        "that finds the model idle runs at once; those that arrive while it runs share the "
        "next call).",
    )
    max_queue: int = Field(default=1024, ge=1, description="Waiting requests before 503.")
    max_request_bytes: int = Field(default=MiB, ge=1, description="Largest request body.")
    rate_limit_per_s: float | None = Field(
        default=None, gt=0, description="Requests per second (token bucket); None: no limit."
    )
    log_predictions: bool = Field(default=True, description="Hand predictions to the sink.")
    canary: CanaryConfig | None = None
    shadow: ShadowConfig | None = None
    sticky_key: str | None = Field(
        default=None,
        max_length=100,
        description="A header or request field whose value pins a caller to the primary "
        "or the canary (by hash).",
    )


class RateLimited(ModelworksError):
    """More requests than the deployment's ``rate_limit_per_s`` allows (HTTP 429)."""

    status_code = 429
    code = "rate_limited"
    title = "Too many requests"
    exit_code = 8


class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``burst`` (thread-safe)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there will be."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


# ---- what is served -------------------------------------------------------------------------
@dataclass(eq=False)
class ServedModel:
    """One model of a deployment: its runtime, its batcher and the deployment's config."""

    runtime: ModelRuntime
    batcher: DynamicBatcher
    config: DeploymentConfig
    role: Role = "primary"
    deployment: str = ""

    @property
    def version(self) -> str:
        return self.runtime.version


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One row's prediction, as the prediction sink receives it.

    ``inputs`` is the row as the caller sent it; ``outputs`` holds ``prediction`` and, for
    classifiers, ``probabilities`` (in the order of the model's classes). Every row of one
    request shares its ``request_id``, ``latency_ms`` (the whole request's) and ``ts``
    (when the request arrived); ``row`` is the row's position in the request.
    """

    request_id: str
    deployment: str
    model_version: str
    version_id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    latency_ms: float
    ts: datetime
    role: Role
    row: int = 0


PredictionSink = Callable[[list[PredictionRecord]], None]


@dataclass(eq=False)
class Deployment:
    """A deployment as it is served now (replaced whole by ``ModelHost.put``)."""

    name: str
    config: DeploymentConfig
    primary: ServedModel
    canary: ServedModel | None = None
    shadow: ServedModel | None = None
    limiter: TokenBucket | None = None
    created: float = field(default_factory=time.time)

    def admit(self) -> None:
        """Take a request token; raises ``RateLimited`` (with ``retry_after``) if none."""
        if self.limiter is None:
            return
        wait = self.limiter.take()
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise RateLimited(
                f"Deployment {self.name!r} takes at most {self.config.rate_limit_per_s:g} "
                f"requests per second; retry after {retry} s.",
                retry_after=retry,
            )

    def route(self, request_key: str | None = None) -> ServedModel:
        """The primary, or the canary for ``canary.percent`` of the traffic: by a hash of
        ``request_key`` when given (the same key always lands on the same model), else at
        random."""
        canary, share = self.canary, self.config.canary
        if canary is None or share is None or share.percent <= 0:
            return self.primary
        if share.percent >= 100:
            return canary
        if request_key is None:
            point = random.random() * 100.0
        else:
            digest = hashlib.blake2b(
                f"{self.name}\x00{request_key}".encode(), digest_size=8
            ).digest()
            point = int.from_bytes(digest, "big") / 2**64 * 100.0
        return canary if point < share.percent else self.primary

    def models(self) -> list[ServedModel]:
        return [m for m in (self.primary, self.canary, self.shadow) if m is not None]

    def find_version(self, version: str) -> ServedModel | None:
        """The primary or canary serving ``version`` (``churn@3`` or just ``3``)."""
        for served in (self.primary, self.canary):
            if served is not None and version in (
                served.version,
                served.version.rsplit("@", 1)[-1],
            ):
                return served
        return None

    def _retire(self) -> None:
        for served in self.models():
            served.batcher.close_soon()


@dataclass(slots=True)
class _LogEntry:
    served: ServedModel
    request_id: str
    payload: ModelInput
    batch: PredictionBatch
    latency_ms: float
    ts: float


class ModelHost:
    """The deployments of one model server (see the module docstring)."""

    def __init__(
        self,
        *,
        prediction_sink: PredictionSink | None = None,
        sink_max_pending: int = 10_000,
        sink_batch: int = 1_000,
    ) -> None:
        self.prediction_sink = prediction_sink
        self._deployments: dict[str, Deployment] = {}
        self._expected: set[str] = set()
        self._retired: list[ServedModel] = []
        self._lock = threading.Lock()
        self._sink_queue: queue.Queue[_LogEntry | None] = queue.Queue(maxsize=sink_max_pending)
        self._sink_batch = sink_batch
        self._sink_thread: threading.Thread | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.dropped_records = 0
        self.sink_errors = 0
        self.shadow_errors = 0
        self._closed = False

    # ---- deployments ----------------------------------------------------------------
    def put(
        self,
        name: str,
        primary: ModelRuntime,
        config: DeploymentConfig | None = None,
        *,
        canary: ModelRuntime | None = None,
        shadow: ModelRuntime | None = None,
    ) -> Deployment:
        """Serve ``primary`` (and ``canary``/``shadow``) as ``name``, replacing what was
        served under that name in one step (see the module docstring)."""
        if not isinstance(name, str) or not DEPLOYMENT_NAME.match(name):
            raise InvalidInput(
                f"Deployment name {name!r} is not valid: start with a letter or digit and use "
                "only letters, digits, '_', '-' and '.' (at most 100 characters)."
            )
        if self._closed:
            raise ServiceUnavailable("The model host is shutting down; it serves no new models.")
        config = config or DeploymentConfig()
        if (canary is None) != (config.canary is None):
            raise InvalidInput(
                f"Deployment {name!r}: a canary needs both the canary runtime and "
                "config.canary (its version and percent); "
                + ("config.canary is missing." if canary is not None else "pass canary=.")
            )
        if (shadow is None) != (config.shadow is None):
            raise InvalidInput(
                f"Deployment {name!r}: a shadow needs both the shadow runtime and "
                "config.shadow; "
                + ("config.shadow is missing." if shadow is not None else "pass shadow=.")
            )
        with self._lock:
            old = self._deployments.get(name)
            limiter = None
            if config.rate_limit_per_s is not None:
                kept = old.limiter if old is not None else None  # a swap keeps its budget
                same = kept is not None and kept.rate == config.rate_limit_per_s
                limiter = kept if same else TokenBucket(config.rate_limit_per_s)
            deployment = Deployment(
                name=name,
                config=config,
                primary=self._served(name, primary, config, "primary"),
                canary=self._served(name, canary, config, "canary") if canary else None,
                shadow=self._served(name, shadow, config, "shadow") if shadow else None,
                limiter=limiter,
            )
            self._deployments[name] = deployment
            self._expected.discard(name)
            if old is not None:
                self._retired = [m for m in self._retired if not m.batcher.closed]
                self._retired += old.models()
        if old is not None:
            old._retire()
        log.info(
            "deployment %s now serves %s%s%s",
            name,
            primary.version,
            f", canary {canary.version} ({config.canary.percent:g}%)"
            if canary and config.canary
            else "",
            f", shadow {shadow.version}" if shadow else "",
        )
        return deployment

    @staticmethod
    def _served(
        name: str, runtime: ModelRuntime, config: DeploymentConfig, role: Role
    ) -> ServedModel:
        batcher = DynamicBatcher(
            runtime,
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            name=f"{name}:{role}",
        )
        return ServedModel(runtime, batcher, config, role, name)

    def remove(self, name: str) -> None:
        """Stop serving ``name``; requests already routed to it still finish."""
        with self._lock:
            self._expected.discard(name)
            old = self._deployments.pop(name, None)
            if old is None:
                raise NotFound(f"There is no deployment {name!r} on this server.")
            self._retired += old.models()
        old._retire()

    def get(self, name: str) -> Deployment:
        """The deployment called ``name``; raises ``NotFound`` (or ``ServiceUnavailable``
        while it is still loading)."""
        found = self._deployments.get(name)
        if found is None:
            if name in self._expected:
                raise ServiceUnavailable(
                    f"Deployment {name!r} is still loading; retry shortly.", retry_after=1
                )
            known = ", ".join(sorted(self._deployments)) or "none"
            raise NotFound(
                f"There is no deployment {name!r} on this server (deployments: {known})."
            )
        return found

    def route(self, name: str, request_key: str | None = None) -> ServedModel:
        """The model of deployment ``name`` that answers a request with ``request_key``."""
        return self.get(name).route(request_key)

    def names(self) -> list[str]:
        return sorted(self._deployments)

    def deployments(self) -> list[Deployment]:
        """The deployments by name (a snapshot: safe while others are put or removed)."""
        snapshot = dict(self._deployments)
        return [snapshot[n] for n in sorted(snapshot)]

    def __contains__(self, name: object) -> bool:
        return name in self._deployments

    # ---- readiness -------------------------------------------------------------------
    def expect(self, *names: str) -> None:
        """Mark deployments that are being loaded: the host is not ready until each of
        them has been ``put``."""
        with self._lock:
            self._expected.update(n for n in names if n not in self._deployments)

    def forget(self, name: str) -> None:
        """Stop waiting for ``name`` (its loading failed or was cancelled)."""
        with self._lock:
            self._expected.discard(name)

    @property
    def ready(self) -> bool:
        """True when every expected deployment is served."""
        return not self._expected and not self._closed

    def is_loading(self, name: str) -> bool:
        return name in self._expected

    # ---- after the answer: prediction log and shadow -----------------------------------
    def log_predictions(
        self,
        served: ServedModel,
        request_id: str,
        payload: ModelInput,
        batch: PredictionBatch,
        latency_ms: float,
        ts: float | None = None,
    ) -> None:
        """Queue a request's predictions for the sink (cheap: the records are built in the
        sink's thread). ``ts`` is the request's arrival (``time.time()``)."""
        if self.prediction_sink is None or not served.config.log_predictions:
            return
        entry = _LogEntry(served, request_id, payload, batch, latency_ms, ts or time.time())
        try:
            self._sink_queue.put_nowait(entry)
        except queue.Full:
            self.dropped_records += len(batch)
            return
        if self._sink_thread is None:
            self._start_sink()

    def start_shadow(self, deployment: Deployment, payload: ModelInput, request_id: str) -> None:
        """Send a copy of the request to the deployment's shadow, in the background (call
        from the event loop, after the answer is ready)."""
        served = deployment.shadow
        if served is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(served, payload, request_id), name=f"shadow:{deployment.name}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(self, served: ServedModel, payload: ModelInput, request_id: str) -> None:
        arrived = time.time()
        start = time.perf_counter()
        try:
            batch = await served.batcher.submit_input(payload)
        except Exception as exc:  # a shadow's failure must never reach the caller
            self.shadow_errors += 1
            log.info("shadow %s failed on request %s: %s", served.version, request_id, exc)
            return
        latency = (time.perf_counter() - start) * 1000.0
        self.log_predictions(served, request_id, payload, batch, latency, arrived)

    # ---- the sink thread -------------------------------------------------------------
    def _start_sink(self) -> None:
        with self._lock:
            if self._sink_thread is not None:
                return
            self._sink_thread = threading.Thread(
                target=self._sink_loop, name="modelworks-prediction-sink", daemon=True
            )
            self._sink_thread.start()

    def _sink_loop(self) -> None:
        q = self._sink_queue
        while True:
            entry = q.get()
            entries = [entry]
            while entry is not None and len(entries) < self._sink_batch:
                try:
                    entry = q.get_nowait()
                except queue.Empty:
                    break
                entries.append(entry)
            stop = entries[-1] is None
            records = [r for e in entries if e is not None for r in _records(e)]
            if records and self.prediction_sink is not None:
                try:
                    self.prediction_sink(records)
                except Exception:
                    self.sink_errors += 1
                    log.exception("the prediction sink failed on %d records", len(records))
            for _ in entries:
                q.task_done()
            if stop:
                return
            if len(entries) < self._sink_batch:
                # Let the next entries gather: one wake-up per interval rather than one per
                # request, each of which took the GIL from the event loop (the log's cost at
                # concurrency 1 went from +9% of p50 to within noise).
                time.sleep(SINK_INTERVAL_S)

    def flush_predictions(self, timeout: float = 10.0) -> bool:
        """Wait until every queued prediction reached the sink; False on timeout."""
        q = self._sink_queue
        deadline = time.monotonic() + timeout
        with q.all_tasks_done:
            while q.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                q.all_tasks_done.wait(left)
        return True

    async def wait_background(self) -> None:
        """Wait for the shadow requests started so far."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ---- shutdown --------------------------------------------------------------------
    async def aclose(self) -> None:
        """Finish every queued request (all deployments, and those being replaced), the
        shadows, and hand the last predictions to the sink."""
        self._closed = True
        with self._lock:
            served = [m for d in self._deployments.values() for m in d.models()]
            served += self._retired
            self._retired = []
        for model in served:
            with contextlib.suppress(Exception):
                await model.batcher.aclose()
        await self.wait_background()
        if self._sink_thread is not None:
            thread = self._sink_thread
            await asyncio.to_thread(self._sink_queue.put, None)
            await asyncio.to_thread(thread.join, 30.0)

    def __iter__(self) -> Iterator[Deployment]:
        return iter(self.deployments())


def _rows(payload: ModelInput, names: list[str]) -> list[dict[str, Any]]:
    data = payload.data
    if payload.kind == "records":
        return [dict(r) for r in data]
    if payload.kind == "columns":
        keys = list(data)
        return [{k: data[k][i] for k in keys} for i in range(payload.rows)]
    rows = data.tolist() if hasattr(data, "tolist") else list(data)
    if names:
        return [dict(zip(names, row, strict=False)) for row in rows]
    return [{"input": row} for row in rows]


def _records(entry: _LogEntry) -> list[PredictionRecord]:
    served, batch = entry.served, entry.batch
    runtime = served.runtime
    names = runtime.signature.input_names if runtime.signature else []
    if runtime.signature is not None and runtime.signature.is_tensor:
        names = []
    ts = datetime.fromtimestamp(entry.ts, UTC)
    probabilities = batch.probabilities
    out = []
    for i, inputs in enumerate(_rows(entry.payload, names)):
        outputs: dict[str, Any] = {"prediction": batch.predictions[i]}
        if probabilities is not None:
            outputs["probabilities"] = probabilities[i]
        out.append(
            PredictionRecord(
                request_id=entry.request_id,
                deployment=served.deployment,
                model_version=runtime.version,
                version_id=runtime.version_id,
                inputs=inputs,
                outputs=outputs,
                latency_ms=entry.latency_ms,
                ts=ts,
                role=served.role,
                row=i,
            )
        )
    return out
