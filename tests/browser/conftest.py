"""Browser-test fixtures: a real uvicorn server over a seeded store, and headless Chromium.

Chromium is Debian's, found by path (``MODELWORKS_TEST_CHROMIUM``, default
``/usr/bin/chromium``) and driven by Playwright; Playwright's own browser downloads are
never used. Without the binary the tests skip with the reason, unless
``MODELWORKS_REQUIRE_SERVICES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelworks.governance.service import GovernanceService
from modelworks.tracking.schemas import MetricIn
from modelworks.tracking.service import TrackingService

from ..conftest import isolated_store

CHROMIUM = os.environ.get("MODELWORKS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-1"
VIEWER, VIEWER_PASSWORD = "vera", "vera-password-1"
TIMEOUT_MS = 15_000


def unavailable(reason: str) -> None:
    """Skip, or fail where CI requires every service (as in tests/conftest.py)."""
    if os.environ.get("MODELWORKS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (MODELWORKS_REQUIRE_SERVICES=1, so this is an error)")
    pytest.skip(reason)


@dataclass
class Site:
    """The running server and what was seeded into it."""

    url: str
    project: str
    other_project: str
    experiment: str
    runs: dict[str, str]  # run name -> run id
    metric_keys: list[str]
    differing_param: str
    same_param: str


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, serve: Any) -> Iterator[Site]:

    from modelworks.server.app import create_app

    home = tmp_path_factory.mktemp("browser-home")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin(ADMIN, ADMIN_PASSWORD)
    admin = gov.authenticate_password(ADMIN, ADMIN_PASSWORD)
    gov.create_user(admin, VIEWER, VIEWER_PASSWORD)
    gov.set_member(admin, "default", VIEWER, "viewer")
    gov.create_project(admin, "growth", "A second project, for the project switcher.")
    tracking = TrackingService(store)
    runs: dict[str, str] = {}
    seeds: list[tuple[str, dict[str, str], float, dict[str, str]]] = [
        ("lgbm-baseline", {"model": "lgbm", "learning_rate": "0.1"}, 0.95, {"note": "<b>bold</b>"}),
        ("xgb-challenger", {"model": "xgb", "learning_rate": "0.1"}, 0.85, {}),
    ]
    for name, params, final_auc, tags in seeds:
        run = tracking.create_run(
            admin,
            "default",
            "churn",
            name=name,
            params=params,
            tags=tags,
            system_info={"python": "3.11.9", "platform": "Linux-x86_64", "cpu_count": 2},
        )
        metrics = [
            MetricIn(key="auc", value=final_auc - 0.04 * (9 - step), step=step)
            for step in range(10)
        ] + [MetricIn(key="loss", value=1.0 / (step + 1), step=step) for step in range(10)]
        tracking.log_batch(admin, run.id, metrics=metrics)
        tracking.log_artifact(admin, run.id, "model/notes.txt", f"notes for {name}".encode())
        tracking.update_run(admin, run.id, status="FINISHED")
        runs[name] = run.id

    with serve(create_app(store)) as url:
        yield Site(
            url=url,
            project="default",
            other_project="growth",
            experiment="churn",
            runs=runs,
            metric_keys=["auc", "loss"],
            differing_param="model",
            same_param="learning_rate",
        )
    store.close()


# Module scope, not session: Playwright's sync API keeps an asyncio loop marked as running in
# the main thread while it is open, and tests collected after these (NATS, anything that calls
# asyncio.run) would fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(
            f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium) or set "
            "MODELWORKS_TEST_CHROMIUM to a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class PageErrors:
    """Uncaught script errors and console errors (CSP violations land there) of a page."""

    messages: list[str] = field(default_factory=list)

    def on_console(self, message: Any) -> None:
        # A 4xx page (wrong password is a 401) logs "Failed to load resource"; that is expected.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.messages.append(f"console: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.messages.append(f"page error: {error}")


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test; fails on any script error or CSP report."""
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors = PageErrors()
    page.on("console", errors.on_console)
    page.on("pageerror", errors.on_page_error)
    yield page
    context.close()
    assert not errors.messages, "script errors in the page:\n" + "\n".join(errors.messages)


@pytest.fixture
def login() -> Any:
    """``login(page, username, password)``: fill in and send the login form."""

    def log_in(page: Any, username: str = ADMIN, password: str = ADMIN_PASSWORD) -> None:
        if "/login" not in page.url:
            page.goto("/login")
        page.fill("#username", username)
        page.fill("#password", password)
        with page.expect_navigation():
            page.click("form.stacked button[type=submit]")

    return log_in


@pytest.fixture
def admin_page(page: Any, login: Any) -> Any:
    """A page logged in as the site admin."""
    login(page)
    assert "/login" not in page.url, "logging in as the site admin failed"
    return page
