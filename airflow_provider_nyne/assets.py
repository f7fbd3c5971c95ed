"""The provider's Assets: the ``nyne://`` URI scheme, and the events the transfers record.

**The scheme.** A ``nyne://`` URI names one lookup of the Social Interactions API, the
dataset Nyne holds:

* ``nyne://interactions/<platform>/<username>/<type>``: the people an account interacts
  with, e.g. ``nyne://interactions/twitter/nasa/followers`` (``platform`` is ``twitter`` or
  ``instagram``; ``type`` is ``followers``, ``following`` or ``followers,following``);
* ``nyne://interactions/twitter/tweet/<tweet_id>/replies``: the replies to one tweet.

Platform and user name are case-insensitive and written in lower case. Every rule of the
scheme lives here: the callback receiver records its events on these URIs
(:mod:`airflow_provider_nyne.callbacks.assets`), callback URLs may name them
(:mod:`airflow_provider_nyne.callbacks.tokens`), and the transfers report them to
OpenLineage as their input. Airflow learns the scheme from the provider info
(``asset-uris``): :func:`sanitize_uri` normalises every ``nyne://`` URI an ``Asset`` is built
with and rejects a malformed one (the DAG file then fails to import with the reason),
:func:`convert_asset_to_openlineage` turns such an Asset into the OpenLineage dataset
``nyne`` / ``interactions/<platform>/...``, and :func:`create_asset` builds one from request
fields.

**Landed files.** The transfer operators record an event on their output Asset each time
they land a result; :func:`landed_files_from_asset_events` reads those events back in a DAG
scheduled on that Asset.

Airflow's providers manager imports this module in every process that normalises an Asset
URI, so it imports only the standard library at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

if TYPE_CHECKING:
    from airflow.sdk import Asset, ObjectStoragePath

    from airflow_provider_nyne.client.models import InteractionsResult
    from airflow_provider_nyne.client.request import InteractionRequest

__all__ = [
    "ASSET_SCHEME",
    "LANDED_EVENT_SOURCE",
    "OPENLINEAGE_NAMESPACE",
    "LandedFile",
    "asset_matches",
    "convert_asset_to_openlineage",
    "create_asset",
    "interactions_asset",
    "interactions_asset_uri",
    "interactions_asset_uri_of_result",
    "is_nyne_uri",
    "landed_event_extra",
    "landed_files_from_asset_events",
    "openlineage_dataset",
    "parse_interactions_asset_uri",
    "sanitize_uri",
    "triggering_event_extras",
]

#: Scheme of the provider's own Assets.
ASSET_SCHEME = "nyne"
#: The only authority of the scheme today: Social Interactions lookups.
_INTERACTIONS = "interactions"
#: OpenLineage namespace of the lookups (the dataset name is the URI without ``nyne://``).
OPENLINEAGE_NAMESPACE = "nyne"
#: ``extra["source"]`` of the Asset events the transfer operators record.
LANDED_EVENT_SOURCE = "nyne_transfer"

_SHAPES = (
    "nyne://interactions/<platform>/<username>/<type> (platform twitter or instagram; type "
    "followers, following or followers,following) or nyne://interactions/twitter/tweet/<tweet_id>/replies"
)


def is_nyne_uri(uri: object) -> bool:
    """
    Whether ``uri`` is in the provider's own scheme (as Airflow stores it: scheme in lower case).

    :param uri: an Asset URI
    """
    return str(uri).startswith(f"{ASSET_SCHEME}://")


def interactions_asset_uri(request: InteractionRequest) -> str:
    """
    The ``nyne://`` URI of a lookup: ``nyne://interactions/<platform>/<username>/<type>``, or
    ``nyne://interactions/twitter/tweet/<tweet_id>/replies`` for replies.

    Already normal: :func:`sanitize_uri` leaves it unchanged.

    :param request: a validated request
    """
    if request.interaction_type == "replies":
        subject = f"tweet/{request.tweet_id}"
    else:
        subject = quote(str(request.username or "").lower(), safe="")
    kind = quote(request.interaction_type, safe=",")
    return f"{ASSET_SCHEME}://{_INTERACTIONS}/{request.platform}/{subject}/{kind}"


def _malformed(uri: str, reason: str) -> ValueError:
    return ValueError(f"{uri!r} is not a valid {ASSET_SCHEME}:// Asset URI: {reason}. Use {_SHAPES}")


def parse_interactions_asset_uri(uri: str) -> InteractionRequest:
    """
    The lookup a ``nyne://`` URI names, validated by the same rules as a submission.

    :param uri: e.g. ``nyne://interactions/twitter/NASA/followers``
    :raises ValueError: when the URI is not one of the two shapes of the scheme, naming what is wrong
    """
    from airflow_provider_nyne.client.errors import NyneValidationError
    from airflow_provider_nyne.client.request import InteractionRequest

    text = str(uri)
    parts = urlsplit(text)
    if parts.scheme.lower() != ASSET_SCHEME:
        raise _malformed(text, f"the scheme is {parts.scheme!r}, not {ASSET_SCHEME!r}")
    if parts.netloc.lower() != _INTERACTIONS:
        raise _malformed(text, f"the host is {parts.netloc!r}, not {_INTERACTIONS!r}")
    if parts.query or parts.fragment:
        raise _malformed(text, "it takes no query or fragment")
    segments = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if not segments:
        raise _malformed(text, "the path names no lookup")
    platform = segments[0].strip().lower()
    if platform not in ("twitter", "instagram"):
        raise _malformed(text, f"platform {segments[0]!r} is not twitter or instagram")
    kind = segments[-1]
    try:
        if len(segments) == 4 and segments[1].lower() == "tweet":
            if platform != "twitter" or kind.strip().lower() != "replies":
                raise _malformed(text, "only Twitter/X replies are looked up by tweet")
            # A status URL without its author names the tweet: the same rule as a submission's.
            return InteractionRequest(
                interaction_type="replies",
                tweet_id=segments[2],
                social_media_url=f"https://x.com/i/status/{segments[2]}",
            )
        if len(segments) != 3:
            raise _malformed(text, f"expected 3 path segments after the host, found {len(segments)}")
        if kind.strip().lower() == "replies":
            raise _malformed(text, "replies are looked up by tweet, not by account")
        return InteractionRequest(interaction_type=kind, platform=platform, username=segments[1])  # type: ignore[arg-type]
    except NyneValidationError as err:
        raise _malformed(text, str(err)) from None


def sanitize_uri(parts: SplitResult) -> SplitResult:
    """
    Airflow's URI handler of the ``nyne`` scheme (provider info ``asset-uris``).

    Airflow calls it with the URI split (scheme already in lower case, trailing slashes and
    fragment dropped) whenever an ``Asset`` is built with a ``nyne://`` URI.

    :param parts: the split URI
    :raises ValueError: when the URI is malformed (Airflow shows the message as the DAG's import error)
    """
    from urllib.parse import urlunsplit

    return urlsplit(interactions_asset_uri(parse_interactions_asset_uri(urlunsplit(parts))))


def openlineage_dataset(uri: str) -> Any:
    """
    The OpenLineage dataset of a ``nyne://`` URI: namespace ``nyne``, name ``interactions/<platform>/...``.

    Needs the OpenLineage provider (imported here, not with this module).

    :param uri: a ``nyne://`` URI
    :raises ValueError: when the URI is malformed
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset

    normal = interactions_asset_uri(parse_interactions_asset_uri(uri))
    return Dataset(namespace=OPENLINEAGE_NAMESPACE, name=normal[len(f"{ASSET_SCHEME}://") :])


def convert_asset_to_openlineage(asset: Asset, lineage_context: Any = None) -> Any:
    """
    Airflow's OpenLineage converter of the ``nyne`` scheme (provider info ``asset-uris``).

    :param asset: an Asset with a ``nyne://`` URI
    :param lineage_context: what the OpenLineage provider passes along (unused)
    """
    return openlineage_dataset(asset.uri)


def interactions_asset(social_media_url: str | None = None, type: str | None = None, **fields: Any) -> Asset:
    """
    The ``nyne://`` ``Asset`` of a lookup, for ``schedule=[...]`` of a downstream DAG.

    Takes the submit operator's request fields (aliases accepted); pure validation, no I/O,
    so it is safe at DAG-parse time.

    :param social_media_url: profile or status URL (or pass ``username``/``tweet_id``/``platform``)
    :param type: ``followers``, ``following``, ``followers,following`` or ``replies``
    :param fields: other request fields (``username``, ``tweet_id``, ``platform``, ``interaction_type``, ...)
    """
    from airflow.sdk import Asset

    from airflow_provider_nyne.client.request import InteractionRequest

    request = InteractionRequest.create(social_media_url, type, **fields)
    return Asset(uri=interactions_asset_uri(request))


def create_asset(*, extra: dict[str, Any] | None = None, **fields: Any) -> Asset:
    """
    Airflow's Asset factory of the ``nyne`` scheme (provider info ``asset-uris``).

    :param extra: the Asset's ``extra``
    :param fields: request fields, as for :func:`interactions_asset`
    """
    from airflow.sdk import Asset

    return Asset(uri=interactions_asset(**fields).uri, extra=extra)


def interactions_asset_uri_of_result(result: InteractionsResult) -> str | None:
    """
    The ``nyne://`` URI of the lookup a completed result answers, when the result says enough.

    ``None`` when it does not: a replies result names its tweet only when its target's
    ``profile_url`` is the status URL (or it carries a ``tweet_id``), and a result without
    ``platform`` names it through the target's ``profile_url``.

    :param result: the parsed ``data.result``
    """
    from airflow_provider_nyne.client.errors import NyneValidationError
    from airflow_provider_nyne.client.request import InteractionRequest

    try:
        if result.interaction_type == "replies":
            target = result.raw.get("target")
            target = target if isinstance(target, Mapping) else {}
            tweet_id = result.raw.get("tweet_id") or target.get("tweet_id")
            url = result.target_profile_url if tweet_id is None else None
            request = InteractionRequest.create(
                social_media_url=url,
                type="replies",
                tweet_id=tweet_id,
                username=result.target_username,
            )
        elif result.platform or result.target_profile_url:
            # Without a platform, the target's profile URL says which it is.
            request = InteractionRequest.create(
                social_media_url=None if result.platform else result.target_profile_url,
                type=result.interaction_type,
                platform=result.platform,
                username=result.target_username,
            )
        else:
            return None
    except NyneValidationError:
        return None
    return interactions_asset_uri(request)


# Events -------------------------------------------------------------------------------------


def asset_matches(asset_key: Any, asset: Any) -> bool:
    """
    Whether an event's Asset key is ``asset`` (an ``Asset``, or its URI or name); ``None`` matches all.

    :param asset_key: a key of ``triggering_asset_events``
    :param asset: what to match
    """
    if asset is None:
        return True
    if isinstance(asset, str):
        from airflow.sdk import Asset

        wanted: set[str] = {asset}
        if "://" in asset:
            wanted.add(Asset(uri=asset).uri)  # as Airflow normalises it
    else:
        wanted = {str(v) for v in (getattr(asset, "uri", None), getattr(asset, "name", None)) if v}
    return bool(wanted & {getattr(asset_key, "uri", None), getattr(asset_key, "name", None)})


def triggering_event_extras(
    context: Mapping[str, Any], *, source: str, asset: Any = None
) -> list[tuple[Any, Any, dict[str, Any]]]:
    """
    ``(asset key, event, extra)`` of the Asset events from ``source`` that triggered this DAG run, oldest first.

    :param context: the task's Airflow context
    :param source: ``extra["source"]`` of the events wanted
    :param asset: only events of this Asset (an ``Asset`` or its URI/name); default: all
    """
    found: list[tuple[Any, Any, dict[str, Any]]] = []
    events = context.get("triggering_asset_events") or {}
    for key, asset_events in events.items():
        if not asset_matches(key, asset):
            continue
        for event in asset_events:
            extra = dict(getattr(event, "extra", None) or {})
            if extra.get("source") == source:
                found.append((key, event, extra))
    # Events without a timestamp (none from Airflow itself) go last, in the order given.
    found.sort(key=lambda item: _timestamp_key(item[1]))
    return found


def _timestamp_key(event: Any) -> tuple[bool, Any]:
    when = getattr(event, "timestamp", None)
    return (True, 0) if when is None else (False, when)


def landed_event_extra(
    destination: ObjectStoragePath | str, *, request_id: str, records: int, format: str
) -> dict[str, Any]:
    """
    The ``extra`` of the Asset event a transfer records when it lands a result.

    :param destination: the object written (its URL names the storage connection, if any)
    :param request_id: the Nyne request whose result it holds
    :param records: how many records it holds
    :param format: its format
    """
    file = urlsplit(str(destination))
    if file.password is not None:
        # Only a connection id belongs before the host; a password pasted into a path is dropped.
        file = file._replace(netloc=f"{file.username or ''}@{file.netloc.rpartition('@')[2]}")
    return {
        "source": LANDED_EVENT_SOURCE,
        "file": file.geturl(),
        "request_id": request_id,
        "records": records,
        "format": format,
    }


@dataclass(frozen=True)
class LandedFile:
    """
    One file a transfer landed, as its Asset event describes it.

    :param file: the object's URL as ``ObjectStoragePath`` spells it (storage connection id included)
    :param request_id: the Nyne request whose result it holds
    :param records: how many records it holds
    :param format: ``jsonl``, ``json``, ``csv`` or ``parquet``
    :param asset_uri: the Asset the event was recorded on
    :param timestamp: when the event was recorded
    """

    file: str
    request_id: str
    records: int
    format: str
    asset_uri: str | None = None
    timestamp: Any = field(default=None, compare=False)

    def path(self, conn_id: str | None = None) -> ObjectStoragePath:
        """
        The file as an ``ObjectStoragePath``, ready to open.

        :param conn_id: read it through this storage connection instead of the one it was written with
        """
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.file, conn_id=conn_id) if conn_id else ObjectStoragePath(self.file)


def landed_files_from_asset_events(context: Mapping[str, Any], asset: Any = None) -> list[LandedFile]:
    """
    The files landed by the transfer events that triggered this DAG run, oldest first.

    In a DAG scheduled on a transfer's output Asset::

        @task
        def count(**context):
            for landed in landed_files_from_asset_events(context):
                with landed.path().open() as f:
                    ...

    :param context: the task's Airflow context
    :param asset: only events of this Asset (an ``Asset`` or its URI/name); default: all
    """
    found: list[LandedFile] = []
    for key, event, extra in triggering_event_extras(context, source=LANDED_EVENT_SOURCE, asset=asset):
        if not extra.get("file"):
            continue
        found.append(
            LandedFile(
                file=str(extra["file"]),
                request_id=str(extra.get("request_id") or ""),
                records=int(extra.get("records") or 0),
                format=str(extra.get("format") or ""),
                asset_uri=getattr(key, "uri", None),
                timestamp=getattr(event, "timestamp", None),
            )
        )
    return found
