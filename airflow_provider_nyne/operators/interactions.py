"""NyneSubmitInteractionsOperator: submit a Social Interactions lookup, optionally wait for it, never pay twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

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
    from airflow_provider_nyne.utils.request_state import RequestStateStore

#: XCom key of the submitted request id (pushed before any waiting).
REQUEST_ID_XCOM_KEY = "request_id"


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
    :param reuse_request_id: attach to this existing request id instead of submitting (templated)
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

        record = store.load()
        if record is None:
            return None
        rid = record.request_id
        if record.fingerprint and record.fingerprint != request.fingerprint():
            self.log.warning(
                "A previous try submitted Nyne request %s for different parameters; submitting the new lookup",
                rid,
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

    def _submit(self, request: InteractionRequest) -> str:
        from airflow_provider_nyne.utils.waiting import fail_for

        self.log.info("Submitting Nyne %s lookup for %s", request.interaction_type, request.target)
        try:
            return self.hook.submit_interactions(request)
        except NyneError as err:
            # Only a failure proving the lookup was not processed may be retried by Airflow.
            raise fail_for(err, nyne_conn_id=self.nyne_conn_id, submitting=True) from err

    # Airflow entry points ------------------------------------------------------------------

    def execute(self, context: Any) -> Any:
        """Validate, reconnect or submit, keep the request id, then optionally wait."""
        from airflow_provider_nyne.callbacks.defer import callback_request, continue_with_callback
        from airflow_provider_nyne.utils.request_state import (
            RequestStateStore,
            SubmittedRequest,
            request_state_store,
        )
        from airflow_provider_nyne.utils.waiting import deadline_after, wait_for_request

        request, callback = callback_request(self, context, self.build_request())
        store: RequestStateStore
        status: JobStatus | None = None
        if self.reuse_request_id:
            store = RequestStateStore()
            request_id = str(self.reuse_request_id).strip()
            status = self._status(request_id)
            self.log.info("Attaching to existing Nyne request %s (%s)", request_id, status.status)
        else:
            store = request_state_store(context)
            found = self._reconnect(store, request)
            if found is not None:
                request_id, status = found
            else:
                request_id = self._submit(request)
                store.save(SubmittedRequest(request_id, request.fingerprint()))
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
