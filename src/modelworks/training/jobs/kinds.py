"""Job kinds: a name users submit, mapped to the ``module:function`` that runs it.

A job function takes a :class:`~modelworks.training.jobs.context.JobContext` and returns a
JSON-ready dict (the job's ``result``). Functions are imported only when a job is submitted
(to check that the kind can run here) and when it runs, so a kind whose module is missing
fails at submission with a clear error and costs nothing otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    from modelworks.training.jobs.context import JobContext

JobFunction = Callable[["JobContext"], dict[str, Any] | None]

KINDS: dict[str, str] = {
    "train": "modelworks.training.service:run_train_job",
    "automl": "modelworks.training.service:run_automl_job",
    "sleep": "modelworks.training.jobs.builtin:sleep_job",
    "batch_predict": "modelworks.serving.batch_job:batch_predict_job",
}


def register_kind(name: str, target: str) -> None:
    """Add (or replace) a kind: ``register_kind("score", "mypkg.jobs:score")``."""
    if ":" not in target:
        raise InvalidInput(f"Job kind target {target!r} must be 'module:function'.")
    KINDS[name] = target


def entrypoint(kind: str) -> str:
    """The ``module:function`` of ``kind``; InvalidInput if the kind is unknown."""
    target = KINDS.get(kind)
    if target is None:
        known = ", ".join(sorted(KINDS))
        raise InvalidInput(f"Unknown job kind {kind!r}; use one of: {known}.")
    return target


def resolve(kind: str, target: str | None = None) -> JobFunction:
    """The function of ``kind`` (at ``target``, default: the registered one); InvalidInput if
    the kind is unknown or its function cannot be imported."""
    target = target or entrypoint(kind)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(
            f"Job kind {kind!r} cannot run here: {target} cannot be imported ({exc}). "
            "Install the package that provides it, or pick another kind."
        ) from None
    if not callable(fn):
        raise InvalidInput(f"Job kind {kind!r}: {target} is not a function.")
    return fn
