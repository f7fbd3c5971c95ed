"""Job lifecycle, results, magic usernames, expiry and credits."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api, Receiver, error_code

pytestmark = pytest.mark.integration

TWEET = "1234567890123456789"
PROFILE_FIELDS = {
    "username",
    "display_name",
    "profile_url",
    "bio",
    "followers_count",
    "following_count",
    "verified",
    "relationship_type",
    "location",
    "joined_at",
}
REPLY_FIELDS = {
    "username",
    "display_name",
    "profile_url",
    "reply_text",
    "reply_date",
    "reply_id",
    "like_count",
}


def test_status_moves_queued_processing_completed(api: Api, sim: NyneSimulator) -> None:
    sim.faults.job_duration(1.2)  # queued for 0.3 s, processing until 1.2 s
    started = time.monotonic()
    request_id = api.submit_ok(username="jack")

    first = api.poll(request_id).json()["data"]
    time.sleep(max(0.0, started + 0.7 - time.monotonic()))
    middle = api.poll(request_id).json()["data"]
    time.sleep(max(0.0, started + 1.25 - time.monotonic()))
    last = api.poll(request_id).json()["data"]

    assert (first["status"], first["completed"]) == ("queued", False)
    assert (middle["status"], middle["completed"]) == ("processing", False)
    assert "result" not in middle
    assert (last["status"], last["completed"]) == ("completed", True)
    assert last["request_id"] == request_id
    assert last["result"]["total_count"] == len(last["result"]["interactions"]) > 0
    assert last["created_at"].endswith("Z")


def test_pending_status_fault(api: Api, sim: NyneSimulator) -> None:
    sim.faults.job_duration(0.6)
    sim.faults.pending_status()
    request_id = api.submit_ok(username="jack")

    time.sleep(0.3)

    assert api.poll(request_id).json()["data"]["status"] == "pending"
    assert api.wait(request_id)["status"] == "completed"


@pytest.mark.parametrize(
    ("username", "fault_reason", "expected_reason"),
    [
        pytest.param("fail_private_profile", None, "Profile is private", id="magic-username"),
        pytest.param("jack", "Account suspended", "Account suspended", id="fault-with-reason"),
    ],
)
def test_failed_job_carries_reason_and_costs_nothing(
    api: Api, sim: NyneSimulator, username: str, fault_reason: str | None, expected_reason: str
) -> None:
    if fault_reason is not None:
        sim.faults.fail_next_job(fault_reason)

    data = api.wait(api.submit_ok(username=username))

    assert data["status"] == "failed"
    assert data["completed"] is False
    assert data["error"] == expected_reason
    assert "result" not in data
    assert sim.ledger.credits_charged() == 0
    assert [c.reason for c in sim.ledger.charges()] == ["failed"]


@pytest.mark.parametrize(
    "how",
    [pytest.param("magic", id="empty-username"), pytest.param("fault", id="empty-fault")],
)
def test_empty_result_costs_nothing(api: Api, sim: NyneSimulator, how: str) -> None:
    if how == "fault":
        sim.faults.empty_next_job()
    username = "empty_account" if how == "magic" else "jack"

    data = api.wait(api.submit_ok(username=username))

    assert data["status"] == "completed"
    assert data["result"]["interactions"] == []
    assert data["result"]["total_count"] == 0
    assert sim.ledger.credits_charged() == 0
    assert sim.account().credits == 1000


def test_slow_username_takes_slow_duration(api: Api, sim: NyneSimulator) -> None:
    sim.configure(slow_job_duration=0.5)
    slow = api.submit_ok(username="slow_user")
    normal = api.submit_ok(username="jack")

    api.wait(normal)

    assert api.poll(slow).json()["data"]["status"] in ("queued", "processing")
    assert api.wait(slow)["status"] == "completed"


def test_credits_charged_once_for_results(api: Api, sim: NyneSimulator) -> None:
    request_id = api.submit_ok(username="jack")
    api.wait(request_id)
    for _ in range(3):
        api.poll(request_id)

    (charge,) = sim.ledger.charges()
    assert (charge.request_id, charge.credits, charge.reason) == (request_id, 3, "results")
    assert sim.ledger.credits_charged(sim.api_key) == 3
    assert sim.account().credits == 997
    assert api.usage().json()["data"]["credits_used"] == 3


def test_credits_charged_without_anyone_polling(api: Api, sim: NyneSimulator) -> None:
    api.submit_ok(username="jack")

    sim.ledger.wait_for(lambda ledger: ledger.credits_charged() == 3, timeout=10)
    assert sim.ledger.poll_count() == 0


def test_results_are_deterministic(api: Api) -> None:
    first = api.wait(api.submit_ok(username="jack", max_results=40))["result"]
    second = api.wait(api.submit_ok(social_media_url="https://x.com/jack", max_results=40))["result"]
    other = api.wait(api.submit_ok(username="jill", max_results=40))["result"]

    assert first == second
    assert first["interactions"] != other["interactions"]


@pytest.mark.parametrize(
    ("max_results", "low", "high"),
    [
        pytest.param(10, 10, 10, id="ten"),
        pytest.param(100, 15, 60, id="default-hundred"),
        pytest.param(1000, 15, 60, id="thousand"),
    ],
)
def test_result_size_is_min_of_max_results_and_target_size(
    api: Api, max_results: int, low: int, high: int
) -> None:
    result = api.wait(api.submit_ok(username="jack", max_results=max_results))["result"]

    assert low <= result["total_count"] <= high
    assert len(result["interactions"]) == result["total_count"]


def test_follower_items_have_profile_fields(api: Api) -> None:
    result = api.wait(api.submit_ok(social_media_url="https://www.instagram.com/natgeo/", type="followers"))[
        "result"
    ]

    assert result["interaction_type"] == "followers"
    assert result["platform"] == "instagram"
    assert result["target"] == {"username": "natgeo", "profile_url": "https://www.instagram.com/natgeo/"}
    for item in result["interactions"]:
        assert set(item) == PROFILE_FIELDS
        assert item["relationship_type"] == "follower"
        assert isinstance(item["followers_count"], int)
        assert isinstance(item["verified"], bool)
        assert item["profile_url"].startswith("https://www.instagram.com/")


def test_followers_and_following_mix(api: Api) -> None:
    result = api.wait(api.submit_ok(username="jack", type="following,followers", max_results=1000))["result"]

    assert result["interaction_type"] == "followers,following"
    assert {item["relationship_type"] for item in result["interactions"]} == {"follower", "following"}


def test_reply_items_have_reply_fields(api: Api) -> None:
    result = api.wait(api.submit_ok(social_media_url=f"https://x.com/jack/status/{TWEET}", type="replies"))[
        "result"
    ]

    assert result["interaction_type"] == "replies"
    assert result["target"]["username"] == "jack"
    for item in result["interactions"]:
        assert set(item) >= REPLY_FIELDS
        assert item["reply_date"].endswith("Z")
        assert item["reply_id"].isdigit()


@pytest.mark.parametrize(
    ("shape", "check"),
    [
        pytest.param(
            "actor", lambda r: set(r["interactions"][0]) == {"relationship_type", "actor"}, id="actor"
        ),
        pytest.param(
            "string_counts",
            lambda r: all(
                isinstance(i["followers_count"], str) and i["followers_count"].isdigit()
                for i in r["interactions"]
            ),
            id="string-counts",
        ),
        pytest.param(
            "string_verified",
            lambda r: {i["verified"] for i in r["interactions"]} <= {"0", "1"},
            id="string-verified",
        ),
        pytest.param(
            "results_list", lambda r: "interactions" not in r and len(r["results"]) > 0, id="results-list"
        ),
        pytest.param(
            "variant",
            lambda r: (
                isinstance(r["results"][0]["actor"]["verified"], str)
                and isinstance(r["results"][0]["actor"]["followers_count"], str)
            ),
            id="all-variants",
        ),
    ],
)
def test_alternate_result_shapes(api: Api, sim: NyneSimulator, shape: str, check: object) -> None:
    sim.faults.result_shape(shape)

    varied = api.wait(api.submit_ok(username="jack"))["result"]
    plain = api.wait(api.submit_ok(username="jack"))["result"]

    assert callable(check)
    assert check(varied)
    assert set(plain["interactions"][0]) == PROFILE_FIELDS
    assert varied["total_count"] == plain["total_count"]


def test_variant_username_gives_every_shape(api: Api) -> None:
    result = api.wait(api.submit_ok(username="variant_user"))["result"]

    item = result["results"][0]
    assert set(item) == {"relationship_type", "actor"}
    assert item["actor"]["verified"] in ("0", "1")


def test_request_expires_after_ttl(api: Api, sim: NyneSimulator) -> None:
    sim.configure(request_ttl=0.3)
    request_id = api.submit_ok(username="jack")
    api.wait(request_id)

    time.sleep(0.45)
    expired = api.poll(request_id)

    assert expired.status_code == 404
    assert error_code(expired) == "request_not_found"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        pytest.param({}, 400, "invalid_request_id", id="missing"),
        pytest.param({"request_id": ""}, 400, "invalid_request_id", id="blank"),
        pytest.param({"request_id": "req_does_not_exist"}, 404, "request_not_found", id="unknown"),
    ],
)
def test_poll_errors(api: Api, params: dict[str, str], status: int, code: str) -> None:
    response = api.client.get("/person/interactions", params=params)

    assert response.status_code == status
    assert error_code(response) == code


def test_other_accounts_request_is_not_found(api: Api, sim: NyneSimulator) -> None:
    request_id = api.submit_ok(username="jack")
    sim.add_account("other-key", "other-secret")

    response = api.client.get(
        "/person/interactions",
        params={"request_id": request_id},
        headers={"X-API-Key": "other-key", "X-API-Secret": "other-secret"},
    )

    assert response.status_code == 404
    assert error_code(response) == "request_not_found"


def test_hold_username_stays_running_until_released(api: Api, sim: NyneSimulator) -> None:
    held = api.submit_ok(username="hold_me", type="followers")
    time.sleep(0.3)  # six times the job duration

    assert api.poll(held).json()["data"]["status"] == "processing"
    assert sim.ledger.charges() == []
    released_at = time.time()
    assert sim.release() == [held]
    assert sim.release() == []  # nothing held any more

    data = api.wait(held)
    assert data["status"] == "completed"
    assert data["result"]["total_count"] > 0
    # Completed when released, not back-dated to its nominal duration (0.05 s after submission).
    completed_at = datetime.fromisoformat(data["completed_at"].replace("Z", "+00:00")).timestamp()
    assert completed_at >= released_at - 0.001
    (charge,) = sim.ledger.charges()
    assert (charge.request_id, charge.credits) == (held, 3)


def test_hold_next_job_fault_holds_only_the_next_submission(api: Api, sim: NyneSimulator) -> None:
    sim.faults.hold_next_job()
    held = api.submit_ok(username="jack", type="followers")
    free = api.submit_ok(username="jack", type="following")

    assert api.wait(free)["status"] == "completed"
    assert api.poll(held).json()["data"]["status"] == "processing"

    assert sim.release(held) == [held]
    assert api.wait(held)["status"] == "completed"


def test_release_over_http_and_unknown_ids(api: Api, sim: NyneSimulator) -> None:
    held = api.submit_ok(username="hold_http", type="followers")

    unknown = httpx.post(sim.admin_url("jobs/release"), json={"request_id": "req_unknown"})
    released = httpx.post(sim.admin_url("jobs/release"), json={"request_id": held})

    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "invalid_admin_request"
    assert released.status_code == 200
    assert released.json()["data"] == {"released": [held]}
    assert api.wait(held)["status"] == "completed"
    with pytest.raises(KeyError):
        sim.release("req_unknown")


def test_held_job_with_callback_delivers_when_released(
    api: Api, sim: NyneSimulator, receiver: Receiver
) -> None:
    held = api.submit_ok(username="hold_callback", type="followers", callback_url=receiver.url)
    time.sleep(0.3)
    assert receiver.deliveries == []  # no delivery while held

    sim.release(held)
    (delivery,) = receiver.wait(1)
    assert delivery.body["data"]["status"] == "completed"
    sim.ledger.wait_for(lambda ledger: len(ledger.callback_attempts(held)) == 1, timeout=10)
