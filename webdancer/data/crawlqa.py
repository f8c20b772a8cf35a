"""CRAWLQA: crawl a site breadth-first, then write questions its pages answer.

WebDancer's crawl-based QA: start from a root URL, read the site the way a visitor
would (following links, level by level), and turn what was read into question and
answer pairs with the pages that support them.

    result = crawl(store, "https://synthwiki.example/", max_depth=3, max_pages=200)
    tasks = synthesize_crawlqa(store, root, GraphQuestionWriter(graph), n=100, seed=0)

Question writers are pluggable (``QuestionWriter``): ``GraphQuestionWriter`` writes
offline from the synthetic site's knowledge graph, using only entities whose pages
the crawl reached; ``EngineQuestionWriter`` asks a chat model to write a question
from the text of one to three linked pages of any site.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from webdancer.agents.engines.base import ChatEngine, SamplingParams
from webdancer.envs.synthetic_tasks import make_task, split_of
from webdancer.envs.tasks import Task
from webdancer.web.render import RenderedPage, render_page
from webdancer.web.snapshots import Miss, Page
from webdancer.web.synthetic_graph import Entity, KnowledgeGraph, walk
from webdancer.web.synthetic_html import INCOMING_LIMIT, SITE_NAME
from webdancer.web.synthetic_names import pick, randint, slugify
from webdancer.web.synthetic_schema import (
    ATTR_BY_NAME,
    ATTRIBUTES,
    CATEGORY_ATTRS,
    RELATION_BY_NAME,
    TYPE_BY_NAME,
)
from webdancer.web.urls import normalize_url

log = logging.getLogger("webdancer.data")

GRAPH_KINDS = ("single_page", "multi_hop", "counting", "intersection")
ORACLE_KINDS = frozenset({"single_page", "multi_hop"})  # kinds the scripted OracleAgent can solve
_HTML_TYPES = ("text/html", "application/xhtml+xml")


class PageSource(Protocol):
    """What ``crawl`` reads from: a ``SnapshotStore`` in replay mode, or in record
    mode to crawl the live web and keep what it saw."""

    def get(self, url: str) -> Page | Miss: ...


@dataclass
class CrawlResult:
    """Pages reached by a breadth-first crawl, keyed by normalized URL.

    ``depth[url]`` is the number of links followed from the root (root = 0),
    ``parents[url]`` the page whose link first led there (None for the root), and
    ``order`` the URLs in the order they were read. ``misses`` counts links the source
    could not serve, ``non_html`` responses that were not HTML, ``offsite`` links to
    other hosts left alone.
    """

    root_url: str
    pages: dict[str, RenderedPage] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    misses: int = 0
    miss_urls: list[str] = field(default_factory=list)
    non_html: int = 0
    offsite: int = 0
    seconds: float = 0.0

    def path_to(self, url: str) -> list[str]:
        """URLs from the root to ``url`` along the links the crawl followed."""
        out: list[str] = []
        node: str | None = url
        while node is not None:
            out.append(node)
            node = self.parents.get(node)
        return out[::-1]

    def linked(self, url: str) -> list[str]:
        """Crawled pages that the page at ``url`` links to, in link order, without repeats."""
        page = self.pages.get(url)
        if page is None:
            return []
        out: list[str] = []
        for link in page.links:
            key = normalize_url(link.url)
            if key != url and key in self.pages and key not in out:
                out.append(key)
        return out


def _host(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def _is_html(page: Page) -> bool:
    media = page.content_type.split(";", 1)[0].strip().lower()
    if media:
        return media in _HTML_TYPES
    return page.body.lstrip()[:1] == b"<"  # no declared type: sniff


def crawl(
    store: PageSource,
    root_url: str,
    *,
    max_depth: int = 3,
    max_pages: int = 200,
    same_site: bool = True,
    progress: bool = True,
) -> CrawlResult:
    """Read pages breadth-first from ``root_url`` through their links.

    At most ``max_pages`` HTML pages are read, none more than ``max_depth`` links
    from the root. Misses, non-HTML responses and (with ``same_site``) links to
    other hosts are counted and skipped; a miss never stops the crawl.
    """
    if max_depth < 0 or max_pages < 1:
        raise ValueError(f"max_depth={max_depth} must be >= 0 and max_pages={max_pages} >= 1.")
    t0 = time.perf_counter()
    root = normalize_url(root_url)
    result = CrawlResult(root_url=root)
    queue: deque[tuple[str, int, str | None]] = deque([(root, 0, None)])
    seen = {root}
    host = _host(root)
    bar = _progress_bar(max_pages, progress)
    while queue and len(result.pages) < max_pages:
        url, depth, parent = queue.popleft()
        got = store.get(url)
        if isinstance(got, Miss):
            result.misses += 1
            result.miss_urls.append(url)
            continue
        if not _is_html(got):
            result.non_html += 1
            continue
        seen.add(normalize_url(got.url))  # a redirect target is the same page
        page = render_page(got.body, got.url, content_type=got.content_type)
        result.pages[url] = page
        result.depth[url] = depth
        result.parents[url] = parent
        result.order.append(url)
        if bar is not None:
            bar.update(1)
        if depth == max_depth:
            continue
        for link in page.links:
            target = normalize_url(link.url)
            if target in seen or urlsplit(target).scheme not in ("http", "https"):
                continue
            seen.add(target)
            if same_site and _host(target) != host:
                result.offsite += 1
                continue
            queue.append((target, depth + 1, url))
    if bar is not None:
        bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="crawl", unit="page")


# ---------------------------------------------------------------- question writers


class QuestionWriter(Protocol):
    """Writes up to ``n`` tasks about the pages of a crawl, drawing choices from ``rng``."""

    def write(self, crawl: CrawlResult, rng: random.Random, n: int) -> list[Task]: ...


def _crawl_meta(crawl: CrawlResult, kind: str, golden_path: Sequence[str],
                source_urls: Sequence[str]) -> dict[str, Any]:
    first = golden_path[0] if golden_path else crawl.root_url
    return {
        "source": "crawlqa", "kind": kind, "source_urls": list(source_urls),
        "golden_path": list(golden_path), "hops": len(golden_path), "root_url": crawl.root_url,
        "crawl_path": crawl.path_to(first) if first in crawl.pages else [],
        "oracle": kind in ORACLE_KINDS,
    }


Step2 = tuple[str, str]  # (relation, object entity id)


def _definite(phrase: str) -> bool:
    """'the city whose mayor is {o}' names one entity; 'a person born in {o}' any of several."""
    return phrase.startswith("the ")


@dataclass(frozen=True)
class _Count:
    """A count the site states or lists completely, and where."""

    question: str
    answer: int
    page_url: str
    entities: tuple[str, ...]
    relation: str = ""


class _CrawlView:
    """The part of the knowledge graph a crawl reached, with the candidates for each kind."""

    def __init__(self, graph: KnowledgeGraph, crawl: CrawlResult) -> None:
        self.graph = graph
        self.crawl = crawl
        crawled = [graph.by_url(url) for url in crawl.order]
        self.entities: list[Entity] = [e for e in crawled if e is not None]
        ids = {e.id for e in self.entities}
        # Only crawled entities, only edges between them: a walk here stays on read pages.
        self.subgraph = KnowledgeGraph(
            {e.id: Entity(e.id, e.type, e.name, e.url, e.attributes,
                          {r: [t for t in ts if t in ids] for r, ts in e.relations.items()})
             for e in self.entities},
            seed=graph.seed, base_url=graph.base_url)
        self._links: dict[str, frozenset[str]] = {}
        self._counts: list[_Count] | None = None
        self._pairs: list[tuple[Entity, Step2, Step2]] | None = None

    def links_of(self, url: str) -> frozenset[str]:
        if url not in self._links:
            page = self.crawl.pages.get(url)
            links = page.links if page is not None else ()
            self._links[url] = frozenset(normalize_url(link.url) for link in links)
        return self._links[url]

    def subjects(self, relation: str, object_id: str) -> list[Entity]:
        return [self.graph.entity(s) for r, s in self.graph.incoming(object_id) if r == relation]

    def listed_completely(self, relation: str, obj: Entity) -> bool:
        """True when the object's page lists every subject of ``relation`` (no cut-off)."""
        subjects = self.subjects(relation, obj.id)
        if len(subjects) >= INCOMING_LIMIT:  # the page shows only the first few
            return False
        return {s.url for s in subjects} <= self.links_of(obj.url)

    @property
    def counts(self) -> list[_Count]:
        if self._counts is None:
            self._counts = self._incoming_counts() + self._category_counts()
        return self._counts

    def _incoming_counts(self) -> list[_Count]:
        out = []
        for obj in self.entities:
            for rel in sorted({r for r, _ in self.graph.incoming(obj.id)}):
                spec = RELATION_BY_NAME[rel]
                n = len(self.subjects(rel, obj.id))
                # "the city whose mayor is X" names one entity: nothing to count.
                if n < 2 or _definite(spec.backward) or not self.listed_completely(rel, obj):
                    continue
                about = spec.backward.format(o=obj.name)
                question = f"How many articles on {SITE_NAME} are about {about}?"
                out.append(_Count(question, n, obj.url, (obj.name,), rel))
        return out

    def _category_counts(self) -> list[_Count]:
        sizes = Counter((e.type, str(e.attributes.get(CATEGORY_ATTRS[e.type][0])))
                        for e in self.graph.entities.values() if e.type in CATEGORY_ATTRS)
        out = []
        for type_name, (attr, values) in CATEGORY_ATTRS.items():
            label = ATTR_BY_NAME[(type_name, attr)].label
            plural = TYPE_BY_NAME[type_name].plural.lower()
            for value in values:
                url = normalize_url(f"{self.graph.base_url}/category/{attr}/{slugify(value)}")
                page = self.crawl.pages.get(url)
                n = sizes[(type_name, value)]
                # Ask only what the page itself states.
                if page is None or f"contains {n:,} article" not in page.text:
                    continue
                category = f"{label}: {value}"
                question = f'How many {plural} on {SITE_NAME} are in the category "{category}"?'
                out.append(_Count(question, n, url, (category,)))
        return out

    @property
    def pairs(self) -> list[tuple[Entity, Step2, Step2]]:
        """(X, (rel1, A), (rel2, B)): X is the only subject of both rel1 -> A and rel2 -> B,
        and the first one's page lists all its subjects, so a reader can check every one."""
        if self._pairs is None:
            self._pairs = []
            crawled = {e.id for e in self.entities}
            usable = {r.name for r in RELATION_BY_NAME.values()
                      if not r.many and not _definite(r.backward)}
            for x in self.entities:
                steps = [(r, t) for r, ts in x.relations.items() if r in usable
                         for t in ts if t in crawled]
                for i, a in enumerate(steps):
                    for b in steps[i + 1:]:
                        pair = self._intersection(x, a, b)
                        if pair is not None:
                            self._pairs.append((x, *pair))
        return self._pairs

    def _intersection(self, x: Entity, a: Step2, b: Step2) -> tuple[Step2, Step2] | None:
        sa = {s.id for s in self.subjects(*a)}
        sb = {s.id for s in self.subjects(*b)}
        if sa & sb != {x.id} or len(sa) < 2 or len(sb) < 2:
            return None
        first, second = (a, b) if len(sa) <= len(sb) else (b, a)
        for lead, other in ((first, second), (second, first)):
            if self.listed_completely(lead[0], self.graph.entity(lead[1])):
                return lead, other
        return None


class GraphQuestionWriter:
    """Questions over a synthetic site's knowledge graph, limited to crawled pages.

    Kinds: ``single_page`` (an attribute of one entity), ``multi_hop`` (an attribute
    reached through ``hops - 1`` single-valued relations, every page crawled),
    ``counting`` (a number the site states, or a list it gives in full) and
    ``intersection`` (the one entity that meets two conditions). Kinds are taken in
    turn, so a batch mixes them evenly; a kind with nothing to ask is dropped.
    """

    def __init__(self, graph: KnowledgeGraph, *, kinds: Sequence[str] = GRAPH_KINDS,
                 hops: tuple[int, int] = (2, 4)) -> None:
        unknown = sorted(set(kinds) - set(GRAPH_KINDS))
        if unknown or not kinds:
            raise ValueError(f"unknown question kinds {unknown or kinds!r}; "
                             f"choose from {GRAPH_KINDS}.")
        if not 2 <= hops[0] <= hops[1]:
            raise ValueError(f"hops={hops!r} for multi_hop questions must be (low, high) "
                             "with 2 <= low <= high.")
        self.graph = graph
        self.kinds = tuple(kinds)
        self.hops = (int(hops[0]), int(hops[1]))

    def write(self, crawl: CrawlResult, rng: random.Random, n: int) -> list[Task]:
        view = _CrawlView(self.graph, crawl)
        if not view.entities:
            return []
        makers = {"single_page": self._single_page, "multi_hop": self._multi_hop,
                  "counting": self._counting, "intersection": self._intersection}
        kinds, failures = list(self.kinds), dict.fromkeys(self.kinds, 0)
        tasks: list[Task] = []
        seen: set[str] = set()
        turn = 0
        while len(tasks) < n and kinds:
            kind = kinds[turn % len(kinds)]
            turn += 1
            task = makers[kind](view, rng)
            if task is None or task.question in seen:
                failures[kind] += 1
                if failures[kind] >= 50:  # this crawl offers nothing (new) of this kind
                    kinds.remove(kind)
                continue
            failures[kind] = 0
            seen.add(task.question)
            tasks.append(task)
        return tasks

    def _graph_task(self, view: _CrawlView, kind: str, start: Entity, path: list[Step2],
                    attr: str) -> Task:
        base = make_task(view.subgraph, start, path, attr)
        golden = base.meta["golden_path"]
        meta = {**base.meta, **_crawl_meta(view.crawl, kind, golden, golden)}
        return Task(base.question, base.answer, root_url=view.crawl.root_url, meta=meta)

    def _single_page(self, view: _CrawlView, rng: random.Random) -> Task | None:
        e = pick(rng, view.entities)
        attr = pick(rng, ATTRIBUTES[e.type]).name
        return self._graph_task(view, "single_page", e, [], attr)

    def _multi_hop(self, view: _CrawlView, rng: random.Random) -> Task | None:
        start = pick(rng, view.entities)
        hops = randint(rng, *self.hops)
        path = walk(view.subgraph, start.id, hops - 1, rng, functional_only=True)
        if not path:
            return None
        target = view.subgraph.entity(path[-1][1])
        attr = pick(rng, ATTRIBUTES[target.type]).name
        return self._graph_task(view, "multi_hop", start, path, attr)

    def _counting(self, view: _CrawlView, rng: random.Random) -> Task | None:
        if not view.counts:
            return None
        c = pick(rng, view.counts)
        meta = _crawl_meta(view.crawl, "counting", [c.page_url], [c.page_url])
        meta.update(entities=list(c.entities), relations=[c.relation] if c.relation else [])
        return Task(c.question, f"{c.answer:,}", root_url=view.crawl.root_url, meta=meta)

    def _intersection(self, view: _CrawlView, rng: random.Random) -> Task | None:
        if not view.pairs:
            return None
        x, (r1, a_id), (r2, b_id) = pick(rng, view.pairs)
        a, b = self.graph.entity(a_id), self.graph.entity(b_id)
        first = RELATION_BY_NAME[r1].backward.format(o=a.name)
        second = RELATION_BY_NAME[r2].backward.format(o=b.name)
        question = f"Which {x.type} on {SITE_NAME} is both {first} and {second}?"
        # Read the complete list on A's page, then check each member's page.
        meta = _crawl_meta(view.crawl, "intersection", [a.url, x.url], [a.url, b.url, x.url])
        meta.update(entities=[a.name, x.name], relations=[r1, r2],
                    conditions=[[r1, a.name], [r2, b.name]])
        return Task(question, x.name, root_url=view.crawl.root_url, meta=meta)


# ---------------------------------------------------------------- a chat model writes


WRITER_SYSTEM = (
    "You write questions for training and testing web research agents. Each question must be "
    "answerable from the web pages you are shown, by someone who starts at the site's front page "
    "and follows links. The answer must be short (a name, a number, a date or a few words) and "
    "stated on the pages; the question must not contain its own answer."
)


def _writer_prompt(crawl: CrawlResult, urls: Sequence[str], excerpt_chars: int) -> str:
    blocks = []
    for i, url in enumerate(urls, 1):
        page = crawl.pages[url]
        blocks.append(f"[Page {i}] {page.title}\nURL: {url}\n{page.text[:excerpt_chars].strip()}")
    need = ("It must need a fact from every page above." if len(urls) > 1
            else "It must be answerable from this page alone.")
    return (
        "\n\n".join(blocks)
        + f"\n\nWrite one question about the page{'s' if len(urls) > 1 else ''} above. {need}\n"
        "Reply with only a JSON object, no other text:\n"
        '{"question": "...", "answer": "...", '
        '"evidence_urls": ["the URLs of the pages that hold the answer"]}'
    )


def parse_json_reply(text: str) -> dict[str, Any] | None:
    """The first JSON object in a model's reply (code fences and prose around it
    allowed), or None when there is none."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _short_text(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else ""


class EngineQuestionWriter:
    """A chat model writes questions from one to ``max_pages`` linked crawled pages.

    Each question is one conversation; a batch goes to ``engine.chat`` at once.
    Replies that are not a JSON object with a question and an answer, or whose
    question gives its answer away, are skipped and counted in ``stats``.
    """

    def __init__(self, engine: ChatEngine, params: SamplingParams | None = None, *,
                 max_pages: int = 3, excerpt_chars: int = 2000, min_page_chars: int = 200) -> None:
        self.engine = engine
        self.params = params or SamplingParams(max_new_tokens=512, temperature=0.7, stop=())
        self.max_pages = max(1, max_pages)
        self.excerpt_chars = excerpt_chars
        self.min_page_chars = min_page_chars
        self.stats = {"asked": 0, "malformed": 0, "leaky": 0, "written": 0}

    def pick_pages(self, crawl: CrawlResult, rng: random.Random) -> list[str]:
        """A random crawled page, then up to ``max_pages - 1`` pages each linked from the last."""
        candidates = [u for u in crawl.order if len(crawl.pages[u].text) >= self.min_page_chars]
        if not candidates:
            return []
        urls = [pick(rng, candidates)]
        for _ in range(randint(rng, 1, self.max_pages) - 1):
            nxt = [u for u in crawl.linked(urls[-1]) if u not in urls
                   and len(crawl.pages[u].text) >= self.min_page_chars]
            if not nxt:
                break
            urls.append(pick(rng, nxt))
        return urls

    def write(self, crawl: CrawlResult, rng: random.Random, n: int) -> list[Task]:
        picks = [urls for urls in (self.pick_pages(crawl, rng) for _ in range(n)) if urls]
        if not picks:
            return []
        conversations = [
            [{"role": "system", "content": WRITER_SYSTEM},
             {"role": "user", "content": _writer_prompt(crawl, urls, self.excerpt_chars)}]
            for urls in picks
        ]
        replies = self.engine.chat(conversations, self.params)
        self.stats["asked"] += len(picks)
        tasks = []
        for urls, reply in zip(picks, replies):
            task = self._task(crawl, urls, reply.text)
            if task is not None:
                tasks.append(task)
        self.stats["written"] += len(tasks)
        return tasks

    def _task(self, crawl: CrawlResult, urls: list[str], reply: str) -> Task | None:
        row = parse_json_reply(reply) or {}
        question, answer = _short_text(row.get("question")), _short_text(row.get("answer"))
        if not question or not answer:
            self.stats["malformed"] += 1
            return None
        if answer.casefold() in question.casefold():
            self.stats["leaky"] += 1
            return None
        listed = row.get("evidence_urls")
        listed = listed if isinstance(listed, list) else []
        cited = [normalize_url(u) for u in listed if isinstance(u, str)]
        # Only pages that were shown count as evidence; with none, all of them do.
        evidence = [u for u in dict.fromkeys(cited) if u in urls] or list(urls)
        kind = "single_source" if len(evidence) == 1 else "multi_source"
        meta = _crawl_meta(crawl, kind, urls, evidence)
        meta["writer"] = "engine"
        return Task(question, answer, root_url=crawl.root_url, meta=meta)


# ---------------------------------------------------------------- synthesis


def _keep(question: str, split: str | None, test_fraction: float) -> bool:
    return split is None or split_of(question, test_fraction) == split


def synthesize_crawlqa(
    store: PageSource,
    root_url: str,
    writer: QuestionWriter,
    *,
    n: int,
    seed: int = 0,
    max_depth: int = 3,
    max_pages: int = 200,
    same_site: bool = True,
    split: str | None = None,
    test_fraction: float = 0.2,
    progress: bool = True,
) -> list[Task]:
    """Crawl from ``root_url``, then ``questions_from_crawl``. The same store, writer
    and ``seed`` give the same tasks."""
    if split not in (None, "train", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'train', 'test' or None.")
    result = crawl(store, root_url, max_depth=max_depth, max_pages=max_pages, same_site=same_site,
                   progress=progress)
    return questions_from_crawl(result, writer, n=n, seed=seed, split=split,
                                test_fraction=test_fraction)


def questions_from_crawl(
    result: CrawlResult,
    writer: QuestionWriter,
    *,
    n: int,
    seed: int = 0,
    split: str | None = None,
    test_fraction: float = 0.2,
    max_rounds: int = 8,
) -> list[Task]:
    """``n`` distinct tasks about the crawled pages (fewer, with a warning, when the
    crawl offers no more); ``split`` keeps only questions of that split (``split_of``),
    so train and test never share a question. Deterministic for a seed.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'train', 'test' or None.")
    rng = random.Random(f"crawlqa-{seed}")
    share = 1.0 if split is None else (test_fraction if split == "test" else 1.0 - test_fraction)
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(max_rounds):
        want = n - len(tasks)
        if want <= 0:
            break
        batch = writer.write(result, rng, math.ceil(want / max(share, 0.05)))
        fresh = 0
        for task in batch:
            if task.question in seen:
                continue
            seen.add(task.question)
            fresh += 1
            if _keep(task.question, split, test_fraction) and len(tasks) < n:
                meta = {**task.meta, "split": split or "all", "seed": seed}
                task_id = f"crawlqa-{split or 'all'}-{len(tasks)}"
                tasks.append(Task(task.question, task.answer, task_id,
                                  task.root_url or result.root_url, meta))
        if not fresh:
            break
    if len(tasks) < n:
        log.warning("crawlqa: wrote %d of %d tasks from %d crawled pages; crawl more pages "
                    "for more.", len(tasks), n, len(result.pages))
    return tasks
