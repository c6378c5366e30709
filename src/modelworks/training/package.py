"""The model package: one folder that holds a model and everything needed to trust it.

::

    churn-model/
      model.yaml         format version, flavor, task, signature, classes, framework and
                         Python versions, metrics, params, lineage, sha256 of every file
      model/             the flavor's native files (model.skops, model.txt, model.ubj, ...)
      requirements.txt   pinned framework versions

A package is written into a temporary folder next to its destination and renamed into
place, so a crash never leaves half a package. Loading checks every file's checksum
before any byte is parsed, and the installed framework versions against the saved ones.

>>> meta = save_package(model, "churn-model", input_example=X.head(),
...                     metrics={"auc": 0.91}, lineage={"dataset": "churn@3"})  # doctest: +SKIP
>>> pkg = load_package("churn-model")  # doctest: +SKIP
>>> pkg.predict(X_new)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError

from modelworks.core.errors import AlreadyExists, CorruptData, InvalidInput, NotFound
from modelworks.core.html_tables import html_table
from modelworks.core.ids import utcnow
from modelworks.training.flavors import Flavor, flavor_for, get_flavor
from modelworks.training.flavors.base import TASKS, module_version, plain
from modelworks.training.signature import Signature, validate_input

__all__ = ["ModelPackage", "PackageMeta", "load_package", "save_package", "verify_package"]

FORMAT_VERSION = 1
META_FILE = "model.yaml"
MODEL_DIR = "model"
REQUIREMENTS_FILE = "requirements.txt"
_CHUNK = 1 << 20

TaskName = Literal["binary", "multiclass", "regression", "other"]


class PackageMeta(BaseModel):
    """What ``model.yaml`` holds."""

    format_version: int = FORMAT_VERSION
    flavor: str
    task: TaskName
    model_class: str
    signature: Signature | None = None
    classes: list[Any] | None = None
    frameworks: dict[str, str] = Field(default_factory=dict)
    python_version: str
    modelworks_version: str
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="path -> sha256")
    created_at: datetime
    onnx: dict[str, Any] | None = Field(
        default=None,
        description="set by registry.onnx_export: path, opset, inputs, outputs, converter",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != META_FILE
    )


def _requirement(name: str, version: str) -> str:
    return f"{name}=={version.split('+', 1)[0]}"


def _params(params: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        value = plain(value)
        out[str(key)] = value if isinstance(value, str | int | float | bool | None) else str(value)
    return out


def _metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    out = {}
    for key, value in (metrics or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"Metric {key!r} must be a number; got {value!r}.") from None
    return out


def _task(flavor: Flavor, model: Any, task: str | None) -> TaskName:
    chosen = task or flavor.task(model)
    if chosen not in TASKS:
        raise InvalidInput(f"task must be one of {', '.join(TASKS)}; got {chosen!r}.")
    return chosen  # type: ignore[return-value]  # checked against TASKS just above


def save_package(
    model: Any,
    path: str | os.PathLike[str],
    *,
    flavor: str | None = None,
    input_example: Any = None,
    task: str | None = None,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
) -> PackageMeta:
    """Write ``model`` as a package folder at ``path`` (which must not exist yet).

    ``flavor`` defaults to the one that recognises the model. ``input_example`` (a few rows
    of a DataFrame, or an array for tensor models) gives the signature; without it the
    package has none and its input is not checked. ``task`` defaults to what the flavor
    sees (binary, multiclass, regression, other).
    """
    from modelworks import __version__

    impl = get_flavor(flavor) if flavor else flavor_for(model)
    if flavor and not impl.can_handle(model):
        raise InvalidInput(
            f"The {flavor} flavor cannot save a {type(model).__qualname__}; leave flavor= out "
            "to pick the right one."
        )
    dest = Path(path)
    if dest.exists():
        raise AlreadyExists(
            f"{dest} already exists; save the package under a new path or delete it first."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        (tmp / MODEL_DIR).mkdir()
        impl.save(model, tmp / MODEL_DIR, example=input_example)
        signature = None if input_example is None else impl.signature(model, input_example)
        versions = impl.framework_versions()
        requirements = [_requirement(n, v) for n, v in versions.items() if v]
        requirements += [_requirement(m, module_version(m)) for m in ("numpy", "pandas")]
        (tmp / REQUIREMENTS_FILE).write_text("\n".join(requirements) + "\n")
        meta = PackageMeta(
            flavor=impl.name,
            task=_task(impl, model, task),
            model_class=f"{type(model).__module__}.{type(model).__qualname__}",
            signature=signature,
            classes=impl.classes(model),
            frameworks=versions,
            python_version=platform.python_version(),
            modelworks_version=__version__,
            metrics=_metrics(metrics),
            params=_params(params),
            lineage={str(k): str(v) for k, v in (lineage or {}).items()},
            files={rel: _sha256(tmp / rel) for rel in _files(tmp)},
            created_at=utcnow(),
        )
        text = yaml.safe_dump(meta.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        (tmp / META_FILE).write_text(text)
        os.rename(tmp, dest)  # one step: the package appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def read_meta(path: str | os.PathLike[str]) -> PackageMeta:
    """The package's ``model.yaml``, parsed (files are not checked: see verify_package)."""
    root = Path(path)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        if not root.exists():
            raise NotFound(f"There is no model package at {root}.")
        raise CorruptData(f"{meta_path} is missing: {root} is not a model package.")
    try:
        return PackageMeta.model_validate(yaml.safe_load(meta_path.read_text()))
    except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
        raise CorruptData(f"{meta_path} is not a valid package description: {exc}") from exc


def verify_package(path: str | os.PathLike[str]) -> PackageMeta:
    """Check every file of the package against its sha256; return the metadata.

    Raises ``CorruptData`` naming each missing, changed or unexpected file.
    """
    root = Path(path)
    meta = read_meta(root)
    if meta.format_version > FORMAT_VERSION:
        raise InvalidInput(
            f"{root} is a package of format {meta.format_version}; this Modelworks reads up "
            f"to format {FORMAT_VERSION}. Upgrade modelworks to load it."
        )
    problems = []
    for rel, expected in meta.files.items():
        file = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"{rel} points outside the package")
        elif not file.is_file():
            problems.append(f"{rel} is missing")
        elif _sha256(file) != expected:
            problems.append(f"{rel} does not match its checksum (changed or damaged)")
    problems += [
        f"{rel} is not part of the package" for rel in _files(root) if rel not in meta.files
    ]
    if problems:
        raise CorruptData(
            f"Model package {root} failed verification: {'; '.join(problems)}. Do not load "
            "it; save or download the package again.",
            files=problems,
        )
    return meta


def _major(version: str) -> str:
    match = re.match(r"\d+", version)
    return match.group(0) if match else version


def check_framework_versions(meta: PackageMeta) -> None:
    """Warn when an installed framework differs from the saved one; raise when its major
    version differs (or it is missing), saying what to install."""
    flavor = get_flavor(meta.flavor)
    for name, saved in meta.frameworks.items():
        if not saved:
            continue
        installed = module_version(flavor.frameworks.get(name, name))
        install = f"pip install '{_requirement(name, saved)}'"
        if not installed:
            raise InvalidInput(f"This {meta.flavor} model needs {name} {saved}: {install}.")
        if installed == saved:
            continue
        if _major(installed) != _major(saved):
            raise InvalidInput(
                f"This model was saved with {name} {saved}, but {name} {installed} is "
                f"installed; a different major version may read it wrongly. Run {install}."
            )
        warnings.warn(
            f"This model was saved with {name} {saved}; {name} {installed} is installed. "
            f"Predictions may differ slightly; {install} to match.",
            UserWarning,
            stacklevel=3,
        )


def load_package(path: str | os.PathLike[str], *, trust: bool = False) -> ModelPackage:
    """Verify and load the package at ``path``.

    ``trust=True`` allows what can run code while loading (a pickled model, scikit-learn
    types nobody registered, Keras Lambda layers): use it only for packages you made.
    """
    root = Path(path)
    meta = verify_package(root)
    check_framework_versions(meta)
    flavor = get_flavor(meta.flavor)
    model = flavor.load(root / MODEL_DIR, trust=trust)
    return ModelPackage(root, meta, flavor, model)


class ModelPackage:
    """A loaded package: ``.predict(frame)``, ``.predict_proba(frame)``, ``.model``, ``.meta``.

    Input is checked against the signature (missing, unexpected and wrongly typed columns
    are reported together) and put in the order the model was trained with.
    """

    def __init__(self, path: Path, meta: PackageMeta, flavor: Flavor, model: Any) -> None:
        self.path = path
        self.meta = meta
        self._flavor = flavor
        self.model = model

    @property
    def flavor(self) -> str:
        return self.meta.flavor

    @property
    def signature(self) -> Signature | None:
        return self.meta.signature

    @property
    def classes(self) -> list[Any] | None:
        return self.meta.classes

    @property
    def task(self) -> str:
        return self.meta.task

    def _input(self, data: Any) -> Any:
        return data if self.signature is None else validate_input(self.signature, data)

    def predict(self, data: Any) -> np.ndarray[Any, Any]:
        """Predictions: class labels for classifiers, values for regressors."""
        return self._flavor.predict(self.model, self._input(data))

    def predict_proba(self, data: Any) -> np.ndarray[Any, Any]:
        """Class probabilities, one column per class in ``.classes`` order."""
        if self.meta.task not in ("binary", "multiclass"):
            raise InvalidInput(
                f"This is a {self.meta.task} model; only classifiers have predict_proba."
            )
        return self._flavor.predict_proba(self.model, self._input(data))

    def __repr__(self) -> str:
        sig = f" {self.signature.summary()}" if self.signature else ""
        return (
            f"<ModelPackage {self.meta.flavor} {self.meta.task} "
            f"{self.meta.model_class.rsplit('.', 1)[-1]}{sig} at {self.path}>"
        )

    def _repr_html_(self) -> str:
        m = self.meta
        rows = [
            ("path", str(self.path)),
            ("flavor", m.flavor),
            ("task", m.task),
            ("model", m.model_class),
            ("signature", str(m.signature) if m.signature else "(none)"),
            ("frameworks", ", ".join(f"{k} {v}" for k, v in m.frameworks.items())),
            ("created", m.created_at.isoformat(timespec="seconds")),
        ]
        if m.classes is not None:
            rows.append(("classes", ", ".join(map(str, m.classes))))
        rows += [(f"metrics.{k}", f"{v:.6g}") for k, v in m.metrics.items()]
        rows += [(f"lineage.{k}", v) for k, v in m.lineage.items()]
        return html_table("Modelworks model package", rows)
