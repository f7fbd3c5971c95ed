"""The simulator's ASGI application: the API's routes with their injected faults, and the admin routes.

The admin routes under ``/_simulator`` are not part of the real API and are not
authenticated: the simulator binds to loopback (docs/simulator.md, "Admin endpoints").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from airflow_provider_nyne.testing.simulator.accounts import Account
from airflow_provider_nyne.testing.simulator.callbacks import Completions
from airflow_provider_nyne.testing.simulator.core import SimulatorCore
from airflow_provider_nyne.testing.simulator.faults import FaultRule
from airflow_provider_nyne.testing.simulator.jobs import envelope, iso
from airflow_provider_nyne.testing.simulator.ledger import Ledger, RequestRecord
from airflow_provider_nyne.testing.simulator.validation import ApiError

ADMIN_PREFIX = "/_simulator"
_MAX_BODY = 1024 * 1024
_ENDPOINTS = {
    ("POST", "/person/interactions"): "submit",
    ("GET", "/person/interactions"): "status",
    ("GET", "/usage"): "usage",
}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _error(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}, "timestamp": iso(time.time())}


def _query_param(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get(name)
    return values[0] if values else None


async def _send(send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    """Answer with ``payload`` as compact JSON, or as is when it is already ``bytes``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    """Read the request body, keeping at most 1 MiB."""
    chunks, size = [], 0
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

    uvicorn's HTTP protocols pass a bound ``RequestResponseCycle.send`` whose ``transport`` is the
    connection's: ``abort()`` closes the socket at once and uvicorn, seeing the disconnect, sends nothing.
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


def _object(payload: Any, message: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise TypeError(message)
    return payload


class SimulatorApp:
    """ASGI application serving the simulated API over a :class:`SimulatorCore`.

    :param core: the simulator's state.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self.ledger = Ledger(core)
        self.completions = Completions(core)
        #: Admin routes: (method, path under the prefix) -> handler(scope, JSON body or None).
        self.admin_routes: dict[tuple[str, str], Callable[[Scope, Any], Any]] = {
            ("GET", "/health"): lambda scope, body: {"status": "ok"},
            ("GET", "/ledger"): self._ledger,
            ("POST", "/reset"): self._reset,
            ("GET", "/faults"): lambda scope, body: {"faults": core.faults.active()},
            ("POST", "/faults"): self._add_faults,
            ("DELETE", "/faults"): self._clear_faults,
            ("POST", "/faults/clear"): self._clear_faults,
            ("GET", "/accounts"): self._accounts,
            ("POST", "/accounts"): self._add_account,
            ("POST", "/jobs/release"): self._release_jobs,
            ("GET", "/settings"): lambda scope, body: core.settings.as_dict(),
            ("POST", "/settings"): self._configure,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # uvicorn runs with lifespan="off": there is nothing else to serve
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"].upper()
        body = await _read_body(receive)
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self._admin(method, path[len(ADMIN_PREFIX) :] or "/", scope, body, send)
        elif (method, path) in _ENDPOINTS:
            await self._api(_ENDPOINTS[method, path], method, path, scope, body, send)
        elif path in ("/person/interactions", "/usage"):
            await _send(send, 405, _error("method_not_allowed", f"{method} is not allowed on {path}"))
        else:
            await _send(send, 404, _error("not_found", f"No route {method} {path}"))

    # ----------------------------------------------------------------- the API
    async def _api(
        self, endpoint: str, method: str, path: str, scope: Scope, body: bytes, send: Send
    ) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }

        def record(
            status: int | None, code: str | None, fault: str | None, request_id: str | None = None
        ) -> None:
            # Recorded before answering: a test reading the ledger after its response must find it.
            api_key = headers.get("x-api-key") or None
            entry = RequestRecord(
                time.time(), method, endpoint, path, api_key, status, code, fault, request_id
            )
            self.core.record_request(entry)

        delay, fault = self.core.faults.take_response(endpoint)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is not None and fault.kind == "error":
            status, code, retry_after = (
                fault.params["status"],
                fault.params["code"],
                fault.params["retry_after"],
            )
            record(status, code, "error")
            if retry_after is None:
                answer_headers = {}
            else:
                answer_headers = {
                    "Retry-After": f"{int(retry_after) if retry_after.is_integer() else retry_after}"
                }
            await _send(send, status, _error(code, fault.params["message"]), answer_headers)
            return
        # What a drop or malformed_json fault answers in place of the API, with or without processing.
        sent = fault.params.get("status") if fault is not None else None
        if fault is not None and not fault.params["after_processing"]:
            record(sent, None, fault.kind)
            await self._send_fault_answer(send, fault)
            return
        client = scope.get("client")
        status, payload, answer_headers, request_id = self._process(
            endpoint, headers, client[0] if client else None, scope, body, answered=fault is None
        )
        code = None if payload["success"] else payload["error"]["code"]
        if fault is not None:
            record(sent, code, f"{fault.kind}_after_processing", request_id)
            await self._send_fault_answer(send, fault)
            return
        record(status, code, None, request_id)
        await _send(send, status, payload, answer_headers)

    def _process(
        self,
        endpoint: str,
        headers: Mapping[str, str],
        client_ip: str | None,
        scope: Scope,
        body: bytes,
        *,
        answered: bool,
    ) -> tuple[int, dict[str, Any], dict[str, str], str | None]:
        """Decide an API answer: (status, payload, headers, request id)."""
        rate_headers: dict[str, str] = {}
        request_id = _query_param(scope, "request_id") if endpoint == "status" else None
        try:
            account = self.core.authenticate(endpoint, headers, client_ip)
            rate_headers = self.core.rate_limit(account, endpoint)
            if endpoint == "submit":
                request_id = self.core.submit(account, body).request_id
                status, data = 202, {"request_id": request_id, "status": "queued"}
            elif endpoint == "status":
                status, data = 200, self.core.poll(account, request_id, answered=answered)
            else:
                status, data = 200, self.core.usage(account)
        except ApiError as exc:
            return exc.status, _error(exc.code, exc.message), {**rate_headers, **exc.headers}, request_id
        return status, envelope(data), rate_headers, request_id

    async def _send_fault_answer(self, send: Send, fault: FaultRule) -> None:
        if fault.kind == "drop":
            await _drop_connection(send)
        else:  # malformed_json
            await _send(send, fault.params["status"], fault.params["body"].encode())

    # ----------------------------------------------------------------- admin
    async def _admin(self, method: str, route: str, scope: Scope, body: bytes, send: Send) -> None:
        """Answer an admin request; bad input is a ``400 invalid_admin_request`` naming the problem."""
        try:
            payload: Any = json.loads(body) if body.strip() else None
        except ValueError:
            await _send(send, 400, _error("invalid_json", "admin request body is not valid JSON"))
            return
        handler = self.admin_routes.get((method, route))
        if handler is None:
            await _send(send, 404, _error("not_found", f"No admin route {method} {ADMIN_PREFIX}{route}"))
            return
        try:
            result = handler(scope, payload)
        except (ValueError, TypeError, KeyError) as exc:
            await _send(send, 400, _error("invalid_admin_request", str(exc)))
            return
        await _send(send, 200, envelope(result))

    def _ledger(self, scope: Scope, payload: Any) -> Any:
        summary = (_query_param(scope, "summary") or "").lower() in ("1", "true", "yes")
        return self.ledger.snapshot(summary=summary)

    def _reset(self, scope: Scope, payload: Any) -> Any:
        restore = bool(payload.get("settings", False)) if isinstance(payload, dict) else False
        self.core.reset(settings=restore)
        return {"reset": True, "settings_restored": restore}

    def _add_faults(self, scope: Scope, payload: Any) -> Any:
        added = self.core.faults.add_rules(payload if isinstance(payload, list) else [payload])
        return {"added": [rule.as_dict() for rule in added], "faults": self.core.faults.active()}

    def _clear_faults(self, scope: Scope, payload: Any) -> Any:
        self.core.faults.clear()
        return {"faults": []}

    def _accounts(self, scope: Scope, payload: Any) -> Any:
        with self.core.lock:
            self.core.settle_due()
            return {"accounts": [account.public() for account in self.core.accounts.values()]}

    def _add_account(self, scope: Scope, payload: Any) -> Any:
        fields = _object(payload, "an account is a JSON object with api_key and api_secret")
        return self.core.upsert_account(Account.from_mapping(fields)).public()

    def _configure(self, scope: Scope, payload: Any) -> Any:
        return self.core.configure(_object(payload, "settings are a JSON object")).as_dict()

    def _release_jobs(self, scope: Scope, payload: Any) -> Any:
        request_id = payload.get("request_id") if isinstance(payload, dict) else None
        if request_id is not None and not isinstance(request_id, str):
            raise TypeError("request_id is a string")
        return {"released": self.core.release_jobs(request_id)}
