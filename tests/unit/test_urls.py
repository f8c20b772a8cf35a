from __future__ import annotations

import pytest

from webdancer.web.urls import normalize_url

CASES = [
    # (input, expected, what it checks)
    ("http://a.com", "http://a.com/", "empty path becomes /"),
    ("http://a.com/", "http://a.com/", "root keeps its slash"),
    ("HTTP://Example.COM/Path", "http://example.com/Path", "scheme and host lowercased, path not"),
    ("http://a.com/x#frag", "http://a.com/x", "fragment dropped"),
    ("http://a.com/#top", "http://a.com/", "fragment on root dropped"),
    ("http://a.com/x/", "http://a.com/x", "trailing slash removed"),
    ("http://a.com/x//", "http://a.com/x", "repeated trailing slashes removed"),
    ("http://a.com:80/x", "http://a.com/x", "default http port dropped"),
    ("https://a.com:443/x", "https://a.com/x", "default https port dropped"),
    ("http://a.com:443/x", "http://a.com:443/x", "non-default port for scheme kept"),
    ("https://a.com:8443/x", "https://a.com:8443/x", "explicit port kept"),
    ("http://a.com:/x", "http://a.com/x", "empty port dropped"),
    ("http://a.com/%7Euser", "http://a.com/~user", "unreserved escape decoded"),
    ("http://a.com/%41%2d%5F", "http://a.com/A-_", "unreserved letters and marks decoded"),
    ("http://a.com/a%2fb", "http://a.com/a%2Fb", "reserved escape kept, hex uppercased"),
    ("http://a.com/a%3ab", "http://a.com/a%3Ab", "escape of ':' uppercased"),
    ("http://a.com/caf%c3%a9", "http://a.com/caf%C3%A9", "non-ASCII escapes uppercased"),
    ("http://a.com/café", "http://a.com/caf%C3%A9", "raw non-ASCII escaped as UTF-8"),
    ("http://a.com/a b", "http://a.com/a%20b", "space escaped"),
    ("http://a.com/a/./b/../c", "http://a.com/a/c", "dot segments resolved"),
    ("http://a.com/../x", "http://a.com/x", "dot segments above root clamp"),
    ("http://a.com/x?b=2&a=1", "http://a.com/x?b=2&a=1", "query kept in order"),
    ("http://a.com/x/?q=%7e", "http://a.com/x?q=~", "query escapes normalized"),
    ("http://a.com/x?", "http://a.com/x", "empty query dropped"),
    ("http://a.com?q=1", "http://a.com/?q=1", "query on empty path"),
    ("http://a.com./x", "http://a.com/x", "trailing dot of host dropped"),
    ("http://Bücher.de/", "http://xn--bcher-kva.de/", "IDN host to punycode"),
    ("http://[::1]:80/x", "http://[::1]/x", "IPv6 literal, default port dropped"),
    ("http://User:Pw@A.com:8080/", "http://User:Pw@a.com:8080/", "userinfo kept as written"),
    ("  https://a.com/x  ", "https://a.com/x", "surrounding whitespace stripped"),
    ("https://wiki.example.org/wiki/Entity_1", "https://wiki.example.org/wiki/Entity_1",
     "canonical URL unchanged"),
    ("urn:webdancer:search:foo bar ", "urn:webdancer:search:foo bar", "URN only stripped"),
    ("mailto:X@Y.com", "mailto:X@Y.com", "other schemes unchanged"),
    ("ftp://A.com/x/", "ftp://A.com/x/", "non-http schemes unchanged"),
    ("example.com/x", "example.com/x", "no scheme: unchanged"),
]


@pytest.mark.parametrize(("url", "expected", "why"), CASES, ids=[c[2] for c in CASES])
def test_normalize_url(url: str, expected: str, why: str) -> None:
    assert normalize_url(url) == expected, why


@pytest.mark.parametrize(("url", "expected", "why"), CASES, ids=[c[2] for c in CASES])
def test_normalize_url_is_idempotent(url: str, expected: str, why: str) -> None:
    assert normalize_url(expected) == expected, why


EQUIVALENT = [
    ["http://a.com", "http://a.com/", "HTTP://A.COM:80/", "http://a.com/#x"],
    ["https://a.com/~u/", "https://A.com/%7eu", "https://a.com:443/%7Eu#frag"],
    ["http://a.com/p?x=%2f", "http://a.com/p/?x=%2F"],
]


@pytest.mark.parametrize("group", EQUIVALENT)
def test_equivalent_urls_share_one_key(group: list[str]) -> None:
    assert len({normalize_url(u) for u in group}) == 1


def test_different_pages_stay_different() -> None:
    urls = ["http://a.com/x", "http://a.com/X", "https://a.com/x", "http://a.com/x?y",
            "http://a.com/a%2Fb", "http://a.com/a/b", "http://a.com:8080/x"]
    assert len({normalize_url(u) for u in urls}) == len(urls)
