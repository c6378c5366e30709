"""Explanations: the tree, linear and model-agnostic SHAP paths, importance, plots, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import lightgbm as lgb
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import shap
import xgboost as xgb
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from modelworks.core.errors import InvalidInput
from modelworks.evaluation.explain import (
    GlobalImportance,
    RowExplanation,
    ShapOutput,
    explain_rows,
    global_importance,
    shap_values,
)
from modelworks.evaluation.explain_plots import importance_png, waterfall_png
from modelworks.training.automl.columns import ColumnKinds
from modelworks.training.automl.ensemble import EnsembleClassifier
from modelworks.training.automl.preprocessing import build_preprocessor
from modelworks.training.package import ModelPackage, load_package, save_package

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FEATURES = ["f0", "f1", "f2", "f3"]


def only_f0(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Four standard-normal features; every target below depends on f0 alone."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)


@pytest.fixture(scope="module")
def X() -> pd.DataFrame:
    return only_f0()


@pytest.fixture(scope="module")
def y_binary(X: pd.DataFrame) -> np.ndarray:
    return (X["f0"] > 0).to_numpy(dtype=int)


@pytest.fixture(scope="module")
def lgbm(X: pd.DataFrame, y_binary: np.ndarray) -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1).fit(X, y_binary)


def assert_additive(rows: list[RowExplanation], predictions: np.ndarray) -> None:
    """base + sum(shap) is the prediction, which is the model's own output."""
    for row, expected in zip(rows, predictions, strict=True):
        total = row.base_value + sum(c.shap_value for c in row.contributions)
        assert total == pytest.approx(row.prediction, abs=1e-6)
        assert row.prediction == pytest.approx(float(expected), abs=1e-6)
        sizes = [abs(c.shap_value) for c in row.contributions]
        assert sizes == sorted(sizes, reverse=True)


def assert_f0_first(imp: GlobalImportance) -> None:
    assert imp.features[0].name == "f0"
    by_shap = max(imp.features, key=lambda f: f.shap_mean_abs or 0.0)
    assert by_shap.name == "f0"
    f0, *others = imp.features
    assert f0.permutation_mean is not None and f0.permutation_mean > 0.3
    assert all(abs(f.permutation_mean or 0.0) < 0.05 for f in others)
    assert all((f.shap_mean_abs or 0.0) < 0.1 * (f0.shap_mean_abs or 0.0) for f in others)


# ---- the tree path ----------------------------------------------------------------------------
def test_lightgbm_takes_the_tree_path(
    lgbm: lgb.LGBMClassifier, X: pd.DataFrame, y_binary: np.ndarray
) -> None:
    imp = global_importance(lgbm, X, y_binary, max_rows=200, n_repeats=3)
    assert imp.method_used == {
        "permutation": "sklearn.inspection.permutation_importance",
        "shap": "shap.TreeExplainer",
    }
    assert (imp.scoring, imp.n_rows, imp.sorted_by) == ("roc_auc", 200, "permutation_mean")
    assert_f0_first(imp)
    assert "Computed on a seeded sample of 200 of the 300 rows." in imp.notes
    assert GlobalImportance.model_validate(imp.model_dump(mode="json")) == imp

    rows = explain_rows(lgbm, X.head(4))
    assert_additive(rows, np.asarray(lgbm.predict(X.head(4), raw_score=True)))
    assert {r.output for r in rows} == {"raw margin (log-odds) of class 1"}
    assert {(r.method, r.class_label, r.approximate) for r in rows} == {
        ("shap.TreeExplainer", 1, False)
    }
    assert rows[0].contributions[0].feature == "f0"
    assert rows[0].contributions[0].value == pytest.approx(float(X.loc[0, "f0"]))


def test_the_negative_class_of_a_binary_margin_is_its_mirror(
    lgbm: lgb.LGBMClassifier, X: pd.DataFrame
) -> None:
    [positive] = explain_rows(lgbm, X.head(1))
    [negative] = explain_rows(lgbm, X.head(1), class_index=0)
    assert negative.output == "raw margin (log-odds) of class 0"
    assert negative.class_label == 0
    assert negative.prediction == pytest.approx(-positive.prediction)
    assert negative.base_value == pytest.approx(-positive.base_value)
    assert {c.feature: c.shap_value for c in negative.contributions} == pytest.approx(
        {c.feature: -c.shap_value for c in positive.contributions}
    )


def test_xgboost_takes_the_tree_path(X: pd.DataFrame, y_binary: np.ndarray) -> None:
    model = xgb.XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1).fit(X, y_binary)
    imp = global_importance(model, X, y_binary, n_repeats=3)
    assert imp.method_used["shap"] == "shap.TreeExplainer"
    assert imp.n_rows == 300
    assert_f0_first(imp)
    rows = explain_rows(model, X.tail(3))
    assert_additive(rows, model.predict(X.tail(3), output_margin=True))
    assert rows[0].output == "raw margin (log-odds) of class 1"


def test_a_lightgbm_package_loads_as_a_booster_and_keeps_its_classes(
    tmp_path: Path, X: pd.DataFrame
) -> None:
    labels = np.where(X["f0"] > 0, "yes", "no")
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(X, labels)
    save_package(model, tmp_path / "pkg", input_example=X.head(10))
    pkg = load_package(tmp_path / "pkg")
    assert isinstance(pkg.model, lgb.Booster)
    # Extra columns are left out (with a note); the rest are put in the model's order.
    rows = explain_rows(pkg, X.head(2)[FEATURES[::-1]].assign(label=["a", "b"]))
    assert_additive(rows, np.asarray(model.predict(X.head(2), raw_score=True)))
    assert rows[0].output == "raw margin (log-odds) of class 'yes'"
    assert rows[0].class_label == "yes"
    assert any("'label'" in note for note in rows[0].notes)
    imp = global_importance(pkg, X, labels, n_repeats=2)
    assert imp.features[0].name == "f0"


# ---- the model-agnostic path on an AutoML-style package ---------------------------------------
def customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A numeric column with gaps, a string category with gaps, and noise; churn follows
    the amount and the colour."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=n),
            "colour": rng.choice(np.asarray(["red", "green", "blue", None], dtype=object), n),
            "noise": rng.normal(size=n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "amount"] = np.nan
    signal = 2.0 * frame["amount"].fillna(0) + 1.0 * (frame["colour"] == "red")
    labels = np.where(signal + 0.3 * rng.normal(size=n) > 0.3, "churn", "stay")
    return frame, labels


@pytest.fixture(scope="module")
def automl_package(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """An ensemble of a tree and a linear pipeline over AutoML's own preprocessing, saved
    and loaded as a package (so the explainer sees what a registry would give it)."""
    X, labels = customers(240, seed=1)
    cols = ColumnKinds(numeric=["amount", "noise"], categorical=["colour"])
    tree = Pipeline(
        [
            ("preprocess", build_preprocessor("tree", cols)),
            ("model", lgb.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1)),
        ]
    )
    linear = Pipeline(
        [("preprocess", build_preprocessor("linear", cols)), ("model", LogisticRegression())]
    )
    model = EnsembleClassifier([tree, linear], weights=[0.5, 0.5]).fit(X, labels)
    path = tmp_path_factory.mktemp("packages") / "churn"
    save_package(model, path, input_example=X.head(20))
    return load_package(path)


def test_an_automl_package_is_explained_model_agnostically(automl_package: ModelPackage) -> None:
    X, labels = customers(120, seed=2)
    rows_in = X.iloc[[0, 1, 2]].copy()
    rows_in.loc[rows_in.index[1], "colour"] = None
    rows_in.loc[rows_in.index[2], "amount"] = np.nan
    rows = explain_rows(automl_package, rows_in, background=X)
    assert_additive(rows, automl_package.predict_proba(rows_in)[:, 1])
    assert {r.output for r in rows} == {"probability of class 'stay'"}
    assert {(r.method, r.class_label, r.approximate) for r in rows} == {
        ("shap.PermutationExplainer", "stay", True)
    }
    assert any("estimates" in note for note in rows[0].notes)
    values = [{c.feature: c.value for c in r.contributions} for r in rows]
    assert values[0]["colour"] == rows_in["colour"].iloc[0]
    assert values[1]["colour"] is None  # missing values stay missing, as JSON null
    assert values[2]["amount"] is None
    assert RowExplanation.model_validate(rows[0].model_dump(mode="json")) == rows[0]

    [churn] = explain_rows(automl_package, rows_in.head(1), background=X, class_index=0)
    assert churn.output == "probability of class 'churn'"
    assert churn.prediction == pytest.approx(1.0 - rows[0].prediction)
    assert {c.feature: c.shap_value for c in churn.contributions} == pytest.approx(
        {c.feature: -c.shap_value for c in rows[0].contributions}
    )

    imp = global_importance(
        automl_package, X, labels, max_rows=30, n_repeats=2, max_agnostic_rows=12
    )
    assert imp.method_used["shap"] == "shap.PermutationExplainer"
    assert (imp.n_rows, imp.shap_rows, imp.scoring) == (30, 12, "roc_auc")
    assert [f.name for f in imp.features] == ["amount", "colour", "noise"]
    shap_means = [f.shap_mean_abs or 0.0 for f in imp.features]
    assert shap_means == sorted(shap_means, reverse=True)
    assert "SHAP values are in units of the model's probability of class 'stay'." in imp.notes


def test_the_agnostic_path_is_seeded_and_leaves_numpy_random_alone(
    automl_package: ModelPackage,
) -> None:
    X, _ = customers(30, seed=3)
    np.random.seed(7)
    expected_draw = np.random.random()
    np.random.seed(7)
    first = explain_rows(automl_package, X.head(2), background=X, seed=5)
    assert np.random.random() == expected_draw
    again = explain_rows(automl_package, X.head(2), background=X, seed=5)
    assert first == again


# ---- regression -------------------------------------------------------------------------------
def test_regression_on_the_tree_linear_and_agnostic_paths(X: pd.DataFrame) -> None:
    target = 3.0 * X["f0"].to_numpy() + 0.01 * np.arange(len(X)) % 0.05
    tree = lgb.LGBMRegressor(n_estimators=40, num_leaves=8, verbose=-1).fit(X, target)
    linear = Ridge().fit(X, target)
    pipeline = make_pipeline(StandardScaler(), Ridge()).fit(X, target)
    rows = X.head(3)
    for model, method in [
        (tree, "shap.TreeExplainer"),
        (linear, "shap.LinearExplainer"),
        (pipeline, "shap.PermutationExplainer"),
    ]:
        explained = explain_rows(model, rows, background=X)
        assert_additive(explained, model.predict(rows))
        assert {(r.output, r.method, r.class_label) for r in explained} == {("value", method, None)}
        assert explained[0].contributions[0].feature == "f0"
    # A linear model's SHAP values are coef * (x - mean of the background): exact.
    background = X.head(100)  # all of it is used: 100 rows is the most a background takes
    [row] = explain_rows(linear, rows.head(1), background=background)
    expected = linear.coef_[0] * (rows["f0"].iloc[0] - background["f0"].mean())
    assert row.contributions[0].shap_value == pytest.approx(expected)

    imp = global_importance(pipeline, X, target, max_rows=60, n_repeats=2, max_agnostic_rows=20)
    assert (imp.scoring, imp.n_rows, imp.shap_rows) == ("r2", 60, 20)
    assert imp.features[0].name == "f0"
    assert imp.features[0].permutation_mean == pytest.approx(2.0, abs=0.5)  # r2 1 -> about -1
    assert any("explained 20 of the 60 rows" in note for note in imp.notes)


# ---- multiclass -------------------------------------------------------------------------------
def test_multiclass_with_class_index(X: pd.DataFrame) -> None:
    codes = np.digitize(X["f0"].to_numpy(), [-0.5, 0.5])
    tree = lgb.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(X, codes)
    rows = X.head(5)
    margins = np.asarray(tree.predict(rows, raw_score=True))
    explained = explain_rows(tree, rows, class_index=2)
    assert_additive(explained, margins[:, 2])
    assert {(r.output, r.class_label) for r in explained} == {
        ("raw margin (logit, before softmax) of class 2", 2)
    }
    # Without class_index each row is explained for the class it is predicted to be.
    default = explain_rows(tree, rows)
    predicted = np.asarray(tree.predict(rows))
    assert [r.class_label for r in default] == predicted.tolist()
    assert_additive(default, margins[np.arange(5), predicted])

    letters = np.asarray(["a", "b", "c"])[codes]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, letters)
    explained = explain_rows(pipeline, rows, background=X, class_index=1)
    assert_additive(explained, pipeline.predict_proba(rows)[:, 1])
    assert {(r.output, r.class_label) for r in explained} == {("probability of class 'b'", "b")}
    imp = global_importance(pipeline, X, letters, max_rows=50, n_repeats=2, max_agnostic_rows=10)
    assert imp.scoring == "neg_log_loss"
    assert imp.features[0].name == "f0"
    with pytest.raises(InvalidInput, match=r"class_index=3 is out of range.*2: 'c'"):
        explain_rows(pipeline, rows, background=X, class_index=3)


# ---- the fast path ----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:LightGBM binary classifier with TreeExplainer")
def test_shap_values_equals_shaps_own(lgbm: lgb.LGBMClassifier, X: pd.DataFrame) -> None:
    out = shap_values(lgbm, X)
    explainer = shap.TreeExplainer(lgbm)
    np.testing.assert_array_equal(out.values, explainer.shap_values(X))
    assert float(out.base_values) == explainer.expected_value
    assert (out.method, out.output, out.feature_names) == (
        "shap.TreeExplainer",
        "raw margin (log-odds) of class 1",
        FEATURES,
    )
    again = ShapOutput.model_validate(out.model_dump(mode="json"))
    np.testing.assert_allclose(again.values, out.values)

    regressor = xgb.XGBRegressor(n_estimators=10, max_depth=3, n_jobs=1).fit(X, X["f0"])
    out = shap_values(regressor, X[FEATURES[::-1]])  # columns put in the model's order
    np.testing.assert_allclose(out.values, shap.TreeExplainer(regressor).shap_values(X), 1e-6)
    assert out.output == "value"


def test_shap_values_of_a_model_without_a_fast_path(X: pd.DataFrame, y_binary: np.ndarray) -> None:
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y_binary)
    out = shap_values(pipeline, X.head(20))
    assert out.values.shape == (20, 4)
    assert out.method == "shap.PermutationExplainer"
    assert out.output == "probability of class 1"
    np.testing.assert_allclose(
        out.base_values + out.values.sum(axis=1), pipeline.predict_proba(X.head(20))[:, 1]
    )


# ---- plots ------------------------------------------------------------------------------------
def png_shape(data: bytes) -> tuple[int, ...]:
    assert data.startswith(PNG_MAGIC)
    return tuple(mpimg.imread(io.BytesIO(data), format="png").shape)


def test_plots_are_pngs_drawn_without_pyplot(lgbm: lgb.LGBMClassifier, X: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    imp = global_importance(lgbm, X, (X["f0"] > 0).astype(int), n_repeats=2)
    height, width, _ = png_shape(importance_png(imp, top=3))
    assert width > 600 and height > 100  # two panels side by side
    only_shap = global_importance(lgbm, X, methods=["shap"])
    assert png_shape(importance_png(only_shap))[1] < width  # one panel
    [row] = explain_rows(lgbm, X.head(1))
    full = png_shape(waterfall_png(row))
    grouped = png_shape(waterfall_png(row, top=2))  # two bars and "2 other features"
    assert grouped[0] < full[0]
    assert plt.get_fignums() == before
    with pytest.raises(InvalidInput, match=r"top must be at least 1"):
        waterfall_png(row, top=0)


# ---- bad input --------------------------------------------------------------------------------
def test_missing_columns_are_named(
    automl_package: ModelPackage, lgbm: lgb.LGBMClassifier, X: pd.DataFrame
) -> None:
    frame, _ = customers(10, seed=4)
    with pytest.raises(InvalidInput, match=r"missing columns: 'amount'"):
        explain_rows(automl_package, frame.drop(columns="amount"), background=frame)
    with pytest.raises(InvalidInput, match=r"rows lacks columns the model was trained with: 'f2'"):
        explain_rows(lgbm, X.drop(columns="f2"))
    with pytest.raises(InvalidInput, match=r"background lacks columns .*'f0'"):
        explain_rows(lgbm, X.head(2), background=X.drop(columns="f0"))


def test_bad_rows_and_arguments_are_refused(
    automl_package: ModelPackage, lgbm: lgb.LGBMClassifier, X: pd.DataFrame
) -> None:
    frame, _ = customers(10, seed=5)
    with pytest.raises(InvalidInput, match=r"rows has no rows"):
        explain_rows(lgbm, X.head(0))
    with pytest.raises(InvalidInput, match=r"must be a pandas DataFrame.*got list"):
        explain_rows(lgbm, [[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(InvalidInput, match=r"explained against background rows.*background="):
        explain_rows(automl_package, frame.head(1))
    with pytest.raises(InvalidInput, match=r"Ridge is explained against background rows"):
        explain_rows(Ridge().fit(X, X["f0"]), X.head(1))
    with pytest.raises(InvalidInput, match=r"max_evals=3 is too low.*at least 2 x 3 features"):
        explain_rows(automl_package, frame.head(2), max_evals=3)
    with pytest.raises(InvalidInput, match=r"class_index=2 is out of range.*0: 'churn'"):
        explain_rows(automl_package, frame.head(2), class_index=2)
    regressor = Ridge().fit(X, X["f0"])
    with pytest.raises(InvalidInput, match=r"class_index is for classifiers"):
        explain_rows(regressor, X.head(2), class_index=0)
    with pytest.raises(InvalidInput, match=r"methods must be a non-empty list.*'gain'"):
        global_importance(lgbm, X, methods=["gain"])
    with pytest.raises(InvalidInput, match=r"y must hold one target per row of X \(300\)"):
        global_importance(lgbm, X, np.zeros(10))
    with pytest.raises(InvalidInput, match=r"y holds labels the model does not know: 'maybe'"):
        global_importance(automl_package, frame, np.asarray(["maybe"] * 10))
    with pytest.raises(InvalidInput, match=r"y holds only one class"):
        global_importance(automl_package, frame, np.asarray(["churn"] * 10))
    with pytest.raises(InvalidInput, match=r"task='regression' does not fit.*binary model"):
        global_importance(lgbm, X, task="regression")
    with pytest.raises(InvalidInput, match=r"task must be one of binary, multiclass"):
        global_importance(lgbm, X, task="ranking")


def test_without_y_permutation_importance_is_skipped_with_a_note(
    lgbm: lgb.LGBMClassifier, X: pd.DataFrame
) -> None:
    imp = global_importance(lgbm, X)
    assert "permutation" not in imp.method_used
    assert imp.sorted_by == "shap_mean_abs"
    assert imp.features[0].name == "f0"
    assert all(f.permutation_mean is None for f in imp.features)
    assert any("needs y" in note for note in imp.notes)


def test_a_pytorch_package_with_a_tensor_signature(tmp_path: Path, X: pd.DataFrame) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():  # f0 alone matters
        net[0].weight[:, 1:] = 0.0
    inputs = X.astype(np.float32)
    save_package(net, tmp_path / "net", input_example=inputs.head(8).to_numpy())
    pkg = load_package(tmp_path / "net")
    assert pkg.signature is not None and pkg.signature.is_tensor
    rows = explain_rows(pkg, inputs.head(3), background=inputs)
    assert_additive(rows, pkg.predict(inputs.head(3).to_numpy()))
    assert {(r.output, r.method) for r in rows} == {("value", "shap.PermutationExplainer")}
    assert [c.shap_value for c in rows[0].contributions[1:]] == [0.0, 0.0, 0.0]
    assert pkg.task == "other"
    imp = global_importance(pkg, inputs, inputs["f0"], task=pkg.task, max_agnostic_rows=5)
    assert (imp.scoring, imp.features[0].name) == ("r2", "f0")
    with pytest.raises(InvalidInput, match=r"rows has 3 columns; the model takes 4"):
        explain_rows(pkg, inputs.head(3).drop(columns="f3"), background=inputs)
