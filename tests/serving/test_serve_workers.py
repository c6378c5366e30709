"""``modelworks serve --workers N`` as a real process: N worker processes, a worker killed with
SIGKILL is replaced while the others keep answering, and SIGTERM finishes the requests in
flight before the server exits 0.

The restart is uvicorn's: its multiprocess supervisor (``uvicorn.supervisors.multiprocess``)
checks its workers every half second and starts a new one in place of one that died. Only a
worker that fails during startup (exit code 3) makes it give up and stop, since every
replacement would fail the same way.

A request that was inside the killed worker is lost with it: its client sees the connection
reset. The load generator here retries such a request once, as a client behind a retrying
proxy or library would; every request must then succeed, and every answer must be right.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelworks.training.package import load_package, save_package

from ..conftest import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups"),
]

NAME = "churn"
# Generous: worker processes import the stack and load the model, on a shared CI machine.
STARTUP_S = 150.0
RESTART_S = 120.0
STARTED = "Application startup complete."  # uvicorn's line when a worker's app is up


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"tenure": rng.integers(0, 72, 200) * 1.0, "charges": rng.normal(60, 20, 200)})
    y = np.where(0.05 * X["tenure"] - 0.03 * X["charges"] > 0, "stay", "churn")
    path = tmp_path_factory.mktemp("workers") / "churn"
    save_package(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), path)
    return path


@pytest.fixture(scope="module")
def rows(package_dir: Path) -> tuple[list[dict[str, float]], list[str]]:
    """Request rows and the package's own answers for them."""
    frame = pd.DataFrame({"tenure": [1.0, 30.0, 60.0, 12.0], "charges": [90.0, 40.0, 20.0, 65.5]})
    expected = load_package(package_dir).predict(frame).tolist()
    return frame.to_dict("records"), expected


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def started(self) -> int:
        """Worker apps that finished starting so far (replacements included)."""
        return len(re.findall(re.escape(STARTED), self.output()))

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (the supervisor's other child is multiprocessing's
        resource tracker)."""
        out = []
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE and any(
                    "multiprocessing-fork" in part for part in child.cmdline()
                ):
                    out.append(child)
        return out

    def wait(self, what: str, condition: Callable[[], bool], timeout: float) -> float:
        """Seconds until ``condition`` held; fails with the server's log past ``timeout``."""
        start = time.monotonic()
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.output()}")
            if time.monotonic() - start > timeout:
                pytest.fail(f"{what}: not within {timeout:.0f} s. Server log:\n{self.output()}")
            time.sleep(0.05)
        return time.monotonic() - start


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def serving(package_dir: Path, tmp_path: Path, workers: int = 2) -> Iterator[Server]:
    """``modelworks serve package_dir --workers N`` in its own process group, with every
    worker app started; the group is killed on the way out, whatever happened."""
    env = {**os.environ, "MODELWORKS_HOME": str(tmp_path / "home")}
    env.pop("MODELWORKS_SERVE_TOKEN", None)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelworks.cli.main",
                "serve",
                str(package_dir),
                "--name",
                NAME,
                "--workers",
                str(workers),
                "--port",
                str(port),
                "--graceful-timeout",
                "30",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, port, log)
    try:
        server.wait("ready", lambda: _ready(server.url), STARTUP_S)
        server.wait("every worker started", lambda: server.started() >= workers, STARTUP_S)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and any worker left
        proc.wait(timeout=30)


@dataclass
class Load:
    """Threads posting predictions on fresh connections (so that both workers take them)
    until stopped; a request that fails on the connection is retried once."""

    url: str
    rows: list[dict[str, float]]
    expected: list[str]
    done: list[tuple[float, int, bool]] = field(default_factory=list)
    retried: list[tuple[float, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=30, limits=limits) as client:
            while not self.stop.is_set():
                self.one(client)

    def one(self, client: httpx.Client) -> None:
        body = {"records": self.rows}
        for attempt in range(2):
            try:
                r = client.post(f"/deployments/{NAME}/predict", json=body)
            except httpx.TransportError as exc:
                if attempt == 0:
                    self.retried.append((time.monotonic(), repr(exc)))
                    continue
                self.failed.append(f"after a retry: {exc!r}")
                return
            right = r.status_code == 200 and r.json()["predictions"] == self.expected
            self.done.append((time.monotonic(), r.status_code, right))
            if not right:
                self.failed.append(f"{r.status_code}: {r.text[:300]}")
            return

    @contextlib.contextmanager
    def running(self, threads: int = 2) -> Iterator[Load]:
        pool = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in pool:
                t.join(timeout=60)


def test_a_killed_worker_is_replaced_and_predictions_keep_answering(
    package_dir: Path, rows: Any, tmp_path: Path
) -> None:
    records, expected = rows
    with serving(package_dir, tmp_path, workers=2) as server:
        first = server.workers()
        assert len(first) == 2, server.output()
        load = Load(server.url, records, expected)
        with load.running():
            time.sleep(1.0)
            victim = first[0]
            killed_at = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            # Assigned in the lambda, read after the wait.
            replaced: list[psutil.Process] = []

            def replacement() -> bool:
                now = server.workers()
                new = [w for w in now if w.pid not in {p.pid for p in first}]
                replaced[:] = new
                return len(now) == 2 and len(new) == 1

            spawned_s = server.wait("a replacement worker", replacement, RESTART_S)
            serving_s = server.wait(
                "the replacement started", lambda: server.started() >= 3, RESTART_S
            )
            during = [d for d in load.done if d[0] > killed_at]
            time.sleep(1.0)  # and answers go on with the replacement in service
        assert load.failed == [], load.failed
        assert during, "no request was answered while the worker restarted"
        after = [d for d in load.done if d[0] > killed_at + serving_s]
        assert after and all(status == 200 and right for _, status, right in after)
        # Only requests on the killed worker's connections at the kill needed their retry.
        assert len(load.retried) <= 2, load.retried
        assert all(abs(t - killed_at) < 2.0 for t, _ in load.retried), load.retried
        assert {w.pid for w in server.workers()} == {first[1].pid, replaced[0].pid}
        print(
            f"\nworker {victim.pid} killed: replacement {replaced[0].pid} spawned after "
            f"{spawned_s:.2f} s, serving after {serving_s:.2f} s; {len(load.done)} requests, "
            f"{len(during)} answered during the restart, {len(load.retried)} retried once"
        )


def _slow_body(text: bytes, pause: float) -> Iterator[bytes]:
    """A request body sent in two parts ``pause`` seconds apart: a request in flight."""
    half = len(text) // 2
    yield text[:half]
    time.sleep(pause)
    yield text[half:]


def _accepted(server: Server) -> int:
    """TCP connections the workers have accepted on the server's port."""
    count = 0
    for worker in server.workers():
        with contextlib.suppress(psutil.NoSuchProcess):
            count += sum(
                1
                for c in worker.net_connections(kind="tcp")
                if c.laddr and c.laddr.port == server.port and c.status == psutil.CONN_ESTABLISHED
            )
    return count


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(
    package_dir: Path, rows: Any, tmp_path: Path
) -> None:
    records, expected = rows
    body = httpx.Request("POST", "/", json={"records": records}).content
    answers: list[tuple[int, Any]] = []
    errors: list[str] = []

    def post(url: str) -> None:
        try:
            r = httpx.post(
                f"{url}/deployments/{NAME}/predict",
                content=_slow_body(body, 2.0),
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            answers.append((r.status_code, r.json()))
        except Exception as exc:  # recorded, asserted on below
            errors.append(repr(exc))

    in_flight = 6
    with serving(package_dir, tmp_path, workers=2) as server:
        clients = [threading.Thread(target=post, args=(server.url,)) for _ in range(in_flight)]
        for t in clients:
            t.start()
        server.wait("requests accepted", lambda: _accepted(server) >= in_flight, 30)
        time.sleep(0.3)  # their headers are read: each connection has a request in progress
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for t in clients:
            t.join(timeout=60)
        code = server.proc.wait(timeout=60)
        took = time.monotonic() - sent
        assert errors == [], errors
        assert len(answers) == in_flight
        for status, answer in answers:
            assert status == 200, answer
            assert answer["predictions"] == expected
        assert code == 0, server.output()
        assert took < 30, f"shutdown took {took:.1f} s"
        assert "Finished server process" in server.output()
        print(
            f"\nSIGTERM with {in_flight} requests in flight: all answered, exit 0 in {took:.2f} s"
        )
