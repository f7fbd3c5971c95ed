"""Simulated jobs: how long they take, what a poll sees of them, their deterministic results."""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_nyne.testing.simulator.validation import InteractionQuery

TERMINAL_STATUSES = frozenset({"completed", "failed"})
#: Alternate result shapes a fault (or the ``variant*`` magic username) can ask for.
_VARIANT = frozenset({"actor", "string_counts", "string_verified", "results_list"})
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
    """Format a Unix time as the API's timestamps: ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(wall, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def envelope(data: Any) -> dict[str, Any]:
    """Wrap ``data`` in the API's success envelope (answers and callback payloads)."""
    return {"success": True, "data": data, "timestamp": iso(time.time())}


def stable_seed(*parts: object) -> int:
    """A seed from ``parts`` that is the same in every process and Python version (None counts as empty)."""
    digest = hashlib.sha256("|".join("" if part is None else str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def normalise_shape(shape: str | Iterable[str] | None) -> frozenset[str]:
    """Turn shape names (a name, comma-separated names or a list; ``variant`` means all) into flags."""
    names = [] if shape is None else [shape] if isinstance(shape, str) else list(shape)
    flags: set[str] = set()
    for part in (part.strip().lower() for name in names for part in str(name).split(",")):
        if part == "variant":
            flags |= _VARIANT
        elif part in _VARIANT:
            flags.add(part)
        elif part and part != "flat":
            choices = sorted(_VARIANT | {"flat", "variant"})
            raise ValueError(f"unknown result shape {part!r}; choose from {choices}")
    return frozenset(flags)


def spread_duration(median: float, sigma: float, seed: int, index: int) -> float:
    """The ``index``-th job's duration: log-normal around ``median``, the same for the same seed and index."""
    if sigma == 0 or median == 0:
        return median
    return median * math.exp(sigma * random.Random(stable_seed("job-duration", seed, index)).gauss(0.0, 1.0))


@dataclass
class Job:
    """A submitted request; its status is computed from elapsed time."""

    request_id: str
    api_key: str
    query: InteractionQuery
    created_mono: float
    created_wall: float
    duration: float
    fail_reason: str | None
    empty: bool
    shape: frozenset[str]
    intermediate_status: str
    settled: bool = False
    credits_charged: int = 0
    result: dict[str, Any] | None = None
    callback_started: bool = False
    #: Held jobs stay queued/processing (and are never charged or expired) until released.
    held: bool = False

    @property
    def end_mono(self) -> float:
        """Monotonic time at which the job reaches its terminal status (infinite while held)."""
        return math.inf if self.held else self.created_mono + self.duration

    def wall(self, mono: float) -> float:
        """Convert a ``time.monotonic()`` value to Unix time."""
        return self.created_wall + (mono - self.created_mono)

    def status(self, now: float, queued_fraction: float) -> str:
        """The status at monotonic time ``now``: ``queued`` for ``queued_fraction`` of the duration first."""
        elapsed = now - self.created_mono
        if elapsed >= self.duration and not self.held:
            return "failed" if self.fail_reason is not None else "completed"
        return "queued" if elapsed < self.duration * queued_fraction else self.intermediate_status

    def data(self, status: str, queued_fraction: float) -> dict[str, Any]:
        """The ``data`` of a status answer while the job is in ``status`` (a terminal job is settled)."""
        if status in TERMINAL_STATUSES:
            changed = self.end_mono
        else:
            changed = self.created_mono + (0 if status == "queued" else self.duration * queued_fraction)
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "status": status,
            "completed": status == "completed",
            "interaction_type": self.query.interaction_type,
            "platform": self.query.platform,
            "created_at": iso(self.created_wall),
            "updated_at": iso(self.wall(changed)),
        }
        if status in TERMINAL_STATUSES:
            data["completed_at"] = iso(self.wall(self.end_mono))
        if status == "completed":
            data["result"] = self.result
        elif status == "failed":
            data["error"] = self.fail_reason
        return data


def _profile_url(platform: str, username: str) -> str:
    return (
        f"https://www.instagram.com/{username}/" if platform == "instagram" else f"https://x.com/{username}"
    )


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _item(rng: random.Random, query: InteractionQuery, index: int) -> dict[str, Any]:
    # The draws keep their order (relationship, names, fields): the same query gives the same people.
    if query.interaction_type == "followers,following":
        relationship = rng.choice(("follower", "following"))
    else:
        relationship = "follower" if query.interaction_type == "followers" else "following"
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    username = f"{first}_{last}_{index}"
    item: dict[str, Any] = {
        "username": username,
        "display_name": f"{first.capitalize()} {last.capitalize()}",
        "profile_url": _profile_url(query.platform, username),
    }
    if query.interaction_type == "replies":
        item["reply_text"] = rng.choice(_REPLIES)
        item["reply_date"] = _date(_EPOCH + timedelta(seconds=rng.randint(0, 300 * 86_400)))
        item["reply_id"] = str(rng.randint(10**18, 10**19 - 1))
        item["like_count"] = rng.randint(0, 2_000)
        item["lang"] = "en"  # an unknown field: parsers must keep it, never drop it
        return item
    item["bio"] = f"Writing about {rng.choice(_TOPICS)} and {rng.choice(_TOPICS)}."
    item["followers_count"] = rng.randint(0, 250_000)
    item["following_count"] = rng.randint(0, 5_000)
    item["verified"] = rng.random() < 0.15
    item["relationship_type"] = relationship
    item["location"] = rng.choice(_CITIES)
    item["joined_at"] = _date(_EPOCH - timedelta(days=rng.randint(30, 5_000)))  # an unknown field too
    return item


def _apply_shape(item: dict[str, Any], is_reply: bool, flags: frozenset[str]) -> dict[str, Any]:
    if "string_counts" in flags:
        for key in ("followers_count", "following_count", "like_count"):
            if key in item:
                item[key] = str(item[key])
    if "string_verified" in flags and "verified" in item:
        item["verified"] = "1" if item["verified"] else "0"
    if "actor" not in flags:
        return item
    if is_reply:
        actor = {key: item.pop(key) for key in ("username", "display_name", "profile_url")}
        return {"relationship_type": "reply", "actor": actor, **item}
    return {"relationship_type": item.pop("relationship_type"), "actor": item}


def build_result(
    query: InteractionQuery, *, empty: bool = False, shape: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The ``data.result`` of a completed job: the same query always gives the same 15-60 people.

    :param query: the validated submission.
    :param empty: return no interactions.
    :param shape: flags from :func:`normalise_shape`.
    """
    target: dict[str, Any]
    if query.username:
        target = {"username": query.username, "profile_url": _profile_url(query.platform, query.username)}
    else:
        target = {"username": None, "profile_url": f"https://x.com/i/status/{query.tweet_id}"}
    items: list[dict[str, Any]] = []
    if not empty:
        rng = random.Random(
            stable_seed(
                query.platform, query.interaction_type, query.username, query.tweet_id, query.max_results
            )
        )
        size = 15 + stable_seed(query.platform, query.username, query.tweet_id) % 46
        is_reply = query.interaction_type == "replies"
        items = [
            _apply_shape(_item(rng, query, index), is_reply, shape)
            for index in range(min(query.max_results, size))
        ]
    return {
        "interaction_type": query.interaction_type,
        "platform": query.platform,
        "target": target,
        "results" if "results_list" in shape else "interactions": items,
        "total_count": len(items),
    }
