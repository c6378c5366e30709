"""ws.train and ws.automl on both transports (see conftest: ``ws`` is embedded or remote)."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris, make_classification

import modelworks as mw
from modelworks.core.errors import InvalidInput, NotFound


@pytest.fixture
def dataset(ws: mw.Workspace) -> str:
    """A small binary dataset with numeric, categorical and missing values, as name@1."""
    x, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame.loc[::7, "f1"] = np.nan
    frame["plan"] = np.where(x[:, 0] > 0, "pro", "free")
    frame["churned"] = y
    name = f"train-{uuid.uuid4().hex[:8]}"
    ws.datasets.ingest(frame, name)
    return f"{name}@1"


def test_train_tracks_params_metrics_input_and_a_loadable_model(
    ws: mw.Workspace, dataset: str, exp_name: str
) -> None:
    result = ws.train(
        dataset, target="churned", model="lightgbm", params={"num_leaves": 7},
        experiment=exp_name, seed=1,
    )  # fmt: skip
    run = ws.runs.get(result.run_id)
    assert run.status == "FINISHED"
    assert run.params["model"] == "lightgbm" and run.params["model.num_leaves"] == "7"
    assert run.params["dataset"] == dataset
    assert 0.5 < run.metrics["test_roc_auc"] <= 1.0
    assert run.metrics["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    assert [i.dataset for i in ws.runs.inputs(run)] == [dataset]
    paths = {a.path for a in ws.runs.list_artifacts(run)}
    assert {"model/model.yaml", "feature_importance.json"} <= paths
    frame = ws.datasets.get(dataset).to_pandas().drop(columns=["churned"])
    package = mw.load_model(ws, result.run_id)
    np.testing.assert_array_equal(package.predict(frame), result.model.predict(frame))
    np.testing.assert_allclose(package.predict_proba(frame), result.model.predict_proba(frame))


def test_train_accepts_an_estimator_object(ws: mw.Workspace, exp_name: str) -> None:
    from sklearn.linear_model import LogisticRegression

    iris = load_iris(as_frame=True).frame
    name = f"iris-{uuid.uuid4().hex[:8]}"
    ws.datasets.ingest(iris, name)
    result = ws.train(
        f"{name}@latest", "target", LogisticRegression(max_iter=500), experiment=exp_name
    )
    assert result.task == "multiclass" and result.metrics["test_accuracy"] > 0.8
    assert ws.runs.get(result.run_id).params["model"] == "LogisticRegression"


def test_bad_training_input_names_the_problem_and_leaves_no_run(
    ws: mw.Workspace, dataset: str, exp_name: str
) -> None:
    with pytest.raises(InvalidInput, match=r"'churn' is not in the frame.*'churned'"):
        ws.train(dataset, target="churn", experiment=exp_name)
    with pytest.raises(InvalidInput, match="Unknown model 'svm'"):
        ws.train(dataset, target="churned", model="svm", experiment=exp_name)
    with pytest.raises(InvalidInput, match=r"Bad params for random_forest.*no_such_param"):
        ws.train(dataset, "churned", "random_forest", {"no_such_param": 1}, experiment=exp_name)
    with pytest.raises(InvalidInput, match="time_budget"):
        ws.automl.fit(dataset, "churned", time_budget=0, experiment=exp_name)
    one_class = f"one-{uuid.uuid4().hex[:8]}"
    ws.datasets.ingest(pd.DataFrame({"x": range(40), "y": ["a"] * 40}), one_class)
    with pytest.raises(InvalidInput, match="single class"):
        ws.automl.fit(f"{one_class}@1", "y", time_budget=5, experiment=exp_name)
    runs = ws.runs.search(experiments=exp_name).items if _exists(ws, exp_name) else []
    assert runs == [], f"bad input left runs behind: {[r.name for r in runs]}"


def _exists(ws: mw.Workspace, experiment: str) -> bool:
    return any(e.name == experiment for e in ws.experiments.list_all())


def test_automl_fit_logs_trials_as_child_runs_and_the_winner(
    ws: mw.Workspace, dataset: str, exp_name: str
) -> None:
    budget = 8.0
    started = time.monotonic()
    found = ws.automl.fit(dataset, "churned", time_budget=budget, experiment=exp_name)
    elapsed = time.monotonic() - started
    assert elapsed <= budget * 1.1 + 1.0, f"AutoML took {elapsed:.1f} s for a {budget} s budget"
    parent = ws.runs.get(found.run_id)
    assert parent.status == "FINISHED"
    assert parent.tags["mw.automl.best_family"] == found.best.family
    assert parent.metrics["best_roc_auc"] == pytest.approx(found.best.score)
    children = [
        r for r in ws.runs.search_all(experiments=exp_name) if r.parent_run_id == found.run_id
    ]
    assert len(children) == len(found.leaderboard) >= 2
    assert {c.params["family"] for c in children} == {t.family for t in found.leaderboard}
    paths = {a.path for a in ws.runs.list_artifacts(parent)}
    assert {"leaderboard.csv", "leaderboard.json", "model/model.yaml"} <= paths
    assert [i.dataset for i in ws.runs.inputs(parent)] == [dataset]
    frame = ws.datasets.get(dataset).to_pandas().drop(columns=["churned"])
    package = mw.load_model(ws, found.run_id)
    np.testing.assert_allclose(package.predict_proba(frame), found.predict_proba(frame))
    assert found.best.score is not None and found.best.score > 0.8


def test_a_bad_training_job_spec_is_refused_at_submission(ws: mw.Workspace) -> None:
    with pytest.raises(InvalidInput, match="target: Field required"):
        ws.jobs.submit("automl", {"dataset": "churn@1"})
    with pytest.raises(InvalidInput, match="time_budget"):
        ws.jobs.submit("automl", {"dataset": "churn@1", "target": "y", "time_budget": -1})
    assert [j for j in ws.jobs.list() if j.kind == "automl"] == []


def test_automl_job_runs_the_search_and_reports_the_run(ws: mw.Workspace, dataset: str) -> None:
    job = ws.automl.submit(dataset, "churned", time_budget=5, families=["linear"])
    done = ws.jobs.wait(job, timeout=180)
    assert done.status == "succeeded", ws.jobs.logs(job)[0]
    assert done.result is not None
    run = ws.runs.get(done.result["run_id"])
    assert run.status == "FINISHED" and run.tags["mw.automl.best_family"] in ("linear", "ensemble")
    text, _ = ws.jobs.logs(job)
    assert "AutoML on" in text


def test_a_training_job_is_checked_against_its_dataset_at_submission(
    ws: mw.Workspace, dataset: str
) -> None:
    with pytest.raises(InvalidInput, match=r"'churn' is not a column .*Did you mean 'churned'"):
        ws.automl.submit(dataset, "churn", time_budget=5)
    with pytest.raises(InvalidInput, match="Unknown model 'svm'"):
        ws.jobs.submit("train", {"dataset": dataset, "target": "churned", "model": "svm"})
    with pytest.raises(NotFound):
        ws.jobs.submit("train", {"dataset": "no-such-dataset@1", "target": "y"})
    # The remote server is shared by the session: look only at jobs on these datasets.
    queued = [j for j in ws.jobs.list() if j.spec.get("dataset") in (dataset, "no-such-dataset@1")]
    assert queued == []
