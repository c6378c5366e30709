"""Profiles computed by DuckDB, checked against numbers computed independently with numpy."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import statistics
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelworks.core.config import Settings
from modelworks.data import profile as profile_module
from modelworks.data import storage
from modelworks.data.profile import HISTOGRAM_BINS, MAX_TEXT, QUANTILES, json_safe, profile_paths
from modelworks.data.schemas import ColumnProfile, Profile

N = 20_000


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    # The project's own connection settings; two threads so partial aggregates get merged.
    home = tmp_path_factory.mktemp("home")
    connection = storage.connect(Settings(home=home), threads=2)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def frame() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    amount = rng.normal(100.0, 15.0, N)
    amount_missing = rng.random(N) < 0.1
    colors = rng.choice(["red", "green", "blue", "black"], N, p=[0.5, 0.3, 0.15, 0.05])
    colors_missing = rng.random(N) < 0.02
    seconds = rng.integers(0, 86_400 * 365, N)
    flags = rng.random(N) < 0.3
    flags_missing = rng.random(N) < 0.05
    return {
        "id": np.arange(N, dtype=np.int64),
        "age": rng.integers(0, 100, N).astype(np.int32),
        "amount": amount,
        "amount_missing": amount_missing,
        "color": colors,
        "color_missing": colors_missing,
        "user": np.array([f"user-{i:06d}" for i in rng.permutation(N)]),
        "seconds": seconds,
        "flag": flags,
        "flag_missing": flags_missing,
        "rating": rng.integers(1, 6, N).astype(np.int16),
    }


def write_frame(frame: dict[str, np.ndarray], path: Path) -> Path:
    start = dt.datetime(2023, 1, 1)
    table = pa.table(
        {
            "id": frame["id"],
            "age": frame["age"],
            "amount": pa.array(frame["amount"], mask=frame["amount_missing"]),
            "color": pa.array(frame["color"], mask=frame["color_missing"]),
            "user": frame["user"],
            "created": pa.array(
                [start + dt.timedelta(seconds=int(s)) for s in frame["seconds"]],
                pa.timestamp("us"),
            ),
            "flag": pa.array(frame["flag"], mask=frame["flag_missing"]),
            "rating": frame["rating"],
            "nothing": pa.nulls(N, pa.float64()),
            'odd "name"; --': np.ones(N),
        }
    )
    pq.write_table(table, path, row_group_size=4_096)
    return path


@pytest.fixture(scope="module")
def profile(
    con: duckdb.DuckDBPyConnection,
    frame: dict[str, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> Profile:
    path = write_frame(frame, tmp_path_factory.mktemp("profile") / "data.parquet")
    return profile_paths(con, [str(path)])


def right_closed_counts(values: np.ndarray, edges: list[float]) -> list[int]:
    """What histogram(x, inner edges) counts: x goes to the first bin whose upper edge >= x."""
    index = np.searchsorted(np.asarray(edges[1:-1]), values, side="left")
    return [int(n) for n in np.bincount(index, minlength=len(edges) - 1)]


def test_counts_and_nulls_match_the_data(profile: Profile, frame: dict[str, np.ndarray]) -> None:
    assert profile.row_count == N
    assert profile.engine == f"duckdb {duckdb.__version__}"
    assert profile.seconds > 0
    expected_nulls = {
        "id": 0,
        "amount": int(frame["amount_missing"].sum()),
        "color": int(frame["color_missing"].sum()),
        "flag": int(frame["flag_missing"].sum()),
        "nothing": N,
    }
    for name, nulls in expected_nulls.items():
        column = profile.column(name)
        assert column.nulls == nulls, name
        assert column.count == N - nulls, name
        assert column.null_rate == pytest.approx(nulls / N), name


def test_types_and_kinds_come_from_the_arrow_schema(profile: Profile) -> None:
    kinds = {c.name: (c.type, c.kind) for c in profile.columns}
    assert kinds == {
        "id": ("int64", "numeric"),
        "age": ("int32", "numeric"),
        "amount": ("double", "numeric"),
        "color": ("string", "string"),
        "user": ("string", "string"),
        "created": ("timestamp[us]", "temporal"),
        "flag": ("bool", "boolean"),
        "rating": ("int16", "numeric"),
        "nothing": ("double", "numeric"),
        'odd "name"; --': ("double", "numeric"),
    }


def test_numeric_statistics_match_numpy(profile: Profile, frame: dict[str, np.ndarray]) -> None:
    amount = frame["amount"][~frame["amount_missing"]]
    column = profile.column("amount")
    assert column.min == pytest.approx(amount.min(), rel=1e-12)
    assert column.max == pytest.approx(amount.max(), rel=1e-12)
    assert column.mean == pytest.approx(amount.mean(), rel=1e-9)
    assert column.std == pytest.approx(amount.std(ddof=1), rel=1e-9)
    assert column.distinct == len(np.unique(amount))  # exact: small data

    ages = frame["age"]
    age = profile.column("age")
    assert (age.min, age.max) == (int(ages.min()), int(ages.max()))
    assert age.mean == pytest.approx(ages.mean(), rel=1e-9)


def test_quantiles_are_close_to_exact_ones(profile: Profile, frame: dict[str, np.ndarray]) -> None:
    amount = frame["amount"][~frame["amount_missing"]]
    quantiles = profile.column("amount").quantiles
    assert quantiles is not None
    assert list(quantiles) == ["0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"]
    spread = amount.max() - amount.min()
    for q in QUANTILES:
        assert quantiles[f"{q:g}"] == pytest.approx(np.quantile(amount, q), abs=0.01 * spread)
    values = list(quantiles.values())
    assert values == sorted(values)


def test_numeric_histogram_counts_every_value_in_its_bin(
    profile: Profile, frame: dict[str, np.ndarray]
) -> None:
    amount = frame["amount"][~frame["amount_missing"]]
    histogram = profile.column("amount").histogram
    assert histogram is not None
    assert len(histogram.counts) == HISTOGRAM_BINS
    assert len(histogram.edges) == HISTOGRAM_BINS + 1
    edges = [float(e) for e in histogram.edges]
    assert edges == pytest.approx(np.linspace(amount.min(), amount.max(), HISTOGRAM_BINS + 1))
    assert sum(histogram.counts) == len(amount)
    assert histogram.counts == right_closed_counts(amount, edges)

    # Integers land exactly on edges: the right-closed rule decides, the same way every time.
    ages = frame["age"]
    age_histogram = profile.column("age").histogram
    assert age_histogram is not None
    age_edges = [float(e) for e in age_histogram.edges]
    assert age_histogram.counts == right_closed_counts(ages, age_edges)


def test_temporal_columns_are_iso_strings(profile: Profile, frame: dict[str, np.ndarray]) -> None:
    start = dt.datetime(2023, 1, 1)
    moments = sorted(start + dt.timedelta(seconds=int(s)) for s in frame["seconds"])
    created = profile.column("created")
    assert created.min == moments[0].isoformat()
    assert created.max == moments[-1].isoformat()
    assert created.mean is None and created.std is None
    histogram = created.histogram
    assert histogram is not None
    assert sum(histogram.counts) == N
    assert histogram.edges[0] == moments[0].isoformat()
    assert histogram.edges[-1] == moments[-1].isoformat()
    edges = [dt.datetime.fromisoformat(str(e)) for e in histogram.edges]
    assert edges == sorted(edges)
    epoch = np.array([(m - dt.datetime(1970, 1, 1)).total_seconds() for m in moments])
    edge_seconds = [(e - dt.datetime(1970, 1, 1)).total_seconds() for e in edges]
    assert histogram.counts == right_closed_counts(epoch, edge_seconds)
    assert created.quantiles is not None
    median = dt.datetime.fromisoformat(created.quantiles["0.5"])
    assert abs((median - moments[N // 2]).total_seconds()) < 86_400 * 365 * 0.01


def test_top_values_are_exact_counts(profile: Profile, frame: dict[str, np.ndarray]) -> None:
    colors = Counter(frame["color"][~frame["color_missing"]].tolist())
    assert [(t.value, t.count) for t in profile.column("color").top_values] == (
        colors.most_common()
    )
    flags = Counter(frame["flag"][~frame["flag_missing"]].tolist())
    assert [(t.value, t.count) for t in profile.column("flag").top_values] == (flags.most_common())
    ratings = Counter(int(r) for r in frame["rating"])
    top = profile.column("rating").top_values
    assert {t.value: t.count for t in top} == dict(ratings)
    assert [t.count for t in top] == sorted((t.count for t in top), reverse=True)


def test_unique_strings_and_wide_numbers_have_no_top_values(profile: Profile) -> None:
    # Every user appears once: ten arbitrary ids with count 1 would say nothing.
    assert profile.column("user").top_values == []
    assert profile.column("amount").top_values == []
    assert profile.column("age").top_values == []  # 100 distinct values: the histogram says it


def test_all_null_and_constant_columns(profile: Profile) -> None:
    nothing = profile.column("nothing")
    assert (nothing.count, nothing.nulls, nothing.null_rate) == (0, N, 1.0)
    assert nothing.min is None and nothing.mean is None and nothing.histogram is None
    assert nothing.quantiles is None and nothing.top_values == []

    constant = profile.column('odd "name"; --')
    assert (constant.min, constant.max, constant.std) == (1.0, 1.0, 0.0)
    assert constant.histogram is not None
    assert constant.histogram.edges == [1.0, 1.0]
    assert constant.histogram.counts == [N]
    assert [(t.value, t.count) for t in constant.top_values] == [(1.0, N)]


def test_profile_is_json_safe(profile: Profile) -> None:
    text = profile.model_dump_json()
    assert "NaN" not in text and "Infinity" not in text
    assert Profile.model_validate_json(text) == profile


def test_empty_dataset(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    table = pa.table(
        {
            "n": pa.array([], pa.int64()),
            "s": pa.array([], pa.string()),
            "t": pa.array([], pa.timestamp("us")),
            "b": pa.array([], pa.bool_()),
        }
    )
    pq.write_table(table, path)
    profile = profile_paths(con, [str(path)])
    assert profile.row_count == 0
    for column in profile.columns:
        assert (column.count, column.nulls, column.null_rate) == (0, 0, 0.0)
        assert column.histogram is None and column.top_values == []
        assert column.min is None and column.max is None


def test_all_null_columns_of_every_kind(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    table = pa.table(
        {
            "n": pa.nulls(3, pa.int64()),
            "s": pa.nulls(3, pa.string()),
            "t": pa.nulls(3, pa.timestamp("us", tz="UTC")),
            "b": pa.nulls(3, pa.bool_()),
            "untyped": pa.nulls(3),
        }
    )
    pq.write_table(table, path)
    profile = profile_paths(con, [str(path)])
    assert profile.row_count == 3
    for column in profile.columns:
        assert (column.count, column.nulls, column.null_rate) == (0, 3, 1.0), column.name
        assert column.distinct in (0, None)
        assert column.histogram is None and column.top_values == []
    assert profile.column("untyped").kind == "other"


def test_parts_are_read_as_one_table(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    first, second = tmp_path / "part_0.parquet", tmp_path / "part_1.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), first)
    pq.write_table(pa.table({"x": [4, 5], "added": ["a", "b"]}), second)
    profile = profile_paths(con, [str(first), str(second)])
    assert profile.row_count == 5
    assert (profile.column("x").min, profile.column("x").max) == (1, 5)
    added = profile.column("added")
    assert (added.count, added.nulls) == (2, 3)


def test_other_types(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "types.parquet"
    table = pa.table(
        {
            "price": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(10, 2)),
            "day": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 31), None], pa.date32()),
            "at": pa.array([0, 3_600_000_000, None], pa.timestamp("us", tz="Europe/Paris")),
            "clock": pa.array([dt.time(8, 0), dt.time(17, 30), None], pa.time64("us")),
            "score": pa.array([1.0, float("nan"), float("inf")]),
            "blob": pa.array([b"a", b"b", None]),
            "tags": pa.array([["a"], [], None]),
            "text": pa.array(["x" * (MAX_TEXT + 50)] * 3),
        }
    )
    pq.write_table(table, path)
    profile = profile_paths(con, [str(path)])

    price = profile.column("price")
    assert (price.kind, price.min, price.max, price.mean) == ("numeric", 1.5, 2.25, 1.875)
    day = profile.column("day")
    assert (day.kind, day.min, day.max) == ("temporal", "2024-01-01", "2024-01-31")
    at = profile.column("at")
    assert (at.min, at.max) == ("1970-01-01T00:00:00+00:00", "1970-01-01T01:00:00+00:00")
    clock = profile.column("clock")
    assert (clock.min, clock.max) == ("08:00:00", "17:30:00")
    # NaN and infinity: the statistics say so without breaking JSON (NaN reads as None),
    # and the histogram spans the finite values only.
    score = profile.column("score")
    assert (score.count, score.min, score.max, score.mean) == (3, 1.0, None, None)
    assert score.histogram is not None
    assert (score.histogram.edges, score.histogram.counts) == ([1.0, 1.0], [1])
    for name in ("blob", "tags"):
        other = profile.column(name)
        assert (other.kind, other.count, other.nulls) == ("other", 2, 1)
    text = profile.column("text")
    assert text.min == "x" * MAX_TEXT + "…"
    assert [(t.value, t.count) for t in text.top_values] == [("x" * MAX_TEXT + "…", 3)]
    json.loads(profile.model_dump_json())


def test_floats_with_nan_and_infinity(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(-5, 5, 1000)
    data = np.concatenate([values, [np.nan] * 7, [np.inf] * 3, [-np.inf] * 2])
    path = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"x": data, "clean": np.concatenate([values, np.zeros(12)])}), path)
    profile = profile_paths(con, [str(path)])
    x = profile.column("x")
    assert (x.count, x.nulls, x.min, x.max) == (1012, 0, None, None)  # -inf and NaN
    assert x.histogram is not None
    edges = [float(e) for e in x.histogram.edges]
    assert (edges[0], edges[-1]) == (values.min(), values.max())
    assert x.histogram.counts == right_closed_counts(values, edges)
    assert sum(x.histogram.counts) == 1000
    clean = profile.column("clean")
    assert clean.histogram is not None and sum(clean.histogram.counts) == 1012
    json.loads(profile.model_dump_json())


def test_json_safe() -> None:
    value = {
        "decimal": Decimal("1.25"),
        "whole": Decimal("12345678901234567890"),
        "moment": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "day": dt.date(2024, 1, 2),
        "clock": dt.time(3, 4, 5, 600_000),
        "wait": dt.timedelta(days=1, hours=2, seconds=3.5),
        "negative": -dt.timedelta(minutes=5),
        "zero": dt.timedelta(0),
        "raw": b"\x00\xff",
        "nan": float("nan"),
        "inf": Decimal("Infinity"),
        "id": uuid.UUID(int=1),
        "numpy": np.int64(7),
        "nested": [(1, float("-inf")), {"k": np.float32(0.5)}],
        1: True,
    }
    safe = json_safe(value)
    assert safe == {
        "decimal": 1.25,
        "whole": 12345678901234567890,
        "moment": "2024-01-02T03:04:05+00:00",
        "day": "2024-01-02",
        "clock": "03:04:05.600000",
        "wait": "P1DT2H3.5S",
        "negative": "-PT5M",
        "zero": "PT0S",
        "raw": base64.b64encode(b"\x00\xff").decode(),
        "nan": None,
        "inf": None,
        "id": "00000000-0000-0000-0000-000000000001",
        "numpy": 7,
        "nested": [[1, None], {"k": 0.5}],
        "1": True,
    }
    json.dumps(safe, allow_nan=False)


def test_large_data_gets_approximate_distinct_counts(
    con: duckdb.DuckDBPyConnection,
    frame: dict[str, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if the data were large: estimated distinct counts, candidates from a 25% sample.
    monkeypatch.setattr(profile_module, "EXACT_DISTINCT_ROWS", N // 4)
    path = write_frame(frame, tmp_path / "data.parquet")
    profile = profile_paths(con, [str(path)])
    for name in ("id", "user", "amount", "age"):
        column = profile.column(name)
        exact = len(set(column_values(frame, name)))
        assert column.distinct is not None
        assert abs(column.distinct - exact) <= 0.05 * exact, name
    colors = Counter(frame["color"][~frame["color_missing"]].tolist())
    assert [(t.value, t.count) for t in profile.column("color").top_values] == (
        colors.most_common()
    )
    assert profile.column("user").top_values == []


def test_heavy_hitters_in_large_high_cardinality_columns(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profile_module, "EXACT_DISTINCT_ROWS", 10_000)
    rows = 50_000
    session = ["unknown" if i % 5 == 0 else "n/a" if i % 13 == 0 else f"s-{i}" for i in range(rows)]
    path = tmp_path / "sessions.parquet"
    pq.write_table(pa.table({"session": session}), path)
    column = profile_paths(con, [str(path)]).column("session")
    assert column.distinct is not None and column.distinct > 1_000
    expected = Counter(session).most_common(2)
    # Exact counts of the values that repeat; the ones seen once are not listed.
    assert [(t.value, t.count) for t in column.top_values] == expected


def column_values(frame: dict[str, np.ndarray], name: str) -> list[object]:
    if name == "amount":
        return list(frame["amount"][~frame["amount_missing"]])
    return list(frame[name])


def test_profile_columns_are_column_profiles(profile: Profile) -> None:
    assert all(isinstance(c, ColumnProfile) for c in profile.columns)
    with pytest.raises(KeyError):
        profile.column("absent")


def test_large_data_quantiles_come_from_a_sample_and_the_rest_is_exact(
    con: duckdb.DuckDBPyConnection,
    frame: dict[str, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if the data were large: quantiles from a quarter of the rows; counts, means,
    # extremes and histograms still from every row.
    monkeypatch.setattr(profile_module, "EXACT_DISTINCT_ROWS", N // 4)
    path = write_frame(frame, tmp_path / "data.parquet")
    column = profile_paths(con, [str(path)]).column("amount")
    amount = frame["amount"][~frame["amount_missing"]]
    spread = amount.max() - amount.min()
    assert column.quantiles is not None
    for q in QUANTILES:
        assert column.quantiles[f"{q:g}"] == pytest.approx(
            np.quantile(amount, q), abs=0.02 * spread
        )
    assert column.count == len(amount)
    assert (column.min, column.max) == (amount.min(), amount.max())
    assert column.mean == pytest.approx(amount.mean(), rel=1e-9)
    assert column.histogram is not None
    edges = [float(e) for e in column.histogram.edges]
    assert column.histogram.counts == right_closed_counts(amount, edges)


def test_sampling_works_beside_a_column_named_like_duckdbs_row_numbers(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profile_module, "EXACT_DISTINCT_ROWS", 100)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"file_row_number": np.arange(1000), "x": np.ones(1000)}), path)
    profile = profile_paths(con, [str(path)])
    assert profile.row_count == 1000
    assert profile.column("file_row_number").max == 999
    assert profile.column("x").histogram is not None


def test_extremes_of_several_parts_with_nan_in_one(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    first, second = tmp_path / "part_0.parquet", tmp_path / "part_1.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "s": ["b", "c"]}), first)
    pq.write_table(pa.table({"x": [float("nan"), 7.0, -3.0], "s": ["a", None, "d"]}), second)
    profile = profile_paths(con, [str(first), str(second)])
    x = profile.column("x")
    assert x.min == -3.0 and x.max is None  # NaN is the largest value; JSON has no NaN
    assert x.histogram is not None
    assert [x.histogram.edges[0], x.histogram.edges[-1]] == [-3.0, 7.0]
    assert sum(x.histogram.counts) == 4  # the finite values
    s = profile.column("s")
    assert (s.min, s.max, s.count) == ("a", "d", 4)


ODD = 'odd "name". y'  # quotes, a dot and a space: RETURN_STATS keys columns by quoted name


def float_part(seed: int, *, nan: int, inf: int, nulls: int, rows: int = 500) -> pa.Table:
    """A part with float columns holding ``nan`` NaN, ``inf`` of each infinity and ``nulls``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, rows)
    x[:nan] = np.nan
    x[nan : nan + inf] = np.inf
    x[nan + inf : nan + 2 * inf] = -np.inf
    missing = np.zeros(rows, dtype=bool)
    missing[rows - nulls :] = True
    odd = rng.uniform(0, 1, rows).astype(np.float32)
    odd[1 : 1 + nan] = np.nan
    all_nan = np.full(rows, np.nan)
    return pa.table(
        {
            "id": np.arange(rows) + seed * rows,
            "x": pa.array(x, mask=missing),
            "clean": pa.array(rng.normal(0, 1, rows), mask=missing),
            ODD: pa.array(odd, mask=missing),
            "all nan": pa.array(all_nan, mask=missing),
            "nothing": pa.nulls(rows, pa.float64()),
            "label": [f"c{i % 3}" for i in range(rows)],
        }
    )


def write_part(con: duckdb.DuckDBPyConnection, table: pa.Table, out: Path) -> storage.WrittenParts:
    return storage.write_parts(con, con.from_arrow(table), out)


def test_the_writer_counts_each_float_columns_nan(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    parts = write_part(con, float_part(1, nan=7, inf=3, nulls=5), tmp_path / "a")
    assert len(parts) == 1
    counts = parts.float_counts[str(parts[0])]
    assert counts == {
        "x": storage.FloatCounts(values=495, nans=7),
        "clean": storage.FloatCounts(values=495, nans=0),
        ODD: storage.FloatCounts(values=495, nans=7),
        "all nan": storage.FloatCounts(values=495, nans=495),
        "nothing": storage.FloatCounts(values=0, nans=0),
    }


@pytest.mark.parametrize(
    ("part_queries", "counted"),
    [(64, "every part"), (64, "the last part"), (1, "every part")],
    ids=["each part asked", "older parts without counts", "parts asked as one"],
)
def test_known_nan_counts_give_the_same_profile(
    con: duckdb.DuckDBPyConnection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    part_queries: int,
    counted: str,
) -> None:
    # Above _BOUNDS_PART_QUERIES parts, min and max come from one query over all of them,
    # with the parts' counts summed.
    monkeypatch.setattr(profile_module, "_BOUNDS_PART_QUERIES", part_queries)
    tables = [
        float_part(1, nan=7, inf=3, nulls=5),
        float_part(2, nan=0, inf=0, nulls=0),
        float_part(3, nan=0, inf=2, nulls=9),
    ]
    written = [write_part(con, t, tmp_path / f"v{i}") for i, t in enumerate(tables)]
    paths = [str(w[0]) for w in written]
    counts = {p: c for w in written for p, c in w.float_counts.items()}
    if counted == "the last part":  # as on append: the previous parts' counts are not known
        counts = {paths[-1]: counts[paths[-1]]}
    for chosen in (paths, paths[:1], paths[1:]):
        known = profile_paths(con, chosen, float_counts=counts)
        read = profile_paths(con, chosen)
        assert known.model_dump_json(exclude={"seconds"}) == read.model_dump_json(
            exclude={"seconds"}
        )
    # The data does hold what the counts are for: NaN and infinities, which JSON cannot spell.
    x = profile_paths(con, paths, float_counts=counts).column("x")
    assert (x.min, x.max) == (None, None)
    x = profile_paths(con, paths[1:2], float_counts=counts).column("x")
    assert x.min is not None and x.max is not None


def test_known_nan_counts_spare_reading_float_values(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    table = float_part(4, nan=3, inf=0, nulls=50).select(["id", "x", "clean", "nothing"])
    part = write_part(con, table, tmp_path / "v")
    path = part[0]
    # Overwrite the pages of the float column without NaN (the footer stays intact): any read
    # of its values now fails, so only an answer from the footer can come back. The column
    # with NaN is read, in a query of its own.
    chunk = pq.read_metadata(path).row_group(0).column(2)
    assert chunk.path_in_schema == "clean"
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))

    plan = profile_module._Plan(exact_distinct=True, sample=None)
    schema = storage.arrow_schema([path])
    columns = [
        profile_module._Column(f.name, f.type, profile_module.kind_of(f.type), plan) for f in schema
    ]
    found = profile_module._bounds(con, [str(path)], columns, part.float_counts)
    bounds = dict(zip(schema.names, found, strict=True))
    clean, x = (table[name].to_numpy(zero_copy_only=False) for name in ("clean", "x"))
    assert bounds["id"] == (table["id"][0].as_py(), table["id"][-1].as_py())
    assert bounds["clean"] == (np.nanmin(clean), np.nanmax(clean))
    assert bounds["x"][0] == np.nanmin(x) and math.isnan(bounds["x"][1])  # NaN is the largest
    assert bounds["nothing"] == (None, None)
    with pytest.raises(duckdb.Error):  # without the counts the values are read
        profile_module._bounds(con, [str(path)], columns, {})


def test_mean_and_std_hold_up_where_sums_of_squares_cancel(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """Mean and std come from sums of distances to a point of the range: they must agree
    with exact (rational) results on data where naive sums of squares lose everything (a
    large offset, a tiny spread, one far outlier, huge integers, where even numpy's
    two-pass std is off in the sixth digit)."""
    rng = np.random.default_rng(11)
    n = 20_000
    outlier = rng.normal(0.0, 1.0, n)
    outlier[123] = 1e7
    columns = {
        "offset": 1e9 + rng.normal(0.0, 1e-3, n),
        "tiny": rng.normal(0.0, 1e-12, n),
        "outlier": outlier,
        "big_ints": (2**52 + rng.integers(0, 1000, n)).astype(np.int64),
        "negative": -5e6 + rng.exponential(3.0, n),
    }
    path = tmp_path / "moments.parquet"
    pq.write_table(pa.table(columns), path)
    profile = profile_paths(con, [str(path)])
    for name, values in columns.items():
        exact = values.tolist()  # Python ints and floats: statistics works in fractions
        column = profile.column(name)
        assert column.mean == pytest.approx(statistics.mean(exact), rel=1e-9), name
        assert column.std == pytest.approx(statistics.stdev(exact), rel=1e-9), name


def test_mean_and_std_of_one_value_and_of_non_finite_values(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "edge.parquet"
    pq.write_table(
        pa.table(
            {
                "one": [5.0, None, None],
                "inf": [1.0, math.inf, 2.0],
                "nan": [1.0, math.nan, 2.0],
                "both_infs": [math.inf, -math.inf, 0.0],
            }
        ),
        path,
    )
    profile = profile_paths(con, [str(path)])
    assert (profile.column("one").mean, profile.column("one").std) == (5.0, None)
    # Like avg() and stddev_samp(): infinity or NaN, which JSON shows as missing.
    for name in ("inf", "nan", "both_infs"):
        column = profile.column(name)
        assert (column.mean, column.std) == (None, None), name
