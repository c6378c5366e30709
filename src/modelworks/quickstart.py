"""``modelworks quickstart``: train a small model and track it with the SDK, as a user would.

Everything runs locally on a dataset shipped with scikit-learn; nothing is downloaded.
The tracking code below is deliberately plain SDK usage, so that it doubles as an example.
"""

import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

EXPERIMENT = "quickstart"
DATASET = "breast-cancer"
EPOCHS = 30
SEED = 42
RUN_NAME = "sgd-logreg"
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
    artifacts: list[str]
    mode: str  # embedded (the local store) or remote (a server, from MODELWORKS_URL)
    location: str  # MODELWORKS_HOME, or the server's URL
    database_url: str | None = None
    artifact_url: str | None = None
    ui_url: str = UI_URL


def run_quickstart(*, show_progress: bool = True) -> QuickstartResult:
    """Ingest the breast-cancer data as a dataset, train an SGD logistic-regression classifier
    on the version read back from it, and track the run."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    import modelworks as mw
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
    features = frame.drop(columns=["target"]).to_numpy()
    target = frame["target"].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.2, stratify=target, random_state=SEED
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=0.25, stratify=y_train, random_state=SEED
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (scaler.transform(x) for x in (x_train, x_val, x_test))
    classes = np.unique(target)

    params: dict[str, Any] = {
        "dataset": version.ref,
        "model": "SGDClassifier",
        "loss": "log_loss",
        "alpha": 1e-3,
        "epochs": EPOCHS,
        "scaler": "StandardScaler",
        "train_rows": len(y_train),
        "val_rows": len(y_val),
        "test_rows": len(y_test),
        "seed": SEED,
    }
    model = SGDClassifier(loss="log_loss", alpha=params["alpha"], random_state=SEED)
    rng = np.random.default_rng(SEED)

    with mw.start_run(experiment=EXPERIMENT, name=RUN_NAME) as run:
        run.set_tags({"source": "modelworks quickstart", "task": "binary-classification"})
        run.log_params(params)

        with _progress(show_progress) as progress:
            task = progress.add_task("Training", total=EPOCHS)
            for epoch in range(1, EPOCHS + 1):
                order = rng.permutation(len(y_train))
                model.partial_fit(x_train[order], y_train[order], classes=classes)
                run.log_metrics(
                    {
                        "train_loss": log_loss(y_train, model.predict_proba(x_train)),
                        "val_loss": log_loss(y_val, model.predict_proba(x_val)),
                        "val_accuracy": accuracy_score(y_val, model.predict(x_val)),
                    },
                    step=epoch,
                )
                progress.update(task, advance=1)

        predicted = model.predict(x_test)
        scores = model.predict_proba(x_test)[:, 1]
        final = {
            "accuracy": float(accuracy_score(y_test, predicted)),
            "f1": float(f1_score(y_test, predicted)),
            "roc_auc": float(roc_auc_score(y_test, scores)),
            "precision": float(precision_score(y_test, predicted)),
            "recall": float(recall_score(y_test, predicted)),
        }
        for key, value in final.items():
            run.log_metric(key, value, step=EPOCHS)

        names = [str(n) for n in data.target_names]
        matrix = confusion_matrix(y_test, predicted, labels=classes)
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / "confusion_matrix.csv"
            lines = ["actual\\predicted," + ",".join(names)]
            lines += [
                f"{names[i]}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(matrix)
            ]
            csv_path.write_text("\n".join(lines) + "\n")
            run.log_artifact(str(csv_path))
        report = classification_report(y_test, predicted, target_names=names, output_dict=True)
        run.log_dict(json.loads(json.dumps(report, default=float)), "report.json")
        run_id = run.id
        workspace = run.workspace

    mode = workspace.mode if workspace is not None else "embedded"
    described = get_settings().describe()
    embedded = mode == "embedded"
    return QuickstartResult(
        run_id=run_id,
        run_name=RUN_NAME,
        dataset=version.ref,
        experiment=EXPERIMENT,
        project="default",
        params=params,
        metrics=final,
        artifacts=["confusion_matrix.csv", "report.json"],
        mode=mode,
        location=workspace.location if workspace is not None else described["home"],
        database_url=described["database_url"] if embedded else None,
        artifact_url=described["artifact_url"] if embedded else None,
        ui_url=UI_URL if embedded or workspace is None else workspace.location,
    )


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from modelworks.cli.output import err_console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not enabled,
    )


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
    for key, value in result.metrics.items():
        table.add_row(key, fmt(value))
    table.add_row("Artifacts", ", ".join(result.artifacts))
    if result.mode == "embedded":
        table.add_row("Store", escape(result.location))
        table.add_row("Database", escape(str(result.database_url)))
        table.add_row("Artifact store", escape(str(result.artifact_url)))
    else:
        table.add_row("Server", escape(result.location))
    console.print(Panel(table, title="Tracked a quickstart run", title_align="left", expand=False))
    if result.mode != "embedded":
        console.print(f"\nSee it in the web UI: {result.ui_url}", soft_wrap=True, highlight=False)
        return
    console.print(
        "\n[bold]Next[/bold]\n"
        f"  modelworks data show {result.dataset}\n"
        f"  modelworks runs show {result.run_id}\n"
        f"  modelworks runs metrics {result.run_id} --key val_accuracy\n"
        f"  modelworks runs list {result.experiment} --order-by 'metrics.accuracy DESC'\n"
        "\n[bold]Open the web UI[/bold]\n"
        "  modelworks server\n"
        f"  then browse to {result.ui_url}. On its first start the server creates the site "
        "admin 'admin' and prints a generated password once (set MODELWORKS_ADMIN_PASSWORD "
        "beforehand to choose it).",
        soft_wrap=True,
        highlight=False,
    )
