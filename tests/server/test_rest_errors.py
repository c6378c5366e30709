"""Bad input gets a clear 4xx problem body and stores nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelworks.core.config import Settings
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.server.app import create_app


@pytest.fixture
def api(tmp_path) -> Iterator[tuple[TestClient, Store]]:  # type: ignore[no-untyped-def]
    store = Store(Settings(home=tmp_path / "h", max_request_bytes=64 * 1024))
    gov = GovernanceService(store)
    gov.bootstrap_admin("root", "root-password")
    token = gov.create_token(gov.authenticate_password("root", "root-password"), "t").token
    client = TestClient(create_app(store), headers={"Authorization": f"Bearer {token}"})
    with client:
        yield client, store
    store.close()


def _counts(store: Store) -> tuple[int, int, int]:
    with store.transaction() as s:
        return (
            s.execute(text("SELECT count(*) FROM experiments")).scalar_one(),
            s.execute(text("SELECT count(*) FROM runs")).scalar_one(),
            s.execute(text("SELECT count(*) FROM audit_records")).scalar_one(),
        )


def _problem(resp, status: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["detail"]
    assert "Traceback" not in resp.text
    return body  # type: ignore[no-any-return]


def test_malformed_json(api: tuple[TestClient, Store]) -> None:
    client, store = api
    before = _counts(store)
    resp = client.post(
        "/api/v1/projects/default/experiments",
        content=b'{"name": "x",',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in _problem(resp, 400)["detail"]
    assert _counts(store) == before


def test_wrong_types(api: tuple[TestClient, Store]) -> None:
    client, store = api
    before = _counts(store)
    resp = client.post("/api/v1/projects/default/experiments", json={"name": 12, "tags": "x"})
    body = _problem(resp, 422)
    assert "name" in body["detail"] and "tags" in body["detail"]
    run = client.post("/api/v1/projects/default/runs", json={"experiment": "e"}).json()
    resp = client.post(
        f"/api/v1/runs/{run['id']}/log-batch",
        json={"metrics": [{"key": "m", "value": "not-a-number", "step": 0}]},
    )
    assert "value" in _problem(resp, 422)["detail"]
    assert _counts(store)[0] == before[0] + 1  # only the experiment made by create_run


def test_unknown_ids(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    body = _problem(client.get("/api/v1/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ"), 404)
    assert "does not exist" in body["detail"]
    _problem(client.get("/api/v1/projects/nope/experiments"), 404)
    _problem(client.get("/api/v1/projects/default/experiments/nope"), 404)
    _problem(client.get("/api/v1/no-such-route"), 404)


def test_oversized_body(api: tuple[TestClient, Store]) -> None:
    client, store = api
    before = _counts(store)
    resp = client.post(
        "/api/v1/projects/default/experiments",
        json={"name": "big", "description": "x" * (128 * 1024)},
    )
    assert "larger than the limit" in _problem(resp, 413)["detail"]
    assert _counts(store) == before


def test_path_traversal_in_artifact_paths(api: tuple[TestClient, Store]) -> None:
    client, store = api
    run = client.post("/api/v1/projects/default/runs", json={"experiment": "e"}).json()
    for bad in ("..%2F..%2Fetc%2Fpasswd", "a/..%2F..%2Fx", "%2Fetc%2Fpasswd"):
        resp = client.put(f"/api/v1/runs/{run['id']}/artifacts/{bad}", content=b"x")
        assert resp.status_code in (404, 422), (bad, resp.status_code, resp.text)
    assert client.get(f"/api/v1/runs/{run['id']}/artifacts").json() == []
    with store.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM run_artifacts")).scalar_one() == 0


@pytest.mark.parametrize(
    "hostile",
    [
        "metrics.auc > 0 OR 1=1",
        "params.x = 'a' ; DROP TABLE runs; --",
        "params.x = 'a'' OR ''1''=''1'",
        "tags.`x` = 'y') OR (1=1",
        "attributes.status = 'FINISHED' UNION SELECT * FROM users --",
    ],
)
def test_hostile_filters(api: tuple[TestClient, Store], hostile: str) -> None:
    client, store = api
    client.post("/api/v1/projects/default/runs", json={"experiment": "e", "params": {"x": "b"}})
    resp = client.post("/api/v1/projects/default/runs/search", json={"filter": hostile})
    if resp.status_code == 200:
        assert resp.json()["items"] == []
    else:
        assert "filter" in _problem(resp, 422)["detail"].lower()
    with store.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM runs")).scalar_one() == 1
        assert s.execute(text("SELECT count(*) FROM users")).scalar_one() == 1


def test_duplicate_names(api: tuple[TestClient, Store]) -> None:
    client, store = api
    assert (
        client.post("/api/v1/projects/default/experiments", json={"name": "d"}).status_code == 201
    )
    before = _counts(store)
    body = _problem(client.post("/api/v1/projects/default/experiments", json={"name": "d"}), 409)
    assert "already exists" in body["detail"]
    assert _counts(store) == before


def test_missing_or_bad_token(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    resp = client.get("/api/v1/projects", headers={"Authorization": "Bearer mw_wrong"})
    _problem(resp, 401)
    resp = client.get("/api/v1/projects", headers={"Authorization": "Basic abc"})
    assert "Bearer" in _problem(resp, 401)["detail"]


def test_request_id_is_echoed(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    resp = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"


def test_audit_query_filters_and_validation(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    for name in ("a1", "a2"):
        client.post("/api/v1/projects/default/experiments", json={"name": name})
    page = client.get("/api/v1/audit", params={"action": "experiment.*", "max_results": 1})
    assert page.status_code == 200, page.text
    body = page.json()
    assert [r["action"] for r in body["items"]] == ["experiment.create"]
    assert body["next_page_token"]
    scoped = client.get("/api/v1/projects/default/audit", params={"actor": "nobody"})
    assert scoped.json()["items"] == []
    _problem(client.get("/api/v1/audit", params={"max_results": 0}), 422)
    _problem(client.get("/api/v1/audit", params={"since": "yesterday"}), 422)


def test_log_batch_retry_with_idempotency_key(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    run = client.post("/api/v1/projects/default/runs", json={"experiment": "e"}).json()
    body = {"metrics": [{"key": "m", "value": 1.0, "step": 0}]}
    url = f"/api/v1/runs/{run['id']}/log-batch"
    for _ in range(2):
        assert (
            client.post(url, json=body, headers={"Idempotency-Key": "k-123456"}).status_code == 204
        )
    assert client.post(url, json=body).status_code == 204  # no key: applied again
    points = client.get(f"/api/v1/runs/{run['id']}/metrics/m").json()
    assert len(points) == 2
    _problem(client.post(url, json=body, headers={"Idempotency-Key": "no"}), 422)
