"""Alembic environment of the Nyne callback table: Airflow's metadata database, version table ``alembic_version_nyne``.

Alembic runs this file; importing it anywhere else does nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

from alembic import context

from airflow_provider_nyne.callbacks.db_manager import VERSION_TABLE
from airflow_provider_nyne.callbacks.store import metadata as target_metadata


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Compare and migrate this provider's tables only: the rest of the database is Airflow's."""
    return type_ != "table" or name in target_metadata.tables


def run_migrations_offline() -> None:
    """Print the SQL instead of running it."""
    from airflow import settings

    context.configure(
        url=settings.SQL_ALCHEMY_CONN,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        version_table=VERSION_TABLE,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the connection Airflow passes, or on a new one."""
    from airflow import settings

    with contextlib.ExitStack() as stack:
        connection = context.config.attributes.get("connection")
        if connection is None:
            if settings.engine is None:
                settings.configure_orm()
            assert settings.engine is not None
            connection = stack.enter_context(settings.engine.connect())
        context.configure(
            connection=connection,
            transaction_per_migration=True,
            target_metadata=target_metadata,
            render_as_batch=True,
            version_table=VERSION_TABLE,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


# Alembic gives the module a configuration only while it runs it.
if getattr(context, "config", None) is not None:
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()
