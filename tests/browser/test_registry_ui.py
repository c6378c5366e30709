"""The model registry pages in a real headless Chromium against a real server (conftest.py).

This module serves its own store, built through the services: two versions of a model
(one from a run, one from a package folder), a held-out dataset version, an evaluation, a
champion/challenger comparison and stored global importance. It overrides the ``site``
fixture, so conftest's ``page`` (which fails the test on any script error or CSP report)
opens this server's pages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.governance.service import GovernanceService
from modelworks.registry.evaluations import EvaluationService
from modelworks.registry.schemas import ComparisonOut, EvaluationOut
from modelworks.registry.service import RegistryService
from modelworks.tracking.service import TrackingService
from modelworks.training.package import save_package

from ..conftest import isolated_store

pytestmark = pytest.mark.browser

ADMIN, ADMIN_PASSWORD = "rita", "rita-password-1"
EDITOR, EDITOR_PASSWORD = "eddie", "eddie-password-1"
PROJECT = "default"
MODEL = "churn"
FEATURES = 6


@dataclass
class RegistrySite:
    url: str
    store: Store
    evaluation: EvaluationOut
    comparison: ComparisonOut
    run_id: str
    regression: EvaluationOut


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported late: conftest skips without Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _package(tmp: Path, X: pd.DataFrame, y: pd.Series, c: float) -> Path:
    model = LogisticRegression(C=c, max_iter=5000).fit(X, y)
    path = tmp / f"pkg-{c}"
    save_package(model, path, input_example=X.head(), metrics={"train_accuracy": 0.9})
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, serve: Any) -> Iterator[RegistrySite]:
    from modelworks.server.app import create_app

    home = tmp_path_factory.mktemp("browser-registry-home")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin(ADMIN, ADMIN_PASSWORD)
    admin = gov.authenticate_password(ADMIN, ADMIN_PASSWORD)
    gov.create_user(admin, EDITOR, EDITOR_PASSWORD)
    gov.set_member(admin, PROJECT, EDITOR, "editor")

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :FEATURES]
    train_X, train_y = X.iloc[:400], y.iloc[:400]
    packages = home / "packages"
    tracking = TrackingService(store)
    run = tracking.create_run(admin, PROJECT, "churn-training", name="logreg")
    tracking.log_artifacts(admin, run.id, _package(packages, train_X, train_y, 1.0), "model")
    registry = RegistryService(store)
    registry.register_run(admin, PROJECT, MODEL, run.id, description="The first model")
    registry.register_package(admin, PROJECT, MODEL, _package(packages, train_X, train_y, 0.01))
    registry.set_alias(admin, PROJECT, MODEL, "champion", 1)
    registry.set_alias(admin, PROJECT, MODEL, "challenger", 2)
    registry.update_version(
        admin, PROJECT, f"{MODEL}@1", card={"intended_use": "Rank accounts for outreach calls."}
    )
    holdout = X.iloc[400:].assign(target=y.iloc[400:].to_numpy())
    DataService(store).ingest(admin, PROJECT, "holdout", FrameSource.of(holdout))
    evaluations = EvaluationService(store)
    evaluation = evaluations.evaluate(
        admin, PROJECT, f"{MODEL}@1", "holdout@1", target="target", bootstrap=200
    )
    comparison = evaluations.compare(
        admin, PROJECT, MODEL, "holdout@1", target="target", n_resamples=200
    )
    evaluations.explain_global(admin, PROJECT, f"{MODEL}@1", "holdout@1", target="target")
    # A regression model, for the residual charts.
    Xr, yr = load_diabetes(return_X_y=True, as_frame=True)
    regressor = LinearRegression().fit(Xr.iloc[:300], yr.iloc[:300])
    save_package(regressor, packages / "regressor", input_example=Xr.head())
    registry.register_package(admin, PROJECT, "progression", packages / "regressor")
    frame = Xr.iloc[300:].assign(target=yr.iloc[300:].to_numpy())
    DataService(store).ingest(admin, PROJECT, "progression_holdout", FrameSource.of(frame))
    regression = evaluations.evaluate(
        admin, PROJECT, "progression@1", "progression_holdout@1", target="target", bootstrap=200
    )
    with serve(create_app(store)) as url:
        yield RegistrySite(url, store, evaluation, comparison, run.id, regression)
    store.close()


def _submit(page: Any, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def _screenshot(page: Any, name: str) -> None:
    shots = os.environ.get("MODELWORKS_TEST_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / name), full_page=True)


def _chart(page: Any, chart_id: str) -> Any:
    """[type, points per dataset, dataset labels] of the Chart.js chart on a canvas."""
    page.wait_for_selector(f"canvas[data-model-chart='{chart_id}'][data-rendered='true']")
    return page.locator(f"canvas[data-model-chart='{chart_id}']").evaluate(
        "(c) => { const ch = window.Chart.getChart(c); return ch ? [ch.config.type,"
        " ch.data.datasets.map((d) => d.data.length), ch.data.datasets.map((d) => d.label),"
        " ch.data.labels] : null; }"
    )


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


def _registry(site: RegistrySite) -> tuple[RegistryService, Any]:
    gov = GovernanceService(site.store)
    return RegistryService(site.store), gov.authenticate_password(ADMIN, ADMIN_PASSWORD)


def _aliases(site: RegistrySite) -> dict[str, int]:
    svc, admin = _registry(site)
    return svc.get_model(admin, PROJECT, MODEL).aliases


def test_models_list_and_model_page(page: Any, site: RegistrySite, login: Any) -> None:
    login(page, ADMIN, ADMIN_PASSWORD)
    _submit(page, "nav.sidebar a:has-text('Models')")
    assert urlsplit(page.url).path == f"/projects/{PROJECT}/models"
    row = page.locator(f"#models tr[data-model='{MODEL}']")
    expect(row).to_contain_text("v2")
    expect(row.locator("[data-alias='champion']")).to_contain_text("→ v1")
    expect(row.locator("[data-alias='challenger']")).to_contain_text("→ v2")
    _screenshot(page, "mw-models.png")

    _submit(page, f"#models a:text-is('{MODEL}')")
    assert page.locator("h1").inner_text() == MODEL
    versions = page.locator("#versions tbody tr")
    assert versions.count() == 2
    v1 = page.locator("#versions tr[data-version='1']")
    expect(v1.locator("[data-alias='champion']")).to_be_visible()
    expect(v1).to_contain_text("sklearn")
    expect(v1).to_contain_text("binary")
    expect(v1.locator(f"a[href='/runs/{site.run_id}']")).to_be_visible()
    comparison = page.locator(f"#comparisons tr[data-comparison='{site.comparison.id}']")
    expect(comparison).to_contain_text(site.comparison.verdict.replace("_", " "))
    _screenshot(page, "mw-model.png")


def test_version_page_draws_the_evaluation_card_and_importance(
    page: Any, site: RegistrySite, login: Any
) -> None:
    login(page, ADMIN, ADMIN_PASSWORD)
    page.goto(f"/projects/{PROJECT}/models/{MODEL}/versions/1")
    expect(page.locator("h1")).to_contain_text(f"{MODEL}@1")
    expect(page.locator("h1 [data-alias='champion']")).to_be_visible()
    expect(page.locator("[data-run-link]")).to_have_text(site.run_id)

    # The headline metric with its bootstrap interval, as stored.
    result = site.evaluation.result
    headline = result["headline"]
    row = page.locator(f"#evaluation-metrics tr[data-metric='{headline}']")
    lo, hi = result["intervals"][headline]
    expect(row).to_contain_text(f"{result['metrics'][headline]:.4g}")
    expect(row).to_contain_text(f"{lo:.4g} \u2013 {hi:.4g}")
    cells = page.locator("#confusion td.cm").all_inner_texts()
    assert [int(c.replace(",", "")) for c in cells] == [
        n for r in result["confusion"]["matrix"] for n in r
    ]

    # Chart.js drew the ROC curve from the stored points (and the chance diagonal).
    kind, sizes, labels, _ = _chart(page, "roc")
    assert kind == "scatter" and sizes == [len(result["curves"]["roc"]["fpr"]), 2]
    assert labels[0] == f"ROC (AUC {result['metrics']['roc_auc']:.4g})"
    roc = page.locator("canvas[data-model-chart='roc']")
    assert _drawn_pixels(roc) > 500, "the ROC chart is blank"
    for chart_id in ("pr", "calibration", "threshold"):
        assert _chart(page, chart_id) is not None, f"no {chart_id} chart"
    plot_links = page.locator("#evaluation [data-plot]").evaluate_all(
        "(links) => links.map((a) => a.getAttribute('href'))"
    )
    assert f"/api/v1/projects/{PROJECT}/evaluations/{site.evaluation.id}/plots/roc.png" in (
        plot_links
    )
    png = page.request.get(plot_links[0])
    assert png.status == 200 and png.headers["content-type"] == "image/png"

    # Global importance: one bar per feature, named as stored.
    svc, admin = _registry(site)
    importance = svc.get_importance(admin, PROJECT, f"{MODEL}@1")
    kind, sizes, _, names = _chart(page, "importance")
    assert kind == "bar" and names == [f["name"] for f in importance["features"]]
    assert sizes == [FEATURES]
    kind, sizes, _, names = _chart(page, "importance_shap")
    by_shap = sorted(importance["features"], key=lambda f: -f["shap_mean_abs"])
    assert kind == "bar" and names == [f["name"] for f in by_shap] and sizes == [FEATURES]
    assert _drawn_pixels(page.locator("canvas[data-model-chart='importance']")) > 500

    # The model card, rendered; the filled-in field is there.
    card = page.locator("#card .model-card")
    expect(card.locator("h2")).to_have_text(f"Model card: {MODEL}@1")
    expect(card).to_contain_text("Rank accounts for outreach calls.")
    expect(card.locator("h3:text-is('Intended use')")).to_be_visible()

    # Lineage: the held-out dataset version it was evaluated on, and its run.
    svg = page.locator("#lineage svg.lineage-graph")
    labels = svg.locator("g.lineage-node").evaluate_all("(gs) => gs.map((g) => g.dataset.label)")
    assert f"{MODEL}@1" in labels and "holdout@1" in labels
    _screenshot(page, "mw-model-version.png")


def test_a_regression_version_draws_its_residuals(
    page: Any, site: RegistrySite, login: Any
) -> None:
    login(page, ADMIN, ADMIN_PASSWORD)
    page.goto("/projects/default/models/progression/versions/1")
    result = site.regression.result
    expect(page.locator("#evaluation-metrics tr[data-metric='rmse']")).to_contain_text(
        f"{result['metrics']['rmse']:.4g}"
    )
    kind, sizes, _, labels = _chart(page, "residuals")
    assert kind == "bar" and sizes == [len(result["residuals"]["histogram"]["counts"])]
    assert len(labels) == sizes[0]
    kind, sizes, _, _ = _chart(page, "predicted_actual")
    assert kind == "scatter" and sizes == [len(result["residuals"]["points"]), 2]
    for chart_id in ("residuals", "predicted_actual"):
        canvas = page.locator(f"canvas[data-model-chart='{chart_id}']")
        assert _drawn_pixels(canvas) > 500, f"the {chart_id} chart is blank"
    # No classifier charts or tables on a regression page.
    assert page.locator("canvas[data-model-chart='roc']").count() == 0
    assert page.locator("#confusion").count() == 0
    _screenshot(page, "mw-regression.png")


def test_moving_an_alias_is_confirmed_first(page: Any, site: RegistrySite, login: Any) -> None:
    assert _aliases(site)["champion"] == 1
    login(page, ADMIN, ADMIN_PASSWORD)
    page.goto(f"/projects/{PROJECT}/models/{MODEL}")
    try:
        # Cancelling the confirmation changes nothing.
        page.fill("#alias-name", "champion")
        page.select_option("#alias-version", "2")
        _submit(page, "#alias-form button[type=submit]")
        confirm = page.locator("#confirm-move")
        expect(confirm.locator("h2")).to_have_text("Move champion from v1 to v2?")
        _screenshot(page, "mw-alias-confirm.png")
        _submit(page, "#confirm-move [data-cancel]")
        expect(page.locator("#confirm-move")).to_have_count(0)
        assert _aliases(site)["champion"] == 1

        # Confirming moves it.
        page.fill("#alias-name", "champion")
        page.select_option("#alias-version", "2")
        page.fill("#alias-reason", "better on the holdout")
        _submit(page, "#alias-form button[type=submit]")
        _submit(page, "#confirm-move [data-confirm]")
        assert urlsplit(page.url).path == f"/projects/{PROJECT}/models/{MODEL}"
        expect(page.locator("[data-flash='success']")).to_have_text(
            "Moved champion from version 1 to version 2."
        )
        assert _aliases(site)["champion"] == 2
        expect(page.locator("#aliases tr[data-alias='champion']")).to_contain_text("v2")
    finally:
        svc, admin = _registry(site)
        svc.set_alias(admin, PROJECT, MODEL, "champion", 1)


def test_comparison_report(page: Any, site: RegistrySite, login: Any) -> None:
    login(page, ADMIN, ADMIN_PASSWORD)
    page.goto(f"/projects/{PROJECT}/models/{MODEL}")
    _submit(page, f"#comparisons tr[data-comparison='{site.comparison.id}'] a:text('Report')")
    cmp = site.comparison
    expect(page.locator("[data-verdict]")).to_have_text(cmp.verdict.replace("_", " "))
    assert cmp.p_value is not None
    expect(page.locator("[data-p-value]")).to_have_text(f"{cmp.p_value:.4g}")
    expect(page.locator("[data-summary]")).to_have_text(cmp.result["summary"])
    names = page.locator("#tests-table tbody tr").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.test)"
    )
    assert names == [t["name"] for t in cmp.result["tests"]]
    headline = cmp.result["headline"]
    expect(page.locator(f"#side-by-side tr[data-metric='{headline}']")).to_contain_text(
        f"{cmp.result['challenger_metrics'][headline]:.4g}"
    )
    image = page.locator("#plots img")
    expect(image).to_be_visible()
    assert image.evaluate("(img) => img.complete && img.naturalWidth") > 100
    _screenshot(page, "mw-comparison.png")


def test_explaining_a_prediction(page: Any, site: RegistrySite, login: Any) -> None:
    login(page, ADMIN, ADMIN_PASSWORD)
    page.goto(f"/projects/{PROJECT}/models/{MODEL}/versions/1")
    # Prefilled: a row of the dataset it was evaluated on, which is also the background.
    expect(page.locator("#explain-background")).to_have_value("holdout@1")
    _submit(page, "#explain-form button[type=submit]")
    table = page.locator("#contributions tbody tr")
    expect(table).to_have_count(FEATURES)
    features = table.evaluate_all("(rows) => rows.map((r) => r.dataset.feature)")
    svc, admin = _registry(site)
    inputs = [c["name"] for c in (svc.get_version(admin, PROJECT, f"{MODEL}@1").signature or {})
              ["inputs"]]  # fmt: skip
    assert sorted(features) == sorted(inputs)
    kind, sizes, _, labels = _chart(page, "waterfall")
    assert kind == "bar" and sizes[0] == FEATURES and len(labels) == FEATURES
    assert _drawn_pixels(page.locator("canvas[data-model-chart='waterfall']")) > 500
    expect(page.locator("#explanation [data-prediction]")).not_to_be_empty()
    _screenshot(page, "mw-explain.png")

    # A row that is not JSON: the message, on the same page.
    page.fill("#explain-record", "{oops")
    _submit(page, "#explain-form button[type=submit]")
    expect(page.locator("[data-explain-error]")).to_contain_text("is not valid JSON")
    expect(page.locator("#contributions")).to_have_count(0)


def test_a_pending_request_is_approved_from_the_requests_page(
    page: Any, site: RegistrySite, login: Any
) -> None:
    svc, admin = _registry(site)
    svc.set_policy(admin, PROJECT, ["champion"])
    try:
        # The editor's move becomes a request.
        login(page, EDITOR, EDITOR_PASSWORD)
        page.goto(f"/projects/{PROJECT}/models/{MODEL}")
        page.fill("#alias-name", "champion")
        page.select_option("#alias-version", "2")
        _submit(page, "#alias-form button[type=submit]")
        expect(page.locator("#confirm-move .alert.warning")).to_contain_text("protected alias")
        _submit(page, "#confirm-move [data-confirm]")
        expect(page.locator("[data-flash='info']")).to_contain_text("pending approval")
        assert _aliases(site)["champion"] == 1
        (request,) = svc.list_requests(admin, PROJECT)

        # An admin approves it on the requests page.
        page.context.clear_cookies()
        login(page, ADMIN, ADMIN_PASSWORD)
        page.goto(f"/projects/{PROJECT}/models")
        _submit(page, "[data-requests-link]")
        row = page.locator(f"tr[data-request='{request.id}']")
        expect(row).to_contain_text(EDITOR)
        _screenshot(page, "mw-alias-requests.png")
        _submit(page, f"tr[data-request='{request.id}'] [data-approve]")
        expect(page.locator("[data-flash='success']")).to_have_text(
            f"Approved: {MODEL}@champion now points at version 2."
        )
        assert _aliases(site)["champion"] == 2
        expect(page.locator("#decided tr[data-request] .status-approved")).to_be_visible()

        # A request decided elsewhere while the page was open: an error message, not a
        # traceback, and nothing changes.
        editor = GovernanceService(site.store).authenticate_password(EDITOR, EDITOR_PASSWORD)
        again = svc.set_alias(editor, PROJECT, MODEL, "champion", 1)
        assert again.status == "pending_approval" and again.request_id is not None
        page.reload()
        svc.decide_request(admin, PROJECT, again.request_id, approve=False)
        _submit(page, f"tr[data-request='{again.request_id}'] [data-approve]")
        expect(page.locator("[data-flash='error']")).to_have_text(
            f"Alias request {again.request_id} is already rejected."
        )
        assert _aliases(site)["champion"] == 2
    finally:
        svc.set_policy(admin, PROJECT, [])
        svc.set_alias(admin, PROJECT, MODEL, "champion", 1)


def test_unknown_model_and_version_pages(page: Any, site: RegistrySite, login: Any) -> None:
    login(page, ADMIN, ADMIN_PASSWORD)
    response = page.goto(f"/projects/{PROJECT}/models/nope")
    assert response.status == 404
    expect(page.locator(".alert.error")).to_contain_text("Model 'nope' does not exist")
    response = page.goto(f"/projects/{PROJECT}/models/{MODEL}/versions/9")
    assert response.status == 404
    expect(page.locator(".alert.error")).to_contain_text("has no version 9")
