"""Web search backends behind one batched interface, and the text the agent reads.

Three backends share ``search(queries, k) -> one hit list per query``:

* ``BM25Search``: offline BM25 (tantivy) over the pages of a snapshot store, one
  document per page; snippets are the densest query-term window of the page text.
* ``SerperSearch``: live Google results from serper.dev; records every result list
  into a ``SnapshotStore`` as a resource so a later run can replay it.
* ``RecordedSearch``: replays what ``SerperSearch`` recorded; never the network.

``format_results`` / ``format_many`` turn hits into the observation text of the
``search`` tool (header with the result count, ``## Web Results``, numbered
markdown links with an optional date line and the snippet).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import tantivy

if TYPE_CHECKING:
    from webdancer.web.fetch import Fetcher
    from webdancer.web.snapshots import SnapshotStore

logger = logging.getLogger(__name__)

RESULTS_SEPARATOR = "\n=======\n"
SERPER_ENDPOINT = "https://google.serper.dev/search"
# A query this long is not a query; the cap keeps the boolean query small and fast.
MAX_QUERY_TERMS = 32
# Snippets come from the start of very long pages only; the scan stays ~O(60 KB).
SNIPPET_SCAN_CHARS = 60_000
SNIPPET_MAX_MATCHES = 2_000


@dataclass(frozen=True)
class SearchHit:
    """One search result. ``score`` is backend-specific (BM25 for ``BM25Search``)."""

    title: str
    url: str
    snippet: str
    score: float = 0.0
    date: str = ""


@runtime_checkable
class SearchBackend(Protocol):
    """A batched search engine: one hit list (best first, at most ``k``) per query."""

    name: str

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]: ...


# --------------------------------------------------------------------------- format


def _one_line(text: str) -> str:
    return " ".join(text.split())


def format_results(query: str, hits: Sequence[SearchHit], *, note: str = "") -> str:
    """The observation block for one query.

    ``note`` explains an empty result (for example, that the query was not recorded)
    and is shown only when ``hits`` is empty.
    """
    shown = _one_line(query)
    if not hits:
        reason = f" ({note})" if note else ""
        return f"No results found for '{shown}'{reason}. Try a shorter or more general query."
    entries = []
    for rank, hit in enumerate(hits, start=1):
        lines = [f"{rank}. [{_one_line(hit.title) or hit.url}]({hit.url})"]
        if hit.date:
            lines.append(f"Date published: {_one_line(hit.date)}")
        if hit.snippet:
            lines.append(_one_line(hit.snippet))
        entries.append("\n".join(lines))
    noun = "result" if len(hits) == 1 else "results"
    header = f"A search for '{shown}' found {len(hits)} {noun}:\n\n## Web Results\n"
    return header + "\n\n".join(entries)


def format_many(
    queries: Sequence[str],
    results: Sequence[Sequence[SearchHit]],
    errors: Mapping[str, str] | None = None,
) -> str:
    """Blocks of several queries joined by a ``=======`` separator line.

    ``errors`` maps a query to a note for its empty result; pass a backend's
    ``last_errors`` right after its ``search`` call.
    """
    if len(queries) != len(results):
        raise ValueError(
            f"format_many got {len(queries)} queries but {len(results)} result lists; "
            "pass the list that search() returned for these queries."
        )
    errors = errors or {}
    blocks = [format_results(q, r, note=errors.get(q, "")) for q, r in zip(queries, results)]
    return RESULTS_SEPARATOR.join(blocks)


def search_and_format(backend: SearchBackend, queries: Sequence[str] | str, k: int = 10) -> str:
    """Run ``backend.search`` and format the results with its error notes, if any."""
    batch = _as_batch(queries)
    results = backend.search(batch, k)
    return format_many(batch, results, getattr(backend, "last_errors", None))


def _as_batch(queries: Sequence[str] | str) -> list[str]:
    # A bare string is a Sequence[str] too; searching its characters is never meant.
    return [queries] if isinstance(queries, str) else [str(q) for q in queries]


# --------------------------------------------------------------------------- BM25


def _analyzer(stem: bool) -> tantivy.TextAnalyzer:
    """Tantivy's built-in ``en_stem`` pipeline (``stem=True``), so query tokens
    equal indexed terms; without the stemmer, the query's own lowercase words."""
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
    )
    return (builder.filter(tantivy.Filter.stemmer("english")) if stem else builder).build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("url", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", stored=True, tokenizer_name="en_stem")
    # Stored because snippets are cut from the page text at query time.
    builder.add_text_field("body", stored=True, tokenizer_name="en_stem")
    return builder.build()


def _url_key(url: str) -> str:
    """Two URLs that differ only by fragment or surrounding space are one page."""
    return url.strip().split("#", 1)[0]


@dataclass(frozen=True)
class BuildStats:
    """What ``BM25Search.build`` did: documents indexed, duplicates and empty URLs
    skipped, and the wall time in seconds (including the commit)."""

    docs: int
    duplicates: int
    skipped: int
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class ParsedQuery:
    """A user query as BM25 terms, and for each term the lowercase word prefixes
    that mark it in page text (for snippets)."""

    terms: tuple[str, ...]  # distinct stemmed terms, as indexed
    forms: tuple[tuple[str, ...], ...]  # forms[i]: prefixes that mark terms[i]


def _parse_query(text: str, stem: tantivy.TextAnalyzer, words: tantivy.TextAnalyzer) -> ParsedQuery:
    """Terms of a user query. Tantivy's query language is never involved, so quotes,
    colons, parentheses, ``AND``/``OR``/``NOT``, ``+-^~*`` are plain punctuation."""
    plain = words.analyze(text)
    stems = stem.analyze(text)
    if len(stems) != len(plain):  # the stemmer keeps one token per word; be safe
        stems = [(stem.analyze(w) or [w])[0] for w in plain]
    forms: dict[str, set[str]] = {}
    for word, term in zip(plain, stems):
        if term not in forms and len(forms) >= MAX_QUERY_TERMS:
            continue
        forms.setdefault(term, set()).update((term, word))
    # A page word marks a term when it starts with the stem or with the query's
    # word ("citi" covers "cities", "city" covers "city"); a form that extends
    # another form of the same term adds nothing.
    minimal = []
    for alts in forms.values():
        ordered = sorted(alts, key=lambda f: (len(f), f))
        kept = [f for i, f in enumerate(ordered) if not any(f.startswith(g) for g in ordered[:i])]
        minimal.append(tuple(kept))
    return ParsedQuery(tuple(forms), tuple(minimal))


def _term_positions(text: str, forms: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """Sorted (char offset, term index) of words in ``text`` that start with a form.

    ``str.find`` per form is far cheaper than one regex alternation, which Python
    must try at every offset and compile anew for every query.
    """
    low = text.lower()
    found: list[tuple[int, int]] = []
    for term, alts in enumerate(forms):
        for form in alts:
            pos = low.find(form)
            count = 0
            while pos >= 0 and count < SNIPPET_MAX_MATCHES:
                if pos == 0 or not low[pos - 1].isalnum():
                    found.append((pos, term))
                    count += 1
                pos = low.find(form, pos + len(form))
    found.sort()
    return found


def best_snippet(
    text: str,
    forms: Sequence[Sequence[str]],
    weights: Sequence[float],
    width: int = 300,
) -> str:
    """The ``width``-char window of ``text`` that covers the most query weight.

    A word starting with one of ``forms[i]`` (lowercase) marks term ``i``, of
    weight ``weights[i]`` (its idf). A window scores the summed weight of the
    distinct terms it holds plus a small bonus per repeat; with no match the
    snippet is the page's opening. Whitespace is collapsed; cut ends get "...".
    """
    width = max(int(width), 40)
    matches = _term_positions(text[:SNIPPET_SCAN_CHARS], forms) if forms else []
    # Some context before the first matched word reads better than starting on it;
    # the scored span leaves room for it and for snapping to word boundaries.
    lead = min(width // 5, 60) if matches else 0
    start = _densest_start(matches, weights, width - lead - 10) if matches else 0
    begin = max(0, start - lead)
    end = min(len(text), begin + width)
    if begin > 0:
        space = _find_space(text, begin, min(begin + 30, start))
        begin = space + 1 if space >= 0 else begin
    if end < len(text):
        space = _find_space(text, end - 1, max(begin, end - 30), step=-1)
        end = space if space > begin else end
    snippet = _one_line(text[begin:end])
    if begin > 0:
        snippet = "..." + snippet
    if end < len(text):
        snippet += "..."
    return snippet


def _find_space(text: str, start: int, stop: int, step: int = 1) -> int:
    """First whitespace offset from ``start`` towards ``stop`` (exclusive), or -1."""
    for i in range(start, stop, step):
        if text[i].isspace():
            return i
    return -1


def _densest_start(matches: Sequence[tuple[int, int]], weights: Sequence[float], span: int) -> int:
    """Start offset of the best-scoring window of ``span`` chars that starts at a
    match; a two-pointer sweep, O(len(matches))."""
    counts: dict[int, int] = {}
    score = 0.0
    best_score, best_start = -1.0, matches[0][0]
    right = 0
    for left, (pos, _) in enumerate(matches):
        while right < len(matches) and matches[right][0] < pos + span:
            term = matches[right][1]
            counts[term] = counts.get(term, 0) + 1
            score += weights[term] if counts[term] == 1 else 0.05 * weights[term]
            right += 1
        if score > best_score:
            best_score, best_start = score, pos
        term = matches[left][1]
        counts[term] -= 1
        score -= weights[term] if counts[term] == 0 else 0.05 * weights[term]
    return best_start


class BM25Search:
    """BM25 over page title and text (tantivy), one document per page.

    Build once with ``build`` / ``build_from_store``; any number of processes can
    then ``open`` the index directory and search it concurrently (readers take no
    lock). Stemming is English (tantivy's ``en_stem``); queries are OR-ed terms.

    Options (also accepted by ``build``, ``build_from_store`` and ``open``):
    ``title_boost``: weight of a title match relative to a body match;
    ``snippet_chars``: snippet length in characters; ``common_df``: a term found
    in more than this fraction of pages (a stopword in all but name, idf < 0.11
    at 0.9) is left out of a query that has other terms, which makes such
    queries several times faster and barely moves the ranking; 1.0 keeps all.
    """

    name = "bm25"

    def __init__(
        self,
        index: tantivy.Index,
        *,
        title_boost: float = 2.0,
        snippet_chars: int = 300,
        common_df: float = 0.9,
    ):
        self.index = index
        self.title_boost = float(title_boost)
        self.snippet_chars = int(snippet_chars)
        self.common_df = float(common_df)
        self.last_errors: dict[str, str] = {}
        self.build_stats: BuildStats | None = None
        self._schema = index.schema
        self._stem = _analyzer(stem=True)
        self._words = _analyzer(stem=False)

    # ---------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        index_dir: str | Path | None,
        docs: Iterable[tuple[str, str, str]],
        *,
        overwrite: bool = False,
        heap_bytes: int = 512_000_000,
        progress: bool = False,
        **options: Any,
    ) -> BM25Search:
        """Index ``(url, title, text)`` tuples; a URL seen before is skipped.

        ``index_dir=None`` keeps the index in memory. An existing index in
        ``index_dir`` is replaced only with ``overwrite=True`` (readers keep seeing
        the old one until the single commit at the end). ``heap_bytes`` is the
        writer's memory budget: larger means fewer, bigger segments.
        ``progress`` shows a progress bar on stderr.
        """
        index = _create_index(index_dir, overwrite)
        began = time.perf_counter()
        writer = index.writer(heap_size=heap_bytes)
        if overwrite:
            writer.delete_all_documents()
        seen: set[str] = set()
        duplicates = skipped = 0
        for url, title, text in _progress(docs, progress):
            key = _url_key(url or "")
            if not key:
                skipped += 1
                continue
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            writer.add_document(tantivy.Document(url=key, title=title or "", body=text or ""))
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        search = cls(index, **options)
        search.build_stats = BuildStats(len(seen), duplicates, skipped, time.perf_counter() - began)
        return search

    @classmethod
    def build_from_store(
        cls,
        store: SnapshotStore,
        index_dir: str | Path | None,
        *,
        workers: int = 1,
        overwrite: bool = False,
        progress: bool = False,
        **kwargs: Any,
    ) -> BM25Search:
        """Index every 2xx html/text page of ``store``, rendered with ``render_page``.

        ``workers > 1`` renders in that many processes (rendering, not indexing,
        is the slow part). Other keyword arguments go to ``build``.
        """
        pages = _progress(store.pages(), progress, total=len(store))
        if workers <= 1:
            return cls.build(index_dir, _rendered_docs(pages), overwrite=overwrite, **kwargs)
        import multiprocessing

        # Fork before the index writer starts its threads; the children only render.
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            docs = _rendered_docs_parallel(pages, pool, batch=128 * workers)
            return cls.build(index_dir, docs, overwrite=overwrite, **kwargs)

    @classmethod
    def open(cls, index_dir: str | Path, **options: Any) -> BM25Search:
        """Open an index built by ``build`` for searching."""
        path = Path(index_dir)
        if not path.is_dir() or not tantivy.Index.exists(str(path)):
            raise FileNotFoundError(
                f"No search index in {path}; build one with "
                f"BM25Search.build_from_store(store, {str(path)!r})."
            )
        if not tantivy.Index.is_compatible(str(path)):
            raise ValueError(
                f"The search index in {path} was written by another tantivy version; "
                "rebuild it with BM25Search.build_from_store."
            )
        return cls(tantivy.Index.open(str(path)), **options)

    def reload(self) -> None:
        """See the latest commit (after the index directory was rebuilt)."""
        self.index.reload()

    def __len__(self) -> int:
        return self.index.searcher().num_docs

    # ---------------------------------------------------------------- searching

    def parse(self, query: str) -> ParsedQuery:
        """The terms ``search`` looks up for ``query`` (at most ``MAX_QUERY_TERMS``)."""
        return _parse_query(query, self._stem, self._words)

    def search(
        self, queries: Sequence[str] | str, k: int = 10, *, snippets: bool = True
    ) -> list[list[SearchHit]]:
        """Top ``k`` pages for each query, best first; never raises on query text.

        A query without searchable words gets ``[]`` and a note in ``last_errors``.
        ``snippets=False`` leaves snippets empty (faster when only URLs matter).
        """
        batch = _as_batch(queries)
        self.last_errors = {}
        searcher = self.index.searcher()  # one consistent view for the whole batch
        out: list[list[SearchHit]] = []
        for query in batch:
            parsed = self.parse(query)
            if not parsed.terms:
                self.last_errors[query] = "the query has no searchable words"
                out.append([])
                continue
            out.append(self._search_one(searcher, parsed, k, snippets) if k > 0 else [])
        return out

    def _query(self, parsed: ParsedQuery) -> tantivy.Query:
        """Each term in title (boosted) OR body; built from terms, never parsed."""
        should, term_query = tantivy.Occur.Should, tantivy.Query.term_query
        clauses = []
        for term in parsed.terms:
            title = term_query(self._schema, "title", term)
            clauses.append((should, tantivy.Query.boost_query(title, self.title_boost)))
            clauses.append((should, term_query(self._schema, "body", term)))
        return tantivy.Query.boolean_query(clauses)

    def _search_one(
        self, searcher: tantivy.Searcher, parsed: ParsedQuery, k: int, snippets: bool
    ) -> list[SearchHit]:
        total = max(searcher.num_docs, 1)
        doc_freqs = [searcher.doc_freq("body", t) for t in parsed.terms]
        keep = [i for i, df in enumerate(doc_freqs) if df <= self.common_df * total]
        if keep and len(keep) < len(doc_freqs):
            parsed = ParsedQuery(
                tuple(parsed.terms[i] for i in keep), tuple(parsed.forms[i] for i in keep)
            )
            doc_freqs = [doc_freqs[i] for i in keep]
        query = self._query(parsed)
        # A few spare hits so that duplicates from an index built elsewhere still
        # leave k distinct URLs.
        limit = k + 4
        found = searcher.search(query, limit, count=False).hits
        # Equal scores come in document order, which depends on how the writer's
        # threads split the pages into segments: fetch the whole tie at the k-th
        # place so that URL order can settle it the same way on every build.
        while len(found) == limit and found[-1][0] == found[min(k, len(found)) - 1][0]:
            limit *= 2
            found = searcher.search(query, limit, count=False).hits
        if not found:
            return []
        weights = [_idf(df, total) for df in doc_freqs]
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for score, doc in _url_ordered_ties(searcher, found):
            url = doc.get_first("url") or ""
            if url in seen:
                continue
            seen.add(url)
            body = (doc.get_first("body") or "") if snippets else ""
            snippet = best_snippet(body, parsed.forms, weights, self.snippet_chars) if body else ""
            hits.append(SearchHit(doc.get_first("title") or "", url, snippet, float(score)))
            if len(hits) == k:
                break
        return hits


def _url_ordered_ties(searcher: tantivy.Searcher, found: Sequence[tuple[float, Any]]) -> Iterator[tuple[float, Any]]:
    """``(score, document)`` best first, equal scores in URL order; a document is
    fetched from the store only when it is reached."""
    start = 0
    while start < len(found):
        stop = start + 1
        while stop < len(found) and found[stop][0] == found[start][0]:
            stop += 1
        group = [(score, searcher.doc(address)) for score, address in found[start:stop]]
        if len(group) > 1:
            group.sort(key=lambda pair: pair[1].get_first("url") or "")
        yield from group
        start = stop


def _progress(items: Iterable[Any], enabled: bool, total: int | None = None) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc="indexing", unit="page", mininterval=1.0)


def _idf(doc_freq: int, total: int) -> float:
    return math.log(1.0 + (total - doc_freq + 0.5) / (doc_freq + 0.5))


def _create_index(index_dir: str | Path | None, overwrite: bool) -> tantivy.Index:
    schema = _schema()
    if index_dir is None:
        return tantivy.Index(schema)
    path = Path(index_dir)
    path.mkdir(parents=True, exist_ok=True)
    if tantivy.Index.exists(str(path)):
        if not overwrite:
            raise FileExistsError(
                f"A search index already exists in {path}; pass overwrite=True to replace it."
            )
        return tantivy.Index.open(str(path))
    if any(path.iterdir()):
        raise FileExistsError(
            f"{path} is not empty and holds no search index; pick an empty directory."
        )
    return tantivy.Index(schema, path=str(path))


def _render_doc(page: Any) -> tuple[str, str, str] | None:
    """``(url, title, text)`` of one stored page, or None when it is not a 2xx page."""
    from webdancer.web.render import page_text

    if not 200 <= int(getattr(page, "status", 200)) < 300:
        return None
    title, text = page_text(page.body, page.url, content_type=page.content_type)
    return page.url, title or page.url, text


def _rendered_docs(pages: Iterable[Any]) -> Iterator[tuple[str, str, str]]:
    for page in pages:
        doc = _render_doc(page)
        if doc is not None:
            yield doc


def _rendered_docs_parallel(
    pages: Iterable[Any], pool: Any, batch: int
) -> Iterator[tuple[str, str, str]]:
    """Render in ``pool``, in order. One batch renders while the previous one is
    indexed, so memory stays at two batches however large the store."""
    iterator = iter(pages)
    pending = pool.map_async(_render_doc, list(islice(iterator, batch)), chunksize=16)
    while pending is not None:
        upcoming = list(islice(iterator, batch))
        following = pool.map_async(_render_doc, upcoming, chunksize=16) if upcoming else None
        for doc in pending.get():
            if doc is not None:
                yield doc
        pending = following


# --------------------------------------------------------------------------- Serper


def serper_uri(query: str, k: int) -> str:
    """Resource URI under which the results of ``query`` (top ``k``) are recorded."""
    return f"urn:webdancer:search:serper:{k}:{_one_line(query)}"


def _hits_to_json(hits: Sequence[SearchHit]) -> bytes:
    rows = [{"title": h.title, "url": h.url, "snippet": h.snippet, "date": h.date} for h in hits]
    return json.dumps(rows, ensure_ascii=False).encode("utf-8")


def _hits_from_json(body: bytes) -> list[SearchHit]:
    rows = json.loads(body.decode("utf-8"))
    return [
        SearchHit(
            title=str(r.get("title", "")),
            url=str(r["url"]),
            snippet=str(r.get("snippet", "")),
            date=str(r.get("date", "")),
        )
        for r in rows
        if isinstance(r, dict) and r.get("url")
    ]


def parse_serper(data: Any, k: int) -> list[SearchHit]:
    """Organic results of a serper.dev response, at most ``k``."""
    organic = data.get("organic", []) if isinstance(data, dict) else []
    hits = []
    for item in organic if isinstance(organic, list) else []:
        if not isinstance(item, dict) or not item.get("link"):
            continue
        link = str(item["link"])
        hits.append(
            SearchHit(
                title=str(item.get("title") or link),
                url=link,
                snippet=str(item.get("snippet") or ""),
                score=0.0,
                date=str(item.get("date") or ""),
            )
        )
    return hits[:k]


class SerperSearch:
    """Live Google results from serper.dev.

    An HTTP or parse failure gives that query ``[]`` and a reason in
    ``last_errors`` (also logged); it never raises. With a ``store``, each
    successful result list is recorded under ``serper_uri(query, k)`` so that
    ``RecordedSearch`` can replay the run offline.
    """

    name = "serper"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        endpoint: str = SERPER_ENDPOINT,
        fetcher: Fetcher | None = None,
        store: SnapshotStore | None = None,
        gl: str = "us",
        hl: str = "en",
        timeout_s: float = 15.0,
    ):
        key = api_key if api_key is not None else os.environ.get("SERPER_API_KEY", "")
        if not key:
            raise ValueError(
                "SerperSearch needs a serper.dev API key: set SERPER_API_KEY or pass api_key=."
            )
        self.api_key = key
        self.endpoint = endpoint
        self.fetcher = fetcher
        self.store = store
        self.gl, self.hl = gl, hl
        self.timeout_s = timeout_s
        self.last_errors: dict[str, str] = {}

    def search(self, queries: Sequence[str] | str, k: int = 10) -> list[list[SearchHit]]:
        """Top ``k`` (1..100) Google results per query, one request per query."""
        batch = _as_batch(queries)
        self.last_errors = {}
        k = max(0, min(int(k), 100))
        out: list[list[SearchHit]] = []
        for query in batch:
            hits, error = self._search_one(_one_line(query), k)
            if error:
                self.last_errors[query] = error
                logger.warning("search %r failed: %s", query, error)
            out.append(hits)
        return out

    def _search_one(self, query: str, k: int) -> tuple[list[SearchHit], str]:
        if not query:
            return [], "the query is empty"
        if k == 0:
            return [], ""
        payload = {"q": query, "num": k, "gl": self.gl, "hl": self.hl}
        status, body, error = self._post(payload)
        if error:
            return [], f"search failed: {error}"
        if not 200 <= status < 300:
            return [], f"search failed: {self.endpoint} answered HTTP {status}"
        try:
            hits = parse_serper(json.loads(body.decode("utf-8")), k)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return [], f"search failed: {self.endpoint} returned a body that is not JSON"
        if self.store is not None:
            self.store.put_resource(serper_uri(query, k), _hits_to_json(hits), "application/json")
        return hits, ""

    def _post(self, payload: dict[str, Any]) -> tuple[int, bytes, str]:
        """(status, body, error text or "")."""
        headers = {"X-API-KEY": self.api_key, "Content-Type": "application/json"}
        if self.fetcher is not None:
            result = self.fetcher.post_json(self.endpoint, payload, headers)
            return result.status, result.body, result.error or ""
        import requests

        try:
            response = requests.post(
                self.endpoint, json=payload, headers=headers, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            return 0, b"", f"{type(exc).__name__} while calling {self.endpoint}"
        return response.status_code, response.content, ""


class RecordedSearch:
    """Replays result lists recorded by ``SerperSearch`` from a snapshot store.

    A query recorded with a different ``k`` or never recorded gives ``[]`` and a
    note in ``last_errors``; the network is never used.
    """

    name = "recorded"

    def __init__(self, store: SnapshotStore):
        self.store = store
        self.last_errors: dict[str, str] = {}

    def search(self, queries: Sequence[str] | str, k: int = 10) -> list[list[SearchHit]]:
        batch = _as_batch(queries)
        self.last_errors = {}
        out: list[list[SearchHit]] = []
        for query in batch:
            hits, error = self._replay(query, k)
            if error:
                self.last_errors[query] = error
            out.append(hits)
        return out

    def _replay(self, query: str, k: int) -> tuple[list[SearchHit], str]:
        if not _one_line(query):
            return [], "the query is empty"
        record = self.store.get(serper_uri(query, k))
        body = getattr(record, "body", None)
        if body is None:
            return [], "this query was not recorded in the snapshot"
        try:
            return _hits_from_json(body)[:k], ""
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            return [], "the recorded result for this query is unreadable"
