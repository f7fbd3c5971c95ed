from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import respx
from airflow.sdk import Asset

from airflow_provider_nyne import assets
from airflow_provider_nyne._compat import AirflowFailException
from airflow_provider_nyne.callbacks.assets import (
    callback_refs_from_asset_events,
    fetch_callback_status,
    interactions_asset,
    interactions_asset_uri,
    request_id_from_asset_events,
    request_ids_from_asset_events,
)
from airflow_provider_nyne.callbacks.tokens import TOKEN_HEADER, mailbox_path, make_token
from airflow_provider_nyne.client.errors import NyneResponseError


def test_the_1_0_import_path_serves_the_asset_helpers() -> None:
    # What the URIs are is tested in tests/unit/test_assets.py; DAGs written for 1.0 import them from here.
    assert interactions_asset is assets.interactions_asset
    assert interactions_asset_uri is assets.interactions_asset_uri


def _event(rid: str, minute: int, *, source: str = "nyne_callback", cid: str | None = "cid") -> Any:
    extra: dict[str, Any] = {"request_id": rid, "source": source}
    if cid:
        extra["payload_ref"] = {"table": "nyne_callback", "request_id": rid, "correlation_id": cid}
    return SimpleNamespace(extra=extra, timestamp=datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc))


A = Asset(uri="nyne://interactions/twitter/nasa/followers")
B = Asset(name="landed_b", uri="nyne://interactions/twitter/esa/followers")


class _Events:
    """Like ``triggering_asset_events`` (Airflow 3.1's ``Asset`` is not hashable, so no dict)."""

    def __init__(self, *pairs: tuple[Any, list[Any]]) -> None:
        self._pairs = pairs

    def items(self) -> list[tuple[Any, list[Any]]]:
        return list(self._pairs)


def test_latest_callback_event_wins_and_others_are_ignored() -> None:
    context = {
        "triggering_asset_events": _Events(
            (A, [_event("r2", 5, cid="c2"), _event("r1", 1), _event("x", 9, source="something_else")]),
            (B, [_event("r3", 3)]),
        )
    }
    assert request_ids_from_asset_events(context) == ["r1", "r3", "r2"]
    assert request_id_from_asset_events(context) == "r2"
    # A URI matches as Airflow normalises it.
    assert request_id_from_asset_events(context, asset="nyne://interactions/twitter/ESA/followers") == "r3"
    assert request_id_from_asset_events(context, asset=B) == "r3"
    assert callback_refs_from_asset_events(context)[-1].correlation_id == "c2"


def test_no_callback_event_fails_with_the_fix() -> None:
    with pytest.raises(AirflowFailException, match="not triggered by a Nyne callback"):
        request_id_from_asset_events({"triggering_asset_events": {}})


ROOT = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        pytest.param(
            httpx.Response(
                200, json={"data": {"request_id": "r", "status": "completed", "result": {"interactions": []}}}
            ),
            "completed",
            id="stored",
        ),
        pytest.param(httpx.Response(204), None, id="nothing-stored"),
        pytest.param(httpx.Response(404, json={"detail": "Not Found"}), "secret differs", id="token-refused"),
        pytest.param(httpx.Response(503), "HTTP 503", id="receiver-down"),
    ],
)
@respx.mock
def test_fetch_callback_status(answer: httpx.Response, outcome: str | None) -> None:
    respx.get(
        ROOT + mailbox_path("cid"), params={"request_id": "r"}, headers={TOKEN_HEADER: make_token("s", "cid")}
    ).mock(return_value=answer)
    if outcome in (None, "completed"):
        status = fetch_callback_status("r", "cid", secret="s", base_url=ROOT)
        assert (status.status if status else None) == outcome
    else:
        with pytest.raises(NyneResponseError, match=outcome):
            fetch_callback_status("r", "cid", secret="s", base_url=ROOT)


def test_fetch_without_secret_or_url_names_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__NYNE__CALLBACK_SECRET", raising=False)
    with pytest.raises(NyneResponseError, match="callback_internal_url"):
        fetch_callback_status("r", "cid", base_url=ROOT)
