from __future__ import annotations

import base64
import json

import pytest

from airflow_provider_nyne.callbacks.tokens import (
    CallbackTarget,
    callback_path,
    callback_url,
    connection_secret_may_sign,
    decode_correlation_id,
    encode_correlation_id,
    make_token,
    verify_token,
)

SECRET = "s3cret-value"
TARGET = CallbackTarget("dag", "submit", "manual__2026-01-01T00:00:00+00:00", 3, wait=True, conn_id="nyne_b")


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(CallbackTarget("d", "t", "r"), id="minimal"),
        pytest.param(TARGET, id="mapped-waiting-other-conn"),
        pytest.param(
            CallbackTarget("d", "t", "r", asset_name="nyne://i/x", asset_uri="nyne://i/x"), id="asset-uri"
        ),
        pytest.param(
            CallbackTarget("d", "t", "r", asset_name="landed", asset_uri="s3://b/k"), id="asset-name-uri"
        ),
        pytest.param(CallbackTarget("dä/g", "t.1", "run id with spaces & ünïcode"), id="unicode"),
    ],
)
def test_correlation_id_round_trips_and_is_url_safe(target: CallbackTarget) -> None:
    cid = encode_correlation_id(target)
    assert decode_correlation_id(cid) == target
    assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert encode_correlation_id(target) == cid  # deterministic: the submit side can rebuild it


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("!!!", id="not-base64"),
        pytest.param(base64.urlsafe_b64encode(b"[1,2]").decode().rstrip("="), id="json-not-object"),
        pytest.param(
            base64.urlsafe_b64encode(json.dumps({"v": 2, "d": "x"}).encode()).decode(), id="future-version"
        ),
        pytest.param(
            base64.urlsafe_b64encode(json.dumps({"v": 1, "d": "x"}).encode()).decode(), id="missing-keys"
        ),
        pytest.param("A" * 5000, id="too-long"),
    ],
)
def test_decode_rejects_what_it_did_not_make(text: str) -> None:
    with pytest.raises(ValueError):
        decode_correlation_id(text)


def test_token_verifies_only_its_correlation_id_and_secret() -> None:
    cid = encode_correlation_id(TARGET)
    token = make_token(SECRET, cid)
    assert verify_token(SECRET, cid, token)
    other = encode_correlation_id(CallbackTarget("dag", "submit", "another-run"))
    assert not verify_token(SECRET, other, token)
    assert not verify_token("other-secret", cid, token)
    assert not verify_token(SECRET, cid, token[:-1] + ("A" if token[-1] != "A" else "B"))


@pytest.mark.parametrize(
    ("secret", "token"),
    [
        pytest.param(None, "x", id="no-secret"),
        pytest.param("", "x", id="empty-secret"),
        pytest.param(SECRET, None, id="no-token"),
        pytest.param(SECRET, "", id="empty-token"),
        pytest.param(SECRET, "ünïcode-token", id="non-ascii-token"),
    ],
)
def test_verify_token_never_raises_and_refuses(secret: str | None, token: str | None) -> None:
    assert verify_token(secret, "cid", token) is False


def test_verify_uses_constant_time_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from airflow_provider_nyne.callbacks import tokens

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    assert tokens.verify_token(SECRET, "cid", make_token(SECRET, "cid"))
    assert len(calls) == 1


def test_make_token_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        make_token("", "cid")


def test_callback_url_is_the_capability_path_under_the_base() -> None:
    cid = encode_correlation_id(TARGET)
    url = callback_url("https://airflow.example.com/", cid, SECRET)
    assert url == "https://airflow.example.com" + callback_path(cid, make_token(SECRET, cid))
    assert url.startswith("https://airflow.example.com/nyne/v1/callback/" + cid + "/")
    assert SECRET not in url


_NYNE = CallbackTarget("d", "t", "r", asset_name="nyne://interactions/x", asset_uri="nyne://interactions/x")
_S3 = CallbackTarget("d", "t", "r", asset_name="s3://finance/ledger.csv", asset_uri="s3://finance/ledger.csv")


@pytest.mark.parametrize(
    ("target", "declared", "allowed"),
    [
        pytest.param(CallbackTarget("d", "t", "r", wait=True), [], True, id="no-asset"),
        pytest.param(_NYNE, [], True, id="nyne-asset"),
        pytest.param(_S3, [], False, id="foreign-asset"),
        pytest.param(
            _S3, [("s3://finance/ledger.csv", "s3://finance/ledger.csv")], True, id="declared-outlet"
        ),
        pytest.param(_S3, [("ledger", "s3://finance/ledger.csv")], False, id="same-uri-other-name"),
        pytest.param(
            CallbackTarget("d", "t", "r", asset_name="nyne-ish", asset_uri="nyneish://x"),
            [],
            False,
            id="lookalike",
        ),
    ],
)
def test_what_a_connection_secret_may_sign(
    target: CallbackTarget, declared: list[tuple[str, str]], allowed: bool
) -> None:
    assert connection_secret_may_sign(target, declared) is allowed
