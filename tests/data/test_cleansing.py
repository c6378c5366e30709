"""Cleansing steps against pandas doing the same thing; statistics baked into the recipe."""

from __future__ import annotations

import itertools
import math
import unicodedata
from typing import Any

import duckdb
import pandas as pd
import pytest

from modelworks.core.auth import local_principal
from modelworks.core.errors import InvalidInput
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.cleansing import Deduplicate, Impute, filter_expression, parse_steps
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.data.transform_service import TransformService
from modelworks.data.transforms import ENGINE

P = "default"

RAW = pd.DataFrame(
    {
        "id": [1, 2, 2, 3, 4, 5, 6, 7, 8, 3],
        "age": [34.0, None, None, 51.0, 29.0, None, 120.0, 18.0, 40.0, 51.0],
        "visits": pd.array([1, None, None, 3, 4, None, 6, 7, 8, 3], dtype="Int64"),
        "n": [1, 2, 2, 3, 100, 5, 6, 7, 8, 3],
        "city": [
            "  Paris ",
            "lyon",
            "lyon",
            "PARIS",
            "Lyon\t\tSud",
            None,
            "Café  Noir",
            "nice",
            "Nice ",
            "PARIS",
        ],
        "joined": [
            "2024-01-05",
            "2024-02-10",
            "2024-02-10",
            "not a date",
            "2023-12-31",
            "2024-03-01",
            None,
            "2024-01-05T10:30:00",
            "2024-06-15",
            "not a date",
        ],
        "day": ["05/01/2024", "10/02/2024", "10/02/2024", "x", "31/12/2023"] + [None] * 4 + ["x"],
        "score": ["1", "2", "2", "x", "4", "5", "6", "7", "8", "x"],
    }
)


@pytest.fixture
def data(store: Store) -> DataService:
    data = DataService(store)
    data.ingest(local_principal(), P, "raw", FrameSource.of(RAW))
    return data


@pytest.fixture
def tx(store: Store) -> TransformService:
    return TransformService(store)


def read(data: DataService, ref: str) -> pd.DataFrame:
    _, paths = data.read_paths(local_principal(), P, ref)
    con = duckdb.connect()
    try:
        return storage.relation_of(con, paths).df()
    finally:
        con.close()


def values(series: pd.Series) -> list[Any]:
    """Plain Python values with every kind of missing value as None."""
    out: list[Any] = []
    for v in series.tolist():
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, pd.Timestamp):
            out.append(v.to_pydatetime())
        else:
            out.append(v)
    return out


_outputs = itertools.count(1)


def clean(
    tx: TransformService, steps: Any, *, ref: str = "raw@1", output: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Clean into a fresh dataset (so schema changes never meet a schema policy)."""
    output = output or f"cleaned-{next(_outputs)}"
    result = tx.clean(local_principal(), P, ref, steps, output=output)
    assert result.version is not None and result.version.recipe is not None
    return read(tx.data, result.version.ref), result.version.recipe


# ---- each step, compared with pandas -----------------------------------------------------------
def test_deduplicate_keeps_the_first_occurrence_in_input_order(
    data: DataService, tx: TransformService
) -> None:
    got, _ = clean(tx, [{"op": "deduplicate"}])
    expected = RAW.drop_duplicates()
    assert got["id"].tolist() == expected["id"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


def test_deduplicate_on_columns_keeping_the_last(data: DataService, tx: TransformService) -> None:
    steps = [{"op": "deduplicate", "columns": ["city"], "keep": "last"}]
    got, _ = clean(tx, steps)
    expected = RAW.drop_duplicates(subset=["city"], keep="last")
    assert len(got) == 8  # 7 distinct cities and NULL
    assert values(got["id"]) == expected["id"].tolist()
    assert values(got["city"]) == values(expected["city"])


def test_coerce_turns_bad_values_into_nulls_or_fails(
    data: DataService, tx: TransformService
) -> None:
    got, _ = clean(tx, [{"op": "coerce", "columns": {"score": "int", "n": "double"}}])
    expected = pd.to_numeric(RAW["score"], errors="coerce")
    assert values(got["score"]) == [None if math.isnan(v) else int(v) for v in expected]
    assert str(got["n"].dtype) == "float64"
    with pytest.raises(InvalidInput, match="'x'"):
        clean(tx, [{"op": "coerce", "columns": {"score": "int"}, "errors": "fail"}])
    with pytest.raises(InvalidInput, match="'integr' is not a type"):
        tx.clean(local_principal(), P, "raw@1", [{"op": "coerce", "columns": {"n": "integr"}}])


@pytest.mark.parametrize("strategy", ["mean", "median"])
def test_impute_mean_and_median_match_pandas_and_are_baked_in(
    data: DataService, tx: TransformService, strategy: str
) -> None:
    steps = [{"op": "impute", "columns": ["age", "visits"], "strategy": strategy}]
    got, recipe = clean(tx, steps)
    for col in ("age", "visits"):
        source = RAW[col].astype("float64")
        stat = source.mean() if strategy == "mean" else source.median()
        assert recipe["computed"]["0"][col] == pytest.approx(stat)
        assert values(got[col]) == pytest.approx(values(source.fillna(stat)))
    assert str(got["visits"].dtype) == "float64"  # an integer column filled with a mean


def test_impute_mode_breaks_ties_by_the_smallest_value(
    data: DataService, tx: TransformService
) -> None:
    got, recipe = clean(tx, [{"op": "impute", "columns": ["city", "n"], "strategy": "mode"}])
    assert recipe["computed"]["0"] == {"city": "PARIS", "n": "2"}  # 2, 3 and lyon/PARIS tie
    assert RAW["city"].mode().iloc[0] == "PARIS" and RAW["n"].mode().iloc[0] == 2
    assert values(got["city"]) == values(RAW["city"].fillna("PARIS"))
    assert str(got["n"].dtype) == "int64"


def test_impute_constant(data: DataService, tx: TransformService) -> None:
    got, recipe = clean(
        tx, [{"op": "impute", "columns": ["city"], "strategy": "constant", "value": "unknown"}]
    )
    assert values(got["city"]) == values(RAW["city"].fillna("unknown"))
    assert recipe["computed"] == {}
    with pytest.raises(InvalidInput, match="needs a value"):
        clean(tx, [{"op": "impute", "columns": ["city"], "strategy": "constant"}])


def test_clip_quantile_and_iqr_match_pandas(data: DataService, tx: TransformService) -> None:
    got, recipe = clean(tx, [{"op": "clip", "columns": ["n", "age"]}])
    for col in ("n", "age"):
        s = RAW[col].astype("float64")
        lo, hi = s.quantile(0.01), s.quantile(0.99)
        assert recipe["computed"]["0"][col] == {
            "lower": pytest.approx(lo),
            "upper": pytest.approx(hi),
        }
        assert values(got[col]) == pytest.approx(values(s.clip(lo, hi)), nan_ok=True)
    got, recipe = clean(tx, [{"op": "clip", "columns": ["n"], "method": "iqr", "k": 1.5}])
    q1, q3 = RAW["n"].quantile(0.25), RAW["n"].quantile(0.75)
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    assert recipe["computed"]["0"]["n"] == {"lower": pytest.approx(lo), "upper": pytest.approx(hi)}
    assert got["n"].tolist() == pytest.approx(RAW["n"].clip(lo, hi).tolist())
    assert got["n"].max() == pytest.approx(hi)
    assert hi < 100


def test_clip_bounds_keep_integers_and_nulls(data: DataService, tx: TransformService) -> None:
    steps = [
        {"op": "clip", "columns": ["n"], "method": "bounds", "min": 2, "max": 50},
        {"op": "clip", "columns": ["age"], "method": "bounds", "max": 100},
    ]
    got, _ = clean(tx, steps)
    assert got["n"].tolist() == RAW["n"].clip(2, 50).tolist()
    assert str(got["n"].dtype) == "int64"
    assert values(got["age"]) == values(RAW["age"].clip(upper=100))  # NULL stays NULL


def test_normalize_text(data: DataService, tx: TransformService) -> None:
    got, _ = clean(tx, [{"op": "normalize_text", "columns": ["city"]}])
    expected = RAW["city"].str.replace(r"\s+", " ", regex=True).str.strip().str.lower()
    assert values(got["city"]) == values(expected)
    steps = [{"op": "normalize_text", "columns": ["city"], "lower": False, "remove_accents": True}]
    got, _ = clean(tx, steps)

    def unaccent(s: str | None) -> str | None:
        if s is None:
            return None
        decomposed = unicodedata.normalize("NFKD", s)
        return "".join(ch for ch in decomposed if not unicodedata.combining(ch))

    expected = (
        RAW["city"].map(unaccent, na_action="ignore").str.replace(r"\s+", " ", regex=True)
    ).str.strip()
    assert values(got["city"]) == values(expected)
    assert "Cafe Noir" in values(got["city"])


def test_parse_dates_iso_and_formats(data: DataService, tx: TransformService) -> None:
    steps = [
        {"op": "parse_dates", "columns": ["joined"]},
        {"op": "parse_dates", "columns": ["day"], "format": "%d/%m/%Y", "to": "date"},
    ]
    got, _ = clean(tx, steps, output="dated")
    types = {c.name: c.type for c in tx.data.get_version(local_principal(), P, "dated@1").columns}
    assert types["joined"] == "timestamp[us]" and types["day"] == "date32[day]"
    expected = pd.to_datetime(RAW["joined"], format="ISO8601", errors="coerce")
    assert values(got["joined"]) == values(expected)
    days = pd.to_datetime(RAW["day"], format="%d/%m/%Y", errors="coerce")
    assert [None if v is None else v.date() for v in values(got["day"])] == [
        None if pd.isna(v) else v.date() for v in days
    ]
    with pytest.raises(InvalidInput, match="not a date"):
        clean(tx, [{"op": "parse_dates", "columns": ["joined"], "errors": "fail"}])
    with pytest.raises(InvalidInput, match="only text"):
        tx.clean(local_principal(), P, "raw@1", [{"op": "parse_dates", "columns": ["n"]}])


def test_drop_nulls_rename_drop_columns(data: DataService, tx: TransformService) -> None:
    got, _ = clean(tx, [{"op": "drop_nulls", "columns": ["age"]}])
    assert got["id"].tolist() == RAW.dropna(subset=["age"])["id"].tolist()
    got, _ = clean(tx, [{"op": "drop_nulls"}])
    assert got["id"].tolist() == RAW.dropna()["id"].tolist()
    got, _ = clean(
        tx,
        [
            {"op": "rename", "mapping": {"n": "count", "city": "town"}},
            {"op": "drop_columns", "columns": ["day", "score"]},
        ],
    )
    assert list(got.columns) == ["id", "age", "visits", "count", "town", "joined"]
    with pytest.raises(InvalidInput, match="duplicate or empty"):
        tx.clean(local_principal(), P, "raw@1", [{"op": "rename", "mapping": {"n": "id"}}])
    with pytest.raises(InvalidInput, match="every column"):
        tx.clean(local_principal(), P, "raw@1", [{"op": "drop_columns", "columns": list(RAW)}])


def test_filter_matches_pandas_query(data: DataService, tx: TransformService) -> None:
    got, _ = clean(tx, [{"op": "filter", "where": "n > 3 AND city IS NOT NULL"}])
    assert got["id"].tolist() == RAW[(RAW.n > 3) & RAW.city.notna()]["id"].tolist()


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("n > 1) OR (1=1", "not a SQL expression"),
        ("n > 1; DROP TABLE t", "not a SQL expression"),
        ("id IN (SELECT id FROM read_csv('/etc/passwd'))", "subqueries are not allowed"),
        ("EXISTS (SELECT 1)", "subqueries are not allowed"),
    ],
)
def test_filter_is_an_expression_only(where: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        filter_expression(where)


def test_filter_errors_name_the_step(data: DataService, tx: TransformService) -> None:
    steps = [{"op": "deduplicate"}, {"op": "filter", "where": "sum(n) > 1"}]
    with pytest.raises(InvalidInput, match=r"Step 2 \(filter\) failed"):
        tx.clean(local_principal(), P, "raw@1", steps)
    with pytest.raises(InvalidInput, match=r"Step 1 \(filter\) failed.*nope"):
        tx.clean(local_principal(), P, "raw@1", [{"op": "filter", "where": "nope > 1"}])


# ---- chains, recipes, outputs -----------------------------------------------------------------
def test_statistics_see_the_data_as_earlier_steps_left_it(
    data: DataService, tx: TransformService
) -> None:
    steps = [
        {"op": "deduplicate"},
        {"op": "filter", "where": "n < 100"},
        {"op": "impute", "columns": ["age"], "strategy": "mean"},
    ]
    got, recipe = clean(tx, steps)
    frame = RAW.drop_duplicates()
    frame = frame[frame.n < 100]
    mean = frame["age"].mean()
    assert recipe["computed"] == {"2": {"age": pytest.approx(mean)}}
    assert values(got["age"]) == pytest.approx(values(frame["age"].fillna(mean)))
    assert got["id"].tolist() == frame["id"].tolist()


def test_the_recipe_holds_the_full_steps_and_pins_the_input(
    data: DataService, tx: TransformService, store: Store
) -> None:
    data.ingest(local_principal(), P, "raw", FrameSource.of(RAW))  # raw@2
    steps: list[Any] = [Deduplicate(), {"op": "impute", "columns": ["age"]}]
    result = tx.clean(local_principal(), P, "raw@1", steps)
    v = result.version
    assert v is not None and v.ref == "raw@3"  # default output: a new version of the input's
    assert v.recipe == {
        "kind": "clean",
        "input": "raw@1",
        "steps": [
            {"op": "deduplicate", "columns": None, "keep": "first"},
            {"op": "impute", "columns": ["age"], "strategy": "mean", "value": None},
        ],
        "computed": {"1": {"age": pytest.approx(RAW.drop_duplicates()["age"].mean())}},
        "engine": ENGINE,
    }
    assert v.source["kind"] == "clean_transform" and "QUALIFY" in v.source["params"]["sql"]
    as_file = {"steps": [{"op": "deduplicate"}]}  # the shape of a steps YAML file
    other = tx.clean(local_principal(), P, "raw@latest", as_file, output="tidy")
    assert other.version is not None and other.version.ref == "tidy@1"
    assert other.version.recipe and other.version.recipe["input"] == "raw@3"


def test_cleaning_in_place_respects_the_schema_policy(
    data: DataService, tx: TransformService
) -> None:
    steps = [{"op": "drop_columns", "columns": ["score"]}]
    with pytest.raises(InvalidInput) as err:
        tx.clean(local_principal(), P, "raw@1", steps)
    assert "removed column 'score'" in err.value.detail
    assert "output='raw-clean'" in err.value.detail and "changes" in err.value.extra
    data.update_dataset(local_principal(), P, "raw", schema_policy="any")
    result = tx.clean(local_principal(), P, "raw@1", steps)
    assert result.version is not None and result.version.ref == "raw@2"
    assert "score" not in [c.name for c in result.version.columns]


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        ([], "needs a list of steps"),
        ([{"op": "explode"}], "step 1"),
        ([{"op": "impute"}], "step 1 columns: Field required"),
        ([{"op": "deduplicate", "keep": "middle"}], "step 1 keep"),
        ([{"op": "clip", "columns": ["n"], "lower": 2}], "less than or equal to 1"),
        ("deduplicate", "needs a list of steps"),
    ],
)
def test_invalid_steps_are_explained(steps: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_steps(steps)
    assert says in err.value.detail
    assert "deduplicate, coerce, impute" in err.value.detail


@pytest.mark.parametrize(
    ("step", "says"),
    [
        ({"op": "impute", "columns": ["city"], "strategy": "mean"}, "is VARCHAR, not a number"),
        ({"op": "clip", "columns": ["ghost"]}, "no column(s) 'ghost'"),
        ({"op": "normalize_text", "columns": ["n"]}, "not text"),
        ({"op": "clip", "columns": ["n"], "method": "bounds"}, "needs min, max or both"),
    ],
)
def test_steps_that_do_not_fit_the_data_are_explained(
    data: DataService, tx: TransformService, step: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        tx.clean(local_principal(), P, "raw@1", [step])
    assert says in err.value.detail


def test_impute_of_an_all_null_column_asks_for_a_constant(
    store: Store, tx: TransformService
) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": pd.array([None, None], dtype="Float64")})
    DataService(store).ingest(local_principal(), P, "empty-b", FrameSource.of(frame))
    with pytest.raises(InvalidInput, match="no values to take a median"):
        tx.clean(local_principal(), P, "empty-b@1", [Impute(columns=["b"], strategy="median")])


def test_the_row_number_column_name_is_reserved(store: Store, tx: TransformService) -> None:
    frame = pd.DataFrame({"__mw_row": [1], "a": [1]})
    DataService(store).ingest(local_principal(), P, "odd", FrameSource.of(frame))
    with pytest.raises(InvalidInput, match="reserves"):
        tx.clean(local_principal(), P, "odd@1", [{"op": "deduplicate"}])
