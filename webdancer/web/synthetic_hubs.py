"""Hub pages of the synthetic encyclopedia: main page, about, type indexes and
categories. They exist so that every article is reachable by links from ``/``:
main page -> type index -> index page (~100 articles) -> article.
"""

from __future__ import annotations

from webdancer.web.synthetic_html import SITE_NAME, PageRenderer, mix, short_description
from webdancer.web.synthetic_names import slugify
from webdancer.web.synthetic_schema import ATTR_BY_NAME, RELATION_BY_NAME, TYPE_BY_NAME, TYPES

CATEGORY_LIST_LIMIT = 200  # members listed on one category page


def home_page(r: PageRenderer, url: str) -> str:
    g = r.graph
    counts = "".join(
        f'<li><a href="{r.href("/index/" + t.name)}">{t.plural}</a> '
        f"({len(r.ids_of[t.name]):,} articles)</li>"
        for t in TYPES
    )
    ids = list(g.entities)
    featured = g.entities[ids[mix(r.seed + 11) % len(ids)]]
    facts = []
    for k in range(3):
        e = g.entities[ids[mix(r.seed + 101 * (k + 1)) % len(ids)]]
        rel, targets = next(iter(e.relations.items()))
        sentence = RELATION_BY_NAME[rel].facts[0].format(s=r.link[e.id], o=r.link[targets[0]])
        facts.append(f"<li>... that {sentence[0].lower() + sentence[1:-1]}?</li>")
    body = (
        f'<div class="welcome"><h1>Welcome to {SITE_NAME}</h1><p>{SITE_NAME} is an encyclopedia '
        f"of a fictional world with {len(g):,} articles about its people, places, organizations, "
        f"species, events and works.</p></div><h2>Browse by type</h2><ul>{counts}</ul>"
        f"<h2>Featured article</h2><p>{r.link[featured.id]}: {short_description(featured)}.</p>"
        f'<h2>Did you know</h2><ul>{"".join(facts)}</ul>'
        f'<h2>More</h2><ul><li><a href="{r.href("/categories")}">All categories</a></li>'
        f'<li><a href="{r.href("/about")}">About {SITE_NAME}</a></li></ul>'
    )
    crumbs = '<span aria-current="page">Main page</span>'
    return r.shell("Main page", url, crumbs, body, f"{SITE_NAME}, the fictional encyclopedia")


def about_page(r: PageRenderer, url: str) -> str:
    body = (
        f"<h1>About {SITE_NAME}</h1><p>{SITE_NAME} describes an invented world. Every person, "
        "place, organization, species, event and work on this site is fictional, and any "
        "resemblance to real names is coincidental.</p><p>Articles are arranged by type in "
        "alphabetical indexes and grouped into categories. Each article has an infobox that "
        "summarises its key facts.</p>"
    )
    return r.shell(f"About {SITE_NAME}", url, r.crumbs(("About", "")), body)


def categories_page(r: PageRenderer, url: str) -> str:
    groups: dict[tuple[str, str], list[str]] = {}
    for (attr, value), members in r.categories.items():
        type_name = r.graph.entities[members[0]].type
        path = r.href(f"/category/{attr}/{slugify(value)}")
        groups.setdefault((type_name, attr), []).append(
            f'<li><a href="{path}">{value}</a> ({len(members):,})</li>'
        )
    blocks = [
        f"<h2>{TYPE_BY_NAME[t].plural} by {ATTR_BY_NAME[(t, attr)].label.lower()}</h2>"
        f"<ul>{''.join(items)}</ul>"
        for (t, attr), items in groups.items()
    ]
    body = "<h1>Categories</h1>" + "".join(blocks)
    return r.shell("Categories", url, r.crumbs(("Categories", "")), body)


def category_page(r: PageRenderer, url: str, attr: str, value: str) -> str:
    members = r.categories[(attr, value)]
    type_name = r.graph.entities[members[0]].type
    label = ATTR_BY_NAME[(type_name, attr)].label
    shown = members[:CATEGORY_LIST_LIMIT]
    note = f"This category contains {len(members):,} articles."
    if len(shown) < len(members):
        plural = TYPE_BY_NAME[type_name].plural.lower()
        index = f'<a href="{r.href("/index/" + type_name)}">index of {plural}</a>'
        note += f" The first {len(shown)} are listed below; all of them are in the {index}."
    items = "".join(f"<li>{r.link[i]}</li>" for i in shown)
    title = f"Category: {label}: {value}"
    body = f'<h1>{title}</h1><p>{note}</p><ul class="category-members">{items}</ul>'
    crumbs = r.crumbs(("Categories", "/categories"), (f"{label}: {value}", ""))
    return r.shell(title, url, crumbs, body)


def landing_page(r: PageRenderer, url: str, type_name: str) -> str:
    spec = TYPE_BY_NAME[type_name]
    pages = r.index_pages[type_name]
    ents = r.graph.entities
    items = "".join(
        f'<li><a href="{r.href(f"/index/{type_name}/{n}")}">'
        f"{ents[ids[0]].name} &ndash; {ents[ids[-1]].name}</a></li>"
        for n, ids in enumerate(pages, 1)
    )
    title = f"Index of {spec.plural.lower()}"
    body = (
        f"<h1>{title}</h1><p>{SITE_NAME} has {len(r.ids_of[type_name]):,} articles of this type, "
        f'listed alphabetically over {len(pages)} pages.</p><ol class="index-pages">{items}</ol>'
    )
    return r.shell(title, url, r.crumbs((spec.plural, "")), body)


def index_page(r: PageRenderer, url: str, type_name: str, number: int) -> str:
    spec = TYPE_BY_NAME[type_name]
    pages = r.index_pages[type_name]
    ids = pages[number - 1]
    ents = r.graph.entities
    items = "".join(f"<li>{r.link[i]} &ndash; {short_description(ents[i])}</li>" for i in ids)
    nav = [f'<a href="{r.href(f"/index/{type_name}")}">All pages</a>']
    if number > 1:
        prev = r.href(f"/index/{type_name}/{number - 1}")
        nav.insert(0, f'<a rel="prev" href="{prev}">Previous page</a>')
    if number < len(pages):
        nxt = r.href(f"/index/{type_name}/{number + 1}")
        nav.append(f'<a rel="next" href="{nxt}">Next page</a>')
    title = f"{spec.plural} ({ents[ids[0]].name} to {ents[ids[-1]].name})"
    pager = f'<nav class="pager">{" | ".join(nav)}</nav>'
    body = (f"<h1>{title}</h1><p>Page {number} of {len(pages)}.</p>{pager}"
            f'<ul class="index">{items}</ul>{pager}')
    crumbs = r.crumbs((spec.plural, f"/index/{type_name}"), (f"Page {number}", ""))
    return r.shell(title, url, crumbs, body)
