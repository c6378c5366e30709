"""DeploymentService: named deployments of aliases and versions, configs, scoped tokens."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from modelworks.core.audit import AuditRecord
from modelworks.core.auth import local_principal
from modelworks.core.errors import AlreadyExists, InvalidInput, NotFound
from modelworks.core.store import Store
from modelworks.registry.service import RegistryService
from modelworks.serving.service import DeploymentService
from modelworks.training.package import save_package

ME = local_principal()


@pytest.fixture
def registered(store: Store, tmp_path: Path) -> RegistryService:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :4]
    reg = RegistryService(store)
    for c in (1.0, 0.1):
        path = tmp_path / f"pkg-{c}"
        save_package(LogisticRegression(C=c, max_iter=3000).fit(X, y), path,
                     input_example=pd.DataFrame(X).head())  # fmt: skip
        reg.register_package(ME, "default", "churn", path)
    reg.set_alias(ME, "default", "churn", "champion", 1)
    return reg


def test_create_update_delete(store: Store, registered: RegistryService) -> None:
    svc = DeploymentService(store)
    d = svc.create(ME, "default", "churn-prod", "churn@champion", config={"max_batch_size": 8})
    assert (d.model, d.selector, d.ref, d.status) == ("churn", "champion", "churn@champion",
                                                      "active")  # fmt: skip
    assert d.config["max_batch_size"] == 8 and "max_wait_ms" in d.config  # defaults filled in
    assert [x.name for x in svc.list(ME, "default")] == ["churn-prod"]
    assert [x.name for x in svc.active()] == ["churn-prod"]

    with pytest.raises(AlreadyExists, match=r"already exists"):
        svc.create(ME, "default", "churn-prod", "churn@1")
    with pytest.raises(InvalidInput, match=r"not valid"):
        svc.create(ME, "default", "Churn_Prod", "churn@1")
    with pytest.raises(InvalidInput, match=r"Say which version"):
        svc.create(ME, "default", "churn-two", "churn")
    with pytest.raises(NotFound, match=r"no alias 'staging'"):
        svc.create(ME, "default", "churn-two", "churn@staging")
    with pytest.raises(InvalidInput, match=r"max_batch_size"):
        svc.create(ME, "default", "churn-two", "churn@1", config={"max_batch_size": 0})

    d = svc.update(ME, "default", "churn-prod", model="churn@2", status="stopped")
    assert (d.ref, d.status) == ("churn@2", "stopped")
    assert svc.active() == []
    svc.delete(ME, "default", "churn-prod")
    assert svc.list(ME, "default") == []
    with pytest.raises(NotFound):
        svc.get(ME, "default", "churn-prod")
    # The name can be used again.
    assert svc.create(ME, "default", "churn-prod", "churn@1").ref == "churn@1"
    with store.read() as s:
        actions = [r.action for r in s.scalars(select(AuditRecord)).all()]
    assert actions.count("deployment.create") == 2
    assert "deployment.update" in actions and "deployment.delete" in actions


def test_canary_and_shadow_versions_must_resolve_when_saved(
    store: Store, registered: RegistryService
) -> None:
    svc = DeploymentService(store)
    with pytest.raises(InvalidInput, match=r"canary version 'churn@9' does not resolve"):
        svc.create(ME, "default", "churn-prod", "churn@champion",
                   config={"canary": {"version": "churn@9", "percent": 10}})  # fmt: skip
    assert svc.list(ME, "default") == []  # nothing was created
    svc.create(ME, "default", "churn-prod", "churn@champion",
               config={"canary": {"version": "churn@2", "percent": 10}})  # fmt: skip
    with pytest.raises(InvalidInput, match=r"shadow version 'nope@1' does not resolve"):
        svc.update(ME, "default", "churn-prod", config={"shadow": {"version": "nope@1"}})
    kept = svc.get(ME, "default", "churn-prod").config
    assert kept["canary"] == {"version": "churn@2", "percent": 10.0} and kept["shadow"] is None
    assert svc.update(ME, "default", "churn-prod",
                      config={"shadow": {"version": "churn@2"}}).config["shadow"] == {
        "version": "churn@2"}  # fmt: skip


def test_tokens_are_scoped_to_one_deployment(store: Store, registered: RegistryService) -> None:
    svc = DeploymentService(store)
    svc.create(ME, "default", "a", "churn@champion")
    svc.create(ME, "default", "b", "churn@1")
    tok = svc.create_token(ME, "default", "a", "checkout")
    assert tok.token is not None and tok.token.startswith("mwd_")
    assert svc.check_token(tok.token, "a")
    assert not svc.check_token(tok.token, "b")
    assert not svc.check_token("mwd_wrong", "a") and not svc.check_token(None, "a")
    [listed] = svc.list_tokens(ME, "default", "a")
    assert listed.token is None and listed.prefix == tok.token[:12]
    svc.revoke_token(ME, "default", "a", tok.id)
    assert not svc.check_token(tok.token, "a")
