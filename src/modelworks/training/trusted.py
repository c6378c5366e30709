"""The types a scikit-learn model package may contain, for skops' safe loader.

skops refuses to load any type it was not told to trust, which is what keeps a model file
from running code on load. scikit-learn's own types, LightGBM's and XGBoost's scikit-learn
wrappers and NumPy/SciPy containers are trusted by the flavor itself; Modelworks' own
estimators and transformers (AutoML's preprocessing, its MLP) register their full type names
here when their module is imported, so the flavor trusts exactly what the project ships.
:func:`trusted_types` imports those modules first: a process that never ran AutoML (the
model server, say) must still load the packages AutoML made.
"""

from __future__ import annotations

import importlib

_TRUSTED: set[str] = set()
# The project's modules that register types; light to import (torch is imported lazily).
_PROJECT_MODULES = (
    "modelworks.training.automl.ensemble",
    "modelworks.training.automl.preprocessing",
    "modelworks.training.automl.mlp",
)
_imported = False


def register_trusted_types(*types: type | str) -> None:
    """Trust these classes (or ``"module.Class"`` names) in scikit-learn model packages."""
    for t in types:
        _TRUSTED.add(t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}")


def _import_project_types() -> None:
    global _imported
    if not _imported:
        for module in _PROJECT_MODULES:
            importlib.import_module(module)
        _imported = True


def is_trusted(name: str) -> bool:
    """Whether the type ``name`` is trusted; the project's modules are imported only when a
    ``modelworks.`` type is asked about (importing AutoML costs seconds, and a package of
    plain scikit-learn types never needs it)."""
    if name in _TRUSTED:
        return True
    if name.startswith("modelworks.") and not _imported:
        _import_project_types()
        return name in _TRUSTED
    return False


def trusted_types() -> frozenset[str]:
    """Every type name registered: the project's own and those registered so far."""
    _import_project_types()
    return frozenset(_TRUSTED)
