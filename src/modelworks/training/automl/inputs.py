"""Reading the caller's frame: the task, the metric, the target's codes, the columns.

Everything here runs before the clock matters and raises ``InvalidInput`` with what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modelworks.core.errors import InvalidInput
from modelworks.training.automl.columns import ColumnKinds, check_target, inspect_columns
from modelworks.training.automl.families import FAMILIES, available_families
from modelworks.training.automl.metrics import Metric, resolve_metric, resolve_task
from modelworks.training.automl.mlp import torch_available


@dataclass
class Inputs:
    task: str
    scorer: Metric
    X: pd.DataFrame  # the feature columns of the labelled rows
    target: pd.Series  # the labelled rows' target, as given
    y: np.ndarray  # class codes 0..K-1, or float targets
    classes: list[Any] | None
    columns: ColumnKinds
    feature_columns: list[str]
    families: list[str]
    notes: list[str]


def read_inputs(
    frame: pd.DataFrame,
    target: str,
    task: str | None,
    metric: str | None,
    families: Sequence[str] | None,
) -> Inputs:
    check_target(frame, target)
    notes: list[str] = []
    labelled = frame[frame[target].notna()]
    if len(labelled) < len(frame):
        notes.append(f"{len(frame) - len(labelled)} rows with a null target were left out.")
    task_name = resolve_task(task, labelled[target])
    scorer = resolve_metric(metric, task_name)
    y, classes = encode_target(labelled[target], task_name, target)
    inspected = inspect_columns(labelled, target, task_name)
    notes += inspected.warnings
    kept = set(inspected.kinds.all)
    feature_columns = [c for c in labelled.columns if c in kept]
    return Inputs(
        task=task_name,
        scorer=scorer,
        X=labelled[feature_columns],
        target=labelled[target],
        y=y,
        classes=classes,
        columns=inspected.kinds,
        feature_columns=feature_columns,
        families=choose_families(families),
        notes=notes,
    )


def encode_target(y: pd.Series, task: str, target: str) -> tuple[np.ndarray, list[Any] | None]:
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise InvalidInput(
                f"Target {target!r} has dtype {y.dtype}, which is not a number: a regression "
                "needs a numeric target. Use task='binary' or 'multiclass' for labels."
            )
        return y.to_numpy(dtype=np.float64), None
    try:
        classes, codes = np.unique(y.to_numpy(), return_inverse=True)
    except TypeError:
        raise InvalidInput(
            f"Target {target!r} mixes value types (e.g. numbers and strings); cast it to one "
            "type, e.g. frame[target].astype(str)."
        )
    if len(classes) < 2:
        raise InvalidInput(
            f"Target {target!r} has a single class ({classes[0]!r}); classification needs at "
            "least two. Check the filter that built the frame, or use task='regression'."
        )
    if task == "binary" and len(classes) > 2:
        raise InvalidInput(
            f"Target {target!r} has {len(classes)} classes, not 2; use task='multiclass'."
        )
    counts = np.bincount(codes)
    if counts.min() < 2:
        lonely = [repr(c) for c, n in zip(classes, counts, strict=True) if n < 2]
        raise InvalidInput(
            f"Target {target!r} has classes with a single row ({', '.join(lonely[:5])}); "
            "cross-validation needs at least 2 rows per class. Drop those rows or merge rare "
            "classes."
        )
    return codes.astype(np.int64), list(classes.tolist())


def choose_families(requested: Sequence[str] | None) -> list[str]:
    available = available_families()
    if requested is None:
        return available
    names = list(dict.fromkeys(requested))
    for name in names:
        if name not in FAMILIES:
            raise InvalidInput(f"Unknown model family {name!r}; use some of {', '.join(FAMILIES)}.")
        if name == "mlp" and not torch_available():
            raise InvalidInput("The 'mlp' family needs torch: pip install 'modelworks[torch]'.")
    if not names:
        raise InvalidInput(f"families is empty; give some of {', '.join(FAMILIES)}, or None.")
    return names
