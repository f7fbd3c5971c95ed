from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from airflow_provider_nyne.callbacks import store
from airflow_provider_nyne.callbacks.receiver import NOT_FOUND_BODY, CallbackService, create_app
from airflow_provider_nyne.callbacks.tokens import (
    TOKEN_HEADER,
    CallbackTarget,
    callback_path,
    encode_correlation_id,
    make_token,
)
from tests.unit.callbacks.conftest import SECRET, FakeBackend

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


@pytest.fixture
def service(fake_backend: FakeBackend) -> CallbackService:
    return CallbackService(
        fake_backend,
        max_body_bytes=64 * 1024,
        retention=timedelta(days=7),
        resume=True,
        config_secret=lambda: None,
    )


@pytest.fixture
def client(service: CallbackService) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


def _row(backend: FakeBackend, rid: str = "req-1") -> store.CallbackRecord | None:
    with Session(backend.engine()) as session:
        return store.get_record(session, rid)


def test_lifespan_creates_the_table(client: TestClient, fake_backend: FakeBackend) -> None:
    from sqlalchemy import inspect

    assert inspect(fake_backend.engine()).has_table(store.TABLE_NAME)


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health?db=1").status_code == 200


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
    assert _row(fake_backend) is None
    assert fake_backend.asset_events == []
    assert fake_backend.resumes == []
    assert client.get(path(), params={"request_id": "req-1"}).status_code == 404


def test_impossible_connection_id_is_never_looked_up(client: TestClient, fake_backend: FakeBackend) -> None:
    target = CallbackTarget("d", "t", "r", asset_uri="nyne://a", asset_name="nyne://a", conn_id="no/such id")
    fake_backend.secrets["no/such id"] = SECRET  # even a "valid" token for it is refused
    assert client.post(_path(target), json=_data()).status_code == 404
    assert fake_backend.secret_lookups == []


def test_bad_token_is_refused_before_the_body_is_looked_at(client: TestClient) -> None:
    # Over the cap and not JSON: a wrong token still answers 404, not 413/400.
    response = client.post(_path(ASSET_TARGET, secret="wrong"), content=b"x" * (200 * 1024))
    assert response.status_code == 404


def test_no_secret_anywhere_refuses_everything(client: TestClient, fake_backend: FakeBackend) -> None:
    fake_backend.secrets.clear()
    assert client.post(_path(ASSET_TARGET), json=_envelope(_data())).status_code == 404


def test_connection_secret_wins_over_config_secret(fake_backend: FakeBackend) -> None:
    fake_backend.secrets = {"nyne_default": "conn-secret"}
    service = CallbackService(fake_backend, config_secret=lambda: "config-secret", resume=True)
    with TestClient(create_app(service)) as client:
        assert client.post(_path(ASSET_TARGET, "config-secret"), json=_data()).status_code == 404
        assert client.post(_path(ASSET_TARGET, "conn-secret"), json=_data()).status_code == 200


def test_config_secret_is_the_fallback_and_conn_id_comes_from_the_url(fake_backend: FakeBackend) -> None:
    fake_backend.secrets = {}
    service = CallbackService(fake_backend, config_secret=lambda: "config-secret", resume=True)
    target = CallbackTarget("d", "t", "r", asset_uri="nyne://x", asset_name="nyne://x", conn_id="nyne_other")
    with TestClient(create_app(service)) as client:
        assert client.post(_path(target, "config-secret"), json=_data()).status_code == 200
    assert fake_backend.secret_lookups == ["nyne_other"]


@pytest.mark.parametrize(
    "declared", [pytest.param(True, id="content-length"), pytest.param(False, id="chunked")]
)
def test_body_over_the_cap_is_413(client: TestClient, fake_backend: FakeBackend, declared: bool) -> None:
    big = json.dumps(_envelope(_data(padding="x" * (70 * 1024)))).encode()
    if declared:
        response = client.post(_path(ASSET_TARGET), content=big)
    else:
        response = client.post(
            _path(ASSET_TARGET), content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)])
        )
    assert response.status_code == 413
    assert _row(fake_backend) is None


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(b"{not json", "not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "JSON object", id="not-an-object"),
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
            json.dumps(_data(status="processing")).encode(),
            "expected 'completed' or 'failed'",
            id="not-terminal",
        ),
        pytest.param(json.dumps(_data(rid="r" * 300)).encode(), "longer than 255", id="request-id-too-long"),
    ],
)
def test_unusable_bodies_are_400(
    client: TestClient, fake_backend: FakeBackend, body: bytes, detail: str
) -> None:
    response = client.post(_path(ASSET_TARGET), content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert _row(fake_backend) is None
    assert fake_backend.asset_events == []


def test_request_id_header_must_agree_with_body(client: TestClient) -> None:
    response = client.post(_path(ASSET_TARGET), json=_data(), headers={"X-Nyne-Request-Id": "other"})
    assert response.status_code == 400


def test_dispatch_failure_is_503_stores_nothing_and_a_redelivery_succeeds(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    fake_backend.fail_dispatch = RuntimeError("database is locked")
    assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 503
    assert _row(fake_backend) is None  # stored and dispatched in one transaction: both rolled back
    fake_backend.fail_dispatch = None
    response = client.post(_path(ASSET_TARGET), json=_data())
    assert response.status_code == 200
    assert response.json()["duplicate"] is False
    assert len(fake_backend.asset_events) == 1


def test_request_id_seen_on_another_url_is_409(client: TestClient, fake_backend: FakeBackend) -> None:
    assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 200
    other = CallbackTarget("producer", "submit", "run-2", asset_name="nyne://a", asset_uri="nyne://a")
    assert client.post(_path(other), json=_data()).status_code == 409
    assert len(fake_backend.asset_events) == 1


def test_failed_job_records_no_asset_event(client: TestClient, fake_backend: FakeBackend) -> None:
    response = client.post(_path(ASSET_TARGET), json=_data(status="failed"))
    assert response.status_code == 200
    assert response.json()["dispatch"] == "asset_skipped(failed)"
    assert fake_backend.asset_events == []


def test_waiting_task_is_resumed_with_a_check_event_shaped_event(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    response = client.post(_path(WAIT_TARGET), json=_envelope(_data()))
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
        "source": "callback",
        "correlation_id": encode_correlation_id(WAIT_TARGET),
    }


def test_failed_job_resumes_with_the_api_reason(client: TestClient, fake_backend: FakeBackend) -> None:
    client.post(_path(WAIT_TARGET), json=_data(status="failed"))
    ((_, _, event),) = fake_backend.resumes
    assert event["status"] == "failed"
    assert "Profile is private" in event["message"]


def test_task_not_deferred_yet_leaves_a_mailbox_and_rechecks_after_commit(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    fake_backend.resume_results = ["not_deferred:running", "resumed"]
    response = client.post(_path(WAIT_TARGET), json=_data())
    assert response.json()["dispatch"] == "mailbox(not_deferred:running)"
    assert len(fake_backend.resumes) == 2  # once in the transaction, once after the commit
    row = _row(fake_backend)
    assert row is not None
    assert row.dispatch == "mailbox(not_deferred:running);resumed"


def test_resume_disabled_only_fills_the_mailbox(fake_backend: FakeBackend) -> None:
    service = CallbackService(fake_backend, resume=False, config_secret=lambda: None)
    with TestClient(create_app(service)) as client:
        assert client.post(_path(WAIT_TARGET), json=_data()).json()["dispatch"] == "mailbox"
    assert fake_backend.resumes == []


def test_mailbox_serves_the_stored_callback(client: TestClient) -> None:
    path = _path(WAIT_TARGET)
    assert client.get(path, params={"request_id": "req-1"}).status_code == 204
    client.post(path, json=_envelope(_data()))
    response = client.get(path, params={"request_id": "req-1"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["deliveries"] == 1
    assert body["data"]["result"]["total_count"] == 2
    assert client.get(path).status_code == 400  # request_id is required
    # Another correlation id cannot read it, even with a valid token of its own.
    other = _path(CallbackTarget("producer", "submit", "run-9", wait=True))
    assert client.get(other, params={"request_id": "req-1"}).status_code == 204


def test_old_rows_are_purged_on_insert(fake_backend: FakeBackend) -> None:
    service = CallbackService(
        fake_backend, retention=timedelta(days=7), resume=True, config_secret=lambda: None
    )
    service.ensure_table()
    with fake_backend.session() as session:
        store.insert_record(
            session,
            store.CallbackRecord("ancient", "cid", "completed", {}),
            now=store.utcnow() - timedelta(days=30),
        )
    with TestClient(create_app(service)) as client:
        assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 200
    assert _row(fake_backend, "ancient") is None
    assert _row(fake_backend, "req-1") is not None


def test_token_is_removed_from_the_path_that_access_logs_read(service: CallbackService) -> None:
    from starlette.types import Receive, Scope, Send

    seen: list[str] = []
    app = create_app(service)

    async def access_log(scope: Scope, receive: Receive, send: Send) -> None:
        # Like the api-server's access-log middleware: read the path once the app has answered.
        await app(scope, receive, send)
        seen.append(scope["path"])

    token = _path(ASSET_TARGET).rsplit("/", 1)[1]
    with TestClient(access_log) as client:
        assert client.post(_path(ASSET_TARGET), json=_data()).status_code == 200
        assert client.get(_path(ASSET_TARGET), params={"request_id": "req-1"}).status_code == 200
        assert client.post(_path(ASSET_TARGET, secret="wrong"), json=_data()).status_code == 404
    assert len(seen) == 3
    assert all(path.endswith("/***") for path in seen)
    assert not any(token in path for path in seen)


def test_mailbox_with_the_token_in_a_header(client: TestClient) -> None:
    cid = encode_correlation_id(WAIT_TARGET)
    url = f"/v1/mailbox/{cid}"
    good = {TOKEN_HEADER: make_token(SECRET, cid)}
    assert client.get(url, params={"request_id": "req-1"}, headers=good).status_code == 204
    client.post(_path(WAIT_TARGET), json=_data())
    answer = client.get(url, params={"request_id": "req-1"}, headers=good)
    assert answer.status_code == 200
    assert answer.json()["data"]["request_id"] == "req-1"
    for headers in ({}, {TOKEN_HEADER: make_token("wrong", cid)}):
        refused = client.get(url, params={"request_id": "req-1"}, headers=headers)
        assert (refused.status_code, refused.json()) == (404, NOT_FOUND_BODY)
