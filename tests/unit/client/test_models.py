"""Tolerant parsing of status and result answers in every shape DESIGN.md section 1 lists."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from airflow_provider_nyne.client import models
from airflow_provider_nyne.client.errors import NyneResponseError
from airflow_provider_nyne.client.models import (
    PROFILE_FIELDS,
    Interaction,
    InteractionsResult,
    JobState,
    JobStatus,
    parse_bool,
    parse_count,
    raw_items,
)

FLAT = {
    "username": "@alice",
    "display_name": "Alice",
    "profile_url": "https://x.com/alice",
    "bio": "space",
    "followers_count": 1200,
    "following_count": 30,
    "verified": True,
    "relationship_type": "follower",
    "location": "Mars",
}
WRAPPED = {
    "relationship_type": "following",
    "actor": {
        "username": "bob",
        "display_name": "Bob",
        "profile_url": "https://x.com/bob",
        "bio": None,
        "followers_count": "1,234",
        "following_count": "56",
        "verified": "1",
        "id": "42",
    },
    "since": "2024-05-01",
}
REPLY = {
    "username": "carol",
    "profile_url": "https://x.com/carol",
    "reply_text": "Great launch!",
    "reply_date": "2025-01-02T03:04:05Z",
    "likes": 7,
}


def test_flat_item() -> None:
    item = Interaction.from_api(FLAT)
    assert item.to_record() == {
        "username": "alice",
        "display_name": "Alice",
        "profile_url": "https://x.com/alice",
        "bio": "space",
        "followers_count": 1200,
        "following_count": 30,
        "verified": True,
        "relationship_type": "follower",
        "reply_text": None,
        "reply_date": None,
    }
    assert item.extra == {"location": "Mars"}
    assert item.raw is FLAT
    assert FLAT["username"] == "@alice"  # the input is never modified


def test_actor_wrapped_item() -> None:
    item = Interaction.from_api(WRAPPED)
    assert item.to_record() == {
        "username": "bob",
        "display_name": "Bob",
        "profile_url": "https://x.com/bob",
        "bio": None,
        "followers_count": 1234,
        "following_count": 56,
        "verified": True,
        "relationship_type": "following",
        "reply_text": None,
        "reply_date": None,
    }
    # Unknown fields from both levels are kept; "actor" itself is unwrapped, not duplicated.
    assert item.extra == {"id": "42", "since": "2024-05-01"}
    assert item.raw == WRAPPED


def test_actor_fields_win_over_outer_duplicates() -> None:
    item = Interaction.from_api(
        {"username": "outer", "actor": {"username": "inner"}, "relationship_type": "x"}
    )
    assert (item.username, item.relationship_type) == ("inner", "x")


def test_reply_item() -> None:
    item = Interaction.from_api(REPLY)
    assert (item.username, item.reply_text, item.reply_date) == (
        "carol",
        "Great launch!",
        "2025-01-02T03:04:05Z",
    )
    assert (item.followers_count, item.verified) == (None, None)
    assert item.extra == {"likes": 7}


def test_item_that_is_not_an_object() -> None:
    with pytest.raises(NyneResponseError, match="interaction item is a list"):
        Interaction.from_api([])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(12, 12, id="int"),
        pytest.param(12.0, 12, id="integral-float"),
        pytest.param(12.5, None, id="fractional-float"),
        pytest.param("12", 12, id="numeric-string"),
        pytest.param(" 1,234 ", 1234, id="thousands-separator"),
        pytest.param("1_000", 1000, id="underscore"),
        pytest.param("-5", -5, id="negative-string"),
        pytest.param("12.0", 12, id="integral-float-string"),
        pytest.param("1.2K", None, id="abbreviated"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param(True, None, id="bool"),
        pytest.param([1], None, id="list"),
    ],
)
def test_parse_count(value: object, expected: int | None) -> None:
    assert parse_count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(True, True, id="true"),
        pytest.param(False, False, id="false"),
        pytest.param("1", True, id="string-1"),
        pytest.param("0", False, id="string-0"),
        pytest.param(1, True, id="int-1"),
        pytest.param(0, False, id="int-0"),
        pytest.param(" TRUE ", True, id="string-true"),
        pytest.param("false", False, id="string-false"),
        pytest.param("", False, id="empty-string"),
        pytest.param("maybe", None, id="unknown-string"),
        pytest.param(None, None, id="none"),
        pytest.param({}, None, id="object"),
    ],
)
def test_parse_bool(value: object, expected: bool | None) -> None:
    assert parse_bool(value) is expected


def test_result_with_interactions_list() -> None:
    raw = {
        "interaction_type": "followers",
        "platform": "twitter",
        "target": {"username": "@nasa", "profile_url": "https://x.com/nasa"},
        "interactions": [FLAT, WRAPPED],
        "total_count": "250",
        "next_cursor": "abc",
    }
    result = InteractionsResult.from_api(raw)
    assert (result.interaction_type, result.platform) == ("followers", "twitter")
    assert (result.target_username, result.target_profile_url) == ("nasa", "https://x.com/nasa")
    assert [i.username for i in result] == ["alice", "bob"]
    assert len(result) == 2
    assert result.total_count == 250  # what the API says, not how many items came back
    assert result.raw is raw  # "next_cursor" and every other unknown key survives here


def test_result_with_results_list_and_type_key() -> None:
    result = InteractionsResult.from_api({"type": "replies", "results": [REPLY]})
    assert result.interaction_type == "replies"
    assert [i.reply_text for i in result.interactions] == ["Great launch!"]
    assert result.total_count == 1  # no total_count: the number of items
    assert (result.platform, result.target_username, result.target_profile_url) == (None, None, None)


def test_result_prefers_interactions_over_results_and_ignores_non_lists() -> None:
    assert raw_items({"interactions": [1], "results": [2]}) == [1]
    assert raw_items({"interactions": None, "results": [2]}) == [2]
    assert raw_items({"interactions": "nope"}) == []
    assert len(InteractionsResult.from_api({"target": "nasa"})) == 0


def test_result_that_is_not_an_object() -> None:
    with pytest.raises(NyneResponseError, match="result is a str"):
        InteractionsResult.from_api("done")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "state", "terminal", "error"),
    [
        pytest.param({"status": "queued"}, JobState.QUEUED, False, None, id="queued"),
        pytest.param({"status": "processing"}, JobState.PROCESSING, False, None, id="processing"),
        pytest.param({"status": "pending"}, JobState.PENDING, False, None, id="pending"),
        pytest.param({"status": " Completed ", "completed": True}, JobState.COMPLETED, True, None, id="completed"),
        pytest.param({"status": "failed", "error": "account suspended"}, JobState.FAILED, True,
                     "account suspended", id="failed-error-string"),
        pytest.param({"status": "failed", "error": {"code": "target_private", "message": "the account is private"}},
                     JobState.FAILED, True, "the account is private", id="failed-error-object"),
        pytest.param({"status": "failed", "error": {"code": "target_private"}}, JobState.FAILED, True,
                     "target_private", id="failed-error-code-only"),
        pytest.param({"status": "failed"}, JobState.FAILED, True, None, id="failed-without-reason"),
        pytest.param({"status": "archived"}, JobState.UNKNOWN, False, None, id="unknown-state-keeps-polling"),
        pytest.param({"status": 3}, JobState.UNKNOWN, False, None, id="non-string-state"),
        pytest.param({"completed": True, "result": {}}, JobState.COMPLETED, True, None, id="completed-flag-only"),
        pytest.param({"completed": "true"}, JobState.COMPLETED, True, None, id="completed-flag-string"),
        pytest.param({"completed": False}, JobState.UNKNOWN, False, None, id="completed-false-only"),
        pytest.param({"error": "boom"}, JobState.FAILED, True, "boom", id="error-without-status"),
        pytest.param({"status": "processing", "completed": True}, JobState.PROCESSING, False, None,
                     id="status-wins-over-flag"),
    ],
)  # fmt: skip
def test_job_status_states(data: dict[str, Any], state: JobState, terminal: bool, error: str | None) -> None:
    status = JobStatus.from_api({"request_id": "req_1", **data})
    assert status.state is state
    assert status.is_terminal is terminal
    assert status.state.is_terminal() is terminal
    assert status.status == state.value
    assert status.error == error
    assert status.request_id == "req_1"


def test_job_state_parse_and_terminal_set() -> None:
    assert {s for s in JobState if s.is_terminal()} == {JobState.COMPLETED, JobState.FAILED}
    assert JobState.parse("QUEUED") is JobState.QUEUED
    assert JobState.parse(None) is JobState.UNKNOWN
    assert JobState("completed") == "completed"  # a str enum: compares with API strings


def test_job_status_request_id_falls_back_to_the_polled_id() -> None:
    assert JobStatus.from_api({"status": "queued"}, request_id="req_9").request_id == "req_9"
    assert (
        JobStatus.from_api({"status": "queued", "request_id": "req_a"}, request_id="req_9").request_id
        == "req_a"
    )
    with pytest.raises(NyneResponseError, match="status data is a list"):
        JobStatus.from_api([])  # type: ignore[arg-type]


def test_completed_status_parses_its_result_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {
        "request_id": "req_1",
        "status": "completed",
        "completed": True,
        "result": {"interaction_type": "followers", "interactions": [FLAT, WRAPPED, REPLY], "total_count": 3},
    }
    calls: list[Any] = []
    real = Interaction.from_api.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Interaction], item: Any) -> Interaction:
        calls.append(item)
        return real(cls, item)

    monkeypatch.setattr(Interaction, "from_api", classmethod(counting))
    status = JobStatus.from_api(data)
    assert status.total_count == 3
    assert calls == []  # deciding the state and the count parsed no item
    result = status.result
    assert result is not None
    assert [i.username for i in result] == ["alice", "bob", "carol"]
    assert len(calls) == 3
    assert status.result is result  # parsed once
    assert len(calls) == 3


def test_total_count_without_parsing_items_even_when_items_are_unparsable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(cls: type[Interaction], item: Any) -> Interaction:
        raise AssertionError("items must not be parsed to count them")

    monkeypatch.setattr(Interaction, "from_api", classmethod(explode))
    with_total = JobStatus.from_api(
        {"status": "completed", "result": {"interactions": [1, 2], "total_count": "7"}}
    )
    assert with_total.total_count == 7
    counted = JobStatus.from_api({"status": "completed", "result": {"results": [{}, {}, {}]}})
    assert counted.total_count == 3
    with pytest.raises(AssertionError):
        _ = counted.result


def test_result_is_none_until_completed() -> None:
    running = JobStatus.from_api({"status": "processing", "result": {"interactions": [FLAT]}})
    assert running.result is None
    assert running.total_count == 1
    assert JobStatus.from_api({"status": "completed"}).result is None
    assert JobStatus.from_api({"status": "completed"}).total_count is None
    failed = JobStatus.from_api({"status": "failed", "error": "x", "result": {"interactions": [FLAT]}})
    assert failed.result is None


def test_empty_completed_result() -> None:
    status = JobStatus.from_api({"status": "completed", "result": {"interactions": [], "total_count": 0}})
    assert status.result is not None
    assert (len(status.result), status.result.total_count, status.total_count) == (0, 0, 0)


def test_profile_fields_are_the_record_columns() -> None:
    assert tuple(Interaction().to_record()) == PROFILE_FIELDS
    assert models.PROFILE_FIELDS[0] == "username"


def test_parsed_objects_pickle() -> None:
    # Operators hand these to other processes (XCom, triggers): they must survive pickling.
    status = JobStatus.from_api({"status": "completed", "result": {"interactions": [WRAPPED]}})
    clone = pickle.loads(pickle.dumps(status))
    assert clone.state is JobState.COMPLETED
    assert clone.result is not None
    assert clone.result.interactions[0].username == "bob"
