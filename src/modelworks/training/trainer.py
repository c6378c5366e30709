"""``ws.train(...)``: fit one model on a dataset version and track everything about it.

The same code runs in a notebook, the CLI and a job worker: it talks to the store through
a :class:`~modelworks.client.Workspace`, so it works embedded and against a server alike.
A named model (``"lightgbm"``, ``"random_forest"``...) gets AutoML's preprocessing for its
family, so numeric, categorical, missing, datetime and text columns all just work; any
scikit-learn-compatible estimator object is fitted on the feature columns as they are.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    from modelworks.client import Workspace
    from modelworks.data.client import DatasetVersion
    from modelworks.tracking.client import ActiveRun

MODEL_ARTIFACT = "model"
# The boosting families' round counts when none is given: each library's own default.
DEFAULT_ROUNDS = {"lightgbm": 100, "xgboost": 100, "hist_gradient_boosting": 100}
ROUND_PARAMS = ("n_estimators", "max_iter", "num_boost_round")


@dataclass
class TrainResult:
    """A trained model, the run that tracked it, and its held-out scores."""

    run_id: str
    dataset: str | None
    model_name: str
    task: str
    metrics: dict[str, float]
    model: Any
    feature_columns: list[str]
    warnings: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def __repr__(self) -> str:
        scores = ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items())
        return f"<TrainResult {self.model_name} {self.task} run={self.run_id} {scores}>"

    def _repr_html_(self) -> str:
        from modelworks.core.html_tables import html_table

        rows = [
            ("run", self.run_id),
            ("dataset", self.dataset or "-"),
            ("model", self.model_name),
            ("task", self.task),
            *((k, f"{v:.6g}") for k, v in self.metrics.items()),
            ("seconds", f"{self.elapsed_seconds:.1f}"),
        ]
        return html_table("Training result", rows)


def load_frame(ws: Workspace, dataset: Any) -> tuple[pd.DataFrame, str | None]:
    """The training frame and its version ref from a ref, a DatasetVersion or a DataFrame."""
    from modelworks.data.client import DatasetVersion

    if isinstance(dataset, pd.DataFrame):
        return dataset, dataset.attrs.get("modelworks.dataset")
    if isinstance(dataset, str):
        dataset = ws.datasets.get(dataset)
    if not isinstance(dataset, DatasetVersion):
        raise InvalidInput(
            "dataset must be a version ref such as 'churn@latest', a DatasetVersion or a "
            f"pandas DataFrame; got {type(dataset).__name__}."
        )
    return dataset.to_pandas(), dataset.ref


def split_holdout(
    frame: pd.DataFrame, target: str, task: str, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded train/test split, stratified for classification when every class can be."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise InvalidInput(f"test_size must be between 0 and 1 (a fraction); got {test_size}.")
    n_test = round(len(frame) * test_size)
    if n_test < 1 or len(frame) - n_test < 2:
        raise InvalidInput(
            f"{len(frame)} labelled rows are too few to hold out {test_size:.0%} for testing; "
            "give more rows or a different test_size."
        )
    stratify = None
    if task != "regression":
        counts = frame[target].value_counts()
        if counts.min() >= 2 and n_test >= len(counts):
            stratify = frame[target]
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=stratify)
    return train, test


def holdout_metrics(model: Any, x: pd.DataFrame, y: pd.Series, task: str) -> dict[str, float]:
    """Headline scores on the held-out rows (the evaluation module adds the rest)."""
    from sklearn import metrics as m

    if task == "regression":
        pred = np.asarray(model.predict(x), dtype=np.float64)
        truth = y.to_numpy(dtype=np.float64)
        return {
            "test_rmse": float(np.sqrt(m.mean_squared_error(truth, pred))),
            "test_mae": float(m.mean_absolute_error(truth, pred)),
            "test_r2": float(m.r2_score(truth, pred)),
        }
    pred = model.predict(x)
    out = {
        "test_accuracy": float(m.accuracy_score(y, pred)),
        "test_f1_macro": float(m.f1_score(y, pred, average="macro")),
    }
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x), dtype=np.float64)
        classes = list(model.classes_)
        if set(pd.unique(y)) <= set(classes):
            out["test_log_loss"] = float(m.log_loss(y, proba, labels=classes))
            if len(classes) == 2:
                positive = y == classes[1]
                out["test_roc_auc"] = float(m.roc_auc_score(positive, proba[:, 1]))
                out["test_precision"] = float(m.precision_score(positive, pred == classes[1]))
                out["test_recall"] = float(m.recall_score(positive, pred == classes[1]))
            elif y.nunique() == len(classes):
                out["test_roc_auc"] = float(
                    m.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
                )
    return out


def _named_model(
    name: str, task: str, params: dict[str, Any], frame: pd.DataFrame, target: str, seed: int
) -> tuple[Any, list[str], list[str]]:
    """AutoML's preprocessing for the family + the family's estimator, as one pipeline."""
    from sklearn.pipeline import Pipeline

    from modelworks.training.automl.columns import inspect_columns
    from modelworks.training.automl.ensemble import EnsembleClassifier
    from modelworks.training.automl.families import FAMILIES, available_families, build_model
    from modelworks.training.automl.preprocessing import build_preprocessor

    if name not in FAMILIES:
        raise InvalidInput(
            f"Unknown model {name!r}; use one of {', '.join(available_families())}, or pass a "
            "scikit-learn-compatible estimator object."
        )
    if name not in available_families():
        raise InvalidInput(f"The {name!r} model needs torch: pip install 'modelworks[torch]'.")
    report = inspect_columns(frame, target, task)
    family = FAMILIES[name]
    p = dict(params)
    rounds = None
    for key in ROUND_PARAMS:
        if key in p:
            rounds = int(p.pop(key))
    if family.boosting:
        rounds = rounds or DEFAULT_ROUNDS.get(name, 100)
    preprocess = build_preprocessor(family.kind, report.kinds)
    try:
        model = build_model(name, task, p, seed=seed, n_jobs=_cores(), rounds=rounds)
    except TypeError as exc:
        raise InvalidInput(f"Bad params for {name}: {exc}") from None
    if name == "hist_gradient_boosting" and report.kinds.categorical:
        # The tree preprocessing puts the ordinal-coded categories right after the numeric
        # columns; HistGradientBoosting takes their positions as indices.
        n_num, n_cat = len(report.kinds.numeric), len(report.kinds.categorical)
        model.set_params(categorical_features=list(range(n_num, n_num + n_cat)))
    pipe = Pipeline([("preprocess", preprocess), ("model", model)])
    if task != "regression":
        # Class codes 0..K-1 for every family (XGBoost needs them); labels come back out.
        return EnsembleClassifier([pipe], [1.0]), report.kinds.all, report.warnings
    return pipe, report.kinds.all, report.warnings


def _cores() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def train(
    ws: Workspace,
    dataset: str | DatasetVersion | pd.DataFrame,
    target: str,
    model: Any = "lightgbm",
    params: Mapping[str, Any] | None = None,
    *,
    task: str | None = None,
    experiment: str = "training",
    run_name: str | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    features: Sequence[str] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Fit ``model`` on a dataset version, score it on a held-out split, and track the run.

    The run gets the params, the dataset version as its input (so it shows in the
    dataset's lineage), held-out metrics, feature importances and the model as a package
    (artifact ``model/``), which ``mw.load_model(ws, run_id)`` loads back.
    """
    from modelworks.training.autolog import log_model
    from modelworks.training.automl.columns import check_target
    from modelworks.training.automl.metrics import resolve_task

    started = time.monotonic()
    frame, ref = load_frame(ws, dataset)
    check_target(frame, target)
    if features is not None:
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise InvalidInput(f"features not in the dataset: {', '.join(map(repr, missing))}.")
        frame = frame[[*features, target]]
    labelled = frame[frame[target].notna()]
    task_name = resolve_task(task, labelled[target])
    if task_name != "regression" and labelled[target].nunique() < 2:
        raise InvalidInput(
            f"Target {target!r} has a single class; classification needs at least two."
        )
    notes: list[str] = []
    if len(labelled) < len(frame):
        notes.append(f"{len(frame) - len(labelled)} rows with a null target were left out.")
    params = dict(params or {})
    if isinstance(model, str):
        estimator, columns, warned = _named_model(model, task_name, params, labelled, target, seed)
        notes += warned
        model_name = model
    else:
        if not (hasattr(model, "fit") and hasattr(model, "predict")):
            raise InvalidInput(
                f"model must be a name such as 'lightgbm' or an estimator with fit() and "
                f"predict(); got {type(model).__name__}."
            )
        if params:
            model.set_params(**params)
        estimator = model
        columns = [c for c in labelled.columns if c != target]
        model_name = type(model).__name__
    train_part, test_part = split_holdout(labelled, target, task_name, test_size, seed)
    x_train, y_train = train_part[columns], train_part[target]
    x_test, y_test = test_part[columns], test_part[target]
    tags = {"mw.model": model_name, "mw.task": task_name, "mw.source": "modelworks train"}
    with tracked_run(ws, experiment=experiment, name=run_name or model_name, tags=tags) as run:
        if ref:
            run.log_input(ref)
        run.log_params(
            {
                "model": model_name,
                "target": target,
                "task": task_name,
                "test_size": test_size,
                "seed": seed,
                "train_rows": len(train_part),
                "test_rows": len(test_part),
                **({"dataset": ref} if ref else {}),
                **{f"model.{k}": v for k, v in params.items()},
            }
        )
        with (
            autolog_paused(),
            _spinner(progress, f"Training {model_name} on {len(train_part)} rows"),
        ):
            estimator.fit(x_train, y_train)
        scores = holdout_metrics(estimator, x_test, y_test, task_name)
        run.log_metrics(scores)
        _log_importance(run, estimator)
        if notes:
            run.log_dict({"warnings": notes}, "warnings.json")
        log_model(
            run,
            estimator,
            MODEL_ARTIFACT,
            input_example=x_train.head(5),
            task=task_name,
            metrics=scores,
            params=params,
            lineage={"dataset": ref} if ref else None,
        )
    return TrainResult(
        run_id=run.id,
        dataset=ref,
        model_name=model_name,
        task=task_name,
        metrics=scores,
        model=estimator,
        feature_columns=list(columns),
        warnings=notes,
        elapsed_seconds=time.monotonic() - started,
    )


def _log_importance(run: Any, model: Any) -> None:
    """The model's own importances (trees: gain or impurity), by preprocessed feature."""
    from modelworks.training.autolog import _feature_importance

    members = getattr(model, "estimators_", None)
    if isinstance(members, list) and len(members) == 1:  # a one-member label wrapper
        model = members[0]
    found = _feature_importance(model)
    if found:
        ranked = dict(sorted(found.items(), key=lambda kv: -kv[1]))
        run.log_dict(ranked, "feature_importance.json")


@contextlib.contextmanager
def tracked_run(ws: Workspace, **kwargs: Any) -> Iterator[ActiveRun]:
    """``ws.start_run`` whose run is deleted again (soft) when bad input stops it, so a
    mistake in the arguments leaves no half-made run behind; other failures stay FAILED."""
    run = ws.start_run(**kwargs)
    try:
        with run:
            yield run
    except InvalidInput:
        with contextlib.suppress(Exception):
            ws.runs.delete(run.id)
        raise


@contextlib.contextmanager
def autolog_paused() -> Iterator[None]:
    """Fits inside do not autolog: this module logs the run itself (no double logging)."""
    from modelworks.training import autolog

    autolog._local.depth = autolog._depth() + 1
    try:
        yield
    finally:
        autolog._local.depth = autolog._depth() - 1


def _spinner(enabled: bool, text: str) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    from modelworks.cli.output import err_console

    return err_console.status(text)
