"""NyneCallbackTrigger: wait for a Nyne callback without ever polling the Nyne API.

A task that submitted a lookup with a callback URL pointing at the receiver defers on this
trigger. The receiver normally resumes the task itself the moment the callback arrives (the
triggerer then drops this trigger). The trigger covers the rest:

* it reads the callback *mailbox* (the receiver's stored row for this request, served at
  the same capability URL with ``GET``) when it starts, so a callback that arrived before
  the task finished deferring is picked up at once, then every ``mailbox_interval``
  seconds as a safety net. The mailbox is the Airflow api-server, never the Nyne API;
* at the deadline, after a last mailbox read, it asks the API for the status exactly once
  (one reconciliation, not polling). A finished job completes the task; an unfinished one
  fails it with the request id, so that a retry reconnects to the same request.

Events have the shape of :class:`~airflow_provider_nyne.triggers.interactions.NyneInteractionsTrigger`'s
(so ``utils.waiting.check_event`` validates both): ``status`` is ``success`` or ``failed``
(the job finished), ``timeout`` (still running at the deadline) or ``error`` (the one status
request failed); with ``request_id``, ``total_count``, ``message``, ``polls`` (status
requests made to the API: ``0``, or ``1`` after a reconciliation), ``error_code`` and
``http_status`` (errors), and ``source`` (``mailbox`` or ``reconcile``; ``callback`` when the
receiver resumed the task itself) and ``correlation_id``.

Kwargs hold no secret: the mailbox token is derived in the triggerer from the signing
secret (connection ``callback_secret`` extra, else ``[nyne] callback_secret``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_nyne.callbacks import config
from airflow_provider_nyne.callbacks.config import DEFAULT_MAILBOX_INTERVAL
from airflow_provider_nyne.callbacks.events import event_from_status, event_from_status_data
from airflow_provider_nyne.callbacks.tokens import TOKEN_HEADER, mailbox_path, make_token
from airflow_provider_nyne.client.errors import NyneError, NyneValidationError
from airflow_provider_nyne.client.polling import WaitOutcome
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID

__all__ = ["DEFAULT_MAILBOX_INTERVAL", "NyneCallbackTrigger"]

_MAILBOX_TIMEOUT = 10.0
_SSL_CONTEXT: list[ssl.SSLContext] = []


def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds: once per process, not per mailbox read,
    # so that the triggerer's event loop is not held up.
    if not _SSL_CONTEXT:
        _SSL_CONTEXT.append(httpx.create_ssl_context())
    return _SSL_CONTEXT[0]


class NyneCallbackTrigger(BaseTrigger):
    """
    Wait in the triggerer for the callback of one Nyne request; reconcile once at the deadline.

    :param request_id: the submitted request
    :param correlation_id: the correlation id of the callback URL the request was submitted with
    :param end_time: deadline as a Unix timestamp (absolute wall-clock time)
    :param nyne_conn_id: the ``nyne`` connection (API credentials and signing secret)
    :param mailbox_interval: seconds between safety-net mailbox reads (``0`` reads only at
        start and at the deadline)
    :param mailbox_url: root URL of the api-server as the triggerer reaches it; default
        :func:`~airflow_provider_nyne.callbacks.config.internal_url`, read in the triggerer
    :param reconcile: ask the API once at the deadline (``False``: time out without asking)
    """

    def __init__(
        self,
        request_id: str,
        correlation_id: str,
        end_time: float,
        nyne_conn_id: str = DEFAULT_CONN_ID,
        mailbox_interval: float = DEFAULT_MAILBOX_INTERVAL,
        mailbox_url: str | None = None,
        reconcile: bool = True,
    ) -> None:
        super().__init__()
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.end_time = float(end_time)
        self.nyne_conn_id = nyne_conn_id
        self.mailbox_interval = float(mailbox_interval)
        self.mailbox_url = mailbox_url
        self.reconcile = reconcile
        self._warned_mailbox = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs (plain values only; no secret)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "correlation_id": self.correlation_id,
                "end_time": self.end_time,
                "nyne_conn_id": self.nyne_conn_id,
                "mailbox_interval": self.mailbox_interval,
                "mailbox_url": self.mailbox_url,
                "reconcile": self.reconcile,
            },
        )

    def _hook(self) -> NyneHook:
        return NyneHook(nyne_conn_id=self.nyne_conn_id)

    async def _secret(self, hook: NyneHook) -> str | None:
        try:
            secret = (await hook.aget_settings()).callback_secret
        except NyneError as exc:
            self.log.warning("Cannot read connection %r for the callback secret: %s", self.nyne_conn_id, exc)
            secret = None
        return config.signing_secret(secret)

    async def read_mailbox(self, hook: NyneHook) -> dict[str, Any] | None:
        """
        The event for a callback already received by the api-server, or ``None``.

        Any failure (receiver unreachable, wrong secret) is logged once and reads as "nothing yet":
        the deadline's reconciliation still settles the request.

        :param hook: the hook of this trigger's connection
        """
        root = self.mailbox_url or config.internal_url()
        secret = await self._secret(hook)
        if not root or not secret:
            self._warn_once(
                "no mailbox to read (set [nyne] callback_internal_url and a callback secret); "
                "waiting for the receiver to resume the task or for the deadline"
            )
            return None
        # The token goes in a header: URLs end up in logs (httpx logs every request).
        url = root.rstrip("/") + mailbox_path(self.correlation_id)
        headers = {TOKEN_HEADER: make_token(secret, self.correlation_id)}
        try:
            async with httpx.AsyncClient(
                timeout=_MAILBOX_TIMEOUT, trust_env=False, verify=_ssl_context()
            ) as client:
                response = await client.get(url, params={"request_id": self.request_id}, headers=headers)
        except httpx.HTTPError as exc:
            self._warn_once(f"callback mailbox at {root} unreachable ({type(exc).__name__})")
            return None
        if response.status_code == 204:
            return None
        if response.status_code == 404:
            self._warn_once(
                f"callback mailbox at {root} refused the token: the triggerer's and the api-server's "
                "callback secrets differ, or the receiver plugin is not installed there"
            )
            return None
        if response.status_code != 200:
            self._warn_once(f"callback mailbox at {root} answered HTTP {response.status_code}")
            return None
        try:
            body = response.json()
            return event_from_status_data(body["data"], "mailbox", correlation_id=self.correlation_id)
        except (ValueError, KeyError, TypeError, NyneError) as exc:
            self._warn_once(f"callback mailbox at {root} sent an unreadable answer ({type(exc).__name__})")
            return None

    def _warn_once(self, message: str) -> None:
        if not self._warned_mailbox:
            self._warned_mailbox = True
            self.log.warning("Nyne request %s: %s", self.request_id, message)

    async def reconcile_once(self, hook: NyneHook) -> dict[str, Any]:
        """
        The single status request made when no callback came by the deadline.

        :param hook: the hook of this trigger's connection
        """
        try:
            status = await hook.aget_interactions_status(self.request_id)
        except NyneError as exc:
            code = exc.code
            if code is None and isinstance(exc, NyneValidationError) and exc.field:
                code = f"invalid_{exc.field}"
            return self._event(
                WaitOutcome(
                    "error",
                    self.request_id,
                    message=f"no callback by the deadline and the status request failed: {exc.message}",
                    error_code=code,
                    http_status=exc.status_code,
                    polls=1,
                ),
                "reconcile",
            )
        if status.is_terminal:
            self.log.info(
                "Nyne request %s: no callback by the deadline; the status request says %s",
                self.request_id,
                status.status,
            )
            return event_from_status(status, "reconcile", correlation_id=self.correlation_id, polls=1)
        return self._event(
            WaitOutcome(
                "timeout",
                self.request_id,
                message=f"no callback for request {self.request_id} by the deadline and the job is still {status.status}",
                polls=1,
            ),
            "reconcile",
        )

    def _event(self, outcome: WaitOutcome, source: str) -> dict[str, Any]:
        event = outcome.to_event()
        event["source"] = source
        event["correlation_id"] = self.correlation_id
        return event

    async def on_kill(self) -> None:
        """A user killed the waiting task (Airflow 3.3+): say that the lookup keeps running at Nyne."""
        from airflow_provider_nyne.utils.waiting import killed_message

        self.log.warning(
            "%s",
            killed_message(self.request_id, "A retry or clear of the task waits for this request again."),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read the mailbox at start and every ``mailbox_interval`` s; reconcile once at the deadline."""
        hook = self._hook()
        self.log.info(
            "Waiting for the callback of Nyne request %s (deadline in %.0f s)",
            self.request_id,
            max(0.0, self.end_time - time.time()),
        )
        event = await self.read_mailbox(hook)
        while event is None:
            remaining = self.end_time - time.time()
            if remaining <= 0:
                break
            step = remaining if self.mailbox_interval <= 0 else min(remaining, self.mailbox_interval)
            await asyncio.sleep(step)
            event = await self.read_mailbox(hook)
        if event is not None:
            self.log.info(
                "Nyne request %s: callback found in the mailbox (%s)", self.request_id, event["status"]
            )
            yield TriggerEvent(event)
            return
        if not self.reconcile:
            outcome = WaitOutcome(
                "timeout",
                self.request_id,
                message=f"no callback for request {self.request_id} by the deadline",
            )
            yield TriggerEvent(self._event(outcome, "deadline"))
            return
        yield TriggerEvent(await self.reconcile_once(hook))
