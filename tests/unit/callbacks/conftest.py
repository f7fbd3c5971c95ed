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

from airflow_provider_nyne.callbacks.tokens import CallbackTarget

SECRET = "unit-test-callback-secret"


class FakeBackend:
    """Implements ``CallbackBackend`` over a SQLite file; dispatches are recorded, not performed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine)
        self.secrets: dict[str, str | None] = {"nyne_default": SECRET}
        self.asset_events: list[tuple[CallbackTarget, dict[str, Any]]] = []
        self.resumes: list[tuple[CallbackTarget, str, dict[str, Any]]] = []
        self.resume_results: list[str] = []
        self.fail_dispatch: Exception | None = None
        self.secret_lookups: list[str] = []

    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
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
        self.secret_lookups.append(conn_id)
        return self.secrets.get(conn_id)

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
    yield FakeBackend(engine)
    engine.dispose()
