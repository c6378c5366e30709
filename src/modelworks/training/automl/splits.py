"""Validation design and the preprocessed arrays every trial reads.

K-fold cross-validation below ``HOLDOUT_ROWS`` rows (stratified for classification; 5
folds, 3 from ``FEWER_FOLDS_ROWS``), one stratified holdout above. Preprocessing is
unsupervised, so it is fitted once per fold and per preprocessing kind, not once per trial;
trials then only fit models on arrays.
For a holdout on large data, a first stage trains on a quarter of the training rows so a
bad configuration is pruned before it pays for the whole set (successive halving).
"""

# ruff: noqa: N803, N806 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from modelworks.core.errors import InvalidInput
from modelworks.training.automl.columns import ColumnKinds
from modelworks.training.automl.preprocessing import (
    PreprocessingKind,
    build_preprocessor,
    categorical_mask,
)

MIN_ROWS = 20
MAX_FOLDS = 5
FEWER_FOLDS_ROWS = 2_000  # from here 3 folds: each trial costs less, estimates stay stable
HOLDOUT_ROWS = 10_000
HOLDOUT_FRACTION = 0.2
HALVING_ROWS = 20_000


@dataclass
class Stage:
    """One fit-and-score step of a trial: a fold, or a subsample of the holdout's train rows."""

    fold: int
    train_rows: np.ndarray  # positions into the fold's training arrays
    final: bool  # its predictions are the fold's validation predictions


@dataclass
class FoldArrays:
    X_train: np.ndarray
    X_val: np.ndarray
    cat_mask: list[bool] | None


@dataclass
class PreparedData:
    """Everything a trial needs, in plain arrays (so it travels to Ray workers as is)."""

    task: str
    n_classes: int
    y: np.ndarray  # class codes 0..K-1, or float targets
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train positions, validation positions)
    stages: list[Stage]
    arrays: dict[str, list[FoldArrays]]  # preprocessing kind -> per fold
    holdout: bool
    preprocess_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def validated_rows(self) -> np.ndarray:
        return np.sort(np.concatenate([val for _, val in self.folds]))

    @property
    def n_rows(self) -> int:
        return len(self.y)


def _folds(n: int) -> int:
    return MAX_FOLDS if n < FEWER_FOLDS_ROWS else 3


def choose_folds(
    y: np.ndarray, task: str, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    n = len(y)
    if n < MIN_ROWS:
        raise InvalidInput(
            f"The frame has {n} labelled rows; AutoML needs at least {MIN_ROWS} to "
            "cross-validate. Give it more rows."
        )
    positions = np.arange(n)
    stratify = task != "regression"
    if n >= HOLDOUT_ROWS:
        train, val = train_test_split(
            positions,
            test_size=HOLDOUT_FRACTION,
            random_state=seed,
            stratify=y if stratify else None,
        )
        return [(np.sort(train), np.sort(val))], True
    if stratify:
        smallest = int(np.bincount(y.astype(int)).min())
        k = min(_folds(n), smallest)
        splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        k = _folds(n)
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(positions, y)], False


def make_stages(
    folds: list[tuple[np.ndarray, np.ndarray]], holdout: bool, seed: int
) -> list[Stage]:
    if holdout and len(folds[0][0]) >= HALVING_ROWS:
        n_train = len(folds[0][0])
        rng = np.random.default_rng(seed)
        quarter = np.sort(rng.choice(n_train, size=n_train // 4, replace=False))
        return [Stage(0, quarter, final=False), Stage(0, np.arange(n_train), final=True)]
    return [Stage(i, np.arange(len(tr)), final=True) for i, (tr, _) in enumerate(folds)]


def prepare(
    X: pd.DataFrame,
    y: np.ndarray,
    task: str,
    n_classes: int,
    cols: ColumnKinds,
    kinds: set[PreprocessingKind],
    seed: int,
) -> tuple[PreparedData, dict[str, list[ColumnTransformer]]]:
    """Split, then fit each kind's preprocessor per fold; returns the arrays and the fitted
    per-fold preprocessors (kept by the driver for the fold-model fallback)."""
    folds, holdout = choose_folds(y, task, seed)
    arrays: dict[str, list[FoldArrays]] = {}
    fitted: dict[str, list[ColumnTransformer]] = {}
    seconds: dict[str, float] = {}
    for kind in sorted(kinds):
        start = time.perf_counter()
        template = build_preprocessor(kind, cols)
        arrays[kind], fitted[kind] = [], []
        for train, val in folds:
            pre = clone(template)
            X_train = np.asarray(pre.fit_transform(X.iloc[train]), dtype=np.float64)
            X_val = np.asarray(pre.transform(X.iloc[val]), dtype=np.float64)
            mask = categorical_mask(cols, X_train.shape[1]) if kind == "tree" else None
            arrays[kind].append(FoldArrays(X_train, X_val, mask))
            fitted[kind].append(pre)
        seconds[kind] = (time.perf_counter() - start) / len(folds)
    data = PreparedData(
        task=task,
        n_classes=n_classes,
        y=y,
        folds=folds,
        stages=make_stages(folds, holdout, seed),
        arrays=arrays,
        holdout=holdout,
        preprocess_seconds=seconds,
    )
    return data, fitted
