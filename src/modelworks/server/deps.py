"""FastAPI dependencies: the store, its services, and the calling Principal."""

from __future__ import annotations

import secrets

from fastapi import Request

from modelworks.core.auth import Principal
from modelworks.core.errors import PermissionDenied, Unauthenticated
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.tracking.service import TrackingService

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "x-csrf-token"


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def governance(request: Request) -> GovernanceService:
    svc: GovernanceService = request.app.state.governance
    return svc


def tracking(request: Request) -> TrackingService:
    svc: TrackingService = request.app.state.tracking
    return svc


def session_principal(request: Request) -> Principal | None:
    """The principal of the UI session cookie, if any (no CSRF check)."""
    user_id = request.session.get("user_id") if "session" in request.scope else None
    if not user_id:
        return None
    try:
        return governance(request).principal_for_user_id(user_id, via="session")
    except Unauthenticated:
        request.session.clear()
        return None


def ensure_csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def current_principal(request: Request) -> Principal:
    """Bearer token, or the UI session cookie (with a CSRF token on unsafe methods)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "Authorization header must be 'Bearer <token>'. Create a token with "
                "`modelworks tokens create NAME`."
            )
        principal = governance(request).authenticate_token(token.strip())
    else:
        found = session_principal(request)
        if found is None:
            raise Unauthenticated(
                "Authentication required: send 'Authorization: Bearer <token>' "
                "(create one with `modelworks tokens create NAME`) or log in to the web UI."
            )
        if request.method not in SAFE_METHODS:
            expected = request.session.get("csrf")
            given = request.headers.get(CSRF_HEADER)
            if (
                not expected
                or not given
                or not secrets.compare_digest(expected.encode(), given.encode())
            ):
                raise PermissionDenied(
                    "Missing or wrong CSRF token: send the X-CSRF-Token header the page gave you."
                )
        principal = found
    request.state.principal = principal
    return principal


def superuser(request: Request) -> Principal:
    principal = current_principal(request)
    if not principal.superuser:
        raise PermissionDenied(f"This needs a site administrator; {principal.username} is not one.")
    return principal
