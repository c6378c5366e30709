"""ModelRuntime: JSON rows to model input, checked against the signature, answering exactly
as the package itself does on a DataFrame of the same rows."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelworks.core.errors import CorruptData, InvalidInput
from modelworks.registry.onnx_export import export_onnx
from modelworks.serving.runtime import SAMPLE_ROWS, ModelInput, ModelRuntime, PredictionBatch
from modelworks.training.package import ModelPackage, load_package, save_package

from .conftest import churn_frame, records

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def mixed_pipeline(unknown: str = "ignore") -> Any:
    encode = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "charges"]),
            ("cat", OneHotEncoder(handle_unknown=unknown), ["plan"]),
        ]
    )
    return make_pipeline(encode, LogisticRegression(max_iter=500))


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    return churn_frame()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, data: Any) -> ModelPackage:
    """A scikit-learn Pipeline: a string column (one-hot) and two numbers (scaled)."""
    X, y = data
    path = tmp_path_factory.mktemp("mixed") / "pkg"
    save_package(mixed_pipeline().fit(X, y), path, input_example=X.head())
    return load_package(path)


@pytest.fixture(scope="module")
def booster(tmp_path_factory: pytest.TempPathFactory, data: Any) -> ModelPackage:
    """A LightGBM classifier on numeric columns (loads as a Booster)."""
    X, y = data
    Xn = X[["tenure", "charges"]].astype(float)
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(Xn, y)
    path = tmp_path_factory.mktemp("lgb") / "pkg"
    save_package(model, path, input_example=Xn.head())
    return load_package(path)


def assert_same(batch: PredictionBatch, pkg: ModelPackage, frame: pd.DataFrame) -> None:
    assert batch.predictions == pkg.predict(frame).tolist()
    if pkg.task in ("binary", "multiclass"):
        assert batch.probabilities is not None
        np.testing.assert_allclose(
            np.asarray(batch.probabilities), pkg.predict_proba(frame), rtol=1e-12, atol=0
        )
        assert batch.classes == pkg.classes
    else:
        assert batch.probabilities is None


# ---- conversion equals the package's own answers -------------------------------------------
def test_sklearn_pipeline_with_a_string_column_matches_the_package(
    mixed: ModelPackage, data: Any
) -> None:
    X, _ = data
    frame = X.iloc[:25].reset_index(drop=True)
    rt = ModelRuntime(mixed, name="churn", version="churn@3", version_id="v3")
    assert rt.input_mode == "frame" and rt.backend == "native"
    batch = rt.predict_records(records(frame))
    assert batch.model_version == "churn@3" and len(batch) == 25
    assert set(batch.predictions) <= {"churn", "stay"}
    assert_same(batch, mixed, frame)
    columns = {c: frame[c].tolist() for c in frame.columns}
    assert rt.predict_columns(columns) == batch
    assert rt.predict_instances(frame.to_numpy().tolist()) == batch
    reordered = [dict(reversed(list(r.items()))) for r in records(frame)]
    assert rt.predict_records(reordered) == batch  # field order does not matter


def test_lightgbm_booster_gets_a_float_matrix_and_matches_the_package(
    booster: ModelPackage, data: Any
) -> None:
    X, _ = data
    frame = X[["tenure", "charges"]].astype(float).iloc[:30].reset_index(drop=True)
    rt = ModelRuntime(booster, name="churn", version="churn@4")
    assert rt.input_mode == "array"  # no DataFrame per request
    assert rt.info().labels_from_probabilities
    assert_same(rt.predict_records(records(frame)), booster, frame)
    # integers are numbers too, and a row of one record is a batch of one
    one = rt.predict_records([{"tenure": 12, "charges": 50}])
    assert_same(one, booster, pd.DataFrame({"tenure": [12.0], "charges": [50.0]}))


def test_lightgbm_with_a_category_column(tmp_path: Path, data: Any) -> None:
    X, y = data
    frame = X[["charges", "plan"]].astype({"plan": "category"})
    model = lgb.LGBMClassifier(n_estimators=20, min_child_samples=5, verbose=-1).fit(frame, y)
    save_package(model, tmp_path / "pkg", input_example=frame.head())
    pkg = load_package(tmp_path / "pkg")
    rt = ModelRuntime(pkg, name="cat", version="cat@1")
    assert rt.input_mode == "frame"  # a Booster with pandas categories takes a DataFrame
    rows = [{"charges": 40.0, "plan": "pro"}, {"charges": 90.0, "plan": "max"}]
    reference = pd.DataFrame(rows).astype({"plan": "category"})
    assert_same(rt.predict_records(rows), pkg, reference)
    # one row holds one category: LightGBM maps values through its own categories
    one = pd.DataFrame(rows[1:]).astype({"plan": "category"})
    assert_same(rt.predict_records(rows[1:]), pkg, one)


def test_numeric_pipeline_fitted_on_named_columns_gets_an_array_in_their_order(
    tmp_path: Path, data: Any
) -> None:
    X, y = data
    Xn = X[["tenure", "charges"]].astype(float)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(Xn, y)
    save_package(model, tmp_path / "pkg", input_example=Xn.head())
    pkg = load_package(tmp_path / "pkg")
    rt = ModelRuntime(pkg, name="n", version="n@1")
    assert rt.input_mode == "array"  # the signature lists the fitted names in their order
    frame = Xn.iloc[:10].reset_index(drop=True)
    with warnings.catch_warnings(record=True) as seen:
        got = rt.predict_records(records(frame))
    assert not [w for w in seen if "valid feature names" in str(w.message)]  # no noise either
    assert_same(got, pkg, frame)


def test_regressor_has_values_and_no_probabilities(tmp_path: Path, data: Any) -> None:
    X, _ = data
    Xn = X[["tenure", "charges"]].astype(float)
    target = 2.0 * Xn["tenure"] + Xn["charges"]
    save_package(LinearRegression().fit(Xn, target), tmp_path / "pkg", input_example=Xn.head())
    pkg = load_package(tmp_path / "pkg")
    rt = ModelRuntime(pkg, name="r", version="r@1")
    batch = rt.predict_records([{"tenure": 10, "charges": 5.5}])
    assert batch.probabilities is None and batch.classes is None
    assert batch.predictions == pytest.approx([25.5])
    assert not rt.has_probabilities


def test_labels_come_from_the_model_when_argmax_is_not_its_rule(tmp_path: Path, data: Any) -> None:
    """A uniform DummyClassifier predicts random labels, but its probabilities are all equal
    (argmax would always say the first class): the load-time check notices."""
    X, y = data
    Xn = X[["tenure", "charges"]].astype(float)
    model = DummyClassifier(strategy="uniform", random_state=0).fit(Xn, y)
    save_package(model, tmp_path / "pkg", input_example=Xn.head())
    pkg = load_package(tmp_path / "pkg")
    rt = ModelRuntime(pkg, name="dummy", version="dummy@1")
    assert not rt.info().labels_from_probabilities
    frame = Xn.iloc[:25].reset_index(drop=True)
    batch = rt.predict_records(records(frame))
    assert set(batch.predictions) == {"churn", "stay"}
    assert_same(batch, pkg, frame)


def test_tensor_model_takes_instances(tmp_path: Path, data: Any) -> None:
    X, y = data
    arr = X[["tenure", "charges"]].to_numpy(dtype=np.float64)
    save_package(LogisticRegression().fit(arr, y), tmp_path / "pkg", input_example=arr[:5])
    pkg = load_package(tmp_path / "pkg")
    rt = ModelRuntime(pkg, name="t", version="t@1")
    assert rt.input_mode == "tensor"
    batch = rt.predict_instances(arr[:7].tolist())
    assert batch.predictions == pkg.predict(arr[:7]).tolist()
    np.testing.assert_allclose(batch.probabilities, pkg.predict_proba(arr[:7]), rtol=1e-12)
    with pytest.raises(InvalidInput, match=r"takes an array of shape \[-1, 2\].*instances"):
        rt.predict_records([{"tenure": 1, "charges": 2.0}])
    with pytest.raises(InvalidInput, match=r"shape \[-1, 2\].*'instances' has shape \[1, 3\]"):
        rt.predict_instances([[1.0, 2.0, 3.0]])


def test_package_without_signature_goes_through_pandas(tmp_path: Path, data: Any) -> None:
    X, y = data
    Xn = X[["tenure", "charges"]].astype(float)
    save_package(LogisticRegression().fit(Xn, y), tmp_path / "pkg")
    pkg = load_package(tmp_path / "pkg")
    rt = ModelRuntime(pkg, name="u", version="u@1")
    assert rt.input_mode == "pandas"
    frame = Xn.iloc[:5].reset_index(drop=True)
    assert_same(rt.predict_records(records(frame)), pkg, frame)
    with pytest.raises(InvalidInput, match=r"no signature"):
        rt.warmup()


def test_timestamp_columns_are_parsed_and_checked(tmp_path: Path, data: Any) -> None:
    X, y = data
    frame = X[["charges"]].copy()
    frame["signup"] = pd.date_range("2024-01-01", periods=len(frame), freq="h")
    drop = ColumnTransformer([("num", StandardScaler(), ["charges"]), ("ts", "drop", ["signup"])])
    model = make_pipeline(drop, LogisticRegression()).fit(frame, y)
    save_package(model, tmp_path / "pkg", input_example=frame.head())
    pkg = load_package(tmp_path / "pkg")
    assert pkg.signature is not None and pkg.signature.inputs[1].type.startswith("timestamp")
    rt = ModelRuntime(pkg, name="ts", version="ts@1")
    assert rt.input_mode == "frame"
    rows = [
        {"charges": 50.0, "signup": "2024-03-01T10:00:00"},
        {"charges": 80.0, "signup": "2024-03-02"},
    ]
    reference = pd.DataFrame(
        {
            "charges": [50.0, 80.0],
            "signup": pd.to_datetime(["2024-03-01T10:00", "2024-03-02"], format="ISO8601"),
        }
    )
    assert_same(rt.predict_records(rows), pkg, reference)
    with pytest.raises(
        InvalidInput, match=r"row 1: 'signup' must be an ISO 8601 date-time string, got 'soon'"
    ):
        rt.predict_records([rows[0], {"charges": 1.0, "signup": "soon"}])
    with pytest.raises(
        InvalidInput, match=r"row 0: 'signup' must be an ISO 8601 date-time string, got 5"
    ):
        rt.predict_records([{"charges": 1.0, "signup": 5}])


def test_warmup_runs_generated_rows(mixed: ModelPackage) -> None:
    rt = ModelRuntime(mixed, name="churn", version="churn@3")
    calls = rt.model_calls
    batch = rt.warmup()
    assert len(batch) == SAMPLE_ROWS and rt.model_calls == calls + 1
    assert set(batch.predictions) <= {"churn", "stay"}


def test_empty_input_gives_empty_answers(mixed: ModelPackage) -> None:
    rt = ModelRuntime(mixed, name="churn", version="churn@3")
    batch = rt.predict_records([])
    assert batch.predictions == [] and batch.probabilities == []
    assert batch.classes == ["churn", "stay"]


# ---- validation names the row and the field -----------------------------------------------
@pytest.fixture(scope="module")
def runtime(mixed: ModelPackage) -> ModelRuntime:
    return ModelRuntime(mixed, name="churn", version="churn@3")


GOOD = {"tenure": 3, "charges": 42.5, "plan": "pro"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"charges": "abc"}, r"row 3: 'charges' must be a number, got 'abc'"),
        ({"charges": True}, r"row 3: 'charges' must be a number, got true"),
        ({"charges": "4.5"}, r"row 3: 'charges' must be a number, got '4.5'"),
        ({"tenure": "abc"}, r"row 3: 'tenure' must be a whole number, got 'abc'"),
        ({"tenure": 2.5}, r"row 3: 'tenure' must be a whole number, got 2.5"),
        ({"tenure": None}, r"row 3: 'tenure' must be a whole number, got null"),
        ({"plan": 7}, r"row 3: 'plan' must be a string, got 7"),
        ({"plan": ["pro"]}, r"row 3: 'plan' must be a string, got a list"),
    ],
)
def test_a_wrong_value_names_its_row_and_field(
    runtime: ModelRuntime, bad: dict[str, Any], message: str
) -> None:
    rows = [dict(GOOD) for _ in range(5)]
    rows[3].update(bad)
    with pytest.raises(InvalidInput, match=message) as info:
        runtime.predict_records(rows)
    assert "The model expects (tenure: int64, charges: double, plan: string)" in info.value.detail
    field = next(iter(bad))
    assert info.value.extra["errors"][0] == {
        "row": 3,
        "field": field,
        "message": info.value.extra["errors"][0]["message"],
    }
    with pytest.raises(InvalidInput, match=message):
        runtime.predict_columns({k: [r[k] for r in rows] for k in GOOD})


def test_several_bad_columns_are_reported_together(runtime: ModelRuntime) -> None:
    rows = [dict(GOOD), {**GOOD, "charges": "x"}, {**GOOD, "plan": 1}]
    with pytest.raises(
        InvalidInput, match=r"row 1: 'charges' must be a number, got 'x'; row 2: 'plan'"
    ):
        runtime.predict_records(rows)


def test_whole_floats_fit_integer_columns(runtime: ModelRuntime, mixed: ModelPackage) -> None:
    batch = runtime.predict_records([{**GOOD, "tenure": 3.0}])
    assert batch == runtime.predict_records([GOOD])


def test_missing_and_unexpected_fields_are_listed(runtime: ModelRuntime) -> None:
    rows = [dict(GOOD), {"tenure": 1, "charges": 2.0, "colour": "red"}]
    with pytest.raises(
        InvalidInput, match=r"row 1: missing fields 'plan' and unexpected fields 'colour'"
    ) as info:
        runtime.predict_records(rows)
    assert info.value.extra["missing"] == ["plan"]
    assert info.value.extra["unexpected"] == ["colour"]
    with pytest.raises(InvalidInput, match=r"row 0 must be an object of fields, got 5"):
        runtime.predict_records([5])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match=r"'records' must be a list of objects"):
        runtime.predict_records({"tenure": 1})  # type: ignore[arg-type]


def test_columns_must_all_be_there_and_equally_long(runtime: ModelRuntime) -> None:
    with pytest.raises(InvalidInput, match=r"missing columns 'plan'; unexpected columns 'x'"):
        runtime.predict_columns({"tenure": [1], "charges": [2.0], "x": [0]})
    with pytest.raises(
        InvalidInput, match=r"same number of values: 'tenure' has 2, but 'plan' has 1"
    ):
        runtime.predict_columns({"tenure": [1, 2], "charges": [2.0, 3.0], "plan": ["pro"]})
    with pytest.raises(InvalidInput, match=r"column 'plan' must be a list, got 'pro'"):
        runtime.predict_columns({"tenure": [1], "charges": [2.0], "plan": "pro"})  # type: ignore[dict-item]


def test_instances_must_have_one_value_per_input(runtime: ModelRuntime) -> None:
    with pytest.raises(
        InvalidInput, match=r"row 1 of 'instances' must be a list of 3 values in the order tenure"
    ):
        runtime.predict_instances([[1, 2.0, "pro"], [1, 2.0]])


# ---- batches of requests ------------------------------------------------------------------
def test_predict_many_answers_each_payload_and_isolates_failures(tmp_path: Path, data: Any) -> None:
    X, y = data
    save_package(
        mixed_pipeline(unknown="error").fit(X, y), tmp_path / "pkg", input_example=X.head()
    )
    pkg = load_package(tmp_path / "pkg")
    rt = ModelRuntime(pkg, name="strict", version="strict@1")
    first, second = records(X.iloc[:3]), records(X.iloc[3:5])
    results = rt.predict_many(
        [
            ModelInput.records(first),
            ModelInput.records([{**GOOD, "tenure": "x"}]),  # fails its checks: alone
            ModelInput.columns({k: [r[k] for r in second] for k in GOOD}),
            ModelInput.records([{**GOOD, "plan": "platinum"}]),  # the model refuses it
        ]
    )
    assert isinstance(results[0], PredictionBatch) and isinstance(results[2], PredictionBatch)
    assert_same(results[0], pkg, X.iloc[:3])
    assert_same(results[2], pkg, X.iloc[3:5].reset_index(drop=True))
    assert isinstance(results[1], InvalidInput) and "'tenure'" in results[1].detail
    assert isinstance(results[3], InvalidInput)
    assert "could not predict" in results[3].detail and "platinum" in results[3].detail


def test_one_model_call_for_many_payloads(runtime: ModelRuntime, data: Any) -> None:
    X, _ = data
    payloads = [ModelInput.records(records(X.iloc[i : i + 2])) for i in range(0, 20, 2)]
    before = runtime.model_calls
    results = runtime.predict_many(payloads)
    assert runtime.model_calls == before + 1
    for i, result in enumerate(results):
        alone = runtime.predict_records(records(X.iloc[2 * i : 2 * i + 2]))
        assert isinstance(result, PredictionBatch)
        assert result.predictions == alone.predictions
        # one call over 20 rows may take other BLAS paths than one over 2: the last bits differ
        np.testing.assert_allclose(result.probabilities, alone.probabilities, rtol=1e-9)


def test_concurrent_calls_from_threads_agree(runtime: ModelRuntime, data: Any) -> None:
    X, _ = data
    chunks = [records(X.iloc[i : i + 4]) for i in range(0, 64, 4)]
    expected = [runtime.predict_records(c) for c in chunks]
    got: dict[int, PredictionBatch] = {}

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = runtime.predict_records(chunks[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(chunks))] == expected


# ---- ONNX -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, mixed: ModelPackage) -> ModelPackage:
    dest = tmp_path_factory.mktemp("onnx") / "pkg"
    export_onnx(mixed.path, dest)
    return load_package(dest)


def test_onnx_runtime_answers_like_the_package(exported: ModelPackage, data: Any) -> None:
    X, _ = data
    frame = X.iloc[:20].reset_index(drop=True)
    rt = ModelRuntime(exported, name="churn", version="churn@5", use_onnx=True)
    assert rt.backend == "onnx"
    batch = rt.predict_records(records(frame))
    assert batch.predictions == exported.predict(frame).tolist()
    np.testing.assert_allclose(
        np.asarray(batch.probabilities), exported.predict_proba(frame), rtol=1e-4, atol=1e-5
    )
    native = ModelRuntime(exported, name="churn", version="churn@5", use_onnx=False)
    assert native.backend == "native"
    assert_same(native.predict_records(records(frame)), exported, frame)


def test_onnx_is_chosen_by_timing_and_still_correct(exported: ModelPackage, data: Any) -> None:
    rt = ModelRuntime(exported, name="churn", version="churn@5")
    assert rt.backend in ("native", "onnx")
    assert set(rt.timings_us) == {"native", "onnx"}
    assert all(v > 0 for v in rt.timings_us.values())
    X, _ = data
    frame = X.iloc[:5].reset_index(drop=True)
    batch = rt.predict_records(records(frame))
    assert batch.predictions == exported.predict(frame).tolist()


def test_a_changed_onnx_file_is_refused(exported: ModelPackage, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "pkg"
    shutil.copytree(exported.path, copy)
    pkg = load_package(copy)
    (copy / "onnx" / "model.onnx").write_bytes(b"not the model")  # changed after loading
    with pytest.raises(CorruptData, match=r"model.onnx does not match its checksum"):
        ModelRuntime(pkg, name="churn", version="churn@5", use_onnx=True)


def test_use_onnx_without_an_export_is_refused(mixed: ModelPackage) -> None:
    with pytest.raises(InvalidInput, match=r"churn@3 has no ONNX export"):
        ModelRuntime(mixed, name="churn", version="churn@3", use_onnx=True)
