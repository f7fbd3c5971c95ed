"""Test-facing views of the simulator: the ledger and fault controls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

from airflow_provider_nyne.testing._sim_core import (
    DEFAULT_PERMISSIONS,
    Account,
    CallbackAttempt,
    Charge,
    Poll,
    RequestRecord,
    SimulatorCore,
    Submission,
    UsageCall,
)

__all__ = ["FaultControls", "Ledger", "account_from_mapping", "ledger_snapshot"]


def _strings(value: Any, name: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of strings")
    return frozenset(str(item) for item in value)


def account_from_mapping(data: Mapping[str, Any]) -> Account:
    """Build an :class:`Account` from JSON-like fields (``api_key`` and ``api_secret`` required)."""
    known = {
        "api_key",
        "api_secret",
        "credits",
        "subscription_active",
        "disabled",
        "permissions",
        "allowed_ips",
    }
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown account fields: {sorted(unknown)}")
    api_key, api_secret = data.get("api_key"), data.get("api_secret")
    if not isinstance(api_key, str) or not api_key or not isinstance(api_secret, str) or not api_secret:
        raise ValueError("api_key and api_secret must be non-empty strings")
    credits = data.get("credits", 1000)
    if isinstance(credits, bool) or not isinstance(credits, int):
        raise TypeError("credits must be an integer")
    flags = {}
    for name in ("subscription_active", "disabled"):
        if name in data:
            if not isinstance(data[name], bool):
                raise TypeError(f"{name} must be true or false")
            flags[name] = data[name]
    permissions = data.get("permissions")
    allowed_ips = data.get("allowed_ips")
    return Account(
        api_key=api_key,
        api_secret=api_secret,
        credits=credits,
        permissions=DEFAULT_PERMISSIONS if permissions is None else _strings(permissions, "permissions"),
        allowed_ips=None if allowed_ips is None else _strings(allowed_ips, "allowed_ips"),
        **flags,
    )


def ledger_snapshot(core: SimulatorCore, *, summary: bool = False) -> dict[str, Any]:
    """Return the ledger as JSON-compatible data (what ``GET /_simulator/ledger`` answers)."""
    with core.lock:
        core.settle_due()
        ledger = core.ledger
        submissions_by_account: dict[str, int] = {}
        for account in core.accounts.values():
            submissions_by_account[account.api_key] = account.submissions
        data: dict[str, Any] = {
            "credits_charged": dict(ledger.credits_by_account),
            "poll_counts": dict(ledger.poll_counts),
            "submission_counts": {key: count for key, count in submissions_by_account.items() if count},
            "totals": {
                "requests": len(ledger.requests),
                "submissions": len(ledger.submissions),
                "charges": len(ledger.charges),
                "credits_charged": sum(ledger.credits_by_account.values()),
                "polls": sum(ledger.poll_counts.values()),
                "usage_calls": len(ledger.usage_calls),
                "callback_attempts": len(ledger.callback_attempts),
                "rejections": sum(1 for r in ledger.requests if r.status is not None and r.status >= 400),
            },
            "accounts": {
                account.api_key: {"credits": account.credits, "credits_used": account.credits_used}
                for account in core.accounts.values()
            },
        }
        if not summary:
            data["submissions"] = [asdict(entry) for entry in ledger.submissions]
            data["charges"] = [asdict(entry) for entry in ledger.charges]
            data["polls"] = [asdict(entry) for entry in ledger.polls]
            data["usage_calls"] = [asdict(entry) for entry in ledger.usage_calls]
            data["callback_attempts"] = [asdict(entry) for entry in ledger.callback_attempts]
            data["requests"] = [asdict(entry) for entry in ledger.requests]
            data["rejections"] = [
                asdict(entry) for entry in ledger.requests if entry.status is not None and entry.status >= 400
            ]
        return data


class Ledger:
    """Read-only, thread-safe view of everything the simulator saw and charged.

    Each list keeps at most ``ledger_limit`` entries (oldest dropped first); the totals behind
    :meth:`credits_charged` and :meth:`poll_count` are never truncated.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self._core = core

    def requests(self, endpoint: str | None = None, *, api_key: str | None = None) -> list[RequestRecord]:
        """Every API request received (also faulted and dropped ones), oldest first.

        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        :param api_key: only requests sent with this ``X-API-Key``.
        """
        with self._core.lock:
            return [
                record
                for record in self._core.ledger.requests
                if (endpoint is None or record.endpoint == endpoint)
                and (api_key is None or record.api_key == api_key)
            ]

    def submissions(self, api_key: str | None = None) -> list[Submission]:
        """Accepted submissions (jobs created), with their normalised request fields.

        :param api_key: only this account's submissions.
        """
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.submissions
                if api_key is None or entry.api_key == api_key
            ]

    def charges(self, api_key: str | None = None) -> list[Charge]:
        """Settlements of terminal jobs (credits 3, or 0 for empty and failed jobs).

        :param api_key: only this account's charges.
        """
        with self._core.lock:
            self._core.settle_due()
            return [
                entry for entry in self._core.ledger.charges if api_key is None or entry.api_key == api_key
            ]

    def credits_charged(self, api_key: str | None = None) -> int:
        """Total credits charged, for one account or all.

        :param api_key: only this account's total.
        """
        with self._core.lock:
            self._core.settle_due()
            totals = self._core.ledger.credits_by_account
            return sum(totals.values()) if api_key is None else totals.get(api_key, 0)

    def polls(self, request_id: str | None = None) -> list[Poll]:
        """Successful status reads, oldest first.

        :param request_id: only polls of this request.
        """
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.polls
                if request_id is None or entry.request_id == request_id
            ]

    def poll_count(self, request_id: str | None = None) -> int:
        """Number of successful status reads, of one request or all.

        :param request_id: only polls of this request.
        """
        with self._core.lock:
            counts = self._core.ledger.poll_counts
            return sum(counts.values()) if request_id is None else counts.get(request_id, 0)

    def usage_calls(self, api_key: str | None = None) -> list[UsageCall]:
        """Successful ``GET /usage`` calls.

        :param api_key: only this account's calls.
        """
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.usage_calls
                if api_key is None or entry.api_key == api_key
            ]

    def callback_attempts(self, request_id: str | None = None) -> list[CallbackAttempt]:
        """Callback delivery attempts, oldest first.

        :param request_id: only attempts for this request.
        """
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.callback_attempts
                if request_id is None or entry.request_id == request_id
            ]

    def rejections(self, code: str | None = None, *, endpoint: str | None = None) -> list[RequestRecord]:
        """Requests answered with an HTTP status >= 400 (also injected errors).

        :param code: only answers with this error code.
        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        """
        return [
            record
            for record in self.requests(endpoint)
            if record.status is not None and record.status >= 400 and (code is None or record.code == code)
        ]

    def snapshot(self, *, summary: bool = False) -> dict[str, Any]:
        """Return the whole ledger as JSON-compatible data (same as ``GET /_simulator/ledger``).

        :param summary: only counts and totals, no per-event lists.
        """
        return ledger_snapshot(self._core, summary=summary)

    def wait_for(
        self, predicate: Callable[[Ledger], bool], timeout: float = 5.0, interval: float = 0.01
    ) -> None:
        """Wait until ``predicate(ledger)`` is true.

        :param predicate: called with this ledger until it returns true.
        :param timeout: seconds to wait before raising TimeoutError.
        :param interval: seconds between checks.
        """
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"ledger condition not met within {timeout} s")
            time.sleep(interval)


class FaultControls:
    """Script failures: each method activates a fault and returns its id.

    ``endpoint`` is ``submit``, ``status``, ``usage`` or ``*`` (all three); ``times`` is how
    many matching answers (or jobs) the fault affects, None for all until cleared.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self._core = core

    def add(self, kind: str, **params: Any) -> str:
        """Activate a fault from its HTTP form (``POST /_simulator/faults``).

        :param kind: ``error``, ``rate_limit``, ``server_error``, ``unavailable``, ``delay``,
            ``drop``, ``malformed_json``, ``fail_job``, ``empty_job``, ``result_shape``,
            ``job_duration`` or ``pending_status``.
        :param params: the fault's fields (``endpoint``, ``times`` and the kind's own).
        """
        return self._core.add_fault({"kind": kind, **params}).id

    def error(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        endpoint: str = "*",
        times: int | None = 1,
        retry_after: float | None = None,
    ) -> str:
        """Answer the next ``times`` requests with ``status`` and error ``code``.

        :param status: HTTP status to answer.
        :param code: ``error.code`` in the body.
        :param message: ``error.message`` (a default per status otherwise).
        :param endpoint: which endpoint the fault applies to.
        :param times: how many answers, None for all.
        :param retry_after: ``Retry-After`` header value in seconds (1 by default for 429).
        """
        params: dict[str, Any] = {"status": status, "code": code, "endpoint": endpoint, "times": times}
        if message is not None:
            params["message"] = message
        if retry_after is not None:
            params["retry_after"] = retry_after
        return self.add("error", **params)

    def rate_limited(self, *, endpoint: str = "*", times: int | None = 1, retry_after: float = 1) -> str:
        """Answer ``429 rate_limit_exceeded`` with ``Retry-After``.

        :param endpoint: which endpoint the fault applies to.
        :param times: how many answers, None for all.
        :param retry_after: ``Retry-After`` in seconds.
        """
        return self.add("rate_limit", endpoint=endpoint, times=times, retry_after=retry_after)

    def server_error(self, *, endpoint: str = "*", times: int | None = 1) -> str:
        """Answer ``500 internal_error``.

        :param endpoint: which endpoint the fault applies to.
        :param times: how many answers, None for all.
        """
        return self.add("server_error", endpoint=endpoint, times=times)

    def unavailable(
        self, *, endpoint: str = "*", times: int | None = 1, retry_after: float | None = None
    ) -> str:
        """Answer ``503 service_unavailable``.

        :param endpoint: which endpoint the fault applies to.
        :param times: how many answers, None for all.
        :param retry_after: optional ``Retry-After`` in seconds.
        """
        return self.add("unavailable", endpoint=endpoint, times=times, retry_after=retry_after)

    def delay(self, seconds: float, *, endpoint: str = "*", times: int | None = 1) -> str:
        """Wait ``seconds`` before handling (and answering) requests.

        :param seconds: the delay.
        :param endpoint: which endpoint the fault applies to.
        :param times: how many requests, None for all.
        """
        return self.add("delay", seconds=seconds, endpoint=endpoint, times=times)

    def drop_connection(
        self, *, endpoint: str = "*", times: int | None = 1, after_processing: bool = False
    ) -> str:
        """Read the request, then close the TCP connection without answering.

        :param endpoint: which endpoint the fault applies to.
        :param times: how many requests, None for all.
        :param after_processing: handle the request first (a submission creates its job), so
            the client cannot know whether it was processed.
        """
        return self.add("drop", endpoint=endpoint, times=times, after_processing=after_processing)

    def malformed_json(
        self,
        *,
        endpoint: str = "*",
        times: int | None = 1,
        status: int = 200,
        after_processing: bool = False,
    ) -> str:
        """Answer with a body that is not valid JSON.

        :param endpoint: which endpoint the fault applies to.
        :param times: how many answers, None for all.
        :param status: HTTP status of the broken answer.
        :param after_processing: handle the request first (a submission creates its job).
        """
        return self.add(
            "malformed_json", endpoint=endpoint, times=times, status=status, after_processing=after_processing
        )

    def fail_next_job(self, reason: str | None = None, *, times: int | None = 1) -> str:
        """Make the next submitted jobs end ``failed``.

        :param reason: ``data.error`` of the failed job (the simulator's ``failure_reason`` otherwise).
        :param times: how many jobs, None for all.
        """
        return self.add("fail_job", reason=reason, times=times)

    def empty_next_job(self, *, times: int | None = 1) -> str:
        """Make the next submitted jobs complete with no interactions (no credits charged).

        :param times: how many jobs, None for all.
        """
        return self.add("empty_job", times=times)

    def result_shape(self, shape: str | Iterable[str] = "variant", *, times: int | None = 1) -> str:
        """Give the next jobs' results an alternate shape.

        :param shape: ``actor`` (items wrapped as ``{"relationship_type", "actor": {...}}``),
            ``string_counts`` (counts as numeric strings), ``string_verified`` (``"0"``/``"1"``),
            ``results_list`` (``results[]`` instead of ``interactions[]``), a list of those,
            or ``variant`` for all of them.
        :param times: how many jobs, None for all.
        """
        shape_value: str | list[str] = shape if isinstance(shape, str) else list(shape)
        return self.add("result_shape", shape=shape_value, times=times)

    def job_duration(self, seconds: float, *, times: int | None = 1) -> str:
        """Override how long the next jobs take to finish.

        :param seconds: the duration from submission to terminal status.
        :param times: how many jobs, None for all.
        """
        return self.add("job_duration", seconds=seconds, times=times)

    def pending_status(self, *, times: int | None = 1) -> str:
        """Make the next jobs report ``pending`` instead of ``processing`` while they run.

        :param times: how many jobs, None for all.
        """
        return self.add("pending_status", times=times)

    def hold_next_job(self, *, times: int | None = 1) -> str:
        """Keep the next submitted jobs queued/processing until :meth:`NyneSimulator.release`.

        :param times: how many jobs, None for all.
        """
        return self.add("hold_job", times=times)

    def active(self) -> list[dict[str, Any]]:
        """Return the active faults (same form as ``GET /_simulator/faults``)."""
        return [rule.as_dict() for rule in self._core.active_faults()]

    def remove(self, fault_id: str) -> bool:
        """Deactivate one fault; return whether it was active.

        :param fault_id: the id a fault method returned.
        """
        return self._core.remove_fault(fault_id)

    def clear(self) -> None:
        """Deactivate all faults."""
        self._core.clear_faults()
