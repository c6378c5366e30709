"""Training commands: ``modelworks train``, ``modelworks automl``, ``modelworks notebook``.

They go through the SDK (``mw.connect()``), so they work on the local store and, with
MODELWORKS_URL and MODELWORKS_TOKEN set, against a server.
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from modelworks.cli.output import (
    JSON_OPTION_HELP,
    console,
    done,
    emit,
    err_console,
    print_record,
    print_table,
    warn,
)

LEADERBOARD_ROWS = 15


def notebook(
    folder: Annotated[
        Path, typer.Argument(help="Folder for the notebooks; made if missing.")
    ] = Path("notebooks"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port for JupyterLab.")] = 8888,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = (
        False
    ),
) -> None:
    """Open JupyterLab in a project folder with the SDK already connected.

    Every kernel starts with `import modelworks as mw` and `ws = mw.connect()` run for
    you, on the same store (or server) as this command. A new folder gets a starter
    notebook. Needs the notebook extra: pip install 'modelworks\\[notebook]'.

    Example:
      modelworks notebook churn-notebooks --port 8899 --no-browser
    """
    from modelworks.training import notebook as nb

    launch = nb.prepare(folder, port=port, ip=host, open_browser=not no_browser)
    err_console.print(f"JupyterLab for {launch.folder}\nOpen: {launch.url}", soft_wrap=True)
    raise typer.Exit(nb.run(launch))


# ---- train and automl ------------------------------------------------------------------------
JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
DatasetArg = Annotated[str, typer.Argument(help="Dataset version: name@N, name@latest, name@tag.")]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="The column to predict.")]
TaskOpt = Annotated[
    str | None,
    typer.Option(help="binary, multiclass or regression (default: inferred from the target)."),
]
SeedOpt = Annotated[int, typer.Option(help="Random seed, for a reproducible result.")]
JobOpt = Annotated[
    bool,
    typer.Option(
        "--job",
        help="Queue it as a job instead of running here; follow with `modelworks jobs logs`.",
    ),
]


def _parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, true, lists)."""
    params: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE.", param_hint="--param")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def _queued(job: Any, as_json: bool) -> None:
    emit(
        job,
        as_json,
        lambda: done(
            f"Queued job {job.id} ({job.kind}). Follow it: modelworks jobs logs {job.id} --follow"
        ),
    )


def train(
    dataset: DatasetArg,
    target: TargetOpt,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="lightgbm, xgboost, hist_gradient_boosting, random_forest, extra_trees, "
            "linear or mlp.",
        ),
    ] = "lightgbm",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-P", help="Model parameter KEY=VALUE, repeatable."),
    ] = None,
    task: TaskOpt = None,
    experiment: Annotated[str, typer.Option(help="Experiment of the run.")] = "training",
    run_name: Annotated[str | None, typer.Option(help="Name of the run.")] = None,
    test_size: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Share of rows held out for scoring.")
    ] = 0.2,
    seed: SeedOpt = 0,
    job: JobOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train one model on a dataset version and track the run.

    Every column type works: the model gets the preprocessing its family needs (encoding,
    imputation, scaling, date parts, text features). The run records the params, the
    dataset version (visible in its lineage), held-out scores, feature importances and the
    model package.

    Example:
      modelworks train churn@latest --target churned
      modelworks train churn@3 -t churned -m xgboost -P max_depth=4 -P learning_rate=0.05
      modelworks train churn@latest -t churned --job
    """
    import modelworks as mw

    params = _parse_params(param)
    with mw.connect() as ws:
        if job:
            from modelworks.training.schemas import TrainSpec

            spec = TrainSpec(
                dataset=dataset, target=target, model=model, params=params, task=task,
                experiment=experiment, run_name=run_name, test_size=test_size, seed=seed,
            )  # fmt: skip
            _queued(ws.jobs.submit("train", spec.model_dump(exclude_none=True)), as_json)
            return
        result = ws.train(
            dataset, target, model, params, task=task, experiment=experiment,
            run_name=run_name, test_size=test_size, seed=seed, progress=not as_json,
        )  # fmt: skip
    out = {
        "run_id": result.run_id,
        "dataset": result.dataset,
        "model": result.model_name,
        "task": result.task,
        "metrics": result.metrics,
        "warnings": result.warnings,
        "seconds": round(result.elapsed_seconds, 2),
    }
    emit(out, as_json, lambda: _print_trained(out))


def _print_trained(out: dict[str, Any]) -> None:
    fields = {k: v for k, v in out.items() if k not in ("metrics", "warnings")}
    print_record("Trained", {**fields, **out["metrics"]})
    for note in out["warnings"]:
        warn(note)
    console.print(
        f"\nLoad it: mw.load_model(ws, {out['run_id']!r})   "
        f"Inspect: modelworks runs show {out['run_id']}",
        soft_wrap=True,
    )


def automl(
    dataset: DatasetArg,
    target: TargetOpt,
    time_budget: Annotated[
        float, typer.Option("--time-budget", "-b", min=1, help="Seconds for the whole search.")
    ] = 60.0,
    metric: Annotated[
        str | None,
        typer.Option(help="roc_auc, log_loss, accuracy, f1, rmse, mae, r2 ... (default per task)."),
    ] = None,
    task: TaskOpt = None,
    family: Annotated[
        list[str] | None,
        typer.Option("--family", help="Only these model families, repeatable (default: all)."),
    ] = None,
    experiment: Annotated[str, typer.Option(help="Experiment of the runs.")] = "automl",
    max_trials: Annotated[int | None, typer.Option(min=1, help="Stop after N trials.")] = None,
    seed: SeedOpt = 0,
    job: JobOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Find the best model for a dataset version within a time budget.

    Searches LightGBM, XGBoost, scikit-learn's gradient boosting, forests and linear
    models (and a small neural network when torch is installed) with Optuna, builds an
    ensemble when it helps, and saves the winner with its preprocessing. Every trial is a
    child run of one parent run. Set MODELWORKS_RAY_ADDRESS to run trials on a Ray cluster.

    Example:
      modelworks automl churn@latest --target churned --time-budget 120
      modelworks automl houses@2 -t price --metric mae --family lightgbm --family linear
      modelworks automl churn@latest -t churned -b 600 --job
    """
    import modelworks as mw

    with mw.connect() as ws:
        if job:
            _queued(
                ws.automl.submit(
                    dataset, target, time_budget, metric, seed, task=task, families=family,
                    experiment=experiment, max_trials=max_trials,
                ),
                as_json,
            )  # fmt: skip
            return
        found = ws.automl.fit(
            dataset, target, time_budget, metric, seed, task=task, families=family,
            experiment=experiment, max_trials=max_trials, progress=not as_json,
        )  # fmt: skip
    r = found.result
    out = {
        "run_id": found.run_id,
        "dataset": found.dataset,
        "experiment": experiment,
        "task": r.task,
        "metric": r.metric,
        "best_family": r.best.family,
        "best_score": r.best.score,
        "trials": len(r.leaderboard),
        "seconds": round(found.elapsed_seconds, 2),
        "leaderboard": [
            {"family": t.family, "score": t.score, "status": t.status, "seconds": t.fit_seconds}
            for t in r.leaderboard
        ],
        "warnings": r.warnings,
    }
    emit(out, as_json, lambda: _print_automl(out))


def _print_automl(out: dict[str, Any]) -> None:
    fields = {k: v for k, v in out.items() if k not in ("leaderboard", "warnings")}
    print_record("AutoML", fields)
    rows = [{"rank": i + 1, **t} for i, t in enumerate(out["leaderboard"][:LEADERBOARD_ROWS])]
    columns = [("rank", "#"), ("family", "Family"), ("score", out["metric"]), ("status", "Status")]
    print_table(rows, [*columns, ("seconds", "Seconds")], title="Leaderboard")
    for note in out["warnings"]:
        warn(note)
    console.print(
        f"\nLoad the winner: mw.load_model(ws, {out['run_id']!r})   "
        f"Trials: modelworks runs list {out['experiment']}",
        soft_wrap=True,
    )
