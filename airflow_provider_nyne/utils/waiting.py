"""What the waiting operators share: the typed base :class:`NyneWaitMixin`.

:class:`~airflow_provider_nyne.operators.interactions.NyneSubmitInteractionsOperator`,
:class:`~airflow_provider_nyne.sensors.interactions.NyneInteractionsSensor` and the transfer
operators inherit it. It owns their connection and hook, one absolute deadline, a
:class:`~airflow_provider_nyne.client.schedule.PollSchedule`, and the Airflow side of waiting:

* :meth:`NyneWaitMixin.fail` raises the Airflow exception that fails a task the right way for
  a client error: what a retry cannot fix (bad input, 401, 402, 403, an unknown or expired
  request id) raises ``AirflowFailException`` so that retries are kept; what it can, raises
  ``AirflowException`` so that they apply (the rule is the error's own ``retryable``);
* :meth:`NyneWaitMixin.wait_for` checks a request once, then defers to the triggerer or polls
  in the worker until the deadline;
* :meth:`NyneWaitMixin.finish` validates the event a wait ended with (a trigger's, or the
  worker's own) and returns the small result summary, or raises.

Whether a task waits in the triggerer is decided here for every class built on it: a class
whose ``__init__`` takes ``deferrable`` gets the deployment's ``[operators]
default_deferrable`` when the DAG does not pass it (explicitly or through ``default_args``),
whatever default its signature shows, and ``True`` when the deployment does not set it (see
:func:`~airflow_provider_nyne.utils.arguments.default_deferrable`).

A custom operator waiting for a Nyne request does the same::

    class MyOperator(NyneWaitMixin, BaseOperator):
        def __init__(self, *, request_id, nyne_conn_id="nyne_default", **kwargs):
            super().__init__(**kwargs)
            self.request_id = request_id
            self.init_waiting(nyne_conn_id=nyne_conn_id)

        def execute(self, context):
            return self.wait_for(self.request_id)

        def execute_complete(self, context, event):
            return self.finish(event, request_id=self.request_id)

The DAG processor imports this module with the operators: the hook, the trigger and the wait
loop are imported only when a task waits.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow_provider_nyne import client
from airflow_provider_nyne._compat import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
)
from airflow_provider_nyne.client.schedule import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_MAX_TRANSIENT_ERRORS,
    DEFAULT_POLL_INTERVAL,
    PollSchedule,
)
from airflow_provider_nyne.utils.arguments import (
    CREDITS_PER_LOOKUP,
    DEFAULT_CONN_ID,
    DEFAULT_TIMEOUT,
    resolve_deferrable,
    timeout_seconds,
)

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_nyne.client.errors import NyneError
    from airflow_provider_nyne.client.models import JobStatus
    from airflow_provider_nyne.hooks.nyne import NyneHook

#: How far past a wait's own deadline Airflow's deferral timeout is set, as a safety net: the
#: trigger's own ``timeout`` event (with its explanation) normally comes first.
DEFER_TIMEOUT_GRACE = 300.0

#: How long a task's first status check may wait for room under the rate limit; past it the
#: task defers (or starts waiting) without that check.
FIRST_CHECK_WAIT = 10.0

EVENT_STATUSES = frozenset({"success", "failed", "error", "timeout"})


def result_summary(request_id: str, total_count: int | None) -> dict[str, Any]:
    """
    The small XCom value of a completed wait (never the result itself).

    :param request_id: the request
    :param total_count: how many interactions it found
    """
    return {"request_id": request_id, "status": "completed", "total_count": total_count}


def terminal_event(status: JobStatus) -> dict[str, Any]:
    """
    The event a terminal status means, for a request found finished without waiting.

    :param status: a terminal :class:`~airflow_provider_nyne.client.models.JobStatus`
    :raises ValueError: when the request is still running
    """
    from airflow_provider_nyne.client.models import JobState
    from airflow_provider_nyne.client.polling import WaitOutcome

    rid = status.request_id or ""
    if status.state is JobState.COMPLETED:
        outcome = WaitOutcome(
            "success", rid, total_count=status.total_count, message=f"request {rid} completed"
        )
    elif status.state is JobState.FAILED:
        outcome = WaitOutcome(
            "failed", rid, message=f"request {rid} failed: {status.error or 'no reason given'}"
        )
    else:
        raise ValueError(f"request {rid} is still {status.status}")
    return outcome.to_event()


class NyneWaitMixin:
    """
    The typed base of the operators that wait for a Nyne request (mixed into ``BaseOperator``).

    Call :meth:`init_waiting` from ``__init__``. Subclasses say how a wait's end reads:

    * ``resubmits_on_retry``: a retry of the task submits the lookup again, so a failed lookup
      fails the try with Airflow's retries applying (a failed lookup costs nothing); otherwise
      a failed lookup fails for good;
    * :meth:`timeout_error`: the exception a wait that ran out of time raises.

    A subclass whose ``__init__`` declares ``deferrable`` receives ``deferrable=None`` when
    the DAG leaves it out, and :meth:`init_waiting` turns ``None`` into the deployment's
    default: one rule for every waiting class, including the ones that declare
    ``deferrable: bool = True``.
    """

    resubmits_on_retry: ClassVar[bool] = False
    #: What a retry does with a request this task waits for (the :meth:`on_kill` message).
    retry_after_kill: ClassVar[str] = "A retry of this task waits for the same request again."
    #: Skip the task instead of failing it (sensors set it from Airflow's ``soft_fail``).
    soft_fail: bool = False

    nyne_conn_id: str
    deferrable: bool
    timeout: float
    schedule: PollSchedule
    max_transient_errors: int
    #: What this try has running at Nyne, for :meth:`on_kill`: ``(request id or None while a
    #: submission is in flight, what a retry does with it)``; ``None`` before anything was sent.
    _nyne_running: tuple[str | None, str] | None = None
    #: Set by :meth:`on_kill`: Airflow lets the task run on for a few seconds after it (SIGTERM,
    #: then SIGKILL), and nothing new may be sent or forgotten in that time.
    killed: bool = False

    if TYPE_CHECKING:
        log: Any

        def defer(
            self,
            *,
            trigger: BaseTrigger,
            method_name: str,
            kwargs: dict[str, Any] | None = None,
            timeout: timedelta | int | float | None = None,
        ) -> NoReturn:
            """Provided by ``BaseOperator``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_nyne_deferrable_default", False):
            return
        # The parameter names, without building a signature at every parse.
        code = inspect.unwrap(init).__code__
        if "deferrable" not in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]:
            return
        cls.__init__ = _deployment_deferrable_default(init)  # type: ignore[method-assign]

    def init_waiting(
        self,
        *,
        nyne_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    ) -> None:
        """
        Set the waiting arguments; nonsense fails when the DAG is parsed, not after paying for a lookup.

        :param nyne_conn_id: the ``nyne`` connection
        :param deferrable: wait in the triggerer (``True``) or in the worker; ``None``: the
            deployment's ``[operators] default_deferrable`` when set, else ``True``
        :param timeout: longest wait, seconds or a timedelta
        :param poll_interval: delay before the first poll, seconds
        :param max_poll_interval: cap of the delay between polls, seconds
        :param backoff_factor: growth of the delay per poll
        :param max_transient_errors: consecutive failed polls tolerated (rate limits never count)
        """
        self.nyne_conn_id = nyne_conn_id
        self.deferrable = resolve_deferrable(deferrable)
        self.timeout = timeout_seconds(timeout)
        self.schedule = PollSchedule(
            poll_interval=poll_interval, max_poll_interval=max_poll_interval, backoff_factor=backoff_factor
        )
        self.max_transient_errors = int(max_transient_errors)

    @property
    def poll_interval(self) -> float:
        """Delay before the first poll, seconds."""
        return self.schedule.poll_interval

    @property
    def max_poll_interval(self) -> float:
        """Cap of the delay between polls, seconds."""
        return self.schedule.max_poll_interval

    @property
    def backoff_factor(self) -> float:
        """Growth of the delay per poll."""
        return self.schedule.backoff_factor

    @cached_property
    def hook(self) -> NyneHook:
        """The hook for ``nyne_conn_id`` (built on first use, never when the DAG is parsed)."""
        from airflow_provider_nyne.hooks.nyne import NyneHook

        return NyneHook(self.nyne_conn_id)

    # Killed ----------------------------------------------------------------------------------

    def note_request(self, request_id: str | None, after_kill: str) -> None:
        """
        Remember what this try has running at Nyne, for :meth:`on_kill`.

        :param request_id: the request submitted or waited for; ``None`` while a submission is
            in flight (its answer not received)
        :param after_kill: what a retry of the task does with it (one or two sentences)
        """
        self._nyne_running = (request_id, after_kill)

    def forget_request(self) -> None:
        """Nothing of this try runs at Nyne (a submission proved not accepted)."""
        self._nyne_running = None

    def on_kill(self) -> None:
        """
        The task is killed while it runs (marked failed or success, ``execution_timeout``, a worker shutdown).

        Nyne has no cancel endpoint: log which lookup keeps running there, that it may be
        charged, and what a retry does with it. Nothing is changed: the request record (and
        any credit reservation) stays, so that a retry reconnects instead of paying again.
        Airflow calls this in the task's process (from its SIGTERM handler, about 5 s before
        SIGKILL; the task's code goes on running meanwhile, so :attr:`killed` is set for it
        to send nothing more). A task deferred to the triggerer has no process: Airflow 3.3
        calls its trigger's ``on_kill`` in the triggerer instead.
        """
        self.killed = True
        running = self._nyne_running
        self.log.warning(
            "%s", killed_message(*running) if running else killed_message(None, "", submitted=False)
        )

    # Failing the right way -------------------------------------------------------------------

    def fail(self, error: NyneError, *, submitting: bool = False) -> NoReturn:
        """
        Fail the task for a client error: without retries when a retry cannot fix it.

        Bad input, 401 (which credential), 402 (credits), 403 (which reason, e.g. the worker or
        triggerer IP is not allow-listed), 404 (request unknown or expired) raise
        ``AirflowFailException``; so does a submission that may have been processed (a retry
        could pay twice). A failed job, 5xx, unreadable answers and transport failures raise
        ``AirflowException``: Airflow's retries apply. With ``soft_fail`` the task is skipped.

        :param error: the client error
        :param submitting: ``error`` came from the (paid) submission
        """
        message = f"Nyne: {error}"
        if error.concerns_account:
            message += f" (Airflow connection {self.nyne_conn_id!r})"
        if not error.retryable:
            self._raise(AirflowFailException(message), error)
        if submitting and not error.may_retry(idempotent=False):
            # Sent, but no usable answer (read timeout, dropped connection, 500, no request id).
            self._raise(
                AirflowFailException(
                    f"{message}. The submission may have been processed (and may be charged); it is "
                    "not retried automatically so as not to pay twice: check the Nyne dashboard, then "
                    "set reuse_request_id to attach to the running lookup, or "
                    "resubmit_if_interrupted=True to submit again, and clear this task."
                ),
                error,
            )
        self._raise(AirflowException(message), error)

    def _raise(self, error: Exception, cause: BaseException | None = None) -> NoReturn:
        if self.soft_fail:
            raise AirflowSkipException(f"Skipping (soft_fail): {error}") from error
        raise error from cause

    def timeout_error(self, message: str) -> Exception:
        """The exception for a wait that ran out of time; the lookup keeps running at Nyne."""
        return AirflowException(
            f"{message} The lookup keeps running at Nyne; a retry of this task reconnects to it "
            "instead of paying again. Raise `timeout` if lookups of this size take longer."
        )

    # Waiting ---------------------------------------------------------------------------------

    def deadline(self) -> float:
        """The absolute deadline (Unix time) of a wait starting now: computed once per wait."""
        return time.time() + self.timeout

    def defer_on(
        self,
        trigger: BaseTrigger,
        *,
        deadline: float,
        waiting_for: str,
        method_name: str = "execute_complete",
        kwargs: dict[str, Any] | None = None,
    ) -> NoReturn:
        """
        Free the worker: defer on ``trigger``, whose own deadline is ``deadline``; log what it waits for.

        :param trigger: the trigger to wait in
        :param deadline: absolute deadline, Unix time (Airflow's timeout allows a grace beyond it)
        :param waiting_for: what the log line says the task waits for
        :param method_name: the task method that receives the event
        :param kwargs: more keyword arguments for that method
        """
        remaining = max(0.0, deadline - time.time())
        self.log.info("Deferring until %s (at most %.0fs)", waiting_for, remaining)
        self.defer(
            trigger=trigger,
            method_name=method_name,
            kwargs=kwargs,
            timeout=timedelta(seconds=remaining + DEFER_TIMEOUT_GRACE),
        )

    def wait_for(
        self,
        request_id: str,
        *,
        status: JobStatus | None = None,
        check: bool = True,
        method_name: str = "execute_complete",
    ) -> dict[str, Any]:
        """
        Check a request once; if it is still running, defer (or poll in the worker) until it finishes.

        Returns the result summary when the request is, or becomes, complete without deferring;
        raises ``TaskDeferred`` when deferring (``method_name`` then gets the event: pass it to
        :meth:`finish`); raises the Airflow exception for every other ending.

        :param request_id: the request
        :param status: its status when the caller already read it (skips the first check)
        :param check: read its status once before waiting (``False`` right after submitting it:
            it cannot have finished, and the request would only spend the rate limit)
        :param method_name: the task method that receives the trigger's event
        """
        deadline = self.deadline()
        if self._nyne_running is None or self._nyne_running[0] != request_id:
            self.note_request(request_id, self.retry_after_kill)
        if status is None and check:
            try:
                status = self.hook.get_interactions_status(
                    request_id, deadline=time.time() + FIRST_CHECK_WAIT
                )
            except client.NyneError as err:
                if not err.retryable:
                    self.fail(err)
                # No room under the rate limit now, or a transient failure: the wait copes with both.
                self.log.info("Nyne request %s: first status check skipped (%s)", request_id, err)
        if status is not None and status.is_terminal:
            return self.finish(terminal_event(status), request_id=request_id)
        if self.deferrable:
            from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

            trigger = NyneInteractionsTrigger(
                request_id,
                self.nyne_conn_id,
                end_time=deadline,
                poll_interval=self.schedule.poll_interval,
                max_poll_interval=self.schedule.max_poll_interval,
                backoff_factor=self.schedule.backoff_factor,
                max_transient_errors=self.max_transient_errors,
            )
            self.defer_on(
                trigger,
                deadline=deadline,
                waiting_for=f"Nyne request {request_id} finishes",
                method_name=method_name,
            )
        return self.finish(self._wait_in_worker(request_id, deadline), request_id=request_id)

    def _wait_in_worker(self, request_id: str, deadline: float) -> dict[str, Any]:
        """Poll in the worker until the request finishes or ``deadline``; return the event."""
        from airflow_provider_nyne.client.polling import error_outcome, wait_for_job_sync
        from airflow_provider_nyne.client.retry import NO_RETRY
        from airflow_provider_nyne.hooks.nyne import NyneHook

        # No retries in the client: the wait loop's tolerance is the only retry layer.
        hook = NyneHook(self.nyne_conn_id, retry=NO_RETRY)
        try:
            return wait_for_job_sync(
                hook.get_conn(),
                request_id,
                deadline=deadline,
                schedule=self.schedule,
                max_transient_errors=self.max_transient_errors,
                logger=self.log,
            ).to_event()
        except client.NyneError as err:  # the connection cannot be read or built
            return error_outcome(request_id, err).to_event()
        finally:
            hook.close()

    def finish(self, event: Any, *, request_id: str | None = None) -> dict[str, Any]:
        """
        Validate a wait's event; return the result summary on success, raise on everything else.

        :param event: the trigger's event payload (or the worker wait's)
        :param request_id: the request expected in the event, when known
        :raises AirflowSkipException: on any other ending when ``soft_fail``
        """
        if not isinstance(event, Mapping) or event.get("status") not in EVENT_STATUSES:
            raise AirflowException(f"unexpected event from the Nyne trigger: {event!r}")
        rid = event.get("request_id")
        if request_id is not None and rid != request_id:
            raise AirflowException(f"event for request {rid!r} while waiting for {request_id!r}")
        status = event["status"]
        if status == "success":
            self.log.info(
                "Nyne request %s completed with %s interactions (%s polls while waiting)",
                rid,
                event.get("total_count"),
                event.get("polls"),
            )
            return result_summary(str(rid), event.get("total_count"))
        if status == "failed":
            reason = event.get("message") or f"request {rid} failed"
            message = f"Nyne {reason}. A failed lookup costs no credits"
            if self.resubmits_on_retry:
                self._raise(AirflowException(f"{message}; a retry of this task submits it again."))
            self._raise(AirflowFailException(f"{message}."))
        if status == "timeout":
            detail = event.get("message") or f"request {rid} still running"
            self._raise(self.timeout_error(f"Timed out waiting for Nyne: {detail}."))
        from airflow_provider_nyne.client.errors import error_from_event

        self.fail(error_from_event(event))


def killed_message(request_id: str | None, after_kill: str, *, submitted: bool = True) -> str:
    """
    What a killed task says about its lookup: it keeps running at Nyne (no cancel endpoint), may be charged, and what a retry does.

    The one wording of :meth:`NyneWaitMixin.on_kill`, for a trigger's ``on_kill`` too.

    :param request_id: the request that keeps running; ``None`` while its submission was in flight
    :param after_kill: what a retry of the task does with it
    :param submitted: ``False`` when nothing was sent yet (then nothing runs at Nyne)
    """
    if not submitted:
        return "Task killed before any Nyne lookup was submitted: nothing of this try runs at Nyne."
    charge = f"is charged {CREDITS_PER_LOOKUP} credits if it completes with results"
    if request_id is None:
        return (
            "Task killed while submitting a Nyne lookup, before the answer arrived: if the submission "
            f"reached Nyne, the lookup keeps running there (there is no cancel endpoint) and {charge}. "
            f"{after_kill}"
        ).strip()
    return (
        f"Task killed while Nyne request {request_id} runs: the lookup keeps running at Nyne (there is "
        f"no cancel endpoint) and {charge}. {after_kill}"
    ).strip()


def _deployment_deferrable_default(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` receiving ``deferrable=None`` ("not given") when its caller leaves it out."""

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Airflow's own wrapper has already filled it from default_args when they hold it.
        kwargs.setdefault("deferrable", None)
        init(self, *args, **kwargs)

    __init__._nyne_deferrable_default = True  # type: ignore[attr-defined]
    return __init__


__all__ = [
    "DEFER_TIMEOUT_GRACE",
    "EVENT_STATUSES",
    "NyneWaitMixin",
    "killed_message",
    "result_summary",
    "terminal_event",
]
