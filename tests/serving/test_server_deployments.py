"""Deployments served by ``modelworks server``: tokens, predictions, OIP, alias moves under
load with no failed request, a version that fails to load, feedback, metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from modelworks.core.auth import local_principal
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.registry.service import RegistryService
from modelworks.server.app import create_app
from modelworks.serving.service import DeploymentService
from modelworks.training.package import save_package

ME = local_principal()


class Untrusted(BaseEstimator, ClassifierMixin):  # type: ignore[misc]
    """A model of a type nobody registered as safe: its package will not load."""

    def fit(self, X: Any, y: Any) -> Untrusted:
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.classes_[0])

    def predict_proba(self, X: Any) -> Any:
        return np.tile([1.0, 0.0], (len(X), 1))


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :4]
    X.columns = ["radius", "texture", "perimeter", "area"]
    return X, y


@pytest.fixture
def site(
    store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series], serve: Any
) -> Iterator[dict[str, Any]]:
    X, y = data
    reg = RegistryService(store)
    models = []
    for c in (1.0, 0.001):
        model = LogisticRegression(C=c, max_iter=5000).fit(X, y)
        save_package(model, tmp_path / f"pkg-{c}", input_example=X.head())
        reg.register_package(ME, "default", "churn", tmp_path / f"pkg-{c}")
        models.append(model)
    reg.set_alias(ME, "default", "churn", "champion", 1)
    deployments = DeploymentService(store)
    deployments.create(ME, "default", "churn-prod", "churn@champion",
                       config={"max_batch_size": 16, "max_wait_ms": 1})  # fmt: skip
    token = deployments.create_token(ME, "default", "churn-prod").token
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", "admin-password")
    gov.create_user(ME, "stranger", "stranger-password")
    stranger = gov.create_token(gov.authenticate_password("stranger", "stranger-password"), "t")
    app = create_app(store, run_jobs=False)
    with serve(app) as url:
        manager = app.state.deployment_manager
        manager.sync_once()
        yield {
            "url": url, "token": token, "stranger": stranger.token, "models": models,
            "manager": manager, "app": app, "registry": reg, "deployments": deployments,
        }  # fmt: skip


def _predict(url: str, token: str, rows: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(
        f"{url}/deployments/churn-prod/predict",
        json={"records": rows},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_predictions_tokens_and_open_inference(
    site: dict[str, Any], data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = data
    rows = X.head(5).to_dict(orient="records")
    resp = _predict(site["url"], site["token"], rows)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == "churn@1"
    np.testing.assert_allclose(
        body["probabilities"], site["models"][0].predict_proba(X.head(5)), rtol=1e-9
    )
    assert httpx.post(f"{site['url']}/deployments/churn-prod/predict",
                      json={"records": rows}).status_code == 401  # fmt: skip
    assert _predict(site["url"], site["stranger"], rows).status_code == 403
    bad = _predict(site["url"], site["token"], [{"radius": "wide"}])
    assert bad.status_code == 422 and "radius" in bad.json()["detail"]

    auth = {"Authorization": f"Bearer {site['token']}"}
    assert httpx.get(f"{site['url']}/v2/models/churn-prod").status_code == 401
    meta = httpx.get(f"{site['url']}/v2/models/churn-prod", headers=auth).json()
    assert meta["versions"] == ["churn@1"]
    assert [i["name"] for i in meta["inputs"]] == list(X.columns)
    infer = httpx.post(
        f"{site['url']}/v2/models/churn-prod/infer",
        json={
            "inputs": [
                {"name": c, "shape": [2], "datatype": "FP64", "data": X[c].head(2).tolist()}
                for c in X.columns
            ]
        },
        headers=auth,
    )
    assert infer.status_code == 200, infer.text
    assert httpx.get(f"{site['url']}/v2/health/ready").status_code == 200
    metrics = httpx.get(f"{site['url']}/metrics").text
    assert 'deployment="churn-prod"' in metrics


def test_an_alias_move_under_load_fails_no_request(
    site: dict[str, Any], data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = data
    rows = X.head(3).to_dict(orient="records")
    stop = threading.Event()
    results: list[tuple[int, str]] = []

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(
                    f"{site['url']}/deployments/churn-prod/predict",
                    json={"records": rows},
                    headers={"Authorization": f"Bearer {site['token']}"},
                )
                version = r.json().get("model_version", "") if r.status_code == 200 else ""
                results.append((r.status_code, version))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    site["registry"].set_alias(ME, "default", "churn", "champion", 2)
    site["manager"].sync_once()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    statuses = {s for s, _ in results}
    assert statuses == {200}, f"failed requests: {[r for r in results if r[0] != 200][:5]}"
    versions = [v for _, v in results]
    assert versions[0] == "churn@1" and versions[-1] == "churn@2"
    assert site["deployments"].get(ME, "default", "churn-prod").served_version == 2


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(
    site: dict[str, Any], data: tuple[pd.DataFrame, pd.Series], tmp_path: Path
) -> None:
    X, y = data
    save_package(Untrusted().fit(X, y), tmp_path / "bad", input_example=X.head())
    bad = site["registry"].register_package(ME, "default", "churn", tmp_path / "bad")
    site["registry"].set_alias(ME, "default", "churn", "champion", bad.version)
    site["manager"].sync_once()
    resp = _predict(site["url"], site["token"], X.head(2).to_dict(orient="records"))
    assert resp.status_code == 200 and resp.json()["model_version"] == "churn@1"
    shown = site["deployments"].get(ME, "default", "churn-prod")
    assert shown.served_version == 1 and shown.last_error


def test_feedback_joins_the_prediction_log(
    site: dict[str, Any], data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, y = data
    resp = _predict(site["url"], site["token"], X.head(1).to_dict(orient="records"))
    request_id = resp.json()["request_id"]
    fb = httpx.post(
        f"{site['url']}/deployments/churn-prod/feedback",
        json={"request_id": request_id, "ground_truth": int(y.iloc[0])},
        headers={"Authorization": f"Bearer {site['token']}"},
    )
    assert fb.status_code == 204, fb.text
    app = site["app"]
    assert app.state.model_host.flush_predictions(timeout=10)
    log = app.state.prediction_log
    log.flush()
    joined = log.read_with_feedback("churn-prod").to_pylist()
    assert [r["request_id"] for r in joined] == [request_id]
    assert json.loads(joined[0]["ground_truth"]) == int(y.iloc[0])
