"""Shared shapes for service results: pages of items."""

from __future__ import annotations

import base64
from typing import Generic, TypeVar

from pydantic import BaseModel

from modelworks.core.errors import InvalidInput

T = TypeVar("T")

MAX_PAGE_SIZE = 10_000


class Page(BaseModel, Generic[T]):
    """One page of results; pass ``next_page_token`` back to get the next."""

    items: list[T]
    next_page_token: str | None = None


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token.encode()).decode()
        kind, value = raw.split(":", 1)
        offset = int(value)
        if kind != "o" or offset < 0:
            raise ValueError
        return offset
    except Exception:
        raise InvalidInput(
            f"page_token {token!r} is not valid; pass the next_page_token of the previous page."
        ) from None


def check_page_size(limit: int, what: str = "max_results") -> int:
    if limit < 1 or limit > MAX_PAGE_SIZE:
        raise InvalidInput(f"{what} must be between 1 and {MAX_PAGE_SIZE}; got {limit}.")
    return limit
