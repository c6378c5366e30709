"""What a caller may make the server read.

Embedded use reads whatever the local user can read: the process *is* the user. On a
server, a source runs with the server's file system, network and secrets, so a remote
caller (token or browser session) is held to this policy unless they are a site admin:

- file sources (csv, tsv, parquet, json, excel) read only under the folders and
  ``s3://`` prefixes listed in ``MODELWORKS_INGEST_ROOTS`` (separated by commas), plus the
  server's own upload folder — everything else is uploaded through the upload endpoint;
- sources that connect out (sql, http, redis_stream, nats_jetstream) can reach any host
  and use the server's secrets, so they need the project's maintainer role.
"""

from __future__ import annotations

import os
import re

from sqlalchemy.orm import Session

from modelworks.core.auth import Principal, Role
from modelworks.core.config import Settings
from modelworks.core.errors import PermissionDenied
from modelworks.data.sources.base import Source
from modelworks.governance.access import role_in
from modelworks.governance.models import Project

FILE_KINDS = frozenset({"csv", "tsv", "parquet", "json", "excel"})
CONNECTING_KINDS = frozenset({"sql", "http", "redis_stream", "nats_jetstream"})
_GLOB = re.compile(r"[*?\[{]")


def upload_root(settings: Settings) -> str:
    """Where the server keeps uploaded files while it ingests them."""
    return str(settings.home_path / "tmp" / "uploads")


def allowed_roots(settings: Settings) -> list[str]:
    roots = [r.strip() for r in settings.ingest_roots.split(",") if r.strip()]
    return [*roots, upload_root(settings)]


def _fixed_prefix(path: str) -> str:
    """The part of a path before its first wildcard: what a glob can never escape."""
    match = _GLOB.search(path)
    head = path[: match.start()] if match else path
    return head if match is None else head.rsplit("/", 1)[0] + "/"


def _under(path: str, root: str) -> bool:
    if "://" in root or "://" in path:
        if "/../" in path or path.endswith("/.."):
            return False
        return path.rstrip("/") == root.rstrip("/") or path.startswith(root.rstrip("/") + "/")
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def check_source_allowed(
    session: Session, principal: Principal, project: Project, source: Source, settings: Settings
) -> None:
    """Raise PermissionDenied when a remote caller may not have the server read ``source``."""
    if principal.via == "local" or principal.superuser:
        return
    if source.kind in FILE_KINDS:
        path = str(getattr(source, "path", ""))
        prefix = _fixed_prefix(path)
        roots = allowed_roots(settings)
        if not any(_under(prefix, root) for root in roots):
            raise PermissionDenied(
                f"The server reads files only under MODELWORKS_INGEST_ROOTS; {path!r} is not "
                "under one. Upload the file instead (SDK: ws.datasets.ingest('local/path.csv', "
                "...); REST: POST .../datasets/{name}/upload), or ask the server's admin to "
                "add its folder to MODELWORKS_INGEST_ROOTS."
            )
    elif source.kind in CONNECTING_KINDS:
        role = role_in(session, principal, project.id)
        if role is None or role < Role.MAINTAINER:
            raise PermissionDenied(
                f"A {source.kind} source makes the server connect to another host with its "
                f"secrets, so it needs the maintainer role in project {project.name!r}; "
                f"{principal.username} has {role.label if role else 'no role'}. Ask a project "
                "admin, or export the data and upload it."
            )
