"""RegistryService on the real stores: versions from runs and packages, aliases and their
concurrency, the approval policy, stages, card, lineage, and moving packages between stores."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from modelworks.core.audit import AuditRecord, verify
from modelworks.core.auth import Principal, local_principal
from modelworks.core.errors import Conflict, CorruptData, InvalidInput, NotFound, PermissionDenied
from modelworks.core.store import Store
from modelworks.governance.service import GovernanceService
from modelworks.registry.card import model_card
from modelworks.registry.service import RegistryService
from modelworks.tracking.service import TrackingService
from modelworks.training.package import load_package, save_package

ADMIN = local_principal()


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.iloc[:, :6], y


def _package(tmp_path: Path, data: tuple[pd.DataFrame, pd.Series], c: float = 1.0) -> Path:
    X, y = data
    model = LogisticRegression(C=c, max_iter=2000).fit(X, y)
    path = tmp_path / f"pkg-{c}"
    save_package(model, path, input_example=X.head(), metrics={"train_accuracy": 0.9})
    return path


def _run_with_package(store: Store, pkg: Path) -> str:
    tracking = TrackingService(store)
    run = tracking.create_run(ADMIN, "default", "exp")
    tracking.log_artifacts(ADMIN, run.id, pkg, "model")
    return run.id


def test_versions_from_runs_and_packages(
    store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    svc = RegistryService(store)
    run_id = _run_with_package(store, _package(tmp_path, data, 1.0))
    v1 = svc.register_run(ADMIN, "default", "churn", run_id, description="first")
    assert (v1.version, v1.ref, v1.run_id, v1.flavor, v1.task) == (
        1, "churn@1", run_id, "sklearn", "binary",
    )  # fmt: skip
    assert v1.signature is not None and v1.metrics == {"train_accuracy": 0.9}
    v2 = svc.register_package(ADMIN, "default", "churn", _package(tmp_path, data, 0.01))
    assert v2.version == 2 and v2.source["kind"] == "package"
    assert svc.get_version(ADMIN, "default", "churn").version == 2  # bare name = latest
    assert svc.get_model(ADMIN, "default", "churn").latest_version == 2
    assert [v.version for v in svc.list_versions(ADMIN, "default", "churn")] == [2, 1]

    # The stored package loads and predicts like the original.
    out = svc.download_package(ADMIN, "default", "churn@1", tmp_path / "dl")
    X, _ = data
    expected = load_package(tmp_path / "pkg-1.0").predict_proba(X)
    np.testing.assert_array_equal(load_package(out).predict_proba(X), expected)

    with pytest.raises(NotFound, match=r"no version 7"):
        svc.get_version(ADMIN, "default", "churn@7")
    with pytest.raises(NotFound, match=r"no alias 'champion'"):
        svc.get_version(ADMIN, "default", "churn@champion")
    with pytest.raises(InvalidInput, match=r"not valid"):
        svc.get_version(ADMIN, "default", "bad name@1")


def test_run_without_package_and_tampered_package(
    store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    svc = RegistryService(store)
    tracking = TrackingService(store)
    run = tracking.create_run(ADMIN, "default", "exp")
    with pytest.raises(NotFound, match=r"no model package under 'model'"):
        svc.register_run(ADMIN, "default", "churn", run.id)
    pkg = _package(tmp_path, data)
    (pkg / "requirements.txt").write_text("tampered\n")
    run2 = _run_with_package(store, pkg)
    with pytest.raises(CorruptData, match=r"requirements.txt does not match its checksum"):
        svc.register_run(ADMIN, "default", "churn", run2)
    with pytest.raises(CorruptData, match=r"requirements.txt"):
        svc.register_package(ADMIN, "default", "churn", pkg)
    with pytest.raises(NotFound):  # nothing half-made: no model, no version
        svc.get_model(ADMIN, "default", "churn")


def test_aliases_stages_and_audit(
    store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    svc = RegistryService(store)
    for c in (1.0, 0.1):
        svc.register_package(ADMIN, "default", "churn", _package(tmp_path, data, c))
    moved = svc.set_alias(ADMIN, "default", "churn", "champion", 1)
    assert (moved.status, moved.version, moved.previous_version) == ("moved", 1, None)
    assert svc.get_version(ADMIN, "default", "churn@champion").version == 1
    again = svc.set_alias(ADMIN, "default", "churn", "champion", "churn@1")
    assert again.status == "unchanged"
    svc.set_alias(ADMIN, "default", "churn", "challenger", 2)
    moved = svc.set_alias(ADMIN, "default", "churn", "champion", "churn@challenger")
    assert (moved.version, moved.previous_version) == (2, 1)
    assert svc.get_model(ADMIN, "default", "churn").aliases == {"challenger": 2, "champion": 2}
    assert svc.get_version(ADMIN, "default", "churn@2").aliases == ["challenger", "champion"]
    with pytest.raises(Conflict, match=r"holds the alias"):
        svc.delete_version(ADMIN, "default", "churn@2")
    with pytest.raises(InvalidInput, match=r"not 'latest'"):
        svc.set_alias(ADMIN, "default", "churn", "latest", 1)

    staged = svc.set_stage(ADMIN, "default", "churn@champion", "production")
    assert staged.stage == "production"
    with pytest.raises(InvalidInput, match=r"Unknown stage"):
        svc.set_stage(ADMIN, "default", "churn@1", "live")

    with store.read() as s:
        moves = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "model.alias.set")
            .order_by(AuditRecord.seq)
        ).all()
        assert [(m.changes["alias"], m.changes["from"], m.changes["to"]) for m in moves] == [
            ("champion", None, 1), ("challenger", None, 2), ("champion", 1, 2),
        ]  # fmt: skip
        assert verify(s).ok


def test_card_and_lineage(
    store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    from modelworks.data.service import DataService
    from modelworks.training.service import TrainingService

    X, y = data
    frame = X.assign(target=y)
    src = tmp_path / "train.parquet"
    frame.to_parquet(src)
    DataService(store).ingest(ADMIN, "default", "cancer", {"kind": "parquet", "path": str(src)})
    svc = RegistryService(store)
    run_id = _run_with_package(store, _package(tmp_path, data))
    TrainingService(store).record_input(ADMIN, run_id, "cancer@1")
    v = svc.register_run(ADMIN, "default", "cancer-lr", run_id)
    graph = svc.lineage(ADMIN, "default", v.ref)
    assert graph.datasets == ["cancer@1"]
    rels = {(e.parent.type, e.relation, e.child.type) for e in graph.edges}
    assert ("run", "registered_as", "model_version") in rels
    assert ("dataset_version", "trained_on", "run") in rels

    card = model_card(svc, ADMIN, "default", v.ref)
    assert "# Model card: cancer-lr@1" in card.markdown
    assert "- cancer@1" in card.markdown and "train_accuracy" in card.markdown
    assert "## Intended use\n\n(to fill in)" in card.markdown
    svc.update_version(ADMIN, "default", v.ref, card={"intended_use": "Triage research only."})
    card = model_card(svc, ADMIN, "default", v.ref)
    assert "## Intended use\n\nTriage research only." in card.markdown
    with pytest.raises(InvalidInput, match=r"Unknown model card field"):
        svc.update_version(ADMIN, "default", v.ref, card={"purpose": "x"})


def _member(gov: GovernanceService, name: str, role: str) -> Principal:
    user = gov.create_user(ADMIN, name, f"{name}-password-123")
    gov.set_member(ADMIN, "default", name, role)
    return Principal(username=name, user_id=user.id, via="token")


def test_protected_alias_needs_a_maintainers_approval(
    store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    gov = GovernanceService(store)
    editor = _member(gov, "eddie", "editor")
    maintainer = _member(gov, "maria", "maintainer")
    svc = RegistryService(store)
    for c in (1.0, 0.1):
        svc.register_package(editor, "default", "churn", _package(tmp_path, data, c))
    with pytest.raises(PermissionDenied, match=r"needs the admin role"):
        svc.set_policy(maintainer, "default", ["champion"])
    svc.set_policy(ADMIN, "default", ["champion"])

    svc.set_alias(editor, "default", "churn", "challenger", 2)  # not protected: moves
    pending = svc.set_alias(editor, "default", "churn", "champion", 2, reason="better AUC")
    assert pending.status == "pending_approval" and pending.request_id
    with pytest.raises(NotFound, match=r"no alias 'champion'"):
        svc.get_version(editor, "default", "churn@champion")
    with pytest.raises(PermissionDenied, match=r"maintainer"):
        svc.decide_request(editor, "default", pending.request_id, approve=True)
    [req] = svc.list_requests(maintainer, "default")
    assert (req.alias, req.version, req.requested_by, req.reason) == (
        "champion", 2, "eddie", "better AUC",
    )  # fmt: skip
    done = svc.decide_request(maintainer, "default", req.id, approve=True, note="checked")
    assert (done.status, done.decided_by) == ("approved", "maria")
    assert svc.get_version(editor, "default", "churn@champion").version == 2
    with pytest.raises(Conflict, match=r"already approved"):
        svc.decide_request(ADMIN, "default", req.id, approve=False)

    # A maintainer moves a protected alias directly, but never approves their own request.
    assert svc.set_alias(maintainer, "default", "churn", "champion", 1).status == "moved"
    with store.read() as s:
        actions = [
            r.action
            for r in s.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
            if r.action.startswith("model.alias")
        ]
    assert actions == [
        "model.alias.set", "model.alias.request", "model.alias.approve", "model.alias.set",
        "model.alias.set",
    ]  # fmt: skip


def _concurrent_moves(store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]) -> None:
    svc = RegistryService(store)
    for c in (1.0, 0.1):
        svc.register_package(ADMIN, "default", "churn", _package(tmp_path, data, c))
    svc.set_alias(ADMIN, "default", "churn", "champion", 1)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def move(version: int) -> None:
        try:
            for _ in range(5):
                barrier.wait()
                svc.set_alias(ADMIN, "default", "churn", "champion", version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(v,)) for v in (2, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = svc.get_model(ADMIN, "default", "churn").aliases["champion"]
    with store.read() as s:
        moves = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "model.alias.set")
            .order_by(AuditRecord.seq)
        ).all()
        assert verify(s).ok
    # Every recorded move starts where the one before it ended, and the last one is the
    # state the alias is in: the moves were applied one at a time, none lost.
    chain = [(m.changes["from"], m.changes["to"]) for m in moves]
    assert chain[0] == (None, 1)
    for (_, before), (after_from, _) in itertools.pairwise(chain):
        assert after_from == before
    assert chain[-1][1] == final
    assert len(chain) >= 2  # both clients' moves landed (unchanged moves are not recorded)


def test_concurrent_alias_moves_sqlite(
    store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    _concurrent_moves(store, tmp_path, data)


@pytest.mark.postgres
def test_concurrent_alias_moves_postgres(
    postgres_store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    _concurrent_moves(postgres_store, tmp_path, data)


@pytest.mark.postgres
def test_package_moves_from_sqlite_to_postgres_and_predicts_the_same(
    store: Store, postgres_store: Store, tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    from modelworks.registry.export import export_tarball, import_package

    X, _ = data
    src = RegistryService(store)
    src.register_package(ADMIN, "default", "churn", _package(tmp_path, data))
    pkg = src.download_package(ADMIN, "default", "churn@1", tmp_path / "out")
    archive = export_tarball(pkg, tmp_path / "churn.tar.gz")
    import_package(archive, tmp_path / "imported")
    dst = RegistryService(postgres_store)
    v = dst.register_package(ADMIN, "default", "churn", tmp_path / "imported")
    again = dst.download_package(ADMIN, "default", v.ref, tmp_path / "again")
    np.testing.assert_array_equal(
        load_package(again).predict_proba(X), load_package(pkg).predict_proba(X)
    )
    assert v.signature == src.get_version(ADMIN, "default", "churn@1").signature
