"""The job queue end to end: the service, the local runner and real worker processes."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from modelworks.core.audit import AuditRecord
from modelworks.core.auth import Principal
from modelworks.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from modelworks.core.ids import utcnow
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.training.jobs import kinds
from modelworks.training.jobs.models import Job
from modelworks.training.jobs.service import JobService

from .conftest import WaitFor, wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of ours stays a zombie until reaped; the runner reaps it.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def _actions(store: Store, job_id: str) -> list[str]:
    with store.read() as s:
        return list(
            s.scalars(
                select(AuditRecord.action)
                .where(AuditRecord.object_id == job_id)
                .order_by(AuditRecord.seq)
            )
        )


def test_sleep_job_succeeds_with_result_log_and_audit(
    store: Store, svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor
) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 0.3, "steps": 3, "result": {"x": 1}})
    assert (job.status, job.attempt, job.executor) == ("queued", 0, "local")
    start_runner()
    done = wait_for(job.id)
    assert done.status == "succeeded", done.error
    assert done.attempt == 1
    assert done.result is not None and done.result["x"] == 1
    assert done.progress == 1.0
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at
    done = wait_until(lambda: svc.get(me, job.id), lambda j: j.log_sha256 is not None)
    log = svc.logs(me, job.id)
    assert "=== attempt 1" in log.text and "step 3/3" in log.text and log.complete
    assert done.log_sha256 and store.artifacts.get_bytes(done.log_sha256).decode() == log.text
    assert _actions(store, job.id) == ["job.submit", "job.start", "job.succeeded"]
    with pytest.raises(Conflict, match="already succeeded"):
        svc.cancel(me, job.id)


def test_failed_attempt_is_retried_and_can_succeed(
    store: Store, svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor
) -> None:
    flaky = svc.submit(me, "default", "sleep", {"seconds": 0, "fail": 1}, max_retries=2)
    broken = svc.submit(me, "default", "sleep", {"seconds": 0, "fail": True}, max_retries=1)
    start_runner()
    ok = wait_for(flaky.id)
    assert (ok.status, ok.attempt, ok.error) == ("succeeded", 2, None)
    bad = wait_for(broken.id)
    assert (bad.status, bad.attempt) == ("failed", 2)
    assert bad.error and "asked to fail (attempt 2)" in bad.error
    text = svc.logs(me, broken.id).text
    assert "=== attempt 1" in text and "=== attempt 2" in text and "Traceback" in text
    assert _actions(store, broken.id) == [
        "job.submit",
        "job.start",
        "job.retry",
        "job.start",
        "job.failed",
    ]


def test_cancel_a_queued_job(svc: JobService, me: Principal) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 5})
    out = svc.cancel(me, job.id)
    assert (out.status, out.cancel_requested) == ("cancelled", True)
    assert svc.cancel(me, job.id).status == "cancelled"  # twice is harmless
    assert svc.claim_next("w", free_cpus=64) is None


def test_cancel_kills_the_running_process_group(
    svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor
) -> None:
    # One step of 60 s: the job never looks at ctx.cancelled(), so only a kill ends it.
    job = svc.submit(me, "default", "sleep", {"seconds": 60, "steps": 1}, max_retries=3)
    start_runner()
    running = wait_until_pid(svc, me, job.id)
    pid = int(running.external_id or 0)
    assert _alive(pid)
    started = time.monotonic()
    svc.cancel(me, job.id)
    done = wait_for(job.id, timeout=20)
    assert done.status == "cancelled" and done.attempt == 1  # never retried
    assert time.monotonic() - started < 15
    assert not _alive(pid)
    assert "cancelled: the process group was killed" in svc.logs(me, job.id).text


def wait_until_pid(svc: JobService, me: Principal, job_id: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = svc.get(me, job_id)
        if job.external_id:
            return job
        time.sleep(0.05)
    raise AssertionError("the runner never recorded the worker's pid")


def test_timeout_kills_and_fails_the_attempt(
    svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor
) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 60, "steps": 1}, timeout_s=1.0)
    start_runner()
    pid = int(wait_until_pid(svc, me, job.id).external_id or 0)
    done = wait_for(job.id, timeout=30)
    assert done.status == "failed"
    assert done.error == "Timed out after 1 s."
    assert not _alive(pid)


def test_concurrency_is_bounded_by_the_cores(
    svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor
) -> None:
    cores = os.cpu_count() or 1
    # Each job asks for half the machine: two fit at once, never three.
    ids = [
        svc.submit(
            me, "default", "sleep", {"seconds": 1.5, "steps": 3}, resources={"cpus": cores / 2}
        ).id
        for _ in range(3)
    ]
    start_runner()
    jobs = [wait_for(i, timeout=90) for i in ids]
    assert all(j.status == "succeeded" for j in jobs), [j.error for j in jobs]
    spans = [(j.started_at, j.finished_at) for j in jobs]
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)  # type: ignore[operator]
    assert most == 2


def test_logs_stream_while_the_job_runs(
    svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor
) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 3, "steps": 6})
    start_runner()
    offset, text, seen_while_running = 0, "", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = svc.logs(me, job.id, offset)
        assert chunk.offset == offset
        text += chunk.text
        offset = chunk.next_offset
        if chunk.status == "running" and "step 1/6" in text and "step 6/6" not in text:
            seen_while_running = True
        if chunk.complete:
            break
        time.sleep(0.1)
    assert seen_while_running
    assert text == svc.logs(me, job.id).text  # pieces add up to the whole log
    assert wait_for(job.id).status == "succeeded"


def test_a_small_limit_never_cuts_a_character(store: Store, svc: JobService, me: Principal) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 0})
    path = store.settings.home_path / "x.log"
    path.write_text("héllo wörld ✓\n")
    svc.save_log(job.id, path)
    text, offset = "", 0
    while True:
        chunk = svc.logs(me, job.id, offset, limit=2)
        if not chunk.text and chunk.next_offset == offset:
            break
        text, offset = text + chunk.text, chunk.next_offset
    assert text == "héllo wörld ✓\n"


def test_worker_that_dies_fails_its_attempt(
    svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor
) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 60, "steps": 1})
    start_runner()
    pid = int(wait_until_pid(svc, me, job.id).external_id or 0)
    os.kill(pid, 9)
    done = wait_for(job.id, timeout=30)
    assert done.status == "failed"
    assert done.error and "exited with code -9" in done.error


def _age_heartbeat(store: Store, job_id: str, seconds: float) -> None:
    with store.transaction() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_stale_heartbeat_requeues_then_fails(store: Store, svc: JobService, me: Principal) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 0}, max_retries=1)
    # A runner claims the job, then dies: no process ever beats its heartbeat.
    claimed = svc.claim_next("dead-runner", free_cpus=1)
    assert claimed is not None and (claimed.id, claimed.attempt) == (job.id, 1)
    assert svc.recover_stale(60) == []  # still fresh
    _age_heartbeat(store, job.id, 120)
    [requeued] = svc.recover_stale(60)
    assert (requeued.status, requeued.attempt) == ("queued", 1)
    assert requeued.error and "heartbeats" in requeued.error
    again = svc.claim_next("dead-runner-2", free_cpus=1)
    assert again is not None and again.attempt == 2
    _age_heartbeat(store, job.id, 120)
    [failed] = svc.recover_stale(60)
    assert (failed.status, failed.attempt) == ("failed", 2)
    # The dead worker's late word changes nothing.
    assert svc.finish(job.id, 1, "succeeded", result={}) is None
    assert svc.heartbeat(job.id, 2) is None


def test_stale_job_with_a_cancel_request_ends_cancelled(
    store: Store, svc: JobService, me: Principal
) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 0}, max_retries=3)
    assert svc.claim_next("dead-runner", free_cpus=1) is not None
    assert svc.cancel(me, job.id).cancel_requested
    _age_heartbeat(store, job.id, 120)
    [out] = svc.recover_stale(60)
    assert out.status == "cancelled"


def test_claim_respects_free_resources(svc: JobService, me: Principal) -> None:
    big = svc.submit(me, "default", "sleep", {"seconds": 0}, resources={"cpus": 1})
    assert svc.claim_next("w", free_cpus=0.5) is None
    assert svc.claim_next("w", free_cpus=1) is not None
    assert svc.get(me, big.id).status == "running"


def test_submission_is_validated(svc: JobService, me: Principal, monkeypatch: Any) -> None:
    with pytest.raises(InvalidInput, match="Unknown job kind 'nope'"):
        svc.submit(me, "default", "nope")
    monkeypatch.setitem(kinds.KINDS, "broken", "modelworks_missing_module:run")
    with pytest.raises(InvalidInput, match="cannot be imported"):
        svc.submit(me, "default", "broken")
    with pytest.raises(InvalidInput, match="'seconds' must be a number"):
        svc.submit(me, "default", "sleep", {"seconds": "x"})
    with pytest.raises(InvalidInput, match="CPUs but this machine has"):
        svc.submit(me, "default", "sleep", resources={"cpus": (os.cpu_count() or 1) + 1})
    with pytest.raises(InvalidInput, match="MODELWORKS_RAY_ADDRESS"):
        svc.submit(me, "default", "sleep", executor="ray")
    with pytest.raises(InvalidInput, match="status"):
        svc.list(me, "default", status="done")
    with pytest.raises(InvalidInput, match="resources are not valid: cpus"):
        svc.submit(me, "default", "sleep", resources={"cpus": 0})
    with pytest.raises(InvalidInput, match="plain JSON"):
        svc.submit(me, "default", "sleep", {"result": {"x": {1, 2}}})


def test_roles_decide_who_submits_reads_and_cancels(store: Store, svc: JobService) -> None:
    gov = GovernanceService(store)
    gov.bootstrap_admin("root", "root-password")
    root = gov.authenticate_password("root", "root-password")
    gov.create_project(root, "team")
    people = {}
    for name, role in (("ann", "viewer"), ("bob", "editor"), ("eve", None)):
        gov.create_user(root, name, f"{name}-password")
        if role:
            gov.set_member(root, "team", name, role)
        people[name] = gov.authenticate_password(name, f"{name}-password")
    job = svc.submit(people["bob"], "team", "sleep", {"seconds": 0})
    assert job.created_by == "bob"
    assert svc.get(people["ann"], job.id).id == job.id
    assert [j.id for j in svc.list(people["ann"], "team").items] == [job.id]
    assert svc.logs(people["ann"], job.id).text == ""
    with pytest.raises(PermissionDenied):
        svc.submit(people["ann"], "team", "sleep")
    with pytest.raises(PermissionDenied):
        svc.cancel(people["ann"], job.id)
    with pytest.raises(NotFound):
        svc.get(people["eve"], job.id)
    assert svc.cancel(people["bob"], job.id).status == "cancelled"


def test_list_filters_and_pages(svc: JobService, me: Principal) -> None:
    a = svc.submit(me, "default", "sleep", {"seconds": 0}, name="a")
    b = svc.submit(me, "default", "sleep", {"seconds": 0}, name="b")
    svc.cancel(me, a.id)
    assert [j.id for j in svc.list(me, "default", status="cancelled").items] == [a.id]
    assert [j.id for j in svc.list(me, "default", status="queued", kind="sleep").items] == [b.id]
    first = svc.list(me, "default", max_results=1)
    assert [j.name for j in first.items] == ["b"] and first.next_page_token
    second = svc.list(me, "default", max_results=1, page_token=first.next_page_token)
    assert [j.name for j in second.items] == ["a"] and second.next_page_token is None


def test_a_stopping_runner_puts_its_jobs_back_in_the_queue(
    store: Store, svc: JobService, me: Principal, start_runner: Any
) -> None:
    job = svc.submit(me, "default", "sleep", {"seconds": 60, "steps": 1})
    runner = start_runner()
    pid = int(wait_until_pid(svc, me, job.id).external_id or 0)
    runner.stop()  # what the server does when it shuts down
    back = svc.get(me, job.id)
    assert (back.status, back.attempt, back.worker) == ("queued", 0, None)
    assert not _alive(pid)
    assert _actions(store, job.id)[-1] == "job.release"


def test_only_one_runner_per_home_runs_at_a_time(store: Store, start_runner: Any) -> None:
    from modelworks.training.jobs.runner import JobRunner

    start_runner()  # forever, holding the lock of this MODELWORKS_HOME
    time.sleep(0.3)
    started = time.monotonic()
    JobRunner(store).run()  # a second runner gives up at once instead of competing
    assert time.monotonic() - started < 5


def test_a_kind_registered_in_the_submitter_runs_in_the_worker(
    svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor, monkeypatch: Any
) -> None:
    # Only this process knows "nap"; the worker imports the entrypoint the job recorded.
    monkeypatch.setitem(kinds.KINDS, "nap", "modelworks.training.jobs.builtin:sleep_job")
    job = svc.submit(me, "default", "nap", {"seconds": 0})
    start_runner()
    assert wait_for(job.id).status == "succeeded"


def test_gpus_are_handed_out_by_device(
    svc: JobService, me: Principal, start_runner: Any, wait_for: WaitFor, monkeypatch: Any
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # this "machine" has two GPUs
    with pytest.raises(InvalidInput, match="GPUs but this machine has 2"):
        svc.submit(me, "default", "sleep", resources={"gpus": 3})
    both = svc.submit(me, "default", "sleep", {"seconds": 1, "steps": 1}, resources={"gpus": 2})
    half = svc.submit(me, "default", "sleep", {"seconds": 0}, resources={"gpus": 0.5})
    plain = svc.submit(me, "default", "sleep", {"seconds": 0})
    runner = start_runner()
    assert runner.gpu_ids == ["3", "5"]
    a, b, c = (wait_for(j.id) for j in (both, half, plain))
    assert {a.status, b.status, c.status} == {"succeeded"}
    assert "with GPUs 3,5 at" in svc.logs(me, a.id).text
    assert (
        "with GPUs 3 at" in svc.logs(me, b.id).text or "with GPUs 5 at" in svc.logs(me, b.id).text
    )
    assert "with GPUs" not in svc.logs(me, c.id).text
    assert b.started_at and a.finished_at and b.started_at >= a.finished_at  # waited for a GPU
    assert c.started_at and a.finished_at and c.started_at < a.finished_at  # CPUs only: no wait


def test_fractional_gpus_share_a_device(store: Store, monkeypatch: Any) -> None:
    from modelworks.training.jobs.runner import JobRunner

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    runner = JobRunner(store, lock=False)
    assert runner._assign_gpus(0) == {}
    assert runner._assign_gpus(0.5) == {"0": 0.5}
    assert runner._assign_gpus(2) == {"0": 1.0, "1": 1.0}
    assert runner._assign_gpus(3) is None


def test_a_draining_runner_exits_when_what_is_queued_does_not_fit(
    store: Store, svc: JobService, me: Principal
) -> None:
    from modelworks.training.jobs.runner import JobRunner

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs a machine with 2 cores")
    job = svc.submit(me, "default", "sleep", {"seconds": 0}, resources={"cpus": 2})
    started = time.monotonic()
    JobRunner(store, max_cpus=1).run(idle_exit_s=0.3)  # like `modelworks jobs worker --cpus 1`
    assert time.monotonic() - started < 10
    assert svc.get(me, job.id).status == "queued"
