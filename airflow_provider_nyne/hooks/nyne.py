"""NyneHook: an Airflow connection turned into a Nyne API client.

The connection (type ``nyne``) holds the API key as *login*, the API secret as *password*
and, optionally, the base URL as *host* (default ``https://api.nyne.ai``). Extra fields:
``timeout``, ``max_retries``, ``retry_backoff``, ``rate_limit_per_minute``,
``rate_limit_per_hour``, ``max_in_flight``, ``callback_allowed_hosts``, ``callback_secret``
(and ``rate_limit_time_scale``, for simulators whose rate-limit windows are scaled down).

The hook reads its connection lazily, never in ``__init__``, so building one at DAG-parse
time costs nothing. Its async methods look the connection up with Airflow's async API, so a
trigger never blocks the loop. Every client it builds for an API key shares that key's request
budget in the process (see :mod:`airflow_provider_nyne.client.budget`).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_nyne._compat import AirflowNotFoundException, mask_secret
from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneError,
    NyneTransportError,
    NyneValidationError,
)
from airflow_provider_nyne.client.http import DEFAULT_BASE_URL, AsyncNyneClient, NyneClient
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.client.ratelimit import RateLimits
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.client.retry import RetryPolicy
from airflow_provider_nyne.client.urls import base_url
from airflow_provider_nyne.get_provider_info import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID


@dataclass(frozen=True)
class NyneConnectionSettings:
    """What the hook reads from a ``nyne`` connection. ``repr()`` hides the credentials."""

    conn_id: str
    api_key: str
    api_secret: str
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 30.0
    max_retries: int = 3
    retry_backoff: float = 1.0
    callback_allowed_hosts: tuple[str, ...] = ()
    callback_secret: str | None = None
    rate_limits: RateLimits = field(default_factory=RateLimits)

    def __repr__(self) -> str:
        return (
            f"NyneConnectionSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r}, "
            f"timeout={self.timeout!r}, max_retries={self.max_retries!r}, api_key='***', api_secret='***')"
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        """The client's retry policy from ``max_retries`` and ``retry_backoff``."""
        return RetryPolicy(max_retries=self.max_retries, backoff_base=self.retry_backoff)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by both clients."""
        return {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "retry": self.retry_policy,
            "allowed_callback_hosts": self.callback_allowed_hosts,
            "rate_limits": self.rate_limits,
        }


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    # Form fields may be stored plain or with the legacy ``extra__nyne__`` prefix.
    value = extras.get(name)
    if value in (None, ""):
        value = extras.get(f"extra__{CONN_TYPE}__{name}")
    return None if value == "" else value


def _number(
    extras: Mapping[str, Any], name: str, default: float, conn_id: str, *, integer: bool = False
) -> Any:
    value = _extra(extras, name)
    if value is None:
        return default
    try:
        if isinstance(value, bool):  # JSON true/false is not a number of seconds or retries
            raise TypeError
        number = float(value)
        if not math.isfinite(number) or (integer and not number.is_integer()):
            raise ValueError
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise NyneValidationError(
            f"connection {conn_id!r}: extra field {name!r} must be {kind}, got {value!r}", field=name
        ) from None
    if number < 0:
        raise NyneValidationError(
            f"connection {conn_id!r}: extra field {name!r} must not be negative", field=name
        )
    return int(number) if integer else number


def _rate_limits(extras: Mapping[str, Any], conn_id: str) -> RateLimits:
    """The declared rate limits; 0 switches one off (the defaults are the API's published limits)."""
    default = RateLimits()

    def limit(name: str, fallback: int | None) -> int | None:
        value = _number(extras, name, fallback if fallback is not None else 0, conn_id, integer=True)
        return int(value) or None

    scale = _number(extras, "rate_limit_time_scale", 1.0, conn_id)
    if not scale > 0:
        raise NyneValidationError(
            f"connection {conn_id!r}: extra field 'rate_limit_time_scale' must be > 0",
            field="rate_limit_time_scale",
        )
    return RateLimits(
        per_minute=limit("rate_limit_per_minute", default.per_minute),
        per_hour=limit("rate_limit_per_hour", default.per_hour),
        max_in_flight=limit("max_in_flight", default.max_in_flight),
        time_scale=scale,
    )


def base_url_from(host: str | None, port: int | None, scheme: str | None) -> str:
    """
    The API root from a connection's host (with or without scheme), port and optional ``scheme`` extra.

    Read by :func:`airflow_provider_nyne.client.urls.base_url`: a host carrying a user name or
    password is refused with a message that shows none of it (the key and secret belong in
    login and password); no error quotes the host.

    :param host: the connection's host (``https://api.nyne.ai``, ``api.nyne.ai``, ``127.0.0.1``)
    :param port: the connection's port, used when the host names none
    :param scheme: the ``scheme`` extra, for a host without scheme (default ``https``)
    """
    return base_url(host, port, scheme, default=DEFAULT_BASE_URL)


def settings_from_connection(conn: Any) -> NyneConnectionSettings:
    """
    Read a ``nyne`` connection into :class:`NyneConnectionSettings`.

    :param conn: an Airflow ``Connection`` (anything with ``conn_id``, ``login``, ``password``,
        ``host``, ``port``, ``extra_dejson``)
    :raises NyneAuthError: when the key or secret is missing, naming the connection
    :raises NyneValidationError: when an extra field has a wrong type
    """
    conn_id = conn.conn_id or DEFAULT_CONN_ID
    # A pasted key often carries a trailing newline; the masker must see the value actually sent.
    api_key = conn.login.strip() if isinstance(conn.login, str) else conn.login
    api_secret = conn.password.strip() if isinstance(conn.password, str) else conn.password
    if not api_key:
        raise NyneAuthError(
            f"connection {conn_id!r} has no API key: set its login (shown as 'API Key' in the form)",
            code="missing_api_key",
        )
    if not api_secret:
        raise NyneAuthError(
            f"connection {conn_id!r} has no API secret: set its password (shown as 'API Secret' in the form)",
            code="missing_api_secret",
        )
    mask_secret(api_key)
    mask_secret(api_secret)
    extras: Mapping[str, Any] = conn.extra_dejson or {}
    hosts = _extra(extras, "callback_allowed_hosts") or ()
    if isinstance(hosts, str):
        hosts = tuple(h.strip() for h in hosts.split(",") if h.strip())
    elif not isinstance(hosts, (list, tuple)) or not all(isinstance(h, str) for h in hosts):
        raise NyneValidationError(
            f"connection {conn_id!r}: extra field 'callback_allowed_hosts' must be a comma-separated "
            f"string or a list of host names, got {hosts!r}",
            field="callback_allowed_hosts",
        )
    secret = _extra(extras, "callback_secret")
    if secret and not str(secret).strip("*"):
        # What Airflow's forms show in place of a sensitive value, saved as if it were one: a
        # secret everybody knows would sign callback URLs.
        raise NyneValidationError(
            f"connection {conn_id!r}: extra field 'callback_secret' holds {secret!r}, a masked placeholder, "
            "not a secret: set a real secret (e.g. `openssl rand -hex 32`) or remove the field",
            field="callback_secret",
        )
    if secret:
        mask_secret(str(secret))
    return NyneConnectionSettings(
        conn_id=conn_id,
        api_key=api_key,
        api_secret=api_secret,
        base_url=base_url_from(conn.host, conn.port, _extra(extras, "scheme")),
        timeout=_number(extras, "timeout", 30.0, conn_id) or 30.0,
        max_retries=_number(extras, "max_retries", 3, conn_id, integer=True),
        retry_backoff=_number(extras, "retry_backoff", 1.0, conn_id),
        callback_allowed_hosts=tuple(hosts),
        callback_secret=str(secret) if secret else None,
        rate_limits=_rate_limits(extras, conn_id),
    )


#: Seconds for which hooks of one event loop reuse a connection one of them read (see
#: :meth:`NyneHook.aget_settings`); a changed connection is seen after that.
ASYNC_SETTINGS_REUSE = 1.0
#: Per event loop: connection id -> (when its read started, the read).
_READS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future[NyneConnectionSettings]]]
] = weakref.WeakKeyDictionary()


def _reusable(started: float, read: asyncio.Future[NyneConnectionSettings]) -> bool:
    """A read under way, or one that succeeded less than ``ASYNC_SETTINGS_REUSE`` seconds ago."""
    if not read.done():
        return True
    return (
        not read.cancelled()
        and read.exception() is None
        and time.monotonic() - started < ASYNC_SETTINGS_REUSE
    )


class NyneHook(BaseHook):
    """
    Interact with the Nyne Social Interactions API through an Airflow connection.

    :param nyne_conn_id: the ``nyne`` connection holding the API key (login), secret
        (password) and optional base URL (host)
    :param timeout: seconds per request, overriding the connection's ``timeout`` extra
    :param retry: a :class:`~airflow_provider_nyne.client.http.RetryPolicy` overriding the
        connection's ``max_retries``/``retry_backoff``
    """

    conn_name_attr = "nyne_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Nyne"

    def __init__(
        self,
        nyne_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.nyne_conn_id = nyne_conn_id
        self.timeout = timeout
        self.retry = retry
        self._async_settings: NyneConnectionSettings | None = None

    def __repr__(self) -> str:
        return f"NyneHook(nyne_conn_id={self.nyne_conn_id!r})"

    # Connection -------------------------------------------------------------------------

    def _not_found(self) -> NyneValidationError:
        return NyneValidationError(
            f"the Airflow connection {self.nyne_conn_id!r} does not exist: create a connection of type "
            f"'nyne' with that id (UI, CLI, or AIRFLOW_CONN_{self.nyne_conn_id.upper()})",
            field="nyne_conn_id",
        )

    @cached_property
    def settings(self) -> NyneConnectionSettings:
        """The connection's settings, read on first use."""
        try:
            conn = self.get_connection(self.nyne_conn_id)
        except AirflowNotFoundException:
            raise self._not_found() from None
        return settings_from_connection(conn)

    async def aget_settings(self) -> NyneConnectionSettings:
        """
        The connection's settings, read without blocking the event loop.

        Hooks of one event loop share a read of the same connection that is under way or
        finished less than :data:`ASYNC_SETTINGS_REUSE` seconds ago: a fan-out's waits reach
        the triggerer together, and reading the connection once per wait held its event loop
        for about 0.3 ms each.
        """
        if self._async_settings is None:
            reads = _READS.setdefault(asyncio.get_running_loop(), {})
            read = reads.get(self.nyne_conn_id)
            if read is None or not _reusable(*read):
                task = asyncio.ensure_future(self._aread_settings())
                # Retrieved even when every hook waiting for it was cancelled (no asyncio warning).
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                read = reads[self.nyne_conn_id] = (time.monotonic(), task)
            # Shielded: one cancelled wait does not cancel the read the others share.
            self._async_settings = await asyncio.shield(read[1])
        return self._async_settings

    async def _aread_settings(self) -> NyneConnectionSettings:
        return settings_from_connection(await self._aget_connection())

    async def _aget_connection(self) -> Any:
        conn = None
        aget = getattr(BaseHook, "aget_connection", None)
        if aget is not None:
            try:
                conn = await aget(self.nyne_conn_id)
            except AirflowNotFoundException:
                conn = None  # e.g. dag.test() cannot see metadata-DB connections asynchronously
        if conn is None:
            from asgiref.sync import sync_to_async

            try:
                conn = await sync_to_async(BaseHook.get_connection)(self.nyne_conn_id)
            except AirflowNotFoundException:
                raise self._not_found() from None
        return conn

    def _client_kwargs(self, settings: NyneConnectionSettings) -> dict[str, Any]:
        kwargs = settings.client_kwargs()
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        if self.retry is not None:
            kwargs["retry"] = self.retry
        return kwargs

    @cached_property
    def client(self) -> NyneClient:
        """The synchronous client, built on first use."""
        s = self.settings
        return NyneClient(s.api_key, s.api_secret, **self._client_kwargs(s))

    def get_conn(self) -> NyneClient:
        """Return the synchronous :class:`~airflow_provider_nyne.client.http.NyneClient`."""
        return self.client

    async def aget_conn(self) -> AsyncNyneClient:
        """
        Return a new async client for this connection; close it when done (``async with``).

        Clients of the same API key in the same event loop share one connection pool and the
        key's request budget, so one client per waiting task costs little.
        """
        s = await self.aget_settings()
        return AsyncNyneClient(s.api_key, s.api_secret, **self._client_kwargs(s))

    def build_request(self, **fields: Any) -> InteractionRequest:
        """Validate request fields (aliases accepted) with this connection's callback allow-list."""
        hosts = self.settings.callback_allowed_hosts if fields.get("callback_url") else ()
        return InteractionRequest.create(**fields, allowed_callback_hosts=hosts)

    # API --------------------------------------------------------------------------------

    def submit_interactions(
        self, request: InteractionRequest | Mapping[str, Any], *, deadline: float | None = None
    ) -> str:
        """
        Submit a lookup and return its request id. Costs 3 credits if it completes with results.

        :param request: an :class:`InteractionRequest` or API-style fields (aliases accepted)
        :param deadline: Unix time until which to wait for room under the rate limit; past it,
            ``NyneRateLimitError.retry_after`` says when to come back (nothing was sent)
        """
        rid = self.client.submit(request, deadline=deadline)
        self.log.info("Submitted Nyne interactions lookup: request_id=%s", rid)
        return rid

    def get_interactions_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        """
        Poll a request (free); the returned :class:`JobStatus` carries the result once completed.

        :param request_id: the id returned by :meth:`submit_interactions`
        :param deadline: Unix time until which to wait for room under the rate limit
        """
        return self.client.get_status(request_id, deadline=deadline)

    def close(self) -> None:
        """Close the synchronous client if one was built (a later call builds a new one)."""
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()

    async def asubmit_interactions(self, request: InteractionRequest | Mapping[str, Any]) -> str:
        """Async twin of :meth:`submit_interactions`."""
        async with await self.aget_conn() as client:
            rid = await client.submit(request)
        self.log.info("Submitted Nyne interactions lookup: request_id=%s", rid)
        return rid

    async def aget_interactions_status(self, request_id: str) -> JobStatus:
        """Async twin of :meth:`get_interactions_status`."""
        async with await self.aget_conn() as client:
            return await client.get_status(request_id)

    def get_usage(self) -> dict[str, Any]:
        """The account's usage and credit balance (``GET /usage``, free)."""
        return self.client.get_usage()

    async def aget_usage(self) -> dict[str, Any]:
        """Async twin of :meth:`get_usage`."""
        async with await self.aget_conn() as client:
            return await client.get_usage()

    def test_connection(self) -> tuple[bool, str]:
        """Check the credentials with the free ``GET /usage`` (the form's Test button, ``airflow connections test``)."""
        try:
            usage = self.get_usage()
        except NyneTransportError as err:
            return False, f"{err}; check the connection's Base URL ({self.settings.base_url})"
        except NyneError as err:
            return False, str(err)
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        finally:
            self.close()
        from airflow_provider_nyne.utils.credits import balance_from_usage

        credits = balance_from_usage(usage)
        suffix = f" ({credits} credits remaining)" if credits is not None else ""
        return True, f"Connection to the Nyne API works{suffix}"

    # Connection form (Airflow 3.1 reads these; 3.2+ reads get_provider_info) -------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel login/password/host and hide unused fields in the connection form."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form, for Airflow versions that build it from hook methods."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, PasswordField, StringField
        from wtforms.validators import NumberRange, Optional

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            label = lazy_gettext(spec["label"])
            kinds = spec["schema"]["type"]
            # The form starts from the values the hook uses, not from empty fields.
            common = {"description": spec["description"], "default": spec["schema"].get("default")}
            if spec["schema"].get("format") == "password":
                widgets[name] = PasswordField(label, widget=BS3PasswordFieldWidget(), **common)
            elif "integer" in kinds:
                widgets[name] = IntegerField(
                    label, widget=BS3TextFieldWidget(), validators=[Optional(), NumberRange(min=0)], **common
                )
            else:
                widgets[name] = StringField(label, widget=BS3TextFieldWidget(), **common)
        return widgets
