from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

import lxml.html
import pytest

from webdancer.web.synthetic import (
    ATTRIBUTES,
    PAGE_CONTENT_TYPE,
    PRESENT_YEAR,
    RELATION_BY_NAME,
    KnowledgeGraph,
    SyntheticSite,
    describe,
    find_path,
    format_value,
    generate_site,
    iter_edges,
    iter_pages,
    path_urls,
    plan_counts,
    walk,
    write_site,
)
from webdancer.web.synthetic_names import is_allowed

HREF = re.compile(r'href="([^"]+)"')
REAL_CAPITALS = ("Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo", "Cairo", "Lima", "Oslo",
                 "Vienna", "Prague", "Athens", "Dublin", "Ottawa", "Canberra", "Moscow", "Beijing",
                 "Seoul", "Nairobi", "Lisbon", "Warsaw", "Bern", "Riga", "Sofia", "Doha", "Quito")


@pytest.fixture(scope="module")
def site() -> SyntheticSite:
    return generate_site(600, seed=3)


@pytest.fixture(scope="module")
def pages(site: SyntheticSite) -> dict[str, str]:
    return dict(iter_pages(site))


def _digest(site: SyntheticSite, tmp: Path) -> str:
    site.graph.to_json(tmp)
    h = hashlib.sha256(tmp.read_bytes())
    for url, html in iter_pages(site):
        h.update(url.encode())
        h.update(html.encode())
    return h.hexdigest()


def _origin(base: str) -> str:
    m = re.match(r"https?://[^/]+", base)
    assert m
    return m.group(0)


def _infobox(html: str) -> str:
    start = html.index('<table class="infobox">')
    return html[start : html.index("</table>", start)]


# ---------------------------------------------------------------- size and determinism


@pytest.mark.parametrize("n", [186, 600, 1234, 20_000, 100_000])
def test_page_count_is_within_one_percent(n: int) -> None:
    from webdancer.web.synthetic import HUB_PAGES, PER_INDEX_PAGE

    counts = plan_counts(n)
    total = sum(counts.values()) + sum(-(-c // PER_INDEX_PAGE) for c in counts.values()) + HUB_PAGES
    assert abs(total - n) <= max(1, n // 100)


def test_site_has_the_planned_pages(site: SyntheticSite, pages: dict[str, str]) -> None:
    assert len(site) == len(pages) == len(site.pages)
    assert abs(len(pages) - 600) <= 6
    assert all(html.startswith("<!DOCTYPE html>") for html in pages.values())


def test_too_small_a_site_names_the_minimum() -> None:
    with pytest.raises(ValueError, match=r"n_pages >= \d+"):
        generate_site(50)


def test_bad_base_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="http"):
        generate_site(300, base_url="synthwiki.example")


def test_same_seed_same_bytes_other_seed_differs(site: SyntheticSite, tmp_path: Path) -> None:
    again = generate_site(600, seed=3)
    assert _digest(site, tmp_path / "a.json") == _digest(again, tmp_path / "b.json")
    other = generate_site(600, seed=4)
    site.graph.to_json(tmp_path / "a.json")
    other.graph.to_json(tmp_path / "c.json")
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()
    sample = [e.id for e in list(site.graph.entities.values())[:20]]
    assert any(site.graph.entity(i).name != other.graph.entity(i).name for i in sample)


def test_same_bytes_in_another_process(site: SyntheticSite, tmp_path: Path) -> None:
    code = (
        "import sys, hashlib, pathlib\n"
        "from webdancer.web.synthetic import generate_site, iter_pages\n"
        "s = generate_site(600, seed=3)\n"
        "p = pathlib.Path(sys.argv[1]); s.graph.to_json(p)\n"
        "h = hashlib.sha256(p.read_bytes())\n"
        "for u, x in iter_pages(s):\n"
        "    h.update(u.encode()); h.update(x.encode())\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sub.json")], env=env,
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == _digest(site, tmp_path / "here.json")


# ---------------------------------------------------------------- links and reachability


def _crawl(site: SyntheticSite, pages: dict[str, str]) -> set[str]:
    """Pages reached from home by following links; fails on a link to a missing page."""
    origin = _origin(site.base_url)
    seen = {site.home_url}
    queue = deque([site.home_url])
    while queue:
        url = queue.popleft()
        for href in HREF.findall(pages[url]):
            target = origin + href if href.startswith("/") else href
            if target.endswith("/static/wiki.css"):
                continue
            assert target in pages, f"{url} links to {target}, which is not a page"
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def test_every_page_is_reachable_from_home_and_no_link_is_broken(
    site: SyntheticSite, pages: dict[str, str]
) -> None:
    assert _crawl(site, pages) == set(pages)


def test_every_entity_is_listed_on_an_index_page(
    site: SyntheticSite, pages: dict[str, str]
) -> None:
    listed: set[str] = set()
    for url, route in site.routes.items():
        if route[0] == "index":
            listed.update(HREF.findall(pages[url]))
    home_links = set(HREF.findall(pages[site.home_url]))
    origin = _origin(site.base_url)
    for e in site.graph.entities.values():
        assert e.url[len(origin):] in listed
        landing = f"/index/{e.type}"
        assert landing in home_links


def test_index_pages_are_alphabetical_and_about_100_long(site: SyntheticSite) -> None:
    for type_name, chunks in site.index_pages.items():
        ids = [i for chunk in chunks for i in chunk]
        names = [site.graph.entity(i).name.casefold() for i in ids]
        assert names == sorted(names)
        assert all(len(c) <= 100 for c in chunks) and all(len(c) == 100 for c in chunks[:-1])
        assert len(ids) == len(site.graph.of_type(type_name))


def test_site_under_a_base_path() -> None:
    small = generate_site(300, seed=1, base_url="http://127.0.0.1:8000/wiki-site/")
    e = next(iter(small.graph.entities.values()))
    assert e.url.startswith("http://127.0.0.1:8000/wiki-site/wiki/")
    html = small.page(e.url)
    relative = [h for h in HREF.findall(html) if h != e.url]  # all but the canonical link
    assert relative and all(h.startswith("/wiki-site/") for h in relative)
    assert small.home_url == "http://127.0.0.1:8000/wiki-site/"
    pages = dict(iter_pages(small))
    assert _crawl(small, pages) == set(pages)


# ---------------------------------------------------------------- article content


def test_infobox_and_prose_state_every_fact(site: SyntheticSite, pages: dict[str, str]) -> None:
    origin = _origin(site.base_url)
    for e in site.graph.entities.values():
        html = pages[e.url]
        box = _infobox(html)
        prose = html[html.index("</table>", html.index('<table class="infobox">')) :]
        for spec in ATTRIBUTES[e.type]:
            value = format_value(spec, e.attributes[spec.name])
            assert f"<td>{value}</td>" in box, (e.id, spec.name)
            if not (spec.zero and e.attributes[spec.name] == 0):
                assert value in prose, (e.id, spec.name)
        for rel, target in site.graph.neighbors(e.id):
            href = f'href="{site.graph.entity(target).url[len(origin):]}"'
            assert href in box, (e.id, rel, target)
            assert href in prose, (e.id, rel, target)
            assert RELATION_BY_NAME[rel].label in box


def test_article_looks_like_a_wiki_page(site: SyntheticSite) -> None:
    e = site.graph.of_type("city")[0]
    doc = lxml.html.fromstring(site.page(e.url))
    assert doc.findtext(".//title") == f"{e.name} - SynthWiki"
    assert doc.xpath("string(//h1)") == e.name
    assert doc.xpath("//header//nav//a") and doc.xpath("//footer//a")
    assert doc.xpath("//nav[@class='breadcrumb']//a[@href='/']")
    assert doc.xpath("//div[@id='cookie-banner']")
    assert len(doc.xpath("//article/p")) >= 3
    assert doc.xpath("//h2[text()='See also']")
    assert doc.xpath("//link[@rel='canonical']/@href") == [e.url]


def test_some_articles_carry_a_data_table(site: SyntheticSite, pages: dict[str, str]) -> None:
    entities = site.graph.entities.values()
    with_table = sum('<table class="wikitable">' in pages[e.url] for e in entities)
    assert 0 < with_table < len(site.graph)


def test_names_are_unique_ascii_and_fictional(site: SyntheticSite) -> None:
    graph = generate_site(20_000, seed=0).graph
    for g in (site.graph, graph):
        names = [e.name for e in g.entities.values()]
        assert len(set(names)) == len(names)
        for name in names:
            assert is_allowed(name), name
            assert not set(re.split(r"[ -]", name)) & set(REAL_CAPITALS), name
    assert not is_allowed("Paris Reach") and not is_allowed("Lower Oslo")
    urls = [e.url for e in graph.entities.values()]
    assert len(set(urls)) == len(urls) and all(u.isascii() for u in urls)


def test_years_are_consistent(site: SyntheticSite) -> None:
    g = site.graph
    year = {
        e.id: e.attributes.get("birth_year", e.attributes.get("founded_year"))
        for e in g.entities.values()
    }
    for src, rel, dst in iter_edges(g):
        s = g.entity(src).attributes
        if rel == "founded_by":
            assert s["founded_year"] >= year[dst] + 22
        elif rel == "mentor":
            assert 15 <= s["birth_year"] - year[dst] <= 60
        elif rel == "organized_by":
            assert s["year"] > year[dst]
        elif rel == "created_by":
            assert s["year"] >= year[dst] + 18
        elif rel == "parent_organization":
            assert year[dst] < s["founded_year"]
        elif rel == "capital":
            assert g.entity(dst).relations["located_in"] == [src]
    for e in g.entities.values():
        for key in ("birth_year", "founded_year", "year", "discovered_year"):
            if key in e.attributes:
                assert int(e.attributes[key]) <= PRESENT_YEAR


def test_every_entity_has_two_to_four_outgoing_relations(site: SyntheticSite) -> None:
    degrees = [len(site.graph.neighbors(i)) for i in site.graph.entities]
    assert min(degrees) == 2 and max(degrees) == 4


# ---------------------------------------------------------------- graph API


def test_json_round_trip(site: SyntheticSite, tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    site.graph.to_json(path)
    back = KnowledgeGraph.from_json(path)
    assert back == site.graph and back.seed == 3 and back.base_url == site.base_url
    back.to_json(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    assert json.loads(path.read_text())["entities"][0]["id"] == "person:0"


def test_json_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="to_json"):
        KnowledgeGraph.from_json(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not a synthetic knowledge graph"):
        KnowledgeGraph.from_json(tmp_path / "other.json")


def test_lookups(site: SyntheticSite) -> None:
    g = site.graph
    e = g.of_type("organization")[5]
    assert g.by_name(e.name) is e and g.by_url(e.url) is e and g.by_url(e.url + "/") is e
    assert g.by_url(site.home_url) is None
    founder = e.relations["founded_by"][0]
    assert ("founded_by", e.id) in g.incoming(founder)
    with pytest.raises(KeyError, match="person:12"):
        g.entity("nobody")
    with pytest.raises(KeyError, match="valid ones"):
        g.of_type("planet")


def test_walk_finds_fifteen_hops_without_revisiting(site: SyntheticSite) -> None:
    g = site.graph
    rng = random.Random(0)
    found = 0
    for e in list(g.entities.values())[:10]:
        path = walk(g, e.id, 15, rng, functional_only=True)
        ids = [e.id] + [t for _, t in path]
        assert len(set(ids)) == len(ids)
        node = e.id
        for rel, target in path:
            assert (rel, target) in g.neighbors(node)
            assert not RELATION_BY_NAME[rel].many
            node = target
        found += len(path) == 15
        urls = path_urls(g, e.id, path)
        assert len(urls) == len(path) + 1 and all(u in site.routes for u in urls)
    assert found >= 5
    assert walk(g, "person:0", 0, rng) == []
    assert all(rel == "born_in" for rel, _ in walk(g, "person:0", 3, rng, relations={"born_in"}))
    with pytest.raises(KeyError, match="valid ones"):
        walk(g, "person:0", 3, rng, relations={"likes"})


def test_walk_is_deterministic_given_the_rng(site: SyntheticSite) -> None:
    a = walk(site.graph, "city:1", 12, random.Random(7))
    b = walk(site.graph, "city:1", 12, random.Random(7))
    assert a == b and len(a) == 12


def test_find_path_is_shortest_and_valid(site: SyntheticSite) -> None:
    g = site.graph
    path = walk(g, "work:0", 6, random.Random(1))
    end = path[-1][1]
    short = find_path(g, "work:0", end, max_hops=15)
    assert short is not None and 1 <= len(short) <= len(path) and short[-1][1] == end
    node = "work:0"
    for rel, target in short:
        assert (rel, target) in g.neighbors(node)
        node = target
    assert find_path(g, "work:0", "work:0") == []


def test_describe_phrases_relations() -> None:
    assert describe("born_in", subject="Alia Vosk") == "the city where Alia Vosk was born"
    assert describe("headquartered_in", obj="Tessmar") == "an organization headquartered in Tessmar"
    with pytest.raises(KeyError, match="valid ones"):
        describe("likes", subject="x")
    with pytest.raises(ValueError, match="exactly one"):
        describe("born_in")


# ---------------------------------------------------------------- writing


class _FakeStore:
    def __init__(self) -> None:
        self.items: dict[str, tuple[bytes, str]] = {}

    def put(self, url: str, body: bytes, *, content_type: str = "") -> None:
        assert url not in self.items
        self.items[url] = (body, content_type)


def test_write_site_puts_every_page(site: SyntheticSite, pages: dict[str, str]) -> None:
    store = _FakeStore()
    assert write_site(site, store) == len(site)
    assert set(store.items) == set(pages)
    url = site.graph.of_type("species")[0].url
    body, ctype = store.items[url]
    assert body == pages[url].encode("utf-8") and ctype == PAGE_CONTENT_TYPE


def test_lazy_pages_mapping(site: SyntheticSite, pages: dict[str, str]) -> None:
    url = site.graph.of_type("event")[2].url
    assert site.pages[url] == pages[url] == site.page(url)
    assert next(iter(site.pages)) == site.home_url
    with pytest.raises(KeyError, match="not a page"):
        site.page(site.base_url + "/wiki/Person/Nobody")
