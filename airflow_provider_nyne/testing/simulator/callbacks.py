"""Job completion timers and callback delivery, run on the server's event loop.

Every job is settled (charged, its completion recorded) by a timer at its completion time,
whether or not anyone polls; a job with a ``callback_url`` then gets its delivery, retried
on the documented schedule scaled by ``callback_time_scale``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx

from airflow_provider_nyne.testing.simulator.asgi import envelope
from airflow_provider_nyne.testing.simulator.core import SimulatorCore
from airflow_provider_nyne.testing.simulator.jobs import Job
from airflow_provider_nyne.testing.simulator.records import CallbackAttempt

__all__ = ["CALLBACK_RETRY_DELAYS", "CALLBACK_TIMEOUT", "MIN_CALLBACK_TIMEOUT", "Completions"]

log = logging.getLogger("airflow_provider_nyne.testing.simulator")

#: Waits before retries 1-5 of a callback, in seconds, before ``callback_time_scale``.
CALLBACK_RETRY_DELAYS = (1.0, 5.0, 15.0, 60.0, 300.0)
CALLBACK_TIMEOUT = 30.0
MIN_CALLBACK_TIMEOUT = 1.0


class Completions:
    """Settles jobs when they finish and delivers their callbacks.

    :param core: the simulator's state; its ``on_job_scheduled`` hook is set to this object.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        core.on_job_scheduled = self._schedule_completion

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the event loop that runs the server (timers and deliveries run there).

        :param loop: the server's running loop.
        """
        self._loop = loop

    async def aclose(self) -> None:
        """Cancel callback deliveries still waiting and close the callback client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.core.on_job_scheduled = None

    def _schedule_completion(self, job: Job) -> None:
        # Called in the server's loop for new jobs, from any thread for released ones.
        loop = self._loop
        if loop is None or job.held:
            return
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._arm_completion(job.request_id, job.end_mono)
        else:
            loop.call_soon_threadsafe(self._arm_completion, job.request_id, job.end_mono)

    def _arm_completion(self, request_id: str, end_mono: float) -> None:
        assert self._loop is not None
        self._loop.call_later(max(0.0, end_mono - time.monotonic()), self._on_completion_time, request_id)

    def _on_completion_time(self, request_id: str) -> None:
        due = self.core.complete_job(request_id)
        if isinstance(due, float):
            # The loop's clock and time.monotonic() disagree slightly: try again when due.
            assert self._loop is not None
            self._loop.call_later(due + 0.001, self._on_completion_time, request_id)
            return
        if due is None:
            return
        job, data, generation = due
        assert job.query.callback_url is not None
        body = json.dumps(envelope(data), separators=(",", ":")).encode()
        task = asyncio.ensure_future(self._deliver(job.request_id, job.query.callback_url, body, generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
            )
        return self._http

    async def _deliver(self, request_id: str, url: str, body: bytes, generation: int) -> None:
        attempts = len(CALLBACK_RETRY_DELAYS) + 1
        for attempt in range(1, attempts + 1):
            if generation != self.core.generation:
                return  # the simulator was reset: this job no longer exists
            scale = self.core.settings.callback_time_scale
            timeout = max(CALLBACK_TIMEOUT * scale, MIN_CALLBACK_TIMEOUT)
            started = time.time()
            status_code: int | None = None
            error: str | None = None
            try:
                response = await self._client().post(
                    url,
                    content=body,
                    timeout=timeout,
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
                await asyncio.sleep(
                    CALLBACK_RETRY_DELAYS[attempt - 1] * self.core.settings.callback_time_scale
                )
        log.info("Callback for %s gave up after %d attempts", request_id, attempts)
