"""Modelworks: one package for the whole life of a machine-learning model.

``import modelworks as mw`` stays cheap: the SDK is imported on first use.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Workspace",
    "__version__",
    "active_run",
    "autolog",
    "connect",
    "load_model",
    "log_model",
    "start_run",
]

if TYPE_CHECKING:
    from modelworks.client import Workspace, active_run, connect, start_run
    from modelworks.training.autolog import autolog, load_model, log_model


def __getattr__(name: str) -> Any:
    if name in {"Workspace", "active_run", "connect", "start_run"}:
        from modelworks import client

        return getattr(client, name)
    if name in {"autolog", "log_model", "load_model"}:
        from modelworks.training import autolog as _autolog

        return getattr(_autolog, name)
    raise AttributeError(f"module 'modelworks' has no attribute {name!r}")
