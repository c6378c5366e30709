"""The web UI in a real headless Chromium against a real server (see conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytestmark = pytest.mark.browser

# Seeded in conftest.py; the runs' final auc values are 0.95 and 0.85.
BEST, OTHER = "lgbm-baseline", "xgb-challenger"


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported late: conftest skips without Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _submit(page: Any, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def _run_names(page: Any) -> list[str]:
    return page.locator("#runs tbody td.name").all_inner_texts()


def _open_runs_table(page: Any, site: Any) -> None:
    page.goto(f"/projects/{site.project}/experiments")
    _submit(page, f"#experiments a:text-is('{site.experiment}')")


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


def test_runs_table_run_detail_charts_and_compare(admin_page: Any, site: Any) -> None:
    page = admin_page
    _open_runs_table(page, site)
    assert sorted(_run_names(page)) == sorted(site.runs)

    _submit(page, f"#runs a:text-is('{BEST}')")
    assert urlsplit(page.url).path == f"/runs/{site.runs[BEST]}"
    page.wait_for_selector("canvas[data-chart][data-rendered='true']")
    assert page.locator("h1").inner_text().startswith(BEST)
    captions = page.locator("figure.chart-card figcaption").all_inner_texts()
    assert captions == site.metric_keys
    for i in range(len(captions)):
        canvas = page.locator(f"canvas[data-chart='{i}']")
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        assert _drawn_pixels(canvas) > 500, f"chart {captions[i]} is blank"
    assert page.locator("#params").get_by_text("learning_rate").is_visible()
    assert page.locator("#system").get_by_text("3.11.9").is_visible()
    artifact = page.locator("#artifacts a", has_text="model/notes.txt")
    href = f"/api/v1/runs/{site.runs[BEST]}/artifacts/model/notes.txt"
    assert artifact.get_attribute("href") == href
    download = page.request.get(href)
    assert download.status == 200 and download.body() == f"notes for {BEST}".encode()
    shots = os.environ.get("MODELWORKS_TEST_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "mw-run.png"), full_page=True)

    page.go_back()
    page.wait_for_selector("#runs")
    compare = page.locator("[data-compare]")
    expect(compare).to_be_disabled()  # Compare needs two runs
    for name in (BEST, OTHER):
        page.locator(f"#runs tr:has(a:text-is('{name}')) input[name=runs]").check()
    expect(compare).to_be_enabled()
    with page.expect_navigation(url="**/compare?runs=*"):
        compare.click()
    chosen = parse_qs(urlsplit(page.url).query)["runs"][0].split(",")
    assert sorted(chosen) == sorted(site.runs.values())

    runs_table = page.locator("#compared-runs")
    assert runs_table.get_by_text(BEST).is_visible()
    assert runs_table.get_by_text(OTHER).is_visible()
    differing = page.locator("#params tr.diff th").all_inner_texts()
    assert [t.replace("≠", "").strip() for t in differing] == [site.differing_param]
    same = page.locator("#params tr", has_text=site.same_param)
    assert "diff" not in (same.get_attribute("class") or "")
    page.wait_for_selector("canvas[data-chart][data-rendered='true']")
    assert page.locator("figure.chart-card figcaption").all_inner_texts() == site.metric_keys
    for i in range(len(site.metric_keys)):
        canvas = page.locator(f"canvas[data-chart='{i}']")
        lines = canvas.evaluate("(c) => window.Chart.getChart(c).data.datasets.length")
        assert lines == 2, "one line per run"
        assert _drawn_pixels(canvas) > 500


def test_wrong_password_shows_an_error_and_no_session(page: Any, site: Any, login: Any) -> None:
    login(page, "admin", "not-the-password")
    assert urlsplit(page.url).path == "/login"
    assert "Wrong username or password" in page.locator(".alert.error").inner_text()
    assert page.input_value("#username") == "admin"
    assert page.request.get("/api/v1/auth/whoami").status == 401
    page.goto("/")
    assert urlsplit(page.url).path == "/login"


def test_unauthenticated_pages_redirect_to_login_and_back(page: Any, site: Any, login: Any) -> None:
    target = f"/projects/{site.project}/experiments/{site.experiment}?sort=attributes.name&dir=asc"
    page.goto(target)
    parts = urlsplit(page.url)
    assert parts.path == "/login"
    assert parse_qs(parts.query)["next"] == [target]
    login(page)
    assert page.url == site.url + target
    assert _run_names(page) == sorted(site.runs)


@pytest.mark.parametrize(
    "next_url", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"]
)
def test_login_never_redirects_off_site(page: Any, site: Any, login: Any, next_url: str) -> None:
    page.goto("/login?next=" + next_url.replace("/", "%2F").replace("\\", "%5C"))
    login(page)
    assert page.url == site.url + "/"


def test_filter_box_and_sorting(admin_page: Any, site: Any) -> None:
    page = admin_page
    _open_runs_table(page, site)

    page.fill("#filter", "metrics.auc > 0.9")
    _submit(page, "form.filter button[type=submit]")
    assert _run_names(page) == [BEST]
    assert page.input_value("#filter") == "metrics.auc > 0.9"

    page.fill("#filter", "metrics.auc >>> 0.9")
    _submit(page, "form.filter button[type=submit]")
    error = page.locator(".filter-error")
    assert error.is_visible()
    assert "Cannot parse filter" in error.inner_text()
    assert page.locator("#runs").count() == 0

    page.fill("#filter", "params.model = 'xgb'")
    _submit(page, "form.filter button[type=submit]")
    assert _run_names(page) == [OTHER]

    _submit(page, "a.clear")
    _submit(page, "#runs thead a.sort:text-is('auc')")  # metrics sort largest first
    assert _run_names(page) == [BEST, OTHER]
    _submit(page, "#runs thead a.sort:has-text('auc')")
    assert _run_names(page) == [OTHER, BEST]
    _submit(page, "#runs thead a.sort:has-text('Name')")
    assert _run_names(page) == sorted(site.runs)


def test_every_nav_link_answers_200(admin_page: Any, site: Any) -> None:
    page = admin_page
    page.goto("/")
    links = page.locator("header a, nav.sidebar a")
    hrefs = list(dict.fromkeys(str(a.get_attribute("href")) for a in links.all()))
    areas = [
        "Data",
        "Features",
        "Labeling",
        "Experiments",
        "Training",
        "Evaluation",
        "Models",
        "Deployments",
        "Monitoring",
        "Pipelines",
        "Governance",
    ]
    labels = page.locator("nav.sidebar a").all_inner_texts()
    for area in areas:
        assert any(label.startswith(area) for label in labels), f"no nav entry for {area}"
    assert "/audit" in hrefs
    for href in hrefs:
        assert href.startswith("/"), href
        response = page.request.get(href, max_redirects=0)
        assert response.status == 200, f"{href} answered {response.status}"
    page.goto(f"/projects/{site.project}/monitoring")
    assert "coming in a later release" in page.locator("main").inner_text()
    with page.expect_navigation():
        page.select_option("#project-switch", site.other_project)
    assert page.url == f"{site.url}/projects/{site.other_project}/monitoring"


def test_the_page_loads_nothing_from_outside_the_server(page: Any, site: Any, login: Any) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = page.goto("/login")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    login(page)
    ids = ",".join(site.runs.values())
    for path in (
        f"/projects/{site.project}/experiments/{site.experiment}",
        f"/runs/{site.runs[BEST]}",
        f"/compare?runs={ids}",
        f"/projects/{site.project}/governance",
        f"/projects/{site.project}/data",
        "/audit",
    ):
        response = page.goto(path)
        assert response.status == 200, path
        assert response.headers["content-security-policy"] == csp
        page.wait_for_load_state("networkidle")
        inline = page.evaluate(
            "() => [...document.scripts].filter(s => !s.src && s.type !== 'application/json')"
            ".length"
        )
        assert inline == 0, f"{path} has inline scripts"
    outside = [url for url in requested if not url.startswith(site.url + "/")]
    assert not outside, f"requests that left the server: {outside}"
    assert any("/static/vendor/chartjs/" in url for url in requested)


def test_user_data_is_shown_as_text(admin_page: Any, site: Any) -> None:
    page = admin_page
    page.goto(f"/runs/{site.runs[BEST]}")
    tags = page.locator("#tags")
    assert tags.get_by_text("<b>bold</b>").is_visible()
    assert tags.locator("b").count() == 0


def test_create_experiment_through_the_rest_api(admin_page: Any, site: Any) -> None:
    page = admin_page
    page.goto(f"/projects/{site.project}/experiments")
    form = page.locator("#new-experiment")
    form.locator("input[name=name]").fill("made in the browser")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert page.locator("h1").inner_text() == "made in the browser"
    assert page.locator("p.empty").inner_text() == "No runs in this experiment yet."

    page.goto(f"/projects/{site.project}/experiments")
    form.locator("input[name=name]").fill("made in the browser")
    form.locator("button[type=submit]").click()
    expect(form.locator(".form-error")).to_contain_text("already exists")

    status = page.evaluate(
        """async (project) => (await fetch(`/api/v1/projects/${project}/experiments`, {
            method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({name: "no-csrf"})})).status""",
        site.project,
    )
    assert status == 403, "an unsafe request without the CSRF token must be refused"


def test_a_viewer_sees_no_admin_pages(page: Any, site: Any, login: Any) -> None:
    login(page, "vera", "vera-password-1")
    page.goto(f"/projects/{site.project}/experiments")
    assert page.locator("nav.sidebar a[href='/audit']").count() == 0
    assert page.locator("#new-experiment").count() == 0
    response = page.goto("/audit")
    assert response.status == 403
    assert "site administrator" in page.locator(".alert.error").inner_text()
    response = page.goto("/projects/no-such-project/experiments")
    assert response.status == 404


def test_log_out(admin_page: Any, site: Any) -> None:
    page = admin_page
    page.goto("/")
    _submit(page, "header button:text-is('Log out')")
    assert urlsplit(page.url).path == "/login"
    page.goto("/")
    assert urlsplit(page.url).path == "/login"
