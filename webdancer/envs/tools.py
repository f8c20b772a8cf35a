"""Tools the agent calls: ``search`` and ``visit`` (``answer`` is the final turn).

A tool is a name, a description, a JSON schema of its arguments, and a call that
returns text. Tools never raise on the agent's input: argument problems come back
as a ``ToolResult`` with ``ok=False`` and an error that shows a valid call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from webdancer.registry import Registry
from webdancer.web.render import Link, RenderedPage, evidence_units, rank_passages, render_page
from webdancer.web.search import SearchBackend, format_many
from webdancer.web.snapshots import Miss, SnapshotStore

MAX_ITEMS = 5  # queries or URLs per call


@dataclass(frozen=True)
class ToolResult:
    text: str
    ok: bool = True
    error: str | None = None
    ms: float = 0.0


@dataclass
class ToolContext:
    """What tools reach: the store, the search backend and the observation budgets."""

    store: SnapshotStore
    search: SearchBackend | None
    top_k: int = 10
    visit_mode: str = "passages"  # one of webdancer.conf.web.VISIT_MODES
    visit_budget_chars: int = 3000
    page_size: int = 8000
    max_links: int = 20
    # (page text, goal) -> summary; an LLM summarizer plugs in here
    summarizer: Callable[[RenderedPage, str], str] | None = None
    render_cache: dict[str, RenderedPage] = field(default_factory=dict)


class Tool(Protocol):
    name: str
    description: str
    parameters: ClassVar[dict[str, Any]]  # JSON schema of the arguments

    def __call__(self, arguments: Mapping[str, Any], ctx: ToolContext) -> ToolResult: ...


TOOLS: Registry[Tool] = Registry("tool")


def tool_schemas(names: Sequence[str]) -> list[dict[str, Any]]:
    """JSON schemas of the named tools, as prompts list them."""
    out = []
    for name in names:
        tool = TOOLS.get(name)
        out.append({"type": "function", "function": {
            "name": tool.name, "description": tool.description, "parameters": tool.parameters}})
    return out


def _string_list(value: Any, field_name: str, tool: str, example: str) -> tuple[list[str], str | None]:
    """Accept a string or a list of strings; -> (items, error)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        return [], (f'{tool} needs "{field_name}" as a non-empty string or list of strings, e.g. '
                    f'<tool_call>{example}</tool_call>')
    if len(value) > MAX_ITEMS:
        return [], f'{tool} takes at most {MAX_ITEMS} items in "{field_name}" per call; split the call.'
    return [v.strip() for v in value], None


def _unknown_args(arguments: Mapping[str, Any], allowed: set[str], tool: str) -> str | None:
    extra = sorted(set(arguments) - allowed)
    if extra:
        return f"{tool} does not take {', '.join(map(repr, extra))}; its arguments are {', '.join(sorted(allowed))}."
    return None


class SearchTool:
    name = "search"
    description = "Search the web. Returns the top results (title, URL, snippet) for each query."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"query": {
            "type": "array", "items": {"type": "string"},
            "description": "One or more search queries; a single string is accepted too."}},
        "required": ["query"],
    }
    example = json.dumps({"name": "search", "arguments": {"query": ["your query"]}})

    def __call__(self, arguments: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        t0 = time.perf_counter()
        args = dict(arguments)
        if "queries" in args and "query" not in args:  # a common alias
            args["query"] = args.pop("queries")
        error = _unknown_args(args, {"query"}, "search")
        queries, list_error = _string_list(args.get("query"), "query", "search", self.example)
        error = error or list_error
        if error:
            return ToolResult("", ok=False, error=error, ms=(time.perf_counter() - t0) * 1e3)
        if ctx.search is None:
            return ToolResult("", ok=False, error="search is not available in this environment; use visit.")
        results = ctx.search.search(queries, k=ctx.top_k)
        return ToolResult(format_many(queries, results), ms=(time.perf_counter() - t0) * 1e3)


class VisitTool:
    name = "visit"
    description = ("Visit web pages and read them with a goal in mind. Returns the passages of each page "
                   "that serve the goal, and the page's links.")
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {"type": "array", "items": {"type": "string"},
                    "description": "One or more URLs to visit; a single string is accepted too."},
            "goal": {"type": "string", "description": "What you want to find on the pages."},
        },
        "required": ["url", "goal"],
    }
    example = json.dumps({"name": "visit", "arguments": {"url": ["https://..."], "goal": "what to find"}})

    def __call__(self, arguments: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        t0 = time.perf_counter()
        error = _unknown_args(arguments, {"url", "goal"}, "visit")
        urls, list_error = _string_list(arguments.get("url"), "url", "visit", self.example)
        goal = arguments.get("goal", "")
        if not error and not list_error and not isinstance(goal, str):
            error = 'visit needs "goal" as a string.'
        error = error or list_error
        if error:
            return ToolResult("", ok=False, error=error, ms=(time.perf_counter() - t0) * 1e3)
        blocks, misses = [], []
        for url in urls:
            text, miss = self._visit_one(url, goal, ctx)
            blocks.append(text)
            if miss:
                misses.append(miss)
        text = "\n=======\n".join(blocks)
        ms = (time.perf_counter() - t0) * 1e3
        if len(misses) == len(urls):  # nothing could be read: the call was wasted
            return ToolResult(text, ok=False, error=" ".join(misses), ms=ms)
        return ToolResult(text, ms=ms)

    def _visit_one(self, url: str, goal: str, ctx: ToolContext) -> tuple[str, str | None]:
        page = ctx.render_cache.get(url)
        if page is None:
            result = ctx.store.get(url)
            if isinstance(result, Miss):
                miss = f"{url} could not be visited ({result.reason}); visit a URL from search results or page links."
                return miss, miss
            page = render_page(result.body, result.url, page_size=ctx.page_size, content_type=result.content_type)
            if len(ctx.render_cache) > 256:
                ctx.render_cache.clear()
            ctx.render_cache[url] = page
        return format_visit(page, goal, ctx), None


def visit_text(page: RenderedPage, goal: str | None, section: str, links: Sequence[Link]) -> str:
    """How a visited page reads to the agent: its title, URL and goal, ``section``
    (the evidence), then ``links``."""
    header = f"Page: {page.title}\nURL: {page.url}\n" + (f"Goal: {goal}\n" if goal is not None else "")
    link_text = "\n".join(link.line() for link in links)
    return header + section + (f"\n\nLinks:\n{link_text}" if link_text else "")


def format_visit(page: RenderedPage, goal: str, ctx: ToolContext) -> str:
    """The observation for one visited page: evidence for the goal, then links."""
    if ctx.visit_mode == "full":
        body = page.pages[0] if page.pages else page.text
        section = f"\nContent (page 1 of {max(1, len(page.pages))}):\n{body}"
    elif ctx.summarizer is not None:
        section = f"\nSummary:\n{ctx.summarizer(page, goal)}"
    elif ctx.visit_mode == "facts":
        facts = rank_passages(evidence_units(page.passages), goal, ctx.visit_budget_chars, only_matches=True)
        section = "\nEvidence:\n" + ("\n".join(facts) if facts else "(the page has no text)")
    else:
        passages = rank_passages(page.passages, goal, ctx.visit_budget_chars)
        section = "\nEvidence:\n" + ("\n\n".join(passages) if passages else "(the page has no text)")
    # Links cited in the chosen passages first, in the order they are cited: the best
    # evidence comes first, so with a small max_links its link is the one kept.
    where = {link.index: section.find(f"[{link.index}]") for link in page.links}
    cited = sorted((link for link in page.links if where[link.index] >= 0), key=lambda link: where[link.index])
    rest = [link for link in page.links if where[link.index] < 0]
    return visit_text(page, goal, section, (cited + rest)[: ctx.max_links])


TOOLS.register("search", SearchTool())
TOOLS.register("visit", VisitTool())
