"""The callback receiver: a FastAPI app mounted by the api-server under ``/nyne``.

Routes (below the mount point), answered only once callbacks are configured
(``[nyne] callback_base_url`` set on the api-server); until then every path answers ``404``
and nothing touches the database:

* ``POST /v1/callback/{correlation_id}/{token}``: Nyne delivers a finished job here. The
  token is checked in constant time; a wrong or missing token answers the same ``404``
  as an unknown route, before the body is read. The body is capped (``413`` above
  ``[nyne] callback_max_body_bytes``, without reading it all), must arrive within
  ``body_timeout`` seconds (``408``), and must be strict JSON (no ``NaN``/``Infinity``,
  nesting at most :data:`~airflow_provider_nyne.callbacks.events.MAX_JSON_DEPTH` deep)
  carrying a ``request_id`` and a terminal status (``400`` otherwise; the API's envelope
  ``{"success": ..., "data": {...}}`` and a bare ``data`` object are both accepted).

  A callback is accepted only for the request its URL was issued for: the task instance
  named by the correlation id must have recorded this very URL (XCom
  ``callback_correlation_id``) and this very request (XCom ``request_id``). Anything else
  answers ``403`` and changes nothing; ``503`` while the task has not recorded them yet (Nyne
  delivers again). A URL signed with a connection's own ``callback_secret`` may name only a
  ``nyne://`` Asset or one of the submitting task's outlets (``403`` otherwise).

  The callback is stored (keyed by URL and request id) and dispatched in one database
  transaction and only then answered ``200``; a repeated delivery answers ``200`` without
  dispatching again; a failure answers ``503`` so that the API delivers again.
* ``GET /v1/callback/{correlation_id}/{token}?request_id=...``, or
  ``GET /v1/mailbox/{correlation_id}?request_id=...`` with the token in the
  ``X-Nyne-Callback-Token`` header (no credential in URLs, hence in logs): the mailbox. The
  callback stored for that request on that URL (``200``), or ``204`` when none has arrived
  yet. Read by :class:`~airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger` and by
  :func:`~airflow_provider_nyne.callbacks.assets.fetch_callback_status`.
* ``GET /health``: ``200 {"status": "ok"}`` for load balancers (``?db=1`` also reads the table).
* ``POST /v1/credits/reserve`` and ``POST /v1/credits/release``: the credit guard of
  submit tasks with ``credit_budget`` (see :mod:`~airflow_provider_nyne.callbacks.credits`).
  The JSON body names the task instance, the connection, the lookup's fingerprint and the
  budget (reserve) or the reservation id (release), and is signed with the connection's
  signing secret in the ``X-Nyne-Credits-Signature`` header (same precedence as callbacks:
  the connection's ``callback_secret``, else ``[nyne] callback_secret``). A body larger than
  8 KiB, unreadable, or not signed answers the uniform ``404``; a signed one with a bad field
  ``400``. Reserve answers ``200`` with the reservation, ``409`` when the budget would be
  exceeded; release ``200`` with ``{"released": ...}``; both ``503`` when the database fails.
  These routes answer once ``[nyne] callback_base_url`` or ``[nyne] callback_secret`` is set.

Whatever the method or the path below ``/v1/callback/``, the token never reaches a log: the
path every access log reads is rewritten before the request is routed. Old rows are purged
by a background task, never on a request.

Airflow does not authenticate plugin apps: the capability URL is the only credential. What a
delivery may do is decided by :class:`~airflow_provider_nyne.callbacks.service.CallbackService`;
this module is its HTTP face.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_provider_nyne.callbacks import credits, store
from airflow_provider_nyne.callbacks.events import CallbackPayloadError, decode_body, extract_status_data
from airflow_provider_nyne.callbacks.service import CallbackRefusedError, CallbackService
from airflow_provider_nyne.callbacks.tokens import (
    CALLBACK_PATH,
    CREDITS_PATH,
    CREDITS_SIGNATURE_HEADER,
    MAILBOX_PATH,
    TOKEN_HEADER,
)

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: The body FastAPI gives an unknown route; every authentication failure answers exactly this.
NOT_FOUND_BODY = {"detail": "Not Found"}
#: Largest credit guard request body read (a few short ids and numbers).
MAX_CREDITS_BODY = 8 * 1024


def _masked(path: str) -> str:
    """``path`` with everything after the correlation id of a callback URL replaced by ``***``."""
    parts = path.split("/")
    marker = CALLBACK_PATH.rsplit("/", 1)[-1]
    if marker not in parts:
        return path
    # The first non-empty segment after "callback" is the correlation id; anything after it may be the token.
    after = parts.index(marker) + 1
    while after < len(parts) and not parts[after]:
        after += 1
    if after + 1 >= len(parts):
        return path
    return "/".join([*parts[: after + 1], "***"])


class _ReceiverGuard:
    """
    Outermost layer of the receiver: hides tokens from every access log and keeps an unconfigured receiver inert.

    The api-server's access log (and uvicorn's, on older Airflow) reads the path from the
    ASGI scope this app shares with it. The shared scope gets the masked path before
    anything else runs, whatever the method or the path suffix (``405``, ``404``, ``500``);
    the app below routes on a copy that keeps the real one.
    """

    def __init__(self, app: ASGIApp, service: CallbackService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inner = dict(scope)
        path = scope.get("path")
        if isinstance(path, str):
            scope["path"] = _masked(path)
        raw = scope.get("raw_path")
        if isinstance(raw, bytes):
            scope["raw_path"] = _masked(raw.decode("latin-1")).encode("latin-1")
        enabled = self.service.enabled
        if not enabled and isinstance(path, str) and f"{CREDITS_PATH}/" in path:
            enabled = self.service.credits_enabled
        if not enabled:
            await _not_found()(inner, receive, send)
            return
        await self.app(inner, receive, send)


def _not_found() -> JSONResponse:
    return JSONResponse(NOT_FOUND_BODY, status_code=404)


def _error(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=dict(headers or {}))


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


def _record_response(record: store.CallbackRecord) -> Response:
    meta = json.dumps(
        {
            "request_id": record.request_id,
            "status": record.status,
            "dispatch": record.dispatch,
            "deliveries": record.deliveries,
            "received_at": record.received_at.isoformat() + "Z" if record.received_at else None,
        },
        separators=(",", ":"),
    )
    # The payload is served as stored: it was checked to be JSON that reads back as it came.
    body = meta[:-1] + ',"data":' + (record.payload_json or "{}") + "}"
    return Response(body.encode("utf-8"), media_type="application/json")


def create_app(service: CallbackService | None = None) -> FastAPI:
    """
    Build the receiver app.

    :param service: the logic behind it (default: a :class:`CallbackService` on Airflow's database)
    """
    svc = service or CallbackService()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The api-server enters mounted apps' lifespans at start. Nothing is created here:
        # the table belongs to `airflow db migrate`.
        purger = asyncio.create_task(svc.purge_forever()) if svc.credits_enabled else None
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger

    app = FastAPI(
        title="Nyne callbacks",
        description="Receives Nyne job callbacks (capability URLs; not authenticated by Airflow).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # A redirect would answer a callback with its own URL; nothing here needs one.
        redirect_slashes=False,
    )
    app.add_middleware(_ReceiverGuard, service=svc)
    app.state.nyne_callback_service = svc

    @app.get("/health")
    async def health(request: Request) -> Response:
        if request.query_params.get("db") in ("1", "true"):
            try:
                await run_in_threadpool(svc.check_database)
            except Exception as exc:
                svc.explain_failure(exc, "Nyne callback health check: database unavailable")
                return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.post(CALLBACK_PATH + "/{correlation_id}/{token}")
    async def receive(correlation_id: str, token: str, request: Request) -> Response:
        auth = await run_in_threadpool(svc.authenticate, correlation_id, token)
        if auth is None:
            return _not_found()
        try:
            body = await asyncio.wait_for(_read_capped(request, svc.max_body_bytes), svc.body_timeout)
        except ClientDisconnect:
            return _error(400, "client disconnected")
        except asyncio.TimeoutError:
            return _error(408, f"callback body not received within {svc.body_timeout:g} s")
        if body is None:
            return _error(413, f"callback body larger than {svc.max_body_bytes} bytes")
        try:
            data = extract_status_data(decode_body(body))
        except CallbackPayloadError as exc:
            return _error(400, str(exc))
        header_rid = request.headers.get("x-nyne-request-id")
        if header_rid and header_rid != str(data["request_id"]):
            return _error(400, "X-Nyne-Request-Id does not match the body's request_id")
        try:
            outcome = await run_in_threadpool(svc.accept, auth, data)
        except CallbackPayloadError as exc:
            return _error(400, str(exc))
        except CallbackRefusedError as exc:
            log.warning(
                "Nyne callback for request_id=%s refused (%d): %s", data["request_id"], exc.status_code, exc
            )
            headers = {"Retry-After": "5"} if exc.status_code == 503 else None
            return _error(exc.status_code, exc.detail, headers)
        except Exception as exc:
            svc.explain_failure(
                exc, f"Nyne callback for {data['request_id']} could not be stored; answering 503"
            )
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

    async def _credit_request(request: Request) -> dict[str, Any] | Response:
        """The authenticated body of a credit guard request, or the uniform 404."""
        try:
            body = await asyncio.wait_for(_read_capped(request, MAX_CREDITS_BODY), svc.body_timeout)
        except (ClientDisconnect, asyncio.TimeoutError):
            return _not_found()
        if body is None:
            return _not_found()
        signature = request.headers.get(CREDITS_SIGNATURE_HEADER, "")
        data = await run_in_threadpool(svc.authenticate_credits, body, signature)
        return _not_found() if data is None else data

    async def _credit_answer(work: Callable[[], Response], what: str) -> Response:
        try:
            return await run_in_threadpool(work)
        except credits.CreditRequestError as exc:
            return _error(400, str(exc))
        except CallbackRefusedError as exc:
            return _error(exc.status_code, exc.detail)
        except Exception as exc:
            svc.explain_failure(exc, f"Nyne credit guard: {what} failed; answering 503")
            return _error(503, f"credit {what} not recorded; try again", {"Retry-After": "1"})

    @app.post(CREDITS_PATH + "/reserve")
    async def reserve(request: Request) -> Response:
        data = await _credit_request(request)
        if isinstance(data, Response):
            return data

        def work() -> Response:
            result = svc.reserve_credits(data)
            return JSONResponse(result.to_json(), status_code=200 if result.granted else 409)

        return await _credit_answer(work, "reservation")

    @app.post(CREDITS_PATH + "/release")
    async def release(request: Request) -> Response:
        data = await _credit_request(request)
        if isinstance(data, Response):
            return data

        def work() -> Response:
            return JSONResponse({"released": svc.release_credits(data)})

        return await _credit_answer(work, "release")

    async def _mailbox(correlation_id: str, token: str, request: Request) -> Response:
        auth = await run_in_threadpool(svc.authenticate, correlation_id, token)
        if auth is None:
            return _not_found()
        request_id = request.query_params.get("request_id")
        if not request_id:
            return _error(400, "request_id query parameter is required")
        try:
            record = await run_in_threadpool(svc.read, correlation_id, request_id)
        except Exception as exc:
            svc.explain_failure(exc, "Nyne callback mailbox read failed")
            return _error(503, "mailbox unavailable")
        if record is None:
            return Response(status_code=204)
        return _record_response(record)

    @app.get(CALLBACK_PATH + "/{correlation_id}/{token}")
    async def mailbox(correlation_id: str, token: str, request: Request) -> Response:
        return await _mailbox(correlation_id, token, request)

    @app.get(MAILBOX_PATH + "/{correlation_id}")
    async def mailbox_by_header(correlation_id: str, request: Request) -> Response:
        return await _mailbox(correlation_id, request.headers.get(TOKEN_HEADER, ""), request)

    return app
