"""NyneInteractionsSensor: wait until a submitted interactions lookup finishes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_nyne import client
from airflow_provider_nyne._compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    reschedule_context,
)
from airflow_provider_nyne.client.schedule import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_MAX_TRANSIENT_ERRORS,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID, DEFAULT_TIMEOUT, timeout_seconds
from airflow_provider_nyne.utils.waiting import NyneWaitMixin, terminal_event

# The DAG processor imports this module on every parse: the hook and its HTTP client are
# imported where a running task uses them.
if TYPE_CHECKING:
    from airflow_provider_nyne.hooks.nyne import NyneHook


class NyneInteractionsSensor(NyneWaitMixin, BaseSensorOperator):
    """
    Wait until a Nyne interactions request completes; fail (or skip) when it fails or expires.

    Deferrable unless the deployment says otherwise: one status check, then the wait moves to the triggerer
    (:class:`~airflow_provider_nyne.triggers.interactions.NyneInteractionsTrigger`) and frees
    the worker. With ``deferrable=False`` the ``poke`` and ``reschedule`` modes work as for any
    sensor, with the same backoff schedule as the trigger instead of a fixed ``poke_interval``.

    Outcomes: completed returns ``{"request_id", "status": "completed", "total_count"}`` (XCom
    ``return_value``; the result itself is never put in XCom); a failed job fails the task
    with the API's reason; an unknown or expired id (404), rejected credentials (401), no
    credits (402) or a refused account (403) fail it without retrying; the deadline raises
    ``AirflowSensorTimeout``. With ``soft_fail=True`` each of these skips the task instead.

    Killed while it waits in the worker (marked failed, ``execution_timeout``, ...):
    ``on_kill`` logs that the lookup keeps running at Nyne and may be charged, and that a
    retry waits for the same request again.

    :param request_id: the request to wait for, e.g. ``"{{ ti.xcom_pull('submit') }}"`` (templated)
    :param nyne_conn_id: the ``nyne`` connection
    :param deferrable: wait in the triggerer; ``False`` pokes from the worker. Default: the
        deployment's ``[operators] default_deferrable`` when it sets one, else ``True``
    :param poll_interval: delay before the first poll, seconds (default 2)
    :param max_poll_interval: cap of the delay between polls, seconds (default 60)
    :param backoff_factor: growth of the delay per poll (default 1.5)
    :param max_transient_errors: consecutive failed polls (5xx, timeouts) tolerated (default 10;
        in ``reschedule`` mode the count starts again at each poke); a rate limit (429) is
        waited out, never counted
    :param timeout: longest wait, seconds or timedelta (default 24 h)
    :param soft_fail: skip instead of failing (Airflow's sensor semantics)
    :param mode: ``poke`` or ``reschedule`` when not deferrable
    """

    template_fields: Sequence[str] = ("request_id",)
    ui_color = "#e3ecfa"
    retry_after_kill = (
        "A retry of this sensor waits for the same request again (its request_id); a sensor submits "
        "nothing, so nothing is paid twice."
    )

    def __init__(
        self,
        *,
        request_id: str,
        nyne_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(timeout=timeout_seconds(timeout), **kwargs)
        self.request_id = request_id
        self.init_waiting(
            nyne_conn_id=nyne_conn_id,
            deferrable=deferrable,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            backoff_factor=backoff_factor,
            max_transient_errors=max_transient_errors,
        )
        self._transient_errors = 0
        self._retry_after: float | None = None

    @cached_property
    def hook(self) -> NyneHook:
        """The hook for ``nyne_conn_id``; its client does not retry, each poke is one request."""
        from airflow_provider_nyne.client.retry import NO_RETRY
        from airflow_provider_nyne.hooks.nyne import NyneHook

        return NyneHook(self.nyne_conn_id, retry=NO_RETRY)

    def timeout_error(self, message: str) -> Exception:
        """A sensor's timeout: ``AirflowSensorTimeout`` (no retry; ``soft_fail`` skips it)."""
        return AirflowSensorTimeout(message)

    def _rid(self) -> str:
        rid = "" if self.request_id is None else str(self.request_id).strip()
        if rid in ("", "None"):
            # Typically an xcom_pull that found nothing: say so instead of polling for "None".
            raise AirflowFailException(
                f"request_id is empty (rendered {self.request_id!r}): pass the id returned by "
                "NyneSubmitInteractionsOperator, e.g. \"{{ ti.xcom_pull(task_ids='submit') }}\""
            )
        return rid

    def poke(self, context: Any) -> bool | PokeReturnValue:
        """Poll once: ``False`` while running, the summary when completed, raise when it failed."""
        rid = self._rid()
        self.note_request(rid, self.retry_after_kill)
        try:
            status = self.hook.get_interactions_status(rid)
        except client.NyneRateLimitError as err:
            # Never a failure: poke again once the key's rate-limit window reopens.
            self._retry_after = err.retry_after
            self.log.info("Polling Nyne request %s waits for the rate limit (%s)", rid, err)
            return False
        except client.NyneError as err:
            if err.retryable and self._transient_errors < self.max_transient_errors:
                self._transient_errors += 1
                self.log.warning(
                    "Polling Nyne request %s failed (%s); %d/%d transient errors in a row tolerated",
                    rid,
                    err,
                    self._transient_errors,
                    self.max_transient_errors,
                )
                return False
            self.fail(err)
        self._transient_errors = 0
        self._retry_after = None
        if not status.is_terminal:
            self.log.info("Nyne request %s is %s", rid, status.status)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish(terminal_event(status), request_id=rid))

    def _get_next_poke_interval(
        self,
        started_at: datetime | float,
        run_duration: Callable[[], float],
        poke_count: int,
    ) -> float:
        # Airflow's poke/reschedule loop asks this for the next delay: follow the same backoff
        # schedule as the trigger (by elapsed time, which reschedule mode keeps across pokes),
        # wait at least what a 429 asked for, and never past the timeout.
        elapsed = run_duration()
        delay = self.schedule.delay_after(elapsed)
        if self._retry_after is not None:
            delay = max(delay, self._retry_after)
        return max(0.0, min(delay, self.timeout - elapsed))

    def execute(self, context: Any) -> Any:
        """Deferrable: check once, then defer. Otherwise Airflow's poke/reschedule loop."""
        if self.deferrable:
            return self.wait_for(self._rid())
        return super().execute(reschedule_context(context) if self.reschedule else context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: the summary, or a failure (skip with ``soft_fail``) naming the cause."""
        return self.finish(event, request_id=self._rid())
