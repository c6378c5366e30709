"""AutoML: search model families and their settings under a time budget, return one model.

``run_automl(frame, target, time_budget=60)`` is a pure engine (no database): the training
service wraps it, logs each trial as a child run and saves the winner as a model package.
Importing this package registers its estimators and transformers as trusted types.
"""

from modelworks.training.automl.engine import run_automl
from modelworks.training.automl.ensemble import EnsembleClassifier, EnsembleRegressor
from modelworks.training.automl.metrics import DEFAULT_METRIC, METRICS, TASKS
from modelworks.training.automl.mlp import TorchMLPClassifier, TorchMLPRegressor
from modelworks.training.automl.preprocessing import (
    CategoryStrings,
    DatetimeFeatures,
    TextFeatures,
)
from modelworks.training.automl.result import AutoMLResult, TrialResult

__all__ = [
    "DEFAULT_METRIC",
    "METRICS",
    "TASKS",
    "AutoMLResult",
    "CategoryStrings",
    "DatetimeFeatures",
    "EnsembleClassifier",
    "EnsembleRegressor",
    "TextFeatures",
    "TorchMLPClassifier",
    "TorchMLPRegressor",
    "TrialResult",
    "run_automl",
]
