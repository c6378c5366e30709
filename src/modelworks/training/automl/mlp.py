"""A small multilayer perceptron trained with PyTorch, kept as NumPy arrays once fitted.

Training needs torch; prediction does not: the fitted weights are plain arrays and the
forward pass is NumPy, so a saved model loads through skops without torch and without any
torch object in its state.
"""

# ruff: noqa: N803 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from modelworks.training.trusted import register_trusted_types


def torch_available() -> bool:
    """Whether PyTorch is installed, without importing it: the import takes seconds, which
    would come out of a search's time budget even when no MLP trial runs."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class _MLPBase(BaseEstimator):
    def __init__(
        self,
        hidden_size: int = 128,
        n_layers: int = 2,
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 12,
        validation_fraction: float = 0.1,
        random_state: int = 0,
        n_jobs: int | None = None,
        deadline: float | None = None,
    ) -> None:
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.deadline = deadline

    # The subclass says what the output layer is and how loss and targets are formed.
    _classifier = False

    def _fit_arrays(self, X: np.ndarray, y: np.ndarray, n_out: int) -> None:
        import torch
        from torch import nn

        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.n_jobs or 1))
        try:
            gen = torch.Generator().manual_seed(int(self.random_state))
            torch.manual_seed(int(self.random_state))
            rng = np.random.default_rng(self.random_state)
            order = rng.permutation(len(X))
            n_val = int(len(X) * self.validation_fraction) if len(X) >= 50 else 0
            val_idx, tr_idx = order[:n_val], order[n_val:]
            layers: list[nn.Module] = []
            width = X.shape[1]
            for _ in range(self.n_layers):
                layers += [nn.Linear(width, self.hidden_size), nn.ReLU(), nn.Dropout(self.dropout)]
                width = self.hidden_size
            layers.append(nn.Linear(width, n_out))
            net = nn.Sequential(*layers)
            opt = torch.optim.AdamW(
                net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            loss_fn: nn.Module = nn.CrossEntropyLoss() if self._classifier else nn.MSELoss()
            xt = torch.as_tensor(X, dtype=torch.float32)
            yt = torch.as_tensor(y, dtype=torch.long if self._classifier else torch.float32)
            if not self._classifier:
                yt = yt.reshape(-1, 1)
            best = (np.inf, [p.detach().clone() for p in net.parameters()])
            waited = 0
            for _epoch in range(self.max_epochs):
                net.train()
                perm = torch.as_tensor(tr_idx)[torch.randperm(len(tr_idx), generator=gen)]
                for start in range(0, len(perm), self.batch_size):
                    batch = perm[start : start + self.batch_size]
                    if len(batch) < 2:
                        continue
                    opt.zero_grad()
                    loss = loss_fn(net(xt[batch]), yt[batch])
                    loss.backward()
                    opt.step()
                if n_val:
                    net.eval()
                    with torch.no_grad():
                        val = float(loss_fn(net(xt[val_idx]), yt[val_idx]))
                    if val < best[0] - 1e-5:
                        best = (val, [p.detach().clone() for p in net.parameters()])
                        waited = 0
                    else:
                        waited += 1
                else:
                    best = (0.0, [p.detach().clone() for p in net.parameters()])
                if waited >= self.patience or (self.deadline and time.time() > self.deadline):
                    break
            params = [p.numpy().astype(np.float64) for p in best[1]]
        finally:
            torch.set_num_threads(threads)
        self.coefs_ = [params[i].T.copy() for i in range(0, len(params), 2)]
        self.intercepts_ = [params[i].copy() for i in range(1, len(params), 2)]
        self.n_features_in_ = X.shape[1]

    def _forward(self, X: Any) -> np.ndarray:
        h = np.asarray(X, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            h = h @ w + b
            if i < len(self.coefs_) - 1:
                h = np.maximum(h, 0.0)
        return h


class TorchMLPClassifier(ClassifierMixin, _MLPBase):
    """Classifier: softmax over the classes; labels may be any values."""

    _classifier = True

    def fit(self, X: Any, y: Any) -> TorchMLPClassifier:
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        self._fit_arrays(np.asarray(X, dtype=np.float32), codes, len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        z = self._forward(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


class TorchMLPRegressor(RegressorMixin, _MLPBase):
    """Regressor on a standardised target (scaled back at prediction)."""

    def fit(self, X: Any, y: Any) -> TorchMLPRegressor:
        target = np.asarray(y, dtype=np.float64)
        self.y_mean_ = float(target.mean())
        self.y_scale_ = float(target.std()) or 1.0
        scaled = ((target - self.y_mean_) / self.y_scale_).astype(np.float32)
        self._fit_arrays(np.asarray(X, dtype=np.float32), scaled, 1)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self._forward(X)[:, 0] * self.y_scale_ + self.y_mean_)


register_trusted_types(TorchMLPClassifier, TorchMLPRegressor)
