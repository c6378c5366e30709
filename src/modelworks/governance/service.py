"""Governance service: users, projects, memberships, API tokens, logins and the audit trail."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelworks.core import audit
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from modelworks.core.ids import utcnow
from modelworks.core.schemas import Page, check_page_size, decode_page_token, encode_page_token
from modelworks.core.store import Store
from modelworks.governance.access import (
    find_project,
    require_project,
    require_superuser,
    role_in,
)
from modelworks.governance.models import ApiToken, Membership, Project, User
from modelworks.governance.schemas import (
    AuditRecordOut,
    AuditVerifyOut,
    MemberOut,
    ProjectOut,
    TokenCreated,
    TokenOut,
    UserOut,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TOKEN_PREFIX = "mw_"  # noqa: S105 (a prefix, not a secret)
# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_hasher = PasswordHasher()


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidInput(
            f"{kind} name {name!r} is not valid: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is safe here (unlike passwords).
    return hashlib.sha256(token.encode()).hexdigest()


def _user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        email=user.email,
        is_admin=user.is_admin,
        created_at=user.created_at,
        disabled=user.disabled_at is not None,
    )


def _principal_for(user: User, via: str) -> Principal:
    return Principal(username=user.username, user_id=user.id, superuser=user.is_admin, via=via)


class GovernanceService:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- users -------------------------------------------------------------------------
    def create_user(
        self,
        principal: Principal,
        username: str,
        password: str | None = None,
        *,
        email: str | None = None,
        is_admin: bool = False,
    ) -> UserOut:
        require_superuser(principal, "Creating users")
        check_name("User", username)
        if password is not None and len(password) < 8:
            raise InvalidInput("Password must have at least 8 characters.")
        with self.store.transaction() as s:
            if s.scalar(select(User.id).where(User.username == username)):
                raise AlreadyExists(f"User {username!r} already exists.")
            user = User(
                username=username,
                email=email,
                is_admin=is_admin,
                password_hash=_hasher.hash(password) if password else None,
            )
            s.add(user)
            s.flush()
            audit.record(
                s,
                principal,
                "user.create",
                "user",
                user.id,
                changes={"username": username, "is_admin": is_admin},
            )
            return _user_out(user)

    def bootstrap_admin(self, username: str, password: str) -> UserOut | None:
        """Create the first site admin when the store has no users; otherwise do nothing."""
        with self.store.transaction() as s:
            if s.scalar(select(func.count()).select_from(User)):
                return None
        from modelworks.core.auth import local_principal

        return self.create_user(local_principal(), username, password, is_admin=True)

    def list_users(self, principal: Principal) -> list[UserOut]:
        require_superuser(principal, "Listing users")
        with self.store.transaction() as s:
            return [_user_out(u) for u in s.scalars(select(User).order_by(User.username))]

    def get_user(self, session: Session, username: str) -> User:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"User {username!r} does not exist; see `modelworks users list`.")
        return user

    def set_password(self, principal: Principal, username: str, password: str) -> None:
        if principal.username != username or principal.via == "local":
            require_superuser(principal, "Changing another user's password")
        if len(password) < 8:
            raise InvalidInput("Password must have at least 8 characters.")
        with self.store.transaction() as s:
            user = self.get_user(s, username)
            user.password_hash = _hasher.hash(password)
            audit.record(s, principal, "user.set_password", "user", user.id)

    def disable_user(self, principal: Principal, username: str) -> UserOut:
        require_superuser(principal, "Disabling users")
        with self.store.transaction() as s:
            user = self.get_user(s, username)
            user.disabled_at = utcnow()
            s.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            audit.record(s, principal, "user.disable", "user", user.id)
            return _user_out(user)

    # ---- authentication ----------------------------------------------------------------
    def authenticate_password(self, username: str, password: str) -> Principal:
        failure = Unauthenticated("Wrong username or password.")
        with self.store.transaction() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None or user.password_hash is None or user.disabled_at is not None:
                # Spend the same time as a real check so usernames cannot be probed by timing.
                _hasher.hash(password or "x")
                raise failure
            try:
                _hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                raise failure from None
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            return _principal_for(user, "session")

    def principal_for_user_id(self, user_id: str, via: str = "session") -> Principal:
        with self.store.transaction() as s:
            user = s.get(User, user_id)
            if user is None or user.disabled_at is not None:
                raise Unauthenticated("Your session has ended; log in again.")
            return _principal_for(user, via)

    def authenticate_token(self, token: str) -> Principal:
        if not token.startswith(TOKEN_PREFIX):
            raise Unauthenticated(
                "The bearer token is not a Modelworks API token; create one with "
                "`modelworks tokens create NAME`."
            )
        now = utcnow()
        # Every API request comes through here: read without the write lock, and write
        # only in the rare request that has to move last_used_at.
        with self.store.read() as s:
            row = s.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == hash_token(token))
            ).one_or_none()
            if row is None:
                raise Unauthenticated("The API token is not valid.")
            tok, user = row
            if tok.revoked_at is not None:
                raise Unauthenticated(f"The API token {tok.name!r} was revoked.")
            if tok.expires_at is not None and tok.expires_at <= now:
                raise Unauthenticated(
                    f"The API token {tok.name!r} expired at {tok.expires_at.isoformat()}; "
                    "create a new one."
                )
            if user.disabled_at is not None:
                raise Unauthenticated(f"User {user.username!r} is disabled.")
            principal = _principal_for(user, "token")
            stale = tok.last_used_at is None or now - tok.last_used_at > LAST_USED_RESOLUTION
        if stale:
            with self.store.transaction() as s:
                s.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=now))
        return principal

    # ---- tokens ------------------------------------------------------------------------
    def create_token(
        self,
        principal: Principal,
        name: str,
        *,
        expires_in_days: int | None = 90,
        username: str | None = None,
    ) -> TokenCreated:
        """Create an API token for yourself (or, as a site admin, for ``username``).

        ``expires_in_days=None`` makes a token that never expires.
        """
        if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
            raise InvalidInput(
                f"expires_in_days must be between 1 and 3650 (or None for no expiry); "
                f"got {expires_in_days}."
            )
        with self.store.transaction() as s:
            user = self._token_owner(s, principal, username)
            secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
            tok = ApiToken(
                user_id=user.id,
                name=name,
                prefix=secret[:10],
                token_hash=hash_token(secret),
                expires_at=(utcnow() + timedelta(days=expires_in_days))
                if expires_in_days
                else None,
            )
            s.add(tok)
            s.flush()
            audit.record(
                s,
                principal,
                "token.create",
                "token",
                tok.id,
                changes={"user": user.username, "name": name, "expires_at": tok.expires_at},
            )
            return TokenCreated(**TokenOut.model_validate(tok).model_dump(), token=secret)

    def _token_owner(self, s: Session, principal: Principal, username: str | None) -> User:
        if username and username != principal.username:
            require_superuser(principal, "Managing another user's tokens")
            return self.get_user(s, username)
        if principal.user_id:
            user = s.get(User, principal.user_id)
            if user:
                return user
        if principal.via == "local" and username:
            return self.get_user(s, username)
        raise InvalidInput(
            "The local OS user has no account; pass the username (`--user NAME`) of an "
            "existing user whose tokens to manage."
        )

    def list_tokens(self, principal: Principal, username: str | None = None) -> list[TokenOut]:
        with self.store.transaction() as s:
            user = self._token_owner(s, principal, username)
            rows = s.scalars(
                select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
            )
            return [TokenOut.model_validate(t) for t in rows]

    def revoke_token(self, principal: Principal, token_id: str) -> TokenOut:
        with self.store.transaction() as s:
            tok = s.get(ApiToken, token_id)
            if tok is None or (tok.user_id != principal.user_id and not principal.superuser):
                raise NotFound(f"Token {token_id!r} does not exist; see `modelworks tokens list`.")
            if tok.revoked_at is None:
                tok.revoked_at = utcnow()
                audit.record(s, principal, "token.revoke", "token", tok.id)
            return TokenOut.model_validate(tok)

    # ---- projects ----------------------------------------------------------------------
    def create_project(self, principal: Principal, name: str, description: str = "") -> ProjectOut:
        check_name("Project", name)
        with self.store.transaction() as s:
            if s.scalar(select(Project.id).where(Project.name == name)):
                raise AlreadyExists(f"Project {name!r} already exists.")
            project = Project(name=name, description=description)
            s.add(project)
            s.flush()
            if principal.user_id:
                s.add(Membership(project_id=project.id, user_id=principal.user_id, role=Role.ADMIN))
            audit.record(
                s,
                principal,
                "project.create",
                "project",
                project.id,
                project_id=project.id,
                changes={"name": name},
            )
            return ProjectOut(
                id=project.id,
                name=name,
                description=description,
                created_at=project.created_at,
                role=Role.ADMIN.label,
            )

    def list_projects(self, principal: Principal) -> list[ProjectOut]:
        with self.store.transaction() as s:
            projects = s.scalars(
                select(Project).where(Project.deleted_at.is_(None)).order_by(Project.name)
            ).all()
            out = []
            for p in projects:
                role = role_in(s, principal, p.id)
                if role is not None:
                    out.append(
                        ProjectOut(
                            id=p.id,
                            name=p.name,
                            description=p.description,
                            created_at=p.created_at,
                            role=role.label,
                        )
                    )
            return out

    def get_project(self, principal: Principal, project: str) -> ProjectOut:
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.VIEWER, "Reading the project")
            role = role_in(s, principal, p.id)
            return ProjectOut(
                id=p.id,
                name=p.name,
                description=p.description,
                created_at=p.created_at,
                role=role.label if role else None,
            )

    def delete_project(self, principal: Principal, project: str) -> None:
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.ADMIN, "Deleting the project")
            if p.name == "default":
                raise InvalidInput("The default project cannot be deleted.")
            p.deleted_at = utcnow()
            audit.record(s, principal, "project.delete", "project", p.id, project_id=p.id)

    # ---- memberships -------------------------------------------------------------------
    def list_members(self, principal: Principal, project: str) -> list[MemberOut]:
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.VIEWER, "Listing members")
            rows = s.execute(
                select(User.username, User.id, Membership.role)
                .join(Membership, Membership.user_id == User.id)
                .where(Membership.project_id == p.id)
                .order_by(User.username)
            )
            return [MemberOut(username=u, user_id=i, role=Role(r).label) for u, i, r in rows]

    def set_member(self, principal: Principal, project: str, username: str, role: str) -> MemberOut:
        parsed = Role.parse(role)
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.ADMIN, "Managing members")
            user = self.get_user(s, username)
            m = s.scalar(
                select(Membership).where(
                    Membership.project_id == p.id, Membership.user_id == user.id
                )
            )
            before = Role(m.role).label if m else None
            if m is None:
                m = Membership(project_id=p.id, user_id=user.id, role=int(parsed))
                s.add(m)
            else:
                m.role = int(parsed)
            try:
                s.flush()
            except IntegrityError:
                raise AlreadyExists(f"{username} was added to {project} concurrently; retry.")
            audit.record(
                s,
                principal,
                "member.set",
                "membership",
                f"{p.id}:{user.id}",
                project_id=p.id,
                changes={"username": username, "role": [before, parsed.label]},
            )
            return MemberOut(username=username, user_id=user.id, role=parsed.label)

    def remove_member(self, principal: Principal, project: str, username: str) -> None:
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.ADMIN, "Managing members")
            user = self.get_user(s, username)
            m = s.scalar(
                select(Membership).where(
                    Membership.project_id == p.id, Membership.user_id == user.id
                )
            )
            if m is None:
                raise NotFound(f"{username} is not a member of {p.name}.")
            s.delete(m)
            audit.record(
                s,
                principal,
                "member.remove",
                "membership",
                f"{p.id}:{user.id}",
                project_id=p.id,
                changes={"username": username},
            )

    # ---- audit -------------------------------------------------------------------------
    def list_audit(
        self,
        principal: Principal,
        *,
        project: str | None = None,
        actor: str | None = None,
        object_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[AuditRecordOut]:
        """Audit records, newest first. Site admins see all; project admins their project's."""
        check_page_size(max_results)
        offset = decode_page_token(page_token)
        with self.store.transaction() as s:
            stmt = select(audit.AuditRecord)
            if project is not None:
                p = require_project(s, principal, project, Role.ADMIN, "Reading the audit trail")
                stmt = stmt.where(audit.AuditRecord.project_id == p.id)
            else:
                require_superuser(principal, "Reading the whole audit trail (pass a project)")
            if actor:
                stmt = stmt.where(audit.AuditRecord.actor == actor)
            if object_id:
                stmt = stmt.where(audit.AuditRecord.object_id == object_id)
            if action:
                if action.endswith("*"):
                    stmt = stmt.where(audit.AuditRecord.action.startswith(action[:-1]))
                else:
                    stmt = stmt.where(audit.AuditRecord.action == action)
            if since:
                stmt = stmt.where(audit.AuditRecord.ts >= since)
            if until:
                stmt = stmt.where(audit.AuditRecord.ts < until)
            rows = s.scalars(
                stmt.order_by(audit.AuditRecord.seq.desc()).offset(offset).limit(max_results + 1)
            ).all()
            items = [AuditRecordOut.model_validate(r) for r in rows[:max_results]]
            nxt = encode_page_token(offset + max_results) if len(rows) > max_results else None
            return Page[AuditRecordOut](items=items, next_page_token=nxt)

    def verify_audit(self, principal: Principal) -> AuditVerifyOut:
        require_superuser(principal, "Verifying the audit trail")
        with self.store.transaction() as s:
            result = audit.verify(s)
            return AuditVerifyOut(ok=result.ok, checked=result.checked, problems=result.problems)


__all__ = ["GovernanceService", "check_name", "find_project"]
