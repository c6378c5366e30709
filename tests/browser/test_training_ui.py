"""Training from the web UI in a real headless Chromium against a real server.

An editor starts AutoML from a dataset version's page and follows the job to its run; a
viewer gets no form; a running job is cancelled from its page; a bad request is answered
in the form. This module serves its own store with a small dataset and runs a job runner
beside the server (the test server runs without the app's lifespan, which starts one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

from modelworks.core.auth import Principal
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.governance.service import GovernanceService
from modelworks.training.jobs.service import JobService

from ..conftest import isolated_store

pytestmark = pytest.mark.browser

EDITOR, EDITOR_PASSWORD = "erin", "erin-password-1"
VIEWER, VIEWER_PASSWORD = "vic", "vic-password-1"
ROWS = 240
JOB_PAGE = re.compile(r"^/projects/default/jobs/([0-9A-Za-z]+)$")
SLOW_MS = 120_000  # a worker process starts, reads the data and trains on 2 shared cores


@dataclass
class TrainingSite:
    url: str
    project: str
    version_path: str
    store: Store
    editor: Principal


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported late: conftest skips without Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    tenure = rng.integers(1, 72, rows)
    spend = rng.normal(60, 20, rows).round(2)
    plan = rng.choice(["basic", "pro", "team"], rows)
    score = -0.05 * tenure + 0.03 * spend + (plan == "basic") * 0.8 + rng.normal(0, 0.5, rows)
    return pd.DataFrame(
        {
            "tenure": tenure,
            "spend": spend,
            "plan": plan,
            "churned": (score > np.median(score)).astype(int),
        }
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, serve: Any) -> Iterator[TrainingSite]:
    from modelworks.server.app import create_app
    from modelworks.training.jobs.runner import JobRunner

    home = tmp_path_factory.mktemp("browser-training-home")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin(EDITOR, EDITOR_PASSWORD)
    editor = gov.authenticate_password(EDITOR, EDITOR_PASSWORD)
    gov.create_user(editor, VIEWER, VIEWER_PASSWORD)
    gov.set_member(editor, "default", VIEWER, "viewer")
    DataService(store).ingest(editor, "default", "churn", FrameSource.of(_frame(ROWS)))
    runner = JobRunner(store, max_cpus=2, poll_s=0.2).start()
    try:
        with serve(create_app(store)) as url:
            yield TrainingSite(
                url=url,
                project="default",
                version_path="/projects/default/data/churn/versions/1",
                store=store,
                editor=editor,
            )
    finally:
        runner.stop()
        store.close()


def _screenshot(page: Any, name: str, element: str | None = None) -> None:
    shots = os.environ.get("MODELWORKS_TEST_SCREENSHOTS")
    if shots and element:
        page.locator(element).screenshot(path=str(Path(shots) / name))
    elif shots:
        page.screenshot(path=str(Path(shots) / name), full_page=True)


def _log_length(page: Any) -> int:
    return len(page.locator("#job-log").inner_text())


def test_editor_trains_with_automl_and_follows_the_job_to_its_run(
    page: Any, site: TrainingSite, login: Any
) -> None:
    login(page, EDITOR, EDITOR_PASSWORD)
    page.goto(site.version_path)
    form = page.locator("#train-form")
    expect(form).to_be_visible()
    targets = form.locator("#train-target option").all_inner_texts()
    assert targets[1:] == ["tenure", "spend", "plan", "churned"]
    # One model: its model select shows and the AutoML fields hide; and back.
    form.locator("input[name=mode][value=train]").check()
    expect(form.locator("#train-model")).to_be_visible()
    expect(form.locator("#train-budget")).to_be_hidden()
    form.locator("input[name=mode][value=automl]").check()
    expect(form.locator("#train-model")).to_be_hidden()

    form.locator("#train-target").select_option("churned")
    form.locator("#train-budget").fill("5")
    form.locator("#train-metric").select_option("accuracy")
    _screenshot(page, "mw-train-panel.png", "#train")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    found = JOB_PAGE.match(urlsplit(page.url).path)
    assert found, page.url
    job_id = found.group(1)
    job_page = page.locator("#job-page")
    expect(page.locator("#job-spec")).to_contain_text('"time_budget": 5')
    expect(page.locator("#job-spec")).to_contain_text('"dataset": "churn@1"')

    # While it runs, the page follows its log.
    expect(job_page).to_have_attribute("data-status", "running", timeout=SLOW_MS)
    expect(page.locator("#job-log")).to_contain_text("AutoML on churn@1", timeout=SLOW_MS)
    before = _log_length(page)
    _screenshot(page, "mw-job-running.png")
    page.wait_for_function(
        "(n) => document.getElementById('job-log').innerText.length > n",
        arg=before,
        timeout=SLOW_MS,
    )

    expect(job_page).to_have_attribute("data-status", "succeeded", timeout=SLOW_MS)
    expect(job_page).to_have_attribute("data-log-complete", "true", timeout=30_000)
    result = page.locator("#job-result")
    expect(result).to_contain_text("best_family")
    assert page.locator("[data-cancel]").count() == 0
    _screenshot(page, "mw-job-succeeded.png")
    run_id = JobService(site.store).get(site.editor, job_id).result["run_id"]  # type: ignore[index]

    page.goto(f"/projects/{site.project}/jobs?status=succeeded")
    row = page.locator(f"#jobs tr[data-job-id='{job_id}']")
    _screenshot(page, "mw-jobs.png")
    expect(row).to_contain_text("automl")
    expect(row).to_contain_text("succeeded")
    with page.expect_navigation():
        row.locator("a").click()

    with page.expect_navigation():
        page.click("[data-run-link]")
    assert urlsplit(page.url).path == f"/runs/{run_id}"


def test_viewer_gets_no_train_form_and_no_cancel_button(
    page: Any, site: TrainingSite, login: Any
) -> None:
    job = JobService(site.store).submit(site.editor, site.project, "sleep", {"seconds": 0})
    login(page, VIEWER, VIEWER_PASSWORD)
    page.goto(site.version_path)
    assert page.locator("#train-form").count() == 0
    expect(page.locator("[data-train-denied]")).to_contain_text("your role here is viewer")
    page.goto(f"/projects/{site.project}/jobs/{job.id}")
    expect(page.locator("#job-page")).to_have_attribute("data-status", "succeeded", timeout=SLOW_MS)
    assert page.locator("[data-cancel]").count() == 0
    # The nav's Jobs entry lists it.
    with page.expect_navigation():
        page.click("nav.sidebar a:text-is('Jobs')")
    expect(page.locator(f"#jobs tr[data-job-id='{job.id}']")).to_contain_text("sleep")


def test_cancel_a_running_job_from_its_page(page: Any, site: TrainingSite, login: Any) -> None:
    job = JobService(site.store).submit(site.editor, site.project, "sleep", {"seconds": 30})
    login(page, EDITOR, EDITOR_PASSWORD)
    page.goto(f"/projects/{site.project}/jobs/{job.id}")
    job_page = page.locator("#job-page")
    expect(job_page).to_have_attribute("data-status", "running", timeout=SLOW_MS)
    expect(page.locator("#job-log")).to_contain_text("sleeping 30 s", timeout=SLOW_MS)
    # The duration and the progress bar move while it runs.
    duration = page.locator("[data-job-duration]")
    shown = duration.inner_text()
    expect(duration).not_to_have_text(shown, timeout=10_000)
    expect(page.locator("[data-job-progress-message]")).to_contain_text("step", timeout=10_000)
    _screenshot(page, "mw-job-cancel.png")
    page.click("[data-cancel]")
    expect(job_page).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(page.locator("#job-error")).to_contain_text("Cancelled.")
    assert page.locator("[data-cancel]").count() == 0
    page.goto(f"/projects/{site.project}/jobs")
    with page.expect_navigation():
        page.select_option("#job-status", "cancelled")
    assert page.locator("#jobs tbody tr").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.status)"
    ) == ["cancelled"]
    expect(page.locator(f"#jobs tr[data-job-id='{job.id}']")).to_contain_text("cancelled")


def test_refused_jobs_are_answered_in_the_form(page: Any, site: TrainingSite, login: Any) -> None:
    login(page, EDITOR, EDITOR_PASSWORD)
    page.goto(site.version_path)
    form = page.locator("#train-form")
    form.locator("#train-target").select_option("churned")
    form.locator("input[name=mode][value=train]").check()
    form.locator("#train-model").select_option("linear")
    form.locator("#train-cpus").fill("512")
    form.locator("button[type=submit]").click()
    error = form.locator(".form-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("asks for 512 CPUs")
    assert urlsplit(page.url).path == site.version_path
    expect(form.locator("button[type=submit]")).to_be_enabled()

    # A target that is not a column (the page's columns changed under it, say): the job is
    # refused at submission, checked against the dataset version, and nothing is queued.
    form.locator("#train-cpus").fill("1")
    form.locator("#train-target").evaluate(
        "(select) => { select.add(new Option('churn_flag', 'churn_flag')); "
        "select.value = 'churn_flag'; }"
    )
    form.locator("button[type=submit]").click()
    expect(error).to_contain_text("'churn_flag' is not a column")
    expect(error).to_contain_text("Did you mean 'churned'")
    assert urlsplit(page.url).path == site.version_path


def test_the_forms_choices_match_the_model_families_and_metrics() -> None:
    from modelworks.training.automl.families import FAMILIES
    from modelworks.training.automl.metrics import METRICS
    from modelworks.training.ui import train_choices

    choices = train_choices()
    assert set(choices.models) == set(FAMILIES)
    assert sorted(m for _, names in choices.metrics for m in names) == sorted(METRICS)
