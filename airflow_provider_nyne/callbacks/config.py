"""Callback settings read from Airflow configuration (section ``[nyne]``).

==============================  ================================================  ==============
option (env variable)           meaning                                           default
==============================  ================================================  ==============
``callback_base_url``           public root of the api-server as Nyne reaches it  (required)
(``AIRFLOW__NYNE__CALLBACK_BASE_URL``)
``callback_secret``             signing secret when the connection has none       (none)
``callback_internal_url``       api-server root as triggerers/workers reach it     derived
``callback_max_body_bytes``     largest callback body accepted (413 above)        10485760
``callback_retention_days``     days a received callback is kept                  7
``callback_resume_deferred``    resume a waiting task straight from the receiver  True
==============================  ================================================  ==============

Until ``callback_base_url`` is set on the api-server, the receiver answers ``404`` to
everything and never touches the database; the credit guard's routes answer as soon as
``callback_base_url`` or ``callback_secret`` is set (:func:`credits_enabled`).

Secret precedence: the ``nyne`` connection's ``callback_secret`` extra wins; the
``[nyne] callback_secret`` option is the deployment-wide fallback (and the recommended
secret: users who may read connections cannot read it). The connection used is the one the
submitting task names (it is carried in the correlation id). A connection's own secret signs
only for that connection's tasks and for ``nyne://`` Assets or the task's outlets (see
:func:`~airflow_provider_nyne.callbacks.tokens.connection_secret_may_sign`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow_provider_nyne._compat import get_config_option

__all__ = [
    "DEFAULT_MAILBOX_INTERVAL",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RETENTION_DAYS",
    "SECTION",
    "CallbackConfigError",
    "base_url",
    "config_secret",
    "credits_enabled",
    "internal_url",
    "max_body_bytes",
    "receiver_enabled",
    "resume_deferred",
    "retention_seconds",
    "signing_secret",
]

SECTION = "nyne"
#: Seconds between a waiting trigger's safety-net mailbox reads (the receiver normally resumes the task itself).
DEFAULT_MAILBOX_INTERVAL = 300.0
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_RETENTION_DAYS = 7.0


class CallbackConfigError(ValueError):
    """Callback mode is not configured (raised before any request is sent)."""


def _option(key: str) -> str | None:
    return get_config_option(SECTION, key)


def _http_root(value: str, key: str) -> str:
    from airflow_provider_nyne.client.errors import NyneValidationError
    from airflow_provider_nyne.client.urls import parse_http_url

    try:  # read as HTTP clients read it; the message never shows a user name or password
        parsed = parse_http_url(value, field=f"[{SECTION}] {key}")
    except NyneValidationError as err:
        raise CallbackConfigError(str(err.message)) from None
    return parsed.url.rstrip("/")


def base_url(required: bool = True) -> str | None:
    """
    The public root of the api-server that Nyne POSTs callbacks to (``[nyne] callback_base_url``).

    :param required: raise :class:`CallbackConfigError` naming the option when it is unset
    """
    value = _option("callback_base_url")
    if not value:
        if required:
            raise CallbackConfigError(
                f"callback mode needs the public URL of the Airflow api-server: set [{SECTION}] "
                f"callback_base_url (env AIRFLOW__NYNE__CALLBACK_BASE_URL), e.g. https://airflow.example.com"
            )
        return None
    return _http_root(value, "callback_base_url")


def receiver_enabled() -> bool:
    """
    Whether callbacks are configured here: ``[nyne] callback_base_url`` is set.

    Until it is, the receiver answers ``404`` to everything and never touches the database.
    """
    return _option("callback_base_url") is not None


def config_secret() -> str | None:
    """The deployment-wide signing secret (``[nyne] callback_secret``), if set."""
    return _option("callback_secret")


def signing_secret(connection_secret: str | None) -> str | None:
    """
    The secret that signs for a connection: its own ``callback_secret`` extra, else ``[nyne] callback_secret``.

    :param connection_secret: the connection's ``callback_secret`` extra, if any
    """
    return connection_secret or config_secret()


def credits_enabled() -> bool:
    """
    Whether the api-server answers the credit guard's routes.

    They need no public URL (workers reach them at :func:`internal_url`), only a secret to
    check signatures with: on when ``[nyne] callback_base_url`` or ``[nyne] callback_secret``
    is set.
    """
    return receiver_enabled() or config_secret() is not None


def internal_url() -> str | None:
    """
    The api-server root as triggerers and workers reach it, for reading the callback mailbox.

    ``[nyne] callback_internal_url`` when set; otherwise the root of
    ``[core] execution_api_server_url`` (where task processes already reach the api-server);
    otherwise ``[nyne] callback_base_url``.
    """
    value = _option("callback_internal_url")
    if value:
        return _http_root(value, "callback_internal_url")
    execution = get_config_option("core", "execution_api_server_url")
    if execution:
        root = execution.strip().rstrip("/")
        if root.endswith("/execution"):
            root = root[: -len("/execution")]
        parts = urlsplit(root)
        if parts.scheme in ("http", "https") and parts.hostname:
            return root
    return base_url(required=False)


def _number(key: str, default: float) -> float:
    value = _option(key)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise CallbackConfigError(f"[{SECTION}] {key} must be a number, got {value!r}") from None
    if number < 0:
        raise CallbackConfigError(f"[{SECTION}] {key} must not be negative")
    return number


def max_body_bytes() -> int:
    """Largest callback body the receiver reads (``[nyne] callback_max_body_bytes``, default 10 MiB)."""
    return int(_number("callback_max_body_bytes", DEFAULT_MAX_BODY_BYTES))


def retention_seconds() -> float:
    """How long received callbacks are kept (``[nyne] callback_retention_days``, default 7)."""
    return _number("callback_retention_days", DEFAULT_RETENTION_DAYS) * 86400.0


def resume_deferred() -> bool:
    """Whether the receiver resumes a waiting task itself (``[nyne] callback_resume_deferred``)."""
    value = (_option("callback_resume_deferred") or "true").strip().lower()
    return value not in ("0", "false", "no", "off")
