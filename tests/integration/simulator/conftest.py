"""Fixtures for the simulator contract tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import FAST_JOB, Api, Delivery, Receiver


@pytest.fixture
def sim(simulator_session: NyneSimulator) -> NyneSimulator:
    """The shared simulator, reset for this test, with jobs that finish in 50 ms."""
    simulator_session.configure(job_duration=FAST_JOB)
    return simulator_session


@pytest.fixture
def api(sim: NyneSimulator) -> Iterator[Api]:
    """A plain httpx caller authenticated as the simulator's default account."""
    caller = Api(sim)
    yield caller
    caller.client.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback HTTP server for callbacks, answering 200 unless the test scripts other statuses."""
    state = Receiver(statuses=[200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            state.deliveries.append(Delivery(time.monotonic(), body, dict(self.headers.items())))
            status = state.answer()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()
