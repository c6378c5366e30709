"""A model package as a Ray Serve application: the knobs are checked up front, and on a real
local Ray cluster (the ``ray_cluster`` fixture) the replicas scale up under concurrent load,
answer exactly as the package does, and scale back down when the load stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelworks.core.errors import InvalidInput
from modelworks.serving.ray_serve import (
    RayServeDeployment,
    autoscaling_config,
    deploy_on_ray,
    package_archive,
)
from modelworks.training.package import ModelPackage, load_package, save_package

from ..conftest import free_port
from .conftest import churn_frame, records

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """A forest big enough that a prediction takes a few milliseconds (so requests overlap)."""
    X, y = churn_frame(400)
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])], remainder="passthrough"
    )
    model = make_pipeline(encode, RandomForestClassifier(n_estimators=150, random_state=0))
    path = tmp_path_factory.mktemp("ray-serve") / "churn"
    save_package(model.fit(X, y), path, input_example=X.head())
    return load_package(path)


# ---- the knobs, checked before anything reaches Ray --------------------------------------
@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) is more than max_replicas"),
        ({"min_replicas": -1}, "min_replicas must be an integer >= 0"),
        ({"max_replicas": 0}, "max_replicas must be an integer >= 1"),
        ({"target_ongoing_requests": 0}, "target_ongoing_requests must be a finite number > 0"),
        ({"upscale_delay_s": -1}, "upscale_delay_s must be a finite number >= 0"),
        ({"downscale_delay_s": float("nan")}, "downscale_delay_s must be a finite number"),
        ({"look_back_period_s": 1, "metrics_interval_s": 2}, "must be shorter than"),
    ],
)
def test_bad_autoscaling_knobs_are_invalid_input(knobs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        autoscaling_config(**knobs)


@pytest.fixture
def no_ray_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelworks.core.config import get_settings

    monkeypatch.delenv("MODELWORKS_RAY_ADDRESS", raising=False)
    get_settings.cache_clear()


@pytest.mark.usefixtures("no_ray_setting")
def test_deploy_checks_before_connecting(package: ModelPackage) -> None:
    with pytest.raises(InvalidInput, match="min_replicas"):
        deploy_on_ray(package.path, address="127.0.0.1:1", min_replicas=2, max_replicas=1)
    with pytest.raises(InvalidInput, match="No Ray cluster"):
        deploy_on_ray(package.path, address=None)  # MODELWORKS_RAY_ADDRESS is not set here
    with pytest.raises(InvalidInput, match="route_prefix"):
        deploy_on_ray(package.path, address="127.0.0.1:1", route_prefix="churn")


def test_package_archive_round_trips(package: ModelPackage, tmp_path: Path) -> None:
    import io
    import zipfile

    data = package_archive(package.path)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(tmp_path / "copy")
    copy = load_package(tmp_path / "copy")
    frame = churn_frame(5, seed=3)[0]
    np.testing.assert_array_equal(copy.predict_proba(frame), package.predict_proba(frame))
    with pytest.raises(InvalidInput, match="not a model package"):
        package_archive(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-replicas", "3"], "--max-replicas only apply on a Ray cluster"),
        (["--ray-address", "127.0.0.1:1", "--workers", "2"], "--workers is for the local"),
        (
            ["--ray-address", "127.0.0.1:1", "--min-replicas", "3", "--max-replicas", "2"],
            "min_replicas (3) is more than max_replicas (2)",
        ),
        (["--ray"], "No Ray cluster to serve on"),
    ],
)
@pytest.mark.usefixtures("no_ray_setting")
def test_cli_rejects_bad_ray_options(package: ModelPackage, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from modelworks.cli.main import app

    result = CliRunner().invoke(app, ["serve", str(package.path), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


# ---- on a real cluster ------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeOnRay:
    address: str  # the cluster's
    port: int  # Serve's HTTP proxy


@pytest.fixture(scope="module")
def ray_serve(ray_cluster: Any) -> Iterator[ServeOnRay]:
    """Serve on the fixture's cluster, its HTTP proxy on a free port; shut down after the
    module (each test deletes its own application)."""
    import ray
    from ray import serve

    port = free_port()
    ray.init(address=ray_cluster.address, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield ServeOnRay(ray_cluster.address, port)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


class Load:
    """``clients`` threads posting the same request in a loop; every answer is checked."""

    def __init__(self, url: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
        self.url, self.body, self.expected = url, body, expected
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, clients: int) -> None:
        for i in range(clients):
            thread = threading.Thread(target=self._loop, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self) -> None:
        with httpx.Client(timeout=60.0) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(self.url, json=self.body)
                except httpx.HTTPError as exc:
                    self._fail(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    self._fail(f"{r.status_code}: {r.text[:300]}")
                    continue
                body = r.json()
                if body["predictions"] != self.expected["predictions"] or not np.allclose(
                    body["probabilities"], self.expected["probabilities"], rtol=1e-9
                ):
                    self._fail(f"wrong answer: {body}")
                    continue
                with self._lock:
                    self.ok += 1

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


@pytest.mark.ray
@pytest.mark.slow
def test_replicas_scale_up_under_load_and_back_down(ray_serve: int, package: ModelPackage) -> None:
    started = time.monotonic()
    dep: RayServeDeployment = deploy_on_ray(
        package.path,
        name="churn",
        min_replicas=1,
        max_replicas=3,
        target_ongoing_requests=1,
        upscale_delay_s=0.5,
        downscale_delay_s=2.0,
        look_back_period_s=2.0,
        metrics_interval_s=0.5,
        max_ongoing_requests=4,
        replica_cpus=0.2,
        http_port=ray_serve.port,
    )
    deployed = time.monotonic() - started
    assert dep.url == f"http://127.0.0.1:{ray_serve.port}"
    assert dep.replicas() == 1

    frame = churn_frame(20, seed=7)[0]
    body = {"records": records(frame)}
    expected = {
        "predictions": package.predict(frame).tolist(),
        "probabilities": package.predict_proba(frame).tolist(),
    }
    # the same routes as the local model server: plain JSON and the Open Inference Protocol
    r = httpx.post(dep.predict_url(), json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected["predictions"]
    np.testing.assert_allclose(r.json()["probabilities"], expected["probabilities"], rtol=1e-9)
    assert r.json()["classes"] == ["churn", "stay"]
    meta = httpx.get(f"{dep.url}/v2/models/churn", timeout=30)
    assert meta.status_code == 200, meta.text
    assert {i["name"] for i in meta.json()["inputs"]} == {"tenure", "charges", "plan"}
    assert httpx.get(f"{dep.url}/v2/health/ready", timeout=30).status_code == 200
    bad = httpx.post(dep.predict_url(), json={"records": [{"tenure": "x"}]}, timeout=30)
    assert bad.status_code == 422, bad.text

    load = Load(dep.predict_url(), body, expected)
    load_started = time.monotonic()
    load.start(clients=12)
    try:
        peak = dep.wait_for_replicas(lambda n: n >= 2, timeout=90)
        scaled_up = time.monotonic() - load_started
        # keep the load on a little longer: the autoscaler may go on to the maximum
        until = time.monotonic() + 3
        while time.monotonic() < until:
            peak = max(peak, dep.replicas())
            time.sleep(0.2)
    finally:
        load.join()
    load_s = time.monotonic() - load_started
    assert not load.failures, load.failures[:5]
    assert load.ok > 0

    stopped = time.monotonic()
    assert dep.wait_for_replicas(lambda n: n == 1, timeout=60) == 1
    scaled_down = time.monotonic() - stopped
    assert 2 <= peak <= 3
    # the one replica left still answers
    r = httpx.post(dep.predict_url(), json=body, timeout=60)
    assert r.status_code == 200 and r.json()["predictions"] == expected["predictions"]
    print(
        f"deployed in {deployed:.1f} s; under 12 clients: {peak} replicas "
        f"(>= 2 after {scaled_up:.1f} s), {load.ok} answers in {load_s:.1f} s; "
        f"back to 1 replica {scaled_down:.1f} s after the load stopped"
    )
    dep.shutdown()
    from ray import serve

    assert "churn" not in serve.status().applications


@pytest.mark.ray
@pytest.mark.slow
def test_cli_serves_on_ray_until_interrupted(
    ray_serve: ServeOnRay, package: ModelPackage, tmp_path: Path
) -> None:
    """`modelworks serve --ray-address` in its own process: the app answers under its route
    prefix with the same routes, and Ctrl-C deletes it from Serve."""
    from ray import serve

    log = tmp_path / "serve.log"
    cli = Path(sys.executable).with_name("modelworks")
    command = [str(cli), "serve", str(package.path), "--name", "churn-cli"]
    command += ["--ray-address", ray_serve.address, "--port", str(ray_serve.port)]
    command += ["--route-prefix", "/cli", "--max-replicas", "1", "--replica-cpus", "0.2"]
    frame = churn_frame(4, seed=11)[0]
    url = f"http://127.0.0.1:{ray_serve.port}/cli"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        r = httpx.post(
            f"{url}/deployments/churn-cli/predict", json={"records": records(frame)}, timeout=60
        )
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(
            r.json()["probabilities"], package.predict_proba(frame), rtol=1e-9
        )
        while "on Ray Serve at " + url not in " ".join(log.read_text().split()):
            assert proc.poll() is None, log.read_text()[-3000:]  # it may print just after
            assert time.monotonic() < deadline, log.read_text()[-3000:]  # serving
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "churn-cli" not in serve.status().applications


@pytest.mark.ray
@pytest.mark.slow
def test_a_replica_that_cannot_load_is_a_clear_error(
    ray_serve: ServeOnRay, package: ModelPackage, tmp_path: Path
) -> None:
    from ray import serve

    from modelworks.core.errors import ServiceUnavailable
    from modelworks.serving.serve_cli import ServeSpec

    spec = ServeSpec(package_dir=str(tmp_path / "gone"), name="broken", version="broken@1")
    try:
        with pytest.raises(ServiceUnavailable, match="Ray Serve could not start 'broken'") as err:
            deploy_on_ray(spec, ship_package=False, replica_cpus=0.1, http_port=ray_serve.port)
        assert str(tmp_path / "gone") in err.value.detail  # the replica's own error
    finally:
        serve.delete("broken")
