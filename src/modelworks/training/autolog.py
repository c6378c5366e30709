"""Autologging: fitting a model inside a run logs it, with no logging code of your own.

>>> import modelworks as mw
>>> mw.autolog()  # doctest: +SKIP
>>> with mw.start_run(experiment="churn"):  # doctest: +SKIP
...     LGBMClassifier(n_estimators=50).fit(X, y, eval_set=[(X_val, y_val)])

While enabled and a run is active, the outermost ``fit`` of a scikit-learn estimator,
LightGBM or XGBoost wrapper, or Keras model (and ``lightgbm.train`` / ``xgboost.train``)
logs: its params, per-iteration metrics (boosting rounds of each eval set, Keras epochs),
``feature_importance.json``, the dataset it was trained on (``mw.dataset`` tag and
``dataset`` param, from ``DatasetVersion.to_pandas()`` frames), and the fitted model as a
package under the artifact folder ``model``. Fits nested inside a Pipeline, a search or a
wrapper's own ``fit`` log nothing of their own. Logging never breaks training: a failure
becomes a warning.

Frameworks already imported are patched at once; the others when first imported, so
``mw.autolog()`` imports nothing heavy. Call it before ``from lightgbm import train``:
a name imported earlier keeps the unpatched function.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from modelworks.tracking.client import ActiveRun, current_run

if TYPE_CHECKING:
    from modelworks.client import Workspace
    from modelworks.training.package import ModelPackage, PackageMeta

__all__ = ["autolog", "load_model", "log_model", "safely"]

DATASET_ATTR = "modelworks.dataset"
_WRAPPED = "__modelworks_autolog__"
_MISSING = object()
MAX_PARAM_CHARS = 6000  # the tracking store's limit on a param value


class _Config:
    enabled = False
    log_models = True


_config = _Config()
_local = threading.local()
_patched: list[tuple[Any, str, Any]] = []  # (owner, attribute, value in its __dict__ before)
_pending: dict[str, Callable[[], None]] = {}  # module name -> patcher, run when imported
_lock = threading.RLock()


def safely(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a failure becomes a warning (autologging must not break training)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        name = getattr(fn, "__name__", "logging")
        warnings.warn(
            f"modelworks autolog: {name} failed ({type(exc).__name__}: {exc}); training was "
            "not affected.",
            UserWarning,
            stacklevel=2,
        )
        return None


# ---- model packages in runs ----------------------------------------------------------------
def log_model(
    run: ActiveRun | None, model: Any, name: str = "model", **package_kwargs: Any
) -> PackageMeta:
    """Save ``model`` as a package into the run's artifacts under the folder ``name``.

    ``package_kwargs`` go to :func:`~modelworks.training.package.save_package`
    (``input_example``, ``metrics``, ``lineage``...); the lineage gets the run id.

    >>> with mw.start_run() as run:  # doctest: +SKIP
    ...     mw.log_model(run, model, input_example=X.head())
    """
    from modelworks.core.errors import InvalidInput
    from modelworks.training.package import save_package

    run = run or current_run()
    if run is None:
        raise InvalidInput("log_model needs a run: pass one, or call it inside mw.start_run().")
    lineage = {"run_id": run.id, **dict(package_kwargs.pop("lineage", None) or {})}
    with tempfile.TemporaryDirectory(prefix="modelworks-package-") as tmp:
        folder = Path(tmp) / "package"
        meta = save_package(model, folder, lineage=lineage, **package_kwargs)
        run.log_artifacts(folder, artifact_path=name)
    return meta


def load_model(
    workspace: Workspace | None,
    run_id: str,
    name: str = "model",
    *,
    trust: bool = False,
    dest: str | Path | None = None,
) -> ModelPackage:
    """Download the package ``name`` logged by run ``run_id`` and load it.

    ``workspace`` None means the default one (``mw.connect()`` from the environment).
    Files go to ``dest`` (default: a new temporary folder), checked as they arrive and
    again as a package.

    >>> pkg = mw.load_model(None, run.id)  # doctest: +SKIP
    >>> pkg.predict(X_new)  # doctest: +SKIP
    """
    from modelworks.client import default_workspace
    from modelworks.core.errors import NotFound
    from modelworks.training.package import load_package

    ws = workspace or default_workspace()
    prefix = name.strip("/")
    artifacts = ws.tracking.list_artifacts(run_id, prefix)
    if not artifacts:
        raise NotFound(
            f"Run {run_id} has no model package {prefix!r}; list its artifacts with "
            f"`modelworks runs artifacts {run_id}`."
        )
    root = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="modelworks-model-"))
    for art in artifacts:
        rel = art.path[len(prefix) + 1 :]
        ws.tracking.download_artifact(run_id, art.path, root / rel)
    return load_package(root, trust=trust)


# ---- what an outermost fit logs -------------------------------------------------------------
def _depth() -> int:
    return int(getattr(_local, "depth", 0))


def _metric_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", str(key))[:250] or "metric"


def _plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params with plain values (estimators and callables left out), keys and values cut to
    what the tracking store takes, so one odd param cannot lose the whole batch."""
    from modelworks.training.flavors.base import plain

    out: dict[str, Any] = {}
    for key, value in params.items():
        value = plain(value)  # NumPy scalars as Python numbers
        if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            value = str(list(value))
        elif value is None:
            value = "None"
        elif not isinstance(value, str | int | float | bool):
            continue
        out[_metric_key(key)] = value[:MAX_PARAM_CHARS] if isinstance(value, str) else value
    return out


def _dataset_ref(data: Any) -> str | None:
    attrs = getattr(data, "attrs", None)
    ref = attrs.get(DATASET_ATTR) if isinstance(attrs, dict) else None
    return str(ref) if ref else None


def _example(data: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data.head(5)
    if isinstance(data, np.ndarray) and data.ndim >= 2:
        return data[:5]
    return None


def _feature_importance(model: Any) -> dict[str, float] | None:
    import numpy as np

    est = model
    names: Any = None
    if hasattr(model, "steps"):  # a Pipeline: the last step's importances
        est = model.steps[-1][1]
        try:
            names = model[:-1].get_feature_names_out()
        except Exception:
            names = None
    if hasattr(est, "feature_importance") and hasattr(est, "feature_name"):  # lgb.Booster
        values, names = est.feature_importance(importance_type="gain"), est.feature_name()
    elif hasattr(est, "get_score") and hasattr(est, "feature_names"):  # xgb.Booster
        scores = est.get_score(importance_type="gain")
        return {str(k): float(v) for k, v in scores.items()}
    else:
        try:
            values = getattr(est, "feature_importances_", None)
        except Exception:  # some estimators raise until fitted in a certain way
            values = None
        if values is None:
            return None
        if names is None:
            names = getattr(est, "feature_names_in_", None)
    values = np.asarray(values, dtype=float).ravel()
    if names is None or len(names) != len(values):
        names = [f"f{i}" for i in range(len(values))]
    return {str(n): float(v) for n, v in zip(names, values, strict=True)}


def _log_evals(run: ActiveRun, evals: Any) -> None:
    """Per-round metrics from ``{eval set: {metric: [value per round]}}``."""
    if not isinstance(evals, dict):
        return
    for data_name, by_metric in evals.items():
        for metric, values in by_metric.items():
            key = _metric_key(f"{data_name}-{metric}")
            for step, value in enumerate(values):
                v = value[0] if isinstance(value, tuple | list) else value
                run.log_metric(key, float(v), step=step)


def _log_fitted(
    run: ActiveRun, model: Any, data: Any, params: dict[str, Any], evals: Any = None
) -> None:
    ref = _dataset_ref(data)
    if ref:
        safely(run.set_tag, "mw.dataset", ref)
        if run.workspace is not None:  # the dataset's lineage then shows this run
            safely(run.log_input, ref)
        params = {**params, "dataset": ref}
    safely(run.log_params, _plain_params(params))
    safely(_log_evals, run, evals)
    importance = safely(_feature_importance, model)
    if importance:
        safely(run.log_dict, importance, "feature_importance.json")
    if _config.log_models:
        lineage = {"dataset": ref} if ref else {}
        safely(log_model, run, model, input_example=_example(data), lineage=lineage)


# ---- patching -----------------------------------------------------------------------------
def _patch(owner: Any, attr: str, make: Callable[[Any], Callable[..., Any]]) -> None:
    original = getattr(owner, attr)
    if getattr(original, _WRAPPED, False):
        return
    wrapper = make(original)
    setattr(wrapper, _WRAPPED, True)
    _patched.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
    setattr(owner, attr, wrapper)


def _outermost(
    original: Callable[..., Any],
    before: Callable[[ActiveRun, tuple[Any, ...], dict[str, Any]], Any],
    after: Callable[[ActiveRun, Any, tuple[Any, ...], dict[str, Any], Any], None],
) -> Callable[..., Any]:
    """Wrap ``original`` so that only its outermost call in a run logs anything."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        run = current_run() if _config.enabled else None
        if run is None or _depth() > 0:
            return original(*args, **kwargs)
        state = safely(before, run, args, kwargs)
        _local.depth = _depth() + 1
        try:
            result = original(*args, **kwargs)
        finally:
            _local.depth = _depth() - 1
        safely(after, run, result, args, kwargs, state)
        return result

    return wrapper


def _no_state(run: ActiveRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    return None


def _after_estimator_fit(
    run: ActiveRun, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], state: Any
) -> None:
    model = args[0]
    data = args[1] if len(args) > 1 else kwargs.get("X")
    params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
    evals: Any = getattr(model, "evals_result_", None)  # LightGBM wrappers
    if evals is None and hasattr(model, "evals_result"):  # XGBoost wrappers
        try:
            evals = model.evals_result()
        except Exception:  # no eval_set given
            evals = None
    best = getattr(model, "best_params_", None)  # a search: which candidate won
    if isinstance(best, dict):
        params = {**params, **{f"best.{k}": v for k, v in best.items()}}
        score = getattr(model, "best_score_", None)
        if isinstance(score, int | float):
            safely(run.log_metric, "best_cv_score", float(score))
    _log_fitted(run, model, data, params, evals)


def _estimator_fit(original: Callable[..., Any]) -> Callable[..., Any]:
    return _outermost(original, _no_state, _after_estimator_fit)


def _patch_classes(classes: list[Any]) -> None:
    # Resolve every class's fit before patching any, so no wrapper wraps another wrapper.
    targets = [(cls, cls.fit) for cls in classes if callable(getattr(cls, "fit", None))]
    for cls, fit in targets:
        if getattr(fit, _WRAPPED, False):
            continue
        wrapper = _estimator_fit(fit)
        setattr(wrapper, _WRAPPED, True)
        _patched.append((cls, "fit", cls.__dict__.get("fit", _MISSING)))
        cls.fit = wrapper


def _patch_sklearn() -> None:
    from sklearn.utils import all_estimators

    _patch_classes([cls for _, cls in all_estimators()])


def _patch_lightgbm() -> None:
    import lightgbm as lgb

    from modelworks.training.flavors.lightgbm import autolog_train

    _patch_classes([lgb.LGBMModel, lgb.LGBMClassifier, lgb.LGBMRegressor, lgb.LGBMRanker])
    for owner in (lgb, sys.modules["lightgbm.engine"]):
        _patch(owner, "train", autolog_train)


def _patch_xgboost() -> None:
    import xgboost as xgb

    from modelworks.training.flavors.xgboost import autolog_train

    wrappers = ("XGBModel", "XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier",
                "XGBRFRegressor")  # fmt: skip
    _patch_classes([getattr(xgb, n) for n in wrappers])
    for owner in (xgb, sys.modules["xgboost.training"]):
        _patch(owner, "train", autolog_train)


def _patch_keras() -> None:
    from modelworks.training.flavors.keras import autolog_fit

    keras = sys.modules["keras"]
    _patch(keras.Model, "fit", autolog_fit)


_PATCHERS: dict[str, Callable[[], None]] = {
    "sklearn": _patch_sklearn,
    "lightgbm": _patch_lightgbm,
    "xgboost": _patch_xgboost,
    "keras": _patch_keras,
}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs a framework's patcher right after the framework is first imported."""

    def __init__(self) -> None:
        self._busy: set[str] = set()

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _pending or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return None
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            with _lock:
                patcher = _pending.pop(fullname, None)
            if patcher is not None and _config.enabled:
                safely(patcher)

        loader.exec_module = exec_and_patch  # this spec's loader only
        return spec


_finder = _PostImportFinder()


def _unpatch_all() -> None:
    while _patched:
        owner, attr, before = _patched.pop()
        if before is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, before)
    _pending.clear()
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def autolog(disable: bool = False, log_models: bool = True) -> None:
    """Turn autologging on (or off with ``disable=True``) for this process.

    ``log_models=False`` logs params, metrics, importances and the dataset, but no model
    package. See the module docs for what each framework logs.

    >>> import modelworks as mw
    >>> mw.autolog()  # doctest: +SKIP
    >>> with mw.start_run(experiment="iris"):  # doctest: +SKIP
    ...     RandomForestClassifier().fit(X, y)   # params, importances, model: logged
    """
    with _lock:
        if disable:
            _config.enabled = False
            _unpatch_all()
            return
        _config.log_models = log_models
        _config.enabled = True
        if _patched or _pending:
            return
        for module, patcher in _PATCHERS.items():
            if module in sys.modules:
                safely(patcher)
            elif importlib.util.find_spec(module) is not None:
                _pending[module] = patcher
        if _pending and _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
