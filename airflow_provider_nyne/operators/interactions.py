"""NyneSubmitInteractionsOperator: submit a Social Interactions lookup, optionally wait for it, never pay twice."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_nyne import client
from airflow_provider_nyne._compat import AirflowException, AirflowFailException
from airflow_provider_nyne.client.schedule import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_MAX_TRANSIENT_ERRORS,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_nyne.utils.arguments import (
    DEFAULT_CONN_ID,
    DEFAULT_TIMEOUT,
    check_credits_argument,
    check_wait_mode,
    credits_argument,
)
from airflow_provider_nyne.utils.waiting import NyneWaitMixin

# The DAG processor imports this module on every parse: what only a running task needs (the
# hook and HTTP client, request state, callbacks) is imported where it is used.
if TYPE_CHECKING:
    from airflow_provider_nyne.callbacks.plan import CallbackPlan
    from airflow_provider_nyne.client.errors import NyneRateLimitError
    from airflow_provider_nyne.client.models import JobStatus
    from airflow_provider_nyne.client.request import InteractionRequest
    from airflow_provider_nyne.utils.credits import CreditHold, CreditReservations
    from airflow_provider_nyne.utils.request_state import RequestStateStore, SubmittedRequest

#: XCom key of the submitted request id (pushed before any waiting).
REQUEST_ID_XCOM_KEY = "request_id"
#: How long a deferrable submission may wait in the worker for room under the rate limit;
#: beyond that the task defers until the window reopens, holding no worker slot.
SUBMIT_WAIT_IN_WORKER = 10.0
#: Context key carrying, across rate-limit deferrals, when the task was first told to come back later.
RATE_LIMITED_SINCE = "nyne_rate_limited_since"


class NyneSubmitInteractionsOperator(NyneWaitMixin, BaseOperator):
    """
    Submit a Nyne Social Interactions lookup: who a Twitter/X or Instagram account interacts with.

    The input is checked before anything is sent: a bad URL, a platform/type mismatch, a
    missing tweet id for ``replies``, a bad ``callback_url`` or an unknown connection fails
    the task at once (``AirflowFailException`` naming the field), costing nothing.

    The request id is kept before any waiting: pushed to XCom (key ``request_id``) and, so
    that a retry reconnects instead of paying again, to the task's ``task_state_store``
    (Airflow 3.3+) or an Airflow Variable (3.1/3.2, deleted when the task succeeds). On a
    retry, a request still running is reconnected to, a completed one is reused, and only a
    failed or expired one (404) is submitted again. A retry whose parameters changed submits
    the new lookup.

    The intent to submit is recorded there too, before the POST is sent. A retry that finds
    it without a request id (the previous try was killed, or lost the answer, while
    submitting) does not submit again on its own: the lookup may be running and may be
    charged. It fails with ``AirflowFailException`` naming the two ways to resume on
    purpose: ``reuse_request_id`` (the id from the Nyne dashboard) or
    ``resubmit_if_interrupted=True``. If the task state store cannot be read or written
    before the POST, nothing is sent and the try fails (Airflow's retries apply); with the
    Variable fallback of Airflow 3.1/3.2 the submission goes ahead with an error-level
    warning (see ``RequestStateStore.begin_submission`` for why).

    Credits (optional, checked before anything is sent): ``min_credit_balance`` reads the
    account's balance from the free ``GET /usage`` and refuses a lookup that could take it
    below that floor; ``credit_budget`` caps the credits one DAG run may spend with this
    connection. Each submission first reserves the credits of one lookup at the api-server
    (the provider's plugin, with its own table in the metadata database), which decides
    atomically, so concurrent mapped tasks never overspend it; a retry, reconnect or kill
    keeps the reservation, and a submission that proves not accepted gives it back. A refusal
    fails the task with ``AirflowFailException`` naming the budget (or the balance) and what is
    left; when the guard cannot decide (no signing secret, no plugin, api-server unreachable)
    nothing is sent either.

    Killed while it runs (marked failed, ``execution_timeout``, ...): ``on_kill`` logs which
    lookup keeps running at Nyne (there is no cancel endpoint), that it may be charged, and
    whether a retry reconnects to it; the record that lets it reconnect is left in place.

    Rate limits: the submission takes its turn in the API key's request budget. Told to come
    back later (a ``429``, or no room under the key's limits within a few seconds), a
    deferrable task defers on a timer until the window reopens and then submits, holding no
    worker slot and using none of Airflow's retries (a 429 proves the lookup was not accepted);
    a non-deferrable one waits in the worker, up to ``timeout``.

    :param social_media_url: Twitter/X or Instagram profile or status URL (templated)
    :param twitter_url: alias of ``social_media_url`` (templated)
    :param interaction_type: ``replies``, ``followers``, ``following`` or
        ``followers,following`` (the API's ``type``; templated)
    :param username: target account, ``@`` optional; needed for follower lookups without a URL (templated)
    :param tweet_id: 10-25 digits; needed for ``replies`` unless the URL is a status URL (templated)
    :param max_results: 10-1000, default 100 (templated)
    :param callback_url: HTTP(S) URL the API POSTs the result to (templated)
    :param platform: ``twitter`` (default) or ``instagram``, when only ``username`` is given (templated)
    :param nyne_conn_id: the ``nyne`` connection (API key as login, secret as password)
    :param wait_for_completion: also wait until the lookup finishes (default ``False``: return
        as soon as it is submitted, and wait with :class:`NyneInteractionsSensor`)
    :param deferrable: wait in the triggerer, freeing the worker; ``False`` polls in the
        worker, for deployments without a triggerer. Default: the deployment's
        ``[operators] default_deferrable`` when it sets one, else ``True``
        (:func:`~airflow_provider_nyne.utils.arguments.default_deferrable`). With
        ``wait_mode="callback"`` and ``wait_for_completion`` the task always waits in the
        triggerer (the callback wakes it there), unless ``deferrable=False`` is passed, which fails
    :param timeout: longest wait, seconds or timedelta (default 24 h); one absolute deadline
        is computed when waiting starts and carried into the trigger
    :param poll_interval: delay before the first poll, seconds (default 2)
    :param max_poll_interval: cap of the delay between polls, seconds (default 60)
    :param backoff_factor: growth of the delay per poll (default 1.5)
    :param max_transient_errors: consecutive failed polls (5xx, timeouts) tolerated while
        waiting (default 10); a rate limit (429) is waited out, never counted
    :param reuse_request_id: attach to this existing request id instead of submitting (templated);
        also the way to resume after a try was interrupted while submitting
    :param resubmit_if_interrupted: when a previous try was interrupted while submitting (its
        answer never recorded), submit again instead of failing (default ``False``). The
        interrupted submission may have been accepted: both may be charged
    :param wait_mode: ``"poll"`` (default) or ``"callback"``: Nyne POSTs the result to the
        receiver in the Airflow api-server (``[nyne] callback_base_url`` and a signing secret
        must be set; see docs/callbacks.md). With ``wait_for_completion`` the task defers until
        the callback (no polling; one status request if none came by ``timeout``); without,
        the callback records an event on ``callback_asset`` (asset mode)
    :param callback_asset: the ``Asset`` (or URI) a callback records an event on; default in
        asset mode ``nyne://interactions/<platform>/<username>/<type>``, none in deferred mode
    :param callback_mailbox_interval: seconds between the callback trigger's safety-net reads of
        the receiver's mailbox while it waits for the callback (default 300)
    :param credit_budget: credits this DAG run may spend with this connection, over all its
        lookups (3 per lookup; templated; ``None``: no budget). Needs the provider on the
        api-server and a signing secret (``[nyne] callback_secret``) on workers and api-server
    :param min_credit_balance: refuse to submit when the account's balance could fall below
        this many credits (templated; ``None``: no floor); read from the free ``GET /usage``

    Returns (XCom ``return_value``) the request id, or when ``wait_for_completion`` a summary
    ``{"request_id": ..., "status": "completed", "total_count": ...}``; never the result itself.
    """

    template_fields: Sequence[str] = (
        "social_media_url",
        "twitter_url",
        "interaction_type",
        "username",
        "tweet_id",
        "max_results",
        "callback_url",
        "platform",
        "reuse_request_id",
        "credit_budget",
        "min_credit_balance",
    )
    ui_color = "#e3ecfa"
    #: A retry of this task submits again when the lookup failed (a failed lookup costs nothing).
    resubmits_on_retry = True

    def __init__(
        self,
        *,
        social_media_url: str | None = None,
        twitter_url: str | None = None,
        interaction_type: str | None = None,
        username: str | None = None,
        tweet_id: str | int | None = None,
        max_results: int | str | None = None,
        callback_url: str | None = None,
        platform: str | None = None,
        nyne_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
        reuse_request_id: str | None = None,
        resubmit_if_interrupted: bool = False,
        wait_mode: str = "poll",
        callback_asset: Any = None,
        callback_mailbox_interval: float | None = None,
        credit_budget: int | str | None = None,
        min_credit_balance: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.social_media_url = social_media_url
        self.twitter_url = twitter_url
        self.interaction_type = interaction_type
        self.username = username
        self.tweet_id = tweet_id
        self.max_results = max_results
        self.callback_url = callback_url
        self.platform = platform
        self.wait_for_completion = wait_for_completion
        self.wait_mode = check_wait_mode(wait_mode)
        waits_for_callback = self.wait_mode == "callback" and wait_for_completion
        if waits_for_callback and deferrable is False:
            raise ValueError("wait_mode='callback' waits in the triggerer: it needs deferrable=True")
        self.init_waiting(
            nyne_conn_id=nyne_conn_id,
            # A callback wakes a deferred task: the deployment's default does not apply to it.
            deferrable=True if waits_for_callback else deferrable,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            backoff_factor=backoff_factor,
            max_transient_errors=max_transient_errors,
        )
        self.reuse_request_id = reuse_request_id
        self.resubmit_if_interrupted = resubmit_if_interrupted
        self.callback_asset = callback_asset
        self.callback_mailbox_interval = callback_mailbox_interval
        self.credit_budget = check_credits_argument(credit_budget, name="credit_budget")
        self.min_credit_balance = check_credits_argument(min_credit_balance, name="min_credit_balance")

    # Steps --------------------------------------------------------------------------------

    def build_request(self) -> InteractionRequest:
        """
        Validate the (rendered) fields and the connection before anything is sent.

        :raises AirflowFailException: naming the field or the connection at fault
        """
        try:
            self.hook.settings  # noqa: B018 - the connection must exist and hold credentials
            return self.hook.build_request(
                social_media_url=self.social_media_url or None,
                twitter_url=self.twitter_url or None,
                interaction_type=self.interaction_type or None,
                username=self.username or None,
                tweet_id=self.tweet_id or None,
                max_results=self.max_results,
                callback_url=self.callback_url or None,
                platform=self.platform or None,
            )
        except client.NyneError as err:
            self.fail(err)

    def _status(self, request_id: str) -> JobStatus:
        try:
            return self.hook.get_interactions_status(request_id)
        except client.NyneError as err:
            self.fail(err)

    def _reconnect(
        self, store: RequestStateStore, request: InteractionRequest
    ) -> tuple[str, JobStatus] | None:
        """A previous try's request to reconnect to or reuse, or ``None`` to submit."""
        from airflow_provider_nyne.client.models import JobState

        record = self._load(store)
        if record is None:
            return None
        rid = record.request_id
        if record.fingerprint and record.fingerprint != request.fingerprint():
            self.log.warning(
                "A previous try submitted Nyne request %s for different parameters; submitting the new lookup",
                rid or "(interrupted while submitting)",
            )
            return None
        if rid is None:
            if not self.resubmit_if_interrupted:
                raise AirflowFailException(record.interrupted_message())
            self.log.warning(
                "A previous try was interrupted while submitting this lookup; submitting again as "
                "resubmit_if_interrupted=True asks (if the interrupted one was accepted, both may be charged)"
            )
            return None
        try:
            status = self.hook.get_interactions_status(rid)
        except client.NyneNotFoundError:
            self.log.info("Nyne request %s from a previous try has expired; submitting again", rid)
            return None
        except client.NyneError as err:
            # Unsure whether it still runs: do not submit (that could pay twice); let Airflow retry.
            self.fail(err)
        if status.state is JobState.FAILED:
            self.log.info(
                "Nyne request %s from a previous try failed (%s); submitting again (failed lookups cost nothing)",
                rid,
                status.error or "no reason given",
            )
            return None
        if status.state is JobState.COMPLETED:
            self.log.info(
                "Nyne request %s from a previous try already completed: reusing it, not paying again", rid
            )
        else:
            self.log.info("Reconnecting to Nyne request %s from a previous try (%s)", rid, status.status)
        return rid, status

    def _load(self, store: RequestStateStore) -> SubmittedRequest | None:
        """What a previous try recorded; a store that cannot be read fails the try before anything is sent."""
        from airflow_provider_nyne.utils.request_state import RequestStateError

        try:
            return store.load(strict=True)
        except RequestStateError as err:
            raise AirflowException(f"Nyne: {err}; nothing was submitted, a retry will look again") from err

    def _submit(self, request: InteractionRequest, store: RequestStateStore, context: Any) -> str:
        """Hold the credits, record the intent, send the POST, then keep the request id (or clear the intent)."""
        from airflow_provider_nyne.utils.request_state import RequestStateError, SubmittedRequest

        fingerprint = request.fingerprint()
        hold = self._hold_credits(context, fingerprint)
        try:
            recorded = store.begin_submission(
                fingerprint, try_number=getattr(context.get("ti"), "try_number", None)
            )
        except RequestStateError as err:
            self._release_credits(hold)
            raise AirflowException(f"Nyne: {err}; nothing was submitted, a retry will try again") from err
        self.note_request(None, self._after_kill(store if recorded else None, None))
        if self.killed:
            # Killed between the guard and the POST: Airflow lets the process run a few seconds more.
            store.clear_submission()
            self.forget_request()
            self._release_credits(hold)
            raise AirflowException(
                "Nyne: the task was killed before its lookup was sent; nothing was submitted"
            )
        self.log.info("Submitting Nyne %s lookup for %s", request.interaction_type, request.target)
        # Waiting for room under the rate limit: briefly when the task can defer, else up to its timeout.
        deadline = time.time() + (SUBMIT_WAIT_IN_WORKER if self.deferrable else self.timeout)
        try:
            request_id = self.hook.submit_interactions(request, deadline=deadline)
        except client.NyneError as err:
            if err.proves_not_processed:
                store.clear_submission()
                self.forget_request()
            if isinstance(err, client.NyneRateLimitError) and self.deferrable:
                # The credits stay reserved: this task submits the same lookup once the window reopens.
                self._defer_until_room(err, context)
            if err.proves_not_processed:
                self._release_credits(hold)
            # Only a failure proving the lookup was not processed may be retried by Airflow.
            self.fail(err, submitting=True)
        kept = store.save(SubmittedRequest(request_id, fingerprint))
        self.note_request(request_id, self._after_kill(store if kept else None, request_id))
        return request_id

    # Credits ------------------------------------------------------------------------------------

    def _credit_amount(self, name: str) -> int | None:
        try:
            return credits_argument(getattr(self, name), name=name)
        except ValueError as err:
            raise AirflowFailException(f"Nyne: {err}") from None

    def _hold_credits(self, context: Any, fingerprint: str) -> CreditHold | None:
        """The credit guard, before anything is sent: the balance floor, then the run's budget."""
        from airflow_provider_nyne.utils.credits import (
            CreditGuardError,
            CreditLimitError,
            ReservationKey,
            balance_from_usage,
            check_balance,
        )

        budget = self._credit_amount("credit_budget")
        minimum = self._credit_amount("min_credit_balance")
        try:
            if minimum is not None:
                try:
                    usage = self.hook.get_usage()
                except client.NyneError as err:
                    self.fail(err)
                balance = balance_from_usage(usage)
                check_balance(balance, minimum)
                self.log.info("Nyne balance %s credits, minimum %s: submitting", balance, minimum)
            if budget is None:
                return None
            ti = context["ti"]
            map_index = getattr(ti, "map_index", -1)
            key = ReservationKey(
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=-1 if map_index is None else int(map_index),
                conn_id=self.nyne_conn_id,
                fingerprint=fingerprint,
            )
            hold = self._credit_reservations.reserve(key, budget)
        except CreditLimitError as err:
            raise AirflowFailException(f"Nyne: {err}.") from None
        except CreditGuardError as err:
            failure = AirflowException if err.retryable else AirflowFailException
            raise failure(f"Nyne credit guard: {err}. Nothing was submitted.") from None
        reservation = hold.reservation
        self.log.info(
            "Nyne credits %s: %d of this run's budget of %d (connection %r) now reserved",
            "already reserved by an earlier try"
            if reservation.repeated
            else f"reserved ({reservation.credits})",
            reservation.reserved,
            reservation.budget,
            self.nyne_conn_id,
        )
        return hold

    @cached_property
    def _credit_reservations(self) -> CreditReservations:
        """The client of the api-server's credit guard, signing with this connection's secret."""
        from airflow_provider_nyne.utils.credits import CreditReservations

        return CreditReservations.for_connection(self.nyne_conn_id, self.hook.settings.callback_secret)

    def _release_credits(self, hold: CreditHold | None) -> None:
        """The submission proved it was not accepted: give its credits back to the run's budget."""
        from airflow_provider_nyne.utils.credits import CreditGuardError

        if hold is None:
            return
        try:
            released = self._credit_reservations.release(hold)
        except CreditGuardError as err:
            self.log.warning(
                "Could not give this lookup's %d credits back to the run's budget (%s): they stay "
                "reserved; a retry of this task uses the same reservation",
                hold.reservation.credits,
                err,
            )
            return
        if released:
            self.log.info(
                "Nothing was accepted: %d credits given back to the run's budget", hold.reservation.credits
            )

    # Kill -----------------------------------------------------------------------------------

    def _after_kill(self, store: RequestStateStore | None, request_id: str | None) -> str:
        """What a retry does with this try's lookup, for :meth:`on_kill` (``store``: where it is kept, if it is)."""
        if request_id is None:
            if store is not None and store.durable:
                return (
                    "The intent recorded before sending makes a retry stop instead of paying twice: find "
                    "the request id in the Nyne dashboard and set reuse_request_id, or set "
                    "resubmit_if_interrupted=True to submit again."
                )
            return "Nothing records this submission across tries here: a retry submits the lookup again."
        if store is not None and store.durable:
            return (
                f"A retry or a clear of this task reconnects to it instead of paying again (its id is "
                f"kept in the {store.where})."
            )
        return (
            "Nothing keeps its id across tries here, so a retry would submit a new lookup: set "
            f"reuse_request_id={request_id!r} to attach to this one."
        )

    def _defer_until_room(self, error: NyneRateLimitError, context: Any) -> None:
        """Told to come back later: defer on a timer (no worker slot, no retry used), then submit."""
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        since = float(context.get(RATE_LIMITED_SINCE) or time.time())
        # Tasks told the same reset come back spread over half a window, not all at once.
        wait = max(1.0, error.retry_after or 60.0) * random.uniform(1.0, 1.5)
        if time.time() + wait - since > self.timeout:
            return  # waited for the rate limit as long as the task may wait: it fails
        self.log.info("Nyne API rate limit: submitting again in %.0fs, once the window reopens", wait)
        self.defer_on(
            DateTimeTrigger(moment=datetime.now(timezone.utc) + timedelta(seconds=wait)),
            deadline=time.time() + wait,
            waiting_for="the API key's rate-limit window reopens",
            method_name="execute_after_rate_limit",
            kwargs={"rate_limited_since": since},
        )

    def _resolve_interrupted(
        self, context: Any, request: InteractionRequest, request_id: str
    ) -> RequestStateStore:
        """
        With ``reuse_request_id``: an interrupted submission of this lookup is resolved by the given id.

        Returns the store that now keeps it (released when the task succeeds), else a no-op store.
        """
        from airflow_provider_nyne.utils.request_state import (
            RequestStateStore,
            SubmittedRequest,
            request_state_store,
        )

        store = request_state_store(context)
        record = store.load()
        if record is None or not record.submitting or record.fingerprint not in (None, request.fingerprint()):
            return RequestStateStore()
        store.save(SubmittedRequest(request_id, request.fingerprint()))
        self.log.info("Request %s resolves the submission a previous try left unfinished", request_id)
        return store

    # Callbacks (wait_mode="callback") --------------------------------------------------------

    def _with_callback(
        self, context: Any, request: InteractionRequest
    ) -> tuple[InteractionRequest, CallbackPlan | None]:
        """The request to submit, with its callback URL in callback mode; runs before any HTTP request."""
        if self.wait_mode != "callback":
            return request, None
        if self.reuse_request_id:
            self.log.warning(
                "reuse_request_id attaches to a request submitted elsewhere: its callback goes where its "
                "submitter asked, so this task waits for it by polling"
            )
            return request, None
        if request.callback_url:
            raise AirflowFailException(
                "callback_url and wait_mode='callback' exclude each other: the callback URL is built "
                "from [nyne] callback_base_url"
            )
        from airflow_provider_nyne.callbacks.config import CallbackConfigError
        from airflow_provider_nyne.callbacks.plan import (
            CORRELATION_XCOM_KEY,
            plan_callback,
            resolve_asset,
            with_callback_url,
        )

        wait = self.wait_for_completion
        asset = self.callback_asset if self.callback_asset is not None else (None if wait else True)
        name, uri = resolve_asset(asset, request)
        try:
            plan = plan_callback(context, self.hook, wait=wait, asset_name=name, asset_uri=uri)
        except CallbackConfigError as err:
            raise AirflowFailException(str(err)) from err
        # Recorded before the submission: the receiver accepts callbacks only on the URL the task
        # instance recorded, and may hear from Nyne before the task hears back from the API.
        context["ti"].xcom_push(key=CORRELATION_XCOM_KEY, value=plan.correlation_id)
        if not wait:
            self.log.info("Asset mode: when Nyne calls back, an event is recorded on the Asset %s", uri)
        return with_callback_url(self.hook, request, plan.url), plan

    def _wait_for_callback(
        self, request_id: str, plan: CallbackPlan, status: JobStatus | None
    ) -> dict[str, Any]:
        """Deferred mode: defer on the callback (no polling), unless a reconnected request already ended."""
        from airflow_provider_nyne.callbacks.config import DEFAULT_MAILBOX_INTERVAL
        from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger
        from airflow_provider_nyne.utils.waiting import terminal_event

        if status is not None and status.is_terminal:
            return self.finish(terminal_event(status), request_id=request_id)
        deadline = self.deadline()
        trigger = NyneCallbackTrigger(
            request_id=request_id,
            correlation_id=plan.correlation_id,
            end_time=deadline,
            nyne_conn_id=self.nyne_conn_id,
            mailbox_interval=self.callback_mailbox_interval or DEFAULT_MAILBOX_INTERVAL,
        )
        self.defer_on(
            trigger,
            deadline=deadline,
            waiting_for=f"the callback of Nyne request {request_id} arrives, without polling",
        )

    # Airflow entry points --------------------------------------------------------------------

    def execute(self, context: Any) -> Any:
        """Validate, reconnect or submit, keep the request id, then optionally wait."""
        from airflow_provider_nyne.utils.request_state import request_state_store

        request, plan = self._with_callback(context, self.build_request())
        store: RequestStateStore
        status: JobStatus | None = None
        submitted: str | None = None
        if self.reuse_request_id:
            request_id = str(self.reuse_request_id).strip()
            status = self._status(request_id)
            self.log.info("Attaching to existing Nyne request %s (%s)", request_id, status.status)
            store = self._resolve_interrupted(context, request, request_id)
            self.note_request(
                request_id, "This task attached to it with reuse_request_id: a retry attaches to it again."
            )
        else:
            store = request_state_store(context)
            found = self._reconnect(store, request)
            if found is not None:
                request_id, status = found
                self.note_request(request_id, self._after_kill(store, request_id))
            else:
                request_id = submitted = self._submit(request, store, context)
        context["ti"].xcom_push(key=REQUEST_ID_XCOM_KEY, value=request_id)

        result: Any = request_id
        if plan is not None and plan.target.wait:
            result = self._wait_for_callback(request_id, plan, status)
        elif plan is None and self.wait_for_completion:
            # A lookup submitted just now cannot have finished: no status check before waiting.
            result = self.wait_for(request_id, status=status, check=submitted is None)
        if not self.killed:  # a killed try keeps the record for the retry or clear that follows
            store.release()
        return result

    def execute_after_rate_limit(
        self, context: Any, event: Any = None, rate_limited_since: float = 0.0
    ) -> Any:
        """Resume once the rate-limit window reopened: validate and submit again (nothing was accepted)."""
        context[RATE_LIMITED_SINCE] = rate_limited_since
        return self.execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: the summary on success, a task failure naming the cause otherwise."""
        from airflow_provider_nyne.utils.request_state import request_state_store

        summary = self.finish(event)
        if not self.reuse_request_id:
            request_state_store(context).release()
        return summary
