"""Waiting for a Nyne request from Airflow tasks: error mapping, event checks, defer and sync wait.

Shared by :class:`~airflow_provider_nyne.operators.interactions.NyneSubmitInteractionsOperator`,
:class:`~airflow_provider_nyne.sensors.interactions.NyneInteractionsSensor` and the transfer
operator. The public functions here are stable within the package:

* :func:`fail_for` turns a :class:`~airflow_provider_nyne.client.errors.NyneError` into the
  Airflow exception that fails the task the right way: errors a retry cannot fix (bad
  input, 401, 402, 403, an unknown or expired request id) raise ``AirflowFailException`` so
  that retries are not burned; transient ones raise ``AirflowException`` so they apply.
* :func:`check_event` validates a :class:`~airflow_provider_nyne.triggers.interactions.NyneInteractionsTrigger`
  event (also what the sync wait returns) and returns the small result summary, or raises.
* :func:`wait_for_request` checks a request once, then defers to the trigger or polls in
  the worker, with one absolute deadline. Pair it with :func:`check_event` in the task's
  ``execute_complete``::

      def execute(self, context):
          ...
          return wait_for_request(self, request_id, nyne_conn_id=self.nyne_conn_id,
                                  deadline=deadline_after(self.timeout), deferrable=self.deferrable)

      def execute_complete(self, context, event):
          return check_event(event, task=self)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NoReturn

from airflow_provider_nyne._compat import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
)
from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneCreditsError,
    NyneError,
    NyneForbiddenError,
    error_from_event,
)
from airflow_provider_nyne.client.models import JobState, JobStatus
from airflow_provider_nyne.client.polling import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_MAX_TRANSIENT_ERRORS,
    DEFAULT_POLL_INTERVAL,
    PollSchedule,
    WaitOutcome,
    error_outcome,
    wait_for_job_sync,
)
from airflow_provider_nyne.client.retry import NO_RETRY
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID, DEFAULT_TIMEOUT

#: Extra time Airflow's own deferral timeout allows beyond the trigger's deadline, so that the
#: trigger's "timeout" event (with its explanation) normally arrives first.
DEFER_TIMEOUT_GRACE = 120.0

EVENT_STATUSES = frozenset({"success", "failed", "error", "timeout"})


def _with_conn(message: str, error: NyneError, nyne_conn_id: str | None) -> str:
    if nyne_conn_id and isinstance(error, (NyneAuthError, NyneCreditsError, NyneForbiddenError)):
        return f"{message} (Airflow connection {nyne_conn_id!r})"
    return message


def fail_for(error: NyneError, *, nyne_conn_id: str | None = None, submitting: bool = False) -> Exception:
    """
    The Airflow exception that fails a task for ``error``, with a message naming the fix.

    * bad input, 401 (which credential), 402 (credits), 403 (which reason, e.g. the
      worker/triggerer IP is not allow-listed), 404 (request unknown or expired):
      ``AirflowFailException`` (a retry would fail the same way; retries are kept);
    * when ``submitting``, a failure that does not prove the lookup was not processed (read
      timeout or dropped connection after sending, 500, an answer without request id):
      ``AirflowFailException`` too, because a retry could pay twice; the message says to check;
    * a failed job, 429, 5xx, unreadable answers, transport failures: ``AirflowException``
      (Airflow's retries apply; a retried submit task reconnects instead of paying again).

    :param error: the client error
    :param nyne_conn_id: the connection, named in credential/account errors
    :param submitting: ``error`` came from the (paid) submission
    """
    message = _with_conn(f"Nyne: {error}", error, nyne_conn_id)
    if not error.retryable:
        return AirflowFailException(message)
    if submitting and not error.may_retry(idempotent=False):
        # Sent, but no usable answer (read timeout, dropped connection, 500, no request id).
        return AirflowFailException(
            f"{message}. The submission may have been processed (and may be charged); it is not "
            "retried automatically so as not to pay twice: check the Nyne dashboard, then set "
            "reuse_request_id to attach to the running lookup, or resubmit_if_interrupted=True to "
            "submit again, and clear this task."
        )
    return AirflowException(message)


def result_summary(request_id: str, total_count: int | None) -> dict[str, Any]:
    """
    The small XCom value of a completed wait (never the result itself).

    :param request_id: the request
    :param total_count: how many interactions it found
    """
    return {"request_id": request_id, "status": JobState.COMPLETED.value, "total_count": total_count}


def outcome_from_status(status: JobStatus) -> WaitOutcome:
    """
    The outcome a terminal status means, for a request found finished without waiting.

    :param status: a terminal :class:`JobStatus`
    """
    if status.state is JobState.COMPLETED:
        return WaitOutcome(
            "success",
            status.request_id,
            total_count=status.total_count,
            message=f"request {status.request_id} completed",
        )
    if status.state is JobState.FAILED:
        return WaitOutcome(
            "failed",
            status.request_id,
            message=f"request {status.request_id} failed: {status.error or 'no reason given'}",
        )
    raise ValueError(f"request {status.request_id} is still {status.status}")


def check_event(
    event: Any,
    *,
    task: Any = None,
    soft_fail: bool = False,
    sensor: bool = False,
    request_id: str | None = None,
    nyne_conn_id: str | None = None,
) -> dict[str, Any]:
    """
    Validate a wait's event; return the result summary on success, raise on everything else.

    :param event: the trigger event payload (or :meth:`WaitOutcome.to_event`)
    :param task: the task, for its logger and connection id
    :param soft_fail: skip the task instead of failing it (Airflow's ``soft_fail``)
    :param sensor: sensor semantics: a failed job fails without retry (retrying a sensor
        cannot change it) and a timeout raises ``AirflowSensorTimeout``; otherwise both raise
        ``AirflowException`` so that a retried submit task resubmits (a failed job costs
        nothing) or reconnects (a job still running)
    :param request_id: the request expected in the event, when known
    :param nyne_conn_id: the connection, named in credential errors (default: the task's)
    :raises AirflowSkipException: on any non-success when ``soft_fail``
    """
    if not isinstance(event, Mapping) or event.get("status") not in EVENT_STATUSES:
        raise AirflowException(f"unexpected event from the Nyne trigger: {event!r}")
    rid = event.get("request_id")
    if request_id is not None and rid != request_id:
        raise AirflowException(f"event for request {rid!r} while waiting for {request_id!r}")
    conn_id = nyne_conn_id or getattr(task, "nyne_conn_id", None)
    log = getattr(task, "log", None)
    status = event["status"]
    polls = event.get("polls")
    if status == "success":
        if log is not None:
            log.info(
                "Nyne request %s completed with %s interactions (%s polls while waiting)",
                rid,
                event.get("total_count"),
                polls,
            )
        return result_summary(str(rid), event.get("total_count"))

    error: Exception
    if status == "failed":
        reason = event.get("message") or f"request {rid} failed"
        message = f"Nyne {reason}. A failed lookup costs no credits"
        message += "." if sensor else "; a retry of this task submits it again."
        error = AirflowFailException(message) if sensor else AirflowException(message)
    elif status == "timeout":
        message = f"Timed out waiting for Nyne: {event.get('message') or f'request {rid} still running'}."
        if sensor:
            error = AirflowSensorTimeout(message)
        else:
            error = AirflowException(
                f"{message} The lookup keeps running at Nyne; a retry of this task reconnects to it "
                "instead of paying again. Raise `timeout` if lookups of this size take longer."
            )
    else:
        error = fail_for(error_from_event(event), nyne_conn_id=conn_id)
    if soft_fail:
        raise AirflowSkipException(f"Skipping (soft_fail): {error}") from error
    raise error


def deadline_after(timeout: float | timedelta | None, *, now: float | None = None) -> float:
    """
    The absolute deadline (epoch seconds) ``timeout`` from now; computed once per wait.

    :param timeout: seconds or a timedelta (``None``: :data:`DEFAULT_TIMEOUT`)
    :param now: the current time (default: ``time.time()``)
    """
    if timeout is None:
        seconds = DEFAULT_TIMEOUT
    elif isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    else:
        seconds = float(timeout)
    return (time.time() if now is None else now) + seconds


def defer_until(
    task: Any,
    trigger: Any,
    *,
    deadline: float,
    grace: float,
    method_name: str,
    waiting_for: str,
) -> NoReturn:
    """
    Defer ``task`` on ``trigger``, whose own deadline is ``deadline``; log what it waits for.

    Airflow's deferral timeout is set ``grace`` seconds beyond the deadline, as a safety net:
    the trigger's own ``timeout`` event (with its explanation) normally arrives first.

    :param task: the operator deferring
    :param trigger: the trigger to wait in
    :param deadline: absolute deadline, epoch seconds
    :param grace: seconds Airflow's timeout allows beyond ``deadline``
    :param method_name: the task method that receives the event
    :param waiting_for: what the log line says the task waits for
    """
    remaining = max(0.0, deadline - time.time())
    log = getattr(task, "log", None)
    if log is not None:
        log.info("Deferring until %s (at most %.0fs)", waiting_for, remaining)
    task.defer(trigger=trigger, method_name=method_name, timeout=timedelta(seconds=remaining + grace))
    raise AssertionError("defer() returned")  # pragma: no cover - defer always raises


def defer_to_trigger(
    task: Any,
    request_id: str,
    *,
    deadline: float,
    nyne_conn_id: str = DEFAULT_CONN_ID,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
    max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    method_name: str = "execute_complete",
) -> NoReturn:
    """
    Free the worker: defer ``task`` on :class:`NyneInteractionsTrigger` until ``deadline``.

    Airflow's own deferral timeout is set a little beyond the deadline, as a safety net.

    :param task: the operator deferring
    :param request_id: the request to wait for
    :param deadline: absolute deadline, epoch seconds
    :param nyne_conn_id: the ``nyne`` connection
    :param poll_interval: delay before the first poll
    :param max_poll_interval: cap of the delay between polls
    :param backoff_factor: growth of the delay per poll
    :param max_transient_errors: consecutive transient failures tolerated
    :param method_name: the task method that receives the event
    """
    from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

    trigger = NyneInteractionsTrigger(
        request_id,
        nyne_conn_id,
        end_time=deadline,
        poll_interval=poll_interval,
        max_poll_interval=max_poll_interval,
        backoff_factor=backoff_factor,
        max_transient_errors=max_transient_errors,
    )
    defer_until(
        task,
        trigger,
        deadline=deadline,
        grace=DEFER_TIMEOUT_GRACE,
        method_name=method_name,
        waiting_for=f"Nyne request {request_id} finishes",
    )


def wait_sync(
    request_id: str,
    *,
    deadline: float,
    nyne_conn_id: str = DEFAULT_CONN_ID,
    schedule: PollSchedule | None = None,
    max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    logger: Any = None,
) -> dict[str, Any]:
    """
    Poll in the worker until the request finishes or ``deadline``; return the event (see :func:`check_event`).

    Uses a client without its own retries: the wait loop's tolerance is the only retry layer.

    :param request_id: the request to wait for
    :param deadline: absolute deadline, epoch seconds
    :param nyne_conn_id: the ``nyne`` connection
    :param schedule: the poll schedule
    :param max_transient_errors: consecutive transient failures tolerated
    :param logger: where status changes are logged
    """
    hook = NyneHook(nyne_conn_id, retry=NO_RETRY)
    try:
        client = hook.get_conn()
    except NyneError as err:
        return error_outcome(request_id, err).to_event()
    try:
        kwargs: dict[str, Any] = {"logger": logger} if logger is not None else {}
        outcome = wait_for_job_sync(
            client,
            request_id,
            deadline=deadline,
            schedule=schedule,
            max_transient_errors=max_transient_errors,
            **kwargs,
        )
    finally:
        client.close()
    return outcome.to_event()


def wait_for_request(
    task: Any,
    request_id: str,
    *,
    deadline: float,
    deferrable: bool,
    nyne_conn_id: str = DEFAULT_CONN_ID,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
    max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    status: JobStatus | None = None,
    hook: NyneHook | None = None,
    method_name: str = "execute_complete",
    soft_fail: bool = False,
    sensor: bool = False,
) -> dict[str, Any]:
    """
    Check a request once; if it is still running, defer (or poll in the worker) until it finishes.

    Returns the result summary (``request_id``, ``status``, ``total_count``) when the request
    is, or becomes, complete without deferring; raises ``TaskDeferred`` when deferring (the
    task's ``method_name`` then gets the event: pass it to :func:`check_event`); raises the
    Airflow exception for every other outcome.

    :param task: the operator waiting
    :param request_id: the request to wait for
    :param deadline: absolute deadline, epoch seconds (see :func:`deadline_after`)
    :param deferrable: wait in the triggerer (``True``) or in the worker
    :param nyne_conn_id: the ``nyne`` connection
    :param poll_interval: delay before the first poll
    :param max_poll_interval: cap of the delay between polls
    :param backoff_factor: growth of the delay per poll
    :param max_transient_errors: consecutive transient failures tolerated
    :param status: the request's status when the caller already polled it (skips the first check)
    :param hook: the hook for the first check (default: a new one for ``nyne_conn_id``)
    :param method_name: the task method that receives the trigger event
    :param soft_fail: skip instead of failing (see :func:`check_event`)
    :param sensor: sensor semantics (see :func:`check_event`)
    """
    if status is None:
        try:
            status = (hook or NyneHook(nyne_conn_id)).get_interactions_status(request_id)
        except NyneError as err:
            error = fail_for(err, nyne_conn_id=nyne_conn_id)
            if soft_fail:
                raise AirflowSkipException(f"Skipping (soft_fail): {error}") from error
            raise error from err
    check = {"task": task, "soft_fail": soft_fail, "sensor": sensor, "nyne_conn_id": nyne_conn_id}
    if status.is_terminal:
        return check_event(outcome_from_status(status).to_event(), **check)
    if deferrable:
        defer_to_trigger(
            task,
            request_id,
            deadline=deadline,
            nyne_conn_id=nyne_conn_id,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            backoff_factor=backoff_factor,
            max_transient_errors=max_transient_errors,
            method_name=method_name,
        )
    schedule = PollSchedule(
        poll_interval=poll_interval, max_poll_interval=max_poll_interval, backoff_factor=backoff_factor
    )
    event = wait_sync(
        request_id,
        deadline=deadline,
        nyne_conn_id=nyne_conn_id,
        schedule=schedule,
        max_transient_errors=max_transient_errors,
        logger=getattr(task, "log", None),
    )
    return check_event(event, request_id=request_id, **check)


__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFER_TIMEOUT_GRACE",
    "EVENT_STATUSES",
    "check_event",
    "deadline_after",
    "defer_to_trigger",
    "defer_until",
    "error_from_event",
    "fail_for",
    "outcome_from_status",
    "result_summary",
    "wait_for_request",
    "wait_sync",
]
