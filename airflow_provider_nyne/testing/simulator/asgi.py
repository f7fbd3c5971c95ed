"""Small ASGI helpers the simulator's routes share: answers, bodies, query strings."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from airflow_provider_nyne.testing.simulator.data import iso

__all__ = [
    "Receive",
    "Scope",
    "Send",
    "drop_connection",
    "envelope",
    "error_body",
    "query_param",
    "read_body",
    "send_json",
    "send_raw",
]

_MAX_BODY = 1024 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def envelope(data: Any) -> dict[str, Any]:
    """Wrap ``data`` in the API's success envelope.

    :param data: the answer's ``data``.
    """
    return {"success": True, "data": data, "timestamp": iso(time.time())}


def error_body(code: str, message: str) -> dict[str, Any]:
    """Return the API's error body.

    :param code: ``error.code``.
    :param message: ``error.message``.
    """
    return {"success": False, "error": {"code": code, "message": message}, "timestamp": iso(time.time())}


async def send_raw(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    """Answer with ``body`` as JSON content and extra ``headers``.

    :param send: the ASGI send callable.
    :param status: the HTTP status.
    :param body: the body, sent as is.
    :param headers: headers besides content type and length.
    """
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    )
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    """Answer with ``payload`` serialised as compact JSON.

    :param send: the ASGI send callable.
    :param status: the HTTP status.
    :param payload: JSON-compatible data.
    :param headers: headers besides content type and length.
    """
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send_raw(send, status, body, headers or {})


async def read_body(receive: Receive) -> bytes:
    """Read the request body (at most 1 MiB is kept).

    :param receive: the ASGI receive callable.
    """
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


async def drop_connection(send: Send) -> None:
    """Close the TCP connection without answering.

    uvicorn's HTTP protocols pass a bound ``RequestResponseCycle.send``; its ``transport`` is the
    connection's asyncio transport. ``abort()`` closes the socket at once and uvicorn, seeing
    the disconnect, sends nothing.

    :param send: the ASGI send callable of the request.
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


def query_param(scope: Scope, name: str) -> str | None:
    """Return the first value of query parameter ``name``, or None.

    :param scope: the ASGI scope.
    :param name: the parameter.
    """
    values = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get(name)
    return values[0] if values else None
