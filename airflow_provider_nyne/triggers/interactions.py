"""NyneInteractionsTrigger: wait for an interactions request in the triggerer, without a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_nyne.client.errors import NyneError
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
from airflow_provider_nyne.client.retry import NO_RETRY
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID


class NyneInteractionsTrigger(BaseTrigger):
    """
    Poll a Nyne interactions request until it completes, fails, errors or ``end_time`` passes.

    Fires exactly one event, a dict of plain values::

        {"status": "success" | "failed" | "error" | "timeout", "request_id": ...,
         "total_count": int | None, "message": str | None, "error_code": str | None,
         "http_status": int | None, "polls": int}

    "Still running" never fires. The trigger only reads (polling is free), so two copies
    running at once around a triggerer restart are harmless. It is fully async: the
    connection is read with Airflow's async API, and polls take their turn in the API key's
    request budget, shared by every wait of the triggerer (when the account's rate limit
    binds, the waits due longest are polled first; a 429 pauses the key and never fails a
    wait before ``end_time``). The client has no retries of its own, so the wait loop's
    tolerance (``max_transient_errors``) is the only retry layer.

    :param request_id: the request to wait for
    :param nyne_conn_id: the ``nyne`` connection (its id only travels; never a credential)
    :param end_time: absolute deadline, epoch seconds (computed once, by the task that defers)
    :param poll_interval: delay before the first poll, seconds
    :param max_poll_interval: cap of the delay between polls, seconds
    :param backoff_factor: growth of the delay per poll
    :param max_transient_errors: consecutive transient failures (5xx, timeouts, unreadable
        answers; not rate limits) tolerated before the event reports the last one
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

    async def on_kill(self) -> None:
        """A user killed the waiting task (Airflow 3.3+): say that the lookup keeps running at Nyne."""
        from airflow_provider_nyne.utils.waiting import killed_message

        self.log.warning(
            "%s",
            killed_message(self.request_id, "A retry or clear of the task waits for this request again."),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait, then fire one event with the outcome."""
        try:
            async with await NyneHook(self.nyne_conn_id, retry=NO_RETRY).aget_conn() as client:
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
        yield TriggerEvent(outcome.to_event())
