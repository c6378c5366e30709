"""Who is calling: the Principal every service call runs with, and project roles."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from enum import IntEnum

from modelworks.core.errors import InvalidInput


class Role(IntEnum):
    """Project roles; each includes the rights of those below it."""

    VIEWER = 10
    EDITOR = 20
    MAINTAINER = 30
    ADMIN = 40

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        if isinstance(value, Role):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise InvalidInput(f"Unknown role {value!r}; use one of: {names}.") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``superuser`` principals (site admins and the local OS user in embedded mode) hold the
    admin role in every project.
    """

    username: str
    user_id: str | None = None
    superuser: bool = False
    via: str = "local"  # local | token | session

    @property
    def actor(self) -> str:
        return self.username if self.via != "local" else f"local:{self.username}"


def local_principal() -> Principal:
    """Embedded mode: the OS user, admin on the local store."""
    try:
        name = getpass.getuser()
    except Exception:
        name = "local"
    return Principal(username=name, superuser=True, via="local")
