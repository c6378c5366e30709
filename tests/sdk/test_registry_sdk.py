"""ws.models and ws.evaluate on both transports: register, alias, load, evaluate, compare,
explain, card, lineage, export and re-import."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.tree import DecisionTreeClassifier

import modelworks as mw
from modelworks.core.errors import InvalidInput

PNG = b"\x89PNG\r\n\x1a\n"


def _frame() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :5]
    X.columns = [c.replace(" ", "_") for c in X.columns]
    group = np.where(X.iloc[:, 0] > X.iloc[:, 0].median(), "big", "small")
    return X, y, X.assign(target=y, group=group)


def _log(ws: mw.Workspace, model: object, X: pd.DataFrame, dataset: str) -> str:
    with ws.start_run(experiment="registry-sdk") as run:
        run.log_params({"target": "target"})
        run.log_input(dataset)
        mw.log_model(run, model, input_example=X.head())
    return run.id


def test_registry_round_trip(ws: mw.Workspace, tmp_path: Path) -> None:
    X, y, frame = _frame()
    suffix = uuid.uuid4().hex[:8]
    ds, name = f"cancer-{suffix}", f"cancer-{suffix}"
    ws.datasets.ingest(frame, ds)
    strong = LogisticRegression(max_iter=5000).fit(X, y)
    # A clearly worse challenger: the same inputs, trained on shuffled labels.
    shuffled = y.sample(frac=1.0, random_state=0).to_numpy()
    weak = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, shuffled)
    v1 = ws.models.register(name, run=_log(ws, strong, X, f"{ds}@1"), description="LR")
    v2 = ws.models.register(name, run=_log(ws, weak, X, f"{ds}@1"))
    assert (v1.version, v2.version) == (1, 2)
    ws.models.set_alias(name, "champion", 1)
    ws.models.set_alias(name, "challenger", v2.ref)
    assert ws.models.get(name).aliases == {"challenger": 2, "champion": 1}

    pkg = ws.models.load(f"{name}@champion")
    np.testing.assert_allclose(pkg.predict_proba(X), strong.predict_proba(X))

    ev = ws.evaluate(f"{name}@champion", f"{ds}@1", slice_by=["group"], bootstrap=200)
    proba = strong.predict_proba(X)[:, 1]
    metrics = ev.result["metrics"]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, strong.predict(X)))
    assert metrics["f1"] == pytest.approx(f1_score(y, strong.predict(X)))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, proba))
    low, high = ev.result["intervals"]["roc_auc"]
    assert low <= metrics["roc_auc"] <= high
    assert {s["value"] for s in ev.result["slices"]} == {"big", "small"}
    assert ev.target == "target" and ev.dataset == f"{ds}@1"
    assert ws.models.plot(ev, "roc.png").startswith(PNG)
    assert [e.id for e in ws.models.evaluations(f"{name}@1")] == [ev.id]

    cmp = ws.models.compare(name, f"{ds}@1", ignore=["group"], n_resamples=300)
    assert (cmp.champion, cmp.challenger) == (f"{name}@1", f"{name}@2")
    assert cmp.verdict == "champion_better" and cmp.p_value is not None and cmp.p_value < 0.05
    assert {t["name"] for t in cmp.result["tests"]} >= {"mcnemar", "delong"}
    assert ws.models.plot(cmp, "comparison.png").startswith(PNG)

    imp = ws.models.explain(f"{name}@1", f"{ds}@1", ignore=["group"], max_rows=200)
    assert {f["name"] for f in imp["features"]} == set(X.columns)
    assert ws.models.importance(f"{name}@1")["features"] == imp["features"]
    rows = ws.models.explain_rows(f"{name}@1", X.head(2))
    assert len(rows) == 2
    for e in rows:
        total = e["base_value"] + sum(c["shap_value"] for c in e["contributions"])
        assert total == pytest.approx(e["prediction"], abs=1e-6)

    card = ws.models.card(f"{name}@champion").markdown
    assert f"Latest evaluation on {ds}@1" in card and f"- {ds}@1" in card
    graph = ws.models.lineage(f"{name}@1")
    assert graph.datasets == [f"{ds}@1"]
    assert {e.relation for e in graph.edges} >= {"trained_on", "registered_as", "evaluated_on"}

    archive = ws.models.export(f"{name}@1", tmp_path / "m.tar.gz", format="tar")
    v3 = ws.models.register(name, package=archive)
    assert v3.version == 3
    np.testing.assert_allclose(ws.models.load(v3.ref).predict_proba(X), strong.predict_proba(X))


def test_evaluation_on_mismatched_columns_names_them(ws: mw.Workspace) -> None:
    X, y, frame = _frame()
    suffix = uuid.uuid4().hex[:8]
    ds, name = f"cancer-{suffix}", f"cancer-{suffix}"
    ws.datasets.ingest(frame, ds)
    model = LogisticRegression(max_iter=5000).fit(X, y)
    ws.models.register(name, run=_log(ws, model, X, f"{ds}@1"))
    bad = frame.drop(columns=[X.columns[0]]).assign(customer_id=range(len(frame)))
    ws.datasets.ingest(bad, f"{ds}-bad")
    with pytest.raises(InvalidInput, match=r"missing columns: 'mean_radius'") as info:
        ws.evaluate(f"{name}@1", f"{ds}-bad@1", target="target")
    assert "unexpected columns: 'group', 'customer_id'" in info.value.detail
    with pytest.raises(InvalidInput, match=r"'nope' is not a column"):
        ws.evaluate(f"{name}@1", f"{ds}@1", target="nope")
    assert ws.models.evaluations(f"{name}@1") == []  # nothing stored for failed attempts
