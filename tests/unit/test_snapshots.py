from __future__ import annotations

import gzip
import logging
import multiprocessing
import pickle
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from webdancer.web.snapshots import Miss, Page, Problem, SnapshotStore

WARC_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "warc"


def shared_warc(name: str) -> Path:
    path = WARC_DIR / name
    if not path.exists():
        pytest.skip(f"shared WARC sample {path} is absent; the tests that read it need it")
    return path


@dataclass(frozen=True)
class FakeResult:
    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and 200 <= self.status < 400


class FakeFetcher:
    """Serves a fixed dict of url -> FakeResult and counts calls."""

    def __init__(self, results: dict[str, FakeResult]) -> None:
        self.results = results
        self.calls: list[str] = []

    def fetch(self, url: str) -> FakeResult:
        self.calls.append(url)
        if url in self.results:
            return self.results[url]
        return FakeResult(url, url, 0, "", b"", error="connection refused")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def build(root: Path, pages: dict[str, bytes]) -> None:
    with SnapshotStore(root, readonly=False) as store:
        for url, body in pages.items():
            store.put(url, body)


# ---- put / get -----------------------------------------------------------------------


def test_round_trip_put_get(tmp_path: Path) -> None:
    with SnapshotStore(tmp_path, readonly=False) as store:
        store.put("https://a.org/x", b"<p>hello</p>", status=404,
                  content_type="text/html; charset=latin-1",
                  headers={"X-Test": "1", "Content-Encoding": "gzip"})
        inside = store.get("https://a.org/x")  # served before any flush
    page = SnapshotStore(tmp_path).get("https://a.org/x")
    assert isinstance(page, Page) and page == inside
    assert page.url == "https://a.org/x"
    assert page.status == 404
    assert page.content_type == "text/html; charset=latin-1"
    assert page.body == b"<p>hello</p>"
    assert page.header("x-test") == "1"
    assert page.header("Content-Encoding") is None  # bodies are stored decoded
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", page.date)


def test_binary_body_round_trips_exactly(tmp_path: Path) -> None:
    body = bytes(range(256)) * 50 + b"\r\n\r\n"
    with SnapshotStore(tmp_path, readonly=False) as store:
        store.put("http://a.com/bin", body, content_type="application/octet-stream")
    page = SnapshotStore(tmp_path).get("http://a.com/bin")
    assert isinstance(page, Page) and page.body == body


def test_later_put_wins_also_after_reopen(tmp_path: Path) -> None:
    with SnapshotStore(tmp_path, readonly=False) as store:
        store.put("http://a.com/p", b"one")
        store.put("http://a.com/p/", b"two")
        assert store.get("http://a.com/p").body == b"two"  # type: ignore[union-attr]
    with SnapshotStore(tmp_path, readonly=False) as store:
        store.put("http://A.com/p#x", b"three")
    store = SnapshotStore(tmp_path)
    assert store.get("http://a.com/p").body == b"three"  # type: ignore[union-attr]
    assert len(store) == 1


def test_lookup_is_normalized(tmp_path: Path) -> None:
    build(tmp_path, {"http://example.com/~user/page": b"x"})
    store = SnapshotStore(tmp_path)
    for variant in ["HTTP://EXAMPLE.com:80/%7euser/page/", "http://example.com/~user/page#f"]:
        assert variant in store
        assert isinstance(store.get(variant), Page)
    assert "http://example.com/~user/other" not in store
    assert list(store.urls()) == ["http://example.com/~user/page"]


def test_miss_in_replay_is_a_value(tmp_path: Path) -> None:
    build(tmp_path, {"http://a.com/": b"x"})
    assert SnapshotStore(tmp_path).get("http://a.com/nope") == Miss(
        "http://a.com/nope", "not in snapshot")


def test_replay_never_opens_a_socket(tmp_path: Path, no_network: None) -> None:
    build(tmp_path, {"http://a.com/": b"home"})
    store = SnapshotStore(tmp_path, mode="replay", fetcher=FakeFetcher({}))
    assert isinstance(store.get("http://a.com/"), Page)
    for url in ["http://a.com/missing", "https://python.org/", "urn:webdancer:search:q"]:
        assert isinstance(store.get(url), Miss)
    assert store._fetcher.calls == []  # type: ignore[union-attr]


def test_resource_records(tmp_path: Path) -> None:
    uri = "urn:webdancer:search:serper:abc"
    with SnapshotStore(tmp_path, readonly=False) as store:
        store.put_resource(uri, b'{"organic": []}', "application/json")
    page = SnapshotStore(tmp_path).get(uri)
    assert isinstance(page, Page)
    assert (page.url, page.status, page.body) == (uri, 200, b'{"organic": []}')
    assert page.content_type == "application/json"


def test_pages_yields_newest_text_pages_only(tmp_path: Path) -> None:
    with SnapshotStore(tmp_path, readonly=False) as store:
        store.put("http://a.com/1", b"old")
        store.put("http://a.com/2", b"two", content_type="text/plain")
        store.put("http://a.com/1", b"new")
        store.put("http://a.com/img", b"\x89PNG", content_type="image/png")
        store.put("http://a.com/gone", b"no", status=404)
        store.put_resource("urn:webdancer:search:x", b"<p>r</p>", "text/html")
        got = {p.url: p.body for p in store.pages()}
    assert got == {"http://a.com/1": b"new", "http://a.com/2": b"two"}


def test_written_files_are_valid_warc(tmp_path: Path) -> None:
    build(tmp_path, {"http://a.com/x": b"<p>x</p>", "http://a.com/y": b"<p>y</p>"})
    files = sorted(tmp_path.glob("*.warc.gz"))
    assert len(files) == 1
    seen = {}
    with open(files[0], "rb") as fh:
        for rec in ArchiveIterator(fh, check_digests=True):
            if rec.rec_type == "response":
                uri = rec.rec_headers.get_header("WARC-Target-URI")
                seen[uri] = (rec.http_headers.get_statuscode(), rec.content_stream().read())
    assert seen == {"http://a.com/x": ("200", b"<p>x</p>"), "http://a.com/y": ("200", b"<p>y</p>")}


def test_rotation_keeps_every_record_readable(tmp_path: Path) -> None:
    pages = {f"http://a.com/{i}": f"<p>page {i}</p>".encode() * 20 for i in range(30)}
    with SnapshotStore(tmp_path, readonly=False, max_file_bytes=2000) as store:
        for url, body in pages.items():
            store.put(url, body)
    assert len(list(tmp_path.glob("snap-*.warc.gz"))) > 3
    store = SnapshotStore(tmp_path)
    assert {u: store.get(u).body for u in pages} == pages  # type: ignore[union-attr]


# ---- modes and access rules ----------------------------------------------------------


def test_readonly_and_missing_store_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No snapshot store"):
        SnapshotStore(tmp_path / "absent")
    build(tmp_path, {"http://a.com/": b"x"})
    with pytest.raises(PermissionError, match="read-only"):
        SnapshotStore(tmp_path).put("http://a.com/2", b"y")
    with pytest.raises(ValueError, match="Unknown snapshot mode"):
        SnapshotStore(tmp_path, mode="replya")  # type: ignore[arg-type]
    with SnapshotStore(tmp_path, readonly=False), pytest.raises(RuntimeError, match="Another process is writing"):
        SnapshotStore(tmp_path, readonly=False)


def test_record_then_replay_offline(tmp_path: Path, no_network: None) -> None:
    fetcher = FakeFetcher({
        "http://a.com/start": FakeResult(
            "http://a.com/start", "http://a.com/final/", 200, "text/html; charset=utf-8",
            b"<a href='next'>next</a>", (("Content-Type", "text/html; charset=utf-8"),
                                         ("Content-Encoding", "gzip"), ("Server", "t"))),
        "http://a.com/missing": FakeResult(
            "http://a.com/missing", "http://a.com/missing", 404, "text/plain", b"no such page"),
    })
    with SnapshotStore(tmp_path, mode="record", fetcher=fetcher) as store:
        first = store.get("http://a.com/start")
        again = store.get("http://a.com/start")
        assert isinstance(store.get("http://a.com/missing"), Page)
        failed = store.get("http://down.example/")
    assert isinstance(first, Page) and first == again
    assert first.url == "http://a.com/final/"  # the base for resolving relative links
    assert first.body == b"<a href='next'>next</a>" and first.header("Server") == "t"
    assert first.header("Content-Encoding") is None
    assert fetcher.calls == ["http://a.com/start", "http://a.com/missing", "http://down.example/"]
    assert isinstance(failed, Miss) and "connection refused" in failed.reason

    replay = SnapshotStore(tmp_path)  # no fetcher: any network attempt would fail
    assert replay.get("http://a.com/start") == first
    assert replay.get("http://a.com/final") == first
    missing = replay.get("http://a.com/missing")
    assert isinstance(missing, Page) and missing.status == 404
    assert isinstance(replay.get("http://down.example/"), Miss)


def test_record_does_not_store_server_errors(tmp_path: Path) -> None:
    url = "http://a.com/flaky"
    fetcher = FakeFetcher({url: FakeResult(url, url, 503, "text/plain", b"busy")})
    with SnapshotStore(tmp_path, mode="record", fetcher=fetcher) as store:
        page = store.get(url)
        assert isinstance(page, Page) and page.status == 503
        assert url not in store


def test_live_fetches_every_time_and_writes_nothing(tmp_path: Path) -> None:
    url = "http://a.com/"
    fetcher = FakeFetcher({url: FakeResult(url, url, 200, "text/plain", b"live")})
    store = SnapshotStore(tmp_path / "none", mode="live", fetcher=fetcher)
    assert [store.get(url).body for _ in range(3)] == [b"live"] * 3  # type: ignore[union-attr]
    assert fetcher.calls == [url] * 3
    assert len(store) == 0 and not (tmp_path / "none").exists()


# ---- external WARC files -------------------------------------------------------------


def test_add_warc_reads_the_shared_samples(tmp_path: Path) -> None:
    with SnapshotStore(tmp_path, readonly=False) as store:
        assert store.add_warc(shared_warc("example.warc.gz")) == []
        page = store.get("http://example.com/")
        # The stored body is gzip content-encoded; the page body must be decoded.
        assert isinstance(page, Page) and page.status == 200
        assert b"<title>Example Domain</title>" in page.body
        assert len(store) == 1  # request and revisit records are not indexed

        assert store.add_warc(shared_warc("example-iana.org-chunked.warc")) == []
        iana = store.get("http://www.iana.org")
        assert isinstance(iana, Page) and iana.status == 200
        assert iana.body.startswith(b"<!doctype html>")  # chunk sizes removed
        assert "Internet Assigned Numbers Authority" in iana.text
        assert iana.body.rstrip().endswith(b"</html>")

        assert store.add_warc(shared_warc("example-resource.warc.gz")) == []
    replay = SnapshotStore(tmp_path)
    resource = replay.get("http://example.com")  # the later file's record wins
    assert isinstance(resource, Page) and resource.status == 200
    assert resource.content_type.startswith("text/html")
    assert b"<!DOCTYPE html>" in resource.body and "Example Domain" in resource.text
    assert {p.url for p in replay.pages()} == {"http://example.com/", "http://www.iana.org/"}


# Cut points inside each file's response record (found with warcio's record offsets).
@pytest.mark.parametrize(("name", "size"), [("example-iana.org-chunked.warc", 6000),
                                            ("example.warc.gz", 1500)])
def test_truncated_warc_reports_a_problem(
    tmp_path: Path, name: str, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    data = shared_warc(name).read_bytes()
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[:size])
    with SnapshotStore(tmp_path / "store", readonly=False) as store:
        with caplog.at_level(logging.WARNING, logger="webdancer.web"):
            problems = store.add_warc(cut)
        assert problems and all(isinstance(p, Problem) for p in problems)
        assert problems[0].file == str(cut.resolve()) and problems[0].offset > 0
        assert "truncated" in problems[0].message
        assert "truncated" in caplog.text
        assert isinstance(store.get("http://example.com/"), Miss)
        assert isinstance(store.get("http://www.iana.org/"), Miss)


def test_warc_cut_inside_record_headers_is_reported(tmp_path: Path) -> None:
    cut = tmp_path / "c.warc.gz"
    cut.write_bytes(shared_warc("example-resource.warc.gz").read_bytes()[:850])
    with SnapshotStore(tmp_path / "store", readonly=False) as store:
        problems = store.add_warc(cut)
    assert [p.offset for p in problems] == [802]  # where the resource record starts


def test_records_before_a_truncation_stay_usable(tmp_path: Path) -> None:
    pages = {f"http://a.com/{i}": f"<p>{i}</p>".encode() * 200 for i in range(5)}
    build(tmp_path / "src", pages)
    warc = next((tmp_path / "src").glob("*.warc.gz"))
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(warc.read_bytes()[:-30])  # inside the last record's deflate stream
    with SnapshotStore(tmp_path / "store", readonly=False) as store:
        problems = store.add_warc(cut)
    assert len(problems) == 1 and "truncated" in problems[0].message
    store = SnapshotStore(tmp_path / "store")
    for url, body in list(pages.items())[:4]:
        assert store.get(url) == Page(url, 200, "text/html; charset=utf-8", body,
                                      (("Content-Type", "text/html; charset=utf-8"),),
                                      store.get(url).date)  # type: ignore[union-attr]
    assert isinstance(store.get("http://a.com/4"), Miss)


@pytest.mark.parametrize("garbage", [b"this is not a record\r\n" * 5, bytes(range(256)) * 4])
def test_garbage_after_records_keeps_earlier_records(tmp_path: Path, garbage: bytes) -> None:
    src = shared_warc("example-iana.org-chunked.warc")
    bad = tmp_path / "bad.warc"
    bad.write_bytes(src.read_bytes() + garbage)
    with SnapshotStore(tmp_path / "store", readonly=False) as store:
        problems = store.add_warc(bad)
        assert len(problems) == 1 and problems[0].offset >= src.stat().st_size - 10
        page = store.get("http://www.iana.org/")
    assert isinstance(page, Page) and b"Internet Assigned Numbers" in page.body


def test_whole_file_gzip_is_refused_with_a_fix(tmp_path: Path) -> None:
    whole = tmp_path / "whole.warc.gz"
    whole.write_bytes(gzip.compress(shared_warc("example-iana.org-chunked.warc").read_bytes()))
    with SnapshotStore(tmp_path / "store", readonly=False) as store:
        problems = store.add_warc(whole)
        assert len(problems) == 1 and "warcio recompress" in problems[0].message
        assert len(store) == 0


def test_damaged_store_record_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build(tmp_path, {"http://a.com/x": b"<p>" + b"x" * 5000 + b"</p>"})
    warc = next(tmp_path.glob("*.warc.gz"))
    data = bytearray(warc.read_bytes())
    data[-60:-40] = b"\xff" * 20  # corrupt the deflate stream of the last record
    warc.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="webdancer.web"):
        result = SnapshotStore(tmp_path).get("http://a.com/x")
    assert isinstance(result, Miss) and "unreadable" in result.reason
    assert "unreadable" in caplog.text


# ---- processes ------------------------------------------------------------------------


def _read_all(args: tuple[SnapshotStore | str, list[str]]) -> list[bytes]:
    store, urls = args
    if isinstance(store, str):
        store = SnapshotStore(store)
    out = []
    for _ in range(20):
        out = [store.get(u).body for u in urls]  # type: ignore[union-attr]
    return out


def test_two_processes_read_the_same_store(tmp_path: Path) -> None:
    pages = {f"http://a.com/{i}": f"page {i}".encode() for i in range(50)}
    build(tmp_path, pages)
    urls = list(pages)
    shared = SnapshotStore(tmp_path)
    assert shared.get(urls[0]).body == b"page 0"  # type: ignore[union-attr]  # opens handles
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        # One worker opens its own store, one inherits the parent's open store.
        results = pool.map(_read_all, [(str(tmp_path), urls), (shared, urls)])
    assert results == [list(pages.values())] * 2
    assert shared.get(urls[1]).body == b"page 1"  # type: ignore[union-attr]


def _child_of_writer(store: SnapshotStore, queue: multiprocessing.Queue) -> None:
    try:
        store.put("http://a.com/child", b"c")
        error = ""
    except PermissionError as exc:
        error = str(exc)
    queue.put((isinstance(store.get("http://a.com/flushed"), Page),
               isinstance(store.get("http://a.com/buffered"), Page), error))


def test_forked_child_of_a_writer_reads_and_cannot_write(tmp_path: Path) -> None:
    with SnapshotStore(tmp_path, readonly=False) as store:
        store.put("http://a.com/flushed", b"f")
        store.flush()
        store.put("http://a.com/buffered", b"b")  # still in the parent's buffer
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_of_writer, args=(store, queue))  # inherited, not pickled
        child.start()
        flushed, buffered, error = queue.get(timeout=20)
        child.join(timeout=20)
        assert (flushed, buffered) == (True, False)
        assert "read-only" in error
        store.put("http://a.com/after", b"a")
    warc = next(tmp_path.glob("*.warc.gz"))
    with open(warc, "rb") as fh:
        uris = [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(fh)
                if r.rec_type == "response"]
    assert uris == ["http://a.com/flushed", "http://a.com/buffered", "http://a.com/after"]


def test_readonly_store_pickles_and_writable_does_not(tmp_path: Path) -> None:
    build(tmp_path, {"http://a.com/": b"x"})
    clone = pickle.loads(pickle.dumps(SnapshotStore(tmp_path)))
    assert clone.get("http://a.com/").body == b"x"  # type: ignore[union-attr]
    with SnapshotStore(tmp_path, readonly=False) as writer, pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(writer)


# ---- Page.text -------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body", "expected"), [
    ("text/html; charset=utf-8", "café".encode(), "café"),
    ("text/html; charset=ISO-8859-1", "café".encode("latin-1"), "café"),
    ('text/html; charset="windows-1251"', "привет".encode("cp1251"), "привет"),
    ("text/html", "café".encode(), "café"),
    ("text/html", b'<meta charset="latin-1"><p>caf\xe9', '<meta charset="latin-1"><p>café'),
    ("text/html", b"\xef\xbb\xbfhi", "hi"),
    ("text/html; charset=no-such-codec", "café".encode(), "café"),
    ("text/plain", b"caf\xe9", "caf\ufffd"),
])
def test_page_text_decodes_charset(content_type: str, body: bytes, expected: str) -> None:
    assert Page("http://a.com/", 200, content_type, body).text == expected
