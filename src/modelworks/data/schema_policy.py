"""Schema evolution between versions: what changed, and whether the dataset's policy allows it.

Policies: ``strict`` (no change at all), ``additive`` (the default: new columns, and types
that only widen — int32 -> int64, int -> double, null -> anything), ``any`` (every change is
allowed and recorded). An append is always held to ``additive`` at most, because one
version's parts must read back as one table.
"""

from __future__ import annotations

from modelworks.core.errors import InvalidInput
from modelworks.data.schemas import ColumnSchema, SchemaChanges

_INT_ORDER = ["int8", "int16", "int32", "int64"]
_UINT_ORDER = ["uint8", "uint16", "uint32", "uint64"]
_FLOAT_ORDER = ["halffloat", "float", "double"]


def diff_columns(old: list[ColumnSchema], new: list[ColumnSchema]) -> SchemaChanges:
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    return SchemaChanges(
        added=[c for c in new if c.name not in before],
        removed=[c for c in old if c.name not in after],
        retyped=[
            {"name": c.name, "from": before[c.name].type, "to": c.type}
            for c in new
            if c.name in before and before[c.name].type != c.type
        ],
    )


def widens(old: str, new: str) -> bool:
    """Whether every value of type ``old`` is representable in ``new`` without loss."""
    if old == new or old == "null":
        return True
    for order in (_INT_ORDER, _UINT_ORDER, _FLOAT_ORDER):
        if old in order and new in order:
            return order.index(new) >= order.index(old)
    if (old in _INT_ORDER or old in _UINT_ORDER) and new == "double":
        return old not in ("int64", "uint64")
    return {old, new} <= {"string", "large_string"} and new == "large_string"


def check_policy(name: str, policy: str, changes: SchemaChanges, *, appending: bool) -> None:
    """Raise InvalidInput naming every change the policy forbids, and how to go on."""
    if changes.empty:
        return
    effective = "additive" if appending and policy == "any" else policy
    problems: list[str] = []
    if effective == "strict" and changes.added:
        problems += [f"added column {c.name!r} ({c.type})" for c in changes.added]
    if effective in ("strict", "additive"):
        problems += [f"removed column {c.name!r} ({c.type})" for c in changes.removed]
        problems += [
            f"column {r['name']!r} changed type from {r['from']} to {r['to']}"
            for r in changes.retyped
            if effective == "strict" or not widens(r["from"], r["to"])
        ]
    if not problems:
        return
    if appending:
        fix = (
            "An append must keep the columns and their types; cast the new data to the "
            "dataset's types, or ingest it with mode='replace'."
        )
    else:
        fix = (
            f"Cast the column(s) in the source to the previous types, or allow the change with "
            f"`modelworks data update {name} --schema-policy any`."
        )
    raise InvalidInput(
        f"The new data for {name!r} does not match its schema ({policy} policy): "
        + "; ".join(problems)
        + f". No version was made. {fix}",
        changes=changes.model_dump(mode="json"),
    )
