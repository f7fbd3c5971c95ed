"""Validation of ``POST /person/interactions`` bodies, and the API's error answers.

Written independently of ``airflow_provider_nyne.client`` on purpose: the simulator is the
check of the client, and shared parsing code would hide shared bugs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_TWITTER_HOSTS = frozenset({"twitter.com", "www.twitter.com", "x.com", "www.x.com", "mobile.twitter.com"})
_INSTAGRAM_HOSTS = frozenset({"instagram.com", "www.instagram.com"})
# First path segments that are site sections, not profiles.
_TWITTER_RESERVED = frozenset(
    {"i", "home", "search", "explore", "hashtag", "intent", "share", "settings", "messages", "notifications"}
)
_INSTAGRAM_RESERVED = frozenset({"p", "reel", "reels", "tv", "explore", "stories", "accounts", "direct"})
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.]{1,30}$")
_TWEET_ID_RE = re.compile(r"^[0-9]{10,25}$")
_INTEGER_RE = re.compile(r"^[+-]?[0-9]+$")
_VALID_TYPES = {
    frozenset({"replies"}): "replies",
    frozenset({"followers"}): "followers",
    frozenset({"following"}): "following",
    frozenset({"followers", "following"}): "followers,following",
}
_PLATFORM_ALIASES = {"twitter": "twitter", "x": "twitter", "instagram": "instagram"}


class ApiError(Exception):
    """An error answer: HTTP status, error code, message and extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers: dict[str, str] = dict(headers or {})


@dataclass(frozen=True)
class InteractionQuery:
    """A validated, normalised submission."""

    platform: str
    interaction_type: str
    username: str | None
    tweet_id: str | None
    max_results: int
    callback_url: str | None
    social_media_url: str | None

    def as_dict(self) -> dict[str, Any]:
        """Return the normalised fields as a JSON-compatible dict (``type`` for the interaction type)."""
        return {
            "platform": self.platform,
            "type": self.interaction_type,
            "username": self.username,
            "tweet_id": self.tweet_id,
            "max_results": self.max_results,
            "callback_url": self.callback_url,
            "social_media_url": self.social_media_url,
        }


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def _present(value: Any) -> bool:
    """Whether a field counts as given: ``null`` and blank strings do not."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def _first_present(body: Mapping[str, Any], *names: str) -> tuple[str, Any]:
    """The first given field of ``names`` (a field and its alias), as (name, value)."""
    for name in names:
        if _present(body.get(name)):
            return name, body[name]
    return names[0], None


def _interaction_type(raw: Any, field: str) -> str:
    if raw is None:
        raise _bad("invalid_type", "type is required: replies, followers, following or followers,following")
    if not isinstance(raw, str):
        raise _bad("invalid_type", f"{field} must be a string")
    parts = [part.strip().lower() for part in raw.split(",")]
    key = frozenset(parts)
    if len(parts) != len(key) or key not in _VALID_TYPES:
        raise _bad(
            "invalid_type",
            f"unsupported {field} {raw!r}: use replies, followers, following or followers,following",
        )
    return _VALID_TYPES[key]


def _username(raw: Any, source: str) -> str:
    if not isinstance(raw, str):
        raise _bad("invalid_username", f"{source} must be a string")
    name = raw.strip().removeprefix("@")
    if not _USERNAME_RE.match(name):
        raise _bad("invalid_username", f"{source} {raw!r} is not a valid username")
    return name


def _tweet_id(raw: Any, source: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise _bad("invalid_tweet_id", f"{source} must be a string of 10-25 digits")
    text = str(raw).strip()
    if not _TWEET_ID_RE.match(text):
        raise _bad("invalid_tweet_id", f"{source} {raw!r} must be 10-25 digits")
    return text


def _social_url(raw: Any, field: str) -> tuple[str, str | None, str | None]:
    """Return (platform, username, tweet_id) inferred from a profile or status URL."""
    if not isinstance(raw, str):
        raise _bad("invalid_social_media_url", f"{field} must be a string")
    try:
        parts = urlsplit(raw.strip())
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise _bad("invalid_social_media_url", f"{field} is not a valid URL") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad("invalid_social_media_url", f"{field} must be an http(s) URL")
    if host in _TWITTER_HOSTS:
        platform, reserved = "twitter", _TWITTER_RESERVED
    elif host in _INSTAGRAM_HOSTS:
        platform, reserved = "instagram", _INSTAGRAM_RESERVED
    else:
        raise _bad(
            "invalid_social_media_url",
            f"{field} must be a Twitter/X or Instagram URL (got host {host or 'none'!r})",
        )
    segments = [segment for segment in parts.path.split("/") if segment]
    username = None
    if segments and segments[0].lower() not in reserved and _USERNAME_RE.match(segments[0]):
        username = segments[0]
    tweet_id = None
    if platform == "twitter":
        for index, segment in enumerate(segments[:-1]):
            if segment.lower() in ("status", "statuses"):
                tweet_id = _tweet_id(segments[index + 1], "status id in URL")
                break
    return platform, username, tweet_id


def _max_results(raw: Any) -> int:
    if raw is None:
        return 100
    if isinstance(raw, bool):
        raise _bad("invalid_max_results", "max_results must be an integer")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str) and _INTEGER_RE.match(raw.strip()):
        value = int(raw.strip())
    else:
        raise _bad("invalid_max_results", f"max_results must be an integer (got {raw!r})")
    return max(10, min(1000, value))


def _callback_url(raw: Any, allowed_hosts: frozenset[str] | None) -> str | None:
    if not _present(raw):
        return None
    if not isinstance(raw, str):
        raise _bad("invalid_callback_url", "callback_url must be a string")
    try:
        parts = urlsplit(raw.strip())
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _bad("invalid_callback_url", "callback_url is not a valid URL") from exc
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise _bad("invalid_callback_url", "callback_url must be an http(s) URL with a host")
    if allowed_hosts is not None and host not in allowed_hosts:
        raise _bad("invalid_callback_url", f"callback_url host {host!r} is not on the allow-list")
    return raw.strip()


def parse_submission(body: bytes, callback_allowed_hosts: frozenset[str] | None = None) -> InteractionQuery:
    """Validate a submission body, or raise the ``400 invalid_*`` answer.

    :param body: the raw request body.
    :param callback_allowed_hosts: lower-case host names a callback may target, or None for any.
    """
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad("invalid_json", "request body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise _bad("invalid_json", "request body must be a JSON object")

    type_field, raw_type = _first_present(payload, "type", "interaction_type")
    interaction_type = _interaction_type(raw_type, type_field)
    url_field, raw_url = _first_present(payload, "social_media_url", "twitter_url")
    platform, url_username, url_tweet_id = (
        (None, None, None) if raw_url is None else _social_url(raw_url, url_field)
    )

    if _present(raw_platform := payload.get("platform")):
        named = _PLATFORM_ALIASES.get(str(raw_platform).strip().lower())
        if named is None:
            raise _bad("invalid_platform", f"unsupported platform {raw_platform!r}: use twitter or instagram")
        if platform is not None and platform != named:
            raise _bad("invalid_platform", f"platform {raw_platform!r} does not match the URL")
        platform = named

    username = (
        _username(payload["username"], "username") if _present(payload.get("username")) else url_username
    )
    if raw_url is None and username is None:
        raise _bad("invalid_request", "social_media_url (or twitter_url) or username is required")
    platform = platform or "twitter"
    if platform == "instagram" and interaction_type == "replies":
        raise _bad("invalid_type", "replies are only available for Twitter/X")

    tweet_id = (
        _tweet_id(payload["tweet_id"], "tweet_id") if _present(payload.get("tweet_id")) else url_tweet_id
    )
    if interaction_type == "replies" and tweet_id is None:
        raise _bad("invalid_tweet_id", "replies need a tweet_id or a /status/<id> URL")
    if interaction_type != "replies" and username is None:
        raise _bad("invalid_username", f"{interaction_type} lookups need a username or a profile URL")

    return InteractionQuery(
        platform=platform,
        interaction_type=interaction_type,
        username=username,
        tweet_id=tweet_id,
        max_results=_max_results(payload.get("max_results")),
        callback_url=_callback_url(payload.get("callback_url"), callback_allowed_hosts),
        social_media_url=None if raw_url is None else str(raw_url).strip(),
    )
