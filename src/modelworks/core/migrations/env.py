"""Alembic environment: runs against the engine handed in by modelworks.core.database."""

from alembic import context

from modelworks.core.database import Base
from modelworks.core.model_tables import import_all_tables

import_all_tables()
config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from modelworks.core.database import create_db_engine

        engine = create_db_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
