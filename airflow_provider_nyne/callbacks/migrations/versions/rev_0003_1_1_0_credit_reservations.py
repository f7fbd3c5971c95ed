"""The credit guard's tables: credits reserved per DAG run and connection, and one reservation per task instance and lookup.

Revision ID: 0e51a090a723
Revises: 122186509935
Create Date: 2026-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0e51a090a723"
down_revision = "122186509935"
branch_labels = None
depends_on = None
nyne_version = "1.1.0"


def upgrade() -> None:
    """Create both tables (empty: nothing was reserved before this version)."""
    op.create_table(
        "nyne_credit_budget",
        sa.Column("budget_key", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("conn_id", sa.String(250), nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("budget_key", name="pk_nyne_credit_budget"),
    )
    op.create_index("idx_nyne_credit_budget_updated_at", "nyne_credit_budget", ["updated_at"])
    op.create_table(
        "nyne_credit_reservation",
        sa.Column("reservation_key", sa.String(64), nullable=False),
        sa.Column("budget_key", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("credits", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reservation_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("reservation_key", name="pk_nyne_credit_reservation"),
    )
    op.create_index("idx_nyne_credit_reservation_budget", "nyne_credit_reservation", ["budget_key"])
    op.create_index("idx_nyne_credit_reservation_updated_at", "nyne_credit_reservation", ["updated_at"])


def downgrade() -> None:
    """Drop both tables (reservations of runs in flight are forgotten)."""
    op.drop_index("idx_nyne_credit_reservation_updated_at", table_name="nyne_credit_reservation")
    op.drop_index("idx_nyne_credit_reservation_budget", table_name="nyne_credit_reservation")
    op.drop_table("nyne_credit_reservation")
    op.drop_index("idx_nyne_credit_budget_updated_at", table_name="nyne_credit_budget")
    op.drop_table("nyne_credit_budget")
