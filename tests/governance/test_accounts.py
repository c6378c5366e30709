"""Users, passwords, API tokens (hashed, expiring, revocable) and project roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from modelworks.core.auth import Principal, local_principal
from modelworks.core.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from modelworks.core.ids import utcnow
from modelworks.core.store import Store
from modelworks.governance.models import ApiToken, User
from modelworks.governance.service import GovernanceService, hash_token
from modelworks.tracking.service import TrackingService


@pytest.fixture
def gov(store: Store) -> GovernanceService:
    return GovernanceService(store)


@pytest.fixture
def root(gov: GovernanceService) -> Principal:
    gov.bootstrap_admin("root", "root-password")
    return gov.authenticate_password("root", "root-password")


def test_bootstrap_only_once(gov: GovernanceService, root: Principal) -> None:
    assert root.superuser
    assert gov.bootstrap_admin("other", "other-password") is None


def test_passwords_are_argon2_hashed(store: Store, gov: GovernanceService, root: Principal) -> None:
    gov.create_user(root, "alice", "alice-password")
    with store.transaction() as s:
        stored = s.scalar(select(User.password_hash).where(User.username == "alice"))
    assert stored is not None and stored.startswith("$argon2")
    assert "alice-password" not in stored
    assert gov.authenticate_password("alice", "alice-password").username == "alice"
    with pytest.raises(Unauthenticated, match="Wrong username or password"):
        gov.authenticate_password("alice", "wrong-password")
    with pytest.raises(Unauthenticated, match="Wrong username or password"):
        gov.authenticate_password("nobody", "whatever-password")


def test_user_input_is_validated(gov: GovernanceService, root: Principal) -> None:
    with pytest.raises(InvalidInput, match="at least 8"):
        gov.create_user(root, "bob", "short")
    with pytest.raises(InvalidInput, match="not valid"):
        gov.create_user(root, "../etc", "long-enough-password")
    gov.create_user(root, "bob", "long-enough-password")
    with pytest.raises(AlreadyExists):
        gov.create_user(root, "bob", "long-enough-password")


def test_only_site_admins_create_users(gov: GovernanceService, root: Principal) -> None:
    gov.create_user(root, "carol", "carol-password")
    carol = gov.authenticate_password("carol", "carol-password")
    with pytest.raises(PermissionDenied):
        gov.create_user(carol, "dave", "dave-password")


def test_token_shown_once_stored_hashed(
    store: Store, gov: GovernanceService, root: Principal
) -> None:
    created = gov.create_token(root, "ci")
    assert created.token.startswith("mw_")
    with store.transaction() as s:
        row = s.get(ApiToken, created.id)
        assert row is not None
        assert row.token_hash == hash_token(created.token)
        assert created.token not in (row.token_hash, row.prefix)
    listed = gov.list_tokens(root)
    assert [t.id for t in listed] == [created.id]
    assert not hasattr(listed[0], "token")
    principal = gov.authenticate_token(created.token)
    assert principal.username == "root" and principal.via == "token"
    assert gov.list_tokens(root)[0].last_used_at is not None


def test_token_revocation_and_expiry(store: Store, gov: GovernanceService, root: Principal) -> None:
    tok = gov.create_token(root, "short-lived", expires_in_days=1)
    gov.revoke_token(root, tok.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        gov.authenticate_token(tok.token)
    tok2 = gov.create_token(root, "expired", expires_in_days=1)
    with store.transaction() as s:
        s.execute(
            update(ApiToken)
            .where(ApiToken.id == tok2.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(Unauthenticated, match="expired"):
        gov.authenticate_token(tok2.token)
    with pytest.raises(Unauthenticated):
        gov.authenticate_token("mw_not-a-real-token")
    with pytest.raises(Unauthenticated, match="not a Modelworks API token"):
        gov.authenticate_token("Basic abc")


def test_disabled_user_loses_tokens(gov: GovernanceService, root: Principal) -> None:
    gov.create_user(root, "erin", "erin-password")
    erin = gov.authenticate_password("erin", "erin-password")
    tok = gov.create_token(erin, "t")
    gov.disable_user(root, "erin")
    with pytest.raises(Unauthenticated):
        gov.authenticate_token(tok.token)
    with pytest.raises(Unauthenticated):
        gov.authenticate_password("erin", "erin-password")


def test_roles_are_ordered(store: Store, gov: GovernanceService, root: Principal) -> None:
    tracking = TrackingService(store)
    gov.create_project(root, "team")
    for name in ("vic", "ed", "max"):
        gov.create_user(root, name, f"{name}-password")
    gov.set_member(root, "team", "vic", "viewer")
    gov.set_member(root, "team", "ed", "editor")
    gov.set_member(root, "team", "max", "maintainer")
    vic, ed, mx = (gov.authenticate_password(n, f"{n}-password") for n in ("vic", "ed", "max"))
    with pytest.raises(PermissionDenied, match="needs the editor role"):
        tracking.create_experiment(vic, "team", "x")
    exp = tracking.create_experiment(ed, "team", "x")
    assert tracking.list_experiments(vic, "team").items[0].id == exp.id
    with pytest.raises(PermissionDenied, match="needs the maintainer role"):
        tracking.delete_experiment(ed, "team", "x")
    tracking.delete_experiment(mx, "team", "x")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        gov.set_member(mx, "team", "vic", "admin")
    with pytest.raises(InvalidInput, match="Unknown role"):
        gov.set_member(root, "team", "vic", "owner")


def test_non_members_do_not_see_projects(gov: GovernanceService, root: Principal) -> None:
    gov.create_project(root, "secret")
    gov.create_user(root, "zed", "zed-password")
    zed = gov.authenticate_password("zed", "zed-password")
    assert "secret" not in [p.name for p in gov.list_projects(zed)]
    with pytest.raises(NotFound):
        gov.get_project(zed, "secret")


def test_local_principal_is_admin_everywhere(gov: GovernanceService) -> None:
    me = local_principal()
    assert me.superuser
    assert [p.name for p in gov.list_projects(me)] == ["default"]


def test_audit_list_filters(gov: GovernanceService, root: Principal) -> None:
    gov.create_project(root, "audited")
    gov.create_user(root, "fay", "fay-password")
    page = gov.list_audit(root, action="user.*")
    assert {r.action for r in page.items} == {"user.create"}
    assert {r.actor for r in gov.list_audit(root, actor="root").items} == {"root"}
    proj = gov.list_audit(root, project="audited")
    assert [r.action for r in proj.items] == ["project.create"]
    first = gov.list_audit(root, max_results=1)
    assert first.next_page_token
    second = gov.list_audit(root, max_results=1, page_token=first.next_page_token)
    assert second.items[0].seq < first.items[0].seq
