"""Deployments and batch prediction from the web UI, in a real headless Chromium against a
real server (conftest.py).

A maintainer creates a deployment of a registered model through the form, finds it in the
list, reads the curl example on its page and deletes it through the confirmation step; an
editor starts a batch prediction and follows the job to the dataset version it wrote. This
module serves its own store and runs a job runner beside the server (the test server runs
without the app's lifespan, which starts one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.governance.service import GovernanceService
from modelworks.registry.service import RegistryService
from modelworks.serving.service import DeploymentService
from modelworks.training.package import save_package

from ..conftest import isolated_store

pytestmark = pytest.mark.browser

ADMIN, ADMIN_PASSWORD = "maya", "maya-password-1"
EDITOR, EDITOR_PASSWORD = "ed", "ed-password-1"
PROJECT = "default"
FEATURES = ["radius", "texture", "perimeter", "area"]
JOB_PAGE = re.compile(r"^/projects/default/jobs/([0-9A-Za-z]+)$")
SLOW_MS = 120_000  # a worker process starts, loads the model and scores on shared cores


@dataclass
class ServingSite:
    url: str
    store: Store


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported late: conftest skips without Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, serve: Any) -> Iterator[ServingSite]:
    from modelworks.server.app import create_app
    from modelworks.training.jobs.runner import JobRunner

    home = tmp_path_factory.mktemp("browser-serving-home")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin(ADMIN, ADMIN_PASSWORD)
    admin = gov.authenticate_password(ADMIN, ADMIN_PASSWORD)
    gov.create_user(admin, EDITOR, EDITOR_PASSWORD)
    gov.set_member(admin, PROJECT, EDITOR, "editor")
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :4]
    X.columns = FEATURES
    model = LogisticRegression(max_iter=5000).fit(X.iloc[:400], y.iloc[:400])
    save_package(model, home / "pkg", input_example=X.head())
    RegistryService(store).register_package(admin, PROJECT, "churn", home / "pkg")
    RegistryService(store).set_alias(admin, PROJECT, "churn", "champion", 1)
    customers = X.iloc[400:].assign(customer_id=range(len(X) - 400))
    DataService(store).ingest(admin, PROJECT, "customers", FrameSource.of(customers))
    runner = JobRunner(store, max_cpus=1, poll_s=0.2).start()
    try:
        with serve(create_app(store)) as url:
            yield ServingSite(url, store)
    finally:
        runner.stop()
        store.close()


def _submit(page: Any, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def _screenshot(page: Any, name: str) -> None:
    shots = os.environ.get("MODELWORKS_TEST_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / name), full_page=True)


def test_create_a_deployment_see_it_listed_and_delete_it(
    page: Any, site: ServingSite, login: Any
) -> None:
    login(page, ADMIN, ADMIN_PASSWORD)
    _submit(page, "nav.sidebar a:has-text('Deployments')")
    assert urlsplit(page.url).path == f"/projects/{PROJECT}/deployments"
    expect(page.locator("main")).to_contain_text("No deployments in this project yet")

    # A version that does not exist: the message on the form, with what was typed.
    page.fill("#deployment-name", "churn-web")
    page.fill("#deployment-model", "churn@9")
    _submit(page, "#create-form button[type=submit]")
    expect(page.locator("[data-form-error]")).to_contain_text("no version 9")
    expect(page.locator("#deployment-name")).to_have_value("churn-web")

    page.fill("#deployment-model", "churn@champion")
    page.fill("#deployment-max-batch", "16")
    _submit(page, "#create-form button[type=submit]")
    assert urlsplit(page.url).path == f"/projects/{PROJECT}/deployments/churn-web"
    expect(page.locator("[data-flash='success']")).to_have_text(
        "Created deployment churn-web, serving churn@champion."
    )
    curl = page.locator("[data-curl]")
    expect(curl).to_contain_text('curl -H "Authorization: Bearer $TOKEN"')
    expect(curl).to_contain_text(f"{site.url}/deployments/churn-web/predict")
    for name in FEATURES:
        expect(curl).to_contain_text(f'"{name}"')
    expect(page.locator("#config")).to_contain_text('"max_batch_size": 16')
    _screenshot(page, "mw-deployment.png")

    _submit(page, "nav.crumbs a:text-is('Deployments')")
    row = page.locator("#deployments tr[data-deployment='churn-web']")
    expect(row).to_contain_text("churn@champion")
    expect(row).to_contain_text(ADMIN)
    _screenshot(page, "mw-deployments.png")

    # Delete: the confirmation first; cancelling it changes nothing.
    _submit(page, "#deployments a:text-is('churn-web')")
    _submit(page, "[data-delete]")
    expect(page.locator("#confirm-delete h2")).to_have_text("Delete deployment churn-web?")
    _submit(page, "#confirm-delete [data-cancel]")
    expect(page.locator("#confirm-delete")).to_have_count(0)
    svc = DeploymentService(site.store)
    admin = GovernanceService(site.store).authenticate_password(ADMIN, ADMIN_PASSWORD)
    assert svc.get(admin, PROJECT, "churn-web").status == "active"
    _submit(page, "[data-delete]")
    _submit(page, "#confirm-delete [data-confirm]")
    assert urlsplit(page.url).path == f"/projects/{PROJECT}/deployments"
    expect(page.locator("[data-flash='success']")).to_contain_text("Deleted deployment churn-web")
    expect(page.locator("#deployments tr[data-deployment='churn-web']")).to_have_count(0)
    assert [d.name for d in svc.list(admin, PROJECT)] == []


def test_a_batch_job_is_followed_to_its_output_dataset(
    page: Any, site: ServingSite, login: Any
) -> None:
    login(page, EDITOR, EDITOR_PASSWORD)
    page.goto(f"/projects/{PROJECT}/deployments")
    _submit(page, "[data-batch-link]")
    page.fill("#batch-model", "churn@champion")
    page.fill("#batch-dataset", "customers@1")
    page.fill("#batch-output", "churn-scores")
    # The id is neither an input of the model nor kept: the form says so.
    _submit(page, "#batch-form button[type=submit]")
    expect(page.locator("[data-form-error]")).to_contain_text(
        "has columns churn@1 does not take: customer_id"
    )
    page.fill("#batch-keep", "customer_id")
    _submit(page, "#batch-form button[type=submit]")
    expect(page.locator("[data-flash='success']")).to_contain_text("Queued batch churn@champion")

    _submit(page, "[data-flash] [data-job-link]")
    found = JOB_PAGE.match(urlsplit(page.url).path)
    assert found, page.url
    job_id = found.group(1)
    job_page = page.locator("#job-page")
    expect(job_page).to_have_attribute("data-status", "succeeded", timeout=SLOW_MS)
    expect(page.locator("#job-result")).to_contain_text("churn-scores@1")
    expect(page.locator("#job-log")).to_contain_text("wrote 169 predictions", timeout=30_000)
    _screenshot(page, "mw-batch-job.png")

    page.goto(f"/projects/{PROJECT}/deployments/-/batch")
    row = page.locator(f"#batch-jobs tr[data-job-id='{job_id}']")
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("169")
    _screenshot(page, "mw-batch.png")
    _submit(page, f"#batch-jobs tr[data-job-id='{job_id}'] [data-output-link]")
    assert urlsplit(page.url).path == f"/projects/{PROJECT}/data/churn-scores/versions/1"
    expect(page.locator("h1")).to_contain_text("churn-scores@1")
