"""The knowledge graph behind the synthetic encyclopedia.

``generate_graph`` draws every entity, attribute and relation from one seeded
``random.Random`` in a fixed order, so a seed fixes the graph byte for byte. Years
are kept consistent where a question could compare them: an organization is founded
after its founder's birth, an event after its organizer's founding, a mentor is 15-60
years older than the student, and so on.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from webdancer.web import synthetic_names as names
from webdancer.web.synthetic_names import pick, randint, shuffle
from webdancer.web.synthetic_schema import (
    CLIMATES,
    CONSERVATION,
    EVENT_KINDS,
    HABITATS,
    INDUSTRIES,
    MEDIA,
    OCCUPATIONS,
    RELATION_BY_NAME,
    TAXON_GROUPS,
    TYPE_BY_NAME,
    TYPES,
)

PRESENT_YEAR = 2024  # no date in the world is later
DEFAULT_BASE_URL = "https://synthwiki.example"
GRAPH_FORMAT = "webdancer-synthetic-graph"

Step = tuple[str, str]  # (relation, entity id)


@dataclass(slots=True)
class Entity:
    """One thing the encyclopedia has a page about.

    ``relations`` maps a relation name to the ids of its objects (one id unless the
    relation is ``many``); ``url`` is the absolute URL of the entity's page.
    """

    id: str
    type: str
    name: str
    url: str
    attributes: dict[str, str | int] = field(default_factory=dict)
    relations: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "type": self.type, "name": self.name, "url": self.url,
            "attributes": self.attributes, "relations": self.relations,
        }


@dataclass
class KnowledgeGraph:
    """Entities by id, in generation order, with lookups by name, URL and incoming edge."""

    entities: dict[str, Entity]
    seed: int = 0
    base_url: str = ""
    # Lookup tables, built on first use.
    _by_name: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _by_url: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _incoming: dict[str, list[Step]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.entities)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self.entities

    def entity(self, entity_id: str) -> Entity:
        try:
            return self.entities[entity_id]
        except KeyError:
            raise KeyError(f"no entity with id {entity_id!r}; ids look like 'person:12'.") from None

    def by_name(self, name: str) -> Entity:
        """The entity called ``name`` (names are unique across the whole graph)."""
        if not self._by_name:
            self._by_name = {e.name: e.id for e in self.entities.values()}
        if name not in self._by_name:
            raise KeyError(f"no entity is named {name!r}; names are case-sensitive.")
        return self.entities[self._by_name[name]]

    def by_url(self, url: str) -> Entity | None:
        """The entity whose page is ``url`` (a trailing slash is ignored), else None."""
        if not self._by_url:
            self._by_url = {e.url: e.id for e in self.entities.values()}
        key = self._by_url.get(url.rstrip("/"))
        return self.entities[key] if key is not None else None

    def of_type(self, type_name: str) -> list[Entity]:
        if type_name not in TYPE_BY_NAME:
            raise KeyError(
                f"unknown entity type {type_name!r}; valid ones are {sorted(TYPE_BY_NAME)}."
            )
        return [e for e in self.entities.values() if e.type == type_name]

    def neighbors(self, entity_id: str) -> list[Step]:
        """Outgoing edges as (relation, target id), in the entity's relation order."""
        relations = self.entity(entity_id).relations
        return [(rel, t) for rel, targets in relations.items() for t in targets]

    def incoming(self, entity_id: str) -> list[Step]:
        """Incoming edges as (relation, source id), sources in generation order."""
        if not self._incoming:
            table: dict[str, list[Step]] = {k: [] for k in self.entities}
            for e in self.entities.values():
                for rel, targets in e.relations.items():
                    for t in targets:
                        table[t].append((rel, e.id))
            self._incoming = table
        self.entity(entity_id)
        return self._incoming[entity_id]

    def to_json(self, path: str | Path) -> None:
        """Write the graph as JSON, one entity per line; the same graph gives the same bytes."""
        header = json.dumps(
            {"format": GRAPH_FORMAT, "version": 1, "seed": self.seed, "base_url": self.base_url}
        )
        lines = [json.dumps(e.to_dict(), separators=(",", ":")) for e in self.entities.values()]
        text = header[:-1] + ',"entities":[\n' + ",\n".join(lines) + "\n]}\n"
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> KnowledgeGraph:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"graph file {path} does not exist; write one with graph.to_json(path)."
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != GRAPH_FORMAT:
            raise ValueError(
                f"{path} is not a synthetic knowledge graph; write one with graph.to_json(path)."
            )
        entities = {d["id"]: Entity(**d) for d in data["entities"]}
        return cls(entities, seed=int(data.get("seed", 0)), base_url=str(data.get("base_url", "")))


def _edges(graph: KnowledgeGraph, entity_id: str, allowed: Collection[str] | None) -> list[Step]:
    steps = graph.neighbors(entity_id)
    return steps if allowed is None else [s for s in steps if s[0] in allowed]


def _allowed(relations: Collection[str] | None, functional_only: bool) -> Collection[str] | None:
    unknown = sorted(set(relations or ()) - set(RELATION_BY_NAME))
    if unknown:
        raise KeyError(f"unknown relations {unknown}; valid ones are {sorted(RELATION_BY_NAME)}.")
    if not functional_only:
        return relations
    names_ = relations if relations is not None else RELATION_BY_NAME
    return {r for r in names_ if not RELATION_BY_NAME[r].many}


def walk(
    graph: KnowledgeGraph,
    start_id: str,
    hops: int,
    rng: random.Random,
    *,
    relations: Collection[str] | None = None,
    functional_only: bool = False,
    budget: int = 20_000,
) -> list[Step]:
    """A random path of ``hops`` outgoing edges from ``start_id`` that visits no entity twice.

    Depth-first with random edge order and backtracking, so dead ends do not end the
    walk early. Returns the longest path found, which is shorter than ``hops`` only
    when none of that length exists or ``budget`` edge expansions ran out.
    ``functional_only`` keeps to single-valued relations, so every step of the path
    names one entity (useful for questions with one answer).
    """
    allowed = _allowed(relations, functional_only)
    graph.entity(start_id)
    path: list[Step] = []
    visited = {start_id}
    first = _edges(graph, start_id, allowed)
    shuffle(rng, first)
    stack = [first]
    best: list[Step] = []
    while stack and len(path) < hops and budget > 0:
        frame = stack[-1]
        if not frame:
            stack.pop()
            if path:
                visited.discard(path.pop()[1])
            continue
        step = frame.pop()
        budget -= 1
        if step[1] in visited:
            continue
        path.append(step)
        visited.add(step[1])
        if len(path) > len(best):
            best = list(path)
        nxt = _edges(graph, step[1], allowed)
        shuffle(rng, nxt)
        stack.append(nxt)
    return best


def find_path(
    graph: KnowledgeGraph, source_id: str, target_id: str, max_hops: int = 15,
    *, relations: Collection[str] | None = None,
) -> list[Step] | None:
    """A shortest path of outgoing edges from ``source_id`` to ``target_id`` (BFS), or None."""
    graph.entity(source_id)
    graph.entity(target_id)
    relations = _allowed(relations, False)
    if source_id == target_id:
        return []
    parent: dict[str, tuple[str, str] | None] = {source_id: None}
    depth = {source_id: 0}
    queue = deque([source_id])
    while queue:
        node = queue.popleft()
        if depth[node] >= max_hops:
            continue
        for rel, nxt in _edges(graph, node, relations):
            if nxt in parent:
                continue
            parent[nxt] = (rel, node)
            depth[nxt] = depth[node] + 1
            if nxt == target_id:
                return _unwind(parent, target_id)
            queue.append(nxt)
    return None


def path_urls(graph: KnowledgeGraph, start_id: str, path: list[Step]) -> list[str]:
    """Page URLs along a path from ``walk`` or ``find_path``, the start's page first:
    the pages an agent visits to follow it."""
    return [graph.entity(start_id).url] + [graph.entity(t).url for _, t in path]


def _unwind(parent: dict[str, tuple[str, str] | None], node: str) -> list[Step]:
    out: list[Step] = []
    while (link := parent[node]) is not None:
        out.append((link[0], node))
        node = link[1]
    return out[::-1]


# ---------------------------------------------------------------- generation


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _randrange(rng: random.Random, lo: int, hi: int) -> int:
    """A uniform integer in ``[lo, hi)``."""
    return lo + int(rng.random() * (hi - lo))


def _int(e: Entity, key: str) -> int:
    return int(e.attributes[key])


def _after(rng: random.Random, year: int, lo: int, hi: int) -> int:
    """A year ``lo`` to ``hi`` years after ``year``, kept at or before ``PRESENT_YEAR``
    by narrowing the range rather than clipping (so years do not pile up at the end)."""
    hi = max(lo, min(hi, PRESENT_YEAR - year))
    return min(PRESENT_YEAR, year + randint(rng, lo, hi))


def _spread(rng: random.Random, values: tuple[str, ...], n: int) -> list[str]:
    """``n`` draws from ``values`` that contain every value when ``n >= len(values)``,
    so that no category page is empty."""
    out = list(values[:n]) + [pick(rng, values) for _ in range(n - len(values))]
    shuffle(rng, out)
    return out


class _Builder:
    """Fills a graph type by type; every random draw comes from ``self.rng`` in a fixed order."""

    def __init__(self, counts: dict[str, int], seed: int, base_url: str) -> None:
        self.rng = random.Random(seed)
        self.counts = counts
        self.base = base_url.rstrip("/")
        self.taken: set[str] = set()
        self.by_type: dict[str, list[Entity]] = {t.name: [] for t in TYPES}

    def add(self, type_name: str, name: str, attributes: dict[str, str | int]) -> Entity:
        items = self.by_type[type_name]
        segment = TYPE_BY_NAME[type_name].segment
        url = f"{self.base}/wiki/{segment}/{names.slugify(name)}"
        e = Entity(f"{type_name}:{len(items)}", type_name, name, url, attributes, {})
        items.append(e)
        return e

    def name(self, make: Callable[[], str], what: str) -> str:
        return names.unique_name(make, self.taken, what)

    def persons(self) -> None:
        rng, n = self.rng, self.counts["person"]
        for occupation in _spread(rng, OCCUPATIONS, n):
            attrs: dict[str, str | int] = {
                "birth_year": randint(rng, 1720, 1995),
                "occupation": occupation,
                "height_cm": max(148, min(206, int(rng.gauss(172, 10)))),
                "awards_won": randint(rng, 0, 3) if rng.random() < 0.7 else randint(rng, 4, 12),
            }
            self.add("person", self.name(partial(names.person_name, rng), "person"), attrs)

    def places(self) -> None:
        rng = self.rng
        for _ in range(self.counts["city"]):
            attrs: dict[str, str | int] = {
                "founded_year": randint(rng, 900, 1700),
                "population": _log_uniform(rng, 800, 4_500_000),
                "area_km2": _log_uniform(rng, 5, 2500),
                "elevation_m": randint(rng, 0, 3200),
            }
            self.add("city", self.name(partial(names.city_name, rng), "city"), attrs)
        for climate in _spread(rng, CLIMATES, self.counts["region"]):
            attrs = {"established_year": randint(rng, 600, 1650), "population": 0,
                     "area_km2": _log_uniform(rng, 500, 90_000), "climate": climate}
            self.add("region", self.name(partial(names.region_name, rng), "region"), attrs)

    def organizations(self) -> None:
        rng = self.rng
        for industry in _spread(rng, INDUSTRIES, self.counts["organization"]):
            attrs: dict[str, str | int] = {"founded_year": 0, "industry": industry,
                                           "employee_count": _log_uniform(rng, 5, 250_000)}
            make = partial(names.organization_name, rng, industry)
            self.add("organization", self.name(make, "organization"), attrs)

    def species_events_works(self) -> None:
        rng = self.rng
        for group in _spread(rng, TAXON_GROUPS, self.counts["species"]):
            attrs: dict[str, str | int] = {
                "taxon_group": group, "habitat": pick(rng, HABITATS),
                "lifespan_years": _log_uniform(rng, 1, 180),
                "mass_g": _log_uniform(rng, 1, 900_000),
                "discovered_year": 0, "conservation_status": pick(rng, CONSERVATION),
            }
            make = partial(names.species_name, rng, group)
            self.add("species", self.name(make, "species"), attrs)
        for kind in _spread(rng, EVENT_KINDS, self.counts["event"]):
            attrs = {"event_kind": kind, "year": 0, "attendance": _log_uniform(rng, 40, 500_000),
                     "duration_days": randint(rng, 1, 14)}
            self.add("event", self.name(partial(names.event_name, rng, kind), "event"), attrs)
        for medium in _spread(rng, MEDIA, self.counts["work"]):
            attrs = {"medium": medium, "year": 0, "awards_won": randint(rng, 0, 9)}
            self.add("work", self.name(partial(names.work_title, rng), "work"), attrs)

    def link_places(self) -> None:
        rng, cities, regions = self.rng, self.by_type["city"], self.by_type["region"]
        for i, city in enumerate(cities):
            # The first cities seed one region each, so every region has a capital inside it.
            region = regions[i] if i < len(regions) else pick(rng, regions)
            city.relations["located_in"] = [region.id]
            region.attributes["population"] = _int(region, "population") + _int(city, "population")
        for i, region in enumerate(regions):
            region.relations["capital"] = [cities[i].id]
            rural = randint(rng, 5_000, 900_000)
            region.attributes["population"] = _int(region, "population") + rural
        self._borders(regions)
        order = list(range(len(cities)))
        shuffle(rng, order)
        for a, b in zip(order[0::2], order[1::2]):
            cities[a].relations["twinned_with"] = [cities[b].id]
            cities[b].relations["twinned_with"] = [cities[a].id]
        if len(order) % 2:
            cities[order[-1]].relations["twinned_with"] = [cities[order[0]].id]

    def _borders(self, regions: list[Entity]) -> None:
        rng = self.rng
        ring = list(range(len(regions)))
        shuffle(rng, ring)
        adj: dict[int, list[int]] = {i: [] for i in ring}

        def join(a: int, b: int) -> None:
            if a != b and b not in adj[a]:
                adj[a].append(b)
                adj[b].append(a)

        for i, a in enumerate(ring):
            join(a, ring[(i + 1) % len(ring)])
        for _ in range(len(regions) // 4):
            a, b = rng.sample(ring, 2)
            if len(adj[a]) < 3 and len(adj[b]) < 3:
                join(a, b)
        for i, region in enumerate(regions):
            region.relations["borders"] = [regions[j].id for j in sorted(adj[i])]

    def link_people(self) -> None:
        rng, people, orgs = self.rng, self.by_type["person"], self.by_type["organization"]
        by_age = sorted(people, key=lambda p: (p.attributes["birth_year"], p.id))
        years = [int(p.attributes["birth_year"]) for p in by_age]
        schools = [o for o in orgs if o.attributes["industry"] == "higher education"]
        cities = self.by_type["city"]
        for p in people:
            born = int(p.attributes["birth_year"])
            p.relations["born_in"] = [pick(rng, cities).id]
            p.relations["works_for"] = [pick(rng, orgs).id]
            mentor = self._pick_born_between(by_age, years, born - 60, born - 15)
            if mentor is not None and rng.random() < 0.7:
                p.relations["mentor"] = [mentor.id]
            if schools and rng.random() < 0.5:
                p.relations["educated_at"] = [pick(rng, schools).id]
        # Mayors are living people, and no one is mayor of two cities.
        pool = [p for p in people if 1930 <= int(p.attributes["birth_year"]) <= 1990]
        shuffle(rng, pool)
        for city in cities:
            if pool and rng.random() < 0.4:
                city.relations["mayor"] = [pool.pop().id]

    def _pick_born_between(
        self, by_age: list[Entity], years: list[int], lo: int, hi: int
    ) -> Entity | None:
        i, j = bisect.bisect_left(years, lo), bisect.bisect_right(years, hi)
        return by_age[_randrange(self.rng, i, j)] if i < j else None

    def link_organizations(self) -> None:
        rng, orgs, people = self.rng, self.by_type["organization"], self.by_type["person"]
        cities = self.by_type["city"]
        for o in orgs:
            founder = pick(rng, people)
            born = int(founder.attributes["birth_year"])
            o.attributes["founded_year"] = _after(rng, born, 22, 60)
            o.relations["headquartered_in"] = [pick(rng, cities).id]
            o.relations["founded_by"] = [founder.id]
        # A parent is strictly older than its subsidiary, so ownership has no cycles.
        by_age = sorted(orgs, key=lambda o: (o.attributes["founded_year"], o.id))
        years = [int(o.attributes["founded_year"]) for o in by_age]
        for o in orgs:
            older = bisect.bisect_left(years, int(o.attributes["founded_year"]))
            if older and rng.random() < 0.3:
                o.relations["parent_organization"] = [by_age[_randrange(rng, 0, older)].id]

    def link_rest(self) -> None:
        rng, people, orgs = self.rng, self.by_type["person"], self.by_type["organization"]
        regions, cities = self.by_type["region"], self.by_type["city"]
        species = self.by_type["species"]
        for s in species:
            finder = pick(rng, people)
            s.attributes["discovered_year"] = _after(rng, _int(finder, "birth_year"), 20, 70)
            s.relations["native_to"] = [pick(rng, regions).id]
            s.relations["discovered_by"] = [finder.id]
            if s.attributes["taxon_group"] not in ("fern", "orchid") and rng.random() < 0.4:
                prey = pick(rng, species)
                if prey is not s:
                    s.relations["preys_on"] = [prey.id]
        by_age = sorted(people, key=lambda p: (p.attributes["birth_year"], p.id))
        years = [int(p.attributes["birth_year"]) for p in by_age]
        for ev in self.by_type["event"]:
            org = pick(rng, orgs)
            year = _after(rng, int(org.attributes["founded_year"]), 1, 80)
            ev.attributes["year"] = year
            ev.relations["held_in"] = [pick(rng, cities).id]
            ev.relations["organized_by"] = [org.id]
            speaker = self._pick_born_between(by_age, years, year - 80, year - 25)
            if speaker is not None and rng.random() < 0.5:
                ev.relations["keynote_speaker"] = [speaker.id]
        self._link_works(people, orgs, cities)

    def _link_works(self, people: list[Entity], orgs: list[Entity], cities: list[Entity]) -> None:
        rng = self.rng
        house = {"film": "broadcasting", "play": "theatre", "opera": "theatre",
                 "symphony": "theatre"}
        pools = {
            ind: [o for o in orgs if o.attributes["industry"] == ind]
            for ind in ("publishing", "broadcasting", "theatre")
        }
        for w in self.by_type["work"]:
            creator = pick(rng, people)
            w.attributes["year"] = _after(rng, int(creator.attributes["birth_year"]), 18, 75)
            w.relations["created_by"] = [creator.id]
            pool = pools[house.get(str(w.attributes["medium"]), "publishing")] or orgs
            w.relations["published_by"] = [pick(rng, pool).id]
            if rng.random() < 0.5:
                w.relations["set_in"] = [pick(rng, cities).id]


def generate_graph(
    counts: dict[str, int], seed: int = 0, base_url: str = DEFAULT_BASE_URL
) -> KnowledgeGraph:
    """A knowledge graph with ``counts[type]`` entities of each type (see ``TYPES``).

    Needs at least 3 regions and one entity per category value of each type; the
    same ``counts``, ``seed`` and ``base_url`` always give the same graph.
    """
    missing = [t.name for t in TYPES if t.name not in counts]
    if missing:
        raise ValueError(
            f"counts lacks the entity types {missing}; give a count for every type in TYPES."
        )
    if counts["region"] < 3 or counts["city"] < counts["region"]:
        raise ValueError("counts needs at least 3 regions and at least as many cities as regions.")
    b = _Builder(counts, seed, base_url)
    b.places()
    b.persons()
    b.organizations()
    b.species_events_works()
    b.link_places()
    b.link_people()
    b.link_organizations()
    b.link_rest()
    entities = {e.id: e for t in TYPES for e in b.by_type[t.name]}
    _order_relations(entities)
    return KnowledgeGraph(entities, seed=seed, base_url=base_url.rstrip("/"))


def _order_relations(entities: dict[str, Entity]) -> None:
    """Put each entity's relations in schema order, so pages and JSON read the same way."""
    rank = {name: i for i, name in enumerate(RELATION_BY_NAME)}
    for e in entities.values():
        if len(e.relations) > 1:
            e.relations = dict(sorted(e.relations.items(), key=lambda kv: rank[kv[0]]))


def iter_edges(graph: KnowledgeGraph) -> Iterator[tuple[str, str, str]]:
    """Every edge as (source id, relation, target id)."""
    for e in graph.entities.values():
        for rel, targets in e.relations.items():
            for t in targets:
                yield e.id, rel, t
