"""``modelworks quickstart`` trains a model, tracks it with the SDK and says what it did."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from modelworks.cli.main import app
from modelworks.core.auth import local_principal
from modelworks.core.store import Store
from modelworks.tracking.service import TrackingService

runner = CliRunner()

FINAL_METRICS = {"accuracy", "f1", "roc_auc", "precision", "recall"}


def test_quickstart_finds_a_model_with_automl_and_tracks_it(
    store: Store, _isolated_home: Path
) -> None:
    result = runner.invoke(app, ["quickstart", "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary["experiment"] == "quickstart"
    assert summary["mode"] == "embedded" and summary["location"] == str(_isolated_home)
    assert set(summary["metrics"]) == FINAL_METRICS
    assert summary["metrics"]["accuracy"] > 0.9 and summary["metrics"]["roc_auc"] > 0.95

    svc = TrackingService(store)
    me = local_principal()
    run = svc.get_run(me, summary["run_id"])
    assert run.status == "FINISHED" and run.experiment_name == "quickstart"
    assert run.tags["mw.automl.best_family"] == summary["best_family"]
    assert run.metrics["test_accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    assert run.metrics["test_roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])
    assert run.params["time_budget"] == "20.0" and run.params["dataset"] == "breast-cancer@1"
    # Every AutoML trial is a child run of the search.
    children = [
        r
        for r in svc.search_runs(me, "default", experiments=["quickstart"], max_results=1000).items
        if r.parent_run_id == run.id
    ]
    assert len(children) == summary["trials"] >= 2
    # The data went through the data layer: a versioned dataset, read back for training,
    # and the run shows in its lineage.
    from modelworks.data.service import DataService

    data = DataService(store)
    assert summary["dataset"] == "breast-cancer@1"
    version = data.get_version(me, "default", "breast-cancer@1")
    assert version.row_count == 569 and len(version.columns) == 31
    assert version.source["kind"] == "csv" and version.profile is not None
    lineage = data.lineage(me, "default", "breast-cancer@1", direction="down")
    assert ("run", run.id) in {(e.child.type, e.child.id) for e in lineage.edges}

    paths = {a.path for a in svc.list_artifacts(me, run.id)}
    assert {"confusion_matrix.csv", "report.json", "leaderboard.csv", "model/model.yaml"} <= paths
    rows = list(
        csv.reader(io.StringIO(svc.read_artifact(me, run.id, "confusion_matrix.csv").decode()))
    )
    assert rows[0] == ["actual\\predicted", "malignant", "benign"]
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 114  # the 20 % test split
    report = json.loads(svc.read_artifact(me, run.id, "report.json"))
    assert report["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])

    # The winner is registered, evaluated on the held-out dataset version (the same rows the
    # run scored, so the same accuracy) and holds the champion alias.
    from modelworks.registry.evaluations import EvaluationService

    evals = EvaluationService(store)
    champion = evals.registry.get_version(me, "default", "breast-cancer@champion")
    assert champion.run_id == run.id and summary["holdout"] == "breast-cancer-holdout@1"
    [evaluation] = evals.list_evaluations(me, "default", champion.ref)
    assert evaluation.id == summary["evaluation_id"]
    assert evaluation.result["n_rows"] == 114
    assert summary["evaluation"]["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    assert summary["evaluation"]["roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])

    # Deployed: the deployment follows the champion, answered over HTTP with the champion's
    # own predictions for the rows it was sent, and the token works for it alone.
    from modelworks.serving.service import DeploymentService

    deployments = DeploymentService(store)
    deployment = deployments.get(me, "default", "breast-cancer")
    assert deployment.ref == "breast-cancer@champion" and summary["deployment"] == "breast-cancer"
    assert summary["served_version"] == champion.ref
    _, package = evals.load(me, "default", champion.ref)
    example = pd.DataFrame([summary["example"]])
    assert summary["predictions"][0] == package.predict(example).tolist()[0]
    assert len(summary["predictions"]) == 3
    assert summary["endpoint"] == "http://127.0.0.1:8080/deployments/breast-cancer/predict"
    assert summary["token"].startswith("mwd_")
    assert deployments.check_token(summary["token"], "breast-cancer")
    assert not deployments.check_token(summary["token"], "another-deployment")


def test_quickstart_tells_what_to_do_next() -> None:
    result = runner.invoke(app, ["quickstart"])
    assert result.exit_code == 0, (result.output, result.exception)
    out = " ".join(result.stdout.split())
    assert "AutoML found a model" in out
    assert "modelworks server" in out and "http://127.0.0.1:8080" in out
    assert "MODELWORKS_ADMIN_PASSWORD" in out
    assert "curl -H 'Authorization: Bearer mwd_" in out
    assert "/deployments/breast-cancer/predict" in out
    assert "roc_auc" in out
    # Running it again adds a second run to the same experiment.
    again = runner.invoke(app, ["quickstart", "--json"])
    assert again.exit_code == 0, again.output
    listed = runner.invoke(
        app, ["runs", "search", "--experiment", "quickstart", "--max-results", "1000", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    searches = [r for r in json.loads(listed.stdout)["items"] if r["parent_run_id"] is None]
    assert len(searches) == 2
