"""The callback receiver's logic, independent of HTTP: authenticate, verify, store, dispatch.

:class:`CallbackService` decides what a delivery may do; :mod:`~airflow_provider_nyne.callbacks.receiver`
puts it behind the api-server's routes, and
:class:`~airflow_provider_nyne.callbacks.dispatch.AirflowBackend` gives it Airflow's database.

A callback is accepted only for the request its URL was issued for: the task instance named by
the correlation id must have recorded this very URL (XCom ``callback_correlation_id``) and this
very request (XCom ``request_id``); anything else is refused (``403``) and changes nothing, or
asked again later (``503``) while the task has not recorded them yet. A URL signed with a
connection's own ``callback_secret`` may name only a ``nyne://`` Asset or one of the submitting
task's outlets. The callback is stored (keyed by URL and request id) and dispatched in one
database transaction; a repeated delivery dispatches nothing again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from airflow_provider_nyne.callbacks import config, credits, store
from airflow_provider_nyne.callbacks.events import (
    CallbackPayloadError,
    canonical_json,
    event_from_status,
)
from airflow_provider_nyne.callbacks.tokens import (
    CallbackTarget,
    connection_secret_may_sign,
    decode_correlation_id,
    verify_credit_request,
    verify_token,
)
from airflow_provider_nyne.client.errors import NyneResponseError
from airflow_provider_nyne.client.models import JobState, JobStatus
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID

__all__ = [
    "AcceptOutcome",
    "Authenticated",
    "CallbackBackend",
    "CallbackRefusedError",
    "CallbackService",
    "TaskSubmission",
    "asset_event_extra",
]

log = logging.getLogger(__name__)

#: Seconds a client has to send the whole body (a slow sender holds a connection, nothing more).
DEFAULT_BODY_TIMEOUT = 30.0
#: Seconds between purges of rows older than the retention period.
DEFAULT_PURGE_INTERVAL = 3600.0
#: Longest text copied from a callback into an Asset event's extra or a log line.
MAX_COPIED_TEXT = 200
# What an Airflow connection id can look like; anything else is not looked up at all.
_CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")
# Distinct connection ids remembered for "logged once" (a bound: ids come from unauthenticated URLs).
_WARNED_LIMIT = 256
# Largest integer JSON consumers read exactly (JavaScript's Number.MAX_SAFE_INTEGER).
_MAX_SAFE_INT = 2**53 - 1

SecretScope = Literal["connection", "deployment"]


class CallbackRefusedError(Exception):
    """
    An authentic callback that is not accepted: ``403`` (not for this URL) or ``503`` (not checkable yet).

    :param status_code: the HTTP answer
    :param detail: why, for the caller and the log (no secret, no token)
    """

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class TaskSubmission:
    """
    What a task instance recorded about its submission (its XComs), as the receiver reads it.

    :param request_id: XCom ``request_id``, or ``None`` when not pushed (yet)
    :param correlation_id: XCom ``callback_correlation_id``, or ``None`` when not pushed (yet)
    """

    request_id: str | None
    correlation_id: str | None


class CallbackBackend(Protocol):
    """What the receiver needs from Airflow (see :class:`~airflow_provider_nyne.callbacks.dispatch.AirflowBackend`)."""

    def engine(self) -> Engine:
        """The metadata database engine."""

    def session(self) -> Any:
        """A context manager yielding a session, committed on success."""

    def connection_secret(self, conn_id: str) -> str | None:
        """The connection's ``callback_secret`` extra."""

    def task_submission(self, session: Session, target: CallbackTarget) -> TaskSubmission | None:
        """The task instance's recorded submission, or ``None`` when there is no such task instance."""

    def task_outlets(self, session: Session, target: CallbackTarget) -> list[tuple[str, str]]:
        """``(name, uri)`` of the Assets the submitting task declares as outlets."""

    def task_running(self, session: Session, task: credits.ReservationKey) -> bool:
        """Whether the task instance a credit reservation names is running now."""

    def register_asset_event(self, session: Session, target: CallbackTarget, extra: Mapping[str, Any]) -> str:
        """Record an Asset event; returns a dispatch label."""

    def resume_deferred(
        self, session: Session, target: CallbackTarget, request_id: str, event: Mapping[str, Any]
    ) -> str:
        """Resume the deferred task; returns a dispatch label."""


def _short(value: Any) -> str | None:
    """A string from a callback, bounded for Asset extras and logs (other types: ``None``)."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= MAX_COPIED_TEXT else value[:MAX_COPIED_TEXT] + "..."


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and 0 <= value <= _MAX_SAFE_INT else None


def asset_event_extra(
    target: CallbackTarget, correlation_id: str, status: JobStatus, received_at: str
) -> dict[str, Any]:
    """The ``extra`` of the Asset event recorded for a callback: small and bounded, no result items."""
    result = status.data.get("result")
    result = result if isinstance(result, Mapping) else {}
    target_info = result.get("target")
    target_info = target_info if isinstance(target_info, Mapping) else {}
    return {
        "request_id": status.request_id,
        "status": status.status,
        "total_count": _count(status.total_count),
        "interaction_type": _short(result.get("interaction_type")),
        "platform": _short(result.get("platform")),
        "target_username": _short(target_info.get("username")),
        "source": "nyne_callback",
        "received_at": received_at,
        "payload_ref": {
            "table": store.TABLE_NAME,
            "request_id": status.request_id,
            "correlation_id": correlation_id,
        },
        "submitted_by": {
            "dag_id": target.dag_id,
            "task_id": target.task_id,
            "run_id": target.run_id,
            "map_index": target.map_index,
        },
    }


@dataclass(frozen=True)
class Authenticated:
    """
    A correlation id whose token verified.

    :param target: what it wakes
    :param correlation_id: the id itself
    :param scope: which secret verified it: a connection's own (``connection``) or
        ``[nyne] callback_secret`` (``deployment``)
    """

    target: CallbackTarget
    correlation_id: str
    scope: SecretScope


@dataclass(frozen=True)
class AcceptOutcome:
    """
    What the receiver did with one delivery.

    :param request_id: the request the callback is about
    :param duplicate: whether it had been received before (nothing dispatched this time)
    :param dispatch: what was dispatched (``asset_event:<id>``, ``resumed``, ``mailbox(...)``, ...)
    """

    request_id: str
    duplicate: bool
    dispatch: str | None


class CallbackService:
    """
    The receiver's logic, independent of HTTP: authenticate, verify, store, dispatch.

    :param backend: access to Airflow (default: :class:`~airflow_provider_nyne.callbacks.dispatch.AirflowBackend`)
    :param max_body_bytes: body cap (default ``[nyne] callback_max_body_bytes``)
    :param retention: how long rows are kept (default ``[nyne] callback_retention_days``)
    :param resume: resume waiting tasks directly (default ``[nyne] callback_resume_deferred``)
    :param config_secret: returns the deployment-wide secret (default ``[nyne] callback_secret``)
    :param enabled: whether the receiver answers at all (default: ``[nyne] callback_base_url`` is set)
    :param body_timeout: seconds a client has to send the whole body
    :param purge_interval: seconds between purges of old rows
    """

    def __init__(
        self,
        backend: CallbackBackend | None = None,
        *,
        max_body_bytes: int | None = None,
        retention: timedelta | None = None,
        resume: bool | None = None,
        config_secret: Callable[[], str | None] | None = None,
        enabled: bool | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
    ) -> None:
        self._backend = backend
        self._max_body_bytes = max_body_bytes
        self._retention = retention
        self._resume = resume
        self._config_secret = config_secret or config.config_secret
        self._enabled = enabled
        self.body_timeout = body_timeout
        self.purge_interval = purge_interval
        self._warned_connections: set[str] = set()
        self._warn_lock = threading.Lock()

    @property
    def backend(self) -> CallbackBackend:
        """Access to Airflow, built on first use (an inert receiver never builds it)."""
        if self._backend is None:
            from airflow_provider_nyne.callbacks.dispatch import AirflowBackend

            self._backend = AirflowBackend()
        return self._backend

    # Settings are read when first needed, so the app can be built before Airflow's config is.
    @property
    def enabled(self) -> bool:
        """Whether callbacks are configured; an inert receiver answers 404 to everything."""
        return config.receiver_enabled() if self._enabled is None else self._enabled

    @property
    def credits_enabled(self) -> bool:
        """Whether the credit guard's routes answer (see :func:`~airflow_provider_nyne.callbacks.config.credits_enabled`)."""
        return self.enabled or bool(self._config_secret())

    @property
    def max_body_bytes(self) -> int:
        """The body cap in bytes."""
        if self._max_body_bytes is None:
            self._max_body_bytes = config.max_body_bytes()
        return self._max_body_bytes

    @property
    def retention(self) -> timedelta:
        """How long rows are kept."""
        if self._retention is None:
            self._retention = timedelta(seconds=config.retention_seconds())
        return self._retention

    @property
    def resume(self) -> bool:
        """Whether waiting tasks are resumed by the receiver itself."""
        if self._resume is None:
            self._resume = config.resume_deferred()
        return self._resume

    # Authentication -------------------------------------------------------------------------

    def authenticate(self, correlation_id: str, token: str) -> Authenticated | None:
        """
        The verified correlation id when ``token`` signs it, else ``None``.

        The correlation id names the connection whose secret signs it, so it is decoded
        first; every failure (undecodable id, no secret, wrong token) gives the same ``None``.

        :param correlation_id: from the URL
        :param token: from the URL or the mailbox header
        """
        try:
            target = decode_correlation_id(correlation_id)
        except ValueError:
            return None
        if target.conn_id is not None and not _CONN_ID.fullmatch(target.conn_id):
            return None
        conn_id = target.conn_id or DEFAULT_CONN_ID
        secret, scope = self.secret_for(conn_id)
        if not secret:
            self._warn_once(
                conn_id,
                "Nyne callbacks refused: no callback secret for connection %r (set its callback_secret "
                "extra or [nyne] callback_secret on the api-server); logged once per connection",
            )
            return None
        if not verify_token(secret, correlation_id, token):
            return None
        return Authenticated(target, correlation_id, scope)

    def secret_for(self, conn_id: str) -> tuple[str | None, SecretScope]:
        """
        The signing secret and its scope: the connection's ``callback_secret``, else ``[nyne] callback_secret``.

        :param conn_id: the ``nyne`` connection named by the correlation id
        """
        try:
            secret = self.backend.connection_secret(conn_id)
        except Exception as exc:
            self._warn_once(
                conn_id, f"Nyne callbacks: could not read connection %r ({type(exc).__name__}); logged once"
            )
            secret = None
        if secret:
            return secret, "connection"
        return self._config_secret(), "deployment"

    def _warn_once(self, conn_id: str, message: str) -> None:
        with self._warn_lock:
            if conn_id in self._warned_connections or len(self._warned_connections) >= _WARNED_LIMIT:
                return
            self._warned_connections.add(conn_id)
        log.warning(message, conn_id)

    # Credit guard ---------------------------------------------------------------------------

    def authenticate_credits(self, body: bytes, signature: str) -> dict[str, Any] | None:
        """
        The decoded body of a credit guard request when ``signature`` signs it, else ``None``.

        The body names the connection whose secret signs it, so it is decoded first; every
        failure (not JSON, no usable connection id, no secret, wrong signature) gives the same
        ``None``.

        :param body: the request body, as received
        :param signature: the ``X-Nyne-Credits-Signature`` header
        """
        try:
            data = json.loads(body)
        except ValueError:
            return None
        conn_id = data.get("conn_id") if isinstance(data, dict) else None
        if not isinstance(conn_id, str) or not _CONN_ID.fullmatch(conn_id):
            return None
        secret, _ = self.secret_for(conn_id)
        if not verify_credit_request(secret, body, signature):
            return None
        return data

    def reserve_credits(self, data: Mapping[str, Any]) -> credits.Reservation:
        """
        Reserve one lookup's credits in its run's budget (idempotent per task instance and lookup).

        :param data: an authenticated request body
        :raises CreditRequestError: naming a bad field
        :raises CallbackRefusedError: ``403`` when the task instance is not running
        """
        key = credits.ReservationKey.from_json(data)
        budget = credits.check_budget(data.get("budget"))
        label = f"{key.dag_id}.{key.task_id}[{key.map_index}] @ {key.run_id}"
        # Only a running task sends lookups: the connection's secret alone does not let anyone
        # fill a run's budget (and so stop its tasks) from outside a task.
        with self.backend.session() as session:
            running = self.backend.task_running(session, key)
        if not running:
            log.warning("Nyne credit reservation refused: task instance %s is not running", label)
            raise CallbackRefusedError(
                403, f"task instance {label} is not running: only a running task reserves credits"
            )
        result = credits.reserve_with_retries(self.backend.session, key, budget)
        if not result.granted:
            log.warning(
                "Nyne credit budget refused %s: %d of %d credits reserved (connection %r)",
                label,
                result.reserved,
                result.budget,
                key.conn_id,
            )
        elif not result.repeated:
            log.info("Nyne credits reserved for %s: %d of %d", label, result.reserved, result.budget)
        return result

    def release_credits(self, data: Mapping[str, Any]) -> bool:
        """
        Give a reservation's credits back (the submission proved it was not accepted).

        :param data: an authenticated request body with ``reservation_id``
        :raises CreditRequestError: naming a bad field
        """
        key = credits.ReservationKey.from_json(data)
        reservation_id = data.get("reservation_id")
        if not isinstance(reservation_id, str) or not reservation_id or len(reservation_id) > 32:
            raise credits.CreditRequestError("reservation_id must be the id the reservation was granted")
        released = credits.release_with_retries(self.backend.session, key, reservation_id)
        if released:
            log.info(
                "Nyne credits released for %s.%s[%d] @ %s", key.dag_id, key.task_id, key.map_index, key.run_id
            )
        return released

    # Verification -----------------------------------------------------------------------

    def verify(self, session: Session, auth: Authenticated, request_id: str) -> None:
        """
        Check that ``request_id`` is what the URL was issued for; raise :class:`CallbackRefusedError` if not.

        :param session: the receiver's transaction
        :param auth: the authenticated URL
        :param request_id: the request the callback is about
        """
        target = auth.target
        label = target.task_label()
        # The task's outlets are read only when the Asset is not one of the provider's own.
        if (
            auth.scope == "connection"
            and not connection_secret_may_sign(target, ())
            and not connection_secret_may_sign(target, self.backend.task_outlets(session, target))
        ):
            raise CallbackRefusedError(
                403,
                f"a connection's callback_secret signs only nyne:// Assets or the submitting task's "
                f"outlets, not {_short(target.asset_uri)!r}",
            )
        submission = self.backend.task_submission(session, target)
        if submission is None:
            raise CallbackRefusedError(403, f"no task instance {label}")
        if submission.correlation_id is not None and submission.correlation_id != auth.correlation_id:
            raise CallbackRefusedError(403, f"this callback URL is not the one {label} sent")
        if submission.request_id is not None and submission.request_id != request_id:
            raise CallbackRefusedError(403, f"request {request_id} was not submitted by {label}")
        if submission.request_id is None or submission.correlation_id is None:
            raise CallbackRefusedError(503, f"{label} has not recorded its request yet; deliver again later")

    # Accept -------------------------------------------------------------------------------

    def accept(self, auth: Authenticated, data: Mapping[str, Any]) -> AcceptOutcome:
        """
        Verify, store and dispatch one delivery, in one transaction; idempotent per URL and request.

        :param auth: the authenticated URL
        :param data: the job status ``data`` object (from :func:`~airflow_provider_nyne.callbacks.events.decode_body`)
        :raises CallbackPayloadError: when the status is not terminal or cannot be stored faithfully
        :raises CallbackRefusedError: when the request is not the one the URL was issued for
        """
        try:
            status = JobStatus.from_api(data)
        except NyneResponseError as exc:
            raise CallbackPayloadError(str(exc)[:MAX_COPIED_TEXT]) from None
        if not status.is_terminal:
            raise CallbackPayloadError(
                f"callback for request {status.request_id} has status {_short(data.get('status'))!r}, "
                "expected 'completed' or 'failed'"
            )
        payload_json = canonical_json(status.data)
        try:
            outcome = self._store_and_dispatch(auth, status, payload_json)
        except IntegrityError:
            # A concurrent delivery of the same request on the same URL committed first: this one is a repeat.
            log.info("Nyne callback for %s was stored concurrently", status.request_id)
            outcome = self._store_and_dispatch(auth, status, payload_json)
        target = auth.target
        if outcome.duplicate:
            log.info(
                "Nyne callback for request_id=%s delivered again (already %s); not dispatched again",
                outcome.request_id,
                outcome.dispatch,
            )
            return outcome
        log.info(
            "Nyne callback accepted: request_id=%s status=%s for %s: %s",
            status.request_id,
            status.status,
            target.task_label(),
            outcome.dispatch,
        )
        if target.wait and self.resume and "resumed" not in (outcome.dispatch or ""):
            self._resume_after_commit(auth, status)
        return outcome

    def _store_and_dispatch(self, auth: Authenticated, status: JobStatus, payload_json: str) -> AcceptOutcome:
        rid = status.request_id
        cid = auth.correlation_id
        target = auth.target
        with self.backend.session() as session:
            existing = store.get_record(session, cid, rid, lock=True)
            if existing is not None:
                store.record_redelivery(session, cid, rid)
                return AcceptOutcome(rid, True, existing.dispatch)
            self.verify(session, auth, rid)
            now = store.utcnow()
            store.insert_record(
                session,
                store.CallbackRecord(
                    request_id=rid,
                    correlation_id=cid,
                    status=status.status,
                    payload_json=payload_json,
                    dag_id=target.dag_id,
                    task_id=target.task_id,
                    run_id=target.run_id,
                    map_index=target.map_index,
                    dispatch="stored",
                ),
                now=now,
            )
            dispatch = self._dispatch(session, auth, status, now.isoformat() + "Z")
            store.set_dispatch(session, cid, rid, dispatch)
        return AcceptOutcome(rid, False, dispatch)

    def _dispatch(self, session: Session, auth: Authenticated, status: JobStatus, received_at: str) -> str:
        target = auth.target
        parts: list[str] = []
        if target.wait:
            if self.resume:
                event = event_from_status(status, "callback", correlation_id=auth.correlation_id)
                result = self.backend.resume_deferred(session, target, status.request_id, event)
                # Anything but "resumed" leaves the row as the mailbox the trigger reads.
                parts.append(result if result == "resumed" else f"mailbox({result})")
            else:
                parts.append("mailbox")
        if target.has_asset:
            if status.state is JobState.COMPLETED:
                extra = asset_event_extra(target, auth.correlation_id, status, received_at)
                parts.append(self.backend.register_asset_event(session, target, extra))
            else:
                log.warning(
                    "Nyne request %s failed (%r): no Asset event recorded for %s",
                    status.request_id,
                    _short(status.error),
                    target.asset_uri,
                )
                parts.append("asset_skipped(failed)")
        return ";".join(parts) or "stored"

    def _resume_after_commit(self, auth: Authenticated, status: JobStatus) -> None:
        # The task may have deferred between our read of it and our commit, while its trigger
        # read the still-empty mailbox: look once more now that the row is visible to everyone.
        rid, cid, target = status.request_id, auth.correlation_id, auth.target
        try:
            with self.backend.session() as session:
                record = store.get_record(session, cid, rid, lock=True)
                if record is None or "resumed" in (record.dispatch or ""):
                    return
                event = event_from_status(status, "callback", correlation_id=cid)
                result = self.backend.resume_deferred(session, target, rid, event)
                if result == "resumed":
                    store.set_dispatch(session, cid, rid, f"{record.dispatch};resumed")
                    log.info("Nyne callback for %s resumed %s", rid, target.task_label())
        except Exception:
            log.exception("Nyne callback for %s: re-check of the waiting task failed", rid)

    # Housekeeping -------------------------------------------------------------------------

    def purge(self) -> int:
        """Delete rows older than the retention period; returns how many went."""
        removed = 0
        with self.backend.session() as session:
            if self.enabled:
                removed += store.purge_older_than(session, self.retention)
            removed += credits.purge_older_than(session, self.retention)
        if removed:
            log.info("Purged %d Nyne callback and credit rows older than %s", removed, self.retention)
        return removed

    async def purge_forever(self) -> None:
        """Purge every ``purge_interval`` seconds until cancelled (the api-server's lifespan runs it)."""
        while True:
            await asyncio.sleep(self.purge_interval)
            try:
                await run_in_threadpool(self.purge)
            except Exception as exc:
                self.explain_failure(exc, "Could not purge old Nyne callbacks; will try again later")

    def explain_failure(self, exc: BaseException, what: str) -> None:
        """
        Log a database failure, naming the fix when the table is missing.

        :param exc: the failure
        :param what: what failed (no secret, no token)
        """
        if isinstance(exc, SQLAlchemyError):
            try:
                inspector = inspect(self.backend.engine())
                missing = [name for name in store.metadata.tables if not inspector.has_table(name)]
            except Exception:
                missing = []
            if missing:
                log.error(
                    "%s: table %s does not exist. Run `airflow db migrate` with the Nyne DB manager "
                    "enabled (see the README: Callbacks, Set-up)",
                    what,
                    ", ".join(missing),
                )
                return
        log.error("%s", what, exc_info=exc)

    # Mailbox ------------------------------------------------------------------------------

    def read(self, correlation_id: str, request_id: str) -> store.CallbackRecord | None:
        """
        The stored callback for ``request_id`` received on ``correlation_id``, or ``None``.

        :param correlation_id: the authenticated correlation id
        :param request_id: the request asked about
        """
        with self.backend.session() as session:
            return store.get_record(session, correlation_id, request_id)

    def check_database(self) -> None:
        """Read the table once (deep health check)."""
        with self.backend.session() as session:
            session.execute(select(store.callbacks_table.c.request_id).limit(1)).all()
