"""Build and validate a Social Interactions request before any credit is spent.

:class:`InteractionRequest` accepts the documented fields and their aliases, infers the
platform, username and tweet id from a profile or status URL, and rejects everything the
API would reject with a :class:`~airflow_provider_nyne.client.errors.NyneValidationError`
whose message names the field and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_nyne.client.errors import REQUEST_FIELDS, NyneValidationError
from airflow_provider_nyne.client.urls import host_allowed, parse_http_url

log = logging.getLogger(__name__)

Platform = Literal["twitter", "instagram"]

MIN_RESULTS = 10
MAX_RESULTS = 1000
DEFAULT_MAX_RESULTS = 100

TWITTER_HOSTS = frozenset({"twitter.com", "www.twitter.com", "mobile.twitter.com", "x.com", "www.x.com"})
INSTAGRAM_HOSTS = frozenset({"instagram.com", "www.instagram.com"})

TWITTER_TYPES = ("replies", "followers", "following", "followers,following")
INSTAGRAM_TYPES = ("followers", "following", "followers,following")

_TWITTER_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,15}$")
_INSTAGRAM_USERNAME = re.compile(r"^[A-Za-z0-9._]{1,30}$")
_TWEET_ID = re.compile(r"^[0-9]{10,25}$")
# First path segments that are site pages, not profiles.
_TWITTER_RESERVED = frozenset(
    {
        "home",
        "explore",
        "search",
        "i",
        "intent",
        "share",
        "settings",
        "notifications",
        "messages",
        "hashtag",
        "login",
        "signup",
        "tos",
        "privacy",
        "compose",
    }
)
_INSTAGRAM_RESERVED = frozenset(
    {"p", "reel", "reels", "tv", "explore", "stories", "accounts", "direct", "about", "developer", "legal"}
)


def _fail(field_name: str, message: str) -> NyneValidationError:
    return NyneValidationError(f"{field_name}: {message}", field=field_name)


@dataclass(frozen=True)
class ParsedProfileURL:
    """What a Twitter/X or Instagram URL says: platform, username and (for a status) tweet id."""

    url: str
    platform: Platform
    username: str | None
    tweet_id: str | None


def parse_social_media_url(url: str) -> ParsedProfileURL:
    """
    Parse a Twitter/X or Instagram profile or status URL.

    The URL is read by :mod:`~airflow_provider_nyne.client.urls`, as HTTP clients read it (a
    backslash, a control character, a user name, a ``..`` segment and the like are refused),
    and :attr:`ParsedProfileURL.url` is its normalised form: the URL that is sent.

    :param url: e.g. ``https://x.com/nasa``, ``twitter.com/nasa/status/1234567890123``,
        ``https://www.instagram.com/natgeo/``. A missing scheme means ``https``.
    :raises NyneValidationError: when it is not a URL of a supported platform.
    """
    field_name = "social_media_url"
    if not isinstance(url, str) or not url.strip():
        raise _fail(field_name, "must be a non-empty Twitter/X or Instagram URL")
    parsed = parse_http_url(url, field=field_name, default_scheme="https")
    text = parsed.url
    if parsed.port is not None:
        raise _fail(field_name, f"{text!r} has a port; Twitter/X and Instagram URLs have none: remove it")
    segments = [s for s in parsed.path.split("/") if s]
    if parsed.host in TWITTER_HOSTS:
        return _parse_twitter(text, segments)
    if parsed.host in INSTAGRAM_HOSTS:
        return _parse_instagram(text, segments)
    raise _fail(
        field_name,
        f"{text!r} is not a Twitter/X or Instagram URL; use a profile or status URL on "
        "twitter.com, x.com, mobile.twitter.com or instagram.com",
    )


def _parse_twitter(url: str, segments: list[str]) -> ParsedProfileURL:
    field_name = "social_media_url"
    # /i/web/status/<id> and /i/status/<id> (optionally followed by /photo/1 etc.) name a tweet
    # without its author.
    if segments and segments[0] == "i":
        marker = next((n for n, s in enumerate(segments) if s in ("status", "statuses")), None)
        if marker is not None and marker + 1 < len(segments):
            return ParsedProfileURL(url, "twitter", None, _check_tweet_id(segments[marker + 1], field_name))
    if not segments:
        raise _fail(field_name, f"{url!r} has no profile in its path; use https://x.com/<username>")
    first = segments[0]
    if first.lower() in _TWITTER_RESERVED:
        raise _fail(field_name, f"{url!r} is a site page, not a profile or status URL")
    username = first.lstrip("@")
    if not _TWITTER_USERNAME.match(username):
        raise _fail(
            field_name, f"{url!r}: {username!r} is not a valid Twitter/X username (1-15 letters, digits, _)"
        )
    tweet_id = None
    if len(segments) >= 3 and segments[1] in ("status", "statuses"):
        tweet_id = _check_tweet_id(segments[2], field_name)
    elif len(segments) == 2 and segments[1] in ("status", "statuses"):
        raise _fail(field_name, f"{url!r} ends at /status/ without a tweet id")
    return ParsedProfileURL(url, "twitter", username, tweet_id)


def _parse_instagram(url: str, segments: list[str]) -> ParsedProfileURL:
    field_name = "social_media_url"
    if not segments:
        raise _fail(
            field_name, f"{url!r} has no profile in its path; use https://www.instagram.com/<username>/"
        )
    first = segments[0]
    if first.lower() in _INSTAGRAM_RESERVED:
        # A post or reel URL does not name its author; the caller must pass ``username``.
        return ParsedProfileURL(url, "instagram", None, None)
    username = first.lstrip("@")
    if not _INSTAGRAM_USERNAME.match(username):
        raise _fail(
            field_name,
            f"{url!r}: {username!r} is not a valid Instagram username (1-30 letters, digits, . and _)",
        )
    return ParsedProfileURL(url, "instagram", username, None)


def _check_tweet_id(value: object, field_name: str = "tweet_id") -> str:
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not _TWEET_ID.match(text):
        raise _fail(field_name, f"tweet id {text!r} must be 10 to 25 digits")
    return text


def normalize_interaction_type(value: object) -> str:
    """Normalise ``type``: lower case, no spaces, ``following,followers`` -> ``followers,following``.

    A list such as ``["followers", "following"]`` is accepted as the comma-separated form.
    """
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _fail("type", f"is required; one of {', '.join(TWITTER_TYPES)}")
    if not isinstance(value, str):
        raise _fail("type", f"{value!r} must be a string, one of {', '.join(TWITTER_TYPES)}")
    parts = [p.strip().lower() for p in value.split(",") if p.strip()]
    unique = sorted(set(parts))
    normalized = ",".join(unique)
    if normalized not in TWITTER_TYPES or len(unique) != len(parts):
        raise _fail("type", f"{value!r} is not supported; use one of {', '.join(TWITTER_TYPES)}")
    return normalized


def normalize_max_results(value: object) -> int:
    """Parse ``max_results`` (default 100) and clamp it to 10-1000, warning when clamped."""
    if value is None or value == "":
        return DEFAULT_MAX_RESULTS
    number: int
    # bool is an int subclass and a float may hide a fraction: both are almost always a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    else:
        raise _fail("max_results", f"{value!r} is not a whole number between {MIN_RESULTS} and {MAX_RESULTS}")
    clamped = min(max(number, MIN_RESULTS), MAX_RESULTS)
    if clamped != number:
        log.warning("max_results=%d is outside %d-%d; using %d", number, MIN_RESULTS, MAX_RESULTS, clamped)
    return clamped


def validate_callback_url(value: object, allowed_hosts: Iterable[str] | None = None) -> str:
    """
    Check that ``callback_url`` is an absolute HTTP(S) URL, on an allowed host when an allow-list is set.

    The URL is read by :mod:`~airflow_provider_nyne.client.urls`, as HTTP clients read it, and
    the host checked is the one they connect to; the normalised URL is returned (and sent).

    :param value: the URL
    :param allowed_hosts: host names (``hooks.example.com``) or wildcards (``*.example.com``)
    """
    if not isinstance(value, str) or not value.strip():
        raise _fail("callback_url", "must be a non-empty http(s) URL")
    parsed = parse_http_url(value, field="callback_url")
    allowed = [h.strip() if isinstance(h, str) else h for h in (allowed_hosts or ())]
    if any(allowed) and not host_allowed(parsed.host, allowed):
        listed = ", ".join(str(h) for h in allowed if h)
        raise _fail(
            "callback_url",
            f"host {parsed.host!r} is not in the allowed callback hosts ({listed}); "
            "use an allowed host or extend the allow-list",
        )
    return parsed.url


@dataclass(frozen=True)
class InteractionRequest:
    """
    A validated, normalised Social Interactions request.

    Build it with :meth:`create`, which accepts the documented fields and their aliases and
    infers what a URL implies. Constructing the class directly validates too.

    :param interaction_type: ``replies``, ``followers``, ``following`` or ``followers,following``
    :param platform: ``twitter`` (Twitter/X) or ``instagram``
    :param social_media_url: the profile or status URL, when one was given
    :param username: the target account, without ``@``
    :param tweet_id: the tweet whose replies are wanted (replies only)
    :param max_results: clamped to 10-1000
    :param callback_url: where Nyne should POST the completed result
    """

    interaction_type: str
    platform: Platform = "twitter"
    social_media_url: str | None = None
    username: str | None = None
    tweet_id: str | None = None
    max_results: int = DEFAULT_MAX_RESULTS
    callback_url: str | None = None
    allowed_callback_hosts: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        itype = normalize_interaction_type(self.interaction_type)
        set_(self, "interaction_type", itype)
        platform: str = str(self.platform or "twitter").strip().lower()
        platform = _PLATFORM_ALIASES.get(platform, platform)
        username = self.username.strip().lstrip("@") if isinstance(self.username, str) else self.username
        if username == "":
            username = None
        if username is not None and not isinstance(username, str):
            raise _fail("username", f"{username!r} must be a string")
        tweet_id = self.tweet_id
        tweet_id = _check_tweet_id(tweet_id) if tweet_id is not None and str(tweet_id).strip() != "" else None

        url = self.social_media_url
        if url is not None and str(url).strip() == "":
            url = None
        if url is not None:
            parsed = parse_social_media_url(url)
            platform = parsed.platform
            url = parsed.url
            if parsed.username and username and parsed.username.lower() != username.lower():
                raise _fail(
                    "username",
                    f"{username!r} does not match the URL's account {parsed.username!r}; drop one of them",
                )
            username = username or parsed.username
            if parsed.tweet_id and tweet_id and parsed.tweet_id != tweet_id:
                raise _fail(
                    "tweet_id",
                    f"{tweet_id!r} does not match the URL's status id {parsed.tweet_id!r}; drop one of them",
                )
            tweet_id = tweet_id or parsed.tweet_id
        if platform not in ("twitter", "instagram"):
            raise _fail("platform", f"{self.platform!r} is not supported; use 'twitter' or 'instagram'")

        if username is not None:
            pattern = _TWITTER_USERNAME if platform == "twitter" else _INSTAGRAM_USERNAME
            if not pattern.match(username):
                raise _fail("username", f"{username!r} is not a valid {_label(platform)} username")

        if platform == "instagram" and itype not in INSTAGRAM_TYPES:
            raise _fail(
                "type", f"{itype!r} is not available on Instagram; use one of {', '.join(INSTAGRAM_TYPES)}"
            )
        if itype == "replies":
            if tweet_id is None:
                raise _fail(
                    "tweet_id",
                    "replies need a tweet: pass a status URL (https://x.com/<user>/status/<id>) or tweet_id",
                )
            if url is None and username is None:
                # The API needs social_media_url or username on every request, tweet_id alone is refused.
                raise _fail(
                    "social_media_url",
                    "is required unless username is given: pass the tweet's status URL "
                    "(https://x.com/<user>/status/<id>) or its author's username with tweet_id",
                )
        else:
            if username is None:
                raise _fail(
                    "username",
                    f"{itype} lookups need an account: pass a profile URL or username",
                )
            if tweet_id is not None and self.tweet_id is not None:
                raise _fail("tweet_id", f"only replies take a tweet id; remove it for {itype!r}")
            # A status URL used for a follower lookup names the account; the tweet is irrelevant.
            tweet_id = None

        callback = self.callback_url
        if callback is not None and str(callback).strip() != "":
            callback = validate_callback_url(callback, self.allowed_callback_hosts)
        else:
            callback = None

        set_(self, "platform", platform)
        set_(self, "social_media_url", url)
        set_(self, "username", username)
        set_(self, "tweet_id", tweet_id)
        set_(self, "max_results", normalize_max_results(self.max_results))
        set_(self, "callback_url", callback)
        set_(self, "allowed_callback_hosts", tuple(self.allowed_callback_hosts or ()))

    @classmethod
    def create(
        cls,
        social_media_url: str | None = None,
        type: str | None = None,
        *,
        twitter_url: str | None = None,
        interaction_type: str | None = None,
        username: str | None = None,
        tweet_id: str | int | None = None,
        max_results: int | str | None = None,
        callback_url: str | None = None,
        platform: str | None = None,
        allowed_callback_hosts: Iterable[str] | None = None,
    ) -> InteractionRequest:
        """
        Build a request from the documented fields, accepting their aliases.

        :param social_media_url: profile or status URL (alias ``twitter_url``)
        :param type: ``replies``, ``followers``, ``following``, ``followers,following`` in any order
            or as a list (alias ``interaction_type``)
        :param twitter_url: alias of ``social_media_url``
        :param interaction_type: alias of ``type``
        :param username: target account; a leading ``@`` is stripped
        :param tweet_id: 10-25 digits; required for replies unless the URL has it
        :param max_results: default 100, clamped to 10-1000
        :param callback_url: http(s) URL that receives the completed result
        :param platform: ``twitter`` (or ``x``) or ``instagram`` when no URL says it (default
            ``twitter``); must agree with the URL when both are given
        :param allowed_callback_hosts: optional allow-list for ``callback_url``
        """
        url = _pick_alias("social_media_url", social_media_url, "twitter_url", twitter_url, _strip)
        itype = _pick_alias("type", type, "interaction_type", interaction_type, _type_key)
        if itype is None:
            raise _fail("type", f"is required; one of {', '.join(TWITTER_TYPES)}")
        if platform not in (None, "") and url is not None:
            # The URL decides the platform; an explicit platform that says otherwise is a mistake.
            wanted = _PLATFORM_ALIASES.get(str(platform).strip().lower(), str(platform).strip().lower())
            inferred = parse_social_media_url(url).platform
            if wanted != inferred:
                raise _fail(
                    "platform",
                    f"{platform!r} does not match the URL, which is a {_label(inferred)} URL; drop platform",
                )
        if isinstance(tweet_id, int) and not isinstance(tweet_id, bool):
            tweet_id = str(tweet_id)
        return cls(
            interaction_type=itype,
            platform=(platform or "twitter"),  # type: ignore[arg-type]
            social_media_url=url,
            username=username,
            tweet_id=tweet_id,  # type: ignore[arg-type]
            max_results=max_results,  # type: ignore[arg-type]
            callback_url=callback_url,
            allowed_callback_hosts=tuple(allowed_callback_hosts or ()),
        )

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], **kwargs: Any) -> InteractionRequest:
        """Build a request from an API-style JSON body (aliases accepted); unknown keys are rejected."""
        known = (REQUEST_FIELDS - {"request_id"}) | {"platform"}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise _fail(
                unknown[0], f"unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        return cls.create(**dict(payload), **kwargs)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body for ``POST /person/interactions``."""
        body: dict[str, Any] = {"type": self.interaction_type, "max_results": self.max_results}
        if self.social_media_url:
            body["social_media_url"] = self.social_media_url
        elif self.platform == "instagram" and self.username:
            # The API infers the platform from the URL; a bare username would be taken as Twitter/X.
            body["social_media_url"] = f"https://www.instagram.com/{self.username}/"
        if self.username:
            body["username"] = self.username
        if self.tweet_id:
            body["tweet_id"] = self.tweet_id
        if self.callback_url:
            body["callback_url"] = self.callback_url
        return body

    def fingerprint(self) -> str:
        """A stable digest of what is asked (not where the answer goes), to recognise the same request on a retry."""
        body = self.to_payload()
        body.pop("callback_url", None)
        body.pop("social_media_url", None)
        body["platform"] = self.platform
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    @property
    def target(self) -> str:
        """A short label of the target for logs: ``twitter:@nasa`` or ``twitter:tweet/123...``."""
        if self.interaction_type == "replies":
            return f"{self.platform}:tweet/{self.tweet_id}"
        return f"{self.platform}:@{self.username}"


def _label(platform: str) -> str:
    return "Twitter/X" if platform == "twitter" else "Instagram"


_PLATFORM_ALIASES = {"x": "twitter", "twitter/x": "twitter", "twitter": "twitter", "instagram": "instagram"}


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _type_key(value: Any) -> Any:
    # "following, followers" and "followers,following" ask the same thing: not a conflict.
    try:
        return normalize_interaction_type(value)
    except NyneValidationError:
        return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _pick_alias(name: str, value: Any, alias: str, alias_value: Any, key: Any = _strip) -> Any:
    if not _empty(value) and not _empty(alias_value) and key(value) != key(alias_value):
        raise _fail(name, f"{name}={value!r} and its alias {alias}={alias_value!r} disagree; pass only one")
    return value if not _empty(value) else (alias_value if not _empty(alias_value) else None)
