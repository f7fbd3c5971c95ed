"""The API key and secret: checked once, sent as two headers, never shown.

This module does not import Airflow.
"""

from __future__ import annotations

import hashlib

from airflow_provider_nyne.client.errors import NyneAuthError


class Credentials:
    """
    The API key and secret. ``repr()`` and ``str()`` never show them.

    :param api_key: the ``X-API-Key`` value
    :param api_secret: the ``X-API-Secret`` value
    :raises NyneAuthError: when either is missing or cannot be sent as a header (without
        quoting it)
    """

    __slots__ = ("api_key", "api_secret")

    def __init__(self, api_key: str, api_secret: str) -> None:
        if not api_key:
            raise NyneAuthError(
                "the API key is missing: set the connection's login (API Key)", code="missing_api_key"
            )
        if not api_secret:
            raise NyneAuthError(
                "the API secret is missing: set the connection's password (API Secret)",
                code="missing_api_secret",
            )
        self.api_key = _header_safe(api_key, "API key", "login")
        self.api_secret = _header_safe(api_secret, "API secret", "password")

    def __repr__(self) -> str:
        return "Credentials(api_key='***', api_secret='***')"

    __str__ = __repr__

    def digest(self) -> str:
        """A one-way digest, to tell accounts apart without keeping the values in a key."""
        return hashlib.sha256(f"{self.api_key}\0{self.api_secret}".encode()).hexdigest()

    def headers(self) -> dict[str, str]:
        """The two authentication headers."""
        return {"X-API-Key": self.api_key, "X-API-Secret": self.api_secret}

    def secrets(self) -> tuple[str, str]:
        """Both values, for redacting them from text a server echoed."""
        return self.api_key, self.api_secret


def _header_safe(value: str, what: str, field: str) -> str:
    """Strip a credential and check it can be sent as a header, without ever echoing it."""
    text = value.strip() if isinstance(value, str) else value
    # A pasted trailing newline is common; a value an HTTP library rejects would be quoted
    # verbatim in that library's error message, so refuse it here without showing it.
    if not isinstance(text, str) or not text.isascii() or not text.isprintable() or " " in text:
        raise NyneAuthError(
            f"the {what} contains characters that cannot be sent in an HTTP header (non-ASCII, "
            f"spaces or control characters): check the connection's {field}",
            code=f"invalid_{what.lower().replace(' ', '_')}",
        )
    return text


__all__ = ["Credentials"]
