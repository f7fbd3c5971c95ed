"""The provider's own tables in the Airflow metadata database: received callbacks, and credit reservations.

The table (``nyne_callback``) is created and upgraded by ``airflow db migrate`` and dropped
by ``airflow db reset`` through
:class:`~airflow_provider_nyne.callbacks.db_manager.NyneCallbackDBManager` (its Alembic
migrations live in ``callbacks/migrations``; this module's ``metadata`` is the schema they
produce). Nothing creates it at run time.

A row is bound to the callback URL it arrived on *and* the request it is about: the key is
``(correlation_key, request_id)``, where ``correlation_key`` is the SHA-256 of the
correlation id (the id itself can be a few kilobytes, too long for a portable index). A
callback on one URL therefore never blocks a callback on another. Rows double as the
mailbox a waiting task's trigger reads, and are purged after the retention period.

The credit guard's two tables (``nyne_credit_budget``, one row per DAG run and connection,
holding the credits reserved so far; ``nyne_credit_reservation``, one row per task instance
and lookup) are declared here too, so that the same DB manager creates, upgrades and drops
them; :mod:`~airflow_provider_nyne.callbacks.credits` holds the logic that uses them.

Functions take a SQLAlchemy ``Session`` (or ``Connection``) so that storing a callback and
dispatching it share one transaction. Nothing here imports Airflow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

__all__ = [
    "BUDGET_TABLE_NAME",
    "RESERVATION_TABLE_NAME",
    "TABLE_NAME",
    "CallbackRecord",
    "budgets_table",
    "callbacks_table",
    "correlation_key",
    "get_record",
    "insert_record",
    "metadata",
    "purge_older_than",
    "record_redelivery",
    "reservations_table",
    "set_dispatch",
    "utcnow",
]

TABLE_NAME = "nyne_callback"

metadata = MetaData()

# MySQL's TEXT stops at 64 KiB; a result can be megabytes.
_LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql")

callbacks_table = Table(
    TABLE_NAME,
    metadata,
    Column("correlation_key", String(64), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("correlation_id", _LONG_TEXT, nullable=False),
    Column("status", String(32), nullable=False),
    Column("payload", _LONG_TEXT, nullable=False),
    Column("dag_id", String(250), nullable=True),
    Column("task_id", String(250), nullable=True),
    Column("run_id", String(250), nullable=True),
    Column("map_index", Integer, nullable=True),
    Column("dispatch", String(500), nullable=True),
    Column("deliveries", Integer, nullable=False, default=1),
    Column("received_at", DateTime(), nullable=False),
    Column("last_delivery_at", DateTime(), nullable=False),
    # Named explicitly: the 1.0 table's primary key ("nyne_callback_pkey" on PostgreSQL)
    # still exists while the migration copies its rows into this one.
    PrimaryKeyConstraint("correlation_key", "request_id", name="pk_nyne_callback"),
    Index("idx_nyne_callback_received_at", "received_at"),
)

BUDGET_TABLE_NAME = "nyne_credit_budget"
RESERVATION_TABLE_NAME = "nyne_credit_reservation"

#: Credits reserved per DAG run and connection. The key is a SHA-256 of the run's identity:
#: dag and run ids can be 250 characters each, too long together for a portable index.
budgets_table = Table(
    BUDGET_TABLE_NAME,
    metadata,
    Column("budget_key", String(64), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("conn_id", String(250), nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    PrimaryKeyConstraint("budget_key", name="pk_nyne_credit_budget"),
    Index("idx_nyne_credit_budget_updated_at", "updated_at"),
)

#: One row per task instance and lookup (fingerprint): a retry or reconnect finds its own row.
reservations_table = Table(
    RESERVATION_TABLE_NAME,
    metadata,
    Column("reservation_key", String(64), nullable=False),
    Column("budget_key", String(64), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("credits", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reservation_id", String(32), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    PrimaryKeyConstraint("reservation_key", name="pk_nyne_credit_reservation"),
    Index("idx_nyne_credit_reservation_budget", "budget_key"),
    Index("idx_nyne_credit_reservation_updated_at", "updated_at"),
)

Bind = Session | Connection


def utcnow() -> datetime:
    """Naive UTC now (the column type every backend stores the same way)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def correlation_key(correlation_id: str) -> str:
    """
    The indexed key of a correlation id: its SHA-256, hex.

    :param correlation_id: the correlation id of a callback URL
    """
    return hashlib.sha256(correlation_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CallbackRecord:
    """
    One received callback.

    :param request_id: the Nyne request id
    :param correlation_id: the correlation id of the URL it arrived on
    :param status: the job status it carried (``completed`` or ``failed``)
    :param payload_json: the status ``data`` object, as the JSON text that is stored and served
    :param dispatch: what the receiver did with it (``asset_event:<id>``, ``resumed``, ``mailbox``, ...)
    :param deliveries: how many times it was delivered
    """

    request_id: str
    correlation_id: str
    status: str
    payload_json: str
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    dispatch: str | None = None
    deliveries: int = 1
    received_at: datetime | None = None
    last_delivery_at: datetime | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """The status ``data`` object, decoded."""
        value = json.loads(self.payload_json) if self.payload_json else {}
        return value if isinstance(value, dict) else {}

    def __repr__(self) -> str:
        # The payload can be megabytes: keep it out of logs and tracebacks.
        return (
            f"CallbackRecord(request_id={self.request_id!r}, status={self.status!r}, "
            f"dispatch={self.dispatch!r}, deliveries={self.deliveries!r})"
        )


def _row_to_record(row: Any) -> CallbackRecord:
    return CallbackRecord(
        request_id=row.request_id,
        correlation_id=row.correlation_id,
        status=row.status,
        payload_json=row.payload or "",
        dag_id=row.dag_id,
        task_id=row.task_id,
        run_id=row.run_id,
        map_index=row.map_index,
        dispatch=row.dispatch,
        deliveries=row.deliveries,
        received_at=row.received_at,
        last_delivery_at=row.last_delivery_at,
    )


def _key(correlation_id: str, request_id: str) -> Any:
    return (callbacks_table.c.correlation_key == correlation_key(correlation_id)) & (
        callbacks_table.c.request_id == request_id
    )


def get_record(
    bind: Bind, correlation_id: str, request_id: str, *, lock: bool = False
) -> CallbackRecord | None:
    """
    The callback for ``request_id`` stored from the URL of ``correlation_id``, or ``None``.

    :param bind: session or connection
    :param correlation_id: the correlation id of the callback URL
    :param request_id: the Nyne request id
    :param lock: ``SELECT ... FOR UPDATE`` where the database supports it
    """
    query = select(callbacks_table).where(_key(correlation_id, request_id))
    if lock:
        query = query.with_for_update()
    row = bind.execute(query).first()
    # The hash is the index; the full id is what binds the row (and rules out a collision).
    if row is None or row.correlation_id != correlation_id:
        return None
    return _row_to_record(row)


def insert_record(bind: Bind, record: CallbackRecord, *, now: datetime | None = None) -> None:
    """
    Insert a new callback row; raises ``IntegrityError`` when that URL already stored that request.

    :param bind: session or connection (the caller's transaction)
    :param record: the callback to store
    :param now: the receive time (default: now, naive UTC)
    """
    when = now or utcnow()
    bind.execute(
        callbacks_table.insert().values(
            correlation_key=correlation_key(record.correlation_id),
            request_id=record.request_id,
            correlation_id=record.correlation_id,
            status=record.status,
            payload=record.payload_json,
            dag_id=record.dag_id,
            task_id=record.task_id,
            run_id=record.run_id,
            map_index=record.map_index,
            dispatch=record.dispatch,
            deliveries=1,
            received_at=when,
            last_delivery_at=when,
        )
    )


def record_redelivery(
    bind: Bind, correlation_id: str, request_id: str, *, now: datetime | None = None
) -> None:
    """
    Count one more delivery of an already stored callback.

    :param bind: session or connection
    :param correlation_id: the correlation id of the callback URL
    :param request_id: the Nyne request id
    :param now: the delivery time
    """
    bind.execute(
        update(callbacks_table)
        .where(_key(correlation_id, request_id))
        .values(deliveries=callbacks_table.c.deliveries + 1, last_delivery_at=now or utcnow())
    )


def set_dispatch(bind: Bind, correlation_id: str, request_id: str, dispatch: str) -> None:
    """
    Record what was done with a callback.

    :param bind: session or connection
    :param correlation_id: the correlation id of the callback URL
    :param request_id: the Nyne request id
    :param dispatch: short description (``asset_event:42``, ``resumed``, ``mailbox``, ...)
    """
    bind.execute(
        update(callbacks_table).where(_key(correlation_id, request_id)).values(dispatch=dispatch[:500])
    )


def purge_older_than(bind: Bind, retention: timedelta, *, now: datetime | None = None) -> int:
    """
    Delete callbacks received more than ``retention`` ago; returns how many rows went.

    :param bind: session or connection
    :param retention: how long rows are kept
    :param now: the reference time
    """
    cutoff = (now or utcnow()) - retention
    result = bind.execute(delete(callbacks_table).where(callbacks_table.c.received_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
