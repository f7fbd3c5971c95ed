"""One reading of every URL the provider checks or sends: the one HTTP clients will act on.

A URL that two parsers read differently is a URL whose check proves nothing: Python's
``urlsplit`` reads ``http://127.0.0.1:8080\\@hooks.example.com/cb`` as a request to
``hooks.example.com``, while urllib3 and WHATWG parsers (Node's ``fetch``, browsers) connect
to ``127.0.0.1``. So this module does not try to guess which reading the receiving side will
use; it refuses every form on which httpx, urllib3 and WHATWG disagree, and writes what it
accepts in one normalised form that they all read the same way:

* refused anywhere: backslashes (``\\`` is ``/`` for WHATWG, part of the authority for
  ``urlsplit``), control characters, whitespace and invisible format characters (WHATWG and
  ``urlsplit`` silently drop tabs and newlines, others keep or refuse them), and ``%`` not
  followed by two hex digits;
* refused in the authority: a user name or password (``@`` before the host; never echoed in
  an error), a percent-encoded host (WHATWG decodes it, others do not), IPv4 addresses in any
  form but dotted decimal (``2130706433``, ``0177.0.0.1`` and ``0x7f.1`` are ``127.0.0.1``
  to WHATWG and to ``getaddrinfo``, a name to a host check), empty labels, IPv6 zone ids;
* refused in the path: ``.``/``..`` segments, plain or percent-encoded (clients resolve them
  away: ``https://x.com/evil/../nasa`` asks for ``/nasa``), and percent-encoded control
  characters, whitespace or backslashes;
* normalised: scheme and host in lower case, international host names in their ASCII
  (IDNA) form (refused when WHATWG's mapping and httpx's encoding differ, e.g. full-width
  letters), one trailing dot removed, the scheme's default port dropped.

Pure Python; no Airflow. Errors are :class:`~airflow_provider_nyne.client.errors.NyneValidationError`
naming the field and the fix.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from airflow_provider_nyne.client.errors import NyneValidationError

DEFAULT_PORTS = {"http": 80, "https": 443}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HTTP_WITHOUT_SLASHES = re.compile(r"^https?:(?!//)", re.IGNORECASE)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
_DOT_SEGMENTS = frozenset({".", ".."})
# Unicode categories that are invisible or break lines: controls, format characters (zero
# width, bidi marks), separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _fail(field: str, message: str) -> NyneValidationError:
    return NyneValidationError(f"{field}: {message}", field=field)


def shown(text: str) -> str:
    """
    ``repr()`` of a URL for an error message, with any user name or password replaced by ``***``.

    The authority is read generously (up to the first ``/``, ``?`` or ``#``, backslashes
    included) so that whatever any parser could take for credentials is hidden.

    :param text: the URL as given
    """
    scheme = _SCHEME.match(text)
    start = scheme.end() if scheme else 0
    at = _split_authority(text[start:])[0].rfind("@")
    if at >= 0:
        text = f"{text[:start]}***{text[start + at :]}"
    return repr(text)


@dataclass(frozen=True)
class HttpURL:
    """
    An http(s) URL as every HTTP client reads it.

    :param scheme: ``http`` or ``https``
    :param host: lower case, IDNA (``xn--``) form, no trailing dot; an IPv6 address without brackets
    :param port: an explicit port other than the scheme's default, else ``None``
    :param path: as given (``""`` or starting with ``/``)
    :param query: the part after ``?`` (``None`` when there is no ``?``)
    :param fragment: the part after ``#`` (``None`` when there is no ``#``)
    """

    scheme: str
    host: str
    port: int | None = None
    path: str = ""
    query: str | None = None
    fragment: str | None = None

    @property
    def netloc(self) -> str:
        """``host[:port]``, with an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The normalised URL: what is sent, and what was checked."""
        text = f"{self.scheme}://{self.netloc}{self.path}"
        if self.query is not None:
            text += f"?{self.query}"
        if self.fragment is not None:
            text += f"#{self.fragment}"
        return text

    def __str__(self) -> str:
        return self.url


def parse_http_url(value: object, *, field: str, default_scheme: str | None = None) -> HttpURL:
    """
    Read an http(s) URL the way HTTP clients will, refusing every form they read differently.

    Leading and trailing whitespace is removed (the normalised URL is what gets sent).

    :param value: the URL
    :param field: the field named in errors (``social_media_url``, ``callback_url``, ...)
    :param default_scheme: scheme assumed when the URL has none (``None``: the URL must be absolute)
    :raises NyneValidationError: naming ``field`` and the fix; never showing a user name or password
    """
    if not isinstance(value, str) or not value.strip():
        raise _fail(field, "must be a non-empty http(s) URL")
    text = value.strip()
    return _parse(text, field, default_scheme, shown(text))


def _parse(text: str, field: str, default_scheme: str | None, display: str) -> HttpURL:
    """:func:`parse_http_url` of stripped text; ``display`` is how errors show the URL."""
    _check_characters(text, field, display)
    match = _SCHEME.match(text)
    if match:
        scheme, rest = match.group(1).lower(), text[match.end() :]
    elif _HTTP_WITHOUT_SLASHES.match(text):
        # WHATWG reads "https:x.com/a" and "https:/x.com/a" as https://x.com/a; others do not.
        raise _fail(field, f"{display} must be written with '//' after the scheme, e.g. https://host/path")
    elif default_scheme is None or text.startswith("/"):
        raise _fail(field, f"{display} must be an absolute http:// or https:// URL")
    else:
        scheme, rest = default_scheme, text
    if scheme not in DEFAULT_PORTS:
        raise _fail(field, f"{display} must use http or https, not {scheme!r}")

    authority, tail = _split_authority(rest)
    if "@" in authority:
        # Nothing of the URL is shown: what precedes '@' is a user name or password.
        raise _fail(
            field,
            "must not contain a user name or password (an '@' before the host): HTTP clients disagree "
            "on where such a URL goes; remove everything between '//' and '@'",
        )
    host_text, port_text = _split_port(authority, field, display)
    host = normalize_host(host_text, field=field, display=display)
    port = _port(port_text, scheme, field, display)

    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    _check_path(path, field, display)
    for part in (query, fragment):
        # An encoded space is ordinary in a query; an encoded line break is not.
        if any(unicodedata.category(c) == "Cc" for c in _decoded(part)):
            raise _fail(field, f"{display} contains a percent-encoded control character; remove it")
    return HttpURL(scheme, host, port, path, query if question else None, fragment if hash_ else None)


def normalize_host(text: str, *, field: str, display: str | None = None) -> str:
    """
    A host name or address in the form clients connect to: lower case, IDNA, no trailing dot.

    :param text: the host, e.g. ``Hooks.Example.com.``, ``bücher.example``, ``[::1]``, ``127.0.0.1``
    :param field: the field named in errors
    :param display: how to show the whole URL in errors (the host alone by default)
    :raises NyneValidationError: for a host HTTP clients would read differently, or not at all
    """
    where = display if display is not None else repr(text)
    if not text:
        raise _fail(field, f"{where} has no host; write it as http(s)://host/...")
    if text.startswith("["):
        if not text.endswith("]"):
            raise _fail(field, f"{where} has an IPv6 address without its closing ']'")
        inner = text[1:-1]
        if "%" in inner:
            raise _fail(
                field, f"{where} has an IPv6 zone id ('%'), which HTTP clients do not accept; remove it"
            )
        try:
            return ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise _fail(field, f"{where} has an invalid IPv6 address [{inner}]") from None
    if ":" in text:
        raise _fail(field, f"{where}: write an IPv6 address in brackets, e.g. http://[::1]:8080/")
    if "%" in text:
        raise _fail(
            field,
            f"{where} has a percent-encoded host, which some clients decode and others do not; "
            "write the host name plainly",
        )
    name = text if text.isascii() else _idna(text, field, where)
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]  # "x.com." is x.com to DNS and every client
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        return _ipv4(name, field, where)
    if len(name) > 253 or not all(_LABEL.match(label) and len(label) <= 63 for label in labels):
        raise _fail(
            field,
            f"{where} has an invalid host name: use letters, digits, '-' and '_' in dot-separated labels "
            "(no empty label, no other characters)",
        )
    for label in labels:
        if label.startswith("xn--"):
            _idna(label, field, where)  # WHATWG refuses a broken A-label; httpx would send it
    return name


def host_allowed(host: str, patterns: Iterable[str], *, field: str = "callback_allowed_hosts") -> bool:
    """
    Whether a normalised host is on an allow-list of host names and ``*.domain`` wildcards.

    Entries are normalised as hosts are (``HOOKS.example.com.`` is ``hooks.example.com``,
    ``[::1]`` and ``::1`` are one address); ``*.example.com`` allows any subdomain of
    ``example.com`` but not ``example.com`` itself.

    :param host: a host from :func:`parse_http_url` or :func:`normalize_host`
    :param patterns: the allow-list; blank entries are ignored
    :param field: the field named when an entry is not a host name
    :raises NyneValidationError: for an entry that is not a host name or wildcard
    """
    for entry in patterns:
        if entry is None or (isinstance(entry, str) and not entry.strip()):
            continue
        pattern = entry.strip() if isinstance(entry, str) else ""
        bare = pattern[1:-1] if pattern.startswith("[") and pattern.endswith("]") else pattern
        if ":" in bare and not _is_ipv6(bare):
            pattern = ""  # a port or a scheme: not a host name
        if not pattern or any(c in pattern for c in "/@?#"):
            raise _fail(
                field,
                f"entry {entry!r} is not a host name: list host names (hooks.example.com) or "
                "wildcards (*.example.com), without scheme, port or path",
            )
        if pattern.startswith("*."):
            if host.endswith(f".{normalize_host(pattern[2:], field=field)}"):
                return True
        elif host == normalize_host(f"[{bare}]" if ":" in bare else bare, field=field):
            return True
    return False


@functools.lru_cache(maxsize=64)  # read for every hook and client a triggerer builds: once per value
def base_url(host: str | None, port: int | None, scheme: str | None, *, default: str) -> str:
    """
    The API root from a connection's host (a URL or a bare host), port and ``scheme`` extra.

    A host that carries a user name or password is refused with a message that shows no part
    of it: the key and secret belong in the connection's login and password. No error here
    quotes the host (a pasted credential may be in it); each says what is wrong and what to write.

    :param host: the connection's host, e.g. ``https://api.nyne.ai``, ``api.nyne.ai``, ``127.0.0.1``
    :param port: the connection's port, used when the host names none
    :param scheme: ``http`` or ``https`` for a host without scheme (default ``https``)
    :param default: the root when no host is set
    :raises NyneValidationError: with ``field="host"``
    """
    if not host or not host.strip():
        return default
    text = host.strip()
    where = "the connection's Base URL (host)"
    if "@" in text:
        raise _fail(
            "host",
            f"{where} must not contain a user name or password: put the API key in the connection's "
            f"login and the secret in its password, and only the URL (such as {default}) in the host",
        )
    if not _SCHEME.match(text):
        chosen = (scheme or "https").strip().lower()
        if chosen not in DEFAULT_PORTS:
            raise _fail("host", f"the connection's 'scheme' extra must be http or https, not {scheme!r}")
        text = f"{chosen}://{text}"
    parsed = _parse(text, "host", None, where)
    if parsed.query is not None or parsed.fragment is not None:
        raise _fail("host", f"{where} must be an http(s) URL such as {default}, without '?' or '#'")
    authority = _split_authority(text[_SCHEME.match(text).end() :])[0]  # type: ignore[union-attr]
    if port and ":" not in authority.rpartition("]")[2]:  # a port in the URL itself wins
        if not isinstance(port, int) or not 0 < port <= 65535:
            raise _fail("host", f"the connection's port must be a number between 1 and 65535, not {port!r}")
        explicit = None if port == DEFAULT_PORTS[parsed.scheme] else port
        parsed = HttpURL(parsed.scheme, parsed.host, explicit, parsed.path)
    return parsed.url.rstrip("/")


# --- pieces ---------------------------------------------------------------------------------


def _invisible(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in _INVISIBLE


def _check_characters(text: str, field: str, display: str) -> None:
    for position, char in enumerate(text):
        if char == "\\":
            raise _fail(
                field,
                f"{display} contains a backslash at position {position}: HTTP clients disagree on what "
                "it means (WHATWG reads it as '/'); write '/' or remove it",
            )
        if _invisible(char):
            raise _fail(
                field,
                f"{display} contains a control, space or invisible character (U+{ord(char):04X}) at "
                f"position {position}; remove it (encode a space in a query as %20)",
            )
    if _BAD_ESCAPE.search(text):
        raise _fail(field, f"{display} has a '%' not followed by two hex digits; write a literal '%' as %25")


def _split_authority(rest: str) -> tuple[str, str]:
    """Authority and the rest: the authority ends at the first '/', '?' or '#' (backslashes are refused)."""
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    end = min(ends) if ends else len(rest)
    return rest[:end], rest[end:]


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _split_port(authority: str, field: str, display: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _fail(field, f"{display} has an IPv6 address without its closing ']'")
        host, after = authority[: close + 1], authority[close + 1 :]
        if not after:
            return host, None
        if not after.startswith(":"):
            raise _fail(field, f"{display} has characters after the IPv6 address; write [address]:port")
        return host, after[1:]
    if authority.count(":") > 1:
        raise _fail(field, f"{display}: write an IPv6 address in brackets, e.g. http://[::1]:8080/")
    host, colon, port = authority.partition(":")
    return host, (port if colon else None)


def _port(text: str | None, scheme: str, field: str, display: str) -> int | None:
    if not text:  # "host:" means the default port to every client
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= 65535:
        raise _fail(field, f"{display} has an invalid port; use a number between 1 and 65535")
    port = int(text)
    return None if port == DEFAULT_PORTS[scheme] else port


def _decoded(part: str) -> str:
    return unquote_to_bytes(part).decode("utf-8", errors="replace")


def _check_path(path: str, field: str, display: str) -> None:
    for segment in path.split("/"):
        decoded = _decoded(segment)
        if decoded in _DOT_SEGMENTS:
            raise _fail(
                field,
                f"{display} has a '.' or '..' path segment, which HTTP clients resolve away (so the path "
                "checked is not the path requested); remove it",
            )
        if decoded != segment and any(c == "\\" or _invisible(c) for c in decoded):
            raise _fail(
                field,
                f"{display} has a percent-encoded control character, space or backslash in its path; remove it",
            )


def _idna(text: str, field: str, where: str) -> str:
    import idna  # httpx's own dependency; only international names need it

    try:
        # WHATWG (Node, browsers) maps first (UTS #46); httpx encodes the lower-cased name as is.
        whatwg = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        plain = idna.encode(text.lower()).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        whatwg = plain = ""
    if not whatwg or whatwg != plain:
        raise _fail(
            field,
            f"{where} has an international host name that HTTP clients encode differently (or not at "
            "all); write it in its ASCII form (xn--...)",
        )
    return whatwg


def _ipv4(name: str, field: str, where: str) -> str:
    """WHATWG's IPv4 parser (decimal, octal, hex, 1-4 parts); only the dotted-decimal form is accepted."""
    parts = name.split(".")
    numbers: list[int] = []
    for part in parts:
        try:
            if part[:2].lower() == "0x":
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10))
        except ValueError:
            numbers = []
            break
    valid = 0 < len(numbers) <= 4 and all(n <= 255 for n in numbers[:-1])
    if valid and numbers[-1] < 256 ** (5 - len(numbers)):
        value = numbers[-1]
        for index, number in enumerate(numbers[:-1]):
            value += number * 256 ** (3 - index)
        canonical = str(ipaddress.IPv4Address(value))
        if canonical == name:
            return name
        raise _fail(
            field,
            f"{where} writes the IPv4 address {canonical} in a form HTTP clients read differently "
            f"(some as an address, some as a name); write it as {canonical}",
        )
    raise _fail(field, f"{where} has a host that ends in a number but is not an IPv4 address")
