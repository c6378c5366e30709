"""The audit chain detects any edit or deletion of a record, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from modelworks.core.auth import local_principal
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.tracking.service import TrackingService


def _fill(store: Store) -> GovernanceService:
    gov = GovernanceService(store)
    me = local_principal()
    tracking = TrackingService(store)
    for i in range(5):
        tracking.create_experiment(me, "default", f"exp-{i}")
    return gov


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, store: Store) -> Store:
    if request.param == "sqlite":
        return store
    pg: Store = request.getfixturevalue("postgres_store")
    return pg


def test_intact_chain_verifies(any_store: Store) -> None:
    gov = _fill(any_store)
    result = gov.verify_audit(local_principal())
    assert result.ok, result.problems
    assert result.checked == 5


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE audit_records SET actor = 'mallory' WHERE seq = 2", "record 2: content"),
        ("UPDATE audit_records SET action = 'x' WHERE seq = 1", "record 1: content"),
        ("DELETE FROM audit_records WHERE seq = 3", "records 3..3 are missing"),
        ("DELETE FROM audit_records WHERE seq = 5", "records at the end were deleted"),
        ("DELETE FROM audit_records WHERE seq = 1", "records 1..1 are missing"),
    ],
)
def test_tampering_is_reported(any_store: Store, sql: str, expected: str) -> None:
    gov = _fill(any_store)
    with any_store.transaction() as s:
        s.execute(text(sql))
    result = gov.verify_audit(local_principal())
    assert not result.ok
    assert any(expected in p for p in result.problems), result.problems


def test_recomputed_hash_still_breaks_the_link(store: Store) -> None:
    """A forger who edits a record and recomputes its hash breaks the next record's link."""
    from modelworks.core import audit

    gov = _fill(store)
    with store.transaction() as s:
        rec = s.get(audit.AuditRecord, 2)
        assert rec is not None
        rec.actor = "mallory"
        rec.hash = audit._chain_hash(rec.prev_hash, rec)
    result = gov.verify_audit(local_principal())
    assert not result.ok
    assert any("record 3: link" in p for p in result.problems), result.problems


def test_mutation_and_audit_share_one_transaction(store: Store) -> None:
    """A mutation that fails leaves neither the change nor an audit record."""
    from modelworks.core.errors import AlreadyExists

    tracking = TrackingService(store)
    me = local_principal()
    tracking.create_experiment(me, "default", "once")
    with pytest.raises(AlreadyExists):
        tracking.create_experiment(me, "default", "once")
    with store.transaction() as s:
        n = s.execute(text("SELECT count(*) FROM audit_records")).scalar_one()
    assert n == 1
