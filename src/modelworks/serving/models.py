"""Tables of deployments: a named endpoint serving a model alias or version, and the
bearer tokens scoped to one deployment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from modelworks.core.database import Base, JSONType, UTCDateTime
from modelworks.core.ids import new_id, utcnow


class Deployment(Base):
    """Names are unique across the site: the Open Inference Protocol's paths
    (``/v2/models/{name}/infer``) carry no project."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    model: Mapped[str] = mapped_column(String(200), nullable=False)  # registered model name
    selector: Mapped[str] = mapped_column(String(64), nullable=False)  # alias or version
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    # What the serving side last loaded (number and id), and its last load error.
    served_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    served_version_id: Mapped[str | None] = mapped_column(String(26), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeploymentToken(Base):
    """A bearer token that may call one deployment's inference routes and nothing else.

    Only a SHA-256 of the token is kept: tokens are 32 random bytes, so a fast hash is
    enough (no password-style stretching needed) and checks stay cheap on the hot path.
    """

    __tablename__ = "deployment_tokens"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
