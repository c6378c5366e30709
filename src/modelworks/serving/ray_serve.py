"""One model package as a Ray Serve application that scales its replicas with the load.

:func:`deploy_on_ray` turns what ``modelworks serve`` serves (a :class:`ServeSpec`, a
package folder or a registered version) into a Ray Serve application: every replica loads
the package once and runs the same app as the local model server
(:func:`~modelworks.serving.model_app.create_model_app` over
:func:`~modelworks.serving.serve_cli.build_host`), behind Serve's HTTP proxy, so the Open
Inference Protocol routes and ``POST /deployments/{name}/predict`` answer exactly as they do
locally. Serve's autoscaler keeps ``target_ongoing_requests`` requests per replica
(in flight or queued for it), between ``min_replicas`` and ``max_replicas``; Modelworks adds
no scheduling of its own.

How replicas get the package: by default the package folder travels as a zip inside the
application's definition (Serve's controller keeps it and hands it to every replica it
starts, on any node), and each replica unpacks it into a temporary folder of its node and
loads it from there (checksums and the trusted-type list apply as for a local load). That
suits packages up to :data:`MAX_SHIPPED_BYTES`; for larger ones pass ``ship_package=False``
and keep the package folder on a path every node can read (a shared filesystem), since
replicas then load ``spec.package_dir`` itself. Either way the nodes need Modelworks
installed (the replicas import it), as the cluster started from the same environment has.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import time
import warnings
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modelworks.core.errors import InvalidInput, ServiceUnavailable
from modelworks.serving.host import DEPLOYMENT_NAME, DeploymentConfig
from modelworks.serving.serve_cli import RAY_DEFAULTS, ServeSpec

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "MAX_SHIPPED_BYTES",
    "RayServeDeployment",
    "autoscaling_config",
    "deploy_on_ray",
    "package_archive",
    "require_ray_serve",
    "serve_on_ray",
]

MAX_SHIPPED_BYTES = 256 << 20


# ---- configuration ------------------------------------------------------------------------
def autoscaling_config(
    *,
    min_replicas: int = RAY_DEFAULTS["min_replicas"],
    max_replicas: int = RAY_DEFAULTS["max_replicas"],
    target_ongoing_requests: float = RAY_DEFAULTS["target_ongoing_requests"],
    upscale_delay_s: float = RAY_DEFAULTS["upscale_delay"],
    downscale_delay_s: float = RAY_DEFAULTS["downscale_delay"],
    look_back_period_s: float = RAY_DEFAULTS["look_back_period"],
    metrics_interval_s: float | None = None,
) -> dict[str, Any]:
    """Serve's ``autoscaling_config`` for these knobs, checked (``InvalidInput`` naming the
    knob that is wrong)."""
    if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
        raise InvalidInput(f"min_replicas must be an integer >= 0, not {min_replicas!r}.")
    if isinstance(max_replicas, bool) or not isinstance(max_replicas, int) or max_replicas < 1:
        raise InvalidInput(f"max_replicas must be an integer >= 1, not {max_replicas!r}.")
    if min_replicas > max_replicas:
        raise InvalidInput(
            f"min_replicas ({min_replicas}) is more than max_replicas ({max_replicas}); "
            f"raise max_replicas to at least {min_replicas} or lower min_replicas."
        )
    checks = (
        ("target_ongoing_requests", target_ongoing_requests, False),
        ("upscale_delay_s", upscale_delay_s, True),
        ("downscale_delay_s", downscale_delay_s, True),
        ("look_back_period_s", look_back_period_s, False),
    )
    for knob, value, zero_ok in checks:
        _number(knob, value, zero_ok=zero_ok)
    config: dict[str, Any] = {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_ongoing_requests": float(target_ongoing_requests),
        "upscale_delay_s": float(upscale_delay_s),
        "downscale_delay_s": float(downscale_delay_s),
        "look_back_period_s": float(look_back_period_s),
    }
    if metrics_interval_s is not None:
        _number("metrics_interval_s", metrics_interval_s, zero_ok=False)
        if metrics_interval_s >= look_back_period_s:
            raise InvalidInput(
                f"metrics_interval_s ({metrics_interval_s:g}) must be shorter than "
                f"look_back_period_s ({look_back_period_s:g}): the look-back window "
                "averages several reports."
            )
        config["metrics_interval_s"] = float(metrics_interval_s)
    return config


def _number(knob: str, value: Any, *, zero_ok: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise InvalidInput(f"{knob} must be a finite number {bound}, not {value!r}.")


def require_ray_serve() -> Any:
    """The ``ray`` module, once Ray Serve is known to import; else ``InvalidInput``."""
    try:
        import ray
        from ray import serve  # noqa: F401 - Serve is a separate extra of Ray
    except ImportError as exc:
        raise InvalidInput(
            "Serving on Ray needs Ray Serve, which is not installed: "
            "pip install 'modelworks[ray]' (or 'ray[serve]')."
        ) from exc
    return ray


# ---- the package on its way to the replicas ---------------------------------------------------
def package_archive(package_dir: str | os.PathLike[str]) -> bytes:
    """The package folder as zip bytes (what replicas unpack when it is shipped)."""
    root = Path(package_dir)
    if not (root / "model.yaml").is_file():
        raise InvalidInput(f"{root} is not a model package folder (it has no model.yaml).")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    data = buffer.getvalue()
    if len(data) > MAX_SHIPPED_BYTES:
        raise InvalidInput(
            f"The package {root} is {len(data) / (1 << 20):.0f} MiB zipped, more than the "
            f"{MAX_SHIPPED_BYTES >> 20} MiB shipped with a Ray Serve application; put it on a "
            "path every node can read and pass ship_package=False."
        )
    return data


def _unpack(archive: bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="modelworks-replica-"))
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for member in zf.namelist():  # our own archive, but never write outside the folder
            target = (folder / member).resolve()
            if not target.is_relative_to(folder.resolve()):
                raise InvalidInput(f"The shipped package has an unsafe path: {member!r}.")
        zf.extractall(folder)
    return folder


def replica_app(spec_json: str, archive: bytes | None, token: str | None) -> FastAPI:
    """What one replica serves: the model app over a host loaded from the spec (and the
    shipped package, when there is one). Runs in the replica, once."""
    from modelworks.serving.model_app import create_model_app
    from modelworks.serving.serve_cli import build_host, token_check_for

    spec = ServeSpec.model_validate_json(spec_json)
    if archive is not None:
        folder = _unpack(archive)
        spec = spec.model_copy(update={"package_dir": str(folder)})
    host = build_host(spec)
    if archive is not None:
        weakref.finalize(host, shutil.rmtree, spec.package_dir, True)
    return create_model_app(host, token_check=token_check_for(spec, token))


def _app_builder(spec_json: str, archive: bytes | None, token: str | None) -> Callable[[], Any]:
    # Serve calls an ingress builder with no arguments on each replica; a closure carries
    # the spec and the package there (pickled by value with the application).
    def build() -> Any:
        return replica_app(spec_json, archive, token)

    return build


# ---- the deployment --------------------------------------------------------------------------
@dataclass
class RayServeDeployment:
    """A model served as a Ray Serve application (see :func:`deploy_on_ray`)."""

    app_name: str
    deployment: str
    spec: ServeSpec
    url: str
    route_prefix: str
    _connected_here: bool = False

    def status(self) -> Any:
        """Serve's status of this deployment (``status``, ``replica_states``, ``message``)."""
        from ray import serve

        app = serve.status().applications.get(self.app_name)
        if app is None:
            raise ServiceUnavailable(
                f"Ray Serve has no application {self.app_name!r} (it was deleted or Serve "
                "was shut down)."
            )
        return app.deployments[self.deployment]

    def replicas(self, state: str = "RUNNING") -> int:
        """How many replicas are in ``state`` now (RUNNING: those taking requests)."""
        return int(self.status().replica_states.get(state, 0))

    def predict_url(self) -> str:
        """The plain JSON route of this deployment."""
        return f"{self.url}/deployments/{self.spec.name}/predict"

    def wait_for_replicas(
        self, condition: Callable[[int], bool], *, timeout: float = 60.0, poll: float = 0.25
    ) -> int:
        """Poll until ``condition(running replicas)`` holds; the count, or ``TimeoutError``
        with the last count seen."""
        deadline = time.monotonic() + timeout
        seen = self.replicas()
        while not condition(seen):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.app_name}: still {seen} running replicas after {timeout:g} s."
                )
            time.sleep(poll)
            seen = self.replicas()
        return seen

    def shutdown(self) -> None:
        """Delete the application from Serve (its replicas finish what they were asked,
        then stop), and disconnect from Ray if :func:`deploy_on_ray` connected."""
        import ray
        from ray import serve

        try:
            serve.delete(self.app_name)
        finally:
            if self._connected_here:
                ray.shutdown()


def _spec_for(
    spec_or_target: ServeSpec | str | os.PathLike[str],
    *,
    name: str | None,
    config: DeploymentConfig | None,
    project: str,
    trust: bool,
) -> ServeSpec:
    from modelworks.serving.serve_cli import serve_spec

    if isinstance(spec_or_target, ServeSpec):
        spec = spec_or_target
    else:
        _, spec = serve_spec(os.fspath(spec_or_target), project=project, trust=trust)
    updates: dict[str, Any] = {}
    if name is not None:
        updates["name"] = name
    if config is not None:
        updates["config"] = config
    spec = spec.model_copy(update=updates) if updates else spec
    if not DEPLOYMENT_NAME.match(spec.name):
        raise InvalidInput(
            f"Deployment name {spec.name!r} is not valid: start with a letter or digit and use "
            "only letters, digits, '_', '-' and '.' (at most 100 characters)."
        )
    return spec


def _failure(app_name: str) -> str:
    """The last line of the deployment's failure message: the replica's own error."""
    from ray import serve

    try:
        message = serve.status().applications[app_name].deployments[app_name].message
    except Exception:
        return ""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _proxy_url(ray: Any, route_prefix: str, fallback_host: str, fallback_port: int) -> str:
    host, port = fallback_host, fallback_port
    try:  # Serve may already run with other HTTP options: report the ones it uses
        from ray.serve.context import _get_global_client

        client: Any = _get_global_client()
        host, port = client.http_config.host, int(client.http_config.port)
    except Exception:  # noqa: S110 - a private API; the requested options are a fair guess
        pass
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - the proxy runs on the head node
        host = urlsplit(f"//{ray.get_runtime_context().gcs_address}").hostname or "127.0.0.1"
    prefix = "" if route_prefix == "/" else route_prefix.rstrip("/")
    return f"http://{host}:{port}{prefix}"


def deploy_on_ray(
    spec_or_target: ServeSpec | str | os.PathLike[str],
    *,
    address: str | None = None,
    name: str | None = None,
    config: DeploymentConfig | None = None,
    route_prefix: str = RAY_DEFAULTS["route_prefix"],
    min_replicas: int = RAY_DEFAULTS["min_replicas"],
    max_replicas: int = RAY_DEFAULTS["max_replicas"],
    target_ongoing_requests: float = RAY_DEFAULTS["target_ongoing_requests"],
    upscale_delay_s: float = RAY_DEFAULTS["upscale_delay"],
    downscale_delay_s: float = RAY_DEFAULTS["downscale_delay"],
    look_back_period_s: float = RAY_DEFAULTS["look_back_period"],
    metrics_interval_s: float | None = None,
    max_ongoing_requests: int | None = None,
    replica_cpus: float = RAY_DEFAULTS["replica_cpus"],
    http_host: str = "127.0.0.1",
    http_port: int = 8000,
    ship_package: bool = True,
    token: str | None = None,
    graceful_shutdown_s: float = 20.0,
    project: str = "default",
    trust: bool = False,
) -> RayServeDeployment:
    """Serve a model package on the Ray cluster at ``address`` as a Serve application that
    autoscales; returns once its first replicas are running.

    ``spec_or_target``: a :class:`ServeSpec` (as ``modelworks serve`` builds it), a package
    folder or a registered version (``churn@champion``, resolved here, in ``project``).
    ``address`` defaults to ``MODELWORKS_RAY_ADDRESS`` (unused when this process is already
    connected to Ray). The application is named after the
    deployment (``name``, default the model's) and answers under ``route_prefix`` on Serve's
    HTTP proxy; ``http_host``/``http_port`` apply when this call starts Serve on the cluster
    (a running Serve keeps its own; ``.url`` is what it uses).

    Autoscaling: between ``min_replicas`` and ``max_replicas``, aiming at
    ``target_ongoing_requests`` requests per replica averaged over ``look_back_period_s``;
    it adds replicas after the load stayed high for ``upscale_delay_s`` and removes them after
    it stayed low for ``downscale_delay_s``. ``max_ongoing_requests`` caps the requests one
    replica takes at once (default: twice the target, at least 5; more lets its batcher
    coalesce more). ``replica_cpus``: CPUs Ray reserves per replica. ``token``: the bearer
    token every model route requires (default ``MODELWORKS_SERVE_TOKEN``).
    """
    scaling = autoscaling_config(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing_requests,
        upscale_delay_s=upscale_delay_s,
        downscale_delay_s=downscale_delay_s,
        look_back_period_s=look_back_period_s,
        metrics_interval_s=metrics_interval_s,
    )
    if max_ongoing_requests is None:
        max_ongoing_requests = max(5, math.ceil(2 * float(target_ongoing_requests)))
    elif max_ongoing_requests < 1:
        raise InvalidInput(f"max_ongoing_requests must be >= 1, not {max_ongoing_requests!r}.")
    _number("replica_cpus", replica_cpus, zero_ok=True)
    _number("graceful_shutdown_s", graceful_shutdown_s, zero_ok=True)
    if not route_prefix.startswith("/"):
        raise InvalidInput(
            f"route_prefix must start with '/', e.g. '/churn'; not {route_prefix!r}."
        )
    if not 1 <= http_port <= 65535:
        raise InvalidInput(f"http_port must be a TCP port (1-65535), not {http_port!r}.")
    ray = require_ray_serve()
    from ray import serve

    from modelworks.core.config import get_settings
    from modelworks.serving.serve_cli import TOKEN_ENV

    connected_here = not ray.is_initialized()  # else: serve where this process is connected
    address = address or get_settings().ray_address
    if connected_here and not address:
        raise InvalidInput(
            "No Ray cluster to serve on: pass --ray-address (address=) or set "
            "MODELWORKS_RAY_ADDRESS, e.g. 127.0.0.1:6379 or ray://head:10001."
        )
    spec = _spec_for(spec_or_target, name=name, config=config, project=project, trust=trust)
    archive = package_archive(spec.package_dir) if ship_package else None
    token = token if token is not None else os.environ.get(TOKEN_ENV)

    if connected_here:
        try:
            ray.init(address=address, logging_level="warning", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ServiceUnavailable(
                f"Could not connect to the Ray cluster at {address!r}: {exc}. Check that it "
                "runs (`ray status`) and that the address is its GCS address."
            ) from exc
    try:
        serve.start(http_options={"host": http_host, "port": http_port})
        with warnings.catch_warnings():  # metrics_interval_s is deprecated but still honoured
            warnings.simplefilter("ignore", DeprecationWarning)
            ingress = serve.ingress(_app_builder(spec.model_dump_json(), archive, token))()
            deployment: Any = serve.deployment(
                ingress,
                name=spec.name,
                autoscaling_config=scaling,
                max_ongoing_requests=max_ongoing_requests,
                ray_actor_options={"num_cpus": float(replica_cpus)},
                graceful_shutdown_timeout_s=float(graceful_shutdown_s),
            )
        try:
            serve.run(deployment.bind(), name=spec.name, route_prefix=route_prefix, blocking=False)
        except RuntimeError as exc:  # a replica failed to start
            raise ServiceUnavailable(
                f"Ray Serve could not start {spec.name!r}: {_failure(spec.name) or exc} "
                "(more in the replica logs, under the cluster's session logs/serve/)."
            ) from exc
        url = _proxy_url(ray, route_prefix, http_host, http_port)
    except BaseException:
        if connected_here:
            ray.shutdown()
        raise
    return RayServeDeployment(
        app_name=spec.name,
        deployment=spec.name,
        spec=spec,
        url=url,
        route_prefix=route_prefix,
        _connected_here=connected_here,
    )


# ---- ``modelworks serve --ray`` ------------------------------------------------------------
def serve_on_ray(
    spec: ServeSpec,
    *,
    address: str | None,
    http_host: str,
    http_port: int,
    graceful_shutdown_s: float,
    min_replicas: int,
    max_replicas: int,
    target_ongoing_requests: float,
    upscale_delay: float,
    downscale_delay: float,
    replica_cpus: float,
    route_prefix: str,
    detach: bool,
) -> None:
    """Deploy ``spec`` on Ray and, unless ``detach``, stay in the foreground reporting the
    replica count until SIGINT/SIGTERM, then delete the application."""
    import signal
    import threading

    from modelworks.cli.output import err_console

    dep = deploy_on_ray(
        spec,
        address=address,
        route_prefix=route_prefix,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing_requests,
        upscale_delay_s=upscale_delay,
        downscale_delay_s=downscale_delay,
        replica_cpus=replica_cpus,
        http_host=http_host,
        http_port=http_port,
        graceful_shutdown_s=graceful_shutdown_s,
        trust=spec.trust,
    )
    err_console.print(
        f"Serving {spec.version} as {spec.name!r} on Ray Serve at {dep.url} "
        f"(POST {dep.predict_url()}; {min_replicas}-{max_replicas} replicas, "
        f"target {target_ongoing_requests:g} requests in flight each)",
        soft_wrap=True,
    )
    if detach:
        err_console.print(
            f"The application {dep.app_name!r} stays on the cluster; remove it with "
            f"`serve shutdown` or ray.serve.delete({dep.app_name!r}).",
            soft_wrap=True,
        )
        return
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        seen = dep.replicas()
        while not stop.wait(2.0):
            now = dep.replicas()
            if now != seen:
                err_console.print(f"{spec.name}: {seen} -> {now} replicas running")
                seen = now
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        err_console.print(f"Deleting the application {dep.app_name!r} from Ray Serve...")
        dep.shutdown()
