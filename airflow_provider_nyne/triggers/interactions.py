"""NyneInteractionsTrigger: wait for an interactions request in the triggerer, without a worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_nyne.client.errors import NyneError
from airflow_provider_nyne.client.http import NO_RETRY
from airflow_provider_nyne.client.polling import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_MAX_TRANSIENT_ERRORS,
    DEFAULT_POLL_INTERVAL,
    PollSchedule,
    WaitOutcome,
    error_outcome,
    wait_for_job,
)
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID

#: How long one connection lookup serves every trigger of the same event loop. A triggerer
#: (re)starting a thousand waits reads each connection once instead of a thousand times (the
#: lookups were a quarter of the fleet's CPU and stalled the loop); an edited connection is
#: picked up by triggers starting this many seconds later.
CONNECTION_REUSE_SECONDS = 10.0
_CLIENTS: dict[asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[Any]]]] = {}
#: Triggers of each loop and connection that are waiting right now.
_WAITING: dict[asyncio.AbstractEventLoop, dict[str, int]] = {}


async def _release_client(nyne_conn_id: str, client: Any) -> None:
    """The last waiting trigger of a connection closes its pool: a quiet or ending loop keeps no sockets."""
    loop = asyncio.get_running_loop()
    waiting = _WAITING.get(loop, {})
    waiting[nyne_conn_id] = waiting.get(nyne_conn_id, 1) - 1
    if waiting[nyne_conn_id] > 0:
        return
    del waiting[nyne_conn_id]
    if not waiting:
        _WAITING.pop(loop, None)
    if client is not None and hasattr(client, "aclose_idle"):
        await client.aclose_idle()


async def _shared_client(nyne_conn_id: str) -> Any:
    """The loop's pooled client for the connection; triggers starting together share one lookup."""
    loop = asyncio.get_running_loop()
    for other in [other for other in _CLIENTS if other.is_closed()]:
        del _CLIENTS[other]
    per_loop = _CLIENTS.setdefault(loop, {})
    now = loop.time()
    entry = per_loop.get(nyne_conn_id)
    if entry is not None:
        expires, lookup = entry
        stale = expires <= now or (
            lookup.done()
            and (
                lookup.cancelled()
                or lookup.exception() is not None
                or getattr(lookup.result(), "is_closed", False)
            )
        )
        if stale:
            entry = None
    if entry is None:
        lookup = loop.create_task(NyneHook(nyne_conn_id, retry=NO_RETRY).aget_conn())
        entry = per_loop[nyne_conn_id] = (now + CONNECTION_REUSE_SECONDS, lookup)
    # Shielded: one trigger being cancelled must not cancel the lookup the others wait for.
    return await asyncio.shield(entry[1])


class NyneInteractionsTrigger(BaseTrigger):
    """
    Poll a Nyne interactions request until it completes, fails, errors or ``end_time`` passes.

    Fires exactly one event, a dict of plain values::

        {"status": "success" | "failed" | "error" | "timeout", "request_id": ...,
         "total_count": int | None, "message": str | None, "error_code": str | None,
         "http_status": int | None, "polls": int}

    "Still running" never fires. The trigger only reads (polling is free), so two copies
    running at once around a triggerer restart are harmless. It is fully async: the
    connection is read with Airflow's async API and polls go through the event loop's
    shared, pooled client, built without retries so that the loop's own tolerance
    (``max_transient_errors``) is the only retry layer.

    :param request_id: the request to wait for
    :param nyne_conn_id: the ``nyne`` connection (its id only travels; never a credential)
    :param end_time: absolute deadline, epoch seconds (computed once, by the task that defers)
    :param poll_interval: delay before the first poll, seconds
    :param max_poll_interval: cap of the delay between polls, seconds
    :param backoff_factor: growth of the delay per poll
    :param max_transient_errors: consecutive transient failures (5xx, 429, timeouts,
        unreadable answers) tolerated before the event reports the last one
    """

    def __init__(
        self,
        request_id: str,
        nyne_conn_id: str = DEFAULT_CONN_ID,
        *,
        end_time: float,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    ) -> None:
        super().__init__()
        self.request_id = request_id
        self.nyne_conn_id = nyne_conn_id
        self.end_time = float(end_time)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.backoff_factor = float(backoff_factor)
        self.max_transient_errors = int(max_transient_errors)
        # Fail at defer time, in the task, rather than later in the triggerer.
        self.schedule = PollSchedule(
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            backoff_factor=self.backoff_factor,
        )

    def __repr__(self) -> str:
        return (
            f"NyneInteractionsTrigger(request_id={self.request_id!r}, nyne_conn_id={self.nyne_conn_id!r}, "
            f"end_time={self.end_time!r})"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and plain keyword arguments; the connection id only, never a credential."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "nyne_conn_id": self.nyne_conn_id,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "backoff_factor": self.backoff_factor,
                "max_transient_errors": self.max_transient_errors,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait, then fire one event with the outcome."""
        loop = asyncio.get_running_loop()
        waiting = _WAITING.setdefault(loop, {})
        waiting[self.nyne_conn_id] = waiting.get(self.nyne_conn_id, 0) + 1
        client: Any = None
        try:
            client = await _shared_client(self.nyne_conn_id)
            outcome = await wait_for_job(
                client,
                self.request_id,
                deadline=self.end_time,
                schedule=self.schedule,
                max_transient_errors=self.max_transient_errors,
                logger=self.log,
            )
        except NyneError as err:
            # Missing connection or credentials: the task learns why instead of hanging.
            outcome = error_outcome(self.request_id, err)
        except Exception as err:
            # A bug must not leave the task deferred until its timeout: report it.
            self.log.exception("Waiting for Nyne request %s failed unexpectedly", self.request_id)
            outcome = WaitOutcome(
                status="error",
                request_id=self.request_id,
                message=f"unexpected error while waiting: {type(err).__name__}: {err}",
            )
        finally:
            await _release_client(self.nyne_conn_id, client)
        yield TriggerEvent(outcome.to_event())
