"""The simulator's ASGI application: the API routes, injected faults and the admin routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from airflow_provider_nyne.testing.simulator.admin import ADMIN_PREFIX, handle_admin
from airflow_provider_nyne.testing.simulator.asgi import (
    Receive,
    Scope,
    Send,
    drop_connection,
    envelope,
    error_body,
    query_param,
    read_body,
    send_json,
    send_raw,
)
from airflow_provider_nyne.testing.simulator.callbacks import Completions
from airflow_provider_nyne.testing.simulator.core import SimulatorCore
from airflow_provider_nyne.testing.simulator.faults import FaultRule
from airflow_provider_nyne.testing.simulator.records import RequestRecord
from airflow_provider_nyne.testing.simulator.validation import ApiError

__all__ = ["SimulatorApp"]


class SimulatorApp:
    """ASGI application serving the simulated API over a :class:`SimulatorCore`.

    :param core: the simulator's state.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self.completions = Completions(core)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the event loop that runs the server (timers and callbacks run there).

        :param loop: the server's running loop.
        """
        self.completions.bind(loop)

    async def aclose(self) -> None:
        """Stop delivering callbacks."""
        await self.completions.aclose()

    # ----------------------------------------------------------------- ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"].upper()
        body = await read_body(receive)
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await handle_admin(self.core, method, path[len(ADMIN_PREFIX) :], scope, body, send)
            return
        endpoint: str | None = None
        if path == "/person/interactions":
            endpoint = {"POST": "submit", "GET": "status"}.get(method)
        elif path == "/usage":
            endpoint = "usage" if method == "GET" else None
        else:
            await send_json(send, 404, error_body("not_found", f"No route {method} {path}"))
            return
        if endpoint is None:
            await send_json(send, 405, error_body("method_not_allowed", f"{method} is not allowed on {path}"))
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

        delay, fault = self.core.faults.take_response(endpoint)
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
            endpoint, headers, client[0] if client else None, scope, body, answered=fault is None
        )
        code = None if payload.get("success") else payload["error"]["code"]
        if fault is not None:
            sent = fault.params.get("status") if fault.kind == "malformed_json" else None
            record(sent, code, f"{fault.kind}_after_processing", request_id)
            await self._send_fault_answer(send, fault)
            return
        record(status, code, None, request_id)
        await send_json(send, status, payload, extra_headers)

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
        rate_headers: dict[str, str] = {}
        try:
            account = self.core.authenticate(endpoint, headers, client_ip)
            rate_headers = self.core.rate_limit(account, endpoint)
            if endpoint == "submit":
                job = self.core.submit(account, body)
                data = {"request_id": job.request_id, "status": "queued"}
                return 202, envelope(data), rate_headers, job.request_id
            if endpoint == "status":
                request_id = query_param(scope, "request_id")
                return (
                    200,
                    envelope(self.core.poll(account, request_id, answered=answered)),
                    rate_headers,
                    request_id,
                )
            return 200, envelope(self.core.usage(account)), rate_headers, None
        except ApiError as exc:
            answer_headers = {**rate_headers, **exc.headers}
            request_id = query_param(scope, "request_id") if endpoint == "status" else None
            return exc.status, error_body(exc.code, exc.message), answer_headers, request_id

    async def _send_fault_error(self, send: Send, fault: FaultRule) -> None:
        params = fault.params
        headers: dict[str, str] = {}
        if params.get("retry_after") is not None:
            retry_after = params["retry_after"]
            headers["Retry-After"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            )
        await send_json(send, params["status"], error_body(params["code"], params["message"]), headers)

    async def _send_fault_answer(self, send: Send, fault: FaultRule) -> None:
        if fault.kind == "drop":
            await drop_connection(send)
        elif fault.kind == "malformed_json":
            await send_raw(send, fault.params["status"], fault.params["body"].encode(), {})
        else:  # pragma: no cover - add_fault rejects other kinds
            raise AssertionError(fault.kind)
