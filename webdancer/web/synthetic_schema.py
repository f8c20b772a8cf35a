"""What the synthetic encyclopedia knows: entity types, their attributes and the
relations between them, with the words used to state each fact in prose and to
refer to an entity through a relation in a question.

Relations point from a subject to an object. ``many=False`` relations are
functional (at most one object per subject), so a chain of them read forward
("the mayor of the capital of X") names exactly one entity.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TypeSpec:
    """One entity type. ``segment`` is its URL path part, ``plural`` its index title."""

    name: str
    segment: str
    plural: str
    share: float  # fraction of all entities


@dataclass(frozen=True)
class AttrSpec:
    """One attribute. ``kind``: year (plain int), count (int with thousands separators),
    measure (int with ``unit``), text (a word or phrase)."""

    name: str
    label: str
    kind: str
    noun: str
    # Sentence variants with {s} (subject), {v} (value), {av} (value with "a"/"an").
    facts: tuple[str, ...]
    unit: str = ""
    zero: str = ""  # sentence used instead when the value is 0 ("has not won any awards")


@dataclass(frozen=True)
class RelationSpec:
    """One relation from ``source`` to ``target`` entities."""

    name: str
    source: str
    target: str
    label: str  # infobox row label on the subject's page
    facts: tuple[str, ...]  # sentence variants with {s} and {o}
    forward: str  # noun phrase for the object, given the subject: "the city where {s} was born"
    backward: str  # noun phrase for a subject, given the object: "a person born in {o}"
    incoming: str  # heading on the object's page for subjects that point to it
    many: bool = False


TYPES: tuple[TypeSpec, ...] = (
    TypeSpec("person", "Person", "People", 0.32),
    TypeSpec("city", "City", "Cities", 0.16),
    TypeSpec("region", "Region", "Regions", 0.03),
    TypeSpec("organization", "Organization", "Organizations", 0.16),
    TypeSpec("species", "Species", "Species", 0.12),
    TypeSpec("event", "Event", "Events", 0.10),
    TypeSpec("work", "Work", "Works", 0.11),
)
TYPE_BY_NAME: dict[str, TypeSpec] = {t.name: t for t in TYPES}

OCCUPATIONS = (
    "cartographer", "glassblower", "astronomer", "clockmaker", "botanist", "composer",
    "shipwright", "archivist", "engineer", "physician", "painter", "poet", "surveyor", "chemist",
    "sculptor", "diplomat", "linguist", "brewer", "lighthouse keeper", "mathematician",
    "novelist", "geologist", "cellist", "balloonist",
)
INDUSTRIES = (
    "shipbuilding", "textiles", "higher education", "publishing", "brewing", "mining",
    "banking", "glassmaking", "clockmaking", "shipping", "pharmaceuticals", "aeronautics",
    "cartography", "theatre", "broadcasting", "agriculture",
)
TAXON_GROUPS = (
    "bird", "fish", "beetle", "moth", "fern", "lizard", "frog", "mammal", "orchid", "snail",
)
HABITATS = (
    "cloud forest", "salt marsh", "alpine meadow", "kelp forest", "limestone cave", "river delta",
    "peat bog", "coastal dune", "temperate rainforest", "volcanic plateau", "mangrove swamp",
    "tundra",
)
CONSERVATION = (
    "least concern", "near threatened", "vulnerable", "endangered", "critically endangered",
)
CLIMATES = (
    "temperate", "arid", "subarctic", "maritime", "continental", "subtropical", "alpine", "monsoon",
)
EVENT_KINDS = (
    "festival", "summit", "regatta", "fair", "congress", "tournament", "exhibition",
    "symposium", "pageant", "marathon",
)
MEDIA = (
    "novel", "oil painting", "symphony", "play", "film", "epic poem", "sculpture", "opera",
    "atlas", "memoir",
)

# The attribute whose values become category pages, per type.
CATEGORY_ATTRS: dict[str, tuple[str, tuple[str, ...]]] = {
    "person": ("occupation", OCCUPATIONS),
    "organization": ("industry", INDUSTRIES),
    "species": ("taxon_group", TAXON_GROUPS),
    "event": ("event_kind", EVENT_KINDS),
    "work": ("medium", MEDIA),
}


def _a(
    name: str, label: str, kind: str, noun: str, *facts: str, unit: str = "", zero: str = ""
) -> AttrSpec:
    return AttrSpec(name, label, kind, noun, facts, unit, zero)


ATTRIBUTES: dict[str, tuple[AttrSpec, ...]] = {
    "person": (
        _a("birth_year", "Born", "year", "birth year",
           "{s} was born in {v}.",
           "The year of birth of {s} is recorded as {v}."),
        _a("occupation", "Occupation", "text", "occupation",
           "{s} worked as {av}.",
           "By profession, {s} was {av}."),
        _a("height_cm", "Height", "measure", "height in centimetres",
           "{s} stood {v} tall.",
           "Contemporaries put the height of {s} at {v}.",
           unit="cm"),
        _a("awards_won", "Awards", "count", "number of awards won",
           "Over a long career, {s} won {v} awards.",
           "{s} received {v} awards in total.",
           zero="{s} never won an award."),
    ),
    "city": (
        _a("founded_year", "Founded", "year", "founding year",
           "{s} was founded in {v}.",
           "The settlement of {s} dates its charter to {v}."),
        _a("population", "Population", "count", "population",
           "{s} has a population of {v}.",
           "At the last census, {s} counted {v} inhabitants."),
        _a("area_km2", "Area", "measure", "area in square kilometres",
           "The city covers an area of {v}.",
           "{s} extends over {v}.",
           unit="km2"),
        _a("elevation_m", "Elevation", "measure", "elevation in metres",
           "{s} lies at an elevation of {v}.",
           "The town centre of {s} sits {v} above sea level.",
           unit="m"),
    ),
    "region": (
        _a("established_year", "Established", "year", "year of establishment",
           "{s} was established as an administrative region in {v}.",
           "The borders of {s} were first drawn in {v}."),
        _a("population", "Population", "count", "population",
           "{s} is home to {v} people.",
           "The population of {s} stands at {v}."),
        _a("area_km2", "Area", "measure", "area in square kilometres",
           "{s} spans {v}.",
           "The total area of {s} is {v}.",
           unit="km2"),
        _a("climate", "Climate", "text", "climate",
           "{s} has {av} climate.",
           "The climate of {s} is classed as {v}."),
    ),
    "organization": (
        _a("founded_year", "Founded", "year", "founding year",
           "{s} was founded in {v}.",
           "The charter of {s} was signed in {v}."),
        _a("industry", "Industry", "text", "industry",
           "{s} operates in the {v} sector.",
           "The main business of {s} is {v}."),
        _a("employee_count", "Employees", "count", "number of employees",
           "{s} employs {v} people.",
           "The workforce of {s} numbers {v}."),
    ),
    "species": (
        _a("taxon_group", "Group", "text", "group",
           "{s} is {av}.",
           "Naturalists classify {s} as {av}."),
        _a("habitat", "Habitat", "text", "habitat",
           "{s} lives in {v} habitats.",
           "The preferred habitat of {s} is {v}."),
        _a("lifespan_years", "Lifespan", "measure", "lifespan in years",
           "{s} can live for up to {v}.",
           "The recorded lifespan of {s} reaches {v}.",
           unit="years"),
        _a("mass_g", "Mass", "measure", "mass in grams",
           "An adult {s} weighs about {v}.",
           "Adults of {s} reach a mass of {v}.",
           unit="g"),
        _a("discovered_year", "Described", "year", "year of discovery",
           "{s} was first described in {v}.",
           "The first scientific description of {s} dates from {v}."),
        _a("conservation_status", "Status", "text", "conservation status",
           "{s} is listed as {v}.",
           "The conservation status of {s} is {v}."),
    ),
    "event": (
        _a("event_kind", "Type", "text", "type of event",
           "{s} is {av}.",
           "Organizers describe {s} as {av}."),
        _a("year", "Year", "year", "year",
           "{s} took place in {v}.",
           "The first edition of {s} was held in {v}."),
        _a("attendance", "Attendance", "count", "attendance",
           "{s} drew an attendance of {v}.",
           "Some {v} visitors attended {s}."),
        _a("duration_days", "Duration", "measure", "duration in days",
           "{s} lasted {v}.",
           "The programme of {s} ran for {v}.",
           unit="days"),
    ),
    "work": (
        _a("medium", "Medium", "text", "medium",
           "{s} is {av}.",
           "Critics discuss {s} as {av}."),
        _a("year", "Year", "year", "year of completion",
           "{s} was completed in {v}.",
           "{s} first appeared in {v}."),
        _a("awards_won", "Awards", "count", "number of awards won",
           "{s} won {v} awards.",
           "Over the years, {s} collected {v} awards.",
           zero="{s} did not win any awards."),
    ),
}
ATTR_BY_NAME: dict[tuple[str, str], AttrSpec] = {
    (t, a.name): a for t, specs in ATTRIBUTES.items() for a in specs
}


def _r(name: str, source: str, target: str, label: str, facts: tuple[str, ...], forward: str,
       backward: str, incoming: str, many: bool = False) -> RelationSpec:
    return RelationSpec(name, source, target, label, facts, forward, backward, incoming, many)


RELATIONS: tuple[RelationSpec, ...] = (
    _r("born_in", "person", "city", "Birthplace",
       ("{s} was born in {o}.", "The birthplace of {s} is {o}."),
       "the city where {s} was born",
       "a person born in {o}", "People born here"),
    _r("works_for", "person", "organization", "Employer",
       ("{s} works for {o}.", "{s} is employed by {o}."),
       "the employer of {s}",
       "a person who works for {o}", "Notable employees"),
    _r("educated_at", "person", "organization", "Education",
       ("{s} was educated at {o}.", "{s} studied at {o}."),
       "the institution where {s} was educated",
       "a person educated at {o}", "Notable alumni"),
    _r("mentor", "person", "person", "Mentor",
       ("{s} was mentored by {o}.", "{o} was the mentor of {s}."),
       "the mentor of {s}",
       "a student of {o}", "Students"),
    _r("located_in", "city", "region", "Region",
       ("{s} is located in {o}.", "{s} lies within {o}."),
       "the region in which {s} is located",
       "a city in {o}", "Cities"),
    _r("mayor", "city", "person", "Mayor",
       ("The mayor of {s} is {o}.", "{o} serves as mayor of {s}."),
       "the mayor of {s}",
       "the city whose mayor is {o}", "Mayor of"),
    _r("twinned_with", "city", "city", "Twin city",
       ("{s} is twinned with {o}.", "{s} maintains a twinning partnership with {o}."),
       "the twin city of {s}",
       "the city twinned with {o}", "Twin cities"),
    _r("capital", "region", "city", "Capital",
       ("The capital of {s} is {o}.", "{o} serves as the capital of {s}."),
       "the capital of {s}",
       "the region whose capital is {o}", "Capital of"),
    _r("borders", "region", "region", "Borders",
       ("{s} borders {o}.", "{s} shares a border with {o}."),
       "a region bordering {s}",
       "a region bordering {o}", "Bordering regions", many=True),
    _r("headquartered_in", "organization", "city", "Headquarters",
       ("{s} is headquartered in {o}.", "The headquarters of {s} are in {o}."),
       "the city where {s} is headquartered",
       "an organization headquartered in {o}", "Organizations based here"),
    _r("founded_by", "organization", "person", "Founder",
       ("{s} was founded by {o}.", "{o} founded {s}."),
       "the founder of {s}",
       "an organization founded by {o}", "Founded"),
    _r("parent_organization", "organization", "organization", "Parent organization",
       ("{s} is a subsidiary of {o}.", "{s} is owned by {o}."),
       "the parent organization of {s}",
       "a subsidiary of {o}", "Subsidiaries"),
    _r("native_to", "species", "region", "Native range",
       ("{s} is native to {o}.", "The native range of {s} is {o}."),
       "the region to which {s} is native",
       "a species native to {o}", "Native species"),
    _r("discovered_by", "species", "person", "Discovered by",
       ("{s} was first described by {o}.", "{o} discovered {s}."),
       "the person who discovered {s}",
       "a species discovered by {o}", "Species described"),
    _r("preys_on", "species", "species", "Prey",
       ("{s} preys on {o}.", "{s} feeds mainly on {o}."),
       "the species that {s} preys on",
       "a predator of {o}", "Predators"),
    _r("held_in", "event", "city", "Location",
       ("{s} was held in {o}.", "{o} hosted {s}."),
       "the city where {s} was held",
       "an event held in {o}", "Events hosted"),
    _r("organized_by", "event", "organization", "Organizer",
       ("{s} was organized by {o}.", "{o} organized {s}."),
       "the organizer of {s}",
       "an event organized by {o}", "Events organized"),
    _r("keynote_speaker", "event", "person", "Keynote speaker",
       ("The keynote address at {s} was given by {o}.", "{o} gave the keynote address at {s}."),
       "the keynote speaker of {s}",
       "an event where {o} gave the keynote", "Keynote addresses"),
    _r("created_by", "work", "person", "Creator",
       ("{s} was created by {o}.", "{o} created {s}."),
       "the creator of {s}",
       "a work created by {o}", "Works"),
    _r("published_by", "work", "organization", "Publisher",
       ("{s} was published by {o}.", "{o} published {s}."),
       "the publisher of {s}",
       "a work published by {o}", "Published works"),
    _r("set_in", "work", "city", "Setting",
       ("{s} is set in {o}.", "The story of {s} takes place in {o}."),
       "the city in which {s} is set",
       "a work set in {o}", "Works set here"),
)
RELATION_BY_NAME: dict[str, RelationSpec] = {r.name: r for r in RELATIONS}
RELATIONS_OF: dict[str, tuple[RelationSpec, ...]] = {
    t.name: tuple(r for r in RELATIONS if r.source == t.name) for t in TYPES
}


def format_value(spec: AttrSpec, value: str | int) -> str:
    """How a value is written on the site: years bare, counts as 12,345, measures with units."""
    if spec.kind == "count":
        return f"{value:,}"
    if spec.kind == "measure":
        return f"{value:,} {spec.unit}"
    return str(value)


def describe(relation: str, *, subject: str | None = None, obj: str | None = None) -> str:
    """Noun phrase through ``relation``: give ``subject`` to name its object
    ("the city where X was born"), or ``obj`` to name a subject ("a person born in Y")."""
    spec = RELATION_BY_NAME.get(relation)
    if spec is None:
        raise KeyError(f"unknown relation {relation!r}; valid ones are {sorted(RELATION_BY_NAME)}.")
    if (subject is None) == (obj is None):
        raise ValueError("describe() needs exactly one of subject= or obj=.")
    return spec.forward.format(s=subject) if subject is not None else spec.backward.format(o=obj)


def fact_sentence(relation: str, subject: str, obj: str, variant: int = 0) -> str:
    """The sentence that states ``subject --relation--> obj`` (plain text names)."""
    facts = RELATION_BY_NAME[relation].facts
    return facts[variant % len(facts)].format(s=subject, o=obj)


def with_article(phrase: str) -> str:
    """``"a poet"``, ``"an astronomer"``."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase
