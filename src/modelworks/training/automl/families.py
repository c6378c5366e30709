"""The model families AutoML searches: their spaces, warm-start configs, and how each fits.

A family is a small record: which preprocessing it takes, its Optuna search space, the good
default configurations tried first (``enqueue_trial``), and a prior relative cost that the
scheduler uses until it has measured the family on this data. Boosting families stop early
on the validation fold and at the trial's deadline; the refit on all data reuses the mean
number of rounds found (scaled up slightly for the larger training set).
"""

# ruff: noqa: N803 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from modelworks.training.automl.mlp import TorchMLPClassifier, TorchMLPRegressor, torch_available
from modelworks.training.automl.preprocessing import PreprocessingKind

MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 30
REFIT_ROUNDS_SCALE = 1.1
FOREST_CHUNK = 50
SMALL_DATA_CELLS = 1_000_000


@dataclass(frozen=True)
class Shape:
    """What a search space may depend on: the rows a model trains on, the task."""

    n_rows: int
    n_features: int
    task: str


@dataclass(frozen=True)
class Family:
    name: str
    kind: PreprocessingKind
    prior_cost: float
    space: Callable[[optuna.Trial, Shape], dict[str, Any]]
    defaults: Callable[[Shape], list[dict[str, Any]]]
    boosting: bool = False


def _min_leaf_high(shape: Shape) -> int:
    return int(max(3, min(100, shape.n_rows // 10)))


def _lgbm_space(t: optuna.Trial, s: Shape) -> dict[str, Any]:
    return {
        "learning_rate": t.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "num_leaves": t.suggest_int("num_leaves", 4, 256, log=True),
        "min_child_samples": t.suggest_int("min_child_samples", 2, _min_leaf_high(s), log=True),
        "colsample_bytree": t.suggest_float("colsample_bytree", 0.3, 1.0),
        "subsample": t.suggest_float("subsample", 0.5, 1.0),
        "reg_alpha": t.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        "reg_lambda": t.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def _lgbm_defaults(s: Shape) -> list[dict[str, Any]]:
    high = _min_leaf_high(s)
    return [
        {
            "learning_rate": 0.1,
            "num_leaves": 31,
            "min_child_samples": min(20, high),
            "colsample_bytree": 0.8,
            "subsample": 0.8,
            "reg_alpha": 1e-3,
            "reg_lambda": 1e-3,
        },
        {
            "learning_rate": 0.05,
            "num_leaves": 8,
            "min_child_samples": min(5, high),
            "colsample_bytree": 0.5,
            "subsample": 0.9,
            "reg_alpha": 1e-3,
            "reg_lambda": 1.0,
        },
    ]


def _xgb_space(t: optuna.Trial, s: Shape) -> dict[str, Any]:
    return {
        "learning_rate": t.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_depth": t.suggest_int("max_depth", 2, 10),
        "min_child_weight": t.suggest_float("min_child_weight", 0.1, 20.0, log=True),
        "subsample": t.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": t.suggest_float("colsample_bytree", 0.3, 1.0),
        "reg_alpha": t.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        "reg_lambda": t.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def _xgb_defaults(s: Shape) -> list[dict[str, Any]]:
    return [
        {
            "learning_rate": 0.1,
            "max_depth": 6,
            "min_child_weight": 1.0,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "reg_alpha": 1e-3,
            "reg_lambda": 1.0,
        },
        {
            "learning_rate": 0.05,
            "max_depth": 3,
            "min_child_weight": 1.0,
            "subsample": 0.9,
            "colsample_bytree": 0.5,
            "reg_alpha": 1e-3,
            "reg_lambda": 3.0,
        },
    ]


def _hgb_space(t: optuna.Trial, s: Shape) -> dict[str, Any]:
    return {
        "learning_rate": t.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_leaf_nodes": t.suggest_int("max_leaf_nodes", 4, 128, log=True),
        "min_samples_leaf": t.suggest_int("min_samples_leaf", 2, _min_leaf_high(s), log=True),
        "l2_regularization": t.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
        "max_features": t.suggest_float("max_features", 0.3, 1.0),
    }


def _hgb_defaults(s: Shape) -> list[dict[str, Any]]:
    return [
        {
            "learning_rate": 0.1,
            "max_leaf_nodes": 31,
            "min_samples_leaf": min(20, _min_leaf_high(s)),
            "l2_regularization": 1e-3,
            "max_features": 0.8,
        }
    ]


def _forest_space(t: optuna.Trial, s: Shape) -> dict[str, Any]:
    return {
        "n_estimators": t.suggest_int("n_estimators", 100, 500, step=50),
        "max_features": t.suggest_float("max_features", 0.05, 1.0),
        "min_samples_leaf": t.suggest_int("min_samples_leaf", 1, 20, log=True),
    }


def _forest_defaults(s: Shape) -> list[dict[str, Any]]:
    sqrt = float(np.clip(np.sqrt(max(s.n_features, 1)) / max(s.n_features, 1), 0.05, 1.0))
    return [{"n_estimators": 300, "max_features": round(sqrt, 3), "min_samples_leaf": 1}]


def _linear_space(t: optuna.Trial, s: Shape) -> dict[str, Any]:
    if s.task == "regression":
        return {"alpha": t.suggest_float("alpha", 1e-3, 1e3, log=True)}
    return {"C": t.suggest_float("C", 1e-3, 1e2, log=True)}


def _linear_defaults(s: Shape) -> list[dict[str, Any]]:
    return [{"alpha": 1.0}] if s.task == "regression" else [{"C": 1.0}, {"C": 0.1}]


def _mlp_space(t: optuna.Trial, s: Shape) -> dict[str, Any]:
    return {
        "hidden_size": t.suggest_categorical("hidden_size", [32, 64, 128, 256]),
        "n_layers": t.suggest_int("n_layers", 1, 3),
        "dropout": t.suggest_float("dropout", 0.0, 0.4),
        "learning_rate": t.suggest_float("learning_rate", 1e-4, 3e-2, log=True),
        "weight_decay": t.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        "batch_size": t.suggest_categorical("batch_size", [32, 64, 128, 256]),
    }


def _mlp_defaults(s: Shape) -> list[dict[str, Any]]:
    return [
        {
            "hidden_size": 128,
            "n_layers": 2,
            "dropout": 0.1,
            "learning_rate": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": 64 if s.n_rows < 5000 else 256,
        }
    ]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("linear", "linear", 0.2, _linear_space, _linear_defaults),
        Family("lightgbm", "tree", 1.0, _lgbm_space, _lgbm_defaults, boosting=True),
        Family("xgboost", "tree", 1.5, _xgb_space, _xgb_defaults, boosting=True),
        Family("hist_gradient_boosting", "tree", 1.5, _hgb_space, _hgb_defaults, boosting=True),
        Family("extra_trees", "tree", 1.5, _forest_space, _forest_defaults),
        Family("random_forest", "tree", 2.5, _forest_space, _forest_defaults),
        Family("mlp", "linear", 4.0, _mlp_space, _mlp_defaults),
    )
}


def available_families() -> list[str]:
    return [name for name in FAMILIES if name != "mlp" or torch_available()]


def build_model(
    family: str,
    task: str,
    params: dict[str, Any],
    *,
    seed: int,
    n_jobs: int,
    cat_mask: list[bool] | None = None,
    rounds: int | None = None,
) -> Any:
    """An unfitted estimator; ``rounds`` fixes the boosting rounds (no early stopping: refit)."""
    cls = task != "regression"
    p = dict(params)
    if family == "lightgbm":
        import lightgbm as lgb

        lgb_cls = lgb.LGBMClassifier if cls else lgb.LGBMRegressor
        return lgb_cls(
            n_estimators=rounds or MAX_ROUNDS,
            subsample_freq=1,
            random_state=seed,
            n_jobs=n_jobs,
            verbose=-1,
            deterministic=True,
            force_row_wise=True,
            **p,
        )
    if family == "xgboost":
        import xgboost as xgb

        xgb_cls = xgb.XGBClassifier if cls else xgb.XGBRegressor
        return xgb_cls(
            n_estimators=rounds or MAX_ROUNDS,
            early_stopping_rounds=None if rounds else EARLY_STOPPING_ROUNDS,
            tree_method="hist",
            random_state=seed,
            n_jobs=n_jobs,
            verbosity=0,
            **p,
        )
    if family == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        hgb_cls = HistGradientBoostingClassifier if cls else HistGradientBoostingRegressor
        return hgb_cls(
            max_iter=rounds or MAX_ROUNDS,
            early_stopping=rounds is None,
            n_iter_no_change=EARLY_STOPPING_ROUNDS,
            categorical_features=cat_mask,
            random_state=seed,
            **p,
        )
    if family in ("random_forest", "extra_trees"):
        from sklearn import ensemble

        name = ("RandomForest" if family == "random_forest" else "ExtraTrees") + (
            "Classifier" if cls else "Regressor"
        )
        return getattr(ensemble, name)(n_jobs=n_jobs, random_state=seed, **p)
    if family == "linear":
        from sklearn.linear_model import LogisticRegression, Ridge

        if cls:
            return LogisticRegression(max_iter=2000, random_state=seed, **p)
        return Ridge(random_state=seed, **p)
    if family == "mlp":
        mlp_cls = TorchMLPClassifier if cls else TorchMLPRegressor
        return mlp_cls(random_state=seed, n_jobs=n_jobs, **p)
    raise ValueError(f"unknown family {family!r}")


def _lgbm_deadline(deadline: float) -> Callable[[Any], None]:
    import lightgbm as lgb

    def callback(env: Any) -> None:
        if time.time() > deadline:
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    callback.order = 40  # type: ignore[attr-defined]
    return callback


def _xgb_deadline(deadline: float) -> Any:
    from xgboost.callback import TrainingCallback

    class Deadline(TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            return time.time() > deadline

    return Deadline()


def fit_with_validation(
    family: str,
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    deadline: float,
) -> int | None:
    """Fit for a trial: boosting stops early on the validation set and at the deadline.

    Returns the rounds the boosting model kept (None for other families).
    """
    if family == "lightgbm":
        import lightgbm as lgb

        model.fit(
            X,
            y,
            eval_X=(X_val,),
            eval_y=(y_val,),
            callbacks=[
                lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False),
                _lgbm_deadline(deadline),
            ],
        )
        return int(model.best_iteration_ or model.n_estimators)
    if family == "xgboost":
        model.set_params(callbacks=[_xgb_deadline(deadline)])
        model.fit(X, y, eval_set=[(X_val, y_val)], verbose=False)
        model.set_params(callbacks=None)
        best = getattr(model, "best_iteration", None)
        return int(best) + 1 if best is not None else int(model.n_estimators)
    if family == "hist_gradient_boosting":
        model.fit(X, y, X_val=X_val, y_val=y_val)
        return int(model.n_iter_)
    if family in ("random_forest", "extra_trees"):
        # Grow the forest in chunks so a slow one stops at the deadline with what it has.
        target = int(model.n_estimators)
        grown = 0
        model.set_params(warm_start=True)
        while grown < target:
            grown = min(target, grown + FOREST_CHUNK)
            model.set_params(n_estimators=grown)
            model.fit(X, y)
            if time.time() > deadline:
                break
        model.set_params(warm_start=False)
        return None
    if family == "mlp":
        model.set_params(deadline=deadline)
        model.fit(X, y)
        model.set_params(deadline=None)
        return None
    model.fit(X, y)
    return None


def model_threads(n_jobs: int, n_rows: int, n_features: int) -> int:
    """Threads for one model fit: one on small data, where OpenMP's thread start-up and
    spinning cost more than they save (and much more on a busy machine)."""
    return n_jobs if n_rows * max(n_features, 1) >= SMALL_DATA_CELLS else 1


def refit_rounds(best_rounds: list[int]) -> int:
    return max(1, round(float(np.mean(best_rounds)) * REFIT_ROUNDS_SCALE))
