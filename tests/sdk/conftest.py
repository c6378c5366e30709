"""One SDK suite, two transports: every ``ws`` test runs embedded (SQLite, in-process) and
remote (a real uvicorn server on PostgreSQL, over HTTP with an API token).

The server (and its database) is shared by the whole session: starting one per test
costs ~1.5 s (database, migrations, password hashing), and the tests isolate themselves by
using fresh experiment names (the ``exp_name`` fixture).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import modelworks as mw
from modelworks.core.config import Settings
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.tracking.client import live_runs

ADMIN_PASSWORD = "sdk-admin-password"  # a throwaway test account


@dataclass
class Server:
    url: str
    token: str
    store: Store


@pytest.fixture(scope="session")
def session_postgres_url(postgres_database: Any) -> Iterator[str]:
    """Like ``postgres_url`` (same server, same skip rules), but one database per session."""
    with postgres_database("mw_sdk") as url:
        yield url


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_postgres_url: str, serve: Any
) -> Iterator[Server]:
    """A real Modelworks server (uvicorn, in a thread) on a PostgreSQL database."""
    from modelworks.server.app import create_app
    from modelworks.training.jobs.runner import JobRunner

    home = tmp_path_factory.mktemp("server-home")
    store = Store(Settings(home=home, database_url=session_postgres_url))
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", ADMIN_PASSWORD)
    token = gov.create_token(gov.authenticate_password("admin", ADMIN_PASSWORD), "sdk-tests").token
    # The test server runs without a lifespan, so the job runner a served app starts for
    # itself is started here, as `modelworks server` would.
    runner = JobRunner(store, poll_s=0.1).start()
    try:
        with serve(create_app(store, run_jobs=False)) as url:
            yield Server(url=url, token=token, store=store)
    finally:
        runner.stop()
        store.close()


@pytest.fixture(params=["embedded", pytest.param("remote", marks=pytest.mark.postgres)])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[mw.Workspace]:
    """A workspace on either transport; the same test body must pass on both."""
    if request.param == "embedded":
        workspace = mw.connect(settings=Settings(home=tmp_path / "sdk-home"))
    else:
        srv: Server = request.getfixturevalue("server")
        workspace = mw.connect(srv.url, token=srv.token)
    yield workspace
    for run in live_runs():  # a failed test must not leave an active run to the next one
        if run.workspace is workspace:
            with contextlib.suppress(Exception):
                run.end("KILLED")
    workspace.close()


@pytest.fixture
def exp_name() -> str:
    """A fresh experiment name, so tests never see each other's runs."""
    return f"exp-{uuid.uuid4().hex[:10]}"
