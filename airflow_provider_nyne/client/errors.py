"""Exceptions raised by the Nyne API client.

Every failure the API can report maps to one class, so that callers can catch by meaning
(``except NyneCreditsError``) rather than by status code. All of them derive from
:class:`NyneError` and carry the HTTP status and the API's error code when there is one.

Messages name the fix. They never contain a credential: the client never puts the key or
secret in a message, and :func:`redact` scrubs any that a server might echo back.
"""

from __future__ import annotations

from collections.abc import Iterable


class NyneError(Exception):
    """
    Base class of every error raised by this package's API client.

    :param message: human-readable explanation, naming the fix where one is known
    :param status_code: HTTP status of the answer, when there was one
    :param code: the API's error code (``invalid_api_key``, ``rate_limit_exceeded``, ...)
    :param request_id: the Nyne request id the error concerns, when known
    """

    #: Whether retrying the same call later can succeed (used by operators to decide
    #: between a task failure that burns retries and one that does not).
    retryable: bool = False

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

    def __init__(self, message: str, *, field: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.field = field


class NyneAuthError(NyneError):
    """401: the API key or secret is missing or wrong."""


class NyneCreditsError(NyneError):
    """402: the account has no credits left."""


class NyneForbiddenError(NyneError):
    """403: the account may not make this call (``reason`` is the API's code)."""

    @property
    def reason(self) -> str | None:
        """The API's reason code: ``subscription_required``, ``api_key_disabled``, ``permission_denied``, ``ip_not_allowed``."""
        return self.code


class NyneNotFoundError(NyneError):
    """404 ``request_not_found``: the request id is unknown or has expired."""


class NyneRateLimitError(NyneError):
    """429: too many requests.

    :param retry_after: seconds the API asked us to wait, when it said
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class NyneServerError(NyneError):
    """5xx: the API failed on its side (``internal_error``, ``service_unavailable``, ...)."""

    retryable = True


class NyneResponseError(NyneError):
    """The API answered with something this client cannot read (not JSON, wrong envelope)."""

    retryable = True


class NyneTransportError(NyneError):
    """The HTTP exchange itself failed (connection refused, timeout, connection reset).

    :param request_sent: ``False`` only when the failure proves the request never reached the
        server (connection refused, connect timeout). ``True`` means it may have been processed.
    """

    retryable = True

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.request_sent = request_sent


class NyneJobFailedError(NyneError):
    """The asynchronous job ended in the ``failed`` state; the message carries the API's reason."""


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of a secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
