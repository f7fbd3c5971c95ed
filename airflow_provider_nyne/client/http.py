"""Sync and async HTTP clients for the Nyne Social Interactions API.

Both clients share one request-building path, one response handler and one retry decision;
only the transport differs. The exchange itself is written once, as a generator
(:meth:`_ClientCore._exchange`) that yields "send this" and "sleep this long" steps; the sync
and async clients are ten-line drivers of it.

Retry policy (see :class:`RetryPolicy`):

* ``GET`` (status, usage) is retried on 429 (honouring ``Retry-After``), 5xx, unreadable
  answers and transport errors, with exponential backoff and jitter up to a limit.
* ``POST`` (submit, which costs credits) is retried only when the failure proves the request
  was not processed: the connection was never made (refused, connect timeout), or the API
  answered 429 or 503. A read timeout or a dropped connection after sending is ambiguous: it
  is reported as a :class:`NyneTransportError` with ``request_sent=True``, never retried.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import hashlib
import json
import logging
import platform as _platform
import random
import ssl
import time
import weakref
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx

from airflow_provider_nyne import __version__
from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneCreditsError,
    NyneError,
    NyneForbiddenError,
    NyneNotFoundError,
    NyneRateLimitError,
    NyneResponseError,
    NyneServerError,
    NyneTransportError,
    NyneValidationError,
    redact,
)
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.client.request import InteractionRequest

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.nyne.ai"
INTERACTIONS_PATH = "/person/interactions"
USAGE_PATH = "/usage"

T = TypeVar("T")
TransportKind = Literal["auto", "httpx", "aiohttp"]


@dataclass(frozen=True)
class RetryPolicy:
    """
    When and how long to wait before retrying a failed call.

    :param max_retries: retries after the first attempt (0 disables retrying)
    :param backoff_base: first delay in seconds; doubles each retry
    :param backoff_max: cap of one delay in seconds
    :param jitter: random fraction added to each delay (0.1 = up to +10%)
    :param max_retry_after: longest ``Retry-After`` honoured in place; a longer one is raised
        to the caller as :class:`NyneRateLimitError` instead of blocking
    """

    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    jitter: float = 0.1
    max_retry_after: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        delay: float = min(self.backoff_max, self.backoff_base * (2**attempt))
        return delay * (1.0 + random.uniform(0, self.jitter)) if self.jitter else delay

    def delay_for(self, error: NyneError, attempt: int, *, idempotent: bool) -> float | None:
        """Seconds to wait before retrying after ``error``, or ``None`` to give up and raise it."""
        if attempt >= self.max_retries or not is_retry_safe(error, idempotent=idempotent):
            return None
        delay = self.backoff(attempt)
        if isinstance(error, NyneRateLimitError) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            delay = max(delay, error.retry_after)
        return delay


NO_RETRY = RetryPolicy(max_retries=0)


def is_retry_safe(error: NyneError, *, idempotent: bool) -> bool:
    """Whether a call that failed with ``error`` may be sent again without risking a second charge."""
    if idempotent:
        return error.retryable
    # A POST that may have been processed must not be sent again.
    if isinstance(error, NyneTransportError):
        return not error.request_sent
    if isinstance(error, NyneRateLimitError):
        return True
    return isinstance(error, NyneServerError) and error.status_code == 503


class Credentials:
    """The API key and secret. ``repr()`` and ``str()`` never show them."""

    __slots__ = ("api_key", "api_secret")

    def __init__(self, api_key: str, api_secret: str) -> None:
        self.api_key = _header_safe(api_key, "API key", "login")
        self.api_secret = _header_safe(api_secret, "API secret", "password")

    def __repr__(self) -> str:
        return "Credentials(api_key='***', api_secret='***')"

    __str__ = __repr__

    def digest(self) -> str:
        """A one-way digest, to tell accounts apart without keeping the values in a key."""
        return hashlib.sha256(f"{self.api_key}\0{self.api_secret}".encode()).hexdigest()

    def headers(self) -> dict[str, str]:
        """The two authentication headers."""
        return {"X-API-Key": self.api_key, "X-API-Secret": self.api_secret}


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
    call: _Call


@dataclass(frozen=True)
class _Sleep:
    seconds: float


def _header_safe(value: str, what: str, field: str) -> str:
    """Strip a credential and check it can be sent as a header, without ever echoing it."""
    text = value.strip() if isinstance(value, str) else value
    # A pasted trailing newline is common; a value an HTTP library rejects would be quoted
    # verbatim in that library's error message, so refuse it here without showing it.
    if not isinstance(text, str) or not text.isascii() or not text.isprintable() or " " in text:
        raise NyneAuthError(
            f"the {what} contains characters that cannot be sent in an HTTP header (non-ASCII, "
            f"spaces or control characters): check the connection's {field}",
            code=f"invalid_{what.lower().replace(' ', '_')}",
        )
    return text


_Step = _Send | _Sleep


class _Answer:
    """An answer read straight from aiohttp: all that answer handling reads, without building an ``httpx.Response``."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content


_Outcome = httpx.Response | _Answer | Exception
_Semaphore = asyncio.Semaphore

_HINTS_401 = {
    "missing_api_key": "the API key is missing: set the connection's login (API Key)",
    "invalid_api_key": "the API key was rejected: check the connection's login (API Key)",
    "missing_api_secret": "the API secret is missing: set the connection's password (API Secret)",
    "invalid_api_secret": "the API secret was rejected: check the connection's password (API Secret)",
}
_HINTS_403 = {
    "subscription_required": "this API needs an active Nyne subscription for the account",
    "api_key_disabled": "the API key is disabled: enable it or create a new one in the Nyne dashboard",
    "permission_denied": "the API key lacks permission for the Social Interactions API",
    "ip_not_allowed": (
        "the calling IP is not on the key's allow-list: add the public IP of your Airflow "
        "workers and triggerer to the key's allowed IPs"
    ),
}


_REQUEST_FIELDS = frozenset(
    {
        "social_media_url",
        "twitter_url",
        "type",
        "interaction_type",
        "username",
        "tweet_id",
        "max_results",
        "callback_url",
        "request_id",
    }
)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date), else the rate-limit reset headers."""
    if not isinstance(headers, httpx.Headers):
        headers = {str(k).lower(): str(v) for k, v in headers.items()}
    now = now if now is not None else time.time()
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:  # "-0000" dates are UTC per RFC 5322
                    parsed = parsed.replace(tzinfo=datetime.timezone.utc)
                return max(0.0, parsed.timestamp() - now)
    remaining = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
    # Without a *-Remaining header (as on many 429 answers) the reset time is still the best hint.
    if remaining is None or remaining.strip() == "0":
        reset = headers.get("ratelimit-reset")
        if reset:
            try:
                return max(0.0, float(reset))
            except ValueError:
                pass
        reset = headers.get("x-ratelimit-reset")
        if reset:
            try:
                epoch = float(reset)
            except ValueError:
                return None
            # Documented as Unix time; a small number can only be a delay in seconds.
            return max(0.0, epoch - now) if epoch > 1e9 else max(0.0, epoch)
    return None


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """Read the error code and message from whichever shape the body uses."""
    if not isinstance(body, Mapping):
        return None, None
    code: Any = body.get("code")
    message: Any = None
    error = body.get("error")
    if isinstance(error, Mapping):
        code = error.get("code") or error.get("type") or code
        message = error.get("message") or error.get("detail")
    elif isinstance(error, str):
        if code is None and error.replace("_", "").isalnum() and error.lower() == error:
            code = error
        else:
            message = error
    if message is None:
        message = body.get("message")
    if message is None:
        detail = body.get("detail")
        if isinstance(detail, Mapping):
            code = detail.get("code") or code
            message = detail.get("message") or json.dumps(detail)[:300]
        elif isinstance(detail, list):
            message = json.dumps(detail)[:300]
        elif detail is not None:
            message = str(detail)
    return (None if code is None else str(code)), (None if message is None else str(message))


def error_from_response(
    status: int,
    body: Any,
    headers: Mapping[str, str],
    *,
    request_id: str | None = None,
) -> NyneError:
    """Map an error answer (status, decoded body, headers) to the exception that names the fix."""
    code, message = _error_fields(body)
    detail = f": {message}" if message else ""
    if status == 400 or status == 422:
        # invalid_<field> names the field at fault; invalid_json / invalid_request name none.
        field = code[len("invalid_") :] if code and code.startswith("invalid_") else None
        field = field if field in _REQUEST_FIELDS else None
        return NyneValidationError(
            f"the API rejected the request{detail}",
            field=field,
            status_code=status,
            code=code,
            request_id=request_id,
        )
    if status == 401:
        hint = _HINTS_401.get(
            code or "", "the API key or secret was rejected: check the connection's login and password"
        )
        return NyneAuthError(
            f"authentication failed, {hint}{detail}", status_code=status, code=code, request_id=request_id
        )
    if status == 402:
        return NyneCreditsError(
            f"the account is out of credits: top up in the Nyne dashboard (each completed lookup with results costs 3){detail}",
            status_code=status,
            code=code,
            request_id=request_id,
        )
    if status == 403:
        hint = _HINTS_403.get(code or "", "the account may not make this call")
        return NyneForbiddenError(
            f"forbidden, {hint}{detail}", status_code=status, code=code, request_id=request_id
        )
    if status == 404:
        what = f"request {request_id!r}" if request_id else "the resource"
        return NyneNotFoundError(
            f"{what} was not found: it expired or never existed; submit the lookup again{detail}",
            status_code=status,
            code=code or "request_not_found",
            request_id=request_id,
        )
    if status == 429:
        retry_after = parse_retry_after(headers)
        wait = ""
        if retry_after is not None:
            wait = (
                f" (retry after {retry_after:.0f}s)"
                if retry_after >= 1
                else f" (retry after {retry_after:.2f}s)"
            )
        return NyneRateLimitError(
            f"rate limit exceeded{wait}: the API allows about 60 requests/minute and 1000/hour; "
            f"lower concurrency with an Airflow pool{detail}",
            retry_after=retry_after,
            status_code=status,
            code=code or "rate_limit_exceeded",
            request_id=request_id,
        )
    if status >= 500:
        return NyneServerError(
            f"the Nyne API failed on its side{detail}", status_code=status, code=code, request_id=request_id
        )
    return NyneError(
        f"unexpected answer from the Nyne API{detail}", status_code=status, code=code, request_id=request_id
    )


def _transport_error(exc: Exception, call: _Call) -> NyneTransportError:
    """Classify a transport failure: could the request have reached the server?"""
    aio = exc if _is_aiohttp_error(exc) else exc.__cause__ if _is_aiohttp_error(exc.__cause__) else None
    not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    if aio is not None:
        # The aiohttp transport maps every aiohttp.ClientConnectionError (including "server
        # disconnected" after sending) to ConnectTimeout; only a failed connect proves "not sent".
        import aiohttp

        connect_failed = (aiohttp.ClientConnectorError, getattr(aiohttp, "ConnectionTimeoutError", OSError))
        not_sent = isinstance(aio, connect_failed) and not isinstance(aio, aiohttp.ServerDisconnectedError)
    kind = type(aio if aio is not None else exc).__name__
    reason = str(aio if aio is not None else exc).strip().splitlines()
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


def _is_aiohttp_error(exc: object) -> bool:
    """Whether ``exc`` comes from aiohttp (checked by module, so that aiohttp is imported only when used)."""
    return isinstance(exc, Exception) and type(exc).__module__.startswith("aiohttp")


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
    ) -> None:
        if not api_key:
            raise NyneAuthError(
                "the API key is missing: set the connection's login (API Key)", code="missing_api_key"
            )
        if not api_secret:
            raise NyneAuthError(
                "the API secret is missing: set the connection's password (API Secret)",
                code="missing_api_secret",
            )
        self._credentials = Credentials(api_key, api_secret)
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_connections = max_connections
        self.allowed_callback_hosts = tuple(allowed_callback_hosts or ())
        self._headers = {
            **self._credentials.headers(),
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }
        # Parsed once: parsing headers and URLs was a third of a status poll's CPU.
        self._get_headers = httpx.Headers(self._headers)
        self._timeout_ext = self.timeout.as_dict()
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, credentials=***)"

    # Request building -------------------------------------------------------------------

    def _submit_call(self, request: InteractionRequest) -> _Call:
        if self.allowed_callback_hosts and request.callback_url:
            # Re-check against the client's allow-list even if the request was built without it.
            InteractionRequest.create(
                request.social_media_url,
                request.interaction_type,
                username=request.username,
                tweet_id=request.tweet_id,
                max_results=request.max_results,
                callback_url=request.callback_url,
                platform=request.platform,
                allowed_callback_hosts=self.allowed_callback_hosts,
            )
        body = json.dumps(request.to_payload(), separators=(",", ":")).encode()
        return _Call("POST", INTERACTIONS_PATH, body=body, idempotent=False)

    @staticmethod
    def _status_call(request_id: str) -> _Call:
        if not isinstance(request_id, str) or not request_id.strip():
            raise NyneValidationError("request_id: must be a non-empty string", field="request_id")
        rid = request_id.strip()
        return _Call("GET", INTERACTIONS_PATH, params={"request_id": rid}, request_id=rid)

    @staticmethod
    def _usage_call() -> _Call:
        return _Call("GET", USAGE_PATH)

    def _build(self, call: _Call) -> httpx.Request:
        if call.body is not None:
            headers = dict(self._headers)
            headers["Content-Type"] = "application/json"
            return httpx.Request(
                call.method,
                self.base_url + call.path,
                params=call.params,
                content=call.body,
                headers=headers,
                extensions={"timeout": self._timeout_ext},
            )
        return httpx.Request(
            call.method, self._url(call), headers=self._get_headers, extensions={"timeout": self._timeout_ext}
        )

    def _url(self, call: _Call) -> httpx.URL:
        """The call's URL, parsed once per path and parameters (a waiting task polls the same one)."""
        key = (call.path, tuple(call.params.items()) if call.params else ())
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= 4096:
                self._urls.clear()
            url = self._urls[key] = httpx.URL(self.base_url + call.path).copy_merge_params(call.params or {})
        return url

    # Answers ----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, (self._credentials.api_key, self._credentials.api_secret))

    def _handle(self, response: httpx.Response | _Answer, call: _Call) -> dict[str, Any]:
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
        error.message = self._redact(error.message)
        raise error

    def _exchange(self, call: _Call) -> Generator[_Step, _Outcome, dict[str, Any]]:
        """The retry loop, once for both clients: yields steps, receives responses or exceptions."""
        attempt = 0
        while True:
            outcome = yield _Send(call)
            error: NyneError
            if isinstance(outcome, (httpx.Response, _Answer)):
                try:
                    return self._handle(outcome, call)
                except NyneError as err:
                    error = err
            elif isinstance(outcome, httpx.HTTPError) or _is_aiohttp_error(outcome):
                # Not chained: aiohttp's exceptions carry the request headers (the credentials) in repr().
                error = _transport_error(outcome, call)
                error.message = self._redact(error.message)
            else:
                raise outcome
            delay = self.retry.delay_for(error, attempt, idempotent=call.idempotent)
            if delay is None:
                if attempt and isinstance(error, NyneError):
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
            yield _Sleep(delay)

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


def user_agent() -> str:
    """``airflow-provider-nyne/<version> httpx/<version> python/<version>``."""
    return (
        f"airflow-provider-nyne/{__version__} httpx/{httpx.__version__} python/{_platform.python_version()}"
    )


def _coerce_request(request: InteractionRequest | Mapping[str, Any]) -> InteractionRequest:
    if isinstance(request, InteractionRequest):
        return request
    return InteractionRequest.from_payload(request)


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

    def _run(self, call: _Call) -> dict[str, Any]:
        steps = self._exchange(call)
        step = next(steps)
        while True:
            if isinstance(step, _Sleep):
                time.sleep(step.seconds)
                step = next(steps)
                continue
            outcome: _Outcome
            try:
                outcome = self._http.send(self._build(step.call))
            except httpx.HTTPError as exc:
                outcome = exc
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value

    def submit(self, request: InteractionRequest | Mapping[str, Any]) -> str:
        """
        Submit a lookup (costs credits when it completes with results) and return its request id.

        :param request: an :class:`InteractionRequest` or an API-style dict (aliases accepted)
        """
        return self._request_id(self._run(self._submit_call(_coerce_request(request))))

    def get_status(self, request_id: str) -> JobStatus:
        """
        Poll a request (free). The :class:`JobStatus` carries the result once completed.

        :param request_id: the id :meth:`submit` returned
        """
        call = self._status_call(request_id)
        return JobStatus.from_api(self._run(call), request_id=call.request_id)

    def get_usage(self) -> dict[str, Any]:
        """Return the account's usage (``GET /usage``, free)."""
        return self._run(self._usage_call())

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> NyneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s of CPU: once per process, not once per client, and
    # not at all for a plain-HTTP base URL (it would stall the triggerer's event loop).
    return httpx.create_ssl_context()


def _env_proxies() -> bool:
    """Whether proxy environment variables are set (then httpx's own transport is used)."""
    import urllib.request

    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies_environment())


async def aload_tls_context() -> None:
    """Load the CA bundle in a worker thread, so that building a client later never stalls the event loop."""
    if _default_ssl_context.cache_info().currsize == 0:
        await asyncio.to_thread(_default_ssl_context)


def _make_async_transport(
    kind: TransportKind, max_connections: int, *, tls: bool = True
) -> httpx.AsyncBaseTransport | None:
    if kind == "httpx":
        return None
    if kind == "auto" and _env_proxies():
        # httpx honours HTTP(S)_PROXY/ALL_PROXY/NO_PROXY; the aiohttp transport would ignore them.
        return None
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        if kind == "aiohttp":
            raise
        return None
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return AiohttpTransport(limits=limits, verify=_default_ssl_context() if tls else False)


class AsyncNyneClient(_ClientCore):
    """
    Asynchronous client over :class:`httpx.AsyncClient`; never blocks the event loop.

    Takes the same parameters as :class:`NyneClient`, plus:

    :param transport: an ``httpx`` async transport, or ``"auto"`` (default: httpx's API over
        aiohttp's connection pool when ``httpx-aiohttp`` is installed, the cheapest per poll
        measured; httpx's own pool when it is not installed or when proxy environment variables
        such as ``HTTPS_PROXY`` are set, which only httpx's transport honours), ``"httpx"`` or ``"aiohttp"``

    Use :meth:`shared` in long-lived event loops (the triggerer) so that every waiting task
    with the same connection reuses one small pool instead of opening its own.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        transport: httpx.AsyncBaseTransport | TransportKind = "auto",
        **kwargs: Any,
    ):
        super().__init__(api_key, api_secret, **kwargs)
        self._transport_spec = transport
        self._aiohttp_timeout: Any = None
        self._url_texts: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._closed = False
        self._inflight = 0
        self._open()

    def _open(self) -> None:
        """Build the connection pool (again, after :meth:`aclose_idle`)."""
        tls = not self.base_url.startswith("http://")
        transport = self._transport_spec
        if isinstance(transport, str):
            transport_obj = _make_async_transport(transport, self.max_connections, tls=tls)
        else:
            transport_obj = transport
        self._http = httpx.AsyncClient(
            transport=transport_obj,
            limits=httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            ),
            timeout=self.timeout,
            verify=(_default_ssl_context() if tls else False) if transport_obj is None else True,
        )
        self._transport = transport_obj
        # httpx-aiohttp's transport without a proxy: requests go straight to its aiohttp session.
        self._aiohttp = (
            type(transport_obj).__module__.startswith("httpx_aiohttp")
            and hasattr(transport_obj, "get_client")
            and getattr(transport_obj, "proxy", None) is None
        )

    async def _send(self, call: _Call) -> httpx.Response | _Answer:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, _Semaphore(self.max_connections))
        # Callers beyond the pool's size wait here, holding no request objects: a thousand
        # triggers polling at once then cost a third less memory than queueing in the pool.
        async with self._slots[1]:
            if self._http.is_closed:
                if self._closed or not isinstance(self._transport_spec, str):
                    raise RuntimeError("Cannot send a request, as the client has been closed.")
                self._open()  # idle-closed (aclose_idle): a new pool on demand
            self._inflight += 1
            try:
                if self._aiohttp:
                    return await self._send_aiohttp(call)
                request = self._build(call)
                transport = self._transport
                if transport is None:
                    return await self._http.send(request)
                # With an explicit transport the client adds no proxy, auth, cookie or redirect
                # handling to this API's requests: calling the transport skips only its overhead.
                response = await transport.handle_async_request(request)
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
                return response
            finally:
                self._inflight -= 1

    async def _send_aiohttp(self, call: _Call) -> _Answer:
        """Send through the transport's aiohttp session: ~40% less CPU per request than through httpx's models."""
        import aiohttp

        transport: Any = self._transport
        session = transport.client
        if not isinstance(session, aiohttp.ClientSession):
            # Created in the running loop on first use, exactly as the transport itself does.
            session = transport.client = transport.get_client()
        if self._aiohttp_timeout is None:
            t = self._timeout_ext
            self._aiohttp_timeout = aiohttp.ClientTimeout(
                sock_connect=t.get("connect"), sock_read=t.get("read"), connect=t.get("pool")
            )
        key = (call.path, tuple(call.params.items()) if call.params else ())
        url = self._url_texts.get(key)
        if url is None:
            if len(self._url_texts) >= 4096:
                self._url_texts.clear()
            url = self._url_texts[key] = str(self._url(call))
        headers = self._headers
        if call.body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        async with session.request(
            call.method,
            url,
            data=call.body,
            headers=headers,
            allow_redirects=False,
            compress=False,
            timeout=self._aiohttp_timeout,
        ) as response:
            return _Answer(response.status, response.headers, await response.read())

    async def _run(self, call: _Call) -> dict[str, Any]:
        steps = self._exchange(call)
        step = next(steps)
        while True:
            if isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                step = next(steps)
                continue
            outcome: _Outcome
            try:
                outcome = await self._send(step.call)
            except httpx.HTTPError as exc:
                outcome = exc
            except Exception as exc:
                # aiohttp's errors arrive unmapped from _send_aiohttp (and from httpx-aiohttp
                # for a malformed answer); _exchange classifies them.
                if not _is_aiohttp_error(exc):
                    raise
                outcome = exc
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value

    async def submit(self, request: InteractionRequest | Mapping[str, Any]) -> str:
        """Async twin of :meth:`NyneClient.submit`."""
        return self._request_id(await self._run(self._submit_call(_coerce_request(request))))

    async def get_status(self, request_id: str) -> JobStatus:
        """Async twin of :meth:`NyneClient.get_status`."""
        call = self._status_call(request_id)
        return JobStatus.from_api(await self._run(call), request_id=call.request_id)

    async def get_usage(self) -> dict[str, Any]:
        """Async twin of :meth:`NyneClient.get_usage`."""
        return await self._run(self._usage_call())

    async def aclose(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        self._closed = True
        await self._http.aclose()

    async def aclose_idle(self) -> bool:
        """
        Close the connection pool if no request is in flight; the next request opens a new one.

        Shared clients use this when their last user is done, so that an event loop that ends
        (``dag.test()``) or goes quiet keeps no sockets open. Returns whether it closed.
        """
        if self._inflight or self._http.is_closed or not isinstance(self._transport_spec, str):
            return False
        await self._http.aclose()
        return True

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed or self._http.is_closed

    async def __aenter__(self) -> AsyncNyneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @classmethod
    def shared(
        cls,
        api_key: str,
        api_secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        **kwargs: Any,
    ) -> AsyncNyneClient:
        """
        The client shared by every caller in the running event loop with the same account and settings.

        One pool per loop and connection: a thousand waiting triggers share a few keep-alive
        connections. Clients are dropped with their loop. Must be called from inside a loop.

        :param api_key: the ``X-API-Key`` value
        :param api_secret: the ``X-API-Secret`` value
        :param base_url: API root
        :param kwargs: any other :class:`AsyncNyneClient` parameter (part of the sharing key)
        """
        loop = asyncio.get_running_loop()
        for other in [other for other in _SHARED if other.is_closed()]:
            # A client holds its loop (semaphore, sessions), so a closed loop's entry would never go.
            del _SHARED[other]
        key = (
            Credentials(api_key, api_secret).digest(),
            base_url.rstrip("/"),
            tuple(sorted((k, repr(v)) for k, v in kwargs.items())),
        )
        per_loop = _SHARED.get(loop)
        if per_loop is None:
            per_loop = _SHARED[loop] = {}
        client = per_loop.get(key)
        if client is None or client.is_closed:
            client = per_loop[key] = cls(api_key, api_secret, base_url=base_url, **kwargs)
        return client


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], AsyncNyneClient]] = (
    weakref.WeakKeyDictionary()
)
