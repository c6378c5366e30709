"""Keras 3 models, saved as a ``.keras`` file and loaded with ``safe_mode=True``.

Safe mode refuses the one part of the format that can run code (``Lambda`` layers holding
Python bytecode); such a model loads only with ``trust=True``. Keras runs on the PyTorch
backend unless ``KERAS_BACKEND`` says otherwise; it is set before Keras is first imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from modelworks.training.flavors.base import Flavor, as_float_array
from modelworks.training.flavors.errors import UntrustedModel

__all__ = ["KerasFlavor", "import_keras"]

MODEL_FILE = "model.keras"


def import_keras() -> Any:
    """Keras, imported with the PyTorch backend unless ``KERAS_BACKEND`` is already set."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


class KerasFlavor(Flavor):
    """``keras.Model`` (Sequential, functional or subclassed with ``get_config``)."""

    name = "keras"
    frameworks = {"keras": "keras"}

    def can_handle(self, model: Any) -> bool:
        import sys

        if "keras" not in sys.modules:  # no Keras model can exist without Keras imported
            return False
        keras = sys.modules["keras"]
        return isinstance(model, keras.Model)

    def save(self, model: Any, model_dir: Path, *, example: Any = None) -> None:
        model.save(str(model_dir / MODEL_FILE))

    def load(self, model_dir: Path, *, trust: bool = False) -> Any:
        keras = import_keras()
        try:
            return keras.models.load_model(
                str(model_dir / MODEL_FILE), compile=False, safe_mode=not trust
            )
        except ValueError as exc:
            if "safe_mode" not in str(exc):
                raise
            raise UntrustedModel(
                f"Keras refuses to load part of this model in safe mode: {exc} Load the "
                "package with trust=True only if you trust whoever made it."
            ) from exc

    def predict(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        out = np.asarray(model.predict(as_float_array(data), verbose=0))
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def params(self, model: Any) -> dict[str, Any]:
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            return {}
        params: dict[str, Any] = {"optimizer": type(optimizer).__name__}
        for key, value in optimizer.get_config().items():
            if isinstance(value, int | float | str | bool):
                params[f"optimizer.{key}"] = value
        return params


# ---- autologging of keras.Model.fit -----------------------------------------------------------
_FIT_ARGS = ("x", "y", "batch_size", "epochs")


def _epoch_logger(run: Any) -> Any:
    from modelworks.training import autolog

    base: type[Any] = import_keras().callbacks.Callback

    class LogEpochs(base):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            metrics = {}
            for key, value in (logs or {}).items():
                try:
                    metrics[autolog._metric_key(key)] = float(value)
                except (TypeError, ValueError):
                    continue
            if metrics:
                autolog.safely(run.log_metrics, metrics, step=epoch)

    return LogEpochs()


def autolog_fit(original: Any) -> Any:
    """``keras.Model.fit``, logging per-epoch logs, fit and optimizer params, the model."""
    from modelworks.training import autolog

    def before(run: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if len(args) <= 6:  # callbacks not given positionally: add ours
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _epoch_logger(run)]

    def after(
        run: Any, history: Any, args: tuple[Any, ...], kwargs: dict[str, Any], state: Any
    ) -> None:
        model = args[0]
        given = dict(zip(_FIT_ARGS, args[1:], strict=False)) | kwargs
        params = {"epochs": given.get("epochs", 1), "batch_size": given.get("batch_size")}
        params.update(KerasFlavor().params(model))
        autolog._log_fitted(run, model, given.get("x"), params)

    return autolog._outermost(original, before, after)
