"""``modelworks notebook``: JupyterLab in a project folder with the SDK already connected.

The kernel inherits this process's ``MODELWORKS_*`` settings, so ``mw.connect()`` in a
notebook opens the same store (or server) as the command line. An IPython start-up file,
kept in a Modelworks-owned IPython directory (``$MODELWORKS_HOME/ipython``) so the user's own
profile is never edited, runs ``import modelworks as mw`` and ``ws = mw.connect()`` in every
kernel started from this JupyterLab. A starter notebook is written into a new folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from modelworks.core.config import Settings, get_settings
from modelworks.core.errors import InvalidInput

STARTUP_FILE = "00-modelworks.py"
STARTER_NOTEBOOK = "getting-started.ipynb"

_STARTUP = """\
# Written by `modelworks notebook`: every kernel of that JupyterLab starts connected.
try:
    import modelworks as mw

    ws = mw.connect()
    print(f"Modelworks: `ws` is {ws!r}; `mw` is the modelworks package.")
except Exception as exc:  # a broken store must not stop the kernel from starting
    print(f"Modelworks: could not connect ({exc}); fix it, then run ws = mw.connect()")
"""

_STARTER_CELLS = [
    ("markdown", "# Modelworks\n\n`ws` is already connected (see the first kernel message)."),
    ("code", "ws"),
    ("code", "ws.datasets.list().items"),
    (
        "code",
        "# Train with AutoML on a dataset version, then look at the leaderboard:\n"
        '# result = ws.automl.fit("churn@latest", target="churned", time_budget=60)\n'
        "# result",
    ),
]


@dataclass(frozen=True)
class NotebookLaunch:
    """What :func:`prepare` made ready: the command to run and its environment."""

    folder: Path
    url: str
    command: list[str]
    env: dict[str, str]


def _starter_notebook() -> dict[str, object]:
    cells = []
    for kind, source in _STARTER_CELLS:
        cell: dict[str, object] = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def ipython_dir(settings: Settings) -> Path:
    """The IPython directory the notebook kernels use, with the start-up file in it."""
    path = settings.home_path / "ipython"
    startup = path / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    target = startup / STARTUP_FILE
    if not target.exists() or target.read_text() != _STARTUP:
        tmp = target.with_suffix(".tmp")
        tmp.write_text(_STARTUP)
        tmp.replace(target)
    return path


def kernel_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for JupyterLab and its kernels: the store settings made explicit."""
    env = dict(os.environ if base is None else base)
    env["MODELWORKS_HOME"] = str(settings.home_path)
    env["MODELWORKS_PROJECT"] = settings.project
    if settings.database_url:
        env["MODELWORKS_DATABASE_URL"] = settings.database_url
    if settings.artifact_url:
        env["MODELWORKS_ARTIFACT_URL"] = settings.artifact_url
    env["IPYTHONDIR"] = str(ipython_dir(settings))
    return env


def prepare(
    folder: Path,
    *,
    port: int = 8888,
    ip: str = "127.0.0.1",
    open_browser: bool = True,
    token: str | None = None,
    settings: Settings | None = None,
) -> NotebookLaunch:
    """Check JupyterLab is installed, make the folder and its starter notebook, and build
    the command line. Nothing is started."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        raise InvalidInput(
            "JupyterLab is not installed. Install the notebook extra: "
            "pip install 'modelworks[notebook]'"
        ) from None
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{folder} is a file; give a folder for the notebooks.")
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.ipynb")):
        (folder / STARTER_NOTEBOOK).write_text(json.dumps(_starter_notebook(), indent=1))
    cfg = settings or get_settings()
    token = token or secrets.token_urlsafe(24)
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={folder.resolve()}",
        f"--ServerApp.ip={ip}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.open_browser={open_browser}",
    ]
    if os.geteuid() == 0:  # Jupyter refuses root unless told; containers often run as root
        command.append("--ServerApp.allow_root=True")
    return NotebookLaunch(
        folder=folder.resolve(),
        url=f"http://{ip}:{port}/lab?token={token}",
        command=command,
        env=kernel_env(cfg),
    )


def run(launch: NotebookLaunch) -> int:
    """Run JupyterLab in the foreground until it exits (Ctrl-C stops it)."""
    if shutil.which(launch.command[0]) is None and not Path(launch.command[0]).exists():
        raise InvalidInput(f"Python interpreter {launch.command[0]} not found.")
    try:
        return subprocess.call(launch.command, env=launch.env, cwd=launch.folder)  # noqa: S603
    except KeyboardInterrupt:
        return 0
