"""The model registry pages over a real store, without a browser: what each page shows,
links and escapes, and what its forms change.

The browser tests (tests/browser/test_registry_ui.py) check the charts, the confirmation
step and the approval flow in Chromium; these check the HTML the server sends, the forms'
effects through the services, and the pure helpers behind the pages.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from modelworks.core.auth import Principal
from modelworks.core.ids import new_id, utcnow
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.evaluation.metrics import evaluate_predictions
from modelworks.evaluation.stats import ComparisonResult, TestResult
from modelworks.governance.service import GovernanceService
from modelworks.registry.evaluations import EvaluationService
from modelworks.registry.models import ModelComparison, ModelEvaluation
from modelworks.registry.service import RegistryService
from modelworks.registry.ui import (
    comparison_tests,
    confusion_table,
    evaluation_charts,
    example_record,
    markdown_html,
    metric_rows,
    parse_record,
    side_by_side,
    waterfall,
)
from modelworks.server.app import create_app
from modelworks.server.pages import CONTENT_SECURITY_POLICY
from modelworks.training.package import save_package

from ..conftest import isolated_store

XSS = "<script>alert(1)</script>"
FEATURES = 6


@dataclass
class World:
    store: Store
    client: TestClient
    admin: Principal
    headers: dict[str, str]
    viewer_headers: dict[str, str]
    editor_headers: dict[str, str]
    outsider_headers: dict[str, str]
    registry: RegistryService
    evaluation_id: str
    comparison_id: str
    holdout: pd.DataFrame


def _package(tmp: Path, X: pd.DataFrame, y: pd.Series, c: float) -> Path:
    model = LogisticRegression(C=c, max_iter=5000).fit(X, y)
    path = tmp / f"pkg-{c}"
    save_package(model, path, input_example=X.head(), metrics={"train_accuracy": 0.9})
    return path


def store_evaluation(
    store: Store, registry: RegistryService, admin: Principal, ref: str, holdout: pd.DataFrame
) -> str:
    """An evaluation of ``ref`` written directly, with a result from the real metrics code:
    the page's tests check what the page shows of a stored result, not how it was made."""
    from modelworks.training.package import load_package

    version = registry.get_version(admin, "p1", ref)
    pkg = load_package(registry.download_package(admin, "p1", ref, store.settings.home / ref))
    X, y = holdout.drop(columns=["target"]), holdout["target"].to_numpy()
    proba = pkg.predict_proba(X)[:, 1]
    size = np.where(X["mean radius"].to_numpy() > 15, "large", "small")
    result = evaluate_predictions(
        "binary",
        y,
        y_proba=proba,
        classes=[0, 1],
        bootstrap=200,
        seed=0,
        slices={"size": size},
    ).model_dump(mode="json")
    dataset = DataService(store).get_version(admin, "p1", "holdout@1", with_profile=False)
    row_id = new_id()
    with store.transaction() as s:
        s.add(
            ModelEvaluation(
                id=row_id,
                project_id=dataset.project_id,
                model_id=version.model_id,
                version_id=version.id,
                dataset_version_id=dataset.id,
                dataset=dataset.ref,
                target="target",
                task="binary",
                headline=result["headline"],
                headline_value=result["metrics"][result["headline"]],
                result=result,
                plots={"roc.png": "0" * 64},
                created_by="admin",
                created_at=utcnow(),
            )
        )
    return row_id


COMPARISON_RESULT: dict[str, Any] = ComparisonResult(
    task="binary",
    n_rows=169,
    headline="f1",
    champion_metrics={"accuracy": 0.91, "f1": 0.9, "roc_auc": 0.95},
    challenger_metrics={"accuracy": 0.93, "f1": 0.92, "roc_auc": 0.97},
    tests=[
        TestResult(
            name="mcnemar",
            metric="accuracy",
            champion=0.91,
            challenger=0.93,
            diff=0.02,
            statistic=4.5,
            p_value=0.0339,
        ),
        TestResult(
            name="delong",
            metric="roc_auc",
            champion=0.95,
            challenger=0.97,
            diff=0.02,
            statistic=1.2,
            p_value=0.23,
            ci_low=-0.01,
            ci_high=0.05,
        ),
    ],
    verdict="challenger_better",
    p_value=0.0339,
    summary=f"churn@2 beats churn@1 on accuracy {XSS}",
    alpha=0.05,
).model_dump(mode="json")


def store_comparison(store: Store, registry: RegistryService, admin: Principal) -> str:
    """A comparison written directly: the page shows what was stored."""
    a = registry.get_version(admin, "p1", "churn@1")
    b = registry.get_version(admin, "p1", "churn@2")
    dataset = DataService(store).get_version(admin, "p1", "holdout@1", with_profile=False)
    row_id = new_id()
    with store.transaction() as s:
        s.add(
            ModelComparison(
                id=row_id,
                project_id=dataset.project_id,
                model_id=a.model_id,
                champion_version_id=a.id,
                challenger_version_id=b.id,
                champion=a.ref,
                challenger=b.ref,
                dataset_version_id=dataset.id,
                dataset=dataset.ref,
                verdict="challenger_better",
                p_value=0.0339,
                result=COMPARISON_RESULT,
                plots={"comparison.png": "0" * 64},
                created_by="admin",
                created_at=utcnow(),
            )
        )
    return row_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("registry-ui")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", "admin-password-1")
    admin = gov.authenticate_password("admin", "admin-password-1")
    gov.create_project(admin, "p1")
    for user, role in (("vera", "viewer"), ("eddie", "editor")):
        gov.create_user(admin, user, f"{user}-password-1")
        gov.set_member(admin, "p1", user, role)
    gov.create_user(admin, "olga", "olga-password-1")

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :FEATURES]
    train, holdout = X.iloc[:400], X.iloc[400:]
    registry = RegistryService(store)
    tmp = home / "packages"
    registry.register_package(admin, "p1", "churn", _package(tmp, train, y.iloc[:400], 1.0))
    registry.register_package(admin, "p1", "churn", _package(tmp, train, y.iloc[:400], 0.01))
    registry.update_version(
        admin, "p1", "churn@1", description=f"first {XSS}", card={"limitations": f"Small {XSS}"}
    )
    registry.set_alias(admin, "p1", "churn", "champion", 1)
    registry.set_alias(admin, "p1", "churn", "challenger", 2)
    registry.create_model(admin, "p1", "empty", description="nothing registered yet")
    frame = holdout.assign(target=y.iloc[400:].to_numpy())
    DataService(store).ingest(admin, "p1", "holdout", FrameSource.of(frame))
    evaluation_id = store_evaluation(store, registry, admin, "churn@1", frame)
    comparison_id = store_comparison(store, registry, admin)
    EvaluationService(store).explain_global(admin, "p1", "churn@1", "holdout@1", target="target")

    def token(user: str) -> dict[str, str]:
        principal = gov.authenticate_password(user, f"{user}-password-1")
        return {"Authorization": f"Bearer {gov.create_token(principal, 't').token}"}

    with TestClient(create_app(store, run_jobs=False), follow_redirects=False) as client:
        yield World(
            store,
            client,
            admin,
            token("admin"),
            token("vera"),
            token("eddie"),
            token("olga"),
            registry,
            evaluation_id,
            comparison_id,
            frame,
        )
    store.close()


def _get(w: World, path: str, headers: dict[str, str] | None = None) -> Any:
    return w.client.get(path, headers=w.headers if headers is None else headers)


def _text(body: str) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _charts(body: str) -> dict[str, dict[str, Any]]:
    found = re.search(r'<script type="application/json" id="model-charts">(.*?)</script>', body)
    assert found is not None, "the page has no chart data"
    return {c["id"]: c for c in json.loads(found.group(1))["charts"]}


# ---- the models list ------------------------------------------------------------------------
def test_models_list_links_each_model_with_its_latest_version_and_aliases(world: World) -> None:
    resp = _get(world, "/projects/p1/models")
    assert resp.status_code == 200
    assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    row = re.search(r'<tr data-model="churn">(.*?)</tr>', resp.text, re.S)
    assert row is not None
    assert 'href="/projects/p1/models/churn"' in row.group(1)
    assert 'href="/projects/p1/models/churn/versions/2">v2</a>' in row.group(1)
    assert "@champion → v1" in _text(row.group(1))
    assert "@challenger → v2" in _text(row.group(1))
    empty = re.search(r'<tr data-model="empty">(.*?)</tr>', resp.text, re.S)
    assert empty is not None and "nothing registered yet" in empty.group(1)


def test_the_models_area_is_live_in_the_nav(world: World) -> None:
    body = _get(world, "/projects/p1/experiments").text
    link = re.search(r'<a href="/projects/p1/models"[^>]*>(.*?)</a>', body, re.S)
    assert link is not None and "soon" not in link.group(1)
    assert "coming in a later release" not in _get(world, "/projects/p1/models").text


def test_an_empty_project_says_how_to_register(world: World) -> None:
    body = _get(world, "/projects/default/models").text
    assert "No models in this project yet" in body


# ---- one model --------------------------------------------------------------------------
def test_model_page_lists_versions_aliases_and_comparisons(world: World) -> None:
    body = _get(world, "/projects/p1/models/churn").text
    v1 = re.search(r'<tr data-version="1">(.*?)</tr>', body, re.S)
    v2 = re.search(r'<tr data-version="2">(.*?)</tr>', body, re.S)
    assert v1 is not None and v2 is not None
    assert "@champion" in v1.group(1) and "@challenger" in v2.group(1)
    assert "sklearn" in v1.group(1) and "binary" in v1.group(1)
    assert "first &lt;script&gt;" in v1.group(1) and XSS not in body
    comparison = re.search(rf'<tr data-comparison="{world.comparison_id}">(.*?)</tr>', body, re.S)
    assert comparison is not None
    assert "challenger better" in comparison.group(1) and "0.0339" in comparison.group(1)
    assert f'href="/projects/p1/models/churn/comparisons/{world.comparison_id}"' in body
    # An admin may edit: the move form is there, with every version to choose from.
    assert 'id="alias-form"' in body
    assert '<option value="2">v2 (@challenger)</option>' in body


def test_a_viewer_gets_no_alias_form(world: World) -> None:
    body = _get(world, "/projects/p1/models/churn", world.viewer_headers).text
    assert "<h2>Aliases</h2>" in body and 'id="alias-form"' not in body


def test_the_alias_form_opens_a_confirmation_that_changes_nothing(world: World) -> None:
    resp = _get(world, "/projects/p1/models/churn?alias=champion&version=2")
    assert resp.status_code == 200
    box = re.search(r'<section class="panel confirm".*?</section>', resp.text, re.S)
    assert box is not None
    assert "Move champion from v1 to v2?" in _text(box.group(0))
    assert 'name="csrf_token"' in box.group(0) and 'action="/projects/p1/models/churn/aliases"' in (
        box.group(0)
    )
    assert world.registry.get_model(world.admin, "p1", "churn").aliases["champion"] == 1
    bad = _get(world, "/projects/p1/models/churn?alias=champion&version=9").text
    assert "no version 9" in _text(bad) and "panel confirm" not in bad
    latest = _get(world, "/projects/p1/models/churn?alias=latest&version=1").text
    assert "and not 'latest'" in _text(latest) and "panel confirm" not in latest


def test_moving_an_alias_through_the_form(world: World) -> None:
    svc = world.registry
    resp = world.client.post(
        "/projects/p1/models/churn/aliases",
        data={"alias": "staging", "version": "2", "reason": "try it"},
        headers=world.headers,
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/projects/p1/models/churn"
    assert svc.get_model(world.admin, "p1", "churn").aliases["staging"] == 2
    try:
        # A viewer's move is refused by the service, shown as a message, not a traceback.
        denied = world.client.post(
            "/projects/p1/models/churn/aliases",
            data={"alias": "staging", "version": "1"},
            headers=world.viewer_headers,
        )
        assert denied.status_code == 303
        assert svc.get_model(world.admin, "p1", "churn").aliases["staging"] == 2
    finally:
        svc.delete_alias(world.admin, "p1", "churn", "staging")


def test_a_session_form_post_needs_its_csrf_token(world: World) -> None:
    client = world.client
    client.cookies.clear()
    login = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert token is not None
    client.post(
        "/login",
        data={"username": "admin", "password": "admin-password-1", "csrf_token": token.group(1)},
    )
    try:
        resp = client.post(
            "/projects/p1/models/churn/aliases",
            data={"alias": "champion", "version": "2", "csrf_token": "wrong"},
        )
        assert resp.status_code == 303
        page = client.get("/projects/p1/models/churn").text
        assert "The form had expired" in page
        assert world.registry.get_model(world.admin, "p1", "churn").aliases["champion"] == 1
        # The message is shown once.
        assert "The form had expired" not in client.get("/projects/p1/models/churn").text
    finally:
        client.cookies.clear()


def test_unknown_model_and_version_are_error_pages(world: World) -> None:
    resp = _get(world, "/projects/p1/models/nope")
    assert resp.status_code == 404
    assert "Model 'nope' does not exist in project 'p1'" in _text(resp.text)
    resp = _get(world, "/projects/p1/models/churn/versions/7")
    assert resp.status_code == 404 and "no version 7" in _text(resp.text)
    resp = _get(world, "/projects/p1/models/churn/versions/nope")
    assert resp.status_code == 404 and "no alias 'nope'" in _text(resp.text)
    assert _get(world, "/projects/p1/models/churn", world.outsider_headers).status_code in (
        403,
        404,
    )


def test_an_alias_in_the_address_goes_to_its_version(world: World) -> None:
    resp = _get(world, "/projects/p1/models/churn/versions/champion")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/projects/p1/models/churn/versions/1"


# ---- one version --------------------------------------------------------------------------
def test_version_page_shows_header_metrics_and_evaluation(world: World) -> None:
    resp = _get(world, "/projects/p1/models/churn/versions/1")
    assert resp.status_code == 200
    body = resp.text
    text = _text(body)
    assert "churn@1" in text and "@champion" in text and "sklearn" in text
    assert "train_accuracy" in text
    stored = world.store
    with stored.read() as s:
        result = s.get_one(ModelEvaluation, world.evaluation_id).result
    table = re.search(r'<table class="kv compact metrics-table".*?</table>', body, re.S)
    assert table is not None
    headline = re.search(r'<tr data-metric="f1" class="headline">(.*?)</tr>', table.group(0), re.S)
    assert headline is not None
    lo, hi = result["intervals"]["f1"]
    assert f"{result['metrics']['f1']:.4g}" in headline.group(1)
    assert f"{lo:.4g} \u2013 {hi:.4g}" in headline.group(1)
    assert "roc_auc" in table.group(0)
    # The confusion matrix as an HTML table, rows the true labels.
    matrix = result["confusion"]["matrix"]
    confusion = re.search(r'<table class="grid confusion".*?</table>', body, re.S)
    assert confusion is not None
    cells = [int(c.replace(",", "")) for c in re.findall(r'class="num cm[^"]*">([\d,]+)<', body)]
    assert cells == [n for row in matrix for n in row]
    # Chart data for ROC, PR, calibration and the threshold sweep, from the stored result.
    charts = _charts(body)
    assert {"roc", "pr", "calibration", "threshold", "importance"} <= set(charts)
    roc = charts["roc"]["series"][0]["points"]
    assert roc == [[x, y] for x, y in zip(result["curves"]["roc"]["fpr"],
                                          result["curves"]["roc"]["tpr"], strict=True)]  # fmt: skip
    assert 'data-model-chart="roc"' in body
    # The weakest slices, as stored.
    worst = re.search(r'<table class="grid" id="worst-slices">.*?</table>', body, re.S)
    assert worst is not None and result["worst_slices"]
    rows = re.findall(
        r"<tr><td[^>]*>(.*?)</td><td[^>]*>(.*?)</td><td[^>]*>(.*?)</td>", worst.group(0)
    )
    assert rows == [(w["column"], w["value"], str(w["n"])) for w in result["worst_slices"]]
    assert f'href="/api/v1/projects/p1/evaluations/{world.evaluation_id}/plots/roc.png"' in body


def test_version_page_shows_importance_card_and_lineage(world: World) -> None:
    body = _get(world, "/projects/p1/models/churn/versions/1").text
    importance = world.registry.get_importance(world.admin, "p1", "churn@1")
    charts = _charts(body)
    permutation = charts["importance"]
    assert permutation["labels"] == [f["name"] for f in importance["features"]]
    assert permutation["series"][0]["values"] == [
        f["permutation_mean"] for f in importance["features"]
    ]
    shap = charts["importance_shap"]
    by_shap = sorted(importance["features"], key=lambda f: -f["shap_mean_abs"])
    assert shap["labels"] == [f["name"] for f in by_shap]
    assert 'data-model-chart="importance_shap"' in body
    # The model card: Markdown rendered as HTML, its text escaped.
    card = re.search(r'<div class="model-card">(.*?)</div>\s*</section>', body, re.S)
    assert card is not None
    assert "<h2>Model card: churn@1</h2>" in card.group(1)
    assert "<h3>Limitations</h3>" in card.group(1)
    assert "Small &lt;script&gt;alert(1)&lt;/script&gt;" in card.group(1)
    assert "<strong>Task</strong>: binary" in card.group(1)
    assert XSS not in body
    # The lineage: the dataset version it was evaluated on, linked to its page.
    lineage = re.search(r'<section class="panel" id="lineage">(.*?)</section>', body, re.S)
    assert lineage is not None
    assert 'data-label="churn@1"' in lineage.group(1)


def test_explaining_a_row_draws_its_contributions(world: World) -> None:
    row = world.holdout.drop(columns=["target"]).iloc[0].to_dict()
    resp = world.client.post(
        "/projects/p1/models/churn/versions/1/explain",
        data={"record": json.dumps(row), "background": "holdout@1"},
        headers=world.viewer_headers,  # explaining reads: viewers may
    )
    assert resp.status_code == 200
    body = resp.text
    features = re.findall(r'<tr data-feature="([^"]+)">', body)
    assert sorted(features) == sorted(row)
    chart = _charts(body)["waterfall"]
    # The bars run from the base value to the prediction, each starting where the last ended.
    assert chart["bars"][0][0] == pytest.approx(chart["base_value"])
    for before, after in zip(chart["bars"], chart["bars"][1:], strict=False):
        assert after[0] == pytest.approx(before[1])
    assert chart["bars"][-1][1] == pytest.approx(chart["prediction"], abs=1e-6)
    # The form keeps the row that was sent.
    area = re.search(r'<textarea id="explain-record"[^>]*>(.*?)</textarea>', body, re.S)
    assert area is not None and html.unescape(area.group(1)) == json.dumps(row)


def test_a_bad_explain_row_is_shown_on_the_page(world: World) -> None:
    resp = world.client.post(
        "/projects/p1/models/churn/versions/1/explain",
        data={"record": "{not json"},
        headers=world.headers,
    )
    assert resp.status_code == 422
    assert "is not valid JSON" in _text(resp.text)
    assert "data-explain-error" in resp.text


def test_the_explain_form_is_prefilled_with_the_models_inputs(world: World) -> None:
    body = _get(world, "/projects/p1/models/churn/versions/1").text
    area = re.search(r'<textarea id="explain-record"[^>]*>(.*?)</textarea>', body, re.S)
    assert area is not None
    record = json.loads(html.unescape(area.group(1)))
    expected = world.holdout.drop(columns=["target"]).iloc[0].to_dict()
    assert record == pytest.approx(expected)  # the first row of the evaluated dataset
    # ... which is also the background the base value averages over.
    assert re.search(r'<input id="explain-background" name="background" value="holdout@1"', body)


def test_one_row_of_a_linear_model_without_background_says_what_to_pass(world: World) -> None:
    row = world.holdout.drop(columns=["target"]).iloc[0].to_dict()
    resp = world.client.post(
        "/projects/p1/models/churn/versions/1/explain",
        data={"record": json.dumps(row), "background": ""},
        headers=world.headers,
    )
    assert resp.status_code == 422
    assert "pass background=" in _text(resp.text) and 'id="contributions"' not in resp.text


# ---- a comparison ----------------------------------------------------------------------------
def test_comparison_page_shows_verdict_tests_and_plot(world: World) -> None:
    resp = _get(world, f"/projects/p1/models/churn/comparisons/{world.comparison_id}")
    assert resp.status_code == 200
    body = resp.text
    verdict = re.search(r'data-verdict="([^"]+)">([^<]+)<', body)
    assert verdict is not None and verdict.groups() == ("challenger_better", "challenger better")
    assert re.search(r"data-p-value>0.0339<", body)
    assert "beats churn@1 on accuracy &lt;script&gt;" in body and XSS not in body
    mcnemar = re.search(r'<tr data-test="mcnemar" class="significant">(.*?)</tr>', body, re.S)
    assert mcnemar is not None
    assert _text(mcnemar.group(1)).split() == [
        "mcnemar", "accuracy", "0.91", "0.93", "0.02", "4.5", "0.0339", "—",
    ]  # fmt: skip
    delong = re.search(r'<tr data-test="delong">(.*?)</tr>', body, re.S)
    assert delong is not None  # p = 0.23: not marked significant
    assert _text(delong.group(1)).split()[-4:] == ["0.23", "-0.01", "\u2013", "0.05"]
    side = re.search(r'<tr data-metric="roc_auc">(.*?)</tr>', body, re.S)
    assert side is not None and _text(side.group(1)).split() == ["roc_auc", "0.95", "0.97", "0.02"]
    plot = f"/api/v1/projects/p1/comparisons/{world.comparison_id}/plots/comparison.png"
    assert f'<img src="{plot}"' in body


def test_a_comparison_under_another_model_is_not_found(world: World) -> None:
    resp = _get(world, f"/projects/p1/models/empty/comparisons/{world.comparison_id}")
    assert resp.status_code == 404 and "is of model 'churn'" in _text(resp.text)
    assert _get(world, "/projects/p1/models/churn/comparisons/nope").status_code == 404


# ---- alias requests ----------------------------------------------------------------------
def test_a_protected_alias_move_waits_for_approval_on_the_requests_page(world: World) -> None:
    svc = world.registry
    svc.set_policy(world.admin, "p1", ["champion"])
    try:
        resp = world.client.post(
            "/projects/p1/models/churn/aliases",
            data={"alias": "champion", "version": "2", "reason": "better AUC"},
            headers=world.editor_headers,
        )
        assert resp.status_code == 303
        assert svc.get_model(world.admin, "p1", "churn").aliases["champion"] == 1
        (pending,) = svc.list_requests(world.admin, "p1")
        assert (pending.alias, pending.version, pending.requested_by) == ("champion", 2, "eddie")
        body = _get(world, "/projects/p1/models/-/requests").text
        row = re.search(rf'<tr data-request="{pending.id}">(.*?)</tr>', body, re.S)
        assert row is not None and "better AUC" in row.group(1) and "data-approve" in row.group(1)
        # A viewer sees the request but no buttons; a post from them is refused.
        viewer = _get(world, "/projects/p1/models/-/requests", world.viewer_headers).text
        assert pending.id in viewer and "data-approve" not in viewer
        refused = world.client.post(
            f"/projects/p1/models/-/requests/{pending.id}",
            data={"decision": "approve"},
            headers=world.viewer_headers,
        )
        assert refused.status_code == 303
        assert svc.list_requests(world.admin, "p1")[0].status == "pending"
        approved = world.client.post(
            f"/projects/p1/models/-/requests/{pending.id}",
            data={"decision": "approve", "note": "ok"},
            headers=world.headers,
        )
        assert approved.status_code == 303
        assert approved.headers["location"] == "/projects/p1/models/-/requests"
        assert svc.get_model(world.admin, "p1", "churn").aliases["champion"] == 2
        decided = _get(world, "/projects/p1/models/-/requests").text
        assert "No pending requests." in decided and "approved" in decided
    finally:
        svc.set_policy(world.admin, "p1", [])
        svc.set_alias(world.admin, "p1", "churn", "champion", 1)


# ---- the helpers -------------------------------------------------------------------------
def test_markdown_html_escapes_and_renders_the_card_subset() -> None:
    md = "\n".join(
        [
            "# Card: m@1",
            "",
            f"Some text {XSS} with **bold** and `code`",
            "continues here.",
            "",
            "- one",
            "- **two**: 2",
            "",
            "| a | b |",
            "|---|---|",
            "| x \\| y | <b>z</b> |",
        ]
    )
    out = str(markdown_html(md))
    assert "<h2>Card: m@1</h2>" in out
    assert (
        "<p>Some text &lt;script&gt;alert(1)&lt;/script&gt; with <strong>bold</strong> and "
        "<code>code</code> continues here.</p>"
    ) in out
    assert "<ul><li>one</li><li><strong>two</strong>: 2</li></ul>" in out
    assert "<th>a</th><th>b</th>" in out
    assert "<td>x | y</td><td>&lt;b&gt;z&lt;/b&gt;</td>" in out
    assert "<script>" not in out and "<b>" not in out


def test_metric_rows_put_the_headline_first_with_its_interval() -> None:
    rows = metric_rows(
        {
            "metrics": {"accuracy": 0.9, "f1": 0.8, "brier": 0.1},
            "intervals": {"f1": [0.75, 0.85], "accuracy": [0.88, 0.92]},
            "headline": "f1",
        }
    )
    assert [(r.name, r.headline, r.interval) for r in rows] == [
        ("f1", True, "0.75 \u2013 0.85"),
        ("accuracy", False, "0.88 \u2013 0.92"),
        ("brier", False, ""),
    ]


def test_confusion_table_shades_by_the_true_labels_row() -> None:
    table = confusion_table({"confusion": {"labels": ["a", "b"], "matrix": [[9, 1], [0, 0]]}})
    assert table is not None
    assert [[(c.count, c.shade, c.diagonal) for c in row] for row in table.rows] == [
        [(9, 4, True), (1, 1, False)],
        [(0, 0, False), (0, 0, True)],
    ]
    assert table.totals == [10, 0]
    assert confusion_table({"confusion": None}) is None


def test_regression_charts_from_a_regression_result() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    result = evaluate_predictions("regression", y, y_pred=pred, bootstrap=0).model_dump(mode="json")
    charts = {c["id"]: c for c in evaluation_charts(result)}
    assert set(charts) == {"residuals", "predicted_actual"}
    hist = result["residuals"]["histogram"]
    assert charts["residuals"]["counts"] == hist["counts"]
    assert len(charts["residuals"]["labels"]) == len(hist["counts"])
    points = charts["predicted_actual"]["series"][0]["points"]
    assert points == result["residuals"]["points"]


def test_multiclass_roc_has_one_curve_per_class() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=300)
    proba = rng.dirichlet([1, 1, 1], size=300)
    result = evaluate_predictions(
        "multiclass", y, y_proba=proba, classes=[0, 1, 2], bootstrap=0
    ).model_dump(mode="json")
    (roc,) = [c for c in evaluation_charts(result) if c["id"] == "roc"]
    labels = [s["label"] for s in roc["series"]]
    assert [lb.split(" ")[0] for lb in labels] == ["0", "1", "2", "chance"]


def test_waterfall_groups_the_smallest_contributions() -> None:
    shap_values = [0.1 * (20 - i) for i in range(20)]
    contributions = [
        {"feature": f"f{i}", "value": i, "shap_value": v} for i, v in enumerate(shap_values)
    ]
    total = sum(shap_values)
    chart, rows = waterfall(
        {
            "base_value": 1.0,
            "prediction": 1.0 + total,
            "output": "raw",
            "contributions": contributions,
        }
    )
    assert len(rows) == 20 and rows[-1].running == pytest.approx(1.0 + total)
    assert len(chart["bars"]) == 13 and chart["labels"][-1] == "8 other features"
    assert chart["bars"][-1][1] == pytest.approx(1.0 + total)


def test_parse_record_takes_one_object() -> None:
    assert parse_record('{"a": 1}') == {"a": 1}
    assert parse_record('[{"a": 1}]') == {"a": 1}
    from modelworks.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"not valid JSON"):
        parse_record("{")
    with pytest.raises(InvalidInput, match=r"one row as a JSON object"):
        parse_record("[1, 2]")


def test_example_record_uses_the_sample_then_the_types(world: World) -> None:
    version = world.registry.get_version(world.admin, "p1", "churn@1")
    names = [c["name"] for c in (version.signature or {})["inputs"]]
    assert json.loads(example_record(version)) == dict.fromkeys(names, 0.0)
    sample = {names[0]: 1.5, "other": "x"}
    assert json.loads(example_record(version, sample))[names[0]] == 1.5


def test_side_by_side_and_test_rows() -> None:
    rows = side_by_side(COMPARISON_RESULT)
    assert [(r.metric, r.champion, r.challenger, r.diff) for r in rows] == [
        ("f1", "0.9", "0.92", "0.02"),  # the headline first
        ("accuracy", "0.91", "0.93", "0.02"),
        ("roc_auc", "0.95", "0.97", "0.02"),
    ]
    tests = comparison_tests(COMPARISON_RESULT)
    assert [(t.name, t.p_value, t.significant) for t in tests] == [
        ("mcnemar", "0.0339", True),
        ("delong", "0.23", False),
    ]


def _pages(w: World) -> list[str]:
    return [
        "/projects/p1/models",
        "/projects/p1/models/-/requests",
        "/projects/p1/models/churn",
        "/projects/p1/models/churn/versions/1",
        f"/projects/p1/models/churn/comparisons/{w.comparison_id}",
    ]


def test_every_page_sends_visitors_to_the_login_and_hides_from_outsiders(world: World) -> None:
    world.client.cookies.clear()
    for path in _pages(world):
        anonymous = world.client.get(path)
        assert anonymous.status_code == 303, path
        assert anonymous.headers["location"].startswith("/login?next="), path
        outsider = _get(world, path, world.outsider_headers)
        assert outsider.status_code == 404, path
        assert "Project 'p1' does not exist or you are not a member of it." in (
            _text(outsider.text)
        ), path
        assert _get(world, path, world.viewer_headers).status_code == 200, path


def test_form_posts_without_a_login_go_to_the_login_page(world: World) -> None:
    world.client.cookies.clear()
    resp = world.client.post(
        "/projects/p1/models/churn/aliases", data={"alias": "champion", "version": "2"}
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?next=%2Fprojects%2Fp1%2Fmodels%2Fchurn"
    assert world.registry.get_model(world.admin, "p1", "churn").aliases["champion"] == 1
