"""InteractionRequest: every documented input rule, as a table of exact outcomes.

Each valid case states the exact JSON body (``to_payload()``) that would be sent; each
invalid case states the field named by the error and a piece of its message. Everything
here fails before any HTTP request, which is the point: a bad request costs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_nyne.client.errors import NyneValidationError
from airflow_provider_nyne.client.request import (
    InteractionRequest,
    normalize_max_results,
    parse_social_media_url,
    validate_callback_url,
)

TWEET = "1234567890123456789"


def ok(id_: str, kwargs: dict[str, Any], payload: dict[str, Any]) -> Any:
    return pytest.param(kwargs, payload, None, id=id_)


def bad(id_: str, kwargs: dict[str, Any], field: str, text: str) -> Any:
    return pytest.param(kwargs, None, (field, text), id=id_)


CASES = [
    # --- Twitter/X URLs -----------------------------------------------------------------
    ok(
        "x.com-profile-followers",
        {"social_media_url": "https://x.com/nasa", "type": "followers"},
        {"type": "followers", "max_results": 100, "social_media_url": "https://x.com/nasa", "username": "nasa"},
    ),
    ok(
        "twitter.com-profile-following-keeps-case",
        {"social_media_url": "https://twitter.com/NASA", "type": "following"},
        {
            "type": "following",
            "max_results": 100,
            "social_media_url": "https://twitter.com/NASA",
            "username": "NASA",
        },
    ),
    ok(
        "www.twitter.com-trailing-slash",
        {"social_media_url": "https://www.twitter.com/nasa/", "type": "followers"},
        {
            "type": "followers",
            "max_results": 100,
            "social_media_url": "https://www.twitter.com/nasa/",
            "username": "nasa",
        },
    ),
    ok(
        "www.x.com-at-in-path",
        {"social_media_url": "https://www.x.com/@nasa", "type": "followers"},
        {"type": "followers", "max_results": 100, "social_media_url": "https://www.x.com/@nasa", "username": "nasa"},
    ),
    ok(
        "mobile.twitter.com-status-replies",
        {"social_media_url": f"https://mobile.twitter.com/nasa/status/{TWEET}", "type": "replies"},
        {
            "type": "replies",
            "max_results": 100,
            "social_media_url": f"https://mobile.twitter.com/nasa/status/{TWEET}",
            "username": "nasa",
            "tweet_id": TWEET,
        },
    ),
    ok(
        "missing-scheme-means-https",
        {"social_media_url": "x.com/nasa", "type": "followers"},
        {"type": "followers", "max_results": 100, "social_media_url": "https://x.com/nasa", "username": "nasa"},
    ),
    ok(
        "http-scheme-kept-and-url-stripped",
        {"social_media_url": "  http://twitter.com/nasa  ", "type": "followers"},
        {"type": "followers", "max_results": 100, "social_media_url": "http://twitter.com/nasa", "username": "nasa"},
    ),
    ok(
        "status-url-with-photo-suffix",
        {"social_media_url": "https://x.com/nasa/status/1234567890/photo/1", "type": "replies"},
        {
            "type": "replies",
            "max_results": 100,
            "social_media_url": "https://x.com/nasa/status/1234567890/photo/1",
            "username": "nasa",
            "tweet_id": "1234567890",
        },
    ),
    ok(
        "i-web-status-has-no-author",
        {"social_media_url": f"https://x.com/i/web/status/{TWEET}", "type": "replies"},
        {
            "type": "replies",
            "max_results": 100,
            "social_media_url": f"https://x.com/i/web/status/{TWEET}",
            "tweet_id": TWEET,
        },
    ),
    ok(
        "i-status-with-photo-suffix",
        {"social_media_url": "twitter.com/i/status/1234567890123/photo/1", "type": "replies"},
        {
            "type": "replies",
            "max_results": 100,
            "social_media_url": "https://twitter.com/i/status/1234567890123/photo/1",
            "tweet_id": "1234567890123",
        },
    ),
    ok(
        "status-url-for-followers-ignores-the-tweet",
        {"social_media_url": f"https://x.com/nasa/status/{TWEET}", "type": "followers"},
        {
            "type": "followers",
            "max_results": 100,
            "social_media_url": f"https://x.com/nasa/status/{TWEET}",
            "username": "nasa",
        },
    ),
    # --- Instagram -----------------------------------------------------------------------
    ok(
        "instagram-profile-followers",
        {"social_media_url": "https://www.instagram.com/natgeo/", "type": "followers"},
        {
            "type": "followers",
            "max_results": 100,
            "social_media_url": "https://www.instagram.com/natgeo/",
            "username": "natgeo",
        },
    ),
    ok(
        "instagram-bare-host-dotted-username",
        {"social_media_url": "instagram.com/nat.geo_1", "type": "following"},
        {
            "type": "following",
            "max_results": 100,
            "social_media_url": "https://instagram.com/nat.geo_1",
            "username": "nat.geo_1",
        },
    ),
    ok(
        "instagram-username-only-gets-a-profile-url",
        {"username": "@natgeo", "platform": "instagram", "type": "followers,following"},
        {
            "type": "followers,following",
            "max_results": 100,
            "social_media_url": "https://www.instagram.com/natgeo/",
            "username": "natgeo",
        },
    ),
    ok(
        "instagram-post-url-with-username",
        {"social_media_url": "https://www.instagram.com/p/Cabc123/", "username": "natgeo", "type": "followers"},
        {
            "type": "followers",
            "max_results": 100,
            "social_media_url": "https://www.instagram.com/p/Cabc123/",
            "username": "natgeo",
        },
    ),
    # --- aliases and type normalisation --------------------------------------------------
    ok(
        "aliases-twitter_url-interaction_type",
        {"twitter_url": "https://x.com/nasa", "interaction_type": "following"},
        {"type": "following", "max_results": 100, "social_media_url": "https://x.com/nasa", "username": "nasa"},
    ),
    ok(
        "alias-with-same-value-is-fine",
        {"social_media_url": "https://x.com/nasa", "twitter_url": " https://x.com/nasa", "type": "followers"},
        {"type": "followers", "max_results": 100, "social_media_url": "https://x.com/nasa", "username": "nasa"},
    ),
    ok(
        "type-following,followers-reordered",
        {"username": "nasa", "type": "following,followers"},
        {"type": "followers,following", "max_results": 100, "username": "nasa"},
    ),
    ok(
        "type-with-spaces-and-capitals",
        {"username": "nasa", "type": " Followers , FOLLOWING "},
        {"type": "followers,following", "max_results": 100, "username": "nasa"},
    ),
    ok(
        "type-alias-equivalent-spelling-is-fine",
        {"username": "nasa", "type": "followers,following", "interaction_type": "following, followers"},
        {"type": "followers,following", "max_results": 100, "username": "nasa"},
    ),
    ok(
        "type-as-a-list",
        {"username": "nasa", "type": ["following", "followers"]},
        {"type": "followers,following", "max_results": 100, "username": "nasa"},
    ),
    # --- usernames and tweet ids ---------------------------------------------------------
    ok(
        "username-only-at-stripped",
        {"username": " @nasa ", "type": "followers"},
        {"type": "followers", "max_results": 100, "username": "nasa"},
    ),
    ok(
        "username-field-agrees-with-url-ignoring-case",
        {"social_media_url": "https://x.com/NASA", "username": "@nasa", "type": "followers"},
        {"type": "followers", "max_results": 100, "social_media_url": "https://x.com/NASA", "username": "nasa"},
    ),
    ok(
        "platform-X-means-twitter",
        {"username": "nasa", "platform": "X", "type": "followers"},
        {"type": "followers", "max_results": 100, "username": "nasa"},
    ),
    ok(
        "tweet-id-as-int",
        {"tweet_id": 1234567890123, "username": "nasa", "type": "replies"},
        {"type": "replies", "max_results": 100, "username": "nasa", "tweet_id": "1234567890123"},
    ),
    ok(
        "tweet-id-10-digits-with-username",
        {"tweet_id": " 1234567890 ", "username": "nasa", "type": "replies"},
        {"type": "replies", "max_results": 100, "username": "nasa", "tweet_id": "1234567890"},
    ),
    ok(
        "tweet-id-25-digits",
        {"tweet_id": "1" * 25, "username": "nasa", "type": "replies"},
        {"type": "replies", "max_results": 100, "username": "nasa", "tweet_id": "1" * 25},
    ),
    ok(
        "tweet-id-same-as-url",
        {"social_media_url": f"https://x.com/nasa/status/{TWEET}", "tweet_id": TWEET, "type": "replies"},
        {
            "type": "replies",
            "max_results": 100,
            "social_media_url": f"https://x.com/nasa/status/{TWEET}",
            "username": "nasa",
            "tweet_id": TWEET,
        },
    ),
    # --- max_results ---------------------------------------------------------------------
    ok(
        "max-results-5-clamped-to-10",
        {"username": "nasa", "type": "followers", "max_results": 5},
        {"type": "followers", "max_results": 10, "username": "nasa"},
    ),
    ok(
        "max-results-5000-clamped-to-1000",
        {"username": "nasa", "type": "followers", "max_results": 5000},
        {"type": "followers", "max_results": 1000, "username": "nasa"},
    ),
    ok(
        "max-results-string-50",
        {"username": "nasa", "type": "followers", "max_results": "50"},
        {"type": "followers", "max_results": 50, "username": "nasa"},
    ),
    ok(
        "max-results-empty-string-means-default",
        {"username": "nasa", "type": "followers", "max_results": ""},
        {"type": "followers", "max_results": 100, "username": "nasa"},
    ),
    # --- callback_url --------------------------------------------------------------------
    ok(
        "callback-https",
        {"username": "nasa", "type": "followers", "callback_url": "https://hooks.example.com/nyne?x=1"},
        {
            "type": "followers",
            "max_results": 100,
            "username": "nasa",
            "callback_url": "https://hooks.example.com/nyne?x=1",
        },
    ),
    ok(
        "callback-http-with-port",
        {"username": "nasa", "type": "followers", "callback_url": "http://127.0.0.1:8080/cb"},
        {"type": "followers", "max_results": 100, "username": "nasa", "callback_url": "http://127.0.0.1:8080/cb"},
    ),
    ok(
        "callback-allow-list-exact-host",
        {
            "username": "nasa",
            "type": "followers",
            "callback_url": "https://Hooks.Example.com/cb",
            "allowed_callback_hosts": ["hooks.example.com"],
        },
        {"type": "followers", "max_results": 100, "username": "nasa", "callback_url": "https://hooks.example.com/cb"},
    ),
    ok(
        "callback-allow-list-wildcard",
        {
            "username": "nasa",
            "type": "followers",
            "callback_url": "https://a.b.example.com/cb",
            "allowed_callback_hosts": ["other.org", "*.example.com"],
        },
        {"type": "followers", "max_results": 100, "username": "nasa", "callback_url": "https://a.b.example.com/cb"},
    ),
    ok(
        "callback-trailing-dot-and-default-port-normalised",
        {
            "username": "nasa",
            "type": "followers",
            "callback_url": "https://HOOKS.example.com.:443/cb?a=%20b",
            "allowed_callback_hosts": ["Hooks.Example.COM."],
        },
        {"type": "followers", "max_results": 100, "username": "nasa", "callback_url": "https://hooks.example.com/cb?a=%20b"},
    ),
    ok(
        "callback-international-host-in-ascii-form",
        {
            "username": "nasa",
            "type": "followers",
            "callback_url": "https://hooks.bücher.example/cb",
            "allowed_callback_hosts": ["*.xn--bcher-kva.example"],
        },
        {"type": "followers", "max_results": 100, "username": "nasa", "callback_url": "https://hooks.xn--bcher-kva.example/cb"},
    ),
    ok(
        "callback-ipv6-allow-listed-without-brackets",
        {"username": "nasa", "type": "followers", "callback_url": "http://[::1]:8080/cb", "allowed_callback_hosts": ["::1"]},
        {"type": "followers", "max_results": 100, "username": "nasa", "callback_url": "http://[::1]:8080/cb"},
    ),
    ok(
        "profile-url-host-normalised",
        {"social_media_url": "HTTPS://X.COM.:443/nasa", "type": "followers"},
        {"type": "followers", "max_results": 100, "social_media_url": "https://x.com/nasa", "username": "nasa"},
    ),
    ok(
        "callback-empty-string-means-none",
        {"username": "nasa", "type": "followers", "callback_url": "  "},
        {"type": "followers", "max_results": 100, "username": "nasa"},
    ),
    # === invalid =========================================================================
    bad("non-social-host", {"social_media_url": "https://facebook.com/nasa", "type": "followers"},
        "social_media_url", "is not a Twitter/X or Instagram URL"),
    bad("lookalike-host", {"social_media_url": "https://x.com.evil.io/nasa", "type": "followers"},
        "social_media_url", "is not a Twitter/X or Instagram URL"),
    bad("ftp-scheme", {"social_media_url": "ftp://x.com/nasa", "type": "followers"},
        "social_media_url", "must use http or https"),
    bad("site-page-home", {"social_media_url": "https://x.com/home", "type": "followers"},
        "social_media_url", "is a site page"),
    bad("site-page-explore", {"social_media_url": "https://twitter.com/explore/tabs", "type": "followers"},
        "social_media_url", "is a site page"),
    bad("host-without-profile", {"social_media_url": "https://x.com/", "type": "followers"},
        "social_media_url", "has no profile in its path"),
    bad("instagram-host-without-profile", {"social_media_url": "https://instagram.com", "type": "followers"},
        "social_media_url", "has no profile in its path"),
    bad("status-url-without-id", {"social_media_url": "https://x.com/nasa/status/", "type": "replies"},
        "social_media_url", "without a tweet id"),
    bad("status-url-non-digit-id", {"social_media_url": "https://x.com/nasa/status/abc", "type": "replies"},
        "social_media_url", "must be 10 to 25 digits"),
    bad("url-username-too-long", {"social_media_url": "https://x.com/a_very_long_username", "type": "followers"},
        "social_media_url", "is not a valid Twitter/X username"),
    bad("tweet-id-9-digits", {"tweet_id": "123456789", "type": "replies"}, "tweet_id", "must be 10 to 25 digits"),
    bad("tweet-id-26-digits", {"tweet_id": "1" * 26, "type": "replies"}, "tweet_id", "must be 10 to 25 digits"),
    bad("tweet-id-non-digits", {"tweet_id": "12345abcde1", "type": "replies"}, "tweet_id", "must be 10 to 25 digits"),
    bad("tweet-id-bool", {"tweet_id": True, "type": "replies"}, "tweet_id", "must be 10 to 25 digits"),
    bad("tweet-id-conflicts-with-url",
        {"social_media_url": f"https://x.com/nasa/status/{TWEET}", "tweet_id": "1111111111", "type": "replies"},
        "tweet_id", "does not match the URL's status id"),
    bad("replies-tweet-id-without-url-or-username", {"tweet_id": TWEET, "type": "replies"},
        "social_media_url", "is required unless username is given"),
    bad("tweet-id-for-followers", {"username": "nasa", "tweet_id": TWEET, "type": "followers"},
        "tweet_id", "only replies take a tweet id"),
    bad("replies-without-tweet", {"social_media_url": "https://x.com/nasa", "type": "replies"},
        "tweet_id", "replies need a tweet"),
    bad("username-conflicts-with-url", {"social_media_url": "https://x.com/nasa", "username": "esa", "type": "followers"},
        "username", "does not match the URL's account"),
    bad("username-with-space", {"username": "na sa", "type": "followers"}, "username", "is not a valid Twitter/X username"),
    bad("username-dot-on-twitter", {"username": "nat.geo", "type": "followers"}, "username", "is not a valid Twitter/X username"),
    bad("username-not-a-string", {"username": 12345, "type": "followers"}, "username", "must be a string"),
    bad("followers-without-account", {"type": "followers"}, "username", "followers lookups need an account"),
    bad("instagram-post-url-without-username",
        {"social_media_url": "https://www.instagram.com/p/Cabc123/", "type": "following"},
        "username", "following lookups need an account"),
    bad("replies-on-instagram", {"social_media_url": "https://www.instagram.com/natgeo/", "type": "replies"},
        "type", "is not available on Instagram"),
    bad("replies-on-instagram-by-platform", {"username": "natgeo", "platform": "instagram", "type": "replies"},
        "type", "is not available on Instagram"),
    bad("type-missing", {"username": "nasa"}, "type", "is required"),
    bad("type-unknown", {"username": "nasa", "type": "likes"}, "type", "is not supported"),
    bad("type-duplicated", {"username": "nasa", "type": "followers,followers"}, "type", "is not supported"),
    bad("type-replies-plus-followers", {"username": "nasa", "type": "replies,followers"}, "type", "is not supported"),
    bad("type-not-a-string", {"username": "nasa", "type": 3}, "type", "must be a string"),
    bad("url-alias-conflict",
        {"social_media_url": "https://x.com/nasa", "twitter_url": "https://x.com/esa", "type": "followers"},
        "social_media_url", "and its alias twitter_url="),
    bad("type-alias-conflict", {"username": "nasa", "type": "followers", "interaction_type": "following"},
        "type", "and its alias interaction_type="),
    bad("platform-conflicts-with-url", {"social_media_url": "https://x.com/nasa", "platform": "instagram", "type": "followers"},
        "platform", "does not match the URL, which is a Twitter/X URL"),
    bad("platform-unknown", {"username": "nasa", "platform": "facebook", "type": "followers"},
        "platform", "is not supported"),
    bad("max-results-bool", {"username": "nasa", "type": "followers", "max_results": True},
        "max_results", "is not a whole number"),
    bad("max-results-float", {"username": "nasa", "type": "followers", "max_results": 50.0},
        "max_results", "is not a whole number"),
    bad("max-results-text", {"username": "nasa", "type": "followers", "max_results": "fifty"},
        "max_results", "is not a whole number"),
    bad("callback-ftp", {"username": "nasa", "type": "followers", "callback_url": "ftp://hooks.example.com/cb"},
        "callback_url", "must use http or https"),
    bad("callback-relative", {"username": "nasa", "type": "followers", "callback_url": "/hooks/nyne"},
        "callback_url", "must be an absolute http:// or https:// URL"),
    bad("callback-no-host", {"username": "nasa", "type": "followers", "callback_url": "https:///cb"},
        "callback_url", "has no host"),
    bad("callback-bad-port", {"username": "nasa", "type": "followers", "callback_url": "https://a.com:99999/cb"},
        "callback_url", "has an invalid port"),
    bad("callback-whitespace", {"username": "nasa", "type": "followers", "callback_url": "https://a.com/x y"},
        "callback_url", "contains a control, space or invisible character (U+0020)"),
    bad("callback-host-not-allowed",
        {"username": "nasa", "type": "followers", "callback_url": "https://evil.io/cb",
         "allowed_callback_hosts": ["hooks.example.com"]},
        "callback_url", "host 'evil.io' is not in the allowed callback hosts (hooks.example.com)"),
    bad("callback-wildcard-excludes-apex",
        {"username": "nasa", "type": "followers", "callback_url": "https://example.com/cb",
         "allowed_callback_hosts": ["*.example.com"]},
        "callback_url", "is not in the allowed callback hosts"),
    bad("callback-wildcard-lookalike",
        {"username": "nasa", "type": "followers", "callback_url": "https://evilexample.com/cb",
         "allowed_callback_hosts": ["*.example.com"]},
        "callback_url", "is not in the allowed callback hosts"),
    # --- URLs that HTTP clients read differently: refused, whatever the allow-list says ------
    *(
        bad(id_, {"social_media_url": url, "type": "followers"}, "social_media_url", text)
        for id_, url, text in [
            ("profile-backslash-before-at", "https://evil.com\\@x.com/nasa", "contains a backslash"),
            ("profile-backslash-as-slash", "https://x.com\\nasa", "contains a backslash"),
            ("profile-newline-in-path", "https://x.com/na\nsa", "(U+000A)"),
            ("profile-tab-in-path", "https://x.com/na\tsa", "(U+0009)"),
            ("profile-crlf-after-path", "https://x.com/nasa\r\nX-Injected: 1", "(U+000D)"),
            ("profile-nul", "https://x.com/nasa\x00", "(U+0000)"),
            ("profile-zero-width-space-in-host", "https://x.com\u200b/nasa", "(U+200B)"),
            ("profile-userinfo", "https://user:hunter2@x.com/nasa", "must not contain a user name or password"),
            ("profile-userinfo-lookalike", "https://evil.com@x.com/nasa", "must not contain a user name or password"),
            ("profile-userinfo-reversed", "https://x.com@evil.com/nasa", "must not contain a user name or password"),
            ("profile-dot-dot-segment", "https://x.com/evil/../nasa", "'.' or '..' path segment"),
            ("profile-encoded-dot-dot", "https://x.com/evil/%2e%2E/nasa", "'.' or '..' path segment"),
            ("profile-encoded-newline-in-path", "https://x.com/nasa/%0A", "percent-encoded control character"),
            ("profile-encoded-backslash-in-path", "https://x.com/nasa/%5C", "percent-encoded control character"),
            ("profile-stray-percent", "https://x.com/nasa%", "not followed by two hex digits"),
            ("profile-fullwidth-host", "https://\uff58.com/nasa", "encode differently"),
            ("profile-percent-encoded-host", "https://x%2ecom/nasa", "percent-encoded host"),
            ("profile-scheme-without-slashes", "https:x.com/nasa", "with '//' after the scheme"),
            ("profile-with-port", "https://x.com:8443/nasa", "has a port"),
        ]
    ),
    *(
        bad(id_, {"username": "nasa", "type": "followers", "callback_url": url, "allowed_callback_hosts": hosts},
            "callback_url", text)
        for id_, url, hosts, text in [
            ("callback-backslash-userinfo", "http://127.0.0.1:8080\\@hooks.example.com/cb", ["hooks.example.com"],
             "contains a backslash"),
            ("callback-backslash-reversed", "http://hooks.example.com\\@127.0.0.1/cb", ["hooks.example.com"],
             "contains a backslash"),
            ("callback-userinfo-allowed-host", "https://user:hunter2@hooks.example.com/cb", ["hooks.example.com"],
             "must not contain a user name or password"),
            ("callback-userinfo-port-trick", "http://hooks.example.com:80@127.0.0.1/cb", ["hooks.example.com"],
             "must not contain a user name or password"),
            ("callback-encoded-at-in-host", "http://127.0.0.1%40hooks.example.com/cb", ["hooks.example.com"],
             "percent-encoded host"),
            ("callback-encoded-dot-in-host", "http://hooks.example.com%2e/cb", ["hooks.example.com"],
             "percent-encoded host"),
            ("callback-tab-in-host", "http://hooks.example.com\t.evil.io/cb", ["hooks.example.com"], "(U+0009)"),
            ("callback-newline-in-path", "https://hooks.example.com/c\nb", [], "(U+000A)"),
            ("callback-encoded-crlf-in-path", "https://hooks.example.com/cb%0d%0aSet-Cookie:x", [],
             "percent-encoded control character"),
            ("callback-encoded-newline-in-query", "https://hooks.example.com/cb?x=%0A", [],
             "percent-encoded control character"),
            ("callback-decimal-ipv4", "http://2130706433/cb", [], "write it as 127.0.0.1"),
            ("callback-octal-ipv4", "http://0177.0.0.1/cb", ["127.0.0.1"], "write it as 127.0.0.1"),
            ("callback-hex-short-ipv4", "http://0x7f.1/cb", [], "write it as 127.0.0.1"),
            ("callback-ipv6-zone-id", "http://[fe80::1%25eth0]/cb", [], "zone id"),
            ("callback-ipv6-without-brackets", "http://::1/cb", [], "in brackets"),
            ("callback-empty-label", "https://hooks..example.com/cb", [], "invalid host name"),
            ("callback-semicolon-in-host", "https://hooks.example.com;.evil.io/cb", ["hooks.example.com"],
             "invalid host name"),
            ("callback-bad-punycode", "https://xn--zz.example.com/cb", [], "encode differently"),
            ("callback-dot-dot-segment", "https://hooks.example.com/a/../b", [], "'.' or '..' path segment"),
        ]
    ),
    bad("callback-allow-list-entry-with-scheme",
        {"username": "nasa", "type": "followers", "callback_url": "https://hooks.example.com/cb",
         "allowed_callback_hosts": ["https://hooks.example.com"]},
        "callback_allowed_hosts", "is not a host name"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "payload", "error"), CASES)
def test_create(
    kwargs: dict[str, Any], payload: dict[str, Any] | None, error: tuple[str, str] | None
) -> None:
    if error is None:
        assert InteractionRequest.create(**kwargs).to_payload() == payload
    else:
        field, text = error
        with pytest.raises(NyneValidationError) as info:
            InteractionRequest.create(**kwargs)
        assert info.value.field == field
        assert text in str(info.value)
        # The message starts with the field so that a task log shows what to fix.
        assert info.value.message.startswith(f"{field}: ")
        assert info.value.status_code is None  # local: nothing was sent
        # A password in a URL is never repeated, wherever the error is shown.
        assert "hunter2" not in f"{info.value} {info.value!r}"


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("value", "expected", "warned"),
    [
        pytest.param(5, 10, "max_results=5 is outside 10-1000; using 10", id="5-to-10"),
        pytest.param(-3, 10, "max_results=-3 is outside 10-1000; using 10", id="negative-to-10"),
        pytest.param(5000, 1000, "max_results=5000 is outside 10-1000; using 1000", id="5000-to-1000"),
        pytest.param(
            " 2000 ", 1000, "max_results=2000 is outside 10-1000; using 1000", id="string-2000-to-1000"
        ),
        pytest.param(10, 10, None, id="10-kept"),
        pytest.param(1000, 1000, None, id="1000-kept"),
        pytest.param("50", 50, None, id="string-50-kept"),
        pytest.param(None, 100, None, id="none-default-100"),
    ],
)
def test_max_results_clamping_warns(
    value: object, expected: int, warned: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_nyne.client.request")
    request = InteractionRequest.create(username="nasa", type="followers", max_results=value)  # type: ignore[arg-type]
    assert request.max_results == expected
    messages = [r.getMessage() for r in caplog.records if r.name == "airflow_provider_nyne.client.request"]
    assert messages == ([warned] if warned else [])
    if warned:
        assert caplog.records[0].levelno == logging.WARNING


@pytest.mark.parametrize("value", [True, False, 12.0, 12.5, "12.0", "1e2", [10], object()])
def test_max_results_rejects_non_integers(value: object) -> None:
    with pytest.raises(NyneValidationError) as info:
        normalize_max_results(value)
    assert info.value.field == "max_results"


def test_parse_social_media_url_exposes_what_the_url_says() -> None:
    parsed = parse_social_media_url(f"mobile.twitter.com/nasa/status/{TWEET}?s=20#frag")
    assert (parsed.platform, parsed.username, parsed.tweet_id) == ("twitter", "nasa", TWEET)
    assert parsed.url == f"https://mobile.twitter.com/nasa/status/{TWEET}?s=20#frag"
    insta = parse_social_media_url("HTTPS://WWW.INSTAGRAM.COM/natgeo")
    assert (insta.platform, insta.username, insta.tweet_id) == ("instagram", "natgeo", None)


@pytest.mark.parametrize("value", [None, "", "   ", 42])
def test_parse_social_media_url_rejects_empty(value: object) -> None:
    with pytest.raises(NyneValidationError, match="must be a non-empty") as info:
        parse_social_media_url(value)  # type: ignore[arg-type]
    assert info.value.field == "social_media_url"


def test_validate_callback_url_without_allow_list_accepts_any_host() -> None:
    assert validate_callback_url(" https://anything.example.org/cb ") == "https://anything.example.org/cb"
    assert validate_callback_url("https://x.io/cb", allowed_hosts=["", " x.io "]) == "https://x.io/cb"


def test_from_payload_accepts_the_api_body_and_rejects_unknown_fields() -> None:
    body = {"twitter_url": "https://x.com/nasa", "interaction_type": "followers", "max_results": 20}
    request = InteractionRequest.from_payload(body)
    assert request.to_payload() == {
        "type": "followers",
        "max_results": 20,
        "social_media_url": "https://x.com/nasa",
        "username": "nasa",
    }
    # Round trip: the payload a request sends builds the same request.
    assert InteractionRequest.from_payload(request.to_payload()) == request
    with pytest.raises(NyneValidationError, match="unknown field") as info:
        InteractionRequest.from_payload({**body, "tweetid": "1234567890"})
    assert info.value.field == "tweetid"


def test_direct_construction_validates_too() -> None:
    request = InteractionRequest(interaction_type="following, followers", username="@nasa", max_results=3)  # type: ignore[arg-type]
    assert (request.interaction_type, request.username, request.max_results, request.platform) == (
        "followers,following",
        "nasa",
        10,
        "twitter",
    )
    with pytest.raises(NyneValidationError):
        InteractionRequest(interaction_type="replies", platform="instagram", username="natgeo")


def test_request_is_immutable_and_hashable() -> None:
    request = InteractionRequest.create(username="nasa", type="followers")
    with pytest.raises(AttributeError):
        request.username = "esa"  # type: ignore[misc]
    assert request == InteractionRequest.create(username="@nasa", type="followers")
    assert len({request, InteractionRequest.create(username="nasa", type="followers")}) == 1


def test_fingerprint_ignores_where_the_answer_goes_but_not_what_is_asked() -> None:
    base = InteractionRequest.create("https://x.com/nasa", "followers")
    same = [
        InteractionRequest.create(username="nasa", type="followers"),
        InteractionRequest.create("x.com/nasa", "followers", callback_url="https://hooks.example.com/a"),
        InteractionRequest.create(twitter_url="https://twitter.com/nasa", interaction_type="followers"),
    ]
    different = [
        InteractionRequest.create("https://x.com/nasa", "following"),
        InteractionRequest.create("https://x.com/esa", "followers"),
        InteractionRequest.create("https://x.com/nasa", "followers", max_results=200),
        InteractionRequest.create("https://www.instagram.com/nasa/", "followers"),
    ]
    assert len(base.fingerprint()) == 16
    assert all(r.fingerprint() == base.fingerprint() for r in same)
    assert len({r.fingerprint() for r in different} | {base.fingerprint()}) == len(different) + 1
    # Stable across processes and releases (a retried task compares it with a stored one):
    # sha256 of {"max_results":100,"platform":"twitter","type":"followers","username":"nasa"}.
    assert base.fingerprint() == "4d5541ebeac21e7f"


@pytest.mark.parametrize(
    ("kwargs", "target"),
    [
        pytest.param({"username": "nasa", "type": "followers"}, "twitter:@nasa", id="followers"),
        pytest.param(
            {"tweet_id": TWEET, "username": "nasa", "type": "replies"}, f"twitter:tweet/{TWEET}", id="replies"
        ),
        pytest.param(
            {"social_media_url": "instagram.com/natgeo", "type": "following"},
            "instagram:@natgeo",
            id="instagram",
        ),
    ],
)
def test_target_label(kwargs: dict[str, Any], target: str) -> None:
    assert InteractionRequest.create(**kwargs).target == target
