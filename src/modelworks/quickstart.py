"""``modelworks quickstart``: AutoML on a small dataset, tracked with the SDK, as a user would.

Everything runs locally on a dataset shipped with scikit-learn; nothing is downloaded.
The code below is deliberately plain SDK usage, so that it doubles as an example.
"""

import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

EXPERIMENT = "quickstart"
DATASET = "breast-cancer"
HOLDOUT = "breast-cancer-holdout"
MODEL = "breast-cancer"
DEPLOYMENT = "breast-cancer"
TIME_BUDGET_S = 20.0
SEED = 42
RUN_NAME = "automl"
UI_URL = "http://127.0.0.1:8080"


class QuickstartResult(BaseModel):
    """What the quickstart did, and where to look at it."""

    run_id: str
    run_name: str
    dataset: str  # the dataset version trained on, e.g. breast-cancer@1
    experiment: str
    project: str
    params: dict[str, Any]
    metrics: dict[str, float]
    best_family: str
    trials: int
    model: str  # the registered version with the champion alias, e.g. breast-cancer@1
    holdout: str  # the dataset version it was evaluated on
    evaluation: dict[str, float]  # headline metrics of that evaluation
    evaluation_id: str
    artifacts: list[str]
    deployment: str  # the deployment that follows the champion alias
    served_version: str  # the version that answered, e.g. breast-cancer@1
    predictions: list[Any]  # its answers for the first held-out rows
    endpoint: str  # where `modelworks server` (or the server in use) answers for it
    token: str  # a bearer token for that deployment only (shown once)
    example: dict[str, Any]  # one row of input, for the curl example
    mode: str  # embedded (the local store) or remote (a server, from MODELWORKS_URL)
    location: str  # MODELWORKS_HOME, or the server's URL
    database_url: str | None = None
    artifact_url: str | None = None
    ui_url: str = UI_URL


def run_quickstart(*, show_progress: bool = True) -> QuickstartResult:
    """Ingest the breast-cancer data as a dataset, hold out a fifth of it, let AutoML find
    a model on the rest within the time budget, and score the winner on the held-out rows."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import classification_report, confusion_matrix
    from sklearn.model_selection import train_test_split

    from modelworks.client import default_workspace
    from modelworks.core.config import get_settings

    # The data goes through the data layer as a user's would: a CSV file, ingested into a
    # versioned dataset (Parquet, schema, profile, lineage), then read back from it.
    data = load_breast_cancer(as_frame=True)
    ws = default_workspace()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "breast_cancer.csv"
        data.frame.to_csv(csv_path, index=False)
        ws.datasets.ingest(str(csv_path), DATASET, message="modelworks quickstart")
    version = ws.datasets.get(f"{DATASET}@latest")
    frame = version.to_pandas()
    train, test = train_test_split(
        frame, test_size=0.2, stratify=frame["target"], random_state=SEED
    )
    train.attrs["modelworks.dataset"] = version.ref  # the rows come from this version
    holdout = ws.datasets.ingest(test, HOLDOUT, message="held-out fifth of the quickstart data")
    assert holdout is not None

    found = ws.automl.fit(
        train,
        target="target",
        time_budget=TIME_BUDGET_S,
        seed=SEED,
        experiment=EXPERIMENT,
        run_name=RUN_NAME,
        test_data=test,
        progress=show_progress,
    )
    final = {
        name: found.test_metrics[f"test_{key}"]
        for name, key in (
            ("accuracy", "accuracy"),
            ("f1", "f1_macro"),
            ("roc_auc", "roc_auc"),
            ("precision", "precision"),
            ("recall", "recall"),
        )
    }

    # A confusion matrix and a classification report next to the model, in the same run.
    names = [str(n) for n in data.target_names]
    predicted = found.predict(test)
    matrix = confusion_matrix(test["target"], predicted, labels=[0, 1])
    lines = ["actual\\predicted," + ",".join(names)]
    lines += [f"{names[i]}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(matrix)]
    report = classification_report(test["target"], predicted, target_names=names, output_dict=True)
    ws.tracking.log_artifact(
        found.run_id, "confusion_matrix.csv", ("\n".join(lines) + "\n").encode()
    )
    ws.tracking.log_artifact(
        found.run_id, "report.json", json.dumps(report, default=float, indent=2).encode()
    )

    # Into the registry: the winner becomes a model version, is evaluated on the held-out
    # dataset version (metrics with bootstrap intervals, plots), and gets the champion alias.
    registered = ws.models.register(MODEL, run=found.run_id, description="quickstart AutoML")
    evaluation = ws.evaluate(registered.ref, holdout.ref, target="target")
    ws.models.set_alias(MODEL, "champion", registered.version, reason="quickstart")
    # Deployed: a named deployment follows the champion alias (``modelworks server`` serves
    # it). A server is started here for a moment and sent three held-out rows over HTTP with
    # a token scoped to the deployment, as an application would call it.
    if _exists(ws, DEPLOYMENT):
        ws.deployments.update(DEPLOYMENT, model=f"{MODEL}@champion")
    else:
        ws.deployments.create(DEPLOYMENT, f"{MODEL}@champion", description="quickstart")
    token = ws.deployments.create_token(DEPLOYMENT, label="quickstart").token
    assert token is not None
    rows = json.loads(test.drop(columns=["target"]).head(3).to_json(orient="records"))
    answer = _predict_over_http(ws, token, rows)

    headline = ("accuracy", "f1", "roc_auc", "log_loss")
    evaluated = {k: float(evaluation.result["metrics"][k]) for k in headline
                 if k in evaluation.result["metrics"]}  # fmt: skip

    mode = ws.mode
    described = get_settings().describe()
    embedded = mode == "embedded"
    return QuickstartResult(
        run_id=found.run_id,
        run_name=RUN_NAME,
        dataset=version.ref,
        experiment=EXPERIMENT,
        project=ws.project,
        params={"time_budget": TIME_BUDGET_S, "seed": SEED, "test_rows": len(test)},
        metrics=final,
        best_family=found.best.family,
        trials=len(found.leaderboard),
        model=f"{MODEL}@champion (version {registered.version})",
        holdout=holdout.ref,
        evaluation=evaluated,
        evaluation_id=evaluation.id,
        artifacts=[
            "model/",
            "leaderboard.csv",
            "leaderboard.json",
            "confusion_matrix.csv",
            "report.json",
        ],
        deployment=DEPLOYMENT,
        served_version=str(answer["model_version"]),
        predictions=answer["predictions"],
        endpoint=f"{UI_URL if ws.mode == 'embedded' else ws.location}"
        f"/deployments/{DEPLOYMENT}/predict",
        token=token,
        example=rows[0],
        mode=mode,
        location=ws.location,
        database_url=described["database_url"] if embedded else None,
        artifact_url=described["artifact_url"] if embedded else None,
        ui_url=UI_URL if embedded else ws.location,
    )


def _exists(ws: Any, deployment: str) -> bool:
    from modelworks.core.errors import NotFound

    try:
        ws.deployments.get(deployment)
    except NotFound:
        return False
    return True


def _predict_over_http(ws: Any, token: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """POST ``rows`` to the deployment over HTTP: to a server started here on the local
    store for the call, or to the server in use (remote mode), once it serves the model."""
    if ws.mode != "embedded":
        return _post_when_ready(ws.location, token, rows)
    from modelworks.server.app import create_app
    from modelworks.server.background import running_app

    store = ws.deployments.backend.service.store  # the embedded workspace's own store
    with running_app(create_app(store, run_jobs=False)) as url:
        return _post_when_ready(url, token, rows)


def _post_when_ready(
    url: str, token: str, rows: list[dict[str, Any]], timeout: float = 120.0
) -> dict[str, Any]:
    import time

    import httpx

    from modelworks.core.errors import ServiceUnavailable

    headers = {"Authorization": f"Bearer {token}"}
    ready = f"{url}/v2/models/{DEPLOYMENT}/ready"
    deadline = time.monotonic() + timeout
    while httpx.get(ready, headers=headers, timeout=30).status_code != 200:
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"{url} did not load deployment {DEPLOYMENT!r} within {timeout:.0f} s; "
                f"see `modelworks deployments show {DEPLOYMENT}` for its error."
            )
        time.sleep(0.2)
    resp = httpx.post(
        f"{url}/deployments/{DEPLOYMENT}/predict",
        json={"records": rows},
        headers=headers,
        timeout=60,
    )
    resp.raise_for_status()
    answer: dict[str, Any] = resp.json()
    return answer


def print_summary(result: QuickstartResult) -> None:
    """Tell the user what happened and what to do next."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    from modelworks.cli.output import console, fmt

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("Dataset", escape(result.dataset))
    table.add_row("Run", f"{result.run_id} ({escape(result.run_name)})")
    table.add_row("Experiment", f"{escape(result.experiment)} in project {result.project}")
    table.add_row("Best model", f"{escape(result.best_family)} (of {result.trials} trials)")
    for key, value in result.metrics.items():
        table.add_row(key, fmt(value))
    table.add_row("Artifacts", ", ".join(result.artifacts))
    table.add_row("Registered", escape(result.model))
    table.add_row(
        f"Evaluated on {escape(result.holdout)}",
        ", ".join(f"{k} {fmt(v)}" for k, v in result.evaluation.items()),
    )
    table.add_row(
        "Deployed",
        f"{escape(result.deployment)} -> {escape(result.served_version)}; predicted "
        f"{escape(str(result.predictions))} for 3 held-out rows over HTTP",
    )
    if result.mode == "embedded":
        table.add_row("Store", escape(result.location))
        table.add_row("Database", escape(str(result.database_url)))
        table.add_row("Artifact store", escape(str(result.artifact_url)))
    else:
        table.add_row("Server", escape(result.location))
    console.print(Panel(table, title="AutoML found a model", title_align="left", expand=False))
    curl = (
        f"curl -H 'Authorization: Bearer {result.token}' -H 'Content-Type: application/json' "
        f"-d '{json.dumps({'records': [result.example]})}' {result.endpoint}"
    )
    if result.mode != "embedded":
        console.print(f"\nSee it in the web UI: {result.ui_url}", soft_wrap=True, highlight=False)
        console.print(
            f"\n[bold]Call the deployment[/bold] (the token is shown once)\n  {escape(curl)}",
            soft_wrap=True,
            highlight=False,
        )
        return
    console.print(
        "\n[bold]Next[/bold]\n"
        f"  modelworks data show {result.dataset}\n"
        f"  modelworks runs show {result.run_id}\n"
        f"  modelworks runs list {result.experiment} --order-by 'metrics.roc_auc DESC'"
        "   (every AutoML trial is a run)\n"
        f"  modelworks automl {result.dataset} --target target --time-budget 60\n"
        f"  modelworks models card {MODEL}@champion\n"
        f"  modelworks models explain {MODEL}@champion --dataset {result.holdout}\n"
        f'  python -c "import modelworks as mw; '
        f"print(mw.load_model(None, '{result.run_id}'))\"\n"
        "\n[bold]Open the web UI[/bold]\n"
        "  modelworks server\n"
        f"  then browse to {result.ui_url}. On its first start the server creates the site "
        "admin 'admin' and prints a generated password once (set MODELWORKS_ADMIN_PASSWORD "
        "beforehand to choose it).\n"
        f"\n[bold]Call the deployment[/bold] while `modelworks server` runs (the token is "
        f"shown once; `modelworks deployments token create {result.deployment}` makes another)\n"
        f"  {escape(curl)}",
        soft_wrap=True,
        highlight=False,
    )
