"""Alembic migrations of the Nyne callback table (run by :class:`~airflow_provider_nyne.callbacks.db_manager.NyneCallbackDBManager`)."""

from __future__ import annotations
