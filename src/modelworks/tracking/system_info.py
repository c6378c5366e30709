"""What a run was started on: code version, interpreter, machine and key package versions.

Captured once at run start and stored in the run's ``system_info``. Everything here is
best effort and quick: a missing ``git``, a folder that is not a repository or a package
that is not installed simply leaves its entry out; nothing raises.

>>> info = collect_system_info()
>>> sorted(info)[:3]  # doctest: +SKIP
['cpu_count', 'git', 'hostname']
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# Distribution names (as pip knows them) whose versions explain a model's behaviour.
KEY_PACKAGES = (
    "modelworks",
    "numpy",
    "pandas",
    "scikit-learn",
    "lightgbm",
    "xgboost",
    "torch",
    "keras",
    "tensorflow",
)
GIT_TIMEOUT_S = 2.0


def collect_system_info(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The run's environment as a JSON-ready dict.

    Keys: ``python``, ``platform``, ``hostname``, ``cpu_count``, ``packages`` (name ->
    version, only installed ones), ``script`` (``sys.argv[0]`` when there is one) and
    ``git`` (``commit``, ``branch``, ``dirty``) when ``cwd`` is inside a git work tree.
    """
    info: dict[str, Any] = dict(_static_info())
    script = sys.argv[0] if sys.argv and sys.argv[0] else None
    if script and script not in ("-c", "-"):
        info["script"] = script
    git = _recent_git_info(Path(cwd) if cwd is not None else Path.cwd())
    if git:
        info["git"] = git
    return info


@lru_cache(maxsize=1)
def _static_info() -> dict[str, Any]:
    """The parts that cannot change while the process lives (computed once)."""
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
    }


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names``, read from package metadata (nothing is imported)."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


GIT_CACHE_S = 10.0
_git_cache: dict[Path, tuple[float, dict[str, Any]]] = {}


def _recent_git_info(where: Path) -> dict[str, Any]:
    """git_info, reused for a few seconds: a sweep starting hundreds of runs in a loop
    would otherwise spend most of its time starting git processes."""
    now = time.monotonic()
    hit = _git_cache.get(where)
    if hit is not None and now - hit[0] < GIT_CACHE_S:
        return dict(hit[1])
    info = git_info(where)
    _git_cache[where] = (now, info)
    return dict(info)


def git_info(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit, branch and dirty flag of the git work tree holding ``cwd`` ({} if none).

    ``branch`` is omitted on a detached HEAD; ``dirty`` counts tracked files only, so build
    outputs and notebooks' checkpoints do not mark every run dirty.
    """
    where = Path(cwd) if cwd is not None else Path.cwd()
    head = _git(where, "rev-parse", "HEAD", "--abbrev-ref", "HEAD")
    if head is None:
        return {}
    lines = head.split()
    if len(lines) != 2:
        return {}
    commit, branch = lines
    out: dict[str, Any] = {"commit": commit}
    if branch != "HEAD":
        out["branch"] = branch
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        out["dirty"] = bool(status.strip())
    return out


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", *args],  # noqa: S607 - git is found on PATH like a user would
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout
