"""Exceptions raised by the Nyne API client.

Every failure the API can report maps to one class, so that callers can catch by meaning
(``except NyneCreditsError``) rather than by status code. All of them derive from
:class:`NyneError` and carry the HTTP status and the API's error code when there is one.

The rules that depend on the error live here and only here: whether a call that failed may be
sent again (:meth:`NyneError.may_retry`: ``retryable``, and for a paid submission
``proves_not_processed``), which class an error answer maps to (:func:`error_from_response`),
and how an error travels in a trigger event and comes back as the same class
(:meth:`NyneError.to_event`, :func:`error_from_event`).

Messages name the fix. They never contain a credential: the client never puts the key or
secret in a message, and :func:`redact` scrubs any that a server might echo back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_nyne.client.ratelimit import parse_retry_after


class NyneError(Exception):
    """
    Base class of every error raised by this package's API client.

    :param message: human-readable explanation, naming the fix where one is known
    :param status_code: HTTP status of the answer, when there was one
    :param code: the API's error code (``invalid_api_key``, ``rate_limit_exceeded``, ...)
    :param request_id: the Nyne request id the error concerns, when known
    """

    #: Whether the same call may succeed later (a task failure that burns Airflow's retries,
    #: a poll the wait loop tolerates), as opposed to one only a change can fix.
    retryable: bool = False
    #: Whether the fix is in the account or its connection (key, credits, permissions): a
    #: task's message then names the Airflow connection.
    concerns_account: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id

    @property
    def message(self) -> str:
        """The explanation (kept in ``args`` too, so that every way of printing the error agrees)."""
        return str(self.args[0]) if self.args else ""

    @message.setter
    def message(self, value: str) -> None:
        # The client redacts and annotates messages after construction; ``args`` must follow,
        # or a secret echoed by the server would survive in ``err.args``.
        self.args = (value,)

    def __str__(self) -> str:
        parts = []
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        if self.code:
            parts.append(self.code)
        prefix = f"[{' '.join(parts)}] " if parts else ""
        return f"{prefix}{self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code!r}, "
            f"code={self.code!r}, request_id={self.request_id!r})"
        )

    @property
    def proves_not_processed(self) -> bool:
        """Whether the failure proves the API did not process the call (nothing was accepted or charged).

        A 4xx answer refused the call; classes raised before sending say so themselves.
        """
        return self.status_code is not None and 400 <= self.status_code < 500

    def may_retry(self, *, idempotent: bool) -> bool:
        """
        Whether the call that failed may be sent again: the one place this rule is written.

        :param idempotent: sending the call twice is harmless (status, usage); a submission is
            not (it may be charged twice), so it is sent again only when the failure proves it
            was not processed
        """
        return self.retryable if idempotent else self.retryable and self.proves_not_processed

    def to_event(self) -> dict[str, object]:
        """What a trigger event carries of this error (plain values; see :func:`error_from_event`)."""
        return {
            "error_type": type(self).__name__,
            "error_code": self.code,
            "http_status": self.status_code,
            "message": self.message,
        }

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor arguments need an explicit reducer to survive pickling.
        return (_rebuild_error, (type(self), self.message, self.__dict__.copy()))


def _rebuild_error(cls: type[NyneError], message: str, state: dict[str, object]) -> NyneError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class NyneValidationError(NyneError, ValueError):
    """A request was rejected for bad input, locally before sending or by the API (400 ``invalid_*``).

    :param field: the request field at fault, when known
    """

    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.field = field

    @property
    def proves_not_processed(self) -> bool:
        """Refused locally before sending, or by the API (400)."""
        return True


class NyneAuthError(NyneError):
    """401: the API key or secret is missing or wrong."""

    concerns_account = True

    @property
    def proves_not_processed(self) -> bool:
        """Refused by the API (401), or found missing before sending."""
        return True


class NyneCreditsError(NyneError):
    """402: the account has no credits left."""

    concerns_account = True


class NyneForbiddenError(NyneError):
    """403: the account may not make this call (``reason`` is the API's code)."""

    concerns_account = True

    @property
    def reason(self) -> str | None:
        """The API's reason code: ``subscription_required``, ``api_key_disabled``, ``permission_denied``, ``ip_not_allowed``."""
        return self.code


class NyneNotFoundError(NyneError):
    """404 ``request_not_found``: the request id is unknown or has expired."""


class NyneRateLimitError(NyneError):
    """429 (or no room left in the key's request budget before a deadline): too many requests.

    :param retry_after: seconds to wait before trying again, when known
    """

    retryable = True
    retry_after: float | None = None

    @property
    def proves_not_processed(self) -> bool:
        """A 429 is answered before anything is processed."""
        return True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class NyneServerError(NyneError):
    """5xx: the API failed on its side (``internal_error``, ``service_unavailable``, ...)."""

    retryable = True

    @property
    def proves_not_processed(self) -> bool:
        """503 (service unavailable) is refused before processing; other 5xx may come after it."""
        return self.status_code == 503


class NyneResponseError(NyneError):
    """The API answered with something this client cannot read (not JSON, wrong envelope)."""

    retryable = True


class NyneTransportError(NyneError):
    """The HTTP exchange itself failed (connection refused, timeout, connection reset).

    :param request_sent: ``False`` only when the failure proves the request never reached the
        server (connection refused, connect timeout). ``True`` means it may have been processed.
    """

    retryable = True
    request_sent = True

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.request_sent = request_sent

    @property
    def proves_not_processed(self) -> bool:
        """Only a connection that was never made proves the request did not reach the API."""
        return not self.request_sent


class NyneJobFailedError(NyneError):
    """The asynchronous job ended in the ``failed`` state; the message carries the API's reason."""

    #: A retried task submits the lookup again (a failed lookup costs nothing).
    retryable = True


_HINTS_401 = {
    "missing_api_key": "the API key is missing: set the connection's login (API Key)",
    "invalid_api_key": "the API key was rejected: check the connection's login (API Key)",
    "missing_api_secret": "the API secret is missing: set the connection's password (API Secret)",
    "invalid_api_secret": "the API secret was rejected: check the connection's password (API Secret)",
}
_HINTS_403 = {
    "subscription_required": "this API needs an active Nyne subscription for the account",
    "api_key_disabled": "the API key is disabled: enable it or create a new one in the Nyne dashboard",
    "permission_denied": "the API key lacks permission for the Social Interactions API",
    "ip_not_allowed": (
        "the calling IP is not on the key's allow-list: add the public IP of your Airflow "
        "workers and triggerer to the key's allowed IPs"
    ),
}


#: The fields of the API's submission (and ``request_id`` of a poll): an ``invalid_<field>`` code names one.
REQUEST_FIELDS = frozenset(
    {
        "social_media_url",
        "twitter_url",
        "type",
        "interaction_type",
        "username",
        "tweet_id",
        "max_results",
        "callback_url",
        "request_id",
    }
)


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """Read the error code and message from whichever shape the body uses."""
    if not isinstance(body, Mapping):
        return None, None
    code: Any = body.get("code")
    message: Any = None
    error = body.get("error")
    if isinstance(error, Mapping):
        code = error.get("code") or error.get("type") or code
        message = error.get("message") or error.get("detail")
    elif isinstance(error, str):
        if code is None and error.replace("_", "").isalnum() and error.lower() == error:
            code = error
        else:
            message = error
    if message is None:
        message = body.get("message")
    if message is None:
        detail = body.get("detail")
        if isinstance(detail, Mapping):
            code = detail.get("code") or code
            message = detail.get("message") or json.dumps(detail)[:300]
        elif isinstance(detail, list):
            message = json.dumps(detail)[:300]
        elif detail is not None:
            message = str(detail)
    return (None if code is None else str(code)), (None if message is None else str(message))


def error_from_response(
    status: int,
    body: Any,
    headers: Mapping[str, str],
    *,
    request_id: str | None = None,
) -> NyneError:
    """Map an error answer (status, decoded body, headers) to the exception that names the fix."""
    code, message = _error_fields(body)
    detail = f": {message}" if message else ""
    if status == 400 or status == 422:
        # invalid_<field> names the field at fault; invalid_json / invalid_request name none.
        field = code[len("invalid_") :] if code and code.startswith("invalid_") else None
        field = field if field in REQUEST_FIELDS else None
        return NyneValidationError(
            f"the API rejected the request{detail}",
            field=field,
            status_code=status,
            code=code,
            request_id=request_id,
        )
    if status == 401:
        hint = _HINTS_401.get(
            code or "", "the API key or secret was rejected: check the connection's login and password"
        )
        return NyneAuthError(
            f"authentication failed, {hint}{detail}", status_code=status, code=code, request_id=request_id
        )
    if status == 402:
        return NyneCreditsError(
            f"the account is out of credits: top up in the Nyne dashboard (each completed lookup with results costs 3){detail}",
            status_code=status,
            code=code,
            request_id=request_id,
        )
    if status == 403:
        hint = _HINTS_403.get(code or "", "the account may not make this call")
        return NyneForbiddenError(
            f"forbidden, {hint}{detail}", status_code=status, code=code, request_id=request_id
        )
    if status == 404:
        what = f"request {request_id!r}" if request_id else "the resource"
        return NyneNotFoundError(
            f"{what} was not found: it expired or never existed; submit the lookup again{detail}",
            status_code=status,
            code=code or "request_not_found",
            request_id=request_id,
        )
    if status == 429:
        retry_after = parse_retry_after(headers)
        wait = ""
        if retry_after is not None:
            wait = (
                f" (retry after {retry_after:.0f}s)"
                if retry_after >= 1
                else f" (retry after {retry_after:.2f}s)"
            )
        return NyneRateLimitError(
            f"rate limit exceeded{wait}: the API allows about 60 requests/minute and 1000/hour per "
            f"account; set the connection's rate_limit_per_minute/rate_limit_per_hour extras to the "
            f"account's limits if they are lower{detail}",
            retry_after=retry_after,
            status_code=status,
            code=code or "rate_limit_exceeded",
            request_id=request_id,
        )
    if status >= 500:
        return NyneServerError(
            f"the Nyne API failed on its side{detail}", status_code=status, code=code, request_id=request_id
        )
    return NyneError(
        f"unexpected answer from the Nyne API{detail}", status_code=status, code=code, request_id=request_id
    )


def error_from_event(event: Mapping[str, Any]) -> NyneError:
    """
    The client error a trigger event describes (see :meth:`NyneError.to_event`), of the same class.

    :param event: an event payload with ``error_type``, ``error_code``, ``http_status``, ``message``
    """
    status = event.get("http_status")
    cls = _ERROR_CLASSES.get(str(event.get("error_type")))
    if cls is None:
        # Fired by a version that did not name the class: classify it as its answer would be.
        cls = type(error_from_response(status, None, {})) if isinstance(status, int) else NyneTransportError
    error = cls.__new__(cls)
    Exception.__init__(error, str(event.get("message") or "the Nyne API failed"))
    error.__dict__.update(
        status_code=status, code=event.get("error_code"), request_id=event.get("request_id")
    )
    return error


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of a secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _subclasses(cls: type[NyneError]) -> list[type[NyneError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


#: Every error class by name, for :func:`error_from_event`.
_ERROR_CLASSES: dict[str, type[NyneError]] = {cls.__name__: cls for cls in _subclasses(NyneError)}
