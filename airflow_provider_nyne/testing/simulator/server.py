"""The simulator's Python API: :class:`NyneSimulator`, a simulated Nyne API on loopback."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_nyne.testing.simulator.accounts import Account
from airflow_provider_nyne.testing.simulator.app import ADMIN_PREFIX, SimulatorApp
from airflow_provider_nyne.testing.simulator.background import BackgroundServer
from airflow_provider_nyne.testing.simulator.core import SimulatorCore
from airflow_provider_nyne.testing.simulator.ledger import Ledger
from airflow_provider_nyne.testing.simulator.settings import ENDPOINTS, Settings


class NyneSimulator:
    """A simulated Nyne API served over real sockets on a background thread (docs/simulator.md).

    :param host: address to bind (loopback by default).
    :param port: port to bind; 0 picks a free one (read it from :attr:`port` or :attr:`url`).
    :param api_key: key of the default account (a distinctive random ``sim-key-...`` otherwise).
    :param api_secret: secret of the default account (random ``sim-secret-...`` otherwise).
    :param credits: starting balance of the default account.
    :param job_duration: seconds from submission to terminal status (the median when spread).
    :param job_duration_sigma: log-normal spread of job durations (0: every job takes ``job_duration``).
    :param job_duration_seed: picks the sequence of spread durations.
    :param slow_job_duration: duration of ``slow*`` jobs (ten times ``job_duration`` if None).
    :param request_ttl: seconds a request id stays readable after the job's terminal status.
    :param rate_limit_per_minute: requests per account per minute; None or 0 disables.
    :param rate_limit_per_hour: requests per account per hour; None or 0 disables.
    :param rate_limited_endpoints: which of ``submit``, ``status``, ``usage`` count toward limits.
    :param rate_limit_time_scale: factor applied to the rate-limit windows (60 s and 3600 s).
    :param callback_time_scale: factor applied to callback retry delays and timeouts.
    :param callback_allowed_hosts: host names a ``callback_url`` may use; None allows any.
    :param failure_reason: ``error`` of jobs made to fail without an explicit reason.
    :param ledger_limit: entries kept per ledger list (oldest dropped first).
    :param log_level: level of uvicorn's loggers.
    :param access_log: log one line per request (uvicorn's access log).
    :param http: uvicorn HTTP implementation: ``auto``, ``httptools`` or ``h11``.
    :param loop: event loop: ``auto`` (uvloop when installed), ``uvloop`` or ``asyncio``.
    :param timeout_keep_alive: seconds an idle keep-alive connection stays open.
    :param backlog: listen backlog of the server socket.
    :param tls: serve HTTPS with a certificate from a throwaway CA made at start (see :attr:`ca_file`).
    :ivar host: the address to bind.
    :ivar api_key: API key of the default account.
    :ivar api_secret: API secret of the default account.
    :ivar ledger: what the simulator saw and charged.
    :ivar faults: scriptable failures.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        api_secret: str | None = None,
        credits: int = 1000,
        job_duration: float = 0.2,
        job_duration_sigma: float = 0.0,
        job_duration_seed: int = 0,
        slow_job_duration: float | None = None,
        request_ttl: float = 3600.0,
        rate_limit_per_minute: int | None = 60,
        rate_limit_per_hour: int | None = 1000,
        rate_limited_endpoints: Iterable[str] = ENDPOINTS,
        rate_limit_time_scale: float = 1.0,
        callback_time_scale: float = 1.0,
        callback_allowed_hosts: Iterable[str] | None = None,
        failure_reason: str = "Profile is private",
        ledger_limit: int = 100_000,
        log_level: str = "warning",
        access_log: bool = False,
        http: str = "auto",
        loop: str = "auto",
        timeout_keep_alive: int = 15,
        backlog: int = 2048,
        tls: bool = False,
    ) -> None:
        # The behaviour settings are the keyword arguments named like the fields of Settings.
        arguments = locals()
        settings = Settings().updated(
            {f.name: arguments[f.name] for f in fields(Settings) if f.name in arguments}
        )
        self.host = host
        self.api_key = api_key or f"sim-key-{secrets.token_hex(8)}"
        self.api_secret = api_secret or f"sim-secret-{secrets.token_hex(16)}"
        default_account = Account(api_key=self.api_key, api_secret=self.api_secret, credits=credits)
        self._core = SimulatorCore(settings, [default_account], ledger_limit=ledger_limit)
        self.ledger = Ledger(self._core)
        self.faults = self._core.faults
        uvicorn_options = {"log_level": log_level, "access_log": access_log, "http": http, "backlog": backlog}
        self._server = BackgroundServer(
            host, port, tls=tls, loop=loop, timeout_keep_alive=timeout_keep_alive, **uvicorn_options
        )

    # ----------------------------------------------------------------- properties
    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._server.port is None:
            raise RuntimeError("the simulator is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:PORT`` (``https://`` with TLS)."""
        return f"{'https' if self._server.tls else 'http'}://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the server's certificate (with ``tls=True``, while started).

        Trust it with ``SSL_CERT_FILE=<ca_file>`` (httpx, and so the provider's clients, read it).
        """
        if self._server.ca_file is None:
            raise RuntimeError("the simulator serves TLS only when built with tls=True and started")
        return self._server.ca_file

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._server.running

    @property
    def settings(self) -> Settings:
        """A copy of the current settings."""
        return replace(self._core.settings)

    def __repr__(self) -> str:
        where = self.url if self._server.port is not None else "not started"
        return f"NyneSimulator({where}, running={self.running})"

    # ----------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> NyneSimulator:
        """Bind the socket and start serving on a background thread; return self.

        :param timeout: seconds to wait for the server to listen.
        """
        self._server.start(SimulatorApp(self._core), timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, join the thread and close the socket (no-op when not started).

        :param timeout: seconds to wait for a graceful stop before forcing it.
        """
        self._server.stop(timeout)

    def __enter__(self) -> NyneSimulator:
        if not self._server.started:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- state
    def configure(self, **changes: Any) -> Settings:
        """Change settings while running, all or none (``ValueError`` names a bad one); return them.

        :param changes: :class:`Settings` field names and new values, e.g. ``job_duration=5``.
        """
        return self._core.configure(changes)

    def add_account(
        self,
        api_key: str,
        api_secret: str,
        *,
        credits: int = 1000,
        subscription_active: bool = True,
        disabled: bool = False,
        permissions: Iterable[str] | None = None,
        allowed_ips: Iterable[str] | None = None,
    ) -> Account:
        """Add an account, or update one with the same key (counters are kept); return a copy.

        :param api_key: the account's ``X-API-Key``.
        :param api_secret: the account's ``X-API-Secret``.
        :param credits: balance; submitting needs a positive balance.
        :param subscription_active: False answers ``403 subscription_required``.
        :param disabled: True answers ``403 api_key_disabled``.
        :param permissions: of ``interactions`` and ``usage`` (both by default).
        :param allowed_ips: client IPs allowed (any when None); others get ``403 ip_not_allowed``.
        """
        # The same checks as POST /_simulator/accounts: one place says what an account may be.
        account = Account.from_mapping(
            {
                "api_key": api_key,
                "api_secret": api_secret,
                "credits": credits,
                "subscription_active": subscription_active,
                "disabled": disabled,
                "permissions": permissions,
                "allowed_ips": allowed_ips,
            }
        )
        return self._core.upsert_account(account)

    def account(self, api_key: str | None = None) -> Account:
        """Return a copy of an account with its balance and counters.

        :param api_key: the account (the default account when None).
        """
        return self._core.get_account(api_key or self.api_key)

    def set_credits(self, credits: int, api_key: str | None = None) -> None:
        """Set an account's balance (0 or less makes submissions answer 402).

        :param credits: the new balance.
        :param api_key: the account (the default account when None).
        """
        with self._core.lock:
            self._core.accounts[api_key or self.api_key].credits = credits

    def release(self, request_id: str | None = None) -> list[str]:
        """Let held jobs finish (at once, or when their duration has passed); return the ids released.

        :param request_id: one job (``KeyError`` when unknown), or every held job when None.
        """
        return self._core.release_jobs(request_id)

    def job(self, request_id: str) -> dict[str, Any] | None:
        """Return what a poll would answer as ``data`` now (not recorded as a poll), or None.

        :param request_id: the request id.
        """
        return self._core.job_snapshot(request_id)

    def reset(self, *, settings: bool = False) -> None:
        """Forget jobs, ledger, faults and rate-limit counters; restore the initial accounts.

        :param settings: also undo :meth:`configure` changes (kept by default).
        """
        self._core.reset(settings=settings)

    def admin_url(self, path: str = "") -> str:
        """Return the URL of an admin endpoint, e.g. ``admin_url("ledger")``.

        :param path: path under ``/_simulator``.
        """
        return f"{self.url}{ADMIN_PREFIX}/{path.lstrip('/')}" if path else f"{self.url}{ADMIN_PREFIX}"

    # ----------------------------------------------------------------- Airflow connection
    def rate_limit_extras(self) -> dict[str, Any]:
        """The connection extras that declare this server's rate limits (0: none), so clients pace to them."""
        settings = self._core.settings
        extras: dict[str, Any] = {
            "rate_limit_per_minute": settings.rate_limit_per_minute or 0,
            "rate_limit_per_hour": settings.rate_limit_per_hour or 0,
        }
        if settings.rate_limit_time_scale != 1:
            extras["rate_limit_time_scale"] = settings.rate_limit_time_scale
        return extras

    def _credentials(self, api_key: str | None) -> tuple[str, str]:
        account = self.account(api_key)
        return account.api_key, account.api_secret

    def connection_uri(self, api_key: str | None = None, **extra: str) -> str:
        """Return an Airflow connection URI, ``nyne://KEY:SECRET@127.0.0.1:PORT?scheme=http&...``.

        :param api_key: use this account's credentials (the default account when None).
        :param extra: connection extras besides :meth:`rate_limit_extras` (they win).
        """
        key, secret = self._credentials(api_key)
        query = urlencode(
            {"scheme": "https" if self._server.tls else "http", **self.rate_limit_extras(), **extra}
        )
        return f"nyne://{quote(key, safe='')}:{quote(secret, safe='')}@{self._url_host}:{self.port}?{query}"

    def connection_json(self, api_key: str | None = None, extra: Mapping[str, Any] | None = None) -> str:
        """Return the JSON form of the Airflow connection, for ``AIRFLOW_CONN_<ID>``.

        :param api_key: use this account's credentials (the default account when None).
        :param extra: connection extras besides :meth:`rate_limit_extras` (they win).
        """
        key, secret = self._credentials(api_key)
        conn = {"conn_type": "nyne", "login": key, "password": secret, "host": self.url}
        return json.dumps({**conn, "extra": {**self.rate_limit_extras(), **dict(extra or {})}})

    def airflow_env(
        self,
        conn_id: str = "nyne_default",
        api_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Return ``{"AIRFLOW_CONN_<CONN_ID>": <connection JSON>}``, plus ``SSL_CERT_FILE`` with TLS.

        With TLS, processes started with this environment trust the simulator's CA instead of
        the public ones: keep it to test processes.

        :param conn_id: the Airflow connection id.
        :param api_key: use this account's credentials (the default account when None).
        :param extra: connection extras.
        """
        env = {f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_json(api_key, extra)}
        if self._server.tls:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return env
