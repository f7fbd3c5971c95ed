"""The ``nyne://`` Asset scheme and the landed-file events (:mod:`airflow_provider_nyne.assets`)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.sdk import Asset, ObjectStoragePath

from airflow_provider_nyne._compat import object_storage_conn_id
from airflow_provider_nyne.assets import (
    LandedFile,
    convert_asset_to_openlineage,
    create_asset,
    interactions_asset,
    interactions_asset_uri,
    is_nyne_uri,
    landed_event_extra,
    landed_files_from_asset_events,
    parse_interactions_asset_uri,
    sanitize_uri,
)
from airflow_provider_nyne.client.request import InteractionRequest

NORMAL = [
    pytest.param(
        "nyne://interactions/twitter/nasa/followers",
        "nyne://interactions/twitter/nasa/followers",
        id="already-normal",
    ),
    pytest.param(
        "NYNE://Interactions/Twitter/NASA/Followers/",
        "nyne://interactions/twitter/nasa/followers",
        id="case-and-trailing-slash",
    ),
    pytest.param(
        "nyne://interactions/twitter/@nasa/following",
        "nyne://interactions/twitter/nasa/following",
        id="at-sign-stripped",
    ),
    pytest.param(
        "nyne://interactions/twitter/nasa/following,followers",
        "nyne://interactions/twitter/nasa/followers,following",
        id="type-order",
    ),
    pytest.param(
        "nyne://interactions/twitter/nasa/followers%2Cfollowing",
        "nyne://interactions/twitter/nasa/followers,following",
        id="quoted-comma",
    ),
    pytest.param(
        "nyne://interactions/instagram/Nat.Geo/followers",
        "nyne://interactions/instagram/nat.geo/followers",
        id="instagram-dots",
    ),
    pytest.param(
        "nyne://interactions/Twitter/Tweet/1234567890123/Replies",
        "nyne://interactions/twitter/tweet/1234567890123/replies",
        id="replies-by-tweet",
    ),
    pytest.param(
        "nyne://interactions/twitter/tweet/followers",
        "nyne://interactions/twitter/tweet/followers",
        id="account-named-tweet",
    ),
]

MALFORMED = [
    pytest.param("nyne://a", "the host is 'a'", id="other-host"),
    pytest.param("nyne://user@interactions/twitter/nasa/followers", "the host is", id="user-info"),
    pytest.param("nyne://interactions", "names no lookup", id="no-path"),
    pytest.param("nyne://interactions/facebook/nasa/followers", "platform 'facebook'", id="platform"),
    pytest.param("nyne://interactions/x/nasa/followers", "platform 'x'", id="platform-alias"),
    pytest.param("nyne://interactions/twitter/nasa", "expected 3 path segments", id="no-type"),
    pytest.param(
        "nyne://interactions/twitter/nasa/followers/extra", "expected 3 path segments", id="too-long"
    ),
    pytest.param("nyne://interactions/twitter/nasa/likes", "type: 'likes' is not supported", id="type"),
    pytest.param(
        "nyne://interactions/twitter/na-sa/followers", "not a valid Twitter/X username", id="username"
    ),
    pytest.param("nyne://interactions/instagram/natgeo/replies", "looked up by tweet", id="ig-replies"),
    pytest.param("nyne://interactions/twitter/nasa/replies", "looked up by tweet", id="replies-by-account"),
    pytest.param(
        "nyne://interactions/instagram/tweet/1234567890123/replies", "only Twitter/X replies", id="ig-tweet"
    ),
    pytest.param("nyne://interactions/twitter/tweet/123/replies", "tweet id '123'", id="short-tweet-id"),
    pytest.param("nyne://interactions/twitter/nasa/followers?page=2", "no query", id="query"),
]


@pytest.mark.parametrize(("uri", "normal"), NORMAL)
def test_sanitize_uri_normalises(uri: str, normal: str) -> None:
    assert sanitize_uri(urlsplit(uri)).geturl() == normal
    # A fixed point: normalising the normal form changes nothing.
    assert sanitize_uri(urlsplit(normal)).geturl() == normal


@pytest.mark.parametrize(("uri", "reason"), MALFORMED)
def test_sanitize_uri_rejects_malformed_uris_naming_the_fix(uri: str, reason: str) -> None:
    with pytest.raises(ValueError, match="is not a valid nyne:// Asset URI") as caught:
        sanitize_uri(urlsplit(uri))
    assert reason in str(caught.value)
    assert "Use nyne://interactions/<platform>/<username>/<type>" in str(caught.value)


@pytest.mark.parametrize(("uri", "normal"), NORMAL)
def test_airflow_normalises_nyne_assets_with_the_registered_handler(uri: str, normal: str) -> None:
    assert Asset(uri=uri).uri == normal


# Not the user-info case: Airflow 3.1 drops user info from every Asset URI before asking the handler.
@pytest.mark.parametrize(("uri", "reason"), [p for p in MALFORMED if p.id != "user-info"])
def test_airflow_refuses_a_malformed_nyne_asset(uri: str, reason: str) -> None:
    with pytest.raises(ValueError, match="is not a valid nyne:// Asset URI"):
        Asset(uri=uri)


@pytest.mark.parametrize(
    ("fields", "uri"),
    [
        pytest.param(
            {"social_media_url": "https://x.com/NASA", "type": "followers"},
            "nyne://interactions/twitter/nasa/followers",
            id="twitter-followers",
        ),
        pytest.param(
            {"social_media_url": "https://twitter.com/nasa/status/1234567890123", "type": "replies"},
            "nyne://interactions/twitter/tweet/1234567890123/replies",
            id="twitter-replies",
        ),
        pytest.param(
            {"username": "natgeo", "platform": "instagram", "type": "following,followers"},
            "nyne://interactions/instagram/natgeo/followers,following",
            id="instagram-both",
        ),
        pytest.param(
            {"social_media_url": "https://www.instagram.com/natgeo/", "type": "followers,following"},
            "nyne://interactions/instagram/natgeo/followers,following",
            id="instagram-url",
        ),
    ],
)
def test_built_uri_parses_back_to_the_same_lookup(fields: dict[str, Any], uri: str) -> None:
    request = InteractionRequest.create(**fields)
    assert interactions_asset_uri(request) == uri
    assert interactions_asset(**fields).uri == uri
    parsed = parse_interactions_asset_uri(uri)
    assert (parsed.platform, parsed.interaction_type, parsed.tweet_id) == (
        request.platform,
        request.interaction_type,
        request.tweet_id,
    )


@pytest.mark.parametrize(
    ("uri", "namespace", "name"),
    [
        pytest.param(
            "nyne://interactions/twitter/NASA/followers",
            "nyne",
            "interactions/twitter/nasa/followers",
            id="account",
        ),
        pytest.param(
            "nyne://interactions/twitter/tweet/1234567890123/replies",
            "nyne",
            "interactions/twitter/tweet/1234567890123/replies",
            id="tweet",
        ),
        pytest.param(
            "nyne://interactions/instagram/natgeo/followers,following",
            "nyne",
            "interactions/instagram/natgeo/followers,following",
            id="instagram",
        ),
    ],
)
def test_converter_names_the_openlineage_dataset(uri: str, namespace: str, name: str) -> None:
    dataset = convert_asset_to_openlineage(Asset(uri=uri), None)
    assert (dataset.namespace, dataset.name) == (namespace, name)


def test_openlineage_provider_translates_nyne_assets_with_the_registered_converter() -> None:
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    dataset = translate_airflow_asset(Asset(uri="nyne://interactions/twitter/nasa/following"), None)
    assert dataset is not None
    assert (dataset.namespace, dataset.name) == ("nyne", "interactions/twitter/nasa/following")


def test_factory_builds_the_asset_from_request_fields() -> None:
    asset = create_asset(username="NASA", type="followers", extra={"team": "growth"})
    assert asset.uri == "nyne://interactions/twitter/nasa/followers"
    assert asset.extra == {"team": "growth"}


@pytest.mark.parametrize(
    ("uri", "ours"),
    [
        pytest.param("nyne://interactions/twitter/nasa/followers", True, id="nyne"),
        pytest.param("nyneish://x", False, id="prefix-of-another-scheme"),
        pytest.param("s3://bucket/nyne://x", False, id="inside-another-uri"),
    ],
)
def test_is_nyne_uri(uri: str, ours: bool) -> None:
    assert is_nyne_uri(uri) is ours


# -- landed files ------------------------------------------------------------------------------


class _Events:
    """Like ``triggering_asset_events`` (Airflow 3.1's ``Asset`` is not hashable, so no dict)."""

    def __init__(self, *pairs: tuple[Any, list[Any]]) -> None:
        self._pairs = pairs

    def items(self) -> list[tuple[Any, list[Any]]]:
        return list(self._pairs)


def _landed(file: str, request_id: str, minute: int | None, records: int = 3) -> Any:
    extra = landed_event_extra(file, request_id=request_id, records=records, format="jsonl")
    when = None if minute is None else datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc)
    return SimpleNamespace(extra=extra, timestamp=when)


FOLLOWERS = Asset(uri="s3://bucket/nyne/followers")
REPLIES = Asset(name="replies_landed", uri="s3://bucket/nyne/replies")


def test_landed_files_come_oldest_first_from_transfer_events_only() -> None:
    callback = SimpleNamespace(extra={"source": "nyne_callback", "request_id": "cb"}, timestamp=None)
    context = {
        "triggering_asset_events": _Events(
            (
                FOLLOWERS,
                [
                    _landed("s3://aws_default@bucket/nyne/followers/b.jsonl", "r2", 5),
                    _landed("s3://aws_default@bucket/nyne/followers/a.jsonl", "r1", 1),
                    callback,
                    _landed("s3://aws_default@bucket/nyne/followers/late.jsonl", "r4", None),
                ],
            ),
            (REPLIES, [_landed("s3://bucket/nyne/replies/c.csv", "r3", 3, records=0)]),
        )
    }
    files = landed_files_from_asset_events(context)
    assert [(f.request_id, f.asset_uri) for f in files] == [
        ("r1", FOLLOWERS.uri),
        ("r3", REPLIES.uri),
        ("r2", FOLLOWERS.uri),
        ("r4", FOLLOWERS.uri),
    ]
    assert files[0] == LandedFile(
        "s3://aws_default@bucket/nyne/followers/a.jsonl", "r1", 3, "jsonl", FOLLOWERS.uri
    )
    assert [f.request_id for f in landed_files_from_asset_events(context, asset="replies_landed")] == ["r3"]
    assert [f.records for f in landed_files_from_asset_events(context, asset=REPLIES)] == [0]
    assert [
        f.request_id for f in landed_files_from_asset_events(context, asset="s3://bucket/nyne/followers")
    ] == [
        "r1",
        "r2",
        "r4",
    ]


def test_no_triggering_events_means_no_files() -> None:
    assert landed_files_from_asset_events({}) == []
    assert landed_files_from_asset_events({"triggering_asset_events": {}}) == []


def test_landed_file_path_opens_through_its_connection(tmp_path: Any) -> None:
    target = tmp_path / "x.jsonl"
    target.write_text('{"a": 1}\n')
    landed = LandedFile(f"file://{target}", "r1", 1, "jsonl")
    path = landed.path()
    assert isinstance(path, ObjectStoragePath)
    assert path.read_text() == '{"a": 1}\n'
    assert object_storage_conn_id(landed.path(conn_id="other")) == "other"


@pytest.mark.parametrize(
    ("destination", "file"),
    [
        pytest.param(
            "s3://aws_default@bucket/a/b.jsonl", "s3://aws_default@bucket/a/b.jsonl", id="conn-id-kept"
        ),
        pytest.param(
            "s3://key:hunter2@bucket:9000/a.jsonl", "s3://key@bucket:9000/a.jsonl", id="password-dropped"
        ),
        pytest.param(ObjectStoragePath("file:///data/x.jsonl"), "file:///data/x.jsonl", id="object-path"),
    ],
)
def test_event_extra_names_the_file_without_a_password(destination: Any, file: str) -> None:
    extra = landed_event_extra(destination, request_id="r1", records=2, format="csv")
    assert extra == {
        "source": "nyne_transfer",
        "file": file,
        "request_id": "r1",
        "records": 2,
        "format": "csv",
    }
    assert "hunter2" not in json.dumps(extra)
