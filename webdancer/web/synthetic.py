"""A deterministic, seeded fictional encyclopedia website and its knowledge graph.

The offline world agents train on: ``generate_site(n_pages, seed)`` draws a
knowledge graph of people, cities, regions, organizations, species, events and
works with fictional names, and lays it out as a wiki whose pages render lazily:

    /                          main page (links to every type index and to categories)
    /about, /categories        hubs
    /index/<type>              one line per index page of that type
    /index/<type>/<n>          ~100 articles per page, alphabetical
    /wiki/<Type>/<Slug>        one article per entity: infobox, prose, related entries
    /category/<attr>/<value>   articles grouped by occupation, industry, medium, ...

Every article is reachable from ``/`` through the indexes, every fact in the graph
is stated on its subject's page (in the infobox and in a sentence), and each
relation target is linked from that page, so a question written from a path in the
graph (see ``walk``) can be answered by visiting the pages along it.

    site = generate_site(10_000, seed=0)
    for url, html in iter_pages(site): ...
    write_site(site, store); site.graph.to_json("graph.json")
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from webdancer.web import synthetic_hubs as hubs
from webdancer.web.synthetic_graph import (
    DEFAULT_BASE_URL,
    PRESENT_YEAR,
    Entity,
    KnowledgeGraph,
    Step,
    find_path,
    generate_graph,
    iter_edges,
    path_urls,
    walk,
)
from webdancer.web.synthetic_html import SITE_NAME, PageRenderer
from webdancer.web.synthetic_names import slugify
from webdancer.web.synthetic_schema import (
    ATTRIBUTES,
    CATEGORY_ATTRS,
    RELATION_BY_NAME,
    RELATIONS,
    TYPES,
    AttrSpec,
    RelationSpec,
    TypeSpec,
    describe,
    fact_sentence,
    format_value,
)

__all__ = [
    "ATTRIBUTES", "CATEGORY_ATTRS", "DEFAULT_BASE_URL", "PAGE_CONTENT_TYPE", "PER_INDEX_PAGE",
    "PRESENT_YEAR", "RELATIONS", "RELATION_BY_NAME", "SITE_NAME", "TYPES", "AttrSpec", "Entity",
    "KnowledgeGraph", "RelationSpec", "Step", "SyntheticSite", "TypeSpec", "describe",
    "fact_sentence", "find_path", "format_value", "generate_graph", "generate_site", "iter_edges",
    "iter_pages", "path_urls", "plan_counts", "walk", "write_site",
]

PAGE_CONTENT_TYPE = "text/html; charset=utf-8"
PER_INDEX_PAGE = 100
HUB_PAGES = 3 + len(TYPES) + sum(len(values) for _, values in CATEGORY_ATTRS.values())


class PageSink(Protocol):
    """What ``write_site`` needs of a store (``SnapshotStore`` has it)."""

    def put(self, url: str, body: bytes, *, content_type: str = ...) -> None: ...


# ---------------------------------------------------------------- sizing


def _split(n_entities: int) -> dict[str, int]:
    """Entity counts per type in proportion to ``TypeSpec.share`` (largest remainders)."""
    raw = {t.name: n_entities * t.share for t in TYPES}
    counts = {k: int(v) for k, v in raw.items()}
    order = sorted(raw, key=lambda k: (counts[k] - raw[k], k))
    for k in order[: n_entities - sum(counts.values())]:
        counts[k] += 1
    return counts


def _total(counts: dict[str, int]) -> int:
    index = sum(math.ceil(c / PER_INDEX_PAGE) for c in counts.values())
    return sum(counts.values()) + index + HUB_PAGES


def _feasible(counts: dict[str, int]) -> bool:
    if counts["region"] < 3 or counts["city"] < counts["region"]:
        return False
    return all(counts[t] >= len(values) for t, (_, values) in CATEGORY_ATTRS.items())


def _fit(n_pages: int) -> dict[str, int]:
    lo, hi = 0, max(n_pages, 0)
    while lo < hi:  # the largest entity count whose site fits in n_pages
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _total(_split(mid)) <= n_pages else (lo, mid - 1)
    counts = _split(lo)
    for t in sorted(counts, key=lambda k: -counts[k]):
        # An entity added to a type whose last index page has room adds exactly one page.
        while _total(counts) < n_pages and counts[t] % PER_INDEX_PAGE:
            counts[t] += 1
    return counts


def plan_counts(n_pages: int) -> dict[str, int]:
    """Entity counts per type such that entities + index pages + hubs == ``n_pages``
    (or one or two fewer when no entity can be added without opening an index page)."""
    counts = _fit(n_pages)
    if not _feasible(counts):
        smallest = next(n for n in range(max(n_pages, 1), 100 * HUB_PAGES) if _feasible(_fit(n)))
        raise ValueError(
            f"n_pages={n_pages} is too small for a connected site with every category filled; "
            f"use n_pages >= {smallest}."
        )
    return counts


# ---------------------------------------------------------------- the site


IndexPages = dict[str, list[list[str]]]  # type -> pages -> entity ids, alphabetical
Categories = dict[tuple[str, str], list[str]]  # (attribute, value) -> entity ids, alphabetical
Routes = dict[str, tuple[str, ...]]  # url -> what renders it


class LazyPages(Mapping[str, str]):
    """URL -> HTML, rendered on access; iteration yields URLs in site order."""

    def __init__(self, site: SyntheticSite) -> None:
        self._site = site

    def __getitem__(self, url: str) -> str:
        return self._site.page(url)

    def __iter__(self) -> Iterator[str]:
        return iter(self._site.routes)

    def __len__(self) -> int:
        return len(self._site.routes)


@dataclass
class SyntheticSite:
    """A generated wiki: its graph, its URL layout, and pages rendered on demand.

    ``routes`` maps every page URL, in site order, to what renders it: ("home",),
    ("about",), ("categories",), ("landing", type), ("index", type, n),
    ("entity", id) or ("category", attribute, value).
    """

    graph: KnowledgeGraph
    base_url: str
    seed: int
    index_pages: IndexPages
    categories: Categories
    routes: Routes
    _renderer: PageRenderer | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def home_url(self) -> str:
        return self.base_url + "/"

    @property
    def pages(self) -> LazyPages:
        return LazyPages(self)

    def __len__(self) -> int:
        return len(self.routes)

    def page(self, url: str) -> str:
        """The HTML of the page at ``url``."""
        route = self.routes.get(url)
        if route is None:
            raise KeyError(f"{url} is not a page of this site; site.routes lists every page URL.")
        return self._render(url, route)

    def _render(self, url: str, route: tuple[str, ...]) -> str:
        r = self._renderer
        if r is None:
            r = PageRenderer(
                self.graph, self.base_url, self.seed, self.index_pages, self.categories
            )
            self._renderer = r
        kind = route[0]
        if kind == "entity":
            return r.entity_page(self.graph.entities[route[1]])
        if kind == "index":
            return hubs.index_page(r, url, route[1], int(route[2]))
        if kind == "category":
            return hubs.category_page(r, url, route[1], route[2])
        if kind == "landing":
            return hubs.landing_page(r, url, route[1])
        if kind == "home":
            return hubs.home_page(r, url)
        if kind == "about":
            return hubs.about_page(r, url)
        return hubs.categories_page(r, url)


def _layout(graph: KnowledgeGraph, base: str) -> tuple[IndexPages, Categories, Routes]:
    alphabetical = sorted(graph.entities.values(), key=lambda e: (e.name.casefold(), e.name))
    by_type: dict[str, list[Entity]] = {t.name: [] for t in TYPES}
    for e in alphabetical:
        by_type[e.type].append(e)
    index_pages = {
        t: [[e.id for e in ents[i : i + PER_INDEX_PAGE]]
            for i in range(0, len(ents), PER_INDEX_PAGE)]
        for t, ents in by_type.items()
    }
    categories: Categories = {}
    for t, (attr, values) in CATEGORY_ATTRS.items():
        for v in values:
            categories[(attr, v)] = []
        for e in by_type[t]:
            categories[(attr, str(e.attributes[attr]))].append(e.id)
    routes: Routes = {
        f"{base}/": ("home",), f"{base}/about": ("about",), f"{base}/categories": ("categories",)
    }
    for t in TYPES:
        routes[f"{base}/index/{t.name}"] = ("landing", t.name)
        for n in range(1, len(index_pages[t.name]) + 1):
            routes[f"{base}/index/{t.name}/{n}"] = ("index", t.name, str(n))
    for e in graph.entities.values():
        routes[e.url] = ("entity", e.id)
    for attr, value in categories:
        routes[f"{base}/category/{attr}/{slugify(value)}"] = ("category", attr, value)
    return index_pages, categories, routes


def generate_site(n_pages: int, seed: int = 0, base_url: str = DEFAULT_BASE_URL) -> SyntheticSite:
    """A fictional wiki of about ``n_pages`` pages (exact in practice, never more).

    The same ``n_pages``, ``seed`` and ``base_url`` give the same graph and the same
    page bytes. Pages are not rendered here; see ``iter_pages`` and ``SyntheticSite.page``.
    """
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url {base_url!r} must start with http:// or https://.")
    base = base_url.rstrip("/")
    graph = generate_graph(plan_counts(n_pages), seed=seed, base_url=base)
    index_pages, categories, routes = _layout(graph, base)
    return SyntheticSite(graph, base, seed, index_pages, categories, routes)


def iter_pages(site: SyntheticSite) -> Iterator[tuple[str, str]]:
    """Every (url, html) of the site in site order, rendered one at a time."""
    for url, route in site.routes.items():
        yield url, site._render(url, route)


def write_site(site: SyntheticSite, store: PageSink, *, progress: bool = False) -> int:
    """Put every page into ``store`` as a 200 text/html response; returns the page count.

    The graph is not written here; call ``site.graph.to_json(path)`` next to the store.
    """
    pages = iter_pages(site)
    if progress:
        from tqdm import tqdm

        pages = tqdm(pages, total=len(site), desc="synthetic pages", unit="page")
    n = 0
    for url, html in pages:
        store.put(url, html.encode("utf-8"), content_type=PAGE_CONTENT_TYPE)
        n += 1
    return n
