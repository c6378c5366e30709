"""``modelworks notebook``: a real JupyterLab on 127.0.0.1, and kernels that start connected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from modelworks.core.config import Settings
from modelworks.training import notebook as nb

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prepare_writes_a_starter_notebook_and_the_startup_file(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", project="fraud")
    launch = nb.prepare(tmp_path / "nbs", port=8899, open_browser=False, settings=settings)
    starter = json.loads((tmp_path / "nbs" / nb.STARTER_NOTEBOOK).read_text())
    assert starter["nbformat"] == 4 and starter["cells"][1]["source"] == "ws"
    assert launch.env["MODELWORKS_HOME"] == str(settings.home_path)
    assert launch.env["MODELWORKS_PROJECT"] == "fraud"
    startup = Path(launch.env["IPYTHONDIR"]) / "profile_default" / "startup" / nb.STARTUP_FILE
    assert "ws = mw.connect()" in startup.read_text()
    assert "--ServerApp.port=8899" in launch.command
    # An existing notebook folder is left as it is.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.ipynb").write_text("{}")
    nb.prepare(tmp_path / "mine", settings=settings)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["a.ipynb"]


def test_a_file_is_not_a_notebook_folder(tmp_path: Path) -> None:
    from modelworks.core.errors import InvalidInput

    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidInput, match="is a file"):
        nb.prepare(tmp_path / "f", settings=Settings(home=tmp_path / "home"))


def test_kernel_startup_connects_the_sdk_to_the_same_store(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    env = nb.kernel_env(settings, base=dict(os.environ))
    code = "print('WS=' + ws.mode + ':' + ws.location); print('MW=' + mw.__name__)"
    out = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"WS=embedded:{settings.home_path}" in out
    assert "MW=modelworks" in out


def test_cli_starts_jupyterlab_that_answers_with_its_token(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "MODELWORKS_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelworks.cli.main",
            "notebook",
            str(tmp_path / "nbs"),
            "--port",
            str(port),
            "--no-browser",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2) as r:
                    status = json.load(r)
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "JupyterLab exited early"
                time.sleep(0.5)
        assert status is not None and "version" in status
        # Without the token the contents API refuses; the printed URL carries the token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=5)
        assert refused.value.code == 403
        assert (tmp_path / "nbs" / nb.STARTER_NOTEBOOK).exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/lab?token=" in output


def test_missing_jupyterlab_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelworks.core.errors import InvalidInput

    monkeypatch.setitem(sys.modules, "jupyterlab", None)
    with pytest.raises(InvalidInput, match=r"modelworks\[notebook\]"):
        nb.prepare(tmp_path / "nbs", settings=Settings(home=tmp_path / "home"))
