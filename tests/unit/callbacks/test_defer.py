from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from airflow_provider_nyne._compat import AirflowFailException, TaskDeferred
from airflow_provider_nyne.callbacks.config import CallbackConfigError
from airflow_provider_nyne.callbacks.defer import (
    CORRELATION_XCOM_KEY,
    callback_request,
    check_wait_mode,
    continue_with_callback,
    plan_callback,
    resolve_asset,
    submit_and_defer_on_callback,
    submit_with_asset_callback,
)
from airflow_provider_nyne.callbacks.tokens import decode_correlation_id, make_token
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger

BASE = "https://airflow.example.com"


class FakeTI:
    def __init__(self, map_index: int = -1) -> None:
        self.dag_id = "dag"
        self.task_id = "submit"
        self.run_id = "manual__2026-01-01T00:00:00+00:00"
        self.map_index = map_index
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class FakeTask:
    def __init__(self) -> None:
        self.log = logging.getLogger("fake-task")
        self.deferred: dict[str, Any] | None = None

    def defer(self, *, trigger: Any, method_name: str, timeout: Any = None) -> None:
        self.deferred = {"trigger": trigger, "method_name": method_name, "timeout": timeout}
        raise TaskDeferred(trigger=trigger, method_name=method_name, timeout=timeout)


def _set_conn(
    monkeypatch: pytest.MonkeyPatch, conn_id: str = "nyne_default", secret: str | None = "conn-secret"
) -> None:
    extra = {"callback_secret": secret} if secret else {}
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {"conn_type": "nyne", "login": "k", "password": "p", "host": "http://127.0.0.1:9", "extra": extra}
        ),
    )


@pytest.fixture(autouse=True)
def _clean_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CALLBACK_BASE_URL", "CALLBACK_SECRET", "CALLBACK_INTERNAL_URL"):
        monkeypatch.delenv(f"AIRFLOW__NYNE__{key}", raising=False)


@pytest.fixture
def no_http(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    submitted: list[Any] = []

    def submit(self: NyneHook, request: Any) -> str:
        submitted.append(request)
        return "req-42"

    monkeypatch.setattr(NyneHook, "submit_interactions", submit)
    return submitted


def test_wait_mode_is_checked() -> None:
    assert check_wait_mode("callback") == "callback"
    with pytest.raises(ValueError, match="poll, callback"):
        check_wait_mode("push")


def test_missing_base_url_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, no_http: list[Any]
) -> None:
    _set_conn(monkeypatch)
    ti = FakeTI()
    with pytest.raises(AirflowFailException, match="callback_base_url"):
        submit_and_defer_on_callback(
            FakeTask(),
            {"ti": ti},
            NyneHook(),
            {"social_media_url": "https://x.com/nasa", "type": "followers"},
            timeout=60,
        )
    assert no_http == []
    assert ti.xcoms == {}


def test_missing_secret_is_refused_naming_both_places(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, secret=None)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)
    with pytest.raises(
        CallbackConfigError,
        match=r"callback_secret extra of connection 'nyne_default'.*\[nyne\] callback_secret",
    ):
        plan_callback({"ti": FakeTI()}, NyneHook(), wait=True)


@pytest.mark.parametrize(
    ("conn_secret", "config_secret", "used"),
    [
        pytest.param("conn-secret", "config-secret", "conn-secret", id="connection-wins"),
        pytest.param(None, "config-secret", "config-secret", id="config-fallback"),
    ],
)
def test_secret_precedence(
    monkeypatch: pytest.MonkeyPatch, conn_secret: str | None, config_secret: str, used: str
) -> None:
    _set_conn(monkeypatch, secret=conn_secret)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", config_secret)
    plan = plan_callback({"ti": FakeTI()}, NyneHook(), wait=True)
    assert plan.url.endswith("/" + make_token(used, plan.correlation_id))


def test_plan_encodes_the_task_instance_and_hides_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, conn_id="nyne_other")
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE + "/")
    plan = plan_callback({"ti": FakeTI(map_index=2)}, NyneHook("nyne_other"), wait=True)
    target = decode_correlation_id(plan.correlation_id)
    assert (target.dag_id, target.task_id, target.map_index, target.wait, target.conn_id) == (
        "dag",
        "submit",
        2,
        True,
        "nyne_other",
    )
    assert plan.url.startswith(f"{BASE}/nyne/v1/callback/{plan.correlation_id}/")
    assert plan.url not in repr(plan)


class _OutletTask:
    def __init__(self, *uris: str) -> None:
        from airflow.sdk import Asset

        self.outlets = [Asset(uri=uri) for uri in uris]


@pytest.mark.parametrize(
    ("conn_secret", "asset", "outlets", "allowed"),
    [
        pytest.param(
            "conn-secret", "nyne://interactions/twitter/nasa/followers", (), True, id="conn-nyne-asset"
        ),
        pytest.param("conn-secret", "s3://finance/ledger.csv", (), False, id="conn-foreign-asset"),
        pytest.param(
            "conn-secret", "s3://finance/ledger.csv", ("s3://finance/ledger.csv",), True, id="conn-own-outlet"
        ),
        pytest.param(None, "s3://finance/ledger.csv", (), True, id="deployment-secret-any-asset"),
    ],
)
def test_a_connection_secret_signs_only_nyne_assets_or_outlets_checked_before_spending(
    monkeypatch: pytest.MonkeyPatch,
    no_http: list[Any],
    conn_secret: str | None,
    asset: str,
    outlets: tuple[str, ...],
    allowed: bool,
) -> None:
    _set_conn(monkeypatch, secret=conn_secret)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", "config-secret")
    ti = FakeTI()
    context = {"ti": ti, "task": _OutletTask(*outlets)}
    request = {"social_media_url": "https://x.com/nasa", "type": "followers"}
    if allowed:
        assert submit_with_asset_callback(context, NyneHook(), request, asset=asset) == "req-42"
        return
    with pytest.raises(
        AirflowFailException, match=r"nyne:// Assets or the task's outlets.*\[nyne\] callback_secret"
    ):
        submit_with_asset_callback(context, NyneHook(), request, asset=asset)
    assert no_http == []
    assert ti.xcoms == {}


def test_the_url_is_recorded_before_the_submission(monkeypatch: pytest.MonkeyPatch) -> None:
    # The receiver accepts a callback only on the URL the task recorded; Nyne may call back
    # before the API's answer reaches the task.
    _set_conn(monkeypatch)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)
    ti = FakeTI()
    seen: list[dict[str, Any]] = []

    def submit(self: NyneHook, request: Any) -> str:
        seen.append(dict(ti.xcoms))
        return "req-42"

    monkeypatch.setattr(NyneHook, "submit_interactions", submit)
    submit_with_asset_callback(
        {"ti": ti}, NyneHook(), {"social_media_url": "https://x.com/nasa", "type": "followers"}
    )
    assert list(seen[0]) == [CORRELATION_XCOM_KEY]
    assert ti.xcoms["request_id"] == "req-42"


def test_deferred_mode_submits_with_the_url_pushes_xcoms_and_defers(
    monkeypatch: pytest.MonkeyPatch, no_http: list[Any]
) -> None:
    _set_conn(monkeypatch)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)
    ti, task = FakeTI(), FakeTask()
    before = time.time()
    with pytest.raises(TaskDeferred):
        submit_and_defer_on_callback(
            task,
            {"ti": ti},
            NyneHook(),
            {
                "social_media_url": "https://x.com/nasa",
                "type": "followers",
                "callback_url": "https://ignored.example",
            },
            timeout=600,
            mailbox_interval=30,
        )
    (request,) = no_http
    assert isinstance(request, InteractionRequest)
    assert request.callback_url is not None
    assert request.callback_url.startswith(BASE + "/nyne/v1/callback/")
    assert ti.xcoms["request_id"] == "req-42"
    assert request.callback_url.split("/")[-2] == ti.xcoms[CORRELATION_XCOM_KEY]
    assert task.deferred is not None
    trigger = task.deferred["trigger"]
    assert isinstance(trigger, NyneCallbackTrigger)
    assert (trigger.request_id, trigger.correlation_id, trigger.mailbox_interval) == (
        "req-42",
        ti.xcoms[CORRELATION_XCOM_KEY],
        30.0,
    )
    assert before + 600 <= trigger.end_time <= time.time() + 600
    assert task.deferred["timeout"].total_seconds() > 600  # Airflow's own timeout is only a safety net


def test_asset_mode_submits_and_returns_without_deferring(
    monkeypatch: pytest.MonkeyPatch, no_http: list[Any]
) -> None:
    _set_conn(monkeypatch)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)
    ti = FakeTI()
    rid = submit_with_asset_callback(
        {"ti": ti}, NyneHook(), {"social_media_url": "https://x.com/NASA", "type": "followers"}
    )
    assert rid == "req-42"
    target = decode_correlation_id(ti.xcoms[CORRELATION_XCOM_KEY])
    assert target.wait is False
    assert target.asset_uri == "nyne://interactions/twitter/nasa/followers"


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        pytest.param(None, (None, None), id="none"),
        pytest.param(False, (None, None), id="false"),
        pytest.param("s3://bucket/key", ("s3://bucket/key", "s3://bucket/key"), id="uri-string"),
        pytest.param("s3://bucket", ("s3://bucket", "s3://bucket/"), id="uri-string-normalised"),
        pytest.param(
            True, ("nyne://interactions/twitter/tweet/1234567890/replies",) * 2, id="default-replies"
        ),
    ],
)
def test_resolve_asset(asset: Any, expected: tuple[str | None, str | None]) -> None:
    request = InteractionRequest.create("https://x.com/nasa/status/1234567890", "replies")
    assert resolve_asset(asset, request) == expected


def test_resolve_asset_object_keeps_name_and_uri() -> None:
    from airflow.sdk import Asset

    assert resolve_asset(Asset(name="landed", uri="s3://b/k"), None) == ("landed", "s3://b/k")


class FakeSubmit(FakeTask):
    """What callback_request/continue_with_callback read from the submit operator."""

    def __init__(self, *, wait: bool, wait_mode: str = "callback", **attrs: Any) -> None:
        super().__init__()
        self.wait_mode = wait_mode
        self.wait_for_completion = wait
        self.callback_asset = attrs.get("callback_asset")
        self.reuse_request_id = attrs.get("reuse_request_id")
        self.timeout = 60.0
        self.hook = NyneHook()
        self.nyne_conn_id = "nyne_default"


def _request(**fields: Any) -> InteractionRequest:
    return InteractionRequest.create("https://x.com/nasa", "followers", **fields)


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("task", "has_plan"),
    [
        pytest.param(FakeSubmit(wait=True, wait_mode="poll"), False, id="poll-mode-untouched"),
        pytest.param(
            FakeSubmit(wait=True, reuse_request_id="req-9"), False, id="reuse-falls-back-to-polling"
        ),
        pytest.param(FakeSubmit(wait=True), True, id="deferred"),
        pytest.param(FakeSubmit(wait=False), True, id="asset"),
    ],
)
def test_callback_request(task: FakeSubmit, has_plan: bool) -> None:
    request, plan = callback_request(task, {"ti": FakeTI()}, _request())
    assert (plan is not None) == has_plan
    if plan is None:
        assert request.callback_url is None
        return
    assert request.callback_url == plan.url
    assert plan.target.wait is task.wait_for_completion
    expected_asset = None if task.wait_for_completion else "nyne://interactions/twitter/nasa/followers"
    assert plan.target.asset_uri == expected_asset


@pytest.mark.usefixtures("configured")
def test_callback_url_and_callback_mode_exclude_each_other() -> None:
    with pytest.raises(AirflowFailException, match="exclude each other"):
        callback_request(
            FakeSubmit(wait=True), {"ti": FakeTI()}, _request(callback_url="https://elsewhere.example/cb")
        )


@pytest.mark.usefixtures("configured")
def test_continue_in_asset_mode_returns_the_request_id() -> None:
    task, ti = FakeSubmit(wait=False), FakeTI()
    _, plan = callback_request(task, {"ti": ti}, _request())
    assert plan is not None
    assert continue_with_callback(task, {"ti": ti}, "req-1", plan) == "req-1"
    assert ti.xcoms[CORRELATION_XCOM_KEY] == plan.correlation_id
    assert task.deferred is None


@pytest.mark.usefixtures("configured")
def test_continue_in_deferred_mode_defers_without_asking_the_api() -> None:
    task, ti = FakeSubmit(wait=True), FakeTI()
    _, plan = callback_request(task, {"ti": ti}, _request())
    assert plan is not None
    with pytest.raises(TaskDeferred):
        continue_with_callback(task, {"ti": ti}, "req-1", plan)
    assert task.deferred is not None
    assert isinstance(task.deferred["trigger"], NyneCallbackTrigger)


@pytest.mark.usefixtures("configured")
def test_continue_with_a_reconnected_completed_request_returns_the_summary() -> None:
    from airflow_provider_nyne.client.models import JobStatus

    task, ti = FakeSubmit(wait=True), FakeTI()
    _, plan = callback_request(task, {"ti": ti}, _request())
    assert plan is not None
    done = JobStatus.from_api(
        {"request_id": "req-1", "status": "completed", "result": {"interactions": [{}], "total_count": 1}}
    )
    summary = continue_with_callback(task, {"ti": ti}, "req-1", plan, status=done)
    assert summary == {"request_id": "req-1", "status": "completed", "total_count": 1}
    assert task.deferred is None
