"""Who posted a UI form, and where to send someone who is not logged in.

Shared by the pages that take form posts (models, deployments): a post is made with the
session cookie plus the page's CSRF token, or with a bearer token like the REST API.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from modelworks.core.auth import Principal
from modelworks.core.errors import ModelworksError, PermissionDenied
from modelworks.server.deps import current_principal, session_principal

__all__ = ["form_caller", "form_principal", "pop_flash", "set_flash", "to_login"]


def form_principal(request: Request, csrf_token: str) -> Principal | None:
    """The caller of a form post: a bearer token, or the session with its CSRF token.

    None when nobody is logged in (the caller goes to the login page). A wrong or missing
    token is a :class:`~modelworks.core.errors.PermissionDenied`, as for the REST API.
    """
    if request.headers.get("authorization"):
        return current_principal(request)
    principal = session_principal(request)
    if principal is None:
        return None
    expected = request.session.get("csrf")
    if (
        not isinstance(expected, str)
        or not expected
        or not csrf_token
        or not secrets.compare_digest(expected.encode(), csrf_token.encode())
    ):
        raise PermissionDenied(
            "The form had expired (its security token did not match); reload the page and "
            "try again."
        )
    request.state.principal = principal
    return principal


def to_login(request: Request, back: str) -> Response:
    """The login page, returning to ``back`` (a page; the post's own URL has no GET)."""
    return RedirectResponse("/login?" + urlencode({"next": back}), status_code=303)


def set_flash(request: Request, key: str, kind: str, text: str, **links: str) -> None:
    """A message for the next page this session renders (``kind``: success, info, error),
    kept under ``key`` (one per page set); ``links`` are ids the page turns into links."""
    request.session[key] = {"kind": kind, "text": text, **links}


def pop_flash(request: Request, key: str) -> dict[str, str] | None:
    """The message :func:`set_flash` left under ``key``, once."""
    if "session" not in request.scope:
        return None
    value = request.session.pop(key, None)
    return value if isinstance(value, dict) else None


def form_caller(
    request: Request, csrf_token: str, back: str, flash_key: str
) -> Principal | Response:
    """The caller of a form post, or the response to send instead: back to ``back`` with
    the reason flashed (an expired form), or the login page (nobody logged in)."""
    try:
        principal = form_principal(request, csrf_token)
    except ModelworksError as exc:
        set_flash(request, flash_key, "error", exc.detail)
        return RedirectResponse(back, status_code=303)
    if principal is None:
        return to_login(request, back)
    return principal


def form_error_status(exc: ModelworksError) -> int:
    """The status of a form page shown again with ``exc`` as its error: the error's own
    (400, 403, 404, 409...), but 400 for a server-side one, since the page itself renders."""
    return exc.status_code if exc.status_code < 500 else 400
