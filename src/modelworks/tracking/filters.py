"""The run-search language: MLflow's filter and order-by syntax, compiled to SQLAlchemy.

``metrics.auc > 0.9 and params.model = 'lgbm'`` is parsed by a lark LALR grammar into a
small tree of frozen dataclasses (:class:`Comparison`, :class:`And`, :class:`Or`,
:class:`Not`), then compiled to a WHERE clause over ``Run`` in which every metric, param
and tag test is an EXISTS on its table's (run_id, key) primary key. User values only ever
reach SQL as bound parameters.

Missing keys follow SQL's three-valued logic: a run that lacks ``params.x`` matches neither
``params.x = 'a'`` nor ``params.x != 'a'`` nor ``NOT params.x = 'a'``; only ``IS NULL``
matches it. A metric whose latest value is NaN (stored as NULL) counts as missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, TypeAlias, TypeVar

from lark import Lark, Token, Transformer, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from sqlalchemy import Boolean, ColumnElement, Select, String, and_, literal, not_, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from modelworks.core.errors import InvalidInput
from modelworks.tracking.models import LatestMetric, Run, RunParam, RunTag

__all__ = [
    "MAX_COMPARISONS",
    "MAX_DEPTH",
    "MAX_FILTER_LENGTH",
    "And",
    "Comparison",
    "Expr",
    "Not",
    "Or",
    "OrderKey",
    "apply_order",
    "compile_filter",
    "parse_filter",
    "parse_order_by",
    "render_filter",
]

MAX_FILTER_LENGTH = 10_000
MAX_DEPTH = 50  # nesting of AND / OR / NOT; keeps compilation and SQL expression depth small
MAX_COMPARISONS = 200  # SQLite caps expression depth at 1000, and a chain of ORs is that deep
MAX_ORDER_KEYS = 20
MAX_ORDER_ITEM_LENGTH = 1000

Entity: TypeAlias = Literal["metrics", "params", "tags", "attributes"]
Op: TypeAlias = Literal[
    "=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"
]
Scalar: TypeAlias = str | float | datetime
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None


# ---- the expression tree -------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """``entity.key op value``. ``value`` is a tuple for IN / NOT IN and None for IS [NOT] NULL.

    Metric values are floats, param and tag values strings, time attributes aware UTC
    datetimes, other attributes strings. ``key`` of an attribute is its canonical name.
    """

    entity: Entity
    key: str
    op: Op
    value: Value


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


Expr: TypeAlias = Comparison | And | Or | Not


@dataclass(frozen=True)
class OrderKey:
    entity: Entity
    key: str
    descending: bool = False


# ---- vocabulary ----------------------------------------------------------------------
ENTITY_PREFIXES: dict[str, Entity] = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
    "run": "attributes",
}

ATTRIBUTE_NAMES: dict[str, str] = {
    "run_id": "run_id",
    "id": "run_id",
    "name": "name",
    "run_name": "name",
    "status": "status",
    "start_time": "start_time",
    "end_time": "end_time",
    "experiment_id": "experiment_id",
    "parent_run_id": "parent_run_id",
    "created_by": "created_by",
    "user": "created_by",
}

_ATTRIBUTE_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "run_id": Run.id,
    "name": Run.name,
    "status": Run.status,
    "start_time": Run.start_time,
    "end_time": Run.end_time,
    "experiment_id": Run.experiment_id,
    "parent_run_id": Run.parent_run_id,
    "created_by": Run.created_by,
}
_TIME_ATTRIBUTES = frozenset({"start_time", "end_time"})

_OPS_BY_KIND: dict[str, tuple[str, ...]] = {
    "number": ("=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL"),
    "time": ("=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL"),
    "text": ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"),
}
_OP_ALIASES = {"==": "=", "<>": "!="}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-/:]+(?:\.[A-Za-z0-9_\-/:]+)*\Z")

_ENTITY_HELP = "metrics., params., tags. or attributes. (also metric., param., tag., attr., run.)"
_ATTRIBUTE_HELP = (
    "run_id (or id), name (or run_name), status, start_time, end_time, experiment_id, "
    "parent_run_id, created_by (or user)"
)
_OPERATOR_HELP = "an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS)"

# ---- grammar -------------------------------------------------------------------------
_GRAMMAR = r"""
?filter: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: negation | atom
negation: _NOT not_expr
?atom: comparison | "(" or_expr ")"

comparison: field COMP_OP value         -> compare
          | field _LIKE value           -> like
          | field _ILIKE value          -> ilike
          | field _IN value_list        -> in_list
          | field _NOT _IN value_list   -> not_in_list
          | field _IS _NULL             -> is_null
          | field _IS _NOT _NULL        -> is_not_null

field: NAME                             -> bare_field
     | NAME "." (KEY | QUOTED_KEY | DQ_STRING) -> dotted_field

value: SQ_STRING | DQ_STRING | NUMBER
value_list: "(" value ("," value)* ")"

order_item: field DIRECTION?

_AND.2: /and\b/i
_OR.2: /or\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_IS.2: /is\b/i
_NULL.2: /null\b/i
_LIKE.2: /like\b/i
_ILIKE.2: /ilike\b/i
DIRECTION.2: /(asc|desc)\b/i

NAME: /[A-Za-z_][A-Za-z0-9_]*/
KEY: /[A-Za-z0-9_\-\/:]+(\.[A-Za-z0-9_\-\/:]+)*/
QUOTED_KEY: /`(?:[^`]|``)*`/
SQ_STRING: /'(?:[^']|'')*'/
DQ_STRING: /"(?:[^"]|"")*"/
NUMBER: /[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
COMP_OP: /==|!=|<>|<=|>=|=|<|>/

%import common.WS
%ignore WS
"""

# One parser per start symbol, so that each has its own LALR states and error messages
# list only what can follow in a filter or in an order-by item.
_PARSERS = {
    start: Lark(_GRAMMAR, parser="lalr", start=start, maybe_placeholders=False)
    for start in ("filter", "order_item")
}


# ---- parsing -------------------------------------------------------------------------
class _Field(NamedTuple):
    entity: Entity
    key: str
    text: str  # as written, for messages


def parse_filter(text: str | None) -> Expr | None:
    """Parse a filter; None or blank text gives None. Raises InvalidInput on any mistake."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidInput(
            f"The filter is {len(text):,} characters long; the limit is "
            f"{MAX_FILTER_LENGTH:,}. Narrow it, e.g. with IN (...) instead of many ORs."
        )
    tree = _parse(text, "filter", "filter")
    _check_size(tree)
    result = _transform(tree)
    if not isinstance(result, Comparison | And | Or | Not):  # pragma: no cover - grammar
        raise InvalidInput(f"Cannot parse filter {text!r}.")
    return result


def parse_order_by(items: Sequence[str] | None) -> list[OrderKey]:
    """Parse order-by items such as ``"metrics.auc DESC"``; the default direction is ASC."""
    if not items:
        return []
    if len(items) > MAX_ORDER_KEYS:
        raise InvalidInput(
            f"{len(items)} order_by items given; at most {MAX_ORDER_KEYS} are allowed."
        )
    keys = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise InvalidInput(
                f"order_by item {item!r} is empty; write e.g. 'metrics.auc DESC' or "
                "'attributes.start_time'."
            )
        if len(item) > MAX_ORDER_ITEM_LENGTH:
            raise InvalidInput(
                f"order_by item is {len(item):,} characters long; the limit is "
                f"{MAX_ORDER_ITEM_LENGTH:,}."
            )
        key = _transform(_parse(item, "order_item", f"order_by item {item!r}"))
        if not isinstance(key, OrderKey):  # pragma: no cover - grammar
            raise InvalidInput(f"Cannot parse order_by item {item!r}.")
        keys.append(key)
    return keys


def _parse(text: str, start: str, what: str) -> Tree[Token]:
    try:
        return _PARSERS[start].parse(text)
    except UnexpectedInput as exc:
        raise InvalidInput(_syntax_message(text, start, exc, what)) from None
    except LarkError as exc:  # pragma: no cover - defensive
        raise InvalidInput(f"Cannot parse {what}: {exc}") from None


def _transform(tree: Tree[Token]) -> Any:
    try:
        return _ToExpr().transform(tree)
    except VisitError as exc:  # how lark wraps what a callback raised
        raise exc.orig_exc from None


def _check_size(tree: Tree[Token]) -> None:
    """Bound nesting and size before the (recursive) transform and compile steps."""
    comparisons = 0
    stack: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in ("or_expr", "and_expr", "negation"):
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidInput(
                    f"The filter nests AND / OR / NOT more than {MAX_DEPTH} levels deep; "
                    "flatten it (e.g. a = 1 OR b = 2 OR c = 3 needs no parentheses)."
                )
        elif node.data in _COMPARISON_RULES:
            comparisons += 1
            if comparisons > MAX_COMPARISONS:
                raise InvalidInput(
                    f"The filter has more than {MAX_COMPARISONS} comparisons; combine them, "
                    "e.g. params.x IN ('a', 'b') instead of params.x = 'a' OR params.x = 'b'."
                )
            continue
        stack.extend((child, depth) for child in node.children if isinstance(child, Tree))


_COMPARISON_RULES = frozenset(
    {"compare", "like", "ilike", "in_list", "not_in_list", "is_null", "is_not_null"}
)


class _ToExpr(Transformer[Token, Any]):
    """Parse tree → Expr, resolving names and checking value types."""

    def or_expr(self, children: list[Expr]) -> Or:
        return Or(tuple(children))

    def and_expr(self, children: list[Expr]) -> And:
        return And(tuple(children))

    def negation(self, children: list[Expr]) -> Not:
        return Not(children[0])

    def bare_field(self, children: list[Token]) -> _Field:
        return _Field("attributes", _attribute(children[0]), str(children[0]))

    def dotted_field(self, children: list[Token]) -> _Field:
        prefix, raw_key = children
        entity = ENTITY_PREFIXES.get(prefix.lower())
        if entity is None:
            raise InvalidInput(
                f"Unknown entity {str(prefix)!r} at column {prefix.column}; "
                f"prefix a key with {_ENTITY_HELP}."
            )
        key = _unquote_key(raw_key)
        if not key:
            raise InvalidInput(f"Empty key after {str(prefix)!r}. at column {raw_key.column}.")
        if entity == "attributes":
            key = _attribute(raw_key, key)
        return _Field(entity, key, f"{prefix}.{raw_key}")

    def value(self, children: list[Token]) -> Token:
        return children[0]

    def value_list(self, children: list[Token]) -> list[Token]:
        return list(children)

    def compare(self, children: list[Any]) -> Comparison:
        field, op, value = children
        return _comparison(field, _OP_ALIASES.get(str(op), str(op)), value)

    def like(self, children: list[Any]) -> Comparison:
        return _comparison(children[0], "LIKE", children[1])

    def ilike(self, children: list[Any]) -> Comparison:
        return _comparison(children[0], "ILIKE", children[1])

    def in_list(self, children: list[Any]) -> Comparison:
        return _comparison(children[0], "IN", children[1])

    def not_in_list(self, children: list[Any]) -> Comparison:
        return _comparison(children[0], "NOT IN", children[1])

    def is_null(self, children: list[Any]) -> Comparison:
        return _comparison(children[0], "IS NULL", None)

    def is_not_null(self, children: list[Any]) -> Comparison:
        return _comparison(children[0], "IS NOT NULL", None)

    def order_item(self, children: list[Any]) -> OrderKey:
        field: _Field = children[0]
        descending = len(children) > 1 and str(children[1]).upper() == "DESC"
        return OrderKey(field.entity, field.key, descending)


def _attribute(token: Token, name: str | None = None) -> str:
    name = str(token) if name is None else name
    canonical = ATTRIBUTE_NAMES.get(name.lower())
    if canonical is None:
        raise InvalidInput(
            f"Unknown attribute {name!r} at column {token.column}. Attributes are "
            f"{_ATTRIBUTE_HELP}; for a metric, param or tag write {_ENTITY_HELP} before the key, "
            f"e.g. params.{name}."
        )
    return canonical


def _unquote_key(token: Token) -> str:
    text = str(token)
    if token.type == "QUOTED_KEY":
        return text[1:-1].replace("``", "`")
    if token.type == "DQ_STRING":
        return text[1:-1].replace('""', '"')
    return text


def _kind(field: _Field) -> str:
    if field.entity == "metrics":
        return "number"
    if field.entity == "attributes" and field.key in _TIME_ATTRIBUTES:
        return "time"
    return "text"


def _comparison(field: _Field, op: str, raw: Token | list[Token] | None) -> Comparison:
    kind = _kind(field)
    if op not in _OPS_BY_KIND[kind]:
        allowed = ", ".join(_OPS_BY_KIND[kind])
        what = {
            "number": "compares numbers",
            "time": "is a time",
            "text": "compares text",
        }[kind]
        raise InvalidInput(f"{field.text} {what}, so {op} cannot be used; use one of {allowed}.")
    value: Value
    if raw is None:
        value = None
    elif isinstance(raw, list):
        value = tuple(_convert(field, kind, token) for token in raw)
    else:
        value = _convert(field, kind, raw)
    if op in ("LIKE", "ILIKE") and isinstance(value, str) and _ends_with_escape(value):
        raise InvalidInput(
            f"The {op} pattern {value!r} ends with a lone backslash, which escapes nothing; "
            "write \\\\ for a literal backslash (\\% and \\_ match a literal % and _)."
        )
    return Comparison(field.entity, field.key, op, value)  # type: ignore[arg-type]


def _ends_with_escape(pattern: str) -> bool:
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return trailing % 2 == 1


def _convert(field: _Field, kind: str, token: Token) -> Scalar:
    text = str(token)
    is_number = token.type == "NUMBER"
    if kind == "number":
        if not is_number:
            raise InvalidInput(
                f"{field.text} compares numbers, but got the string {text} at column "
                f"{token.column}; write a number without quotes, e.g. {field.text} > 0.5."
            )
        number = float(text)
        if not math.isfinite(number):
            raise InvalidInput(f"The number {text} at column {token.column} is out of range.")
        return number
    if kind == "time":
        return _time_value(field, token)
    return text if is_number else _unquote_string(text)


def _unquote_string(text: str) -> str:
    quote = text[0]
    return text[1:-1].replace(quote * 2, quote)


def _time_value(field: _Field, token: Token) -> datetime:
    text = str(token)
    try:
        if token.type == "NUMBER":
            millis = float(text)
            if not math.isfinite(millis):
                raise ValueError(text)
            return _EPOCH + timedelta(milliseconds=millis)
        parsed = datetime.fromisoformat(_unquote_string(text))
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"{field.text} is a time, but {text} at column {token.column} is not one; use an "
            "ISO-8601 string such as '2024-05-01T12:00:00Z' or epoch milliseconds such as "
            "1714564800000."
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"The time {text} at column {token.column} is out of range once converted to UTC."
        ) from None


# ---- syntax error messages -----------------------------------------------------------
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`")
_BOUNDARY = re.compile(r"(?i)\b(?:and|or|not)\b|\(")
_TERMINAL_WORDS = {
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "DOT": "'.' and a key",
    "_AND": "AND",
    "_OR": "OR",
    "_NOT": "NOT",
    "_IN": "IN",
    "_IS": "IS",
    "_NULL": "NULL",
    "_LIKE": "LIKE",
    "_ILIKE": "ILIKE",
    "DIRECTION": "ASC or DESC",
    "$END": "the end of the text",
}


def _describe_expected(names: set[str]) -> str:
    names = set(names)
    phrases = []
    if "NAME" in names:
        phrases.append(
            "a comparison such as metrics.auc > 0.9 or params.model = 'lgbm', NOT, or '('"
            if "_NOT" in names
            else "a key such as metrics.auc or attributes.start_time"
        )
        names -= {"NAME", "_NOT", "LPAR"}
    if "KEY" in names:
        phrases.append("a key, e.g. metrics.auc, or a quoted key, e.g. metrics.`my metric`")
        names -= {"KEY", "QUOTED_KEY", "DQ_STRING"}
    if "COMP_OP" in names:
        phrases.append(_OPERATOR_HELP)
        names -= {"COMP_OP", "_LIKE", "_ILIKE", "_IN", "_IS", "_NOT"}
    if names & {"NUMBER", "SQ_STRING", "DQ_STRING"}:
        phrases.append("a value: a number or a 'quoted string'")
        names -= {"NUMBER", "SQ_STRING", "DQ_STRING"}
    if names == {"LPAR"}:
        return "a parenthesised list of values, e.g. ('a', 'b')"
    if names == {"_NOT", "_NULL"}:
        return "NULL or NOT NULL"
    phrases += [_TERMINAL_WORDS.get(n, n) for n in sorted(names, key=_terminal_rank)]
    if not phrases:
        return "something else"
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _terminal_rank(name: str) -> tuple[int, str]:
    order = ["DOT", "_AND", "_OR", "COMMA", "RPAR", "DIRECTION", "$END"]
    return (order.index(name), name) if name in order else (len(order), name)


def _syntax_message(text: str, start: str, exc: UnexpectedInput, what: str) -> str:
    found = ""
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        pos = exc.token.start_pos or 0
        expected = set(exc.expected)
        found = str(exc.token)
    elif isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        expected = set(exc.allowed or ())
        quoted = _QUOTED.match(text, pos)
        found = quoted.group() if quoted else text[pos]
    else:
        pos = len(text)
        expected = set(getattr(exc, "expected", ()) or ())
    expected = _accepts(start, text[:pos]) or expected
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    where = f"line {line}, column {column}" if line > 1 else f"column {column}"
    at_end = pos >= len(text.rstrip())
    message = f"Cannot parse {what} at {where}: expected {_describe_expected(expected)}"
    context = _context(text[:pos])
    message += f" after {context!r}" if context else " at the start"
    if found:
        message += f", found {_shorten(found)!r}."
    elif at_end:
        message += ", found the end of the text."
    else:
        message += "."
    return message + _hint(text, found, expected, at_end, isinstance(exc, UnexpectedEOF))


def _accepts(start: str, prefix: str) -> set[str]:
    """The exact terminals that may follow ``prefix`` (LALR lookahead sets are merged)."""
    try:
        interactive = _PARSERS[start].parse_interactive(prefix)
        interactive.exhaust_lexer()
        return set(interactive.accepts())
    except LarkError:
        return set()


def _context(prefix: str) -> str:
    prefix = prefix.rstrip()
    if not prefix:
        return ""
    blanked = _QUOTED.sub(lambda m: " " * len(m.group()), prefix)
    boundaries = [m for m in _BOUNDARY.finditer(blanked)]
    tail = prefix
    if boundaries:
        last = boundaries[-1]
        tail = prefix[last.end() :].strip() or prefix[last.start() : last.end()]
    if len(tail) > 40:
        tail = "..." + tail[-37:]
    return tail


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _hint(text: str, found: str, expected: set[str], at_end: bool, eof: bool) -> str:
    bare = _QUOTED.sub("", text)
    if (at_end or eof) and bare.count("(") > bare.count(")"):
        return " A '(' is never closed."
    if found == ")" and "RPAR" not in expected:
        return " This ')' has no matching '('."
    if found.lower() == "null":
        return " Test for a missing value with IS NULL or IS NOT NULL."
    if found in ("'", '"', "`"):
        return f" A {found} is never closed; inside quotes, write it twice ({found * 2})."
    if found.startswith("`"):
        return " Backticks quote keys; quote values with single quotes."
    return ""


# ---- compiling to SQL ----------------------------------------------------------------
class _CaseSensitiveLike(FunctionElement[bool]):
    """``value LIKE pattern ESCAPE '\\'``, case-sensitive on every backend.

    SQLite's LIKE ignores ASCII case, so there it becomes GLOB with the pattern translated.
    Arguments: the column, the LIKE pattern and the equivalent GLOB pattern (both bound).
    """

    type = Boolean()
    inherit_cache = True
    name = "case_sensitive_like"


@compiles(_CaseSensitiveLike)
def _compile_like(element: _CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern, _glob = list(element.clauses)
    return "(" + compiler.process(column.like(pattern, escape="\\"), **kw) + ")"


@compiles(_CaseSensitiveLike, "sqlite")
def _compile_like_sqlite(element: _CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    column, _pattern, glob = list(element.clauses)
    return "(" + compiler.process(column.op("GLOB")(glob), **kw) + ")"


def _like_to_glob(pattern: str) -> str:
    out = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(_glob_literal(next(chars, "\\")))
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        else:
            out.append(_glob_literal(char))
    return "".join(out)


def _glob_literal(char: str) -> str:
    return f"[{char}]" if char in "*?[" else char


def compile_filter(expr: Expr) -> ColumnElement[bool]:
    """A WHERE clause over ``Run``; metric, param and tag tests are correlated EXISTS."""
    return _compile(expr, negate=False)


def _compile(expr: Expr, negate: bool) -> ColumnElement[bool]:
    # NOT is pushed down to the comparisons (De Morgan) so that a missing key stays
    # "unknown" under negation, as in SQL, instead of turning NOT EXISTS into a match.
    if isinstance(expr, Not):
        return _compile(expr.item, not negate)
    if isinstance(expr, And | Or):
        parts = [_compile(item, negate) for item in expr.items]
        return and_(*parts) if isinstance(expr, And) != negate else or_(*parts)
    return _compile_comparison(expr, negate)


_Column: TypeAlias = ColumnElement[Any] | InstrumentedAttribute[Any]
_KEYED_TABLES: dict[str, type[LatestMetric] | type[RunParam] | type[RunTag]] = {
    "metrics": LatestMetric,
    "params": RunParam,
    "tags": RunTag,
}


def _compile_comparison(c: Comparison, negate: bool) -> ColumnElement[bool]:
    if c.entity == "attributes":
        column: ColumnElement[Any] = _ATTRIBUTE_COLUMNS[c.key].expression
        if c.op in ("IS NULL", "IS NOT NULL"):
            want_null = (c.op == "IS NULL") != negate
            return column.is_(None) if want_null else column.is_not(None)
        cond = _condition(column, c.op, c.value)
        return not_(cond) if negate else cond
    table = _KEYED_TABLES[c.entity]
    scope = [table.run_id == Run.id, table.key == c.key]
    if c.op in ("IS NULL", "IS NOT NULL"):
        if table is LatestMetric:
            scope.append(LatestMetric.value.is_not(None))  # NaN is stored as NULL
        present = select(table.run_id).where(*scope).correlate(Run).exists()
        want_null = (c.op == "IS NULL") != negate
        return not_(present) if want_null else present
    cond = _condition(table.value, c.op, c.value)
    if negate:
        cond = not_(cond)
    return select(table.run_id).where(*scope, cond).correlate(Run).exists()


def _condition(column: _Column, op: str, value: Value) -> ColumnElement[bool]:
    if op == "IN":
        return column.in_(_as_tuple(value))
    if op == "NOT IN":
        return column.not_in(_as_tuple(value))
    if op == "LIKE":
        pattern = str(value)
        return _CaseSensitiveLike(
            column, literal(pattern, String()), literal(_like_to_glob(pattern), String())
        )
    if op == "ILIKE":
        return column.ilike(str(value), escape="\\")
    comparisons = {
        "=": column.__eq__,
        "!=": column.__ne__,
        "<": column.__lt__,
        "<=": column.__le__,
        ">": column.__gt__,
        ">=": column.__ge__,
    }
    result: ColumnElement[bool] = comparisons[op](value)
    return result


def _as_tuple(value: Value) -> tuple[Scalar, ...]:
    return value if isinstance(value, tuple) else (value,) if value is not None else ()


# ---- ordering ------------------------------------------------------------------------
SelectT = TypeVar("SelectT", bound=Select[Any])


def apply_order(stmt: SelectT, keys: Sequence[OrderKey]) -> SelectT:
    """Order ``stmt`` (a select over Run) by ``keys``, NULLs last in both directions.

    Each metric / param / tag key outer-joins its own alias on the (run_id, key) primary
    key, so a run lacking the key is kept and sorts last. Ties end on newest first, then id.
    """
    clauses: list[Any] = []
    for key in keys:
        column: _Column
        if key.entity == "attributes":
            column = _ATTRIBUTE_COLUMNS[key.key].expression
        else:
            alias = aliased(_KEYED_TABLES[key.entity])
            stmt = stmt.outerjoin(alias, and_(alias.run_id == Run.id, alias.key == key.key))
            column = alias.value
        clauses.append((column.desc() if key.descending else column.asc()).nulls_last())
    return stmt.order_by(*clauses, Run.start_time.desc(), Run.id.desc())


# ---- rendering back to text ----------------------------------------------------------
def render_filter(expr: Expr) -> str:
    """The canonical text of ``expr``; ``parse_filter(render_filter(e)) == e``."""
    if isinstance(expr, Not):
        return "NOT " + _render_operand(expr.item)
    if isinstance(expr, And | Or):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return joiner.join(_render_operand(item) for item in expr.items)
    return _render_comparison(expr)


def _render_operand(expr: Expr) -> str:
    text = render_filter(expr)
    return text if isinstance(expr, Comparison) else f"({text})"


def _render_comparison(c: Comparison) -> str:
    key = c.key if _SIMPLE_KEY.match(c.key) else "`" + c.key.replace("`", "``") + "`"
    field = f"{c.entity}.{key}"
    if c.value is None:
        return f"{field} {c.op}"
    if isinstance(c.value, tuple):
        return f"{field} {c.op} (" + ", ".join(_render_value(v) for v in c.value) + ")"
    return f"{field} {c.op} {_render_value(c.value)}"


def _render_value(value: Scalar) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, float):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"
