"""The small, escaped HTML tables SDK objects show as in notebooks (``_repr_html_``)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


def html_table(caption: str, rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column key/value table."""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption>{html.escape(caption)}</caption>{body}</table>"


def html_grid(caption: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table with a header row."""
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"
