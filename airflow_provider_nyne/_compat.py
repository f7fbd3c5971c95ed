"""Differences between the Airflow versions this provider supports (3.1 to 3.x), in one place."""

from __future__ import annotations

from typing import Any

try:  # Airflow 3.2+: exceptions live in the Task SDK; airflow.exceptions re-exports with a warning.
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
        TaskDeferred,
    )

try:  # Sensor timeouts (no retry; soft_fail skips) moved to the Task SDK after 3.1.
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef,attr-defined,unused-ignore]

try:
    from airflow.sdk.log import mask_secret as _mask_secret
except ImportError:  # pragma: no cover - very old SDKs
    _mask_secret = None  # type: ignore[assignment]


def mask_secret(value: str | None) -> None:
    """Register a value with Airflow's secrets masker so that it never shows in logs."""
    if value and _mask_secret is not None:
        _mask_secret(value)


def get_config_option(section: str, key: str) -> str | None:
    """An Airflow config option (``[section] key`` or ``AIRFLOW__SECTION__KEY``), or ``None`` when unset."""
    try:  # newer Task SDKs have their own parser (workers, triggerers and the api-server read the same config)
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf
    value = conf.get(section, key, fallback=None)
    return None if value in (None, "") else str(value)


def object_storage_conn_id(path: Any) -> str | None:
    """The connection id of an ``ObjectStoragePath`` (an attribute from 3.2; a storage option in 3.1)."""
    conn_id = getattr(path, "conn_id", None)
    if conn_id is None:
        options = getattr(path, "storage_options", None) or {}
        conn_id = options.get("conn_id")
    return conn_id or None


class _RescheduleDateAsDatetime:
    """The task instance, with ``get_first_reschedule_date`` returning a datetime whatever the SDK returns."""

    def __init__(self, ti: Any) -> None:
        self._ti = ti

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ti, name)

    def get_first_reschedule_date(self, context: Any) -> Any:
        value = self._ti.get_first_reschedule_date(context)
        if isinstance(value, str):
            from datetime import datetime, timezone

            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        return value


def reschedule_context(context: Any) -> Any:
    """
    The context for ``BaseSensorOperator.execute`` in reschedule mode, on every supported SDK.

    The Task SDK of Airflow 3.1.3 and earlier hands the first reschedule date back as an ISO
    string, and ``BaseSensorOperator.execute`` then fails on its second poke
    (``datetime - str``); the task instance in the returned context reads it as a datetime.
    """
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None or not hasattr(ti, "get_first_reschedule_date"):
        return context
    return {**context, "ti": _RescheduleDateAsDatetime(ti)}


def get_task_state_store(context: Any) -> Any | None:
    """The task's ``task_state_store`` (Airflow 3.3+), or ``None`` where Airflow has none."""
    try:
        store = context.get("task_state_store") if hasattr(context, "get") else None
    except Exception:
        return None
    if store is None or not hasattr(store, "get") or not hasattr(store, "set"):
        return None
    return store


__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "TaskDeferred",
    "get_config_option",
    "get_task_state_store",
    "mask_secret",
    "object_storage_conn_id",
    "reschedule_context",
]
