"""Property-based fuzzing of the model server's OpenAPI document with Schemathesis.

The app is built the way ``modelworks serve --workers N`` builds it in each worker (the app
factory reading ``MODELWORKS_SERVE_SPEC`` and ``MODELWORKS_SERVE_TOKEN``), for a scikit-learn
package with numeric and string inputs. Every operation in ``/openapi.json`` is fuzzed with
schema-valid and schema-invalid requests, each sent three times: as generated (random
deployment names: 404s), aimed at the served deployment with the token, and aimed at it
without a token (or with a generated one). No answer may be a 5xx, and every answer must be
a documented status with a documented content type and body.

Random rows rarely match a model's signature, so ``/predict`` is also fuzzed against a copy
of the document whose body schema is the model's signature: there every valid body must be
answered 200 (``positive_data_acceptance``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.schemas import BaseSchema
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelworks.core.store import Store
from modelworks.serving import serve_cli
from modelworks.serving.host import DeploymentConfig
from modelworks.training.package import save_package

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TOKEN = "fuzz-token"
NAME = "churn"
VERSION = "churn@1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# More (and new random ones each run) with MODELWORKS_FUZZ_EXAMPLES=500; the default keeps the
# file under a minute and repeatable.
DEEP = os.environ.get("MODELWORKS_FUZZ_EXAMPLES")
EXAMPLES = int(DEEP or 50)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
# Every operation the model server documents; a new route must be added here to be fuzzed.
OPERATIONS = [
    ("POST", "/deployments/{name}/predict"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/versions/{version}"),
    ("GET", "/v2/models/{name}/ready"),
    ("GET", "/v2/models/{name}/versions/{version}/ready"),
    ("GET", "/metrics"),
]


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "charges": rng.normal(60, 20, n).round(2),
            "plan": rng.choice(["basic", "pro", "max"], n),
        }
    )
    y = np.where(0.05 * X["tenure"] - 0.03 * X["charges"] > 0, "stay", "churn")
    encode = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "charges"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    model = make_pipeline(encode, LogisticRegression(max_iter=500)).fit(X, y)
    path = tmp_path_factory.mktemp("fuzz") / "churn"
    save_package(model, path, input_example=X.head())
    return path


@pytest.fixture(scope="module")
def serve_env(package_dir: Path) -> Iterator[None]:
    """What ``modelworks serve`` hands its workers: the spec (a small body limit) and a token."""
    spec = serve_cli.ServeSpec(
        package_dir=str(package_dir),
        name=NAME,
        version=VERSION,
        config=DeploymentConfig(max_request_bytes=64 * 1024, max_wait_ms=0.5),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(serve_cli.SPEC_ENV, spec.model_dump_json())
        mp.setenv(serve_cli.TOKEN_ENV, TOKEN)
        yield


@pytest.fixture
def app(serve_env: None) -> FastAPI:
    """A fresh worker app per test: Schemathesis' pytest plugin ends the app's lifespan
    (which closes the host) after every test, as uvicorn does once at shutdown."""
    return serve_cli.create_app_from_env()


@pytest.fixture(scope="module")
def document(serve_env: None) -> dict[str, Any]:
    """The worker app's /openapi.json."""
    doc: dict[str, Any] = schemathesis.openapi.from_asgi(
        "/openapi.json", serve_cli.create_app_from_env()
    ).raw_schema
    return doc


def schema_for(doc: dict[str, Any], app: FastAPI) -> BaseSchema:
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = app
    schema.location = "/openapi.json"
    return schema


@pytest.fixture
def schema(document: dict[str, Any], app: FastAPI) -> BaseSchema:
    return schema_for(document, app)


def fuzz(
    schema: BaseSchema,
    method: str,
    path: str,
    mode: GenerationMode,
    send: Callable[[Any], None],
    examples: int = EXAMPLES,
) -> None:
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=DEEP is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        send(case)

    run()


def aim(case: Any) -> Any:
    """``case``, changed in place to call the served deployment (and version). Schemathesis
    tracks the change, so a negative case that becomes valid is judged as valid."""
    params = dict(case.path_parameters or {})
    if "name" in params:
        params["name"] = NAME
    if "version" in params:
        params["version"] = VERSION
    case.path_parameters = params
    return case


def validate(case: Any, headers: dict[str, str] | None, extra: list[Any] | None = None) -> Any:
    response = case.call(headers=headers)
    case.validate_response(response, checks=CHECKS + (extra or []))
    return response


def test_the_document_lists_every_route_with_its_errors(app: FastAPI) -> None:
    doc = app.openapi()
    found = sorted(
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    )
    assert found == sorted(OPERATIONS)
    predict = doc["paths"]["/deployments/{name}/predict"]["post"]
    assert predict["security"] == [{"bearerAuth": []}]
    assert {"400", "401", "403", "404", "413", "422", "429", "503"} <= set(predict["responses"])
    problem = predict["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}
    assert "Retry-After" in predict["responses"]["429"]["headers"]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert dangling(doc) == []
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert {"records", "columns", "instances"} <= set(body["properties"])
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
    assert "inputs" in infer["content"]["application/json"]["schema"]["required"]


# Negative cases need something to make invalid: a path parameter or a body.
FUZZED = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in GenerationMode
    if mode is not GenerationMode.NEGATIVE or "{name}" in path or method == "POST"
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), FUZZED, ids=[f"{m} {p}-{g.value}" for m, p, g in FUZZED]
)
def test_no_server_error_and_every_answer_is_documented(
    schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    secured = "{name}" in path
    extra = [checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []

    def send(case: Any) -> None:
        validate(case, AUTH, extra)
        if not secured:
            return
        validate(aim(case), AUTH, extra)
        # Without our token: with whatever Authorization header Schemathesis generated, or none.
        status = validate(case, None).status_code
        assert status in (401, 403), status

    fuzz(schema, method, path, mode, send)


# ---- /predict against the model's own signature -----------------------------------------------
def signature_document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with /predict's body narrowed to what the churn model accepts: every valid
    body is a request the model can answer."""
    out = copy.deepcopy(doc)
    row = {
        "type": "object",
        "properties": {
            # The bounds keep values a float64 model can scale (1e308 overflows to inf).
            "tenure": {"type": "integer", "minimum": -(10**9), "maximum": 10**9},
            "charges": {"type": "number", "minimum": -1e9, "maximum": 1e9},
            "plan": {"type": "string", "maxLength": 50},
        },
        "required": ["tenure", "charges", "plan"],
        "additionalProperties": False,
    }
    records = {"type": "array", "items": row, "minItems": 1, "maxItems": 20}
    body = {
        "type": "object",
        "properties": {"records": records},
        "required": ["records"],
        "additionalProperties": False,
    }
    operation = out["paths"]["/deployments/{name}/predict"]["post"]
    operation["requestBody"]["content"]["application/json"]["schema"] = body
    return out


@pytest.fixture
def signature_schema(document: dict[str, Any], app: FastAPI) -> BaseSchema:
    return schema_for(signature_document(document), app)


def test_predict_answers_every_row_that_matches_the_signature(
    signature_schema: BaseSchema,
) -> None:
    """Only valid bodies: the narrowed schema's bounds are this test's, not the server's, so
    a body outside them is not one the server must refuse."""

    def send(case: Any) -> None:
        response = validate(aim(case), AUTH, [checks.positive_data_acceptance])
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == len(case.body["records"])

    fuzz(
        signature_schema,
        "POST",
        "/deployments/{name}/predict",
        GenerationMode.POSITIVE,
        send,
        examples=EXAMPLES + 30,
    )


# ---- regressions for what the fuzzer found -------------------------------------------------------
def call(schema: BaseSchema, method: str, path: str, body: Any = None, **params: str) -> Any:
    """One request through Schemathesis' ASGI transport (on the event loop the fuzzing used:
    the app's batchers live there)."""
    operation = schema[path][method]
    kwargs: dict[str, Any] = {"path_parameters": params or None}
    if body is not None:
        kwargs["body"] = body
        kwargs["media_type"] = "application/json"
    case = operation.Case(**kwargs)
    return validate(case, AUTH)


def test_metrics_is_documented_as_text(schema: BaseSchema) -> None:
    r = call(schema, "GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"][0].startswith("text/plain")


@pytest.mark.parametrize("tenure", [-5.377555592879103e235, 2.0**63, 1e19, -(2.0**64)])
@pytest.mark.parametrize("shape", ["instances", "records", "columns"])
def test_a_whole_number_too_large_for_int64_is_a_422(
    schema: BaseSchema, tenure: float, shape: str
) -> None:
    """Found by the fuzzer: a whole float beyond int64 in an integer column passed the
    whole-number check and overflowed in the conversion (a 500)."""
    bodies: dict[str, dict[str, Any]] = {
        "instances": {"instances": [[tenure, 50.0, "pro"]]},
        "records": {"records": [{"tenure": tenure, "charges": 50.0, "plan": "pro"}]},
        "columns": {"columns": {"tenure": [tenure], "charges": [50.0], "plan": ["pro"]}},
    }
    r = call(schema, "POST", "/deployments/{name}/predict", bodies[shape], name=NAME)
    assert r.status_code == 422, r.text
    assert "'tenure' must be a whole number" in r.json()["detail"]
    ok = {"records": [{"tenure": 2.0**62, "charges": 50.0, "plan": "pro"}]}
    assert call(schema, "POST", "/deployments/{name}/predict", ok, name=NAME).status_code == 200


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def dangling(doc: dict[str, Any]) -> list[str]:
    """``$ref``s and security requirements that point at nothing in ``doc``."""
    components = doc.get("components", {})
    missing = [
        ref
        for ref in set(references(doc))
        if ref.rsplit("/", 1)[-1] not in components.get(ref.split("/")[2], {})
    ]
    schemes = components.get("securitySchemes", {})
    for item in doc["paths"].values():
        for operation in item.values():
            for requirement in operation.get("security", []):
                missing += [name for name in requirement if name not in schemes]
    return missing


def test_the_main_server_describes_the_moved_model_routes_completely(store: Store) -> None:
    """``modelworks server`` moves the model routes onto its app: their error schema and
    bearer scheme must come along (they are added to the model app's document only)."""
    from modelworks.server.app import create_app

    doc = create_app(store, run_jobs=False).openapi()
    assert dangling(doc) == []
    predict = doc["paths"]["/deployments/{name}/predict"]["post"]
    assert predict["security"] == [{"bearerAuth": []}]
    assert "Problem" in doc["components"]["schemas"]


def test_without_a_token_the_document_asks_for_none(package_dir: Path) -> None:
    """``modelworks serve`` without MODELWORKS_SERVE_TOKEN: no security, no 401 or 403."""
    from modelworks.serving.model_app import create_model_app

    spec = serve_cli.ServeSpec(package_dir=str(package_dir), name=NAME, version=VERSION)
    doc = create_model_app(serve_cli.build_host(spec)).openapi()
    assert dangling(doc) == []
    assert "securitySchemes" not in doc["components"]
    for item in doc["paths"].values():
        for operation in item.values():
            assert "security" not in operation
            assert not {"401", "403"} & set(operation["responses"])
