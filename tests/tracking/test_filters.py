"""The run-search language: parsing, error messages, SQL safety and results on a real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from modelworks.core.database import Base, create_db_engine
from modelworks.core.errors import InvalidInput
from modelworks.core.model_tables import import_all_tables
from modelworks.governance.models import Project
from modelworks.tracking.filters import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    And,
    Comparison,
    Expr,
    Not,
    Or,
    OrderKey,
    apply_order,
    compile_filter,
    parse_filter,
    parse_order_by,
    render_filter,
)
from modelworks.tracking.models import Experiment, LatestMetric, Run, RunParam, RunTag

PROJECT_ID = "00000000000000000000000000"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def C(entity: str, key: str, op: str, value: Any = None) -> Comparison:
    return Comparison(entity, key, op, value)  # type: ignore[arg-type]


# ---- parsing: every operator, entity and quoting form --------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.auc > 0.9", C("metrics", "auc", ">", 0.9)),
        ("metrics.auc >= 0.9", C("metrics", "auc", ">=", 0.9)),
        ("metrics.auc < 1", C("metrics", "auc", "<", 1.0)),
        ("metrics.auc <= -2.5", C("metrics", "auc", "<=", -2.5)),
        ("metrics.loss <= 1e-3", C("metrics", "loss", "<=", 0.001)),
        ("metrics.loss = .5", C("metrics", "loss", "=", 0.5)),
        ("metrics.loss == 2", C("metrics", "loss", "=", 2.0)),
        ("metrics.loss != 2", C("metrics", "loss", "!=", 2.0)),
        ("metrics.loss <> 2", C("metrics", "loss", "!=", 2.0)),
        ("metric.loss IN (1, 2.5)", C("metrics", "loss", "IN", (1.0, 2.5))),
        ("metrics.loss not in (1)", C("metrics", "loss", "NOT IN", (1.0,))),
        ("metrics.auc IS NOT NULL", C("metrics", "auc", "IS NOT NULL")),
        ("params.model = 'lgbm'", C("params", "model", "=", "lgbm")),
        ('param.model = "lgbm"', C("params", "model", "=", "lgbm")),
        ("params.depth = 6", C("params", "depth", "=", "6")),
        ("params.lr = 1e-3", C("params", "lr", "=", "1e-3")),
        ("params.lr IN ('0.1', '0.01')", C("params", "lr", "IN", ("0.1", "0.01"))),
        ("params.lr NOT IN ('0.1', 5)", C("params", "lr", "NOT IN", ("0.1", "5"))),
        ("params.depth IS NULL", C("params", "depth", "IS NULL")),
        ("params.model.lr = 'x'", C("params", "model.lr", "=", "x")),
        ("params.in = 'x'", C("params", "in", "=", "x")),
        ("params.x = 'it''s'", C("params", "x", "=", "it's")),
        ('params.x = "say ""hi"""', C("params", "x", "=", 'say "hi"')),
        ("params.x = ''", C("params", "x", "=", "")),
        ("tags.team LIKE 'ml%'", C("tags", "team", "LIKE", "ml%")),
        ("tag.team ilike 'ML%'", C("tags", "team", "ILIKE", "ML%")),
        ("tags.\"mlflow.user\" != 'bob'", C("tags", "mlflow.user", "!=", "bob")),
        ("tags.`my tag` = 'a'", C("tags", "my tag", "=", "a")),
        ("tags.`back``tick` = 'a'", C("tags", "back`tick", "=", "a")),
        ('tags."dq""key" = \'a\'', C("tags", 'dq"key', "=", "a")),
        ("metrics.`my metric` < 2", C("metrics", "my metric", "<", 2.0)),
        ("attributes.status = 'FINISHED'", C("attributes", "status", "=", "FINISHED")),
        ("attribute.name LIKE 'trial-%'", C("attributes", "name", "LIKE", "trial-%")),
        ("attr.run_name = 'a'", C("attributes", "name", "=", "a")),
        ("run.id = 'a'", C("attributes", "run_id", "=", "a")),
        ("run_id = 'a'", C("attributes", "run_id", "=", "a")),
        ("user = 'me'", C("attributes", "created_by", "=", "me")),
        ("created_by = 'me'", C("attributes", "created_by", "=", "me")),
        ("experiment_id = 'e'", C("attributes", "experiment_id", "=", "e")),
        ("parent_run_id IS NULL", C("attributes", "parent_run_id", "IS NULL")),
        ("attributes.`status` = 'x'", C("attributes", "status", "=", "x")),
        ("Attributes.Status = 'x'", C("attributes", "status", "=", "x")),
        ("start_time > '2024-05-01'", C("attributes", "start_time", ">", T0 - timedelta(hours=12))),
        ("start_time >= '2024-05-01T14:00:00+02:00'", C("attributes", "start_time", ">=", T0)),
        ("start_time < '2024-05-01T12:00:00Z'", C("attributes", "start_time", "<", T0)),
        ("end_time <= 1714564800000", C("attributes", "end_time", "<=", T0)),
        ("end_time IS NOT NULL", C("attributes", "end_time", "IS NOT NULL")),
    ],
)
def test_parses_comparison(text: str, expected: Comparison) -> None:
    assert parse_filter(text) == expected


def test_parses_boolean_structure() -> None:
    a = C("metrics", "auc", ">", 0.9)
    f = C("metrics", "f1", ">", 0.8)
    failed = C("attributes", "status", "=", "FAILED")
    text = "(metrics.auc > 0.9 or metrics.f1 > 0.8) and not attributes.status = 'FAILED'"
    assert parse_filter(text) == And((Or((a, f)), Not(failed)))
    assert parse_filter("metrics.auc > 0.9 OR metrics.f1 > 0.8 AND NOT status = 'FAILED'") == Or(
        (a, And((f, Not(failed))))
    )
    assert parse_filter("metrics.auc > 0.9 And metrics.f1 > 0.8 aNd status = 'FAILED'") == And(
        (a, f, failed)
    )
    assert parse_filter("((metrics.auc > 0.9))") == a
    assert parse_filter("NOT NOT metrics.auc > 0.9") == Not(Not(a))
    assert parse_filter("metrics.auc>0.9and(metrics.f1>0.8)") == And((a, f))


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_blank_filter_is_none(text: str | None) -> None:
    assert parse_filter(text) is None


def test_parses_order_by() -> None:
    assert parse_order_by(["metrics.auc DESC", "attributes.start_time", "params.lr asc"]) == [
        OrderKey("metrics", "auc", True),
        OrderKey("attributes", "start_time", False),
        OrderKey("params", "lr", False),
    ]
    assert parse_order_by(["tags.`my tag` desc", "name"]) == [
        OrderKey("tags", "my tag", True),
        OrderKey("attributes", "name", False),
    ]
    assert parse_order_by(None) == []
    assert parse_order_by([]) == []


# ---- error messages -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "metrics.auc foo 0.9",
            [
                "column 13",
                "expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN",
                "after 'metrics.auc'",
                "found 'foo'",
            ],
        ),
        ("(metrics.auc > 0.9", ["column 19", "')'", "'(' is never closed"]),
        ("metrics.auc > 0.9)", ["column 18", "no matching '('"]),
        ("((metrics.auc > 0.9)", ["'(' is never closed"]),
        ("metrics.auc >", ["expected a value", "after 'metrics.auc >'", "end of the text"]),
        ("metrics.auc > 0.9 and", ["expected a comparison", "after 'and'"]),
        ("metrics.auc = 'high'", ["metrics.auc compares numbers", "'high'", "column 15"]),
        ("metrics.auc IN (0.5, 'x')", ["compares numbers", "'x'"]),
        ("metrics.auc LIKE '1%'", ["LIKE cannot be used", "=, !=, <"]),
        ("params.lr > '0.1'", ["params.lr compares text", "> cannot be used", "LIKE"]),
        ("foo = 1", ["Unknown attribute 'foo'", "run_id", "start_time", "created_by"]),
        ("attributes.colour = 'red'", ["Unknown attribute 'colour'", "status"]),
        ("metricz.auc > 1", ["Unknown entity 'metricz'", "metrics.", "params.", "tags."]),
        ("params.x = null", ["IS NULL"]),
        ("params.x = `y`", ["Backticks quote keys"]),
        ("params.x = 'open", ["never closed", "''"]),
        ("params.x IN 1", ["a parenthesised list of values"]),
        ("params.x IN ()", ["expected a value"]),
        ("params.x IS 1", ["NULL or NOT NULL"]),
        ("metrics. > 1", ["expected a key"]),
        ("metrics.`` > 1", ["Empty key"]),
        ("start_time > 'yesterday'", ["start_time is a time", "'yesterday'", "ISO-8601"]),
        ("start_time LIKE '2024%'", ["LIKE cannot be used"]),
        ("metrics.a > 1e999", ["out of range"]),
        ("tags.t LIKE 'x\\'", ["lone backslash"]),
        ("metrics.a > 1\nand b", ["line 2, column 6"]),
        ("= 1", ["at the start", "expected a comparison"]),
    ],
)
def test_errors_say_what_and_where(text: str, parts: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_filter(text)
    message = str(err.value)
    for part in parts:
        assert part in message, message


def test_filter_length_and_depth_are_limited() -> None:
    with pytest.raises(InvalidInput, match="10,000"):
        parse_filter("params.x = '" + "a" * MAX_FILTER_LENGTH + "'")
    with pytest.raises(InvalidInput, match="levels deep"):
        parse_filter("NOT " * (MAX_DEPTH + 1) + "status = 'x'")
    nested = "(" * 60 + "status = 'x' and status = 'y'" + " or status = 'z')" * 60
    with pytest.raises(InvalidInput, match="levels deep"):
        parse_filter(nested)
    with pytest.raises(InvalidInput, match="comparisons"):
        parse_filter(" or ".join(["status = 'x'"] * 201))
    # Redundant parentheses add no depth.
    assert parse_filter("(" * 2000 + "status = 'x'" + ")" * 2000) == C(
        "attributes", "status", "=", "x"
    )


@pytest.mark.parametrize(
    ("items", "part"),
    [
        (["metrics.auc DOWN"], "expected ASC or DESC"),
        (["metrics.auc > 1"], "found '>'"),
        (["colour"], "Unknown attribute 'colour'"),
        ([""], "empty"),
        (["metrics.a"] * 21, "at most 20"),
    ],
)
def test_order_by_errors(items: list[str], part: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(part)):
        parse_order_by(items)


# ---- property tests -------------------------------------------------------------------
FILTER_TOKENS = [
    "metrics.auc", "params.lr", "tags.`a b`", 'tags."x"', "status", "start_time", "foo.bar",
    "and", "OR", "not", "in", "NOT IN", "is", "null", "like", "ILIKE", "(", ")", ",", ".",
    "=", "==", "!=", "<>", "<", "<=", ">", ">=", "0.5", "-1e3", "1e999", "'a'", "''", "'",
    '"', "`", "'2024-01-01'", "12", "\\", "%",
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(FILTER_TOKENS)).map(" ".join)))
def test_any_text_parses_or_raises_invalid_input(text: str) -> None:
    try:
        result = parse_filter(text)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert result is None or isinstance(result, Comparison | And | Or | Not)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.sampled_from(FILTER_TOKENS)), max_size=3))
def test_any_order_by_parses_or_raises_invalid_input(items: list[str]) -> None:
    try:
        keys = parse_order_by(items)
    except InvalidInput:
        return
    assert all(isinstance(k, OrderKey) for k in keys)


def like_safe(text: str) -> bool:
    return (len(text) - len(text.rstrip("\\"))) % 2 == 0


KEYS = st.one_of(
    st.sampled_from(["auc", "f1", "my metric", "model.lr", "in", "x`y"]),
    st.text(min_size=1, max_size=12),
)
TEXTS = st.text(max_size=12)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TIMES = st.datetimes(timezones=st.just(UTC))
STRING_ATTRS = ["run_id", "name", "status", "experiment_id", "parent_run_id", "created_by"]


def comparisons(keys: Any, texts: Any, floats: Any, times: Any) -> Any:
    def text_cmp(entity: str, key: Any) -> Any:
        return st.one_of(
            st.builds(C, st.just(entity), key, st.sampled_from(["=", "!="]), texts),
            st.builds(
                C, st.just(entity), key, st.sampled_from(["LIKE", "ILIKE"]), texts.filter(like_safe)
            ),
            st.builds(
                C,
                st.just(entity),
                key,
                st.sampled_from(["IN", "NOT IN"]),
                st.lists(texts, min_size=1, max_size=3).map(tuple),
            ),
            st.builds(C, st.just(entity), key, st.sampled_from(["IS NULL", "IS NOT NULL"])),
        )

    def ordered_cmp(entity: str, key: Any, values: Any) -> Any:
        return st.one_of(
            st.builds(
                C, st.just(entity), key, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), values
            ),
            st.builds(
                C,
                st.just(entity),
                key,
                st.sampled_from(["IN", "NOT IN"]),
                st.lists(values, min_size=1, max_size=3).map(tuple),
            ),
            st.builds(C, st.just(entity), key, st.sampled_from(["IS NULL", "IS NOT NULL"])),
        )

    return st.one_of(
        ordered_cmp("metrics", keys, floats),
        text_cmp("params", keys),
        text_cmp("tags", keys),
        text_cmp("attributes", st.sampled_from(STRING_ATTRS)),
        ordered_cmp("attributes", st.sampled_from(["start_time", "end_time"]), times),
    )


def expressions(leaves: Any) -> Any:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
            inner.map(Not),
        ),
        max_leaves=8,
    )


@settings(max_examples=200, deadline=None)
@given(expressions(comparisons(KEYS, TEXTS, FLOATS, TIMES)))
def test_rendered_expression_round_trips(expr: Expr) -> None:
    assert parse_filter(render_filter(expr)) == expr


# ---- a real database ------------------------------------------------------------------
@dataclass
class Seed:
    """A run as the tests see it; NaN metrics are None."""

    id: str
    name: str
    status: str
    start: datetime
    end: datetime | None = None
    parent: str | None = None
    user: str = "alice"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)


SEEDS = [
    Seed("r1", "trial-1", "FINISHED", T0, T0 + timedelta(minutes=30),
         params={"model": "lgbm", "lr": "0.1", "depth": "6"},
         tags={"team": "ml-core", "mlflow.user": "alice"},
         metrics={"auc": 0.95, "f1": 0.7, "my metric": 1.5}),
    Seed("r2", "trial-2", "FINISHED", T0 + timedelta(minutes=1), T0 + timedelta(hours=2),
         user="bob", params={"model": "xgb", "lr": "0.01"},
         tags={"team": "ML-ops", "mlflow.user": "bob", "note": "50%_off"},
         metrics={"auc": 0.85, "f1": 0.9}),
    Seed("r3", "baseline", "FAILED", T0 + timedelta(minutes=2),
         params={"model": "lgbm", "lr": "0.1"}, tags={"team": "data"}, metrics={"auc": 0.5}),
    Seed("r4", "Trial-3", "RUNNING", T0 + timedelta(minutes=3), parent="r1",
         metrics={"auc": None, "f1": 0.2}),
]  # fmt: skip


def seed_database(engine: Engine) -> None:
    import_all_tables()
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(Project(id=PROJECT_ID, name="default"))
        s.flush()
        s.add(Experiment(id="e1", project_id=PROJECT_ID, name="exp", created_by="alice"))
        s.flush()
        for seed in SEEDS:
            s.add(
                Run(
                    id=seed.id,
                    experiment_id="e1",
                    project_id=PROJECT_ID,
                    name=seed.name,
                    status=seed.status,
                    start_time=seed.start,
                    end_time=seed.end,
                    parent_run_id=seed.parent,
                    created_by=seed.user,
                )
            )
            s.flush()
            s.add_all(RunParam(run_id=seed.id, key=k, value=v) for k, v in seed.params.items())
            s.add_all(RunTag(run_id=seed.id, key=k, value=v) for k, v in seed.tags.items())
            s.add_all(
                LatestMetric(run_id=seed.id, key=k, value=v, step=0, timestamp_ms=0)
                for k, v in seed.metrics.items()
            )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'filters.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    eng = create_db_engine(url)
    seed_database(eng)
    yield eng
    eng.dispose()


def search(engine: Engine, text: str | None, order_by: list[str] | None = None) -> list[str]:
    stmt = select(Run.id)
    expr = parse_filter(text)
    if expr is not None:
        stmt = stmt.where(compile_filter(expr))
    stmt = apply_order(stmt, parse_order_by(order_by))
    with Session(engine) as s:
        return list(s.scalars(stmt))


# Default order is newest first: r4, r3, r2, r1.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ["r4", "r3", "r2", "r1"]),
        ("metrics.auc > 0.9", ["r1"]),
        ("metrics.auc >= 0.85", ["r2", "r1"]),
        ("metrics.auc < 0.9", ["r3", "r2"]),  # r4's NaN auc matches nothing
        ("metrics.auc != 0.5", ["r2", "r1"]),
        ("metrics.auc IN (0.5, 0.95)", ["r3", "r1"]),
        ("metrics.auc NOT IN (0.5)", ["r2", "r1"]),
        ("metrics.auc IS NULL", ["r4"]),  # NaN counts as missing
        ("metrics.auc IS NOT NULL", ["r3", "r2", "r1"]),
        ("metrics.f1 IS NULL", ["r3"]),
        ("metrics.`my metric` = 1.5", ["r1"]),
        ("params.model = 'lgbm'", ["r3", "r1"]),
        ("params.depth = 6", ["r1"]),
        ("params.model != 'lgbm'", ["r2"]),  # runs lacking the param do not match
        ("params.lr IN ('0.1', '0.01')", ["r3", "r2", "r1"]),
        ("params.lr NOT IN ('0.1')", ["r2"]),
        ("params.depth IS NULL", ["r4", "r3", "r2"]),
        ("params.depth IS NOT NULL", ["r1"]),
        ("tags.team LIKE 'ml%'", ["r1"]),  # LIKE is case-sensitive on every backend
        ("tags.team ILIKE 'ml%'", ["r2", "r1"]),
        ("tags.team LIKE '_l-%'", ["r1"]),
        ("tags.note LIKE '50\\%\\_off'", ["r2"]),
        ("tags.note LIKE '50\\%\\_of'", []),
        ("tags.\"mlflow.user\" != 'bob'", ["r1"]),
        ("attributes.name LIKE 'trial-%'", ["r2", "r1"]),
        ("name ILIKE 'trial-%'", ["r4", "r2", "r1"]),
        ("attributes.status = 'FINISHED'", ["r2", "r1"]),
        ("status IN ('FAILED', 'RUNNING')", ["r4", "r3"]),
        ("run_id = 'r2'", ["r2"]),
        ("user = 'bob'", ["r2"]),
        ("experiment_id = 'e1' and parent_run_id = 'r1'", ["r4"]),
        ("parent_run_id IS NULL", ["r3", "r2", "r1"]),
        ("end_time IS NULL", ["r4", "r3"]),
        ("start_time > '2024-05-01T12:01:00Z'", ["r4", "r3"]),
        ("start_time >= '2024-05-01T14:01:00+02:00'", ["r4", "r3", "r2"]),
        ("start_time <= 1714564800000", ["r1"]),
        ("end_time > '2024-05-01T13:00:00'", ["r2"]),
        ("metrics.auc > 0.9 and params.model = 'lgbm'", ["r1"]),
        ("metrics.auc > 0.9 or metrics.f1 > 0.8", ["r2", "r1"]),
        (
            "(metrics.auc > 0.9 or metrics.f1 > 0.8) and not attributes.status = 'FAILED'",
            ["r2", "r1"],
        ),
        ("not params.model = 'lgbm'", ["r2"]),  # as in SQL: missing stays unknown under NOT
        ("not (params.model = 'lgbm' or metrics.f1 > 0.5)", []),
        ("not params.depth IS NULL", ["r1"]),
        ("not not metrics.auc > 0.9", ["r1"]),
        ("params.model = 'lgbm' and not metrics.auc < 0.6", ["r1"]),
    ],
)
def test_search_results(engine: Engine, text: str | None, expected: list[str]) -> None:
    assert search(engine, text) == expected


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (["metrics.auc DESC"], ["r1", "r2", "r3", "r4"]),  # NaN / missing last
        (["metrics.auc"], ["r3", "r2", "r1", "r4"]),
        (["metrics.f1 DESC"], ["r2", "r1", "r4", "r3"]),
        (["metrics.f1 ASC"], ["r4", "r1", "r2", "r3"]),
        (["params.depth"], ["r1", "r4", "r3", "r2"]),  # ties: newest first
        (["params.model", "metrics.auc DESC"], ["r1", "r3", "r2", "r4"]),
        (["params.model DESC", "attributes.start_time"], ["r2", "r1", "r3", "r4"]),
        (["attributes.end_time DESC"], ["r2", "r1", "r4", "r3"]),
        (["start_time"], ["r1", "r2", "r3", "r4"]),
        (["name"], ["Trial-3", "baseline", "trial-1", "trial-2"]),
        (["tags.`mlflow.user` desc"], ["r2", "r1", "r4", "r3"]),
        (["metrics.auc DESC", "metrics.auc DESC"], ["r1", "r2", "r3", "r4"]),
    ],
)
def test_ordering(engine: Engine, order_by: list[str], expected: list[str]) -> None:
    got = search(engine, None, order_by)
    if order_by == ["name"]:
        names = {s.id: s.name for s in SEEDS}
        got = [names[i] for i in got]
    assert got == expected


def test_filter_and_order_together(engine: Engine) -> None:
    text = "metrics.auc IS NOT NULL and params.lr IN ('0.1', '0.01')"
    assert search(engine, text, ["metrics.auc DESC"]) == ["r1", "r2", "r3"]
    expr = parse_filter("metrics.f1 > 0")
    assert expr is not None
    with Session(engine) as s:  # full Run rows, as the service selects them
        stmt = select(Run).where(compile_filter(expr))
        stmt = apply_order(stmt, parse_order_by(["metrics.f1 DESC", "params.lr"]))
        assert [r.id for r in s.scalars(stmt).unique()] == ["r2", "r1", "r4"]


# ---- SQL injection --------------------------------------------------------------------
HOSTILE_VALUES = [
    "'x'' OR 1=1 --'",
    "'x'' OR ''1''=''1'",
    "'; DROP TABLE runs; --'",
    '"; DROP TABLE runs; --"',
    "'%'' OR 1=1 --'",
    "'\\'' OR 1=1 --'",
]
HOSTILE_KEYS = [
    "`x' OR 1=1 --`",
    '"a""; DROP TABLE runs; --"',
    "`auc'); DROP TABLE latest_metrics; --`",
]


def table_state(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        names = inspect(engine).get_table_names()
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
            if t.name in names
        }


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize(
    "template",
    [
        "params.model = {v}",
        "tags.team != {v}",
        "attributes.name = {v}",
        "name LIKE {v}",
        "params.lr IN ('0.5', {v})",
        "tags.team NOT IN ({v})",
        "status ILIKE {v}",
    ],
)
def test_hostile_values_are_plain_values(engine: Engine, template: str, value: str) -> None:
    before = table_state(engine)
    expr = parse_filter(template.format(v=value))
    assert expr is not None
    literal_values = [value[1:-1].replace(value[0] * 2, value[0])]
    found = expr.value if isinstance(expr, Comparison) else None
    assert found is not None
    assert literal_values[0] in (found if isinstance(found, tuple) else (found,))
    got = search(engine, template.format(v=value))
    # NOT IN / != over a hostile value matches runs having the key and any other value.
    if template.startswith(("tags.team !=", "tags.team NOT IN")):
        assert got == ["r3", "r2", "r1"]
    else:
        assert got == []
    assert table_state(engine) == before
    assert before["runs"] == 4


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_plain_keys(engine: Engine, key: str) -> None:
    before = table_state(engine)
    for entity in ("metrics", "params", "tags"):
        op_value = "> 0" if entity == "metrics" else "= 'x'"
        assert search(engine, f"{entity}.{key} {op_value} or {entity}.{key} IS NOT NULL") == []
        assert len(search(engine, f"{entity}.{key} IS NULL", [f"{entity}.{key} DESC"])) == 4
    assert table_state(engine) == before


def test_values_are_bound_parameters() -> None:
    from sqlalchemy.dialects import sqlite

    expr = parse_filter("params.model = 'x'' OR 1=1 --' and tags.`k'; --` LIKE 'a%'")
    assert expr is not None
    compiled = select(Run.id).where(compile_filter(expr)).compile(dialect=sqlite.dialect())
    sql = str(compiled)
    assert "OR 1=1" not in sql and "k'" not in sql and "a%" not in sql
    assert "x' OR 1=1 --" in compiled.params.values()


# ---- differential property test: SQL results == a Python reference -----------------------
def _like_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars)))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE | re.ASCII if ignore_case else 0))


def _ascii_lower(text: str) -> str:
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in text)


def _value_of(seed: Seed, c: Comparison) -> Any:
    if c.entity == "metrics":
        return seed.metrics.get(c.key)
    if c.entity in ("params", "tags"):
        return getattr(seed, c.entity).get(c.key)
    return {
        "run_id": seed.id,
        "name": seed.name,
        "status": seed.status,
        "start_time": seed.start,
        "end_time": seed.end,
        "experiment_id": "e1",
        "parent_run_id": seed.parent,
        "created_by": seed.user,
    }[c.key]


def evaluate(expr: Expr, seed: Seed) -> bool | None:
    """Three-valued logic, as SQL: None means unknown."""
    if isinstance(expr, Not):
        inner = evaluate(expr.item, seed)
        return None if inner is None else not inner
    if isinstance(expr, And | Or):
        results = [evaluate(item, seed) for item in expr.items]
        decisive = isinstance(expr, Or)  # True decides an OR, False decides an AND
        if decisive in results:
            return decisive
        return None if None in results else not decisive
    v = _value_of(seed, expr)
    if expr.op == "IS NULL":
        return v is None
    if expr.op == "IS NOT NULL":
        return v is not None
    if v is None:
        return None
    w: Any = expr.value
    ops: dict[str, Any] = {
        "=": lambda: v == w,
        "!=": lambda: v != w,
        "<": lambda: v < w,
        "<=": lambda: v <= w,
        ">": lambda: v > w,
        ">=": lambda: v >= w,
        "IN": lambda: v in w,
        "NOT IN": lambda: v not in w,
        "LIKE": lambda: bool(_like_regex(str(w), False).fullmatch(v)),
        "ILIKE": lambda: bool(_like_regex(_ascii_lower(str(w)), True).fullmatch(_ascii_lower(v))),
    }
    return bool(ops[expr.op]())


SEED_TEXTS = sorted(
    {v for s in SEEDS for v in (*s.params.values(), *s.tags.values(), s.name, s.status, s.id)}
    | {"%", "_", "ml%", "%a%", "trial-_", "TRIAL%", "l%b%", "%\\%%", "%\\_o%", "*", "[a]", "?"}
)
SEED_TIMES = sorted({s.start for s in SEEDS} | {s.end for s in SEEDS if s.end})
SEED_KEYS = sorted({k for s in SEEDS for d in (s.params, s.tags, s.metrics) for k in d} | {"zz"})
SEED_FLOATS = sorted({v for s in SEEDS for v in s.metrics.values() if v is not None} | {0.0})


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    expressions(
        comparisons(
            st.sampled_from(SEED_KEYS),
            st.one_of(st.sampled_from(SEED_TEXTS), st.text(alphabet="aAlmL%_-\\*?[]", max_size=5)),
            st.one_of(st.sampled_from(SEED_FLOATS), FLOATS),
            st.one_of(st.sampled_from(SEED_TIMES), TIMES),
        )
    )
)
def test_sql_agrees_with_reference(engine: Engine, expr: Expr) -> None:
    expected = [
        s.id
        for s in sorted(SEEDS, key=lambda s: s.start, reverse=True)
        if evaluate(expr, s) is True
    ]
    stmt = apply_order(select(Run.id).where(compile_filter(expr)), [])
    with Session(engine) as s:
        assert list(s.scalars(stmt)) == expected, render_filter(expr)


def test_reference_sanity() -> None:
    # The reference evaluator itself: NaN metric is missing, missing is unknown.
    r4 = SEEDS[3]
    assert evaluate(C("metrics", "auc", ">", 0.0), r4) is None
    assert evaluate(Not(C("metrics", "auc", ">", 0.0)), r4) is None
    assert evaluate(Or((C("metrics", "auc", ">", 0.0), C("metrics", "f1", ">", 0.0))), r4)
