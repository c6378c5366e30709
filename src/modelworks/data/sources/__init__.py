"""Connectors: where rows come from. Each source is a small Pydantic model (its parameters,
validated at the boundary) with one verb, ``scan``, that hands DuckDB a relation to write.

``source_from_spec({"kind": "csv", "path": ...})`` builds one from JSON (REST, CLI, recipes).
"""

from modelworks.data.sources.base import (
    SOURCE_KINDS,
    Rejects,
    Scan,
    ScanContext,
    Source,
    register_source,
    source_from_spec,
)

__all__ = [
    "SOURCE_KINDS",
    "Rejects",
    "Scan",
    "ScanContext",
    "Source",
    "register_source",
    "source_from_spec",
]
