"""Job completion timers and callback delivery, run on the server's event loop.

Every job is settled (charged, its completion recorded) by a timer at its completion time,
whether or not anyone polls; a job with a ``callback_url`` then gets its delivery, retried on
the documented schedule scaled by ``callback_time_scale`` (docs/simulator.md, "Callbacks").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx

from airflow_provider_nyne.testing.simulator.core import SimulatorCore
from airflow_provider_nyne.testing.simulator.jobs import Job, envelope
from airflow_provider_nyne.testing.simulator.ledger import CallbackAttempt

log = logging.getLogger("airflow_provider_nyne.testing.simulator")

#: Waits before retries 1-5 of a callback, in seconds, before ``callback_time_scale``.
RETRY_DELAYS = (1.0, 5.0, 15.0, 60.0, 300.0)
TIMEOUT, MIN_TIMEOUT = 30.0, 1.0


class Completions:
    """Settles jobs when they finish and delivers their callbacks.

    :param core: the simulator's state; its ``on_job_scheduled`` hook is set to this object.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        core.on_job_scheduled = self._schedule

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the server's running loop: timers and deliveries run there."""
        self._loop = loop

    async def aclose(self) -> None:
        """Cancel deliveries still waiting and close the callback client."""
        for task in (tasks := list(self._tasks)):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.core.on_job_scheduled = None

    def _schedule(self, job: Job) -> None:
        # Called in the server's loop for new jobs, from any thread for released ones.
        if (loop := self._loop) is None or job.held:
            return
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._arm(job.request_id, job.end_mono)
        else:
            loop.call_soon_threadsafe(self._arm, job.request_id, job.end_mono)

    def _arm(self, request_id: str, end_mono: float) -> None:
        assert self._loop is not None
        self._loop.call_later(max(0.0, end_mono - time.monotonic()), self._on_completion_time, request_id)

    def _on_completion_time(self, request_id: str) -> None:
        due = self.core.complete_job(request_id)
        if isinstance(due, float):
            # The loop's clock and time.monotonic() disagree slightly: try again when due.
            assert self._loop is not None
            self._loop.call_later(due + 0.001, self._on_completion_time, request_id)
        elif due is not None:
            job, data, generation = due
            assert job.query.callback_url is not None
            body = json.dumps(envelope(data), separators=(",", ":")).encode()
            task = asyncio.ensure_future(
                self._deliver(job.request_id, job.query.callback_url, body, generation)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, request_id: str, url: str, body: bytes, generation: int) -> None:
        if self._http is None:
            limits = httpx.Limits(max_connections=50, max_keepalive_connections=10)
            self._http = httpx.AsyncClient(trust_env=False, follow_redirects=False, limits=limits)
        attempts = len(RETRY_DELAYS) + 1
        for attempt in range(1, attempts + 1):
            if generation != self.core.generation:
                return  # the simulator was reset: this job no longer exists
            started = time.time()
            status_code: int | None = None
            error: str | None = None
            try:
                response = await self._http.post(
                    url,
                    content=body,
                    timeout=max(TIMEOUT * self.core.settings.callback_time_scale, MIN_TIMEOUT),
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": "nyne-simulator",
                        "X-Nyne-Request-Id": request_id,
                        "X-Nyne-Delivery-Attempt": str(attempt),
                    },
                )
                status_code = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            delivered = status_code is not None and 200 <= status_code < 300
            recorded = self.core.record_callback(
                CallbackAttempt(
                    request_id, url, attempt, started, time.time(), status_code, error, delivered
                ),
                generation,
            )
            if delivered or not recorded:
                return
            if attempt < attempts:
                await asyncio.sleep(RETRY_DELAYS[attempt - 1] * self.core.settings.callback_time_scale)
        log.info("Callback for %s gave up after %d attempts", request_id, attempts)
