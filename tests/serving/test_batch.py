"""Batch inference: predict_batch, predict_to_dataset and `modelworks predict`.

Predictions are compared with the package's own predict/predict_proba on the same rows;
the Ray Data path runs on the real local cluster of the ``ray_cluster`` fixture.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from modelworks.core.audit import AuditRecord
from modelworks.core.auth import local_principal
from modelworks.core.errors import AlreadyExists, InvalidInput, NotFound
from modelworks.core.store import Store
from modelworks.serving.batch import BatchResult, predict_batch, predict_to_dataset
from modelworks.training.package import ModelPackage, load_package, save_package

ROWS = 3_000
FEATURES = ["age", "income", "tenure", "plan"]


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Customers: three numbers and a categorical plan; an id; a three-class target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(rows, dtype=np.int64) + 1000 * seed,
            "age": rng.integers(18, 80, rows).astype(np.float64),
            "income": rng.normal(50_000, 15_000, rows),
            "tenure": rng.integers(0, 120, rows).astype(np.int64),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
        }
    )
    score = frame.age / 40 + frame.income / 40_000 + (frame.plan == "pro") - frame.tenure / 60
    frame["target"] = np.digitize(score + rng.normal(0, 0.3, rows), [1.2, 2.2])
    return frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame(ROWS, seed=1)


@pytest.fixture(scope="module")
def sklearn_pkg(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """A scikit-learn Pipeline: scaling and one-hot encoding, then a logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train = make_frame(2_000, seed=0)
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["age", "income", "tenure"]), ("cat", OneHotEncoder(), ["plan"])]
    )
    model = Pipeline([("pre", pre), ("lr", LogisticRegression(max_iter=500))])
    model.fit(train[FEATURES], train.target)
    path = tmp_path_factory.mktemp("pkg") / "sklearn"
    save_package(model, path, input_example=train[FEATURES].head())
    return load_package(path)


@pytest.fixture(scope="module")
def lightgbm_pkg(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """A binary LightGBM classifier on the numeric columns."""
    from lightgbm import LGBMClassifier

    train = make_frame(2_000, seed=0)
    numeric = FEATURES[:3]
    model = LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1, n_jobs=1)
    model.fit(train[numeric], (train.target == 2).astype(int))
    path = tmp_path_factory.mktemp("pkg") / "lightgbm"
    save_package(model, path, input_example=train[numeric].head())
    return load_package(path)


@pytest.fixture(scope="module")
def regressor_pkg(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    from sklearn.ensemble import HistGradientBoostingRegressor

    train = make_frame(2_000, seed=0)
    numeric = FEATURES[:3]
    model = HistGradientBoostingRegressor(max_iter=20).fit(train[numeric], train.income / 1000)
    path = tmp_path_factory.mktemp("pkg") / "regressor"
    save_package(model, path, input_example=train[numeric].head())
    return load_package(path)


def write_parquet(frame: pd.DataFrame, path: Path, row_group_size: int = 500) -> Path:
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size
    )
    return path


def features_of(pkg: ModelPackage) -> list[str]:
    assert pkg.signature is not None
    return pkg.signature.input_names


def assert_matches_package(out: pd.DataFrame, pkg: ModelPackage, rows: pd.DataFrame) -> None:
    """The output holds the package's own predictions and probabilities for ``rows``."""
    X = rows[features_of(pkg)]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), pkg.predict(X))
    proba = pkg.predict_proba(X)
    classes = pkg.classes or []
    assert list(out.columns[-len(classes) :]) == [f"probability_{c}" for c in classes]
    got = out[[f"probability_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(got, proba, rtol=1e-12, atol=0)


# ---- predictions ---------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["sklearn_pkg", "lightgbm_pkg"])
def test_predictions_equal_the_packages_own(
    which: str, request: pytest.FixtureRequest, frame: pd.DataFrame, tmp_path: Path
) -> None:
    pkg: ModelPackage = request.getfixturevalue(which)
    source = write_parquet(frame[["customer_id", *features_of(pkg)]], tmp_path / "in.parquet")
    seen: list[tuple[int, int | None]] = []
    result = predict_batch(
        pkg, source, tmp_path / "out.parquet", batch_rows=700, workers=2,
        keep_columns=["customer_id"], progress=False,
        on_progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen == [(min(ROWS, 700 * k), ROWS) for k in range(1, 6)]  # after each batch written
    assert isinstance(result, BatchResult)
    assert result.rows == ROWS and result.batches == 5 and result.executor == "local"
    assert result.files == [str(tmp_path / "out.parquet")]
    classes = pkg.classes or []
    assert result.columns == ["customer_id", "prediction", *[f"probability_{c}" for c in classes]]
    out = pq.read_table(result.output).to_pandas()
    assert out.columns.tolist() == result.columns
    np.testing.assert_array_equal(out.customer_id, frame.customer_id)  # rows stay in order
    assert_matches_package(out, pkg, frame)
    # the input and the output folder hold nothing else: no temp file was left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.parquet"]


def test_regressor_writes_one_prediction_column(
    regressor_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    numeric = FEATURES[:3]
    source = write_parquet(frame[numeric], tmp_path / "in.parquet")
    result = predict_batch(regressor_pkg, source, tmp_path / "out.parquet", progress=False)
    out = pq.read_table(result.output)
    assert out.schema.names == ["prediction"] and out.schema.field(0).type == pa.float64()
    np.testing.assert_allclose(
        out["prediction"].to_numpy(), regressor_pkg.predict(frame[numeric]), rtol=1e-12
    )
    with pytest.raises(InvalidInput, match=r"regression model, so it has no class probabilities"):
        predict_batch(regressor_pkg, source, tmp_path / "p.parquet", columns_out=["probability"])


def test_labels_only_and_probabilities_only(
    sklearn_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_parquet(frame[FEATURES], tmp_path / "in.parquet")
    labels = predict_batch(sklearn_pkg, source, tmp_path / "labels.parquet",
                           columns_out=["prediction"], progress=False)  # fmt: skip
    out = pq.read_table(labels.output).to_pandas()
    assert out.columns.tolist() == ["prediction"]
    np.testing.assert_array_equal(out.prediction, sklearn_pkg.predict(frame[FEATURES]))
    proba = predict_batch(sklearn_pkg, source, tmp_path / "proba.parquet",
                          columns_out=["probability"], progress=False)  # fmt: skip
    assert proba.columns == ["probability_0", "probability_1", "probability_2"]


# ---- bounded memory ------------------------------------------------------------------------
def test_input_is_read_and_scored_in_bounded_batches(
    lightgbm_pkg: ModelPackage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rows = make_frame(10_000, seed=2)
    source = write_parquet(rows[FEATURES[:3]], tmp_path / "in.parquet", row_group_size=1_000)
    seen: list[int] = []
    own = lightgbm_pkg.predict_proba

    def spy(data: Any) -> Any:
        seen.append(len(data))
        return own(data)

    monkeypatch.setattr(lightgbm_pkg, "predict_proba", spy)
    result = predict_batch(lightgbm_pkg, source, tmp_path / "out.parquet", batch_rows=1_500,
                           workers=2, progress=False)  # fmt: skip
    # 64 sample rows first (types, output schema), then 1,500 rows a call: never the input
    assert seen[0] == 64 and sorted(seen[1:]) == [1_000] + [1_500] * 6
    assert result.batches == 7 and result.rows == 10_000
    meta = pq.ParquetFile(result.output).metadata
    assert meta.num_row_groups == 7  # written a batch at a time, too
    assert [meta.row_group(i).num_rows for i in range(7)] == [1_500] * 6 + [1_000]


def test_small_row_groups_are_combined_into_full_batches(
    lightgbm_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_parquet(frame[FEATURES[:3]], tmp_path / "in.parquet", row_group_size=100)
    result = predict_batch(lightgbm_pkg, source, tmp_path / "out.parquet", batch_rows=1_000,
                           progress=False)  # fmt: skip
    assert result.batches == 3  # not 30 calls of 100 rows


# ---- inputs --------------------------------------------------------------------------------
def test_csv_input_gives_the_same_predictions(
    sklearn_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame[["customer_id", *FEATURES]].to_csv(tmp_path / "in.csv", index=False)
    result = predict_batch(
        sklearn_pkg, tmp_path / "in.csv", tmp_path / "out.parquet", batch_rows=800,
        keep_columns=["customer_id"], progress=False,
    )  # fmt: skip
    out = pq.read_table(result.output).to_pandas()
    assert result.rows == ROWS and result.batches == 4
    np.testing.assert_array_equal(out.customer_id, frame.customer_id)
    assert_matches_package(out, sklearn_pkg, frame)


def test_folder_glob_and_list_inputs(
    lightgbm_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    cols = ["customer_id", *FEATURES[:3]]
    for i in range(3):
        write_parquet(frame[cols].iloc[i * 1000 : (i + 1) * 1000], parts / f"part-{i}.parquet")
    (parts / "_SUCCESS").write_text("")  # markers are not data
    expected = None
    for n, source in enumerate(
        [parts, str(parts / "part-*.parquet"), sorted(parts.glob("*.parquet"))]
    ):
        result = predict_batch(lightgbm_pkg, source, tmp_path / f"out{n}.parquet",
                               keep_columns=["customer_id"], progress=False)  # fmt: skip
        table = pq.read_table(result.output)
        assert table.num_rows == ROWS
        expected = table if expected is None else expected
        assert table.equals(expected)
    assert expected is not None
    assert_matches_package(expected.to_pandas(), lightgbm_pkg, frame)


def test_csv_output_and_a_folder_output(
    lightgbm_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_parquet(frame[FEATURES[:3]], tmp_path / "in.parquet")
    csv = predict_batch(lightgbm_pkg, source, tmp_path / "out.csv", output_format="csv",
                        progress=False)  # fmt: skip
    back = pd.read_csv(csv.output)
    assert back.columns.tolist() == ["prediction", "probability_0", "probability_1"]
    np.testing.assert_array_equal(back.prediction, lightgbm_pkg.predict(frame[FEATURES[:3]]))
    folder = predict_batch(lightgbm_pkg, source, tmp_path / "scores", progress=False)
    assert folder.files == [str(tmp_path / "scores" / "part-00000.parquet")]
    assert pds.dataset(folder.output).to_table().num_rows == ROWS
    with pytest.raises(InvalidInput, match=r"names a parquet file but output_format is 'csv'"):
        predict_batch(lightgbm_pkg, source, tmp_path / "x.parquet", output_format="csv")


# ---- errors leave nothing behind -----------------------------------------------------------
def test_signature_mismatch_is_named_and_leaves_no_output(
    sklearn_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    bad = frame[["customer_id", "age", "income", "plan"]].rename(columns={"plan": "tier"})
    source = write_parquet(bad, tmp_path / "in.parquet")
    with pytest.raises(
        InvalidInput,
        match=r"does not match the model's signature: missing columns: 'tenure', 'plan'; "
        r"unexpected columns: 'customer_id', 'tier'\..*keep_columns=",
    ) as err:
        predict_batch(sklearn_pkg, source, tmp_path / "out.parquet", progress=False)
    assert err.value.extra == {"missing": ["tenure", "plan"],
                               "unexpected": ["customer_id", "tier"]}  # fmt: skip
    # a wrongly typed column is caught on the first rows, before any output exists
    typed = frame[FEATURES].assign(age=frame.age.astype(str))
    with pytest.raises(InvalidInput, match=r"wrongly typed columns: 'age' is string, expected"):
        predict_batch(sklearn_pkg, write_parquet(typed, tmp_path / "typed.parquet"),
                      tmp_path / "out.parquet", progress=False)  # fmt: skip
    with pytest.raises(InvalidInput, match=r"keep_columns 'id' are not columns of"):
        predict_batch(sklearn_pkg, source, tmp_path / "out.parquet", keep_columns=["id"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "typed.parquet"]


def test_ignored_columns_are_left_out(
    sklearn_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_parquet(frame, tmp_path / "in.parquet")  # with the target and the id
    result = predict_batch(sklearn_pkg, source, tmp_path / "out.parquet",
                           keep_columns=["customer_id"], ignore_columns=["target"],
                           progress=False)  # fmt: skip
    assert result.columns[:2] == ["customer_id", "prediction"]


def test_a_failure_mid_run_leaves_no_output(
    lightgbm_pkg: ModelPackage, monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame,
    tmp_path: Path,
) -> None:  # fmt: skip
    source = write_parquet(frame[FEATURES[:3]], tmp_path / "in.parquet")
    calls = []
    own = lightgbm_pkg.predict_proba

    def failing(data: Any) -> Any:
        calls.append(len(data))
        if len(calls) == 4:
            raise RuntimeError("the model fell over")
        return own(data)

    monkeypatch.setattr(lightgbm_pkg, "predict_proba", failing)
    with pytest.raises(RuntimeError, match=r"the model fell over"):
        predict_batch(lightgbm_pkg, source, tmp_path / "out.parquet", batch_rows=500,
                      workers=1, progress=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_existing_output_needs_overwrite(
    lightgbm_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_parquet(frame[FEATURES[:3]], tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    out.write_text("old")
    with pytest.raises(AlreadyExists, match=r"already exists; .*overwrite=True"):
        predict_batch(lightgbm_pkg, source, out, progress=False)
    assert out.read_text() == "old"
    predict_batch(lightgbm_pkg, source, out, overwrite=True, progress=False)
    assert pq.read_table(out).num_rows == ROWS
    with pytest.raises(NotFound, match=r"No file matches"):
        predict_batch(lightgbm_pkg, str(tmp_path / "nothing-*.parquet"), tmp_path / "o.parquet")
    with pytest.raises(InvalidInput, match=r"batch_rows must be at least 1"):
        predict_batch(lightgbm_pkg, source, tmp_path / "o.parquet", batch_rows=0)


# ---- datasets and the registry -------------------------------------------------------------
def _register(store: Store, pkg: ModelPackage, name: str) -> str:
    from modelworks.registry.service import RegistryService

    return RegistryService(store).register_package(local_principal(), "default", name, pkg.path).ref


def _ingest(store: Store, frame: pd.DataFrame, name: str) -> str:
    from modelworks.data.service import DataService
    from modelworks.data.sources.frames import FrameSource

    result = DataService(store).ingest(local_principal(), "default", name, FrameSource.of(frame))
    assert result.version is not None
    return result.version.ref


def test_dataset_to_dataset_with_lineage(
    store: Store, sklearn_pkg: ModelPackage, frame: pd.DataFrame
) -> None:
    from modelworks.core import lineage
    from modelworks.data.service import DataService

    admin = local_principal()
    model_ref = _register(store, sklearn_pkg, "churn")
    data_ref = _ingest(store, frame, "customers")  # with the target: ignored below
    result, ref = predict_to_dataset(
        store, admin, "default", "churn@1", data_ref, "churn-scores",
        keep_columns=["customer_id"], ignore_columns=["target"], batch_rows=1_000,
        progress=False,
    )  # fmt: skip
    assert ref == "churn-scores@1" and result.output == ref and result.rows == ROWS
    data = DataService(store)
    version, paths = data.read_paths(admin, "default", ref)
    assert paths == result.files and version.row_count == ROWS
    out = pds.dataset(paths).to_table().to_pandas()
    assert out.columns.tolist() == result.columns
    out = out.sort_values("customer_id").reset_index(drop=True)  # the store may reorder parts
    np.testing.assert_array_equal(out.customer_id, frame.customer_id)
    assert_matches_package(out, sklearn_pkg, frame)
    # lineage: customers@1 --derived_from--> churn-scores@1 <--scored-- churn@1
    up = data.lineage(admin, "default", ref, direction="up")
    relations = {(e.parent.label, e.relation) for e in up.edges}
    assert {(data_ref, "derived_from"), (model_ref, "scored")} <= relations
    with store.read() as s:
        edges = s.scalars(
            select(lineage.LineageEdge).where(lineage.LineageEdge.relation == "scored")
        ).all()
        audits = s.scalars(
            select(AuditRecord).where(AuditRecord.action == "model.batch_predict")
        ).all()
    assert [(e.parent_type, e.parent_label, e.child_label) for e in edges] == [
        ("model_version", model_ref, ref)
    ]
    assert edges[0].meta["input"] == data_ref and edges[0].meta["rows"] == ROWS
    assert len(audits) == 1 and audits[0].changes["output"] == ref
    with pytest.raises(InvalidInput, match=r"leave out output_format="):
        predict_to_dataset(store, admin, "default", "churn@1", data_ref, "x", output_format="csv")


# ---- Ray Data ------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_gives_the_same_output(
    ray_cluster: Any, lightgbm_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    import ray

    source = write_parquet(frame[["customer_id", *FEATURES[:3]]], tmp_path / "in.parquet")
    common: dict[str, Any] = {"batch_rows": 1_000, "keep_columns": ["customer_id"],
                              "progress": False}  # fmt: skip
    local = predict_batch(lightgbm_pkg, source, tmp_path / "local.parquet", **common)
    expected = pq.read_table(local.output)
    ray.init(address=ray_cluster.address, log_to_driver=False)
    try:
        one = predict_batch(lightgbm_pkg, source, tmp_path / "ray.parquet",
                            ray_address=ray_cluster.address, **common)  # fmt: skip
        many = predict_batch(lightgbm_pkg, source, tmp_path / "ray-folder",
                             ray_address=ray_cluster.address, **common)  # fmt: skip
    finally:
        ray.shutdown()
    assert one.executor == "ray" and one.rows == ROWS and one.batches is None
    assert pq.read_table(one.output).equals(expected)
    assert many.rows == ROWS and all(Path(f).parent == tmp_path / "ray-folder" for f in many.files)
    assert pds.dataset(many.files).to_table().equals(expected)  # one part, in row order


# ---- CLI -----------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Any]:
    from modelworks.cli.main import ModelworksGroup
    from modelworks.serving.batch_cli import predict

    app = typer.Typer(cls=ModelworksGroup)
    app.command("predict")(predict)

    @app.callback()
    def root() -> None:
        """Test root."""

    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, ["predict", *args])
        assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
        return result

    return run


def test_cli_round_trip(
    cli: Callable[..., Any], sklearn_pkg: ModelPackage, frame: pd.DataFrame, tmp_path: Path
) -> None:
    import modelworks as mw

    with mw.connect() as ws:
        ws.models.register("churn", package=sklearn_pkg.path)
        ws.datasets.ingest(frame, "customers")
    # a dataset version to a file
    args = ["--keep", "customer_id", "--ignore", "target", "--json"]
    out = json.loads(cli("churn@1", "customers@1", str(tmp_path / "scores.parquet"), *args).stdout)
    assert out["rows"] == ROWS and out["columns"][:2] == ["customer_id", "prediction"]
    scores = pq.read_table(tmp_path / "scores.parquet").to_pandas()
    assert_matches_package(scores.sort_values("customer_id"), sklearn_pkg, frame)
    # a CSV file, labels only, to a folder; a package folder as the model
    frame[FEATURES].to_csv(tmp_path / "in.csv", index=False)
    args = [str(tmp_path / "in.csv"), str(tmp_path / "labels"), "--no-probability", "--json"]
    out = json.loads(cli(str(sklearn_pkg.path), *args).stdout)
    labels = pq.read_table(out["files"][0]).to_pandas()
    np.testing.assert_array_equal(labels.prediction, sklearn_pkg.predict(frame[FEATURES]))
    # a dataset version to a new dataset version
    text = cli("churn@1", "customers@1", "dataset:scores", "-k", "customer_id",
               "--ignore", "target").stdout  # fmt: skip
    assert "scores@1" in text and "Predicted" in text
    with mw.connect() as ws:
        assert ws.datasets.get("scores@1").row_count == ROWS
    # mistakes are messages with exit codes, not tracebacks
    bad = cli("churn@1", "customers@1", str(tmp_path / "x.parquet"), code=2)
    assert "unexpected columns: 'customer_id', 'target'" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x.parquet").exists()
    bad = cli("churn@1", str(tmp_path / "in.csv"), "dataset:scores", code=2)
    assert "ingest" in bad.output
