"""URL normalization, so that one page has one key in a snapshot index."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
# Characters left as they are when re-quoting: RFC 3986 reserved + unreserved + "%".
_SAFE = "!#$&'()*+,/:;=?@[]~%"
# Already canonical: lowercase host, no port, query or fragment, path segments of
# unreserved characters that are not dot segments, no trailing slash except the root.
_CANONICAL = re.compile(
    r"https?://[a-z0-9-]+(?:\.[a-z0-9-]+)*(?:/|(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+)"
)


def _fix_percent(part: str) -> str:
    """Decode escapes of unreserved characters, uppercase the other escapes, and
    escape characters that may not appear raw (spaces, non-ASCII) as UTF-8."""

    def repl(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else "%" + m.group(1).upper()

    return quote(_PCT.sub(repl, part), safe=_SAFE)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: resolve '.' and '..' segments."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out)


def _netloc(scheme: str, netloc: str) -> str:
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.startswith("["):  # IPv6 literal: [::1]:8080
        host, _, rest = hostport[1:].partition("]")
        host, port = f"[{host.lower()}]", rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
        host = host.lower().rstrip(".")
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                pass  # keep an undecodable host as written; it will simply not match
    if port.isdigit() and int(port) == _DEFAULT_PORTS.get(scheme):
        port = ""
    return f"{userinfo}{at}{host}{':' + port if port else ''}"


def normalize_url(url: str) -> str:
    """Canonical form of an http(s) URL; other strings come back stripped.

    Lowercases scheme and host, drops the fragment and default ports (:80, :443),
    decodes percent-escapes of unreserved characters and uppercases the rest,
    resolves dot segments, removes a trailing slash on non-root paths, and keeps
    the query as written. "http://A.com" -> "http://a.com/".
    """
    url = url.strip()
    if _CANONICAL.fullmatch(url):
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        return url
    path = _remove_dot_segments(_fix_percent(parts.path))
    path = path.rstrip("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    query = _fix_percent(parts.query)
    return urlunsplit((scheme, _netloc(scheme, parts.netloc), path, query, ""))
