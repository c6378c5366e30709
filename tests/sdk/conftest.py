"""One SDK suite, two transports: every ``ws`` test runs embedded (SQLite, in-process) and
remote (a real uvicorn server on PostgreSQL, over HTTP with an API token).

The server (and its database) is shared by the whole session: starting one per test
costs ~1.5 s (database, migrations, password hashing), and the tests isolate themselves by
using fresh experiment names (the ``exp_name`` fixture).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def session_postgres_url() -> Iterator[str]:
    """Like ``postgres_url`` (same server, same skip rules), but one database per session."""
    admin_url = os.environ.get(
        "MODELWORKS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )

    def unavailable(reason: str) -> None:
        if os.environ.get("MODELWORKS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (MODELWORKS_REQUIRE_SERVICES=1, so this is an error)")
        pytest.skip(reason)

    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine, text
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"mw_sdk_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(f"PostgreSQL is not reachable at {admin_url}: {exc}")
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, session_postgres_url: str) -> Iterator[Server]:
    """A real Modelworks server (uvicorn, in a thread) on a PostgreSQL database."""
    from modelworks.server.app import create_app

    home = tmp_path_factory.mktemp("server-home")
    store = Store(Settings(home=home, database_url=session_postgres_url))
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", ADMIN_PASSWORD)
    token = gov.create_token(gov.authenticate_password("admin", ADMIN_PASSWORD), "sdk-tests").token
    port = _free_port()
    config = uvicorn.Config(
        create_app(store), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="sdk-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the test server did not start")
        time.sleep(0.02)
    yield Server(url=f"http://127.0.0.1:{port}", token=token, store=store)
    srv.should_exit = True
    thread.join(timeout=10)
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
