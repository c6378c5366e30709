"""Deployments inside ``modelworks server``: the model app's inference routes on the main
app, a :class:`DeploymentManager` that loads and swaps models, the prediction log, and the
feedback route.

The inference routes are the model app's own (:func:`create_model_app`), moved onto the main
app so one port serves the REST API, the UI and predictions. Who may call them: a token
scoped to the deployment, or a user API token with at least the viewer role in the
deployment's project (marked ``viewer`` for the authorisation matrix).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from modelworks.core.errors import InvalidInput, PermissionDenied, Unauthenticated
from modelworks.core.store import Store
from modelworks.server.auth_rules import AUTH_KEY


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    ground_truth: Any = Field(description="The true value for that request's prediction")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return token.strip()


def install_deployments(app: FastAPI, store: Store, *, interval: float = 2.0) -> None:
    """Add the inference and feedback routes to ``app`` and keep what it serves in step
    with the deployments table while the app runs (see :func:`deployments_lifespan`)."""
    from modelworks.serving.host import ModelHost
    from modelworks.serving.manager import DeploymentManager
    from modelworks.serving.model_app import complete_openapi, create_model_app
    from modelworks.serving.predlog import PredictionLog

    predlog = PredictionLog(store)
    host = ModelHost(prediction_sink=predlog.append)
    manager = DeploymentManager(store, host, interval=interval)
    model_app = create_model_app(host, token_check=manager.check_token, close_host=False)
    for route in model_app.routes:
        if not isinstance(route, APIRoute):
            continue
        if not (route.path.startswith("/v2") or route.path.startswith("/deployments/")):
            continue  # /metrics, /docs: the main app has its own
        public = route.path in ("/v2", "/v2/health/live", "/v2/health/ready")
        rule = "public" if public else "viewer"
        route.openapi_extra = {**(route.openapi_extra or {}), AUTH_KEY: rule}
        app.router.routes.append(route)
    complete_openapi(app, bearer=True)  # the moved routes refer to its schemas
    app.state.model_host = host
    app.state.deployment_manager = manager
    app.state.prediction_log = predlog
    app.state.model_metrics = model_app.state.metrics.registry

    @app.post(
        "/deployments/{name}/feedback",
        status_code=204,
        tags=["predict"],
        openapi_extra={AUTH_KEY: "viewer"},
    )
    def feedback(name: str, body: FeedbackIn, request: Request) -> None:
        """Record the ground truth of an earlier prediction, by its request id."""
        token = _bearer(request)
        if token is None:
            raise Unauthenticated("Send 'Authorization: Bearer <token>' to give feedback.")
        if not manager.check_token(token, name):
            raise PermissionDenied(f"This token may not use deployment {name!r}.")
        try:
            json.dumps(body.ground_truth)
        except (TypeError, ValueError):
            raise InvalidInput("ground_truth must be a JSON value.") from None
        predlog.record_feedback(name, body.request_id, body.ground_truth)


def deployments_lifespan(
    inner: Callable[[Any], contextlib.AbstractAsyncContextManager[None]] | None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """Wrap a lifespan: start the deployment manager and the prediction log's background
    compaction with the app, and on shutdown stop them, finish in-flight predictions and
    flush the prediction log."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        manager = getattr(app.state, "deployment_manager", None)
        if manager is not None:
            manager.start()
            app.state.prediction_log.start_compaction()
        try:
            if inner is None:
                yield
            else:
                async with inner(app):
                    yield
        finally:
            if manager is not None:
                manager.stop()
                await app.state.model_host.aclose()
                app.state.prediction_log.close()

    return lifespan
