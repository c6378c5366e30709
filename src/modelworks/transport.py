"""The SDK's two transports: embedded (services in-process) and remote (REST over httpx).

Both implement :class:`TrackingBackend`, the methods of
:class:`~modelworks.tracking.service.TrackingService` without the principal, and return the
same Pydantic objects and raise the same typed errors. The SDK above them
(:mod:`modelworks.client`) never knows which one it talks to.

>>> from modelworks.core.store import Store
>>> backend = embedded_tracking(Store())  # doctest: +SKIP
>>> backend = RemoteTracking(HttpClient("http://127.0.0.1:8080", token="mw_..."))  # doctest: +SKIP
>>> backend.get_run("01J...")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from modelworks import __version__
from modelworks.core.errors import (
    CorruptData,
    InvalidInput,
    ModelworksError,
    NotFound,
    ServiceUnavailable,
    error_from_problem,
)
from modelworks.core.schemas import Page
from modelworks.tracking.schemas import (
    ArtifactOut,
    ExperimentOut,
    MetricIn,
    MetricPoint,
    RunComparison,
    RunOut,
)

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.core.store import Store
    from modelworks.tracking.service import TrackingService

ArtifactSource = bytes | str | os.PathLike[str] | BinaryIO

API = "/api/v1"
RETRY_STATUSES = frozenset({502, 503, 504})
DOWNLOAD_CHUNK = 1024 * 1024
_ARTIFACTS = TypeAdapter(list[ArtifactOut])
_POINTS = TypeAdapter(list[MetricPoint])


class TrackingBackend(Protocol):
    """Every tracking operation, as the SDK sees it: TrackingService minus the principal."""

    def create_experiment(
        self, project: str, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> ExperimentOut: ...

    def get_experiment(self, project: str, ref: str) -> ExperimentOut: ...

    def list_experiments(
        self,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[ExperimentOut]: ...

    def update_experiment(
        self,
        project: str,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> ExperimentOut: ...

    def delete_experiment(self, project: str, ref: str) -> ExperimentOut: ...

    def restore_experiment(self, project: str, ref: str) -> ExperimentOut: ...

    def create_run(
        self,
        project: str,
        experiment: str,
        *,
        name: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        system_info: dict[str, Any] | None = None,
    ) -> RunOut: ...

    def get_run(self, run_id: str) -> RunOut: ...

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: datetime | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> RunOut: ...

    def delete_run(self, run_id: str) -> RunOut: ...

    def restore_run(self, run_id: str) -> RunOut: ...

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[MetricIn] = (),
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> None: ...

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]: ...

    def log_artifact(self, run_id: str, path: str, source: ArtifactSource) -> ArtifactOut: ...

    def log_artifacts(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactOut]: ...

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactOut]: ...

    def artifact_info(self, run_id: str, path: str) -> ArtifactOut: ...

    def read_artifact(self, run_id: str, path: str) -> bytes: ...

    def download_artifact(self, run_id: str, path: str, dest: str | os.PathLike[str]) -> Path: ...

    def search_runs(
        self,
        project: str,
        *,
        experiments: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        include_deleted: bool = False,
    ) -> Page[RunOut]: ...

    def compare_runs(
        self, run_ids: Sequence[str], metric_keys: Sequence[str] | None = None
    ) -> RunComparison: ...


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away on its own (server or database briefly unreachable)."""
    if isinstance(exc, ServiceUnavailable):
        return True
    if isinstance(exc, ModelworksError):
        return exc.status_code in RETRY_STATUSES
    if isinstance(exc, (httpx.TransportError, OSError)):
        return True
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import OperationalError

        # "database is locked" past the busy timeout, or a dropped PostgreSQL connection.
        return isinstance(exc, OperationalError)
    return False


# ---- embedded ------------------------------------------------------------------------------
def protocol_methods(protocol: type) -> frozenset[str]:
    """The public method names a backend protocol declares."""
    return frozenset(n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_"))


class PrincipalBound:
    """A service with the principal bound: every call runs in this process.

    Each method named in ``methods`` (a backend protocol's, see :func:`protocol_methods`) is
    the service's method with ``principal`` filled in, so the embedded side cannot drift from
    the service's signatures. Subclasses set ``methods`` and provide ``service``.
    """

    methods: frozenset[str] = frozenset()
    principal: Principal

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in type(self).methods:
            raise AttributeError(name)
        bound = functools.partial(getattr(self.service, name), self.principal)
        setattr(self, name, bound)  # resolve once per name
        return bound


class EmbeddedTracking(PrincipalBound):
    """TrackingService with the principal bound (see :class:`PrincipalBound`)."""

    methods = protocol_methods(TrackingBackend)

    def __init__(self, service: TrackingService, principal: Principal) -> None:
        self.service = service
        self.principal = principal


def embedded_tracking(store: Store, principal: Principal | None = None) -> TrackingBackend:
    """The tracking backend on ``store``, acting as ``principal`` (default: the OS user)."""
    from modelworks.core.auth import local_principal
    from modelworks.tracking.service import TrackingService

    backend = EmbeddedTracking(TrackingService(store), principal or local_principal())
    return cast(TrackingBackend, backend)


# ---- HTTP ----------------------------------------------------------------------------------
class HttpClient:
    """One keep-alive httpx client for a Modelworks server, with retries and typed errors.

    Retries (with exponential backoff and jitter) happen only where repeating is harmless:
    a connection that could not be opened is retried for every call; a dropped connection
    or a 502/503/504 answer only for idempotent calls.

    >>> http = HttpClient("https://mw.example.com", token="mw_...")  # doctest: +SKIP
    >>> http.request("GET", "/healthz").json()  # doctest: +SKIP
    {'status': 'ok', 'version': '0.1.0'}
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float | None = None,
        retries: int = 3,
        backoff_s: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidInput(
                f"Server URL {base_url!r} must start with http:// or https:// "
                "(for example http://127.0.0.1:8080)."
            )
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        headers = {"User-Agent": f"modelworks-python/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout
            if timeout is not None
            else httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=30.0),
            # Expire idle connections before the server's keep-alive (uvicorn: 5 s) does, so
            # a request is rarely sent on a connection the server is closing.
            limits=httpx.Limits(max_connections=20, keepalive_expiry=4.0),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        content: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (read fully); raise the typed error for a 4xx/5xx answer."""
        return self._send(
            method,
            path,
            idempotent=idempotent,
            json_body=json_body,
            params=params,
            content=content,
            headers=headers,
            stream=False,
        )

    @contextlib.contextmanager
    def stream(self, method: str, path: str) -> Iterator[httpx.Response]:
        """A streamed response (for downloads); the body is read by the caller."""
        resp = self._send(method, path, idempotent=True, stream=True)
        try:
            yield resp
        finally:
            resp.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        stream: bool,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        content: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        hdrs = dict(headers or {})
        body: bytes | None = None
        if json_body is not None:
            # Our own encoding: httpx refuses inf, which a metric may legitimately hold.
            body = json.dumps(json_body, separators=(",", ":"), default=str).encode()
            hdrs["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            with contextlib.ExitStack() as stack:
                data: Any = content() if content is not None else body
                if hasattr(data, "close"):
                    stack.callback(data.close)
                try:
                    req = self._client.build_request(
                        method, path, params=params, content=data, headers=hdrs
                    )
                    resp = self._client.send(req, stream=True)
                    if not stream or resp.status_code >= 400:
                        try:
                            resp.read()
                        finally:
                            resp.close()
                except httpx.TransportError as exc:
                    never_sent = isinstance(
                        exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
                    )
                    if (never_sent or idempotent) and attempt <= self.retries:
                        self._sleep(attempt, None)
                        continue
                    raise ServiceUnavailable(
                        f"Cannot reach the Modelworks server at {self.base_url} "
                        f"({type(exc).__name__}: {exc or 'no detail'}) for {method} {path}. "
                        "Check the URL and that the server is running (`modelworks server`)."
                    ) from exc
            if resp.status_code in RETRY_STATUSES and idempotent and attempt <= self.retries:
                resp.close()
                self._sleep(attempt, resp.headers.get("retry-after"))
                continue
            if resp.status_code >= 400:
                raise self._error(resp)
            return resp

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 10.0))
        time.sleep(delay)

    def _error(self, resp: httpx.Response) -> ModelworksError:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and ("code" in body or "detail" in body):
            return error_from_problem(status, body)
        what = f"{resp.request.method} {resp.request.url.path}"
        text = resp.text.strip()[:200]
        if status in RETRY_STATUSES:
            return ServiceUnavailable(
                f"The Modelworks server at {self.base_url} is unavailable (HTTP {status}) for "
                f"{what}; try again shortly. {text}".strip()
            )
        err = ModelworksError(f"{what} failed with HTTP {status}: {text or 'no detail'}")
        err.status_code = status
        return err


def _seg(value: str) -> str:
    """One URL path segment. Dot-only names are escaped so that no client or proxy folds
    ``..`` away; the server then sees (and rejects or accepts) exactly what was given."""
    if value and value.strip(".") == "":
        return "%2E" * len(value)
    return quote(value, safe="")


def _path(value: str) -> str:
    """A multi-segment path (artifact path, metric key) with each segment escaped."""
    return "/".join(_seg(part) for part in value.split("/"))


def _param_strings(params: dict[str, Any] | None) -> dict[str, str]:
    # The REST contract carries params as strings; str() is what the service applies too.
    return {k: v if isinstance(v, str) else str(v) for k, v in (params or {}).items()}


def _metric_json(m: MetricIn) -> dict[str, Any]:
    return {"key": m.key, "value": m.value, "step": m.step, "timestamp_ms": m.timestamp_ms}


# ---- remote --------------------------------------------------------------------------------
class RemoteTracking:
    """The tracking backend over the REST API (``/api/v1``) of a Modelworks server."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    # -- experiments
    def _exp_path(self, project: str, ref: str) -> str:
        if "/" in ref:
            # A '/' cannot travel in one path segment (servers decode %2F before routing),
            # so a name holding one is resolved to its id first.
            ref = self._experiment_id(project, ref)
        return f"{API}/projects/{_seg(project)}/experiments/{_seg(ref)}"

    def _experiment_id(self, project: str, name: str) -> str:
        token: str | None = None
        while True:
            page = self.list_experiments(
                project, include_deleted=True, max_results=1000, page_token=token
            )
            for exp in page.items:
                if name in (exp.name, exp.id):
                    return exp.id
            if not page.next_page_token:
                raise NotFound(
                    f"Experiment {name!r} does not exist in project {project!r}. "
                    "List experiments with `modelworks experiments list`."
                )
            token = page.next_page_token

    def create_experiment(
        self, project: str, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> ExperimentOut:
        resp = self.http.request(
            "POST",
            f"{API}/projects/{_seg(project)}/experiments",
            idempotent=False,
            json_body={"name": name, "description": description, "tags": dict(tags or {})},
        )
        return ExperimentOut.model_validate_json(resp.content)

    def get_experiment(self, project: str, ref: str) -> ExperimentOut:
        resp = self.http.request("GET", self._exp_path(project, ref), idempotent=True)
        return ExperimentOut.model_validate_json(resp.content)

    def list_experiments(
        self,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[ExperimentOut]:
        params: dict[str, Any] = {"include_deleted": include_deleted, "max_results": max_results}
        if page_token:
            params["page_token"] = page_token
        resp = self.http.request(
            "GET", f"{API}/projects/{_seg(project)}/experiments", idempotent=True, params=params
        )
        return Page[ExperimentOut].model_validate_json(resp.content)

    def update_experiment(
        self,
        project: str,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> ExperimentOut:
        body = {
            k: v
            for k, v in {"name": name, "description": description, "tags": tags}.items()
            if v is not None
        }
        resp = self.http.request(
            "PATCH", self._exp_path(project, ref), idempotent=True, json_body=body
        )
        return ExperimentOut.model_validate_json(resp.content)

    def delete_experiment(self, project: str, ref: str) -> ExperimentOut:
        resp = self.http.request("DELETE", self._exp_path(project, ref), idempotent=True)
        return ExperimentOut.model_validate_json(resp.content)

    def restore_experiment(self, project: str, ref: str) -> ExperimentOut:
        resp = self.http.request("POST", self._exp_path(project, ref) + "/restore", idempotent=True)
        return ExperimentOut.model_validate_json(resp.content)

    # -- runs
    def create_run(
        self,
        project: str,
        experiment: str,
        *,
        name: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        system_info: dict[str, Any] | None = None,
    ) -> RunOut:
        body = {
            "experiment": experiment,
            "name": name,
            "description": description,
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "params": _param_strings(params),
            "parent_run_id": parent_run_id,
            "system_info": dict(system_info or {}),
        }
        resp = self.http.request(
            "POST", f"{API}/projects/{_seg(project)}/runs", idempotent=False, json_body=body
        )
        return RunOut.model_validate_json(resp.content)

    def get_run(self, run_id: str) -> RunOut:
        resp = self.http.request("GET", f"{API}/runs/{_seg(run_id)}", idempotent=True)
        return RunOut.model_validate_json(resp.content)

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: datetime | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> RunOut:
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = status
        if end_time is not None:
            body["end_time"] = end_time.isoformat()
        if name is not None:
            body["name"] = name
        if description is not None:
            body["description"] = description
        resp = self.http.request(
            "PATCH", f"{API}/runs/{_seg(run_id)}", idempotent=True, json_body=body
        )
        return RunOut.model_validate_json(resp.content)

    def delete_run(self, run_id: str) -> RunOut:
        resp = self.http.request("DELETE", f"{API}/runs/{_seg(run_id)}", idempotent=True)
        return RunOut.model_validate_json(resp.content)

    def restore_run(self, run_id: str) -> RunOut:
        resp = self.http.request("POST", f"{API}/runs/{_seg(run_id)}/restore", idempotent=True)
        return RunOut.model_validate_json(resp.content)

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[MetricIn] = (),
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        if not metrics and not params and not tags:
            return
        body = {
            "metrics": [_metric_json(m) for m in metrics],
            "params": _param_strings(params),
            "tags": {k: str(v) for k, v in (tags or {}).items()},
        }
        # The key makes the request safe to resend: the server applies a batch once.
        key = idempotency_key or uuid.uuid4().hex
        self.http.request(
            "POST",
            f"{API}/runs/{_seg(run_id)}/log-batch",
            idempotent=True,
            json_body=body,
            headers={"Idempotency-Key": key},
        )

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        resp = self.http.request(
            "GET", f"{API}/runs/{_seg(run_id)}/metrics/{_path(key)}", idempotent=True
        )
        return _POINTS.validate_json(resp.content)

    # -- artifacts
    def _artifact_url(self, run_id: str, path: str) -> str:
        return f"{API}/runs/{_seg(run_id)}/artifacts/{_path(path)}"

    def log_artifact(self, run_id: str, path: str, source: ArtifactSource) -> ArtifactOut:
        content, rewindable = _body_factory(source)
        resp = self.http.request(
            "PUT",
            self._artifact_url(run_id, path),
            idempotent=rewindable,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return ArtifactOut.model_validate_json(resp.content)

    def log_artifacts(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactOut]:
        base = Path(local_dir)
        if not base.is_dir():
            raise InvalidInput(f"{str(base)!r} is not a folder.")
        out = []
        for f in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = f.relative_to(base).as_posix()
            out.append(
                self.log_artifact(run_id, f"{artifact_path}/{rel}" if artifact_path else rel, f)
            )
        return out

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactOut]:
        resp = self.http.request(
            "GET",
            f"{API}/runs/{_seg(run_id)}/artifacts",
            idempotent=True,
            params={"prefix": prefix} if prefix else None,
        )
        return _ARTIFACTS.validate_json(resp.content)

    def artifact_info(self, run_id: str, path: str) -> ArtifactOut:
        from modelworks.core.artifacts import validate_relative_path

        path = validate_relative_path(path)
        for art in self.list_artifacts(run_id, prefix=path):
            if art.path == path:
                return art
        raise NotFound(
            f"Run {run_id} has no artifact {path!r}; list them with "
            f"`modelworks runs artifacts {run_id}`."
        )

    def read_artifact(self, run_id: str, path: str) -> bytes:
        info = self.artifact_info(run_id, path)
        resp = self.http.request("GET", self._artifact_url(run_id, path), idempotent=True)
        data = resp.content
        actual = hashlib.sha256(data).hexdigest()
        if actual != info.sha256:
            raise _corrupt(run_id, path, info.sha256, actual)
        return data

    def download_artifact(self, run_id: str, path: str, dest: str | os.PathLike[str]) -> Path:
        """Stream the artifact to ``dest``, checked against its sha256; written atomically."""
        target = Path(dest)
        if target.is_dir():
            raise InvalidInput(
                f"Download destination {str(target)!r} is a folder; give a file path instead."
            )
        info = self.artifact_info(run_id, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            digest = hashlib.sha256()
            with (
                self.http.stream("GET", self._artifact_url(run_id, path)) as resp,
                open(tmp, "wb") as out,
            ):
                try:
                    for chunk in resp.iter_bytes(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                except httpx.TransportError as exc:
                    raise ServiceUnavailable(
                        f"The download of artifact {path!r} of run {run_id} broke off ({exc}); "
                        "nothing was written. Try again."
                    ) from exc
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != info.sha256:
                raise _corrupt(run_id, path, info.sha256, digest.hexdigest())
            os.replace(tmp, target)
            return target
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    # -- search and compare
    def search_runs(
        self,
        project: str,
        *,
        experiments: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        include_deleted: bool = False,
    ) -> Page[RunOut]:
        body = {
            "experiments": list(experiments) if experiments else None,
            "filter": filter,
            "order_by": list(order_by) if order_by else None,
            "max_results": max_results,
            "page_token": page_token,
            "include_deleted": include_deleted,
        }
        resp = self.http.request(
            "POST", f"{API}/projects/{_seg(project)}/runs/search", idempotent=True, json_body=body
        )
        return Page[RunOut].model_validate_json(resp.content)

    def compare_runs(
        self, run_ids: Sequence[str], metric_keys: Sequence[str] | None = None
    ) -> RunComparison:
        body = {
            "run_ids": list(run_ids),
            "metric_keys": list(metric_keys) if metric_keys else None,
        }
        resp = self.http.request("POST", f"{API}/runs/compare", idempotent=True, json_body=body)
        return RunComparison.model_validate_json(resp.content)


def _body_factory(source: ArtifactSource) -> tuple[Callable[[], Any], bool]:
    """A function giving a fresh request body per attempt, and whether a retry is possible.

    PUT of the same bytes to the same path is idempotent, so it may be retried, but only
    if the body can be produced again: bytes and files can, a one-shot stream cannot.
    """
    if isinstance(source, bytes):
        return (lambda: source), True
    if isinstance(source, (str, os.PathLike)):
        src = Path(source)
        if not src.is_file():
            raise InvalidInput(f"Artifact source {str(src)!r} is not a file.")
        # Streamed from disk in chunks; HttpClient closes the file after the request.
        return (lambda: open(src, "rb")), True
    stream = source
    start = stream.tell() if stream.seekable() else None

    def rewound() -> _Unclosable:
        if start is not None:
            stream.seek(start)
        return _Unclosable(stream)

    return rewound, start is not None


class _Unclosable:
    """A caller's file handed to httpx: read by it, but left open for the caller to close."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._f.read(65536):
            yield chunk


def _corrupt(run_id: str, path: str, expected: str, actual: str) -> CorruptData:
    return CorruptData(
        f"Artifact {path!r} of run {run_id} arrived damaged: its bytes hash to {actual}, "
        f"not {expected}. Nothing was written; try again.",
        sha256=expected,
    )


if TYPE_CHECKING:
    # mypy proves here that both transports implement the whole protocol.
    def _conforms(embedded: EmbeddedTracking, remote: RemoteTracking) -> list[TrackingBackend]:
        return [embedded, remote]
