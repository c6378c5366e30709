"""The ``ray`` executor: jobs submitted to a Ray cluster through its job submission API.

Each attempt is one Ray job whose entrypoint is ``python -m modelworks.training.jobs.worker
<job_id>``; its submission id (``mw-<job id>-<attempt>``) is the job's ``external_id``.
The entrypoint is given the job's CPUs, GPUs and memory, and environment variables naming
the store, so the worker on the cluster writes to the same database and artifact store as
the submitter. Logs and the final word on a job that died come from Ray.
"""

from __future__ import annotations

import contextlib
import functools
import shlex
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modelworks.core.errors import ServiceUnavailable

if TYPE_CHECKING:
    from modelworks.core.config import Settings

DASHBOARD_PORT = 8265
# Ray's JobStatus -> ours; the worker normally reports first, Ray settles jobs that died.
RAY_STATUS = {
    "PENDING": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "cancelled",
}


def dashboard_url(settings: Settings) -> str:
    """Where Ray's job API listens: MODELWORKS_RAY_DASHBOARD_URL, or the Ray host's :8265."""
    if settings.ray_dashboard_url:
        return settings.ray_dashboard_url.rstrip("/")
    address = settings.ray_address or ""
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    host = urlsplit(address if "://" in address else f"ray://{address}").hostname
    if not host or address == "auto":
        host = "127.0.0.1"
    return f"http://{host}:{DASHBOARD_PORT}"


@functools.lru_cache(maxsize=8)
def _client(url: str) -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:  # pragma: no cover - ray is an extra
        raise ServiceUnavailable(
            f"The ray executor needs Ray: pip install 'modelworks[ray]' ({exc})."
        ) from None
    try:
        return JobSubmissionClient(url)
    except Exception as exc:
        raise ServiceUnavailable(
            f"Cannot reach Ray's job API at {url}: {exc}. Check MODELWORKS_RAY_ADDRESS and "
            "MODELWORKS_RAY_DASHBOARD_URL, and that the cluster runs with its dashboard."
        ) from None


def client(settings: Settings) -> Any:
    return _client(dashboard_url(settings))


def submission_id(job_id: str, attempt: int) -> str:
    return f"mw-{job_id.lower()}-{attempt}"


def submit(
    settings: Settings,
    job_id: str,
    attempt: int,
    resources: dict[str, Any],
    env: dict[str, str],
    python: str = "python",
) -> str:
    """Submit one attempt; returns its submission id."""
    sid = submission_id(job_id, attempt)
    entrypoint = (
        f"{shlex.quote(python)} -m modelworks.training.jobs.worker {job_id} --attempt {attempt}"
    )
    kwargs: dict[str, Any] = {
        "entrypoint": entrypoint,
        "submission_id": sid,
        "runtime_env": {"env_vars": env},
        "entrypoint_num_cpus": float(resources.get("cpus") or 1),
        "entrypoint_num_gpus": float(resources.get("gpus") or 0),
        "metadata": {"modelworks_job": job_id, "attempt": str(attempt)},
    }
    if resources.get("memory_mb"):
        kwargs["entrypoint_memory"] = int(resources["memory_mb"]) * 1024 * 1024
    try:
        client(settings).submit_job(**kwargs)
    except ServiceUnavailable:
        raise
    except Exception as exc:
        raise ServiceUnavailable(f"Ray did not accept job {job_id}: {exc}") from None
    return sid


def stop(settings: Settings, sid: str) -> None:
    # Already ended, or unknown to Ray: nothing is left to stop.
    with contextlib.suppress(Exception):
        client(settings).stop_job(sid)


def status(settings: Settings, sid: str) -> tuple[str, str]:
    """(our status, Ray's message) of a submission."""
    try:
        info = client(settings).get_job_info(sid)
    except Exception as exc:
        raise ServiceUnavailable(f"Cannot read the status of Ray job {sid}: {exc}") from None
    raw = str(getattr(info.status, "value", info.status))
    return RAY_STATUS.get(raw, "running"), str(info.message or "")


def logs(settings: Settings, sid: str) -> str:
    try:
        return str(client(settings).get_job_logs(sid))
    except Exception as exc:
        raise ServiceUnavailable(f"Cannot read the logs of Ray job {sid}: {exc}") from None
