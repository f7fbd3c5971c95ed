from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import respx

from airflow_provider_nyne.callbacks.tokens import (
    TOKEN_HEADER,
    CallbackTarget,
    encode_correlation_id,
    mailbox_path,
    make_token,
)
from airflow_provider_nyne.client.errors import NyneNotFoundError
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger

SECRET = "trigger-secret"
ROOT = "http://127.0.0.1:9"
CID = encode_correlation_id(CallbackTarget("d", "submit", "r", wait=True))
MAILBOX = ROOT + mailbox_path(CID)
#: The token travels in a header only: respx routes match on it.
TOKEN = {TOKEN_HEADER: make_token(SECRET, CID)}
COMPLETED = {
    "request_id": "req-1",
    "status": "completed",
    "completed": True,
    "result": {"interactions": [{"username": "a"}], "total_count": 1},
}


@pytest.fixture(autouse=True)
def _connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_DEFAULT",
        json.dumps(
            {
                "conn_type": "nyne",
                "login": "key-123",
                "password": "secret-456",
                "host": "http://127.0.0.1:9",
                "extra": {"callback_secret": SECRET},
            }
        ),
    )
    monkeypatch.delenv("AIRFLOW__NYNE__CALLBACK_SECRET", raising=False)


def _trigger(end_in: float = 30.0, **kwargs: Any) -> NyneCallbackTrigger:
    return NyneCallbackTrigger(
        request_id="req-1", correlation_id=CID, end_time=time.time() + end_in, mailbox_url=ROOT, **kwargs
    )


async def _first_event(trigger: NyneCallbackTrigger, timeout: float = 5.0) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("trigger ended without an event")

    return await asyncio.wait_for(first(), timeout)


def test_serialize_round_trips_and_holds_no_secret() -> None:
    trigger = _trigger(mailbox_interval=5.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger"
    assert kwargs == {
        "request_id": "req-1",
        "correlation_id": CID,
        "end_time": trigger.end_time,
        "nyne_conn_id": "nyne_default",
        "mailbox_interval": 5.0,
        "mailbox_url": ROOT,
        "reconcile": True,
    }
    text = json.dumps(kwargs)
    for secret in (SECRET, "key-123", "secret-456", make_token(SECRET, CID)):
        assert secret not in text
    assert NyneCallbackTrigger(**kwargs).serialize() == (classpath, kwargs)


@respx.mock
async def test_callback_already_in_the_mailbox_fires_at_once_without_asking_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route = respx.get(MAILBOX, params={"request_id": "req-1"}, headers=TOKEN).mock(
        return_value=httpx.Response(
            200, json={"request_id": "req-1", "status": "completed", "data": COMPLETED}
        )
    )

    async def no_api(self: NyneHook, request_id: str) -> JobStatus:
        raise AssertionError("the API must not be asked")

    monkeypatch.setattr(NyneHook, "aget_interactions_status", no_api)
    event = await _first_event(_trigger())
    assert route.call_count == 1
    assert event["status"] == "success"
    assert (event["source"], event["polls"], event["total_count"]) == ("mailbox", 0, 1)
    assert event["correlation_id"] == CID


@respx.mock
async def test_no_callback_by_the_deadline_asks_the_api_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    mailbox = respx.get(MAILBOX, params={"request_id": "req-1"}, headers=TOKEN).mock(
        return_value=httpx.Response(204)
    )
    calls: list[str] = []

    async def status(self: NyneHook, request_id: str) -> JobStatus:
        calls.append(request_id)
        return JobStatus.from_api(COMPLETED)

    monkeypatch.setattr(NyneHook, "aget_interactions_status", status)
    event = await _first_event(_trigger(end_in=0.3, mailbox_interval=0.1))
    assert calls == ["req-1"]
    assert mailbox.call_count >= 2  # at start, and again before giving up
    assert (event["status"], event["source"], event["polls"]) == ("success", "reconcile", 1)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            JobStatus.from_api({"request_id": "req-1", "status": "processing"}),
            ("timeout", None),
            id="still-running",
        ),
        pytest.param(
            JobStatus.from_api({"request_id": "req-1", "status": "failed", "error": "Profile is private"}),
            ("failed", None),
            id="failed",
        ),
        pytest.param(
            NyneNotFoundError("request not found", status_code=404, code="request_not_found"),
            ("error", 404),
            id="expired",
        ),
    ],
)
@respx.mock
async def test_reconciliation_outcomes(
    monkeypatch: pytest.MonkeyPatch, answer: Any, expected: tuple[str, int | None]
) -> None:
    respx.get(MAILBOX, headers=TOKEN).mock(return_value=httpx.Response(204))

    async def status(self: NyneHook, request_id: str) -> JobStatus:
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(NyneHook, "aget_interactions_status", status)
    event = await _first_event(_trigger(end_in=0.05, mailbox_interval=0))
    assert (event["status"], event["http_status"]) == expected
    assert event["polls"] == 1
    assert event["request_id"] == "req-1"


@pytest.mark.parametrize(
    "mailbox_answer",
    [
        pytest.param(httpx.Response(404, json={"detail": "Not Found"}), id="token-refused"),
        pytest.param(httpx.Response(503), id="receiver-down"),
        pytest.param(httpx.ConnectError("refused"), id="unreachable"),
        pytest.param(httpx.Response(200, text="not json"), id="garbage"),
    ],
)
@respx.mock
async def test_mailbox_trouble_is_logged_and_the_deadline_still_settles(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mailbox_answer: Any
) -> None:
    if isinstance(mailbox_answer, Exception):
        respx.get(MAILBOX, headers=TOKEN).mock(side_effect=mailbox_answer)
    else:
        respx.get(MAILBOX, headers=TOKEN).mock(return_value=mailbox_answer)

    async def status(self: NyneHook, request_id: str) -> JobStatus:
        return JobStatus.from_api(COMPLETED)

    monkeypatch.setattr(NyneHook, "aget_interactions_status", status)
    event = await _first_event(_trigger(end_in=0.3, mailbox_interval=0.05))
    assert event["source"] == "reconcile"
    logged = capsys.readouterr()
    text = logged.out + logged.err
    warnings = [line for line in text.splitlines() if "callback mailbox at" in line]
    assert len(warnings) == 1  # said once, not on every read
    assert make_token(SECRET, CID) not in text


@respx.mock
async def test_reconcile_disabled_times_out_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    respx.get(MAILBOX, headers=TOKEN).mock(return_value=httpx.Response(204))

    async def no_api(self: NyneHook, request_id: str) -> JobStatus:
        raise AssertionError("the API must not be asked")

    monkeypatch.setattr(NyneHook, "aget_interactions_status", no_api)
    event = await _first_event(_trigger(end_in=0.05, mailbox_interval=0, reconcile=False))
    assert (event["status"], event["polls"]) == ("timeout", 0)


async def test_config_secret_is_used_when_the_connection_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_DEFAULT",
        json.dumps({"conn_type": "nyne", "login": "k", "password": "p", "host": "http://127.0.0.1:9"}),
    )
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", SECRET)
    with respx.mock:
        route = respx.get(MAILBOX, headers=TOKEN).mock(
            return_value=httpx.Response(200, json={"data": COMPLETED})
        )
        event = await _first_event(_trigger())
    assert route.called
    assert event["status"] == "success"


async def test_a_killed_wait_says_the_lookup_keeps_running(capsys: pytest.CaptureFixture[str]) -> None:
    trigger = _trigger()
    await trigger.on_kill()
    [line] = [line for line in capsys.readouterr().out.splitlines() if trigger.request_id in line]
    assert "keeps running at Nyne" in line
