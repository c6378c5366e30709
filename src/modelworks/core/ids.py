"""Sortable identifiers and UTC time."""

from datetime import UTC, datetime

from ulid import ULID


def new_id() -> str:
    """A ULID string: 26 characters, sortable by creation time."""
    return str(ULID())


def utcnow() -> datetime:
    return datetime.now(UTC)
