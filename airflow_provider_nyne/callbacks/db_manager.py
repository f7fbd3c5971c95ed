"""The provider's tables under Airflow's DB manager: ``airflow db migrate`` creates and upgrades them, ``airflow db reset`` drops them.

:class:`NyneCallbackDBManager` owns the ``nyne_callback`` table and the credit guard's
``nyne_credit_budget`` and ``nyne_credit_reservation`` (schema:
:data:`~airflow_provider_nyne.callbacks.store.metadata`) with its own Alembic migrations
(``callbacks/migrations``) and its own version table (``alembic_version_nyne``), the way the
Edge and FAB providers own theirs. How Airflow finds it:

* Airflow 3.2 and later read ``db-managers`` from the provider's metadata: installing the
  provider is enough;
* Airflow 3.1 runs only the managers listed in ``[database] external_db_managers``
  (``AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS=airflow_provider_nyne.callbacks.db_manager.NyneCallbackDBManager``,
  comma-separated without spaces if there are others). The ``airflow db-manager`` commands
  need that line on every version.

Version 1.0 created the table at run time, with no version table; the first migration
adopts such a table as it is, and the next one moves its rows to the current schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.utils.db_manager import BaseDBManager
from sqlalchemy import inspect

from airflow_provider_nyne.callbacks import store

__all__ = ["MIGRATIONS_DIR", "VERSION_TABLE", "NyneCallbackDBManager"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version_nyne"

#: Provider version -> Alembic head, oldest first (``airflow db-manager migrate --to-version``).
_REVISION_HEADS_MAP: dict[str, str] = {
    "1.0.0": "686b7dc1472d",
    "1.1.0": "0e51a090a723",
}


class NyneCallbackDBManager(BaseDBManager):
    """Creates, upgrades and drops the provider's tables (callbacks, credit reservations) with Airflow's own ``db`` commands."""

    metadata = store.metadata
    version_table_name = VERSION_TABLE
    migration_dir = MIGRATIONS_DIR.as_posix()
    # No alembic.ini is shipped: get_alembic_config builds the configuration from Airflow's.
    alembic_file = ""
    supports_table_dropping = True
    revision_heads_map = _REVISION_HEADS_MAP

    def get_alembic_config(self) -> Any:
        """The Alembic configuration: these migrations, on Airflow's metadata database."""
        from airflow import settings
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", self.migration_dir.replace("%", "%%"))
        config.set_main_option("sqlalchemy.url", str(settings.SQL_ALCHEMY_CONN).replace("%", "%%"))
        return config

    def _release_locks(self) -> None:
        # MySQL holds metadata locks until commit; Airflow 3.1's base class has no helper for it.
        release = getattr(super(), "_release_metadata_locks_if_needed", None)
        if callable(release):
            release()

    def _table_exists(self) -> bool:
        return bool(inspect(self.session.get_bind()).has_table(store.TABLE_NAME))

    def initdb(self, use_migration_files: bool = False) -> None:
        """
        Create the tables on a new database, or upgrade what is there (a 1.0 table included).

        :param use_migration_files: run the migrations even on a new database
        """
        self._release_locks()
        if self.get_current_revision() or use_migration_files or self._table_exists():
            self.upgradedb(use_migration_files=use_migration_files)
        else:
            self.create_db_from_orm()

    def upgradedb(
        self,
        to_revision: str | None = None,
        from_revision: str | None = None,
        show_sql_only: bool = False,
        use_migration_files: bool = False,
    ) -> None:
        """
        Run the migrations up to ``to_revision`` (default: the head); a no-op when already there.

        :param to_revision: target revision
        :param from_revision: start revision (offline SQL only)
        :param show_sql_only: print the SQL instead of running it
        :param use_migration_files: accepted for Airflow's sake; migrations always run here
        """
        from alembic import command

        self.log.info("Upgrading the Nyne callback and credit tables")
        self._release_locks()
        config = self.get_alembic_config()
        revision = to_revision or "heads"
        if show_sql_only and from_revision:
            revision = f"{from_revision}:{revision}"
        command.upgrade(config, revision=revision, sql=show_sql_only)

    def downgrade(
        self, to_revision: str, from_revision: str | None = None, show_sql_only: bool = False
    ) -> None:
        """
        Run the migrations down to ``to_revision``.

        :param to_revision: target revision (``base`` drops the table)
        :param from_revision: start revision (offline SQL only)
        :param show_sql_only: print the SQL instead of running it
        """
        from alembic import command

        self._release_locks()
        revision = f"{from_revision}:{to_revision}" if show_sql_only and from_revision else to_revision
        command.downgrade(self.get_alembic_config(), revision=revision, sql=show_sql_only)
