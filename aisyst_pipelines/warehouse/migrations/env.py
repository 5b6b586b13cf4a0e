"""Alembic environment: runs on the connection handed over by `Warehouse.upgrade` (no alembic.ini)."""

from alembic import context

from aisyst_pipelines.warehouse.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
