from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from airflow_provider_nyne.callbacks import store
from airflow_provider_nyne.callbacks.receiver import NOT_FOUND_BODY, create_app
from airflow_provider_nyne.callbacks.service import CallbackService, TaskSubmission
from airflow_provider_nyne.callbacks.tokens import (
    TOKEN_HEADER,
    CallbackTarget,
    callback_path,
    encode_correlation_id,
    make_token,
)
from tests.unit.callbacks.conftest import SECRET, FakeBackend, task_key

ASSET_TARGET = CallbackTarget(
    "producer",
    "submit",
    "run-1",
    asset_name="nyne://interactions/twitter/nasa/followers",
    asset_uri="nyne://interactions/twitter/nasa/followers",
)
WAIT_TARGET = CallbackTarget("producer", "submit", "run-1", wait=True)


def _path(target: CallbackTarget, secret: str = SECRET) -> str:
    cid = encode_correlation_id(target)
    return callback_path(cid, make_token(secret, cid)).removeprefix("/nyne")


def _data(rid: str = "req-1", status: str = "completed", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"request_id": rid, "status": status}
    if status == "completed":
        data.update(
            completed=True,
            result={
                "interaction_type": "followers",
                "platform": "twitter",
                "target": {"username": "nasa"},
                "interactions": [{"username": "a"}, {"username": "b"}],
                "total_count": 2,
            },
        )
    if status == "failed":
        data["error"] = "Profile is private"
    data.update(extra)
    return data


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "data": data, "timestamp": "2026-01-01T00:00:00Z"}


def _service(backend: FakeBackend, **kwargs: Any) -> CallbackService:
    options: dict[str, Any] = {
        "max_body_bytes": 256 * 1024,
        "retention": timedelta(days=7),
        "resume": True,
        "config_secret": lambda: None,
        "enabled": True,
        **kwargs,
    }
    return CallbackService(backend, **options)


@pytest.fixture
def service(fake_backend: FakeBackend) -> CallbackService:
    return _service(fake_backend)


@pytest.fixture
def client(service: CallbackService, fake_backend: FakeBackend) -> Iterator[TestClient]:
    # Both example task instances have submitted req-1 with their own URL, unless a test says otherwise.
    fake_backend.submitted(ASSET_TARGET, "req-1")
    with TestClient(create_app(service)) as test_client:
        yield test_client


def _row(backend: FakeBackend, rid: str = "req-1", target: CallbackTarget = ASSET_TARGET) -> Any:
    with Session(backend.engine()) as session:
        return store.get_record(session, encode_correlation_id(target), rid)


def _rows(backend: FakeBackend) -> list[Any]:
    with Session(backend.engine()) as session:
        return list(session.execute(store.callbacks_table.select()).all())


# Inert until configured ------------------------------------------------------------------


def test_unconfigured_receiver_answers_404_everywhere_and_touches_nothing(fake_backend: FakeBackend) -> None:
    service = CallbackService(fake_backend, enabled=False)
    with TestClient(create_app(service)) as client:
        answers = [
            client.get("/health"),
            client.get("/health?db=1"),
            client.post(_path(ASSET_TARGET), json=_data()),
            client.get(_path(ASSET_TARGET), params={"request_id": "req-1"}),
            client.put(_path(ASSET_TARGET), json=_data()),
        ]
    assert [(a.status_code, a.json()) for a in answers] == [(404, NOT_FOUND_BODY)] * 5
    assert fake_backend.calls == 0
    assert _rows(fake_backend) == []


def test_configured_means_callback_base_url_is_set(
    fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = CallbackService(fake_backend)
    monkeypatch.delenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", raising=False)
    assert service.enabled is False
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", "https://airflow.example.com")
    assert service.enabled is True


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health?db=1").status_code == 200


# Accepting the callback a URL was issued for ---------------------------------------------


@pytest.mark.parametrize(
    "wrap", [pytest.param(_envelope, id="api-envelope"), pytest.param(lambda d: d, id="bare-data")]
)
def test_valid_callback_is_stored_dispatched_and_acknowledged(
    client: TestClient, fake_backend: FakeBackend, wrap: Any
) -> None:
    response = client.post(_path(ASSET_TARGET), json=wrap(_data()))
    assert response.status_code == 200
    assert response.json() == {
        "accepted": True,
        "request_id": "req-1",
        "duplicate": False,
        "dispatch": "asset_event:1",
    }
    row = _row(fake_backend)
    assert row is not None
    assert row.dispatch == "asset_event:1"
    assert row.payload["result"]["total_count"] == 2
    ((target, extra),) = fake_backend.asset_events
    assert target == ASSET_TARGET
    assert extra["request_id"] == "req-1"
    assert extra["source"] == "nyne_callback"
    assert extra["total_count"] == 2
    assert extra["target_username"] == "nasa"
    assert extra["payload_ref"] == {
        "table": "nyne_callback",
        "request_id": "req-1",
        "correlation_id": encode_correlation_id(ASSET_TARGET),
    }
    assert "interactions" not in json.dumps(extra)  # the result stays in the table


def test_same_delivery_five_times_dispatches_once(client: TestClient, fake_backend: FakeBackend) -> None:
    answers = [client.post(_path(ASSET_TARGET), json=_envelope(_data())) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True, True]
    assert len(fake_backend.asset_events) == 1
    row = _row(fake_backend)
    assert row is not None
    assert row.deliveries == 5


# Defect: one valid URL could claim another task's request id ------------------------------

VICTIMS = [
    pytest.param(
        CallbackTarget("victim", "submit", "run-v", asset_name="nyne://v", asset_uri="nyne://v"),
        id="asset-victim",
    ),
    pytest.param(CallbackTarget("victim", "submit", "run-v", wait=True), id="deferred-victim"),
]
ATTACKERS = [
    pytest.param(ASSET_TARGET, id="asset-url"),
    pytest.param(CallbackTarget("attacker", "submit", "run-a", wait=True), id="deferred-url"),
]


@pytest.mark.parametrize("attacker", ATTACKERS)
@pytest.mark.parametrize("victim", VICTIMS)
def test_a_valid_url_cannot_claim_another_tasks_request(
    client: TestClient, fake_backend: FakeBackend, attacker: CallbackTarget, victim: CallbackTarget
) -> None:
    fake_backend.submitted(attacker, "req-attacker")
    fake_backend.submitted(victim, "req-victim")
    # The victim's request id is public (XCom, UI, Asset event extras); the attacker's URL is genuine.
    stolen = client.post(_path(attacker), json=_envelope(_data("req-victim")))
    assert stolen.status_code == 403
    assert stolen.json()["detail"] == f"request req-victim was not submitted by {attacker.task_label()}"
    assert _rows(fake_backend) == []
    assert (fake_backend.asset_events, fake_backend.resumes) == ([], [])
    # The victim's genuine deliveries are untouched by it.
    genuine = client.post(_path(victim), json=_envelope(_data("req-victim")))
    assert genuine.status_code == 200
    assert genuine.json()["duplicate"] is False
    if victim.wait:
        assert [(t, rid) for t, rid, _ in fake_backend.resumes] == [(victim, "req-victim")]
    else:
        assert [t for t, _ in fake_backend.asset_events] == [victim]


def test_the_same_request_on_two_genuine_urls_is_stored_for_each(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    other = CallbackTarget("producer", "submit", "run-2", asset_name="nyne://a", asset_uri="nyne://a")
    fake_backend.submitted(other, "req-1")
    assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 200
    assert client.post(_path(other), json=_data()).status_code == 200
    assert len(_rows(fake_backend)) == 2
    assert len(fake_backend.asset_events) == 2


def test_request_not_recorded_yet_is_503_then_accepted_once_recorded(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    fake_backend.submitted(WAIT_TARGET, None)  # URL recorded, the API's answer not yet
    early = client.post(_path(WAIT_TARGET), json=_data("req-9"))
    assert early.status_code == 503
    assert early.headers["retry-after"] == "5"
    assert "deliver again" in early.json()["detail"]
    assert _rows(fake_backend) == []
    fake_backend.submitted(WAIT_TARGET, "req-9")
    assert client.post(_path(WAIT_TARGET), json=_data("req-9")).status_code == 200


@pytest.mark.parametrize(
    ("recorded", "detail"),
    [
        pytest.param("absent", "no task instance", id="no-task-instance"),
        pytest.param("other-url", "not the one", id="task-sent-another-url"),
    ],
)
def test_url_the_task_instance_did_not_send_is_refused(
    client: TestClient, fake_backend: FakeBackend, recorded: str, detail: str
) -> None:
    target = CallbackTarget("d", "t", "r", wait=True)
    if recorded == "other-url":
        sent = CallbackTarget("d", "t", "r", wait=True, conn_id="nyne_other")
        fake_backend.submissions[task_key(target)] = TaskSubmission("req-1", encode_correlation_id(sent))
    response = client.post(_path(target), json=_data())
    assert response.status_code == 403
    assert detail in response.json()["detail"]
    assert _rows(fake_backend) == []
    assert fake_backend.resumes == []


# Defect: a connection's secret signed for the whole deployment ----------------------------

FINANCE = CallbackTarget(
    "tenant_dag",
    "submit",
    "run-t",
    asset_name="s3://finance/ledger.csv",
    asset_uri="s3://finance/ledger.csv",
    conn_id="nyne_tenant",
)


@pytest.fixture
def tenant(fake_backend: FakeBackend) -> FakeBackend:
    fake_backend.secrets["nyne_tenant"] = "tenant-secret"
    return fake_backend


def test_connection_secret_cannot_reach_a_task_that_uses_another_connection(
    client: TestClient, tenant: FakeBackend
) -> None:
    # The victim task uses nyne_default and sent its own URL; the tenant mints one naming itself.
    forged = CallbackTarget("producer", "submit", "run-1", wait=True, conn_id="nyne_tenant")
    response = client.post(_path(forged, "tenant-secret"), json=_data())
    assert response.status_code == 403
    assert _rows(tenant) == []
    assert tenant.resumes == []
    assert client.get(_path(forged, "tenant-secret"), params={"request_id": "req-1"}).status_code == 204


def test_connection_secret_cannot_record_events_on_other_assets(
    client: TestClient, tenant: FakeBackend
) -> None:
    tenant.submitted(FINANCE, "req-t")  # even the task's own URL, recorded by the task itself
    response = client.post(_path(FINANCE, "tenant-secret"), json=_data("req-t"))
    assert response.status_code == 403
    assert "nyne:// Assets or the submitting task's outlets" in response.json()["detail"]
    assert tenant.asset_events == []
    assert _rows(tenant) == []


def test_connection_secret_signs_for_its_tasks_own_outlets_and_nyne_assets(
    client: TestClient, tenant: FakeBackend
) -> None:
    tenant.submitted(FINANCE, "req-t")
    tenant.outlets[("tenant_dag", "submit")] = [("s3://finance/ledger.csv", "s3://finance/ledger.csv")]
    assert client.post(_path(FINANCE, "tenant-secret"), json=_data("req-t")).status_code == 200
    own = CallbackTarget(
        "tenant_dag", "other", "run-t", asset_name="nyne://x", asset_uri="nyne://x", conn_id="nyne_tenant"
    )
    tenant.submitted(own, "req-o")
    assert client.post(_path(own, "tenant-secret"), json=_data("req-o")).status_code == 200
    assert len(tenant.asset_events) == 2


def test_deployment_secret_may_name_any_asset_the_task_sent(fake_backend: FakeBackend) -> None:
    fake_backend.secrets.clear()
    target = CallbackTarget("d", "t", "r", asset_name="s3://b/k", asset_uri="s3://b/k", conn_id="nyne_other")
    fake_backend.submitted(target, "req-1")
    with TestClient(create_app(_service(fake_backend, config_secret=lambda: "config-secret"))) as client:
        assert client.post(_path(target, "config-secret"), json=_data()).status_code == 200
    assert fake_backend.secret_lookups == ["nyne_other"]


def test_connection_secret_wins_over_config_secret(fake_backend: FakeBackend) -> None:
    fake_backend.secrets = {"nyne_default": "conn-secret"}
    fake_backend.submitted(ASSET_TARGET, "req-1")
    with TestClient(create_app(_service(fake_backend, config_secret=lambda: "config-secret"))) as client:
        assert client.post(_path(ASSET_TARGET, "config-secret"), json=_data()).status_code == 404
        assert client.post(_path(ASSET_TARGET, "conn-secret"), json=_data()).status_code == 200


# Authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(lambda: _path(ASSET_TARGET, secret="wrong-secret"), id="wrong-secret"),
        pytest.param(lambda: _path(ASSET_TARGET)[:-2] + "xx", id="tampered-token"),
        pytest.param(
            lambda: (
                "/v1/callback/"
                + encode_correlation_id(WAIT_TARGET)
                + "/"
                + _path(ASSET_TARGET).rsplit("/", 1)[1]
            ),
            id="token-of-another-target",
        ),
        pytest.param(lambda: "/v1/callback/" + encode_correlation_id(ASSET_TARGET), id="missing-token"),
        pytest.param(lambda: "/v1/callback/not-a-correlation-id/abc", id="undecodable-id"),
        pytest.param(lambda: "/v1/callback/", id="nothing"),
    ],
)
def test_bad_or_missing_token_is_a_uniform_404_and_changes_nothing(
    client: TestClient, fake_backend: FakeBackend, path: Any
) -> None:
    unknown = client.post("/no/such/route", json={})
    response = client.post(path(), json=_envelope(_data()))
    assert response.status_code == 404 == unknown.status_code
    assert response.json() == unknown.json() == NOT_FOUND_BODY
    assert _rows(fake_backend) == []
    assert fake_backend.asset_events == []
    assert fake_backend.resumes == []
    assert client.get(path(), params={"request_id": "req-1"}).status_code == 404


def test_impossible_connection_id_is_never_looked_up(client: TestClient, fake_backend: FakeBackend) -> None:
    target = CallbackTarget("d", "t", "r", asset_uri="nyne://a", asset_name="nyne://a", conn_id="no/such id")
    fake_backend.secrets["no/such id"] = SECRET  # even a "valid" token for it is refused
    assert client.post(_path(target), json=_data()).status_code == 404
    assert fake_backend.secret_lookups == []


def test_unknown_connection_is_logged_once(
    client: TestClient, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    target = CallbackTarget("d", "t", "r", wait=True, conn_id="nyne_nobody")
    with caplog.at_level(logging.WARNING, logger="airflow_provider_nyne.callbacks.receiver"):
        answers = [client.post(_path(target), json=_data()).status_code for _ in range(3)]
    assert answers == [404] * 3
    lines = [r.getMessage() for r in caplog.records if "nyne_nobody" in r.getMessage()]
    assert len(lines) == 1
    assert "no callback secret for connection 'nyne_nobody'" in lines[0]


def test_bad_token_is_refused_before_the_body_is_looked_at(client: TestClient) -> None:
    # Over the cap and not JSON: a wrong token still answers 404, not 413/400.
    response = client.post(_path(ASSET_TARGET, secret="wrong"), content=b"x" * (300 * 1024))
    assert response.status_code == 404


def test_no_secret_anywhere_refuses_everything(client: TestClient, fake_backend: FakeBackend) -> None:
    fake_backend.secrets.clear()
    assert client.post(_path(ASSET_TARGET), json=_envelope(_data())).status_code == 404


# Bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "declared", [pytest.param(True, id="content-length"), pytest.param(False, id="chunked")]
)
def test_body_over_the_cap_is_413(client: TestClient, fake_backend: FakeBackend, declared: bool) -> None:
    big = json.dumps(_envelope(_data(padding="x" * (300 * 1024)))).encode()
    if declared:
        response = client.post(_path(ASSET_TARGET), content=big)
    else:
        response = client.post(
            _path(ASSET_TARGET), content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)])
        )
    assert response.status_code == 413
    assert _rows(fake_backend) == []


def _nested(depth: int) -> bytes:
    return b'{"request_id": "req-1", "status": "completed", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(b"{not json", "not valid JSON", id="not-json"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
        pytest.param(b"[1, 2]", "JSON object", id="not-an-object"),
        pytest.param(b'"req-1"', "JSON object", id="a-string"),
        pytest.param(
            json.dumps({"success": True, "data": {"status": "completed"}}).encode(),
            "request_id",
            id="no-request-id",
        ),
        pytest.param(
            json.dumps({"request_id": "", "status": "completed"}).encode(),
            "request_id",
            id="empty-request-id",
        ),
        pytest.param(
            json.dumps({"request_id": "req\n1", "status": "completed"}).encode(),
            "control characters",
            id="control-character-in-request-id",
        ),
        pytest.param(
            json.dumps(_data(status="processing")).encode(),
            "expected 'completed' or 'failed'",
            id="not-terminal",
        ),
        pytest.param(json.dumps(_data(rid="r" * 300)).encode(), "longer than 255", id="request-id-too-long"),
        pytest.param(_nested(100_000), "nested deeper than 64", id="nested-100000-deep"),
        pytest.param(_nested(100), "nested deeper than 64", id="nested-100-deep"),
        pytest.param(b'{"request_id": "req-1", "status": "completed", "x": NaN}', "NaN", id="nan"),
        pytest.param(
            b'{"request_id": "req-1", "status": "completed", "x": Infinity}', "Infinity", id="infinity"
        ),
        pytest.param(
            b'{"request_id": "req-1", "status": "completed", "x": -Infinity}', "Infinity", id="-infinity"
        ),
        pytest.param(
            b'{"request_id": "req-1", "status": "completed", "x": 1e999}', "out of range", id="overflow"
        ),
        pytest.param(
            b'{"request_id": "req-1", "status": "completed", "x": "\\ud800"}',
            "surrogate",
            id="lone-surrogate",
        ),
    ],
)
def test_bodies_that_cannot_be_stored_and_served_back_are_400(
    client: TestClient, fake_backend: FakeBackend, body: bytes, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.post(
            _path(ASSET_TARGET), content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert _rows(fake_backend) == []
    assert fake_backend.asset_events == []
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged


def test_nesting_at_the_limit_is_stored_and_served_back_as_it_came(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    deep: Any = "leaf"
    for _ in range(62):  # + the data object and "extra": 64 levels
        deep = [deep]
    data = _data(extra={"é": deep, "big": 2**60, "small": 1.5e-300, "text": "ü\u2028"})
    assert client.post(_path(ASSET_TARGET), json=data).status_code == 200
    served = client.get(_path(ASSET_TARGET), params={"request_id": "req-1"})
    assert served.status_code == 200
    assert served.json()["data"] == data


def test_request_id_header_must_agree_with_body(client: TestClient) -> None:
    response = client.post(_path(ASSET_TARGET), json=_data(), headers={"X-Nyne-Request-Id": "other"})
    assert response.status_code == 400


async def test_a_body_that_does_not_arrive_in_time_is_408(fake_backend: FakeBackend) -> None:
    fake_backend.submitted(ASSET_TARGET, "req-1")
    app = create_app(_service(fake_backend, body_timeout=0.2))
    never = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await never.wait()  # a client that announced a body and stalls
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = "/nyne" + _path(ASSET_TARGET)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "/nyne",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    assert _rows(fake_backend) == []


def test_asset_event_extra_copies_bounded_strings_only(client: TestClient, fake_backend: FakeBackend) -> None:
    data = _data()
    data["result"].update(platform="p" * 10_000, interaction_type={"nested": "object"}, total_count=10**30)
    data["result"]["target"] = {"username": "u" * 5000}
    assert client.post(_path(ASSET_TARGET), json=data).status_code == 200
    ((_, extra),) = fake_backend.asset_events
    assert len(extra["platform"]) <= 203
    assert len(extra["target_username"]) <= 203
    assert extra["interaction_type"] is None
    assert extra["total_count"] is None
    assert len(json.dumps(extra)) < 2000


# Dispatch ---------------------------------------------------------------------------------


def test_dispatch_failure_is_503_stores_nothing_and_a_redelivery_succeeds(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    fake_backend.fail_dispatch = RuntimeError("database is locked")
    assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 503
    assert _rows(fake_backend) == []  # stored and dispatched in one transaction: both rolled back
    fake_backend.fail_dispatch = None
    response = client.post(_path(ASSET_TARGET), json=_data())
    assert response.status_code == 200
    assert response.json()["duplicate"] is False
    assert len(fake_backend.asset_events) == 1


def test_missing_table_is_503_and_the_log_names_the_fix(
    client: TestClient, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    store.callbacks_table.drop(fake_backend.engine())
    with caplog.at_level(logging.ERROR, logger="airflow_provider_nyne.callbacks.receiver"):
        assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 503
        assert client.get("/health?db=1").status_code == 503
    assert sum("airflow db migrate" in r.getMessage() for r in caplog.records) == 2


def test_failed_job_records_no_asset_event(client: TestClient, fake_backend: FakeBackend) -> None:
    response = client.post(_path(ASSET_TARGET), json=_data(status="failed"))
    assert response.status_code == 200
    assert response.json()["dispatch"] == "asset_skipped(failed)"
    assert fake_backend.asset_events == []


@pytest.fixture
def waiting(client: TestClient, fake_backend: FakeBackend) -> TestClient:
    fake_backend.submitted(WAIT_TARGET, "req-1")
    return client


def test_waiting_task_is_resumed_with_a_check_event_shaped_event(
    waiting: TestClient, fake_backend: FakeBackend
) -> None:
    response = waiting.post(_path(WAIT_TARGET), json=_envelope(_data()))
    assert response.json()["dispatch"] == "resumed"
    ((target, rid, event),) = fake_backend.resumes
    assert (target, rid) == (WAIT_TARGET, "req-1")
    assert event == {
        "status": "success",
        "request_id": "req-1",
        "total_count": 2,
        "message": "request req-1 completed",
        "error_code": None,
        "http_status": None,
        "polls": 0,
        "error_type": None,
        "source": "callback",
        "correlation_id": encode_correlation_id(WAIT_TARGET),
    }


def test_failed_job_resumes_with_the_api_reason(waiting: TestClient, fake_backend: FakeBackend) -> None:
    waiting.post(_path(WAIT_TARGET), json=_data(status="failed"))
    ((_, _, event),) = fake_backend.resumes
    assert event["status"] == "failed"
    assert "Profile is private" in event["message"]


def test_task_not_deferred_yet_leaves_a_mailbox_and_rechecks_after_commit(
    waiting: TestClient, fake_backend: FakeBackend
) -> None:
    fake_backend.resume_results = ["not_deferred:running", "resumed"]
    response = waiting.post(_path(WAIT_TARGET), json=_data())
    assert response.json()["dispatch"] == "mailbox(not_deferred:running)"
    assert len(fake_backend.resumes) == 2  # once in the transaction, once after the commit
    row = _row(fake_backend, target=WAIT_TARGET)
    assert row is not None
    assert row.dispatch == "mailbox(not_deferred:running);resumed"


def test_resume_disabled_only_fills_the_mailbox(fake_backend: FakeBackend) -> None:
    fake_backend.submitted(WAIT_TARGET, "req-1")
    with TestClient(create_app(_service(fake_backend, resume=False))) as client:
        assert client.post(_path(WAIT_TARGET), json=_data()).json()["dispatch"] == "mailbox"
    assert fake_backend.resumes == []


# Mailbox ----------------------------------------------------------------------------------


def test_mailbox_serves_the_stored_callback(waiting: TestClient) -> None:
    path = _path(WAIT_TARGET)
    assert waiting.get(path, params={"request_id": "req-1"}).status_code == 204
    waiting.post(path, json=_envelope(_data()))
    response = waiting.get(path, params={"request_id": "req-1"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["deliveries"] == 1
    assert body["data"] == _data()
    assert waiting.get(path).status_code == 400  # request_id is required
    # Another correlation id cannot read it, even with a valid token of its own.
    other = _path(CallbackTarget("producer", "submit", "run-9", wait=True))
    assert waiting.get(other, params={"request_id": "req-1"}).status_code == 204


def test_mailbox_with_the_token_in_a_header(waiting: TestClient) -> None:
    cid = encode_correlation_id(WAIT_TARGET)
    url = f"/v1/mailbox/{cid}"
    good = {TOKEN_HEADER: make_token(SECRET, cid)}
    assert waiting.get(url, params={"request_id": "req-1"}, headers=good).status_code == 204
    waiting.post(_path(WAIT_TARGET), json=_data())
    answer = waiting.get(url, params={"request_id": "req-1"}, headers=good)
    assert answer.status_code == 200
    assert answer.json()["data"]["request_id"] == "req-1"
    for headers in ({}, {TOKEN_HEADER: make_token("wrong", cid)}):
        refused = waiting.get(url, params={"request_id": "req-1"}, headers=headers)
        assert (refused.status_code, refused.json()) == (404, NOT_FOUND_BODY)


# Housekeeping -----------------------------------------------------------------------------


def _old_row(backend: FakeBackend) -> None:
    with backend.session() as session:
        store.insert_record(
            session,
            store.CallbackRecord("ancient", "cid", "completed", "{}"),
            now=store.utcnow() - timedelta(days=30),
        )


def test_a_callback_never_waits_for_the_purge(client: TestClient, fake_backend: FakeBackend) -> None:
    _old_row(fake_backend)
    assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 200
    assert len(_rows(fake_backend)) == 2  # the request path leaves old rows alone


async def test_purge_runs_in_the_background_until_cancelled(fake_backend: FakeBackend) -> None:
    _old_row(fake_backend)
    service = _service(fake_backend, purge_interval=0.01)
    purger = asyncio.create_task(service.purge_forever())
    try:
        for _ in range(1000):
            if not _rows(fake_backend):
                break
            await asyncio.sleep(0.01)
        assert _rows(fake_backend) == []
    finally:
        purger.cancel()
    with pytest.raises(asyncio.CancelledError):
        await purger


# Tokens and logs --------------------------------------------------------------------------


def _access_logged(service: CallbackService) -> tuple[Any, list[str]]:
    seen: list[str] = []
    app = create_app(service)

    async def access_log(scope: Any, receive: Any, send: Any) -> None:
        # Like the api-server's access-log middleware: read the shared scope once the app has answered.
        try:
            await app(scope, receive, send)
        finally:
            seen.append(f"{scope['method']} {scope['path']} {scope['raw_path'].decode()}")

    return access_log, seen


@pytest.mark.parametrize(
    ("method", "suffix", "status"),
    [
        pytest.param("POST", "", 200, id="post"),
        pytest.param("GET", "", 204, id="get-mailbox"),
        *(pytest.param(m, "", 405, id=m.lower()) for m in ("PUT", "PATCH", "DELETE", "OPTIONS")),
        pytest.param("HEAD", "", 405, id="head"),
        pytest.param("POST", "/", 404, id="trailing-slash-no-redirect"),
        pytest.param("GET", "/", 404, id="get-trailing-slash"),
        pytest.param("POST", "/anything/else", 404, id="longer-path"),
    ],
)
def test_the_token_never_reaches_the_access_log(
    service: CallbackService, fake_backend: FakeBackend, method: str, suffix: str, status: int
) -> None:
    fake_backend.submitted(ASSET_TARGET, "req-1")
    app, seen = _access_logged(service)
    path = _path(ASSET_TARGET) + suffix
    token = _path(ASSET_TARGET).rsplit("/", 1)[1]
    with TestClient(app) as client:
        kwargs: dict[str, Any] = {"params": {"request_id": "req-1"}} if method in ("GET", "HEAD") else {}
        if method == "POST":
            kwargs = {"json": _data()}
        response = client.request(method, path, follow_redirects=False, **kwargs)
    assert response.status_code == status
    assert len(seen) == 1
    assert token not in seen[0]
    cid = encode_correlation_id(ASSET_TARGET)
    assert seen[0] == f"{method} /v1/callback/{cid}/*** /v1/callback/{cid}/***"


def test_wrong_token_is_hidden_too(service: CallbackService) -> None:
    app, seen = _access_logged(service)
    with TestClient(app) as client:
        assert client.post(_path(ASSET_TARGET, secret="wrong"), json=_data()).status_code == 404
    assert seen[0].endswith("/***")


# Credit guard routes -------------------------------------------------------------------------

from airflow_provider_nyne.callbacks.tokens import (  # noqa: E402
    CREDITS_PATH,
    CREDITS_SIGNATURE_HEADER,
    sign_credit_request,
)


def _credit_body(map_index: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "dag_id": "fan_out",
        "run_id": "run-1",
        "task_id": "lookup",
        "map_index": map_index,
        "conn_id": "nyne_default",
        "fingerprint": "f1",
        **extra,
    }


def _signed(client: TestClient, action: str, body: dict[str, Any], secret: str = SECRET) -> Any:
    raw = json.dumps(body).encode()
    return client.post(
        f"{CREDITS_PATH}/{action}",
        content=raw,
        headers={
            "content-type": "application/json",
            CREDITS_SIGNATURE_HEADER: sign_credit_request(secret, raw),
        },
    )


def _credit_rows(backend: FakeBackend) -> int:
    with Session(backend.engine()) as session:
        return len(session.execute(store.reservations_table.select()).all())


def test_signed_reservations_share_the_budget_and_refuse_past_it(client: TestClient) -> None:
    first = _signed(client, "reserve", _credit_body(0, budget=6))
    second = _signed(client, "reserve", _credit_body(1, budget=6))
    third = _signed(client, "reserve", _credit_body(2, budget=6))
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 409)
    assert second.json()["reserved"] == 6
    assert third.json() == {
        "granted": False,
        "reservation_id": None,
        "reserved": 6,
        "budget": 6,
        "credits": 3,
        "repeated": False,
    }
    again = _signed(client, "reserve", _credit_body(0, budget=6))  # a retry of the first task
    assert (again.status_code, again.json()["repeated"]) == (200, True)
    assert again.json()["reservation_id"] == first.json()["reservation_id"]


def test_only_a_running_task_instance_reserves_credits(
    client: TestClient, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # Holding the connection's secret is not enough to fill a run's budget from outside a task.
    fake_backend.not_running.add(("fan_out", "lookup", "run-1", 1))
    answer = _signed(client, "reserve", _credit_body(1, budget=6))
    assert answer.status_code == 403
    assert answer.json()["detail"] == (
        "task instance fan_out.lookup[1] @ run-1 is not running: only a running task reserves credits"
    )
    assert _credit_rows(fake_backend) == 0
    assert "task instance fan_out.lookup[1] @ run-1 is not running" in caplog.text
    assert SECRET not in caplog.text
    # The running task instances of the same run still get the whole budget.
    assert [_signed(client, "reserve", _credit_body(i, budget=6)).status_code for i in (0, 2)] == [200, 200]


def test_a_release_gives_back_once_and_lets_another_task_in(client: TestClient) -> None:
    reservation_id = _signed(client, "reserve", _credit_body(0, budget=3)).json()["reservation_id"]
    assert _signed(client, "reserve", _credit_body(1, budget=3)).status_code == 409
    release = _credit_body(0, reservation_id=reservation_id)
    assert _signed(client, "release", release).json() == {"released": True}
    assert _signed(client, "release", release).json() == {"released": False}  # a replay
    assert _signed(client, "reserve", _credit_body(1, budget=3)).status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda raw, sig: (raw, ""), id="no-signature"),
        pytest.param(lambda raw, sig: (raw, sig[:-2] + "AA"), id="wrong-signature"),
        pytest.param(
            lambda raw, sig: (raw.replace(b'"budget": 6', b'"budget": 600'), sig), id="body-changed"
        ),
        pytest.param(lambda raw, sig: (raw, sign_credit_request("another-secret", raw)), id="other-secret"),
        pytest.param(lambda raw, sig: (b"not json", sign_credit_request(SECRET, b"not json")), id="not-json"),
        pytest.param(
            lambda raw, sig: (b" " * 9000 + raw, sign_credit_request(SECRET, b" " * 9000 + raw)),
            id="too-large",
        ),
    ],
)
def test_anything_not_signed_gets_the_uniform_404_and_reserves_nothing(
    client: TestClient, fake_backend: FakeBackend, tamper: Any
) -> None:
    raw = json.dumps(_credit_body(0, budget=6)).encode()
    body, signature = tamper(raw, sign_credit_request(SECRET, raw))
    answer = client.post(
        f"{CREDITS_PATH}/reserve",
        content=body,
        headers={"content-type": "application/json", CREDITS_SIGNATURE_HEADER: signature},
    )
    assert (answer.status_code, answer.json()) == (404, NOT_FOUND_BODY)
    assert _credit_rows(fake_backend) == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(_credit_body(0, budget=-3), "budget must be a whole number", id="negative-budget"),
        pytest.param(_credit_body(0), "budget must be a whole number", id="no-budget"),
        pytest.param({**_credit_body(0, budget=6), "map_index": "zero"}, "map_index", id="bad-map-index"),
    ],
)
def test_a_signed_request_with_a_bad_field_is_400(
    client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    answer = _signed(client, "reserve", body)
    assert answer.status_code == 400
    assert fragment in answer.json()["detail"]


def test_a_connection_secret_signs_for_its_own_connection_only(
    fake_backend: FakeBackend, client: TestClient
) -> None:
    fake_backend.secrets["nyne_tenant"] = "tenant-secret"
    tenant = _credit_body(0, budget=3, conn_id="nyne_tenant")
    assert _signed(client, "reserve", tenant, secret=SECRET).status_code == 404
    assert _signed(client, "reserve", tenant, secret="tenant-secret").status_code == 200
    # The tenant's secret cannot touch another connection's budget.
    assert _signed(client, "reserve", _credit_body(1, budget=3), secret="tenant-secret").status_code == 404


def test_credit_routes_answer_with_a_deployment_secret_even_without_callbacks(
    fake_backend: FakeBackend,
) -> None:
    fake_backend.secrets = {}
    inert = CallbackService(fake_backend, enabled=False, config_secret=lambda: None)
    with TestClient(create_app(inert)) as client:
        assert _signed(client, "reserve", _credit_body(0, budget=3)).status_code == 404
        assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 404
    guard_only = CallbackService(fake_backend, enabled=False, config_secret=lambda: "deployment-secret")
    with TestClient(create_app(guard_only)) as client:
        assert (
            _signed(client, "reserve", _credit_body(0, budget=3), secret="deployment-secret").status_code
            == 200
        )
        assert client.post(_path(ASSET_TARGET, "deployment-secret"), json=_data()).status_code == 404


def test_a_missing_credit_table_is_503_and_the_log_names_the_fix(
    client: TestClient, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    store.reservations_table.drop(fake_backend.engine())
    with caplog.at_level(logging.ERROR, logger="airflow_provider_nyne.callbacks.receiver"):
        answer = _signed(client, "reserve", _credit_body(0, budget=3))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "try again" in answer.json()["detail"]
    [message] = [r.getMessage() for r in caplog.records]
    assert "table nyne_credit_reservation does not exist. Run `airflow db migrate`" in message
