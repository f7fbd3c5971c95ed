"""A stand-in for the receiver's Airflow backend: a real SQLite database, recorded dispatches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from airflow_provider_nyne.callbacks import store
from airflow_provider_nyne.callbacks.service import TaskSubmission
from airflow_provider_nyne.callbacks.tokens import CallbackTarget, encode_correlation_id
from airflow_provider_nyne.utils.credits import ReservationKey

SECRET = "unit-test-callback-secret"

TaskKey = tuple[str, str, str, int]


def task_key(target: CallbackTarget) -> TaskKey:
    return (target.dag_id, target.task_id, target.run_id, target.map_index)


class FakeBackend:
    """Implements ``CallbackBackend`` over a SQLite file; dispatches are recorded, not performed.

    Task instances exist only once :meth:`submitted` (or :meth:`task_exists`) says so, as
    the XComs a submitting task pushes.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine)
        self.secrets: dict[str, str | None] = {"nyne_default": SECRET}
        self.submissions: dict[TaskKey, TaskSubmission] = {}
        self.outlets: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.asset_events: list[tuple[CallbackTarget, dict[str, Any]]] = []
        self.resumes: list[tuple[CallbackTarget, str, dict[str, Any]]] = []
        self.resume_results: list[str] = []
        self.fail_dispatch: Exception | None = None
        self.secret_lookups: list[str] = []
        self.not_running: set[TaskKey] = set()  # task instances a credit reservation is refused for
        self.calls = 0  # every backend call, to prove an inert receiver makes none

    def submitted(self, target: CallbackTarget, request_id: str | None) -> None:
        """The task instance of ``target`` pushed its callback URL and, unless None, its request id."""
        self.submissions[task_key(target)] = TaskSubmission(request_id, encode_correlation_id(target))

    def engine(self) -> Engine:
        self.calls += 1
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.calls += 1
        session = self._sessions()
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()

    def connection_secret(self, conn_id: str) -> str | None:
        self.calls += 1
        self.secret_lookups.append(conn_id)
        return self.secrets.get(conn_id)

    def task_submission(self, session: Session, target: CallbackTarget) -> TaskSubmission | None:
        self.calls += 1
        return self.submissions.get(task_key(target))

    def task_outlets(self, session: Session, target: CallbackTarget) -> list[tuple[str, str]]:
        self.calls += 1
        return self.outlets.get((target.dag_id, target.task_id), [])

    def task_running(self, session: Session, task: ReservationKey) -> bool:
        self.calls += 1
        return (task.dag_id, task.task_id, task.run_id, task.map_index) not in self.not_running

    def register_asset_event(self, session: Session, target: CallbackTarget, extra: Mapping[str, Any]) -> str:
        if self.fail_dispatch is not None:
            raise self.fail_dispatch
        self.asset_events.append((target, dict(extra)))
        return f"asset_event:{len(self.asset_events)}"

    def resume_deferred(
        self, session: Session, target: CallbackTarget, request_id: str, event: Mapping[str, Any]
    ) -> str:
        if self.fail_dispatch is not None:
            raise self.fail_dispatch
        self.resumes.append((target, request_id, dict(event)))
        return self.resume_results.pop(0) if self.resume_results else "resumed"


@pytest.fixture
def fake_backend(tmp_path: Path) -> Iterator[FakeBackend]:
    engine = create_engine(f"sqlite:///{tmp_path / 'receiver.db'}")
    # The table as `airflow db migrate` leaves it (tests/unit/callbacks/test_db_manager.py checks they agree).
    store.metadata.create_all(engine)
    yield FakeBackend(engine)
    engine.dispose()
