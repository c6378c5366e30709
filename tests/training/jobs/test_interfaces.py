"""Jobs through every interface: REST (with the server's own runner), the CLI, and the SDK on
both transports; and a job that outlives the process that submitted it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from filelock import FileLock, Timeout
from typer.testing import CliRunner

import modelworks as mw
from modelworks.cli.main import app as cli_app
from modelworks.core.auth import local_principal
from modelworks.core.config import Settings
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.server.app import create_app
from modelworks.training.jobs.client import JobTimeout
from modelworks.training.jobs.runner import JobRunner
from modelworks.training.jobs.service import JobService, jobs_dir

from .conftest import wait_until

PASSWORD = "jobs-admin-password"


# ---- REST ----------------------------------------------------------------------------------
def test_rest_submit_watch_and_cancel_with_the_servers_runner(store: Store) -> None:
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", PASSWORD)
    token = gov.create_token(gov.authenticate_password("admin", PASSWORD), "t").token
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(store)) as client:  # the lifespan starts the job runner
        resp = client.post(
            "/api/v1/projects/default/jobs",
            json={"kind": "sleep", "spec": {"seconds": 0.5, "steps": 2}, "name": "nap"},
            headers=auth,
        )
        assert resp.status_code == 201, resp.text
        job = resp.json()
        assert (job["status"], job["name"], job["created_by"]) == ("queued", "nap", "admin")

        def get() -> Any:
            from modelworks.training.jobs.schemas import JobOut

            return JobOut.model_validate(
                client.get(f"/api/v1/jobs/{job['id']}", headers=auth).json()
            )

        done = wait_until(get, lambda j: j.done)
        assert done.status == "succeeded", done.error
        logs = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"offset": 0}, headers=auth)
        assert logs.status_code == 200 and "step 2/2" in logs.json()["text"]
        listed = client.get(
            "/api/v1/projects/default/jobs", params={"status": "succeeded"}, headers=auth
        ).json()
        assert [j["id"] for j in listed["items"]] == [job["id"]]
        again = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)
        assert again.status_code == 409 and again.json()["code"] == "conflict"
        bad = client.post("/api/v1/projects/default/jobs", json={"kind": "nope"}, headers=auth)
        assert bad.status_code == 422 and "Unknown job kind" in bad.json()["detail"]
        assert client.get("/api/v1/jobs/nope", headers=auth).status_code == 404


# ---- CLI -----------------------------------------------------------------------------------
def _cli(*args: str) -> Any:
    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=False)
    return result


def test_cli_submit_follow_show_list_cancel() -> None:
    out = _cli("jobs", "submit", "sleep", "--spec", '{"seconds": 0.5, "steps": 2}', "--json")
    assert out.exit_code == 0, out.output
    job = json.loads(out.stdout)
    assert job["status"] == "queued"
    # `submit` started a detached runner; --follow prints the log until the job ends.
    follow = _cli("jobs", "logs", job["id"], "--follow")
    assert follow.exit_code == 0, follow.output
    assert "step 2/2" in follow.stdout
    shown = json.loads(_cli("jobs", "show", job["id"], "--json").stdout)
    assert shown["status"] == "succeeded"
    listed = json.loads(_cli("jobs", "list", "--status", "succeeded", "--json").stdout)
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    chunk = json.loads(_cli("jobs", "logs", job["id"], "--json").stdout)
    assert chunk["next_offset"] > 0 and "sleeping" in chunk["text"]
    cancel = _cli("jobs", "cancel", job["id"])
    assert cancel.exit_code == 4 and "already succeeded" in cancel.output
    assert _cli("jobs", "submit", "sleep", "--spec", "[1]").exit_code == 2


def test_cli_worker_drains_the_queue_and_exits(store: Store) -> None:
    svc = JobService(store)  # no autostart: the queue waits for `modelworks jobs worker`
    ids = [svc.submit(local_principal(), "default", "sleep", {"seconds": 0}).id for _ in range(2)]
    started = time.monotonic()
    assert _cli("jobs", "worker").exit_code == 0
    assert time.monotonic() - started < 60
    assert [svc.get(local_principal(), i).status for i in ids] == ["succeeded", "succeeded"]


# ---- a job outlives its submitter -----------------------------------------------------------
SUBMITTER = """
import modelworks as mw
ws = mw.connect()
job = ws.jobs.submit("sleep", {"seconds": 2, "steps": 4})
print(job.id, flush=True)
"""


def test_a_job_keeps_running_after_the_submitting_process_exits(tmp_path: Path) -> None:
    home = tmp_path / "outlive-home"
    env = {**os.environ, "MODELWORKS_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", SUBMITTER], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[-1]
    store = Store(Settings(home=home))
    try:
        svc = JobService(store)
        assert svc.get(local_principal(), job_id).status in ("queued", "running")
        finished = wait_until(lambda: svc.get(local_principal(), job_id), lambda j: j.done, 60)
        assert finished.status == "succeeded", finished.error
        # The detached runner exits once idle, and lets go of the runner lock.
        lock = FileLock(str(jobs_dir(store) / "runner.lock"))
        deadline = time.monotonic() + 30
        while True:
            try:
                lock.acquire(timeout=0)
                lock.release()
                break
            except Timeout:
                assert time.monotonic() < deadline, "the detached runner never exited"
                time.sleep(0.2)
    finally:
        store.close()


# ---- SDK, embedded and remote -------------------------------------------------------------
@pytest.fixture(scope="module")
def jobs_server(
    tmp_path_factory: pytest.TempPathFactory, postgres_database: Any, serve: Any
) -> Iterator[tuple[str, str]]:
    """A real server on PostgreSQL, with a job runner thread (the test server has no lifespan)."""
    with postgres_database("mw_jobs") as url:
        store = Store(Settings(home=tmp_path_factory.mktemp("jobs-server"), database_url=url))
        gov = GovernanceService(store)
        gov.bootstrap_admin("admin", PASSWORD)
        token = gov.create_token(gov.authenticate_password("admin", PASSWORD), "sdk").token
        runner = JobRunner(store, poll_s=0.1).start()
        try:
            with serve(create_app(store, run_jobs=False)) as base:
                yield base, token
        finally:
            runner.stop()
            store.close()


@pytest.fixture(params=["embedded", pytest.param("remote", marks=pytest.mark.postgres)])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[mw.Workspace]:
    if request.param == "embedded":
        workspace = mw.connect(settings=Settings(home=tmp_path / "sdk-home"))
    else:
        base, token = request.getfixturevalue("jobs_server")
        workspace = mw.connect(base, token=token)
    yield workspace
    workspace.close()


def test_sdk_submit_follow_wait(ws: mw.Workspace) -> None:
    job = ws.jobs.submit("sleep", {"seconds": 0.6, "steps": 3}, name="sdk-nap")
    assert job.status == "queued" and job.name == "sdk-nap"
    lines = list(ws.jobs.follow(job))
    assert any("step 3/3" in line for line in lines)
    done = ws.jobs.wait(job, timeout=60)
    assert done.status == "succeeded" and done.result and done.result["attempt"] == 1
    text, offset = ws.jobs.logs(job)
    assert "step 1/3" in text and offset == len(text.encode())
    assert ws.jobs.logs(job, offset) == ("", offset)
    assert job.id in [j.id for j in ws.jobs.list(status="succeeded")]
    assert ws.jobs.get(job.id).id == job.id


def test_sdk_cancel_and_wait_timeout(ws: mw.Workspace) -> None:
    job = ws.jobs.submit("sleep", {"seconds": 60, "steps": 60}, max_retries=2)
    with pytest.raises(JobTimeout, match="still"):
        ws.jobs.wait(job, timeout=0.2, poll_s=0.05)
    ws.jobs.cancel(job)
    done = ws.jobs.wait(job, timeout=60)
    assert done.status == "cancelled" and done.attempt <= 1


def test_sdk_errors_are_typed(ws: mw.Workspace) -> None:
    from modelworks.core.errors import InvalidInput, NotFound

    with pytest.raises(InvalidInput, match="Unknown job kind"):
        ws.jobs.submit("does-not-exist")
    with pytest.raises(NotFound):
        ws.jobs.get("01JNOTAJOB0000000000000000")
    with pytest.raises(InvalidInput, match="gpus"):
        ws.jobs.submit("sleep", gpus=-1)
