"""Model flavors: one small class per framework with the same verbs.

Each flavor (``save``, ``load``, ``predict``, ``predict_proba``, ``signature``,
``can_handle``, ``framework_versions``) is imported only when used, so loading a
scikit-learn package never imports PyTorch.

>>> from modelworks.training.flavors import flavor_for, get_flavor
>>> flavor_for(model).name  # doctest: +SKIP
'lightgbm'
>>> get_flavor("sklearn").framework_versions()  # doctest: +SKIP
{'scikit-learn': '1.9.1', 'skops': '0.16.0'}
"""

from __future__ import annotations

import importlib
from typing import Any

from modelworks.core.errors import InvalidInput
from modelworks.training.flavors.base import Flavor
from modelworks.training.flavors.errors import UntrustedModel

__all__ = ["FLAVOR_NAMES", "Flavor", "UntrustedModel", "flavor_for", "get_flavor"]

# Checked in this order: the boosting wrappers are scikit-learn estimators too, but are
# saved in their own native formats; sklearn comes last and takes Pipelines of anything.
_CLASSES = {
    "lightgbm": ("modelworks.training.flavors.lightgbm", "LightGBMFlavor"),
    "xgboost": ("modelworks.training.flavors.xgboost", "XGBoostFlavor"),
    "torch": ("modelworks.training.flavors.torch", "TorchFlavor"),
    "keras": ("modelworks.training.flavors.keras", "KerasFlavor"),
    "sklearn": ("modelworks.training.flavors.sklearn", "SklearnFlavor"),
}
FLAVOR_NAMES = tuple(_CLASSES)
# The framework a model's class comes from decides which flavors are worth importing.
# Keras before torch: on the PyTorch backend a keras.Model is a torch.nn.Module too.
_ROOTS = {"lightgbm": "lightgbm", "xgboost": "xgboost", "keras": "keras", "torch": "torch"}


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name`` (one of :data:`FLAVOR_NAMES`)."""
    if name not in _CLASSES:
        raise InvalidInput(
            f"There is no model flavor {name!r}; the flavors are {', '.join(FLAVOR_NAMES)}."
        )
    module, cls = _CLASSES[name]
    flavor: Flavor = getattr(importlib.import_module(module), cls)()
    return flavor


def _candidates(model: Any) -> list[str]:
    roots = {c.__module__.split(".", 1)[0] for c in type(model).__mro__}
    named = [name for name, root in _ROOTS.items() if root in roots]
    return [*named, "sklearn"]


def flavor_for(model: Any) -> Flavor:
    """The flavor that saves ``model``; raises ``InvalidInput`` if none does."""
    for name in _candidates(model):
        try:
            flavor = get_flavor(name)
        except ImportError:
            continue
        if flavor.can_handle(model):
            return flavor
    raise InvalidInput(
        f"No model flavor saves a {type(model).__module__}.{type(model).__qualname__}. "
        f"Supported: scikit-learn estimators and Pipelines, LightGBM and XGBoost boosters "
        f"and wrappers, torch.nn.Module, keras.Model."
    )
