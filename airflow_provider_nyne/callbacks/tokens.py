"""Capability URLs for Nyne callbacks: correlation ids and their HMAC tokens.

A callback URL is ``<base>/nyne/v1/callback/<correlation_id>/<token>``:

* the *correlation id* says what the callback wakes: the submitting task instance
  (``dag_id``, ``task_id``, ``run_id``, ``map_index``), whether that task waits for it
  (deferred mode), the Asset to record an event on (asset mode) and the ``nyne``
  connection whose secret signs it. It is compact JSON encoded as URL-safe base64, so the
  submitting task can build it before it submits, without writing anything anywhere;
* the *token* is ``HMAC-SHA256(secret, "nyne-callback/v1:" + correlation_id)`` in URL-safe
  base64. Whoever holds the URL may deliver (and read back) the callback of the request
  that task instance submitted; nobody can forge a URL for another task or asset without
  the secret.

What a secret may sign is narrower than what it can compute: a connection's own
``callback_secret`` signs only for task instances using that connection and only
``nyne://`` Assets or the submitting task's outlets (:func:`connection_secret_may_sign`);
the receiver enforces both, and the submitting task checks the Asset before it spends.

The credit guard's requests to the same app (``/nyne/v1/credits/reserve`` and
``.../release``) carry no URL token: the JSON body is signed,
``HMAC-SHA256(secret, "nyne-credits/v1:" + body)`` in the :data:`CREDITS_SIGNATURE_HEADER`
header (:func:`sign_credit_request`), with the same secret as that connection's callbacks.

This module is pure Python (no Airflow import): the receiver, the trigger and the
submitting task all use it. The ``nyne://`` scheme's rules are :mod:`airflow_provider_nyne.assets`'s
(``ASSET_SCHEME`` is re-exported here).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_provider_nyne.assets import ASSET_SCHEME, is_nyne_uri

__all__ = [
    "ASSET_SCHEME",
    "CALLBACK_PATH",
    "CORRELATION_XCOM_KEY",
    "CREDITS_PATH",
    "CREDITS_SIGNATURE_HEADER",
    "MAILBOX_PATH",
    "TOKEN_HEADER",
    "URL_PREFIX",
    "CallbackTarget",
    "callback_path",
    "callback_url",
    "connection_secret_may_sign",
    "decode_correlation_id",
    "encode_correlation_id",
    "mailbox_path",
    "make_token",
    "sign_credit_request",
    "verify_credit_request",
    "verify_token",
]

#: Where the receiver app is mounted inside the api-server.
URL_PREFIX = "/nyne"
#: The callback route below :data:`URL_PREFIX`.
CALLBACK_PATH = "/v1/callback"
#: The mailbox route below :data:`URL_PREFIX`: the token travels in :data:`TOKEN_HEADER`, not the URL,
#: so that triggerers and workers reading it log no credential.
MAILBOX_PATH = "/v1/mailbox"
TOKEN_HEADER = "X-Nyne-Callback-Token"
#: The credit guard's routes below :data:`URL_PREFIX` (``/reserve``, ``/release``).
CREDITS_PATH = "/v1/credits"
#: Header carrying the signature of a credit guard request's body.
CREDITS_SIGNATURE_HEADER = "X-Nyne-Credits-Signature"
_CREDITS_CONTEXT = b"nyne-credits/v1:"
#: XCom key under which the submitting task records the correlation id of the URL it sent:
#: the receiver accepts a callback only on the URL the task instance itself issued.
CORRELATION_XCOM_KEY = "callback_correlation_id"
_TOKEN_CONTEXT = b"nyne-callback/v1:"
#: Correlation ids longer than this are refused before any decoding (a URL stays well under 4 KiB).
MAX_CORRELATION_ID_LENGTH = 3000
_FORMAT_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, correlation_id: str) -> str:
    """
    The HMAC-SHA256 token that authorises callbacks for ``correlation_id``.

    :param secret: the callback signing secret (connection extra ``callback_secret`` or
        ``[nyne] callback_secret``)
    :param correlation_id: the correlation id the token is for
    :raises ValueError: when the secret is empty
    """
    if not secret:
        raise ValueError("a callback signing secret is required")
    digest = hmac.new(secret.encode("utf-8"), _TOKEN_CONTEXT + correlation_id.encode("utf-8"), hashlib.sha256)
    return _b64(digest.digest())


def verify_token(secret: str | None, correlation_id: str, token: str | None) -> bool:
    """
    Whether ``token`` authorises ``correlation_id``, compared in constant time.

    :param secret: the signing secret; ``None`` or empty never verifies
    :param correlation_id: the correlation id from the URL
    :param token: the token from the URL
    """
    if not secret or not token:
        return False
    expected = make_token(secret, correlation_id)
    # compare_digest on bytes: constant time for equal lengths, and no TypeError on non-ASCII input.
    return hmac.compare_digest(expected.encode("ascii"), token.encode("utf-8", "replace"))


def sign_credit_request(secret: str, body: bytes) -> str:
    """
    The signature of a credit guard request: HMAC-SHA256 of its exact body, URL-safe base64.

    A different context string than callback tokens, so that neither can stand for the other.

    :param secret: the signing secret (as for the connection's callbacks)
    :param body: the request body, as sent
    :raises ValueError: when the secret is empty
    """
    if not secret:
        raise ValueError("a signing secret is required")
    return _b64(hmac.new(secret.encode("utf-8"), _CREDITS_CONTEXT + body, hashlib.sha256).digest())


def verify_credit_request(secret: str | None, body: bytes, signature: str | None) -> bool:
    """
    Whether ``signature`` signs ``body`` with ``secret``, compared in constant time.

    :param secret: the signing secret; ``None`` or empty never verifies
    :param body: the request body, as received
    :param signature: the :data:`CREDITS_SIGNATURE_HEADER` header
    """
    if not secret or not signature:
        return False
    expected = sign_credit_request(secret, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


@dataclass(frozen=True)
class CallbackTarget:
    """
    What a callback wakes, as carried by its correlation id.

    :param dag_id: DAG of the submitting task
    :param task_id: the submitting task
    :param run_id: its DAG run
    :param map_index: its map index (``-1`` when not mapped)
    :param wait: whether the submitting task is deferred waiting for this callback
    :param asset_name: name of the Asset to record an event on, if any
    :param asset_uri: URI of that Asset
    :param conn_id: the ``nyne`` connection whose ``callback_secret`` signs the URL
    """

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    wait: bool = False
    asset_name: str | None = None
    asset_uri: str | None = None
    conn_id: str | None = None

    @property
    def has_asset(self) -> bool:
        """Whether an Asset event is recorded for this target."""
        return bool(self.asset_uri or self.asset_name)

    def task_label(self) -> str:
        """``dag_id.task_id[map_index] @ run_id`` for logs."""
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{mapped} @ {self.run_id}"

    def to_dict(self) -> dict[str, Any]:
        """The compact mapping that is encoded into a correlation id."""
        data: dict[str, Any] = {"v": _FORMAT_VERSION, "d": self.dag_id, "t": self.task_id, "r": self.run_id}
        if self.map_index != -1:
            data["i"] = self.map_index
        if self.wait:
            data["w"] = 1
        if self.asset_uri or self.asset_name:
            data["a"] = [self.asset_name or self.asset_uri, self.asset_uri or self.asset_name]
        if self.conn_id:
            data["c"] = self.conn_id
        return data


def encode_correlation_id(target: CallbackTarget) -> str:
    """
    The URL-safe correlation id of ``target`` (deterministic: same target, same id).

    :param target: what the callback wakes
    """
    text = json.dumps(target.to_dict(), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return _b64(text.encode("utf-8"))


def decode_correlation_id(correlation_id: str) -> CallbackTarget:
    """
    Read a correlation id back into its :class:`CallbackTarget`.

    Only call this on an id whose token verified: it trusts the content.

    :param correlation_id: an id made by :func:`encode_correlation_id`
    :raises ValueError: when the id is not one
    """
    if len(correlation_id) > MAX_CORRELATION_ID_LENGTH:
        raise ValueError("correlation id too long")
    try:
        data = json.loads(_unb64(correlation_id).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not a correlation id: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != _FORMAT_VERSION:
        raise ValueError("unknown correlation id format")
    try:
        asset = data.get("a")
        name, uri = (str(asset[0]), str(asset[1])) if asset else (None, None)
        return CallbackTarget(
            dag_id=str(data["d"]),
            task_id=str(data["t"]),
            run_id=str(data["r"]),
            map_index=int(data.get("i", -1)),
            wait=bool(data.get("w", 0)),
            asset_name=name,
            asset_uri=uri,
            conn_id=str(data["c"]) if data.get("c") else None,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"incomplete correlation id: {exc}") from None


def callback_path(correlation_id: str, token: str) -> str:
    """
    The path of a callback URL below the api-server root: ``/nyne/v1/callback/<id>/<token>``.

    :param correlation_id: the correlation id
    :param token: its token
    """
    return f"{URL_PREFIX}{CALLBACK_PATH}/{correlation_id}/{token}"


def mailbox_path(correlation_id: str) -> str:
    """
    The path of a correlation id's mailbox below the api-server root (token in :data:`TOKEN_HEADER`).

    :param correlation_id: the correlation id
    """
    return f"{URL_PREFIX}{MAILBOX_PATH}/{correlation_id}"


def callback_url(base_url: str, correlation_id: str, secret: str) -> str:
    """
    The capability URL Nyne POSTs the result to.

    :param base_url: the public root of the Airflow api-server as the API reaches it
        (``[nyne] callback_base_url``), e.g. ``https://airflow.example.com``
    :param correlation_id: from :func:`encode_correlation_id`
    :param secret: the signing secret
    """
    if not base_url:
        raise ValueError("a callback base URL is required")
    return base_url.rstrip("/") + callback_path(correlation_id, make_token(secret, correlation_id))


def connection_secret_may_sign(target: CallbackTarget, declared_assets: Iterable[tuple[str, str]]) -> bool:
    """
    Whether a connection's own ``callback_secret`` may sign a URL for ``target``'s Asset.

    A connection's secret is readable by whoever may read that connection, so it must not
    reach Assets that other DAGs consume: it signs ``nyne://`` Assets and Assets the
    submitting task declares as outlets, nothing else. The deployment-wide
    ``[nyne] callback_secret`` is not limited this way.

    :param target: what the URL wakes
    :param declared_assets: ``(name, uri)`` of the submitting task's outlets
    """
    if not target.has_asset:
        return True
    name = target.asset_name or target.asset_uri
    uri = target.asset_uri or target.asset_name
    if is_nyne_uri(uri):
        return True
    return any(name == d_name and uri == d_uri for d_name, d_uri in declared_assets)
