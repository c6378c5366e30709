"""The deployment pages and the batch prediction form over a real store, without a browser:
what each page shows, what its forms change, and how a refused form is answered.

The browser tests (tests/browser/test_serving_ui.py) walk the same flows in Chromium; these
check the HTML the server sends, the forms' effects through the services, the roles, and
the ``batch_predict`` job kind run once through the job service and a real runner.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from modelworks.core.auth import Principal
from modelworks.core.errors import InvalidInput, NotFound
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.governance.service import GovernanceService
from modelworks.registry.evaluations import EvaluationService
from modelworks.registry.service import RegistryService
from modelworks.server.app import create_app
from modelworks.server.pages import CONTENT_SECURITY_POLICY
from modelworks.serving.service import DeploymentService
from modelworks.serving.ui import curl_example
from modelworks.training.jobs.service import JobService
from modelworks.training.package import save_package

from ..conftest import isolated_store

XSS = "<script>alert(1)</script>"
FEATURES = ["radius", "texture", "perimeter", "area"]


@dataclass
class World:
    store: Store
    client: TestClient
    admin: Principal
    headers: dict[str, str]  # the site admin
    maintainer: dict[str, str]
    editor: dict[str, str]
    viewer: dict[str, str]
    outsider: dict[str, str]
    deployments: DeploymentService
    jobs: JobService
    holdout: pd.DataFrame


def _package(tmp: Path, X: pd.DataFrame, y: pd.Series, c: float) -> Path:
    model = LogisticRegression(C=c, max_iter=5000).fit(X, y)
    path = tmp / f"pkg-{c}"
    save_package(model, path, input_example=X.head())
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("serving-ui")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", "admin-password-1")
    admin = gov.authenticate_password("admin", "admin-password-1")
    gov.create_project(admin, "p1")
    for user, role in (("mona", "maintainer"), ("eddie", "editor"), ("vera", "viewer")):
        gov.create_user(admin, user, f"{user}-password-1")
        gov.set_member(admin, "p1", user, role)
    gov.create_user(admin, "olga", "olga-password-1")

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :4]
    X.columns = FEATURES
    registry = RegistryService(store)
    tmp = home / "packages"
    for c in (1.0, 0.01):
        registry.register_package(admin, "p1", "churn", _package(tmp, X.iloc[:400], y[:400], c))
    registry.set_alias(admin, "p1", "churn", "champion", 1)
    holdout = X.iloc[400:].assign(target=y.iloc[400:].to_numpy()).reset_index(drop=True)
    data = DataService(store)
    data.ingest(admin, "p1", "holdout", FrameSource.of(holdout))
    customers = holdout.drop(columns=["target"]).assign(customer_id=range(len(holdout)))
    data.ingest(admin, "p1", "customers", FrameSource.of(customers))
    EvaluationService(store).evaluate(
        admin, "p1", "churn@1", "holdout@1", target="target", bootstrap=20
    )

    def token(user: str) -> dict[str, str]:
        principal = gov.authenticate_password(user, f"{user}-password-1")
        return {"Authorization": f"Bearer {gov.create_token(principal, 't').token}"}

    with TestClient(create_app(store, run_jobs=False), follow_redirects=False) as client:
        yield World(
            store, client, admin, token("admin"), token("mona"), token("eddie"), token("vera"),
            token("olga"), DeploymentService(store), JobService(store), holdout,
        )  # fmt: skip
    store.close()


def _get(w: World, path: str, headers: dict[str, str] | None = None) -> Any:
    return w.client.get(path, headers=w.headers if headers is None else headers)


def _post(w: World, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return w.client.post(path, data=data, headers=w.headers if headers is None else headers)


def _text(body: str) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _flash(w: World, path: str, headers: dict[str, str] | None = None) -> str:
    """The flash message the page a post redirected to shows."""
    found = re.search(r'data-flash="\w+">(.*?)</p>', _get(w, path, headers).text, re.S)
    assert found is not None, f"{path} shows no flash message"
    return _text(found.group(1))


def _create(
    w: World,
    name: str,
    model: str = "churn@champion",
    headers: dict[str, str] | None = None,
    **extra: str,
) -> Any:
    form = {"name": name, "model": model, "max_batch_size": "32", "max_wait_ms": "1",
            "max_queue": "1024", "log_predictions": "1", **extra}  # fmt: skip
    return _post(w, "/projects/p1/deployments", form, headers or w.maintainer)


# ---- the list and the create form ----------------------------------------------------------
def test_the_deployments_area_is_live_in_the_nav(world: World) -> None:
    body = _get(world, "/projects/p1/experiments").text
    link = re.search(r'<a href="/projects/p1/deployments"[^>]*>(.*?)</a>', body, re.S)
    assert link is not None and "soon" not in link.group(1)
    resp = _get(world, "/projects/default/deployments")
    assert resp.status_code == 200
    assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "No deployments in this project yet" in resp.text
    assert "coming in a later release" not in resp.text


def test_creating_a_deployment_through_the_form(world: World) -> None:
    resp = _create(world, "churn-web", description=f"for the {XSS} site")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/projects/p1/deployments/churn-web"
    made = world.deployments.get(world.admin, "p1", "churn-web")
    assert made.ref == "churn@champion" and made.created_by == "mona"
    assert made.config["max_batch_size"] == 32 and made.config["max_wait_ms"] == 1.0
    assert made.description == f"for the {XSS} site"
    assert _flash(world, resp.headers["location"]) == (
        "Created deployment churn-web, serving churn@champion."
    )

    body = _get(world, "/projects/p1/deployments").text
    row = re.search(r'<tr data-deployment="churn-web">(.*?)</tr>', body, re.S)
    assert row is not None
    cells = _text(row.group(1))
    assert "churn@champion" in cells and "mona" in cells
    assert 'href="/projects/p1/deployments/churn-web"' in row.group(1)
    assert 'href="/projects/p1/models/churn"' in row.group(1)  # the alias: the model page


def test_the_detail_page_shows_config_and_a_curl_example_with_a_real_row(world: World) -> None:
    _create(world, "churn-curl")
    resp = _get(world, "/projects/p1/deployments/churn-curl")
    assert resp.status_code == 200
    body = resp.text
    curl = re.search(r"<code data-curl>(.*?)</code>", body, re.S)
    assert curl is not None
    command = html.unescape(curl.group(1))
    assert command.startswith('curl -H "Authorization: Bearer $TOKEN"')
    assert command.rstrip().endswith("http://testserver/deployments/churn-curl/predict")
    # The record is the evaluation dataset's first row, with the model's inputs only.
    first = world.holdout.iloc[0]
    assert f'"radius": {first["radius"]}' in command and '"target"' not in command
    assert '"max_batch_size": 32' in html.unescape(body)
    assert "follows the alias" in _text(body)
    # An admin manages it: the change form, the tokens and the delete link.
    assert 'id="update-form"' in body and 'id="token-form"' in body and "data-delete" in body


def test_a_bad_reference_is_answered_on_the_form(world: World) -> None:
    resp = _create(world, "churn-bad", model="churn@9")
    assert resp.status_code == 404
    error = re.search(r"data-form-error>(.*?)</p>", resp.text, re.S)
    assert error is not None and "no version 9" in _text(error.group(1))
    # What was typed is still there.
    assert 'value="churn-bad"' in resp.text and 'value="churn@9"' in resp.text

    unpinned = _create(world, "churn-bad", model="churn")
    assert unpinned.status_code == 422
    assert "churn@champion" in _text(unpinned.text) and "churn@3" in _text(unpinned.text)
    nameless = _create(world, "Churn Bad!")
    assert nameless.status_code == 422 and "is not valid" in _text(nameless.text)
    knob = _create(world, "churn-bad", max_batch_size="lots")
    assert knob.status_code == 422
    assert "Max batch size must be a whole number; got 'lots'." in _text(knob.text)
    zero = _create(world, "churn-bad", max_batch_size="0")
    assert zero.status_code == 422 and "max_batch_size" in _text(zero.text)
    with pytest.raises(NotFound):
        world.deployments.get(world.admin, "p1", "churn-bad")


def test_a_taken_name_is_answered_on_the_form(world: World) -> None:
    _create(world, "churn-twice")
    again = _create(world, "churn-twice")
    assert again.status_code == 409 and "already exists" in _text(again.text)


def test_viewers_and_editors_cannot_create(world: World) -> None:
    body = _get(world, "/projects/p1/deployments", world.viewer).text
    assert 'id="create-form"' not in body
    assert "needs the maintainer role in p1; your role here is viewer" in _text(body)
    for headers in (world.viewer, world.editor):
        resp = _create(world, "churn-denied", headers=headers)
        assert resp.status_code == 403
        assert "maintainer" in _text(resp.text)
    with pytest.raises(NotFound):
        world.deployments.get(world.admin, "p1", "churn-denied")


def test_the_forms_suggest_the_projects_models_and_datasets(world: World) -> None:
    body = _get(world, "/projects/p1/deployments").text
    options = re.search(r'<datalist id="model-refs">(.*?)</datalist>', body, re.S)
    assert options is not None
    assert re.findall(r'value="([^"]+)"', options.group(1)) == ["churn@champion", "churn@2"]
    batch = _get(world, "/projects/p1/deployments/-/batch", world.editor).text
    datasets = re.search(r'<datalist id="dataset-refs">(.*?)</datalist>', batch, re.S)
    assert datasets is not None
    assert {"customers@1", "holdout@1"} <= set(re.findall(r'value="([^"]+)"', datasets.group(1)))


@pytest.mark.parametrize("action", ["update", "tokens", "revoke"])
def test_editors_cannot_change_a_deployment(world: World, action: str) -> None:
    name = f"churn-keep-{action}"
    _create(world, name)
    path = f"/projects/p1/deployments/{name}"
    token = world.deployments.create_token(world.admin, "p1", name)
    posts = {
        "update": (f"{path}/update", {"model": "churn@2", "status": "stopped"}),
        "tokens": (f"{path}/tokens", {"label": "sneaky"}),
        "revoke": (f"{path}/tokens/{token.id}/revoke", {}),
    }
    url, form = posts[action]
    resp = _post(world, url, form, world.editor)
    assert resp.status_code == 303 and resp.headers["location"] == path
    assert "maintainer" in _flash(world, path, world.editor)
    d = world.deployments.get(world.admin, "p1", name)
    assert (d.ref, d.status) == ("churn@champion", "active")
    tokens = world.deployments.list_tokens(world.admin, "p1", name)
    assert [(t.name, t.revoked) for t in tokens] == [("default", False)]


def test_a_session_form_post_needs_its_csrf_token(world: World) -> None:
    client = world.client
    client.cookies.clear()
    login = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf is not None
    client.post(
        "/login",
        data={"username": "mona", "password": "mona-password-1", "csrf_token": csrf.group(1)},
    )
    try:
        resp = client.post(
            "/projects/p1/deployments",
            data={"name": "churn-csrf", "model": "churn@1", "csrf_token": "wrong"},
        )
        assert resp.status_code == 303
        assert "form had expired" in _flash(world, "/projects/p1/deployments", {})
        with pytest.raises(NotFound):
            world.deployments.get(world.admin, "p1", "churn-csrf")
        page = client.get("/projects/p1/deployments")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        resp = client.post(
            "/projects/p1/deployments",
            data={"name": "churn-csrf", "model": "churn@1", "csrf_token": token.group(1)},
        )
        assert resp.status_code == 303
        assert world.deployments.get(world.admin, "p1", "churn-csrf").created_by == "mona"
    finally:
        client.cookies.clear()


# ---- one deployment ----------------------------------------------------------------------------
def test_a_viewer_reads_the_page_without_tokens_or_forms(world: World) -> None:
    _create(world, "churn-read")
    resp = _get(world, "/projects/p1/deployments/churn-read", world.viewer)
    assert resp.status_code == 200
    assert "data-curl" in resp.text
    for marker in ('id="update-form"', 'id="tokens"', "data-delete", 'id="token-form"'):
        assert marker not in resp.text
    # ?delete=1 shows no confirmation to someone who may not delete.
    confirm = _get(world, "/projects/p1/deployments/churn-read?delete=1", world.viewer).text
    assert 'id="confirm-delete"' not in confirm


def test_deleting_takes_a_confirmation(world: World) -> None:
    _create(world, "churn-gone")
    body = _get(world, "/projects/p1/deployments/churn-gone?delete=1").text
    box = re.search(r'<section class="panel confirm" id="confirm-delete".*?</section>', body, re.S)
    assert box is not None
    assert "Delete deployment churn-gone?" in _text(box.group(0))
    assert 'action="/projects/p1/deployments/churn-gone/delete"' in box.group(0)
    assert world.deployments.get(world.admin, "p1", "churn-gone").status == "active"

    denied = _post(world, "/projects/p1/deployments/churn-gone/delete", {}, world.editor)
    assert denied.status_code == 303
    assert "maintainer" in _flash(world, "/projects/p1/deployments/churn-gone", world.editor)
    resp = _post(world, "/projects/p1/deployments/churn-gone/delete", {}, world.maintainer)
    assert resp.status_code == 303 and resp.headers["location"] == "/projects/p1/deployments"
    assert _flash(world, "/projects/p1/deployments", world.maintainer).startswith(
        "Deleted deployment churn-gone"
    )
    with pytest.raises(NotFound):
        world.deployments.get(world.admin, "p1", "churn-gone")
    assert _get(world, "/projects/p1/deployments/churn-gone").status_code == 404


def test_tokens_are_shown_once_and_revoked(world: World) -> None:
    _create(world, "churn-tokens")
    path = "/projects/p1/deployments/churn-tokens"
    resp = _post(world, f"{path}/tokens", {"label": "checkout"}, world.maintainer)
    assert resp.status_code == 200
    shown = re.search(r"<code data-token>(mwd_[^<]+)</code>", resp.text)
    assert shown is not None
    token = shown.group(1)
    assert world.deployments.check_token(token, "churn-tokens")
    (listed,) = world.deployments.list_tokens(world.admin, "p1", "churn-tokens")
    assert listed.name == "checkout"
    page = _get(world, path).text
    assert token not in page and f"{listed.prefix}…" in page  # once only
    revoke = _post(world, f"{path}/tokens/{listed.id}/revoke", {}, world.maintainer)
    assert revoke.status_code == 303
    assert "Revoked the token" in _flash(world, path)
    assert not world.deployments.check_token(token, "churn-tokens")
    assert "revoked" in _text(_get(world, path).text)


def test_updating_the_target_and_the_canary(world: World) -> None:
    _create(world, "churn-move")
    path = "/projects/p1/deployments/churn-move"
    form = {"model": "churn@2", "canary_version": "churn@1", "canary_percent": "25",
            "shadow_version": "", "status": "active"}  # fmt: skip
    resp = _post(world, f"{path}/update", form, world.maintainer)
    assert resp.status_code == 303
    assert _flash(world, path) == "Updated churn-move: it serves churn@2 (active)."
    d = world.deployments.get(world.admin, "p1", "churn-move")
    assert d.ref == "churn@2" and d.config["canary"] == {"version": "churn@1", "percent": 25.0}
    assert d.config["max_batch_size"] == 32  # the other settings stay
    body = _text(_get(world, path).text)
    assert "Canary churn@1 · 25%" in body and "pinned" in body

    _post(world, f"{path}/update", dict(form, canary_percent="150"), world.maintainer)
    assert "canary.percent" in _flash(world, path)
    _post(world, f"{path}/update", dict(form, model="churn@7"), world.maintainer)
    assert "no version 7" in _flash(world, path)
    assert world.deployments.get(world.admin, "p1", "churn-move").config["canary"]["percent"] == 25
    cleared = dict(form, canary_version="", status="stopped")
    _post(world, f"{path}/update", cleared, world.maintainer)
    d = world.deployments.get(world.admin, "p1", "churn-move")
    assert d.config["canary"] is None and d.status == "stopped"
    assert "Stopped" in _text(_get(world, path).text)


def test_live_state_and_recent_predictions_when_the_server_serves_it(world: World) -> None:
    _create(world, "churn-live", model="churn@1")
    app: Any = world.client.app
    app.state.deployment_manager.sync_once()
    path = "/projects/p1/deployments/churn-live"
    body = _get(world, path).text
    assert "data-live-state>serving<" in body
    served = re.search(r"<dd data-served>(.*?)</dd>", body, re.S)
    assert served is not None and _text(served.group(1)) == "churn@1"
    token = world.deployments.create_token(world.admin, "p1", "churn-live").token
    records = world.holdout[FEATURES].head(2).to_dict(orient="records")
    resp = world.client.post(
        "/deployments/churn-live/predict",
        json={"records": records},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200, resp.text
    app.state.model_host.flush_predictions()
    app.state.prediction_log.flush()
    body = _get(world, path).text
    rows = re.findall(r"<tr data-prediction>(.*?)</tr>", body, re.S)
    assert len(rows) == 2
    assert "churn@1" in rows[0] and "radius" in html.unescape(rows[0])


def test_a_version_that_fails_to_load_shows_its_error(world: World) -> None:
    _create(world, "churn-broken", model="churn@1")
    d = world.deployments.get(world.admin, "p1", "churn-broken")
    world.deployments.mark_served(d.id, None, None, f"Could not load: {XSS}")
    body = _get(world, "/projects/p1/deployments").text
    row = re.search(r'<tr data-deployment="churn-broken">(.*?)</tr>', body, re.S)
    assert row is not None and "Could not load" in _text(row.group(1))
    detail = _get(world, "/projects/p1/deployments/churn-broken").text
    assert "Last load error: Could not load: &lt;script&gt;" in detail and XSS not in detail


def test_unknown_deployments_and_outsiders(world: World) -> None:
    resp = _get(world, "/projects/p1/deployments/nope")
    assert resp.status_code == 404 and "does not exist" in _text(resp.text)
    for path in ("/projects/p1/deployments", "/projects/p1/deployments/-/batch"):
        assert _get(world, path, world.outsider).status_code in (403, 404)
        anonymous = world.client.get(path)
        assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]
    post = world.client.post("/projects/p1/deployments", data={"name": "x", "model": "churn@1"})
    assert post.status_code == 303 and "/login" in post.headers["location"]


# ---- batch prediction ---------------------------------------------------------------------
def _batch(w: World, headers: dict[str, str] | None = None, **fields: str) -> Any:
    form = {"model": "churn@champion", "dataset": "customers@1", "output": "scores",
            "keep_columns": "customer_id", "ignore_columns": "", **fields}  # fmt: skip
    return _post(w, "/projects/p1/deployments/-/batch", form, headers or w.editor)


def test_the_batch_form_is_prefilled_from_the_address(world: World) -> None:
    body = _get(world, "/projects/p1/deployments/-/batch?model=churn%401").text
    assert 'id="batch-form"' in body and 'id="batch-model" name="model" value="churn@1"' in body
    viewer = _get(world, "/projects/p1/deployments/-/batch", world.viewer).text
    assert 'id="batch-form"' not in viewer and "needs the editor role" in _text(viewer)


def test_submitting_a_batch_job_queues_it_and_links_its_job_page(world: World) -> None:
    resp = _batch(world, output="queued-scores")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/projects/p1/deployments/-/batch"
    (job,) = [
        j
        for j in world.jobs.list(world.admin, "p1", kind="batch_predict").items
        if j.spec["output"] == "queued-scores"
    ]
    assert job.status == "queued" and job.created_by == "eddie"
    assert job.spec == {"model": "churn@champion", "dataset": "customers@1",
                        "output": "queued-scores", "keep_columns": ["customer_id"],
                        "ignore_columns": []}  # fmt: skip
    body = _get(world, "/projects/p1/deployments/-/batch", world.editor).text
    assert f'href="/projects/p1/jobs/{job.id}" data-job-link>Follow the job' in body
    row = re.search(rf'<tr data-job-id="{job.id}">(.*?)</tr>', body, re.S)
    assert row is not None and "queued" in row.group(1) and "when done" in row.group(1)
    world.jobs.cancel(world.admin, job.id)


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"model": "churn@9"}, 404, "no version 9"),
        ({"model": "churn"}, 422, "churn@champion"),
        ({"dataset": "customers@5"}, 404, "customers"),
        ({"output": "bad name!"}, 422, "is not valid"),
        ({"keep_columns": ""}, 422, "does not take: customer_id"),
        ({"keep_columns": "customer_id nope"}, 422, "has no column 'nope'"),
        ({"ignore_columns": "radius", "keep_columns": "customer_id"}, 422, "needs the inputs"),
        ({"dataset": " "}, 422, "Fill in the dataset version to score"),
    ],
)
def test_a_bad_batch_form_is_answered_on_the_form(
    world: World, fields: dict[str, str], status: int, message: str
) -> None:
    before = len(world.jobs.list(world.admin, "p1", kind="batch_predict").items)
    resp = _batch(world, **fields)
    assert resp.status_code == status, resp.text[:500]
    error = re.search(r"data-form-error>(.*?)</p>", resp.text, re.S)
    assert error is not None and message in _text(error.group(1))
    assert len(world.jobs.list(world.admin, "p1", kind="batch_predict").items) == before


def test_a_viewer_cannot_start_a_batch_job(world: World) -> None:
    resp = _batch(world, world.viewer)
    assert resp.status_code == 403 and "editor" in _text(resp.text)


def test_the_batch_predict_kind_runs_through_the_job_service(world: World) -> None:
    from modelworks.training.jobs.runner import JobRunner

    job = world.jobs.submit(
        world.admin, "p1", "batch_predict",
        {"model": "churn@1", "dataset": "customers@1", "output": "job-scores",
         "keep_columns": ["customer_id"]},
    )  # fmt: skip
    runner = JobRunner(world.store, max_cpus=1, poll_s=0.1).start()
    try:
        deadline = time.monotonic() + 120
        done = world.jobs.get(world.admin, job.id)
        while not done.done and time.monotonic() < deadline:
            time.sleep(0.2)
            done = world.jobs.get(world.admin, job.id)
    finally:
        runner.stop()
    assert done.status == "succeeded", done.error
    assert done.result is not None and done.result["output"] == "job-scores@1"
    assert done.result["rows"] == len(world.holdout) and done.progress == 1.0
    assert done.progress_message == f"wrote {len(world.holdout)} predictions to job-scores@1"
    version = DataService(world.store).get_version(world.admin, "p1", "job-scores@1")
    names = [c.name for c in version.columns]
    assert names[:2] == ["customer_id", "prediction"]
    body = _get(world, "/projects/p1/deployments/-/batch").text
    row = re.search(rf'<tr data-job-id="{job.id}">(.*?)</tr>', body, re.S)
    assert row is not None
    assert 'href="/projects/p1/data/job-scores/versions/1" data-output-link' in row.group(1)


def test_the_job_kind_refuses_a_bad_spec_at_submission(world: World) -> None:
    with pytest.raises(InvalidInput, match="spec is not valid"):
        world.jobs.submit(world.admin, "p1", "batch_predict", {"model": "churn@1"})
    with pytest.raises(InvalidInput, match=r"unexpected|Extra inputs"):
        world.jobs.submit(
            world.admin, "p1", "batch_predict",
            {"model": "churn@1", "dataset": "customers@1", "output": "o", "oops": 1},
        )  # fmt: skip


# ---- helpers ---------------------------------------------------------------------------------
def test_curl_example_quotes_the_body_for_the_shell() -> None:
    command = curl_example("http://host:8080/", "churn-prod", {"plan": "it's", "x": float("nan")})
    assert command.endswith("http://host:8080/deployments/churn-prod/predict")
    assert "'\"'\"'" in command  # the single quote, closed and reopened
    assert '"x": null' in command
