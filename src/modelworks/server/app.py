"""The FastAPI application: every domain's router, error mapping, health and metrics."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from modelworks import __version__
from modelworks.core.errors import ModelworksError
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.transform_service import TransformService
from modelworks.governance.service import GovernanceService
from modelworks.server.auth_rules import auth_rule
from modelworks.server.middleware import (
    BodySizeLimitMiddleware,
    PrometheusMiddleware,
    RequestIdMiddleware,
)
from modelworks.tracking.service import TrackingService

log = logging.getLogger("modelworks.server")
PROBLEM = "application/problem+json"


def create_app(
    store: Store | None = None, *, run_jobs: bool = True, serve_deployments: bool = True
) -> FastAPI:
    """Build the server app on ``store`` (default: the store from the environment).

    ``run_jobs``: while the app is served, a job runner thread runs the queued local jobs.
    ``serve_deployments``: the app serves the deployments (``/deployments/{name}/predict``,
    ``/v2/models/{name}/infer``), loading and swapping models as aliases move.
    """
    from modelworks.serving.mount import deployments_lifespan
    from modelworks.training.jobs.runner import runner_lifespan
    from modelworks.training.jobs.service import JobService

    store = store or Store()
    jobs_lifespan = runner_lifespan(store) if run_jobs else None
    app = FastAPI(
        lifespan=deployments_lifespan(jobs_lifespan) if serve_deployments else jobs_lifespan,
        title="Modelworks",
        version=__version__,
        description="The Modelworks REST API. Authenticate with 'Authorization: Bearer <token>'.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.state.governance = GovernanceService(store)
    app.state.tracking = TrackingService(store)
    app.state.data = DataService(store)
    app.state.transforms = TransformService(store)
    app.state.jobs = JobService(store)

    _install_error_handlers(app)
    _install_probes(app)

    from modelworks.data.api import UPLOAD_PATH
    from modelworks.data.api import router as data_router
    from modelworks.governance.api import router as governance_router
    from modelworks.registry.api import UPLOAD_PATH as PACKAGE_UPLOAD_PATH
    from modelworks.registry.api import router as registry_router
    from modelworks.registry.ui import router as registry_ui_router
    from modelworks.server.ui import router as ui_router
    from modelworks.tracking.api import router as tracking_router
    from modelworks.training.api import router as training_router
    from modelworks.training.ui import router as training_ui_router

    app.include_router(governance_router)
    app.include_router(tracking_router)
    app.include_router(data_router)
    from modelworks.training.jobs.api import router as jobs_router

    app.include_router(jobs_router)
    app.include_router(training_router)
    app.include_router(registry_router)
    from modelworks.serving.api import router as deployments_router

    app.include_router(deployments_router)
    if serve_deployments:
        from modelworks.serving.mount import install_deployments

        install_deployments(app, store)
    app.include_router(ui_router)
    app.include_router(training_ui_router)
    app.include_router(registry_ui_router)
    from modelworks.serving.ui import router as deployments_ui_router

    app.include_router(deployments_ui_router)
    from modelworks.server.ui import mount_static

    mount_static(app)

    app.add_middleware(
        SessionMiddleware,
        secret_key=store.settings.effective_secret_key(),
        session_cookie="modelworks_session",
        max_age=store.settings.session_ttl_seconds,
        same_site="lax",
        https_only=False,
    )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=store.settings.max_request_bytes,
        overrides=[
            (r"/api/v1/runs/[^/]+/artifacts/.+", store.settings.max_artifact_bytes),
            (UPLOAD_PATH, store.settings.max_artifact_bytes),
            (PACKAGE_UPLOAD_PATH, store.settings.max_artifact_bytes),
        ],
    )
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(PrometheusMiddleware)
    return app


def problem_response(err: ModelworksError, request: Request) -> JSONResponse:
    return JSONResponse(
        err.to_problem(instance=request.url.path), status_code=err.status_code, media_type=PROBLEM
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelworksError)
    async def _mw_error(request: Request, exc: ModelworksError) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        malformed = any(e["type"] == "json_invalid" for e in errors)
        parts = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors[:10]
        )
        detail = (
            f"The request body is not valid JSON ({parts})."
            if malformed
            else f"The request does not match the API: {parts}."
        )
        body: dict[str, Any] = {
            "type": "https://modelworks.dev/errors/invalid_input",
            "title": "Invalid input",
            "status": 400 if malformed else 422,
            "detail": detail,
            "code": "invalid_input",
            "errors": errors,
            "instance": request.url.path,
        }
        return JSONResponse(body, status_code=body["status"], media_type=PROBLEM)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404:
            detail = f"No route {request.method} {request.url.path}; see /docs for the API."
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs."
        body = {
            "type": "about:blank",
            "title": detail,
            "status": exc.status_code,
            "detail": detail,
            "code": "not_found" if exc.status_code == 404 else "http_error",
            "instance": request.url.path,
        }
        return JSONResponse(body, status_code=exc.status_code, media_type=PROBLEM)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {
            "type": "https://modelworks.dev/errors/internal_error",
            "title": "Internal error",
            "status": 500,
            "detail": "The server hit an unexpected error; it was logged. Nothing was changed.",
            "code": "internal_error",
            "instance": request.url.path,
        }
        return JSONResponse(body, status_code=500, media_type=PROBLEM)


def _install_probes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["ops"], **auth_rule("public"))
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"], **auth_rule("public"))
    def readyz(request: Request) -> JSONResponse:
        """Readiness: the metadata database answers."""
        from sqlalchemy import text

        try:
            with request.app.state.store.transaction() as s:
                s.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["ops"], **auth_rule("public"))
    def metrics(request: Request) -> PlainTextResponse:
        """Prometheus metrics: the server's, and the deployments' (requests, latency,
        errors, batch sizes, queue depth, model versions)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest()
        models = getattr(request.app.state, "model_metrics", None)
        if models is not None:
            body += generate_latest(models)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
