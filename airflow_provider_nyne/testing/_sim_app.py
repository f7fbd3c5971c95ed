"""The simulator's ASGI application: API routes, admin routes, faults and callback delivery."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import httpx

from airflow_provider_nyne.testing._sim_controls import account_from_mapping, ledger_snapshot
from airflow_provider_nyne.testing._sim_core import (
    CallbackAttempt,
    FaultRule,
    Job,
    RequestRecord,
    SimulatorCore,
    iso,
)
from airflow_provider_nyne.testing._sim_validation import ApiError

__all__ = ["ADMIN_PREFIX", "CALLBACK_RETRY_DELAYS", "MIN_CALLBACK_TIMEOUT", "SimulatorApp", "envelope"]

log = logging.getLogger("airflow_provider_nyne.testing.simulator")

ADMIN_PREFIX = "/_simulator"
#: Waits before retries 1-5 of a callback, in seconds, before ``callback_time_scale``.
CALLBACK_RETRY_DELAYS = (1.0, 5.0, 15.0, 60.0, 300.0)
CALLBACK_TIMEOUT = 30.0
MIN_CALLBACK_TIMEOUT = 1.0
_MAX_BODY = 1024 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def envelope(data: Any) -> dict[str, Any]:
    """Wrap ``data`` in the API's success envelope."""
    return {"success": True, "data": data, "timestamp": iso(time.time())}


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}, "timestamp": iso(time.time())}


async def _send_raw(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    )
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await _send_raw(send, status, body, headers or {})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= _MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _drop_connection(send: Send) -> None:
    """Close the TCP connection without answering.

    uvicorn's HTTP protocols pass a bound ``RequestResponseCycle.send``; its ``transport`` is the
    connection's asyncio transport. ``abort()`` closes the socket at once and uvicorn, seeing
    the disconnect, sends nothing.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("this server does not expose its transport; cannot drop the connection")
    transport.abort()
    for _ in range(200):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)


def _query_param(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get(name)
    return values[0] if values else None


class SimulatorApp:
    """ASGI application serving the simulated API over a :class:`SimulatorCore`."""

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        core.on_job_scheduled = self._schedule_completion

    # ----------------------------------------------------------------- lifecycle
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the event loop that runs the server (timers and callbacks run there)."""
        self._loop = loop

    async def aclose(self) -> None:
        """Cancel callback deliveries still waiting and close the callback client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.core.on_job_scheduled = None

    # ----------------------------------------------------------------- completion + callbacks
    def _schedule_completion(self, job: Job) -> None:
        # Called in the server's loop for new jobs, from any thread for released ones.
        loop = self._loop
        if loop is None or job.held:
            return
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._arm_completion(job.request_id, job.end_mono)
        else:
            loop.call_soon_threadsafe(self._arm_completion, job.request_id, job.end_mono)

    def _arm_completion(self, request_id: str, end_mono: float) -> None:
        assert self._loop is not None
        self._loop.call_later(max(0.0, end_mono - time.monotonic()), self._on_completion_time, request_id)

    def _on_completion_time(self, request_id: str) -> None:
        due = self.core.complete_job(request_id)
        if isinstance(due, float):
            # The loop's clock and time.monotonic() disagree slightly: try again when due.
            assert self._loop is not None
            self._loop.call_later(due + 0.001, self._on_completion_time, request_id)
            return
        if due is None:
            return
        job, data, generation = due
        assert job.query.callback_url is not None
        body = json.dumps(envelope(data), separators=(",", ":")).encode()
        task = asyncio.ensure_future(self._deliver(job.request_id, job.query.callback_url, body, generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
            )
        return self._http

    async def _deliver(self, request_id: str, url: str, body: bytes, generation: int) -> None:
        attempts = len(CALLBACK_RETRY_DELAYS) + 1
        for attempt in range(1, attempts + 1):
            if generation != self.core.generation:
                return  # the simulator was reset: this job no longer exists
            scale = self.core.settings.callback_time_scale
            timeout = max(CALLBACK_TIMEOUT * scale, MIN_CALLBACK_TIMEOUT)
            started = time.time()
            status_code: int | None = None
            error: str | None = None
            try:
                response = await self._client().post(
                    url,
                    content=body,
                    timeout=timeout,
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": "nyne-simulator",
                        "X-Nyne-Request-Id": request_id,
                        "X-Nyne-Delivery-Attempt": str(attempt),
                    },
                )
                status_code = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            delivered = status_code is not None and 200 <= status_code < 300
            recorded = self.core.record_callback(
                CallbackAttempt(
                    request_id, url, attempt, started, time.time(), status_code, error, delivered
                ),
                generation,
            )
            if delivered or not recorded:
                return
            if attempt < attempts:
                await asyncio.sleep(
                    CALLBACK_RETRY_DELAYS[attempt - 1] * self.core.settings.callback_time_scale
                )
        log.info("Callback for %s gave up after %d attempts", request_id, attempts)

    # ----------------------------------------------------------------- ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"].upper()
        body = await _read_body(receive)
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self._admin(method, path[len(ADMIN_PREFIX) :], scope, body, send)
            return
        endpoint: str | None = None
        if path == "/person/interactions":
            endpoint = {"POST": "submit", "GET": "status"}.get(method)
        elif path == "/usage":
            endpoint = "usage" if method == "GET" else None
        else:
            await _send_json(send, 404, _error_body("not_found", f"No route {method} {path}"))
            return
        if endpoint is None:
            await _send_json(
                send, 405, _error_body("method_not_allowed", f"{method} is not allowed on {path}")
            )
            return
        await self._api(endpoint, method, path, scope, body, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _api(
        self, endpoint: str, method: str, path: str, scope: Scope, body: bytes, send: Send
    ) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        api_key = headers.get("x-api-key") or None

        def record(
            status: int | None, code: str | None, fault: str | None, request_id: str | None = None
        ) -> None:
            self.core.record_request(
                RequestRecord(time.time(), method, endpoint, path, api_key, status, code, fault, request_id),
            )

        delay, fault = self.core.take_response_faults(endpoint)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is not None and fault.kind == "error":
            # Record before answering: a test that reads the ledger right after its response
            # must find the entry.
            record(fault.params["status"], fault.params["code"], "error")
            await self._send_fault_error(send, fault)
            return
        if fault is not None and not fault.params.get("after_processing"):
            record(fault.params.get("status") if fault.kind == "malformed_json" else None, None, fault.kind)
            await self._send_fault_answer(send, fault)
            return

        client = scope.get("client")
        status, payload, extra_headers, request_id = self._process(
            endpoint, headers, client[0] if client else None, scope, body
        )
        code = None if payload.get("success") else payload["error"]["code"]
        if fault is not None:
            answered = fault.params.get("status") if fault.kind == "malformed_json" else None
            record(answered, code, f"{fault.kind}_after_processing", request_id)
            await self._send_fault_answer(send, fault)
            return
        record(status, code, None, request_id)
        await _send_json(send, status, payload, extra_headers)

    def _process(
        self,
        endpoint: str,
        headers: Mapping[str, str],
        client_ip: str | None,
        scope: Scope,
        body: bytes,
    ) -> tuple[int, dict[str, Any], dict[str, str], str | None]:
        rate_headers: dict[str, str] = {}
        try:
            account = self.core.authenticate(endpoint, headers, client_ip)
            rate_headers = self.core.rate_limit(account, endpoint)
            if endpoint == "submit":
                job = self.core.submit(account, body)
                data = {"request_id": job.request_id, "status": "queued"}
                return 202, envelope(data), rate_headers, job.request_id
            if endpoint == "status":
                request_id = _query_param(scope, "request_id")
                return 200, envelope(self.core.poll(account, request_id)), rate_headers, request_id
            return 200, envelope(self.core.usage(account)), rate_headers, None
        except ApiError as exc:
            answer_headers = {**rate_headers, **exc.headers}
            request_id = _query_param(scope, "request_id") if endpoint == "status" else None
            return exc.status, _error_body(exc.code, exc.message), answer_headers, request_id

    async def _send_fault_error(self, send: Send, fault: FaultRule) -> None:
        params = fault.params
        headers: dict[str, str] = {}
        if params.get("retry_after") is not None:
            retry_after = params["retry_after"]
            headers["Retry-After"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            )
        await _send_json(send, params["status"], _error_body(params["code"], params["message"]), headers)

    async def _send_fault_answer(self, send: Send, fault: FaultRule) -> None:
        if fault.kind == "drop":
            await _drop_connection(send)
        elif fault.kind == "malformed_json":
            await _send_raw(send, fault.params["status"], fault.params["body"].encode(), {})
        else:  # pragma: no cover - add_fault rejects other kinds
            raise AssertionError(fault.kind)

    # ----------------------------------------------------------------- admin
    async def _admin(self, method: str, route: str, scope: Scope, body: bytes, send: Send) -> None:
        route = route or "/"
        try:
            payload: Any = json.loads(body) if body.strip() else None
        except ValueError:
            await _send_json(send, 400, _error_body("invalid_json", "admin request body is not valid JSON"))
            return
        handler = _ADMIN_ROUTES.get((method, route))
        if handler is None:
            await _send_json(
                send, 404, _error_body("not_found", f"No admin route {method} {ADMIN_PREFIX}{route}")
            )
            return
        try:
            result = handler(self, scope, payload)
        except (ValueError, TypeError, KeyError) as exc:
            await _send_json(send, 400, _error_body("invalid_admin_request", str(exc)))
            return
        await _send_json(send, 200, envelope(result))

    def _admin_health(self, scope: Scope, payload: Any) -> Any:
        return {"status": "ok"}

    def _admin_ledger(self, scope: Scope, payload: Any) -> Any:
        summary = (_query_param(scope, "summary") or "").lower() in ("1", "true", "yes")
        return ledger_snapshot(self.core, summary=summary)

    def _admin_reset(self, scope: Scope, payload: Any) -> Any:
        restore = bool(payload.get("settings", False)) if isinstance(payload, dict) else False
        self.core.reset(settings=restore)
        return {"reset": True, "settings_restored": restore}

    def _admin_faults(self, scope: Scope, payload: Any) -> Any:
        return {"faults": [rule.as_dict() for rule in self.core.active_faults()]}

    def _admin_add_faults(self, scope: Scope, payload: Any) -> Any:
        specs = payload if isinstance(payload, list) else [payload]
        for spec in specs:
            if not isinstance(spec, dict):
                raise TypeError("a fault is a JSON object with a 'kind'")
        added = [self.core.add_fault(spec).as_dict() for spec in specs]
        return {"added": added, "faults": [rule.as_dict() for rule in self.core.active_faults()]}

    def _admin_clear_faults(self, scope: Scope, payload: Any) -> Any:
        self.core.clear_faults()
        return {"faults": []}

    def _admin_accounts(self, scope: Scope, payload: Any) -> Any:
        self.core.settle_due()
        with self.core.lock:
            return {"accounts": [account.public() for account in self.core.accounts.values()]}

    def _admin_add_account(self, scope: Scope, payload: Any) -> Any:
        if not isinstance(payload, dict):
            raise TypeError("an account is a JSON object with api_key and api_secret")
        return self.core.upsert_account(account_from_mapping(payload)).public()

    def _admin_release_jobs(self, scope: Scope, payload: Any) -> Any:
        request_id = payload.get("request_id") if isinstance(payload, dict) else None
        if request_id is not None and not isinstance(request_id, str):
            raise TypeError("request_id is a string")
        return {"released": self.core.release_jobs(request_id)}

    def _admin_settings(self, scope: Scope, payload: Any) -> Any:
        return self.core.settings.as_dict()

    def _admin_update_settings(self, scope: Scope, payload: Any) -> Any:
        if not isinstance(payload, dict):
            raise TypeError("settings are a JSON object")
        return self.core.configure(payload).as_dict()


_ADMIN_ROUTES: dict[tuple[str, str], Callable[[SimulatorApp, Scope, Any], Any]] = {
    ("GET", "/health"): SimulatorApp._admin_health,
    ("GET", "/ledger"): SimulatorApp._admin_ledger,
    ("POST", "/reset"): SimulatorApp._admin_reset,
    ("GET", "/faults"): SimulatorApp._admin_faults,
    ("POST", "/faults"): SimulatorApp._admin_add_faults,
    ("DELETE", "/faults"): SimulatorApp._admin_clear_faults,
    ("POST", "/faults/clear"): SimulatorApp._admin_clear_faults,
    ("GET", "/accounts"): SimulatorApp._admin_accounts,
    ("POST", "/accounts"): SimulatorApp._admin_add_account,
    ("POST", "/jobs/release"): SimulatorApp._admin_release_jobs,
    ("GET", "/settings"): SimulatorApp._admin_settings,
    ("POST", "/settings"): SimulatorApp._admin_update_settings,
}
