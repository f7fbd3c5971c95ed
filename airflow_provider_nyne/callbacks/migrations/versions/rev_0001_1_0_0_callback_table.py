"""The callback table as 1.0 created it at run time (keyed by request id); adopted as it is when present.

Revision ID: 686b7dc1472d
Revises:
Create Date: 2026-01-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "686b7dc1472d"
down_revision = None
branch_labels = None
depends_on = None
nyne_version = "1.0.0"

_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql")


def upgrade() -> None:
    """Create the 1.0 table unless 1.0 already did."""
    if sa.inspect(op.get_bind()).has_table("nyne_callback"):
        return
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
    op.create_index("idx_nyne_callback_received_at", "nyne_callback", ["received_at"])


def downgrade() -> None:
    """Drop the table."""
    op.drop_index("idx_nyne_callback_received_at", table_name="nyne_callback")
    op.drop_table("nyne_callback")
