"""Append-only, hash-chained audit trail.

Each mutation writes one record in the same transaction as the change. Records form a
chain: ``hash = sha256(prev_hash + canonical(record))``. A one-row head table holds the
last sequence number and hash; updating it first serialises concurrent writers (a row lock
on PostgreSQL, the write lock on SQLite), so the chain never forks. Editing or deleting
any record, or truncating the tail, breaks the chain and is reported by :func:`verify`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelworks.core.auth import Principal
from modelworks.core.context import current_request_id
from modelworks.core.database import Base, JSONType, UTCDateTime
from modelworks.core.ids import utcnow

GENESIS = "0" * 64


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), nullable=False, default=GENESIS)


class AuditRecord(Base):
    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    user_id: Mapped[str | None] = mapped_column(String(26), nullable=True)
    action: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    object_type: Mapped[str] = mapped_column(String(50), nullable=False)
    object_id: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    project_id: Mapped[str | None] = mapped_column(
        String(26), ForeignKey("projects.id"), nullable=True, index=True
    )
    request_id: Mapped[str] = mapped_column(String(64), nullable=False)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


def _canonical(rec: AuditRecord) -> bytes:
    body = {
        "seq": rec.seq,
        "ts": rec.ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": rec.actor,
        "user_id": rec.user_id,
        "action": rec.action,
        "object_type": rec.object_type,
        "object_id": rec.object_id,
        "project_id": rec.project_id,
        "request_id": rec.request_id,
        "changes": rec.changes,
        "note": rec.note,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def _chain_hash(prev_hash: str, rec: AuditRecord) -> str:
    return hashlib.sha256(prev_hash.encode() + _canonical(rec)).hexdigest()


def record(
    session: Session,
    principal: Principal,
    action: str,
    object_type: str,
    object_id: str,
    *,
    project_id: str | None = None,
    changes: dict[str, Any] | None = None,
    note: str | None = None,
) -> AuditRecord:
    """Append one audit record inside the caller's transaction."""
    head = session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.last_hash)
    ).one()
    seq, prev_hash = int(head[0]), str(head[1])
    ts = utcnow()
    rec = AuditRecord(
        seq=seq,
        ts=ts,
        actor=principal.actor,
        user_id=principal.user_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        project_id=project_id,
        request_id=current_request_id(),
        changes=json.loads(json.dumps(changes or {}, default=str)),
        note=note,
        prev_hash=prev_hash,
        hash="",
    )
    rec.hash = _chain_hash(prev_hash, rec)
    session.add(rec)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=rec.hash))
    return rec


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    problems: list[str] = field(default_factory=list)


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the whole chain; report every record whose link or content does not hold."""
    head = session.get(AuditHead, 1)
    problems: list[str] = []
    prev_hash = GENESIS
    expected_seq = 1
    checked = 0
    last_seq = 0
    while True:
        rows = session.scalars(
            select(AuditRecord)
            .where(AuditRecord.seq > last_seq)
            .order_by(AuditRecord.seq)
            .limit(batch)
        ).all()
        if not rows:
            break
        for rec in rows:
            checked += 1
            if rec.seq != expected_seq:
                problems.append(
                    f"records {expected_seq}..{rec.seq - 1} are missing (deleted)"
                    if rec.seq > expected_seq
                    else f"record {rec.seq} is out of order"
                )
            if rec.prev_hash != prev_hash:
                problems.append(f"record {rec.seq}: link to the previous record is broken")
            if _chain_hash(rec.prev_hash, rec) != rec.hash:
                problems.append(f"record {rec.seq}: content was modified after it was written")
            prev_hash = rec.hash
            expected_seq = rec.seq + 1
            last_seq = rec.seq
    if head is None:
        problems.append("the audit head is missing")
    else:
        if head.seq != last_seq:
            problems.append(
                f"the chain ends at record {last_seq} but {head.seq} records were written "
                "(records at the end were deleted)"
            )
        if head.last_hash != prev_hash:
            problems.append("the last record's hash does not match the audit head")
    return VerifyResult(ok=not problems, checked=checked, problems=problems)
