from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from airflow_provider_nyne.callbacks import store


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'cb.db'}")
    store.metadata.create_all(eng)
    yield eng
    eng.dispose()


def _record(rid: str = "req-1", cid: str = "cid-1") -> store.CallbackRecord:
    return store.CallbackRecord(
        request_id=rid,
        correlation_id=cid,
        status="completed",
        payload_json=json.dumps({"request_id": rid, "result": {"interactions": [{"username": "ü"}]}}),
        dag_id="d",
        task_id="t",
        run_id="r",
        map_index=-1,
        dispatch="stored",
    )


def test_correlation_key_is_the_sha256_of_the_id() -> None:
    cid = "eyJ2IjoxfQ" * 300  # correlation ids can be kilobytes; the key stays 64 characters
    assert store.correlation_key(cid) == hashlib.sha256(cid.encode()).hexdigest()
    assert len(store.correlation_key(cid)) == 64


def test_insert_get_round_trip_keeps_payload(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record())
    with Session(engine) as session:
        got = store.get_record(session, "cid-1", "req-1")
    assert got is not None
    assert got.payload["result"]["interactions"][0]["username"] == "ü"
    assert (got.correlation_id, got.status, got.deliveries, got.dispatch) == (
        "cid-1",
        "completed",
        1,
        "stored",
    )
    assert "interactions" not in repr(got)


def test_a_row_belongs_to_its_url_and_request(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record("req-1", "cid-1"))
        store.insert_record(session, _record("req-1", "cid-2"))  # same request, another URL: its own row
    with Session(engine) as session:
        assert store.get_record(session, "cid-1", "req-1") is not None
        assert store.get_record(session, "cid-2", "req-1") is not None
        assert store.get_record(session, "cid-1", "req-2") is None
        assert store.get_record(session, "cid-3", "req-1") is None


def test_second_insert_on_the_same_url_and_request_is_refused(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record())
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        store.insert_record(session, _record())


def test_redelivery_and_dispatch_updates_touch_only_their_row(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record("req-1", "cid-1"))
        store.insert_record(session, _record("req-1", "cid-2"))
        store.record_redelivery(session, "cid-1", "req-1")
        store.record_redelivery(session, "cid-1", "req-1")
        store.set_dispatch(session, "cid-1", "req-1", "resumed")
    with Session(engine) as session:
        first = store.get_record(session, "cid-1", "req-1")
        second = store.get_record(session, "cid-2", "req-1")
    assert first is not None
    assert second is not None
    assert (first.deliveries, first.dispatch) == (3, "resumed")
    assert (second.deliveries, second.dispatch) == (1, "stored")


def test_purge_removes_only_rows_past_retention(engine: Engine) -> None:
    now = datetime(2026, 1, 10)
    with Session(engine) as session, session.begin():
        store.insert_record(session, _record("old"), now=now - timedelta(days=8))
        store.insert_record(session, _record("new"), now=now - timedelta(days=6))
        removed = store.purge_older_than(session, timedelta(days=7), now=now)
    assert removed == 1
    with Session(engine) as session:
        assert store.get_record(session, "cid-1", "old") is None
        assert store.get_record(session, "cid-1", "new") is not None


def test_get_missing_is_none(engine: Engine) -> None:
    with Session(engine) as session:
        assert store.get_record(session, "cid", "nope", lock=True) is None
