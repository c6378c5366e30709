"""The data REST API: problem bodies for bad input, uploads and their size limit, parts,
pagination. What the SDK suite covers in both modes is not repeated here."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelworks.core.config import Settings
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.server.app import create_app

API = "/api/v1/projects/default"
LIMIT = 64 * 1024


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    store = Store(
        Settings(home=tmp_path / "h", max_request_bytes=LIMIT, max_artifact_bytes=2 * LIMIT)
    )
    gov = GovernanceService(store)
    gov.bootstrap_admin("root", "root-password")
    token = gov.create_token(gov.authenticate_password("root", "root-password"), "t").token
    client = TestClient(create_app(store), headers={"Authorization": f"Bearer {token}"})
    with client:
        yield client, store
    store.close()


def _problem(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["detail"]
    if code:
        assert body["code"] == code
    assert "Traceback" not in resp.text
    return body


def _count(store: Store, table: str) -> int:
    with store.read() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _upload(client: TestClient, name: str, body: bytes, **params: Any) -> Any:
    return client.post(f"{API}/datasets/{name}/upload", params=params, content=body)


CSV = b"id,x,label\n1,0.5,a\n2,1.5,b\n3,2.5,\n"


def _parquet(rows: int) -> bytes:
    buf = io.BytesIO()
    ids = list(range(rows))
    pq.write_table(pa.table({"id": ids, "x": [i / 2 for i in ids], "label": ["p"] * rows}), buf)
    return buf.getvalue()


# ---- uploads -------------------------------------------------------------------------------
def test_upload_raw_csv_and_parquet(api: tuple[TestClient, Store]) -> None:
    client, store = api
    resp = _upload(client, "churn", CSV, format="csv", message="first")
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["rows"] == 3 and result["version"]["ref"] == "churn@1"
    assert result["version"]["message"] == "first"
    resp = _upload(client, "churn", _parquet(4), filename="more.parquet", mode="append")
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"]["row_count"] == 7
    assert "more.parquet" in str(resp.json()["version"]["source"])
    # The uploaded bytes were only needed while reading them.
    uploads = store.settings.home_path / "tmp" / "uploads"
    assert not any(uploads.iterdir())


def test_upload_multipart_takes_the_format_from_the_file_name(
    api: tuple[TestClient, Store],
) -> None:
    client, _ = api
    resp = client.post(
        f"{API}/datasets/churn/upload", files={"file": ("export.csv", CSV, "text/csv")}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"]["row_count"] == 3
    body = _problem(
        client.post(f"{API}/datasets/churn/upload", files={"other": ("x.csv", CSV)}), 422
    )
    assert "'file'" in body["detail"]


def test_upload_format_from_content_type_or_an_error(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    resp = client.post(
        f"{API}/datasets/churn/upload", content=CSV, headers={"Content-Type": "text/csv"}
    )
    assert resp.status_code == 200, resp.text
    body = _problem(client.post(f"{API}/datasets/churn/upload", content=CSV), 422)
    assert "?format=" in body["detail"]
    _problem(_upload(client, "churn", CSV, format="xml"), 422, "invalid_input")


def test_upload_over_the_limit_is_refused_and_stores_nothing(
    api: tuple[TestClient, Store],
) -> None:
    client, store = api
    big = b"id\n" + b"1\n" * LIMIT  # over the 2 x 64 KiB artifact limit
    before = (_count(store, "datasets"), _count(store, "audit_records"))
    body = _problem(_upload(client, "big", big, format="csv"), 413, "payload_too_large")
    assert "MODELWORKS_MAX_ARTIFACT_BYTES" in body["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(8):
            yield b"1\n" * (LIMIT // 4)

    resp = client.post(f"{API}/datasets/big/upload", params={"format": "csv"}, content=chunks())
    _problem(resp, 413)
    assert (_count(store, "datasets"), _count(store, "audit_records")) == before
    # Uploads get the artifact limit, not the (smaller) JSON body limit.
    mid = b"id\n" + b"1\n" * (LIMIT // 2 + 100)
    assert LIMIT < len(mid) < 2 * LIMIT
    assert _upload(client, "mid", mid, format="csv").status_code == 200


def test_bad_file_content_is_a_clear_422(api: tuple[TestClient, Store]) -> None:
    client, store = api
    body = _problem(_upload(client, "p", b"not parquet at all", format="parquet"), 422)
    assert "parquet" in body["detail"].lower()
    assert _count(store, "dataset_versions") == 0


# ---- spec ingest ---------------------------------------------------------------------------
def test_ingest_from_a_source_spec(api: tuple[TestClient, Store], tmp_path: Path) -> None:
    client, _ = api
    path = tmp_path / "server-side.csv"
    path.write_bytes(CSV)
    resp = client.post(
        f"{API}/datasets/churn/ingest",
        json={"source": {"kind": "csv", "path": str(path)}, "message": "m"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"]["row_count"] == 3
    body = _problem(
        client.post(f"{API}/datasets/churn/ingest", json={"source": {"kind": "teleport"}}), 422
    )
    assert "Unknown source kind 'teleport'" in body["detail"]
    body = _problem(
        client.post(f"{API}/datasets/churn/ingest", json={"source": {}, "mode": "upsert"}), 422
    )
    assert "mode" in body["detail"]
    body = _problem(client.post(f"{API}/datasets/churn/ingest", json={"sourc": {}}), 422)
    assert "source" in body["detail"]


# ---- problem bodies ------------------------------------------------------------------------
def test_not_found_conflict_and_invalid(api: tuple[TestClient, Store]) -> None:
    client, store = api
    body = _problem(client.get(f"{API}/datasets/nope"), 404, "not_found")
    assert "Dataset 'nope' does not exist" in body["detail"]
    _problem(client.get(f"{API}/dataset-versions/nope@1"), 404, "not_found")
    _problem(client.get("/api/v1/projects/no-such-project/datasets"), 404)

    assert _upload(client, "churn", CSV, format="csv").status_code == 200
    body = _problem(client.get(f"{API}/dataset-versions/churn@9"), 404, "not_found")
    assert "latest is 1" in body["detail"] and "churn@latest" in body["detail"]
    _problem(client.get(f"{API}/dataset-versions/churn@nosuchtag"), 404, "not_found")

    created = client.post(f"{API}/datasets", json={"name": "dup"})
    assert created.status_code == 201, created.text
    body = _problem(client.post(f"{API}/datasets", json={"name": "dup"}), 409, "already_exists")
    assert "already exists" in body["detail"]

    assert client.delete(f"{API}/datasets/churn").json()["deleted"] is True
    body = _problem(_upload(client, "churn", CSV, format="csv"), 409, "conflict")
    assert "restore" in body["detail"]
    assert client.post(f"{API}/datasets/churn/restore").json()["deleted"] is False

    before = _count(store, "datasets")
    _problem(client.post(f"{API}/datasets", json={"name": "-bad"}), 422, "invalid_input")
    body = _problem(
        client.post(f"{API}/datasets", json={"name": "ok", "schema_policy": "loose"}), 422
    )
    assert "schema_policy" in body["detail"]
    _problem(client.post(f"{API}/datasets", json={"name": "ok", "colour": "red"}), 422)
    assert _count(store, "datasets") == before
    _problem(client.get(f"{API}/dataset-versions/churn@"), 422, "invalid_input")
    _problem(client.put(f"{API}/dataset-versions/churn@1/tags/latest"), 422, "invalid_input")
    _problem(client.get(f"{API}/dataset-versions/churn/preview", params={"limit": 0}), 422)
    body = _problem(
        client.get(f"{API}/dataset-versions/churn/preview", params={"columns": ["zzz"]}), 422
    )
    assert "zzz" in body["detail"]
    _problem(client.get(f"{API}/dataset-versions/churn/lineage", params={"direction": "x"}), 422)


def test_refs_in_the_path_may_be_url_encoded(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    _upload(client, "churn", CSV, format="csv")
    tagged = client.put(f"{API}/dataset-versions/churn%401/tags/golden")
    assert tagged.status_code == 200 and tagged.json()["tags"] == ["golden"]
    for ref in ("churn", "churn@latest", "churn%40latest", "churn@1", "churn%40golden"):
        resp = client.get(f"{API}/dataset-versions/{ref}")
        assert resp.status_code == 200, (ref, resp.text)
        assert resp.json()["ref"] == "churn@1" and resp.json()["profile"] is not None
    lean = client.get(f"{API}/dataset-versions/churn@1", params={"with_profile": False}).json()
    assert lean["profile"] is None
    assert client.delete(f"{API}/datasets/churn/tags/golden").status_code == 200
    _problem(client.delete(f"{API}/datasets/churn/tags/golden"), 404)


# ---- parts ---------------------------------------------------------------------------------
def test_part_download_is_verified_and_scoped_to_the_version(
    api: tuple[TestClient, Store],
) -> None:
    client, _ = api
    v1 = _upload(client, "a", CSV, format="csv").json()["version"]
    other = _upload(client, "b", _parquet(5), format="parquet").json()["version"]
    sha = v1["files"][0]["sha256"]
    resp = client.get(f"{API}/dataset-versions/a@1/parts/{sha}")
    assert resp.status_code == 200
    assert hashlib.sha256(resp.content).hexdigest() == sha
    assert resp.headers["etag"] == f'"{sha}"'
    assert resp.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(resp.content)).num_rows == 3
    # A checksum opens only the parts of a version the caller may read.
    foreign = other["files"][0]["sha256"]
    body = _problem(client.get(f"{API}/dataset-versions/a@1/parts/{foreign}"), 404)
    assert "has no part" in body["detail"]
    _problem(client.get(f"{API}/dataset-versions/a@1/parts/..%2F..%2Fsecret_key"), 404)


# ---- pagination ----------------------------------------------------------------------------
def test_dataset_listing_pages(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    for i in range(5):
        assert client.post(f"{API}/datasets", json={"name": f"d{i}"}).status_code == 201
    names: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, Any] = {"max_results": 2}
        if token:
            params["page_token"] = token
        page = client.get(f"{API}/datasets", params=params).json()
        names += [d["name"] for d in page["items"]]
        pages += 1
        token = page["next_page_token"]
        if not token:
            break
    assert pages == 3 and sorted(names) == [f"d{i}" for i in range(5)]
    body = _problem(client.get(f"{API}/datasets", params={"page_token": "garbage"}), 422)
    assert "page_token" in body["detail"]
    _problem(client.get(f"{API}/datasets", params={"max_results": 0}), 422)
    client.delete(f"{API}/datasets/d0")
    listed = client.get(f"{API}/datasets").json()["items"]
    assert "d0" not in {d["name"] for d in listed}
    listed = client.get(f"{API}/datasets", params={"include_deleted": True}).json()["items"]
    assert "d0" in {d["name"] for d in listed}


def test_routes_are_in_the_openapi_description_with_their_rule(
    api: tuple[TestClient, Store],
) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/projects/{project}/datasets/{dataset}"]["delete"]
    assert op["x-modelworks-auth"] == "maintainer"
    assert "/api/v1/projects/{project}/dataset-versions/{ref}/parts/{sha256}" in spec["paths"]


# ---- validation and transforms -------------------------------------------------------------
def test_validate_and_transform_errors(api: tuple[TestClient, Store]) -> None:
    client, store = api
    _upload(client, "churn", CSV, format="csv")
    body = _problem(client.post(f"{API}/dataset-versions/churn@1/validate"), 422)
    assert "no expectations" in body["detail"]
    body = _problem(
        client.put(
            f"{API}/datasets/churn/expectations",
            json={"suite": {"expectations": [{"type": "row_count"}]}},
        ),
        422,
    )
    assert "min" in body["detail"]
    inferred = client.post(f"{API}/dataset-versions/churn@1/expectations/infer").json()["suite"]
    assert client.put(f"{API}/datasets/churn/expectations", json={"suite": inferred}).json()[
        "has_expectations"
    ]
    assert client.get(f"{API}/datasets/churn/expectations").json()["suite"]
    run = client.post(f"{API}/dataset-versions/churn@1/validate")  # the dataset's own suite
    assert run.status_code == 200 and run.json()["success"] is True

    versions = _count(store, "dataset_versions")
    _problem(client.post(f"{API}/transforms/sql", json={"sql": "DROP TABLE x", "output": "o"}), 422)
    _problem(
        client.post(f"{API}/transforms/sql", json={"sql": 'SELECT * FROM "nope@1"', "output": "o"}),
        404,
    )
    _problem(
        client.post(
            f"{API}/transforms/clean", json={"ref": "churn@1", "steps": [{"op": "teleport"}]}
        ),
        422,
    )
    assert _count(store, "dataset_versions") == versions
    # Steps may come as a list or as {"steps": [...]}, like a steps file.
    resp = client.post(
        f"{API}/transforms/clean",
        json={"ref": "churn@1", "steps": {"steps": [{"op": "deduplicate"}]}, "output": "c"},
    )
    assert resp.status_code == 200, resp.text
    made = resp.json()["version"]["ref"]
    check = client.post(f"{API}/dataset-versions/{made}/rebuild").json()
    assert check["identical"] is True and check["ref"] == made
    body = _problem(client.post(f"{API}/dataset-versions/churn@1/rebuild"), 422)
    assert "recipe" in body["detail"]
