"""Callback payloads and the events a waiting task receives: pure functions, no Airflow, no I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from airflow_provider_nyne.client.models import JobState, JobStatus
from airflow_provider_nyne.client.polling import WaitOutcome

__all__ = [
    "MAX_JSON_DEPTH",
    "CallbackPayloadError",
    "canonical_json",
    "decode_body",
    "event_from_status",
    "event_from_status_data",
    "extract_status_data",
]


#: The stored key's size; real request ids are a few dozen characters.
MAX_REQUEST_ID_LENGTH = 255
#: Deepest nesting a callback body may have; a result is about six levels deep.
MAX_JSON_DEPTH = 64


class CallbackPayloadError(ValueError):
    """The callback body is not a usable job status (the receiver answers ``400``)."""


def _reject_constant(name: str) -> Any:
    raise CallbackPayloadError(f"callback body contains {name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity
        raise CallbackPayloadError(f"callback body contains a number out of range ({text[:40]})")
    return value


def _check_depth(value: Any) -> None:
    # Iterative: the point is to refuse what recursion cannot handle.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise CallbackPayloadError(f"callback body is nested deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def decode_body(raw: bytes) -> Any:
    """
    Decode a callback body as strict JSON: only what can be stored and served back as it came.

    Refuses (with :class:`CallbackPayloadError`) bytes that are not UTF-8, text that is not
    JSON, ``NaN``/``Infinity`` and numbers that overflow to them, and nesting deeper than
    :data:`MAX_JSON_DEPTH`.

    :param raw: the request body
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CallbackPayloadError("callback body is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except CallbackPayloadError:
        raise
    except RecursionError:
        raise CallbackPayloadError(f"callback body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise CallbackPayloadError("callback body is not valid JSON") from None
    _check_depth(value)
    return value


def canonical_json(value: Any) -> str:
    """
    The JSON text a decoded body is stored as (and served back as, unchanged).

    :param value: a value from :func:`decode_body`
    :raises CallbackPayloadError: when it holds text UTF-8 cannot carry (unpaired surrogate escapes)
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CallbackPayloadError("callback body contains an unpaired surrogate escape") from None
    return text


def extract_status_data(body: Any) -> dict[str, Any]:
    """
    The job status ``data`` object from a callback body: the API envelope or a bare object.

    :param body: the decoded JSON body
    :raises CallbackPayloadError: when there is no object with a ``request_id``
    """
    if not isinstance(body, Mapping):
        raise CallbackPayloadError(f"callback body must be a JSON object, got {type(body).__name__}")
    data = body.get("data")
    candidate = data if isinstance(data, Mapping) and data.get("request_id") else body
    request_id = candidate.get("request_id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int) or not str(request_id).strip():
        raise CallbackPayloadError("callback body carries no request_id")
    if len(str(request_id)) > MAX_REQUEST_ID_LENGTH:
        raise CallbackPayloadError(f"request_id longer than {MAX_REQUEST_ID_LENGTH} characters")
    if not str(request_id).isprintable() or str(request_id).strip() != str(request_id):
        # It goes into a key column, URLs, XCom comparisons and logs.
        raise CallbackPayloadError("request_id contains control characters or surrounding spaces")
    return dict(candidate)


def event_from_status(
    status: JobStatus, source: str, *, correlation_id: str | None = None, polls: int = 0
) -> dict[str, Any]:
    """
    The trigger event a waiting task receives for a finished job.

    Same shape as :class:`~airflow_provider_nyne.triggers.interactions.NyneInteractionsTrigger`'s
    events (``status`` ``success``/``failed``, ``request_id``, ``total_count``, ``message``,
    ``polls``), so one ``execute_complete`` handles both ways of waiting; plus ``source``
    and ``correlation_id``. Never the result itself: it stays in the receiver's table.

    :param status: a terminal job status
    :param source: where it came from: ``callback``, ``mailbox`` or ``reconcile``
    :param correlation_id: the correlation id of the callback URL
    :param polls: status requests made to the API while waiting (``0`` unless reconciled)
    :raises ValueError: when the status is not terminal
    """
    rid = status.request_id
    if status.state is JobState.COMPLETED:
        outcome = WaitOutcome(
            "success", rid, total_count=status.total_count, message=f"request {rid} completed", polls=polls
        )
    elif status.state is JobState.FAILED:
        outcome = WaitOutcome(
            "failed", rid, message=f"request {rid} failed: {status.error or 'no reason given'}", polls=polls
        )
    else:
        raise ValueError(f"request {rid} is still {status.status}")
    event = outcome.to_event()
    event["source"] = source
    event["correlation_id"] = correlation_id
    return event


def event_from_status_data(
    data: Mapping[str, Any], source: str, *, correlation_id: str | None = None, polls: int = 0
) -> dict[str, Any]:
    """
    :func:`event_from_status` for a status ``data`` object (a callback body or a mailbox answer).

    :param data: the job status ``data`` object
    :param source: ``callback``, ``mailbox`` or ``reconcile``
    :param correlation_id: the correlation id of the callback URL
    :param polls: status requests made to the API while waiting
    """
    return event_from_status(JobStatus.from_api(data), source, correlation_id=correlation_id, polls=polls)
