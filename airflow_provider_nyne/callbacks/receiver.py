"""The callback receiver: a FastAPI app mounted by the api-server under ``/nyne``.

Routes (below the mount point):

* ``POST /v1/callback/{correlation_id}/{token}``: Nyne delivers a finished job here. The
  token is checked in constant time; a wrong or missing token answers the same ``404``
  as an unknown route, before the body is read. The body is capped (``413`` above
  ``[nyne] callback_max_body_bytes``, without reading it all), must be JSON carrying a
  ``request_id`` and a terminal status (``400`` otherwise; the API's envelope
  ``{"success": ..., "data": {...}}`` and a bare ``data`` object are both accepted). The
  callback is stored and dispatched in one database transaction and only then answered
  ``200``; a repeated delivery answers ``200`` without dispatching again; a failure answers
  ``503`` so that the API delivers again.
* ``GET /v1/callback/{correlation_id}/{token}?request_id=...``, or
  ``GET /v1/mailbox/{correlation_id}?request_id=...`` with the token in the
  ``X-Nyne-Callback-Token`` header (no credential in URLs, hence in logs): the mailbox. The
  stored callback for that request (``200``), or ``204`` when none has arrived yet. Read by
  :class:`~airflow_provider_nyne.callbacks.triggers.NyneCallbackTrigger` and by
  :func:`~airflow_provider_nyne.callbacks.assets.fetch_callback_payload`.
* ``GET /health``: ``200 {"status": "ok"}`` for load balancers (``?db=1`` also reads the table).

Airflow does not authenticate plugin apps: the capability URL is the only credential.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from airflow_provider_nyne.callbacks import config, store
from airflow_provider_nyne.callbacks.events import (
    CallbackPayloadError,
    event_from_status,
    extract_status_data,
)
from airflow_provider_nyne.callbacks.tokens import (
    CALLBACK_PATH,
    MAILBOX_PATH,
    TOKEN_HEADER,
    CallbackTarget,
    decode_correlation_id,
    verify_token,
)
from airflow_provider_nyne.client.errors import NyneResponseError
from airflow_provider_nyne.client.models import JobState, JobStatus
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID

__all__ = [
    "AcceptOutcome",
    "CallbackBackend",
    "CallbackService",
    "CorrelationConflictError",
    "create_app",
]

log = logging.getLogger(__name__)

#: The body FastAPI gives an unknown route; every authentication failure answers exactly this.
NOT_FOUND_BODY = {"detail": "Not Found"}
_PURGE_EVERY_SECONDS = 60.0
# What an Airflow connection id can look like; anything else is not looked up at all.
_CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")


class CorrelationConflictError(Exception):
    """The request id was already received on a different callback URL (answered ``409``)."""


class CallbackBackend(Protocol):
    """What the receiver needs from Airflow (see :class:`~airflow_provider_nyne.callbacks.dispatch.AirflowBackend`)."""

    def engine(self) -> Engine:
        """The metadata database engine."""

    def session(self) -> Any:
        """A context manager yielding a session, committed on success."""

    def connection_secret(self, conn_id: str) -> str | None:
        """The connection's ``callback_secret`` extra."""

    def register_asset_event(self, session: Session, target: CallbackTarget, extra: Mapping[str, Any]) -> str:
        """Record an Asset event; returns a dispatch label."""

    def resume_deferred(
        self, session: Session, target: CallbackTarget, request_id: str, event: Mapping[str, Any]
    ) -> str:
        """Resume the deferred task; returns a dispatch label."""


def asset_event_extra(
    target: CallbackTarget, correlation_id: str, status: JobStatus, received_at: str
) -> dict[str, Any]:
    """The ``extra`` of the Asset event recorded for a callback: small, no result items."""
    result = status.data.get("result")
    result = result if isinstance(result, Mapping) else {}
    target_info = result.get("target") if isinstance(result.get("target"), Mapping) else {}
    return {
        "request_id": status.request_id,
        "status": status.status,
        "total_count": status.total_count,
        "interaction_type": result.get("interaction_type"),
        "platform": result.get("platform"),
        "target_username": target_info.get("username") if isinstance(target_info, Mapping) else None,
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
    The receiver's logic, independent of HTTP: authenticate, store, dispatch.

    :param backend: access to Airflow (default: :class:`~airflow_provider_nyne.callbacks.dispatch.AirflowBackend`)
    :param max_body_bytes: body cap (default ``[nyne] callback_max_body_bytes``)
    :param retention: how long rows are kept (default ``[nyne] callback_retention_days``)
    :param resume: resume waiting tasks directly (default ``[nyne] callback_resume_deferred``)
    :param config_secret: returns the deployment-wide secret (default ``[nyne] callback_secret``)
    """

    def __init__(
        self,
        backend: CallbackBackend | None = None,
        *,
        max_body_bytes: int | None = None,
        retention: timedelta | None = None,
        resume: bool | None = None,
        config_secret: Callable[[], str | None] | None = None,
    ) -> None:
        if backend is None:
            from airflow_provider_nyne.callbacks.dispatch import AirflowBackend

            backend = AirflowBackend()
        self.backend = backend
        self._max_body_bytes = max_body_bytes
        self._retention = retention
        self._resume = resume
        self._config_secret = config_secret or config.config_secret
        self._table_ready = False
        self._last_purge = 0.0

    # Settings are read when first needed, so the app can be built before Airflow's config is.
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

    # Table --------------------------------------------------------------------------------

    def ensure_table(self) -> None:
        """Create the provider's table when missing (once per process)."""
        if not self._table_ready:
            store.ensure_table(self.backend.engine())
            self._table_ready = True

    # Authentication -------------------------------------------------------------------------

    def authenticate(self, correlation_id: str, token: str) -> CallbackTarget | None:
        """
        The decoded target when ``token`` signs ``correlation_id``, else ``None``.

        The correlation id names the connection whose secret signs it, so it is decoded
        first; every failure (undecodable id, no secret, wrong token) gives the same ``None``.

        :param correlation_id: from the URL
        :param token: from the URL
        """
        try:
            target = decode_correlation_id(correlation_id)
        except ValueError:
            return None
        if target.conn_id is not None and not _CONN_ID.fullmatch(target.conn_id):
            return None
        secret = self.secret_for(target.conn_id or DEFAULT_CONN_ID)
        if not secret:
            log.error(
                "Nyne callback refused: no callback secret for connection %r (set its callback_secret "
                "extra or [nyne] callback_secret on the api-server)",
                target.conn_id or DEFAULT_CONN_ID,
            )
            return None
        return target if verify_token(secret, correlation_id, token) else None

    def secret_for(self, conn_id: str) -> str | None:
        """
        The signing secret: the connection's ``callback_secret``, else ``[nyne] callback_secret``.

        :param conn_id: the ``nyne`` connection named by the correlation id
        """
        try:
            secret = self.backend.connection_secret(conn_id)
        except Exception:
            log.exception("Nyne callback: could not read connection %r", conn_id)
            secret = None
        return secret or self._config_secret()

    # Accept -------------------------------------------------------------------------------

    def accept(self, target: CallbackTarget, correlation_id: str, data: Mapping[str, Any]) -> AcceptOutcome:
        """
        Store one delivery and dispatch it, in one transaction; idempotent per request id.

        :param target: the authenticated target
        :param correlation_id: the correlation id it arrived on
        :param data: the job status ``data`` object
        :raises CallbackPayloadError: when the status is not terminal
        :raises CorrelationConflictError: when the request id arrived on another URL before
        """
        try:
            status = JobStatus.from_api(data)
        except NyneResponseError as exc:
            raise CallbackPayloadError(str(exc)) from None
        if not status.is_terminal:
            raise CallbackPayloadError(
                f"callback for request {status.request_id} has status {data.get('status')!r}, "
                "expected 'completed' or 'failed'"
            )
        self.ensure_table()
        try:
            outcome = self._store_and_dispatch(target, correlation_id, status)
        except IntegrityError:
            # A concurrent delivery of the same request committed first: this one is a repeat.
            log.info("Nyne callback for %s was stored concurrently", status.request_id)
            outcome = self._store_and_dispatch(target, correlation_id, status)
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
            self._resume_after_commit(target, correlation_id, status)
        return outcome

    def _store_and_dispatch(
        self, target: CallbackTarget, correlation_id: str, status: JobStatus
    ) -> AcceptOutcome:
        rid = status.request_id
        with self.backend.session() as session:
            existing = store.get_record(session, rid, lock=True)
            if existing is not None:
                if existing.correlation_id != correlation_id:
                    raise CorrelationConflictError(rid)
                store.record_redelivery(session, rid)
                return AcceptOutcome(rid, True, existing.dispatch)
            now = store.utcnow()
            store.insert_record(
                session,
                store.CallbackRecord(
                    request_id=rid,
                    correlation_id=correlation_id,
                    status=status.status,
                    payload=status.data,
                    dag_id=target.dag_id,
                    task_id=target.task_id,
                    run_id=target.run_id,
                    map_index=target.map_index,
                    dispatch="stored",
                ),
                now=now,
            )
            dispatch = self._dispatch(session, target, correlation_id, status, now.isoformat() + "Z")
            store.set_dispatch(session, rid, dispatch)
        # Housekeeping in its own transaction: it must never cost a callback its acknowledgement.
        self._maybe_purge()
        return AcceptOutcome(rid, False, dispatch)

    def _dispatch(
        self,
        session: Session,
        target: CallbackTarget,
        correlation_id: str,
        status: JobStatus,
        received_at: str,
    ) -> str:
        parts: list[str] = []
        if target.wait:
            if self.resume:
                event = event_from_status(status, "callback", correlation_id=correlation_id)
                result = self.backend.resume_deferred(session, target, status.request_id, event)
                # Anything but "resumed" leaves the row as the mailbox the trigger reads.
                parts.append(result if result == "resumed" else f"mailbox({result})")
            else:
                parts.append("mailbox")
        if target.has_asset:
            if status.state is JobState.COMPLETED:
                extra = asset_event_extra(target, correlation_id, status, received_at)
                parts.append(self.backend.register_asset_event(session, target, extra))
            else:
                log.warning(
                    "Nyne request %s failed (%s): no Asset event recorded for %s",
                    status.request_id,
                    status.error,
                    target.asset_uri,
                )
                parts.append("asset_skipped(failed)")
        return ";".join(parts) or "stored"

    def _resume_after_commit(self, target: CallbackTarget, correlation_id: str, status: JobStatus) -> None:
        # The task may have deferred between our read of it and our commit, while its trigger
        # read the still-empty mailbox: look once more now that the row is visible to everyone.
        try:
            with self.backend.session() as session:
                record = store.get_record(session, status.request_id, lock=True)
                if record is None or "resumed" in (record.dispatch or ""):
                    return
                event = event_from_status(status, "callback", correlation_id=correlation_id)
                result = self.backend.resume_deferred(session, target, status.request_id, event)
                if result == "resumed":
                    store.set_dispatch(session, status.request_id, f"{record.dispatch};resumed")
                    log.info("Nyne callback for %s resumed %s", status.request_id, target.task_label())
        except Exception:
            log.exception("Nyne callback for %s: re-check of the waiting task failed", status.request_id)

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY_SECONDS:
            return
        self._last_purge = now
        try:
            with self.backend.session() as session:
                removed = store.purge_older_than(session, self.retention)
        except Exception:
            log.exception("Could not purge old Nyne callbacks; will try again later")
            return
        if removed:
            log.info("Purged %d Nyne callbacks older than %s", removed, self.retention)

    # Mailbox ------------------------------------------------------------------------------

    def read(self, correlation_id: str, request_id: str) -> store.CallbackRecord | None:
        """
        The stored callback for ``request_id`` received on ``correlation_id``, or ``None``.

        :param correlation_id: the authenticated correlation id
        :param request_id: the request asked about
        """
        self.ensure_table()
        with self.backend.session() as session:
            record = store.get_record(session, request_id)
        if record is None or record.correlation_id != correlation_id:
            return None
        return record

    def check_database(self) -> None:
        """Read the table once (deep health check)."""
        self.ensure_table()
        with self.backend.session() as session:
            session.execute(select(store.callbacks_table.c.request_id).limit(1)).all()


def _hide_token(request: Request, token: str) -> None:
    """Replace the token in the request's path, so that access logs written afterwards never show it.

    The api-server's (and uvicorn's) access log reads the path from the ASGI scope this app
    shares with them, once the response starts or ends; the route has already been matched.
    """
    if not token:
        return
    scope = request.scope
    path = scope.get("path")
    if isinstance(path, str):
        scope["path"] = path.replace(f"/{token}", "/***")
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        scope["raw_path"] = raw.replace(f"/{token}".encode("latin-1", "replace"), b"/***")


def _not_found() -> JSONResponse:
    return JSONResponse(NOT_FOUND_BODY, status_code=404)


def _error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it exceeds ``limit`` (the rest is never read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                return None
        except ValueError:
            pass
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: CallbackService | None = None) -> FastAPI:
    """
    Build the receiver app.

    :param service: the logic behind it (default: a :class:`CallbackService` on Airflow's database)
    """
    svc = service or CallbackService()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        # The api-server enters mounted apps' lifespans at start: create the table then.
        try:
            await run_in_threadpool(svc.ensure_table)
        except Exception:
            log.exception("Could not create the Nyne callback table yet; will retry on the first callback")
        yield

    app = FastAPI(
        title="Nyne callbacks",
        description="Receives Nyne job callbacks (capability URLs; not authenticated by Airflow).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.nyne_callback_service = svc

    @app.get("/health")
    async def health(request: Request) -> Response:
        if request.query_params.get("db") in ("1", "true"):
            try:
                await run_in_threadpool(svc.check_database)
            except Exception:
                log.exception("Nyne callback health check: database unavailable")
                return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.post(CALLBACK_PATH + "/{correlation_id}/{token}")
    async def receive(correlation_id: str, token: str, request: Request) -> Response:
        _hide_token(request, token)
        target = await run_in_threadpool(svc.authenticate, correlation_id, token)
        if target is None:
            return _not_found()
        try:
            body = await _read_capped(request, svc.max_body_bytes)
        except ClientDisconnect:
            return _error(400, "client disconnected")
        if body is None:
            return _error(413, f"callback body larger than {svc.max_body_bytes} bytes")
        try:
            data = extract_status_data(json.loads(body))
        except (ValueError, CallbackPayloadError) as exc:
            return _error(
                400, str(exc) if isinstance(exc, CallbackPayloadError) else "body is not valid JSON"
            )
        header_rid = request.headers.get("x-nyne-request-id")
        if header_rid and header_rid != str(data["request_id"]):
            return _error(400, "X-Nyne-Request-Id does not match the body's request_id")
        try:
            outcome = await run_in_threadpool(svc.accept, target, correlation_id, data)
        except CallbackPayloadError as exc:
            return _error(400, str(exc))
        except CorrelationConflictError:
            log.warning(
                "Nyne callback for %s arrived on a different callback URL than before", data["request_id"]
            )
            return _error(409, "request_id already received on another callback URL")
        except Exception:
            log.exception("Nyne callback for %s could not be stored; answering 503", data.get("request_id"))
            return _error(503, "callback not stored; deliver again")
        return JSONResponse(
            {
                "accepted": True,
                "request_id": outcome.request_id,
                "duplicate": outcome.duplicate,
                "dispatch": outcome.dispatch,
            },
            status_code=200,
        )

    async def _mailbox(correlation_id: str, token: str, request: Request) -> Response:
        target = await run_in_threadpool(svc.authenticate, correlation_id, token)
        if target is None:
            return _not_found()
        request_id = request.query_params.get("request_id")
        if not request_id:
            return _error(400, "request_id query parameter is required")
        try:
            record = await run_in_threadpool(svc.read, correlation_id, request_id)
        except Exception:
            log.exception("Nyne callback mailbox read failed")
            return _error(503, "mailbox unavailable")
        if record is None:
            return Response(status_code=204)
        return JSONResponse(
            {
                "request_id": record.request_id,
                "status": record.status,
                "dispatch": record.dispatch,
                "deliveries": record.deliveries,
                "received_at": record.received_at.isoformat() + "Z" if record.received_at else None,
                "data": dict(record.payload),
            }
        )

    @app.get(CALLBACK_PATH + "/{correlation_id}/{token}")
    async def mailbox(correlation_id: str, token: str, request: Request) -> Response:
        _hide_token(request, token)
        return await _mailbox(correlation_id, token, request)

    @app.get(MAILBOX_PATH + "/{correlation_id}")
    async def mailbox_by_header(correlation_id: str, request: Request) -> Response:
        return await _mailbox(correlation_id, request.headers.get(TOKEN_HEADER, ""), request)

    return app
