"""The data pages in a real headless Chromium against a real server (see conftest.py).

This module serves its own store, seeded with datasets: it overrides the ``site`` fixture,
so conftest's ``page`` (which fails the test on any script error or CSP report) opens this
server's pages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest

from modelworks.core.ids import new_id, utcnow
from modelworks.core.store import Store
from modelworks.data.models import ValidationRun
from modelworks.data.schemas import ExpectationResult, ValidationReport
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.governance.service import GovernanceService

from ..conftest import isolated_store

pytestmark = pytest.mark.browser

USER, PASSWORD = "dana", "dana-password-1"
XSS = "<script>alert(1)</script>"
ROWS = 120
FAILED_MESSAGE = "age: 3 values outside [18, 99]"


@dataclass
class DataSite:
    url: str
    project: str
    dataset: str
    derived: str
    source_label: str


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported late: conftest skips without Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": range(rows),
            "age": [None if i % 10 == 0 else 18.0 + (i * 7) % 60 for i in range(rows)],
            "plan": [("basic", "pro", "team", "enterprise")[i % 4] for i in range(rows)],
            "note": [XSS if i == 0 else f"row {i}" for i in range(rows)],
        }
    )


def _store_validation(store: Store, version_id: str, project_id: str) -> None:
    """A failed run, then a passed one, written directly so that this test does not depend
    on how validation.py evaluates a suite: the page shows what was stored."""
    now = utcnow()
    not_null = {"type": "null_rate", "column": "plan", "max": 0.0}
    between = {"type": "range", "column": "age", "min": 18, "max": 99}
    Result = tuple[dict[str, Any], bool, str]
    runs: list[tuple[datetime, bool, list[Result]]] = [
        (now - timedelta(hours=1), False, [(not_null, True, ""), (between, False, FAILED_MESSAGE)]),
        (now, True, [(not_null, True, "plan has no nulls")]),
    ]
    with store.transaction() as s:
        for at, success, results in runs:
            report = ValidationReport(
                success=success,
                row_count=ROWS,
                results=[
                    ExpectationResult(expectation=e, success=ok, message=m) for e, ok, m in results
                ],
                evaluated_at=at,
            )
            s.add(
                ValidationRun(
                    id=new_id(),
                    version_id=version_id,
                    project_id=project_id,
                    trigger="manual",
                    success=success,
                    suite={"expectations": [not_null, between]},
                    report=report.model_dump(mode="json"),
                    created_by=USER,
                    created_at=at,
                )
            )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, serve: Any) -> Iterator[DataSite]:
    from modelworks.server.app import create_app

    home = tmp_path_factory.mktemp("browser-data-home")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin(USER, PASSWORD)
    admin = gov.authenticate_password(USER, PASSWORD)
    data = DataService(store)
    data.create_dataset(admin, "default", "churn", description="Customers and their plans")
    data.ingest(admin, "default", "churn", FrameSource.of(_frame(60)))
    v2 = data.ingest(admin, "default", "churn", FrameSource.of(_frame(ROWS))).version
    assert v2 is not None
    data.tag_version(admin, "default", "churn@2", "golden")
    data.write_version(
        admin,
        "default",
        "churn_clean",
        FrameSource.of(_frame(40)),
        parents=[v2],
        recipe={"sql": "SELECT * FROM churn WHERE age IS NOT NULL"},
        relation="derived_from",
    )
    _store_validation(store, v2.id, v2.project_id)
    with serve(create_app(store)) as url:
        yield DataSite(
            url=url,
            project="default",
            dataset="churn",
            derived="churn_clean",
            source_label=f"pandas frame ({ROWS} rows)",
        )
    store.close()


def _submit(page: Any, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def _drawn_pixels(canvas: Any) -> int:
    """How many pixels of the canvas the chart library painted."""
    return int(
        canvas.evaluate(
            """(c) => {
                const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let painted = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
                return painted;
            }"""
        )
    )


def _screenshot(page: Any, name: str) -> None:
    shots = os.environ.get("MODELWORKS_TEST_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / name), full_page=True)


def test_browse_datasets_versions_profile_preview_and_lineage(
    page: Any, site: DataSite, login: Any
) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:  # alert() from a value that became script
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    login(page, USER, PASSWORD)
    assert urlsplit(page.url).path == "/"

    _submit(page, "nav.sidebar a:has-text('Data')")
    assert urlsplit(page.url).path == f"/projects/{site.project}/data"
    row = page.locator("#datasets tr[data-dataset='churn']")
    expect(row).to_contain_text("@2")
    expect(row).to_contain_text(str(ROWS))
    _screenshot(page, "mw-datasets.png")

    _submit(page, "#datasets a:text-is('churn')")
    assert page.locator("h1").inner_text() == site.dataset
    versions = page.locator("#versions tbody tr")
    assert versions.count() == 2
    expect(versions.first).to_contain_text("golden")
    expect(versions.first.locator(".status-ready")).to_be_visible()
    _screenshot(page, "mw-dataset.png")

    _submit(page, "#versions a:text-is('@2')")
    assert urlsplit(page.url).path == f"/projects/{site.project}/data/churn/versions/2"
    assert page.locator("h1").inner_text().startswith("churn@2")
    schema = page.locator("#schema tbody tr th")
    assert schema.all_inner_texts() == ["id", "age", "plan", "note"]
    expect(page.locator("#schema tr[data-column='age']")).to_contain_text("double")

    # Profile charts: Chart.js made a chart on each canvas and painted it.
    page.wait_for_selector("canvas[data-profile-chart][data-rendered='true']")
    captions = page.locator("#profile figure.chart-card").evaluate_all(
        "(figs) => figs.map((f) => f.dataset.column)"
    )
    # Every note is different: a chart of its "top" values would be bars of height one.
    assert captions == ["id", "age", "plan"]
    for column, kind in (("age", "bar"), ("plan", "bar")):
        canvas = page.locator(f"figure[data-column='{column}'] canvas")
        info = canvas.evaluate(
            "(c) => { const ch = window.Chart.getChart(c);"
            " return ch ? [ch.config.type, ch.data.datasets[0].data.length] : null; }"
        )
        assert info is not None, f"no chart on the {column} canvas"
        assert info[0] == kind and info[1] > 0
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        assert _drawn_pixels(canvas) > 500, f"the {column} chart is blank"
    plan_labels = page.locator("figure[data-column='plan'] canvas").evaluate(
        "(c) => window.Chart.getChart(c).data.labels"
    )
    assert sorted(plan_labels) == ["basic", "enterprise", "pro", "team"]

    # Validation results, newest first, each expectation with its message.
    runs = page.locator("#validation .validation-run")
    assert runs.count() == 2
    assert runs.first.get_attribute("data-success") == "true"
    failed = runs.nth(1).locator("tr.fail")
    expect(failed).to_contain_text("range")
    expect(failed).to_contain_text(FAILED_MESSAGE)

    # Lineage: the frame it came from on the left, the version derived from it on the right.
    svg = page.locator("#lineage svg.lineage-graph")
    expect(svg).to_be_visible()
    labels = svg.locator("g.lineage-node").evaluate_all("(gs) => gs.map((g) => g.dataset.label)")
    assert sorted(labels) == sorted([site.source_label, "churn@2", "churn_clean@1"])
    xs = {
        label: svg.locator(f"g.lineage-node[data-label='{label}'] rect").bounding_box()["x"]
        for label in labels
    }
    assert xs[site.source_label] < xs["churn@2"] < xs["churn_clean@1"]
    _screenshot(page, "mw-version.png")

    # The preview pages forward and back; the script-like cell is text.
    preview = page.locator("#preview")
    expect(preview.locator("[data-preview-range]")).to_have_text(f"Rows 1\u201350 of {ROWS}")
    assert preview.get_by_text(XSS, exact=True).is_visible()
    assert preview.locator("table script").count() == 0
    _submit(page, "#preview [data-preview-next]")
    expect(preview.locator("[data-preview-range]")).to_have_text(f"Rows 51\u2013100 of {ROWS}")
    assert preview.locator("tbody tr").first.locator("td").nth(1).inner_text() == "50"
    _submit(page, "#preview [data-preview-next]")
    expect(preview.locator("[data-preview-range]")).to_have_text(f"Rows 101\u2013120 of {ROWS}")
    assert preview.locator("[data-preview-next]").count() == 0
    _submit(page, "#preview [data-preview-previous]")
    _submit(page, "#preview [data-preview-previous]")
    expect(preview.locator("[data-preview-range]")).to_have_text(f"Rows 1\u201350 of {ROWS}")
    assert preview.locator("[data-preview-previous]").count() == 0

    # A lineage node is a link to its version's page.
    _submit(page, "#lineage g.lineage-node[data-label='churn_clean@1'] a")
    assert urlsplit(page.url).path == f"/projects/{site.project}/data/churn_clean/versions/1"
    expect(page.locator("#recipe")).to_contain_text("SELECT * FROM churn WHERE age IS NOT NULL")
    page.wait_for_selector("canvas[data-profile-chart][data-rendered='true']")
    _screenshot(page, "mw-derived.png")
    assert not dialogs, f"a value ran as script: {dialogs}"


def test_data_pages_load_nothing_from_outside_and_have_no_inline_script(
    page: Any, site: DataSite, login: Any
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    login(page, USER, PASSWORD)
    for path in (
        f"/projects/{site.project}/data",
        f"/projects/{site.project}/data/churn",
        f"/projects/{site.project}/data/churn/versions/2",
        f"/projects/{site.project}/data/ref/churn@golden",
    ):
        response = page.goto(path)
        assert response.status == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        page.wait_for_load_state("networkidle")
        inline = page.evaluate(
            "() => [...document.scripts].filter(s => !s.src && s.type !== 'application/json')"
            ".length"
        )
        assert inline == 0, f"{path} has inline scripts"
    assert urlsplit(page.url).path == f"/projects/{site.project}/data/churn/versions/2"
    outside = [url for url in requested if not url.startswith(site.url + "/")]
    assert not outside, f"requests that left the server: {outside}"
    assert any("/static/js/data.js" in url for url in requested)
