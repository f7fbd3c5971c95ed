"""Planning a submission's callback: the capability URL, its secret and what it may name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_nyne.callbacks.config import CallbackConfigError
from airflow_provider_nyne.callbacks.plan import plan_callback, resolve_asset, with_callback_url
from airflow_provider_nyne.callbacks.tokens import decode_correlation_id, make_token
from airflow_provider_nyne.client.errors import NyneValidationError
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.utils.arguments import check_wait_mode

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


def test_wait_mode_is_checked() -> None:
    assert check_wait_mode("callback") == "callback"
    with pytest.raises(ValueError, match="poll, callback"):
        check_wait_mode("push")


def test_missing_base_url_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch)
    with pytest.raises(CallbackConfigError, match="callback_base_url"):
        plan_callback({"ti": FakeTI()}, NyneHook(), wait=True)


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
def test_a_connection_secret_signs_only_nyne_assets_or_outlets(
    monkeypatch: pytest.MonkeyPatch,
    conn_secret: str | None,
    asset: str,
    outlets: tuple[str, ...],
    allowed: bool,
) -> None:
    _set_conn(monkeypatch, secret=conn_secret)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", BASE)
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", "config-secret")
    context = {"ti": FakeTI(), "task": _OutletTask(*outlets)}
    if allowed:
        plan = plan_callback(context, NyneHook(), wait=False, asset_name=asset, asset_uri=asset)
        assert decode_correlation_id(plan.correlation_id).asset_uri == asset
        return
    with pytest.raises(
        CallbackConfigError, match=r"nyne:// Assets or the task's outlets.*\[nyne\] callback_secret"
    ):
        plan_callback(context, NyneHook(), wait=False, asset_name=asset, asset_uri=asset)


def test_with_callback_url_replaces_the_requests_url_and_checks_the_allow_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_DEFAULT",
        json.dumps(
            {
                "conn_type": "nyne",
                "login": "k",
                "password": "p",
                "extra": {"callback_allowed_hosts": "airflow.example.com"},
            }
        ),
    )
    request = InteractionRequest.create(
        "https://x.com/nasa", "followers", callback_url="https://old.example/cb"
    )
    built = with_callback_url(NyneHook(), request, f"{BASE}/nyne/v1/callback/c/t")
    assert built.callback_url == f"{BASE}/nyne/v1/callback/c/t"
    with pytest.raises(NyneValidationError, match="callback_url"):
        with_callback_url(NyneHook(), request, "https://elsewhere.example/cb")


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
