"""What every web UI page shares: the layout, the nav, the page headers and error pages.

The shell (:mod:`modelworks.server.ui`) and each domain's pages (``tracking/ui.py``,
``governance/ui.py``) build on this module; it imports none of them, so the shell can
include the domain routers without an import cycle. A page router made by
:func:`page_router` turns service errors into HTML pages, sends a visitor who is not
logged in to ``/login?next=...`` and puts the strict Content-Security-Policy on every
answer.
"""

import json
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool

from modelworks import __version__
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import ModelworksError, Unauthenticated
from modelworks.governance.schemas import ProjectOut
from modelworks.governance.service import GovernanceService
from modelworks.server.deps import ensure_csrf_token

TEMPLATES_DIR = Path(__file__).parent / "templates"

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


# The lifecycle's areas, in the order of ARCHITECTURE.md; every one has a nav entry. An area
# that is not ``live`` gets a "coming in a later release" page from the shell.
AREAS = (
    Area(
        "data",
        "Data",
        "Sources, versioned datasets, schemas, profiles and validation checks.",
        live=True,
    ),
    Area("features", "Features", "Feature views, point-in-time joins and the online store."),
    Area("labeling", "Labeling", "Labeling projects, tasks, annotations and agreement."),
    Area("experiments", "Experiments", "Experiments and runs.", live=True),
    Area("training", "Training", "AutoML studies, experiment sweeps and compute backends."),
    Area("jobs", "Jobs", "Training, AutoML and other queued jobs, with their logs.", live=True),
    Area("evaluation", "Evaluation", "Evaluation reports, plots, comparisons and explanations."),
    Area("models", "Models", "Registered models, versions, aliases and lineage.", live=True),
    Area("deployments", "Deployments", "Online and batch deployments, traffic splits.", live=True),
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


def segment(value: str) -> str:
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
        when=_when, number=_number, seconds=_seconds, size=_size, plain=_plain, seg=segment
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


def visible_projects(request: Request, principal: Principal) -> list[ProjectOut]:
    """The projects ``principal`` sees, with its role in each: listed once a request, since
    the nav and a page's own choice of forms both need them."""
    listed: list[ProjectOut] | None = getattr(request.state, "visible_projects", None)
    if listed is None:
        gov: GovernanceService = request.app.state.governance
        listed = gov.list_projects(principal)
        request.state.visible_projects = listed
    return listed


def project_role(request: Request, principal: Principal, project: str) -> Role | None:
    """The caller's role in ``project`` (a name or id), to show or hide forms; the services
    still decide what is allowed."""
    found = next(
        (p for p in visible_projects(request, principal) if project in (p.name, p.id)), None
    )
    return Role.parse(found.role) if found is not None and found.role else None


def _build_nav(request: Request, principal: Principal, wanted: str | None, area: str) -> Nav:
    projects = visible_projects(request, principal)
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
        href = f"/projects/{segment(current.name)}/{a.slug}" if current else None
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


def page_router() -> APIRouter:
    """A router for pages: :class:`UIRoute` routes, HTML answers, left out of the OpenAPI."""
    return APIRouter(
        route_class=UIRoute, include_in_schema=False, default_response_class=HTMLResponse
    )
