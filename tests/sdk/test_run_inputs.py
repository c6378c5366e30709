"""Runs record the dataset versions they trained on; the dataset's lineage shows the run.

Runs against both transports (see conftest: ``ws`` is embedded or remote).
"""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

import modelworks as mw
from modelworks.core.errors import InvalidInput, NotFound


def test_run_input_lands_in_the_lineage_of_the_dataset(ws: mw.Workspace, exp_name: str) -> None:
    name = f"ds-{uuid.uuid4().hex[:10]}"
    ws.datasets.ingest(pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]}), name)
    version = ws.datasets.get(f"{name}@latest")
    with ws.start_run(experiment=exp_name, name="fit") as run:
        recorded = run.log_input(version)
    assert recorded.dataset == f"{name}@1"
    assert recorded.relation == "trained_on"
    inputs = ws.runs.inputs(run)
    assert [(i.dataset, i.relation) for i in inputs] == [(f"{name}@1", "trained_on")]
    graph = ws.datasets.lineage(f"{name}@1", direction="down")
    edges = {(e.parent.label, e.relation, e.child.type, e.child.id) for e in graph.edges}
    assert (f"{name}@1", "trained_on", "run", run.id) in edges


def test_unknown_dataset_or_bad_relation_is_refused(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name) as run:
        with pytest.raises(NotFound):
            ws.runs.log_input(run, f"missing-{uuid.uuid4().hex[:6]}@1")
        name = f"ds-{uuid.uuid4().hex[:10]}"
        ws.datasets.ingest(pd.DataFrame({"x": [1]}), name)
        with pytest.raises(InvalidInput, match="relation 'Not A Relation' is not valid"):
            ws.runs.log_input(run, f"{name}@1", relation="Not A Relation")
    assert ws.runs.inputs(run) == []
