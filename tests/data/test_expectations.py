"""Expectation suites: the YAML edge, its error messages, JSON, and inference from profiles."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelworks.core.errors import InvalidInput
from modelworks.data.expectations import (
    AllowedValues,
    ColumnPresent,
    ColumnType,
    Expectation,
    ExpectationSuite,
    Freshness,
    NullRate,
    Range,
    Regex,
    RowCount,
    Unique,
    dump_suite,
    infer_suite,
    load_suite,
    parse_duration,
    suite_from_json,
    suite_to_json,
)
from modelworks.data.schemas import ColumnProfile, Histogram, Profile, TopValue

FULL_SUITE = """\
on_failure: quarantine
expectations:
  - type: row_count
    min: 1
    max: 1000000
  - type: column_present
    column: email
  - type: column_type
    column: age
    dtype: int64
  - type: column_type
    column: score
    dtype: numeric
    severity: warning
  - type: null_rate
    column: email
    max: 0.05
    description: A few sign-ups come without an email.
  - type: range
    column: age
    min: 0
    max: 120
  - type: range
    column: created
    min: 2020-01-01
    max: "2030-01-01T00:00:00+00:00"
  - type: allowed_values
    column: plan
    values: [free, pro, "team: large", 3]
  - type: regex
    column: email
    pattern: '^[^@]+@[^@]+$'
  - type: unique
    column: id
  - type: unique
    columns: [tenant, id]
  - type: freshness
    column: created
    max_age: 1h30m
"""


def test_load_every_expectation_type() -> None:
    suite = load_suite(FULL_SUITE)
    assert suite.on_failure == "quarantine"
    e = suite.expectations
    assert e[0] == RowCount(min=1, max=1_000_000)
    assert e[1] == ColumnPresent(column="email")
    assert e[2] == ColumnType(column="age", dtype="int64")
    assert e[3] == ColumnType(column="score", dtype="numeric", severity="warning")
    assert e[4] == NullRate(
        column="email", max=0.05, description="A few sign-ups come without an email."
    )
    assert e[5] == Range(column="age", min=0, max=120)
    # An unquoted YAML date is kept as ISO text, like a quoted one.
    assert e[6] == Range(column="created", min="2020-01-01", max="2030-01-01T00:00:00+00:00")
    assert e[7] == AllowedValues(column="plan", values=["free", "pro", "team: large", 3])
    assert e[8] == Regex(column="email", pattern="^[^@]+@[^@]+$")
    assert isinstance(e[9], Unique) and e[9].keys == ["id"]
    assert isinstance(e[10], Unique) and e[10].keys == ["tenant", "id"]
    assert isinstance(e[11], Freshness)
    assert e[11].max_age_delta == dt.timedelta(hours=1, minutes=30)


def test_defaults_and_shorthands() -> None:
    assert load_suite("") == ExpectationSuite()
    assert load_suite("# only a comment\n") == ExpectationSuite()
    bare = load_suite("- type: column_present\n  column: a\n")
    assert bare == ExpectationSuite(expectations=[ColumnPresent(column="a")])
    assert bare.on_failure == "fail"
    assert bare.expectations[0].severity == "error"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("2d", 172_800),
        ("1w", 604_800),
        ("1h30m", 5400),
        ("1.5h", 5400),
        (" 2 d ", 172_800),
        ("1H", 3600),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


def problem(yaml_text: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        load_suite(yaml_text)
    return str(caught.value.detail)


def test_bad_yaml_names_the_line() -> None:
    message = problem("expectations:\n  - type: row_count\n    min: 1\n   bad: [\n")
    assert message.startswith("The expectation suite is not valid YAML at line 4")
    assert "indentation" in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "expectations:\n  - type: row_count\n    min: 1\n  - type: nul_rate\n    column: a\n",
            "line 4, expectations[1].type: unknown type 'nul_rate'; use one of column_present",
        ),
        (
            "expectations:\n  - column: a\n",
            "line 2, expectations[0]: has no 'type'; add type: one of column_present",
        ),
        (
            "expectations:\n  - type: null_rate\n    column: a\n",
            "line 2, expectations[0].max: is required; add it",
        ),
        (
            "expectations:\n  - type: null_rate\n    column: a\n    max: 1.5\n",
            "line 4, expectations[0].max: Input should be less than or equal to 1",
        ),
        (
            "expectations:\n  - type: null_rate\n    column: a\n    max: 0.1\n    maximum: 2\n",
            "line 5, expectations[0].maximum: is not a setting of this expectation; remove it",
        ),
        (
            "on_failure: explode\n",
            "line 1, on_failure: must be fail, quarantine or warn",
        ),
        (
            "expectations:\n  - type: regex\n    column: a\n    pattern: '[a-z'\n",
            "line 4, expectations[0].pattern: pattern '[a-z' is not a valid regular expression",
        ),
        (
            "expectations:\n  - type: regex\n    column: a\n    pattern: 'a(?=b)'\n",
            "is not supported by DuckDB's RE2 engine (no look-arounds or backreferences)",
        ),
        (
            "expectations:\n  - type: freshness\n    column: a\n    max_age: soon\n",
            "line 4, expectations[0].max_age: 'soon' is not a duration: write a number and a unit",
        ),
        (
            "expectations:\n  - type: range\n    column: a\n",
            "line 2, expectations[0]: give min, max or both",
        ),
        (
            "expectations:\n  - type: range\n    column: a\n    min: 5\n    max: 1\n",
            "min (5) is greater than max (1)",
        ),
        (
            "expectations:\n  - type: range\n    column: a\n    min: 1\n    max: 2024-01-01\n",
            "min and max must both be numbers or both be dates/times",
        ),
        (
            "expectations:\n  - type: range\n    column: a\n    min: yesterday\n",
            "line 4, expectations[0].min: 'yesterday' is neither a number nor an ISO date/time",
        ),
        (
            "expectations:\n  - type: unique\n    column: a\n    columns: [a, b]\n",
            "give either column (one name) or columns (a list of names)",
        ),
        (
            "expectations:\n  - type: column_type\n    column: a\n    dtype: integr\n",
            "unknown type 'integr': use an Arrow type name such as int64",
        ),
        (
            "expectations:\n  - type: allowed_values\n    column: a\n    values: []\n",
            "line 4, expectations[0].values: List should have at least 1 item",
        ),
        (
            "expectations:\n  - type: severity\n",
            "unknown type 'severity'",
        ),
        ("42\n", "An expectation suite is a YAML mapping with an 'expectations' list"),
    ],
)
def test_field_errors_name_the_line_and_what_to_fix(yaml_text: str, expected: str) -> None:
    message = problem(yaml_text)
    assert expected in message, message
    assert "Traceback" not in message


def test_several_problems_are_reported_together() -> None:
    message = problem(
        "expectations:\n  - type: null_rate\n    column: a\n    max: 2\n"
        "  - type: row_count\n    min: -1\n"
    )
    assert message.startswith("The expectation suite is not valid (2 problems): ")
    assert "line 4, expectations[0].max" in message
    assert "line 6, expectations[1].min" in message


def test_dtype_aliases_and_parametrised_types_are_accepted() -> None:
    for dtype in ("float64", "double", "timestamp[us]", "date32[day]", "decimal128(10, 2)"):
        assert ColumnType(column="a", dtype=dtype).dtype == dtype
    assert ColumnType(column="a", dtype=" integer ").dtype == "integer"


def test_dump_is_readable_yaml_that_loads_back() -> None:
    suite = load_suite(FULL_SUITE)
    text = dump_suite(suite)
    assert text.startswith("# Modelworks expectation suite")
    assert "on_failure: quarantine\n" in text
    assert "- type: range\n  column: age\n  min: 0\n  max: 120\n" in text
    assert "values: [free, pro, 'team: large', 3]" in text
    assert "severity: error" not in text  # the default is left out
    assert "severity: warning" in text
    assert load_suite(text) == suite


def test_json_round_trip() -> None:
    suite = load_suite(FULL_SUITE)
    data = suite_to_json(suite)
    assert data["on_failure"] == "quarantine"
    assert data["expectations"][0] == {
        "type": "row_count",
        "min": 1,
        "max": 1_000_000,
        "severity": "error",
    }
    assert suite_from_json(data) == suite
    with pytest.raises(InvalidInput, match=r"expectations\[0\]\.max: is required"):
        suite_from_json({"expectations": [{"type": "null_rate", "column": "a"}]})


# ---- Hypothesis: any suite survives YAML and JSON ---------------------------------------------

names = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
scalars = st.one_of(st.booleans(), st.integers(-(10**12), 10**12), finite, st.text(max_size=10))
common: dict[str, Any] = {
    "severity": st.sampled_from(["error", "warning"]),
    "description": st.one_of(st.none(), st.text(max_size=30)),
}
instants = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
    lambda d: d.isoformat()
)


def ordered(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    low, high = pair
    key = dt.datetime.fromisoformat if isinstance(low, str) else (lambda v: v)
    return (low, high) if key(low) <= key(high) else (high, low)


ranges = st.one_of(
    st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000)),
    st.tuples(finite, finite),
    st.tuples(instants, instants),
).map(ordered)

expectations: st.SearchStrategy[Expectation] = st.one_of(
    st.builds(ColumnPresent, column=names, **common),
    st.builds(
        ColumnType,
        column=names,
        dtype=st.sampled_from(["int64", "double", "string", "bool", "numeric", "timestamp[us]"]),
        **common,
    ),
    st.builds(NullRate, column=names, max=st.floats(0, 1), **common),
    ranges.flatmap(
        lambda r: st.builds(Range, column=names, min=st.just(r[0]), max=st.just(r[1]), **common)
    ),
    st.builds(
        AllowedValues, column=names, values=st.lists(scalars, min_size=1, max_size=5), **common
    ),
    st.builds(
        Regex,
        column=names,
        pattern=st.sampled_from([r"^\d+$", "[a-z]+@[a-z]+", "a|b", r"^\w{2,3}$"]),
        **common,
    ),
    st.builds(Unique, column=names, **common),
    st.builds(Unique, columns=st.lists(names, min_size=1, max_size=3), **common),
    st.builds(RowCount, min=st.integers(0, 100), max=st.integers(100, 10**9), **common),
    st.builds(
        Freshness,
        column=names,
        max_age=st.tuples(st.integers(1, 999), st.sampled_from("smhdw")).map(
            lambda t: f"{t[0]}{t[1]}"
        ),
        **common,
    ),
)
suites = st.builds(
    ExpectationSuite,
    expectations=st.lists(expectations, max_size=6),
    on_failure=st.sampled_from(["fail", "quarantine", "warn"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suites)
def test_any_suite_round_trips_through_yaml_and_json(suite: ExpectationSuite) -> None:
    assert load_suite(dump_suite(suite)) == suite
    assert suite_from_json(suite_to_json(suite)) == suite


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_or_says_what_is_wrong(text: str) -> None:
    try:
        load_suite(text)
    except InvalidInput as exc:
        assert exc.detail.startswith("The expectation suite is not valid") or exc.detail.startswith(
            "An expectation suite is a YAML mapping"
        )


# ---- inference ------------------------------------------------------------------------------


def column(**fields: Any) -> ColumnProfile:
    base: dict[str, Any] = {"nulls": 0, "null_rate": 0.0}
    return ColumnProfile(**(base | fields))


def test_infer_suite_from_a_profile() -> None:
    histogram = Histogram(edges=[0.0, 1.0], counts=[1000])
    profile = Profile(
        row_count=1000,
        engine="duckdb test",
        columns=[
            column(
                name="id",
                type="int64",
                kind="numeric",
                count=1000,
                distinct=995,
                min=1,
                max=1000,
                histogram=histogram,
            ),
            column(
                name="amount",
                type="double",
                kind="numeric",
                count=900,
                nulls=100,
                null_rate=0.1,
                distinct=850,
                min=-2.5,
                max=99.75,
            ),
            column(
                name="plan",
                type="string",
                kind="string",
                count=1000,
                distinct=3,
                top_values=[
                    TopValue(value="free", count=700),
                    TopValue(value="pro", count=250),
                    TopValue(value="team", count=50),
                ],
            ),
            column(
                name="city",
                type="string",
                kind="string",
                count=1000,
                distinct=15,
                top_values=[TopValue(value=f"c{i}", count=60) for i in range(10)],
            ),
            column(name="code", type="string", kind="string", count=1000, distinct=1000),
            column(
                name="ratio",
                type="double",
                kind="numeric",
                count=1000,
                distinct=1000,
                min=0.0,
                max=1.0,
            ),
            column(
                name="note",
                type="string",
                kind="string",
                count=999,
                nulls=1,
                null_rate=0.001,
                distinct=999,
            ),
            column(
                name="when",
                type="timestamp[us]",
                kind="temporal",
                count=1000,
                distinct=1000,
                min="2024-01-01T00:00:00",
                max="2024-02-01T00:00:00",
            ),
            column(name="empty", type="double", kind="numeric", count=0, nulls=1000, null_rate=1.0),
        ],
    )
    suite = infer_suite(profile)
    by_column: dict[str, list[dict[str, Any]]] = {}
    for e in suite_to_json(suite)["expectations"]:
        by_column.setdefault(e.get("column", "*"), []).append(
            {k: v for k, v in e.items() if k not in ("column", "severity")}
        )
    assert by_column["*"] == [{"type": "row_count", "min": 1}]
    assert by_column["id"] == [
        {"type": "column_type", "dtype": "int64"},
        {"type": "null_rate", "max": 0.0},
        {"type": "range", "min": 1, "max": 1000},
        {"type": "unique"},
    ]
    assert by_column["amount"] == [
        {"type": "column_type", "dtype": "double"},
        {"type": "null_rate", "max": 0.16},  # 0.1 * 1.5 + 0.01
        {"type": "range", "min": -2.5, "max": 99.75},
    ]
    assert by_column["plan"][-1] == {"type": "allowed_values", "values": ["free", "pro", "team"]}
    # Fifteen cities, but the top ten cover only 600 of 1000 rows: no allowed_values.
    assert [e["type"] for e in by_column["city"]] == ["column_type", "null_rate"]
    assert by_column["code"][-1] == {"type": "unique"}
    # Doubles are never keys; a column with nulls is not unique.
    assert "unique" not in [e["type"] for e in by_column["ratio"] + by_column["note"]]
    assert by_column["note"][1] == {"type": "null_rate", "max": 0.0115}
    assert [e["type"] for e in by_column["when"]] == ["column_type", "null_rate"]
    assert by_column["empty"] == [
        {"type": "column_type", "dtype": "double"},
        {"type": "null_rate", "max": 1.0},
    ]
    assert load_suite(dump_suite(suite)) == suite


def test_null_rate_slack_is_rounded_up() -> None:
    profile = Profile(
        row_count=3,
        engine="duckdb test",
        columns=[column(name="a", type="int64", kind="numeric", count=2, nulls=1, null_rate=1 / 3)],
    )
    (null_rate,) = [e for e in infer_suite(profile).expectations if isinstance(e, NullRate)]
    assert null_rate.max == 0.51  # 1/3 * 1.5 + 0.01 = 0.51 (after rounding up to 4 places)
    assert null_rate.max >= 1 / 3 * 1.5 + 0.01 - 1e-12
    assert re.fullmatch(r"0\.\d{1,4}", str(null_rate.max))
