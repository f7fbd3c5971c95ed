"""Everything the receiver does inside Airflow's metadata database, in one module.

The receiver runs inside the Airflow api-server, which owns the metadata database, so it
uses core's session and models here, the way the api-server's own routes do:

* the engine and sessions (``airflow.settings`` / ``airflow.utils.session``);
* an Asset event, through the asset manager's ``register_asset_change`` as the REST API's
  ``POST /assets/events`` does (it records the event and queues the DAG runs scheduled on
  the Asset, in the caller's transaction);
* what the submitting task instance recorded (its ``request_id`` and
  ``callback_correlation_id`` XComs) and the Assets its task declares as outlets, which the
  receiver checks a callback against before it accepts it;
* the resume of a task deferred on :class:`~airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger`,
  through ``handle_event_submit`` as the api-server's human-in-the-loop route does: the task
  instance row is locked, checked to still be deferred on our trigger for this very request,
  and moved to ``scheduled`` with the event in ``next_kwargs``. The triggerer then drops the
  now-unused trigger;
* the ``callback_secret`` of a ``nyne`` connection, read through the secrets backends.

Differences between Airflow versions are contained here. Nothing outside the callbacks
subpackage imports this module, and task code never does (it would not be allowed to use
the database anyway).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from airflow_provider_nyne.callbacks.service import TaskSubmission
from airflow_provider_nyne.callbacks.tokens import CORRELATION_XCOM_KEY, CallbackTarget
from airflow_provider_nyne.operators.interactions import REQUEST_ID_XCOM_KEY
from airflow_provider_nyne.utils.credits import ReservationKey

__all__ = [
    "TRIGGER_CLASSPATH",
    "TRIGGER_CLASSPATHS",
    "AirflowBackend",
]

log = logging.getLogger(__name__)

TRIGGER_CLASSPATH = "airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger"
#: Every path a waiting task's trigger may carry: triggers serialized by 1.0 name the old module.
TRIGGER_CLASSPATHS = frozenset(
    {TRIGGER_CLASSPATH, "airflow_provider_nyne.callbacks.triggers.NyneCallbackTrigger"}
)
_SECRET_CACHE_SECONDS = 30.0
_SECRET_CACHE_SIZE = 256


def _xcom_text(value: Any) -> str | None:
    """An XCom value as the string the task pushed (values may arrive JSON-encoded once more)."""
    for _ in range(2):
        if not isinstance(value, str):
            return None
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if not isinstance(decoded, str):
            return value
        value = decoded
    return value if isinstance(value, str) else None


class AirflowBackend:
    """The receiver's access to Airflow: sessions, asset events, deferred-task resume, secrets."""

    def __init__(self) -> None:
        # Least recently used first; bounded, since connection ids come from unauthenticated URLs.
        self._secrets: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    # Database ---------------------------------------------------------------------------

    def engine(self) -> Engine:
        """The api-server's SQLAlchemy engine on the metadata database."""
        from airflow import settings

        engine: Engine | None = getattr(settings, "engine", None)
        if engine is None:
            settings.configure_orm()
            engine = settings.engine
        if engine is None:
            raise RuntimeError("Airflow's metadata database engine is not configured")
        return engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error (core's ``create_session``)."""
        from airflow.utils.session import create_session

        with create_session() as session:
            yield session

    # Secrets ----------------------------------------------------------------------------

    def connection_secret(self, conn_id: str) -> str | None:
        """
        The ``callback_secret`` extra of connection ``conn_id`` (``None`` when unset or missing).

        Cached for a few seconds: every callback needs it and a secrets backend may be remote.

        :param conn_id: the ``nyne`` connection named by the correlation id
        """
        now = time.monotonic()
        with self._lock:
            cached = self._secrets.get(conn_id)
            if cached is not None and now - cached[0] < _SECRET_CACHE_SECONDS:
                self._secrets.move_to_end(conn_id)
                return cached[1]
        secret = self._read_connection_secret(conn_id)
        with self._lock:
            self._secrets[conn_id] = (now, secret)
            self._secrets.move_to_end(conn_id)
            while len(self._secrets) > _SECRET_CACHE_SIZE:
                self._secrets.popitem(last=False)
        return secret

    @staticmethod
    def _read_connection_secret(conn_id: str) -> str | None:
        from airflow.models.connection import Connection

        from airflow_provider_nyne._compat import AirflowNotFoundException

        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            return None
        extras: Mapping[str, Any] = conn.extra_dejson or {}
        value = extras.get("callback_secret") or extras.get("extra__nyne__callback_secret")
        return str(value) if value else None

    # Dispatch ---------------------------------------------------------------------------

    def _task_instance(
        self, session: Session, target: CallbackTarget | ReservationKey, *, lock: bool = False
    ) -> Any:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.sqlalchemy import with_row_locks

        query = select(TaskInstance).where(
            TaskInstance.dag_id == target.dag_id,
            TaskInstance.task_id == target.task_id,
            TaskInstance.run_id == target.run_id,
            TaskInstance.map_index == target.map_index,
        )
        if lock:
            query = with_row_locks(query, session=session, of=TaskInstance)
        return session.scalars(query).one_or_none()

    def task_running(self, session: Session, task: ReservationKey) -> bool:
        """
        Whether the task instance a credit reservation names is running now.

        :param session: the receiver's transaction
        :param task: the reservation's key
        """
        from airflow.utils.state import TaskInstanceState

        ti = self._task_instance(session, task)
        return ti is not None and ti.state == TaskInstanceState.RUNNING

    def task_submission(self, session: Session, target: CallbackTarget) -> TaskSubmission | None:
        """
        What the target task instance recorded about its submission, or ``None`` when it does not exist.

        Read from its XComs ``request_id`` (pushed right after the API answered) and
        ``callback_correlation_id`` (the URL it sent); either is ``None`` until pushed.

        :param session: the receiver's transaction
        :param target: the decoded correlation id
        """
        from airflow.models.xcom import XComModel

        if self._task_instance(session, target) is None:
            return None
        rows = session.execute(
            select(XComModel.key, XComModel.value).where(
                XComModel.dag_id == target.dag_id,
                XComModel.task_id == target.task_id,
                XComModel.run_id == target.run_id,
                XComModel.map_index == target.map_index,
                XComModel.key.in_((REQUEST_ID_XCOM_KEY, CORRELATION_XCOM_KEY)),
            )
        ).all()
        values = {row.key: _xcom_text(XComModel.deserialize_value(row)) for row in rows}
        return TaskSubmission(values.get(REQUEST_ID_XCOM_KEY), values.get(CORRELATION_XCOM_KEY))

    def task_outlets(self, session: Session, target: CallbackTarget) -> list[tuple[str, str]]:
        """
        ``(name, uri)`` of the Assets the target's task declares as outlets (as its DAG was last parsed).

        :param session: the receiver's transaction
        :param target: the decoded correlation id
        """
        from airflow.models.asset import AssetModel, TaskOutletAssetReference

        rows = session.execute(
            select(AssetModel.name, AssetModel.uri)
            .join(TaskOutletAssetReference, TaskOutletAssetReference.asset_id == AssetModel.id)
            .where(
                TaskOutletAssetReference.dag_id == target.dag_id,
                TaskOutletAssetReference.task_id == target.task_id,
            )
        ).all()
        return [(str(row.name), str(row.uri)) for row in rows]

    def register_asset_event(self, session: Session, target: CallbackTarget, extra: Mapping[str, Any]) -> str:
        """
        Record an event on the target's Asset (and queue the DAG runs scheduled on it).

        Returns ``asset_event:<id>``, or ``asset_not_found`` when no DAG declares the Asset.

        :param session: the receiver's transaction
        :param target: the decoded correlation id (with ``asset_name``/``asset_uri``)
        :param extra: the event's ``extra``
        """
        from airflow.assets.manager import asset_manager
        from airflow.models.asset import AssetModel

        name = target.asset_name or target.asset_uri
        uri = target.asset_uri or target.asset_name
        asset_model = session.scalar(
            select(AssetModel).where(AssetModel.name == name, AssetModel.uri == uri).limit(1)
        )
        if asset_model is None:
            log.warning(
                "Nyne callback: Asset name=%r uri=%r is not known to Airflow (no DAG declares it); "
                "the callback is stored but no Asset event was recorded",
                name,
                uri,
            )
            return "asset_not_found"
        # The submitting task instance as the event's source, so the UI links the event back to it.
        ti = self._task_instance(session, target)
        event = asset_manager.register_asset_change(
            asset=asset_model, task_instance=ti, extra=dict(extra), session=session
        )
        if event is None:
            return "asset_not_found"
        return f"asset_event:{event.id}"

    def resume_deferred(
        self, session: Session, target: CallbackTarget, request_id: str, event: Mapping[str, Any]
    ) -> str:
        """
        Resume the task deferred on our trigger for ``request_id``, when it is in that state now.

        Returns ``resumed`` or why not (``no_task_instance``, ``not_deferred:<state>``,
        ``other_trigger``, ``other_request``).

        :param session: the receiver's transaction
        :param target: the decoded correlation id (the task instance to wake)
        :param request_id: the request the callback is about
        :param event: the trigger event payload the task's ``execute_complete`` receives
        """
        from airflow.models.trigger import Trigger, handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.state import TaskInstanceState

        ti = self._task_instance(session, target, lock=True)
        if ti is None:
            return "no_task_instance"
        if ti.state != TaskInstanceState.DEFERRED or ti.trigger_id is None:
            return f"not_deferred:{ti.state}"
        trigger = session.get(Trigger, ti.trigger_id)
        if trigger is None or trigger.classpath not in TRIGGER_CLASSPATHS:
            return "other_trigger"
        try:
            waiting_for = trigger.kwargs.get("request_id")
        except Exception:
            log.exception("Nyne callback: cannot read the kwargs of trigger %s", ti.trigger_id)
            return "other_trigger"
        if waiting_for != request_id:
            return "other_request"
        handle_event_submit(TriggerEvent(dict(event)), task_instance=ti, session=session)
        return "resumed"
