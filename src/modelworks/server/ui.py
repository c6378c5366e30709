"""The web UI: server-rendered pages over the same services as the REST API.

Pages authenticate like the API (the session cookie or a bearer token, see
:func:`modelworks.server.deps.current_principal`) and call the services on
``request.app.state``; no rule lives here. A service error becomes an HTML page with the
error's status code and message, and a visitor who is not logged in is sent to
``/login?next=...``. Every page carries a strict Content-Security-Policy: scripts and
styles come only from ``/static``, and data reaches scripts as JSON in
``<script type="application/json">`` elements, read with ``textContent``.

Areas that later releases fill (data, features, ...) answer with a "coming in a later
release" page; an area's own router replaces its placeholder by marking it ``live`` below.
"""

import json
import math
import secrets
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from modelworks import __version__
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import (
    InvalidInput,
    ModelworksError,
    PermissionDenied,
    Unauthenticated,
)
from modelworks.governance.schemas import ProjectOut
from modelworks.governance.service import GovernanceService
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import (
    current_principal,
    ensure_csrf_token,
    governance,
    session_principal,
    tracking,
)
from modelworks.tracking.schemas import MetricPoint, RunComparison, RunOut
from modelworks.tracking.service import TrackingService

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

RUNS_PAGE_SIZE = 100
MAX_COMPARE = 100  # the REST compare endpoint's limit too
MAX_CHART_POINTS = 2000  # per series; longer histories are thinned evenly for drawing

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold CSRF tokens and project data
}


@dataclass(frozen=True)
class Area:
    slug: str
    label: str
    about: str
    live: bool = False


# The lifecycle's areas, in the order of ARCHITECTURE.md; every one has a nav entry.
AREAS = (
    Area("data", "Data", "Sources, versioned datasets, schemas, profiles and validation checks."),
    Area("features", "Features", "Feature views, point-in-time joins and the online store."),
    Area("labeling", "Labeling", "Labeling projects, tasks, annotations and agreement."),
    Area("experiments", "Experiments", "Experiments and runs.", live=True),
    Area("training", "Training", "Training jobs, AutoML studies and compute backends."),
    Area("evaluation", "Evaluation", "Evaluation reports, plots, comparisons and explanations."),
    Area("models", "Models", "Registered models, versions, aliases and lineage."),
    Area("deployments", "Deployments", "Online and batch deployments, traffic splits."),
    Area("monitoring", "Monitoring", "Prediction logs, drift, performance and alerts."),
    Area("pipelines", "Pipelines", "Pipelines, schedules, triggers and promotion gates."),
    Area("governance", "Governance", "Members, roles and the project's audit trail.", live=True),
)
AREA_SLUGS = frozenset(a.slug for a in AREAS)


# ---- rendering -----------------------------------------------------------------------
def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    return f"{value:.6g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    whole = round(value)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{value:.1f}s" if value < 10 else f"{secs}s"


def _size(value: int) -> str:
    size, unit = float(value), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            break
        size /= 1024
    return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"


def _plain(value: Any) -> str:
    """A value of a free-form dict (system info, audit changes) as one line of text."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _segment(value: str) -> str:
    """Quote one path segment (a name may hold '/', '?' or '#')."""
    return quote(value, safe="")


def _path(value: str) -> str:
    """Quote a relative path, keeping its '/' separators."""
    return quote(value, safe="/")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # |tojson must never emit NaN or Infinity: JSON.parse in the browser rejects them.
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "allow_nan": False}
    env.filters.update(
        when=_when, number=_number, seconds=_seconds, size=_size, plain=_plain, seg=_segment
    )
    env.filters["path"] = _path
    return env


templates = Jinja2Templates(env=_environment())


@dataclass(frozen=True)
class NavLink:
    label: str
    href: str | None
    active: bool = False
    live: bool = True


@dataclass
class Nav:
    projects: list[ProjectOut]
    current: ProjectOut | None
    area: str
    links: list[NavLink] = field(default_factory=list)
    site_links: list[NavLink] = field(default_factory=list)

    @property
    def can_edit(self) -> bool:
        """Show editing controls; the services still decide what is allowed."""
        role = self.current.role if self.current else None
        return role is not None and Role.parse(role) >= Role.EDITOR

    def project_name(self, project_id: str | None) -> str | None:
        return next((p.name for p in self.projects if p.id == project_id), None)


def _build_nav(request: Request, principal: Principal, wanted: str | None, area: str) -> Nav:
    gov: GovernanceService = request.app.state.governance
    projects = gov.list_projects(principal)
    remembered = request.session.get("project") if "session" in request.scope else None
    current = None
    for name in (wanted, remembered, "default"):
        current = next((p for p in projects if name in (p.name, p.id)), None)
        if current is not None:
            break
    if current is None and projects:
        current = projects[0]
    if wanted and current is not None and principal.via == "session":
        request.session["project"] = current.name
    nav = Nav(projects=projects, current=current, area=area)
    nav.links.append(NavLink("Projects", "/", active=area == "home"))
    for a in AREAS:
        href = f"/projects/{_segment(current.name)}/{a.slug}" if current else None
        nav.links.append(NavLink(a.label, href, active=a.slug == area, live=a.live))
    if principal.superuser:
        nav.site_links.append(NavLink("Audit log", "/audit", active=area == "audit"))
    return nav


def render(
    request: Request,
    principal: Principal | None,
    template: str,
    *,
    project: str | None = None,
    area: str = "",
    status: int = 200,
    **context: Any,
) -> Response:
    """Render ``template`` in the layout; ``project`` (a name or id) selects the nav's project."""
    uses_session = principal is None or principal.via == "session"
    values: dict[str, Any] = {
        "principal": principal,
        "nav": _build_nav(request, principal, project, area) if principal else None,
        "csrf_token": ensure_csrf_token(request) if uses_session else "",
        "version": __version__,
        "title": "",
        **context,
    }
    return templates.TemplateResponse(request, template, values, status_code=status)


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    principal: Principal | None = getattr(request.state, "principal", None)
    return render(request, principal, "error.html", status=status, title=title, detail=detail)


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this server, else ``/``: the login is no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    # Browsers read '\' as '/' and drop tabs and newlines: '/\evil' and '/\t/evil' are hosts.
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path in ("/login", "/logout"):
        return "/"
    return target


def _same_token(expected: object, given: str) -> bool:
    if not isinstance(expected, str) or not expected or not given:
        return False
    return secrets.compare_digest(expected.encode(), given.encode())


def _validation_detail(exc: RequestValidationError) -> str:
    parts = [
        f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg', '')}"
        for e in exc.errors()[:5]
    ]
    return "The address has invalid parameters (" + "; ".join(parts) + ")."


class UIRoute(APIRoute):
    """A page route: service errors become HTML pages, and every answer gets the page headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except Unauthenticated:
                response = login_redirect(request)
            except ModelworksError as exc:
                response = await run_in_threadpool(
                    error_page, request, exc.status_code, exc.title, exc.detail
                )
            except RequestValidationError as exc:
                response = await run_in_threadpool(
                    error_page, request, 422, "Invalid address", _validation_detail(exc)
                )
            response.headers.update(PAGE_HEADERS)
            return response

        return handle


router = APIRouter(
    route_class=UIRoute, include_in_schema=False, default_response_class=HTMLResponse
)


class _StaticFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def mount_static(app: FastAPI) -> None:
    """Serve ``/static`` (CSS, JS, the vendored chart library): public, like the login page.

    A mount is not an API route, so it carries no ``auth_rule`` mark; everything under it
    is public by design and holds no data.
    """
    app.mount("/static", _StaticFiles(directory=STATIC_DIR), name="static")


# ---- login and logout ----------------------------------------------------------------
@router.get("/login", **auth_rule("public"))
def login_page(request: Request, next_url: str = Query("/", alias="next")) -> Response:
    if session_principal(request) is not None:
        return RedirectResponse(safe_next(next_url), status_code=303)
    return render(
        request, None, "login.html", title="Log in", next=safe_next(next_url), username=""
    )


@router.post("/login", **auth_rule("public"))
def login_submit(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next_url: str = Form("/", alias="next"),
    svc: GovernanceService = Depends(governance),
) -> Response:
    target = safe_next(next_url)
    form = {"title": "Log in", "next": target, "username": username}
    if not _same_token(request.session.get("csrf"), csrf_token):
        request.session.pop("user_id", None)
        error = "The login form had expired; please log in again."
        return render(request, None, "login.html", status=400, error=error, **form)
    try:
        principal = svc.authenticate_password(username, password)
    except Unauthenticated as exc:
        request.session.pop("user_id", None)
        return render(request, None, "login.html", status=401, error=exc.detail, **form)
    request.session.clear()  # a fresh session (and CSRF token) for the new login
    request.session["user_id"] = principal.user_id
    ensure_csrf_token(request)
    return RedirectResponse(target, status_code=303)


@router.get("/logout", **auth_rule("public"))
def logout_page(request: Request) -> Response:
    principal = session_principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    return render(request, principal, "logout.html", title="Log out")


@router.post("/logout", **auth_rule("public"))
def logout_submit(request: Request, csrf_token: str = Form("")) -> Response:
    principal = session_principal(request)
    if principal is not None and not _same_token(request.session.get("csrf"), csrf_token):
        return render(request, principal, "logout.html", status=400, title="Log out", stale=True)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# ---- projects and areas --------------------------------------------------------------
@router.get("/", **auth_rule("authenticated"))
def home_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    return render(request, principal, "home.html", area="home", title="Projects")


@router.get("/project", **auth_rule("authenticated"))
def switch_project(
    name: str = "",
    area: str = "experiments",
    principal: Principal = Depends(current_principal),
) -> Response:
    """The project switcher's target: the same area in another project."""
    if not name:
        return RedirectResponse("/", status_code=303)
    slug = area if area in AREA_SLUGS else "experiments"
    return RedirectResponse(f"/projects/{_segment(name)}/{slug}", status_code=303)


def _coming_soon(area: Area) -> Callable[..., Response]:
    def page(
        request: Request,
        project: str,
        principal: Principal = Depends(current_principal),
        gov: GovernanceService = Depends(governance),
    ) -> Response:
        gov.get_project(principal, project)  # a missing or hidden project is a 404
        return render(
            request,
            principal,
            "coming_soon.html",
            project=project,
            area=area.slug,
            title=area.label,
            about=area,
        )

    page.__name__ = f"{area.slug}_page"
    return page


for _area in AREAS:
    if not _area.live:
        router.add_api_route(
            f"/projects/{{project}}/{_area.slug}",
            _coming_soon(_area),
            methods=["GET"],
            **auth_rule(Role.VIEWER),
        )


@router.get("/projects/{project}/governance", **auth_rule(Role.VIEWER))
def governance_page(
    request: Request,
    project: str,
    principal: Principal = Depends(current_principal),
    gov: GovernanceService = Depends(governance),
) -> Response:
    info = gov.get_project(principal, project)
    members = gov.list_members(principal, project)
    try:
        records = gov.list_audit(principal, project=project, max_results=50).items
    except PermissionDenied:
        records = None  # only project admins read the project's audit trail
    return render(
        request,
        principal,
        "governance.html",
        project=project,
        area="governance",
        title=f"Governance · {info.name}",
        info=info,
        members=members,
        records=records,
    )


@router.get("/audit", **auth_rule("superuser"))
def audit_page(
    request: Request,
    actor: str = "",
    action: str = "",
    object_id: str = "",
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    gov: GovernanceService = Depends(governance),
) -> Response:
    page = gov.list_audit(
        principal,
        actor=actor or None,
        action=action or None,
        object_id=object_id or None,
        max_results=100,
        page_token=page_token,
    )
    filters = {"actor": actor, "action": action, "object_id": object_id}
    next_link = (
        "?" + urlencode({**filters, "page_token": page.next_page_token})
        if page.next_page_token
        else None
    )
    return render(
        request,
        principal,
        "audit.html",
        area="audit",
        title="Audit log",
        records=page.items,
        filters=filters,
        next_link=next_link,
    )


# ---- tracking ------------------------------------------------------------------------
@router.get("/projects/{project}/experiments", **auth_rule(Role.VIEWER))
def experiments_page(
    request: Request,
    project: str,
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    page = svc.list_experiments(principal, project, max_results=500, page_token=page_token)
    next_link = (
        "?" + urlencode({"page_token": page.next_page_token}) if page.next_page_token else None
    )
    return render(
        request,
        principal,
        "experiments.html",
        project=project,
        area="experiments",
        title="Experiments",
        experiments=page.items,
        next_link=next_link,
    )


@dataclass(frozen=True)
class Column:
    """A sortable column of the runs table; ``order`` is its order-by item for the service."""

    label: str
    entity: Literal["attributes", "params", "metrics"]
    key: str

    @property
    def order(self) -> str:
        if self.entity == "attributes":
            return f"attributes.{self.key}"
        return f"{self.entity}.`{self.key.replace('`', '``')}`"

    @property
    def first_direction(self) -> str:
        """Newest and largest first for times and metrics; A to Z for text."""
        return "desc" if self.entity == "metrics" or self.key == "start_time" else "asc"


def _run_columns(runs: Sequence[RunOut]) -> tuple[list[Column], list[Column], list[Column]]:
    attributes = [
        Column("Name", "attributes", "name"),
        Column("Status", "attributes", "status"),
        Column("Started", "attributes", "start_time"),
    ]
    params = [Column(k, "params", k) for k in sorted({k for r in runs for k in r.params})]
    metrics = [Column(k, "metrics", k) for k in sorted({k for r in runs for k in r.metrics})]
    return attributes, params, metrics


@router.get("/projects/{project}/experiments/{exp:path}", **auth_rule(Role.VIEWER))
def runs_page(
    request: Request,
    project: str,
    exp: str,
    filter_text: str = Query("", alias="filter", max_length=10_000),
    sort: str = Query("attributes.start_time", max_length=1000),
    direction: Literal["asc", "desc"] = Query("desc", alias="dir"),
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    experiment = svc.get_experiment(principal, project, exp)
    runs: list[RunOut] = []
    next_token = error = None
    try:
        page = svc.search_runs(
            principal,
            project,
            experiments=[experiment.id],
            filter=filter_text or None,
            order_by=[f"{sort} {direction.upper()}"],
            max_results=RUNS_PAGE_SIZE,
            page_token=page_token,
        )
        runs, next_token = page.items, page.next_page_token
    except InvalidInput as exc:  # a mistake in the filter box: show it, keep the page
        error = exc.detail
    state = {"filter": filter_text, "sort": sort, "dir": direction}

    def link(**changes: str) -> str:
        values = {**state, **changes}
        return "?" + urlencode({k: v for k, v in values.items() if v})

    attributes, params, metrics = _run_columns(runs)
    return render(
        request,
        principal,
        "runs.html",
        status=422 if error else 200,
        project=project,
        area="experiments",
        title=experiment.name,
        experiment=experiment,
        runs=runs,
        error=error,
        state=state,
        link=link,
        attribute_columns=attributes,
        param_columns=params,
        metric_columns=metrics,
        next_link=link(page_token=next_token) if next_token else None,
        first_link=link() if page_token else None,
    )


def _thin(points: Sequence[MetricPoint]) -> list[list[float | None]]:
    """[[step, value], ...] with at most about MAX_CHART_POINTS points; the last is kept."""
    stride = max(1, math.ceil(len(points) / MAX_CHART_POINTS))
    kept = list(points[::stride])
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    return [[p.step, finite(p.value)] for p in kept]


def _run_labels(runs: Sequence[RunOut]) -> dict[str, str]:
    """Run names for legends; a name shared by several runs gets the end of the id."""
    names = [r.name for r in runs]
    return {r.id: r.name if names.count(r.name) == 1 else f"{r.name} ({r.id[-6:]})" for r in runs}


def chart_data(comparison: RunComparison) -> list[dict[str, Any]]:
    """One chart per metric key, one series per run; ``color`` is the run's place."""
    labels = _run_labels(comparison.runs)
    charts = []
    for key in comparison.metric_keys:
        by_run: Mapping[str, Sequence[MetricPoint]] = comparison.histories.get(key, {})
        series = [
            {"label": labels[run.id], "color": i, "points": _thin(by_run[run.id])}
            for i, run in enumerate(comparison.runs)
            if by_run.get(run.id)
        ]
        charts.append({"key": key, "series": series})
    return charts


@router.get("/runs/{run_id}", **auth_rule(Role.VIEWER))
def run_page(
    request: Request,
    run_id: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    comparison = svc.compare_runs(principal, [run_id])
    run = comparison.runs[0]
    artifacts = svc.list_artifacts(principal, run_id)
    return render(
        request,
        principal,
        "run.html",
        project=run.project_id,
        area="experiments",
        title=run.name,
        run=run,
        artifacts=artifacts,
        charts=chart_data(comparison),
    )


@router.get("/compare", **auth_rule("authenticated"))
def compare_page(
    request: Request,
    runs: list[str] = Query(default=[]),
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    """``/compare?runs=ID1,ID2`` (or ``runs=ID1&runs=ID2``, as a plain form sends them)."""
    ids = list(dict.fromkeys(p.strip() for value in runs for p in value.split(",") if p.strip()))
    if not ids:
        return render(request, principal, "compare.html", area="experiments", title="Compare")
    if len(ids) > MAX_COMPARE:
        raise InvalidInput(
            f"{len(ids)} runs were selected; compare at most {MAX_COMPARE} at a time."
        )
    comparison = svc.compare_runs(principal, ids)
    differing = set(comparison.differing_params)
    return render(
        request,
        principal,
        "compare.html",
        project=comparison.runs[0].project_id,
        area="experiments",
        title="Compare runs",
        comparison=comparison,
        differing=differing,
        labels=_run_labels(comparison.runs),
        charts=chart_data(comparison),
    )
