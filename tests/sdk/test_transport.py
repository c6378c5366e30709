"""The remote transport's HTTP behaviour: retries, typed errors, URL encoding, checksums."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import modelworks as mw
from modelworks.core.errors import (
    Conflict,
    CorruptData,
    InvalidInput,
    ModelworksError,
    NotFound,
    ServiceUnavailable,
    Unauthenticated,
)
from modelworks.transport import HttpClient, RemoteTracking

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> HttpClient:
    return HttpClient(
        "http://mw.test", "mw_token", transport=httpx.MockTransport(handler), backoff_s=0
    )


def _problem(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "detail": detail})


def test_sends_the_token_and_maps_problems_to_typed_errors() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _problem(404, "not_found", "Run 'x' does not exist.")

    remote = RemoteTracking(_client(handler))
    with pytest.raises(NotFound, match="does not exist") as err:
        remote.get_run("x")
    assert err.value.status_code == 404
    assert seen[0].headers["authorization"] == "Bearer mw_token"
    assert seen[0].headers["user-agent"].startswith("modelworks-python/")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (409, "conflict", Conflict),
        (422, "invalid_input", InvalidInput),
        (401, "unauthenticated", Unauthenticated),
    ],
)
def test_each_problem_code_has_its_error(status: int, code: str, error: type) -> None:
    remote = RemoteTracking(_client(lambda r: _problem(status, code, "nope")))
    with pytest.raises(error, match="nope"):
        remote.get_run("x")


def test_idempotent_calls_are_retried_on_502_503_504_and_dropped_connections() -> None:
    answers = [
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(503, json={"code": "service_unavailable", "detail": "db down"}),
        "drop",
        httpx.Response(200, json=[]),
    ]
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        answer = answers.pop(0)
        if answer == "drop":
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        assert isinstance(answer, httpx.Response)
        return answer

    assert RemoteTracking(_client(handler)).list_artifacts("r1") == []
    assert calls == 4


def test_retries_give_up_with_service_unavailable() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, text="maintenance")

    with pytest.raises(ServiceUnavailable, match="unavailable"):
        RemoteTracking(_client(handler)).get_run("r1")
    assert calls == 4  # the first try and three retries


def test_non_idempotent_calls_are_not_repeated_once_sent() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(204)

    remote = RemoteTracking(_client(handler))
    with pytest.raises(ServiceUnavailable):
        remote.create_run("default", "e")
    assert calls == 1  # a repeat could have created the run twice

    calls = 0

    def refused_then_ok(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    RemoteTracking(_client(refused_then_ok)).log_batch("r1", tags={"a": "b"})
    assert calls == 2  # never sent, so safe to send again


def test_log_batch_is_resent_with_the_same_idempotency_key() -> None:
    """A batch whose answer was lost is sent again under the same key, so the server can
    apply it once (see TrackingService.log_batch)."""
    keys: list[str | None] = []

    def lost_answer_then_ok(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        if len(keys) == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(204)

    RemoteTracking(_client(lost_answer_then_ok)).log_batch("r1", tags={"a": "b"})
    assert len(keys) == 2
    assert keys[0] is not None and keys[0] == keys[1]


def test_unexpected_answers_keep_their_status() -> None:
    remote = RemoteTracking(_client(lambda r: httpx.Response(418, text="teapot")))
    with pytest.raises(ModelworksError, match="418") as err:
        remote.get_run("r1")
    assert err.value.status_code == 418


def test_paths_are_sent_segment_by_segment_and_dots_are_not_folded() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return _problem(422, "invalid_input", "Artifact path has a '..' segment.")

    remote = RemoteTracking(_client(handler))
    for path in ["../evil.txt", "a/../b", "plots/roc curve#1.png"]:
        with pytest.raises(InvalidInput):
            remote.log_artifact("r1", path, b"x")
    assert seen == [
        b"/api/v1/runs/r1/artifacts/%2E%2E/evil.txt",
        b"/api/v1/runs/r1/artifacts/a/%2E%2E/b",
        b"/api/v1/runs/r1/artifacts/plots/roc%20curve%231.png",
    ]


def test_upload_streams_files_and_retries_with_a_fresh_body(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        if len(bodies) == 1:
            return httpx.Response(503, text="busy")
        sha = hashlib.sha256(bodies[-1]).hexdigest()
        return httpx.Response(
            201,
            json={
                "path": "model.bin",
                "sha256": sha,
                "size": len(data),
                "created_at": "2024-01-01T00:00:00Z",
            },
        )

    out = RemoteTracking(_client(handler)).log_artifact("r1", "model.bin", src)
    assert bodies == [data, data]
    assert out.sha256 == hashlib.sha256(data).hexdigest()


def test_downloads_are_verified_and_leave_nothing_when_damaged(tmp_path: Path) -> None:
    good = b"the real bytes"
    listing = [
        {
            "path": "m.bin",
            "sha256": hashlib.sha256(good).hexdigest(),
            "size": len(good),
            "created_at": "2024-01-01T00:00:00Z",
        }
    ]
    served = {"body": b"tampered bytes"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/artifacts"):
            return httpx.Response(200, content=json.dumps(listing))
        return httpx.Response(200, content=served["body"])

    remote = RemoteTracking(_client(handler))
    dest = tmp_path / "m.bin"
    with pytest.raises(CorruptData):
        remote.download_artifact("r1", "m.bin", dest)
    with pytest.raises(CorruptData):
        remote.read_artifact("r1", "m.bin")
    assert list(tmp_path.iterdir()) == []
    served["body"] = good
    assert remote.download_artifact("r1", "m.bin", dest).read_bytes() == good
    assert remote.read_artifact("r1", "m.bin") == good
    with pytest.raises(NotFound):
        remote.artifact_info("r1", "other.bin")


def test_connect_needs_a_token_and_a_reachable_server() -> None:
    with pytest.raises(Unauthenticated, match="MODELWORKS_TOKEN"):
        mw.connect("http://127.0.0.1:9")
    with pytest.raises(InvalidInput, match="http"):
        mw.connect("127.0.0.1:8080", token="mw_x")


@pytest.mark.postgres
def test_connect_checks_token_and_project_at_once(server: Any) -> None:
    with pytest.raises(Unauthenticated, match="not valid"):
        mw.connect(server.url, token="mw_not-a-real-token")
    with pytest.raises(NotFound):
        mw.connect(server.url, token=server.token, project="no-such-project")
    with mw.connect(server.url, token=server.token) as ws:
        assert ws.mode == "remote" and server.url in repr(ws)
