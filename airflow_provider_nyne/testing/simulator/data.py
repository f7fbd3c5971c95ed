"""What the simulator answers with: deterministic synthetic results and timestamps."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_nyne.testing.simulator.validation import InteractionQuery

__all__ = [
    "RESULT_SHAPES",
    "build_result",
    "iso",
    "normalise_shape",
    "profile_url",
    "stable_seed",
    "target_size",
]

#: Alternate result shapes a fault (or the ``variant*`` magic username) can ask for.
RESULT_SHAPES = frozenset({"flat", "actor", "string_counts", "string_verified", "results_list"})
_VARIANT = frozenset({"actor", "string_counts", "string_verified", "results_list"})

_MIN_TARGET_SIZE = 15
_MAX_TARGET_SIZE = 60
_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)

_FIRST = (
    "ada", "alan", "grace", "linus", "margaret", "ken", "barbara", "dennis", "frances", "edsger",
    "radia", "guido", "hedy", "tim", "katherine", "donald", "sophie", "john", "anita", "vint",
)  # fmt: skip
_LAST = (
    "lovelace", "turing", "hopper", "torvalds", "hamilton", "thompson", "liskov", "ritchie", "allen",
    "dijkstra", "perlman", "rossum", "lamarr", "berners", "johnson", "knuth", "wilson", "backus",
    "borg", "cerf",
)  # fmt: skip
_TOPICS = (
    "data pipelines", "open source", "distributed systems", "coffee", "climbing", "jazz", "typography",
    "machine learning", "urban cycling", "sourdough", "astronomy", "chess",
)  # fmt: skip
_CITIES = (
    "Lisbon", "Nairobi", "Montreal", "Osaka", "Berlin", "Austin", "Sao Paulo", "Melbourne", "Oslo", "Pune",
)  # fmt: skip
_REPLIES = (
    "Great thread, thanks for sharing!", "I disagree with the second point.", "Saving this for later.",
    "Do you have a source for that?", "This is exactly what I needed today.", "Ha, so true.",
    "Could you expand on the last part?", "Following for updates.",
)  # fmt: skip


def iso(wall: float) -> str:
    """Format a Unix time as ISO 8601 UTC with milliseconds (the API's timestamps).

    :param wall: a Unix time.
    """
    moment = datetime.fromtimestamp(wall, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stable_seed(*parts: object) -> int:
    """Return a seed from ``parts`` that is the same in every process and Python version.

    :param parts: values whose string forms make the seed (None counts as empty).
    """
    digest = hashlib.sha256("|".join("" if part is None else str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def normalise_shape(shape: str | Iterable[str] | None) -> frozenset[str]:
    """Turn a shape name or list of names into a set of variant flags (``variant`` means all).

    :param shape: a name, comma-separated names, a list of them, or None (the flat shape).
    """
    if shape is None:
        return frozenset()
    names = [shape] if isinstance(shape, str) else list(shape)
    flags: set[str] = set()
    for name in names:
        for part in str(name).split(","):
            key = part.strip().lower()
            if not key or key == "flat":
                continue
            if key == "variant":
                flags |= _VARIANT
            elif key in _VARIANT:
                flags.add(key)
            else:
                raise ValueError(
                    f"unknown result shape {key!r}; choose from {sorted(RESULT_SHAPES | {'variant'})}"
                )
    return frozenset(flags)


def profile_url(platform: str, username: str) -> str:
    """Return the public profile URL of ``username`` on ``platform``.

    :param platform: ``twitter`` or ``instagram``.
    :param username: the profile's username.
    """
    if platform == "instagram":
        return f"https://www.instagram.com/{username}/"
    return f"https://x.com/{username}"


def target_size(query: InteractionQuery) -> int:
    """Return how many people the target has for this lookup (before ``max_results``).

    :param query: the validated submission.
    """
    span = _MAX_TARGET_SIZE - _MIN_TARGET_SIZE + 1
    return _MIN_TARGET_SIZE + stable_seed(query.platform, query.username, query.tweet_id) % span


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _person(rng: random.Random, platform: str, index: int) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    username = f"{first}_{last}_{index}"
    return {
        "username": username,
        "display_name": f"{first.capitalize()} {last.capitalize()}",
        "profile_url": profile_url(platform, username),
    }


def _profile_item(rng: random.Random, platform: str, index: int, relationship: str) -> dict[str, Any]:
    item = _person(rng, platform, index)
    item.update(
        {
            "bio": f"Writing about {rng.choice(_TOPICS)} and {rng.choice(_TOPICS)}.",
            "followers_count": rng.randint(0, 250_000),
            "following_count": rng.randint(0, 5_000),
            "verified": rng.random() < 0.15,
            "relationship_type": relationship,
            "location": rng.choice(_CITIES),
            # An unknown field: parsers must keep it, never drop it.
            "joined_at": _iso(_EPOCH - timedelta(days=rng.randint(30, 5_000))),
        },
    )
    return item


def _reply_item(rng: random.Random, platform: str, index: int) -> dict[str, Any]:
    item = _person(rng, platform, index)
    item.update(
        {
            "reply_text": rng.choice(_REPLIES),
            "reply_date": _iso(_EPOCH + timedelta(seconds=rng.randint(0, 300 * 86_400))),
            "reply_id": str(rng.randint(10**18, 10**19 - 1)),
            "like_count": rng.randint(0, 2_000),
            # An unknown field: parsers must keep it, never drop it.
            "lang": "en",
        },
    )
    return item


def _apply_shape(item: dict[str, Any], is_reply: bool, flags: frozenset[str]) -> dict[str, Any]:
    if "string_counts" in flags:
        for key in ("followers_count", "following_count", "like_count"):
            if key in item:
                item[key] = str(item[key])
    if "string_verified" in flags and "verified" in item:
        item["verified"] = "1" if item["verified"] else "0"
    if "actor" in flags:
        if is_reply:
            actor_keys = ("username", "display_name", "profile_url")
            actor = {key: item.pop(key) for key in actor_keys}
            return {"relationship_type": "reply", "actor": actor, **item}
        relationship = item.pop("relationship_type")
        return {"relationship_type": relationship, "actor": item}
    return item


def build_result(
    query: InteractionQuery, *, empty: bool = False, shape: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Build the ``data.result`` object of a completed job.

    The same (platform, type, username, tweet id, max_results) always gives the same people.

    :param query: the validated submission.
    :param empty: return no interactions.
    :param shape: variant flags from :func:`normalise_shape`.
    """
    target: dict[str, Any]
    if query.username:
        target = {"username": query.username, "profile_url": profile_url(query.platform, query.username)}
    else:
        target = {"username": None, "profile_url": f"https://x.com/i/status/{query.tweet_id}"}
    items: list[dict[str, Any]] = []
    if not empty:
        rng = random.Random(
            stable_seed(
                query.platform, query.interaction_type, query.username, query.tweet_id, query.max_results
            ),
        )
        count = min(query.max_results, target_size(query))
        is_reply = query.interaction_type == "replies"
        for index in range(count):
            if is_reply:
                item = _reply_item(rng, query.platform, index)
            else:
                if query.interaction_type == "followers,following":
                    relationship = rng.choice(("follower", "following"))
                elif query.interaction_type == "followers":
                    relationship = "follower"
                else:
                    relationship = "following"
                item = _profile_item(rng, query.platform, index, relationship)
            items.append(_apply_shape(item, is_reply, shape))
    list_key = "results" if "results_list" in shape else "interactions"
    return {
        "interaction_type": query.interaction_type,
        "platform": query.platform,
        "target": target,
        list_key: items,
        "total_count": len(items),
    }
