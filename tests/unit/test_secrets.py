"""The API key and secret never show: not in logs, exceptions, tracebacks or repr().

One test drives every path that touches the credentials (hook settings, sync and async
clients, success, retried 503, a 401 whose body echoes the key and secret back, a dropped
connection, the connection test) against a small API on 127.0.0.1, capturing every log
record at DEBUG level and everything written to stdout/stderr, then searches all of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_nyne.client.errors import NyneAuthError, NyneError, NyneTransportError
from airflow_provider_nyne.client.http import AsyncNyneClient, NyneClient
from airflow_provider_nyne.client.retry import RetryPolicy
from airflow_provider_nyne.hooks import nyne as hook_module
from airflow_provider_nyne.hooks.nyne import NyneHook

KEY = "k3y-VERY-distinctive-41"
SECRET = "s3cret-VERY-distinctive-97"
CALLBACK_SECRET = "cb-VERY-distinctive-13"
ECHO = {
    "success": False,
    "error": {"code": "invalid_api_key", "message": f"key {KEY} / secret {SECRET} rejected"},
}


class EchoAPI:
    """Answers from a per-path script; the last answer repeats. ``None`` drops the connection."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, Any] | None]] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                key = f"{self.command} {self.path.split('?')[0]}"
                answers = api.script.get(key) or [(404, {})]
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if answer is None:
                    self.close_connection = True
                    return
                code, payload = answer
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
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[EchoAPI]:
    fake = EchoAPI()
    yield fake
    fake.stop()


def texts_of(error: BaseException) -> list[str]:
    """Every way an exception gets printed: str, repr, args, and the formatted traceback with its chain."""
    return [str(error), repr(error), repr(error.args), "".join(traceback.format_exception(error))]


def test_credentials_never_show(
    api: EchoAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug logs included
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_SECRETS",
        json.dumps({"conn_type": "nyne", "login": f"{KEY}\n", "password": SECRET, "host": api.url,
                    "extra": {"max_retries": 2, "retry_backoff": 0, "callback_secret": CALLBACK_SECRET}}),
    )  # fmt: skip
    api.script = {
        "POST /person/interactions": [(202, {"success": True, "data": {"request_id": "req_visible", "status": "queued"}})],
        "GET /person/interactions": [
            (503, {"error": {"code": "service_unavailable", "message": f"down, your key is {KEY}"}}),
            (200, {"success": True, "data": {"request_id": "req_visible", "status": "completed", "result": {}}}),
            (401, ECHO),
        ],
        "GET /usage": [(401, ECHO)],
    }  # fmt: skip
    masked: list[str] = []
    monkeypatch.setattr(hook_module, "mask_secret", masked.append)
    printed: list[str] = []
    errors: list[BaseException] = []

    hook = NyneHook("nyne_secrets")
    printed += [
        repr(hook),
        repr(hook.settings),
        str(hook.settings),
        repr(hook.client),
        repr(hook.client.retry),
    ]
    assert hook.submit_interactions(hook.build_request(username="nasa", type="followers")) == "req_visible"
    assert hook.get_interactions_status("req_visible").status == "completed"  # after a retried 503
    with pytest.raises(NyneAuthError) as info:
        hook.get_interactions_status("req_visible")  # a 401 that echoes both values
    errors.append(info.value)
    with pytest.raises(NyneAuthError) as info:
        hook.get_usage()
    errors.append(info.value)
    ok, message = hook.test_connection()
    assert ok is False
    printed.append(message)

    async def async_paths() -> None:
        client = await hook.aget_conn()
        printed.append(repr(client))
        printed.append(repr(await hook.aget_settings()))
        with pytest.raises(NyneAuthError) as ainfo:
            await hook.aget_usage()
        errors.append(ainfo.value)
        await client.aclose()
        # When the connection drops with no answer.
        api.script["POST /person/interactions"] = [None]
        async with AsyncNyneClient(KEY, SECRET, base_url=api.url) as direct:
            printed.append(repr(direct))
            printed.append(repr(direct.budget))
            with pytest.raises(NyneTransportError) as tinfo:
                await direct.submit({"username": "nasa", "type": "followers"})
            errors.append(tinfo.value)

    asyncio.run(async_paths())
    with NyneClient(
        KEY, SECRET, base_url=api.url, retry=RetryPolicy(max_retries=1, backoff_base=0)
    ) as sync_client:
        with pytest.raises(NyneTransportError) as sinfo:
            sync_client.submit({"username": "nasa", "type": "followers"})
        errors.append(sinfo.value)
    with pytest.raises(NyneAuthError) as binfo:
        NyneClient(f"{KEY} with a space", SECRET)
    errors.append(binfo.value)

    captured = capsys.readouterr()
    haystack = "\n".join(
        [caplog.text, *(r.getMessage() for r in caplog.records), captured.out, captured.err, *printed]
        + [t for e in errors for t in texts_of(e)]
    )
    # The capture worked: the request id and the server's redacted words are there ...
    assert "req_visible" in haystack
    assert "key *** / secret *** rejected" in haystack
    assert "down, your key is ***" in haystack  # the retry warning, redacted
    assert len(errors) == 6
    assert all(isinstance(e, NyneError) for e in errors)
    # ... and the credentials are not.
    for value in (KEY, SECRET, CALLBACK_SECRET):
        assert value not in haystack
    # Airflow's masker was told about all three, so task logs scrub them even if some other
    # library prints them.
    assert masked.count(KEY) >= 1
    assert masked.count(SECRET) >= 1
    assert CALLBACK_SECRET in masked


def test_pickled_errors_carry_only_redacted_text() -> None:
    import pickle

    import httpx

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json=ECHO)

    with (
        NyneClient(KEY, SECRET, transport=httpx.MockTransport(echo)) as client,
        pytest.raises(NyneAuthError) as info,
    ):
        client.get_usage()
    blob = pickle.dumps(info.value)
    assert KEY.encode() not in blob
    assert SECRET.encode() not in blob
    assert "key *** / secret *** rejected" in str(pickle.loads(blob))
