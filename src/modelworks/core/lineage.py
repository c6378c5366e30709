"""Lineage: a graph of what was made from what, shared by every domain.

An edge says ``parent -> child`` with a relation (``ingested_from``, ``derived_from``,
``appended_to``, later ``trained_on`` ...). Nodes are typed references — ``source``,
``dataset_version``, ``run``, ``model_version`` — with a label kept on the edge so the graph
can be drawn without asking every domain to describe its nodes. Edges are written in the
same transaction as the object they describe, like audit records, and are never edited.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ForeignKey, Index, String, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelworks.core.database import Base, JSONType, UTCDateTime
from modelworks.core.ids import new_id, utcnow

Direction = Literal["up", "down", "both"]
MAX_DEPTH = 50


class LineageEdge(Base):
    __tablename__ = "lineage_edges"
    __table_args__ = (
        Index("ix_lineage_edges_parent", "parent_type", "parent_id"),
        Index("ix_lineage_edges_child", "child_type", "child_id"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    parent_type: Mapped[str] = mapped_column(String(40), nullable=False)
    parent_id: Mapped[str] = mapped_column(String(200), nullable=False)
    parent_label: Mapped[str] = mapped_column(String(500), nullable=False)
    child_type: Mapped[str] = mapped_column(String(40), nullable=False)
    child_id: Mapped[str] = mapped_column(String(200), nullable=False)
    child_label: Mapped[str] = mapped_column(String(500), nullable=False)
    relation: Mapped[str] = mapped_column(String(40), nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


@dataclass(frozen=True)
class Node:
    """One end of an edge: ``(type, id)`` identifies it, ``label`` is for people."""

    type: str
    id: str
    label: str


@dataclass
class Graph:
    nodes: dict[tuple[str, str], Node] = field(default_factory=dict)
    edges: list[LineageEdge] = field(default_factory=list)


def record(
    session: Session,
    project_id: str,
    parent: Node,
    child: Node,
    relation: str,
    meta: dict[str, Any] | None = None,
) -> LineageEdge:
    """Add one edge in the caller's transaction."""
    edge = LineageEdge(
        id=new_id(),
        project_id=project_id,
        parent_type=parent.type,
        parent_id=parent.id,
        parent_label=parent.label[:500],
        child_type=child.type,
        child_id=child.id,
        child_label=child.label[:500],
        relation=relation,
        meta=dict(meta or {}),
        created_at=utcnow(),
    )
    session.add(edge)
    return edge


def walk(
    session: Session,
    project_id: str,
    start: Node,
    *,
    direction: Direction = "both",
    depth: int = 10,
) -> Graph:
    """The edges reachable from ``start``: up to its ancestors, down to its descendants.

    Breadth-first, one query per level and direction, bounded by ``depth`` (at most
    ``MAX_DEPTH``), so a long history never turns into an unbounded query.
    """
    depth = max(0, min(depth, MAX_DEPTH))
    graph = Graph()
    graph.nodes[(start.type, start.id)] = start
    seen_edges: set[str] = set()
    for going_up in (True, False):
        if (going_up and direction == "down") or (not going_up and direction == "up"):
            continue
        frontier = deque([(start.type, start.id)])
        visited = {(start.type, start.id)}
        for _ in range(depth):
            if not frontier:
                break
            keys = list(frontier)
            frontier.clear()
            if going_up:
                clause = or_(
                    *[(LineageEdge.child_type == t) & (LineageEdge.child_id == i) for t, i in keys]
                )
            else:
                clause = or_(
                    *[
                        (LineageEdge.parent_type == t) & (LineageEdge.parent_id == i)
                        for t, i in keys
                    ]
                )
            rows = session.scalars(
                select(LineageEdge)
                .where(LineageEdge.project_id == project_id, clause)
                .order_by(LineageEdge.created_at, LineageEdge.id)
            ).all()
            for edge in rows:
                parent = Node(edge.parent_type, edge.parent_id, edge.parent_label)
                child = Node(edge.child_type, edge.child_id, edge.child_label)
                graph.nodes.setdefault((parent.type, parent.id), parent)
                graph.nodes.setdefault((child.type, child.id), child)
                if edge.id not in seen_edges:
                    seen_edges.add(edge.id)
                    graph.edges.append(edge)
                nxt = (parent.type, parent.id) if going_up else (child.type, child.id)
                if nxt not in visited:
                    visited.add(nxt)
                    frontier.append(nxt)
    return graph
