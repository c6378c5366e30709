"""scikit-learn estimators and Pipelines, saved with skops (no pickle on load).

skops records every type a file contains; on load, each one it does not trust by default
must be allowed explicitly. The flavor allows classes of scikit-learn, NumPy and SciPy,
NumPy/SciPy ufuncs, LightGBM's and XGBoost's scikit-learn wrappers with their Boosters
(skops stores a Booster's state as the framework's own model text or buffer), and every
type registered with :func:`modelworks.training.trusted.register_trusted_types`. Anything
else (a custom transformer class, a function) is refused unless ``trust=True``.

Objects skops cannot write, or writes but cannot read back (lambdas, closures), fall back
to pickle, with a warning: such a package loads only with ``trust=True``.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from modelworks.core.errors import InvalidInput
from modelworks.training.flavors.base import Flavor, Task, class_list
from modelworks.training.flavors.errors import UntrustedModel
from modelworks.training.trusted import is_trusted

__all__ = ["SklearnFlavor", "allowed_type", "untrusted_types"]

SKOPS_FILE = "model.skops"
PICKLE_FILE = "model.pkl"

_SAFE_ROOTS = ("sklearn", "numpy", "scipy")
# Types outside those roots that are safe to rebuild: plain containers, and the boosting
# libraries' wrappers, whose state is the library's own model format (text or UBJSON).
_ALLOWED_NAMES = frozenset(
    {
        "collections.OrderedDict",
        "collections.defaultdict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMModel",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "lightgbm.sklearn.LGBMRanker",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBModel",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.sklearn.XGBRanker",
        "xgboost.sklearn.XGBRFClassifier",
        "xgboost.sklearn.XGBRFRegressor",
        # HistGradientBoosting with categorical features keeps a FunctionTransformer of
        # partial(check_array, ...) in its fitted state. A partial only wraps a function,
        # and skops checks that function's own name against this list, so trusting the
        # wrapper trusts nothing more than the function it names.
        "functools.partial",
        "sklearn.utils.validation.check_array",
    }
)


def _resolve(name: str) -> Any:
    """The object ``module.path.Name`` names, importing only the module part; None if none."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def allowed_type(name: str) -> bool:
    """True if the flavor loads ``name`` (a full type name as skops reports it) unasked.

    Classes (not functions) of scikit-learn, NumPy and SciPy are allowed, and so are NumPy
    and SciPy ufuncs. That includes scikit-learn's tree node storage (``Tree``,
    ``TreePredictor``), which skops itself does not trust because a hand-crafted file could
    crash ``predict``; without it no tree model would load, and a package's bytes are
    checked against its checksums before skops reads them.
    """
    if name in _ALLOWED_NAMES or is_trusted(name):
        return True
    if name.split(".", 1)[0] not in _SAFE_ROOTS:
        return False  # never import a module a file names, unless it is one of ours
    obj = _resolve(name)
    if obj is None:
        return False
    if isinstance(obj, type):
        return str(getattr(obj, "__module__", "")).split(".", 1)[0] in _SAFE_ROOTS
    return isinstance(obj, np.ufunc) or type(obj).__name__ == "ufunc"


def untrusted_types(path: Path) -> list[str]:
    """Types in the skops file at ``path`` that the flavor does not allow."""
    import skops.io as sio

    return [t for t in sio.get_untrusted_types(file=path) if not allowed_type(t)]


class SklearnFlavor(Flavor):
    """Any scikit-learn estimator or Pipeline (and anything with ``fit``/``predict`` that
    skops can write)."""

    name = "sklearn"
    frameworks = {"scikit-learn": "sklearn", "skops": "skops"}

    def can_handle(self, model: Any) -> bool:
        try:
            from sklearn.base import BaseEstimator
        except ImportError:
            return False
        return isinstance(model, BaseEstimator) and hasattr(model, "predict")

    def save(self, model: Any, model_dir: Path, *, example: Any = None) -> None:
        import skops.io as sio

        path = model_dir / SKOPS_FILE
        try:
            sio.dump(model, path)
            # skops writes some objects it cannot read back (lambdas are stored by name):
            # read the file once now, while it is certainly our own, to find out.
            sio.load(path, trusted=sio.get_untrusted_types(file=path))
            return
        except Exception as exc:  # skops raises several types for objects it cannot write
            (model_dir / SKOPS_FILE).unlink(missing_ok=True)
            warnings.warn(
                f"skops cannot write this {type(model).__name__} ({exc}); it was pickled "
                "instead, so the package will load only with trust=True. Replace lambdas and "
                "local functions with module-level ones to get a safe package.",
                stacklevel=3,
            )
        pickler: Any = pickle
        try:  # cloudpickle (when installed) also writes lambdas and local functions
            import cloudpickle

            pickler = cloudpickle
        except ImportError:
            pass
        try:
            with open(model_dir / PICKLE_FILE, "wb") as f:
                pickler.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise InvalidInput(
                f"This {type(model).__name__} can be saved neither with skops nor with pickle "
                f"({exc}). Replace lambdas and local functions with module-level ones."
            ) from exc

    def load(self, model_dir: Path, *, trust: bool = False) -> Any:
        pickled = model_dir / PICKLE_FILE
        if pickled.exists():
            if not trust:
                raise UntrustedModel(
                    f"{pickled} is a pickle, which can run any code when loaded. Load it with "
                    "trust=True only if you trust whoever made it."
                )
            with open(pickled, "rb") as f:
                return pickle.load(f)  # noqa: S301 - only behind trust=True
        import skops.io as sio

        path = model_dir / SKOPS_FILE
        found = sio.get_untrusted_types(file=path)
        refused = [t for t in found if not allowed_type(t)]
        if refused and not trust:
            raise UntrustedModel(
                f"The model contains types Modelworks does not trust: {', '.join(refused)}. "
                "If they are your own classes, register them with "
                "modelworks.training.trusted.register_trusted_types(...) before loading; if "
                "you trust whoever made this package, load it with trust=True.",
                untrusted=refused,
            )
        return sio.load(path, trusted=found)

    def predict(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        return np.asarray(model.predict(data))

    def predict_proba(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        if not hasattr(model, "predict_proba"):
            return super().predict_proba(model, data)
        return np.asarray(model.predict_proba(data))

    def classes(self, model: Any) -> list[Any] | None:
        return class_list(getattr(model, "classes_", None))

    def task(self, model: Any) -> Task:
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(model) and self.classes(model) is not None:
            return super().task(model)
        if is_regressor(model):
            return "regression"
        return "other"

    def params(self, model: Any) -> dict[str, Any]:
        return dict(model.get_params(deep=True))
