"""``modelworks serve``: one model behind the model server (OIP V2 and plain JSON).

The target is a package folder or a registered version (``churn@champion``, ``churn@3``),
downloaded once into the verified local cache. With ``--workers N``, uvicorn runs N worker
processes from the app factory :func:`create_app_from_env`; the parent resolves the
target and hands the workers its folder and settings through ``MODELWORKS_SERVE_SPEC``,
so each loads the package itself. Shutting down (SIGINT/SIGTERM) stops accepting
connections, answers what is queued (the batchers drain in the app's lifespan) and exits.

``MODELWORKS_SERVE_TOKEN``, when set, is the bearer token every model route requires.

With ``--ray`` (the cluster at ``MODELWORKS_RAY_ADDRESS``) or ``--ray-address ADDRESS`` the
same spec becomes a Ray Serve application that autoscales (see
:mod:`modelworks.serving.ray_serve`); the local path never imports Ray. The setting is used
only when ``--ray`` asks for it, so a cluster configured for training jobs does not move
``modelworks serve`` off the machine.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict

from modelworks.serving.host import DeploymentConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modelworks.serving.host import ModelHost
    from modelworks.serving.model_app import TokenCheck
    from modelworks.training.package import ModelPackage

__all__ = [
    "SPEC_ENV",
    "TOKEN_ENV",
    "ServeSpec",
    "build_host",
    "create_app_from_env",
    "resolve_target",
    "serve",
    "serve_spec",
]

RAY_PANEL = "On a Ray cluster (Ray Serve)"
# The Ray options' defaults: any other value without --ray/--ray-address is a mistake.
RAY_DEFAULTS: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 4,
    "target_ongoing_requests": 2.0,
    "upscale_delay": 30.0,
    "downscale_delay": 600.0,
    "look_back_period": 30.0,
    "replica_cpus": 1.0,
    "route_prefix": "/",
    "detach": False,
}
SPEC_ENV = "MODELWORKS_SERVE_SPEC"
TOKEN_ENV = "MODELWORKS_SERVE_TOKEN"  # noqa: S105 - the variable's name, not a token
MiB = 1 << 20


class ServeSpec(BaseModel):
    """What a model server process serves (the parent's resolved ``modelworks serve``)."""

    model_config = ConfigDict(extra="forbid")

    package_dir: str
    name: str
    version: str
    version_id: str = ""
    config: DeploymentConfig = DeploymentConfig()
    use_onnx: bool | None = None
    trust: bool = False
    threads: int = 1
    # sha256 of the deployment tokens accepted (serving a named deployment: its live tokens
    # when the server started; a token revoked later works here until a restart).
    token_hashes: list[str] = []


def _is_deployment_name(target: str) -> bool:
    """A plain name (no ``@``, no ``/``) that is no folder here: a deployment."""
    from modelworks.serving.host import DEPLOYMENT_NAME

    return bool(DEPLOYMENT_NAME.match(target)) and not Path(target).exists()


def _deployment_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._") or "model"
    return name[:100]


def resolve_target(
    target: str, *, project: str = "default", trust: bool = False
) -> tuple[ModelPackage, str, str, str]:
    """``(package, default deployment name, version, version id)`` for a package folder or
    a registered version reference."""
    from modelworks.training.package import load_package

    path = Path(target).expanduser()
    if path.is_dir():
        pkg = load_package(path, trust=trust)
        return pkg, _deployment_name(path.resolve().name), path.resolve().name, ""
    from modelworks.cli import open_store, principal
    from modelworks.registry.evaluations import EvaluationService

    with open_store() as store:
        version, pkg = EvaluationService(store).load(principal(), project, target)
    return pkg, _deployment_name(version.model), version.ref, version.id


def resolve_deployment(
    name: str, *, project: str = "default", trust: bool = False
) -> tuple[ModelPackage, ServeSpec]:
    """A named deployment's package and what serving it alone means: its version now, its
    config (without canary and shadow, which only ``modelworks server`` runs) and its live
    tokens, which every request must then carry."""
    from modelworks.cli import open_store, principal
    from modelworks.core.errors import InvalidInput
    from modelworks.registry.evaluations import EvaluationService
    from modelworks.serving.service import DeploymentService

    with open_store() as store:
        who = principal()
        service = DeploymentService(store)
        deployment = service.get(who, project, name)
        hashes = service.token_hashes(who, project, name)
        version, pkg = EvaluationService(store).load(who, project, deployment.ref)
    if not hashes and not os.environ.get(TOKEN_ENV):
        raise InvalidInput(
            f"Deployment {name!r} has no live token, so nobody could call it: create one "
            f"with `modelworks deployments token create {name}` (or set {TOKEN_ENV})."
        )
    config = DeploymentConfig.model_validate(deployment.config)
    if config.canary is not None or config.shadow is not None:
        from modelworks.cli.output import err_console

        err_console.print(
            f"Deployment {name!r} has a canary or a shadow: serving {version.ref} alone here "
            "(`modelworks server` runs rollouts).",
            soft_wrap=True,
        )
        config = config.model_copy(update={"canary": None, "shadow": None})
    spec = ServeSpec(
        package_dir=str(pkg.path),
        name=deployment.name,
        version=version.ref,
        version_id=version.id,
        config=config,
        trust=trust,
        token_hashes=sorted(hashes),
    )
    return pkg, spec


def serve_spec(
    target: str,
    *,
    name: str | None = None,
    config: DeploymentConfig | None = None,
    project: str = "default",
    trust: bool = False,
    use_onnx: bool | None = None,
    threads: int = 1,
) -> tuple[ModelPackage, ServeSpec]:
    """The package and the :class:`ServeSpec` for ``target``: a deployment's name (its
    version, config and tokens), a package folder or a registered version (served as
    ``name`` with ``config``)."""
    from modelworks.core.errors import InvalidInput

    if _is_deployment_name(target):
        if name:
            raise InvalidInput(
                f"{target!r} is a deployment, served under its own name; leave out --name."
            )
        pkg, spec = resolve_deployment(target, project=project, trust=trust)
        return pkg, spec.model_copy(update={"use_onnx": use_onnx, "threads": threads})
    pkg, default_name, version, version_id = resolve_target(target, project=project, trust=trust)
    deployment = _deployment_name(name) if name else default_name
    if name and deployment != name:
        raise InvalidInput(
            f"--name {name!r} is not a valid deployment name; use letters, digits, '_', "
            f"'-' and '.', e.g. {deployment!r}."
        )
    spec = ServeSpec(
        package_dir=str(pkg.path),
        name=deployment,
        version=version,
        version_id=version_id,
        config=config or DeploymentConfig(),
        use_onnx=use_onnx,
        trust=trust,
        threads=threads,
    )
    return pkg, spec


def build_host(spec: ServeSpec, package: ModelPackage | None = None) -> ModelHost:
    """A host serving ``spec``'s package (loaded from ``spec.package_dir`` unless given),
    warmed up."""
    from modelworks.core.errors import InvalidInput
    from modelworks.serving.host import ModelHost
    from modelworks.serving.runtime import ModelRuntime
    from modelworks.training.package import load_package

    pkg = package or load_package(spec.package_dir, trust=spec.trust)
    runtime = ModelRuntime(
        pkg,
        name=spec.name,
        version=spec.version,
        version_id=spec.version_id,
        use_onnx=spec.use_onnx,
        threads=spec.threads,
    )
    with contextlib.suppress(InvalidInput):  # no signature: the first request warms it up
        runtime.warmup()
    host = ModelHost()
    host.put(spec.name, runtime, spec.config)
    return host


def static_token_check(expected: str) -> TokenCheck:
    """A token check that accepts one shared token, for every deployment."""

    def check(token: str | None, deployment: str) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), expected.encode())

    return check


def token_check_for(spec: ServeSpec, shared: str | None) -> TokenCheck | None:
    """Who may call: the ``shared`` token (``MODELWORKS_SERVE_TOKEN``), the deployment's
    own tokens (``spec.token_hashes``), either, or anyone when there are neither."""
    from modelworks.serving.service import hash_token

    hashes = frozenset(spec.token_hashes)
    if not shared and not hashes:
        return None
    same = static_token_check(shared) if shared else None

    def check(token: str | None, deployment: str) -> bool:
        if token is None:
            return False
        return bool(same and same(token, deployment)) or hash_token(token) in hashes

    return check


def create_app_from_env() -> FastAPI:
    """The uvicorn app factory for worker processes: serves ``MODELWORKS_SERVE_SPEC``."""
    from modelworks.core.errors import InvalidInput
    from modelworks.serving.model_app import create_model_app

    raw = os.environ.get(SPEC_ENV)
    if not raw:
        raise InvalidInput(
            f"{SPEC_ENV} is not set; start model servers with `modelworks serve TARGET`."
        )
    spec = ServeSpec.model_validate_json(raw)
    return create_model_app(
        build_host(spec), token_check=token_check_for(spec, os.environ.get(TOKEN_ENV))
    )


def _check_ray_options(on_ray: bool, given: dict[str, Any], workers: int) -> None:
    from modelworks.core.errors import InvalidInput

    if on_ray:
        if workers != 1:
            raise InvalidInput(
                "--workers is for the local server; on Ray the replicas are the workers: "
                "use --min-replicas and --max-replicas."
            )
        from modelworks.serving.ray_serve import autoscaling_config, require_ray_serve

        require_ray_serve()
        autoscaling_config(
            min_replicas=given["min_replicas"],
            max_replicas=given["max_replicas"],
            target_ongoing_requests=given["target_ongoing_requests"],
            upscale_delay_s=given["upscale_delay"],
            downscale_delay_s=given["downscale_delay"],
        )
        return
    changed = [k for k, v in given.items() if v != RAY_DEFAULTS[k]]
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise InvalidInput(
            f"{flags} only apply on a Ray cluster; add --ray (MODELWORKS_RAY_ADDRESS) or "
            "--ray-address ADDRESS."
        )


def serve(
    target: Annotated[
        str,
        typer.Argument(
            help="A model package folder, a registered version (churn@champion, churn@3), "
            "or a deployment's name (churn-prod: its version, config and tokens)."
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Interface to listen on; 0.0.0.0 for every interface.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    name: Annotated[
        str | None,
        typer.Option(help="Deployment name in the URLs (default: the model's name)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes, each with its own copy of the model.")
    ] = 1,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most rows predicted in one model call.")
    ] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="How long a request may wait for others to batch with (0: requests that "
            "arrive while the model runs share its next call).",
        ),
    ] = 0.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Waiting requests before new ones get 503.")
    ] = 1024,
    max_request_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body (413 above).")
    ] = MiB,
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Requests per second (429 above).")
    ] = None,
    onnx: Annotated[
        bool | None,
        typer.Option(
            "--onnx/--no-onnx",
            help="Run the package's ONNX export (default: when it has one and it is faster).",
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="Threads per model call (ONNX Runtime, LightGBM).")
    ] = 1,
    project: Annotated[
        str, typer.Option("--project", "-p", help="Project of a registered model.")
    ] = "default",
    trust: Annotated[
        bool, typer.Option(help="Load packages that can run code (pickles): only your own.")
    ] = False,
    graceful_timeout: Annotated[
        int, typer.Option(min=0, help="Seconds to finish in-flight requests on shutdown.")
    ] = 30,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log a line per request (off by default: it cost about a third of the "
            "server's CPU per prediction; /metrics and the prediction log count requests).",
        ),
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Serve on the Ray cluster at MODELWORKS_RAY_ADDRESS, as a Ray Serve "
            "application that autoscales (--host/--port: Serve's HTTP proxy).",
            rich_help_panel=RAY_PANEL,
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Serve on the Ray cluster at this address (implies --ray).",
            rich_help_panel=RAY_PANEL,
        ),
    ] = None,
    min_replicas: Annotated[
        int, typer.Option(min=0, help="Fewest replicas on Ray.", rich_help_panel=RAY_PANEL)
    ] = RAY_DEFAULTS["min_replicas"],
    max_replicas: Annotated[
        int, typer.Option(min=1, help="Most replicas on Ray.", rich_help_panel=RAY_PANEL)
    ] = RAY_DEFAULTS["max_replicas"],
    target_ongoing_requests: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Requests in flight per replica that Ray Serve's autoscaler aims at.",
            rich_help_panel=RAY_PANEL,
        ),
    ] = RAY_DEFAULTS["target_ongoing_requests"],
    upscale_delay: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds the load must stay high before replicas are added.",
            rich_help_panel=RAY_PANEL,
        ),
    ] = RAY_DEFAULTS["upscale_delay"],
    downscale_delay: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds the load must stay low before replicas are removed.",
            rich_help_panel=RAY_PANEL,
        ),
    ] = RAY_DEFAULTS["downscale_delay"],
    replica_cpus: Annotated[
        float,
        typer.Option(min=0, help="CPUs Ray reserves per replica.", rich_help_panel=RAY_PANEL),
    ] = RAY_DEFAULTS["replica_cpus"],
    route_prefix: Annotated[
        str,
        typer.Option(
            help="Path the application answers under on Serve's proxy.",
            rich_help_panel=RAY_PANEL,
        ),
    ] = RAY_DEFAULTS["route_prefix"],
    detach: Annotated[
        bool,
        typer.Option(
            help="Return once deployed and leave the application on the cluster (else "
            "Ctrl-C deletes it).",
            rich_help_panel=RAY_PANEL,
        ),
    ] = RAY_DEFAULTS["detach"],
) -> None:
    """Serve a model over HTTP: Open Inference Protocol V2 and plain JSON predictions.

    Routes: POST /deployments/NAME/predict with {"records": [{...}]}, POST
    /v2/models/NAME/infer, GET /v2/models/NAME, GET /v2/health/ready, GET /metrics.
    Concurrent requests are batched into one model call. Set MODELWORKS_SERVE_TOKEN to
    require 'Authorization: Bearer <token>'. A deployment's name serves what the deployment
    serves now, with its config, and takes its tokens (as they are at start).

    With --ray (or --ray-address), the model runs as a Ray Serve application whose
    replicas scale between --min-replicas and --max-replicas with the load, behind Serve's
    HTTP proxy, with the same routes.

    Example:
      modelworks serve churn@champion --port 8080 --workers 2
      curl -d '{"records": [{"tenure": 3}]}' localhost:8080/deployments/churn/predict
      modelworks serve churn-prod --ray-address 127.0.0.1:6379 --max-replicas 4
    """
    import uvicorn

    from modelworks.cli.output import err_console

    on_ray = ray or ray_address is not None
    given: dict[str, Any] = {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_ongoing_requests": target_ongoing_requests,
        "upscale_delay": upscale_delay,
        "downscale_delay": downscale_delay,
        "replica_cpus": replica_cpus,
        "route_prefix": route_prefix,
        "detach": detach,
    }
    _check_ray_options(on_ray, given, workers)
    config = DeploymentConfig(
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_request_bytes=max_request_bytes,
        rate_limit_per_s=rate_limit,
    )
    pkg, spec = serve_spec(
        target, name=name, config=config, project=project, trust=trust, use_onnx=onnx,
        threads=threads,
    )  # fmt: skip
    version, deployment = spec.version, spec.name
    if on_ray:
        from modelworks.serving.ray_serve import serve_on_ray

        del pkg  # the replicas load their own copies
        serve_on_ray(
            spec,
            address=ray_address,
            http_host=host,
            http_port=port,
            graceful_shutdown_s=graceful_timeout,
            **given,
        )
        return
    err_console.print(
        f"Serving {version} as {deployment!r} on http://{host}:{port} "
        f"(POST /deployments/{deployment}/predict, /v2/models/{deployment}/infer; docs at /docs)",
        soft_wrap=True,
    )
    options = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": access_log,
        "timeout_graceful_shutdown": graceful_timeout,
    }
    if workers == 1:
        from modelworks.serving.model_app import create_model_app

        app = create_model_app(
            build_host(spec, pkg), token_check=token_check_for(spec, os.environ.get(TOKEN_ENV))
        )
        uvicorn.run(app, **options)  # type: ignore[arg-type]
        return
    del pkg  # each worker loads its own copy; the supervisor holds none
    os.environ[SPEC_ENV] = spec.model_dump_json()
    uvicorn.run(
        "modelworks.serving.serve_cli:create_app_from_env",
        factory=True,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )
