"""HTML of the synthetic encyclopedia: the page shell and entity articles.

Pages are assembled from f-strings and precomputed link snippets (no DOM library),
because a 100k-page site must render at well over 10k pages/s. Every choice that
varies between pages (sentence variants, filler, "See also" picks, tables) comes
from an integer hash of the page's position and the seed, so a page renders to the
same bytes whenever and in whatever order it is asked for.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from urllib.parse import urlsplit

from webdancer.web.synthetic_graph import Entity, KnowledgeGraph
from webdancer.web.synthetic_names import slugify
from webdancer.web.synthetic_schema import (
    ATTR_BY_NAME,
    ATTRIBUTES,
    CATEGORY_ATTRS,
    RELATION_BY_NAME,
    TYPES,
    AttrSpec,
    RelationSpec,
    TypeSpec,
    format_value,
    with_article,
)

SITE_NAME = "SynthWiki"
INCOMING_LIMIT = 8  # links per incoming relation on an article

# Article sections per type: (heading, facts stated there), a fact named by attribute or relation.
SECTIONS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "person": (
        ("Early life", ("birth_year", "born_in", "height_cm")),
        ("Career", ("occupation", "works_for", "educated_at", "mentor", "awards_won")),
    ),
    "city": (
        ("Geography", ("located_in", "area_km2", "elevation_m")),
        ("History", ("founded_year", "twinned_with", "mayor")),
        ("Demographics", ("population",)),
    ),
    "region": (
        ("Geography", ("area_km2", "climate", "borders")),
        ("Administration", ("established_year", "capital", "population")),
    ),
    "organization": (
        ("History", ("founded_year", "founded_by", "parent_organization")),
        ("Operations", ("industry", "headquartered_in", "employee_count")),
    ),
    "species": (
        ("Description", ("taxon_group", "mass_g", "lifespan_years")),
        ("Distribution and ecology", ("native_to", "habitat", "preys_on", "conservation_status")),
        ("Discovery", ("discovered_by", "discovered_year")),
    ),
    "event": (
        ("Overview", ("event_kind", "year", "held_in", "duration_days")),
        ("Organization", ("organized_by", "keynote_speaker", "attendance")),
    ),
    "work": (
        ("Background", ("created_by", "year", "medium")),
        ("Publication and reception", ("published_by", "set_in", "awards_won")),
    ),
}

# Opening sentence per type: {n} is the bold name, an attribute name its value, "a_" + an
# attribute the value with an article, and a relation name the link to its first target.
LEADS: dict[str, str] = {
    "person": "{n} is {a_occupation} born in {born_in}.",
    "city": "{n} is a city in {located_in}.",
    "region": "{n} is a region with {a_climate} climate whose capital is {capital}.",
    "organization": "{n} is {a_industry} organization based in {headquartered_in}.",
    "species": "{n} is {a_taxon_group} species native to {native_to}.",
    "event": "{n} is {a_event_kind} held in {held_in} in {year}.",
    "work": "{n} is {a_medium} by {created_by}.",
}

FILLER: tuple[str, ...] = (
    "Archival material concerning {s} is held in several private collections.",
    "Much of what is known about {s} comes from later accounts.",
    "Scholars continue to debate the wider significance of {s}.",
    "A short entry on {s} appeared in an early gazetteer.",
    "Local records mention {s} only in passing.",
    "Several travellers left brief descriptions of {s}.",
    "The reputation of {s} has grown steadily in recent decades.",
    "Contemporary newspapers reported on {s} with some regularity.",
    "A number of minor inaccuracies about {s} persist in popular sources.",
    "Further details about {s} are given in the sources listed below.",
    "Few images of {s} from that period survive.",
    "The name {s} is occasionally misspelled in older documents.",
)
SHORT_REF = {
    "city": "the city", "region": "the region", "organization": "the organization",
    "species": "the species", "event": "the event", "work": "the work",
}
PROGRAMME = (
    "Opening ceremony", "Workshops", "Exhibitions", "Parade", "Lectures", "Competitions",
    "Concerts", "Closing ceremony",
)
COOKIE_BANNER = (
    '<div id="cookie-banner" class="cookie-banner" role="dialog"><p>We use cookies to remember '
    "your preferences and to count visits. By continuing to browse you agree to this.</p>"
    '<button type="button">Accept</button> <button type="button">Decline</button></div>'
)
WITH_TABLES = ("city", "organization", "event", "species")

_Fact = tuple[AttrSpec | None, RelationSpec | None, str]


@dataclass(frozen=True)
class _TypeKit:
    """Per-type pieces of an article, computed once per site."""

    attrs: tuple[tuple[AttrSpec, str], ...]  # spec, infobox row prefix
    lead: str
    lead_keys: tuple[str, ...]
    sections: tuple[tuple[str, list[_Fact]], ...]  # heading html, facts
    crumbs: str
    category_attr: str
    catlinks: dict[str, str]  # category value ("" when the type has none) -> html


def mix(x: int) -> int:
    """A 32-bit integer hash (avalanching), the source of per-page variation."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def short_description(e: Entity) -> str:
    """A few words after an entity's name in lists."""
    a = e.attributes
    if e.type == "person":
        return f"{a['occupation']}, born {a['birth_year']}"
    if e.type in ("city", "region"):
        return f"{e.type}, population {a['population']:,}"
    if e.type == "organization":
        return f"{a['industry']}, founded {a['founded_year']}"
    if e.type == "species":
        return f"{a['taxon_group']}, {a['conservation_status']}"
    if e.type == "event":
        return f"{a['event_kind']}, {a['year']}"
    return f"{a['medium']}, {a['year']}"


def _row(label: str) -> str:
    return f'<tr><th scope="row">{label}</th><td>'


class PageRenderer:
    """Renders the pages of one site; holds the precomputed link snippets.

    ``index_pages``: type -> pages -> entity ids; ``categories``: (attribute, value) ->
    entity ids. Hub pages (home, indexes, categories) are in ``synthetic_hubs``.
    """

    def __init__(
        self,
        graph: KnowledgeGraph,
        base_url: str,
        seed: int,
        index_pages: dict[str, list[list[str]]],
        categories: dict[tuple[str, str], list[str]],
    ) -> None:
        self.graph = graph
        self.seed = seed
        self.base = base_url.rstrip("/")
        self.prefix = urlsplit(self.base).path  # hrefs are root-relative, under the base path
        cut = len(self.base) - len(self.prefix)
        self.index_pages = index_pages
        self.categories = categories
        ents = graph.entities
        self.link = {
            i: f'<a href="{e.url[cut:]}" title="{e.name}">{e.name}</a>' for i, e in ents.items()
        }
        self.pos = {i: k for k, i in enumerate(ents)}
        self.page_of = {
            i: n for pages in index_pages.values() for n, page in enumerate(pages, 1) for i in page
        }
        self.ids_of = {t.name: [i for i, e in ents.items() if e.type == t.name] for t in TYPES}
        self.rel_row = {r.name: _row(r.label) for r in RELATION_BY_NAME.values()}
        self.header = self._header()
        self.footer = self._footer()
        self.kits = {t.name: self._kit(t) for t in TYPES}

    # ------------------------------------------------------------ shell

    def href(self, path: str) -> str:
        return self.prefix + path

    def _header(self) -> str:
        nav = "".join(
            f'<li><a href="{self.href("/index/" + t.name)}">{t.plural}</a></li>' for t in TYPES
        )
        return (
            f'<header class="site-header"><a class="logo" href="{self.href("/")}">{SITE_NAME}</a>'
            f'<nav class="main-nav"><ul><li><a href="{self.href("/")}">Main page</a></li>{nav}'
            f'<li><a href="{self.href("/categories")}">Categories</a></li></ul></nav>'
            f'<form class="search" action="{self.href("/search")}" method="get">'
            f'<input type="search" name="q" placeholder="Search {SITE_NAME}">'
            "<button>Search</button></form></header>"
        )

    def _footer(self) -> str:
        return (
            f'<footer class="site-footer"><p>All text on {SITE_NAME} describes a fictional world '
            "and is available under a free licence; additional terms may apply.</p>"
            f'<ul><li><a href="{self.href("/about")}">About {SITE_NAME}</a></li>'
            f'<li><a href="{self.href("/categories")}">All categories</a></li>'
            f'<li><a href="{self.href("/")}">Main page</a></li></ul>'
            "<p>This page is part of a generated encyclopedia; its contents never change.</p>"
            "</footer>"
        )

    def shell(self, title: str, url: str, crumbs: str, body: str, description: str = "") -> str:
        """A whole HTML document around ``body``."""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title} - {SITE_NAME}</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="description" content="{description or title}">'
            f'<link rel="canonical" href="{url}">'
            f'<link rel="stylesheet" href="{self.prefix}/static/wiki.css"></head>\n'
            f"<body>{COOKIE_BANNER}{self.header}\n"
            f'<main id="content"><nav class="breadcrumb" aria-label="Breadcrumb">{crumbs}</nav>\n'
            f"{body}\n</main>\n{self.footer}</body></html>\n"
        )

    def crumbs(self, *parts: tuple[str, str]) -> str:
        """Breadcrumb trail of (text, path); the last part is the current page, not a link."""
        items = [f'<a href="{self.href("/")}">Main page</a>']
        items += [f'<a href="{self.href(path)}">{text}</a>' for text, path in parts[:-1]]
        items.append(f'<span aria-current="page">{parts[-1][0]}</span>')
        return " &rsaquo; ".join(items)

    # ------------------------------------------------------------ articles

    def _kit(self, t: TypeSpec) -> _TypeKit:
        sections = []
        for heading, facts in SECTIONS[t.name]:
            compiled = [(ATTR_BY_NAME.get((t.name, f)), RELATION_BY_NAME.get(f), f) for f in facts]
            sections.append((f"<h2>{heading}</h2><p>", compiled))
        cat = CATEGORY_ATTRS.get(t.name)
        index = f'<a href="{self.href("/index/" + t.name)}">{t.plural}</a>'
        catlinks = {"": f'<div class="catlinks">Categories: {index}</div>'}
        if cat is not None:
            label = ATTR_BY_NAME[(t.name, cat[0])].label
            for v in cat[1]:
                path = self.href(f"/category/{cat[0]}/{slugify(v)}")
                catlinks[v] = (f'<div class="catlinks">Categories: {index} | '
                               f'<a href="{path}">{label}: {v}</a></div>')
        return _TypeKit(
            attrs=tuple((a, _row(a.label)) for a in ATTRIBUTES[t.name]),
            lead=LEADS[t.name],
            lead_keys=tuple(f for _, f, _, _ in string.Formatter().parse(LEADS[t.name]) if f),
            sections=tuple(sections),
            crumbs=(f'<a href="{self.href("/")}">Main page</a> &rsaquo; '
                    f'<a href="{self.href("/index/" + t.name)}">{t.plural}</a> &rsaquo; '),
            category_attr=cat[0] if cat else "",
            catlinks=catlinks,
        )

    def entity_page(self, e: Entity) -> str:
        """The article about ``e``: infobox, lead, one section per fact group, related
        entries, see also, categories."""
        kit = self.kits[e.type]
        name, rels, link = e.name, e.relations, self.link
        h = mix(self.pos[e.id] * 0x9E3779B1 + self.seed)
        h2 = mix(h + 1)
        values: dict[str, str] = {}
        rows = []
        for spec, row in kit.attrs:
            v = values[spec.name] = format_value(spec, e.attributes[spec.name])
            rows.append(row + v + "</td></tr>")
        for rel, targets in rels.items():
            rows.append(self.rel_row[rel] + ", ".join([link[t] for t in targets]) + "</td></tr>")
        parts = [
            (f'<article class="entity entity-{e.type}"><h1 id="firstHeading">{name}</h1>'
            f'<p class="tagline">From {SITE_NAME}, the fictional encyclopedia</p>'
            f'<table class="infobox"><caption>{name}</caption>'
            f'<tbody>{"".join(rows)}</tbody></table>'
            f"<p>{self._lead(e, kit, values)} {FILLER[h % len(FILLER)].format(s=name)}</p>")
        ]
        short = name.rsplit(" ", 1)[-1] if e.type == "person" else SHORT_REF[e.type]
        for k, (heading, facts) in enumerate(kit.sections):
            sentences = self._facts(e, facts, values, h >> k, short)
            # Offsets 1..8 from the lead's filler: no filler sentence repeats on a page.
            sentences.append(FILLER[(h + 1 + k + h2 % 5) % len(FILLER)].format(s=name))
            parts.append(heading + " ".join(sentences) + "</p>")
        if h2 % 8 < 3 and e.type in WITH_TABLES:
            parts.append(self._table(e, h2))
        parts.append(self._incoming(e))
        parts.append(self._see_also(e, h))
        category = str(e.attributes[kit.category_attr]) if kit.category_attr else ""
        parts.append(kit.catlinks[category])
        parts.append("</article>")
        page_no = self.page_of[e.id]
        crumbs = (f'{kit.crumbs}<a href="{self.prefix}/index/{e.type}/{page_no}">Page {page_no}</a>'
                  f' &rsaquo; <span aria-current="page">{name}</span>')
        return self.shell(name, e.url, crumbs, "".join(parts), f"{name}: {short_description(e)}")

    def _lead(self, e: Entity, kit: _TypeKit, values: dict[str, str]) -> str:
        keys = {}
        for k in kit.lead_keys:
            if k == "n":
                keys[k] = f"<b>{e.name}</b>"
            elif k in e.relations:
                keys[k] = self.link[e.relations[k][0]]
            else:
                keys[k] = with_article(values[k[2:]]) if k.startswith("a_") else values[k]
        return kit.lead.format_map(keys)

    def _facts(
        self, e: Entity, facts: list[_Fact], values: dict[str, str], bits: int, short: str
    ) -> list[str]:
        """One sentence per fact; the first names the subject in full, later ones may use
        a short reference ("the city", a surname) as an article would."""
        out: list[str] = []
        name, rels = e.name, e.relations
        for k, (attr, rel, key) in enumerate(facts):
            variant = (bits >> k) & 1
            s = short if out and (bits >> (k + 8)) & 1 else name
            if attr is not None:
                v = values[key]
                if attr.zero and e.attributes[key] == 0:
                    sentence = attr.zero.format(s=s)
                elif attr.kind == "text":
                    sentence = attr.facts[variant].format(s=s, v=v, av=with_article(v))
                else:
                    sentence = attr.facts[variant].format(s=s, v=v)
            elif rel is not None and key in rels:
                objs = [self.link[t] for t in rels[key]]
                obj = objs[0] if len(objs) == 1 else ", ".join(objs[:-1]) + " and " + objs[-1]
                sentence = rel.facts[variant].format(s=s, o=obj)
            else:
                continue
            out.append(sentence[0].upper() + sentence[1:] if sentence[0] == "t" else sentence)
        return out

    def _incoming(self, e: Entity) -> str:
        groups: dict[str, list[str]] = {}
        for rel, src in self.graph.incoming(e.id):
            members = groups.setdefault(rel, [])
            if len(members) < INCOMING_LIMIT:
                members.append(self.link[src])
        if not groups:
            return ""
        blocks = [
            f'<h3>{RELATION_BY_NAME[rel].incoming}</h3><ul><li>{"</li><li>".join(items)}</li></ul>'
            for rel, items in groups.items()
        ]
        return f'<h2>Related entries</h2>{"".join(blocks)}'

    def _see_also(self, e: Entity, h: int) -> str:
        ids = self.ids_of[e.type]
        picks: list[str] = []
        n = len(ids)
        for k in range(4):
            other = ids[((h ^ (k * 0x5BD1E995)) * 0x9E3779B1 >> 11) % n]
            if other != e.id and other not in picks:
                picks.append(other)
        items = "".join(f"<li>{self.link[i]}</li>" for i in picks)
        return f'<h2>See also</h2><ul class="see-also">{items}</ul>'

    def _table(self, e: Entity, h: int) -> str:
        """A small data table; numbers in it beyond the graph's are page-only detail."""
        a = e.attributes
        if e.type == "event":
            head, cells = ("Programme", "Day", "Programme"), [
                (f"Day {d + 1}", PROGRAMME[(h >> (3 * d)) % len(PROGRAMME)])
                for d in range(min(int(a["duration_days"]), 5))
            ]
        elif e.type == "species":
            surveys = ("Spring survey", "Summer survey", "Autumn survey")
            head = ("Field counts", "Survey", "Individuals seen")
            cells = [(s, str((h >> (5 * k)) % 40 + 3)) for k, s in enumerate(surveys)]
        else:
            key = "population" if e.type == "city" else "employee_count"
            head = ("Population history", "Period", "Inhabitants") if e.type == "city" else (
                "Workforce", "Period", "Employees")
            current = int(a[key])
            periods = ("Early records", "Mid-period", "Recent estimate")
            cells = [(p, f"{current * (20 + (h >> (4 * k)) % 15) // 100 * (k + 1) // 3:,}")
                     for k, p in enumerate(periods)]
            cells.append(("Current", f"{current:,}"))
        rows = "".join(f"<tr><td>{x}</td><td>{y}</td></tr>" for x, y in cells)
        return (f'<h2>{head[0]}</h2><table class="wikitable"><tr><th>{head[1]}</th>'
                f"<th>{head[2]}</th></tr>{rows}</table>")
