"""Shared fixtures: a fresh embedded store, and the real services (PostgreSQL, S3, Redis).

A fixture for a service skips its tests with the reason when the service is absent, unless
``MODELWORKS_REQUIRE_SERVICES=1`` (set by CI), where an absent service is a failure.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelworks.core.config import Settings
from modelworks.core.store import Store

REQUIRE = os.environ.get("MODELWORKS_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get(
    "MODELWORKS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (MODELWORKS_REQUIRE_SERVICES=1, so this is an error)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own MODELWORKS_HOME; nothing touches ~/.modelworks."""
    home = tmp_path / "mwhome"
    monkeypatch.setenv("MODELWORKS_HOME", str(home))
    for var in (
        "MODELWORKS_DATABASE_URL",
        "MODELWORKS_ARTIFACT_URL",
        "MODELWORKS_URL",
        "MODELWORKS_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    from modelworks.core.config import get_settings

    get_settings.cache_clear()
    return home


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "mwhome")


def isolated_store(home: Path) -> Store:
    """A store in ``home`` with its URLs spelled out, for module and session fixtures, which
    must not pick up a developer's or CI's database from the environment."""
    return Store(
        Settings(
            home=home,
            database_url=f"sqlite:///{home / 'modelworks.db'}",
            artifact_url=str(home / "artifacts"),
        )
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings)
    yield s
    s.close()


@contextlib.contextmanager
def temporary_postgres_database(prefix: str = "mw_test") -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped on exit; skips when none is reachable."""
    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine, text
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 in a background thread; yields its URL
    (the app's lifespan is the test's to drive)."""
    from modelworks.server.background import running_app

    with running_app(app, lifespan="off") as url:
        yield url


@pytest.fixture(scope="session")
def serve() -> Callable[[Any], contextlib.AbstractContextManager[str]]:
    """``with serve(app) as url:`` runs a real server for the block."""
    return running_server


@pytest.fixture(scope="session")
def postgres_database() -> Callable[[str], contextlib.AbstractContextManager[str]]:
    """``with postgres_database("prefix") as url:`` for a database of a wider scope."""
    return temporary_postgres_database


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def postgres_store(tmp_path: Path, postgres_url: str) -> Iterator[Store]:
    s = Store(Settings(home=tmp_path / "pghome", database_url=postgres_url))
    yield s
    s.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server on 127.0.0.1: MODELWORKS_TEST_S3_ENDPOINT, or moto's server."""
    given = os.environ.get("MODELWORKS_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    try:
        import moto.server  # noqa: F401
    except ImportError:
        unavailable("no S3 server: set MODELWORKS_TEST_S3_ENDPOINT or pip install 'moto[server]'")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        unavailable("moto server did not start within 30 s")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the S3 server; returns its name."""
    import boto3

    name = f"mw-test-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh MariaDB/MySQL database (MODELWORKS_TEST_MYSQL_URL's server), dropped afterwards."""
    import sqlalchemy as sa

    admin = os.environ.get("MODELWORKS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
    url = sa.make_url(admin)
    if not _reachable(url.host or "127.0.0.1", url.port or 3306):
        unavailable(
            f"no MariaDB/MySQL at {url.host}:{url.port or 3306} (MODELWORKS_TEST_MYSQL_URL)"
        )
    name = f"mw_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture
def redis_url() -> str:
    """The Redis server for tests (MODELWORKS_TEST_REDIS_URL); tests use unique key names."""
    url = os.environ.get("MODELWORKS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        unavailable(f"no Redis at {url} (MODELWORKS_TEST_REDIS_URL): {exc}")
    return url


@pytest.fixture
def nats_url() -> str:
    """The NATS server with JetStream for tests (MODELWORKS_TEST_NATS_URL)."""
    url = os.environ.get("MODELWORKS_TEST_NATS_URL", "nats://127.0.0.1:4222")
    hostport = url.split("://", 1)[-1]
    host, _, port = hostport.partition(":")
    if not _reachable(host, int(port or 4222)):
        unavailable(f"no NATS server at {url} (MODELWORKS_TEST_NATS_URL)")
    return url


@dataclass(frozen=True)
class RayCluster:
    """A real local Ray cluster started with ``ray start --head`` for the test session."""

    address: str  # for ray.init(address=...): "127.0.0.1:<gcs port>"
    dashboard_url: str  # for Ray's job submission client: "http://127.0.0.1:<port>"
    num_cpus: int


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """Start a local Ray head node (2 CPUs) once per session; stopped at the end.

    Tests that use Ray call ``ray.init(address=cluster.address)`` (and ``ray.shutdown()``
    after) or talk to ``cluster.dashboard_url`` through Ray's job submission client.
    """
    try:
        import ray  # noqa: F401
    except ImportError:
        unavailable("Ray is not installed (pip install -e '.[ray]')")
    ray_bin = Path(sys.executable).with_name("ray")
    gcs_port, dashboard_port = free_port(), free_port()
    temp_dir = Path("/tmp") / f"mwray{uuid.uuid4().hex[:6]}"  # Ray's socket paths must be short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
    start = subprocess.run(
        [
            str(ray_bin),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    if start.returncode != 0:
        unavailable(f"`ray start --head` failed: {start.stderr[-2000:] or start.stdout[-2000:]}")
    cluster = RayCluster(
        address=f"127.0.0.1:{gcs_port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        num_cpus=2,
    )
    deadline = time.monotonic() + 90
    while not _reachable("127.0.0.1", dashboard_port):
        if time.monotonic() > deadline:
            subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, check=False)
            unavailable("Ray's dashboard (job submission API) did not answer within 90 s")
        time.sleep(0.5)
    try:
        yield cluster
    finally:
        subprocess.run(
            [str(ray_bin), "stop", "--force"],
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
