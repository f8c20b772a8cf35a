"""Structured configs of the ``webdancer web`` commands and the web demo."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

MODES = ("replay", "record", "live")
# passages: the goal's best passages; facts: its best sentences, table rows and list items; full: the page
VISIT_MODES = ("passages", "facts", "full")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; use one of: {', '.join(choices)}.")


@dataclass
class WebBuildConfig:
    """``webdancer web build``: synthetic site -> snapshot store + search index."""

    out: str = "runs/web/site"  # web directory to create (store/, search/, graph.json)
    pages: int = 2000  # approximate number of pages
    seed: int = 0
    base_url: str = "https://synthwiki.example"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.pages < 10:
            raise ValueError(f"pages={self.pages} is too small; a site needs at least 10 pages.")


@dataclass
class WebRecordConfig:
    """``webdancer web record URL...``: fetch live pages into a web directory."""

    urls: list[str] = field(default_factory=list)
    out: str = "runs/web/recorded"
    allow_hosts: list[str] = field(default_factory=list)  # SSRF allowlist (intranets, tests)
    respect_robots: bool = True
    timeout_s: float = 15.0
    index: bool = True  # rebuild the search index after recording

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("no URLs given; call `webdancer web record URL [URL ...]`.")


@dataclass
class WebShowConfig:
    """``webdancer web show URL``: print a page as the agent sees it."""

    url: str = MISSING
    web: str = "runs/web/site"  # web directory (or a bare store directory)
    mode: str = "replay"
    page: int = 1  # which page of a long document, 1-based
    page_size: int = 8000
    links: bool = True  # list the numbered links after the text
    allow_hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        if self.page < 1:
            raise ValueError(f"page={self.page} must be 1 or more.")


@dataclass
class WebSearchConfig:
    """``webdancer web search QUERY``: run a search as the agent sees it."""

    query: str = MISSING
    web: str = "runs/web/site"
    backend: str = "bm25"  # bm25 | serper | recorded
    k: int = 10

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, ("bm25", "serper", "recorded"))
        if self.k < 1:
            raise ValueError(f"k={self.k} must be 1 or more.")


@dataclass
class WebDemoConfig:
    """The web demo: build a small site, search it, read the best page."""

    out: str = "runs/demo/web"
    pages: int = 1000
    seed: int = 0
    query: str = ""  # empty: ask about a random entity of the site

