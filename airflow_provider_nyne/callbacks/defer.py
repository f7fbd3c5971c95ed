"""Submit with a callback URL, then wait for the callback (deferred mode) or not (asset mode).

These functions are what ``NyneSubmitInteractionsOperator(wait_mode="callback")`` runs, and
work with any operator that has a ``log``, ``defer()`` and ``nyne_conn_id``:

* :func:`plan_callback` builds the capability URL for the running task instance. It checks
  the configuration first (``[nyne] callback_base_url`` and a signing secret) and raises
  :class:`~airflow_provider_nyne.callbacks.config.CallbackConfigError` naming what to set,
  before any HTTP request;
* :func:`defer_on_callback` defers on :class:`~airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger`,
  which never polls the API (one status request at the deadline if no callback came);
* :func:`submit_and_defer_on_callback` and :func:`submit_with_asset_callback` do the whole
  thing for a request.

The events reaching ``execute_complete`` have the shape of the polling trigger's, so
``utils.waiting.check_event`` validates both ways of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from airflow_provider_nyne._compat import AirflowFailException, mask_secret
from airflow_provider_nyne.callbacks import config
from airflow_provider_nyne.callbacks.assets import interactions_asset_uri
from airflow_provider_nyne.callbacks.config import DEFAULT_MAILBOX_INTERVAL, CallbackConfigError
from airflow_provider_nyne.callbacks.tokens import (
    CORRELATION_XCOM_KEY,
    CallbackTarget,
    callback_url,
    connection_secret_may_sign,
    encode_correlation_id,
    make_token,
)
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID, WAIT_MODES, check_wait_mode
from airflow_provider_nyne.utils.waiting import defer_until

__all__ = [
    "CORRELATION_XCOM_KEY",
    "DEFER_TIMEOUT_GRACE",
    "WAIT_MODES",
    "CallbackPlan",
    "callback_request",
    "callback_target",
    "check_wait_mode",
    "continue_with_callback",
    "defer_on_callback",
    "plan_callback",
    "resolve_asset",
    "submit_and_defer_on_callback",
    "submit_with_asset_callback",
]

#: Airflow's own deferral timeout runs this much past the trigger's deadline (a safety net).
DEFER_TIMEOUT_GRACE = 300.0


@dataclass(frozen=True)
class CallbackPlan:
    """
    The callback URL of one submission. ``repr()`` hides the URL (it is a credential).

    :param url: the capability URL sent to Nyne as ``callback_url``
    :param correlation_id: what the URL wakes, encoded
    :param target: the same, decoded
    """

    url: str
    correlation_id: str
    target: CallbackTarget

    def __repr__(self) -> str:
        return f"CallbackPlan(target={self.target!r})"


def _asset_name_uri(asset: Any) -> tuple[str | None, str | None]:
    if asset is None:
        return None, None
    if isinstance(asset, str):
        from airflow.sdk import Asset

        # As Airflow normalises it (``s3://bucket`` becomes ``s3://bucket/``), or the receiver
        # would not find the Asset a DAG declared with the same string.
        asset = Asset(uri=asset)
    name = getattr(asset, "name", None)
    uri = getattr(asset, "uri", None)
    if not name and not uri:
        raise ValueError(f"callback_asset must be an Asset or a URI string; got {asset!r}")
    return name or uri, uri or name


def resolve_asset(asset: Any, request: InteractionRequest | None) -> tuple[str | None, str | None]:
    """
    ``(name, uri)`` of the Asset a callback records an event on.

    :param asset: an ``Asset``, a URI string, ``True`` for the request's default
        (:func:`~airflow_provider_nyne.callbacks.assets.interactions_asset_uri`), or ``None``/``False`` for none
    :param request: the request (needed for the default)
    """
    if asset is True:
        if request is None:
            raise ValueError("the default callback Asset needs the request")
        uri = interactions_asset_uri(request)
        return uri, uri
    if asset is None or asset is False:
        return None, None
    return _asset_name_uri(asset)


def callback_target(
    context: Mapping[str, Any],
    *,
    nyne_conn_id: str = DEFAULT_CONN_ID,
    wait: bool,
    asset_name: str | None = None,
    asset_uri: str | None = None,
) -> CallbackTarget:
    """
    The target of a callback for the running task instance.

    :param context: the task's Airflow context
    :param nyne_conn_id: the connection whose secret signs the URL
    :param wait: the task defers waiting for the callback
    :param asset_name: Asset to record an event on (asset mode)
    :param asset_uri: its URI
    """
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return CallbackTarget(
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        map_index=-1 if map_index is None else int(map_index),
        wait=wait,
        asset_name=asset_name,
        asset_uri=asset_uri,
        conn_id=None if nyne_conn_id == DEFAULT_CONN_ID else nyne_conn_id,
    )


def plan_callback(
    context: Mapping[str, Any],
    hook: NyneHook,
    *,
    wait: bool,
    asset_name: str | None = None,
    asset_uri: str | None = None,
) -> CallbackPlan:
    """
    Build the callback URL for the running task instance; fails before any HTTP request.

    The secret is the connection's ``callback_secret`` extra, else ``[nyne] callback_secret``
    (the receiver uses the same precedence). A connection's own secret signs only ``nyne://``
    Assets or the task's outlets (the receiver refuses anything else): another Asset fails
    here, before anything is paid for.

    :param context: the task's Airflow context
    :param hook: the hook of the submitting connection
    :param wait: the task defers waiting for the callback
    :param asset_name: Asset to record an event on
    :param asset_uri: its URI
    :raises CallbackConfigError: when ``[nyne] callback_base_url`` or the secret is missing, or
        the connection's secret may not sign for the Asset
    """
    base = config.base_url(required=True)
    assert base is not None
    connection_secret = hook.settings.callback_secret
    secret = connection_secret or config.config_secret()
    if not secret:
        raise CallbackConfigError(
            f"callback mode needs a signing secret: set the callback_secret extra of connection "
            f"{hook.nyne_conn_id!r} or [nyne] callback_secret (env AIRFLOW__NYNE__CALLBACK_SECRET), "
            "the same on the api-server and the workers"
        )
    target = callback_target(
        context, nyne_conn_id=hook.nyne_conn_id, wait=wait, asset_name=asset_name, asset_uri=asset_uri
    )
    if connection_secret and not connection_secret_may_sign(target, _declared_outlets(context)):
        raise CallbackConfigError(
            f"the callback_secret of connection {hook.nyne_conn_id!r} signs callbacks only for nyne:// "
            f"Assets or the task's outlets, not {asset_uri!r}: use the default nyne:// Asset, or sign "
            "with the deployment-wide [nyne] callback_secret (remove the connection's callback_secret)"
        )
    correlation_id = encode_correlation_id(target)
    # The token is a credential for this task's callback: keep it out of logs.
    mask_secret(make_token(secret, correlation_id))
    return CallbackPlan(callback_url(base, correlation_id, secret), correlation_id, target)


def _declared_outlets(context: Mapping[str, Any]) -> list[tuple[str, str]]:
    outlets = getattr(context.get("task"), "outlets", None) or []
    return [(str(getattr(o, "name", None) or o.uri), str(o.uri)) for o in outlets if getattr(o, "uri", None)]


def defer_on_callback(
    task: Any,
    request_id: str,
    correlation_id: str,
    *,
    deadline: float,
    nyne_conn_id: str = DEFAULT_CONN_ID,
    mailbox_interval: float = DEFAULT_MAILBOX_INTERVAL,
    reconcile: bool = True,
    method_name: str = "execute_complete",
) -> NoReturn:
    """
    Free the worker: defer ``task`` on :class:`~airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger`
    until the callback or ``deadline``.

    :param task: the operator deferring
    :param request_id: the submitted request
    :param correlation_id: the correlation id of its callback URL
    :param deadline: absolute deadline, epoch seconds
    :param nyne_conn_id: the ``nyne`` connection
    :param mailbox_interval: seconds between the trigger's safety-net mailbox reads
    :param reconcile: one status request at the deadline if no callback came
    :param method_name: the task method that receives the event
    """
    from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger

    trigger = NyneCallbackTrigger(
        request_id=request_id,
        correlation_id=correlation_id,
        end_time=deadline,
        nyne_conn_id=nyne_conn_id,
        mailbox_interval=mailbox_interval,
        reconcile=reconcile,
    )
    defer_until(
        task,
        trigger,
        deadline=deadline,
        grace=DEFER_TIMEOUT_GRACE,
        method_name=method_name,
        waiting_for=f"the callback of Nyne request {request_id} arrives, without polling",
    )


def _build_request(
    hook: NyneHook, request: InteractionRequest | Mapping[str, Any], plan_url: str
) -> InteractionRequest:
    fields = request.to_payload() if isinstance(request, InteractionRequest) else dict(request)
    fields.pop("callback_url", None)
    return hook.build_request(**fields, callback_url=plan_url)


def _request_for_asset(request: InteractionRequest | Mapping[str, Any]) -> InteractionRequest:
    if isinstance(request, InteractionRequest):
        return request
    fields = {k: v for k, v in request.items() if k != "callback_url"}
    return InteractionRequest.create(**fields)


def _plan_or_fail(context: Mapping[str, Any], hook: NyneHook, **kwargs: Any) -> CallbackPlan:
    try:
        plan = plan_callback(context, hook, **kwargs)
    except CallbackConfigError as err:
        raise AirflowFailException(str(err)) from err
    # Recorded before the submission: the receiver accepts callbacks only on the URL the task
    # instance recorded, and may hear from Nyne before the task hears back from the API.
    context["ti"].xcom_push(key=CORRELATION_XCOM_KEY, value=plan.correlation_id)
    return plan


def submit_and_defer_on_callback(
    task: Any,
    context: Mapping[str, Any],
    hook: NyneHook,
    request: InteractionRequest | Mapping[str, Any],
    *,
    timeout: float,
    asset: Any = None,
    mailbox_interval: float = DEFAULT_MAILBOX_INTERVAL,
    method_name: str = "execute_complete",
) -> NoReturn:
    """
    Deferred mode in one call: plan the URL, submit with it, push XComs, defer on the callback.

    Pushes XComs ``request_id`` and ``callback_correlation_id`` before deferring. Does not
    reconnect to a previous try's request: an operator that does keeps its own record and
    calls :func:`plan_callback` and :func:`defer_on_callback` itself.

    :param task: the operator
    :param context: the task's Airflow context
    :param hook: the hook of the submitting connection
    :param request: the request (fields or a built request; its ``callback_url`` is replaced)
    :param timeout: seconds to wait for the callback before the one reconciliation
    :param asset: also record an Asset event (an ``Asset``, a URI, or ``True`` for the default)
    :param mailbox_interval: seconds between the trigger's safety-net mailbox reads
    :param method_name: the task method that receives the event
    """
    name, uri = resolve_asset(asset, _request_for_asset(request) if asset is True else None)
    plan = _plan_or_fail(context, hook, wait=True, asset_name=name, asset_uri=uri)
    built = _build_request(hook, request, plan.url)
    request_id = hook.submit_interactions(built)
    ti = context["ti"]
    ti.xcom_push(key="request_id", value=request_id)
    ti.xcom_push(key=CORRELATION_XCOM_KEY, value=plan.correlation_id)
    defer_on_callback(
        task,
        request_id,
        plan.correlation_id,
        deadline=time.time() + float(timeout),
        nyne_conn_id=hook.nyne_conn_id,
        mailbox_interval=mailbox_interval,
        method_name=method_name,
    )


def submit_with_asset_callback(
    context: Mapping[str, Any],
    hook: NyneHook,
    request: InteractionRequest | Mapping[str, Any],
    *,
    asset: Any = True,
) -> str:
    """
    Asset mode in one call: submit with a callback URL that records an Asset event; do not wait.

    Pushes XComs ``request_id`` and ``callback_correlation_id``; returns the request id.

    :param context: the task's Airflow context
    :param hook: the hook of the submitting connection
    :param request: the request (fields or a built request; its ``callback_url`` is replaced)
    :param asset: the Asset (an ``Asset`` or URI; ``True``: the request's default Asset)
    """
    name, uri = resolve_asset(asset, _request_for_asset(request))
    if not uri:
        raise ValueError("asset mode needs an Asset")
    plan = _plan_or_fail(context, hook, wait=False, asset_name=name, asset_uri=uri)
    built = _build_request(hook, request, plan.url)
    request_id = hook.submit_interactions(built)
    ti = context["ti"]
    ti.xcom_push(key="request_id", value=request_id)
    ti.xcom_push(key=CORRELATION_XCOM_KEY, value=plan.correlation_id)
    return request_id


def callback_request(
    task: Any, context: Mapping[str, Any], request: InteractionRequest
) -> tuple[InteractionRequest, CallbackPlan | None]:
    """
    The request to submit, with the callback URL when ``task.wait_mode == "callback"``.

    For ``NyneSubmitInteractionsOperator`` (or any task with ``wait_mode``,
    ``wait_for_completion``, ``callback_asset`` and ``hook``): deferred mode when the task
    waits, asset mode otherwise (the Asset is ``callback_asset``, default the request's
    :func:`~airflow_provider_nyne.callbacks.assets.interactions_asset_uri`). In poll mode the
    request is returned unchanged with no plan. Runs before any HTTP request.

    :param task: the submitting operator
    :param context: the task's Airflow context
    :param request: the validated request
    :raises AirflowFailException: when callback mode is not configured, or ``callback_url`` is set too
    """
    if getattr(task, "wait_mode", "poll") != "callback":
        return request, None
    if getattr(task, "reuse_request_id", None):
        task.log.warning(
            "reuse_request_id attaches to a request submitted elsewhere: its callback goes where its "
            "submitter asked, so this task waits for it by polling"
        )
        return request, None
    if request.callback_url:
        raise AirflowFailException(
            "callback_url and wait_mode='callback' exclude each other: the callback URL is built "
            "from [nyne] callback_base_url"
        )
    wait = bool(getattr(task, "wait_for_completion", False))
    asset = getattr(task, "callback_asset", None)
    name, uri = resolve_asset(asset if asset is not None else (None if wait else True), request)
    plan = _plan_or_fail(context, task.hook, wait=wait, asset_name=name, asset_uri=uri)
    if not wait:
        task.log.info("Asset mode: when Nyne calls back, an event is recorded on the Asset %s", uri)
    return _build_request(task.hook, request, plan.url), plan


def continue_with_callback(
    task: Any,
    context: Mapping[str, Any],
    request_id: str,
    plan: CallbackPlan,
    *,
    status: Any = None,
    method_name: str = "execute_complete",
) -> Any:
    """
    After the submission (or a reconnection): push the correlation id, then defer on the callback or return.

    Returns the request id in asset mode; in deferred mode defers (``TaskDeferred``), or
    returns the result summary when a reconnected request had already completed.

    :param task: the submitting operator (``wait_for_completion``, ``timeout``, ``nyne_conn_id``)
    :param context: the task's Airflow context
    :param request_id: the submitted (or reconnected) request
    :param plan: from :func:`callback_request`
    :param status: the request's status when already known (a reconnection), else ``None``
    :param method_name: the task method that receives the event
    """
    context["ti"].xcom_push(key=CORRELATION_XCOM_KEY, value=plan.correlation_id)
    if not plan.target.wait:
        return request_id
    if status is not None and getattr(status, "is_terminal", False):
        from airflow_provider_nyne.callbacks.events import event_from_status
        from airflow_provider_nyne.utils.waiting import check_event

        return check_event(
            event_from_status(status, "reconcile", correlation_id=plan.correlation_id), task=task
        )
    defer_on_callback(
        task,
        request_id,
        plan.correlation_id,
        deadline=time.time() + float(task.timeout),
        nyne_conn_id=task.hook.nyne_conn_id,
        mailbox_interval=float(getattr(task, "callback_mailbox_interval", DEFAULT_MAILBOX_INTERVAL)),
        method_name=method_name,
    )
