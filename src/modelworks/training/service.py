"""TrainingService: what training records in the store beyond the run itself.

Training code runs wherever the user's Python runs (a notebook, a job worker, a Ray task)
and talks to the store through the SDK; the one rule it needs on the server side is the
link from a run to the dataset versions it trained on, which lands in the lineage graph
(``dataset_version --trained_on--> run``) so ``modelworks data lineage churn@3`` shows the
runs, and later the models, made from it.
"""

from __future__ import annotations

import re

from modelworks.core import audit, lineage
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.governance.access import require_project
from modelworks.tracking.service import TrackingService
from modelworks.training.schemas import RunInputOut

RELATION = re.compile(r"[a-z][a-z_]{1,39}")


class TrainingService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._tracking = TrackingService(store)
        self._data = DataService(store)

    def record_input(
        self, principal: Principal, run_id: str, dataset: str, relation: str = "trained_on"
    ) -> RunInputOut:
        """Record that run ``run_id`` read the dataset version ``dataset`` (``name@N``)."""
        if not RELATION.fullmatch(relation):
            raise InvalidInput(
                f"relation {relation!r} is not valid: use lower-case letters and underscores, "
                "2-40 characters, such as trained_on or evaluated_on."
            )
        run = self._tracking.get_run(principal, run_id)
        version = self._data.get_version(principal, run.project_id, dataset, with_profile=False)
        ref = version.ref
        with self.store.transaction() as s:
            proj = require_project(s, principal, run.project_id, Role.EDITOR, "Logging run inputs")
            lineage.record(
                s,
                proj.id,
                lineage.Node("dataset_version", version.id, ref),
                lineage.Node("run", run.id, f"run {run.name or run.id}"),
                relation,
                {"experiment": run.experiment_name},
            )
            audit.record(
                s, principal, "run.input", "run", run.id, project_id=proj.id,
                changes={"dataset": ref, "relation": relation},
            )  # fmt: skip
        return RunInputOut(
            run_id=run.id, dataset=ref, dataset_version_id=version.id, relation=relation
        )

    def list_inputs(self, principal: Principal, run_id: str) -> list[RunInputOut]:
        """The dataset versions recorded as inputs of run ``run_id``, oldest first."""
        run = self._tracking.get_run(principal, run_id)
        with self.store.read() as s:
            proj = require_project(s, principal, run.project_id, Role.VIEWER, "Reading runs")
            graph = lineage.walk(
                s, proj.id, lineage.Node("run", run.id, run.name), direction="up", depth=1
            )
        return [
            RunInputOut(
                run_id=run.id,
                dataset=edge.parent_label,
                dataset_version_id=edge.parent_id,
                relation=edge.relation,
            )
            for edge in graph.edges
            if edge.parent_type == "dataset_version" and edge.child_id == run.id
        ]
