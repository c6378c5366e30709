"""Pydantic shapes for governance: users, projects, members, tokens, audit records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    email: str | None = None
    is_admin: bool
    created_at: datetime
    disabled: bool = False


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str | None = Field(default=None, min_length=8, max_length=1000)
    email: str | None = None
    is_admin: bool = False


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    created_at: datetime
    role: str | None = None


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""


class MemberOut(BaseModel):
    username: str
    user_id: str
    role: str


class MemberSet(BaseModel):
    username: str
    role: str


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class TokenCreated(TokenOut):
    """Returned once, at creation: the only time the token's secret is shown."""

    token: str


class WhoAmI(BaseModel):
    username: str
    user_id: str | None
    superuser: bool
    via: str


class AuditRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    ts: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    project_id: str | None
    request_id: str
    changes: dict[str, Any]
    hash: str


class AuditVerifyOut(BaseModel):
    ok: bool
    checked: int
    problems: list[str]
