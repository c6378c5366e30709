"""Where every domain's tables are imported so that Alembic sees one metadata.

This is the one place core names downstream domains: migrations must know all tables.
"""

import importlib

TABLE_MODULES = (
    "modelworks.core.audit",
    "modelworks.core.lineage",
    "modelworks.governance.models",
    "modelworks.tracking.models",
    "modelworks.data.models",
    "modelworks.training.jobs.models",
    "modelworks.registry.models",
    "modelworks.serving.predlog_models",
    "modelworks.serving.models",
)


def import_all_tables() -> None:
    for name in TABLE_MODULES:
        importlib.import_module(name)
