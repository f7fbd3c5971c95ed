"""NyneInteractionsTrigger: serialisation, one event per terminal status, never an event while running."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneError,
    NyneForbiddenError,
    NyneNotFoundError,
    NyneServerError,
)
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

CLASSPATH = "airflow_provider_nyne.triggers.interactions.NyneInteractionsTrigger"
KEY = "sk-live-TRIGGERKEY-0123456789"
SECRET = "ss-live-TRIGGERSECRET-abcdefghij"
FAST = {"poll_interval": 0.001, "max_poll_interval": 0.002}


def status(state: str, **data: Any) -> JobStatus:
    return JobStatus.from_api({"status": state, **data}, request_id="req-1")


COMPLETED = status("completed", completed=True, result={"total_count": 12, "interactions": []})


class FakeAsyncClient:
    """Answers polls from a script (the last entry repeats)."""

    def __init__(self, script: list[JobStatus | NyneError]) -> None:
        self.script = list(script)
        self.calls = 0
        self.closed = False

    async def __aenter__(self) -> FakeAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    async def get_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        self.calls += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, NyneError):
            raise item
        return item


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Patch the hook so that triggers poll a scripted client; returns a setter for the script."""
    created: dict[str, Any] = {}

    def _use(script: list[JobStatus | NyneError]) -> FakeAsyncClient:
        client = FakeAsyncClient(script)
        created["client"] = client

        async def aget_conn(self: NyneHook) -> FakeAsyncClient:
            created["retry"] = self.retry
            created["conn_id"] = self.nyne_conn_id
            return client

        monkeypatch.setattr(NyneHook, "aget_conn", aget_conn)
        return client

    _use.created = created  # type: ignore[attr-defined]
    return _use


def make_trigger(**overrides: Any) -> NyneInteractionsTrigger:
    kwargs: dict[str, Any] = {"request_id": "req-1", "end_time": time.time() + 60, **FAST}
    kwargs.update(overrides)
    return NyneInteractionsTrigger(**kwargs)


async def first_event(trigger: NyneInteractionsTrigger, timeout: float = 5.0) -> TriggerEvent:
    return await asyncio.wait_for(trigger.run().__anext__(), timeout)


# --- serialize ----------------------------------------------------------------------------


def test_serialize_is_exact() -> None:
    trigger = NyneInteractionsTrigger(
        request_id="req-1",
        nyne_conn_id="nyne_prod",
        end_time=1_800_000_000.5,
        poll_interval=3,
        max_poll_interval=90,
        backoff_factor=2,
        max_transient_errors=4,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "request_id": "req-1",
        "nyne_conn_id": "nyne_prod",
        "end_time": 1_800_000_000.5,
        "poll_interval": 3.0,
        "max_poll_interval": 90.0,
        "backoff_factor": 2.0,
        "max_transient_errors": 4,
    }


def test_serialize_defaults() -> None:
    _, kwargs = NyneInteractionsTrigger("req-9", end_time=1_800_000_000).serialize()
    assert kwargs == {
        "request_id": "req-9",
        "nyne_conn_id": "nyne_default",
        "end_time": 1_800_000_000.0,
        "poll_interval": 2.0,
        "max_poll_interval": 60.0,
        "backoff_factor": 1.5,
        "max_transient_errors": 10,
    }


def test_serialize_round_trips_through_json() -> None:
    classpath, kwargs = make_trigger(nyne_conn_id="other").serialize()
    # Trigger kwargs are stored as JSON: plain values only.
    restored_kwargs = json.loads(json.dumps(kwargs))
    module, _, name = classpath.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls is NyneInteractionsTrigger
    assert cls(**restored_kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"poll_interval": 0}, {"poll_interval": 10, "max_poll_interval": 1}, {"backoff_factor": 0.9}],
    ids=["zero-interval", "cap-below-interval", "shrinking-backoff"],
)
def test_bad_schedule_fails_when_the_task_defers(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        NyneInteractionsTrigger("req-1", end_time=time.time() + 60, **kwargs)


# --- events -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            [status("queued"), status("processing"), COMPLETED],
            {"status": "success", "total_count": 12, "message": "request req-1 completed", "polls": 3},
        ),
        (
            [status("processing"), status("failed", error="Profile is private")],
            {"status": "failed", "message": "request req-1 failed: Profile is private", "polls": 2},
        ),
        (
            [NyneNotFoundError("request req-1 was not found", status_code=404, code="request_not_found")],
            {
                "status": "error",
                "message": "request req-1 was not found",
                "error_code": "request_not_found",
                "http_status": 404,
                "polls": 1,
                "error_type": "NyneNotFoundError",
            },
        ),
        (
            [NyneAuthError("the API key was rejected", status_code=401, code="invalid_api_key")],
            {
                "status": "error",
                "message": "the API key was rejected",
                "error_code": "invalid_api_key",
                "http_status": 401,
                "polls": 1,
                "error_type": "NyneAuthError",
            },
        ),
        (
            [NyneForbiddenError("IP not on the allow-list", status_code=403, code="ip_not_allowed")],
            {
                "status": "error",
                "message": "IP not on the allow-list",
                "error_code": "ip_not_allowed",
                "http_status": 403,
                "polls": 1,
                "error_type": "NyneForbiddenError",
            },
        ),
    ],
    ids=["success", "failed", "expired-404", "auth-401", "forbidden-403"],
)
async def test_one_event_per_terminal_status(
    fake_client: Any, script: list[JobStatus | NyneError], expected: dict[str, Any]
) -> None:
    fake_client(script)
    event = await first_event(make_trigger())
    base = {
        "request_id": "req-1",
        "total_count": None,
        "message": None,
        "error_code": None,
        "http_status": None,
        "error_type": None,
    }
    assert event.payload == {**base, **expected}


async def test_timeout_event_at_the_deadline(fake_client: Any) -> None:
    client = fake_client([status("processing")])
    event = await first_event(make_trigger(end_time=time.time() + 0.05))
    assert event.payload["status"] == "timeout"
    assert event.payload["polls"] == client.calls >= 1
    assert "still processing at the deadline" in event.payload["message"]


async def test_transient_errors_beyond_the_limit_give_an_error_event(fake_client: Any) -> None:
    boom = NyneServerError("service unavailable", status_code=503, code="service_unavailable")
    fake_client([boom])
    event = await first_event(make_trigger(max_transient_errors=2))
    assert event.payload["status"] == "error"
    assert (event.payload["http_status"], event.payload["polls"]) == (503, 3)


async def test_still_running_never_yields(fake_client: Any) -> None:
    client = fake_client([status("processing")])
    trigger = make_trigger(end_time=time.time() + 3600)
    task = asyncio.ensure_future(trigger.run().__anext__())
    await asyncio.sleep(0.2)
    # It kept polling, and it did not fire.
    assert client.calls > 3
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fires_exactly_one_event(fake_client: Any) -> None:
    fake_client([COMPLETED])
    events = [event async for event in make_trigger().run()]
    assert len(events) == 1


async def test_two_copies_at_once_both_report_the_same_outcome(fake_client: Any) -> None:
    fake_client([status("processing"), status("processing"), COMPLETED])
    trigger = make_trigger()
    twin = NyneInteractionsTrigger(**trigger.serialize()[1])
    one, two = await asyncio.gather(first_event(trigger), first_event(twin))
    assert one.payload["status"] == two.payload["status"] == "success"


async def test_polls_through_a_client_without_its_own_retries(fake_client: Any) -> None:
    fake_client([COMPLETED])
    await first_event(make_trigger(nyne_conn_id="nyne_x"))
    assert fake_client.created["conn_id"] == "nyne_x"
    assert fake_client.created["retry"].max_retries == 0


async def test_unexpected_exception_becomes_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: NyneHook) -> Any:
        raise RuntimeError("bug in the client")

    monkeypatch.setattr(NyneHook, "aget_conn", broken)
    event = await first_event(make_trigger())
    assert event.payload["status"] == "error"
    assert event.payload["message"] == "unexpected error while waiting: RuntimeError: bug in the client"


# --- real hook: connection handling and secrets --------------------------------------------


async def test_missing_connection_gives_an_error_event_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_NOWHERE", raising=False)
    event = await first_event(make_trigger(nyne_conn_id="nyne_nowhere"))
    assert event.payload["status"] == "error"
    assert "'nyne_nowhere' does not exist" in event.payload["message"]
    assert event.payload["polls"] == 0


async def test_secrets_never_in_serialize_repr_events_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Port 9 (discard) on loopback: nothing listens, every poll fails with a transport error.
    conn = {"conn_type": "nyne", "login": KEY, "password": SECRET, "host": "http://127.0.0.1:9"}
    monkeypatch.setenv("AIRFLOW_CONN_NYNE_SECRETS", json.dumps(conn))
    caplog.set_level(logging.DEBUG)
    trigger = make_trigger(nyne_conn_id="nyne_secrets", max_transient_errors=1)
    event = await first_event(trigger)
    assert event.payload["status"] == "error"
    assert event.payload["polls"] == 2
    exposed = " ".join(
        [repr(trigger), json.dumps(trigger.serialize()), json.dumps(event.payload), caplog.text]
    )
    assert KEY not in exposed
    assert SECRET not in exposed


async def test_a_killed_wait_says_the_lookup_keeps_running(capsys: pytest.CaptureFixture[str]) -> None:
    # Airflow 3.3 calls a trigger's on_kill when a user kills the waiting task (its log: stdout here).
    await make_trigger().on_kill()
    [line] = [line for line in capsys.readouterr().out.splitlines() if "req-1" in line]
    assert "keeps running at Nyne" in line
    assert "waits for this request again" in line
