"""The model card: a Markdown page made from what the registry knows about a version.

Training data (lineage), metrics (the package's and the latest stored evaluation's),
parameters, the signature, and the fields people fill in (intended use, limitations...;
see ``CARD_FIELDS``), which show as "(to fill in)" until someone does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from modelworks.core.auth import Principal, Role
from modelworks.governance.access import require_project
from modelworks.registry.models import ModelEvaluation
from modelworks.registry.schemas import CARD_FIELDS, ModelCard, VersionOut
from modelworks.registry.service import RegistryService

TITLES = {
    "intended_use": "Intended use",
    "out_of_scope": "Out-of-scope uses",
    "limitations": "Limitations",
    "ethical_considerations": "Ethical considerations",
    "caveats": "Caveats and recommendations",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _latest_evaluation(svc: RegistryService, principal: Principal, project: str, version_id: str
                       ) -> ModelEvaluation | None:  # fmt: skip
    with svc.store.read() as s:
        require_project(s, principal, project, Role.VIEWER, "Reading models")
        row = s.scalar(
            select(ModelEvaluation)
            .where(ModelEvaluation.version_id == version_id)
            .order_by(ModelEvaluation.created_at.desc(), ModelEvaluation.id.desc())
            .limit(1)
        )
        if row is not None:
            s.expunge(row)
        return row


def model_card(svc: RegistryService, principal: Principal, project: str, ref: str) -> ModelCard:
    v = svc.get_version(principal, project, ref)
    graph = svc.lineage(principal, project, v.ref, depth=3)
    evaluation = _latest_evaluation(svc, principal, project, v.id)
    return ModelCard(ref=v.ref, markdown=render(v, graph.datasets, evaluation), fields=v.card)


def render(v: VersionOut, datasets: list[str], evaluation: ModelEvaluation | None) -> str:
    lines = [f"# Model card: {v.ref}", ""]
    if v.description:
        lines += [v.description, ""]
    lines += [
        "## Model details",
        "",
        f"- **Model**: {v.model}, version {v.version}"
        + (f" (aliases: {', '.join(v.aliases)})" if v.aliases else ""),
        f"- **Stage**: {v.stage}",
        f"- **Task**: {v.task}",
        f"- **Flavor**: {v.flavor}",
        f"- **Frameworks**: {', '.join(f'{k} {val}' for k, val in v.frameworks.items()) or '-'}",
        f"- **Registered**: {v.created_at:%Y-%m-%d %H:%M} UTC by {v.created_by}",
        f"- **Source**: {'run ' + v.run_id if v.run_id else v.source.get('kind', 'package')}",
    ]
    if v.classes:
        lines.append(f"- **Classes**: {', '.join(map(str, v.classes))}")
    lines += ["", "## Training data", ""]
    lines += [f"- {d}" for d in datasets] or ["(no dataset version recorded for this model)"]
    sig = v.signature or {}
    inputs = sig.get("inputs") or []
    lines += ["", "## Inputs", ""]
    if inputs:
        lines += ["| column | type |", "|---|---|"]
        lines += [f"| {_fmt(c.get('name'))} | {_fmt(c.get('type'))} |" for c in inputs]
    else:
        lines.append("(no signature: inputs are not checked)")
    lines += ["", "## Metrics", ""]
    if v.metrics:
        lines += ["Recorded at training time:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(val)} |" for k, val in sorted(v.metrics.items())]
    if evaluation is not None:
        metrics = evaluation.result.get("metrics", {})
        intervals = evaluation.result.get("intervals", {})
        lines += [
            "",
            f"Latest evaluation on {evaluation.dataset} (target {evaluation.target!r}, "
            f"{evaluation.result.get('n_rows', '?')} rows, "
            f"{evaluation.created_at:%Y-%m-%d %H:%M} UTC):",
            "",
            "| metric | value | 95% interval |",
            "|---|---|---|",
        ]
        for k, val in sorted(metrics.items()):
            ci = intervals.get(k)
            ci_text = f"{ci[0]:.4g} - {ci[1]:.4g}" if ci else ""
            lines.append(f"| {k} | {_fmt(val)} | {ci_text} |")
        worst = evaluation.result.get("worst_slices") or []
        if worst:
            lines += ["", "Weakest slices:", ""]
            lines += [
                f"- {w.get('column')} = {w.get('value')} ({w.get('n')} rows): "
                + ", ".join(f"{k} {_fmt(x)}" for k, x in (w.get("metrics") or {}).items())
                for w in worst
            ]
    if not v.metrics and evaluation is None:
        lines.append("(no metrics yet: evaluate it with `modelworks models evaluate`)")
    if v.params:
        lines += ["", "## Parameters", "", "| param | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(val)} |" for k, val in sorted(v.params.items())]
    for key in CARD_FIELDS:
        lines += ["", f"## {TITLES[key]}", "", v.card.get(key) or "(to fill in)"]
    return "\n".join(lines) + "\n"
