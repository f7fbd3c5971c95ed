"""NyneClient / AsyncNyneClient: request building, answers, and the retry policy.

Most tests drive the real clients over ``httpx.MockTransport`` with the sleep function
replaced by a recorder, so that delays are asserted, not waited for; the retry policy is tested
with the request budget off (``UNLIMITED``), the budget's own part of an exchange (a 429
pausing the key) with it on. Transport failures are tested against small raw servers on
127.0.0.1, because their classification is what decides whether a POST may be sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from airflow_provider_nyne import __version__
from airflow_provider_nyne.client import http as http_mod
from airflow_provider_nyne.client.auth import Credentials
from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneError,
    NyneRateLimitError,
    NyneResponseError,
    NyneServerError,
    NyneTransportError,
    NyneValidationError,
)
from airflow_provider_nyne.client.http import AsyncNyneClient, NyneClient, user_agent
from airflow_provider_nyne.client.models import JobState
from airflow_provider_nyne.client.ratelimit import UNLIMITED, RateLimits
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.client.retry import NO_RETRY, RetryPolicy

KEY = "nyne-key-7f3a9c"
SECRET = "nyne-secret-0b1d2e"
FAST = RetryPolicy(max_retries=3, backoff_base=0.5, backoff_max=30.0, jitter=0.0, max_retry_after=60.0)
REQUEST = InteractionRequest.create("https://x.com/nasa", "followers", max_results=50)

Answer = Callable[[httpx.Request], httpx.Response] | BaseException


def ok_submit(rid: str = "req_1") -> Answer:
    return lambda r: httpx.Response(
        202, json={"success": True, "data": {"request_id": rid, "status": "queued"}, "timestamp": 1}
    )


def ok_status(status: str = "processing") -> Answer:
    return lambda r: httpx.Response(
        200, json={"success": True, "data": {"request_id": "req_1", "status": status}}
    )


def ok_usage() -> Answer:
    return lambda r: httpx.Response(200, json={"success": True, "data": {"credits_remaining": 42}})


def status(code: int, headers: dict[str, str] | None = None, body: Any = None) -> Answer:
    return lambda r: httpx.Response(
        code, json=body if body is not None else {"error": f"e{code}"}, headers=headers
    )


def raw(code: int, content: bytes) -> Answer:
    return lambda r: httpx.Response(code, content=content)


class Script:
    """A mock API answering from a list, recording every request it receives."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer(request)


class Sleeps(list[float]):
    """Replaces the clients' sleep functions; records the delays instead of waiting."""

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Sleeps:
        async def asleep(seconds: float) -> None:
            self.append(seconds)

        monkeypatch.setattr(
            http_mod,
            "time",
            types.SimpleNamespace(sleep=self.append, time=time.time, monotonic=time.monotonic),
        )
        monkeypatch.setattr(
            http_mod,
            "asyncio",
            types.SimpleNamespace(sleep=asleep, get_running_loop=asyncio.get_running_loop),
        )
        return self


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    return Sleeps().install(monkeypatch)


def run(kind: str, script: Script, what: str, retry: RetryPolicy = FAST, **kwargs: Any) -> Any:
    """One call with the sync or async client (budget off unless given); returns the result or the NyneError."""
    transport = httpx.MockTransport(script)
    kwargs.setdefault("rate_limits", UNLIMITED)

    def sync() -> Any:
        with NyneClient(
            KEY, SECRET, base_url="http://nyne.test/", transport=transport, retry=retry, **kwargs
        ) as c:
            if what == "submit":
                return c.submit(REQUEST)
            if what == "usage":
                return c.get_usage()
            return c.get_status("req_1")

    async def async_() -> Any:
        async with AsyncNyneClient(
            KEY, SECRET, base_url="http://nyne.test/", transport=transport, retry=retry, **kwargs
        ) as c:
            if what == "submit":
                return await c.submit(REQUEST)
            if what == "usage":
                return await c.get_usage()
            return await c.get_status("req_1")

    try:
        return sync() if kind == "sync" else asyncio.run(async_())
    except NyneError as err:
        return err


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


# --- request building ----------------------------------------------------------------------


@KINDS
def test_submit_request_on_the_wire(kind: str) -> None:
    script = Script(ok_submit("req_abc"))
    assert run(kind, script, "submit") == "req_abc"
    (sent,) = script.requests
    assert (sent.method, str(sent.url)) == ("POST", "http://nyne.test/person/interactions")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["x-api-secret"] == SECRET
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["user-agent"] == user_agent()
    assert "authorization" not in sent.headers  # not a bearer token
    assert json.loads(sent.content) == {
        "type": "followers",
        "max_results": 50,
        "social_media_url": "https://x.com/nasa",
        "username": "nasa",
    }


@KINDS
def test_status_and_usage_requests_on_the_wire(kind: str) -> None:
    script = Script(ok_status("completed"))
    result = run(kind, script, "status")
    assert result.state is JobState.COMPLETED
    assert result.request_id == "req_1"
    (sent,) = script.requests
    assert (sent.method, sent.url.path, dict(sent.url.params)) == (
        "GET",
        "/person/interactions",
        {"request_id": "req_1"},
    )
    assert sent.content == b""
    script = Script(ok_usage())
    assert run(kind, script, "usage") == {"credits_remaining": 42}
    assert script.requests[0].url.path == "/usage"
    assert script.requests[0].headers["x-api-secret"] == SECRET


def test_base_url_with_a_path_prefix() -> None:
    script = Script(ok_usage())
    with NyneClient(
        KEY, SECRET, base_url="http://gw.test/nyne/v1/", transport=httpx.MockTransport(script)
    ) as c:
        c.get_usage()
    assert str(script.requests[0].url) == "http://gw.test/nyne/v1/usage"


def test_submit_accepts_api_style_fields_and_validates_before_sending() -> None:
    script = Script(ok_submit())
    with NyneClient(KEY, SECRET, transport=httpx.MockTransport(script)) as client:
        assert (
            client.submit({"twitter_url": "https://x.com/nasa", "interaction_type": "following"}) == "req_1"
        )
        assert json.loads(script.requests[0].content)["type"] == "following"
        with pytest.raises(NyneValidationError) as info:
            client.submit({"twitter_url": "https://facebook.com/nasa", "type": "followers"})
        assert info.value.field == "social_media_url"
        with pytest.raises(NyneValidationError):
            client.get_status("  ")
    assert len(script.requests) == 1  # the invalid calls never reached the API


def test_client_allow_list_rechecks_requests_built_without_it() -> None:
    script = Script(ok_submit())
    request = InteractionRequest.create(username="nasa", type="followers", callback_url="https://evil.io/cb")
    with NyneClient(
        KEY, SECRET, transport=httpx.MockTransport(script), allowed_callback_hosts=["*.example.com"]
    ) as c:
        with pytest.raises(NyneValidationError) as info:
            c.submit(request)
        assert info.value.field == "callback_url"
        ok = InteractionRequest.create(
            username="nasa", type="followers", callback_url="https://a.example.com/cb"
        )
        assert c.submit(ok) == "req_1"
    assert len(script.requests) == 1


def test_status_id_is_stripped() -> None:
    script = Script(ok_status())
    with NyneClient(KEY, SECRET, transport=httpx.MockTransport(script)) as client:
        assert client.get_status("  req_9 \n").request_id == "req_1"
    assert script.requests[0].url.params["request_id"] == "req_9"


def test_user_agent_names_versions() -> None:
    assert user_agent().startswith(f"airflow-provider-nyne/{__version__} httpx/{httpx.__version__} python/")


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [
        pytest.param("", SECRET, "missing_api_key", id="empty-key"),
        pytest.param(KEY, "", "missing_api_secret", id="empty-secret"),
        pytest.param(None, SECRET, "missing_api_key", id="none-key"),
        pytest.param("key with space", SECRET, "invalid_api_key", id="space-in-key"),
        pytest.param(KEY, "s\u00e9cret-value", "invalid_api_secret", id="non-ascii-secret"),
        pytest.param(KEY, "secret\nInjected: 1", "invalid_api_secret", id="newline-in-secret"),
    ],
)
def test_credentials_checked_before_any_request(key: Any, secret: Any, code: str) -> None:
    with pytest.raises(NyneAuthError) as info:
        NyneClient(key, secret)
    assert info.value.code == code
    for value in (key, secret):
        if value:
            assert value not in str(info.value)


@KINDS
def test_pasted_whitespace_around_credentials_is_stripped(kind: str) -> None:
    script = Script(ok_usage())
    transport = httpx.MockTransport(script)
    if kind == "sync":
        with NyneClient(f" {KEY}\n", f"{SECRET}\r\n", transport=transport) as c:
            c.get_usage()
    else:

        async def go() -> None:
            async with AsyncNyneClient(f" {KEY}\n", f"{SECRET}\r\n", transport=transport) as c:
                await c.get_usage()

        asyncio.run(go())
    assert (script.requests[0].headers["x-api-key"], script.requests[0].headers["x-api-secret"]) == (
        KEY,
        SECRET,
    )


def test_credentials_repr_and_digest() -> None:
    creds = Credentials(KEY, SECRET)
    assert repr(creds) == str(creds) == "Credentials(api_key='***', api_secret='***')"
    assert creds.digest() == Credentials(KEY, SECRET).digest() != Credentials(KEY, "other-secret").digest()
    assert KEY not in creds.digest()


# --- successful answers that are not usable ----------------------------------------------------


@KINDS
@pytest.mark.parametrize(
    ("answer", "text"),
    [
        pytest.param(raw(200, b"<html>maintenance</html>"), "with a body that is not JSON", id="html"),
        pytest.param(lambda r: httpx.Response(200, json=["x"]), "without a successful envelope", id="json-list"),
        pytest.param(lambda r: httpx.Response(200, json={"success": False, "data": {}}), "without a successful envelope",
                     id="success-false"),
        pytest.param(lambda r: httpx.Response(200, json={"success": True, "data": "queued"}), "without a 'data' object",
                     id="data-not-object"),
        pytest.param(raw(204, b""), "without a successful envelope", id="no-content"),
    ],
)  # fmt: skip
def test_unreadable_2xx_on_post_raises_without_retry(
    kind: str, answer: Answer, text: str, sleeps: Sleeps
) -> None:
    script = Script(answer, ok_submit())
    error = run(kind, script, "submit")
    assert isinstance(error, NyneResponseError)
    assert text in error.message
    assert error.status_code in (200, 204)
    assert len(script.requests) == 1  # a 2xx means the API took it: never sent twice
    assert sleeps == []


@KINDS
def test_unreadable_2xx_on_get_is_retried(kind: str, sleeps: Sleeps) -> None:
    script = Script(raw(200, b"not json"), ok_status("queued"))
    assert run(kind, script, "status").state is JobState.QUEUED
    assert len(script.requests) == 2
    assert sleeps == [0.5]


@KINDS
def test_accepted_without_request_id(kind: str, sleeps: Sleeps) -> None:
    script = Script(lambda r: httpx.Response(202, json={"success": True, "data": {"status": "queued"}}))
    error = run(kind, script, "submit")
    assert isinstance(error, NyneResponseError)
    assert "has no request_id; check the Nyne dashboard before submitting again" in error.message
    assert len(script.requests) == 1
    assert sleeps == []


# --- retry policy -----------------------------------------------------------------------------


@KINDS
def test_retry_after_is_honoured(kind: str, sleeps: Sleeps) -> None:
    script = Script(status(429, {"Retry-After": "3"}), status(429, {"Retry-After": "0"}), ok_submit("req_ok"))
    assert run(kind, script, "submit") == "req_ok"
    # max(backoff, Retry-After): 3 s asked, then the 1 s backoff of the second retry.
    assert sleeps == [3.0, 1.0]
    assert len(script.requests) == 3


@KINDS
def test_retry_after_longer_than_allowed_is_raised_not_slept(kind: str, sleeps: Sleeps) -> None:
    script = Script(status(429, {"Retry-After": "3600"}), ok_status())
    error = run(kind, script, "status")
    assert isinstance(error, NyneRateLimitError)
    assert error.retry_after == 3600.0
    assert sleeps == []
    assert len(script.requests) == 1


@KINDS
@pytest.mark.parametrize(
    ("failure", "request_sent"),
    [
        pytest.param(httpx.ReadTimeout("timed out"), True, id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("Server disconnected without sending a response."), True,
                     id="dropped-after-send"),
        pytest.param(httpx.ReadError("connection reset"), True, id="reset-after-send"),
        pytest.param(httpx.WriteTimeout("write timed out"), True, id="write-timeout"),
    ],
)  # fmt: skip
def test_post_not_retried_after_ambiguous_failure(
    kind: str, failure: Exception, request_sent: bool, sleeps: Sleeps
) -> None:
    script = Script(failure, ok_submit())
    error = run(kind, script, "submit")
    assert isinstance(error, NyneTransportError)
    assert error.request_sent is request_sent
    assert "the API may have accepted it, so it was not sent again" in error.message
    assert type(failure).__name__ in error.message
    assert len(script.requests) == 1
    assert sleeps == []


@KINDS
@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("refused"), id="connect-error"),
        pytest.param(httpx.ConnectTimeout("connect timed out"), id="connect-timeout"),
        pytest.param(httpx.PoolTimeout("pool exhausted"), id="pool-timeout"),
        pytest.param(status(429), id="429"),
        pytest.param(status(503), id="503"),
    ],
)
def test_post_retried_when_provably_not_processed(kind: str, failure: Answer, sleeps: Sleeps) -> None:
    script = Script(failure, ok_submit("req_2"))
    assert run(kind, script, "submit") == "req_2"
    assert len(script.requests) == 2
    assert sleeps == [0.5]


@KINDS
@pytest.mark.parametrize("code", [500, 502, 504])
def test_post_not_retried_after_other_server_errors(kind: str, code: int, sleeps: Sleeps) -> None:
    script = Script(status(code), ok_submit())
    error = run(kind, script, "submit")
    assert isinstance(error, NyneServerError)
    assert error.status_code == code
    assert len(script.requests) == 1
    assert sleeps == []
    assert "attempts" not in error.message


@KINDS
@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(status(503), id="503"),
        pytest.param(status(500), id="500"),
        pytest.param(status(502), id="502"),
        pytest.param(status(429), id="429"),
        pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("dropped"), id="dropped"),
        pytest.param(httpx.ConnectError("refused"), id="connect-error"),
        pytest.param(httpx.DecodingError("bad gzip"), id="decoding-error"),
    ],
)
@pytest.mark.parametrize("what", ["status", "usage"])
def test_get_retried_on_transient_failures(kind: str, what: str, failure: Answer, sleeps: Sleeps) -> None:
    script = Script(failure, failure, ok_status() if what == "status" else ok_usage())
    result = run(kind, script, what)
    assert not isinstance(result, NyneError), result
    assert len(script.requests) == 3
    assert sleeps == [0.5, 1.0]  # exponential backoff, no jitter configured


@KINDS
@pytest.mark.parametrize("code", [400, 401, 402, 403, 404])
def test_get_not_retried_on_client_errors(kind: str, code: int, sleeps: Sleeps) -> None:
    script = Script(status(code), ok_status())
    error = run(kind, script, "status")
    assert isinstance(error, NyneError)
    assert error.status_code == code
    assert len(script.requests) == 1
    assert sleeps == []


@KINDS
def test_get_gives_up_after_max_retries_with_the_last_error(kind: str, sleeps: Sleeps) -> None:
    script = Script(status(500), httpx.ReadTimeout("slow"), status(502), status(503), ok_status())
    error = run(kind, script, "status", retry=RetryPolicy(max_retries=3, backoff_base=0.25, jitter=0.0))
    assert isinstance(error, NyneServerError)
    assert error.status_code == 503  # the last answer, not the first
    assert error.message.endswith("(after 4 attempts)")
    assert error.args == (error.message,)
    assert len(script.requests) == 4
    assert sleeps == [0.25, 0.5, 1.0]


@KINDS
def test_no_retry_policy(kind: str, sleeps: Sleeps) -> None:
    script = Script(status(503), ok_status())
    error = run(kind, script, "status", retry=NO_RETRY)
    assert isinstance(error, NyneServerError)
    assert "attempts" not in error.message
    assert len(script.requests) == 1
    assert sleeps == []


def test_retry_is_logged_without_secrets(sleeps: Sleeps, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    script = Script(status(503, body={"error": {"code": "service_unavailable", "message": f"down for {KEY}"}}),
                    ok_status())  # fmt: skip
    run("sync", script, "status")
    warnings = [r.getMessage() for r in caplog.records if r.name == "airflow_provider_nyne.client.http"]
    assert warnings == [
        "GET /person/interactions failed ([HTTP 503 service_unavailable] the Nyne API failed on its side: "
        "down for ***); retry 1/3 in 0.5s"
    ]
    assert KEY not in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        pytest.param(RetryPolicy(backoff_base=1.0, backoff_max=30.0, jitter=0.0), [1, 2, 4, 8, 16, 30, 30], id="doubling-capped"),
        pytest.param(RetryPolicy(backoff_base=0.0, jitter=0.0), [0, 0, 0, 0, 0, 0, 0], id="zero"),
    ],
)  # fmt: skip
def test_backoff_schedule(policy: RetryPolicy, delays: list[float]) -> None:
    assert [policy.backoff(n) for n in range(7)] == delays


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(backoff_base=2.0, jitter=0.25)
    samples = [policy.backoff(1) for _ in range(200)]
    assert all(4.0 <= s <= 5.0 for s in samples)
    assert len(set(samples)) > 1


@pytest.mark.parametrize(
    ("error", "idempotent", "safe"),
    [
        pytest.param(NyneTransportError("x", request_sent=False), False, True, id="post-not-sent"),
        pytest.param(NyneTransportError("x", request_sent=True), False, False, id="post-maybe-sent"),
        pytest.param(NyneRateLimitError("x", status_code=429), False, True, id="post-429"),
        pytest.param(NyneServerError("x", status_code=503), False, True, id="post-503"),
        pytest.param(NyneServerError("x", status_code=500), False, False, id="post-500"),
        pytest.param(NyneResponseError("x", status_code=200), False, False, id="post-unreadable-2xx"),
        pytest.param(NyneTransportError("x", request_sent=True), True, True, id="get-maybe-sent"),
        pytest.param(NyneServerError("x", status_code=500), True, True, id="get-500"),
        pytest.param(NyneResponseError("x"), True, True, id="get-unreadable"),
        pytest.param(NyneAuthError("x", status_code=401), True, False, id="get-401"),
        pytest.param(NyneValidationError("x"), True, False, id="get-400"),
    ],
)
def test_may_retry(error: NyneError, idempotent: bool, safe: bool) -> None:
    assert error.may_retry(idempotent=idempotent) is safe


def test_delay_for_respects_max_retries_and_retry_after() -> None:
    policy = RetryPolicy(max_retries=2, backoff_base=1.0, jitter=0.0, max_retry_after=10.0)
    limited = NyneRateLimitError("x", retry_after=5.0)
    assert policy.delay_for(limited, 0, idempotent=True) == 5.0
    assert policy.delay_for(NyneRateLimitError("x", retry_after=0.2), 1, idempotent=True) == 2.0
    assert policy.delay_for(limited, 2, idempotent=True) is None  # retries used up
    assert policy.delay_for(NyneRateLimitError("x", retry_after=11.0), 0, idempotent=True) is None
    assert policy.delay_for(NyneServerError("x", status_code=500), 0, idempotent=False) is None


# --- what clients of one API key share: the budget, and one pool per event loop -------------------


async def test_clients_of_one_key_share_the_budget_and_the_loops_pool(closed_pools: set[int]) -> None:
    a = AsyncNyneClient(KEY, SECRET, base_url="http://nyne.test/")
    b = AsyncNyneClient(KEY, SECRET, base_url="http://nyne.test", timeout=5)
    other_key = AsyncNyneClient(KEY, "another-secret", base_url="http://nyne.test")
    other_host = AsyncNyneClient(KEY, SECRET, base_url="http://other.test")
    assert a.budget is b.budget
    assert a.budget is not other_key.budget
    assert a.budget is not other_host.budget
    pool = await a._pool()
    assert await b._pool() is pool
    await a.aclose()
    assert a.is_closed
    assert id(pool) not in closed_pools  # b still uses it
    await b.aclose()
    assert id(pool) in closed_pools  # the last client of the key in this loop closed it
    await other_key.aclose()
    await other_host.aclose()
    # The sharing key holds a digest, never the credentials.
    assert all(KEY not in repr(k) and SECRET not in repr(k) for k in http_mod._KEYS)


def test_each_event_loop_gets_its_own_pool(closed_pools: set[int]) -> None:
    async def pool_of(client: AsyncNyneClient) -> httpx.AsyncBaseTransport:
        return await client._pool()

    c1 = AsyncNyneClient(KEY, SECRET, base_url="http://loops.test")
    c2 = AsyncNyneClient(KEY, SECRET, base_url="http://loops.test")
    loop1, loop2 = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        p1, p2 = loop1.run_until_complete(pool_of(c1)), loop2.run_until_complete(pool_of(c2))
        assert p1 is not p2
        assert c1.budget is c2.budget  # one budget per key and process, whatever the loop
        loop1.run_until_complete(c1.aclose())
        loop2.run_until_complete(c2.aclose())
        assert {id(p1), id(p2)} <= closed_pools
    finally:
        loop1.close()
        loop2.close()


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({}, "https://api.nyne.ai", None),
        ({"HTTPS_PROXY": "http://proxy.test:3128"}, "https://api.nyne.ai", "http://proxy.test:3128"),
        ({"HTTPS_PROXY": "http://proxy.test:3128"}, "http://127.0.0.1:8080", None),
        ({"HTTP_PROXY": "http://proxy.test:3128", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:8080", None),
        (
            {"ALL_PROXY": "http://proxy.test:3128", "NO_PROXY": ""},
            "https://api.nyne.ai",
            "http://proxy.test:3128",
        ),
        ({"HTTPS_PROXY": "http://proxy.test:3128", "NO_PROXY": ".nyne.ai"}, "https://api.nyne.ai", None),
    ],
    ids=["none", "https-proxy", "https-proxy-not-for-http", "no-proxy-host", "all-proxy", "no-proxy-domain"],
)
def test_proxy_environment_is_honoured(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert http_mod._proxy_for(url) == proxy


async def test_a_closed_client_refuses_to_send() -> None:
    client = AsyncNyneClient(KEY, SECRET, base_url="http://nyne.test")
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_usage()


def test_declarations_of_one_key_merge_to_the_stricter() -> None:
    with (
        NyneClient(KEY, SECRET, base_url="http://merge.test", rate_limits=RateLimits(per_minute=60)) as a,
        NyneClient(KEY, SECRET, base_url="http://merge.test", rate_limits=RateLimits(per_minute=10)) as b,
    ):
        assert a.budget is b.budget
        assert a.budget.limits.per_minute == 10


# --- the budget's part of an exchange ---------------------------------------------------------------


@KINDS
def test_429_pauses_the_key_and_resends_without_counting_an_attempt(kind: str) -> None:
    # With the budget on, three 429s in a row cost no attempt even with retries off: the call
    # waits out each Retry-After (50 ms here) and the lookup is submitted once accepted.
    script = Script(*[status(429, {"Retry-After": "0.05"})] * 3, ok_submit("req_ok"))
    started = time.monotonic()
    result = run(kind, script, "submit", retry=NO_RETRY, rate_limits=RateLimits())
    assert result == "req_ok"
    assert len(script.requests) == 4
    assert time.monotonic() - started >= 0.15  # the three pauses were really waited out


@KINDS
def test_429_beyond_the_deadline_raises_with_when_to_come_back(kind: str) -> None:
    script = Script(status(429, {"Retry-After": "30"}), ok_submit())
    transport = httpx.MockTransport(script)
    deadline = time.time() + 1

    async def async_() -> Any:
        async with AsyncNyneClient(KEY, SECRET, base_url="http://nyne.test", transport=transport) as c:
            return await c.submit(REQUEST, deadline=deadline)

    def sync() -> Any:
        with NyneClient(KEY, SECRET, base_url="http://nyne.test", transport=transport) as c:
            return c.submit(REQUEST, deadline=deadline)

    with pytest.raises(NyneRateLimitError) as info:
        sync() if kind == "sync" else asyncio.run(async_())
    assert len(script.requests) == 1  # the pause outlasts the deadline: nothing more was sent
    assert info.value.retry_after == pytest.approx(30, abs=1)


# --- real sockets: transport failures ------------------------------------------------------------


class RawServer:
    """A raw asyncio server on 127.0.0.1 that reads each request and then misbehaves as told."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[bytes] = []
        self.server: asyncio.base_events.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            body = await reader.readexactly(length) if length else b""
            self.requests.append(head + body)
            if self.mode == "garbage":
                writer.write(b"NOT-HTTP\r\n\r\n")
            elif self.mode == "half-body":
                writer.write(
                    b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{"su'
                )
            elif self.mode == "silent":
                await asyncio.sleep(5)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def raw_server(request: pytest.FixtureRequest) -> AsyncIterator[RawServer]:
    srv = RawServer(request.param)
    srv.server = await asyncio.start_server(srv._handle, "127.0.0.1", 0)
    yield srv
    srv.server.close()
    await srv.server.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("raw_server", "kind"),
    [
        pytest.param("drop", "RemoteProtocolError", id="drop-after-reading"),
        pytest.param("garbage", "RemoteProtocolError", id="garbage-status-line"),
        pytest.param("half-body", "RemoteProtocolError", id="truncated-body"),
    ],
    indirect=["raw_server"],
)
async def test_post_over_real_socket_not_retried_when_answer_is_lost(
    raw_server: RawServer, kind: str, sleeps: Sleeps
) -> None:
    async with AsyncNyneClient(KEY, SECRET, base_url=raw_server.url, retry=FAST) as client:
        with pytest.raises(NyneTransportError) as info:
            await client.submit(REQUEST)
    assert info.value.request_sent is True
    assert "the API may have accepted it, so it was not sent again" in info.value.message
    assert any(name in info.value.message for name in kind.split("|"))
    assert len(raw_server.requests) == 1  # exactly one POST reached the server
    assert raw_server.requests[0].startswith(b"POST /person/interactions ")
    assert sleeps == []
    # Nothing of the request headers may leak into the error, its cause or its context.
    text = f"{info.value} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
    assert KEY not in text
    assert SECRET not in text


@pytest.mark.parametrize("raw_server", ["drop"], indirect=True)
async def test_get_over_real_socket_retried_then_gives_up(raw_server: RawServer, sleeps: Sleeps) -> None:
    policy = RetryPolicy(max_retries=2, backoff_base=0.01, jitter=0.0)
    async with AsyncNyneClient(KEY, SECRET, base_url=raw_server.url, retry=policy) as client:
        with pytest.raises(NyneTransportError) as info:
            await client.get_status("req_1")
    assert info.value.message.endswith("(after 3 attempts)")
    assert sleeps == [0.01, 0.02]
    assert len(raw_server.requests) == 3


@pytest.mark.parametrize("raw_server", ["silent"], indirect=True)
async def test_post_read_timeout_over_real_socket(raw_server: RawServer, sleeps: Sleeps) -> None:
    async with AsyncNyneClient(KEY, SECRET, base_url=raw_server.url, retry=FAST, timeout=0.2) as client:
        with pytest.raises(NyneTransportError) as info:
            await client.submit(REQUEST)
    assert info.value.request_sent is True
    assert "Timeout" in info.value.message
    assert len(raw_server.requests) == 1
    assert sleeps == []


async def test_post_over_real_socket_retried_when_refused(sleeps: Sleeps) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncNyneClient(KEY, SECRET, base_url=url, retry=FAST) as client:
        with pytest.raises(NyneTransportError) as info:
            await client.submit(REQUEST)
    assert info.value.request_sent is False
    assert "could not connect to the Nyne API" in info.value.message
    assert "nothing was sent" in info.value.message
    assert info.value.message.endswith("(after 4 attempts)")
    assert sleeps == [0.5, 1.0, 2.0]


def test_sync_client_over_real_socket_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        NyneClient(KEY, SECRET, base_url=url, retry=NO_RETRY) as client,
        pytest.raises(NyneTransportError) as info,
    ):
        client.get_usage()
    assert info.value.request_sent is False
    assert "ConnectError" in info.value.message
