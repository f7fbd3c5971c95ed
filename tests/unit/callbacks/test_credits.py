"""callbacks.credits: reservations that concurrent tasks cannot overspend, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from airflow_provider_nyne.callbacks import credits, store
from airflow_provider_nyne.utils.credits import Reservation, ReservationKey
from tests.unit.callbacks.conftest import FakeBackend

Sessions = Callable[[], AbstractContextManager[Session]]


def key(
    map_index: int = -1, *, task_id: str = "lookup", run_id: str = "run-1", fingerprint: str = "f1"
) -> ReservationKey:
    return ReservationKey("fan_out", run_id, task_id, map_index, "nyne_default", fingerprint)


def session_factory(engine: Engine) -> Sessions:
    """Sessions committed on success, as the receiver's backend gives them."""
    return FakeBackend(engine).session


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    from tests.fixtures.postgres import PostgresError, PostgresServer, find_bindir

    try:
        find_bindir()
    except PostgresError as exc:
        pytest.skip(str(exc))
    with PostgresServer() as pg:
        yield pg.sqlalchemy_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'credits.db'}")
    else:
        eng = create_engine(request.getfixturevalue("postgres_url"), pool_size=25)
    store.metadata.drop_all(eng)
    store.metadata.create_all(eng)
    yield eng
    store.metadata.drop_all(eng)
    eng.dispose()


def reserved_in_budget(engine: Engine, k: ReservationKey) -> int:
    with Session(engine) as session:
        value = session.execute(
            select(store.budgets_table.c.reserved).where(
                store.budgets_table.c.budget_key == credits.budget_key(k)
            )
        ).scalar()
    return int(value or 0)


def live_reservations(engine: Engine) -> int:
    with Session(engine) as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(store.reservations_table)
                .where(store.reservations_table.c.state == "reserved")
            ).scalar_one()
        )


def race(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``workers`` threads released at the same moment."""
    start = threading.Barrier(workers)

    def run(index: int) -> Any:
        start.wait()
        return work(index)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(workers)))


def test_twenty_tasks_racing_for_five_lookups_get_exactly_five(engine: Engine) -> None:
    sessions = session_factory(engine)
    results: list[Reservation] = race(20, lambda i: credits.reserve_with_retries(sessions, key(i), 15))
    granted = [r for r in results if r.granted]
    assert len(granted) == 5
    assert len({r.reservation_id for r in granted}) == 5
    refused = [r for r in results if not r.granted]
    assert all(r.reservation_id is None and r.budget == 15 for r in refused)
    assert reserved_in_budget(engine, key(0)) == 15
    assert live_reservations(engine) == 5


def test_one_task_instance_racing_with_itself_reserves_once(engine: Engine) -> None:
    sessions = session_factory(engine)
    results: list[Reservation] = race(12, lambda _: credits.reserve_with_retries(sessions, key(3), 30))
    assert all(r.granted for r in results)
    assert len({r.reservation_id for r in results}) == 1
    assert sum(not r.repeated for r in results) == 1
    assert reserved_in_budget(engine, key(3)) == 3
    assert live_reservations(engine) == 1


def test_releases_racing_give_the_credits_back_once(engine: Engine) -> None:
    sessions = session_factory(engine)
    granted = credits.reserve_with_retries(sessions, key(1), 9)
    assert granted.reservation_id is not None
    released = race(8, lambda _: credits.release_with_retries(sessions, key(1), str(granted.reservation_id)))
    assert released.count(True) == 1
    assert reserved_in_budget(engine, key(1)) == 0


def test_a_retry_finds_its_reservation_and_a_released_one_is_taken_again_under_a_new_id(
    engine: Engine,
) -> None:
    sessions = session_factory(engine)
    first = credits.reserve_with_retries(sessions, key(0), 3)
    again = credits.reserve_with_retries(sessions, key(0), 3)  # the retry, with the budget already full
    assert (again.granted, again.repeated, again.reservation_id) == (True, True, first.reservation_id)
    assert not credits.reserve_with_retries(sessions, key(1), 3).granted  # another task: no room
    assert credits.release_with_retries(sessions, key(0), str(first.reservation_id))
    retaken = credits.reserve_with_retries(sessions, key(0), 3)
    assert retaken.granted
    assert not retaken.repeated
    assert retaken.reservation_id != first.reservation_id
    # A replayed release of the old reservation frees nothing.
    assert not credits.release_with_retries(sessions, key(0), str(first.reservation_id))
    assert reserved_in_budget(engine, key(0)) == 3


@pytest.mark.parametrize(
    ("other", "shares_the_budget"),
    [
        pytest.param({"fingerprint": "f2"}, True, id="another-lookup-of-the-task"),
        pytest.param({"task_id": "other_task"}, True, id="another-task-of-the-run"),
        pytest.param({"run_id": "run-2"}, False, id="another-run"),
    ],
)
def test_what_shares_a_budget(engine: Engine, other: dict[str, Any], shares_the_budget: bool) -> None:
    sessions = session_factory(engine)
    assert credits.reserve_with_retries(sessions, key(0), 3).granted
    second = credits.reserve_with_retries(sessions, key(0, **other), 3)
    assert second.granted is not shares_the_budget


def test_the_connection_is_part_of_the_budget(engine: Engine) -> None:
    sessions = session_factory(engine)
    assert credits.reserve_with_retries(sessions, key(0), 3).granted
    other_account = ReservationKey("fan_out", "run-1", "lookup", 0, "nyne_other", "f1")
    assert credits.reserve_with_retries(sessions, other_account, 3).granted


@pytest.mark.parametrize("budget", [0, 2], ids=["nothing-may-be-spent", "less-than-one-lookup"])
def test_a_budget_below_one_lookup_refuses_everything(engine: Engine, budget: int) -> None:
    result = credits.reserve_with_retries(session_factory(engine), key(0), budget)
    assert (result.granted, result.reserved, result.budget) == (False, 0, budget)


def test_old_rows_are_purged_and_recent_ones_kept(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions() as session:
        credits.reserve(session, key(0, run_id="old"), 9, now=datetime(2020, 1, 1))
    credits.reserve_with_retries(sessions, key(0), 9)
    with sessions() as session:
        assert credits.purge_older_than(session, timedelta(days=7)) == 2  # the old run's two rows
    assert reserved_in_budget(engine, key(0, run_id="old")) == 0
    assert reserved_in_budget(engine, key(0)) == 3
    assert live_reservations(engine) == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param({"dag_id": ""}, "dag_id must be a string", id="empty-dag"),
        pytest.param({"run_id": 5}, "run_id must be a string", id="number-run"),
        pytest.param({"map_index": "0"}, "map_index must be an integer", id="string-map-index"),
        pytest.param({"map_index": -2}, "map_index must be an integer", id="below-minus-one"),
        pytest.param({"fingerprint": "x" * 251}, "fingerprint must be a string of 1 to 250", id="too-long"),
    ],
)
def test_bad_request_fields_are_named(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(credits.CreditRequestError, match=fragment):
        ReservationKey.from_json({**key(0).to_json(), **body})


@pytest.mark.parametrize(
    "budget", [-1, 1.5, "15", True, 2**31], ids=["negative", "float", "string", "bool", "huge"]
)
def test_bad_budgets_are_refused(budget: Any) -> None:
    with pytest.raises(credits.CreditRequestError, match="budget must be a whole number"):
        credits.check_budget(budget)
