"""Live HTTP fetching with an SSRF guard, size caps, retries and politeness.

`Fetcher.fetch` never raises for network or HTTP problems: the returned
`FetchResult` carries a one-sentence ``error`` that names the URL and what to do
(HTTP statuses >= 400 get one too, with status and body kept).

Guard (`check_url`): only http(s); the host is resolved and refused when ANY of its
addresses is loopback, private, link-local, multicast, reserved, unspecified,
otherwise non-public (e.g. 100.64.0.0/10) or a cloud metadata endpoint. IPv4
embedded in IPv6 (mapped ``::ffff:a.b.c.d``, 6to4, NAT64) is judged by its IPv4
address. Odd numeric spellings (``2130706433``, ``0177.0.0.1``) are judged by what
the resolver makes of them. ``allow_hosts`` lists host names and IP/CIDR strings
that are let through (tests, intranets). Redirects are followed by hand and every
hop is checked again.

DNS rebinding: with the Fetcher's own session, the connection itself resolves the
host once more, vets those addresses and connects to exactly the vetted IP (TLS
still verifies and sends SNI for the host name), so a name cannot change between
check and connect. With a caller-supplied ``session`` or through an HTTP proxy
(the proxy resolves names), only the pre-connect check applies.

Size cap: bodies are streamed (after content decoding) and cut at ``max_bytes``;
a cut body is kept, ``FetchResult.truncated`` is True and the headers carry
``X-Webdancer-Truncated: max_bytes=N``. The error stays None because a partial
page is still useful text.

Politeness (``fetch`` only): robots.txt is honoured when ``respect_robots`` (RFC
9309 reading: a robots.txt that is missing, 4xx, 5xx or unreachable allows all),
cached per origin; requests to one host are spaced ``min_interval_s`` apart across
threads. ``post_json`` (API calls) skips robots and spacing; rate limits there are
handled through 429 and Retry-After.
"""
from __future__ import annotations

import email.utils
import http
import ipaddress
import socket
import threading
import time
import urllib.robotparser
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util import connection as urllib3_connection

__all__ = ["SUPPORTED_CONTENT_TYPES", "FetchResult", "Fetcher", "check_url"]

if TYPE_CHECKING:
    from typing_extensions import Self

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SUPPORTED_CONTENT_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "text/plain", "application/json", "application/pdf"}
)
MAX_REDIRECTS = 5
MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After ends the retries instead of stalling the agent
BODY_DEADLINE_FACTOR = 4.0  # whole body must arrive within this many timeout_s
TRUNCATED_HEADER = "X-Webdancer-Truncated"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_ACCEPT = (
    "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8,"
    "application/pdf;q=0.7,*/*;q=0.1"
)
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
_METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchResult:
    """One fetch: the response after redirects, or an error sentence.

    ``status`` is 0 when no HTTP response was received; ``elapsed_ms`` is wall time
    in milliseconds including redirects, retries and politeness waits.
    """

    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    error: str | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and 200 <= self.status < 400

    @property
    def truncated(self) -> bool:
        """True when the body was cut at the Fetcher's ``max_bytes``."""
        return any(name == TRUNCATED_HEADER for name, _ in self.headers)


# --------------------------------------------------------------------------- guard


@dataclass(frozen=True)
class _Allowlist:
    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> _Allowlist:
        if isinstance(entries, str):
            entries = [entries]
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().lower().rstrip(".").strip("[]")
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                if "/" in text or not text:
                    raise ValueError(
                        f"allow_hosts entry {entry!r} is neither a host name nor an IP "
                        "network; write e.g. 'intranet.example', '127.0.0.1' or '10.0.0.0/8'."
                    ) from None
                names.add(text)
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_ip(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded)
        return any(c in net for c in candidates for net in self.networks)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _address_problem(ip: IPAddress) -> str | None:
    """The kind of non-public address `ip` is (e.g. "loopback"), or None if public."""
    if ip in _METADATA_IPS:
        return "cloud metadata"
    embedded = _embedded_ipv4(ip)
    if isinstance(ip, ipaddress.IPv6Address) and embedded is not None:
        verdict = _address_problem(embedded)
        # Mapped and NAT64 addresses *are* the IPv4 host; a 6to4 address is also judged as v6.
        if verdict is not None or ip.sixtofour is None:
            return verdict
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def _vet_host(host: str, port: int | None, allow: _Allowlist) -> tuple[list[str], str | None]:
    """Resolve `host` and vet every address.

    Returns (addresses, None) when all are acceptable, else ([], problem) where the
    problem is a phrase such as "points to a loopback address (127.0.0.1)".
    """
    if host in _METADATA_HOSTS:
        return [], "is a cloud metadata host"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [], f"could not be resolved ({exc.strerror or exc})"
    except (UnicodeError, OSError) as exc:
        return [], f"could not be resolved ({exc})"
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        problem = _address_problem(ip)
        if problem is not None and not allow.allows_ip(ip):
            return [], f"points to a {problem} address ({ip})"
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        return [], "could not be resolved (no addresses)"
    return addresses, None


def _check(url: str, allow: _Allowlist) -> str | None:
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc}); write an absolute http(s) URL."
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        return f"{url!r} has {shown}; only http and https URLs can be fetched."
    if not host:
        return f"{url!r} has no host; write an absolute http(s) URL."
    if allow.allows_name(host):
        return None
    _, problem = _vet_host(host, port or (443 if scheme == "https" else 80), allow)
    if problem is None:
        return None
    if problem.startswith("could not be resolved"):
        return f"{url} {problem}; check the URL or use replay mode."
    return f"{url} {problem}; add the host to allow_hosts if it is meant to be fetched."


def check_url(url: str, allow_hosts: Sequence[str] = ()) -> str | None:
    """SSRF guard: None if `url` may be fetched, else a one-sentence reason.

    Resolves the host (DNS) unless it is listed by name in ``allow_hosts``.
    """
    return _check(url, _Allowlist.parse(allow_hosts))


class _GuardRefusal(NewConnectionError):
    """Raised inside a connection whose host resolved to a refused address."""


def _connect_vetted(conn: HTTPConnection, allow: _Allowlist) -> socket.socket:
    """Resolve, vet and connect to exactly the vetted addresses (closes DNS rebinding)."""
    host = conn._dns_host.rstrip(".").lower()
    if allow.allows_name(host):
        return HTTPConnection._new_conn(conn)
    addresses, problem = _vet_host(host, conn.port, allow)
    if problem is not None:
        raise _GuardRefusal(conn, f"{host} {problem}")
    error: Exception = NewConnectionError(conn, f"Failed to connect to {host}")
    for address in addresses:
        try:
            return urllib3_connection.create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            error = ConnectTimeoutError(conn, f"Connection to {host} timed out: {exc}")
        except OSError as exc:
            error = NewConnectionError(conn, f"Failed to establish a new connection: {exc}")
            error.__cause__ = exc
    raise error


class _GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose direct (non-proxy) connections go through `_connect_vetted`."""

    def __init__(self, allow: _Allowlist) -> None:
        self._allow = allow
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        allow = self._allow

        def new_conn(conn: HTTPConnection) -> socket.socket:
            return _connect_vetted(conn, allow)

        http_conn = type("GuardedHTTPConnection", (HTTPConnection,), {"_new_conn": new_conn})
        https_conn = type("GuardedHTTPSConnection", (HTTPSConnection,), {"_new_conn": new_conn})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type(
                "GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}
            ),
        }


# ------------------------------------------------------------------------- fetcher


@dataclass
class _Outcome:
    """What one HTTP exchange produced (internal to the retry loop)."""

    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = ""
    body: bytes = b""
    error: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    location: str | None = None


@dataclass
class _HostState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_request: float = float("-inf")  # time.monotonic() seconds


class Fetcher:
    """Guarded, polite HTTP client; thread-safe for concurrent `fetch` calls.

    Args:
        timeout_s: connect timeout and per-read timeout in seconds; the whole body
            must arrive within ``BODY_DEADLINE_FACTOR * timeout_s``.
        retries: extra attempts after a connection error, timeout, 429 or 5xx.
        backoff_s: first retry delay in seconds, doubled each retry; a Retry-After
            header (up to ``MAX_RETRY_AFTER_S``) lengthens it.
        max_bytes: body cap in bytes after content decoding (see `FetchResult.truncated`).
        allow_hosts: host names and IP/CIDR strings exempt from the SSRF guard.
        respect_robots: obey robots.txt in `fetch`.
        min_interval_s: minimum seconds between request starts to one host in `fetch`.
        session: a requests.Session to use as is; by default a session whose
            connections re-vet resolved addresses is built.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 15.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_bytes: int = 5_000_000,
        allow_hosts: Sequence[str] = (),
        user_agent: str = "webdancer/0.1 (+research crawler)",
        respect_robots: bool = True,
        min_interval_s: float = 1.0,
        session: requests.Session | None = None,
    ) -> None:
        for name, value, low in (
            ("timeout_s", timeout_s, 1e-9), ("retries", retries, 0), ("backoff_s", backoff_s, 0),
            ("max_bytes", max_bytes, 1), ("min_interval_s", min_interval_s, 0),
        ):
            if value < low:
                raise ValueError(f"Fetcher {name}={value!r} is out of range; use a value >= {low}.")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_bytes = int(max_bytes)
        self.allow_hosts = tuple([allow_hosts] if isinstance(allow_hosts, str) else allow_hosts)
        self.user_agent = user_agent
        self.respect_robots = respect_robots
        self.min_interval_s = float(min_interval_s)
        self._allow = _Allowlist.parse(self.allow_hosts)
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = _GuardedAdapter(self._allow)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self._state_lock = threading.Lock()
        self._hosts: dict[str, _HostState] = {}
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._robots_locks: dict[str, threading.Lock] = {}

    # -- public API ---------------------------------------------------------------

    def fetch(self, url: str) -> FetchResult:
        """GET `url` (guarded, polite, redirects followed); never raises for network errors."""
        return self._request("GET", url, None, {}, polite=True, retries=self.retries)

    def post_json(self, url: str, payload: dict, headers: Mapping[str, str]) -> FetchResult:
        """POST `payload` as JSON (API calls); the JSON reply is in ``body`` as bytes."""
        return self._request(
            "POST", url, payload, dict(headers), polite=False, retries=self.retries
        )

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- redirects and retries ---------------------------------------------------

    def _request(
        self, method: str, url: str, payload: dict | None, headers: dict[str, str], *,
        polite: bool, retries: int, robots: bool = True,
    ) -> FetchResult:
        """Follow up to MAX_REDIRECTS redirects by hand, checking every hop with the guard."""
        start = time.monotonic()
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            refusal = _check(current, self._allow)
            if refusal is None and polite and robots:
                refusal = self._robots_refusal(current)
            if refusal is not None:
                return self._result(url, current, _Outcome(error=refusal), start)
            outcome = self._send_with_retries(method, current, payload, headers, polite, retries)
            if outcome.location is None:
                return self._result(url, current, outcome, start)
            target = urljoin(current, outcome.location)
            if _origin(target) != _origin(current):
                headers = {}  # never forward caller headers (API keys) to another origin
            if outcome.status == 303 or (outcome.status in (301, 302) and method == "POST"):
                method, payload = "GET", None
            current = target
        error = f"{url} redirected more than {MAX_REDIRECTS} times; check the URL."
        return self._result(url, current, _Outcome(error=error), start)

    def _send_with_retries(
        self, method: str, url: str, payload: dict | None, headers: dict[str, str],
        polite: bool, retries: int,
    ) -> _Outcome:
        for attempt in range(retries + 1):
            if polite:
                self._wait_turn(url)
            outcome = self._send_once(method, url, payload, headers)
            if not outcome.retryable or attempt == retries:
                break
            delay = self.backoff_s * 2**attempt
            if outcome.retry_after_s is not None:
                if outcome.retry_after_s > MAX_RETRY_AFTER_S:
                    break
                delay = max(delay, outcome.retry_after_s)
            time.sleep(delay)
        if outcome.retryable and outcome.error is not None and attempt > 0:
            head, _, advice = outcome.error.rpartition("; ")
            outcome.error = f"{head} after {attempt + 1} attempts; {advice}"
        return outcome

    # -- one exchange -------------------------------------------------------------

    def _send_once(
        self, method: str, url: str, payload: dict | None, headers: dict[str, str]
    ) -> _Outcome:
        deadline = time.monotonic() + BODY_DEADLINE_FACTOR * self.timeout_s
        sent = {"User-Agent": self.user_agent, "Accept": _ACCEPT, **headers}
        try:
            response = self.session.request(
                method, url, json=payload, headers=sent, allow_redirects=False, stream=True,
                timeout=(self.timeout_s, self.timeout_s),
            )
        except (requests.RequestException, OSError, ValueError) as exc:
            return _network_outcome(url, exc, self.timeout_s)
        with response:
            return self._read_response(url, response, deadline)

    def _read_response(self, url: str, response: requests.Response, deadline: float) -> _Outcome:
        status = response.status_code
        out = _Outcome(status=status, headers=tuple(response.headers.items()))
        out.content_type = response.headers.get("Content-Type", "").strip()
        if status in _REDIRECT_STATUSES and response.headers.get("Location"):
            out.location = response.headers["Location"]
            return out
        if status == 429 or status >= 500:
            out.retryable = True
            out.retry_after_s = _parse_retry_after(response.headers.get("Retry-After"))
        if status >= 400:
            out.error = _http_error(url, status, out.retryable)
        media = _media_type(out.content_type)
        if media and media not in SUPPORTED_CONTENT_TYPES:
            if out.error is None:
                out.error = (
                    f"{url} has unsupported content type {media!r}; only HTML, XHTML, plain "
                    "text, JSON and PDF are fetched, so pick another URL."
                )
            return out
        try:
            out.body, cut = self._read_body(response, deadline)
        except (requests.RequestException, OSError, ValueError, TimeoutError) as exc:
            failed = _network_outcome(url, exc, self.timeout_s)
            failed.status, failed.headers = status, out.headers
            return failed
        if cut:
            out.headers += ((TRUNCATED_HEADER, f"max_bytes={self.max_bytes}"),)
        if not media and out.body:
            out.content_type = _sniff(out.body)
            if not out.content_type and out.error is None:
                out.error = (
                    f"{url} sent no content type and does not look like HTML or PDF; "
                    "pick another URL."
                )
                out.body = b""
        return out

    def _read_body(self, response: requests.Response, deadline: float) -> tuple[bytes, bool]:
        """Stream the decoded body up to max_bytes; (body, was_cut)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
            if size + len(chunk) > self.max_bytes:
                chunks.append(chunk[: self.max_bytes - size])
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError("body did not arrive in time")
        return b"".join(chunks), False

    # -- politeness ---------------------------------------------------------------

    def _host_state(self, key: str) -> _HostState:
        with self._state_lock:
            return self._hosts.setdefault(key, _HostState())

    def _wait_turn(self, url: str) -> None:
        """Block until `min_interval_s` has passed since the last request to this host."""
        state = self._host_state(urlsplit(url).netloc.lower())
        with state.lock:  # held while sleeping so that waiting threads queue up in order
            wait = state.last_request + self.min_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            state.last_request = time.monotonic()

    def _robots_refusal(self, url: str) -> str | None:
        if not self.respect_robots:
            return None
        origin = _origin_url(url)
        parser = self._robots_for(origin)
        if parser is None or parser.can_fetch(self.user_agent, url):
            return None
        return (
            f"{url} is disallowed by {origin}/robots.txt; pick another page or construct "
            "the Fetcher with respect_robots=False."
        )

    def _robots_for(self, origin: str) -> urllib.robotparser.RobotFileParser | None:
        """Parsed robots.txt of `origin` (cached), or None meaning everything is allowed."""
        with self._state_lock:
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:
            if origin in self._robots:
                return self._robots[origin]
            result = self._request(
                "GET", f"{origin}/robots.txt", None, {}, polite=True, retries=0, robots=False
            )
            parser: urllib.robotparser.RobotFileParser | None = None
            if result.error is None and 200 <= result.status < 300:
                parser = urllib.robotparser.RobotFileParser(f"{origin}/robots.txt")
                parser.parse(result.body.decode("utf-8", errors="replace").splitlines())
            self._robots[origin] = parser
            return parser

    # -- assembling ---------------------------------------------------------------

    def _result(self, url: str, final_url: str, outcome: _Outcome, start: float) -> FetchResult:
        return FetchResult(
            url=url, final_url=final_url, status=outcome.status, content_type=outcome.content_type,
            body=outcome.body, headers=outcome.headers, error=outcome.error,
            elapsed_ms=(time.monotonic() - start) * 1000.0,
        )


# ------------------------------------------------------------------------- helpers


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _origin_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _sniff(body: bytes) -> str:
    """Content type for a body sent without one: HTML or PDF by their openings, else ""."""
    head = body[:1024].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return "application/pdf"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "text/html"
    return ""


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _http_error(url: str, status: int, retryable: bool) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    advice = "try again later or use replay mode" if retryable else "check the URL"
    return f"{url} returned HTTP {status} ({phrase}); {advice}."


def _network_outcome(url: str, exc: BaseException, timeout_s: float) -> _Outcome:
    """Turn a requests/urllib3/socket exception into an error sentence and a retry flag."""
    refusal = _find_cause(exc, _GuardRefusal)
    if refusal is not None:
        problem = str(refusal).split(": ", 1)[-1]
        return _Outcome(error=f"{url} was refused at connect time ({problem}); add the host to "
                        "allow_hosts if it is meant to be fetched.")
    if isinstance(exc, ValueError):  # requests' InvalidURL, MissingSchema, ...; UnicodeError
        return _Outcome(error=f"{url!r} is not a valid URL ({exc}); write an absolute http(s) URL.")
    if isinstance(exc, requests.exceptions.SSLError):
        return _Outcome(error=f"{url} failed the TLS handshake or certificate check; check the "
                        "URL or use replay mode.")
    refused = _find_cause(exc, ConnectionRefusedError) is not None
    if not refused and (isinstance(exc, requests.Timeout)
                        or _find_cause(exc, (ReadTimeoutError, TimeoutError)) is not None):
        return _Outcome(error=f"{url} timed out after {timeout_s:g} s; try again later, raise "
                        "timeout_s, or use replay mode.", retryable=True)
    if refused:
        why = "connection refused"
    elif _find_cause(exc, socket.gaierror) is not None:
        why = "host name could not be resolved"
    elif isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                          requests.exceptions.ContentDecodingError)):
        why = "the response was broken off or could not be decoded"
    else:
        why = type(_find_cause(exc, OSError) or exc).__name__
    return _Outcome(error=f"{url} is unreachable ({why}); check the URL or use replay mode.",
                    retryable=True)


def _find_cause(
    exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> Any:
    """First exception of type `kind` in `exc`'s chain (causes, contexts, wrapped reasons)."""
    stack: list[Any] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(current.args)
    return None

