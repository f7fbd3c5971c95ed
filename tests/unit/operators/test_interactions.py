"""NyneSubmitInteractionsOperator: validation first, the request id kept before waiting, never paying twice."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
import respx

from airflow_provider_nyne._compat import (
    AirflowException,
    AirflowFailException,
    TaskDeferred,
)
from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneCreditsError,
    NyneError,
    NyneNotFoundError,
    NyneRateLimitError,
    NyneResponseError,
    NyneServerError,
    NyneTransportError,
    NyneValidationError,
)
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger
from airflow_provider_nyne.utils import waiting
from airflow_provider_nyne.utils.request_state import STATE_KEY

KEY = "sk-live-OPERATORKEY-0123456789"
SECRET = "ss-live-OPERATORSECRET-abcdefghij"


def status(state: str, rid: str = "req-1", **data: Any) -> JobStatus:
    return JobStatus.from_api({"status": state, **data}, request_id=rid)


def completed(rid: str = "req-1", total: int = 12) -> JobStatus:
    return status("completed", rid, completed=True, result={"total_count": total, "interactions": []})


class WorkerKilled(BaseException):
    """Stands in for SIGKILL while the POST is in flight: no error handling of the operator runs."""


class FakeHook:
    """Stands in for NyneHook: records submissions and answers status polls from a table."""

    def __init__(self, statuses: dict[str, JobStatus | NyneError] | None = None) -> None:
        self.statuses = dict(statuses or {})
        self.submitted: list[InteractionRequest] = []
        self.polled: list[str] = []
        self.deadlines: list[float | None] = []
        self.submit_error: NyneError | None = None
        #: the worker dies once the POST has reached the API (which goes on to process it)
        self.die_after_sending = False
        #: called as the POST is sent (to look at the state store at that moment)
        self.on_send: Any = None
        self.settings = object()

    def build_request(self, **fields: Any) -> InteractionRequest:
        return InteractionRequest.create(**fields)

    def submit_interactions(self, request: InteractionRequest, *, deadline: float | None = None) -> str:
        self.deadlines.append(deadline)
        if self.on_send is not None:
            self.on_send()
        if self.submit_error is not None:
            raise self.submit_error
        self.submitted.append(request)
        if self.die_after_sending:
            raise WorkerKilled
        rid = f"req-new-{len(self.submitted)}"
        self.statuses.setdefault(rid, status("queued", rid))
        return rid

    def get_interactions_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        self.polled.append(request_id)
        answer = self.statuses[request_id]
        if isinstance(answer, NyneError):
            raise answer
        return answer


class DictStore:
    """Airflow 3.3's ``task_state_store``: get, set (JSON values), delete; optionally failing."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = dict(data or {})
        self.fail_get = False
        #: fail the n-th ``set`` from now on (1 = the next one), ``None`` never
        self.fail_set_at: int | None = None
        self.sets = 0

    def get(self, key: str, default: Any = None) -> Any:
        if self.fail_get:
            raise RuntimeError("execution API unreachable")
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.sets += 1
        if self.fail_set_at is not None and self.sets >= self.fail_set_at:
            raise RuntimeError("execution API unreachable")
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTI:
    dag_id = "dag"
    task_id = "submit"
    run_id = "manual__1"
    map_index = -1

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def context(store: DictStore | None = None, try_number: int = 1) -> dict[str, Any]:
    ctx: dict[str, Any] = {"ti": FakeTI(try_number), "run_id": FakeTI.run_id}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def make(hook: FakeHook | None = None, **kwargs: Any) -> NyneSubmitInteractionsOperator:
    fields: dict[str, Any] = {"task_id": "submit", "username": "nasa", "interaction_type": "followers"}
    op = NyneSubmitInteractionsOperator(**{**fields, **kwargs})
    op.__dict__["hook"] = hook or FakeHook()  # the cached_property, replaced
    return op


def fingerprint(**fields: Any) -> str:
    return InteractionRequest.create(
        **{"username": "nasa", "interaction_type": "followers", **fields}
    ).fingerprint()


# --- construction -------------------------------------------------------------------------


def test_every_request_field_is_templated() -> None:
    assert set(NyneSubmitInteractionsOperator.template_fields) == {
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
    }


def test_defaults() -> None:
    op = NyneSubmitInteractionsOperator(task_id="t", username="nasa", interaction_type="followers")
    assert (op.nyne_conn_id, op.wait_for_completion, op.deferrable) == ("nyne_default", False, True)
    assert (op.timeout, op.poll_interval, op.max_poll_interval, op.backoff_factor) == (
        86400.0,
        2.0,
        60.0,
        1.5,
    )
    assert (op.max_transient_errors, op.reuse_request_id) == (10, None)


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"timeout": -5}, {"poll_interval": 0}, {"poll_interval": 10, "max_poll_interval": 1}],
    ids=["zero-timeout", "negative-timeout", "zero-interval", "cap-below-interval"],
)
def test_nonsense_waiting_settings_fail_at_parse_time(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NyneSubmitInteractionsOperator(task_id="t", username="nasa", interaction_type="followers", **kwargs)


def test_building_the_operator_reads_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("connection read at DAG parse time")

    monkeypatch.setattr(NyneHook, "get_connection", boom)
    NyneSubmitInteractionsOperator(task_id="t", username="nasa", interaction_type="followers")


# --- validation before spending -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"interaction_type": None}, "type"),
        ({"interaction_type": "likes"}, "type"),
        ({"interaction_type": "replies"}, "tweet_id"),
        ({"username": None, "social_media_url": "https://example.com/nasa"}, "social_media_url"),
        (
            {
                "username": None,
                "social_media_url": "https://www.instagram.com/natgeo/",
                "interaction_type": "replies",
            },
            "type",
        ),
        ({"callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"social_media_url": "https://x.com/a", "twitter_url": "https://x.com/b"}, "social_media_url"),
    ],
    ids=[
        "no-type",
        "bad-type",
        "replies-no-tweet",
        "bad-url",
        "instagram-replies",
        "bad-callback",
        "aliases-disagree",
    ],
)
def test_bad_input_fails_without_any_request(fields: dict[str, Any], fragment: str) -> None:
    hook = FakeHook()
    with pytest.raises(AirflowFailException, match=fragment):
        make(hook, **fields).execute(context(DictStore()))
    assert (hook.submitted, hook.polled) == ([], [])


def test_unknown_connection_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_MISSING", raising=False)
    op = NyneSubmitInteractionsOperator(
        task_id="t", username="nasa", interaction_type="followers", nyne_conn_id="nyne_missing"
    )
    with respx.mock(assert_all_called=False) as router:
        with pytest.raises(AirflowFailException, match="'nyne_missing' does not exist"):
            op.execute(context(DictStore()))
        assert router.calls.call_count == 0


# --- submit, keep, return --------------------------------------------------------------------


def test_submit_keeps_the_request_id_before_returning_it() -> None:
    hook, store = FakeHook(), DictStore()
    ctx = context(store)
    rid = make(hook, max_results="50").execute(ctx)
    assert rid == "req-new-1"
    assert ctx["ti"].xcom == {"request_id": "req-new-1"}
    assert store.data[STATE_KEY] == {"request_id": "req-new-1", "fingerprint": fingerprint(max_results=50)}
    [request] = hook.submitted
    assert (request.username, request.max_results) == ("nasa", 50)
    assert hook.polled == []  # not waiting: no poll at all


def test_twitter_url_alias_and_instagram_platform_reach_the_request() -> None:
    hook = FakeHook()
    make(hook, username=None, twitter_url="https://twitter.com/nasa").execute(context(DictStore()))
    make(hook, username="natgeo", platform="instagram").execute(context(DictStore()))
    assert [(r.platform, r.username) for r in hook.submitted] == [
        ("twitter", "nasa"),
        ("instagram", "natgeo"),
    ]


# --- never pay twice ----------------------------------------------------------------------


def previous(rid: str = "req-old", **fields: Any) -> DictStore:
    return DictStore({STATE_KEY: {"request_id": rid, "fingerprint": fingerprint(**fields)}})


@pytest.mark.parametrize(
    ("answer", "submits"),
    [
        (status("processing", "req-old"), False),
        (status("queued", "req-old"), False),
        (completed("req-old"), False),
        (status("failed", "req-old", error="Profile is private"), True),
        (NyneNotFoundError("expired", status_code=404, code="request_not_found"), True),
    ],
    ids=["running", "queued", "completed", "failed", "expired-404"],
)
def test_retry_reconnects_reuses_or_resubmits(answer: JobStatus | NyneError, submits: bool) -> None:
    hook = FakeHook({"req-old": answer})
    store = previous()
    ctx = context(store)
    rid = make(hook).execute(ctx)
    assert len(hook.submitted) == (1 if submits else 0)
    assert rid == ("req-new-1" if submits else "req-old")
    assert ctx["ti"].xcom["request_id"] == rid
    assert store.data[STATE_KEY]["request_id"] == rid


def test_retry_with_changed_parameters_submits_the_new_lookup() -> None:
    hook = FakeHook({"req-old": status("processing", "req-old")})
    store = previous(max_results=20)
    assert make(hook, max_results=30).execute(context(store)) == "req-new-1"
    assert hook.polled == []  # the old request is not even looked at


def test_retry_when_the_status_is_unknown_fails_instead_of_paying_again() -> None:
    hook = FakeHook({"req-old": NyneServerError("down", status_code=502)})
    with pytest.raises(AirflowException, match="HTTP 502") as info:
        make(hook).execute(context(previous()))
    assert type(info.value) is AirflowException  # Airflow retries later, and reconnects then
    assert hook.submitted == []


def test_retry_completed_while_waiting_returns_the_summary_without_waiting() -> None:
    hook = FakeHook({"req-old": completed("req-old", total=33)})
    summary = make(hook, wait_for_completion=True).execute(context(previous()))
    assert summary == {"request_id": "req-old", "status": "completed", "total_count": 33}
    assert hook.polled == ["req-old"]
    assert hook.submitted == []


SUBMITTING = {"state": "submitting"}


def intent_of(store: DictStore) -> dict[str, Any] | None:
    """The stored intent (without its time stamp), or ``None`` when the store holds none."""
    value = dict(store.data.get(STATE_KEY) or {})
    if value.get("state") != "submitting":
        return None
    assert isinstance(value.pop("since"), str)
    return value


@pytest.mark.parametrize(
    ("error", "expected", "intent_kept"),
    [
        (NyneTransportError("read timeout", request_sent=True), AirflowFailException, True),
        (NyneServerError("internal error", status_code=500), AirflowFailException, True),
        (NyneResponseError("accepted, but no request_id"), AirflowFailException, True),
        (NyneServerError("unavailable", status_code=503), AirflowException, False),
        (NyneTransportError("refused", request_sent=False), AirflowException, False),
        (NyneValidationError("bad field", status_code=400, code="invalid_type"), AirflowFailException, False),
        (NyneAuthError("bad key", status_code=401, code="invalid_api_key"), AirflowFailException, False),
        (NyneCreditsError("no credits", status_code=402), AirflowFailException, False),
        (NyneValidationError("callback host not allowed", field="callback_url"), AirflowFailException, False),
    ],
    ids=[
        "ambiguous-timeout",
        "ambiguous-500",
        "ambiguous-no-request-id",
        "503-not-processed",
        "refused-not-sent",
        "400-refused",
        "401-refused",
        "402-refused",
        "local-check-before-sending",
    ],
)
def test_submission_failures(error: NyneError, expected: type[Exception], intent_kept: bool) -> None:
    hook = FakeHook()
    hook.submit_error = error
    store = DictStore()
    with pytest.raises(AirflowException) as info:
        make(hook).execute(context(store))
    assert type(info.value) is expected
    # Kept while the lookup may have been accepted; cleared once the failure proves it was not.
    assert intent_of(store) == (
        {**SUBMITTING, "fingerprint": fingerprint(), "try_number": 1} if intent_kept else None
    )
    assert STATE_KEY not in store.data or intent_kept

    # The next try: submits when nothing was accepted, stops (and submits nothing) otherwise.
    hook.submit_error = None
    if intent_kept:
        with pytest.raises(AirflowFailException, match="interrupted while submitting"):
            make(hook).execute(context(store, try_number=2))
        assert hook.submitted == []
    else:
        assert make(hook).execute(context(store, try_number=2)) == "req-new-1"


# --- told to come back later (429) -----------------------------------------------------------


def test_a_rate_limited_submission_defers_until_the_window_reopens_then_submits_once() -> None:
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

    from airflow_provider_nyne.operators.interactions import SUBMIT_WAIT_IN_WORKER

    hook, store = FakeHook(), DictStore()
    hook.submit_error = NyneRateLimitError("slow down", status_code=429, retry_after=20.0)
    op = make(hook)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context(store))
    # It waited only briefly in the worker for room, then deferred: no slot held, no retry used.
    assert hook.deadlines[0] is not None
    assert hook.deadlines[0] <= time.time() + SUBMIT_WAIT_IN_WORKER
    assert isinstance(info.value.trigger, DateTimeTrigger)
    assert info.value.method_name == "execute_after_rate_limit"
    wakes = info.value.trigger.moment.timestamp() - before
    assert 20.0 <= wakes <= 30.0 + 1  # the window's reset, spread by up to half again
    assert STATE_KEY not in store.data  # a 429 proves nothing was accepted: no intent left behind
    assert hook.submitted == []

    # The window reopened: the same try submits, exactly once.
    hook.submit_error = None
    kwargs = info.value.kwargs or {}
    assert op.execute_after_rate_limit(context(store), event=None, **kwargs) == "req-new-1"
    assert len(hook.submitted) == 1


def test_a_rate_limit_outlasting_the_timeout_fails_with_retries_kept() -> None:
    hook = FakeHook()
    hook.submit_error = NyneRateLimitError("slow down", status_code=429, retry_after=120.0)
    op = make(hook, timeout=60)
    with pytest.raises(AirflowException, match="429") as info:
        op.execute(context(DictStore()))
    assert type(info.value) is AirflowException  # Airflow's retries apply: nothing was accepted


def test_without_a_triggerer_a_rate_limited_submission_waits_in_the_worker_up_to_the_timeout() -> None:
    hook = FakeHook()
    op = make(hook, deferrable=False, timeout=300)
    before = time.time()
    assert op.execute(context(DictStore())) == "req-new-1"
    assert hook.deadlines[0] is not None
    assert before + 300 <= hook.deadlines[0] <= time.time() + 300


# --- a try killed while its POST is in flight ----------------------------------------------


def test_the_intent_is_recorded_before_the_post_and_replaced_by_the_request_id() -> None:
    hook, store = FakeHook(), DictStore()
    at_send: list[Any] = []
    hook.on_send = lambda: at_send.append(json.loads(json.dumps(store.data)))
    assert make(hook).execute(context(store, try_number=3)) == "req-new-1"
    [seen] = at_send
    assert seen[STATE_KEY]["state"] == "submitting"
    assert (seen[STATE_KEY]["fingerprint"], seen[STATE_KEY]["try_number"]) == (fingerprint(), 3)
    assert store.data == {STATE_KEY: {"request_id": "req-new-1", "fingerprint": fingerprint()}}


def killed_while_submitting(hook: FakeHook, store: DictStore, **kwargs: Any) -> None:
    """Try 1: the worker dies once its POST has reached the API."""
    hook.die_after_sending = True
    with pytest.raises(WorkerKilled):
        make(hook, **kwargs).execute(context(store, try_number=1))
    hook.die_after_sending = False


def test_a_try_killed_while_submitting_makes_the_retry_stop_instead_of_paying_again() -> None:
    hook, store = FakeHook(), DictStore()
    killed_while_submitting(hook, store)
    assert len(hook.submitted) == 1  # the API got it, and will charge for it

    with pytest.raises(AirflowFailException) as info:  # no retries are burned on it
        make(hook).execute(context(store, try_number=2))
    assert len(hook.submitted) == 1
    assert hook.polled == []
    message = str(info.value)
    for fragment in (
        "a previous try of this task was interrupted while submitting this lookup (try 1, started ",
        "the lookup may be running at Nyne and may be charged",
        "reuse_request_id='<request id>'",
        "resubmit_if_interrupted=True",
    ):
        assert fragment in message


def test_resubmit_if_interrupted_submits_once_more_on_purpose() -> None:
    hook, store = FakeHook(), DictStore()
    killed_while_submitting(hook, store)
    op = make(hook, resubmit_if_interrupted=True)
    assert op.execute(context(store, try_number=2)) == "req-new-2"
    assert len(hook.submitted) == 2
    assert store.data[STATE_KEY] == {"request_id": "req-new-2", "fingerprint": fingerprint()}


def test_reuse_request_id_resumes_an_interrupted_submission_without_paying_again() -> None:
    hook, store = FakeHook(), DictStore()
    killed_while_submitting(hook, store)
    hook.statuses["req-new-1"] = status("processing", "req-new-1")  # what the dashboard shows
    assert make(hook, reuse_request_id="req-new-1").execute(context(store, try_number=2)) == "req-new-1"
    assert len(hook.submitted) == 1
    # The intent is resolved: a later try (the task cleared, reuse_request_id gone) reconnects.
    assert store.data[STATE_KEY] == {"request_id": "req-new-1", "fingerprint": fingerprint()}
    assert make(hook).execute(context(store, try_number=3)) == "req-new-1"
    assert len(hook.submitted) == 1


def test_an_interrupted_submission_of_other_parameters_does_not_block_the_new_lookup() -> None:
    hook, store = FakeHook(), DictStore()
    killed_while_submitting(hook, store, max_results=20)
    assert make(hook, max_results=30).execute(context(store, try_number=2)) == "req-new-2"
    assert [r.max_results for r in hook.submitted] == [20, 30]


def test_an_unwritable_store_sends_nothing() -> None:
    hook, store = FakeHook(), DictStore()
    store.fail_set_at = 1
    with pytest.raises(AirflowException, match="could not record the submission") as info:
        make(hook).execute(context(store))
    assert type(info.value) is AirflowException  # nothing was sent: Airflow's retries apply
    assert "nothing was submitted" in str(info.value)
    assert hook.submitted == []


def test_an_unreadable_store_sends_nothing() -> None:
    hook, store = FakeHook(), DictStore()
    store.fail_get = True
    with pytest.raises(AirflowException, match="could not read the task state") as info:
        make(hook).execute(context(store))
    assert type(info.value) is AirflowException
    assert hook.submitted == []


def test_request_id_that_cannot_be_kept_leaves_the_intent_so_a_retry_asks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook, store = FakeHook(), DictStore()
    store.fail_set_at = 2  # the intent is written; the request id is not
    caplog.set_level(logging.WARNING)
    ctx = context(store)
    assert make(hook).execute(ctx) == "req-new-1"
    assert ctx["ti"].xcom == {"request_id": "req-new-1"}
    assert "set reuse_request_id='req-new-1'" in caplog.text
    store.fail_set_at = None
    with pytest.raises(AirflowFailException, match="interrupted while submitting"):
        make(hook).execute(context(store, try_number=2))
    assert len(hook.submitted) == 1


def test_reuse_request_id_attaches_without_submitting() -> None:
    hook = FakeHook({"req-given": status("processing", "req-given")})
    store = DictStore()
    ctx = context(store)
    assert make(hook, reuse_request_id=" req-given ").execute(ctx) == "req-given"
    assert (hook.submitted, ctx["ti"].xcom, store.data) == ([], {"request_id": "req-given"}, {})


def test_reuse_request_id_that_expired_fails_without_submitting() -> None:
    hook = FakeHook({"req-given": NyneNotFoundError("expired", status_code=404)})
    with pytest.raises(AirflowFailException, match="HTTP 404"):
        make(hook, reuse_request_id="req-given").execute(context(DictStore()))
    assert hook.submitted == []


# --- waiting ------------------------------------------------------------------------------


def test_wait_defers_on_the_trigger_with_an_absolute_deadline() -> None:
    hook = FakeHook()
    op = make(
        hook, wait_for_completion=True, timeout=600, poll_interval=1, max_poll_interval=30, nyne_conn_id="c"
    )
    ctx = context(DictStore())
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        op.execute(ctx)
    # The id was kept before deferring; a lookup submitted just now is not checked before waiting
    # (it cannot have finished: the request would only spend the rate limit).
    assert ctx["ti"].xcom == {"request_id": "req-new-1"}
    assert hook.polled == []
    trigger = info.value.trigger
    assert isinstance(trigger, NyneInteractionsTrigger)
    _, kwargs = trigger.serialize()
    assert before + 600 <= kwargs.pop("end_time") <= time.time() + 600
    assert kwargs == {
        "request_id": "req-new-1",
        "nyne_conn_id": "c",
        "poll_interval": 1.0,
        "max_poll_interval": 30.0,
        "backoff_factor": 1.5,
        "max_transient_errors": 10,
    }
    assert info.value.method_name == "execute_complete"


def test_wait_without_triggerer_polls_in_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, float]] = []

    def fake_wait(self: Any, request_id: str, deadline: float) -> dict[str, Any]:
        calls.append((request_id, deadline))
        return {"status": "success", "request_id": request_id, "total_count": 4}

    monkeypatch.setattr(waiting.NyneWaitMixin, "_wait_in_worker", fake_wait)
    op = make(FakeHook(), wait_for_completion=True, deferrable=False, timeout=600)
    before = time.time()
    summary = op.execute(context(DictStore()))
    assert summary == {"request_id": "req-new-1", "status": "completed", "total_count": 4}
    [(request_id, deadline)] = calls
    assert request_id == "req-new-1"
    assert before + 600 <= deadline <= time.time() + 600


def test_execute_complete_returns_the_summary_or_names_the_cause() -> None:
    op = make(wait_for_completion=True)
    ok = {"status": "success", "request_id": "r", "total_count": 2, "message": None, "polls": 3}
    assert op.execute_complete(context(DictStore()), ok) == {
        "request_id": "r",
        "status": "completed",
        "total_count": 2,
    }
    with pytest.raises(AirflowException, match="failed: Profile is private"):
        op.execute_complete(
            context(DictStore()),
            {"status": "failed", "request_id": "r", "message": "request r failed: Profile is private"},
        )
    with pytest.raises(AirflowFailException, match="HTTP 403"):
        op.execute_complete(
            context(DictStore()),
            {
                "status": "error",
                "request_id": "r",
                "message": "no",
                "http_status": 403,
                "error_code": "permission_denied",
            },
        )


# --- secrets ------------------------------------------------------------------------------


def test_secrets_stay_out_of_xcom_fields_store_and_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    conn = {"conn_type": "nyne", "login": KEY, "password": SECRET, "host": "http://127.0.0.1:1"}
    monkeypatch.setenv("AIRFLOW_CONN_NYNE_SECRETS", json.dumps(conn))
    caplog.set_level(logging.DEBUG)
    op = NyneSubmitInteractionsOperator(
        task_id="t", username="nasa", interaction_type="followers", nyne_conn_id="nyne_secrets"
    )
    store = DictStore()
    ctx = context(store)
    with respx.mock(base_url="http://127.0.0.1:1") as router:
        route = router.post("/person/interactions").mock(
            return_value=httpx.Response(
                202, json={"success": True, "data": {"request_id": "req-9", "status": "queued"}}
            )
        )
        assert op.execute(ctx) == "req-9"
    sent = route.calls.last.request
    assert (sent.headers["X-API-Key"], sent.headers["X-API-Secret"]) == (KEY, SECRET)
    visible = (
        json.dumps(
            [
                ctx["ti"].xcom,
                store.data,
                {f: getattr(op, f) for f in op.template_fields},
                repr(op),
                repr(op.hook),
            ]
        )
        + caplog.text
    )
    assert KEY not in visible
    assert SECRET not in visible


# --- credit guard ---------------------------------------------------------------------------------

from airflow_provider_nyne.utils.credits import (  # noqa: E402
    CreditGuardError,
    CreditHold,
    CreditLimitError,
    Reservation,
    ReservationKey,
)


class FakeReservations:
    """Stands in for the api-server's credit guard: a budget shared by the operators given it."""

    def __init__(self, error: CreditGuardError | None = None) -> None:
        self.reserved: dict[ReservationKey, str] = {}
        self.released: list[ReservationKey] = []
        self.budgets: list[int] = []
        self.error = error

    def reserve(self, key: ReservationKey, budget: int) -> CreditHold:
        if self.error is not None:
            raise self.error
        self.budgets.append(budget)
        repeated = key in self.reserved
        if not repeated and 3 * (len(self.reserved) + 1) > budget:
            raise CreditLimitError(Reservation(False, None, 3 * len(self.reserved), budget).refusal(key))
        rid = self.reserved.setdefault(key, f"res-{len(self.reserved) + 1}")
        return CreditHold(key, Reservation(True, rid, 3 * len(self.reserved), budget, repeated=repeated))

    def release(self, hold: CreditHold) -> bool:
        self.released.append(hold.key)
        return self.reserved.pop(hold.key, None) is not None


class UsageHook(FakeHook):
    def __init__(self, balance: Any = 100) -> None:
        super().__init__()
        self.balance = balance
        self.usage_calls = 0

    def get_usage(self) -> dict[str, Any]:
        self.usage_calls += 1
        return {"credits_remaining": self.balance} if self.balance is not None else {"plan": "x"}


def guarded(hook: FakeHook, reservations: Any, **kwargs: Any) -> NyneSubmitInteractionsOperator:
    op = make(hook, **kwargs)
    op.__dict__["_credit_reservations"] = reservations
    return op


def mapped_context(map_index: int, store: DictStore | None = None) -> dict[str, Any]:
    ctx = context(store or DictStore())
    ctx["ti"].map_index = map_index
    return ctx


def test_a_budget_reserves_before_the_intent_and_the_post_and_refuses_past_it() -> None:
    hook, guard = FakeHook(), FakeReservations()
    order: list[str] = []
    hook.on_send = lambda: order.append("post")
    for index in range(3):
        op = guarded(hook, guard, credit_budget="6", username=f"user{index}")
        if index < 2:
            assert op.execute(mapped_context(index)) == f"req-new-{index + 1}"
            continue
        with pytest.raises(AirflowFailException) as info:
            op.execute(mapped_context(index))
    message = str(info.value)
    assert "credit budget of this DAG run for connection 'nyne_default' is 6 credits" in message
    assert "6 are reserved by its other lookups and 0 left" in message
    assert "Raise credit_budget" in message
    assert [r.username for r in hook.submitted] == ["user0", "user1"]  # the third sent nothing
    assert guard.budgets == [6, 6, 6]  # the rendered template, as a number


def test_a_retry_uses_its_own_reservation_instead_of_taking_another() -> None:
    hook, guard, store = FakeHook(), FakeReservations(), DictStore()
    hook.statuses["req-new-1"] = status("failed", "req-new-1", error="private")
    guarded(hook, guard, credit_budget=3).execute(mapped_context(0, store))
    # The lookup failed (free); the retry submits again on the same reservation: the budget allows it.
    assert guarded(hook, guard, credit_budget=3).execute(mapped_context(0, store)) == "req-new-2"
    assert len(guard.reserved) == 1
    assert len(hook.submitted) == 2


@pytest.mark.parametrize(
    ("error", "released"),
    [
        pytest.param(NyneCreditsError("out", status_code=402), True, id="402-not-accepted"),
        pytest.param(
            NyneValidationError("bad", status_code=400, code="invalid_type"), True, id="400-not-accepted"
        ),
        pytest.param(NyneServerError("busy", status_code=503), True, id="503-not-accepted"),
        pytest.param(NyneTransportError("read timeout", request_sent=True), False, id="ambiguous-kept"),
        pytest.param(NyneServerError("boom", status_code=500), False, id="500-kept"),
    ],
)
def test_a_reservation_is_given_back_only_when_the_submission_proves_not_accepted(
    error: NyneError, released: bool
) -> None:
    hook, guard = FakeHook(), FakeReservations()
    hook.submit_error = error
    with pytest.raises(AirflowException):
        guarded(hook, guard, credit_budget=30).execute(mapped_context(0))
    assert bool(guard.released) is released
    assert len(guard.reserved) == (0 if released else 1)


def test_a_rate_limited_submission_keeps_its_reservation_while_it_defers() -> None:
    hook, guard = FakeHook(), FakeReservations()
    hook.submit_error = NyneRateLimitError("slow down", status_code=429, retry_after=5)
    ctx = mapped_context(0)
    with pytest.raises(TaskDeferred):
        guarded(hook, guard, credit_budget=3).execute(ctx)
    assert guard.released == []
    hook.submit_error = None
    assert (
        guarded(hook, guard, credit_budget=3).execute_after_rate_limit(ctx, None, time.time()) == "req-new-1"
    )
    assert len(guard.reserved) == 1


def test_without_a_budget_the_guard_is_never_asked() -> None:
    hook = FakeHook()
    guard = FakeReservations(CreditGuardError("must not be called", retryable=False))
    assert guarded(hook, guard, credit_budget="None").execute(mapped_context(0)) == "req-new-1"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(CreditGuardError("unreachable", retryable=True), AirflowException, id="retryable"),
        pytest.param(
            CreditGuardError("404: install the provider", retryable=False), AirflowFailException, id="setting"
        ),
    ],
)
def test_a_guard_that_cannot_decide_sends_nothing(error: CreditGuardError, expected: type[Exception]) -> None:
    hook, store = FakeHook(), DictStore()
    with pytest.raises(AirflowException) as info:
        guarded(hook, FakeReservations(error), credit_budget=30).execute(mapped_context(0, store))
    assert type(info.value) is expected
    assert "Nothing was submitted" in str(info.value)
    assert hook.submitted == []
    assert store.data == {}  # no intent either: a retry starts clean


@pytest.mark.parametrize(
    ("balance", "minimum", "sent"),
    [
        pytest.param(13, 10, True, id="stays-at-or-above"),
        pytest.param(12, 10, False, id="would-drop-below"),
        pytest.param("40", 10, True, id="numeric-string"),
    ],
)
def test_a_minimum_balance_is_read_from_usage_before_submitting(
    balance: Any, minimum: int, sent: bool
) -> None:
    hook = UsageHook(balance)
    op = make(hook, min_credit_balance=minimum)
    if sent:
        assert op.execute(context(DictStore())) == "req-new-1"
    else:
        with pytest.raises(AirflowFailException, match=r"balance is 12 credits; this lookup may cost 3"):
            op.execute(context(DictStore()))
    assert hook.usage_calls == 1
    assert len(hook.submitted) == (1 if sent else 0)


def test_a_usage_answer_without_a_balance_sends_nothing() -> None:
    hook = UsageHook(None)
    with pytest.raises(AirflowFailException, match="without a credit balance"):
        make(hook, min_credit_balance=5).execute(context(DictStore()))
    assert hook.submitted == []


def test_credit_arguments_are_checked_when_parsed_and_once_rendered() -> None:
    with pytest.raises(ValueError, match="credit_budget must be a whole number"):
        make(credit_budget=-1)
    with pytest.raises(ValueError, match="min_credit_balance must be a whole number"):
        make(min_credit_balance="plenty")
    op = make(credit_budget="{{ params.budget }}")  # checked when rendered
    op.credit_budget = "a lot"  # what the template rendered to
    with pytest.raises(AirflowFailException, match="credit_budget must be a whole number"):
        op.execute(context(DictStore()))
    assert op.hook.submitted == []


def test_no_signing_secret_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__NYNE__CALLBACK_SECRET", raising=False)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_INTERNAL_URL", "http://127.0.0.1:9")
    hook = FakeHook()
    hook.settings = type("Settings", (), {"callback_secret": None})()
    with pytest.raises(AirflowFailException, match=r"needs a signing secret: set \[nyne\] callback_secret"):
        make(hook, credit_budget=9).execute(mapped_context(0))
    assert hook.submitted == []


# --- on_kill --------------------------------------------------------------------------------------


def kill_log(op: Any, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    op.on_kill()
    return " ".join(line for line in capsys.readouterr().out.splitlines() if "[warning" in line)


def test_killed_while_waiting_in_the_worker_says_a_retry_reconnects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hook, store = FakeHook(), DictStore()
    op = make(hook, wait_for_completion=True)
    with pytest.raises(TaskDeferred):
        op.execute(context(store))
    message = kill_log(op, capsys)
    assert "Nyne request req-new-1 runs" in message
    assert "charged 3 credits if it completes with results" in message
    assert (
        f"reconnects to it instead of paying again (its id is kept in the task state '{STATE_KEY}')"
        in message
    )
    assert store.data[STATE_KEY]["request_id"] == "req-new-1"  # the record is left for the retry


def test_killed_when_the_id_could_not_be_kept_says_how_to_attach(capsys: pytest.CaptureFixture[str]) -> None:
    store = DictStore()
    store.fail_set_at = 2  # the intent is written; the request id is not
    op = make(FakeHook())
    op.execute(context(store))
    message = kill_log(op, capsys)
    assert "Nothing keeps its id across tries here" in message
    assert "set reuse_request_id='req-new-1' to attach to this one" in message


def test_killed_while_the_post_is_in_flight_says_the_retry_stops(capsys: pytest.CaptureFixture[str]) -> None:
    hook, store = FakeHook(), DictStore()
    op = make(hook)
    messages: list[str] = []
    hook.on_send = lambda: messages.append(kill_log(op, capsys))  # killed as the POST leaves
    op.execute(context(store))
    [message] = messages
    assert "killed while submitting a Nyne lookup, before the answer arrived" in message
    assert "set reuse_request_id, or set resubmit_if_interrupted=True" in message


def test_killed_after_attaching_says_a_retry_attaches_again(capsys: pytest.CaptureFixture[str]) -> None:
    hook = FakeHook({"req-old": status("processing", "req-old")})
    op = make(hook, reuse_request_id="req-old")
    op.execute(context(DictStore()))
    message = kill_log(op, capsys)
    assert "Nyne request req-old runs" in message
    assert "a retry attaches to it again" in message


def test_killed_before_the_post_sends_nothing_and_frees_what_it_held() -> None:
    hook, guard, store = FakeHook(), FakeReservations(), DictStore()
    op = guarded(hook, guard, credit_budget=3)
    real_hold = op._hold_credits

    def hold_then_killed(ctx: Any, fingerprint: str) -> Any:
        held = real_hold(ctx, fingerprint)
        op.on_kill()  # SIGTERM arrives while the guard answers; the process runs on for a moment
        return held

    op._hold_credits = hold_then_killed  # type: ignore[method-assign]
    with pytest.raises(AirflowException, match="killed before its lookup was sent; nothing was submitted"):
        op.execute(mapped_context(0, store))
    assert hook.submitted == []
    assert STATE_KEY not in store.data  # no intent left: a retry submits without asking
    assert guard.reserved == {}


def test_a_killed_try_that_finishes_in_its_last_seconds_keeps_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_nyne.utils import request_state

    class VariableLike(request_state.RequestStateStore):
        """The Variable fallback of Airflow 3.1/3.2: deleted when the task succeeds."""

        durable = True
        kind = "variable"

        def __init__(self) -> None:
            self.value: Any = None
            self.released = False

        def read(self) -> Any:
            return self.value

        def write(self, value: dict[str, Any]) -> None:
            self.value = value

        def release(self) -> None:
            self.released = True

    class KilledWhileChecking(FakeHook):
        def get_interactions_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
            op.on_kill()  # SIGTERM while the status is read; the answer still arrives: completed
            return super().get_interactions_status(request_id, deadline=deadline)

    store = VariableLike()
    store.value = {"request_id": "req-old", "fingerprint": fingerprint()}  # a previous try's lookup
    monkeypatch.setattr(request_state, "request_state_store", lambda context: store)
    hook = KilledWhileChecking({"req-old": completed("req-old")})
    op = make(hook, wait_for_completion=True, deferrable=False)
    assert op.execute(context())["request_id"] == "req-old"
    assert store.released is False
    assert store.value["request_id"] == "req-old"
