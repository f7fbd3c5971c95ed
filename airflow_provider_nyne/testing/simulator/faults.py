"""Scriptable failures: fault rules, how requests and jobs consume them, and their Python controls."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from airflow_provider_nyne.testing.simulator.data import normalise_shape
from airflow_provider_nyne.testing.simulator.settings import ENDPOINTS

__all__ = ["JOB_FAULT_KINDS", "RESPONSE_FAULT_KINDS", "FaultBook", "FaultControls", "FaultRule"]

RESPONSE_FAULT_KINDS = frozenset({"error", "delay", "drop", "malformed_json"})
JOB_FAULT_KINDS = frozenset(
    {"fail_job", "empty_job", "result_shape", "job_duration", "pending_status", "hold_job"}
)
_FAULT_ALIASES: dict[str, dict[str, Any]] = {
    "rate_limit": {"kind": "error", "status": 429, "code": "rate_limit_exceeded"},
    "server_error": {"kind": "error", "status": 500, "code": "internal_error"},
    "unavailable": {"kind": "error", "status": 503, "code": "service_unavailable"},
}
_DEFAULT_MESSAGES = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
    504: "Gateway timeout",
}
MALFORMED_BODY = '{"success": true, "data": {"request_id": "req_'


@dataclass
class FaultRule:
    """An active fault; ``remaining`` None means until cleared."""

    id: str
    kind: str
    endpoint: str
    remaining: int | None
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-compatible dict."""
        params = dict(self.params)
        if "shape" in params:
            params["shape"] = sorted(params["shape"])
        return {
            "id": self.id,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "times": self.remaining,
            **params,
        }


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _number(value: Any, name: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum}")
    return float(value)


def _fault_params(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Check and take the kind's own fields out of ``spec``."""
    params: dict[str, Any] = {}
    if kind == "error":
        status = spec.pop("status", 500)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        params["status"] = status
        params["code"] = str(spec.pop("code", "internal_error" if status >= 500 else "error"))
        params["message"] = str(spec.pop("message", _DEFAULT_MESSAGES.get(status, "Injected error")))
        retry_after = spec.pop("retry_after", 1 if status == 429 else None)
        params["retry_after"] = None if retry_after is None else _number(retry_after, "retry_after")
    elif kind == "delay":
        params["seconds"] = _number(spec.pop("seconds", None), "seconds")
    elif kind == "drop":
        params["after_processing"] = _bool(spec.pop("after_processing", False), "after_processing")
    elif kind == "malformed_json":
        params["after_processing"] = _bool(spec.pop("after_processing", False), "after_processing")
        status = spec.pop("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        params["status"] = status
        params["body"] = str(spec.pop("body", MALFORMED_BODY))
    elif kind == "fail_job":
        reason = spec.pop("reason", None)
        params["reason"] = str(reason) if reason is not None else None
    elif kind == "result_shape":
        params["shape"] = normalise_shape(spec.pop("shape", "variant"))
    elif kind == "job_duration":
        params["seconds"] = _number(spec.pop("seconds", None), "seconds")
    elif kind in ("pending_status", "hold_job"):
        pass
    if spec:
        raise ValueError(f"unexpected fields for a {kind!r} fault: {sorted(spec)}")
    return params


class FaultBook:
    """The active faults, consumed as answers and new jobs match them.

    :param lock: the simulator's state lock (faults change together with the rest of its state).
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._rules: list[FaultRule] = []
        self._counter = 0

    def add(self, spec: Mapping[str, Any]) -> FaultRule:
        """Check a fault description (its HTTP form, with a ``kind``) and activate it.

        :param spec: ``kind``, ``endpoint``, ``times`` and the kind's own fields.
        """
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if not isinstance(kind, str):
            raise ValueError("a fault needs a 'kind'")
        if kind in _FAULT_ALIASES:
            spec = {**_FAULT_ALIASES[kind], **spec}
            kind = spec.pop("kind")
        if kind not in RESPONSE_FAULT_KINDS | JOB_FAULT_KINDS:
            known = sorted(RESPONSE_FAULT_KINDS | JOB_FAULT_KINDS | set(_FAULT_ALIASES))
            raise ValueError(f"unknown fault kind {kind!r}; choose from {known}")
        times = spec.pop("times", 1)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer or null (until cleared)")
        endpoint = spec.pop("endpoint", "*")
        if kind in JOB_FAULT_KINDS:
            endpoint = "submit"
        elif endpoint not in (*ENDPOINTS, "*"):
            raise ValueError(f"endpoint must be one of {[*ENDPOINTS, '*']}")
        params = _fault_params(kind, spec)
        with self._lock:
            self._counter += 1
            rule = FaultRule(f"fault-{self._counter}", kind, endpoint, times, params)
            self._rules.append(rule)
            return rule

    def active(self) -> list[FaultRule]:
        """Return copies of the active fault rules, oldest first."""
        with self._lock:
            return [replace(rule, params=dict(rule.params)) for rule in self._rules]

    def remove(self, fault_id: str) -> bool:
        """Deactivate one fault; return whether it was active.

        :param fault_id: the rule's id.
        """
        with self._lock:
            before = len(self._rules)
            self._rules = [rule for rule in self._rules if rule.id != fault_id]
            return len(self._rules) != before

    def clear(self) -> None:
        """Deactivate every fault."""
        with self._lock:
            self._rules.clear()

    def _consume(self, rule: FaultRule) -> None:
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._rules.remove(rule)

    def take_response(self, endpoint: str) -> tuple[float, FaultRule | None]:
        """Consume the first matching delay and the first matching answer fault.

        :param endpoint: ``submit``, ``status`` or ``usage``.
        """
        delay = 0.0
        answer: FaultRule | None = None
        with self._lock:
            for rule in list(self._rules):
                if rule.kind not in RESPONSE_FAULT_KINDS or rule.endpoint not in (endpoint, "*"):
                    continue
                if rule.kind == "delay":
                    if delay == 0.0:
                        delay = rule.params["seconds"]
                        self._consume(rule)
                elif answer is None:
                    answer = replace(rule, params=dict(rule.params))
                    self._consume(rule)
        return delay, answer

    def take_job(self, failure_reason: str) -> dict[str, Any]:
        """Consume the job faults a new job gets; return the job fields they set.

        :param failure_reason: ``fail_reason`` of a ``fail_job`` fault without its own reason.
        """
        applied: dict[str, Any] = {}
        with self._lock:
            for rule in list(self._rules):
                if rule.kind not in JOB_FAULT_KINDS:
                    continue
                if rule.kind == "fail_job" and "fail_reason" not in applied:
                    applied["fail_reason"] = rule.params["reason"] or failure_reason
                elif rule.kind == "empty_job" and "empty" not in applied:
                    applied["empty"] = True
                elif rule.kind == "result_shape" and "shape" not in applied:
                    applied["shape"] = rule.params["shape"]
                elif rule.kind == "job_duration" and "duration" not in applied:
                    applied["duration"] = rule.params["seconds"]
                elif rule.kind == "pending_status" and "intermediate_status" not in applied:
                    applied["intermediate_status"] = "pending"
                elif rule.kind == "hold_job" and "held" not in applied:
                    applied["held"] = True
                else:
                    continue
                self._consume(rule)
        return applied


class FaultControls:
    """Script failures: each method activates a fault and returns its id.

    ``endpoint`` is ``submit``, ``status``, ``usage`` or ``*`` (all three); ``times`` is how
    many matching answers (or jobs) the fault affects, None for all until cleared.
    """

    def __init__(self, book: FaultBook) -> None:
        self._book = book

    def add(self, kind: str, **params: Any) -> str:
        """Activate a fault from its HTTP form (``POST /_simulator/faults``).

        :param kind: ``error``, ``rate_limit``, ``server_error``, ``unavailable``, ``delay``,
            ``drop``, ``malformed_json``, ``fail_job``, ``empty_job``, ``result_shape``,
            ``job_duration``, ``pending_status`` or ``hold_job``.
        :param params: the fault's fields (``endpoint``, ``times`` and the kind's own).
        """
        return self._book.add({"kind": kind, **params}).id

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
        return [rule.as_dict() for rule in self._book.active()]

    def remove(self, fault_id: str) -> bool:
        """Deactivate one fault; return whether it was active.

        :param fault_id: the id a fault method returned.
        """
        return self._book.remove(fault_id)

    def clear(self) -> None:
        """Deactivate all faults."""
        self._book.clear()
