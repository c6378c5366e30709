"""The SDK entry point: ``mw.connect()`` gives a :class:`Workspace`, embedded or remote.

One API, two transports (see :mod:`modelworks.transport`): with no URL the services run
in this process on the local store (``MODELWORKS_HOME``, SQLite by default); with a URL
(or ``MODELWORKS_URL``) every call goes to a Modelworks server over REST, authenticated
with an API token (``token=`` or ``MODELWORKS_TOKEN``).

>>> import modelworks as mw
>>> ws = mw.connect()                                         # embedded  # doctest: +SKIP
>>> ws = mw.connect("https://mw.example.com", token="mw_...")  # remote    # doctest: +SKIP
>>> with ws.start_run(experiment="churn") as run:             # doctest: +SKIP
...     run.log_metric("auc", 0.91)
>>> ws.runs.search(filter="metrics.auc > 0.9", experiments=["churn"]).items  # doctest: +SKIP

The module-level :func:`start_run` and :func:`active_run` use a default workspace made
from the environment on first use, like MLflow's fluent API.
"""

from __future__ import annotations

import builtins
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from modelworks.core.config import Settings, get_settings
from modelworks.core.errors import InvalidInput, ModelworksError, Unauthenticated
from modelworks.core.html_tables import html_table
from modelworks.tracking.client import ActiveRun, current_run, live_runs
from modelworks.tracking.client import start_run as _start_run

if TYPE_CHECKING:
    import pandas as pd

    from modelworks.core.schemas import Page
    from modelworks.data.client import Datasets, DatasetVersion
    from modelworks.data.transport import DataBackend
    from modelworks.registry.schemas import EvaluationOut
    from modelworks.registry.transport import RegistryBackend
    from modelworks.serving.client import DeploymentsBackend
    from modelworks.tracking.schemas import (
        ArtifactOut,
        ExperimentOut,
        MetricPoint,
        RunComparison,
        RunOut,
    )
    from modelworks.training.automl_run import AutoMLRun
    from modelworks.training.jobs.schemas import JobOut
    from modelworks.training.schemas import RunInputOut
    from modelworks.training.trainer import TrainResult
    from modelworks.training.transport import TrainingBackend
    from modelworks.transport import TrackingBackend

__all__ = ["ActiveRun", "Experiments", "Runs", "Workspace", "active_run", "connect", "start_run"]

Mode = Literal["embedded", "remote"]
RunRef: TypeAlias = "str | RunOut | ActiveRun"


def _run_id(run: RunRef) -> str:
    return run if isinstance(run, str) else run.id


class Experiments:
    """Experiments of the workspace's project: ``ws.experiments``.

    >>> ws.experiments.create("churn", description="Who leaves, and why")  # doctest: +SKIP
    >>> ws.experiments.get("churn").run_count  # doctest: +SKIP
    >>> [e.name for e in ws.experiments.list_all()]  # doctest: +SKIP
    """

    def __init__(self, workspace: Workspace) -> None:
        self._ws = workspace

    def create(
        self, name: str, description: str = "", tags: Mapping[str, str] | None = None
    ) -> ExperimentOut:
        """Create an experiment; raises ``AlreadyExists`` if the name is taken."""
        return self._ws.tracking.create_experiment(
            self._ws.project, name, description, dict(tags or {})
        )

    def get(self, ref: str) -> ExperimentOut:
        """An experiment by name or id (deleted ones included; see ``.deleted``)."""
        return self._ws.tracking.get_experiment(self._ws.project, ref)

    def list(
        self,
        *,
        include_deleted: bool = False,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[ExperimentOut]:
        """One page of experiments, newest first; see :meth:`list_all` for every page."""
        return self._ws.tracking.list_experiments(
            self._ws.project,
            include_deleted=include_deleted,
            max_results=max_results,
            page_token=page_token,
        )

    def list_all(self, *, include_deleted: bool = False) -> Iterator[ExperimentOut]:
        """Every experiment, fetching pages as the iteration goes."""
        token: str | None = None
        while True:
            page = self.list(include_deleted=include_deleted, page_token=token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def update(
        self,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ExperimentOut:
        """Rename, redescribe or add tags (merged into the existing ones)."""
        return self._ws.tracking.update_experiment(
            self._ws.project,
            ref,
            name=name,
            description=description,
            tags=dict(tags) if tags is not None else None,
        )

    def delete(self, ref: str) -> ExperimentOut:
        """Soft delete: the experiment and its runs are hidden, nothing is erased."""
        return self._ws.tracking.delete_experiment(self._ws.project, ref)

    def restore(self, ref: str) -> ExperimentOut:
        """Undo :meth:`delete`."""
        return self._ws.tracking.restore_experiment(self._ws.project, ref)


class Runs:
    """Runs of the workspace's project: ``ws.runs``.

    >>> page = ws.runs.search(filter="metrics.auc > 0.9", order_by=["metrics.auc DESC"])
    ... # doctest: +SKIP
    >>> best = page.items[0]  # doctest: +SKIP
    >>> ws.runs.metric_history(best, "loss")  # doctest: +SKIP
    >>> ws.runs.download_artifact(best, "plots/confusion.png", "confusion.png")  # doctest: +SKIP
    """

    def __init__(self, workspace: Workspace) -> None:
        self._ws = workspace

    def get(self, run: RunRef) -> RunOut:
        """A run with its params, tags and latest metrics; ``NotFound`` if there is none."""
        return self._ws.tracking.get_run(_run_id(run))

    def search(
        self,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        experiments: str | Sequence[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        *,
        include_deleted: bool = False,
    ) -> Page[RunOut]:
        """One page of runs matching ``filter`` (MLflow syntax), sorted by ``order_by``.

        Pass ``page.next_page_token`` back as ``page_token`` for the next page.

        >>> ws.runs.search("params.model = 'lgbm' and metrics.auc > 0.9",
        ...                order_by=["metrics.auc DESC"], experiments="churn")  # doctest: +SKIP
        """
        return self._ws.tracking.search_runs(
            self._ws.project,
            experiments=[experiments] if isinstance(experiments, str) else experiments,
            filter=filter,
            order_by=[order_by] if isinstance(order_by, str) else order_by,
            max_results=max_results,
            page_token=page_token,
            include_deleted=include_deleted,
        )

    def search_all(
        self,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        experiments: str | Sequence[str] | None = None,
        *,
        include_deleted: bool = False,
        page_size: int = 1000,
    ) -> Iterator[RunOut]:
        """Every matching run, fetching pages of ``page_size`` as the iteration goes.

        >>> for run in ws.runs.search_all("metrics.auc > 0.9"):  # doctest: +SKIP
        ...     print(run.id, run.metrics["auc"])
        """
        token: str | None = None
        while True:
            page = self.search(
                filter,
                order_by,
                experiments,
                page_size,
                token,
                include_deleted=include_deleted,
            )
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def compare(
        self, runs: Sequence[RunRef], metric_keys: Sequence[str] | None = None
    ) -> RunComparison:
        """Params side by side (``differing_params``) and metric histories of ``runs``."""
        return self._ws.tracking.compare_runs(
            [_run_id(r) for r in runs], list(metric_keys) if metric_keys else None
        )

    def update(
        self, run: RunRef, *, name: str | None = None, description: str | None = None
    ) -> RunOut:
        """Rename a run or change its description."""
        return self._ws.tracking.update_run(_run_id(run), name=name, description=description)

    def delete(self, run: RunRef) -> RunOut:
        """Soft delete: hidden from search, nothing erased."""
        return self._ws.tracking.delete_run(_run_id(run))

    def restore(self, run: RunRef) -> RunOut:
        """Undo :meth:`delete`."""
        return self._ws.tracking.restore_run(_run_id(run))

    def metric_history(self, run: RunRef, key: str) -> builtins.list[MetricPoint]:
        """Every point of one metric, in step order."""
        return self._ws.tracking.metric_history(_run_id(run), key)

    def list_artifacts(self, run: RunRef, prefix: str | None = None) -> builtins.list[ArtifactOut]:
        """The run's artifacts (path, sha256, size), optionally under a folder ``prefix``."""
        return self._ws.tracking.list_artifacts(_run_id(run), prefix)

    def read_artifact(self, run: RunRef, path: str) -> bytes:
        """An artifact's bytes, checked against its sha256."""
        return self._ws.tracking.read_artifact(_run_id(run), path)

    def log_input(
        self, run: RunRef, dataset: str | DatasetVersion, relation: str = "trained_on"
    ) -> RunInputOut:
        """Record that ``run`` read a dataset version; it shows in the dataset's lineage.

        >>> ws.runs.log_input(run, "churn@3")  # doctest: +SKIP
        """
        ref = dataset if isinstance(dataset, str) else dataset.ref
        return self._ws._training().record_input(_run_id(run), ref, relation)

    def inputs(self, run: RunRef) -> builtins.list[RunInputOut]:
        """The dataset versions recorded as the run's inputs."""
        return self._ws._training().list_inputs(_run_id(run))

    def download_artifact(
        self, run: RunRef, path: str, dest: str | os.PathLike[str] | None = None
    ) -> Path:
        """Write an artifact to ``dest`` (a file path, or a folder to put it in; default: a
        new temporary folder), checked against its sha256 and written atomically."""
        if dest is None:
            target = Path(tempfile.mkdtemp(prefix="modelworks-")) / Path(path).name
        else:
            target = Path(dest)
            if target.is_dir():
                target = target / Path(path).name
        return self._ws.tracking.download_artifact(_run_id(run), path, target)

    @staticmethod
    def records(runs: Iterator[RunOut] | Sequence[RunOut]) -> builtins.list[dict[str, Any]]:
        """Flat rows (``params.lr``, ``metrics.auc``, ``tags.team``...) for tables.

        >>> import pandas as pd  # doctest: +SKIP
        >>> pd.DataFrame(ws.runs.records(ws.runs.search_all(experiments="churn")))
        ... # doctest: +SKIP
        """
        rows = []
        for r in runs:
            row: dict[str, Any] = {
                "id": r.id,
                "name": r.name,
                "experiment": r.experiment_name,
                "status": r.status,
                "start_time": r.start_time,
                "end_time": r.end_time,
                "duration_s": r.duration_s,
                "parent_run_id": r.parent_run_id,
                "created_by": r.created_by,
            }
            row.update({f"params.{k}": v for k, v in r.params.items()})
            row.update({f"metrics.{k}": v for k, v in r.metrics.items()})
            row.update({f"tags.{k}": v for k, v in r.tags.items()})
            rows.append(row)
        return rows


class AutoML:
    """AutoML on the workspace's data: ``ws.automl.fit(...)``.

    >>> found = ws.automl.fit("churn@latest", target="churned", time_budget=60)
    ... # doctest: +SKIP
    >>> found.leaderboard_frame().head()  # doctest: +SKIP
    >>> found.predict(new_rows)  # doctest: +SKIP
    """

    def __init__(self, workspace: Workspace) -> None:
        self._ws = workspace

    def fit(
        self,
        dataset: str | DatasetVersion | pd.DataFrame,
        target: str,
        time_budget: float = 60.0,
        metric: str | None = None,
        seed: int = 0,
        **options: Any,
    ) -> AutoMLRun:
        """Search model families and their settings within ``time_budget`` seconds.

        Every trial is a child run of one parent run; the winner (an ensemble when that
        helps) is saved with its preprocessing as the parent run's ``model`` package.
        Options: ``task`` (binary, multiclass, regression; inferred by default),
        ``families``, ``experiment``, ``run_name``, ``max_trials``, ``progress``, and
        ``ray_address`` (default ``MODELWORKS_RAY_ADDRESS``) to run trials on a Ray cluster.
        """
        from modelworks.training.automl_run import fit_automl

        if "ray_address" not in options:
            options["ray_address"] = get_settings().ray_address
        return fit_automl(
            self._ws, dataset, target, time_budget=time_budget, metric=metric, seed=seed, **options
        )

    def submit(
        self,
        dataset: str,
        target: str,
        time_budget: float = 60.0,
        metric: str | None = None,
        seed: int = 0,
        *,
        cpus: float = 1.0,
        timeout_s: float | None = None,
        **options: Any,
    ) -> JobOut:
        """Queue the same search as an ``automl`` job (it runs on the server, or in a local
        worker process, and keeps running when this client exits); ``ws.jobs.wait(job)``.
        The job's timeout defaults to twice the budget plus a minute."""
        from modelworks.training.schemas import AutoMLSpec

        spec = AutoMLSpec(
            dataset=dataset,
            target=target,
            time_budget=time_budget,
            metric=metric,
            seed=seed,
            **options,
        )
        return self._ws.jobs.submit(
            "automl",
            spec.model_dump(exclude_none=True),
            name=f"automl {dataset} -> {target}",
            cpus=cpus,
            timeout_s=timeout_s if timeout_s is not None else 2 * time_budget + 60,
        )


class Workspace:
    """A connection to one project: ``ws.experiments``, ``ws.runs``, ``ws.start_run()``,
    ``ws.datasets``.

    Make one with :func:`connect`. The same code works on both transports.

    >>> ws = mw.connect(project="default")  # doctest: +SKIP
    >>> ws
    <Workspace embedded project='default' at /home/me/.modelworks>
    """

    def __init__(
        self,
        tracking: TrackingBackend,
        *,
        project: str = "default",
        mode: Mode,
        location: str,
        closer: Any = None,
        data: DataBackend | None = None,
        training: TrainingBackend | None = None,
        registry: RegistryBackend | None = None,
        deployments: DeploymentsBackend | None = None,
    ) -> None:
        from modelworks.data.client import Datasets
        from modelworks.registry.client import Models
        from modelworks.serving.client import Deployments
        from modelworks.training.jobs.client import Jobs

        self.tracking = tracking
        self.data = data
        self.training_backend = training
        self.project = project
        self.mode: Mode = mode
        self.location = location
        self._closer = closer
        self._closed = False
        self.experiments = Experiments(self)
        self.runs = Runs(self)
        self.datasets: Datasets = Datasets(self, data)
        self.jobs: Jobs = Jobs(self)
        self.automl = AutoML(self)
        self.models: Models = Models(self, registry)
        self.deployments: Deployments = Deployments(self, deployments)

    def evaluate(self, model: str, dataset: str, **options: Any) -> EvaluationOut:
        """Evaluate a registered model version (``"churn@champion"``) on a dataset version
        (``"churn@7"``) and store the result; the options are those of
        :meth:`modelworks.registry.client.Models.evaluate`.

        >>> ev = ws.evaluate("churn@champion", "churn@7", slice_by=["country"])  # doctest: +SKIP
        >>> ev.result["metrics"]["f1"], ev.result["worst_slices"][0]  # doctest: +SKIP
        """
        if not isinstance(model, str):
            raise InvalidInput(
                "ws.evaluate takes a registered model version such as 'churn@champion'; "
                "register the model first with ws.models.register(name, run=...) or "
                "ws.models.register(name, package=path)."
            )
        return self.models.evaluate(model, dataset, **options)

    def start_run(
        self,
        experiment: str = "default",
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        parent: RunRef | None = None,
        nested: bool = False,
        *,
        description: str = "",
    ) -> ActiveRun:
        """Start a run in ``experiment`` (created if it does not exist) and make it active.

        Use it as a context manager: the run is FINISHED when the block ends, FAILED if it
        raises (the exception propagates), KILLED on Ctrl-C. Inside an active run, pass
        ``nested=True`` to start a child run (its ``parent_run_id`` is set for you).

        >>> with ws.start_run(experiment="churn", params={"lr": 0.1}) as run:  # doctest: +SKIP
        ...     for fold in range(5):
        ...         with ws.start_run(experiment="churn", nested=True) as child:
        ...             child.log_metric("auc", 0.9)
        """
        return _start_run(
            self.tracking,
            self.project,
            experiment,
            name=name,
            description=description,
            tags=tags,
            params=params,
            parent=parent,
            nested=nested,
            workspace=self,
        )

    def train(
        self,
        dataset: str | DatasetVersion | pd.DataFrame,
        target: str,
        model: Any = "lightgbm",
        params: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TrainResult:
        """Fit a model on a dataset version, score it on a held-out split, track the run.

        ``model`` is a name (lightgbm, xgboost, hist_gradient_boosting, random_forest,
        extra_trees, linear, mlp), which brings the right preprocessing for every column
        type, or any scikit-learn-compatible estimator. Options: ``task``, ``experiment``,
        ``run_name``, ``test_size``, ``seed``, ``features``, ``progress``. The model lands
        in the run as a package: ``mw.load_model(ws, result.run_id)``.

        >>> result = ws.train("churn@latest", target="churned", model="lightgbm",
        ...                   params={"num_leaves": 63})  # doctest: +SKIP
        >>> result.metrics  # doctest: +SKIP
        """
        from modelworks.training.trainer import train

        return train(self, dataset, target, model, params, **options)

    def _training(self) -> TrainingBackend:
        if self.training_backend is None:
            raise ModelworksError("This workspace has no training backend; use mw.connect().")
        return self.training_backend

    def close(self) -> None:
        """End this workspace's runs still open (flushing them), then close the connection."""
        if self._closed:
            return
        for run in live_runs():
            if run.workspace is self:
                try:
                    if run._direct:
                        run.flush()
                    else:
                        run.end()
                except Exception as exc:
                    print(f"modelworks: WARNING: run {run.id}: {exc}", file=sys.stderr)
        self._closed = True
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Workspace {self.mode} project={self.project!r} at {self.location}{state}>"

    def _repr_html_(self) -> str:
        rows = [
            ("mode", self.mode),
            ("project", self.project),
            ("server" if self.mode == "remote" else "home", self.location),
        ]
        if self._closed:
            rows.append(("state", "closed"))
        return html_table("Modelworks workspace", rows)


def connect(
    url: str | None = None,
    *,
    token: str | None = None,
    project: str | None = None,
    settings: Settings | None = None,
) -> Workspace:
    """Open a workspace: embedded on the local store, or remote on a server.

    ``url`` defaults to ``MODELWORKS_URL``; without one the store named by
    ``MODELWORKS_HOME`` / ``MODELWORKS_DATABASE_URL`` is opened in this process. A remote
    workspace needs an API token (``token`` or ``MODELWORKS_TOKEN``); connecting checks it
    and the project at once, so a wrong URL or token fails here and not mid-training.

    >>> ws = mw.connect()  # doctest: +SKIP
    >>> ws = mw.connect("http://127.0.0.1:8080", token="mw_...", project="fraud")
    ... # doctest: +SKIP
    """
    cfg = settings or get_settings()
    project = project or cfg.project
    url = url or cfg.url
    if url:
        return _connect_remote(url, token or _secret(cfg), project, cfg)
    from modelworks.core.store import Store
    from modelworks.data.transport import embedded_data
    from modelworks.registry.transport import embedded_registry
    from modelworks.serving.client import embedded_deployments
    from modelworks.training.transport import embedded_training
    from modelworks.transport import embedded_tracking

    store = Store(cfg)
    return Workspace(
        embedded_tracking(store),
        data=embedded_data(store),
        training=embedded_training(store),
        registry=embedded_registry(store),
        deployments=embedded_deployments(store),
        project=project,
        mode="embedded",
        location=str(cfg.home_path)
        if not cfg.database_url
        else _masked(cfg.effective_database_url),
        closer=store.close,
    )


def _secret(cfg: Settings) -> str | None:
    return cfg.token.get_secret_value() if cfg.token else None


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


def _connect_remote(url: str, token: str | None, project: str, cfg: Settings) -> Workspace:
    from urllib.parse import quote

    from modelworks.data.transport import RemoteData
    from modelworks.registry.transport import RemoteRegistry
    from modelworks.serving.client import RemoteDeployments
    from modelworks.training.transport import RemoteTraining
    from modelworks.transport import HttpClient, RemoteTracking

    if not token:
        raise Unauthenticated(
            f"Connecting to {url} needs an API token: pass token=... or set MODELWORKS_TOKEN. "
            "Create one with `modelworks tokens create NAME`."
        )
    http = HttpClient(url, token)
    try:
        http.request("GET", f"/api/v1/projects/{quote(project, safe='')}", idempotent=True)
    except BaseException:
        http.close()
        raise
    return Workspace(
        RemoteTracking(http),
        data=RemoteData(http, cfg),  # cfg: this machine's HOME caches downloaded parts
        training=RemoteTraining(http),
        registry=RemoteRegistry(http),
        deployments=RemoteDeployments(http),
        project=project,
        mode="remote",
        location=http.base_url,
        closer=http.close,
    )


# ---- the default workspace of the module-level API --------------------------------------------
_default: tuple[tuple[Any, ...], Workspace] | None = None
_default_lock = threading.Lock()


def default_workspace() -> Workspace:
    """The workspace ``mw.start_run`` uses: ``mw.connect()`` from the environment, made once
    (and again only if the environment now names another store or server)."""
    global _default
    cfg = get_settings()
    key = (
        os.getpid(),
        cfg.url,
        _secret(cfg),
        cfg.effective_database_url,
        cfg.effective_artifact_url,
    )
    with _default_lock:
        if _default is not None and _default[0] == key and not _default[1]._closed:
            return _default[1]
        ws = connect(settings=cfg)
        _default = (key, ws)
        return ws


def start_run(
    experiment: str = "default",
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    parent: RunRef | None = None,
    nested: bool = False,
    *,
    description: str = "",
) -> ActiveRun:
    """Start a run on the default workspace; see :meth:`Workspace.start_run`.

    >>> import modelworks as mw
    >>> with mw.start_run(experiment="churn") as run:  # doctest: +SKIP
    ...     run.log_params({"lr": 0.1, "depth": 6})
    ...     run.log_metric("auc", 0.91, step=3)
    """
    return default_workspace().start_run(
        experiment,
        name,
        tags,
        params,
        parent,
        nested,
        description=description,
    )


def active_run() -> ActiveRun | None:
    """The innermost run started and not yet ended in this thread, or None.

    >>> with mw.start_run(experiment="churn") as run:  # doctest: +SKIP
    ...     assert mw.active_run() is run
    """
    return current_run()
