"""Results in every item shape the API is known to use, shared by the transfer tests."""

from __future__ import annotations

from typing import Any

from airflow_provider_nyne.client.models import JobStatus

PEOPLE: list[dict[str, Any]] = [
    {
        "username": "alice",
        "display_name": "Alice A.",
        "profile_url": "https://twitter.com/alice",
        "bio": 'Data, "quotes", commas, and\na newline',
        "followers_count": 1234,
        "following_count": 56,
        "verified": True,
        "relationship_type": "follower",
        "location": "Berlin",
    },
    {
        "username": "bob",
        "display_name": "Bøb ünïcode 🚀",
        "profile_url": "https://twitter.com/bob",
        "bio": None,
        "followers_count": 0,
        "following_count": 7,
        "verified": False,
        "relationship_type": "follower",
    },
    {
        "username": "carol",
        "display_name": None,
        "profile_url": "https://twitter.com/carol",
        "relationship_type": "follower",
    },
]


def flat_items() -> list[dict[str, Any]]:
    """Items as flat profile objects, numbers as numbers."""
    return [dict(p) for p in PEOPLE]


def actor_items() -> list[dict[str, Any]]:
    """Items wrapped as ``{"relationship_type": ..., "actor": {...}}``."""
    items = []
    for person in PEOPLE:
        actor = {k: v for k, v in person.items() if k != "relationship_type"}
        items.append({"relationship_type": person["relationship_type"], "actor": actor})
    return items


def string_items() -> list[dict[str, Any]]:
    """Counts as numeric strings (with thousands separators) and ``verified`` as ``"0"``/``"1"``."""
    items = []
    for person in PEOPLE:
        item = dict(person)
        for key in ("followers_count", "following_count"):
            if key in item:
                item[key] = f"{item[key]:,}"
        if "verified" in item:
            item["verified"] = "1" if item["verified"] else "0"
        items.append(item)
    return items


SHAPES = {"flat": flat_items, "actor": actor_items, "string_counts": string_items}


def completed(
    items: list[dict[str, Any]], *, request_id: str = "req-1", list_key: str = "interactions", **extra: Any
) -> JobStatus:
    """A completed ``JobStatus`` built from a poll's ``data`` object."""
    result = {
        "interaction_type": "followers",
        "platform": "twitter",
        "target": {"username": "target_user", "profile_url": "https://twitter.com/target_user"},
        list_key: items,
        "total_count": len(items),
        **extra,
    }
    return JobStatus.from_api(
        {"request_id": request_id, "status": "completed", "completed": True, "result": result}
    )


#: The flat columns every shape must produce, per person, in order.
EXPECTED_PROFILES: list[dict[str, Any]] = [
    {
        "username": "alice",
        "display_name": "Alice A.",
        "profile_url": "https://twitter.com/alice",
        "bio": 'Data, "quotes", commas, and\na newline',
        "followers_count": 1234,
        "following_count": 56,
        "verified": True,
        "relationship_type": "follower",
        "reply_text": None,
        "reply_date": None,
    },
    {
        "username": "bob",
        "display_name": "Bøb ünïcode 🚀",
        "profile_url": "https://twitter.com/bob",
        "bio": None,
        "followers_count": 0,
        "following_count": 7,
        "verified": False,
        "relationship_type": "follower",
        "reply_text": None,
        "reply_date": None,
    },
    {
        "username": "carol",
        "display_name": None,
        "profile_url": "https://twitter.com/carol",
        "bio": None,
        "followers_count": None,
        "following_count": None,
        "verified": None,
        "relationship_type": "follower",
        "reply_text": None,
        "reply_date": None,
    },
]
