"""Tolerant parsing of Social Interactions responses.

Public samples of the API disagree on the item shape, so the parser accepts all of them:
flat items; items wrapped as ``{"relationship_type": ..., "actor": {...}}``; counts as
numbers or numeric strings; ``verified`` as a bool or ``"0"``/``"1"``; a ``results[]`` list
instead of ``interactions[]``. Unknown fields are kept (``Interaction.extra`` and
``Interaction.raw``), never dropped.

Parsing is lazy where it matters: :class:`JobStatus` decides the state from two keys and only
builds :class:`Interaction` objects when :attr:`JobStatus.result` is read, so that a poll
that only needs to know "still running?" stays cheap.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow_provider_nyne.client.errors import NyneResponseError


class JobState(str, enum.Enum):
    """The state of an asynchronous interactions job, as ``data.status`` reports it."""

    QUEUED = "queued"
    PROCESSING = "processing"
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    #: A status string this client does not know; treated as still running.
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> JobState:
        """Map the API's status string to a state; unknown strings give :attr:`UNKNOWN`."""
        if isinstance(value, str):
            member = _STATES.get(value.strip().lower())
            if member is not None:
                return member
        return cls.UNKNOWN

    def is_terminal(self) -> bool:
        """Whether the job will not change state any more."""
        return self in (JobState.COMPLETED, JobState.FAILED)


_STATES = {s.value: s for s in JobState if s is not JobState.UNKNOWN}

#: Columns every :class:`Interaction` exposes as attributes (the rest stays in ``extra``).
PROFILE_FIELDS = (
    "username",
    "display_name",
    "profile_url",
    "bio",
    "followers_count",
    "following_count",
    "verified",
    "relationship_type",
    "reply_text",
    "reply_date",
)
_INT_FIELDS = frozenset({"followers_count", "following_count"})
_TRUE = frozenset({"1", "true", "yes", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "n", "f", ""})


def parse_count(value: object) -> int | None:
    """An integer count from a number or numeric string (``"1234"``, ``"1,234"``); ``None`` if unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        if text.lstrip("+-").isdigit():
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    return None


def parse_bool(value: object) -> bool | None:
    """A bool from ``True``/``False``, ``0``/``1`` or ``"0"``/``"1"``/``"true"``; ``None`` if unknown."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


@dataclass(frozen=True)
class Interaction:
    """
    One person the target interacts with: a follower, a followed account, or a replier.

    :param username: the person's handle, without ``@``
    :param display_name: their display name
    :param profile_url: link to their profile
    :param bio: profile description
    :param followers_count: how many follow them
    :param following_count: how many they follow
    :param verified: whether the platform verified them
    :param relationship_type: ``follower``/``following`` where the API says
    :param reply_text: text of the reply (replies only)
    :param reply_date: date of the reply as the API gave it (replies only)
    :param extra: every other field of the item, untouched
    :param raw: the item exactly as the API sent it
    """

    username: str | None = None
    display_name: str | None = None
    profile_url: str | None = None
    bio: str | None = None
    followers_count: int | None = None
    following_count: int | None = None
    verified: bool | None = None
    relationship_type: str | None = None
    reply_text: str | None = None
    reply_date: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Interaction:
        """Parse one item of ``interactions[]``/``results[]`` in any documented shape."""
        if not isinstance(item, Mapping):
            raise NyneResponseError(f"interaction item is a {type(item).__name__}, expected an object")
        flat: dict[str, Any] = {}
        actor = item.get("actor")
        if isinstance(actor, Mapping):
            # Wrapped shape: profile under "actor", relationship beside it.
            flat.update(actor)
            for key, value in item.items():
                if key != "actor":
                    flat.setdefault(key, value)
        else:
            flat.update(item)
        if "username" in flat and isinstance(flat["username"], str):
            flat["username"] = flat["username"].lstrip("@")
        values: dict[str, Any] = {}
        for name in PROFILE_FIELDS:
            if name not in flat:
                continue
            value = flat.pop(name)
            if name in _INT_FIELDS:
                values[name] = parse_count(value)
            elif name == "verified":
                values[name] = parse_bool(value)
            else:
                values[name] = None if value is None else str(value)
        return cls(**values, extra=flat, raw=item)

    def to_record(self) -> dict[str, Any]:
        """The stable profile columns as a plain dict (``extra`` and ``raw`` not included)."""
        return {name: getattr(self, name) for name in PROFILE_FIELDS}


@dataclass(frozen=True)
class InteractionsResult:
    """
    The result of a completed job: who the target interacts with.

    :param interaction_type: ``replies``, ``followers``, ``following`` or ``followers,following``
    :param platform: ``twitter`` or ``instagram``
    :param target_username: the account looked up
    :param target_profile_url: its profile URL
    :param interactions: the people, parsed
    :param total_count: what the API reports as the total (defaults to the number of items)
    :param raw: the ``data.result`` object exactly as sent
    """

    interaction_type: str | None
    platform: str | None
    target_username: str | None
    target_profile_url: str | None
    interactions: tuple[Interaction, ...]
    total_count: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, result: Mapping[str, Any]) -> InteractionsResult:
        """Parse ``data.result`` in any documented shape."""
        if not isinstance(result, Mapping):
            raise NyneResponseError(f"result is a {type(result).__name__}, expected an object")
        items = raw_items(result)
        target = result.get("target")
        target = target if isinstance(target, Mapping) else {}
        parsed = tuple(Interaction.from_api(item) for item in items)
        total = parse_count(result.get("total_count"))
        username = target.get("username")
        return cls(
            interaction_type=_opt_str(result.get("interaction_type") or result.get("type")),
            platform=_opt_str(result.get("platform")),
            target_username=username.lstrip("@") if isinstance(username, str) else None,
            target_profile_url=_opt_str(target.get("profile_url")),
            interactions=parsed,
            total_count=total if total is not None else len(parsed),
            raw=result,
        )

    def __iter__(self) -> Iterator[Interaction]:
        return iter(self.interactions)

    def __len__(self) -> int:
        return len(self.interactions)


def raw_items(result: Mapping[str, Any]) -> list[Any]:
    """The item list of a result, whichever key (``interactions`` or ``results``) holds it."""
    for key in ("interactions", "results"):
        items = result.get(key)
        if isinstance(items, list):
            return items
    return []


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class JobStatus:
    """
    What a status poll says about a request.

    :param request_id: the request polled
    :param state: the job state
    :param error: the API's reason when the job failed
    :param data: the ``data`` object exactly as sent
    """

    request_id: str
    state: JobState
    error: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any], request_id: str | None = None) -> JobStatus:
        """Read a poll's ``data`` object; only the keys that decide the state are parsed here."""
        if not isinstance(data, Mapping):
            raise NyneResponseError(f"status data is a {type(data).__name__}, expected an object")
        state = JobState.parse(data.get("status"))
        if state is JobState.UNKNOWN and parse_bool(data.get("completed")) is True:
            state = JobState.COMPLETED
        error = data.get("error")
        if isinstance(error, Mapping):
            error = error.get("message") or error.get("code") or (dict(error) or None)
        if state is JobState.UNKNOWN and data.get("status") is None and error:
            # No status at all but a reason: the job failed (polling on would never end).
            state = JobState.FAILED
        rid = data.get("request_id") or request_id or ""
        return cls(request_id=str(rid), state=state, error=None if error is None else str(error), data=data)

    @property
    def is_terminal(self) -> bool:
        """Whether the job has finished, successfully or not."""
        return self.state.is_terminal()

    @property
    def status(self) -> str:
        """The state as the API's string (``completed``, ``failed``, ...)."""
        return self.state.value

    @property
    def total_count(self) -> int | None:
        """The result's total count, read without parsing the items (``None`` until completed)."""
        result = self.data.get("result")
        if not isinstance(result, Mapping):
            return None
        total = parse_count(result.get("total_count"))
        return total if total is not None else len(raw_items(result))

    @cached_property
    def result(self) -> InteractionsResult | None:
        """The parsed result when the job completed, else ``None``."""
        result = self.data.get("result")
        if self.state is not JobState.COMPLETED or not isinstance(result, Mapping):
            return None
        return InteractionsResult.from_api(result)
