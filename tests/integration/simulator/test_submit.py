"""Submission contract: aliases, inference from URLs, clamping and every 400 code."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api, error_code

pytestmark = pytest.mark.integration

TWEET = "1234567890123456789"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"social_media_url": "https://x.com/jack", "type": "followers"},
            {"platform": "twitter", "type": "followers", "username": "jack", "max_results": 100},
            id="x-profile-url",
        ),
        pytest.param(
            {"twitter_url": "https://twitter.com/jack", "type": "following"},
            {"platform": "twitter", "type": "following", "username": "jack"},
            id="twitter_url-alias",
        ),
        pytest.param(
            {"social_media_url": "https://x.com/jack", "interaction_type": "followers"},
            {"type": "followers"},
            id="interaction_type-alias",
        ),
        pytest.param(
            {"social_media_url": "https://mobile.twitter.com/jack", "type": "followers"},
            {"platform": "twitter", "username": "jack"},
            id="mobile-twitter",
        ),
        pytest.param(
            {"social_media_url": "https://www.x.com/jack/", "type": "followers"},
            {"platform": "twitter", "username": "jack"},
            id="www-x",
        ),
        pytest.param(
            {"social_media_url": "https://www.twitter.com/jack", "type": "followers"},
            {"platform": "twitter", "username": "jack"},
            id="www-twitter",
        ),
        pytest.param(
            {"social_media_url": f"https://x.com/jack/status/{TWEET}", "type": "replies"},
            {"type": "replies", "username": "jack", "tweet_id": TWEET},
            id="status-url-gives-tweet-id",
        ),
        pytest.param(
            {"social_media_url": f"https://x.com/i/web/status/{TWEET}?s=20", "type": "replies"},
            {"type": "replies", "username": None, "tweet_id": TWEET},
            id="web-status-url-without-user",
        ),
        pytest.param(
            {"social_media_url": "https://www.instagram.com/natgeo/", "type": "followers"},
            {"platform": "instagram", "username": "natgeo"},
            id="instagram-www",
        ),
        pytest.param(
            {"social_media_url": "https://instagram.com/natgeo", "type": "following"},
            {"platform": "instagram", "username": "natgeo"},
            id="instagram",
        ),
        pytest.param(
            {"username": "@jack", "type": "followers"},
            {"platform": "twitter", "username": "jack", "social_media_url": None},
            id="username-only-at-stripped",
        ),
        pytest.param(
            {"username": "jack", "type": "replies", "tweet_id": int(TWEET)},
            {"tweet_id": TWEET},
            id="tweet-id-as-number",
        ),
        pytest.param(
            {"username": "jack", "type": "following,followers"},
            {"type": "followers,following"},
            id="both-types-any-order",
        ),
        pytest.param(
            {"username": "jack", "type": " Followers , Following "},
            {"type": "followers,following"},
            id="type-case-and-spaces",
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "max_results": 3}, {"max_results": 10}, id="clamp-low"
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "max_results": 5000},
            {"max_results": 1000},
            id="clamp-high",
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "max_results": "50"},
            {"max_results": 50},
            id="numeric-str",
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "callback_url": "https://hooks.example.org/nyne"},
            {"callback_url": "https://hooks.example.org/nyne"},
            id="callback-url",
        ),
    ],
)
def test_valid_submission_is_normalised(
    api: Api, sim: NyneSimulator, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    response = api.submit(body)

    assert response.status_code == 202, response.text
    payload = response.json()
    assert payload["success"] is True
    assert payload["data"]["status"] == "queued"
    (submission,) = sim.ledger.submissions()
    assert submission.request_id == payload["data"]["request_id"]
    for name, value in expected.items():
        assert submission.request[name] == value, name


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"{not json", "invalid_json", id="bad-json"),
        pytest.param(b"", "invalid_json", id="empty-body"),
        pytest.param(b"[1, 2]", "invalid_json", id="json-array"),
        pytest.param({"username": "jack"}, "invalid_type", id="missing-type"),
        pytest.param({"username": "jack", "type": "likes"}, "invalid_type", id="unknown-type"),
        pytest.param({"username": "jack", "type": "replies,followers"}, "invalid_type", id="mixed-replies"),
        pytest.param({"username": "jack", "type": 3}, "invalid_type", id="type-not-string"),
        pytest.param(
            {"social_media_url": "https://www.instagram.com/natgeo/", "type": "replies", "tweet_id": TWEET},
            "invalid_type",
            id="instagram-replies",
        ),
        pytest.param(
            {"social_media_url": "https://facebook.com/jack", "type": "followers"},
            "invalid_social_media_url",
            id="facebook-url",
        ),
        pytest.param(
            {"social_media_url": "https://x.com.evil.example/jack", "type": "followers"},
            "invalid_social_media_url",
            id="lookalike-host",
        ),
        pytest.param(
            {"social_media_url": "ftp://x.com/jack", "type": "followers"},
            "invalid_social_media_url",
            id="not-http",
        ),
        pytest.param(
            {"social_media_url": 42, "type": "followers"}, "invalid_social_media_url", id="url-not-string"
        ),
        pytest.param({"type": "followers"}, "invalid_request", id="no-url-no-username"),
        pytest.param({"username": "jack", "type": "replies"}, "invalid_tweet_id", id="replies-without-tweet"),
        pytest.param(
            {"social_media_url": "https://x.com/jack", "type": "replies"},
            "invalid_tweet_id",
            id="replies-profile-url",
        ),
        pytest.param(
            {"username": "jack", "type": "replies", "tweet_id": "123456789"},
            "invalid_tweet_id",
            id="tweet-id-9-digits",
        ),
        pytest.param(
            {"username": "jack", "type": "replies", "tweet_id": "1" * 26},
            "invalid_tweet_id",
            id="tweet-id-26-digits",
        ),
        pytest.param(
            {"username": "jack", "type": "replies", "tweet_id": "12345abcde12"},
            "invalid_tweet_id",
            id="tweet-id-letters",
        ),
        pytest.param(
            {"social_media_url": "https://x.com/jack/status/notanumber", "type": "replies"},
            "invalid_tweet_id",
            id="status-url-bad-id",
        ),
        pytest.param(
            {"social_media_url": f"https://x.com/i/status/{TWEET}", "type": "followers"},
            "invalid_username",
            id="followers-without-username",
        ),
        pytest.param({"username": "bad name!", "type": "followers"}, "invalid_username", id="bad-username"),
        pytest.param({"username": "@", "type": "followers"}, "invalid_username", id="only-at"),
        pytest.param(
            {"username": "jack", "type": "followers", "max_results": "ten"},
            "invalid_max_results",
            id="max-results-word",
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "max_results": 12.5},
            "invalid_max_results",
            id="max-results-float",
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "max_results": True},
            "invalid_max_results",
            id="max-results-bool",
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "callback_url": "ftp://hooks.example.org/x"},
            "invalid_callback_url",
            id="callback-not-http",
        ),
        pytest.param(
            {"username": "jack", "type": "followers", "callback_url": "not a url"},
            "invalid_callback_url",
            id="callback-garbage",
        ),
    ],
)
def test_invalid_submission_is_rejected(api: Api, sim: NyneSimulator, body: Any, code: str) -> None:
    if isinstance(body, bytes):
        response = api.client.post(
            "/person/interactions", content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = api.submit(body)

    assert response.status_code == 400, response.text
    assert error_code(response) == code
    assert sim.ledger.submissions() == []
    assert [r.code for r in sim.ledger.rejections(endpoint="submit")] == [code]
    assert sim.account().credits == 1000


def test_callback_allow_list(api: Api, sim: NyneSimulator) -> None:
    sim.configure(callback_allowed_hosts=["hooks.example.org"])

    refused = api.submit(username="jack", type="followers", callback_url="https://elsewhere.example.com/hook")
    allowed = api.submit(username="jack", type="followers", callback_url="https://HOOKS.example.org/hook")

    assert refused.status_code == 400
    assert error_code(refused) == "invalid_callback_url"
    assert allowed.status_code == 202


def test_unknown_route_and_method(api: Api) -> None:
    assert api.client.get("/person/unknown").status_code == 404
    assert api.client.delete("/person/interactions").status_code == 405
