"""What the ``webdancer web ...`` commands do, given their config dataclasses.

Hydra plumbing lives in ``webdancer.cli``; these functions take plain dataclasses so
they can be called from Python and tests as well.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from webdancer.conf.web import (
    WebBuildConfig,
    WebDemoConfig,
    WebRecordConfig,
    WebSearchConfig,
    WebShowConfig,
)
from webdancer.web.render import render_page
from webdancer.web.snapshots import Miss
from webdancer.web.webdir import WebDir, build_synthetic_web, index_web

log = logging.getLogger("webdancer.web")


def build(cfg: WebBuildConfig) -> Path:
    web, stats = build_synthetic_web(cfg.out, cfg.pages, cfg.seed, cfg.base_url, overwrite=cfg.overwrite)
    log.info(
        "built %d pages in %s: store %.0f pages/s, index %.0f pages/s",
        stats.pages,
        web.path,
        stats.store_pages_per_s,
        stats.index_pages_per_s,
    )
    print(f"{stats.pages} pages -> {web.path} (store {stats.store_s:.1f} s, index {stats.index_s:.1f} s)")
    return web.path


def record(cfg: WebRecordConfig) -> Path:
    from webdancer.web.fetch import Fetcher
    from webdancer.web.snapshots import SnapshotStore

    out = Path(cfg.out)
    fetcher = Fetcher(timeout_s=cfg.timeout_s, allow_hosts=cfg.allow_hosts, respect_robots=cfg.respect_robots)
    ok = 0
    with SnapshotStore(out / "store", mode="record", fetcher=fetcher) as store:
        for url in cfg.urls:
            result = store.get(url)
            if isinstance(result, Miss):
                print(f"FAILED {url}: {result.reason}")
            else:
                ok += 1
                print(f"{result.status} {url} ({len(result.body)} bytes)")
    manifest = out / "web.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"kind": "recorded"}, indent=2), encoding="utf-8")
    if cfg.index and ok:
        index_web(out, progress=False)
    print(f"recorded {ok}/{len(cfg.urls)} pages into {out}")
    return out


def show(cfg: WebShowConfig) -> str:
    from webdancer.web.fetch import Fetcher

    web = WebDir(cfg.web)
    fetcher = Fetcher(allow_hosts=cfg.allow_hosts) if cfg.mode != "replay" else None
    with web.store(cfg.mode, fetcher=fetcher) as store:
        result = store.get(cfg.url)
    if isinstance(result, Miss):
        text = f"{cfg.url}: {result.reason}"
    else:
        page = render_page(result.body, result.url, page_size=cfg.page_size, content_type=result.content_type)
        n = len(page.pages) or 1
        idx = min(cfg.page, n) - 1
        body = page.pages[idx] if page.pages else page.text
        text = f"URL: {page.url}\nPage {idx + 1} of {n}\n\n{body}"
        if cfg.links and page.links:
            text += "\n\nLinks:\n" + "\n".join(f"[{link.index}] {link.url}" for link in page.links)
    print(text)
    return text


def search(cfg: WebSearchConfig) -> str:
    from webdancer.web.search import RecordedSearch, SerperSearch, format_many

    web = WebDir(cfg.web)
    if cfg.backend == "bm25":
        backend = web.search()
        results = backend.search([cfg.query], k=cfg.k)
    else:
        with web.store("record") as store:
            live = SerperSearch(store=store) if cfg.backend == "serper" else RecordedSearch(store)
            results = live.search([cfg.query], k=cfg.k)
    text = format_many([cfg.query], results)
    print(text)
    return text


def demo(cfg: WebDemoConfig) -> None:
    """Build a small offline web, search it, and read the top page."""
    out = Path(cfg.out)
    web, stats = build_synthetic_web(out, cfg.pages, cfg.seed, overwrite=True)
    print(f"\nBuilt a synthetic web of {stats.pages} pages in {stats.store_s + stats.index_s:.1f} s at {out}\n")
    query = cfg.query
    if not query:
        graph = web.graph()
        entity = random.Random(cfg.seed).choice(sorted(graph.entities.values(), key=lambda e: e.id))
        query = entity.name
    searcher = web.search()
    results = searcher.search([query], k=5)
    from webdancer.web.search import format_many

    print(format_many([query], results))
    if results and results[0]:
        top = results[0][0].url
        print("\n" + "=" * 72 + "\n")
        show(WebShowConfig(url=top, web=str(out), page_size=3000, links=False))
