"""LightGBM Boosters and scikit-learn wrappers, saved in LightGBM's native text format.

A wrapper (``LGBMClassifier``...) is saved as its Booster plus ``wrapper.json`` (the
wrapper class and the class labels), and loads as the Booster; ``predict`` then gives the
wrapper's answers again: class labels for classifiers, values for regressors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelworks.training.flavors.base import Flavor, Task, class_list, plain

__all__ = ["LightGBMFlavor"]

MODEL_FILE = "model.txt"
WRAPPER_FILE = "wrapper.json"


def _info(model_dir: Path) -> dict[str, Any]:
    path = model_dir / WRAPPER_FILE
    return json.loads(path.read_text()) if path.exists() else {}


class LightGBMFlavor(Flavor):
    """``lightgbm.Booster`` and ``lightgbm.LGBMModel`` (classifier, regressor, ranker)."""

    name = "lightgbm"
    frameworks = {"lightgbm": "lightgbm"}

    def can_handle(self, model: Any) -> bool:
        try:
            import lightgbm as lgb
        except ImportError:
            return False
        return isinstance(model, lgb.Booster | lgb.LGBMModel)

    def save(self, model: Any, model_dir: Path, *, example: Any = None) -> None:
        import lightgbm as lgb

        booster = model.booster_ if isinstance(model, lgb.LGBMModel) else model
        booster.save_model(str(model_dir / MODEL_FILE))
        if isinstance(model, lgb.LGBMModel):
            info = {"wrapper": type(model).__name__, "classes": self.classes(model)}
            (model_dir / WRAPPER_FILE).write_text(json.dumps(info))

    def load(self, model_dir: Path, *, trust: bool = False) -> Any:
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(model_dir / MODEL_FILE))
        info = _info(model_dir)
        if info.get("classes") is not None:
            setattr(booster, "modelworks_classes", info["classes"])  # noqa: B010 - a new attribute
        return booster

    def _raw(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        import lightgbm as lgb

        if isinstance(model, lgb.LGBMModel):
            model = model.booster_
        return np.asarray(model.predict(data))

    def predict(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        classes = self.classes(model)
        if classes is None:
            return self._raw(model, data)
        proba = self.predict_proba(model, data)
        return np.asarray(classes)[np.argmax(proba, axis=1)]

    def predict_proba(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        if self.classes(model) is None:
            return super().predict_proba(model, data)
        raw = self._raw(model, data)
        return np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw

    def classes(self, model: Any) -> list[Any] | None:
        import lightgbm as lgb

        if isinstance(model, lgb.LGBMModel):
            return (
                class_list(getattr(model, "classes_", None))
                if hasattr(model, "predict_proba")
                else None
            )
        return getattr(model, "modelworks_classes", None)

    def task(self, model: Any) -> Task:
        if self.classes(model) is not None:
            return super().task(model)
        objective = str(self.params(model).get("objective", ""))
        if objective.startswith(("regression", "huber", "fair", "poisson", "quantile", "mape")):
            return "regression"
        if objective.startswith(("gamma", "tweedie", "l1", "l2")):
            return "regression"
        return "other"

    def params(self, model: Any) -> dict[str, Any]:
        import lightgbm as lgb

        if isinstance(model, lgb.LGBMModel):
            return dict(model.get_params())
        return {k: plain(v) for k, v in (model.params or {}).items()}


# ---- autologging of lightgbm.train ------------------------------------------------------------
def _round_logger(run: Any) -> Any:
    from modelworks.training import autolog

    def log_round(env: Any) -> None:
        metrics = {
            autolog._metric_key(f"{r[0]}-{r[1]}"): float(r[2])
            for r in env.evaluation_result_list or []
        }
        if metrics:
            autolog.safely(run.log_metrics, metrics, step=env.iteration)

    log_round.order = 30  # type: ignore[attr-defined]  # LightGBM sorts callbacks by it
    return log_round


def autolog_train(original: Any) -> Any:
    """``lightgbm.train``, logging each round's eval results, params and the Booster."""
    from modelworks.training import autolog

    def before(run: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) <= 8:  # callbacks not given positionally: add ours
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _round_logger(run)]
        train_set = args[1] if len(args) > 1 else kwargs.get("train_set")
        return getattr(train_set, "data", None)  # the raw frame, before LightGBM frees it

    def after(
        run: Any, booster: Any, args: tuple[Any, ...], kwargs: dict[str, Any], data: Any
    ) -> None:
        params = dict(args[0] if args else kwargs.get("params") or {})
        rounds = args[2] if len(args) > 2 else kwargs.get("num_boost_round", 100)
        params.setdefault("num_boost_round", rounds)
        autolog._log_fitted(run, booster, data, params)

    return autolog._outermost(original, before, after)
