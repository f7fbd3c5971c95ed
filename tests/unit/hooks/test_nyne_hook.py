"""NyneHook: connection -> settings -> clients, the connection test, and the connection form.

Connections come from ``AIRFLOW_CONN_*`` environment variables, as in a deployment's
secrets backend. HTTP calls go to a small canned API on 127.0.0.1 started by the test.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import airflow_provider_nyne.hooks.nyne as nyne_hook_module
from airflow_provider_nyne._compat import AirflowNotFoundException
from airflow_provider_nyne.client.errors import NyneAuthError, NyneValidationError
from airflow_provider_nyne.client.http import AsyncNyneClient, NyneClient
from airflow_provider_nyne.client.models import JobState
from airflow_provider_nyne.client.ratelimit import RateLimits
from airflow_provider_nyne.client.retry import RetryPolicy
from airflow_provider_nyne.get_provider_info import CONN_FIELDS
from airflow_provider_nyne.hooks.nyne import (
    NyneConnectionSettings,
    NyneHook,
    base_url_from,
    settings_from_connection,
)

KEY = "hook-key-5d8e21"
SECRET = "hook-secret-c4a7f0"


def conn_json(**fields: Any) -> str:
    return json.dumps({"conn_type": "nyne", "login": KEY, "password": SECRET, **fields})


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> Any:
    def _set(conn_id: str = "nyne_default", value: str | None = None, **fields: Any) -> None:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", value if value is not None else conn_json(**fields)
        )

    return _set


class FakeAPI:
    """A canned Nyne API on 127.0.0.1: answers by path, records what it receives."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {
            "/usage": (200, {"success": True, "data": {"credits_remaining": 97, "used": 3}}),
            "/person/interactions:POST": (202, {"success": True, "data": {"request_id": "req_7", "status": "queued"}}),
            "/person/interactions:GET": (
                200,
                {"success": True, "data": {"request_id": "req_7", "status": "completed", "completed": True,
                                           "result": {"interactions": [{"username": "a"}], "total_count": 1}}},
            ),
        }  # fmt: skip
        self.seen: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                api.seen.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                code, payload = (
                    api.answers.get(f"{path}:{self.command}") or api.answers.get(path) or (404, {})
                )
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    fake = FakeAPI()
    yield fake
    fake.stop()


# --- settings from the connection ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, {"base_url": "https://api.nyne.ai", "timeout": 30.0, "max_retries": 3, "retry_backoff": 1.0},
                     id="defaults"),
        pytest.param({"host": "http://127.0.0.1:8765"}, {"base_url": "http://127.0.0.1:8765"}, id="host-with-scheme"),
        pytest.param({"host": "api.nyne.ai"}, {"base_url": "https://api.nyne.ai"}, id="host-without-scheme"),
        pytest.param({"host": "127.0.0.1", "port": 8765, "extra": {"scheme": "http"}},
                     {"base_url": "http://127.0.0.1:8765"}, id="host-port-scheme-extra"),
        pytest.param({"host": "http://127.0.0.1", "port": 9000}, {"base_url": "http://127.0.0.1:9000"},
                     id="port-added-to-host"),
        pytest.param({"host": "https://gw.example.com/nyne/"}, {"base_url": "https://gw.example.com/nyne"},
                     id="host-with-path"),
        pytest.param({"extra": {"timeout": 5, "max_retries": 0, "retry_backoff": 0.25}},
                     {"timeout": 5.0, "max_retries": 0, "retry_backoff": 0.25}, id="extras-numbers"),
        pytest.param({"extra": {"timeout": "12.5", "max_retries": "4", "retry_backoff": "2"}},
                     {"timeout": 12.5, "max_retries": 4, "retry_backoff": 2.0}, id="extras-strings-from-the-form"),
        pytest.param({"extra": {"extra__nyne__timeout": "7", "extra__nyne__max_retries": 1}},
                     {"timeout": 7.0, "max_retries": 1}, id="legacy-prefixed-extras"),
        pytest.param({"extra": {"timeout": "", "extra__nyne__timeout": "8"}}, {"timeout": 8.0},
                     id="empty-plain-extra-falls-back-to-prefixed"),
        pytest.param({"extra": {"max_retries": 2.0}}, {"max_retries": 2}, id="integral-float-retries"),
        pytest.param({"extra": {"callback_allowed_hosts": " hooks.example.com, *.corp.example ,"}},
                     {"callback_allowed_hosts": ("hooks.example.com", "*.corp.example")}, id="allow-list-string"),
        pytest.param({"extra": {"callback_allowed_hosts": ["a.example.com"]}},
                     {"callback_allowed_hosts": ("a.example.com",)}, id="allow-list-json-list"),
        pytest.param({"extra": {"callback_secret": "cb-secret-123"}}, {"callback_secret": "cb-secret-123"},
                     id="callback-secret"),
        pytest.param({"login": f"  {KEY}\n", "password": f"{SECRET}\n"}, {"api_key": KEY, "api_secret": SECRET},
                     id="pasted-whitespace-stripped"),
    ],
)  # fmt: skip
def test_settings_from_connection(set_conn: Any, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    set_conn(**fields)
    settings = NyneHook().settings
    assert settings.conn_id == "nyne_default"
    assert (settings.api_key, settings.api_secret) == (KEY, SECRET)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name


@pytest.mark.parametrize(
    ("uri", "base_url", "key", "secret", "extras"),
    [
        pytest.param("nyne://KEY12:SECRET12@api.nyne.ai", "https://api.nyne.ai", "KEY12", "SECRET12", {},
                     id="public-api"),
        pytest.param("nyne://KEY12:SECRET12@127.0.0.1:8765?scheme=http", "http://127.0.0.1:8765", "KEY12",
                     "SECRET12", {}, id="local-http"),
        pytest.param("nyne://KEY12:SECRET12@127.0.0.1:8765", "https://127.0.0.1:8765", "KEY12", "SECRET12", {},
                     id="port-without-scheme-is-https"),
        pytest.param("nyne://k%2Fy%40%3A%2B1:s%23c%25t%2F%3F1@api.nyne.ai", "https://api.nyne.ai", "k/y@:+1",
                     "s#c%t/?1", {}, id="url-quoted-credentials"),
        pytest.param("nyne://KEY12:SECRET12@http%3A%2F%2F127.0.0.1%3A8765", "http://127.0.0.1:8765", "KEY12",
                     "SECRET12", {}, id="quoted-base-url-as-host"),
        pytest.param("nyne://KEY12:SECRET12@api.nyne.ai?timeout=60&max_retries=5", "https://api.nyne.ai", "KEY12",
                     "SECRET12", {"timeout": 60.0, "max_retries": 5}, id="extras-in-query"),
    ],
)  # fmt: skip
def test_uri_connections(
    set_conn: Any, uri: str, base_url: str, key: str, secret: str, extras: dict[str, Any]
) -> None:
    set_conn("nyne_uri", value=uri)
    settings = NyneHook("nyne_uri").settings
    assert (settings.base_url, settings.api_key, settings.api_secret) == (base_url, key, secret)
    for name, value in extras.items():
        assert getattr(settings, name) == value


@pytest.mark.parametrize(
    ("extra", "field", "text"),
    [
        pytest.param({"timeout": "soon"}, "timeout", "extra field 'timeout' must be a number, got 'soon'", id="timeout-text"),
        pytest.param({"timeout": True}, "timeout", "must be a number, got True", id="timeout-bool"),
        pytest.param({"timeout": "inf"}, "timeout", "must be a number", id="timeout-infinite"),
        pytest.param({"timeout": [30]}, "timeout", "must be a number", id="timeout-list"),
        pytest.param({"max_retries": 2.5}, "max_retries", "must be a whole number, got 2.5", id="retries-fraction"),
        pytest.param({"max_retries": "nan"}, "max_retries", "must be a whole number", id="retries-nan"),
        pytest.param({"max_retries": -1}, "max_retries", "must not be negative", id="retries-negative"),
        pytest.param({"extra__nyne__retry_backoff": "x"}, "retry_backoff", "must be a number", id="legacy-bad"),
        pytest.param({"callback_allowed_hosts": 5}, "callback_allowed_hosts", "must be a comma-separated string",
                     id="allow-list-number"),
    ],
)  # fmt: skip
def test_bad_extra_types_fail_clearly(set_conn: Any, extra: dict[str, Any], field: str, text: str) -> None:
    set_conn("nyne_bad", extra=extra)
    with pytest.raises(NyneValidationError) as info:
        _ = NyneHook("nyne_bad").settings
    assert info.value.field == field
    assert text in str(info.value)
    assert "connection 'nyne_bad'" in str(info.value)


@pytest.mark.parametrize(
    ("host", "port", "scheme", "expected"),
    [
        pytest.param(None, None, None, "https://api.nyne.ai", id="no-host"),
        pytest.param("", 8765, None, "https://api.nyne.ai", id="empty-host"),
        pytest.param("api.nyne.ai", None, None, "https://api.nyne.ai", id="bare-host"),
        pytest.param(" https://api.nyne.ai/ ", None, None, "https://api.nyne.ai", id="trailing-slash"),
        pytest.param("127.0.0.1", 8765, "HTTP", "http://127.0.0.1:8765", id="scheme-extra"),
        pytest.param("http://127.0.0.1:8765", 9999, None, "http://127.0.0.1:8765", id="host-port-wins"),
        pytest.param(
            "https://gw.example.com/nyne", 8443, None, "https://gw.example.com:8443/nyne", id="port-and-path"
        ),
        pytest.param("http://[::1]:8765", None, None, "http://[::1]:8765", id="ipv6"),
        pytest.param("HTTPS://API.Nyne.AI.:443/", None, None, "https://api.nyne.ai", id="normalised"),
        pytest.param("api.nyne.ai", 443, None, "https://api.nyne.ai", id="default-port-dropped"),
    ],
)
def test_base_url_from(host: str | None, port: int | None, scheme: str | None, expected: str) -> None:
    assert base_url_from(host, port, scheme) == expected


@pytest.mark.parametrize(
    ("host", "scheme", "reason"),
    [
        pytest.param("ftp://files.example.com", None, "must use http or https", id="ftp"),
        pytest.param("http://", None, "has no host", id="no-host"),
        pytest.param("http://host:port", None, "has an invalid port", id="port-not-a-number"),
        pytest.param("mailto:x@y", None, "must not contain a user name or password", id="mailto"),
        pytest.param("https://api.nyne.ai/?v=1", None, "without '?' or '#'", id="query"),
        pytest.param("https://api.nyne.ai\\v1", None, "contains a backslash", id="backslash"),
        pytest.param("api.nyne.ai", "ftp", "'scheme' extra must be http or https", id="scheme-extra"),
    ],
)
def test_base_url_from_rejects_what_is_not_an_http_root(host: str, scheme: str | None, reason: str) -> None:
    with pytest.raises(NyneValidationError) as info:
        base_url_from(host, None, scheme)
    assert info.value.field == "host"
    assert reason in str(info.value)


CREDENTIAL_HOSTS = [
    pytest.param("https://KEYPART-91e7:SECRETPART-3f2a@api.nyne.ai", id="key-and-secret"),
    pytest.param("KEYPART-91e7:SECRETPART-3f2a@api.nyne.ai", id="without-scheme"),
    pytest.param("https://SECRETPART-3f2a@api.nyne.ai/v1", id="secret-only"),
    pytest.param("https://KEYPART-91e7:SECRETPART-3f2a%40api.nyne.ai", id="encoded-at"),
    pytest.param("http://KEYPART-91e7:SECRETPART-3f2a@127.0.0.1:8765", id="loopback"),
]


@pytest.mark.parametrize("host", CREDENTIAL_HOSTS)
def test_base_url_with_credentials_is_refused_without_showing_them(host: str) -> None:
    with pytest.raises(NyneValidationError) as info:
        base_url_from(host, None, None)
    shown = f"{info.value} {info.value!r} {info.value.args}"
    assert info.value.field == "host"
    for part in ("KEYPART", "SECRETPART", "api.nyne.ai@", "127.0.0.1"):
        assert part not in shown


@pytest.mark.parametrize("host", CREDENTIAL_HOSTS)
def test_connection_with_credentials_in_its_host_fails_without_showing_them(
    set_conn: Any, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    set_conn("nyne_userinfo", host=host)
    hook = NyneHook("nyne_userinfo")
    with pytest.raises(NyneValidationError) as info:
        _ = hook.settings
    # The connection form's Test button shows the same refusal.
    ok, message = NyneHook("nyne_userinfo").test_connection()
    shown = f"{info.value} {info.value!r} {caplog.text} {message}"
    assert ok is False
    assert "Base URL (host)" in str(info.value)
    assert "Base URL (host)" in message
    assert "KEYPART" not in shown
    assert "SECRETPART" not in shown


def test_missing_connection_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_NOWHERE", raising=False)
    hook = NyneHook("nyne_nowhere")  # building the hook reads nothing
    with pytest.raises(NyneValidationError) as info:
        _ = hook.settings
    assert info.value.field == "nyne_conn_id"
    assert "the Airflow connection 'nyne_nowhere' does not exist" in str(info.value)
    assert "AIRFLOW_CONN_NYNE_NOWHERE" in str(info.value)


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        pytest.param({"login": None}, "missing_api_key", "connection 'nyne_nokey' has no API key: set its login",
                     id="no-login"),
        pytest.param({"login": "   "}, "missing_api_key", "has no API key", id="blank-login"),
        pytest.param({"password": None}, "missing_api_secret",
                     "connection 'nyne_nokey' has no API secret: set its password", id="no-password"),
        pytest.param({"password": ""}, "missing_api_secret", "has no API secret", id="empty-password"),
    ],
)  # fmt: skip
def test_missing_credentials_name_the_connection(
    set_conn: Any, fields: dict[str, Any], code: str, text: str
) -> None:
    set_conn("nyne_nokey", **fields)
    with pytest.raises(NyneAuthError) as info:
        NyneHook("nyne_nokey").get_conn()
    assert info.value.code == code
    assert text in str(info.value)


def test_settings_are_read_once_and_lazily(set_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn()
    calls: list[str] = []
    real = NyneHook.get_connection

    def counting(conn_id: str) -> Any:
        calls.append(conn_id)
        return real(conn_id)

    monkeypatch.setattr(NyneHook, "get_connection", staticmethod(counting))
    hook = NyneHook()
    assert calls == []
    assert hook.settings is hook.settings
    assert hook.get_conn() is hook.client
    assert calls == ["nyne_default"]


def test_settings_from_a_plain_object() -> None:
    conn = types.SimpleNamespace(
        conn_id=None, login=KEY, password=SECRET, host=None, port=None, extra_dejson=None
    )
    settings = settings_from_connection(conn)
    assert settings.conn_id == "nyne_default"
    assert settings.base_url == "https://api.nyne.ai"


def test_client_built_from_settings_and_overrides(set_conn: Any) -> None:
    set_conn(host="http://127.0.0.1:1", extra={"timeout": 9, "max_retries": 5, "retry_backoff": 0.5,
                                               "callback_allowed_hosts": "hooks.example.com"})  # fmt: skip
    client = NyneHook().client
    assert isinstance(client, NyneClient)
    assert client.base_url == "http://127.0.0.1:1"
    assert client.timeout.read == 9.0
    assert client.retry == RetryPolicy(max_retries=5, backoff_base=0.5)
    assert client.allowed_callback_hosts == ("hooks.example.com",)
    policy = RetryPolicy(max_retries=0)
    overridden = NyneHook(timeout=2.0, retry=policy).client
    assert (overridden.timeout.read, overridden.retry) == (2.0, policy)
    client.close()
    overridden.close()


def test_build_request_uses_the_connection_allow_list(set_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(extra={"callback_allowed_hosts": "*.example.com"})
    hook = NyneHook()
    ok = hook.build_request(
        twitter_url="https://x.com/nasa", type="followers", callback_url="https://a.example.com/cb"
    )
    assert ok.callback_url == "https://a.example.com/cb"
    with pytest.raises(NyneValidationError) as info:
        hook.build_request(username="nasa", type="followers", callback_url="https://evil.io/cb")
    assert info.value.field == "callback_url"
    # Without a callback the connection is not needed at all (DAG-parse time, missing connection).
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_GONE", raising=False)
    assert NyneHook("nyne_gone").build_request(username="nasa", type="followers").username == "nasa"


# --- API calls through the hook -------------------------------------------------------------


def test_sync_calls(api: FakeAPI, set_conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    set_conn(host=api.url)
    hook = NyneHook()
    request = hook.build_request(social_media_url="https://x.com/nasa", type="followers")
    assert hook.submit_interactions(request) == "req_7"
    # Airflow 3 hooks log through structlog, which writes to stdout outside a task.
    assert "Submitted Nyne interactions lookup: request_id=req_7" in capsys.readouterr().out
    status = hook.get_interactions_status("req_7")
    assert status.state is JobState.COMPLETED
    assert status.total_count == 1
    assert hook.get_usage() == {"credits_remaining": 97, "used": 3}
    assert [(s["method"], s["path"]) for s in api.seen] == [
        ("POST", "/person/interactions"),
        ("GET", "/person/interactions?request_id=req_7"),
        ("GET", "/usage"),
    ]
    assert all(s["headers"]["X-API-Key"] == KEY and s["headers"]["X-API-Secret"] == SECRET for s in api.seen)
    hook.client.close()


async def test_async_calls(api: FakeAPI, set_conn: Any) -> None:
    set_conn(host=api.url)
    hook = NyneHook()
    assert (
        await hook.asubmit_interactions({"twitter_url": "https://x.com/nasa", "type": "following"}) == "req_7"
    )
    assert (await hook.aget_interactions_status("req_7")).state is JobState.COMPLETED
    assert (await hook.aget_usage())["credits_remaining"] == 97
    assert json.loads(api.seen[0]["body"])["type"] == "following"
    # Every client of this API key shares the key's request budget; each call closed its client.
    async with await hook.aget_conn() as client, await NyneHook().aget_conn() as other:
        assert isinstance(client, AsyncNyneClient)
        assert other is not client
        assert other.budget is client.budget
        assert client.budget.sent == 3  # submit, status and usage above all took their turn


async def test_aget_settings_reads_env_connection(set_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn("nyne_async", host="http://127.0.0.1:8765", extra={"timeout": 4})
    used: list[str] = []
    from airflow.sdk import BaseHook

    real = BaseHook.aget_connection

    async def spy(conn_id: str) -> Any:
        used.append(conn_id)
        return await real(conn_id)

    monkeypatch.setattr(BaseHook, "aget_connection", staticmethod(spy))
    hook = NyneHook("nyne_async")
    settings = await hook.aget_settings()
    assert (settings.base_url, settings.timeout, settings.api_key) == ("http://127.0.0.1:8765", 4.0, KEY)
    assert await hook.aget_settings() is settings  # cached
    assert used == ["nyne_async"]


def _count_reads(monkeypatch: pytest.MonkeyPatch, gate: asyncio.Event | None = None) -> list[str]:
    """Spy on the async connection lookup (optionally held until ``gate`` is set)."""
    from airflow.sdk import BaseHook

    used: list[str] = []
    real = BaseHook.aget_connection

    async def spy(conn_id: str) -> Any:
        used.append(conn_id)
        if gate is not None:
            await gate.wait()
        return await real(conn_id)

    monkeypatch.setattr(BaseHook, "aget_connection", staticmethod(spy))
    return used


async def test_hooks_of_one_event_loop_share_one_read_of_a_connection(
    set_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fan-out's waits reach the triggerer together: one read serves all of them.
    set_conn("nyne_burst", host="http://127.0.0.1:8765")
    used = _count_reads(monkeypatch)
    settings = await asyncio.gather(*(NyneHook("nyne_burst").aget_settings() for _ in range(50)))
    assert used == ["nyne_burst"]
    assert all(s is settings[0] for s in settings)
    assert await NyneHook("nyne_burst").aget_settings() is settings[0]  # read less than a second ago
    # Past the reuse window a changed connection is read again.
    monkeypatch.setattr(nyne_hook_module, "ASYNC_SETTINGS_REUSE", 0.0)
    set_conn("nyne_burst", host="http://127.0.0.1:9876")
    assert (await NyneHook("nyne_burst").aget_settings()).base_url == "http://127.0.0.1:9876"
    assert used == ["nyne_burst", "nyne_burst"]


async def test_a_failed_read_is_not_reused(set_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_LATE", raising=False)
    with pytest.raises(NyneValidationError, match="'nyne_late' does not exist"):
        await NyneHook("nyne_late").aget_settings()
    set_conn("nyne_late", host="http://127.0.0.1:8765")
    assert (await NyneHook("nyne_late").aget_settings()).base_url == "http://127.0.0.1:8765"


async def test_a_cancelled_wait_does_not_cancel_the_read_others_share(
    set_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn("nyne_shared", host="http://127.0.0.1:8765")
    gate = asyncio.Event()
    used = _count_reads(monkeypatch, gate)
    first = asyncio.ensure_future(NyneHook("nyne_shared").aget_settings())
    second = asyncio.ensure_future(NyneHook("nyne_shared").aget_settings())
    await asyncio.sleep(0.01)
    first.cancel()
    gate.set()
    assert (await second).base_url == "http://127.0.0.1:8765"
    assert first.cancelled()
    assert used == ["nyne_shared"]


def test_each_event_loop_reads_the_connection_itself(set_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn("nyne_loops", host="http://127.0.0.1:8765")
    used = _count_reads(monkeypatch)
    for _ in range(2):
        asyncio.run(NyneHook("nyne_loops").aget_settings())
    assert used == ["nyne_loops", "nyne_loops"]


async def test_aget_settings_falls_back_to_sync_lookup(
    set_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn("nyne_fallback", host="http://127.0.0.1:8765")
    from airflow.sdk import BaseHook

    async def not_found(conn_id: str) -> Any:
        # What dag.test() answers for a metadata-database connection.
        raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")

    monkeypatch.setattr(BaseHook, "aget_connection", staticmethod(not_found))
    settings = await NyneHook("nyne_fallback").aget_settings()
    assert settings.base_url == "http://127.0.0.1:8765"


async def test_aget_settings_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_ABSENT", raising=False)
    with pytest.raises(NyneValidationError, match="the Airflow connection 'nyne_absent' does not exist"):
        await NyneHook("nyne_absent").aget_settings()


# --- test_connection -------------------------------------------------------------------------


def test_test_connection_success(api: FakeAPI, set_conn: Any) -> None:
    set_conn(host=api.url)
    hook = NyneHook()
    assert hook.test_connection() == (True, "Connection to the Nyne API works (97 credits remaining)")
    assert "client" not in hook.__dict__  # the pool was closed and dropped
    api.answers["/usage"] = (200, {"success": True, "data": {"plan": "pro"}})
    assert hook.test_connection() == (True, "Connection to the Nyne API works")


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        pytest.param((401, {"error": {"code": "invalid_api_secret", "message": "bad secret"}}),
                     "[HTTP 401 invalid_api_secret] authentication failed, the API secret was rejected: check the "
                     "connection's password (API Secret): bad secret", id="401"),
        pytest.param((403, {"error": "ip_not_allowed"}), "add the public IP of your Airflow workers and triggerer",
                     id="403-ip"),
    ],
)  # fmt: skip
def test_test_connection_failure(api: FakeAPI, set_conn: Any, answer: tuple[int, Any], text: str) -> None:
    set_conn(host=api.url)
    api.answers["/usage"] = answer
    ok, message = NyneHook().test_connection()
    assert ok is False
    assert text in message


def test_test_connection_unreachable_names_the_base_url(set_conn: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    set_conn(host=f"http://127.0.0.1:{port}", extra={"max_retries": 0})
    ok, message = NyneHook().test_connection()
    assert ok is False
    assert "could not connect to the Nyne API" in message
    assert f"check the connection's Base URL (http://127.0.0.1:{port})" in message


def test_test_connection_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_MISSING", raising=False)
    ok, message = NyneHook("nyne_missing").test_connection()
    assert ok is False
    assert "'nyne_missing' does not exist" in message


@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
def test_test_connection_through_airflow_connection_uri(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UI's Test button stores the unsaved form as ``AIRFLOW_CONN_<random>=conn.get_uri()``."""
    from airflow.models.connection import Connection

    conn = Connection(
        conn_id="nyne_ui_test", conn_type="nyne", host=api.url, login="k/y@:+1", password="s#c%t/?1"
    )
    monkeypatch.setenv("AIRFLOW_CONN_NYNE_UI_TEST", conn.get_uri())
    assert conn.test_connection() == (True, "Connection to the Nyne API works (97 credits remaining)")
    headers = api.seen[-1]["headers"]
    assert (headers["X-API-Key"], headers["X-API-Secret"]) == ("k/y@:+1", "s#c%t/?1")


# --- repr and the connection form ------------------------------------------------------------


def test_reprs_hide_credentials(set_conn: Any) -> None:
    set_conn(extra={"callback_secret": "cb-secret-xyz"})
    hook = NyneHook()
    assert repr(hook) == "NyneHook(nyne_conn_id='nyne_default')"
    assert repr(hook.settings) == (
        "NyneConnectionSettings(conn_id='nyne_default', base_url='https://api.nyne.ai', timeout=30.0, "
        "max_retries=3, api_key='***', api_secret='***')"
    )
    assert repr(hook.client) == "NyneClient(base_url='https://api.nyne.ai', credentials=***)"
    hook.client.close()


def test_settings_dataclass_defaults() -> None:
    settings = NyneConnectionSettings("c", "k", "s")
    assert settings.retry_policy == RetryPolicy(max_retries=3, backoff_base=1.0)
    assert settings.client_kwargs() == {
        "base_url": "https://api.nyne.ai",
        "timeout": 30.0,
        "retry": RetryPolicy(max_retries=3, backoff_base=1.0),
        "allowed_callback_hosts": (),
        "rate_limits": RateLimits(per_minute=60, per_hour=1000, max_in_flight=4),
    }


def test_hook_class_attributes() -> None:
    assert (NyneHook.conn_type, NyneHook.conn_name_attr, NyneHook.default_conn_name, NyneHook.hook_name) == (
        "nyne",
        "nyne_conn_id",
        "nyne_default",
        "Nyne",
    )


def test_get_ui_field_behaviour() -> None:
    assert NyneHook.get_ui_field_behaviour() == {
        "hidden_fields": ["schema", "port"],
        "relabeling": {"login": "API Key", "password": "API Secret", "host": "Base URL"},
        "placeholders": {
            "host": "https://api.nyne.ai",
            "login": "your Nyne API key",
            "password": "your Nyne API secret",
            "extra": '{"timeout": 30, "max_retries": 3}',
        },
    }


@pytest.fixture
def fake_form_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for wtforms/flask_appbuilder/flask_babel, the way Airflow's UI mocks them when absent."""

    class Field:
        def __init__(
            self,
            label: str,
            validators: list[Any] | None = None,
            description: str = "",
            widget: Any = None,
            default: Any = None,
        ):
            self.label, self.validators, self.description, self.widget, self.default = (
                label,
                validators or [],
                description,
                widget,
                default,
            )

    kinds = {name: type(name, (Field,), {}) for name in ("StringField", "IntegerField", "PasswordField")}
    wtforms = types.ModuleType("wtforms")
    vars(wtforms).update(kinds)
    validators = types.ModuleType("wtforms.validators")
    validators.Optional = type("Optional", (), {"__init__": lambda self, *a, **k: None})  # type: ignore[attr-defined]
    validators.NumberRange = type(
        "NumberRange", (), {"__init__": lambda self, min=None, max=None: setattr(self, "min", min)}
    )  # type: ignore[attr-defined]
    widgets = types.ModuleType("flask_appbuilder.fieldwidgets")
    widgets.BS3TextFieldWidget = type("BS3TextFieldWidget", (), {})  # type: ignore[attr-defined]
    widgets.BS3PasswordFieldWidget = type("BS3PasswordFieldWidget", (), {})  # type: ignore[attr-defined]
    babel = types.ModuleType("flask_babel")
    babel.lazy_gettext = lambda text: text  # type: ignore[attr-defined]
    for name, module in {
        "wtforms": wtforms,
        "wtforms.validators": validators,
        "flask_appbuilder": types.ModuleType("flask_appbuilder"),
        "flask_appbuilder.fieldwidgets": widgets,
        "flask_babel": babel,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_get_connection_form_widgets_with_stand_in_libraries(fake_form_libraries: None) -> None:
    widgets = NyneHook.get_connection_form_widgets()
    assert list(widgets) == list(CONN_FIELDS)
    kinds = {name: type(w).__name__ for name, w in widgets.items()}
    assert kinds == {
        "timeout": "StringField",
        "max_retries": "IntegerField",
        "retry_backoff": "StringField",
        "rate_limit_per_minute": "IntegerField",
        "rate_limit_per_hour": "IntegerField",
        "max_in_flight": "IntegerField",
        "callback_allowed_hosts": "StringField",
        "callback_secret": "PasswordField",
    }
    assert {name: w.label for name, w in widgets.items()} == {n: f["label"] for n, f in CONN_FIELDS.items()}
    assert type(widgets["callback_secret"].widget).__name__ == "BS3PasswordFieldWidget"
    assert [type(v).__name__ for v in widgets["max_retries"].validators] == ["Optional", "NumberRange"]
    # The form starts from the values the hook uses when an extra is not set.
    assert {name: w.default for name, w in widgets.items()} == {
        name: spec["schema"].get("default") for name, spec in CONN_FIELDS.items()
    }


def test_get_connection_form_widgets_with_flask_appbuilder() -> None:
    pytest.importorskip("flask_appbuilder")
    from wtforms import IntegerField, PasswordField, StringField

    widgets = NyneHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    assert widgets["max_retries"].field_class is IntegerField
    assert widgets["callback_secret"].field_class is PasswordField
    assert widgets["timeout"].field_class is StringField


@pytest.mark.parametrize("masked", ["***", "*", "********"])
def test_a_masked_placeholder_is_never_taken_for_the_callback_secret(masked: str) -> None:
    # Airflow's forms show sensitive values as "***"; saved as they were, they would make a
    # signing secret everybody knows.
    from types import SimpleNamespace

    conn = SimpleNamespace(
        conn_id="nyne_form",
        login="key",
        password="secret",
        host=None,
        port=None,
        extra_dejson={"callback_secret": masked},
    )
    with pytest.raises(NyneValidationError, match="masked placeholder") as info:
        settings_from_connection(conn)
    assert info.value.field == "callback_secret"
