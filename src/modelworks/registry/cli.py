"""``modelworks models ...``: the registry, evaluations, comparisons and explanations.

The commands go through the SDK (``mw.connect()``), so they work on the local store and,
with ``MODELWORKS_URL`` and ``MODELWORKS_TOKEN`` set, against a server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

import modelworks as mw
from modelworks.cli.output import (
    JSON_OPTION_HELP,
    done,
    emit,
    print_json,
    print_record,
    print_table,
    warn,
)
from modelworks.core.errors import InvalidInput

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name or id.")]
RefArg = Annotated[
    str, typer.Argument(help="A model version: NAME@VERSION, NAME@ALIAS, NAME@latest or NAME.")
]
NameArg = Annotated[str, typer.Argument(help="The registered model's name.")]

models_app = typer.Typer(
    name="models",
    help="The model registry: versions, aliases, stages, cards, lineage, export, evaluation.",
    no_args_is_help=True,
)
alias_app = typer.Typer(name="alias", help="Move and delete aliases (churn@champion).",
                        no_args_is_help=True)  # fmt: skip
models_app.add_typer(alias_app)

_VERSION_COLUMNS = [
    ("version", "Version"),
    ("aliases", "Aliases"),
    ("stage", "Stage"),
    ("flavor", "Flavor"),
    ("task", "Task"),
    ("run_id", "Run"),
    ("created_by", "Created by"),
    ("created_at", "Created"),
    ("description", "Description"),
]


def _version_fields(v: Any) -> dict[str, Any]:
    return {
        "ref": v.ref,
        "aliases": ", ".join(v.aliases) or "-",
        "stage": v.stage,
        "flavor": v.flavor,
        "task": v.task,
        "run": v.run_id,
        "source": v.source,
        "classes": v.classes,
        "inputs": ", ".join(c["name"] for c in (v.signature or {}).get("inputs", [])) or "-",
        **{f"metrics.{k}": val for k, val in v.metrics.items()},
        "description": v.description,
        "created": v.created_at,
        "created by": v.created_by,
    }


@models_app.command("list")
def models_list(
    include_deleted: Annotated[bool, typer.Option(help="Show deleted models too.")] = False,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """List registered models with their latest version and aliases.

    Example:
      modelworks models list
    """
    with mw.connect(project=project) as ws:
        page = ws.models.list(include_deleted=include_deleted)
    rows = [
        {**m.model_dump(), "aliases": ", ".join(f"{a}={v}" for a, v in m.aliases.items())}
        for m in page.items
    ]
    emit(
        page.items,
        as_json,
        lambda: print_table(
            rows,
            [
                ("name", "Name"),
                ("latest_version", "Latest"),
                ("aliases", "Aliases"),
                ("description", "Description"),
                ("updated_at", "Updated"),
            ],
            empty="No models yet: register one with `modelworks models register NAME --run RUN`.",
        ),
    )


@models_app.command("register")
def models_register(
    name: NameArg,
    run: Annotated[
        str | None, typer.Option(help="A run id: its logged package becomes the version.")
    ] = None,
    package: Annotated[
        Path | None,
        typer.Option(exists=True, help="A package folder or .tar.gz made by `models export`."),
    ] = None,
    path: Annotated[str, typer.Option(help="The package's folder among the run's artifacts.")] = (
        "model"
    ),
    description: Annotated[str, typer.Option(help="What this version is.")] = "",
    alias: Annotated[
        list[str] | None, typer.Option(help="Point this alias at the new version (repeatable).")
    ] = None,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Register a new version of a model (the model is created on first use).

    Example:
      modelworks models register churn --run 01J9ZK... --alias challenger
      modelworks models register churn --package churn-3.tar.gz
    """
    with mw.connect(project=project) as ws:
        v = ws.models.register(
            name, run=run, package=package, artifact_path=path, description=description
        )
        for a in alias or []:
            moved = ws.models.set_alias(name, a, v.version)
            if moved.status == "pending_approval":
                warn(f"{name}@{a} is protected: request {moved.request_id} awaits a maintainer.")
        if alias:
            v = ws.models.version(v.ref)
    emit(v, as_json, lambda: print_record(f"Registered {v.ref}", _version_fields(v)))


@models_app.command("show")
def models_show(ref: RefArg, project: ProjectOpt = "default", as_json: JsonOpt = False) -> None:
    """Show one version: flavor, task, signature, metrics, aliases, stage.

    Example:
      modelworks models show churn@champion
    """
    with mw.connect(project=project) as ws:
        v = ws.models.version(ref)
    emit(v, as_json, lambda: print_record(v.ref, _version_fields(v)))


@models_app.command("versions")
def models_versions(name: NameArg, project: ProjectOpt = "default", as_json: JsonOpt = False
                    ) -> None:  # fmt: skip
    """List the versions of a model, newest first.

    Example:
      modelworks models versions churn
    """
    with mw.connect(project=project) as ws:
        versions = ws.models.versions(name)
    rows = [{**v.model_dump(), "aliases": ", ".join(v.aliases)} for v in versions]
    emit(versions, as_json, lambda: print_table(rows, _VERSION_COLUMNS, title=name))


@models_app.command("stage")
def models_stage(
    ref: RefArg,
    stage: Annotated[str, typer.Argument(help="none, staging, production or archived.")],
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Move a version to a lifecycle stage (production needs a maintainer).

    Example:
      modelworks models stage churn@3 staging
    """
    with mw.connect(project=project) as ws:
        v = ws.models.set_stage(ref, stage)
    emit(v, as_json, lambda: done(f"{v.ref} is now in {v.stage}."))


@models_app.command("describe")
def models_describe(
    ref: RefArg,
    description: Annotated[str | None, typer.Option(help="The version's description.")] = None,
    card: Annotated[
        list[str] | None,
        typer.Option(help="A model card field as FIELD=TEXT (intended_use, limitations, ...)."),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag as KEY=VALUE (replaces all).")] = (
        None
    ),
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Set a version's description, tags or model card fields.

    Example:
      modelworks models describe churn@3 --card "intended_use=Rank accounts for outreach."
    """
    fields = _pairs(card, "--card")
    tags = _pairs(tag, "--tag") if tag else None
    with mw.connect(project=project) as ws:
        v = ws.models.update_version(ref, description=description, tags=tags, card=fields or None)
    emit(v, as_json, lambda: done(f"Updated {v.ref}."))


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{option} takes KEY=VALUE; got {item!r}.")
        out[key.strip()] = value
    return out


@models_app.command("card")
def models_card(ref: RefArg, project: ProjectOpt = "default", as_json: JsonOpt = False) -> None:
    """Print the model card (Markdown) made from what the registry knows.

    Example:
      modelworks models card churn@champion > MODEL_CARD.md
    """
    with mw.connect(project=project) as ws:
        card = ws.models.card(ref)
    emit(card, as_json, lambda: typer.echo(card.markdown, nl=False))


@models_app.command("lineage")
def models_lineage(ref: RefArg, project: ProjectOpt = "default", as_json: JsonOpt = False
                   ) -> None:  # fmt: skip
    """What a version was made from, and what was made from it.

    Example:
      modelworks models lineage churn@champion
    """
    with mw.connect(project=project) as ws:
        graph = ws.models.lineage(ref)
    rows = [
        {"parent": f"{e.parent.type} {e.parent.label}", "relation": e.relation,
         "child": f"{e.child.type} {e.child.label}"}
        for e in graph.edges
    ]  # fmt: skip
    emit(
        graph,
        as_json,
        lambda: print_table(
            rows,
            [("parent", "From"), ("relation", "Relation"), ("child", "To")],
            title=graph.ref,
            empty="No lineage recorded.",
        ),
    )


@models_app.command("delete")
def models_delete(
    ref: Annotated[str, typer.Argument(help="NAME (the whole model) or NAME@VERSION.")],
    project: ProjectOpt = "default",
) -> None:
    """Soft-delete a model or one version (restore a model with `models restore`).

    Example:
      modelworks models delete churn@2
    """
    with mw.connect(project=project) as ws:
        if "@" in ref:
            v = ws.models.delete_version(ref)
            done(f"Deleted {v.ref}.")
        else:
            ws.models.delete(ref)
            done(f"Deleted model {ref}; `modelworks models restore {ref}` brings it back.")


@models_app.command("restore")
def models_restore(name: NameArg, project: ProjectOpt = "default") -> None:
    """Restore a deleted model.

    Example:
      modelworks models restore churn
    """
    with mw.connect(project=project) as ws:
        ws.models.restore(name)
    done(f"Restored model {name}.")


# ---- aliases and approvals ------------------------------------------------------------------
@alias_app.command("set")
def alias_set(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="The alias, e.g. champion.")],
    version: Annotated[str, typer.Argument(help="A version number or a ref (churn@challenger).")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Point NAME@ALIAS at a version.

    On a protected alias, an editor's move waits for a maintainer's approval
    (`models requests`, `models approve`).

    Example:
      modelworks models alias set churn champion 3 --reason "AUC +0.02, p=0.01"
    """
    target: int | str = int(version) if version.isdigit() else version
    with mw.connect(project=project) as ws:
        out = ws.models.set_alias(name, alias, target, reason=reason)

    def render() -> None:
        if out.status == "pending_approval":
            warn(f"{name}@{alias} is protected: request {out.request_id} awaits a maintainer "
                 f"(`modelworks models approve {out.request_id}`).")  # fmt: skip
        elif out.status == "unchanged":
            done(f"{name}@{alias} already points at version {out.version}.")
        else:
            was = f" (was {out.previous_version})" if out.previous_version else ""
            done(f"{name}@{alias} -> version {out.version}{was}.")

    emit(out, as_json, render)


@alias_app.command("delete")
def alias_delete(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="The alias to remove.")],
    project: ProjectOpt = "default",
) -> None:
    """Remove an alias.

    Example:
      modelworks models alias delete churn challenger
    """
    with mw.connect(project=project) as ws:
        ws.models.delete_alias(name, alias)
    done(f"Deleted {name}@{alias}.")


@models_app.command("policy")
def models_policy(
    protect: Annotated[
        str | None,
        typer.Option(help="Comma-separated aliases whose moves need approval ('' for none)."),
    ] = None,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Show or set which aliases need a maintainer's approval to move (admins set it).

    Example:
      modelworks models policy --protect champion,production
    """
    with mw.connect(project=project) as ws:
        if protect is None:
            policy = ws.models.policy()
        else:
            aliases = [a.strip() for a in protect.split(",") if a.strip()]
            policy = ws.models.set_policy(aliases)
    emit(policy, as_json, lambda: print_record(
        f"Model policy of {policy.project}",
        {"protected aliases": ", ".join(policy.protected_aliases) or "(none)"},
    ))  # fmt: skip


@models_app.command("requests")
def models_requests(
    status: Annotated[str, typer.Option(help="pending, approved, rejected, or all.")] = "pending",
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Alias moves waiting for (or given) a maintainer's decision.

    Example:
      modelworks models requests
    """
    with mw.connect(project=project) as ws:
        reqs = ws.models.requests(None if status == "all" else status)
    emit(reqs, as_json, lambda: print_table(
        [r.model_dump() for r in reqs],
        [("id", "Id"), ("model", "Model"), ("alias", "Alias"), ("version", "Version"),
         ("status", "Status"), ("requested_by", "By"), ("reason", "Reason"),
         ("decided_by", "Decided by")],
        empty=f"No {status} alias requests.",
    ))  # fmt: skip


@models_app.command("approve")
def models_approve(
    request_id: Annotated[str, typer.Argument(help="The request id (see `models requests`).")],
    note: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    project: ProjectOpt = "default",
) -> None:
    """Approve an alias move (maintainers; not your own request). The alias moves now.

    Example:
      modelworks models approve 01JA0... --note "checked the comparison report"
    """
    with mw.connect(project=project) as ws:
        req = ws.models.approve(request_id, note)
    done(f"Approved: {req.model}@{req.alias} -> version {req.version}.")


@models_app.command("reject")
def models_reject(
    request_id: Annotated[str, typer.Argument(help="The request id (see `models requests`).")],
    note: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    project: ProjectOpt = "default",
) -> None:
    """Reject an alias move request.

    Example:
      modelworks models reject 01JA0... --note "worse on the EU slice"
    """
    with mw.connect(project=project) as ws:
        req = ws.models.reject(request_id, note)
    done(f"Rejected the move of {req.model}@{req.alias} to version {req.version}.")


# ---- bytes ------------------------------------------------------------------------------------
@models_app.command("export")
def models_export(
    ref: RefArg,
    dest: Annotated[Path, typer.Argument(help="Where to write: a folder, or a .tar.gz file.")],
    format: Annotated[
        str, typer.Option(help="folder, tar, or onnx (a folder with model.onnx).")
    ] = "folder",
    project: ProjectOpt = "default",
) -> None:
    """Export a version's package: a folder, a tarball, or with an ONNX model added.

    The ONNX export converts scikit-learn, LightGBM and XGBoost models, checks the
    converted model predicts like the original, and says why when it cannot.

    Example:
      modelworks models export churn@champion churn.tar.gz --format tar
      modelworks models export churn@champion ./churn-onnx --format onnx
    """
    if format not in ("folder", "tar", "onnx"):
        raise InvalidInput(f"Unknown --format {format!r}; use folder, tar or onnx.")
    with mw.connect(project=project) as ws:
        ws.models.export(ref, dest, format=format)  # type: ignore[arg-type]
    done(f"Exported {ref} to {dest}.")


@models_app.command("package")
def models_package(
    ref: RefArg,
    dest: Annotated[Path, typer.Argument(help="A new folder for the deployable bundle.")],
    port: Annotated[int, typer.Option(help="The port the model server listens on.")] = 8080,
    project: ProjectOpt = "default",
) -> None:
    """Write a deployable folder: package, pinned requirements and a Dockerfile.

    The Dockerfile runs the model server on the package.

    Example:
      modelworks models package churn@champion ./churn-image && docker build -t churn ./churn-image
    """
    with mw.connect(project=project) as ws:
        out = ws.models.package(ref, dest, port=port)
    done(f"Wrote {out}: `docker build -t {ref.split('@')[0]} {out}`.")


@models_app.command("download")
def models_download(
    ref: RefArg,
    dest: Annotated[Path, typer.Argument(help="A new folder for the package.")],
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Download a version's package (verified against its checksums).

    Example:
      modelworks models download churn@3 ./churn-3
    """
    with mw.connect(project=project) as ws:
        out = ws.models.download(ref, dest)
    if as_json:
        print_json({"path": str(out)})
    else:
        done(f"Downloaded {ref} to {out}.")


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}.") from None


# ---- evaluation, comparison, explanation -------------------------------------------------------
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="A dataset version: NAME@N.")]
TargetOpt = Annotated[
    str | None, typer.Option(help="The column with true values (default: the trained target).")
]
IgnoreOpt = Annotated[
    list[str] | None, typer.Option(help="A dataset column that is not a model input (repeatable).")
]


def _save_plots(ws: Any, result: Any, folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in result.plots:
        path = folder / name
        path.write_bytes(ws.models.plot(result, name))
        written.append(path)
    return written


@models_app.command("evaluate")
def models_evaluate(
    ref: RefArg,
    dataset: DatasetOpt,
    target: TargetOpt = None,
    threshold: Annotated[float, typer.Option(min=0, max=1, help="Decision threshold.")] = 0.5,
    slice_by: Annotated[
        list[str] | None, typer.Option("--slice-by", help="Metrics per value of this column.")
    ] = None,
    ignore: IgnoreOpt = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for CIs.")] = 1000,
    plots: Annotated[Path | None, typer.Option(help="Also write the plots (PNG) here.")] = None,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a model version on a dataset version and store the result.

    Classification: accuracy, precision/recall/F1 (per class, micro, macro, weighted), ROC
    and PR AUC, log loss, Brier, the confusion matrix and a threshold sweep; regression:
    RMSE, MAE, MAPE, R2 and residuals. Bootstrap intervals for the headline metrics.

    Example:
      modelworks models evaluate churn@champion --dataset churn@7 --slice-by country
    """
    with mw.connect(project=project) as ws:
        ev = ws.models.evaluate(
            ref, dataset, target=target, threshold=threshold, slice_by=slice_by or [],
            ignore=ignore or [], bootstrap=bootstrap,
        )  # fmt: skip
        written = _save_plots(ws, ev, plots)

    def render() -> None:
        metrics = ev.result.get("metrics", {})
        intervals = ev.result.get("intervals", {})
        rows = [
            {"metric": k, "value": v,
             "interval": "{:.4g} - {:.4g}".format(*intervals[k]) if k in intervals else ""}
            for k, v in metrics.items()
        ]  # fmt: skip
        print_table(
            rows, [("metric", "Metric"), ("value", "Value"), ("interval", "95% interval")],
            title=f"{ev.ref} on {ev.dataset} ({ev.result.get('n_rows')} rows)",
        )  # fmt: skip
        worst = ev.result.get("worst_slices") or []
        if worst:
            print_table(
                [{**w, "metrics": w.get("metrics")} for w in worst],
                [("column", "Column"), ("value", "Value"), ("n", "Rows"), ("metrics", "Metrics")],
                title="Weakest slices",
            )
        for path in written:
            done(f"Wrote {path}")
        done(f"Stored evaluation {ev.id}.")

    emit(ev, as_json, render)


@models_app.command("compare")
def models_compare(
    name: NameArg,
    dataset: DatasetOpt,
    champion: Annotated[str, typer.Option(help="Alias, version or ref.")] = "champion",
    challenger: Annotated[str, typer.Option(help="Alias, version or ref.")] = "challenger",
    target: TargetOpt = None,
    ignore: IgnoreOpt = None,
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5, help="Significance level.")] = 0.05,
    plots: Annotated[Path | None, typer.Option(help="Also write the plot (PNG) here.")] = None,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Champion vs challenger on the same rows, with paired tests and a verdict.

    McNemar's test on accuracy, DeLong's on ROC AUC (binary), a paired bootstrap on the
    headline metric.

    Example:
      modelworks models compare churn --dataset churn@7
      modelworks models compare churn --dataset churn@7 --champion 3 --challenger 5
    """
    with mw.connect(project=project) as ws:
        cmp = ws.models.compare(
            name, dataset, champion=champion, challenger=challenger, target=target,
            ignore=ignore or [], alpha=alpha,
        )  # fmt: skip
        written = _save_plots(ws, cmp, plots)

    def render() -> None:
        print_table(
            cmp.result.get("tests", []),
            [("name", "Test"), ("metric", "Metric"), ("champion", "Champion"),
             ("challenger", "Challenger"), ("diff", "Diff"), ("p_value", "p-value")],
            title=f"{cmp.champion} vs {cmp.challenger} on {cmp.dataset}",
        )  # fmt: skip
        typer.echo(cmp.result.get("summary", cmp.verdict))
        for path in written:
            done(f"Wrote {path}")

    emit(cmp, as_json, render)


@models_app.command("explain")
def models_explain(
    ref: RefArg,
    dataset: DatasetOpt,
    target: TargetOpt = None,
    ignore: IgnoreOpt = None,
    max_rows: Annotated[int, typer.Option(min=10, help="Rows sampled from the dataset.")] = 2000,
    row: Annotated[
        str | None, typer.Option(help="Explain one prediction instead: the row as JSON.")
    ] = None,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Global feature importance (permutation and SHAP), stored with the version.

    With --row, the SHAP values of that one prediction instead (the dataset gives the
    baseline rows).

    Example:
      modelworks models explain churn@champion --dataset churn@7
      modelworks models explain churn@champion -d churn@7 --row '{"tenure": 3, "plan": "basic"}'
    """
    with mw.connect(project=project) as ws:
        if row is not None:
            record = _json_arg(row, "--row")
            if not isinstance(record, dict):
                raise InvalidInput("--row takes one JSON object, e.g. '{\"tenure\": 3}'.")
            [out] = ws.models.explain_rows(ref, [record], background=dataset)
            emit(out, as_json, lambda: print_table(
                out["contributions"],
                [("feature", "Feature"), ("value", "Value"), ("shap_value", "SHAP value")],
                title=f"{ref}: {out['output']} {out['prediction']:.4g} "
                f"(base {out['base_value']:.4g})",
            ))  # fmt: skip
            return
        imp = ws.models.explain(ref, dataset, target=target, ignore=ignore or [], max_rows=max_rows)
    emit(imp, as_json, lambda: print_table(
        imp["features"],
        [("name", "Feature"), ("permutation_mean", "Permutation"),
         ("permutation_std", "± std"), ("shap_mean_abs", "Mean |SHAP|")],
        title=f"Importance of {ref} on {imp.get('dataset')}",
    ))  # fmt: skip
