"""Search backends: BM25 ranking and robustness, result formatting, Serper
recording against a loopback server, and offline replay."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from webdancer.web.search import (
    BM25Search,
    RecordedSearch,
    SearchBackend,
    SearchHit,
    SerperSearch,
    best_snippet,
    format_many,
    format_results,
    search_and_format,
    serper_uri,
)

FILLER = " ".join(f"word{i}" for i in range(200))
DOCS = [
    ("https://ex.org/paris", "Paris", "Paris is the capital and largest city of France."),
    ("https://ex.org/lyon", "Lyon", "Lyon is a city in France known for its food. Paris is north."),
    ("https://ex.org/berlin", "Berlin", "Berlin is the capital of Germany and its largest city."),
    ("https://ex.org/paris#history", "Paris again", "A duplicate of the Paris page."),
    ("https://ex.org/danube", "Danube", "A long river of central Europe."),
    ("https://ex.org/rivers", "Rivers", "The Danube flows through ten countries."),
    ("https://ex.org/long", "Long page", f"{FILLER} The Volga is the longest river. {FILLER}"),
]


@pytest.fixture(scope="module")
def bm25() -> BM25Search:
    return BM25Search.build(None, DOCS, heap_bytes=50_000_000)


def urls(hits: list[SearchHit]) -> list[str]:
    return [h.url for h in hits]


def page(title: str, text: str) -> bytes:
    return f"<html><head><title>{title}</title></head><body><p>{text}</p></body></html>".encode()


# --------------------------------------------------------------------------- BM25


def test_satisfies_protocol(bm25: BM25Search) -> None:
    assert isinstance(bm25, SearchBackend)
    assert bm25.name == "bm25"


def test_title_match_outranks_body_match_and_boost_matters(bm25: BM25Search) -> None:
    [hits] = bm25.search(["danube"])
    assert urls(hits) == ["https://ex.org/danube", "https://ex.org/rivers"]
    weak_title = BM25Search(bm25.index, title_boost=0.01)
    [hits] = weak_title.search(["danube"])
    assert urls(hits) == ["https://ex.org/rivers", "https://ex.org/danube"]


def test_k_is_respected(bm25: BM25Search) -> None:
    [hits] = bm25.search(["city capital france germany"], k=2)
    assert len(hits) == 2
    [none] = bm25.search(["city"], k=0)
    assert none == []
    [bare] = bm25.search(["berlin"], k=1, snippets=False)
    assert urls(bare) == ["https://ex.org/berlin"] and bare[0].snippet == ""


def test_batch_returns_one_list_per_query_in_order(bm25: BM25Search) -> None:
    results = bm25.search(["berlin germany", "lyon cuisine", "volga"], k=1)
    assert [urls(r) for r in results] == [
        ["https://ex.org/berlin"],
        ["https://ex.org/lyon"],
        ["https://ex.org/long"],
    ]
    # A bare string is one query, not a list of characters.
    assert urls(bm25.search("berlin", k=1)[0]) == ["https://ex.org/berlin"]


def test_duplicate_urls_are_indexed_once(bm25: BM25Search) -> None:
    assert bm25.build_stats is not None
    assert bm25.build_stats.duplicates == 1
    assert len(bm25) == len(DOCS) - 1
    [hits] = bm25.search(["paris"], k=10)
    assert len(urls(hits)) == len(set(urls(hits)))
    assert urls(hits)[0] == "https://ex.org/paris"
    assert hits[0].title == "Paris"  # the first occurrence wins


def test_near_universal_terms_are_left_out_unless_alone(bm25: BM25Search) -> None:
    # "the" is in 4 of the 6 pages.
    strict = BM25Search(bm25.index, common_df=0.5)
    with_the, without = strict.search(["the volga", "volga"])
    assert [(h.url, h.score) for h in with_the] == [(h.url, h.score) for h in without]
    [alone] = strict.search(["the"])
    assert len(alone) == 4
    [kept] = bm25.search(["the volga"])  # default 0.9 keeps a term in 67% of pages
    assert len(kept) == 4


@pytest.mark.parametrize("k", [2, 8])
def test_equal_scores_come_in_url_order_whatever_the_insertion_order(k: int) -> None:
    # Twelve pages that score the same for "kestrel": tantivy returns ties in
    # document order, which differs between builds whose threads split the pages
    # differently; the hits must not.
    twins = [(f"https://ex.org/bird{i:02d}", f"Bird {i:02d}", "A kestrel hovers.") for i in range(12)]
    other = [("https://ex.org/falcon", "Kestrel", "A kestrel hovers.")]  # the title match ranks first
    expected = ["https://ex.org/falcon"] + [url for url, _, _ in twins][: k - 1]
    for docs in (other + twins, twins[::-1] + other, twins[5:] + other + twins[:5]):
        [hits] = BM25Search.build(None, docs, heap_bytes=50_000_000).search("kestrel", k=k)
        assert urls(hits) == expected


def test_stemming_matches_inflected_forms(bm25: BM25Search) -> None:
    [hits] = bm25.search(["cities"])
    assert "https://ex.org/paris" in urls(hits)


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unclosed phrase',
        "AND OR NOT",
        "title:paris",
        "url:https://ex.org/paris",
        "((",
        ")) [ ] { } ^2 ~1 * ? + - ! \\ / :",
        "paris^10 AND -lyon +berlin~2",
        "Zürich 東京タワー ñandú 🙂 \u200b \x00",
        "paris " * 2000,
        "",
        "   \n\t ",
    ],
)
def test_adversarial_queries_never_raise(bm25: BM25Search, query: str) -> None:
    [hits] = bm25.search([query])
    assert isinstance(hits, list)
    assert all(isinstance(h, SearchHit) for h in hits)


def test_syntax_characters_are_plain_punctuation(bm25: BM25Search) -> None:
    # "title:paris" is the words "title" and "paris", not a field query.
    [hits] = bm25.search(["title:paris"], k=1)
    assert urls(hits) == ["https://ex.org/paris"]
    for query in ['"', "((", "", "?!"]:
        assert bm25.search([query]) == [[]]
        assert bm25.last_errors == {query: "the query has no searchable words"}


def test_very_long_query_is_fast(bm25: BM25Search) -> None:
    query = " ".join(f"term{i}" for i in range(2000))
    began = time.perf_counter()
    bm25.search([query])
    assert time.perf_counter() - began < 0.5


def test_snippet_is_a_window_around_the_query_terms(bm25: BM25Search) -> None:
    [hits] = bm25.search(["volga longest"], k=1)
    snippet = hits[0].snippet
    assert "Volga" in snippet
    assert snippet.startswith("...") and snippet.endswith("...")
    assert len(snippet) <= 300 + 6


def test_best_snippet_prefers_the_densest_region(bm25: BM25Search) -> None:
    text = "alpha " + "x " * 300 + "alpha beta gamma together here " + "y " * 300 + "beta"
    forms = bm25.parse("alpha beta gamma").forms
    snippet = best_snippet(text, forms, [1.0, 1.0, 1.0], width=100)
    assert "alpha beta gamma together" in snippet
    assert snippet.startswith("...") and snippet.endswith("...")
    assert best_snippet("short text", (), [], width=100) == "short text"
    # A rare term outweighs a cluster of common ones.
    text = "common common common " + "z " * 200 + "rare " + "z " * 200
    snippet = best_snippet(text, (("common",), ("rare",)), [0.1, 5.0], width=60)
    assert "rare" in snippet and "common" not in snippet


def test_parse_keeps_stems_and_query_words(bm25: BM25Search) -> None:
    parsed = bm25.parse("Cities, PARIS: the city!")
    assert parsed.terms == ("citi", "pari", "the")
    assert parsed.forms == (("citi", "city"), ("pari",), ("the",))
    many = bm25.parse(" ".join(f"w{i}" for i in range(100)))
    assert many.terms == tuple(f"w{i}" for i in range(32))


def test_persisted_index_opens_in_another_process(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    BM25Search.build(index_dir, DOCS, heap_bytes=50_000_000)
    assert urls(BM25Search.open(index_dir).search(["berlin"], k=1)[0]) == ["https://ex.org/berlin"]
    code = (
        "import sys; from webdancer.web.search import BM25Search; "
        "print(BM25Search.open(sys.argv[1]).search(['lyon'], k=1)[0][0].url)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(index_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "https://ex.org/lyon"


def test_rebuild_needs_overwrite(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    BM25Search.build(index_dir, DOCS[:2], heap_bytes=50_000_000)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        BM25Search.build(index_dir, DOCS, heap_bytes=50_000_000)
    rebuilt = BM25Search.build(index_dir, DOCS[2:3], overwrite=True, heap_bytes=50_000_000)
    assert len(rebuilt) == 1
    with pytest.raises(FileNotFoundError, match="build_from_store"):
        BM25Search.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="empty directory"):
        BM25Search.build(tmp_path / "other", DOCS)


def test_build_from_store_renders_pages(tmp_path: Path) -> None:
    snapshots = pytest.importorskip("webdancer.web.snapshots")
    pytest.importorskip("webdancer.web.render")
    with snapshots.SnapshotStore(tmp_path / "store", mode="record") as store:
        okapi = page("Okapi facts", "The okapi lives in the Ituri forest.")
        store.put("https://site.test/a", okapi)
        store.put("https://site.test/b", page("Giraffe", "Giraffes are tall."))
        store.put("https://site.test/gone", b"<html><body>okapi</body></html>", status=404)
        store.flush()
        search = BM25Search.build_from_store(store, tmp_path / "index", progress=True)
        forked = BM25Search.build_from_store(store, None, workers=2)
    assert search.build_stats is not None and search.build_stats.docs == 2
    [hits] = search.search(["okapi forest"])
    assert urls(hits) == ["https://site.test/a"]
    assert hits[0].title == "Okapi facts"
    assert "Ituri" in hits[0].snippet
    assert forked.search(["okapi forest", "giraffe"]) == search.search(["okapi forest", "giraffe"])


# --------------------------------------------------------------------------- format


def test_format_results_shape() -> None:
    hits = [
        SearchHit("Paris", "https://ex.org/paris", "Capital of France.", date="Jan 1, 2024"),
        SearchHit("Lyon\n city", "https://ex.org/lyon", "A city\n in France."),
    ]
    assert format_results("capital  of France", hits).split("\n") == [
        "A search for 'capital of France' found 2 results:",
        "",
        "## Web Results",
        "1. [Paris](https://ex.org/paris)",
        "Date published: Jan 1, 2024",
        "Capital of France.",
        "",
        "2. [Lyon city](https://ex.org/lyon)",
        "A city in France.",
    ]
    one = format_results("q", [SearchHit("", "https://ex.org/x", "")])
    assert one.split("\n") == [
        "A search for 'q' found 1 result:",
        "",
        "## Web Results",
        "1. [https://ex.org/x](https://ex.org/x)",
    ]


def test_format_empty_and_many() -> None:
    empty = format_results("zzz", [])
    assert empty == "No results found for 'zzz'. Try a shorter or more general query."
    noted = format_results("zzz", [], note="this query was not recorded in the snapshot")
    assert noted == (
        "No results found for 'zzz' (this query was not recorded in the snapshot). "
        "Try a shorter or more general query."
    )
    hits = [SearchHit("T", "https://ex.org/t", "s")]
    many = format_many(["a", "zzz"], [hits, []])
    first, second = many.split("\n=======\n")
    assert first == format_results("a", hits)
    assert second == empty
    with pytest.raises(ValueError, match="result lists"):
        format_many(["a"], [])


def test_search_and_format_uses_backend_notes(bm25: BM25Search) -> None:
    text = search_and_format(bm25, ["berlin", "(("], k=1)
    first, second = text.split("\n=======\n")
    assert first.startswith("A search for 'berlin' found 1 result:")
    assert "no searchable words" in second


# --------------------------------------------------------------------------- Serper


class FakeStore:
    """The two SnapshotStore methods search uses."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[bytes, str]] = {}

    def put_resource(self, uri: str, body: bytes, content_type: str) -> None:
        self.records[uri] = (body, content_type)

    def get(self, uri: str) -> Any:
        if uri in self.records:
            return SimpleNamespace(url=uri, status=200, body=self.records[uri][0])
        return SimpleNamespace(url=uri, reason="not in snapshot")


class FakeSerper(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeSerper.requests.append(payload)
        if self.headers.get("X-API-KEY") != "test-key":
            return self._reply(403, {"message": "Unauthorized."})
        if payload["q"] == "boom":
            return self._reply(500, {"message": "internal"})
        organic = [
            {
                "title": f"{payload['q']} one",
                "link": "https://a.example/1",
                "snippet": "First.",
                "date": "Jan 1, 2024",
                "position": 1,
            },
            {"title": "No link here", "snippet": "skipped"},
            {"title": "Two", "link": "https://a.example/2", "snippet": "Second.", "position": 2},
            {"title": "Three", "link": "https://a.example/3", "snippet": "Third.", "position": 3},
        ]
        self._reply(200, {"searchParameters": {"q": payload["q"]}, "organic": organic})

    def _reply(self, status: int, data: dict[str, Any]) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def serper_server() -> Iterator[tuple[str, ThreadingHTTPServer]]:
    FakeSerper.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSerper)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/search", server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_serper_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SERPER_API_KEY"):
        SerperSearch()
    monkeypatch.setenv("SERPER_API_KEY", "from-env")
    assert SerperSearch().api_key == "from-env"


Server = tuple[str, ThreadingHTTPServer]


def test_serper_records_then_replays_offline(serper_server: Server) -> None:
    endpoint, server = serper_server
    store = FakeStore()
    serper = SerperSearch("test-key", endpoint=endpoint, store=store)
    results = serper.search(["  capital   of\nFrance ", "boom"], k=2)

    assert FakeSerper.requests[0] == {"q": "capital of France", "num": 2, "gl": "us", "hl": "en"}
    assert results[0] == [
        SearchHit("capital of France one", "https://a.example/1", "First.", date="Jan 1, 2024"),
        SearchHit("Two", "https://a.example/2", "Second."),
    ]
    assert results[1] == []
    assert "HTTP 500" in serper.last_errors["boom"]
    assert list(store.records) == [serper_uri("capital of France", 2)]
    assert store.records[serper_uri("capital of France", 2)][1] == "application/json"

    server.shutdown()
    server.server_close()
    replay = RecordedSearch(store)
    replayed = replay.search(["capital of France", "never asked", "capital of France"], k=2)
    assert replayed[0] == results[0] and replayed[2] == results[0]
    assert replayed[1] == []
    assert replay.last_errors == {"never asked": "this query was not recorded in the snapshot"}
    assert "not recorded" in format_many(["never asked"], [[]], replay.last_errors)
    # Recorded with k=2: a different k is a different recording.
    assert replay.search(["capital of France"], k=10) == [[]]


def test_serper_failures_are_results_not_exceptions(serper_server: Server) -> None:
    endpoint, server = serper_server
    store = FakeStore()
    wrong_key = SerperSearch("wrong", endpoint=endpoint, store=store)
    assert wrong_key.search(["q"]) == [[]]
    assert "HTTP 403" in wrong_key.last_errors["q"]
    assert wrong_key.search([""]) == [[]] and wrong_key.last_errors == {"": "the query is empty"}
    server.shutdown()
    server.server_close()
    unreachable = SerperSearch("test-key", endpoint=endpoint, store=store, timeout_s=2.0)
    assert unreachable.search(["q"]) == [[]]
    assert unreachable.last_errors["q"].startswith("search failed:")
    assert store.records == {}


def test_serper_through_fetcher(serper_server: Server) -> None:
    fetch = pytest.importorskip("webdancer.web.fetch")
    endpoint, _ = serper_server
    fetcher = fetch.Fetcher(
        allow_hosts=["127.0.0.1"], min_interval_s=0.0, retries=0, respect_robots=False
    )
    serper = SerperSearch("test-key", endpoint=endpoint, fetcher=fetcher)
    [hits] = serper.search(["okapi"], k=3)
    assert urls(hits) == ["https://a.example/1", "https://a.example/2", "https://a.example/3"]


def test_recorded_search_with_snapshot_store(tmp_path: Path) -> None:
    snapshots = pytest.importorskip("webdancer.web.snapshots")
    hits = [SearchHit("T", "https://ex.org/t", "s", date="2020")]
    with snapshots.SnapshotStore(tmp_path / "store", mode="record") as store:
        row = {"title": "T", "url": "https://ex.org/t", "snippet": "s", "date": "2020"}
        payload = json.dumps([row]).encode()
        store.put_resource(serper_uri("okapi  habitat", 10), payload, "application/json")
        store.flush()
    with snapshots.SnapshotStore(tmp_path / "store", mode="replay") as store:
        assert RecordedSearch(store).search(["okapi habitat"]) == [hits]
