"""Fictional names for the synthetic encyclopedia, built from syllables.

Every name is ASCII letters, spaces and hyphens only, so it is safe in HTML text
and attributes without escaping and turns into a URL slug by replacing spaces.
Names are unique across the whole site (not only per type), and no word of a name
is a real capital or large city (``REAL_PLACE_BLOCKLIST``), so a model cannot
answer a question about the site from memory.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

_GIVEN_HEAD = (
    "Al Ber Cal Dar El Fen Gal Har Is Jor Kel Lor Mar Nor Or Per Quel Ros Sel Tor Ul Var "
    "Wen Xan Yor Zel Bra Cor Dra Ev Fal Gwen Hal Ith Kor Lys Mer Nym Os Pyr Ryn Syl Tam Ves Wyn"
).split()
_GIVEN_MID = ("", "", "", "a", "e", "i", "o", "ia", "ae")
_GIVEN_TAIL = (
    "dor wen rin mar vel dris thas nor lin ric sha var wyn del ren mir tus lia nna kar zek "
    "roth quil bek"
).split()

_SURNAME_HEAD = (
    "Ash Brenn Cask Dun Ebb Fross Grav Holl Ill Jass Krell Lunn Moss Nett Orr Pell Quarr "
    "Rusk Strom Thane Umb Vosk Wick Yarr Zorn Tavv Olm Skarr"
).split()
_SURNAME_MID = ("", "", "a", "e", "i", "o")
_SURNAME_TAIL = (
    "vane mere holt wick grave ridge ston well ford lowe thorn brook more hart dane gild "
    "combe marsh"
).split()

_PLACE_HEAD = (
    "Ael Bry Cael Dun Esk Fay Gor Hel Ist Jun Kai Lum Mor Nev Oth Pra Quen Rav Sar Tal Ulm "
    "Vey Wes Yl Zar Ard Brae Cyr Drem Elv Fel Glim Hask Irn Kess Lant Mys Ny Ost Pel Rhy "
    "Skel Thal Ur Vol"
).split()
_PLACE_MID = ("", "", "a", "e", "i", "o", "y", "ae")
_PLACE_TAIL = (
    "mar dell stead moor haven gard wyck thal rin ssa lune brae more holm fell vik dun esk "
    "ora ith ane oth ul"
).split()

_CITY_FORMS = (
    "{r}", "{r}", "{r}", "{r}", "Port {r}", "Upper {r}", "Lower {r}", "{r} Crossing", "New {r}",
)
_REGION_FORMS = (
    "{r} Reach", "{r} Marches", "{r} Highlands", "{r} Lowlands", "{r} Basin",
    "{r} Coast", "{r} Vale", "{r} Province", "{r} Steppe", "{r} Fens",
)

_SPECIES_ADJ = (
    "Crested Spotted Lesser Greater Banded Hooded Pale Dusky Ringed Tufted Silver Amber "
    "Horned Striped Marsh Cliff Frost Ember Moss Dune"
).split()
# Endings chosen to fit the taxonomic group, so that a name hints at what it names.
SPECIES_ENDINGS: dict[str, tuple[str, ...]] = {
    "bird": ("wing", "crest", "beak"),
    "fish": ("fin", "gill", "scale"),
    "beetle": ("shell", "crawler", "horn"),
    "moth": ("wing", "dust", "flutter"),
    "fern": ("frond", "leaf", "curl"),
    "lizard": ("tail", "scale", "back"),
    "frog": ("hop", "croak", "toad"),
    "mammal": ("pelt", "paw", "hide"),
    "orchid": ("bloom", "petal", "spur"),
    "snail": ("coil", "shell", "slime"),
}

# Organization name endings by industry, so that names and infobox agree.
ORG_SUFFIXES: dict[str, tuple[str, ...]] = {
    "shipbuilding": ("Shipyards", "Shipwrights", "Dockworks"),
    "textiles": ("Mills", "Weavers", "Looms"),
    "higher education": ("University", "College", "Academy", "Institute"),
    "publishing": ("Press", "Publishing House", "Books"),
    "brewing": ("Brewery", "Brewing Company", "Maltings"),
    "mining": ("Mining Company", "Quarries", "Collieries"),
    "banking": ("Bank", "Savings Trust", "Credit House"),
    "glassmaking": ("Glassworks", "Glass Company", "Lenscrafters"),
    "clockmaking": ("Clockworks", "Horologists", "Timepiece Company"),
    "shipping": ("Lines", "Freight Company", "Carriers"),
    "pharmaceuticals": ("Apothecaries", "Remedies", "Dispensary"),
    "aeronautics": ("Aeroworks", "Airship Company", "Flight Works"),
    "cartography": ("Survey Office", "Mapmakers", "Chartworks"),
    "theatre": ("Players", "Theatre Company", "Stage Society"),
    "broadcasting": ("Broadcasting Corporation", "Radio", "Wireless Company"),
    "agriculture": ("Growers Cooperative", "Agricultural Society", "Granaries"),
}

_WORK_ADJ = (
    "Silent Last Drowned Hidden Burning Quiet Broken Northern Distant Iron Seventh Gilded "
    "Restless Crooked Pale Wandering"
).split()
_WORK_NOUN = (
    "Lantern Harbor Orchard Tide Crown Mirror Winter Hollow Compass Furnace Meadow "
    "Labyrinth Ember Vigil Tower Glass Salt Ferry Clockwork Heron"
).split()

# Words of capitals and large cities (and a few countries); no word of a generated name
# may be one. Generic words of multi-word cities ("new", "port", "cape") are left out.
REAL_PLACE_BLOCKLIST = frozenset(
    """
    abuja accra addis ababa algiers amman amsterdam ankara antananarivo apia ashgabat asmara
    astana asuncion athens baghdad baku bamako bangkok bangui banjul beijing beirut belgrade
    berlin bern bishkek bogota brasilia bratislava brazzaville bridgetown brussels bucharest
    budapest buenos aires cairo canberra caracas castries chisinau colombo conakry copenhagen
    dakar damascus dhaka dili djibouti doha dodoma dublin dushanbe freetown gaborone georgetown
    guatemala hanoi harare havana helsinki honiara islamabad jakarta jerusalem juba kabul
    kampala kathmandu khartoum kiev kyiv kigali kingston kinshasa kuwait lima lisbon ljubljana
    lome london luanda lusaka luxembourg madrid majuro malabo male managua manama manila
    maputo maseru mbabane melekeok mexico minsk mogadishu monaco monrovia montevideo moroni
    moscow muscat nairobi nassau naypyidaw ndjamena niamey nicosia nouakchott nuku oslo
    ottawa ouagadougou palikir panama paramaribo paris podgorica louis prague praia
    pretoria pristina pyongyang quito rabat reykjavik riga riyadh rome roma roseau sanaa
    santiago sarajevo seoul singapore skopje sofia stockholm sucre suva taipei tallinn
    tarawa tashkent tbilisi tegucigalpa tehran thimphu tirana tokyo tripoli tunis ulaanbaatar
    vaduz valletta vatican victoria vienna vientiane vilnius warsaw washington wellington
    windhoek yaounde yerevan zagreb york chicago houston dallas boston denver seattle
    miami detroit toronto montreal vancouver sydney melbourne perth brisbane auckland
    mumbai delhi kolkata chennai karachi lahore istanbul milan naples venice florence
    munich hamburg frankfurt cologne lyon marseille nice barcelona seville valencia porto
    osaka kyoto shanghai hong kong lagos durban casablanca marrakesh dubai
    alexandria rio sao paulo lisboa york oxford cambridge bristol leeds glasgow edinburgh
    dundee cork geneva zurich basel antwerp rotterdam bergen narvik malmo gothenburg
    helvik troy sparta carthage babylon persia egypt china india france spain italy
    germany russia japan brazil canada kenya peru chile cuba iran iraq oman
    """.split()
)

_NAME_OK = re.compile(r"^[A-Z][A-Za-z]*(?:[ -][A-Za-z]+)*$")

T = TypeVar("T")


# random.Random.choice/randint/shuffle cost about 2 us per draw in pure Python; these
# use the C-level random() and are several times faster, which matters at 100k entities.
def pick(rng: random.Random, seq: Sequence[T]) -> T:
    """A uniform element of ``seq``."""
    return seq[int(rng.random() * len(seq))]


def randint(rng: random.Random, lo: int, hi: int) -> int:
    """A uniform integer in ``[lo, hi]``."""
    return lo + int(rng.random() * (hi - lo + 1))


def shuffle(rng: random.Random, items: list[T]) -> None:
    """Fisher-Yates shuffle in place."""
    rnd = rng.random
    for i in range(len(items) - 1, 0, -1):
        j = int(rnd() * (i + 1))
        items[i], items[j] = items[j], items[i]


def _word(rng: random.Random, head: list[str], mid: tuple[str, ...], tail: list[str]) -> str:
    first, middle, last = pick(rng, head), pick(rng, mid), pick(rng, tail)
    if not middle and first[-1] == first[-2] == last[0]:
        last = last[1:]  # "Moss" + "ston" -> "Mosston", not "Mossston"
    word = first + middle + last
    return word[0].upper() + word[1:].lower()


def given_name(rng: random.Random) -> str:
    return _word(rng, _GIVEN_HEAD, _GIVEN_MID, _GIVEN_TAIL)


def surname(rng: random.Random) -> str:
    return _word(rng, _SURNAME_HEAD, _SURNAME_MID, _SURNAME_TAIL)


def place_root(rng: random.Random) -> str:
    return _word(rng, _PLACE_HEAD, _PLACE_MID, _PLACE_TAIL)


def person_name(rng: random.Random) -> str:
    return f"{given_name(rng)} {surname(rng)}"


def city_name(rng: random.Random) -> str:
    return pick(rng, _CITY_FORMS).format(r=place_root(rng))


def region_name(rng: random.Random) -> str:
    return pick(rng, _REGION_FORMS).format(r=place_root(rng))


def organization_name(rng: random.Random, industry: str) -> str:
    suffix = pick(rng, ORG_SUFFIXES[industry])
    form = int(rng.random() * 4)
    if form == 0 and industry == "higher education":
        return f"{suffix} of {place_root(rng)}"
    if form == 1:
        return f"{surname(rng)} and {surname(rng)} {suffix}"
    if form == 2:
        return f"{surname(rng)} {suffix}"
    return f"{place_root(rng)} {suffix}"


def species_name(rng: random.Random, taxon_group: str) -> str:
    root = pick(rng, _PLACE_HEAD) + pick(rng, _PLACE_MID)
    return f"{pick(rng, _SPECIES_ADJ)} {root}{pick(rng, SPECIES_ENDINGS[taxon_group])}"


def event_name(rng: random.Random, event_kind: str) -> str:
    kind = event_kind.title()
    form = int(rng.random() * 3)
    if form == 0:
        return f"{kind} of {place_root(rng)}"
    if form == 1:
        return f"Great {place_root(rng)} {kind}"
    return f"{place_root(rng)} {kind}"


def work_title(rng: random.Random) -> str:
    form = int(rng.random() * 5)
    if form == 0:
        return f"The {pick(rng, _WORK_ADJ)} {pick(rng, _WORK_NOUN)} of {place_root(rng)}"
    if form == 1:
        return f"The {pick(rng, _WORK_NOUN)} of {place_root(rng)}"
    if form == 2:
        return f"{pick(rng, _WORK_NOUN)}s of {place_root(rng)}"
    if form == 3:
        return f"A {pick(rng, _WORK_NOUN)} for {given_name(rng)}"
    return f"{place_root(rng)} {pick(rng, _WORK_NOUN)}"


def is_allowed(name: str) -> bool:
    """True when ``name`` is well-formed and none of its words is a real place."""
    if not _NAME_OK.match(name):
        return False
    return not any(w in REAL_PLACE_BLOCKLIST for w in re.split(r"[ -]", name.lower()))


def unique_name(make: Callable[[], str], taken: set[str], what: str) -> str:
    """Draw from ``make`` until a name is allowed and not in ``taken``; add it there."""
    for _ in range(2000):
        name = make()
        # Generated names are well-formed by construction; only the blocklist needs checking.
        if name not in taken and REAL_PLACE_BLOCKLIST.isdisjoint(name.lower().split()):
            taken.add(name)
            return name
    raise RuntimeError(
        f"ran out of distinct {what} names after 2000 draws; generate fewer pages or extend "
        "the syllable tables in synthetic_names.py."
    )


def slugify(name: str) -> str:
    """URL slug of a name: spaces become underscores (names are ASCII by construction)."""
    return name.replace(" ", "_")
