"""The credit guard's reservations, in the metadata database: no two tasks spend the last of a budget.

A submit task with ``credit_budget`` asks the api-server (the receiver app, which has the
database) to reserve the credits of one lookup before it sends anything. Everything that
decides lives in one short transaction, and the decision itself is a single conditional
statement::

    UPDATE nyne_credit_budget SET reserved = reserved + 3
     WHERE budget_key = :run AND reserved + 3 <= :budget

which every database the metadata database may be runs atomically: PostgreSQL re-checks the
``WHERE`` on the row version it locked (``READ COMMITTED``), MySQL's InnoDB updates the
latest committed version under a row lock, SQLite takes the database's write lock. Two tasks
racing for the last credits therefore cannot both win; the loser's ``UPDATE`` matches no row.
Nothing here reads a total and writes it back later (what Variables, XComs or a task state
store would have to do, each of them last-write-wins).

Reservations are idempotent per task instance and lookup: the row of
``(dag, run, task, map index, request fingerprint)`` is created once (its primary key refuses
a second), so a retry, a reconnect or a task resumed after a rate-limit deferral finds its
own reservation instead of taking another. A release (the submission proved it was not
accepted) names the reservation's id and gives its credits back once; a reservation released
earlier may be taken again by a later try, under a new id, so that a replayed release cannot
free it.

Budgets are per DAG run *and* connection (one account's credits); the credits counted are an
upper bound: 3 per lookup submitted, whether or not it ends up charged (empty and failed
lookups are free). Nothing here imports Airflow; the receiver passes sessions in.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from airflow_provider_nyne.callbacks.store import Bind, budgets_table, reservations_table, utcnow
from airflow_provider_nyne.utils.arguments import CREDITS_PER_LOOKUP
from airflow_provider_nyne.utils.credits import CreditRequestError, Reservation, ReservationKey

__all__ = [
    "MAX_BUDGET",
    "CreditRequestError",
    "Reservation",
    "ReservationKey",
    "budget_key",
    "check_budget",
    "purge_older_than",
    "release",
    "release_with_retries",
    "reservation_key",
    "reserve",
    "reserve_with_retries",
]

#: Largest budget accepted (the column is a 32-bit integer on every database).
MAX_BUDGET = 2**31 - 1 - CREDITS_PER_LOOKUP
#: Transactions tried before giving up on a conflict (a concurrent first reservation, a busy SQLite).
ATTEMPTS = 8
_RESERVED = "reserved"
_RELEASED = "released"


class _Conflict(Exception):
    """Another transaction changed the reservation first: try the whole transaction again."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def budget_key(key: ReservationKey) -> str:
    """
    Primary key of the budget row of ``key``'s DAG run and connection.

    :param key: whose lookup
    """
    return _digest(key.dag_id, key.run_id, key.conn_id)


def reservation_key(key: ReservationKey) -> str:
    """
    Primary key of the reservation row of ``key``'s task instance and lookup.

    :param key: whose lookup
    """
    return _digest(key.dag_id, key.run_id, key.conn_id, key.task_id, str(key.map_index), key.fingerprint)


def check_budget(value: Any) -> int:
    """
    A budget from a request body: a whole number of credits, 0 to :data:`MAX_BUDGET`.

    :param value: the body's ``budget``
    :raises CreditRequestError: for anything else
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BUDGET:
        raise CreditRequestError(f"budget must be a whole number of credits from 0 to {MAX_BUDGET}")
    return value


def _rowcount(result: Any) -> int:
    """Rows an ``UPDATE``/``DELETE`` matched (a ``CursorResult`` attribute the typing does not show)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _reserved(bind: Bind, key: ReservationKey) -> int:
    value = bind.execute(
        select(budgets_table.c.reserved).where(budgets_table.c.budget_key == budget_key(key))
    ).scalar()
    return int(value or 0)


def reserve(
    bind: Bind,
    key: ReservationKey,
    budget: int,
    *,
    cost: int = CREDITS_PER_LOOKUP,
    now: datetime | None = None,
) -> Reservation:
    """
    Reserve one lookup's credits in the run's budget, or refuse: one transaction's worth (the caller's).

    Raises ``IntegrityError`` (or an internal conflict) when a concurrent transaction created
    the same row first: the caller rolls back and tries again (:func:`reserve_with_retries`).

    :param bind: the caller's session or connection, inside a transaction it commits
    :param key: whose lookup
    :param budget: credits the run may reserve in all
    :param cost: credits of one lookup
    :param now: the time stamped on the rows
    """
    when = now or utcnow()
    row = bind.execute(
        select(reservations_table.c.state, reservations_table.c.reservation_id, reservations_table.c.credits)
        .where(reservations_table.c.reservation_key == reservation_key(key))
        .with_for_update()
    ).first()
    if row is not None and row.state == _RESERVED:
        return Reservation(
            True,
            row.reservation_id,
            _reserved(bind, key),
            budget,
            int(row.credits),
            repeated=True,
        )
    exists = bind.execute(
        select(budgets_table.c.budget_key).where(budgets_table.c.budget_key == budget_key(key))
    ).first()
    if exists is None:
        # A concurrent first reservation of the same run inserts the same key: IntegrityError, retried.
        bind.execute(
            budgets_table.insert().values(
                budget_key=budget_key(key),
                dag_id=key.dag_id,
                run_id=key.run_id,
                conn_id=key.conn_id,
                reserved=0,
                updated_at=when,
            )
        )
    # The decision: one statement, atomic on every backend (see the module docstring).
    taken = bind.execute(
        update(budgets_table)
        .where(budgets_table.c.budget_key == budget_key(key))
        .where(budgets_table.c.reserved + cost <= budget)
        .values(reserved=budgets_table.c.reserved + cost, updated_at=when)
    )
    if _rowcount(taken) != 1:
        return Reservation(False, None, _reserved(bind, key), budget, cost)
    reservation_id = secrets.token_hex(8)
    if row is None:
        bind.execute(
            reservations_table.insert().values(
                reservation_key=reservation_key(key),
                budget_key=budget_key(key),
                dag_id=key.dag_id,
                run_id=key.run_id,
                task_id=key.task_id,
                map_index=key.map_index,
                fingerprint=key.fingerprint,
                credits=cost,
                state=_RESERVED,
                reservation_id=reservation_id,
                created_at=when,
                updated_at=when,
            )
        )
    else:
        again = bind.execute(
            update(reservations_table)
            .where(reservations_table.c.reservation_key == reservation_key(key))
            .where(reservations_table.c.state == _RELEASED)
            .values(state=_RESERVED, reservation_id=reservation_id, credits=cost, updated_at=when)
        )
        if _rowcount(again) != 1:
            raise _Conflict(reservation_key(key))
    return Reservation(True, reservation_id, _reserved(bind, key), budget, cost)


def release(bind: Bind, key: ReservationKey, reservation_id: str, *, now: datetime | None = None) -> bool:
    """
    Give a reservation's credits back to the run's budget, once; ``False`` when there was nothing to release.

    :param bind: the caller's session or connection, inside a transaction it commits
    :param key: whose lookup
    :param reservation_id: the id :func:`reserve` granted (an older id releases nothing)
    :param now: the time stamped on the rows
    """
    when = now or utcnow()
    row = bind.execute(
        select(reservations_table.c.credits)
        .where(reservations_table.c.reservation_key == reservation_key(key))
        .with_for_update()
    ).first()
    if row is None:
        return False
    freed = bind.execute(
        update(reservations_table)
        .where(reservations_table.c.reservation_key == reservation_key(key))
        .where(reservations_table.c.state == _RESERVED)
        .where(reservations_table.c.reservation_id == reservation_id)
        .values(state=_RELEASED, updated_at=when)
    )
    if _rowcount(freed) != 1:
        return False
    bind.execute(
        update(budgets_table)
        .where(budgets_table.c.budget_key == budget_key(key))
        .values(reserved=budgets_table.c.reserved - int(row.credits), updated_at=when)
    )
    return True


def purge_older_than(bind: Bind, retention: timedelta, *, now: datetime | None = None) -> int:
    """
    Delete budgets and reservations untouched for ``retention``; returns how many rows went.

    :param bind: session or connection
    :param retention: how long rows are kept after their last change
    :param now: the reference time
    """
    cutoff = (now or utcnow()) - retention
    removed = bind.execute(delete(reservations_table).where(reservations_table.c.updated_at < cutoff))
    stale = select(reservations_table.c.budget_key).where(
        reservations_table.c.budget_key == budgets_table.c.budget_key
    )
    budgets = bind.execute(
        delete(budgets_table).where(budgets_table.c.updated_at < cutoff).where(~stale.exists())
    )
    return _rowcount(removed) + _rowcount(budgets)


def _retrying(sessions: Callable[[], AbstractContextManager[Session]], work: Callable[[Session], Any]) -> Any:
    """Run ``work`` in a transaction of its own; again on a conflict with a concurrent one."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with sessions() as session:
                return work(session)
        except (IntegrityError, _Conflict):
            if attempt == ATTEMPTS:
                raise
        except OperationalError as exc:
            # SQLite answers "database is locked" past its busy timeout; other backends' errors are real.
            if "locked" not in str(exc).lower() or attempt == ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def reserve_with_retries(
    sessions: Callable[[], AbstractContextManager[Session]], key: ReservationKey, budget: int
) -> Reservation:
    """
    :func:`reserve` in its own transaction, tried again when a concurrent one conflicted.

    :param sessions: returns a context manager yielding a session committed on success
    :param key: whose lookup
    :param budget: credits the run may reserve in all
    """
    result: Reservation = _retrying(sessions, lambda session: reserve(session, key, budget))
    return result


def release_with_retries(
    sessions: Callable[[], AbstractContextManager[Session]], key: ReservationKey, reservation_id: str
) -> bool:
    """
    :func:`release` in its own transaction, tried again when a concurrent one conflicted.

    :param sessions: returns a context manager yielding a session committed on success
    :param key: whose lookup
    :param reservation_id: the id :func:`reserve` granted
    """
    return bool(_retrying(sessions, lambda session: release(session, key, reservation_id)))
