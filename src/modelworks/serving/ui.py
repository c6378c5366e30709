"""Deployment pages: the list with the create form, one deployment, and batch prediction.

Thin adapters over :class:`~modelworks.serving.service.DeploymentService` and
:class:`~modelworks.training.jobs.service.JobService`, rendered in the shared layout of
:mod:`modelworks.server.pages`; the app includes :data:`router`. No deployment rule lives
here: the service decides who may create, change or delete (maintainers), and checks the
name, the model reference and the config; a refused form comes back with the service's
message next to what was typed.

What a deployment serves *now* comes from the server's
:class:`~modelworks.serving.host.ModelHost` when this server runs deployments
(``request.app.state.model_host``), else from what the serving side last recorded on the
deployment (``served_version``, ``last_error``). Recent predictions are read from the
prediction log's files of the last hour only, so the page stays cheap.

Forms post with the session's CSRF token in a ``csrf_token`` field, as the registry pages
do (:func:`modelworks.server.forms.form_principal`). Deleting takes two steps: the Delete
button opens the page with a confirmation whose button posts the delete. A new token is
shown once, in the answer to the post that made it (never put in the session cookie).

Batch prediction (``/projects/P/deployments/-/batch``; ``-`` is no deployment name) submits
a ``batch_predict`` job (:mod:`modelworks.serving.batch_job`) and lists the recent ones,
each linked to its job page, where it is followed live, and once done to the dataset
version it wrote.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput, ModelworksError
from modelworks.core.ids import utcnow
from modelworks.data.service import DataService
from modelworks.registry.api import evaluations
from modelworks.registry.evaluations import EvaluationService
from modelworks.registry.schemas import VersionOut
from modelworks.registry.service import RegistryService
from modelworks.registry.ui import dataset_href, example_record, finite, ref_href
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal
from modelworks.server.forms import form_caller, form_error_status, set_flash
from modelworks.server.forms import pop_flash as _pop_flash
from modelworks.server.pages import page_router, project_role, render, segment
from modelworks.serving.api import deployments
from modelworks.serving.batch_job import KIND as BATCH_KIND
from modelworks.serving.host import DeploymentConfig
from modelworks.serving.schemas import DeploymentOut, DeploymentTokenOut
from modelworks.serving.service import DeploymentService
from modelworks.training.jobs.api import jobs
from modelworks.training.jobs.schemas import JobOut
from modelworks.training.jobs.service import JobService

FLASH_KEY = "deployments_flash"
BATCH_SEGMENT = "-/batch"  # '-' is no deployment name, so this never shadows a deployment
BATCH_JOBS_SHOWN = 20
PREDICTIONS_SHOWN = 20
PREDICTIONS_WINDOW = timedelta(hours=1)
_DEFAULTS = DeploymentConfig()
BATCHING_DEFAULTS = {
    "max_batch_size": _DEFAULTS.max_batch_size,
    "max_wait_ms": _DEFAULTS.max_wait_ms,
    "max_queue": _DEFAULTS.max_queue,
}

router = page_router()


# ---- links --------------------------------------------------------------------------------
def deployments_href(project: str) -> str:
    return f"/projects/{segment(project)}/deployments"


def deployment_href(project: str, name: str) -> str:
    return f"{deployments_href(project)}/{segment(name)}"


def batch_href(project: str) -> str:
    return f"{deployments_href(project)}/{BATCH_SEGMENT}"


def job_href(project: str, job_id: str) -> str:
    return f"/projects/{segment(project)}/jobs/{segment(job_id)}"


# ---- flash messages -----------------------------------------------------------------------
def flash(request: Request, kind: str, text: str, **links: str) -> None:
    """A message for the next page this session renders (``kind``: success, info, error);
    ``links`` (``job=<id>``) are ids the page turns into links."""
    set_flash(request, FLASH_KEY, kind, text, **links)


def pop_flash(request: Request) -> dict[str, str] | None:
    return _pop_flash(request, FLASH_KEY)


# ---- the forms' values ----------------------------------------------------------------------
SUGGESTIONS = 100  # the most recently updated models and datasets the forms suggest


def model_refs(registry: RegistryService, principal: Principal, project: str) -> list[str]:
    """References a form suggests: each model's aliases, then its latest version."""
    refs: list[str] = []
    for m in registry.list_models(principal, project, max_results=SUGGESTIONS).items:
        refs += [f"{m.name}@{alias}" for alias in sorted(m.aliases)]
        if m.latest_version:
            refs.append(f"{m.name}@{m.latest_version}")
    return refs


def dataset_refs(data: DataService, principal: Principal, project: str) -> list[str]:
    """Each dataset's latest version, as a form suggests it."""
    return [
        f"{d.name}@{d.latest_version}"
        for d in data.list_datasets(principal, project, max_results=SUGGESTIONS).items
        if d.latest_version
    ]


def _number(label: str, text: str, *, whole: bool) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise InvalidInput(f"{label} must be {kind}; got {text!r}.") from None


def _columns(text: str) -> list[str]:
    """``"id, region"`` (commas or spaces) as a list of column names."""
    return [c for c in text.replace(",", " ").split() if c]


@dataclass
class CreateForm:
    """The create form as typed (shown again, with the error, when it is refused)."""

    name: str = ""
    model: str = ""
    description: str = ""
    max_batch_size: str = str(BATCHING_DEFAULTS["max_batch_size"])
    max_wait_ms: str = f"{BATCHING_DEFAULTS['max_wait_ms']:g}"
    max_queue: str = str(BATCHING_DEFAULTS["max_queue"])
    rate_limit_per_s: str = ""
    log_predictions: bool = True
    error: str | None = None

    def config(self) -> dict[str, Any]:
        """The deployment config the form asks for (DeploymentService checks it)."""
        config: dict[str, Any] = {"log_predictions": self.log_predictions}
        values = (
            ("max_batch_size", "Max batch size", self.max_batch_size, True),
            ("max_wait_ms", "Max wait (ms)", self.max_wait_ms, False),
            ("max_queue", "Max queue", self.max_queue, True),
            ("rate_limit_per_s", "Rate limit", self.rate_limit_per_s, False),
        )
        for key, label, text, whole in values:
            value = _number(label, text, whole=whole)
            if value is not None:
                config[key] = value
        return config


@dataclass
class BatchForm:
    model: str = ""
    dataset: str = ""
    output: str = ""
    keep_columns: str = ""
    ignore_columns: str = ""
    error: str | None = None

    def spec(self) -> dict[str, Any]:
        missing = [
            label
            for label, value in (
                ("the model version", self.model),
                ("the dataset version to score", self.dataset),
                ("the output dataset", self.output),
            )
            if not value.strip()
        ]
        if missing:
            raise InvalidInput(f"Fill in {', '.join(missing)}.")
        return {
            "model": self.model.strip(),
            "dataset": self.dataset.strip(),
            "output": self.output.strip(),
            "keep_columns": _columns(self.keep_columns),
            "ignore_columns": _columns(self.ignore_columns),
        }


# ---- what a deployment serves now -----------------------------------------------------------
@dataclass(frozen=True)
class Live:
    """A deployment as this server serves it now (``state``: serving, loading, failed (to
    load), not loaded, stopped, or elsewhere when this server runs no deployments)."""

    state: str
    detail: str
    primary: str | None = None
    canary: str | None = None
    shadow: str | None = None

    @property
    def badge(self) -> str:
        """The status class the stylesheet colours this state with."""
        return {
            "serving": "succeeded",
            "loading": "running",
            "failed": "failed",
            "stopped": "cancelled",
        }.get(self.state, "queued")


def live_state(request: Request, d: DeploymentOut) -> Live:
    host = getattr(request.app.state, "model_host", None)
    if d.status == "stopped":
        return Live("stopped", "Stopped: it serves no requests until it is started again.")
    if host is None:
        served = f"v{d.served_version}" if d.served_version is not None else "nothing yet"
        return Live(
            "elsewhere",
            f"This server does not run deployments; the serving side last reported {served}.",
        )
    found = next((x for x in host.deployments() if x.name == d.name), None)
    if found is not None:
        return Live(
            "serving",
            "Loaded on this server and answering requests.",
            primary=found.primary.version,
            canary=found.canary.version if found.canary else None,
            shadow=found.shadow.version if found.shadow else None,
        )
    if host.is_loading(d.name):
        return Live("loading", "Loading the model; requests get 503 with Retry-After until then.")
    if d.last_error:
        return Live("failed", "The model could not be loaded (the error is below).")
    return Live("not loaded", "Not loaded on this server yet: it loads within a few seconds.")


def _sample_row(
    request: Request, principal: Principal, project: str, svc: EvaluationService, v: VersionOut
) -> dict[str, Any] | None:
    """A row of a dataset version the model was evaluated or trained on, if one is known."""
    dataset: str | None = None
    try:
        found = svc.list_evaluations(principal, project, v.ref, limit=1)
        if found:
            dataset = found[0].dataset
        else:
            # Upstream only: what it was trained on has its inputs; what it scored does not.
            graph = svc.registry.lineage(principal, project, v.ref, depth=3)
            dataset = next(
                (e.parent.label for e in graph.edges if e.parent.type == "dataset_version"), None
            )
        if not dataset:
            return None
        data = getattr(request.app.state, "data", None) or DataService(request.app.state.store)
        preview = data.preview(principal, project, dataset, offset=0, limit=1)
    except ModelworksError:
        return None  # unreadable: the example falls back to the signature's types
    if not preview.rows:
        return None
    return {c.name: val for c, val in zip(preview.columns, preview.rows[0], strict=False)}


def curl_example(base_url: str, name: str, record: dict[str, Any]) -> str:
    """The command that calls the deployment with one record."""
    body = json.dumps({"records": [finite(record)]}, ensure_ascii=False, default=str)
    url = f"{base_url.rstrip('/')}/deployments/{segment(name)}/predict"
    return (
        'curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)} \\\n  {url}"
    )


@dataclass(frozen=True)
class PredictionRow:
    ts: str
    request_id: str
    model_version: str
    role: str
    latency_ms: float | None
    inputs: str
    outputs: str


def recent_predictions(request: Request, d: DeploymentOut) -> list[PredictionRow] | None:
    """The last predictions logged in the past hour, newest first (None: unreadable)."""
    from modelworks.serving.predlog import PredictionLog

    log = getattr(request.app.state, "prediction_log", None)
    if log is None:
        log = getattr(request.app.state, "deployments_ui_predlog", None)
    if log is None:
        log = request.app.state.deployments_ui_predlog = PredictionLog(request.app.state.store)
    start = max(utcnow() - PREDICTIONS_WINDOW, d.created_at)
    try:
        table = log.read_predictions(d.name, start=start)
    except (ModelworksError, OSError, ValueError):
        return None
    rows = table.slice(max(0, table.num_rows - PREDICTIONS_SHOWN)).to_pylist()
    return [
        PredictionRow(
            ts=r["ts"].strftime("%Y-%m-%d %H:%M:%S") if r.get("ts") else "—",
            request_id=str(r.get("request_id") or ""),
            model_version=str(r.get("model_version") or ""),
            role=str(r.get("role") or ""),
            latency_ms=r.get("latency_ms"),
            inputs=str(r.get("inputs") or ""),
            outputs=str(r.get("outputs") or ""),
        )
        for r in reversed(rows)
    ]


# ---- the list and the create form -----------------------------------------------------------
def _list_page(
    request: Request,
    principal: Principal,
    svc: DeploymentService,
    project: str,
    form: CreateForm,
    status: int = 200,
) -> Response:
    items = svc.list(principal, project)
    role = project_role(request, principal, project)
    can_manage = role is not None and role >= Role.MAINTAINER
    return render(
        request,
        principal,
        "deployments_list.html",
        project=project,
        area="deployments",
        status=status,
        title="Deployments",
        deployments=items,
        live={d.name: live_state(request, d) for d in items},
        form=form,
        can_manage=can_manage,
        model_refs=model_refs(svc.registry, principal, project) if can_manage else [],
        role=role.label if role else None,
        create_href=deployments_href(project),
        deployment_href=lambda name: deployment_href(project, name),
        batch_href=batch_href(project),
        ref_href=lambda ref: ref_href(project, ref),
        flash=pop_flash(request),
    )


@router.get("/projects/{project}/deployments", **auth_rule(Role.VIEWER))
def deployments_page(
    request: Request,
    project: str,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> Response:
    return _list_page(request, principal, svc, project, CreateForm())


@router.post("/projects/{project}/deployments", **auth_rule(Role.MAINTAINER))
def create_deployment(
    request: Request,
    project: str,
    name: str = Form(""),
    model: str = Form(""),
    description: str = Form(""),
    max_batch_size: str = Form(""),
    max_wait_ms: str = Form(""),
    max_queue: str = Form(""),
    rate_limit_per_s: str = Form(""),
    log_predictions: str = Form(""),
    csrf_token: str = Form(""),
    svc: DeploymentService = Depends(deployments),
) -> Response:
    back = deployments_href(project)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    form = CreateForm(
        name=name.strip(), model=model.strip(), description=description.strip(),
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
        rate_limit_per_s=rate_limit_per_s, log_predictions=bool(log_predictions),
    )  # fmt: skip
    try:
        if not form.name or not form.model:
            raise InvalidInput(
                "Give the deployment a name (e.g. churn-prod) and the model it serves "
                "(e.g. churn@champion to follow the alias, churn@3 to pin a version)."
            )
        made = svc.create(
            principal, project, form.name, form.model, config=form.config(),
            description=form.description,
        )  # fmt: skip
    except ModelworksError as exc:
        form.error = exc.detail
        status = form_error_status(exc)
        return _list_page(request, principal, svc, project, form, status=status)
    flash(request, "success", f"Created deployment {made.name}, serving {made.ref}.")
    return RedirectResponse(deployment_href(project, made.name), status_code=303)


# ---- one deployment -------------------------------------------------------------------------
def _detail_page(
    request: Request,
    principal: Principal,
    svc: DeploymentService,
    evals: EvaluationService,
    project: str,
    name: str,
    *,
    confirm_delete: bool = False,
    new_token: DeploymentTokenOut | None = None,
    status: int = 200,
) -> Response:
    d = svc.get(principal, project, name)
    role = project_role(request, principal, project)
    can_manage = role is not None and role >= Role.MAINTAINER
    version: VersionOut | None = None
    version_error: str | None = None
    try:
        ref = f"{d.model}@{d.served_version}" if d.served_version is not None else d.ref
        version = svc.registry.get_version(principal, project, ref)
    except ModelworksError as exc:
        version_error = exc.detail
    record: dict[str, Any] = {}
    if version is not None:
        sample = _sample_row(request, principal, project, evals, version)
        record = json.loads(example_record(version, sample))
    tokens = svc.list_tokens(principal, project, name) if can_manage else []
    config = d.config or {}
    return render(
        request,
        principal,
        "deployments_detail.html",
        project=project,
        area="deployments",
        status=status,
        title=d.name,
        d=d,
        live=live_state(request, d),
        version=version,
        version_error=version_error,
        config_json=json.dumps(config, indent=2, sort_keys=True),
        canary=config.get("canary") or {},
        shadow=config.get("shadow") or {},
        curl=curl_example(str(request.base_url), d.name, record),
        predictions=recent_predictions(request, d),
        tokens=tokens,
        new_token=new_token,
        can_manage=can_manage,
        confirm_delete=confirm_delete and can_manage,
        deployments_href=deployments_href(project),
        deployment_href=deployment_href(project, d.name),
        batch_href=batch_href(project) + "?" + urlencode({"model": version.ref})
        if version
        else batch_href(project),
        ref_href=lambda ref: ref_href(project, ref),
        flash=pop_flash(request),
    )


@router.get("/projects/{project}/deployments/{name}", **auth_rule(Role.VIEWER))
def deployment_page(
    request: Request,
    project: str,
    name: str,
    delete: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
    evals: EvaluationService = Depends(evaluations),
) -> Response:
    """The deployment; with ``?delete=1`` the confirmation of deleting it."""
    return _detail_page(
        request, principal, svc, evals, project, name, confirm_delete=delete is not None
    )


def _rollout(version: str, percent: str, label: str) -> dict[str, Any] | None:
    if not version.strip():
        return None
    share = _number(f"The {label} percentage", percent, whole=False)
    return {"version": version.strip(), "percent": 0.0 if share is None else share}


@router.post("/projects/{project}/deployments/{name}/update", **auth_rule(Role.MAINTAINER))
def update_deployment(
    request: Request,
    project: str,
    name: str,
    model: str = Form(""),
    canary_version: str = Form(""),
    canary_percent: str = Form(""),
    shadow_version: str = Form(""),
    status: str = Form(""),
    csrf_token: str = Form(""),
    svc: DeploymentService = Depends(deployments),
) -> Response:
    """Point at another alias or version, set or clear the canary and the shadow, or stop
    and start it."""
    back = deployment_href(project, name)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    try:
        current = svc.get(principal, project, name)
        config = dict(current.config or {})
        config["canary"] = _rollout(canary_version, canary_percent, "canary")
        shadow = shadow_version.strip()
        config["shadow"] = {"version": shadow} if shadow else None
        out = svc.update(
            principal, project, name, model=model.strip() or None, config=config,
            status=status.strip() or None,
        )  # fmt: skip
    except ModelworksError as exc:
        flash(request, "error", exc.detail)
    else:
        flash(request, "success", f"Updated {out.name}: it serves {out.ref} ({out.status}).")
    return RedirectResponse(back, status_code=303)


@router.post("/projects/{project}/deployments/{name}/delete", **auth_rule(Role.MAINTAINER))
def delete_deployment(
    request: Request,
    project: str,
    name: str,
    csrf_token: str = Form(""),
    svc: DeploymentService = Depends(deployments),
) -> Response:
    back = deployment_href(project, name)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    try:
        svc.delete(principal, project, name)
    except ModelworksError as exc:
        flash(request, "error", exc.detail)
        return RedirectResponse(back, status_code=303)
    flash(request, "success", f"Deleted deployment {name}; it no longer answers requests.")
    return RedirectResponse(deployments_href(project), status_code=303)


@router.post("/projects/{project}/deployments/{name}/tokens", **auth_rule(Role.MAINTAINER))
def create_token(
    request: Request,
    project: str,
    name: str,
    label: str = Form(""),
    csrf_token: str = Form(""),
    svc: DeploymentService = Depends(deployments),
    evals: EvaluationService = Depends(evaluations),
) -> Response:
    """A token for this deployment, shown once on the page this answers with."""
    back = deployment_href(project, name)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    try:
        token = svc.create_token(principal, project, name, label.strip() or "default")
    except ModelworksError as exc:
        flash(request, "error", exc.detail)
        return RedirectResponse(back, status_code=303)
    return _detail_page(request, principal, svc, evals, project, name, new_token=token)


@router.post(
    "/projects/{project}/deployments/{name}/tokens/{token_id}/revoke",
    **auth_rule(Role.MAINTAINER),
)
def revoke_token(
    request: Request,
    project: str,
    name: str,
    token_id: str,
    csrf_token: str = Form(""),
    svc: DeploymentService = Depends(deployments),
) -> Response:
    back = deployment_href(project, name)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    try:
        svc.revoke_token(principal, project, name, token_id)
    except ModelworksError as exc:
        flash(request, "error", exc.detail)
    else:
        flash(request, "success", "Revoked the token: callers using it are refused within 5 s.")
    return RedirectResponse(back, status_code=303)


# ---- batch prediction -----------------------------------------------------------------------
@dataclass(frozen=True)
class BatchJobRow:
    job: JobOut
    model: str
    input: str
    output: str | None
    output_href: str | None
    rows: int | None


def batch_rows(project: str, items: list[JobOut]) -> list[BatchJobRow]:
    out = []
    for job in items:
        result = job.result or {}
        output = result.get("output") if job.status == "succeeded" else None
        out.append(
            BatchJobRow(
                job=job,
                model=str(job.spec.get("model", "")),
                input=str(job.spec.get("dataset", "")),
                output=str(output) if output else None,
                output_href=dataset_href(project, str(output)) if output else None,
                rows=result.get("rows") if isinstance(result.get("rows"), int) else None,
            )
        )
    return out


def _batch_page(
    request: Request,
    principal: Principal,
    svc: JobService,
    project: str,
    form: BatchForm,
    status: int = 200,
) -> Response:
    page = svc.list(principal, project, kind=BATCH_KIND, max_results=BATCH_JOBS_SHOWN)
    role = project_role(request, principal, project)
    can_submit = role is not None and role >= Role.EDITOR
    data = getattr(request.app.state, "data", None) or DataService(request.app.state.store)
    return render(
        request,
        principal,
        "deployments_batch.html",
        project=project,
        area="deployments",
        status=status,
        title="Batch predictions",
        form=form,
        jobs=batch_rows(project, page.items),
        can_submit=can_submit,
        model_refs=model_refs(deployments(request).registry, principal, project)
        if can_submit
        else [],
        dataset_refs=dataset_refs(data, principal, project) if can_submit else [],
        role=role.label if role else None,
        batch_href=batch_href(project),
        deployments_href=deployments_href(project),
        job_href=lambda job_id: job_href(project, job_id),
        ref_href=lambda ref: ref_href(project, ref),
        dataset_href=lambda ref: dataset_href(project, ref),
        flash=pop_flash(request),
    )


@router.get(f"/projects/{{project}}/deployments/{BATCH_SEGMENT}", **auth_rule(Role.VIEWER))
def batch_page(
    request: Request,
    project: str,
    model: str = "",
    dataset: str = "",
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> Response:
    """The batch prediction form (``?model=&dataset=`` fill it in) and the recent jobs."""
    return _batch_page(request, principal, svc, project, BatchForm(model=model, dataset=dataset))


@router.post(f"/projects/{{project}}/deployments/{BATCH_SEGMENT}", **auth_rule(Role.EDITOR))
def submit_batch(
    request: Request,
    project: str,
    model: str = Form(""),
    dataset: str = Form(""),
    output: str = Form(""),
    keep_columns: str = Form(""),
    ignore_columns: str = Form(""),
    csrf_token: str = Form(""),
    svc: JobService = Depends(jobs),
) -> Response:
    back = batch_href(project)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    form = BatchForm(model, dataset, output, keep_columns, ignore_columns)
    try:
        spec = form.spec()
        job = svc.submit(
            principal, project, BATCH_KIND, spec,
            name=f"batch {spec['model']} on {spec['dataset']}",
        )  # fmt: skip
    except ModelworksError as exc:
        form.error = exc.detail
        status = form_error_status(exc)
        return _batch_page(request, principal, svc, project, form, status=status)
    flash(
        request,
        "success",
        f"Queued {job.name}: its predictions become the next version of {spec['output']}.",
        job=job.id,
    )
    return RedirectResponse(back, status_code=303)
