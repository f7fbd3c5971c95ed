"""Helpers for the simulator contract tests: a plain httpx client, never the project's client."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from airflow_provider_nyne.testing.simulator import NyneSimulator

TERMINAL = ("completed", "failed")
#: Job duration for contract tests; tests that watch intermediate statuses set their own.
FAST_JOB = 0.05


class Api:
    """A thin plain-httpx caller of the simulated API."""

    def __init__(self, sim: NyneSimulator) -> None:
        self.sim = sim
        self.auth = {"X-API-Key": sim.api_key, "X-API-Secret": sim.api_secret}
        self.client = httpx.Client(
            base_url=sim.url, headers=self.auth, timeout=5.0, trust_env=False, verify=False
        )

    def submit(self, body: Any = None, **fields: Any) -> httpx.Response:
        """POST /person/interactions with ``body`` (JSON) or ``fields``."""
        return self.client.post("/person/interactions", json=fields if body is None else body)

    def submit_ok(self, **fields: Any) -> str:
        """Submit and return the request id, asserting the 202 answer."""
        fields.setdefault("type", "followers")
        if "social_media_url" not in fields and "twitter_url" not in fields:
            fields.setdefault("username", "jack")
        response = self.submit(**fields)
        assert response.status_code == 202, response.text
        return str(response.json()["data"]["request_id"])

    def poll(self, request_id: str) -> httpx.Response:
        """GET /person/interactions?request_id=..."""
        return self.client.get("/person/interactions", params={"request_id": request_id})

    def wait(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll until the job is terminal; return ``data``."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.poll(request_id)
            assert response.status_code == 200, response.text
            data: dict[str, Any] = response.json()["data"]
            if data["status"] in TERMINAL:
                return data
            assert time.monotonic() < deadline, f"job still {data['status']} after {timeout} s"
            time.sleep(0.02)

    def usage(self) -> httpx.Response:
        """GET /usage."""
        return self.client.get("/usage")


def error_code(response: httpx.Response) -> str:
    """Return ``error.code`` of an error answer, checking the envelope."""
    payload = response.json()
    assert payload["success"] is False
    assert "timestamp" in payload
    return str(payload["error"]["code"])


@dataclass
class Delivery:
    at: float
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    """A loopback HTTP server answering callbacks with scripted status codes."""

    statuses: list[int]
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def wait(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"{len(self.deliveries)} of {count} callbacks arrived"
            time.sleep(0.01)
        return self.deliveries
