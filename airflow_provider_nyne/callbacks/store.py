"""The provider's own table in the Airflow metadata database: one row per received callback.

The table (``nyne_callback``) lives on its own SQLAlchemy ``MetaData``, outside Airflow's
models and migrations: it is created with ``CREATE TABLE IF NOT EXISTS`` semantics
(``checkfirst``) when the receiver starts, and Airflow's ``db migrate``/``db reset`` never
touch it. Rows are keyed by request id, which is what makes a repeated delivery detectable;
they double as the mailbox a waiting task's trigger reads, and are purged after the
retention period.

Functions take a SQLAlchemy ``Session`` (or ``Connection``) so that storing a callback and
dispatching it share one transaction. Nothing here imports Airflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

__all__ = [
    "TABLE_NAME",
    "CallbackRecord",
    "callbacks_table",
    "ensure_table",
    "get_record",
    "insert_record",
    "purge_older_than",
    "record_redelivery",
    "set_dispatch",
    "utcnow",
]

log = logging.getLogger(__name__)

TABLE_NAME = "nyne_callback"

metadata = MetaData()

# MySQL's TEXT stops at 64 KiB; a result can be megabytes.
_LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql")

callbacks_table = Table(
    TABLE_NAME,
    metadata,
    Column("request_id", String(255), primary_key=True),
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
    Index("idx_nyne_callback_received_at", "received_at"),
)

Bind = Session | Connection


def utcnow() -> datetime:
    """Naive UTC now (the column type every backend stores the same way)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class CallbackRecord:
    """
    One received callback.

    :param request_id: the Nyne request id (primary key)
    :param correlation_id: the correlation id of the URL it arrived on
    :param status: the job status it carried (``completed`` or ``failed``)
    :param payload: the status ``data`` object as received
    :param dispatch: what the receiver did with it (``asset_event:<id>``, ``resumed``, ``mailbox``, ...)
    :param deliveries: how many times it was delivered
    """

    request_id: str
    correlation_id: str
    status: str
    payload: Mapping[str, Any]
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    dispatch: str | None = None
    deliveries: int = 1
    received_at: datetime | None = None
    last_delivery_at: datetime | None = None

    def __repr__(self) -> str:
        # The payload can be megabytes: keep it out of logs and tracebacks.
        return (
            f"CallbackRecord(request_id={self.request_id!r}, status={self.status!r}, "
            f"dispatch={self.dispatch!r}, deliveries={self.deliveries!r})"
        )


def ensure_table(bind: Engine | Connection) -> None:
    """
    Create the table and its index when missing (safe to call from several processes at once).

    :param bind: an engine or connection on the Airflow metadata database
    """
    try:
        metadata.create_all(bind, checkfirst=True)
    except SQLAlchemyError:
        # Another api-server replica created it between our check and our CREATE.
        if not inspect(bind).has_table(TABLE_NAME):
            raise
        log.debug("Table %s was created concurrently", TABLE_NAME)


def _row_to_record(row: Any) -> CallbackRecord:
    payload = json.loads(row.payload) if row.payload else {}
    return CallbackRecord(
        request_id=row.request_id,
        correlation_id=row.correlation_id,
        status=row.status,
        payload=payload,
        dag_id=row.dag_id,
        task_id=row.task_id,
        run_id=row.run_id,
        map_index=row.map_index,
        dispatch=row.dispatch,
        deliveries=row.deliveries,
        received_at=row.received_at,
        last_delivery_at=row.last_delivery_at,
    )


def get_record(bind: Bind, request_id: str, *, lock: bool = False) -> CallbackRecord | None:
    """
    The stored callback for ``request_id``, or ``None``.

    :param bind: session or connection
    :param request_id: the Nyne request id
    :param lock: ``SELECT ... FOR UPDATE`` where the database supports it
    """
    query = select(callbacks_table).where(callbacks_table.c.request_id == request_id)
    if lock:
        query = query.with_for_update()
    row = bind.execute(query).first()
    return None if row is None else _row_to_record(row)


def insert_record(bind: Bind, record: CallbackRecord, *, now: datetime | None = None) -> None:
    """
    Insert a new callback row; raises ``IntegrityError`` when the request id is already stored.

    :param bind: session or connection (the caller's transaction)
    :param record: the callback to store
    :param now: the receive time (default: now, naive UTC)
    """
    when = now or utcnow()
    bind.execute(
        callbacks_table.insert().values(
            request_id=record.request_id,
            correlation_id=record.correlation_id,
            status=record.status,
            payload=json.dumps(record.payload, separators=(",", ":"), ensure_ascii=False),
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


def record_redelivery(bind: Bind, request_id: str, *, now: datetime | None = None) -> None:
    """
    Count one more delivery of an already stored callback.

    :param bind: session or connection
    :param request_id: the Nyne request id
    :param now: the delivery time
    """
    bind.execute(
        update(callbacks_table)
        .where(callbacks_table.c.request_id == request_id)
        .values(deliveries=callbacks_table.c.deliveries + 1, last_delivery_at=now or utcnow())
    )


def set_dispatch(bind: Bind, request_id: str, dispatch: str) -> None:
    """
    Record what was done with a callback.

    :param bind: session or connection
    :param request_id: the Nyne request id
    :param dispatch: short description (``asset_event:42``, ``resumed``, ``mailbox``, ...)
    """
    bind.execute(
        update(callbacks_table)
        .where(callbacks_table.c.request_id == request_id)
        .values(dispatch=dispatch[:500])
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
