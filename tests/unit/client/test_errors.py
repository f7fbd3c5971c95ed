"""Every documented error answer, through the real clients, mapped to the exception that names the fix.

Answers come from an ``httpx.MockTransport``; the clients, their response handling and their
error mapping are the real ones. Retrying is disabled here (``NO_RETRY``) so that each test
sees exactly one answer; retries have their own tests in ``test_http.py``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import pickle
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneCreditsError,
    NyneError,
    NyneForbiddenError,
    NyneJobFailedError,
    NyneNotFoundError,
    NyneRateLimitError,
    NyneResponseError,
    NyneServerError,
    NyneTransportError,
    NyneValidationError,
    error_from_event,
    error_from_response,
    redact,
)
from airflow_provider_nyne.client.http import AsyncNyneClient, NyneClient
from airflow_provider_nyne.client.ratelimit import UNLIMITED, parse_retry_after
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.client.retry import NO_RETRY

KEY = "nyne-key-7f3a9c"
SECRET = "nyne-secret-0b1d2e"
Handler = Callable[[httpx.Request], httpx.Response]


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, (bytes, str)):
            return httpx.Response(status, content=body, headers=headers)
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


def call(kind: str, handler: Handler, what: str = "status") -> Any:
    """Run one API call with the sync or async client against ``handler``."""
    if kind == "sync":
        with NyneClient(KEY, SECRET, base_url="http://nyne.test", transport=httpx.MockTransport(handler),
                        retry=NO_RETRY, rate_limits=UNLIMITED) as client:  # fmt: skip
            if what == "submit":
                return client.submit(InteractionRequest.create("https://x.com/nasa", "followers"))
            if what == "usage":
                return client.get_usage()
            return client.get_status("req_123")

    async def run() -> Any:
        async with AsyncNyneClient(KEY, SECRET, base_url="http://nyne.test", transport=httpx.MockTransport(handler),
                                   retry=NO_RETRY, rate_limits=UNLIMITED) as client:  # fmt: skip
            if what == "submit":
                return await client.submit(InteractionRequest.create("https://x.com/nasa", "followers"))
            if what == "usage":
                return await client.get_usage()
            return await client.get_status("req_123")

    return asyncio.run(run())


def err(status: int, code: str, message: str = "") -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message or code.replace("_", " ")}}


STATUS_CASES = [
    # (status, code, exception, what the message must say, extra attribute checks)
    pytest.param(400, "invalid_social_media_url", NyneValidationError, "the API rejected the request",
                 {"field": "social_media_url"}, id="400-invalid_social_media_url"),
    pytest.param(400, "invalid_type", NyneValidationError, "the API rejected the request",
                 {"field": "type"}, id="400-invalid_type"),
    pytest.param(400, "invalid_tweet_id", NyneValidationError, "the API rejected the request",
                 {"field": "tweet_id"}, id="400-invalid_tweet_id"),
    pytest.param(400, "invalid_username", NyneValidationError, "the API rejected the request",
                 {"field": "username"}, id="400-invalid_username"),
    pytest.param(400, "invalid_max_results", NyneValidationError, "the API rejected the request",
                 {"field": "max_results"}, id="400-invalid_max_results"),
    pytest.param(400, "invalid_callback_url", NyneValidationError, "the API rejected the request",
                 {"field": "callback_url"}, id="400-invalid_callback_url"),
    pytest.param(400, "invalid_json", NyneValidationError, "the API rejected the request",
                 {"field": None}, id="400-invalid_json-names-no-field"),
    pytest.param(400, "invalid_request", NyneValidationError, "the API rejected the request",
                 {"field": None}, id="400-invalid_request"),
    pytest.param(401, "missing_api_key", NyneAuthError, "the API key is missing: set the connection's login (API Key)",
                 {}, id="401-missing_api_key"),
    pytest.param(401, "invalid_api_key", NyneAuthError, "the API key was rejected: check the connection's login (API Key)",
                 {}, id="401-invalid_api_key"),
    pytest.param(401, "missing_api_secret", NyneAuthError,
                 "the API secret is missing: set the connection's password (API Secret)", {}, id="401-missing_api_secret"),
    pytest.param(401, "invalid_api_secret", NyneAuthError,
                 "the API secret was rejected: check the connection's password (API Secret)", {},
                 id="401-invalid_api_secret"),
    pytest.param(401, "token_expired", NyneAuthError, "the API key or secret was rejected: check the connection's login and password",
                 {}, id="401-unknown-code"),
    pytest.param(402, "insufficient_credits", NyneCreditsError, "the account is out of credits: top up", {},
                 id="402-insufficient_credits"),
    pytest.param(403, "subscription_required", NyneForbiddenError, "needs an active Nyne subscription",
                 {"reason": "subscription_required"}, id="403-subscription_required"),
    pytest.param(403, "api_key_disabled", NyneForbiddenError, "the API key is disabled",
                 {"reason": "api_key_disabled"}, id="403-api_key_disabled"),
    pytest.param(403, "permission_denied", NyneForbiddenError, "lacks permission for the Social Interactions API",
                 {"reason": "permission_denied"}, id="403-permission_denied"),
    pytest.param(403, "ip_not_allowed", NyneForbiddenError,
                 "add the public IP of your Airflow workers and triggerer to the key's allowed IPs",
                 {"reason": "ip_not_allowed"}, id="403-ip_not_allowed"),
    pytest.param(404, "request_not_found", NyneNotFoundError,
                 "request 'req_123' was not found: it expired or never existed; submit the lookup again",
                 {"request_id": "req_123"}, id="404-request_not_found"),
    pytest.param(429, "rate_limit_exceeded", NyneRateLimitError, "rate limit exceeded", {"retry_after": None},
                 id="429-rate_limit_exceeded"),
    pytest.param(500, "internal_error", NyneServerError, "the Nyne API failed on its side", {}, id="500-internal_error"),
    pytest.param(503, "service_unavailable", NyneServerError, "the Nyne API failed on its side", {},
                 id="503-service_unavailable"),
    pytest.param(418, "teapot", NyneError, "unexpected answer from the Nyne API", {}, id="418-unexpected"),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("status", "code", "exc_type", "text", "attrs"), STATUS_CASES)
def test_error_status_maps_to_exception(
    kind: str, status: int, code: str, exc_type: type[NyneError], text: str, attrs: dict[str, Any]
) -> None:
    with pytest.raises(exc_type) as info:
        call(kind, answer(status, err(status, code, "server says why")))
    error = info.value
    assert type(error) is exc_type
    assert error.status_code == status
    assert error.code == code
    assert text in error.message
    # The server's own words are kept after the hint.
    assert error.message.endswith(": server says why")
    assert str(error).startswith(f"[HTTP {status} {code}] ")
    for name, value in attrs.items():
        assert getattr(error, name) == value


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (402, False),
        (403, False),
        (404, False),
        (429, True),
        (500, True),
        (503, True),
    ],
)
def test_retryable_flag(status: int, retryable: bool) -> None:
    assert error_from_response(status, None, {}).retryable is retryable


def test_404_without_code_or_request_id() -> None:
    error = error_from_response(404, None, {})
    assert isinstance(error, NyneNotFoundError)
    assert error.code == "request_not_found"
    assert error.message.startswith("the resource was not found")


BODY_CASES = [
    pytest.param({"success": False, "error": {"code": "invalid_api_key", "message": "Invalid API key"}},
                 "invalid_api_key", "Invalid API key", id="error.code+error.message"),
    pytest.param({"error": {"type": "invalid_api_key", "detail": "Invalid API key"}},
                 "invalid_api_key", "Invalid API key", id="error.type+error.detail"),
    pytest.param({"error": "invalid_api_key"}, "invalid_api_key", None, id="error-string-is-a-code"),
    pytest.param({"error": "Invalid API key provided"}, None, "Invalid API key provided", id="error-string-is-a-message"),
    pytest.param({"error": "invalid_api_key", "message": "The key is wrong"}, "invalid_api_key", "The key is wrong",
                 id="error-code-string+message"),
    pytest.param({"code": "invalid_api_key", "message": "The key is wrong"}, "invalid_api_key", "The key is wrong",
                 id="top-level-code+message"),
    pytest.param({"message": "The key is wrong"}, None, "The key is wrong", id="message-only"),
    pytest.param({"detail": "Not authenticated"}, None, "Not authenticated", id="detail-string"),
    pytest.param({"detail": {"code": "invalid_api_key", "message": "bad key"}}, "invalid_api_key", "bad key",
                 id="detail-object"),
    pytest.param({"detail": {"reason": "bad key"}}, None, '{"reason": "bad key"}', id="detail-object-without-message"),
    pytest.param({"detail": [{"loc": ["header", "x-api-key"], "msg": "field required"}]}, None,
                 '[{"loc": ["header", "x-api-key"], "msg": "field required"}]', id="detail-list"),
    pytest.param(b"Unauthorized", None, None, id="plain-text-body"),
    pytest.param(None, None, None, id="empty-body"),
    pytest.param(["unexpected"], None, None, id="json-list-body"),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("body", "code", "message"), BODY_CASES)
def test_error_body_shapes(kind: str, body: Any, code: str | None, message: str | None) -> None:
    with pytest.raises(NyneAuthError) as info:
        call(kind, answer(401, body), what="usage")
    error = info.value
    assert error.status_code == 401  # always kept, whatever the body
    assert error.code == code
    if message is None:
        assert error.message.endswith("(API Key)") or error.message.endswith("login and password")
    else:
        assert error.message.endswith(f": {message}")
    if code == "invalid_api_key":
        assert "check the connection's login (API Key)" in error.message


def test_long_detail_list_is_truncated() -> None:
    error = error_from_response(422, {"detail": [{"msg": "x" * 50}] * 20}, {})
    assert isinstance(error, NyneValidationError)
    assert error.status_code == 422
    assert len(error.message) < 400


def test_5xx_html_body_keeps_status() -> None:
    with pytest.raises(NyneServerError) as info:
        call("sync", answer(502, b"<html>Bad Gateway</html>", {"content-type": "text/html"}))
    assert (info.value.status_code, info.value.code) == (502, None)
    assert info.value.message == "the Nyne API failed on its side"


# --- 429 and Retry-After -------------------------------------------------------------------

NOW = 1_750_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "7"}, 7.0, id="retry-after-seconds"),
        pytest.param({"retry-after": " 2.5 "}, 2.5, id="retry-after-fraction-lower-case"),
        pytest.param({"Retry-After": "-4"}, 0.0, id="retry-after-negative"),
        pytest.param({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0, id="retry-after-http-date"),
        pytest.param({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0, id="retry-after-past-date"),
        pytest.param({"Retry-After": "soon"}, None, id="retry-after-garbage"),
        pytest.param({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW + 40))}, 40.0,
                     id="x-ratelimit-reset-epoch"),
        pytest.param({"X-RateLimit-Reset": str(int(NOW + 40))}, 40.0, id="x-ratelimit-reset-without-remaining"),
        pytest.param({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(int(NOW + 40))}, None,
                     id="x-ratelimit-reset-ignored-when-remaining"),
        pytest.param({"X-RateLimit-Reset": "25"}, 25.0, id="x-ratelimit-reset-small-is-seconds"),
        pytest.param({"RateLimit-Remaining": "0", "RateLimit-Reset": "12"}, 12.0, id="ratelimit-reset-seconds"),
        pytest.param({"RateLimit-Reset": "12"}, 12.0, id="ratelimit-reset-without-remaining"),
        pytest.param({"RateLimit-Reset": "x", "X-RateLimit-Reset": str(int(NOW + 9))}, 9.0,
                     id="bad-ratelimit-reset-falls-back"),
        pytest.param({"X-RateLimit-Reset": "tomorrow"}, None, id="x-ratelimit-reset-garbage"),
        pytest.param({"Retry-After": "3", "RateLimit-Reset": "50"}, 3.0, id="retry-after-wins"),
        pytest.param({}, None, id="no-headers"),
    ],
)  # fmt: skip
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


def test_parse_retry_after_date_without_zone_is_utc() -> None:
    assert parse_retry_after({"Retry-After": email.utils.formatdate(NOW + 60)}, now=NOW) == 60.0
    naive = time.strftime("%a, %d %b %Y %H:%M:%S -0000", time.gmtime(NOW + 15))
    assert parse_retry_after({"Retry-After": naive}, now=NOW) == 15.0


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        pytest.param({"Retry-After": "7"}, 7.0, 7.0, id="seconds"),
        pytest.param({"Retry-After": "HTTP-DATE"}, 100.0, 120.0, id="http-date"),
        pytest.param({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "EPOCH"},
                     100.0, 120.0, id="x-ratelimit-reset"),
        pytest.param({"RateLimit-Limit": "60", "RateLimit-Remaining": "0", "RateLimit-Reset": "42"}, 42.0, 42.0,
                     id="ratelimit-reset"),
    ],
)  # fmt: skip
def test_429_carries_retry_after(kind: str, headers: dict[str, str], low: float, high: float) -> None:
    now = time.time()
    real = {
        k: v.replace("HTTP-DATE", email.utils.formatdate(now + 120, usegmt=True)).replace(
            "EPOCH", str(int(now + 120))
        )
        for k, v in headers.items()
    }
    with pytest.raises(NyneRateLimitError) as info:
        call(kind, answer(429, {"error": "rate_limit_exceeded"}, real), what="submit")
    error = info.value
    assert error.retry_after is not None
    assert low <= error.retry_after <= high
    assert error.code == "rate_limit_exceeded"
    assert error.status_code == 429
    assert f"(retry after {error.retry_after:.0f}s)" in error.message
    assert "60 requests/minute" in error.message


# --- the exception classes themselves ----------------------------------------------------


def test_hierarchy_lets_callers_catch_by_meaning() -> None:
    for cls in (
        NyneValidationError,
        NyneAuthError,
        NyneCreditsError,
        NyneForbiddenError,
        NyneNotFoundError,
        NyneRateLimitError,
        NyneServerError,
        NyneResponseError,
        NyneTransportError,
        NyneJobFailedError,
    ):
        assert issubclass(cls, NyneError)
    assert issubclass(NyneValidationError, ValueError)  # bad input is a ValueError too
    retryable = {c.__name__ for c in NyneError.__subclasses__() if c.retryable}
    assert retryable == {
        "NyneRateLimitError",
        "NyneServerError",
        "NyneResponseError",
        "NyneTransportError",
        "NyneJobFailedError",  # a retried task submits again: a failed lookup costs nothing
    }


def test_str_and_repr() -> None:
    error = NyneAuthError("bad key", status_code=401, code="invalid_api_key", request_id="req_1")
    assert str(error) == "[HTTP 401 invalid_api_key] bad key"
    assert repr(error) == (
        "NyneAuthError(message='bad key', status_code=401, code='invalid_api_key', request_id='req_1')"
    )
    assert str(NyneError("plain")) == "plain"
    assert str(NyneError("no code", status_code=500)) == "[HTTP 500] no code"


def test_message_and_args_stay_in_step() -> None:
    error = NyneServerError("the key nyne-key-7f3a9c leaked", status_code=500)
    error.message = redact(error.message, [KEY])
    assert error.args == ("the key *** leaked",)
    assert KEY not in str(error)
    assert KEY not in repr(error)


@pytest.mark.parametrize(
    "error",
    [
        NyneValidationError("type: bad", field="type"),
        NyneRateLimitError("slow down", retry_after=3.5, status_code=429, code="rate_limit_exceeded"),
        NyneTransportError("dropped", request_sent=False, request_id="req_1"),
        NyneForbiddenError("no", status_code=403, code="ip_not_allowed"),
        NyneJobFailedError("private account", request_id="req_2"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_with_their_attributes(error: NyneError) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert vars(clone) == vars(error)
    assert str(clone) == str(error)
    assert clone.args == error.args


def test_redact() -> None:
    assert redact("key=abcdef secret=ghijkl abcdef", ["abcdef", "ghijkl"]) == "key=*** secret=*** ***"
    # Empty and very short values are not redacted: replacing "a" everywhere would garble the text.
    assert redact("a message", [None, "", "a"]) == "a message"


def test_server_message_echoing_credentials_is_redacted() -> None:
    body = {"error": {"code": "invalid_api_key", "message": f"key {KEY} with secret {SECRET} is invalid"}}
    with pytest.raises(NyneAuthError) as info:
        call("sync", answer(401, body), what="usage")
    text = f"{info.value} {info.value!r} {info.value.args}"
    assert KEY not in text
    assert SECRET not in text
    assert "key *** with secret *** is invalid" in info.value.message


def test_json_decoding_of_error_body_is_not_confused_by_content_type() -> None:
    raw = json.dumps(err(403, "ip_not_allowed")).encode()
    with pytest.raises(NyneForbiddenError) as info:
        call("sync", answer(403, raw, {"content-type": "text/plain"}))
    assert info.value.reason == "ip_not_allowed"


# --- errors through trigger events -----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        NyneValidationError("bad type", status_code=400, code="invalid_type", field="type"),
        NyneValidationError("no such connection", field="nyne_conn_id"),
        NyneAuthError("no key", code="missing_api_key"),
        NyneAuthError("key rejected", status_code=401, code="invalid_api_key"),
        NyneCreditsError("out of credits", status_code=402, code="insufficient_credits"),
        NyneForbiddenError("ip", status_code=403, code="ip_not_allowed"),
        NyneNotFoundError("expired", status_code=404, code="request_not_found"),
        NyneRateLimitError("slow down", status_code=429, code="rate_limit_exceeded", retry_after=3),
        NyneServerError("down", status_code=503, code="service_unavailable"),
        NyneResponseError("not JSON", status_code=200),
        NyneTransportError("connection reset"),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.status_code}-{e.code}",
)
def test_an_error_comes_back_from_its_event_as_the_same_class(error: NyneError) -> None:
    event = {"status": "error", "request_id": "r", **error.to_event()}
    back = error_from_event(event)
    assert type(back) is type(error)
    assert (back.status_code, back.code, back.message, back.request_id) == (
        error.status_code,
        error.code,
        error.message,
        "r",
    )
    # The retry rules follow the class, so a task decides the same way a client would have.
    assert back.retryable is error.retryable
    assert back.may_retry(idempotent=False) is error.may_retry(idempotent=False)


@pytest.mark.parametrize(
    ("http_status", "cls"),
    [(401, NyneAuthError), (404, NyneNotFoundError), (503, NyneServerError), (None, NyneTransportError)],
    ids=["401", "404", "503", "no-status"],
)
def test_an_event_without_its_error_class_is_classified_by_status(http_status: int | None, cls: type) -> None:
    back = error_from_event(
        {"status": "error", "request_id": "r", "message": "m", "http_status": http_status}
    )
    assert type(back) is cls
    assert back.message == "m"


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (NyneRateLimitError("429", status_code=429), False, True),
        (NyneServerError("503", status_code=503), False, True),
        (NyneServerError("500", status_code=500), False, False),
        (NyneServerError("500", status_code=500), True, True),
        (NyneTransportError("refused", request_sent=False), False, True),
        (NyneTransportError("read timeout", request_sent=True), False, False),
        (NyneTransportError("read timeout", request_sent=True), True, True),
        (NyneResponseError("no request id", status_code=202), False, False),
        (NyneAuthError("401", status_code=401), True, False),
        (NyneValidationError("400", status_code=400), False, False),
        (NyneJobFailedError("failed"), True, True),
    ],
    ids=[
        "429-post",
        "503-post",
        "500-post",
        "500-get",
        "refused-post",
        "read-timeout-post",
        "read-timeout-get",
        "no-request-id-post",
        "401-get",
        "400-post",
        "job-failed",
    ],
)
def test_may_retry_is_the_one_rule(error: NyneError, idempotent: bool, expected: bool) -> None:
    assert error.may_retry(idempotent=idempotent) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NyneValidationError("bad url", field="social_media_url"), True),
        (NyneAuthError("no key", code="missing_api_key"), True),
        (NyneCreditsError("402", status_code=402), True),
        (NyneForbiddenError("403", status_code=403), True),
        (NyneRateLimitError("429", status_code=429), True),
        (NyneServerError("503", status_code=503), True),
        (NyneServerError("500", status_code=500), False),
        (NyneTransportError("refused", request_sent=False), True),
        (NyneTransportError("reset", request_sent=True), False),
        (NyneResponseError("202 without id", status_code=202), False),
        (NyneResponseError("no request_id"), False),
        (NyneValidationError("invalid", status_code=400), True),
        (NyneAuthError("bad key", status_code=401), True),
        (NyneNotFoundError("wrong base URL path", status_code=404), True),
        (NyneServerError("bad gateway", status_code=502), False),
        (NyneError("something else"), False),
    ],
    ids=[
        "local-400",
        "no-key",
        "402",
        "403",
        "429",
        "503",
        "500",
        "refused",
        "reset",
        "unreadable",
        "no-request-id",
        "400",
        "401",
        "404",
        "502",
        "unknown",
    ],
)
def test_proves_not_processed(error: NyneError, expected: bool) -> None:
    assert error.proves_not_processed is expected
