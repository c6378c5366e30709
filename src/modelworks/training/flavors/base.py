"""The one contract every model flavor keeps: ``save``, ``load``, ``predict``, ``signature``.

A flavor knows one framework: how to recognise its models (``can_handle``), how to write
them in the framework's own safe format under a folder and read them back, how to call
them on a DataFrame, and which framework versions it was saved with. Flavors hold no
state; the package format (:mod:`modelworks.training.package`) does the bookkeeping.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from modelworks.core.errors import InvalidInput
from modelworks.training.signature import Signature, infer_signature

__all__ = ["Flavor", "Task", "module_version"]

Task = str  # "binary", "multiclass", "regression" or "other"
TASKS = ("binary", "multiclass", "regression", "other")


def module_version(module: str) -> str:
    """The version of an importable module (``__version__``), or "" if it is missing."""
    try:
        return str(getattr(importlib.import_module(module), "__version__", ""))
    except ImportError:
        return ""


class Flavor(ABC):
    """Base class of the flavors; subclasses set ``name`` and ``frameworks``."""

    name: ClassVar[str] = ""
    # framework name (as pip installs it) -> importable module holding __version__
    frameworks: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def can_handle(self, model: Any) -> bool:
        """True if ``model`` is an object of this flavor's framework."""

    @abstractmethod
    def save(self, model: Any, model_dir: Path, *, example: Any = None) -> None:
        """Write ``model`` in its native format into the (existing, empty) ``model_dir``."""

    @abstractmethod
    def load(self, model_dir: Path, *, trust: bool = False) -> Any:
        """Read the native model back from ``model_dir``."""

    @abstractmethod
    def predict(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        """Predictions for ``data`` (a DataFrame, or an array for tensor models)."""

    def predict_proba(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        """Class probabilities, for classifiers of flavors that have them."""
        raise InvalidInput(
            f"{type(model).__name__} models ({self.name} flavor) give no class "
            "probabilities; use predict()."
        )

    def signature(self, model: Any, example: pd.DataFrame | np.ndarray[Any, Any]) -> Signature:
        """Inputs from ``example``, outputs from the model's predictions on it."""
        return infer_signature(example, self.predict(model, example))

    def task(self, model: Any) -> Task:
        """What the model predicts: binary, multiclass, regression or other."""
        classes = self.classes(model)
        if classes is not None:
            return "binary" if len(classes) == 2 else "multiclass"
        return "other"

    def classes(self, model: Any) -> list[Any] | None:
        """The class labels of a classifier, in ``predict_proba`` column order."""
        return None

    def params(self, model: Any) -> dict[str, Any]:
        """The model's hyper-parameters, for tracking."""
        return {}

    def framework_versions(self) -> dict[str, str]:
        """Installed versions of the frameworks this flavor writes and reads with."""
        return {name: module_version(module) for name, module in self.frameworks.items()}


def plain(value: Any) -> Any:
    """NumPy scalars and arrays as plain Python values, for YAML and JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def class_list(classes: Any) -> list[Any] | None:
    if classes is None:
        return None
    return [plain(c) for c in np.asarray(classes).tolist()]


def as_float_array(data: Any) -> np.ndarray[Any, Any]:
    """A float32 array from a DataFrame or array, for tensor frameworks."""
    if isinstance(data, pd.DataFrame):
        return data.to_numpy(dtype=np.float32)
    return np.asarray(data, dtype=np.float32)
