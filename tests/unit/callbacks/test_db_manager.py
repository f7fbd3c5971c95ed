"""The callback table under Airflow's DB manager: its migrations, and ``airflow db migrate``/``reset`` for real."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

from airflow_provider_nyne.callbacks import store
from airflow_provider_nyne.callbacks.db_manager import VERSION_TABLE, NyneCallbackDBManager
from airflow_provider_nyne.callbacks.migrations.env import include_object
from airflow_provider_nyne.get_provider_info import DB_MANAGER_CLASS, get_provider_info

HEAD = "0e51a090a723"
CALLBACKS_BY_URL = "122186509935"
BASE = "686b7dc1472d"
CREDIT_TABLES = {store.BUDGET_TABLE_NAME, store.RESERVATION_TABLE_NAME}

# The table exactly as 1.0 declared it and created at run time (create_all, no version table).
_METADATA_1_0 = MetaData()
TABLE_1_0 = Table(
    "nyne_callback",
    _METADATA_1_0,
    Column("request_id", String(255), primary_key=True),
    Column("correlation_id", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("dag_id", String(250)),
    Column("task_id", String(250)),
    Column("run_id", String(250)),
    Column("map_index", Integer),
    Column("dispatch", String(500)),
    Column("deliveries", Integer, nullable=False, default=1),
    Column("received_at", DateTime(), nullable=False),
    Column("last_delivery_at", DateTime(), nullable=False),
    Index("idx_nyne_callback_received_at", "received_at"),
)
ROWS_1_0 = [
    ("req-a", "cid-a", "completed", '{"request_id":"req-a"}', "asset_event:1", 2),
    ("req-b", "cid-b", "failed", '{"request_id":"req-b"}', "resumed", 1),
]


def _migrate(connection: Connection, revision: str, *, down: bool = False) -> None:
    config = NyneCallbackDBManager(session=None).get_alembic_config()
    config.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(config, revision)


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
    with engine.begin() as conn:
        yield conn
    engine.dispose()


def test_the_provider_declares_its_db_manager() -> None:
    assert get_provider_info()["db-managers"] == [DB_MANAGER_CLASS]
    assert f"{NyneCallbackDBManager.__module__}.{NyneCallbackDBManager.__name__}" == DB_MANAGER_CLASS
    assert NyneCallbackDBManager.version_table_name == VERSION_TABLE != "alembic_version"
    assert NyneCallbackDBManager.supports_table_dropping is True
    assert list(NyneCallbackDBManager.revision_heads_map.values())[-1] == HEAD


def test_migrations_produce_exactly_the_schema_the_code_uses(connection: Connection) -> None:
    _migrate(connection, "head")
    assert _revision(connection) == HEAD
    context = MigrationContext.configure(
        connection, opts={"include_object": include_object, "compare_type": True}
    )
    assert compare_metadata(context, store.metadata) == []
    primary = inspect(connection).get_pk_constraint(store.TABLE_NAME)
    assert primary["constrained_columns"] == ["correlation_key", "request_id"]
    assert set(inspect(connection).get_table_names()) >= CREDIT_TABLES


def test_downgrade_to_base_removes_the_table(connection: Connection) -> None:
    _migrate(connection, "head")
    _migrate(connection, CALLBACKS_BY_URL, down=True)
    assert not CREDIT_TABLES & set(inspect(connection).get_table_names())
    assert inspect(connection).has_table(store.TABLE_NAME)
    _migrate(connection, BASE, down=True)
    assert _revision(connection) == BASE
    assert inspect(connection).get_pk_constraint(store.TABLE_NAME)["constrained_columns"] == ["request_id"]
    _migrate(connection, "base", down=True)
    assert not inspect(connection).has_table(store.TABLE_NAME)


def test_a_1_1_database_gains_the_credit_tables_and_keeps_its_callbacks(connection: Connection) -> None:
    _migrate(connection, CALLBACKS_BY_URL)
    assert not CREDIT_TABLES & set(inspect(connection).get_table_names())
    store.insert_record(
        connection,
        store.CallbackRecord(
            request_id="req-1", correlation_id="cid-1", status="completed", payload_json="{}"
        ),
    )
    _migrate(connection, "head")
    assert _revision(connection) == HEAD
    assert set(inspect(connection).get_table_names()) >= CREDIT_TABLES
    assert store.get_record(connection, "cid-1", "req-1") is not None


def test_a_table_made_by_1_0_is_adopted_and_its_rows_kept(connection: Connection) -> None:
    _METADATA_1_0.create_all(connection)
    when = datetime(2026, 1, 1)
    for rid, cid, status, payload, dispatch, deliveries in ROWS_1_0:
        connection.execute(
            TABLE_1_0.insert().values(
                request_id=rid,
                correlation_id=cid,
                status=status,
                payload=payload,
                dispatch=dispatch,
                deliveries=deliveries,
                received_at=when,
                last_delivery_at=when,
            )
        )
    _migrate(connection, "head")
    assert _revision(connection) == HEAD
    for rid, cid, status, payload, dispatch, deliveries in ROWS_1_0:
        record = store.get_record(connection, cid, rid)
        assert record is not None
        assert (record.status, record.payload_json, record.dispatch, record.deliveries) == (
            status,
            payload,
            dispatch,
            deliveries,
        )
    keys = connection.execute(text("SELECT correlation_key FROM nyne_callback ORDER BY request_id")).scalars()
    assert list(keys) == [hashlib.sha256(b"cid-a").hexdigest(), hashlib.sha256(b"cid-b").hexdigest()]


# `airflow db migrate` / `airflow db reset` in their own process, on a throwaway SQLite database.


def _airflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # What the README tells Airflow 3.1 users to set; 3.2+ also find the manager alone.
            "AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS": DB_MANAGER_CLASS,
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"airflow {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _tables(home: Path) -> set[str]:
    with sqlite3.connect(home / "airflow.db") as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _query(home: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(home / "airflow.db")
    try:
        with db:
            return list(db.execute(sql, params).fetchall())
    finally:
        db.close()


def test_airflow_db_migrate_creates_upgrades_nothing_twice_and_reset_drops(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    home.mkdir()
    _airflow(home, "db", "migrate")
    assert {store.TABLE_NAME, VERSION_TABLE, *CREDIT_TABLES} <= _tables(home)
    assert _query(home, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
    _query(
        home,
        "INSERT INTO nyne_callback (correlation_key, request_id, correlation_id, status, payload, deliveries, "
        "received_at, last_delivery_at) VALUES ('k', 'req-1', 'cid', 'completed', '{}', 1, '2026-01-01', '2026-01-01')",
    )

    second = _airflow(home, "db", "migrate")
    assert "Running upgrade" not in second.stdout + second.stderr  # nothing left to do
    assert _query(home, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
    assert _query(home, "SELECT request_id FROM nyne_callback") == [("req-1",)]

    _airflow(home, "db", "reset", "--yes", "--skip-init")
    assert not {store.TABLE_NAME, VERSION_TABLE, *CREDIT_TABLES} & _tables(home)
