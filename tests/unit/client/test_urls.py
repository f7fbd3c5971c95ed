"""client.urls: one reading of a URL, the one real HTTP clients act on.

Three kinds of checks:

* tables of exact outcomes: what is accepted (and its normalised form), what is refused
  (the field, the reason, and never a user name or password in the message);
* agreement with real parsers: every accepted URL, once normalised, is read with the same
  host, port and path by httpx, urllib3 and a WHATWG parser (Node's ``URL``, the parser of
  ``fetch`` and browsers, run as a subprocess when ``node`` is installed);
* the refused forms are real confusions: for each, those parsers (plus ``urlsplit``) read
  different hosts or paths, or one of them refuses it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import urllib3

from airflow_provider_nyne.client.errors import NyneValidationError
from airflow_provider_nyne.client.urls import (
    HttpURL,
    base_url,
    host_allowed,
    normalize_host,
    parse_http_url,
    shown,
)

ACCEPTED = [
    pytest.param("https://x.com/nasa", None, "https://x.com/nasa", id="plain"),
    pytest.param("x.com/nasa", "https", "https://x.com/nasa", id="no-scheme-means-https"),
    pytest.param("  https://x.com/nasa\n", None, "https://x.com/nasa", id="surrounding-whitespace-stripped"),
    pytest.param("HTTPS://X.COM./nasa", None, "https://x.com/nasa", id="case-and-trailing-dot"),
    pytest.param("https://x.com:443/nasa", None, "https://x.com/nasa", id="default-https-port-dropped"),
    pytest.param("http://h.example.com:0080/", None, "http://h.example.com/", id="default-http-port-zero-padded"),
    pytest.param("http://h.example.com:/cb", None, "http://h.example.com/cb", id="empty-port-is-default"),
    pytest.param("http://127.0.0.1:8080/cb", None, "http://127.0.0.1:8080/cb", id="ipv4-with-port"),
    pytest.param("http://127.0.0.1./cb", None, "http://127.0.0.1/cb", id="ipv4-trailing-dot"),
    pytest.param("http://[::1]:8080/cb", None, "http://[::1]:8080/cb", id="ipv6"),
    pytest.param("http://[0:0::FFFF:127.0.0.1]/", None, "http://[::ffff:7f00:1]/", id="ipv6-compressed"),
    pytest.param("https://bücher.example/a", None, "https://xn--bcher-kva.example/a", id="idna"),
    pytest.param("https://xn--bcher-kva.example/a", None, "https://xn--bcher-kva.example/a", id="a-label"),
    pytest.param("https://a_b.example.com/", None, "https://a_b.example.com/", id="underscore-label"),
    pytest.param("https://h.example.com", None, "https://h.example.com", id="no-path"),
    pytest.param(
        "https://h.example.com/cb?a=%20b&c=d#frag",
        None,
        "https://h.example.com/cb?a=%20b&c=d#frag",
        id="encoded-space-in-query-and-fragment",
    ),
    pytest.param("https://x.com/@nasa", None, "https://x.com/@nasa", id="at-in-path"),
    pytest.param("https://x.com/nasa?ref_src=twsrc%5Etfw", None, "https://x.com/nasa?ref_src=twsrc%5Etfw",
                 id="encoded-caret-in-query"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "default_scheme", "expected"), ACCEPTED)
def test_accepted_urls_are_normalised(text: str, default_scheme: str | None, expected: str) -> None:
    parsed = parse_http_url(text, field="f", default_scheme=default_scheme)
    assert parsed.url == str(parsed) == expected
    # Normalising is idempotent: the URL sent reads back as itself.
    assert parse_http_url(parsed.url, field="f") == parsed


def test_parts_of_a_parsed_url() -> None:
    parsed = parse_http_url("HTTP://[::1]:8080/cb?x=1#top", field="f")
    assert parsed == HttpURL("http", "::1", 8080, "/cb", "x=1", "top")
    assert parsed.netloc == "[::1]:8080"
    assert parse_http_url("https://h/?", field="f").query == ""
    assert parse_http_url("https://h/", field="f").query is None


REFUSED = [
    ("backslash-userinfo", "http://127.0.0.1:8080\\@hooks.example.com/cb", "contains a backslash at position 21"),
    ("backslash-path", "https://x.com\\nasa", "contains a backslash"),
    ("newline", "https://x.com/na\nsa", "(U+000A) at position 16"),
    ("tab-in-host", "http://hooks.example.com\t.evil.io/", "(U+0009)"),
    ("inner-space", "https://x.com/na sa", "(U+0020)"),
    ("no-break-space", "https://x.com/na\u00a0sa", "(U+00A0)"),
    ("bidi-override", "https://x.com/\u202enasa", "(U+202E)"),
    ("byte-order-mark", "https://x.com\ufeff/nasa", "(U+FEFF)"),
    ("userinfo", "https://user:hunter2@x.com/nasa", "must not contain a user name or password"),
    ("userinfo-in-ipv6", "http://[::1]@hooks.example.com/", "must not contain a user name or password"),
    ("stray-percent", "https://x.com/100%", "'%' not followed by two hex digits"),
    ("scheme-without-slashes", "https:x.com/nasa", "with '//' after the scheme"),
    ("scheme-single-slash", "https:/x.com/nasa", "with '//' after the scheme"),
    ("relative", "/cb", "must be an absolute http:// or https:// URL"),
    ("scheme-relative", "//x.com/nasa", "must be an absolute http:// or https:// URL"),
    ("ftp", "ftp://x.com/nasa", "must use http or https, not 'ftp'"),
    ("no-host", "https:///cb", "has no host"),
    ("port-not-a-number", "https://h:port/", "has an invalid port"),
    ("port-zero", "https://h:0/", "has an invalid port"),
    ("port-too-big", "https://h:65536/", "has an invalid port"),
    ("percent-encoded-host", "http://hooks.example.com%2e/", "percent-encoded host"),
    ("percent-encoded-at-in-host", "http://127.0.0.1%40hooks.example.com/", "percent-encoded host"),
    ("decimal-ipv4", "http://2130706433/", "IPv4 address 127.0.0.1 in a form"),
    ("octal-ipv4", "http://0177.0.0.1/", "write it as 127.0.0.1"),
    ("hex-ipv4", "http://0x7f.0.0.1/", "write it as 127.0.0.1"),
    ("short-ipv4", "http://127.1/", "write it as 127.0.0.1"),
    ("ipv4-out-of-range", "http://256.1.1.1/", "ends in a number but is not an IPv4 address"),
    ("ends-in-a-number", "http://example.123/", "ends in a number but is not an IPv4 address"),
    ("ipv6-unclosed", "http://[::1/", "without its closing ']'"),
    ("ipv6-invalid", "http://[::g]/", "invalid IPv6 address"),
    ("ipv6-zone", "http://[fe80::1%25eth0]/", "zone id"),
    ("ipv6-junk-after", "http://[::1]x/", "characters after the IPv6 address"),
    ("ipv6-unbracketed", "http://::1/", "in brackets"),
    ("empty-label", "https://a..example.com/", "invalid host name"),
    ("bad-character-in-host", "https://hooks.example.com;.evil.io/", "invalid host name"),
    ("label-too-long", f"https://{'a' * 64}.example.com/", "invalid host name"),
    ("fullwidth-host", "https://\uff58.com/nasa", "encode differently"),
    ("soft-hyphen-host", "https://x\u00adyz.com/", "(U+00AD)"),
    ("broken-a-label", "https://xn--zz.example.com/", "encode differently"),
    ("dot-dot", "https://x.com/evil/../nasa", "'.' or '..' path segment"),
    ("dot", "https://x.com/./nasa", "'.' or '..' path segment"),
    ("encoded-dot-dot", "https://x.com/evil/.%2E/nasa", "'.' or '..' path segment"),
    ("encoded-newline-in-path", "https://x.com/nasa/%0a", "percent-encoded control character, space or backslash"),
    ("encoded-space-in-path", "https://x.com/na%20sa", "percent-encoded control character, space or backslash"),
    ("encoded-backslash-in-path", "https://x.com/nasa%5C..", "percent-encoded control character, space or backslash"),
    ("encoded-nul-in-query", "https://h/?x=%00", "percent-encoded control character"),
    ("encoded-crlf-in-fragment", "https://h/#%0D%0A", "percent-encoded control character"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), [pytest.param(t, r, id=i) for i, t, r in REFUSED])
def test_refused_urls_name_the_field_and_the_reason(text: str, reason: str) -> None:
    with pytest.raises(NyneValidationError) as info:
        parse_http_url(text, field="callback_url", default_scheme=None if text.startswith("/") else "https")
    assert info.value.field == "callback_url"
    assert info.value.message.startswith("callback_url: ")
    assert reason in info.value.message
    assert "hunter2" not in f"{info.value} {info.value!r} {info.value.args}"


@pytest.mark.parametrize("value", [None, "", "   ", 42, b"https://x.com"])
def test_empty_or_not_a_string(value: Any) -> None:
    with pytest.raises(NyneValidationError, match="must be a non-empty http\\(s\\) URL"):
        parse_http_url(value, field="f")


@pytest.mark.parametrize(
    ("text", "display"),
    [
        pytest.param("https://user:pw@x.com/a@b", "'https://***@x.com/a@b'", id="userinfo-hidden-path-kept"),
        pytest.param("https://a:b@c@x.com/", "'https://***@x.com/'", id="last-at-of-the-authority"),
        pytest.param("https://k\\:s@x.com/", "'https://***@x.com/'", id="backslash-counted-in-the-authority"),
        pytest.param("user:pw@x.com/a", "'***@x.com/a'", id="no-scheme"),
        pytest.param("https://x.com/na\nsa", "'https://x.com/na\\nsa'", id="control-characters-escaped"),
        pytest.param("https://x.com/?q=@", "'https://x.com/?q=@'", id="at-in-query-kept"),
    ],
)
def test_shown_hides_what_could_be_a_password(text: str, display: str) -> None:
    assert shown(text) == display


def test_no_error_repeats_a_password_whatever_else_is_wrong() -> None:
    # Several faults at once: the message must name one without quoting the credentials.
    for text in [
        "https://KEY:hunter2@x.com/na\nsa",
        "https://KEY:hunter2@x.com:99999/",
        "https://KEY:hunter2\\@x.com/",
        "ftp://KEY:hunter2@x.com/",
        "https://KEY:hunter2@[::1/",
    ]:
        with pytest.raises(NyneValidationError) as info:
            parse_http_url(text, field="callback_url")
        assert "hunter2" not in f"{info.value} {info.value!r}", text


# --- hosts and allow-lists ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Hooks.Example.COM.", "hooks.example.com"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("[::FFFF:7F00:1]", "::ffff:7f00:1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_normalize_host(host: str, expected: str) -> None:
    assert normalize_host(host, field="f") == expected


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        pytest.param("hooks.example.com", ["HOOKS.example.com."], True, id="entry-normalised"),
        pytest.param("a.b.example.com", [" *.Example.com "], True, id="wildcard-any-depth"),
        pytest.param("example.com", ["*.example.com"], False, id="wildcard-not-apex"),
        pytest.param("evilexample.com", ["*.example.com"], False, id="wildcard-not-suffix-lookalike"),
        pytest.param("hooks.example.com.evil.io", ["hooks.example.com"], False, id="exact-not-prefix"),
        pytest.param("::1", ["[::1]"], True, id="ipv6-bracketed-entry"),
        pytest.param("::1", ["0:0::1"], True, id="ipv6-entry-normalised"),
        pytest.param("xn--bcher-kva.example", ["bücher.example"], True, id="idna-entry"),
        pytest.param("x.io", ["", "  ", "x.io"], True, id="blank-entries-ignored"),
        pytest.param("x.io", [], False, id="empty-list-allows-nothing"),
    ],
)
def test_host_allowed(host: str, patterns: list[str], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize(
    "entry",
    ["https://hooks.example.com", "hooks.example.com:8443", "hooks.example.com/cb", "user@hooks.example.com",
     "*", "*example.com", "hooks..example.com"],
)  # fmt: skip
def test_allow_list_entries_that_are_not_host_names_fail_clearly(entry: str) -> None:
    with pytest.raises(NyneValidationError) as info:
        host_allowed("hooks.example.com", [entry])
    assert info.value.field == "callback_allowed_hosts"


# --- base URL -------------------------------------------------------------------------------

DEFAULT = "https://api.nyne.ai"


@pytest.mark.parametrize(
    "host",
    [
        "https://KEY:hunter2@api.nyne.ai",
        "KEY:hunter2@api.nyne.ai",
        "https://hunter2@api.nyne.ai/",
        "https://api.nyne.ai\\@hunter2",
        "https://KEY:hunter2%40api.nyne.ai",
        "hunter2:x",
    ],
)
def test_base_url_errors_quote_nothing_of_the_host(host: str) -> None:
    with pytest.raises(NyneValidationError) as info:
        base_url(host, None, None, default=DEFAULT)
    text = f"{info.value} {info.value!r}"
    assert info.value.field == "host"
    assert "the connection's Base URL (host)" in text
    assert "hunter2" not in text
    assert "api.nyne.ai" not in text.replace(DEFAULT, "")  # not even the host part


def test_base_url_with_credentials_says_where_they_belong() -> None:
    with pytest.raises(NyneValidationError, match="put the API key in the connection's login and the secret"):
        base_url("https://KEY:SECRET@api.nyne.ai", None, None, default=DEFAULT)


# --- agreement with real HTTP clients ---------------------------------------------------------

_NODE_READER = """
const urls = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(urls.map((u) => {
  try { const p = new URL(u); return [p.hostname, p.port, p.pathname, p.search, p.hash]; }
  catch (e) { return null; }
})));
"""

Reading = tuple[str, int | None, str] | None


def _bare(host: str) -> str:
    host = host[1:-1] if host.startswith("[") else host
    return host[:-1] if host.endswith(".") else host.lower()


def _whatwg(urls: list[str]) -> list[Reading]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: no WHATWG parser to compare with")
    done = subprocess.run(
        [node, "-e", _NODE_READER],
        input=json.dumps(urls),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    readings: list[Reading] = []
    for value in json.loads(done.stdout):
        if value is None:
            readings.append(None)
        else:
            host, port, path, _, _ = value
            readings.append((_bare(host), int(port) if port else None, path))
    return readings


def _httpx(url: str) -> Reading:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    return _bare(parsed.raw_host.decode("ascii")), parsed.port, parsed.path


def _urllib3(url: str) -> Reading:
    try:
        parsed = urllib3.util.parse_url(url)
    except urllib3.exceptions.LocationParseError:
        return None
    port = None if parsed.port == {"http": 80, "https": 443}.get(parsed.scheme or "") else parsed.port
    return _bare(parsed.host or ""), port, parsed.path or "/"


def _urlsplit(url: str) -> Reading:
    try:
        parts = urlsplit(url)
        return _bare(parts.hostname or ""), parts.port, parts.path or "/"
    except ValueError:
        return None


def test_every_accepted_url_is_read_alike_by_httpx_urllib3_and_whatwg() -> None:
    parsed = [parse_http_url(p.values[0], field="f", default_scheme=p.values[1]) for p in ACCEPTED]
    sent = [p.url for p in parsed]
    whatwg = _whatwg(sent)
    for url, ours, node in zip(sent, parsed, whatwg, strict=True):
        expected = (ours.host, ours.port, ours.path or "/")
        assert _httpx(url) == expected, ("httpx", url)
        assert _urllib3(url) == expected, ("urllib3", url)
        assert node is not None
        assert (node[0], node[1], node[2]) == expected, ("WHATWG", url)


#: Refused forms, each a real disagreement between the parsers HTTP clients use.
CONFUSIONS = [
    "http://127.0.0.1:8080\\@hooks.example.com/cb",
    "https://evil.com\\@x.com/nasa",
    "https://x.com/na\nsa",
    "https://x.com/na\tsa",
    "http://hooks.example.com\t.evil.io/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.1/",
    "https://x.com/evil/../nasa",
    "https://x.com/evil/%2e%2e/nasa",
    "https://\uff58.com/nasa",
    "http://hooks.example.com%2e/",
    "https:x.com/nasa",
    "https://x\u00adyz.com/",
]


def test_the_refused_forms_are_read_differently_by_real_parsers() -> None:
    whatwg = _whatwg(CONFUSIONS)
    for url, node in zip(CONFUSIONS, whatwg, strict=True):
        readings = [_httpx(url), _urllib3(url), _urlsplit(url), node]
        assert None in readings or len(set(readings)) > 1, (url, readings)
        with pytest.raises(NyneValidationError):
            parse_http_url(url, field="f")
