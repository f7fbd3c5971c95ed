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

try:
    from airflow.sdk.log import mask_secret as _mask_secret
except ImportError:  # pragma: no cover - very old SDKs
    _mask_secret = None  # type: ignore[assignment]


def mask_secret(value: str | None) -> None:
    """Register a value with Airflow's secrets masker so that it never shows in logs."""
    if value and _mask_secret is not None:
        _mask_secret(value)


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
    "AirflowSkipException",
    "TaskDeferred",
    "get_task_state_store",
    "mask_secret",
]
