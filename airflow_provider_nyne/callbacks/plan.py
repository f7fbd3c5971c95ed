"""Plan a submission's callback: the capability URL for the running task instance.

``NyneSubmitInteractionsOperator(wait_mode="callback")`` uses these before it submits:

* :func:`resolve_asset` says which Asset a callback records an event on (asset mode);
* :func:`plan_callback` builds the capability URL for the running task instance. It checks
  the configuration first (``[nyne] callback_base_url`` and a signing secret, and what a
  connection's own secret may sign) and raises
  :class:`~airflow_provider_nyne.callbacks.config.CallbackConfigError` naming what to set,
  before any HTTP request;
* :func:`with_callback_url` puts the URL in the request.

The operator then defers on :class:`~airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger`
(deferred mode) or returns (asset mode). The trigger's events have the shape of the polling
trigger's, so one ``finish`` validates both ways of waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_nyne._compat import mask_secret
from airflow_provider_nyne.callbacks import config
from airflow_provider_nyne.callbacks.assets import interactions_asset_uri
from airflow_provider_nyne.callbacks.config import CallbackConfigError
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
from airflow_provider_nyne.utils.arguments import DEFAULT_CONN_ID

__all__ = [
    "CORRELATION_XCOM_KEY",
    "CallbackPlan",
    "callback_target",
    "plan_callback",
    "resolve_asset",
    "with_callback_url",
]


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
    secret = config.signing_secret(connection_secret)
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


def with_callback_url(
    hook: NyneHook, request: InteractionRequest | Mapping[str, Any], plan_url: str
) -> InteractionRequest:
    """
    The request with its ``callback_url`` replaced by the plan's (checked against the connection's allow-list).

    :param hook: the hook of the submitting connection
    :param request: the request (fields or a built request)
    :param plan_url: the capability URL from :func:`plan_callback`
    """
    fields = request.to_payload() if isinstance(request, InteractionRequest) else dict(request)
    fields.pop("callback_url", None)
    return hook.build_request(**fields, callback_url=plan_url)
