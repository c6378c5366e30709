"""XGBoost Boosters and scikit-learn wrappers, saved in XGBoost's native UBJSON format.

XGBoost's wrappers (``XGBClassifier``...) save and load themselves natively, so a wrapper
comes back as the same wrapper class; ``wrapper.json`` names it (one of XGBoost's own
classes, nothing else is instantiated).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelworks.core.errors import CorruptData
from modelworks.training.flavors.base import Flavor, Task, class_list

__all__ = ["XGBoostFlavor"]

MODEL_FILE = "model.ubj"
WRAPPER_FILE = "wrapper.json"
_WRAPPERS = ("XGBModel", "XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier",
             "XGBRFRegressor")  # fmt: skip


class XGBoostFlavor(Flavor):
    """``xgboost.Booster`` and ``xgboost.XGBModel`` (classifier, regressor, ranker, RF)."""

    name = "xgboost"
    frameworks = {"xgboost": "xgboost"}

    def can_handle(self, model: Any) -> bool:
        try:
            import xgboost as xgb
        except ImportError:
            return False
        return isinstance(model, xgb.Booster | xgb.XGBModel)

    def save(self, model: Any, model_dir: Path, *, example: Any = None) -> None:
        import xgboost as xgb

        model.save_model(str(model_dir / MODEL_FILE))
        if isinstance(model, xgb.XGBModel):
            (model_dir / WRAPPER_FILE).write_text(json.dumps({"wrapper": type(model).__name__}))

    def load(self, model_dir: Path, *, trust: bool = False) -> Any:
        import xgboost as xgb

        wrapper_file = model_dir / WRAPPER_FILE
        if wrapper_file.exists():
            name = json.loads(wrapper_file.read_text()).get("wrapper")
            if name not in _WRAPPERS:
                raise CorruptData(
                    f"{wrapper_file} names {name!r}, which is not an XGBoost wrapper class "
                    f"({', '.join(_WRAPPERS)})."
                )
            model = getattr(xgb, name)()
        else:
            model = xgb.Booster()
        model.load_model(str(model_dir / MODEL_FILE))
        return model

    def predict(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        import xgboost as xgb

        if isinstance(model, xgb.XGBModel):
            return np.asarray(model.predict(data))
        return np.asarray(model.predict(xgb.DMatrix(data, enable_categorical=True)))

    def predict_proba(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        if not hasattr(model, "predict_proba"):
            return super().predict_proba(model, data)
        return np.asarray(model.predict_proba(data))

    def classes(self, model: Any) -> list[Any] | None:
        if not hasattr(model, "predict_proba"):
            return None
        return class_list(getattr(model, "classes_", None))

    def task(self, model: Any) -> Task:
        if self.classes(model) is not None:
            return super().task(model)
        objective = str(self.params(model).get("objective") or "")
        if objective.startswith(("reg:", "count:", "survival:")):
            return "regression"
        return "other"

    def params(self, model: Any) -> dict[str, Any]:
        import xgboost as xgb

        if isinstance(model, xgb.XGBModel):
            return dict(model.get_params())
        config = json.loads(model.save_config())
        learner = config.get("learner", {})
        params: dict[str, Any] = {"objective": learner.get("objective", {}).get("name")}
        for section in ("gradient_booster", "learner_train_param", "generic_param"):
            body = learner.get(section, {})
            if section == "gradient_booster":
                body = body.get("tree_train_param", body.get("gbtree_model_param", {}))
            params.update({k: v for k, v in body.items() if isinstance(v, str)})
        return params


# ---- autologging of xgboost.train -------------------------------------------------------------
def _round_logger(run: Any) -> Any:
    import xgboost as xgb

    from modelworks.training import autolog

    class LogRounds(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            metrics = {}
            for data_name, by_metric in evals_log.items():
                for metric, values in by_metric.items():
                    last = values[-1]
                    value = last[0] if isinstance(last, tuple | list) else last
                    metrics[autolog._metric_key(f"{data_name}-{metric}")] = float(value)
            if metrics:
                autolog.safely(run.log_metrics, metrics, step=epoch)
            return False  # never stop training

    return LogRounds()


def autolog_train(original: Any) -> Any:
    """``xgboost.train``, logging each round's eval results, params and the Booster."""
    from modelworks.training import autolog

    def before(run: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _round_logger(run)]

    def after(
        run: Any, booster: Any, args: tuple[Any, ...], kwargs: dict[str, Any], state: Any
    ) -> None:
        params = dict(args[0] if args else kwargs.get("params") or {})
        rounds = args[2] if len(args) > 2 else kwargs.get("num_boost_round", 10)
        params.setdefault("num_boost_round", rounds)
        autolog._log_fitted(run, booster, None, params)

    return autolog._outermost(original, before, after)
