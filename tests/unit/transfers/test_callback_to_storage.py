"""NyneCallbackResultToObjectStorageOperator: the result comes from the receiver, not the API."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import respx
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_nyne._compat import AirflowFailException
from airflow_provider_nyne.callbacks.tokens import TOKEN_HEADER, mailbox_path, make_token
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator

ROOT = "http://127.0.0.1:9"
SECRET = "transfer-secret"
DATA = {
    "request_id": "req-1",
    "status": "completed",
    "completed": True,
    "result": {
        "interaction_type": "followers",
        "platform": "twitter",
        "target": {"username": "nasa"},
        "interactions": [{"username": "alice"}, {"username": "bob"}],
        "total_count": 2,
    },
}


class NoApiHook:
    """The API must not be asked unless the test says so."""

    def __init__(self, allow: bool = False) -> None:
        self.allow = allow
        self.polled: list[str] = []
        self.settings = SimpleNamespace(callback_secret=None)

    def get_interactions_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        self.polled.append(request_id)
        if not self.allow:
            raise AssertionError("the API was asked")
        return JobStatus.from_api(DATA)


@pytest.fixture(autouse=True)
def _config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", SECRET)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_INTERNAL_URL", ROOT)


def _op(tmp_path: Path, hook: NoApiHook, **kwargs: Any) -> NyneCallbackResultToObjectStorageOperator:
    op = NyneCallbackResultToObjectStorageOperator(
        task_id="land", path=f"file://{tmp_path / 'out.jsonl'}", **kwargs
    )
    op.__dict__["hook"] = hook
    return op


def _mailbox(cid: str, response: httpx.Response) -> respx.Route:
    return respx.get(
        ROOT + mailbox_path(cid),
        params={"request_id": "req-1"},
        headers={TOKEN_HEADER: make_token(SECRET, cid)},
    ).mock(return_value=response)


@respx.mock
def test_lands_the_stored_callback_without_asking_the_api(tmp_path: Path) -> None:
    route = _mailbox("cid-1", httpx.Response(200, json={"data": DATA}))
    hook = NoApiHook()
    summary = _op(tmp_path, hook, request_id="req-1", correlation_id="cid-1").execute(
        {"outlet_events": OutletEventAccessors()}
    )
    assert route.call_count == 1
    assert hook.polled == []
    assert summary["records"] == 2
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["username"] for line in lines] == ["alice", "bob"]


@respx.mock
def test_lineage_and_asset_event_come_from_the_stored_callback(tmp_path: Path) -> None:
    from airflow.sdk import Asset

    _mailbox("cid-1", httpx.Response(200, json={"data": DATA}))
    op = _op(tmp_path, NoApiHook(), request_id="req-1", correlation_id="cid-1")
    ctx = {"outlet_events": OutletEventAccessors()}
    op.execute(ctx)

    dest = tmp_path / "out.jsonl"
    assert ctx["outlet_events"][Asset(uri=f"file://{dest}")].extra["file"] == f"file://{dest}"
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("nyne", "interactions/twitter/nasa/followers")
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(dest))]


@respx.mock
def test_takes_request_and_correlation_from_the_triggering_asset_event(tmp_path: Path) -> None:
    from airflow.sdk import Asset

    _mailbox("cid-9", httpx.Response(200, json={"data": DATA}))
    event = SimpleNamespace(
        extra={"request_id": "req-1", "source": "nyne_callback", "payload_ref": {"correlation_id": "cid-9"}},
        timestamp=None,
    )

    class Events:
        def items(self) -> list[tuple[Any, list[Any]]]:
            return [(Asset(uri="nyne://interactions/twitter/nasa/followers"), [event])]

    hook = NoApiHook()
    summary = _op(tmp_path, hook).execute(
        {"outlet_events": OutletEventAccessors(), "triggering_asset_events": Events()}
    )
    assert summary["request_id"] == "req-1"
    assert hook.polled == []


@respx.mock
def test_nothing_stored_asks_the_api_once_or_fails_when_told_not_to(tmp_path: Path) -> None:
    _mailbox("cid-1", httpx.Response(204))
    hook = NoApiHook(allow=True)
    assert (
        _op(tmp_path, hook, request_id="req-1", correlation_id="cid-1").execute(
            {"outlet_events": OutletEventAccessors()}
        )["records"]
        == 2
    )
    assert hook.polled == ["req-1"]
    (tmp_path / "out.jsonl").unlink()
    with pytest.raises(AirflowFailException, match="holds no result"):
        _op(tmp_path, NoApiHook(), request_id="req-1", correlation_id="cid-1", fallback_to_api=False).execute(
            {"outlet_events": OutletEventAccessors()}
        )


def test_no_request_anywhere_fails_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match="no request to land"):
        _op(tmp_path, NoApiHook()).execute(
            {"outlet_events": OutletEventAccessors(), "triggering_asset_events": {}}
        )
