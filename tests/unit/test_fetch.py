"""Fetcher and SSRF guard against a real HTTP server on 127.0.0.1 (no internet)."""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from webdancer.web.fetch import TRUNCATED_HEADER, Fetcher, FetchResult, check_url

LOCAL = ["127.0.0.1"]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"<html><body>hello</body></html>"
    content_type: str | None = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Hit:
    at: float  # time.monotonic() seconds
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Site:
    """A test server: `routes` maps a path to a Reply or to a function of the hit count."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply | Callable[[int], Reply]] = {"/": Reply()}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                site.handle(self, "GET")

            def do_POST(self) -> None:
                site.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [h.path for h in self.hits]

    def handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self.lock:
            self.hits.append(Hit(time.monotonic(), method, req.path, dict(req.headers), body))
            count = sum(1 for h in self.hits if h.path == req.path)
        route = self.routes.get(req.path, Reply(404, b"not found", "text/plain"))
        reply = route(count) if callable(route) else route
        if reply.delay_s:
            time.sleep(reply.delay_s)
        try:
            req.send_response(reply.status)
            if reply.content_type is not None:
                req.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                req.send_header(name, value)
            req.send_header("Content-Length", str(len(reply.body)))
            req.end_headers()
            req.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up (timeout tests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def fetcher(**kwargs: object) -> Fetcher:
    """A fast Fetcher for tests: loopback allowed, no robots, no spacing, tiny backoff."""
    options: dict[str, object] = {
        "allow_hosts": LOCAL, "respect_robots": False, "min_interval_s": 0.0, "backoff_s": 0.01, "timeout_s": 5.0
    }
    options.update(kwargs)
    return Fetcher(**options)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ guard


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/x", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://2130706433/", "loopback"),  # decimal spelling of 127.0.0.1
        ("http://0177.0.0.1/", "loopback"),  # octal
        ("http://0x7f.1/", "loopback"),  # hex, short form
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://100.64.0.1/", "non-public"),
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 wrapping 10.0.0.1
        ("http://localhost:8000/", "loopback"),
    ],
)
def test_check_url_refuses_non_public_addresses(url: str, kind: str) -> None:
    reason = check_url(url)
    assert reason is not None and f"{kind} " in reason, reason
    assert url in reason


@pytest.mark.parametrize(
    "url",
    ["http://93.184.216.34/", "https://1.1.1.1:8443/a?b=c", "http://[2606:4700::1111]/",
     "http://[::ffff:8.8.8.8]/", "http://[64:ff9b::808:808]/"],
)
def test_check_url_allows_public_addresses(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://93.184.216.34/x", "gopher://127.0.0.1:70/",
     "javascript:alert(1)", "93.184.216.34/no-scheme", ""],
)
def test_check_url_refuses_other_schemes(url: str) -> None:
    reason = check_url(url)
    assert reason is not None and "only http and https" in reason


@pytest.mark.parametrize("url", ["http:///path", "http://[::1/", "http://1.2.3.4:99999/"])
def test_check_url_refuses_malformed_urls(url: str) -> None:
    reason = check_url(url)
    assert reason is not None and "URL" in reason


@pytest.mark.parametrize(
    ("url", "allow", "allowed"),
    [
        ("http://127.0.0.1:8000/", ["127.0.0.1"], True),
        ("http://[::ffff:127.0.0.1]/", ["127.0.0.1"], True),
        ("http://127.0.0.2/", ["127.0.0.1"], False),
        ("http://10.20.30.40/", ["10.0.0.0/8"], True),
        ("http://169.254.169.254/", ["10.0.0.0/8"], False),
        ("http://localhost:9/", ["localhost"], True),
        ("http://LOCALHOST./", ["localhost"], True),
        ("http://[::1]/", ["::1"], True),
        ("ftp://127.0.0.1/", ["127.0.0.1"], False),
    ],
)
def test_allow_hosts(url: str, allow: list[str], allowed: bool) -> None:
    assert (check_url(url, allow) is None) == allowed


def test_bad_allow_hosts_entry_and_bad_options_are_errors() -> None:
    with pytest.raises(ValueError, match="allow_hosts entry '10.0.0.0/33'"):
        Fetcher(allow_hosts=["10.0.0.0/33"])
    with pytest.raises(ValueError, match="timeout_s"):
        Fetcher(timeout_s=0)
    with pytest.raises(ValueError, match="retries"):
        Fetcher(retries=-1)


# --------------------------------------------------------------- fetch + guard


def test_loopback_refused_by_default(site: Site) -> None:
    result = Fetcher(respect_robots=False, min_interval_s=0).fetch(site.url("/"))
    assert not result.ok and result.status == 0
    assert result.error is not None and "loopback" in result.error and site.url("/") in result.error
    assert site.hits == []


def test_allowed_loopback_fetches_and_keeps_charset(site: Site) -> None:
    site.routes["/page"] = Reply(
        body="café".encode("latin-1"), content_type="text/html; charset=ISO-8859-1"
    )
    result = fetcher().fetch(site.url("/page"))
    assert isinstance(result, FetchResult)
    assert result.ok and result.error is None and result.status == 200
    assert result.body == "café".encode("latin-1")
    assert result.content_type == "text/html; charset=ISO-8859-1"
    assert result.final_url == result.url == site.url("/page")
    assert not result.truncated and result.elapsed_ms > 0
    assert site.hits[0].headers["User-Agent"].startswith("webdancer/")


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:{port}/", "http://[::1]:{port}/",
     "http://10.0.0.1/", "file:///etc/passwd"],
)
@pytest.mark.parametrize("own_session", [False, True], ids=["guarded-session", "caller-session"])
def test_redirect_to_refused_address_is_refused(site: Site, target: str, own_session: bool) -> None:
    """Every hop is checked; a caller's plain session relies on that check alone."""
    target = target.format(port=site.port)
    site.routes["/go"] = Reply(302, b"", headers={"Location": target})
    session = requests.Session() if own_session else None
    result = fetcher(session=session).fetch(site.url("/go"))
    assert not result.ok and result.status == 0
    assert result.final_url == target
    assert result.error is not None and target.rstrip("/") in result.error
    assert "allow_hosts" in result.error or "only http and https" in result.error
    assert site.paths() == ["/go"]


def test_redirects_are_followed_and_capped(site: Site) -> None:
    site.routes["/a"] = Reply(301, b"", headers={"Location": "/b"})
    site.routes["/b"] = Reply(303, b"", headers={"Location": site.url("/c")})
    site.routes["/c"] = Reply(body=b"end", content_type="text/plain")
    result = fetcher().fetch(site.url("/a"))
    assert result.ok and result.body == b"end" and result.final_url == site.url("/c")

    site.routes["/loop"] = Reply(302, b"", headers={"Location": "/loop"})
    looped = fetcher().fetch(site.url("/loop"))
    assert looped.error is not None and "redirected more than 5 times" in looped.error
    assert site.paths().count("/loop") == 6


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1:70/"]
)
def test_fetch_refuses_non_http_schemes(url: str) -> None:
    result = fetcher().fetch(url)
    assert result.status == 0 and result.error is not None and "only http and https" in result.error


def test_connection_is_pinned_to_the_vetted_address(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that rebinds to loopback between check and connect is refused at connect."""
    real = socket.getaddrinfo
    calls = {"rebind.test": 0}

    def fake(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host == "rebind.test":
            calls[host] += 1
            ip = "93.184.216.34" if calls[host] == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        if host == "pinned.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    rebound = fetcher(allow_hosts=[]).fetch(f"http://rebind.test:{site.port}/")
    assert rebound.error is not None and "refused at connect time" in rebound.error
    assert "loopback" in rebound.error and calls["rebind.test"] == 2
    assert site.hits == []

    pinned = fetcher().fetch(f"http://pinned.test:{site.port}/")
    assert pinned.ok
    assert site.hits[0].headers["Host"] == f"pinned.test:{site.port}"


def test_pinned_https_keeps_sni_and_certificate_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate; install it to run this test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=pinned.test",
         "-addext", "subjectAltName=DNS:pinned.test"],
        check=True, capture_output=True,
    )
    site = Site()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]
    site.server.socket = context.wrap_socket(site.server.socket, server_side=True)
    real = socket.getaddrinfo

    def fake(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host in ("pinned.test", "other.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    try:
        good = fetcher().fetch(f"https://pinned.test:{site.port}/")
        assert good.ok and good.body == Reply().body and names == ["pinned.test"]
        wrong = fetcher().fetch(f"https://other.test:{site.port}/")
        assert wrong.status == 0 and wrong.error is not None and "certificate" in wrong.error
    finally:
        site.close()


# ------------------------------------------------------------ responses, retries


def test_size_cap_keeps_partial_body_and_flags_it(site: Site) -> None:
    site.routes["/big"] = Reply(body=b"x" * 100_000, content_type="text/plain")
    result = fetcher(max_bytes=1000).fetch(site.url("/big"))
    assert result.ok and len(result.body) == 1000 and result.truncated
    assert (TRUNCATED_HEADER, "max_bytes=1000") in result.headers
    whole = fetcher(max_bytes=100_000).fetch(site.url("/big"))
    assert len(whole.body) == 100_000 and not whole.truncated


def test_retries_on_503_then_success(site: Site) -> None:
    site.routes["/flaky"] = lambda n: Reply(503, b"busy") if n < 3 else Reply(body=b"ok")
    result = fetcher(retries=2).fetch(site.url("/flaky"))
    assert result.ok and result.body == b"ok"
    assert site.paths() == ["/flaky"] * 3


def test_persistent_503_reports_attempts(site: Site) -> None:
    site.routes["/down"] = Reply(503, b"busy")
    result = fetcher(retries=1).fetch(site.url("/down"))
    assert result.status == 503 and not result.ok
    assert result.error is not None and "HTTP 503" in result.error
    assert "after 2 attempts" in result.error
    assert len(site.hits) == 2


def test_404_returns_status_without_retry(site: Site) -> None:
    result = fetcher(retries=3).fetch(site.url("/missing"))
    assert result.status == 404 and not result.ok and result.body == b"not found"
    assert result.error is not None and "HTTP 404" in result.error
    assert len(site.hits) == 1


def test_retry_after_is_honoured_and_capped(site: Site) -> None:
    site.routes["/slow"] = (
        lambda n: Reply(429, b"", headers={"Retry-After": "1"}) if n == 1 else Reply()
    )
    start = time.monotonic()
    result = fetcher(retries=1, backoff_s=0.0).fetch(site.url("/slow"))
    assert result.ok and time.monotonic() - start >= 0.95

    site.routes["/later"] = Reply(429, b"", headers={"Retry-After": "3600"})
    start = time.monotonic()
    refused = fetcher(retries=3).fetch(site.url("/later"))
    assert refused.status == 429 and time.monotonic() - start < 1.0
    assert site.paths().count("/later") == 1


def test_unsupported_content_type(site: Site) -> None:
    site.routes["/img"] = Reply(body=b"\x89PNG....", content_type="image/png")
    result = fetcher().fetch(site.url("/img"))
    assert result.error is not None and "unsupported content type 'image/png'" in result.error
    assert result.body == b"" and result.status == 200 and not result.ok


@pytest.mark.parametrize(
    ("ctype", "kept"),
    [("application/xhtml+xml", True), ("application/json", True), ("application/pdf", True),
     ("text/plain; charset=utf-8", True), ("application/octet-stream", False)],
)
def test_content_types_kept(site: Site, ctype: str, kept: bool) -> None:
    site.routes["/doc"] = Reply(body=b"data", content_type=ctype)
    result = fetcher().fetch(site.url("/doc"))
    assert result.ok == kept and result.content_type == ctype
    assert result.body == (b"data" if kept else b"")


def test_missing_content_type_is_sniffed(site: Site) -> None:
    site.routes["/html"] = Reply(body=b"<!DOCTYPE html><html>x</html>", content_type=None)
    site.routes["/blob"] = Reply(body=b"\x00\x01binary", content_type=None)
    site.routes["/empty"] = Reply(204, b"", content_type=None)
    html = fetcher().fetch(site.url("/html"))
    assert html.ok and html.content_type == "text/html"
    blob = fetcher().fetch(site.url("/blob"))
    assert blob.error is not None and "no content type" in blob.error and blob.body == b""
    empty = fetcher().fetch(site.url("/empty"))
    assert empty.ok and empty.status == 204 and empty.body == b""


def test_timeout_gives_error_result(site: Site) -> None:
    site.routes["/sleepy"] = Reply(delay_s=1.5)
    start = time.monotonic()
    result = fetcher(timeout_s=0.3, retries=0).fetch(site.url("/sleepy"))
    assert result.status == 0 and result.error is not None
    assert "timed out after 0.3 s" in result.error
    assert time.monotonic() - start < 1.2


def test_closed_port_gives_error_result_not_exception() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    result = fetcher(retries=1).fetch(url)
    assert result.status == 0 and not result.ok
    assert result.error == (
        f"{url} is unreachable (connection refused) after 2 attempts; "
        "check the URL or use replay mode."
    )


# ------------------------------------------------------------------- politeness


def test_robots_disallow_is_honoured_and_cached(site: Site) -> None:
    site.routes["/robots.txt"] = Reply(
        body=b"User-agent: *\nDisallow: /private\n", content_type="text/plain"
    )
    site.routes["/public"] = Reply(body=b"pub")
    polite = fetcher(respect_robots=True)
    blocked = polite.fetch(site.url("/private/page"))
    assert blocked.error is not None and "robots.txt" in blocked.error and not blocked.ok
    assert polite.fetch(site.url("/public")).ok
    assert site.paths() == ["/robots.txt", "/public"]


def test_missing_robots_allows_everything(site: Site) -> None:
    result = fetcher(respect_robots=True).fetch(site.url("/missing"))
    assert result.status == 404 and site.paths() == ["/robots.txt", "/missing"]


def test_min_interval_between_requests_to_one_host(site: Site) -> None:
    spaced = fetcher(min_interval_s=0.3)
    start = time.monotonic()
    assert spaced.fetch(site.url("/")).ok and spaced.fetch(site.url("/")).ok
    # Request starts are spaced on the client's clock; server arrival times jitter.
    assert time.monotonic() - start >= 0.29
    assert site.hits[1].at - site.hits[0].at >= 0.2


def test_min_interval_holds_across_threads(site: Site) -> None:
    spaced = fetcher(min_interval_s=0.1)
    threads = [threading.Thread(target=spaced.fetch, args=(site.url(f"/{i}"),)) for i in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start >= 0.29  # three gaps of 0.1 s
    times = sorted(h.at for h in site.hits)
    assert len(times) == 4 and times[-1] - times[0] >= 0.2


# --------------------------------------------------------------------- post_json


def test_post_json_sends_payload_and_returns_json_bytes(site: Site) -> None:
    site.routes["/search"] = Reply(body=b'{"organic": []}', content_type="application/json")
    result = fetcher().post_json(site.url("/search"), {"q": "x"}, {"X-API-KEY": "secret"})
    assert result.ok and json.loads(result.body) == {"organic": []}
    hit = site.hits[0]
    assert hit.method == "POST" and json.loads(hit.body) == {"q": "x"}
    assert hit.headers["X-API-KEY"] == "secret"
    assert hit.headers["Content-Type"] == "application/json"


def test_post_json_is_guarded_and_drops_keys_across_origins(site: Site) -> None:
    refused = Fetcher().post_json(site.url("/search"), {"q": "x"}, {})
    assert refused.error is not None and "loopback" in refused.error and site.hits == []

    other = Site()
    try:
        other.routes["/search"] = Reply(body=b"{}", content_type="application/json")
        site.routes["/search"] = Reply(307, b"", headers={"Location": other.url("/search")})
        result = fetcher().post_json(site.url("/search"), {"q": "x"}, {"X-API-KEY": "secret"})
        assert result.ok and result.final_url == other.url("/search")
        moved = other.hits[0]
        assert moved.method == "POST" and json.loads(moved.body) == {"q": "x"}
        assert "X-API-KEY" not in moved.headers
    finally:
        other.close()
