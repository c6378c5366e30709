"""What happens at interpreter exit, and what a run records about its environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modelworks as mw
from modelworks.core.config import Settings
from modelworks.tracking.system_info import collect_system_info, git_info, package_versions


def _python(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELWORKS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_exit_flushes_and_ends_open_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = _python(
        """
        import modelworks as mw
        run = mw.start_run(experiment="exit", name="left-open")
        for step in range(3000):
            run.log_metric("loss", 1 / (step + 1), step=step)
        run.set_tag("where", "exit")
        """,
        home,
    )
    assert done.returncode == 0, done.stderr
    crashed = _python(
        """
        import modelworks as mw
        run = mw.start_run(experiment="exit", name="crashed")
        run.log_metric("loss", 0.5)
        raise RuntimeError("training blew up")
        """,
        home,
    )
    assert crashed.returncode == 1 and "training blew up" in crashed.stderr
    lost = _python(
        """
        import modelworks as mw
        from modelworks.core.errors import ServiceUnavailable
        import modelworks.tracking.client as tc

        tc.FINAL_FLUSH_ATTEMPTS = 1
        run = mw.start_run(experiment="exit", name="unreachable")
        run._backend = type("Down", (), {
            "log_batch": lambda self, *a, **k: (_ for _ in ()).throw(ServiceUnavailable("down")),
            "update_run": lambda self, *a, **k: (_ for _ in ()).throw(ServiceUnavailable("down")),
        })()
        run.log_metric("loss", 0.5)
        """,
        home,
    )
    assert lost.returncode == 0
    assert "WARNING" in lost.stderr and "could not be stored at exit" in lost.stderr

    with mw.connect(settings=Settings(home=home)) as ws:
        runs = {r.name: r for r in ws.runs.search_all(experiments="exit")}
        assert runs["left-open"].status == "FINISHED"
        assert runs["left-open"].tags == {"where": "exit"}
        assert len(ws.runs.metric_history(runs["left-open"], "loss")) == 3000
        assert runs["crashed"].status == "FAILED"
        assert runs["crashed"].metrics == {"loss": 0.5}
        assert runs["unreachable"].status == "RUNNING"


def test_system_info_outside_a_repository(tmp_path: Path) -> None:
    assert git_info(tmp_path) == {}
    info = collect_system_info(tmp_path)
    assert "git" not in info
    assert info["cpu_count"] == os.cpu_count()
    assert info["packages"]["modelworks"] == mw.__version__
    assert "not-a-package-xyz" not in package_versions(("modelworks", "not-a-package-xyz"))


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_system_info_reads_git(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    (tmp_path / "train.py").write_text("print(1)\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    info = git_info(tmp_path)
    assert info["branch"] == "main" and len(info["commit"]) == 40
    assert info["dirty"] is False
    (tmp_path / "train.py").write_text("print(2)\n")
    assert git_info(tmp_path)["dirty"] is True
    (tmp_path / "untracked.txt").write_text("x")
    git("checkout", "-q", "--", "train.py")
    assert git_info(tmp_path)["dirty"] is False  # untracked files do not count


def test_project_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODELWORKS_PROJECT picks the SDK's project; an explicit project= wins over it."""
    from modelworks.core.auth import local_principal
    from modelworks.core.config import get_settings
    from modelworks.core.store import Store
    from modelworks.governance.service import GovernanceService

    home = tmp_path / "proj-home"
    store = Store(Settings(home=home))
    GovernanceService(store).create_project(local_principal(), "fraud")
    store.close()
    monkeypatch.setenv("MODELWORKS_HOME", str(home))
    monkeypatch.setenv("MODELWORKS_PROJECT", "fraud")
    get_settings.cache_clear()
    ws = mw.connect()
    assert ws.project == "fraud"
    with ws.start_run(experiment="e") as run:
        run.log_metric("m", 1.0)
    assert [r.id for r in ws.runs.search().items] == [run.id]
    ws.close()
    assert mw.connect(project="default").project == "default"
