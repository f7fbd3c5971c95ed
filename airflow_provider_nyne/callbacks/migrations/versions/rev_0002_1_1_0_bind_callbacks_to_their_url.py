"""Bind each stored callback to the URL it arrived on: key ``(correlation_key, request_id)``, not ``request_id`` alone.

Rows stored by 1.0 are kept: each gets the SHA-256 of its correlation id as its key.

Revision ID: 122186509935
Revises: 686b7dc1472d
Create Date: 2026-01-15
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "122186509935"
down_revision = "686b7dc1472d"
branch_labels = None
depends_on = None
nyne_version = "1.1.0"

_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql")
_OLD = "nyne_callback_1_0"
_INDEX = "idx_nyne_callback_received_at"
_COPIED = (
    "request_id",
    "correlation_id",
    "status",
    "payload",
    "dag_id",
    "task_id",
    "run_id",
    "map_index",
    "dispatch",
    "deliveries",
    "received_at",
    "last_delivery_at",
)


def _create_current() -> None:
    op.create_table(
        "nyne_callback",
        sa.Column("correlation_key", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("correlation_id", _LONG_TEXT, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payload", _LONG_TEXT, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("map_index", sa.Integer, nullable=True),
        sa.Column("dispatch", sa.String(500), nullable=True),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("last_delivery_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("correlation_key", "request_id", name="pk_nyne_callback"),
    )
    op.create_index(_INDEX, "nyne_callback", ["received_at"])


def _drop_index() -> None:
    # Index names are global on PostgreSQL and SQLite: it goes before the new table needs it.
    if _INDEX in {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("nyne_callback")}:
        op.drop_index(_INDEX, table_name="nyne_callback")


def upgrade() -> None:
    """Move the rows into the new table, one row at a time (payloads can be megabytes)."""
    bind = op.get_bind()
    _drop_index()
    op.rename_table("nyne_callback", _OLD)
    _create_current()
    columns = ", ".join(_COPIED)
    keys = bind.execute(sa.text(f"SELECT request_id, correlation_id FROM {_OLD}")).all()
    for request_id, correlation_id in keys:
        key = hashlib.sha256(str(correlation_id).encode("utf-8")).hexdigest()
        bind.execute(
            sa.text(
                f"INSERT INTO nyne_callback (correlation_key, {columns}) "
                f"SELECT :key, {columns} FROM {_OLD} WHERE request_id = :request_id"
            ),
            {"key": key, "request_id": request_id},
        )
    op.drop_table(_OLD)


def downgrade() -> None:
    """Back to one row per request id (a request stored on several URLs keeps one of them)."""
    bind = op.get_bind()
    _drop_index()
    op.rename_table("nyne_callback", _OLD)
    op.create_table(
        "nyne_callback",
        sa.Column("request_id", sa.String(255), primary_key=True),
        sa.Column("correlation_id", _LONG_TEXT, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payload", _LONG_TEXT, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("map_index", sa.Integer, nullable=True),
        sa.Column("dispatch", sa.String(500), nullable=True),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("last_delivery_at", sa.DateTime(), nullable=False),
    )
    op.create_index(_INDEX, "nyne_callback", ["received_at"])
    columns = ", ".join(_COPIED)
    firsts = bind.execute(
        sa.text(f"SELECT request_id, MIN(correlation_key) FROM {_OLD} GROUP BY request_id")
    ).all()
    for request_id, key in firsts:
        bind.execute(
            sa.text(
                f"INSERT INTO nyne_callback ({columns}) SELECT {columns} FROM {_OLD} "
                "WHERE request_id = :request_id AND correlation_key = :key"
            ),
            {"request_id": request_id, "key": key},
        )
    op.drop_table(_OLD)
