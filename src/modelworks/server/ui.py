"""The web UI shell: server-rendered pages over the same services as the REST API.

This module holds the shell: ``/static``, login and logout, the projects home, the project
switcher and the "coming in a later release" pages of areas that later releases fill
(features, labeling, ...). Each domain's pages live in its own ``ui.py``
(:mod:`modelworks.tracking.ui`, :mod:`modelworks.governance.ui`, :mod:`modelworks.data.ui`)
and are included in :data:`router` here; the layout, the nav, the page headers and the
error pages they all share are in :mod:`modelworks.server.pages`.

Pages authenticate like the API (the session cookie or a bearer token, see
:func:`modelworks.server.deps.current_principal`) and call the services on
``request.app.state``; no rule lives here. A service error becomes an HTML page with the
error's status code and message, and a visitor who is not logged in is sent to
``/login?next=...``. Every page carries a strict Content-Security-Policy: scripts and
styles come only from ``/static``, and data reaches scripts as JSON in
``<script type="application/json">`` elements, read with ``textContent``.

An area's own router replaces its placeholder by marking it ``live`` in
:data:`modelworks.server.pages.AREAS`.
"""

import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import Unauthenticated
from modelworks.data import ui as data_ui
from modelworks.governance import ui as governance_ui
from modelworks.governance.service import GovernanceService
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import (
    current_principal,
    ensure_csrf_token,
    governance,
    session_principal,
)
from modelworks.server.pages import AREA_SLUGS, AREAS, Area, page_router, render, segment
from modelworks.tracking import ui as tracking_ui

STATIC_DIR = Path(__file__).parent / "static"

router = page_router()


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
    return RedirectResponse(f"/projects/{segment(name)}/{slug}", status_code=303)


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


# ---- the domains' pages, after the shell's routes (the order they had before the split)
router.include_router(governance_ui.router)
router.include_router(tracking_ui.router)
router.include_router(data_ui.router)
