"""The model server's HTTP API: Open Inference Protocol V2, plain JSON, health, metrics.

Routes (``{name}`` is a deployment of the :class:`~modelworks.serving.host.ModelHost`):

- ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready`` (503 until every expected
  deployment is loaded);
- ``GET /v2/models/{name}`` (metadata), ``GET /v2/models/{name}/ready``,
  ``POST /v2/models/{name}/infer``, and the same under ``/versions/{version}``;
- ``POST /deployments/{name}/predict`` with ``{"records": [...]}``, ``{"columns": {...}}``
  or ``{"instances": [[...], ...]}``;
- ``GET /metrics`` (Prometheus).

Errors are RFC 9457 problem documents: bad input 422 naming the row and field, malformed
JSON 400, unknown deployment 404, body over the deployment's ``max_request_bytes`` 413,
over its rate limit 429 and a full queue 503 (both with ``Retry-After``). With
``token_check``, the model routes need ``Authorization: Bearer <token>`` (401 without
one) and ``token_check(token, deployment)`` must say yes (403 otherwise); it runs on the
event loop, so it should be quick (a cached lookup). Bodies are read and written with
orjson, and request bodies are not validated by pydantic on the plain JSON route: the
runtime checks rows against the model's signature itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelworks import __version__
from modelworks.core.context import current_request_id
from modelworks.core.errors import (
    InvalidInput,
    ModelworksError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unauthenticated,
)
from modelworks.server.middleware import RequestIdMiddleware
from modelworks.serving.host import Deployment, ModelHost, ServedModel
from modelworks.serving.protocol import (
    NUMERIC_DATATYPES,
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    PredictRequest,
    PredictResponse,
    Problem,
    ReadyResponse,
    ServerMetadataResponse,
    datatype_of,
    datatype_of_values,
)
from modelworks.serving.runtime import ModelInput, ModelRuntime, PredictionBatch

__all__ = ["TokenCheck", "complete_openapi", "create_model_app"]

log = logging.getLogger("modelworks.serving")

TokenCheck = Callable[[str | None, str], bool]
PROBLEM = "application/problem+json"
JSON = "application/json"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PLAIN_KEYS = ("records", "columns", "instances")
BEARER = "bearerAuth"
# What each error status means on this server, for the OpenAPI document (so that clients and
# schema-driven fuzzers such as Schemathesis know every answer a route can give).
ERRORS: dict[int, str] = {
    400: "The body is not valid JSON.",
    401: "No bearer token, or a malformed Authorization header (when the server needs a token).",
    403: "The token may not use this deployment.",
    404: "There is no such deployment, or it does not serve that version.",
    413: "The body is larger than the deployment's max_request_bytes.",
    422: "The input does not match the model's signature or the protocol (the detail names "
    "the row and the field).",
    429: "Over the deployment's rate limit; retry after Retry-After seconds.",
    500: "An unexpected error (logged on the server).",
    503: "The deployment's queue is full or it is still loading; retry after Retry-After seconds.",
}
RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}


# ---- responses ------------------------------------------------------------------------------
def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _problem(err: ModelworksError, path: str) -> Response:
    headers: dict[str, str] = {}
    retry = err.extra.get("retry_after")
    if retry is not None:
        headers["Retry-After"] = str(int(retry))
    if err.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="modelworks"'
    body = orjson.dumps(err.to_problem(instance=path), option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=err.status_code, media_type=PROBLEM, headers=headers)


def _malformed(what: str, exc: Exception) -> InvalidInput:
    err = InvalidInput(f"The request body is not valid JSON ({exc}); send {what}.")
    err.status_code = 400
    return err


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` inlined, for an OpenAPI request body
    (where ``#/$defs/...`` would point nowhere)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem documents a route answers with."""
    schema = {"$ref": "#/components/schemas/Problem"}
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        response: dict[str, Any] = {
            "description": ERRORS[code],
            "content": {PROBLEM: {"schema": schema}},
        }
        if code in (429, 503):
            response["headers"] = {"Retry-After": RETRY_AFTER}
        if code == 401:
            response["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
            }
        out[code] = response
    return out


# ---- metrics --------------------------------------------------------------------------------
class _HostCollector:
    """Series read from the host when Prometheus scrapes: model versions, queues, batches."""

    def __init__(self, host: ModelHost) -> None:
        self.host = host

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        info = GaugeMetricFamily(
            "modelworks_serving_model_info",
            "The model versions served (1 per deployment role)",
            labels=["deployment", "role", "model_version", "version_id", "flavor", "backend"],
        )
        depth = GaugeMetricFamily(
            "modelworks_serving_queue_depth",
            "Requests waiting for a batch",
            labels=["deployment", "role"],
        )
        sizes = HistogramMetricFamily(
            "modelworks_serving_batch_size",
            "Rows per model call",
            labels=["deployment", "role"],
        )
        rejected = CounterMetricFamily(
            "modelworks_serving_queue_rejected",
            "Requests refused because the queue was full",
            labels=["deployment", "role"],
        )
        busy = CounterMetricFamily(
            "modelworks_serving_model_seconds",
            "Time spent converting rows and running the model, in the batch worker",
            labels=["deployment", "role"],
        )
        for deployment in self.host.deployments():
            for served in deployment.models():
                rt = served.runtime
                labels = [deployment.name, served.role]
                info.add_metric(
                    [*labels, rt.version, rt.version_id, rt.meta.flavor, rt.backend], 1.0
                )
                depth.add_metric(labels, float(served.batcher.queue_depth))
                stats = served.batcher.stats()
                buckets = [(floatToGoString(b), n) for b, n in stats.cumulative_buckets()]
                sizes.add_metric(labels, buckets, float(stats.rows))
                rejected.add_metric(labels, float(stats.rejected))
                busy.add_metric(labels, stats.busy_seconds)
        ready = GaugeMetricFamily(
            "modelworks_serving_ready", "1 when every expected deployment is loaded"
        )
        ready.add_metric([], 1.0 if self.host.ready else 0.0)
        dropped = CounterMetricFamily(
            "modelworks_serving_prediction_records_dropped",
            "Prediction records dropped because the prediction sink fell behind",
        )
        dropped.add_metric([], float(self.host.dropped_records))
        shadow = CounterMetricFamily(
            "modelworks_serving_shadow_errors", "Shadow requests that failed (not seen by callers)"
        )
        shadow.add_metric([], float(self.host.shadow_errors))
        return [info, depth, sizes, rejected, busy, ready, dropped, shadow]


class _Metrics:
    """The server's own registry: several apps in one process (tests) never collide."""

    def __init__(self, host: ModelHost) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelworks_serving_requests",
            "Model server requests",
            ["deployment", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelworks_serving_request_seconds",
            "Model server request latency (seconds)",
            ["deployment", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "modelworks_serving_errors",
            "Model server errors by code",
            ["deployment", "code"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "modelworks_serving_predictions",
            "Rows predicted",
            ["deployment", "role", "model_version"],
            registry=self.registry,
        )
        self.registry.register(_HostCollector(host))


# ---- request parsing ------------------------------------------------------------------------
async def _read_body(request: Request, limit: int, name: str) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``limit``."""

    def too_large() -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is larger than deployment {name!r} takes ({limit} bytes, its "
            "max_request_bytes); send fewer rows per request."
        )

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _sticky(
    deployment: Deployment, request: Request, body: dict[str, Any] | None, first: Any
) -> str | None:
    """The caller's sticky key: a header, a top-level body field, or a field of the first
    row (when the key is a model input)."""
    key = deployment.config.sticky_key
    if key is None or deployment.canary is None:
        return None
    value = request.headers.get(key)
    if value is None and body is not None:
        value = body.get(key)
    if value is None and isinstance(first, dict):
        value = first.get(key)
    return None if value is None else str(value)


def _plain_payload(data: Any, deployment: Deployment) -> tuple[ModelInput, Any]:
    """The rows of a ``/predict`` body, and its first row (for the sticky key)."""
    if not isinstance(data, dict):
        raise InvalidInput(
            'The body must be a JSON object: {"records": [{...}, ...]}, {"columns": {...}} or '
            '{"instances": [[...], ...]}.'
        )
    given = [k for k in PLAIN_KEYS if k in data]
    sticky = deployment.config.sticky_key
    unexpected = [k for k in data if k not in PLAIN_KEYS and k != sticky]
    if len(given) != 1 or unexpected:
        found = f"got {', '.join(map(repr, data)) or 'an empty object'}"
        raise InvalidInput(
            "Send exactly one of 'records' (a list of objects), 'columns' (an object of "
            "lists) or 'instances' (a list of rows)"
            + (f" and, optionally, the sticky key {sticky!r}" if sticky else "")
            + f"; {found}.",
            unexpected=unexpected,
        )
    kind = given[0]
    value = data[kind]
    if kind == "records":
        return ModelInput.records(value), value[0] if isinstance(value, list) and value else None
    if kind == "columns":
        first = (
            {k: v[0] for k, v in value.items() if isinstance(v, list) and v}
            if isinstance(value, dict)
            else None
        )
        return ModelInput.columns(value), first
    return ModelInput.instances(value), None


def _flat(values: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in values):
        return values
    out: list[Any] = []
    for v in values:
        out.extend(_flat(v) if isinstance(v, list) else [v])
    return out


def _oip_payload(req: InferenceRequest, runtime: ModelRuntime) -> ModelInput:
    """OIP input tensors as the runtime's rows (see the module docstring of protocol)."""
    sig = runtime.signature
    if not req.inputs:
        raise InvalidInput("The inference request has no inputs; send one tensor per input.")
    if sig is not None and sig.is_tensor:
        if len(req.inputs) != 1:
            raise InvalidInput(
                f"This model takes one tensor; the request has {len(req.inputs)} inputs."
            )
        return ModelInput.instances(_tensor(req.inputs[0]))
    columns = {c.name: c for c in sig.inputs} if sig is not None else {}
    if len(req.inputs) == 1 and req.inputs[0].name not in columns and len(req.inputs[0].shape) == 2:
        return _single_tensor(req.inputs[0], runtime)
    problems: list[str] = []
    data: dict[str, list[Any]] = {}
    rows: int | None = None
    for tensor in req.inputs:
        spec = columns.get(tensor.name)
        if sig is not None and spec is None:
            problems.append(f"input {tensor.name!r} is not one of the model's inputs")
            continue
        shape = tensor.shape
        if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            problems.append(
                f"input {tensor.name!r} has shape {shape}; a column's shape is [N] or [N, 1]"
            )
            continue
        values = _flat(tensor.data)
        if len(values) != shape[0]:
            problems.append(f"input {tensor.name!r} has {len(values)} values for shape {shape}")
            continue
        if rows is not None and shape[0] != rows:
            problems.append(f"input {tensor.name!r} has {shape[0]} rows; others have {rows}")
            continue
        rows = shape[0]
        if spec is not None:
            want = datatype_of(spec.type)
            numeric = want in NUMERIC_DATATYPES and tensor.datatype in NUMERIC_DATATYPES
            if tensor.datatype != want and not numeric:
                problems.append(
                    f"input {tensor.name!r} is {tensor.datatype}; the model takes {want} "
                    f"({spec.type}) there"
                )
                continue
        data[tensor.name] = values
    if problems:
        expected = sig.summary(max_columns=20) if sig is not None else ""
        raise InvalidInput(
            "The inference request does not match the model: "
            + "; ".join(problems)
            + (f". The model expects {expected}." if expected else "."),
            errors=problems,
        )
    return ModelInput.columns(data)


def _tensor(tensor: Any) -> list[Any]:
    values = _flat(tensor.data)
    count = int(np.prod(tensor.shape)) if tensor.shape else 0
    if any(s < 0 for s in tensor.shape) or count != len(values):
        raise InvalidInput(
            f"Input {tensor.name!r} has {len(values)} values, but its shape {tensor.shape} "
            f"needs {count}."
        )
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    nested: list[Any] = arr.reshape(tensor.shape).tolist()
    return nested


def _single_tensor(tensor: Any, runtime: ModelRuntime) -> ModelInput:
    """One ``[N, columns]`` tensor for a model of numeric columns: rows in signature order."""
    sig = runtime.signature
    names = sig.input_names if sig is not None else []
    numeric = sig is not None and all(datatype_of(c.type) in NUMERIC_DATATYPES for c in sig.inputs)
    if not numeric or tensor.shape[1] != len(names):
        raise InvalidInput(
            f"Input {tensor.name!r} is not one of the model's inputs ({', '.join(names)}). "
            "Send one input per column"
            + (
                f", or, since every input is numeric, one [N, {len(names)}] tensor with the "
                "columns in that order."
                if numeric
                else "."
            )
        )
    if tensor.datatype not in NUMERIC_DATATYPES:
        raise InvalidInput(f"Input {tensor.name!r} is {tensor.datatype}; send numbers (FP64).")
    return ModelInput.instances(_tensor(tensor))


def _output(name: str, values: list[Any]) -> dict[str, Any]:
    if values and isinstance(values[0], list):
        arr = np.asarray(values)
        return {
            "name": name,
            "shape": list(arr.shape),
            "datatype": datatype_of_values(arr.ravel()[:1].tolist()),
            "data": arr.ravel().tolist(),
        }
    return {
        "name": name,
        "shape": [len(values)],
        "datatype": datatype_of_values(values),
        "data": values,
    }


def _oip_response(
    name: str, batch: PredictionBatch, req: InferenceRequest, request_id: str
) -> dict[str, Any]:
    outputs = [_output("predictions", batch.predictions)]
    if batch.probabilities is not None:
        width = len(batch.classes or []) or (
            len(batch.probabilities[0]) if batch.probabilities else 0
        )
        outputs.append(
            {
                "name": "probabilities",
                "shape": [len(batch.probabilities), width],
                "datatype": "FP64",
                "data": [p for row in batch.probabilities for p in row],
            }
        )
    if req.outputs:
        wanted = [o.name for o in req.outputs]
        have = {o["name"] for o in outputs}
        unknown = [w for w in wanted if w not in have]
        if unknown:
            raise InvalidInput(
                f"The model has no output {', '.join(map(repr, unknown))}; its outputs are "
                f"{', '.join(sorted(have))}."
            )
        outputs = [o for o in outputs if o["name"] in wanted]
    body: dict[str, Any] = {
        "model_name": name,
        "model_version": batch.model_version,
        "id": req.id or request_id,
        "outputs": outputs,
    }
    if batch.classes is not None:
        body["parameters"] = {"classes": batch.classes}
    return body


def _metadata(deployment: Deployment) -> dict[str, Any]:
    runtime = deployment.primary.runtime
    sig = runtime.signature
    inputs: list[dict[str, Any]] = []
    if sig is not None:
        for col in sig.inputs:
            shape = col.shape if col.shape is not None else [-1]
            inputs.append({"name": col.name, "datatype": datatype_of(col.type), "shape": shape})
    outputs: list[dict[str, Any]] = []
    out_type = sig.outputs[0].type if sig is not None and sig.outputs else None
    outputs.append(
        {
            "name": "predictions",
            "datatype": datatype_of(out_type)
            if out_type
            else datatype_of_values(list(runtime.classes or [0.0])),
            "shape": [-1],
        }
    )
    if runtime.has_probabilities:
        outputs.append(
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(runtime.classes or [])]}
        )
    versions = [deployment.primary.version]
    if deployment.canary is not None:
        versions.append(deployment.canary.version)
    parameters: dict[str, Any] = {
        "task": runtime.task,
        "flavor": runtime.meta.flavor,
        "backend": runtime.backend,
        "version_id": runtime.version_id,
    }
    if runtime.classes is not None:
        parameters["classes"] = runtime.classes
    if deployment.config.canary is not None:
        parameters["canary"] = deployment.config.canary.model_dump()
    return {
        "name": deployment.name,
        "versions": versions,
        "platform": "onnxruntime_onnx" if runtime.backend == "onnx" else runtime.meta.flavor,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": parameters,
    }


# ---- the app --------------------------------------------------------------------------------
def create_model_app(
    host: ModelHost,
    *,
    token_check: TokenCheck | None = None,
    close_host: bool = True,
    title: str = "Modelworks model server",
) -> FastAPI:
    """The model server app for ``host`` (see the module docstring).

    ``close_host``: on shutdown, drain the batchers and flush the prediction log
    (``host.aclose()``).
    """
    metrics = _Metrics(host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_host:
            await host.aclose()

    app = FastAPI(
        title=title,
        version=__version__,
        description="Open Inference Protocol V2 and plain JSON predictions for the models "
        "this server hosts.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.host = host
    app.state.metrics = metrics
    app.add_middleware(RequestIdMiddleware)
    _install_errors(app)
    secured: dict[str, Any] = {"security": [{BEARER: []}]} if token_check is not None else {}
    auth_errors = (401, 403) if token_check is not None else ()
    predict_errors = _error_responses(400, *auth_errors, 404, 413, 422, 429, 500, 503)
    lookup_errors = _error_responses(*auth_errors, 404)
    complete_openapi(app, bearer=token_check is not None)

    def authorize(request: Request, name: str) -> None:
        if token_check is None:
            return
        header = request.headers.get("authorization")
        if not header:
            raise Unauthenticated(
                "This model server needs a token: send 'Authorization: Bearer <token>'."
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
        if not token_check(token, name):
            raise PermissionDenied(
                f"This token may not use deployment {name!r}; ask its owner for access."
            )

    async def serve(
        request: Request,
        name: str,
        route: str,
        parse: Callable[[bytes, Deployment, Request], tuple[ServedModel, ModelInput, Any]],
        respond: Callable[[ServedModel, PredictionBatch, str, Any], Any],
    ) -> Response:
        start = time.perf_counter()
        arrived = time.time()
        label = ""
        status = 500
        try:
            authorize(request, name)
            deployment = host.get(name)
            label = name
            deployment.admit()
            body = await _read_body(request, deployment.config.max_request_bytes, name)
            # The deployment may have been swapped while the body arrived (an alias moved):
            # route on the current one, with no await between routing and queueing.
            deployment = host.get(name)
            served, payload, context = parse(body, deployment, request)
            request_id = current_request_id()
            batch = await served.batcher.submit_input(payload)
            content = respond(served, batch, request_id, context)
            host.log_predictions(
                served, request_id, payload, batch, (time.perf_counter() - start) * 1000, arrived
            )
            if deployment.shadow is not None:
                host.start_shadow(deployment, payload, request_id)
            metrics.predictions.labels(name, served.role, served.version).inc(len(batch))
            status = 200
            return _json(content, headers={"X-Model-Version": served.version})
        except ModelworksError as err:
            status = err.status_code
            metrics.errors.labels(label, err.code).inc()
            return _problem(err, request.url.path)
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.url.path)
            metrics.errors.labels(label, "internal_error").inc()
            internal = ModelworksError(
                "The model server hit an unexpected error; it was logged. Retry, and report it "
                "if it persists."
            )
            return _problem(internal, request.url.path)
        finally:
            metrics.requests.labels(label, route, str(status)).inc()
            metrics.latency.labels(label, route).observe(time.perf_counter() - start)

    # ---- plain JSON ---------------------------------------------------------------------
    def parse_plain(
        body: bytes, deployment: Deployment, request: Request
    ) -> tuple[ServedModel, ModelInput, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _malformed('{"records": [{...}, ...]}', exc) from None
        payload, first = _plain_payload(data, deployment)
        served = deployment.route(_sticky(deployment, request, data, first))
        return served, payload, None

    def respond_plain(
        served: ServedModel, batch: PredictionBatch, request_id: str, context: Any
    ) -> dict[str, Any]:
        out = batch.to_dict()
        out["request_id"] = request_id
        return out

    @app.post(
        "/deployments/{name}/predict",
        tags=["predict"],
        response_model=PredictResponse,
        responses=predict_errors,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _inline_schema(PredictRequest)}},
            },
            **secured,
        },
    )
    async def predict(name: str, request: Request) -> Response:
        """Predictions for rows given as records, columns or instances."""
        return await serve(request, name, "predict", parse_plain, respond_plain)

    # ---- Open Inference Protocol -------------------------------------------------------
    def oip_parser(
        version: str | None,
    ) -> Callable[[bytes, Deployment, Request], tuple[ServedModel, ModelInput, Any]]:
        def parse(
            body: bytes, deployment: Deployment, request: Request
        ) -> tuple[ServedModel, ModelInput, Any]:
            try:
                req = InferenceRequest.model_validate_json(body)
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors()):
                    raise _malformed('{"inputs": [...]}', exc) from None
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10]
                )
                raise InvalidInput(
                    f"The inference request does not match the Open Inference Protocol: {problems}."
                ) from None
            if version is not None:
                served = deployment.find_version(version)
                if served is None:
                    raise NotFound(
                        f"Deployment {deployment.name!r} does not serve version {version!r}; "
                        f"it serves {', '.join(_versions(deployment))}."
                    )
            else:
                key = deployment.config.sticky_key
                value: Any = None
                if key is not None and deployment.canary is not None:
                    value = request.headers.get(key) or (req.parameters or {}).get(key)
                    if value is None:
                        value = next(
                            (t.data[0] for t in req.inputs if t.name == key and t.data), None
                        )
                served = deployment.route(None if value is None else str(value))
            return served, _oip_payload(req, served.runtime), req

        return parse

    def respond_oip(
        served: ServedModel, batch: PredictionBatch, request_id: str, req: Any
    ) -> dict[str, Any]:
        return _oip_response(served.deployment, batch, req, request_id)

    infer_doc = {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": _inline_schema(InferenceRequest)}},
        },
        **secured,
    }

    @app.post(
        "/v2/models/{name}/infer",
        tags=["open inference protocol"],
        response_model=InferenceResponse,
        responses=predict_errors,
        openapi_extra=infer_doc,
    )
    async def infer(name: str, request: Request) -> Response:
        """Inference (Open Inference Protocol V2): one tensor per input column."""
        return await serve(request, name, "infer", oip_parser(None), respond_oip)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=["open inference protocol"],
        response_model=InferenceResponse,
        responses=predict_errors,
        openapi_extra=infer_doc,
    )
    async def infer_version(name: str, version: str, request: Request) -> Response:
        """Inference on one version of the deployment (its primary or canary)."""
        return await serve(request, name, "infer", oip_parser(version), respond_oip)

    @app.get("/v2", tags=["open inference protocol"], response_model=ServerMetadataResponse)
    async def server_metadata() -> Response:
        """The server's name and version."""
        return _json({"name": "modelworks", "version": __version__, "extensions": []})

    @app.get("/v2/health/live", tags=["health"], response_model=LiveResponse)
    async def live() -> Response:
        """Liveness: the process answers."""
        return _json({"live": True})

    @app.get(
        "/v2/health/ready",
        tags=["health"],
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Not every deployment is loaded."}},
    )
    async def ready() -> Response:
        """Readiness: every deployment this server should serve is loaded (503 until then)."""
        is_ready = host.ready
        return _json({"ready": is_ready}, status=200 if is_ready else 503)

    def _lookup(request: Request, name: str, version: str | None) -> Deployment:
        authorize(request, name)
        deployment = host.get(name)
        if version is not None and deployment.find_version(version) is None:
            raise NotFound(
                f"Deployment {name!r} does not serve version {version!r}; it serves "
                f"{', '.join(_versions(deployment))}."
            )
        return deployment

    async def model_metadata_for(request: Request, name: str, version: str | None) -> Response:
        try:
            return _json(_metadata(_lookup(request, name, version)))
        except ModelworksError as err:
            return _problem(err, request.url.path)

    async def model_ready_for(request: Request, name: str, version: str | None) -> Response:
        try:
            _lookup(request, name, version)
        except ModelworksError as err:
            if err.status_code == 503:
                return _json({"name": name, "ready": False}, status=503)
            return _problem(err, request.url.path)
        return _json({"name": name, "ready": True})

    metadata_responses = {
        **lookup_errors,
        **_error_responses(503),
    }
    ready_responses = {
        **lookup_errors,
        503: {"model": ModelReadyResponse, "description": "The deployment is still loading."},
    }

    @app.get(
        "/v2/models/{name}",
        tags=["open inference protocol"],
        response_model=ModelMetadataResponse,
        responses=metadata_responses,
        openapi_extra=secured,
    )
    async def model_metadata(name: str, request: Request) -> Response:
        """A deployment's metadata: versions, platform, input and output tensors."""
        return await model_metadata_for(request, name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}",
        tags=["open inference protocol"],
        response_model=ModelMetadataResponse,
        responses=metadata_responses,
        openapi_extra=secured,
    )
    async def model_version_metadata(name: str, version: str, request: Request) -> Response:
        """Metadata of a deployment that serves ``version``."""
        return await model_metadata_for(request, name, version)

    @app.get(
        "/v2/models/{name}/ready",
        tags=["open inference protocol"],
        response_model=ModelReadyResponse,
        responses=ready_responses,
        openapi_extra=secured,
    )
    async def model_ready(name: str, request: Request) -> Response:
        """Whether the deployment is loaded (503 while loading, 404 if unknown)."""
        return await model_ready_for(request, name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}/ready",
        tags=["open inference protocol"],
        response_model=ModelReadyResponse,
        responses=ready_responses,
        openapi_extra=secured,
    )
    async def model_version_ready(name: str, version: str, request: Request) -> Response:
        """Whether the deployment serves ``version`` and is loaded."""
        return await model_ready_for(request, name, version)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def prometheus() -> Response:
        """Prometheus metrics: requests, latency, errors, batch sizes, queues, versions."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _versions(deployment: Deployment) -> list[str]:
    return [m.version for m in (deployment.primary, deployment.canary) if m is not None]


def complete_openapi(app: FastAPI, *, bearer: bool) -> None:
    """Add what the model routes refer to but FastAPI does not generate to ``app``'s OpenAPI
    document: the problem document's schema and, with tokens, the bearer scheme (the routes
    read the header themselves, without a FastAPI security dependency, to stay quick). An
    app the routes are moved onto (``modelworks server``) needs it too."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
        if bearer:
            schemes = components.setdefault("securitySchemes", {})
            schemes[BEARER] = {"type": "http", "scheme": "bearer"}
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _install_errors(app: FastAPI) -> None:
    """Problem documents for what the routes themselves never see (unknown paths)."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err: ModelworksError = NotFound(
                f"No route {request.method} {request.url.path}; the model server answers "
                "/v2/..., /deployments/{name}/predict and /metrics (see /docs)."
            )
        else:
            err = ModelworksError(str(exc.detail))
            err.status_code = exc.status_code
            err.code = "http_error"
        return _problem(err, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        parts = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()[:10]
        )
        return _problem(
            InvalidInput(f"The request does not match the API: {parts}."), request.url.path
        )
