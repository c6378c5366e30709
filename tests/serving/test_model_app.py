"""The model server app: OIP V2 and /predict round trips, errors as problem documents, limits,
tokens, swaps under load, canary and shadow routing, metrics, and ``modelworks serve``."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelworks.core.errors import InvalidInput, NotFound
from modelworks.serving import serve_cli
from modelworks.serving.host import (
    CanaryConfig,
    DeploymentConfig,
    ModelHost,
    PredictionRecord,
    ShadowConfig,
)
from modelworks.serving.model_app import create_model_app
from modelworks.serving.runtime import ModelInput, ModelRuntime, PredictionBatch
from modelworks.training.package import ModelPackage, load_package, save_package

from .conftest import churn_frame, records

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Serve = Callable[[Any], contextlib.AbstractContextManager[str]]
PROBLEM = "application/problem+json"


def pipeline(c: float) -> Any:
    encode = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "charges"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    return make_pipeline(encode, LogisticRegression(C=c, max_iter=500))


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    return churn_frame()


@pytest.fixture(scope="module")
def frame(data: Any) -> pd.DataFrame:
    return data[0].iloc[:6].reset_index(drop=True)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, data: Any) -> dict[str, ModelPackage]:
    """churn v1 and v2 (different regularisation: different answers), and a numeric model."""
    X, y = data
    root = tmp_path_factory.mktemp("app")
    save_package(pipeline(1.0).fit(X, y), root / "v1", input_example=X.head())
    save_package(pipeline(0.01).fit(X, y), root / "v2", input_example=X.head())
    Xn = X[["tenure", "charges"]].astype(float)
    num = make_pipeline(StandardScaler(), LogisticRegression()).fit(Xn, y)
    save_package(num, root / "num", input_example=Xn.head())
    return {k: load_package(root / k) for k in ("v1", "v2", "num")}


@pytest.fixture(scope="module")
def v1(packages: dict[str, ModelPackage]) -> ModelRuntime:
    return ModelRuntime(packages["v1"], name="churn", version="churn@1", version_id="id-1")


@pytest.fixture(scope="module")
def v2(packages: dict[str, ModelPackage]) -> ModelRuntime:
    return ModelRuntime(packages["v2"], name="churn", version="churn@2", version_id="id-2")


@contextlib.contextmanager
def client_for(host: ModelHost, **kwargs: Any) -> Iterator[TestClient]:
    with TestClient(create_model_app(host, **kwargs)) as client:
        yield client


def one_host(runtime: ModelRuntime, config: DeploymentConfig | None = None, **kw: Any) -> ModelHost:
    host = ModelHost(**kw)
    host.put("churn", runtime, config)
    return host


def assert_answers(body: dict[str, Any], pkg: ModelPackage, frame: pd.DataFrame) -> None:
    assert body["predictions"] == pkg.predict(frame).tolist()
    np.testing.assert_allclose(body["probabilities"], pkg.predict_proba(frame), rtol=1e-9)
    assert body["classes"] == ["churn", "stay"]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# ---- plain JSON -----------------------------------------------------------------------------
def test_predict_records_columns_and_instances(
    v1: ModelRuntime, packages: dict[str, ModelPackage], frame: pd.DataFrame
) -> None:
    with client_for(one_host(v1)) as client:
        r = client.post("/deployments/churn/predict", json={"records": records(frame)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert_answers(body, packages["v1"], frame)
        assert body["model_version"] == "churn@1"
        assert body["request_id"] == r.headers["x-request-id"]
        assert r.headers["x-model-version"] == "churn@1"
        columns = {c: frame[c].tolist() for c in frame.columns}
        r2 = client.post("/deployments/churn/predict", json={"columns": columns})
        r3 = client.post(
            "/deployments/churn/predict", json={"instances": frame.to_numpy().tolist()}
        )
        for other in (r2, r3):
            assert other.status_code == 200
            assert {k: v for k, v in other.json().items() if k != "request_id"} == {
                k: v for k, v in body.items() if k != "request_id"
            }
        mine = client.post(
            "/deployments/churn/predict",
            json={"records": records(frame.iloc[:1])},
            headers={"X-Request-ID": "caller-42"},
        )
        assert mine.headers["x-request-id"] == "caller-42"
        assert mine.json()["request_id"] == "caller-42"


def test_bad_input_is_a_422_problem_naming_row_and_field(
    v1: ModelRuntime, frame: pd.DataFrame
) -> None:
    rows = records(frame.iloc[:3])
    rows[1]["charges"] = "abc"
    with client_for(one_host(v1)) as client:
        r = client.post("/deployments/churn/predict", json={"records": rows})
        assert r.status_code == 422
        assert r.headers["content-type"] == PROBLEM
        problem = r.json()
        assert problem["code"] == "invalid_input"
        assert "row 1: 'charges' must be a number, got 'abc'" in problem["detail"]
        assert problem["errors"][0]["row"] == 1 and problem["errors"][0]["field"] == "charges"
        assert problem["instance"] == "/deployments/churn/predict"
        rows[1]["charges"] = 1.5
        del rows[2]["plan"]
        r = client.post("/deployments/churn/predict", json={"records": rows})
        assert r.status_code == 422 and "row 2: missing fields 'plan'" in r.json()["detail"]
        r = client.post("/deployments/churn/predict", json={"rows": rows})
        assert r.status_code == 422
        assert "Send exactly one of 'records'" in r.json()["detail"]
        assert r.json()["unexpected"] == ["rows"]
        r = client.post(
            "/deployments/churn/predict",
            content=b'{"records": [',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
        assert "not valid JSON" in r.json()["detail"]


def test_unknown_deployment_and_route_are_404(v1: ModelRuntime) -> None:
    with client_for(one_host(v1)) as client:
        r = client.post("/deployments/nope/predict", json={"records": []})
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
        assert "There is no deployment 'nope' on this server (deployments: churn)" in r.text
        assert client.get("/v2/models/nope").status_code == 404
        assert client.get("/v2/models/nope/ready").status_code == 404
        r = client.get("/v3/whatever")
        assert r.status_code == 404 and r.json()["code"] == "not_found"


# ---- Open Inference Protocol ----------------------------------------------------------------
def test_oip_metadata_and_ready(v1: ModelRuntime) -> None:
    with client_for(one_host(v1)) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2").json()["name"] == "modelworks"
        meta = client.get("/v2/models/churn").json()
        assert meta["name"] == "churn"
        assert meta["versions"] == ["churn@1"]
        assert meta["platform"] == "sklearn"
        assert meta["inputs"] == [
            {"name": "tenure", "datatype": "INT64", "shape": [-1]},
            {"name": "charges", "datatype": "FP64", "shape": [-1]},
            {"name": "plan", "datatype": "BYTES", "shape": [-1]},
        ]
        assert meta["outputs"] == [
            {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
        ]
        assert meta["parameters"]["classes"] == ["churn", "stay"]
        assert meta["parameters"]["version_id"] == "id-1"
        assert client.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
        assert client.get("/v2/models/churn/versions/1").status_code == 200
        assert client.get("/v2/models/churn/versions/7/ready").status_code == 404
        spec = client.get("/openapi.json").json()
        assert "#/$defs/" not in json.dumps(spec)  # request schemas are inlined
        infer = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
        schema = infer["content"]["application/json"]["schema"]
        assert schema["properties"]["inputs"]["items"]["required"] == [
            "name",
            "shape",
            "datatype",
            "data",
        ]


def oip_body(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    n = len(frame)
    return {
        "inputs": [
            {"name": "tenure", "shape": [n], "datatype": "INT64", "data": frame.tenure.tolist()},
            {
                "name": "charges",
                "shape": [n, 1],
                "datatype": "FP64",
                "data": frame.charges.tolist(),
            },
            {"name": "plan", "shape": [n], "datatype": "BYTES", "data": frame.plan.tolist()},
        ],
        **extra,
    }


def test_oip_infer_round_trip(
    v1: ModelRuntime, packages: dict[str, ModelPackage], frame: pd.DataFrame
) -> None:
    pkg = packages["v1"]
    n = len(frame)
    with client_for(one_host(v1)) as client:
        r = client.post("/v2/models/churn/infer", json=oip_body(frame, id="req-1"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == "churn" and body["model_version"] == "churn@1"
        assert body["id"] == "req-1"
        assert body["parameters"] == {"classes": ["churn", "stay"]}
        predictions, probabilities = body["outputs"]
        assert predictions == {
            "name": "predictions",
            "shape": [n],
            "datatype": "BYTES",
            "data": pkg.predict(frame).tolist(),
        }
        assert probabilities["shape"] == [n, 2] and probabilities["datatype"] == "FP64"
        np.testing.assert_allclose(
            np.reshape(probabilities["data"], (n, 2)), pkg.predict_proba(frame), rtol=1e-9
        )
        only = client.post(
            "/v2/models/churn/versions/1/infer",
            json=oip_body(frame, outputs=[{"name": "probabilities"}]),
        )
        assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]
        assert (
            client.post("/v2/models/churn/versions/3/infer", json=oip_body(frame)).status_code
            == 404
        )
        r = client.post("/v2/models/churn/infer", json=oip_body(frame, outputs=[{"name": "x"}]))
        assert r.status_code == 422 and "no output 'x'" in r.json()["detail"]


def test_oip_single_tensor_for_a_numeric_model(
    packages: dict[str, ModelPackage], frame: pd.DataFrame
) -> None:
    pkg = packages["num"]
    runtime = ModelRuntime(pkg, name="num", version="num@1")
    host = ModelHost()
    host.put("num", runtime)
    numbers = frame[["tenure", "charges"]].astype(float)
    with client_for(host) as client:
        flat = {"name": "x", "shape": [len(numbers), 2], "datatype": "FP64"}
        for data in (numbers.to_numpy().ravel().tolist(), numbers.to_numpy().tolist()):
            r = client.post("/v2/models/num/infer", json={"inputs": [{**flat, "data": data}]})
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == pkg.predict(numbers).tolist()
        wrong = {**flat, "shape": [len(numbers), 3], "data": [0.0] * (3 * len(numbers))}
        r = client.post("/v2/models/num/infer", json={"inputs": [wrong]})
        assert r.status_code == 422
        assert "one [N, 2] tensor with the columns in that order" in r.json()["detail"]


def test_oip_mismatches_are_422(v1: ModelRuntime, frame: pd.DataFrame) -> None:
    with client_for(one_host(v1)) as client:
        body = oip_body(frame)
        body["inputs"][2]["datatype"] = "FP64"
        r = client.post("/v2/models/churn/infer", json=body)
        assert r.status_code == 422
        assert "input 'plan' is FP64; the model takes BYTES (string) there" in r.json()["detail"]
        body = oip_body(frame)
        body["inputs"].append({"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["x"]})
        r = client.post("/v2/models/churn/infer", json=body)
        assert "input 'colour' is not one of the model's inputs" in r.json()["detail"]
        body = oip_body(frame)
        body["inputs"][0]["shape"] = [99]
        r = client.post("/v2/models/churn/infer", json=body)
        assert "input 'tenure' has 6 values for shape [99]" in r.json()["detail"]
        r = client.post("/v2/models/churn/infer", json={"inputs": [{"name": "tenure"}]})
        assert r.status_code == 422
        assert "does not match the Open Inference Protocol: inputs.0.shape" in r.json()["detail"]


# ---- readiness, limits, tokens -------------------------------------------------------------
def test_not_ready_until_every_expected_deployment_is_loaded(
    v1: ModelRuntime, v2: ModelRuntime, frame: pd.DataFrame
) -> None:
    host = one_host(v1)
    host.expect("later")
    with client_for(host) as client:
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        assert client.get("/v2/models/later/ready").status_code == 503
        r = client.post("/deployments/later/predict", json={"records": records(frame)})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "still loading" in r.json()["detail"]
        host.put("later", v2)
        assert client.get("/v2/health/ready").status_code == 200
        r = client.post("/deployments/later/predict", json={"records": records(frame)})
        assert r.status_code == 200 and r.json()["model_version"] == "churn@2"


def test_body_over_the_limit_is_413(v1: ModelRuntime, frame: pd.DataFrame) -> None:
    host = one_host(v1, DeploymentConfig(max_request_bytes=300))
    body = json.dumps({"records": records(frame)}).encode()
    assert len(body) > 300
    with client_for(host) as client:
        r = client.post("/deployments/churn/predict", content=body)
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
        assert "larger than deployment 'churn' takes (300 bytes" in r.json()["detail"]
        chunks = iter([body[:200], body[200:]])  # streamed: no Content-Length to go by
        r = client.post("/deployments/churn/predict", content=chunks)
        assert r.status_code == 413
        small = json.dumps({"records": records(frame.iloc[:1])}).encode()
        assert client.post("/deployments/churn/predict", content=small).status_code == 200


def test_over_the_rate_limit_is_429_with_retry_after(v1: ModelRuntime, frame: pd.DataFrame) -> None:
    host = one_host(v1, DeploymentConfig(rate_limit_per_s=0.01))  # one token, then 100 s
    payload = {"records": records(frame.iloc[:1])}
    with client_for(host) as client:
        assert client.post("/deployments/churn/predict", json=payload).status_code == 200
        r = client.post("/deployments/churn/predict", json=payload)
        assert r.status_code == 429 and r.headers["content-type"] == PROBLEM
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == "rate_limited"
        assert "at most 0.01 requests per second" in r.json()["detail"]
        host.put("churn", v1, DeploymentConfig(rate_limit_per_s=0.01))
        assert client.post("/deployments/churn/predict", json=payload).status_code == 429


def test_tokens(v1: ModelRuntime, frame: pd.DataFrame) -> None:
    seen: list[tuple[str | None, str]] = []

    def check(token: str | None, deployment: str) -> bool:
        seen.append((token, deployment))
        return token == "s3cret" and deployment == "churn"

    payload = {"records": records(frame.iloc[:1])}
    with client_for(one_host(v1), token_check=check) as client:
        r = client.post("/deployments/churn/predict", json=payload)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer <token>" in r.json()["detail"]
        r = client.post(
            "/deployments/churn/predict", json=payload, headers={"Authorization": "Basic abc"}
        )
        assert r.status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        r = client.post("/deployments/churn/predict", json=payload, headers=wrong)
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
        good = {"Authorization": "Bearer s3cret"}
        assert (
            client.post("/deployments/churn/predict", json=payload, headers=good).status_code == 200
        )
        assert client.post("/v2/models/churn/infer", json=oip_body(frame)).status_code == 401
        assert client.get("/v2/models/churn").status_code == 401
        assert client.get("/v2/models/churn", headers=good).status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/metrics").status_code == 200
    assert ("nope", "churn") in seen and ("s3cret", "churn") in seen


def test_a_full_queue_is_503_with_retry_after(
    serve: Serve, packages: dict[str, ModelPackage], frame: pd.DataFrame
) -> None:
    runtime = ModelRuntime(packages["v1"], name="churn", version="churn@1")
    gate = threading.Event()
    inner = runtime.predict_many

    def held(payloads: Sequence[ModelInput]) -> list[PredictionBatch | BaseException]:
        assert gate.wait(30)
        return inner(payloads)

    runtime.predict_many = held  # type: ignore[method-assign]
    host = one_host(runtime, DeploymentConfig(max_queue=1, max_wait_ms=0))
    batcher = host.get("churn").primary.batcher
    payload = {"records": records(frame.iloc[:1])}
    statuses: list[int] = []

    def post() -> None:
        statuses.append(
            httpx.post(f"{url}/deployments/churn/predict", json=payload, timeout=60).status_code
        )

    with serve(create_model_app(host)) as url:
        first = threading.Thread(target=post)
        first.start()
        wait_for(lambda: batcher.in_flight == 1)
        second = threading.Thread(target=post)
        second.start()
        wait_for(lambda: batcher.queue_depth == 1)
        r = httpx.post(f"{url}/deployments/churn/predict", json=payload, timeout=60)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "max_queue=1" in r.json()["detail"]
        gate.set()
        first.join()
        second.join()
    assert statuses == [200, 200]


# ---- swaps, canary, shadow ------------------------------------------------------------------
def test_swap_under_steady_load_fails_no_request(
    serve: Serve,
    v1: ModelRuntime,
    v2: ModelRuntime,
    packages: dict[str, ModelPackage],
    frame: pd.DataFrame,
) -> None:
    host = one_host(v1, DeploymentConfig(max_wait_ms=1))
    old_batcher = host.get("churn").primary.batcher
    payload = {"records": records(frame.iloc[:2])}
    results: list[tuple[bool, int, str | None]] = []
    stop = threading.Event()
    swapped = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                after = swapped.is_set()
                r = client.post("/deployments/churn/predict", json=payload)
                version = r.json().get("model_version") if r.status_code == 200 else None
                results.append((after, r.status_code, version))

    with serve(create_model_app(host)) as url:
        clients = [threading.Thread(target=load) for _ in range(4)]
        for t in clients:
            t.start()
        wait_for(lambda: len(results) >= 20)
        host.put("churn", v2, DeploymentConfig(max_wait_ms=1))
        swapped.set()
        at_swap = len(results)
        wait_for(lambda: len(results) >= at_swap + 20)
        stop.set()
        for t in clients:
            t.join()
        final = httpx.post(f"{url}/deployments/churn/predict", json=payload, timeout=60).json()
        wait_for(lambda: old_batcher.closed)
    assert {status for _, status, _ in results} == {200}, "a request failed during the swap"
    assert any(v == "churn@1" for after, _, v in results if not after)
    assert {v for after, _, v in results if after} == {"churn@2"}
    assert final["model_version"] == "churn@2"
    assert_answers(final, packages["v2"], frame.iloc[:2])


def test_canary_share_is_honoured_and_sticky_keys_stay_put(
    v1: ModelRuntime, v2: ModelRuntime, frame: pd.DataFrame
) -> None:
    host = ModelHost()
    config = DeploymentConfig(
        canary=CanaryConfig(version="churn@2", percent=25), sticky_key="x-user"
    )
    deployment = host.put("churn", v1, config, canary=v2)
    keyed = [deployment.route(f"user-{i}").role for i in range(4000)]
    assert 0.21 < keyed.count("canary") / len(keyed) < 0.29
    assert all(deployment.route(f"user-{i}").role == keyed[i] for i in range(200))
    unkeyed = [deployment.route(None).role for _ in range(4000)]
    assert 0.19 < unkeyed.count("canary") / len(unkeyed) < 0.31
    payload = {"records": records(frame.iloc[:1])}
    with client_for(host) as client:
        meta = client.get("/v2/models/churn").json()
        assert meta["versions"] == ["churn@1", "churn@2"]
        assert meta["parameters"]["canary"] == {"version": "churn@2", "percent": 25.0}
        by_user: dict[str, set[str]] = {}
        for i in range(24):
            for _ in range(3):
                r = client.post(
                    "/deployments/churn/predict", json=payload, headers={"x-user": f"u{i}"}
                )
                by_user.setdefault(f"u{i}", set()).add(r.json()["model_version"])
        assert all(len(versions) == 1 for versions in by_user.values())
        assert set().union(*by_user.values()) == {"churn@1", "churn@2"}
        versioned = client.post("/v2/models/churn/versions/2/infer", json=oip_body(frame))
        assert versioned.json()["model_version"] == "churn@2"


def test_sticky_key_as_a_body_field(
    v1: ModelRuntime, v2: ModelRuntime, frame: pd.DataFrame
) -> None:
    host = ModelHost()
    config = DeploymentConfig(
        canary=CanaryConfig(version="churn@2", percent=50), sticky_key="customer"
    )
    deployment = host.put("churn", v1, config, canary=v2)
    with client_for(host) as client:
        for i in range(6):
            body = {"records": records(frame.iloc[:1]), "customer": f"c{i}"}
            r = client.post("/deployments/churn/predict", json=body)
            assert r.status_code == 200
            assert r.json()["model_version"] == deployment.route(f"c{i}").version


def test_canary_and_shadow_need_their_runtime_and_config(
    v1: ModelRuntime, v2: ModelRuntime
) -> None:
    host = ModelHost()
    with pytest.raises(InvalidInput, match=r"a canary needs both.*config.canary is missing"):
        host.put("churn", v1, canary=v2)
    with pytest.raises(InvalidInput, match=r"a shadow needs both.*pass shadow="):
        host.put("churn", v1, DeploymentConfig(shadow=ShadowConfig(version="churn@2")))
    with pytest.raises(InvalidInput, match=r"Deployment name 'no way' is not valid"):
        host.put("no way", v1)


def test_shadow_never_changes_the_answer_and_reaches_the_sink(
    v1: ModelRuntime,
    v2: ModelRuntime,
    packages: dict[str, ModelPackage],
    frame: pd.DataFrame,
) -> None:
    sink: list[PredictionRecord] = []
    host = ModelHost(prediction_sink=sink.extend)
    host.put("churn", v1, DeploymentConfig(shadow=ShadowConfig(version="churn@2")), shadow=v2)
    rows = records(frame.iloc[:2])
    with client_for(host) as client:
        r = client.post("/deployments/churn/predict", json={"records": rows})
        assert r.status_code == 200
        body = r.json()
        assert body["model_version"] == "churn@1"
        assert_answers(body, packages["v1"], frame.iloc[:2])
        wait_for(lambda: host.flush_predictions() and len(sink) == 4)
    by_role = {(rec.role, rec.row): rec for rec in sink}
    assert set(by_role) == {("primary", 0), ("primary", 1), ("shadow", 0), ("shadow", 1)}
    shadow = by_role[("shadow", 1)]
    assert shadow.request_id == body["request_id"] and shadow.model_version == "churn@2"
    assert shadow.version_id == "id-2" and shadow.deployment == "churn"
    assert shadow.inputs == rows[1]
    assert shadow.outputs["prediction"] == packages["v2"].predict(frame.iloc[:2]).tolist()[1]
    primary = by_role[("primary", 0)]
    assert primary.outputs["probabilities"] == body["probabilities"][0]
    assert primary.latency_ms > 0 and primary.ts.tzinfo is not None


def test_a_failing_shadow_is_only_counted(
    packages: dict[str, ModelPackage], v1: ModelRuntime, frame: pd.DataFrame
) -> None:
    broken = ModelRuntime(packages["v2"], name="churn", version="churn@2")

    def fail(payloads: Sequence[ModelInput]) -> list[PredictionBatch | BaseException]:
        raise RuntimeError("the shadow model broke")

    broken.predict_many = fail  # type: ignore[method-assign]
    sink: list[PredictionRecord] = []
    host = ModelHost(prediction_sink=sink.extend)
    host.put("churn", v1, DeploymentConfig(shadow=ShadowConfig(version="churn@2")), shadow=broken)
    with client_for(host) as client:
        r = client.post("/deployments/churn/predict", json={"records": records(frame.iloc[:1])})
        assert r.status_code == 200 and r.json()["model_version"] == "churn@1"
        wait_for(lambda: host.shadow_errors == 1)
        metrics = client.get("/metrics").text
    assert "modelworks_serving_shadow_errors_total 1.0" in metrics
    host.flush_predictions()
    assert [rec.role for rec in sink] == ["primary"]


def test_prediction_log_can_be_switched_off_and_drains_on_shutdown(
    v1: ModelRuntime, frame: pd.DataFrame
) -> None:
    sink: list[PredictionRecord] = []
    host = ModelHost(prediction_sink=sink.extend)
    host.put("churn", v1)
    host.put("quiet", v1, DeploymentConfig(log_predictions=False))
    payload = {"columns": {c: frame[c].tolist() for c in frame.columns}}
    with client_for(host) as client:
        assert client.post("/deployments/quiet/predict", json=payload).status_code == 200
        assert client.post("/deployments/churn/predict", json=payload).status_code == 200
    # leaving the client ran the app's shutdown: batchers drained, the sink flushed
    assert not host.ready
    assert [rec.deployment for rec in sink] == ["churn"] * len(frame)
    assert sink[3].inputs == records(frame)[3]


# ---- metrics --------------------------------------------------------------------------------
def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_have_the_series(v1: ModelRuntime, frame: pd.DataFrame) -> None:
    with client_for(one_host(v1)) as client:
        good = {"records": records(frame.iloc[:3])}
        assert client.post("/deployments/churn/predict", json=good).status_code == 200
        bad = {"records": [{"tenure": "x", "charges": 1.0, "plan": "pro"}]}
        assert client.post("/deployments/churn/predict", json=bad).status_code == 422
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    churn = (("deployment", "churn"),)
    assert (
        got[
            ("modelworks_serving_requests_total", (*churn, ("route", "predict"), ("status", "200")))
        ]
        == 1
    )
    assert (
        got[
            ("modelworks_serving_requests_total", (*churn, ("route", "predict"), ("status", "422")))
        ]
        == 1
    )
    assert got[("modelworks_serving_errors_total", (("code", "invalid_input"), *churn))] == 1
    assert got[("modelworks_serving_request_seconds_count", (*churn, ("route", "predict")))] == 2
    primary = (*churn, ("role", "primary"))
    assert (
        got[
            (
                "modelworks_serving_predictions_total",
                (*churn, ("model_version", "churn@1"), ("role", "primary")),
            )
        ]
        == 3
    )
    info = (
        "modelworks_serving_model_info",
        (
            ("backend", "native"),
            *churn,
            ("flavor", "sklearn"),
            ("model_version", "churn@1"),
            ("role", "primary"),
            ("version_id", "id-1"),
        ),
    )
    assert got[info] == 1
    assert got[("modelworks_serving_queue_depth", primary)] == 0
    # two batches: the good request (3 rows) and the bad one (failed its checks, 1 row)
    assert got[("modelworks_serving_batch_size_count", primary)] == 2
    assert got[("modelworks_serving_batch_size_sum", primary)] == 4
    assert (
        got[("modelworks_serving_batch_size_bucket", (*churn, ("le", "4.0"), ("role", "primary")))]
        == 2
    )
    assert got[("modelworks_serving_model_seconds_total", primary)] > 0
    assert got[("modelworks_serving_queue_rejected_total", primary)] == 0
    assert got[("modelworks_serving_ready", ())] == 1


# ---- modelworks serve ----------------------------------------------------------------------
def test_serve_docstring_has_a_summary_and_an_example() -> None:
    doc = serve_cli.serve.__doc__ or ""
    assert doc.strip().splitlines()[0].endswith(".")
    assert "Example:" in doc and "modelworks serve " in doc


def test_resolve_a_package_folder_and_a_registered_version(
    packages: dict[str, ModelPackage], store: Any, tmp_path: Path
) -> None:
    from modelworks.core.auth import local_principal
    from modelworks.registry.service import RegistryService

    pkg, name, version, version_id = serve_cli.resolve_target(str(packages["v1"].path))
    assert (name, version, version_id) == ("v1", "v1", "")
    assert pkg.meta.classes == ["churn", "stay"]
    registered = RegistryService(store).register_package(
        local_principal(), "default", "churn", packages["v2"].path
    )
    pkg, name, version, version_id = serve_cli.resolve_target("churn@1")
    assert (name, version, version_id) == ("churn", "churn@1", registered.id)
    assert pkg.meta.files == packages["v2"].meta.files


def test_app_factory_for_workers_reads_the_spec(
    packages: dict[str, ModelPackage], frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = serve_cli.ServeSpec(
        package_dir=str(packages["v1"].path),
        name="churn",
        version="churn@1",
        config=DeploymentConfig(max_batch_size=8),
    )
    monkeypatch.setenv(serve_cli.SPEC_ENV, spec.model_dump_json())
    monkeypatch.setenv(serve_cli.TOKEN_ENV, "tok")
    app = serve_cli.create_app_from_env()
    with TestClient(app) as client:
        payload = {"records": records(frame.iloc[:2])}
        assert client.post("/deployments/churn/predict", json=payload).status_code == 401
        r = client.post(
            "/deployments/churn/predict", json=payload, headers={"Authorization": "Bearer tok"}
        )
        assert r.status_code == 200 and r.json()["model_version"] == "churn@1"
    assert app.state.host.get("churn").config.max_batch_size == 8
    monkeypatch.delenv(serve_cli.SPEC_ENV)
    with pytest.raises(InvalidInput, match=r"MODELWORKS_SERVE_SPEC is not set"):
        serve_cli.create_app_from_env()


def test_serve_command_runs_uvicorn(
    packages: dict[str, ModelPackage], monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv(serve_cli.SPEC_ENV, "restored after the test")
    folder = str(packages["v1"].path)
    serve_cli.serve(folder, port=9001, name="churn", max_batch_size=16, rate_limit=5.0)
    app, options = calls[-1]
    assert isinstance(app, FastAPI)
    assert options["port"] == 9001 and options["timeout_graceful_shutdown"] == 30
    deployment = app.state.host.get("churn")
    assert deployment.config.max_batch_size == 16 and deployment.config.rate_limit_per_s == 5.0
    serve_cli.serve(folder, workers=3, onnx=False)
    target, options = calls[-1]
    assert target == "modelworks.serving.serve_cli:create_app_from_env"
    assert options["factory"] is True and options["workers"] == 3
    import os

    spec = serve_cli.ServeSpec.model_validate_json(os.environ[serve_cli.SPEC_ENV])
    assert spec.package_dir == folder and spec.name == "v1" and spec.use_onnx is False
    with pytest.raises(InvalidInput, match=r"--name 'my model' is not a valid deployment name"):
        serve_cli.serve(folder, name="my model")


def test_serve_a_named_deployment_with_its_version_config_and_tokens(
    packages: dict[str, ModelPackage],
    frame: pd.DataFrame,
    store: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    from modelworks.core.auth import local_principal
    from modelworks.registry.service import RegistryService
    from modelworks.serving.service import DeploymentService

    me = local_principal()
    registry = RegistryService(store)
    for key in ("v1", "v2"):
        registry.register_package(me, "default", "churn", packages[key].path)
    registry.set_alias(me, "default", "churn", "champion", 1)
    deployments = DeploymentService(store)
    config = {"max_batch_size": 8, "canary": {"version": "churn@2", "percent": 5}}
    deployments.create(me, "default", "churn-prod", "churn@champion", config=config)
    deployments.create(me, "default", "other", "churn@2")
    monkeypatch.delenv(serve_cli.TOKEN_ENV, raising=False)
    with pytest.raises(InvalidInput, match=r"'churn-prod' has no live token.*token create"):
        serve_cli.serve("churn-prod")
    live = deployments.create_token(me, "default", "churn-prod").token
    revoked = deployments.create_token(me, "default", "churn-prod", "old")
    deployments.revoke_token(me, "default", "churn-prod", revoked.id)
    elsewhere = deployments.create_token(me, "default", "other").token

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    serve_cli.serve("churn-prod", port=9002)
    app, _ = calls[-1]
    deployment = app.state.host.get("churn-prod")
    assert deployment.config.max_batch_size == 8 and deployment.canary is None  # served alone
    payload = {"records": records(frame.iloc[:2])}
    with TestClient(app) as client:

        def call(token: str | None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.post("/deployments/churn-prod/predict", json=payload, headers=headers)

        assert call(None).status_code == 401
        assert call(revoked.token).status_code == 403 and call(elsewhere).status_code == 403
        answer = call(live)
        assert answer.status_code == 200 and answer.json()["model_version"] == "churn@1"
    with pytest.raises(InvalidInput, match=r"served under its own name; leave out --name"):
        serve_cli.serve("churn-prod", name="x")
    with pytest.raises(NotFound, match=r"Deployment 'nope' does not exist"):
        serve_cli.serve("nope")
