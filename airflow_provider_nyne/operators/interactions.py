"""NyneSubmitInteractionsOperator: submit a Social Interactions lookup, optionally wait for it, never pay twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_nyne._compat import AirflowException, AirflowFailException
from airflow_provider_nyne.client.errors import NyneError, NyneNotFoundError
from airflow_provider_nyne.client.schedule import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_MAX_TRANSIENT_ERRORS,
    DEFAULT_POLL_INTERVAL,
    PollSchedule,
)
from airflow_provider_nyne.utils.arguments import (
    DEFAULT_CONN_ID,
    DEFAULT_TIMEOUT,
    check_wait_mode,
    timeout_seconds,
)

# The DAG processor imports this module on every parse: what only a running task needs (the
# hook and HTTP client, waiting, request state, callbacks) is imported where it is used.
if TYPE_CHECKING:
    from airflow_provider_nyne.client.models import JobStatus
    from airflow_provider_nyne.client.request import InteractionRequest
    from airflow_provider_nyne.hooks.nyne import NyneHook
    from airflow_provider_nyne.utils.request_state import RequestStateStore, SubmittedRequest

#: XCom key of the submitted request id (pushed before any waiting).
REQUEST_ID_XCOM_KEY = "request_id"


def interrupted_message(record: SubmittedRequest) -> str:
    """
    Why a retry stops when a previous try was interrupted while submitting, and how to resume.

    :param record: the intent the previous try left (see :meth:`SubmittedRequest.intent`)
    """
    details = [f"try {record.try_number}"] if record.try_number else []
    if record.since:
        details.append(f"started {record.since}")
    when = f" ({', '.join(details)})" if details else ""
    return (
        f"Nyne: a previous try of this task was interrupted while submitting this lookup{when} "
        "and its answer was never recorded: the lookup may be running "
        "at Nyne and may be charged, so it is not submitted again on its own. To resume without "
        "paying twice, find the request id in the Nyne dashboard and set "
        "reuse_request_id='<request id>'; to submit again knowingly (a second charge if the first "
        "was accepted), set resubmit_if_interrupted=True. Then clear this task."
    )


class NyneSubmitInteractionsOperator(BaseOperator):
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
    :param deferrable: wait in the triggerer, freeing the worker (default ``True``); ``False``
        polls in the worker, for deployments without a triggerer
    :param timeout: longest wait, seconds or timedelta (default 24 h); one absolute deadline
        is computed when waiting starts and carried into the trigger
    :param poll_interval: delay before the first poll, seconds (default 2)
    :param max_poll_interval: cap of the delay between polls, seconds (default 60)
    :param backoff_factor: growth of the delay per poll (default 1.5)
    :param max_transient_errors: consecutive failed polls (5xx, 429, timeouts) tolerated while
        waiting (default 10)
    :param reuse_request_id: attach to this existing request id instead of submitting (templated);
        also the way to resume after a try was interrupted while submitting
    :param resubmit_if_interrupted: when a previous try was interrupted while submitting (its
        answer never recorded), submit again instead of failing (default ``False``). The
        interrupted submission may have been accepted: both may be charged
    :param wait_mode: ``"poll"`` (default) or ``"callback"``: Nyne POSTs the result to the
        receiver in the Airflow api-server (``[nyne] callback_base_url`` and a signing secret
        must be set; see the Callbacks section of the README). With ``wait_for_completion`` the task defers until
        the callback (no polling; one status request if none came by ``timeout``); without,
        the callback records an event on ``callback_asset`` (asset mode)
    :param callback_asset: the ``Asset`` (or URI) a callback records an event on; default in
        asset mode ``nyne://interactions/<platform>/<username>/<type>``, none in deferred mode

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
    )
    ui_color = "#e3ecfa"

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
        deferrable: bool = True,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
        reuse_request_id: str | None = None,
        resubmit_if_interrupted: bool = False,
        wait_mode: str = "poll",
        callback_asset: Any = None,
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
        self.nyne_conn_id = nyne_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.timeout = timeout_seconds(timeout)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.backoff_factor = backoff_factor
        self.max_transient_errors = max_transient_errors
        # Nonsense intervals fail when the DAG is parsed, not after paying for a submission.
        PollSchedule(
            poll_interval=poll_interval, max_poll_interval=max_poll_interval, backoff_factor=backoff_factor
        )
        self.reuse_request_id = reuse_request_id
        self.resubmit_if_interrupted = resubmit_if_interrupted
        self.wait_mode = check_wait_mode(wait_mode)
        if self.wait_mode == "callback" and wait_for_completion and not deferrable:
            raise ValueError("wait_mode='callback' waits in the triggerer: it needs deferrable=True")
        self.callback_asset = callback_asset

    @cached_property
    def hook(self) -> NyneHook:
        """The hook for ``nyne_conn_id`` (built on first use, never at DAG parse time)."""
        from airflow_provider_nyne.hooks.nyne import NyneHook

        return NyneHook(self.nyne_conn_id)

    # Steps --------------------------------------------------------------------------------

    def build_request(self) -> InteractionRequest:
        """
        Validate the (rendered) fields and the connection before anything is sent.

        :raises AirflowFailException: naming the field or the connection at fault
        """
        from airflow_provider_nyne.utils.waiting import fail_for

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
        except NyneError as err:
            raise fail_for(err, nyne_conn_id=self.nyne_conn_id) from err

    def _status(self, request_id: str) -> JobStatus:
        from airflow_provider_nyne.utils.waiting import fail_for

        try:
            return self.hook.get_interactions_status(request_id)
        except NyneError as err:
            raise fail_for(err, nyne_conn_id=self.nyne_conn_id) from err

    def _reconnect(
        self, store: RequestStateStore, request: InteractionRequest
    ) -> tuple[str, JobStatus] | None:
        """A previous try's request to reconnect to or reuse, or ``None`` to submit."""
        from airflow_provider_nyne.client.models import JobState
        from airflow_provider_nyne.utils.waiting import fail_for

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
                raise AirflowFailException(interrupted_message(record))
            self.log.warning(
                "A previous try was interrupted while submitting this lookup; submitting again as "
                "resubmit_if_interrupted=True asks (if the interrupted one was accepted, both may be charged)"
            )
            return None
        try:
            status = self.hook.get_interactions_status(rid)
        except NyneNotFoundError:
            self.log.info("Nyne request %s from a previous try has expired; submitting again", rid)
            return None
        except NyneError as err:
            # Unsure whether it still runs: do not submit (that could pay twice); let Airflow retry.
            raise fail_for(err, nyne_conn_id=self.nyne_conn_id) from err
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
        """Record the intent, send the POST, then keep the request id (or clear the intent)."""
        from airflow_provider_nyne.utils.request_state import RequestStateError, SubmittedRequest
        from airflow_provider_nyne.utils.waiting import fail_for

        fingerprint = request.fingerprint()
        try:
            store.begin_submission(fingerprint, try_number=getattr(context.get("ti"), "try_number", None))
        except RequestStateError as err:
            raise AirflowException(f"Nyne: {err}; nothing was submitted, a retry will try again") from err
        self.log.info("Submitting Nyne %s lookup for %s", request.interaction_type, request.target)
        try:
            request_id = self.hook.submit_interactions(request)
        except NyneError as err:
            if err.proves_not_processed:
                store.clear_submission()
            # Only a failure proving the lookup was not processed may be retried by Airflow.
            raise fail_for(err, nyne_conn_id=self.nyne_conn_id, submitting=True) from err
        store.save(SubmittedRequest(request_id, fingerprint))
        return request_id

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

    # Airflow entry points ------------------------------------------------------------------

    def execute(self, context: Any) -> Any:
        """Validate, reconnect or submit, keep the request id, then optionally wait."""
        from airflow_provider_nyne.callbacks.defer import callback_request, continue_with_callback
        from airflow_provider_nyne.utils.request_state import request_state_store
        from airflow_provider_nyne.utils.waiting import deadline_after, wait_for_request

        request, callback = callback_request(self, context, self.build_request())
        store: RequestStateStore
        status: JobStatus | None = None
        if self.reuse_request_id:
            request_id = str(self.reuse_request_id).strip()
            status = self._status(request_id)
            self.log.info("Attaching to existing Nyne request %s (%s)", request_id, status.status)
            store = self._resolve_interrupted(context, request, request_id)
        else:
            store = request_state_store(context)
            found = self._reconnect(store, request)
            if found is not None:
                request_id, status = found
            else:
                request_id = self._submit(request, store, context)
        context["ti"].xcom_push(key=REQUEST_ID_XCOM_KEY, value=request_id)

        if callback is not None:  # wait_mode="callback": defer on the callback, or return (asset mode)
            result = continue_with_callback(self, context, request_id, callback, status=status)
            store.release()
            return result
        if not self.wait_for_completion:
            store.release()
            return request_id
        summary = wait_for_request(
            self,
            request_id,
            deadline=deadline_after(self.timeout),
            deferrable=self.deferrable,
            nyne_conn_id=self.nyne_conn_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            backoff_factor=self.backoff_factor,
            max_transient_errors=self.max_transient_errors,
            status=status,
            hook=self.hook,
        )
        store.release()
        return summary

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: the summary on success, a task failure naming the cause otherwise."""
        from airflow_provider_nyne.utils.request_state import request_state_store
        from airflow_provider_nyne.utils.waiting import check_event

        summary = check_event(event, task=self, nyne_conn_id=self.nyne_conn_id)
        if not self.reuse_request_id:
            request_state_store(context).release()
        return summary
