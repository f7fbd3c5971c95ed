"""Sync and async HTTP clients for the Nyne Social Interactions API, over httpx.

Both clients share one request-building path, one answer handler and one retry decision;
only the transport differs. The exchange is written once, as a generator
(:meth:`_ClientCore._exchange`) that yields "send this" and "sleep this long" steps; the sync
and async clients are short drivers of it.

Every request first takes room in the **request budget** of its API key
(:class:`~airflow_provider_nyne.client.budget.RequestBudget`, one per key and process, shared
by every client of that key) and gives it back with the answer's rate-limit headers. With the
budget on, a ``429`` pauses the key and the call waits for the window to reopen, keeping its
place in line, until its deadline; it never counts as a failed attempt.

Retries (see :class:`~airflow_provider_nyne.client.retry.RetryPolicy`): status and usage
calls are retried on 5xx, unreadable answers and transport errors; a submission (which costs
credits) only when the failure proves it was not processed (connection never made, 429, 503).
A read timeout or a dropped connection after sending is reported as a
:class:`NyneTransportError` with ``request_sent=True``, never retried.

The process's shared state is one object per API key (:class:`_SharedKey`): its request
budget and, per event loop, one pooled httpx transport leased by the async clients of that key
and closed when the last of them closes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import platform as _platform
import ssl
import threading
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_provider_nyne import __version__
from airflow_provider_nyne.client import urls
from airflow_provider_nyne.client.auth import Credentials
from airflow_provider_nyne.client.budget import Permit, RequestBudget
from airflow_provider_nyne.client.errors import (
    NyneError,
    NyneRateLimitError,
    NyneResponseError,
    NyneTransportError,
    NyneValidationError,
    error_from_response,
    redact,
)
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.client.ratelimit import RateLimits
from airflow_provider_nyne.client.request import InteractionRequest, validate_callback_url
from airflow_provider_nyne.client.retry import NO_RETRY, RetryPolicy, Sleep

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.nyne.ai"
INTERACTIONS_PATH = "/person/interactions"
USAGE_PATH = "/usage"


def user_agent() -> str:
    """``airflow-provider-nyne/<version> httpx/<version> python/<version>``."""
    return (
        f"airflow-provider-nyne/{__version__} httpx/{httpx.__version__} python/{_platform.python_version()}"
    )


@dataclass(frozen=True)
class _Call:
    """One logical API call: what to send, and whether sending it twice is harmless."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    idempotent: bool = True
    request_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class _Send:
    """Take room in the budget (in line by ``due``, until ``deadline``), then send ``call``."""

    call: _Call
    due: float
    deadline: float


_Outcome = httpx.Response | httpx.HTTPError


# The process's shared state: one object per API key --------------------------------------------


class _SharedKey:
    """What every client of one API key shares in this process: the budget, and one pool per event loop."""

    def __init__(self, limits: RateLimits) -> None:
        self.budget = RequestBudget(limits)
        self._pools: dict[asyncio.AbstractEventLoop, list[Any]] = {}  # loop -> [transport, leases]
        self._lock = threading.Lock()

    def lease(self, loop: asyncio.AbstractEventLoop, make: Any) -> httpx.AsyncBaseTransport:
        """The loop's pool for this key, made on first use; every lease must be released."""
        with self._lock:
            for other in [other for other in self._pools if other.is_closed()]:
                del self._pools[other]  # a loop that ended with leases outstanding (its sockets went with it)
            entry = self._pools.get(loop)
            if entry is None:
                entry = self._pools[loop] = [make(), 0]
            entry[1] += 1
            pool: httpx.AsyncBaseTransport = entry[0]
            return pool

    def release(self, loop: asyncio.AbstractEventLoop) -> httpx.AsyncBaseTransport | None:
        """Give a lease back; returns the pool to close when it was the last one."""
        with self._lock:
            entry = self._pools.get(loop)
            if entry is None:
                return None
            entry[1] -= 1
            if entry[1] > 0:
                return None
            del self._pools[loop]
            pool: httpx.AsyncBaseTransport = entry[0]
            return pool


_KEYS: dict[tuple[str, str], _SharedKey] = {}
_KEYS_LOCK = threading.Lock()


def _shared_key(credentials: Credentials, base_url: str, limits: RateLimits) -> _SharedKey:
    key = (credentials.digest(), base_url)
    with _KEYS_LOCK:
        shared = _KEYS.get(key)
        if shared is None:
            shared = _KEYS[key] = _SharedKey(limits)
        else:
            shared.budget.declare(limits)
        return shared


def forget_shared_state() -> None:
    """Forget every API key's budget and pool reference (tests start each case from nothing)."""
    with _KEYS_LOCK:
        _KEYS.clear()


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s of CPU: once per process, not once per client, and
    # not at all for a plain-HTTP base URL (it would stall the triggerer's event loop).
    return httpx.create_ssl_context()


async def aload_tls_context() -> None:
    """Load the CA bundle in a worker thread, so that building a client later never stalls the event loop."""
    if _default_ssl_context.cache_info().currsize == 0:
        await asyncio.to_thread(_default_ssl_context)


# What both clients share --------------------------------------------------------------------------


def _transport_error(exc: httpx.HTTPError, call: _Call) -> NyneTransportError:
    """Classify a transport failure: could the request have reached the server?"""
    not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    kind = type(exc).__name__
    reason = str(exc).strip().splitlines()
    if reason and reason[0]:
        kind = f"{kind}: {reason[0][:200]}"
    if not_sent:
        message = f"{call.label} could not connect to the Nyne API ({kind}); nothing was sent"
    elif call.idempotent:
        message = f"{call.label} failed in transit ({kind})"
    else:
        message = (
            f"{call.label} failed after the request was sent ({kind}); the API may have accepted it, "
            "so it was not sent again"
        )
    return NyneTransportError(message, request_sent=not not_sent, request_id=call.request_id)


class _ClientCore:
    """Everything the sync and async clients share: configuration, request building, answers, retries."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 10,
        allowed_callback_hosts: Iterable[str] | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self._credentials = Credentials(api_key, api_secret)
        # The same checks as the hook's (no credentials in the URL, a host every client reads alike).
        self.base_url = urls.base_url(base_url, None, None, default=DEFAULT_BASE_URL)
        self.timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self.retry = retry if retry is not None else RetryPolicy()
        limits = rate_limits if rate_limits is not None else RateLimits()
        # More connections than requests allowed in flight would only sit idle (and be scanned).
        self.max_connections = min(max_connections, limits.max_in_flight or max_connections)
        self.allowed_callback_hosts = tuple(allowed_callback_hosts or ())
        self._shared = _shared_key(self._credentials, self.base_url, limits)
        self._headers = {
            **self._credentials.headers(),
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }
        self._timeout_ext = self.timeout.as_dict()
        self._get_headers = httpx.Headers(self._headers)  # encoded once: most requests are polls
        self._last_url: tuple[Any, httpx.URL] = (None, httpx.URL(self.base_url))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, credentials=***)"

    @property
    def budget(self) -> RequestBudget:
        """The request budget of this client's API key in this process (shared with its other clients)."""
        return self._shared.budget

    # Request building -------------------------------------------------------------------

    def _submit_call(self, request: InteractionRequest | Mapping[str, Any]) -> _Call:
        if not isinstance(request, InteractionRequest):
            request = InteractionRequest.from_payload(request)
        if self.allowed_callback_hosts and request.callback_url:
            # Re-check against the client's allow-list even if the request was built without it.
            validate_callback_url(request.callback_url, self.allowed_callback_hosts)
        body = json.dumps(request.to_payload(), separators=(",", ":")).encode()
        return _Call("POST", INTERACTIONS_PATH, body=body, idempotent=False)

    @staticmethod
    def _status_call(request_id: str) -> _Call:
        if not isinstance(request_id, str) or not request_id.strip():
            raise NyneValidationError("request_id: must be a non-empty string", field="request_id")
        rid = request_id.strip()
        return _Call("GET", INTERACTIONS_PATH, params={"request_id": rid}, request_id=rid)

    def _build(self, call: _Call) -> httpx.Request:
        headers: Any = self._get_headers
        if call.body is not None:
            headers = {**self._headers, "Content-Type": "application/json"}
        # A waiting task polls one URL again and again: parse it once (a tenth of a poll's CPU).
        key = (call.path, call.params.get("request_id") if call.params else None)
        if self._last_url[0] != key:
            self._last_url = (key, httpx.URL(self.base_url + call.path, params=call.params))
        return httpx.Request(
            call.method,
            self._last_url[1],
            content=call.body,
            headers=headers,
            extensions={"timeout": self._timeout_ext},
        )

    # Answers ----------------------------------------------------------------------------

    def _handle(self, response: httpx.Response, call: _Call) -> dict[str, Any]:
        """Return ``data`` of a successful answer, or raise the error the answer means."""
        status = response.status_code
        try:
            body: Any = json.loads(response.content) if response.content else None
        except ValueError:
            body = None
            if 200 <= status < 300:
                raise NyneResponseError(
                    f"{call.label} answered {status} with a body that is not JSON",
                    status_code=status,
                    request_id=call.request_id,
                ) from None
        if 200 <= status < 300:
            if not isinstance(body, Mapping) or body.get("success") is False:
                raise NyneResponseError(
                    f"{call.label} answered {status} without a successful envelope",
                    status_code=status,
                    request_id=call.request_id,
                )
            data = body.get("data")
            if not isinstance(data, dict):
                raise NyneResponseError(
                    f"{call.label} answered {status} without a 'data' object",
                    status_code=status,
                    request_id=call.request_id,
                )
            return data
        error = error_from_response(status, body, response.headers, request_id=call.request_id)
        error.message = redact(error.message, self._credentials.secrets())
        raise error

    def _settle(self, permit: Permit, outcome: _Outcome | None) -> None:
        """Give the budget its room back, with what the answer said about the rate limit."""
        if isinstance(outcome, httpx.Response):
            self.budget.settle(permit, status=outcome.status_code, headers=outcome.headers)
        else:
            self.budget.settle(permit, status=None, headers=None)

    def _deadline(self, deadline: float | None) -> float:
        return time.time() + self.retry.max_retry_after if deadline is None else deadline

    def _exchange(self, call: _Call, deadline: float) -> Generator[_Send | Sleep, _Outcome, dict[str, Any]]:
        """The retry loop, once for both clients: yields steps, receives responses or transport errors."""
        attempt = 0
        due = time.monotonic()  # our place in the budget's line, kept across 429s
        while True:
            outcome = yield _Send(call, due, deadline)
            error: NyneError
            if isinstance(outcome, httpx.Response):
                try:
                    return self._handle(outcome, call)
                except NyneError as err:
                    error = err
            else:
                error = _transport_error(outcome, call)
                error.message = redact(error.message, self._credentials.secrets())
            if isinstance(error, NyneRateLimitError) and self.budget.enabled:
                # The budget paused the whole key on this 429: wait in line for the window to
                # reopen (bounded by the deadline), without counting an attempt.
                continue
            delay = self.retry.delay_for(error, attempt, idempotent=call.idempotent)
            if delay is None:
                if attempt:
                    error.message += f" (after {attempt + 1} attempts)"
                raise error
            log.warning(
                "%s failed (%s); retry %d/%d in %.1fs",
                call.label,
                error,
                attempt + 1,
                self.retry.max_retries,
                delay,
            )
            attempt += 1
            yield Sleep(delay)

    # Results ----------------------------------------------------------------------------

    @staticmethod
    def _request_id(data: Mapping[str, Any]) -> str:
        rid = data.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise NyneResponseError(
                "the API accepted the submission but its answer has no request_id; check the Nyne "
                "dashboard before submitting again, the lookup may be running"
            )
        return rid


class NyneClient(_ClientCore):
    """
    Synchronous client over :class:`httpx.Client`, with connection reuse.

    :param api_key: the ``X-API-Key`` value
    :param api_secret: the ``X-API-Secret`` value
    :param base_url: API root, default ``https://api.nyne.ai``
    :param timeout: seconds for each read/write (connect is bounded by ``connect_timeout``)
    :param connect_timeout: seconds to establish a connection
    :param retry: the :class:`RetryPolicy` (default: 3 retries, 1 s doubling, 10% jitter)
    :param max_connections: size of the connection pool
    :param allowed_callback_hosts: optional allow-list checked for ``callback_url``
    :param rate_limits: the key's declared :class:`~airflow_provider_nyne.client.ratelimit.RateLimits`
        (default: 60/minute, 1,000/hour, 4 in flight;
        :data:`~airflow_provider_nyne.client.ratelimit.UNLIMITED` switches the budget off)
    :param transport: an ``httpx`` transport (tests use ``httpx.MockTransport``)
    """

    def __init__(
        self, api_key: str, api_secret: str, *, transport: httpx.BaseTransport | None = None, **kwargs: Any
    ):
        super().__init__(api_key, api_secret, **kwargs)
        self._http = httpx.Client(
            transport=transport,
            limits=httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            ),
            timeout=self.timeout,
            verify=False if self.base_url.startswith("http://") else _default_ssl_context(),
        )

    def _run(self, call: _Call, deadline: float | None = None) -> dict[str, Any]:
        steps = self._exchange(call, self._deadline(deadline))
        step = next(steps)
        while True:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                step = next(steps)
                continue
            permit = self.budget.acquire_sync(due=step.due, deadline=step.deadline)
            outcome: _Outcome | None = None
            try:
                outcome = self._http.send(self._build(step.call))
            except httpx.HTTPError as exc:
                outcome = exc
            finally:
                self._settle(permit, outcome)
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value

    def submit(
        self, request: InteractionRequest | Mapping[str, Any], *, deadline: float | None = None
    ) -> str:
        """
        Submit a lookup (costs credits when it completes with results) and return its request id.

        :param request: an :class:`InteractionRequest` or an API-style dict (aliases accepted)
        :param deadline: Unix time until which the call may wait for room under the rate limit
            (default: ``retry.max_retry_after`` from now); past it, :class:`NyneRateLimitError`
            says when to come back
        """
        return self._request_id(self._run(self._submit_call(request), deadline))

    def get_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        """
        Poll a request (free). The :class:`JobStatus` carries the result once completed.

        :param request_id: the id :meth:`submit` returned
        :param deadline: Unix time until which the call may wait for room under the rate limit
        """
        call = self._status_call(request_id)
        return JobStatus.from_api(self._run(call, deadline), request_id=call.request_id)

    def get_usage(self, *, deadline: float | None = None) -> dict[str, Any]:
        """
        Return the account's usage (``GET /usage``, free).

        :param deadline: Unix time until which the call may wait for room under the rate limit
        """
        return self._run(_Call("GET", USAGE_PATH), deadline)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> NyneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), if any."""
    import urllib.request

    parsed = httpx.URL(url)
    if urllib.request.proxy_bypass(parsed.host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parsed.scheme) or proxies.get("all")


class AsyncNyneClient(_ClientCore):
    """
    Asynchronous client over httpx's transport; never blocks the event loop.

    Takes the same parameters as :class:`NyneClient`. Clients of the same API key in the same
    event loop share one connection pool (a thousand waiting triggers keep a few keep-alive
    connections, not a thousand); it closes when the last of them closes, so use the client
    as an ``async with`` block or call :meth:`aclose`. Requests go straight to the pool's
    transport: this API needs none of ``httpx.AsyncClient``'s cookies, redirects or auth
    hooks, and skipping them is a fifth of a status poll's CPU. Proxy environment variables
    (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) are honoured. With an explicit
    ``transport`` (tests) the client uses it alone.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ):
        super().__init__(api_key, api_secret, **kwargs)
        self._transport = transport
        self._http: httpx.AsyncBaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _new_pool(self) -> httpx.AsyncBaseTransport:
        tls = not self.base_url.startswith("http://")
        return httpx.AsyncHTTPTransport(
            verify=_default_ssl_context() if tls else False,
            limits=httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            ),
            proxy=_proxy_for(self.base_url),
        )

    async def _pool(self) -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        if self._http is not None and self._loop is loop:
            return self._http
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if self._http is not None:
            self._drop()  # used from another loop than before: that lease went with its loop
        if not self.base_url.startswith("http://"):
            await aload_tls_context()
        self._http = self._transport or self._shared.lease(loop, self._new_pool)
        self._loop = loop
        return self._http

    def _drop(self) -> httpx.AsyncBaseTransport | None:
        """Let go of the pool; returns it when this client must close it."""
        pool, loop = self._http, self._loop
        self._http = self._loop = None
        if pool is None or loop is None:
            return None
        return pool if self._transport is not None else self._shared.release(loop)

    @staticmethod
    async def _send(pool: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
        response = await pool.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _run(self, call: _Call, deadline: float | None = None) -> dict[str, Any]:
        steps = self._exchange(call, self._deadline(deadline))
        step = next(steps)
        while True:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                step = next(steps)
                continue
            http = await self._pool()
            permit = await self.budget.acquire(due=step.due, deadline=step.deadline)
            outcome: _Outcome | None = None
            try:
                outcome = await self._send(http, self._build(step.call))
            except httpx.HTTPError as exc:
                outcome = exc
            finally:
                self._settle(permit, outcome)
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value

    async def submit(
        self, request: InteractionRequest | Mapping[str, Any], *, deadline: float | None = None
    ) -> str:
        """Async twin of :meth:`NyneClient.submit`."""
        return self._request_id(await self._run(self._submit_call(request), deadline))

    async def get_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        """Async twin of :meth:`NyneClient.get_status`."""
        call = self._status_call(request_id)
        return JobStatus.from_api(await self._run(call, deadline), request_id=call.request_id)

    async def get_usage(self, *, deadline: float | None = None) -> dict[str, Any]:
        """Async twin of :meth:`NyneClient.get_usage`."""
        return await self._run(_Call("GET", USAGE_PATH), deadline)

    async def aclose(self) -> None:
        """Release the connection pool (closing it if no other client of the key uses it); final."""
        self._closed = True
        pool = self._drop()
        if pool is not None:
            await pool.aclose()

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def __aenter__(self) -> AsyncNyneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = [
    "DEFAULT_BASE_URL",
    "NO_RETRY",
    "AsyncNyneClient",
    "Credentials",
    "NyneClient",
    "RetryPolicy",
    "forget_shared_state",
    "user_agent",
]
