"""PyTorch modules, saved as an exported program (``torch.export``), and a training loop.

``torch.export`` captures the module's graph and weights without pickling Python objects,
and ``torch.export.load`` reads them back without running code from the file, so a
package needs neither the module's class nor ``trust=True``. Export needs an example
input (the package's ``input_example``: a DataFrame of numeric columns or an array); the
batch dimension is kept dynamic. Plain PyTorch has no ``fit``; :func:`fit` is a small
loop that logs per-epoch losses and the model to the active run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from modelworks.core.errors import InvalidInput
from modelworks.training.flavors.base import Flavor, as_float_array

__all__ = ["TorchFlavor", "fit"]

MODEL_FILE = "model.pt2"


def _tensor(data: Any) -> Any:
    import torch

    if isinstance(data, torch.Tensor):
        return data
    return torch.tensor(as_float_array(data))  # a copy: frames may hand out read-only arrays


class TorchFlavor(Flavor):
    """``torch.nn.Module``; loads as the exported program's module (call it like the
    original)."""

    name = "torch"
    frameworks = {"torch": "torch"}

    def can_handle(self, model: Any) -> bool:
        try:
            import torch
        except ImportError:
            return False
        return isinstance(model, torch.nn.Module)

    def save(self, model: Any, model_dir: Path, *, example: Any = None) -> None:
        import torch

        if example is None:
            raise InvalidInput(
                "Saving a PyTorch module needs an example input to trace it: pass "
                "input_example= (a DataFrame of numeric columns, or an array of one batch)."
            )
        x = _tensor(example).detach().cpu()
        if x.shape[0] < 2:  # a batch of 1 would pin the batch size to 1
            x = torch.cat([x, x])
        if any(p.device.type != "cpu" for p in model.parameters()):
            # Export a CPU copy, so the package loads on machines without the accelerator.
            model = copy.deepcopy(model).cpu()
        was_training = model.training
        model.eval()  # dropout and batch norm as at inference
        try:
            batch = torch.export.Dim("batch")
            program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        finally:
            model.train(was_training)
        torch.export.save(program, str(model_dir / MODEL_FILE))

    def load(self, model_dir: Path, *, trust: bool = False) -> Any:
        import torch

        return torch.export.load(str(model_dir / MODEL_FILE)).module()

    def predict(self, model: Any, data: Any) -> np.ndarray[Any, Any]:
        import torch

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            out = model(_tensor(data).to(device))
        arr = out.detach().cpu().numpy()
        return arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr


def _batches(loader: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    for batch in loader:
        if not isinstance(batch, list | tuple) or len(batch) != 2:
            raise InvalidInput(
                "Each batch of the loader must be a pair (inputs, targets), as a "
                "TensorDataset in a DataLoader gives."
            )
        yield batch[0], batch[1]


def _mean_loss(module: Any, loss_fn: Callable[..., Any], loader: Iterable[Any]) -> float:
    import torch

    total, count = 0.0, 0
    module.eval()
    with torch.no_grad():
        for x, y in _batches(loader):
            total += float(loss_fn(module(x), y)) * len(x)
            count += len(x)
    return total / count if count else math.nan


def fit(
    module: Any,
    loss_fn: Callable[..., Any],
    optimizer: Any,
    train_loader: Iterable[Any],
    *,
    epochs: int,
    val_loader: Iterable[Any] | None = None,
    log_model: bool = True,
) -> dict[str, list[float]]:
    """Train ``module`` for ``epochs`` and return the loss history.

    Each batch of the loaders is ``(inputs, targets)`` on the module's device;
    ``loss_fn(module(inputs), targets)`` is minimised with ``optimizer``. With a run active
    (``mw.start_run()``), the mean training loss of each epoch is logged as ``train_loss``
    (and ``val_loss`` with a ``val_loader``) at step = epoch, the optimizer's settings as
    params, and the trained module as the ``model`` package (exported on the first training
    batch; ``log_model=False`` skips that). Logging failures are warnings; they never stop
    training.

    >>> import torch, modelworks as mw  # doctest: +SKIP
    >>> from modelworks.training.flavors.torch import fit  # doctest: +SKIP
    >>> with mw.start_run(experiment="mlp"):  # doctest: +SKIP
    ...     fit(net, torch.nn.MSELoss(), torch.optim.Adam(net.parameters()), loader, epochs=5)
    """
    from modelworks.tracking.client import current_run
    from modelworks.training import autolog as _autolog

    if epochs < 1:
        raise InvalidInput(f"epochs must be at least 1; got {epochs}.")
    run = current_run()
    history: dict[str, list[float]] = {"train_loss": []}
    if val_loader is not None:
        history["val_loss"] = []
    if run is not None:
        _autolog.safely(run.log_params, _optimizer_params(module, loss_fn, optimizer, epochs))
    example = None
    for epoch in range(epochs):
        module.train()
        total, count = 0.0, 0
        for x, y in _batches(train_loader):
            if example is None:
                example = x[:8].detach().cpu().numpy()
            optimizer.zero_grad()
            loss = loss_fn(module(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
        metrics = {"train_loss": total / count if count else math.nan}
        if val_loader is not None:
            metrics["val_loss"] = _mean_loss(module, loss_fn, val_loader)
        for key, value in metrics.items():
            history[key].append(value)
        if run is not None:
            _autolog.safely(run.log_metrics, metrics, step=epoch)
    module.eval()
    if run is not None and log_model and example is not None:
        _autolog.safely(_autolog.log_model, run, module, input_example=example)
    return history


def _optimizer_params(module: Any, loss_fn: Any, optimizer: Any, epochs: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "epochs": epochs,
        "optimizer": type(optimizer).__name__,
        "loss_fn": type(loss_fn).__name__,
        "module": type(module).__name__,
    }
    groups = getattr(optimizer, "param_groups", [])
    if groups:
        for key, value in groups[0].items():
            if isinstance(value, int | float | str | bool) and value is not None:
                params[f"optimizer.{key}"] = value
    return params
