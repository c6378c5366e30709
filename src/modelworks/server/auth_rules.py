"""Every route declares who may call it; the authorisation-matrix test reads these marks.

The mark is documentation and a test hook: the check itself happens in the services
(project roles) or in :mod:`modelworks.server.deps` (authentication, site admin).
"""

from __future__ import annotations

from typing import Any, Literal

from modelworks.core.auth import Role

AUTH_KEY = "x-modelworks-auth"
Level = Literal["public", "authenticated", "superuser", "viewer", "editor", "maintainer", "admin"]


def auth_rule(level: Level | Role) -> dict[str, Any]:
    """``@router.get(..., **auth_rule(Role.EDITOR))``: record the route's required level."""
    value = level.label if isinstance(level, Role) else level
    return {"openapi_extra": {AUTH_KEY: value}}
