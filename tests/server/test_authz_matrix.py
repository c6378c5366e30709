"""Every REST route x every role gets the expected allow or deny.

The test walks the app's routes: a route without an ``auth_rule`` mark, or without a case
here, fails the test, so no route can be added without an authorisation rule.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from modelworks.core.auth import Principal
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.governance.service import GovernanceService
from modelworks.server.app import create_app
from modelworks.server.auth_rules import AUTH_KEY
from modelworks.tracking.service import TrackingService

ROLES = ("viewer", "editor", "maintainer", "admin")


@dataclass
class Actor:
    name: str
    principal: Principal | None
    token: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass
class World:
    store: Store
    client: TestClient
    gov: GovernanceService
    tracking: TrackingService
    actors: dict[str, Actor]
    data: DataService = field(init=False)
    cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = DataService(self.store)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for the module: every case builds the fresh objects it mutates, so the
    callers can share the users, the project and the slow-to-make registry objects."""
    from modelworks.core.config import Settings

    store = Store(Settings(home=tmp_path_factory.mktemp("authz-home")))
    gov = GovernanceService(store)
    gov.bootstrap_admin("root", "root-password")
    root = gov.authenticate_password("root", "root-password")
    gov.create_project(root, "p1")
    actors: dict[str, Actor] = {"anonymous": Actor("anonymous", None, None)}
    for name in (*ROLES, "outsider"):
        gov.create_user(root, name, f"{name}-password")
        if name != "outsider":
            gov.set_member(root, "p1", name, name)
    for name in (*ROLES, "outsider", "root"):
        principal = gov.authenticate_password(name, f"{name}-password")
        token = gov.create_token(principal, "t").token
        actors[name] = Actor(name, principal, token)
    app = create_app(store, run_jobs=False)  # submitted jobs stay queued
    with TestClient(app, follow_redirects=False) as client:
        yield World(store, client, gov, TrackingService(store), actors)
    store.close()


LEVEL_RANK = {"viewer": 1, "editor": 2, "maintainer": 3, "admin": 4}
CALLERS = ("anonymous", "outsider", *ROLES, "root")

Request = dict[str, Any]


def _fresh_run(w: World) -> str:
    root = w.actors["root"].principal
    assert root is not None
    run = w.tracking.create_run(root, "p1", "e-" + uuid.uuid4().hex[:8], params={"a": "1"})
    w.tracking.log_batch(root, run.id, metrics=[_metric()])
    w.tracking.log_artifact(root, run.id, "a.txt", b"hello")
    return run.id


def _metric() -> Any:
    from modelworks.tracking.schemas import MetricIn

    return MetricIn(key="m", value=1.0, step=0)


def _fresh_experiment(w: World) -> str:
    root = w.actors["root"].principal
    assert root is not None
    return w.tracking.create_experiment(root, "p1", "x-" + uuid.uuid4().hex[:8]).name


def _fresh_user(w: World) -> str:
    root = w.actors["root"].principal
    assert root is not None
    return w.gov.create_user(root, "u" + uuid.uuid4().hex[:8], "password-123").username


def _own_token(w: World, caller: str) -> str:
    actor = w.actors.get(caller)
    principal = actor.principal if actor else None
    if principal is None:
        principal = w.actors["viewer"].principal
    assert principal is not None
    return w.gov.create_token(principal, "tmp").id


# (method, path) -> build(world, caller) -> request kwargs with the concrete path.
CASES: dict[tuple[str, str], Callable[[World, str], Request]] = {
    ("GET", "/healthz"): lambda w, c: {"url": "/healthz"},
    ("GET", "/readyz"): lambda w, c: {"url": "/readyz"},
    ("GET", "/metrics"): lambda w, c: {"url": "/metrics"},
    ("POST", "/api/v1/auth/login"): lambda w, c: {
        "url": "/api/v1/auth/login",
        "json": {"username": "viewer", "password": "viewer-password"},
    },
    ("POST", "/api/v1/auth/logout"): lambda w, c: {"url": "/api/v1/auth/logout"},
    ("GET", "/api/v1/auth/whoami"): lambda w, c: {"url": "/api/v1/auth/whoami"},
    ("GET", "/api/v1/tokens"): lambda w, c: {"url": "/api/v1/tokens"},
    ("POST", "/api/v1/tokens"): lambda w, c: {"url": "/api/v1/tokens", "json": {"name": "n"}},
    ("DELETE", "/api/v1/tokens/{token_id}"): lambda w, c: {
        "url": f"/api/v1/tokens/{_own_token(w, c)}"
    },
    ("GET", "/api/v1/users"): lambda w, c: {"url": "/api/v1/users"},
    ("POST", "/api/v1/users"): lambda w, c: {
        "url": "/api/v1/users",
        "json": {"username": "n" + uuid.uuid4().hex[:8], "password": "password-123"},
    },
    ("POST", "/api/v1/users/{username}/disable"): lambda w, c: {
        "url": f"/api/v1/users/{_fresh_user(w)}/disable"
    },
    ("GET", "/api/v1/projects"): lambda w, c: {"url": "/api/v1/projects"},
    ("POST", "/api/v1/projects"): lambda w, c: {
        "url": "/api/v1/projects",
        "json": {"name": "p-" + uuid.uuid4().hex[:8]},
    },
    ("GET", "/api/v1/projects/{project}"): lambda w, c: {"url": "/api/v1/projects/p1"},
    ("DELETE", "/api/v1/projects/{project}"): None,  # type: ignore[dict-item]  # set below
    ("GET", "/api/v1/projects/{project}/members"): lambda w, c: {
        "url": "/api/v1/projects/p1/members"
    },
    ("PUT", "/api/v1/projects/{project}/members"): lambda w, c: {
        "url": "/api/v1/projects/p1/members",
        "json": {"username": _fresh_user(w), "role": "viewer"},
    },
    ("DELETE", "/api/v1/projects/{project}/members/{username}"): None,  # type: ignore[dict-item]
    ("GET", "/api/v1/projects/{project}/audit"): lambda w, c: {"url": "/api/v1/projects/p1/audit"},
    ("GET", "/api/v1/audit"): lambda w, c: {"url": "/api/v1/audit"},
    ("GET", "/api/v1/audit/verify"): lambda w, c: {"url": "/api/v1/audit/verify"},
    ("GET", "/api/v1/projects/{project}/experiments"): lambda w, c: {
        "url": "/api/v1/projects/p1/experiments"
    },
    ("POST", "/api/v1/projects/{project}/experiments"): lambda w, c: {
        "url": "/api/v1/projects/p1/experiments",
        "json": {"name": "e-" + uuid.uuid4().hex[:8]},
    },
    ("GET", "/api/v1/projects/{project}/experiments/{experiment}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/experiments/{_fresh_experiment(w)}"
    },
    ("PATCH", "/api/v1/projects/{project}/experiments/{experiment}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/experiments/{_fresh_experiment(w)}",
        "json": {"description": "d"},
    },
    ("DELETE", "/api/v1/projects/{project}/experiments/{experiment}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/experiments/{_fresh_experiment(w)}"
    },
    ("POST", "/api/v1/projects/{project}/experiments/{experiment}/restore"): lambda w, c: {
        "url": f"/api/v1/projects/p1/experiments/{_fresh_experiment(w)}/restore"
    },
    ("POST", "/api/v1/projects/{project}/runs"): lambda w, c: {
        "url": "/api/v1/projects/p1/runs",
        "json": {"experiment": "shared"},
    },
    ("POST", "/api/v1/projects/{project}/runs/search"): lambda w, c: {
        "url": "/api/v1/projects/p1/runs/search",
        "json": {"filter": "metrics.m > 0"},
    },
    ("GET", "/api/v1/runs/{run_id}"): lambda w, c: {"url": f"/api/v1/runs/{_fresh_run(w)}"},
    ("PATCH", "/api/v1/runs/{run_id}"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}",
        "json": {"status": "FINISHED"},
    },
    ("DELETE", "/api/v1/runs/{run_id}"): lambda w, c: {"url": f"/api/v1/runs/{_fresh_run(w)}"},
    ("POST", "/api/v1/runs/{run_id}/restore"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/restore"
    },
    ("POST", "/api/v1/runs/{run_id}/log-batch"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/log-batch",
        "json": {"metrics": [{"key": "m", "value": 2.0, "step": 1}]},
    },
    ("GET", "/api/v1/runs/{run_id}/metrics/{key}"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/metrics/m"
    },
    ("GET", "/api/v1/runs/{run_id}/artifacts"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/artifacts"
    },
    ("PUT", "/api/v1/runs/{run_id}/artifacts/{path}"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/artifacts/b.txt",
        "content": b"bytes",
    },
    ("GET", "/api/v1/runs/{run_id}/artifacts/{path}"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/artifacts/a.txt"
    },
    ("POST", "/api/v1/runs/compare"): lambda w, c: {
        "url": "/api/v1/runs/compare",
        "json": {"run_ids": [_fresh_run(w), _fresh_run(w)]},
    },
}


def _root(w: World) -> Principal:
    root = w.actors["root"].principal
    assert root is not None
    return root


def _fresh_dataset(w: World, *, tag: str | None = None) -> str:
    """A dataset in p1 with one version (``name@1``), made through the service."""
    import pandas as pd

    name = "d-" + uuid.uuid4().hex[:8]
    frame = pd.DataFrame({"id": [1, 2, 3], "x": [0.5, 1.5, 2.5], "label": ["a", "b", None]})
    w.data.ingest(_root(w), "p1", name, FrameSource.of(frame))
    if tag:
        w.data.tag_version(_root(w), "p1", f"{name}@1", tag)
    return name


def _dataset(w: World) -> str:
    """One dataset with a version, shared by the read-only cases and the UI pages."""
    if "dataset" not in w.cache:
        w.cache["dataset"] = _fresh_dataset(w)
    return str(w.cache["dataset"])


def _part(w: World) -> str:
    version = w.data.get_version(_root(w), "p1", f"{_dataset(w)}@1", with_profile=False)
    return version.files[0].sha256


def _derived(w: World) -> str:
    """A version made by a SQL transform (it has a recipe to rebuild), shared."""
    if "derived" not in w.cache:
        from modelworks.data.transform_service import TransformService

        name = "t-" + uuid.uuid4().hex[:8]
        sql = f'SELECT id, x FROM "{_dataset(w)}@1"'
        TransformService(w.store).sql(_root(w), "p1", sql, name)
        w.cache["derived"] = f"{name}@1"
    return str(w.cache["derived"])


def _csv_on_server(w: World) -> str:
    """A CSV file remote callers may have the server read: one in its upload folder."""
    from modelworks.data.source_policy import upload_root

    path = Path(upload_root(w.store.settings)) / "inbox" / "small.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("id,x\n1,0.5\n2,1.5\n")
    return str(path)


DS = "/api/v1/projects/{project}/datasets"
DV = "/api/v1/projects/{project}/dataset-versions/{ref}"
DATA_CASES: dict[tuple[str, str], Callable[[World, str], Request]] = {
    ("GET", DS): lambda w, c: {"url": "/api/v1/projects/p1/datasets"},
    ("POST", DS): lambda w, c: {
        "url": "/api/v1/projects/p1/datasets",
        "json": {"name": "n-" + uuid.uuid4().hex[:8]},
    },
    ("GET", DS + "/{dataset}"): lambda w, c: {"url": f"/api/v1/projects/p1/datasets/{_dataset(w)}"},
    ("PATCH", DS + "/{dataset}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/{_dataset(w)}",
        "json": {"description": "d"},
    },
    ("DELETE", DS + "/{dataset}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/{_fresh_dataset(w)}"
    },
    ("POST", DS + "/{dataset}/restore"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/{_fresh_dataset(w)}/restore"
    },
    ("GET", DS + "/{dataset}/versions"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/{_dataset(w)}/versions"
    },
    ("DELETE", DS + "/{dataset}/tags/{tag}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/{_fresh_dataset(w, tag='golden')}/tags/golden"
    },
    ("POST", DS + "/{dataset}/ingest"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/i-{uuid.uuid4().hex[:8]}/ingest",
        "json": {"source": {"kind": "csv", "path": _csv_on_server(w)}, "mode": "replace"},
    },
    ("POST", DS + "/{dataset}/upload"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/u-{uuid.uuid4().hex[:8]}/upload",
        "params": {"format": "csv"},
        "content": b"id,x\n1,0.5\n",
    },
    ("GET", DS + "/{dataset}/expectations"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/{_dataset(w)}/expectations"
    },
    ("PUT", DS + "/{dataset}/expectations"): lambda w, c: {
        "url": f"/api/v1/projects/p1/datasets/{_dataset(w)}/expectations",
        "json": {"suite": None},
    },
    ("GET", DV): lambda w, c: {"url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}@1"},
    ("PUT", DV + "/tags/{tag}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}%401/tags/t-{c}"
    },
    ("GET", DV + "/preview"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}@latest/preview"
    },
    ("GET", DV + "/profile"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}/profile"
    },
    ("GET", DV + "/parts/{sha256}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}@1/parts/{_part(w)}"
    },
    ("POST", DV + "/expectations/infer"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}@1/expectations/infer"
    },
    ("POST", DV + "/validate"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}@1/validate",
        "json": {"suite": {"expectations": [{"type": "row_count", "min": 1}]}},
    },
    ("GET", DV + "/validations"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}@1/validations"
    },
    ("POST", DV + "/rebuild"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_derived(w)}/rebuild",
        "json": {"write": False},
    },
    ("POST", "/api/v1/projects/{project}/transforms/sql"): lambda w, c: {
        "url": "/api/v1/projects/p1/transforms/sql",
        "json": {"sql": f'SELECT id FROM "{_dataset(w)}@1"', "output": "t-" + uuid.uuid4().hex[:8]},
    },
    ("POST", "/api/v1/projects/{project}/transforms/clean"): lambda w, c: {
        "url": "/api/v1/projects/p1/transforms/clean",
        "json": {
            "ref": f"{_dataset(w)}@1",
            "steps": [{"op": "deduplicate"}],
            "output": "c-" + uuid.uuid4().hex[:8],
        },
    },
    ("GET", DV + "/lineage"): lambda w, c: {
        "url": f"/api/v1/projects/p1/dataset-versions/{_dataset(w)}@1/lineage",
        "params": {"direction": "up"},
    },
}
CASES.update(DATA_CASES)

TRAINING_CASES: dict[tuple[str, str], Callable[[World, str], Request]] = {
    ("POST", "/api/v1/runs/{run_id}/inputs"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/inputs",
        "json": {"dataset": f"{_dataset(w)}@1"},
    },
    ("GET", "/api/v1/runs/{run_id}/inputs"): lambda w, c: {
        "url": f"/api/v1/runs/{_fresh_run(w)}/inputs"
    },
}
CASES.update(TRAINING_CASES)


def _fresh_job(w: World) -> str:
    """A queued sleep job in p1 (the matrix's app runs no job runner, so it stays queued)."""
    from modelworks.training.jobs.service import JobService

    return JobService(w.store).submit(_root(w), "p1", "sleep", {"seconds": 0}).id


JOB_CASES: dict[tuple[str, str], Callable[[World, str], Request]] = {
    ("POST", "/api/v1/projects/{project}/jobs"): lambda w, c: {
        "url": "/api/v1/projects/p1/jobs",
        "json": {"kind": "sleep", "spec": {"seconds": 0}},
    },
    ("GET", "/api/v1/projects/{project}/jobs"): lambda w, c: {"url": "/api/v1/projects/p1/jobs"},
    ("GET", "/api/v1/jobs/{job_id}"): lambda w, c: {"url": f"/api/v1/jobs/{_fresh_job(w)}"},
    ("POST", "/api/v1/jobs/{job_id}/cancel"): lambda w, c: {
        "url": f"/api/v1/jobs/{_fresh_job(w)}/cancel"
    },
    ("GET", "/api/v1/jobs/{job_id}/logs"): lambda w, c: {
        "url": f"/api/v1/jobs/{_fresh_job(w)}/logs",
        "params": {"offset": 0},
    },
}
CASES.update(JOB_CASES)


# ---- registry ----------------------------------------------------------------------------------
def _package_dir(w: World) -> Path:
    """One small package folder (a logistic regression on a and b), made once."""
    if "package" not in w.cache:
        import tempfile

        import pandas as pd
        from sklearn.linear_model import LogisticRegression

        from modelworks.training.package import save_package

        frame = _registry_frame()
        model = LogisticRegression().fit(frame[["a", "b"]], frame["target"])
        folder = Path(tempfile.mkdtemp(prefix="authz-pkg-")) / "pkg"
        save_package(
            model, folder, input_example=frame[["a", "b"]].head(), params={"target": "target"}
        )
        w.cache["package"] = folder
        assert isinstance(frame, pd.DataFrame)
    return Path(w.cache["package"])


def _registry_frame() -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    a = rng.normal(size=80)
    b = rng.normal(size=80)
    return pd.DataFrame({"a": a, "b": b, "target": (a + 0.3 * rng.normal(size=80) > 0).astype(int)})


def _registry(w: World) -> dict[str, str]:
    """A model with two versions, aliases, an evaluation, a comparison and importance, and
    a dataset to evaluate on; shared by the read-only cases and the UI pages."""
    if "registry" not in w.cache:
        from modelworks.registry.evaluations import EvaluationService

        evals = EvaluationService(w.store)
        root = _root(w)
        data = "rd-" + uuid.uuid4().hex[:8]
        w.data.ingest(root, "p1", data, FrameSource.of(_registry_frame()))
        name = "m-" + uuid.uuid4().hex[:8]
        for _ in range(2):
            evals.registry.register_package(root, "p1", name, _package_dir(w))
        evals.registry.set_alias(root, "p1", name, "champion", 1)
        evals.registry.set_alias(root, "p1", name, "challenger", 2)
        ev = evals.evaluate(root, "p1", f"{name}@1", f"{data}@1", bootstrap=50)
        cmp = evals.compare(root, "p1", name, f"{data}@1", n_resamples=100)
        evals.explain_global(root, "p1", f"{name}@1", f"{data}@1", max_rows=40)
        evals.registry.set_policy(root, "p1", ["guarded"])
        w.cache["registry"] = {
            "model": name, "data": f"{data}@1", "evaluation": ev.id, "comparison": cmp.id,
        }  # fmt: skip
    return dict(w.cache["registry"])


def _fresh_version(w: World) -> str:
    """A new version (no alias) of the shared model."""
    from modelworks.registry.service import RegistryService

    reg = _registry(w)
    return (
        RegistryService(w.store).register_package(_root(w), "p1", reg["model"], _package_dir(w)).ref
    )


def _fresh_model(w: World) -> str:
    from modelworks.registry.service import RegistryService

    name = "fm-" + uuid.uuid4().hex[:8]
    RegistryService(w.store).register_package(_root(w), "p1", name, _package_dir(w))
    return name


def _run_with_package(w: World) -> str:
    run_id = _fresh_run(w)
    w.tracking.log_artifacts(_root(w), run_id, _package_dir(w), "model")
    return run_id


def _tarball(w: World) -> bytes:
    if "tarball" not in w.cache:
        import tempfile

        from modelworks.registry.export import export_tarball

        out = Path(tempfile.mkdtemp(prefix="authz-tar-")) / "pkg.tar.gz"
        w.cache["tarball"] = export_tarball(_package_dir(w), out).read_bytes()
    return bytes(w.cache["tarball"])


def _fresh_alias(w: World) -> tuple[str, str]:
    from modelworks.registry.service import RegistryService

    reg = _registry(w)
    alias = "a" + uuid.uuid4().hex[:8]
    RegistryService(w.store).set_alias(_root(w), "p1", reg["model"], alias, 1)
    return reg["model"], alias


def _fresh_request(w: World) -> str:
    """A pending move of the protected alias 'guarded', requested by the editor."""
    from modelworks.registry.service import RegistryService

    reg = _registry(w)
    editor = w.actors["editor"].principal
    assert editor is not None
    out = RegistryService(w.store).set_alias(editor, "p1", reg["model"], "guarded", 2)
    assert out.request_id is not None
    return out.request_id


RM = "/api/v1/projects/{project}/models/{name}"
RV = "/api/v1/projects/{project}/model-versions/{ref}"


def _rv(w: World, suffix: str = "", ref: str | None = None) -> str:
    return f"/api/v1/projects/p1/model-versions/{ref or _registry(w)['model'] + '@1'}{suffix}"


def _rm(w: World, suffix: str = "", name: str | None = None) -> str:
    return f"/api/v1/projects/p1/models/{name or _registry(w)['model']}{suffix}"


REGISTRY_CASES: dict[tuple[str, str], Callable[[World, str], Request]] = {
    ("POST", "/api/v1/projects/{project}/models"): lambda w, c: {
        "url": "/api/v1/projects/p1/models",
        "json": {"name": "n-" + uuid.uuid4().hex[:8]},
    },
    ("GET", "/api/v1/projects/{project}/models"): lambda w, c: {
        "url": "/api/v1/projects/p1/models"
    },
    ("GET", RM): lambda w, c: {"url": _rm(w)},
    ("PATCH", RM): lambda w, c: {"url": _rm(w), "json": {"description": f"by {c}"}},
    ("DELETE", RM): lambda w, c: {"url": _rm(w, name=_fresh_model(w))},
    ("POST", RM + "/restore"): lambda w, c: {"url": _rm(w, "/restore", name=_fresh_model(w))},
    ("GET", RM + "/versions"): lambda w, c: {"url": _rm(w, "/versions")},
    ("POST", RM + "/versions"): lambda w, c: {
        "url": _rm(w, "/versions"),
        "json": {"run_id": _run_with_package(w)},
    },
    ("PUT", RM + "/versions/package"): lambda w, c: {
        "url": _rm(w, "/versions/package"),
        "content": _tarball(w),
    },
    ("GET", RV): lambda w, c: {"url": _rv(w)},
    ("PATCH", RV): lambda w, c: {"url": _rv(w), "json": {"card": {"caveats": f"by {c}"}}},
    ("PUT", RV + "/stage"): lambda w, c: {"url": _rv(w, "/stage"), "json": {"stage": "staging"}},
    ("DELETE", RV): lambda w, c: {"url": _rv(w, ref=_fresh_version(w))},
    ("GET", RV + "/files/{path}"): lambda w, c: {"url": _rv(w, "/files/model.yaml")},
    ("GET", RV + "/lineage"): lambda w, c: {"url": _rv(w, "/lineage")},
    ("GET", RV + "/card"): lambda w, c: {"url": _rv(w, "/card")},
    ("GET", RV + "/importance"): lambda w, c: {"url": _rv(w, "/importance")},
    ("POST", RV + "/importance"): lambda w, c: {
        "url": _rv(w, "/importance"),
        "json": {"dataset": _registry(w)["data"], "max_rows": 30},
    },
    ("GET", RV + "/importance.png"): lambda w, c: {"url": _rv(w, "/importance.png")},
    ("POST", RV + "/explain"): lambda w, c: {
        "url": _rv(w, "/explain"),
        "json": {"rows": [{"a": 0.1, "b": 0.2}], "background": _registry(w)["data"]},
    },
    ("PUT", RM + "/aliases/{alias}"): lambda w, c: {
        "url": _rm(w, f"/aliases/x{uuid.uuid4().hex[:8]}"),
        "json": {"version": "1"},
    },
    ("DELETE", RM + "/aliases/{alias}"): lambda w, c: (
        lambda m_a: {"url": _rm(w, f"/aliases/{m_a[1]}", name=m_a[0])}
    )(_fresh_alias(w)),
    ("GET", "/api/v1/projects/{project}/model-policy"): lambda w, c: {
        "url": "/api/v1/projects/p1/model-policy"
    },
    ("PUT", "/api/v1/projects/{project}/model-policy"): lambda w, c: {
        "url": "/api/v1/projects/p1/model-policy",
        "json": {"protected_aliases": ["guarded"]},
    },
    ("GET", "/api/v1/projects/{project}/alias-requests"): lambda w, c: {
        "url": "/api/v1/projects/p1/alias-requests"
    },
    ("POST", "/api/v1/projects/{project}/alias-requests/{request_id}/approve"): lambda w, c: {
        "url": f"/api/v1/projects/p1/alias-requests/{_fresh_request(w)}/approve",
        "json": {},
    },
    ("POST", "/api/v1/projects/{project}/alias-requests/{request_id}/reject"): lambda w, c: {
        "url": f"/api/v1/projects/p1/alias-requests/{_fresh_request(w)}/reject",
        "json": {},
    },
    ("POST", RV + "/evaluations"): lambda w, c: {
        "url": _rv(w, "/evaluations"),
        "json": {"dataset": _registry(w)["data"], "bootstrap": 20},
    },
    ("GET", RV + "/evaluations"): lambda w, c: {"url": _rv(w, "/evaluations")},
    ("GET", "/api/v1/projects/{project}/evaluations/{evaluation_id}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/evaluations/{_registry(w)['evaluation']}"
    },
    ("GET", "/api/v1/projects/{project}/evaluations/{evaluation_id}/plots/{name}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/evaluations/{_registry(w)['evaluation']}/plots/roc.png"
    },
    ("POST", RM + "/comparisons"): lambda w, c: {
        "url": _rm(w, "/comparisons"),
        "json": {"dataset": _registry(w)["data"], "n_resamples": 100},
    },
    ("GET", RM + "/comparisons"): lambda w, c: {"url": _rm(w, "/comparisons")},
    ("GET", "/api/v1/projects/{project}/comparisons/{comparison_id}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/comparisons/{_registry(w)['comparison']}"
    },
    ("GET", "/api/v1/projects/{project}/comparisons/{comparison_id}/plots/{name}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/comparisons/{_registry(w)['comparison']}/plots/comparison.png"
    },
}
CASES.update(REGISTRY_CASES)


# ---- deployments -------------------------------------------------------------------------------
def _fresh_deployment(w: World) -> str:
    from modelworks.serving.service import DeploymentService

    name = "dep-" + uuid.uuid4().hex[:8]
    DeploymentService(w.store).create(_root(w), "p1", name, f"{_registry(w)['model']}@champion")
    return name


def _deployment(w: World) -> str:
    if "deployment" not in w.cache:
        w.cache["deployment"] = _fresh_deployment(w)
    return str(w.cache["deployment"])


def _fresh_deployment_token(w: World) -> tuple[str, str]:
    from modelworks.serving.service import DeploymentService

    name = _deployment(w)
    return name, DeploymentService(w.store).create_token(_root(w), "p1", name).id


DEP = "/api/v1/projects/{project}/deployments"
DEPLOYMENT_CASES: dict[tuple[str, str], Callable[[World, str], Request]] = {
    ("POST", DEP): lambda w, c: {
        "url": "/api/v1/projects/p1/deployments",
        "json": {"name": "dep-" + uuid.uuid4().hex[:8], "model": f"{_registry(w)['model']}@1"},
    },
    ("GET", DEP): lambda w, c: {"url": "/api/v1/projects/p1/deployments"},
    ("GET", DEP + "/{name}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/deployments/{_deployment(w)}"
    },
    ("PATCH", DEP + "/{name}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/deployments/{_deployment(w)}",
        "json": {"description": c},
    },
    ("DELETE", DEP + "/{name}"): lambda w, c: {
        "url": f"/api/v1/projects/p1/deployments/{_fresh_deployment(w)}"
    },
    ("POST", DEP + "/{name}/tokens"): lambda w, c: {
        "url": f"/api/v1/projects/p1/deployments/{_deployment(w)}/tokens",
        "json": {},
    },
    ("GET", DEP + "/{name}/tokens"): lambda w, c: {
        "url": f"/api/v1/projects/p1/deployments/{_deployment(w)}/tokens"
    },
    ("DELETE", DEP + "/{name}/tokens/{token_id}"): lambda w, c: (
        lambda n_t: {"url": f"/api/v1/projects/p1/deployments/{n_t[0]}/tokens/{n_t[1]}"}
    )(_fresh_deployment_token(w)),
}
CASES.update(DEPLOYMENT_CASES)


def _served(w: World) -> str:
    """The shared deployment, loaded by the server's deployment manager."""
    name = _deployment(w)
    if "served" not in w.cache:
        w.client.app.state.deployment_manager.sync_once()  # type: ignore[attr-defined]
        w.cache["served"] = True
    return name


def _infer_body() -> dict[str, Any]:
    return {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [0.5]}
                       for c in ("a", "b")]}  # fmt: skip


def _version_ref(w: World) -> str:
    return f"{_registry(w)['model']}@1"


INFERENCE_CASES: dict[tuple[str, str], Callable[[World, str], Request]] = {
    ("POST", "/deployments/{name}/predict"): lambda w, c: {
        "url": f"/deployments/{_served(w)}/predict",
        "json": {"records": [{"a": 0.1, "b": 0.2}]},
    },
    ("POST", "/deployments/{name}/feedback"): lambda w, c: {
        "url": f"/deployments/{_served(w)}/feedback",
        "json": {"request_id": "r-" + uuid.uuid4().hex[:8], "ground_truth": 1},
    },
    ("POST", "/v2/models/{name}/infer"): lambda w, c: {
        "url": f"/v2/models/{_served(w)}/infer",
        "json": _infer_body(),
    },
    ("POST", "/v2/models/{name}/versions/{version}/infer"): lambda w, c: {
        "url": f"/v2/models/{_served(w)}/versions/{_version_ref(w)}/infer",
        "json": _infer_body(),
    },
    ("GET", "/v2"): lambda w, c: {"url": "/v2"},
    ("GET", "/v2/health/live"): lambda w, c: {"url": "/v2/health/live"},
    ("GET", "/v2/health/ready"): lambda w, c: (_served(w), {"url": "/v2/health/ready"})[1],
    ("GET", "/v2/models/{name}"): lambda w, c: {"url": f"/v2/models/{_served(w)}"},
    ("GET", "/v2/models/{name}/ready"): lambda w, c: {"url": f"/v2/models/{_served(w)}/ready"},
    ("GET", "/v2/models/{name}/versions/{version}"): lambda w, c: {
        "url": f"/v2/models/{_served(w)}/versions/{_version_ref(w)}"
    },
    ("GET", "/v2/models/{name}/versions/{version}/ready"): lambda w, c: {
        "url": f"/v2/models/{_served(w)}/versions/{_version_ref(w)}/ready"
    },
}
CASES.update(INFERENCE_CASES)


def _fresh_project(w: World) -> str:
    root = w.actors["root"].principal
    assert root is not None
    name = "q-" + uuid.uuid4().hex[:8]
    w.gov.create_project(root, name)
    for role in ROLES:
        w.gov.set_member(root, name, role, role)
    return name


def _member_to_remove(w: World) -> Request:
    root = w.actors["root"].principal
    assert root is not None
    user = _fresh_user(w)
    w.gov.set_member(root, "p1", user, "viewer")
    return {"url": f"/api/v1/projects/p1/members/{user}"}


CASES[("DELETE", "/api/v1/projects/{project}")] = lambda w, c: {
    "url": f"/api/v1/projects/{_fresh_project(w)}"
}
CASES[("DELETE", "/api/v1/projects/{project}/members/{username}")] = lambda w, c: _member_to_remove(
    w
)

PATH_PARAM = re.compile(r"\{([^}:]+)(:[^}]+)?\}")


def _ui_request(w: World, path: str) -> Request:
    """UI pages: fill path parameters with objects that exist in project p1."""
    run_id = _fresh_run(w)
    exp = w.tracking.get_run(w.actors["root"].principal, run_id).experiment_name  # type: ignore[arg-type]
    values = {
        "project": "p1",
        "experiment": exp,
        "exp": exp,
        "run_id": run_id,
        "key": "m",
        "path": "a.txt",
        "dataset": _dataset(w),
        "version": "1",
        "ref": f"{_dataset(w)}@1",
        "job_id": _fresh_job(w),
        "model": _registry(w)["model"],
        "comparison_id": _registry(w)["comparison"],
        "name": _deployment(w),
    }

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise AssertionError(
                f"UI route {path} has a path parameter {name!r} this test "
                "cannot fill; add it to _ui_request"
            )
        return values[name]

    return {"url": PATH_PARAM.sub(fill, path)}


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """All APIRoutes, also inside included routers (FastAPI keeps those nested)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(_api_routes(route.original_router.routes))
    return found


def _routes(world: World) -> list[tuple[str, str, str | None]]:
    out = []
    for route in _api_routes(world.client.app.routes):  # type: ignore[attr-defined]
        rule = (route.openapi_extra or {}).get(AUTH_KEY)
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            path = PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
            out.append((method, path, rule))
    return out


def _expected(rule: str, caller: str) -> str:
    if rule == "public":
        return "allow"
    if caller == "anonymous":
        return "unauthenticated"
    if rule == "authenticated":
        return "allow"
    if rule == "superuser":
        return "allow" if caller == "root" else "deny"
    need = LEVEL_RANK[rule]
    if caller == "root":
        return "allow"
    if caller == "outsider":
        return "hidden"
    return "allow" if LEVEL_RANK[caller] >= need else "deny"


def test_every_route_has_a_rule_and_a_case(world: World) -> None:
    missing_rule = [f"{m} {p}" for m, p, r in _routes(world) if r is None]
    assert not missing_rule, f"routes without auth_rule(...): {missing_rule}"
    api_routes = {(m, p) for m, p, _ in _routes(world) if not _is_ui(p)}
    assert api_routes == set(CASES), (
        f"routes without a case: {sorted(api_routes - set(CASES))}; "
        f"cases without a route: {sorted(set(CASES) - api_routes)}"
    )


def _is_ui(path: str) -> bool:
    inference = path == "/v2" or path.startswith(("/v2/", "/deployments/"))
    return not (
        path.startswith("/api/") or inference or path in {"/healthz", "/readyz", "/metrics"}
    ) and (path not in {"/docs", "/openapi.json", "/docs/oauth2-redirect"})


def test_docs_routes_are_fastapis_own(world: World) -> None:
    # FastAPI's own /docs and /openapi.json are not APIRoutes; the schema is public.
    assert world.client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("caller", CALLERS)
def test_authorisation_matrix(world: World, caller: str) -> None:
    failures = []
    for method, path, rule in _routes(world):
        assert rule is not None
        if _is_ui(path):
            if method != "GET":
                continue  # UI form posts (login/logout) are covered by the browser tests
            req = _ui_request(w=world, path=path)
        else:
            req = CASES[(method, path)](world, caller)
        headers = world.actors[caller].headers if caller in world.actors else {}
        world.client.cookies.clear()
        resp = world.client.request(method, headers=headers, **req)
        expect = _expected(rule, caller)
        got = resp.status_code
        if _is_ui(path) and caller == "anonymous" and expect == "unauthenticated":
            ok = got in (302, 303, 307) and "/login" in resp.headers.get("location", "")
        elif expect == "allow":
            ok = got < 400
        elif expect == "unauthenticated":
            ok = got == 401
        elif expect == "hidden":
            ok = got in (403, 404)
        else:
            ok = got == 403
        if not ok:
            failures.append(
                f"{caller} {method} {path} ({rule}): expected {expect}, got {got} {resp.text[:200]}"
            )
    assert not failures, "\n".join(failures)
