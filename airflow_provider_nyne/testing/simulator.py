"""A local Nyne Social Interactions API for tests, demos and offline DAG development.

:class:`NyneSimulator` is a real HTTP/1.1 server (uvicorn, keep-alive) bound to loopback that
implements the public Nyne contract: submit, poll, usage, authentication, credits, rate
limits, request expiry and callbacks, plus scriptable faults and a ledger of everything it
saw. It shares no code with :mod:`airflow_provider_nyne.client` (it is the independent check
of that client) and does not import Airflow.

In-process use::

    from airflow_provider_nyne.testing.simulator import NyneSimulator

    with NyneSimulator(job_duration=0.2) as sim:
        sim.url                     # "http://127.0.0.1:PORT"
        sim.api_key, sim.api_secret # default account ("sim-key-...", "sim-secret-...")
        os.environ.update(sim.airflow_env())  # AIRFLOW_CONN_NYNE_DEFAULT=<connection JSON>
        sim.faults.unavailable(endpoint="submit", times=2)
        ...                         # run the code under test
        assert len(sim.ledger.submissions()) == 1
        assert sim.ledger.credits_charged() == 3

Command line (serves until SIGINT/SIGTERM; ``--port 0`` picks a free port)::

    python -m airflow_provider_nyne.testing.simulator --port 8765 --job-duration 2
    nyne-simulator --port 0 --ready-file /tmp/nyne.url --rate-limit-per-minute 0

It prints the base URL, the credentials and an ``AIRFLOW_CONN_NYNE_DEFAULT='...'`` line;
``--ready-file`` gets the URL once the server is listening. Other options: ``--host``,
``--api-key``/``--api-secret``, ``--credits``, ``--slow-job-duration``, ``--request-ttl``,
``--rate-limit-per-minute``/``--rate-limit-per-hour`` (0 disables), ``--callback-time-scale``,
``--callback-allowed-host`` (repeatable), ``--failure-reason``, ``--access-log``, ``--log-level``.

pytest fixtures live in ``tests/fixtures/simulator.py``: ``simulator`` (fresh per test),
``simulator_session`` (one per session, reset before each test), ``simulator_factory``
(build one with custom settings) and ``simulator_connection`` (``simulator`` plus
``AIRFLOW_CONN_NYNE_DEFAULT`` set in the environment).

Behaviour:

* Jobs are ``queued`` for the first quarter of their duration, then ``processing``, then
  ``completed`` (or ``failed``). Status is computed from elapsed time. Duration comes from
  ``job_duration``, a ``slow*`` username, or a ``job_duration`` fault.
* Results are deterministic: the same (platform, type, username, tweet id, max_results) give
  the same people; the item count is ``min(max_results, a per-target size of 15-60)``.
* Credits: a job that completes with at least one interaction costs ``3`` credits, charged
  once when it completes (by the server's completion timer, or by whichever read sees it
  first); empty and failed jobs cost nothing. Submitting needs a positive balance (else
  ``402 insufficient_credits``); polling and ``/usage`` are free.
* Checks run in this order: injected faults, authentication (401/403), rate limit (429),
  credits (402, submit only), body validation (400).
* Request ids expire ``request_ttl`` seconds after the job reaches its terminal status, then
  answer ``404 request_not_found`` (as does another account's request id).
* Rate limits are per account (``rate_limit_per_minute``/``rate_limit_per_hour``, None or 0
  to disable). By default submissions, polls and usage calls all count; change that with
  ``rate_limited_endpoints``. Answers carry ``X-RateLimit-*`` (reset as Unix time) and
  ``RateLimit-*`` (reset in seconds) for the tightest window; a 429 adds ``Retry-After``.
* ``subscription_required`` and ``permission_denied`` (missing ``interactions``) apply to
  ``/person/interactions``; ``/usage`` needs the ``usage`` permission and still answers
  for an account without a subscription. ``api_key_disabled`` and ``ip_not_allowed`` apply
  everywhere.

Magic usernames (from the ``username`` field or the URL, case-insensitive prefix), for code
that cannot reach the Python API, such as tasks in real Airflow processes:

* ``empty*`` (e.g. ``empty_account``): completes with no interactions, ``total_count`` 0.
* ``fail*``: ends ``failed`` with ``error`` = ``failure_reason`` ("Profile is private").
* ``slow*``: takes ``slow_job_duration`` (default ten times ``job_duration``).
* ``variant*``: result in every alternate shape at once (see ``result_shape`` below).
* ``hold*``: stays queued/processing until released (``sim.release(request_id=None)`` or
  ``POST /_simulator/jobs/release`` with an optional ``{"request_id": ...}``), then
  finishes at once (or when its duration has passed); never expires while held.

Faults (``sim.faults``, or ``POST /_simulator/faults`` with ``{"kind": ..., ...}``; every
method returns a fault id). ``endpoint`` is ``submit``, ``status``, ``usage`` or ``*``;
``times`` is how many answers or jobs are affected (default 1, None/null for all):

* ``error(status, code, message=None, endpoint=, times=, retry_after=None)`` (kind ``error``),
  ``rate_limited(retry_after=1)`` (``rate_limit``: 429 + ``Retry-After``),
  ``server_error()`` (``server_error``: 500 ``internal_error``),
  ``unavailable(retry_after=None)`` (``unavailable``: 503 ``service_unavailable``);
* ``delay(seconds)`` (``delay``): wait before handling; combines with the others;
* ``drop_connection(after_processing=False)`` (``drop``): read the request, then abort the
  TCP connection with no answer (clients see a protocol error, not a 500). With
  ``after_processing`` the request is handled first, so a submission creates its job: the
  ambiguous "sent but no answer" case;
* ``malformed_json(status=200, after_processing=False)`` (``malformed_json``);
* job faults, applied to the next accepted submissions: ``fail_next_job(reason=None)``
  (``fail_job``), ``empty_next_job()`` (``empty_job``), ``result_shape(shape="variant")``
  (``result_shape``: ``actor``, ``string_counts``, ``string_verified``, ``results_list`` or
  ``variant`` for all), ``job_duration(seconds)`` (``job_duration``), ``pending_status()``
  (``pending_status``: ``pending`` instead of ``processing``), ``hold_next_job()``
  (``hold_job``: held like a ``hold*`` job until released);
* ``active()``, ``remove(fault_id)``, ``clear()``.

Ledger (``sim.ledger``, thread-safe, or ``GET /_simulator/ledger[?summary=1]``):
``requests(endpoint=None, api_key=None)`` (every API request, also faulted or dropped ones),
``submissions(api_key=None)`` (with normalised request fields and request id),
``charges(api_key=None)``, ``credits_charged(api_key=None)``, ``polls(request_id=None)``,
``poll_count(request_id=None)``, ``usage_calls(api_key=None)``,
``callback_attempts(request_id=None)``, ``rejections(code=None, endpoint=None)``,
``snapshot(summary=False)`` and ``wait_for(predicate, timeout=5.0)``.

Admin HTTP endpoints (no authentication; loopback only by default): ``GET /_simulator/health``,
``GET /_simulator/ledger``, ``POST /_simulator/reset``, ``GET|POST|DELETE /_simulator/faults``
(``POST /_simulator/faults/clear`` also clears), ``POST /_simulator/jobs/release`` (optional
``{"request_id": ...}``; answers ``{"released": [...]}``), ``GET|POST /_simulator/accounts`` (POST adds
or updates ``{"api_key", "api_secret", "credits", "subscription_active", "disabled",
"permissions", "allowed_ips"}``), ``GET|POST /_simulator/settings`` (POST changes any
constructor setting such as ``job_duration`` or ``rate_limit_per_minute``). Answers use the
API envelope.

Callbacks: when a job with ``callback_url`` completes or fails, the server POSTs (JSON, with
headers ``X-Nyne-Request-Id`` and ``X-Nyne-Delivery-Attempt``) exactly what a poll would
answer at that moment::

    {"success": true, "data": {"request_id": ..., "status": "completed", "completed": true,
     "result": {...}, ...}, "timestamp": "...Z"}

Any 2xx acknowledges. Otherwise it retries up to 5 times after waiting 1, 5, 15, 60 and 300
seconds, each multiplied by ``callback_time_scale``; each attempt times out after
``max(30 * callback_time_scale, 1)`` seconds. Delivery starts at completion time even if
nobody polls. Every attempt lands in ``ledger.callback_attempts()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import uvicorn

from airflow_provider_nyne.testing._sim_app import ADMIN_PREFIX, SimulatorApp
from airflow_provider_nyne.testing._sim_controls import FaultControls, Ledger
from airflow_provider_nyne.testing._sim_core import (
    DEFAULT_PERMISSIONS,
    ENDPOINTS,
    Account,
    CallbackAttempt,
    Charge,
    Poll,
    RequestRecord,
    Settings,
    SimulatorCore,
    Submission,
    UsageCall,
)
from airflow_provider_nyne.testing._sim_tls import TlsFiles, write_tls_files

__all__ = [
    "Account",
    "CallbackAttempt",
    "Charge",
    "FaultControls",
    "Ledger",
    "NyneSimulator",
    "Poll",
    "RequestRecord",
    "Settings",
    "Submission",
    "UsageCall",
    "main",
]

log = logging.getLogger("airflow_provider_nyne.testing.simulator")


class _Server(uvicorn.Server):
    """uvicorn server that reports when it is listening and stops as soon as asked."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await super().startup(sockets=sockets)
        self._ready.set()

    async def main_loop(self) -> None:
        # uvicorn's own loop polls should_exit every 0.1 s; waking on request makes stop() fast.
        assert self._wake is not None
        should_exit = await self.on_tick(0)
        while not should_exit:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            # A tick count that is a multiple of 10 refreshes the Date header.
            should_exit = await self.on_tick(0)

    def request_exit(self) -> None:
        """Ask the server to stop; safe from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(wake.set)


def _new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class NyneSimulator:
    """A simulated Nyne API served over real sockets on a background thread.

    :param host: address to bind (loopback by default).
    :param port: port to bind; 0 picks a free one (read it from :attr:`port` or :attr:`url`).
    :param api_key: key of the default account (a distinctive random ``sim-key-...`` otherwise).
    :param api_secret: secret of the default account (random ``sim-secret-...`` otherwise).
    :param credits: starting balance of the default account.
    :param job_duration: seconds from submission to terminal status.
    :param slow_job_duration: duration of ``slow*`` jobs (ten times ``job_duration`` if None).
    :param request_ttl: seconds a request id stays readable after the job's terminal status.
    :param rate_limit_per_minute: requests per account per minute; None or 0 disables.
    :param rate_limit_per_hour: requests per account per hour; None or 0 disables.
    :param rate_limited_endpoints: which of ``submit``, ``status``, ``usage`` count toward limits.
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
    :param tls: serve HTTPS with a certificate from a throwaway CA made at start (see
        :attr:`ca_file`); :meth:`airflow_env` then also sets ``SSL_CERT_FILE`` to trust it.
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
        slow_job_duration: float | None = None,
        request_ttl: float = 3600.0,
        rate_limit_per_minute: int | None = 60,
        rate_limit_per_hour: int | None = 1000,
        rate_limited_endpoints: Iterable[str] = ENDPOINTS,
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
        self._host = host
        self._tls = tls
        self._tls_files: TlsFiles | None = None
        self._requested_port = port
        self._port: int | None = None
        self._api_key = api_key or f"sim-key-{secrets.token_hex(8)}"
        self._api_secret = api_secret or f"sim-secret-{secrets.token_hex(16)}"
        settings = Settings().updated(
            {
                "job_duration": job_duration,
                "slow_job_duration": slow_job_duration,
                "request_ttl": request_ttl,
                "rate_limit_per_minute": rate_limit_per_minute,
                "rate_limit_per_hour": rate_limit_per_hour,
                "rate_limited_endpoints": rate_limited_endpoints,
                "callback_time_scale": callback_time_scale,
                "callback_allowed_hosts": callback_allowed_hosts,
                "failure_reason": failure_reason,
            },
        )
        default_account = Account(api_key=self._api_key, api_secret=self._api_secret, credits=credits)
        self._core = SimulatorCore(settings, [default_account], ledger_limit=ledger_limit)
        self._ledger = Ledger(self._core)
        self._faults = FaultControls(self._core)
        self._log_level = log_level
        self._access_log = access_log
        self._http = http
        self._loop_kind = loop
        self._timeout_keep_alive = timeout_keep_alive
        self._backlog = backlog
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None
        self._lifecycle = threading.Lock()

    # ----------------------------------------------------------------- properties
    @property
    def host(self) -> str:
        """The bound address."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (``https://`` with ``tls=True``; no trailing slash)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the server's certificate (``tls=True``, while started).

        Trust it with ``SSL_CERT_FILE=<ca_file>`` (httpx, and so the provider's clients, read
        it) or ``ssl.create_default_context(cafile=...)``.
        """
        if self._tls_files is None:
            raise RuntimeError("the simulator serves TLS only when built with tls=True and started")
        return self._tls_files.ca_file

    @property
    def api_key(self) -> str:
        """API key of the default account."""
        return self._api_key

    @property
    def api_secret(self) -> str:
        """API secret of the default account."""
        return self._api_secret

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def ledger(self) -> Ledger:
        """What the simulator saw and charged (see :class:`Ledger`)."""
        return self._ledger

    @property
    def faults(self) -> FaultControls:
        """Scriptable failures (see :class:`FaultControls`)."""
        return self._faults

    @property
    def settings(self) -> Settings:
        """A copy of the current settings."""
        return replace(self._core.settings)

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"NyneSimulator({where}, running={self.running})"

    # ----------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> NyneSimulator:
        """Bind the socket and start serving on a background thread; return self.

        :param timeout: seconds to wait for the server to listen.
        """
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError("the simulator is already started")
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self._host, self._requested_port))
                sock.listen(self._backlog)
            except OSError:
                sock.close()
                raise
            self._socket = sock
            self._port = sock.getsockname()[1]
            tls_options: dict[str, Any] = {}
            if self._tls:
                self._tls_files = write_tls_files(
                    Path(tempfile.mkdtemp(prefix="nyne-simulator-tls-")), self._host
                )
                tls_options = {
                    "ssl_certfile": str(self._tls_files.cert_file),
                    "ssl_keyfile": str(self._tls_files.key_file),
                }
            config = uvicorn.Config(
                SimulatorApp(self._core),
                http=self._http,
                lifespan="off",
                log_config=None,
                log_level=self._log_level,
                access_log=self._access_log,
                proxy_headers=False,
                server_header=False,
                timeout_keep_alive=self._timeout_keep_alive,
                timeout_graceful_shutdown=1,
                backlog=self._backlog,
                **tls_options,
            )
            ready = threading.Event()
            self._server = _Server(config, ready)
            self._error = None
            self._thread = threading.Thread(
                target=self._run,
                args=(self._server, sock, ready),
                name=f"nyne-simulator-{self._port}",
                daemon=True,
            )
            self._thread.start()
        if not ready.wait(timeout) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"the simulator did not start: {error!r}") from error
        return self

    def _run(self, server: _Server, sock: socket.socket, ready: threading.Event) -> None:
        loop = _new_event_loop(self._loop_kind)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(server, sock))
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            log.exception("Nyne simulator stopped with an error")
        finally:
            try:
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                ready.set()

    async def _serve(self, server: _Server, sock: socket.socket) -> None:
        app = server.config.app
        assert isinstance(app, SimulatorApp)
        app.bind(asyncio.get_running_loop())
        try:
            await server.serve(sockets=[sock])
        finally:
            await app.aclose()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, join the thread and close the socket (no-op when not started).

        :param timeout: seconds to wait for a graceful stop before forcing it.
        """
        with self._lifecycle:
            thread, server, sock = self._thread, self._server, self._socket
            if thread is None or server is None:
                return
            server.request_exit()
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
            if sock is not None:
                sock.close()
            if self._tls_files is not None:
                shutil.rmtree(self._tls_files.ca_file.parent, ignore_errors=True)
                self._tls_files = None
            self._thread = self._server = self._socket = None
            if thread.is_alive():
                raise RuntimeError("the simulator thread did not stop")

    def __enter__(self) -> NyneSimulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- state
    def configure(self, **changes: Any) -> Settings:
        """Change settings while running (any constructor setting from ``job_duration`` on).

        :param changes: setting names and new values.
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
        :param permissions: granted permissions, of ``interactions`` and ``usage`` (both by default).
        :param allowed_ips: client IPs allowed (any when None); others get ``403 ip_not_allowed``.
        """
        account = Account(
            api_key=api_key,
            api_secret=api_secret,
            credits=credits,
            subscription_active=subscription_active,
            disabled=disabled,
            permissions=DEFAULT_PERMISSIONS if permissions is None else frozenset(permissions),
            allowed_ips=None if allowed_ips is None else frozenset(allowed_ips),
        )
        return self._core.upsert_account(account)

    def account(self, api_key: str | None = None) -> Account:
        """Return a copy of an account with its balance and counters.

        :param api_key: the account (the default account when None).
        """
        return self._core.get_account(api_key or self._api_key)

    def set_credits(self, credits: int, api_key: str | None = None) -> None:
        """Set an account's balance.

        :param credits: the new balance (0 or less makes submissions answer 402).
        :param api_key: the account (the default account when None).
        """
        with self._core.lock:
            self._core.accounts[api_key or self._api_key].credits = credits

    def release(self, request_id: str | None = None) -> list[str]:
        """Let held jobs (``hold*`` usernames, ``faults.hold_next_job()``) finish.

        A released job completes (or fails) at once if its duration has passed, else when it
        does; its callback, if any, is delivered then.

        :param request_id: one job (``KeyError`` when unknown), or every held job when None.
        :returns: the request ids released.
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

        :param path: path under the admin prefix.
        """
        return f"{self.url}{ADMIN_PREFIX}/{path.lstrip('/')}" if path else f"{self.url}{ADMIN_PREFIX}"

    # ----------------------------------------------------------------- Airflow connection
    def _credentials(self, api_key: str | None) -> tuple[str, str]:
        if api_key is None:
            return self._api_key, self._api_secret
        account = self._core.get_account(api_key)
        return account.api_key, account.api_secret

    def connection_uri(self, api_key: str | None = None, **extra: str) -> str:
        """Return an Airflow connection URI: ``nyne://KEY:SECRET@127.0.0.1:PORT?scheme=http`` (``https`` with TLS).

        :param api_key: use this account's credentials (the default account when None).
        :param extra: more connection extras, added to the query string.
        """
        key, secret = self._credentials(api_key)
        host = f"[{self._host}]" if ":" in self._host else self._host
        query = urlencode({"scheme": "https" if self._tls else "http", **extra})
        return f"nyne://{quote(key, safe='')}:{quote(secret, safe='')}@{host}:{self.port}?{query}"

    def connection_json(self, api_key: str | None = None, extra: Mapping[str, Any] | None = None) -> str:
        """Return the JSON form of the Airflow connection, for ``AIRFLOW_CONN_<ID>``.

        :param api_key: use this account's credentials (the default account when None).
        :param extra: connection extras.
        """
        key, secret = self._credentials(api_key)
        return json.dumps(
            {
                "conn_type": "nyne",
                "login": key,
                "password": secret,
                "host": self.url,
                "extra": dict(extra or {}),
            },
        )

    def airflow_env(
        self,
        conn_id: str = "nyne_default",
        api_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Return ``{"AIRFLOW_CONN_<CONN_ID>": <connection JSON>}`` for a subprocess or monkeypatch.

        With ``tls=True`` also ``SSL_CERT_FILE``: the processes then trust the simulator's CA
        (instead of the public ones: keep it to test processes).

        :param conn_id: the Airflow connection id.
        :param api_key: use this account's credentials (the default account when None).
        :param extra: connection extras.
        """
        env = {f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_json(api_key, extra)}
        if self._tls:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return env


# --------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nyne-simulator",
        description="Serve a local Nyne Social Interactions API for tests and offline DAG development.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free port (default 8765)"
    )
    parser.add_argument("--api-key", help="API key of the default account (random sim-key-... otherwise)")
    parser.add_argument("--api-secret", help="API secret of the default account (random otherwise)")
    parser.add_argument("--credits", type=int, default=1000, help="starting credits (default 1000)")
    parser.add_argument("--job-duration", type=float, default=2.0, help="seconds a job takes (default 2)")
    parser.add_argument("--slow-job-duration", type=float, help="seconds a slow* job takes (default 10x)")
    parser.add_argument("--request-ttl", type=float, default=3600.0, help="seconds results stay readable")
    parser.add_argument("--rate-limit-per-minute", type=int, default=60, help="0 disables (default 60)")
    parser.add_argument("--rate-limit-per-hour", type=int, default=1000, help="0 disables (default 1000)")
    parser.add_argument(
        "--callback-time-scale",
        type=float,
        default=1.0,
        help="factor for callback retry delays and timeouts (default 1)",
    )
    parser.add_argument(
        "--callback-allowed-host",
        action="append",
        dest="callback_allowed_hosts",
        metavar="HOST",
        help="allow callbacks only to this host (repeatable; any host when absent)",
    )
    parser.add_argument("--failure-reason", default="Profile is private", help="error of fail* jobs")
    parser.add_argument("--ready-file", help="write the base URL to this file once listening")
    parser.add_argument(
        "--tls", action="store_true", help="serve HTTPS with a throwaway CA (its file is printed at start)"
    )
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return parser


def _write_ready_file(path: str, url: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(url + "\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line until SIGINT or SIGTERM.

    :param argv: arguments (``sys.argv[1:]`` when None).
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.ready_file:
        with contextlib.suppress(FileNotFoundError):
            os.remove(args.ready_file)
    sim = NyneSimulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        api_secret=args.api_secret,
        credits=args.credits,
        job_duration=args.job_duration,
        slow_job_duration=args.slow_job_duration,
        request_ttl=args.request_ttl,
        rate_limit_per_minute=args.rate_limit_per_minute,
        rate_limit_per_hour=args.rate_limit_per_hour,
        callback_time_scale=args.callback_time_scale,
        callback_allowed_hosts=args.callback_allowed_hosts,
        failure_reason=args.failure_reason,
        log_level=args.log_level,
        access_log=args.access_log,
        tls=args.tls,
    )
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim.start()
        except OSError as exc:
            print(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if args.ready_file:
            _write_ready_file(args.ready_file, sim.url)
        # Printing the credentials is the point here: they only exist in this simulator.
        print(f"Nyne simulator listening on {sim.url}")
        print(f"  API key:    {sim.api_key}")
        print(f"  API secret: {sim.api_secret}")
        print(f"  Ledger:     {sim.admin_url('ledger')}")
        if args.tls:
            print(
                f"  CA file:    {sim.ca_file} (trust it with SSL_CERT_FILE={shlex.quote(str(sim.ca_file))})"
            )
        print("Airflow connection (paste into your shell):")
        print(f"AIRFLOW_CONN_NYNE_DEFAULT={shlex.quote(sim.connection_json())}")
        print("Press Ctrl+C to stop.", flush=True)
        while not stopping.wait(0.5):
            if not sim.running:
                print("Nyne simulator stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Nyne simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
