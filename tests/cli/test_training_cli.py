"""``modelworks train`` and ``modelworks automl``: the SDK's training from the shell."""

from __future__ import annotations

import json

import pytest
from sklearn.datasets import load_wine
from typer.testing import CliRunner, Result

import modelworks as mw
from modelworks.cli.main import app

runner = CliRunner()


def cli(*args: str, code: int = 0) -> Result:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
    return result


@pytest.fixture
def wine() -> str:
    with mw.connect() as ws:
        ws.datasets.ingest(load_wine(as_frame=True).frame, "wine")
    return "wine@1"


def test_train_with_params_prints_the_run_as_json(wine: str) -> None:
    out = json.loads(
        cli(
            "train", wine, "-t", "target", "-m", "random_forest",
            "-P", "n_estimators=30", "-P", "max_depth=4", "--seed", "3", "--json",
        ).stdout
    )  # fmt: skip
    assert out["task"] == "multiclass" and out["model"] == "random_forest"
    assert out["metrics"]["test_accuracy"] > 0.8
    with mw.connect() as ws:
        run = ws.runs.get(out["run_id"])
    assert run.params["model.n_estimators"] == "30" and run.params["seed"] == "3"


def test_train_bad_input_is_a_message_not_a_traceback(wine: str) -> None:
    result = cli("train", wine, "-t", "targte", code=2)
    assert "Did you mean 'target'" in result.output
    assert "Traceback" not in result.output
    result = cli("train", wine, "-t", "target", "-P", "oops", code=2)
    assert "is not KEY=VALUE" in result.output


def test_automl_prints_a_leaderboard(wine: str) -> None:
    result = cli("automl", wine, "-t", "target", "-b", "6", "--family", "linear",
                 "--family", "lightgbm")  # fmt: skip
    assert "Leaderboard" in result.output and "log_loss" in result.output
    out = json.loads(
        cli("automl", wine, "-t", "target", "-b", "5", "--family", "linear", "--json").stdout
    )
    # Only linear models were searched; an ensemble of them may win.
    assert {t["family"] for t in out["leaderboard"]} <= {"linear", "ensemble"}
    assert out["best_family"] in ("linear", "ensemble") and out["best_score"] < 0.5


def test_train_as_a_job_is_queued(wine: str) -> None:
    out = json.loads(cli("train", wine, "-t", "target", "-m", "linear", "--job", "--json").stdout)
    assert out["kind"] == "train" and out["status"] in ("queued", "running", "succeeded")
    with mw.connect() as ws:
        job = ws.jobs.wait(out["id"], timeout=120)
    assert job.status == "succeeded", job
    assert job.result is not None and job.result["model"] == "linear"
