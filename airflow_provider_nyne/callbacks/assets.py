"""Assets for callbacks, and reading a callback's result from a task (no Nyne API call).

Asset mode: a submit task that does not wait sends a callback URL naming an Asset; when
the callback arrives, the receiver records an event on that Asset, and DAGs scheduled on it
start. By default the Asset is :func:`~airflow_provider_nyne.assets.interactions_asset_uri` of
the request, e.g. ``nyne://interactions/twitter/nasa/followers`` (the scheme's rules live in
:mod:`airflow_provider_nyne.assets`; its names are re-exported here). A downstream DAG declares
it the same way::

    from airflow.sdk import DAG, Asset
    from airflow_provider_nyne.callbacks.assets import interactions_asset, request_id_from_asset_events

    with DAG("nasa_followers_landed", schedule=[interactions_asset(username="nasa", type="followers")]):
        NyneCallbackResultToObjectStorageOperator(task_id="land", path="file:///data/{{ run_id }}.jsonl")

Each event's ``extra`` carries ``request_id``, ``status``, ``total_count``, ``platform``,
``interaction_type``, ``target_username``, ``source`` (``"nyne_callback"``),
``received_at``, ``submitted_by`` (the submitting task instance) and ``payload_ref``
(``{"table", "request_id", "correlation_id"}``: where the receiver keeps the full result).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from airflow_provider_nyne._compat import AirflowFailException
from airflow_provider_nyne.assets import (
    ASSET_SCHEME,
    interactions_asset,
    interactions_asset_uri,
    triggering_event_extras,
)
from airflow_provider_nyne.callbacks import config
from airflow_provider_nyne.callbacks.tokens import TOKEN_HEADER, mailbox_path, make_token
from airflow_provider_nyne.client.errors import NyneResponseError
from airflow_provider_nyne.client.models import JobStatus

__all__ = [
    "ASSET_SCHEME",
    "CallbackRef",
    "callback_refs_from_asset_events",
    "fetch_callback_status",
    "interactions_asset",
    "interactions_asset_uri",
    "request_id_from_asset_events",
    "request_ids_from_asset_events",
]

#: ``extra["source"]`` of the Asset events the receiver records.
EVENT_SOURCE = "nyne_callback"


class CallbackRef:
    """
    One callback an Asset event points at.

    :param request_id: the Nyne request id
    :param correlation_id: the correlation id of its callback URL (to read the stored result)
    :param extra: the whole event ``extra``
    """

    def __init__(self, request_id: str, correlation_id: str | None, extra: Mapping[str, Any]) -> None:
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.extra = extra

    def __repr__(self) -> str:
        return f"CallbackRef(request_id={self.request_id!r})"


def callback_refs_from_asset_events(context: Mapping[str, Any], asset: Any = None) -> list[CallbackRef]:
    """
    The callbacks behind the Asset events that triggered this DAG run, oldest first.

    :param context: the task's Airflow context
    :param asset: only events of this Asset (an ``Asset`` or its URI/name); default: all
    """
    found: dict[str, CallbackRef] = {}
    for _, _, extra in triggering_event_extras(context, source=EVENT_SOURCE, asset=asset):
        rid = extra.get("request_id")
        if not rid:
            continue
        payload_ref = extra.get("payload_ref")
        ref: Mapping[str, Any] = payload_ref if isinstance(payload_ref, Mapping) else {}
        # Events come oldest first: a request seen again moves to its latest event's place.
        found.pop(str(rid), None)
        found[str(rid)] = CallbackRef(str(rid), ref.get("correlation_id"), extra)
    return list(found.values())


def request_ids_from_asset_events(context: Mapping[str, Any], asset: Any = None) -> list[str]:
    """
    Request ids of every Nyne callback event that triggered this DAG run, oldest first.

    :param context: the task's Airflow context
    :param asset: only events of this Asset (an ``Asset`` or its URI/name)
    """
    return [ref.request_id for ref in callback_refs_from_asset_events(context, asset)]


def request_id_from_asset_events(context: Mapping[str, Any], asset: Any = None) -> str:
    """
    The request id of the latest Nyne callback event that triggered this DAG run.

    Usable from a template as well: ``request_id="{{ nyne_request_id(ti.get_template_context()) }}"``
    with ``user_defined_macros={"nyne_request_id": request_id_from_asset_events}``, or plainly
    ``"{{ (triggering_asset_events.values() | first | last).extra['request_id'] }}"`` for a DAG
    scheduled on a single Asset.

    :param context: the task's Airflow context
    :param asset: only events of this Asset (an ``Asset`` or its URI/name)
    :raises AirflowFailException: when the run was not triggered by a Nyne callback event
    """
    refs = callback_refs_from_asset_events(context, asset)
    if not refs:
        raise AirflowFailException(
            "this DAG run was not triggered by a Nyne callback Asset event: schedule the DAG on "
            "the Asset named by the submit task (see interactions_asset), or pass request_id explicitly"
        )
    return refs[-1].request_id


def fetch_callback_status(
    request_id: str,
    correlation_id: str,
    *,
    secret: str | None = None,
    base_url: str | None = None,
    timeout: float = 30.0,
) -> JobStatus | None:
    """
    Read a received callback from the api-server's receiver: the job status with its result.

    Never calls the Nyne API. ``None`` when the receiver holds nothing for the request
    (never delivered, or purged after the retention period).

    :param request_id: the Nyne request id
    :param correlation_id: the correlation id of its callback URL (XCom
        ``callback_correlation_id`` of the submit task, or ``payload_ref`` of an Asset event)
    :param secret: the signing secret (default: ``[nyne] callback_secret``)
    :param base_url: the api-server root as this process reaches it (default:
        :func:`~airflow_provider_nyne.callbacks.config.internal_url`)
    :param timeout: seconds for the request
    :raises NyneResponseError: when the receiver cannot be asked or refuses the token
    """
    secret = secret or config.config_secret()
    root = base_url or config.internal_url()
    if not secret or not root:
        raise NyneResponseError(
            "cannot read the callback from the receiver: set a callback secret and "
            "[nyne] callback_internal_url (or [core] execution_api_server_url)"
        )
    url = root.rstrip("/") + mailbox_path(correlation_id)
    headers = {TOKEN_HEADER: make_token(secret, correlation_id)}
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.get(url, params={"request_id": request_id}, headers=headers)
    except httpx.HTTPError as exc:
        raise NyneResponseError(f"callback receiver at {root} unreachable: {type(exc).__name__}") from None
    if response.status_code == 204:
        return None
    if response.status_code == 404:
        raise NyneResponseError(
            f"callback receiver at {root} refused the token for request {request_id}: this process's "
            "callback secret differs from the api-server's, or the receiver is not installed there"
        )
    if response.status_code != 200:
        raise NyneResponseError(f"callback receiver at {root} answered HTTP {response.status_code}")
    try:
        return JobStatus.from_api(response.json()["data"], request_id=request_id)
    except (ValueError, KeyError, TypeError) as exc:
        raise NyneResponseError(f"callback receiver at {root} sent an unreadable answer: {exc}") from None
