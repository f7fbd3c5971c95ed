from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from airflow_provider_nyne.callbacks import store


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    eng = create_engine(f"sqlite:///{tmp_path / 'cb.db'}")
    yield eng
    eng.dispose()


def _record(rid: str = "req-1", cid: str = "cid-1") -> store.CallbackRecord:
    return store.CallbackRecord(
        request_id=rid,
        correlation_id=cid,
        status="completed",
        payload={"request_id": rid, "status": "completed", "result": {"interactions": [{"username": "ü"}]}},
        dag_id="d",
        task_id="t",
        run_id="r",
        map_index=-1,
        dispatch="stored",
    )


def test_ensure_table_creates_once_and_is_idempotent(engine) -> None:  # type: ignore[no-untyped-def]
    store.ensure_table(engine)
    store.ensure_table(engine)
    inspector = inspect(engine)
    assert inspector.has_table(store.TABLE_NAME)
    assert {ix["name"] for ix in inspector.get_indexes(store.TABLE_NAME)} == {"idx_nyne_callback_received_at"}


def test_insert_get_round_trip_keeps_payload(engine) -> None:  # type: ignore[no-untyped-def]
    store.ensure_table(engine)
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record())
    with Session(engine) as session:
        got = store.get_record(session, "req-1")
    assert got is not None
    assert got.payload["result"]["interactions"][0]["username"] == "ü"
    assert (got.correlation_id, got.status, got.deliveries, got.dispatch) == (
        "cid-1",
        "completed",
        1,
        "stored",
    )
    assert "interactions" not in repr(got)


def test_second_insert_of_a_request_id_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    store.ensure_table(engine)
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record())
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        store.insert_record(session, _record())


def test_redelivery_and_dispatch_updates(engine) -> None:  # type: ignore[no-untyped-def]
    store.ensure_table(engine)
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record())
        store.record_redelivery(session, "req-1")
        store.record_redelivery(session, "req-1")
        store.set_dispatch(session, "req-1", "resumed")
    with Session(engine) as session:
        got = store.get_record(session, "req-1")
    assert got is not None
    assert (got.deliveries, got.dispatch) == (3, "resumed")


def test_purge_removes_only_rows_past_retention(engine) -> None:  # type: ignore[no-untyped-def]
    store.ensure_table(engine)
    now = datetime(2026, 1, 10)
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record("old"), now=now - timedelta(days=8))
        store.insert_record(session, _record("new"), now=now - timedelta(days=6))
        removed = store.purge_older_than(session, timedelta(days=7), now=now)
    assert removed == 1
    with Session(engine) as session:
        assert store.get_record(session, "old") is None
        assert store.get_record(session, "new") is not None


def test_get_missing_is_none(engine) -> None:  # type: ignore[no-untyped-def]
    store.ensure_table(engine)
    with Session(engine) as session:
        assert store.get_record(session, "nope", lock=True) is None
