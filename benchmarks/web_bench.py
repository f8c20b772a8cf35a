"""Speed of the offline web: store build, index build, search, render, lookup.

    python benchmarks/web_bench.py --out bench_out/web.json [--pages 100000]

Targets: search p50 <= 1 ms, render p50 <= 3 ms on real pages, build >= 2,000 pages/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from webdancer.web.render import render_page
from webdancer.web.webdir import build_synthetic_web

SHARED_PAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "html_pages"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_synthetic(pages: int, workdir: Path, n_queries: int, n_lookups: int) -> dict[str, float]:
    web, stats = build_synthetic_web(workdir / "site", pages, seed=0, overwrite=True, progress=True)
    graph = web.graph()
    rng = random.Random(0)
    entities = sorted(graph.entities.values(), key=lambda e: e.id)
    queries = []
    for _ in range(n_queries):
        e = rng.choice(entities)
        extra = rng.choice([str(v) for v in e.attributes.values()] or [e.type])
        queries.append(f"{e.name} {extra}" if rng.random() < 0.5 else e.name)
    searcher = web.search()
    searcher.search(queries[:20], k=10)  # warm the searcher and page cache
    search_ms = []
    for q in queries:
        t = time.perf_counter()
        searcher.search([q], k=10)
        search_ms.append((time.perf_counter() - t) * 1e3)

    lookup_us = []
    with web.store() as store:
        urls = [e.url for e in rng.sample(entities, min(n_lookups, len(entities)))]
        for url in urls[:50]:
            store.get(url)
        for url in urls:
            t = time.perf_counter()
            store.get(url)
            lookup_us.append((time.perf_counter() - t) * 1e6)
    return {
        "pages": stats.pages,
        "store_build_pages_per_s": stats.store_pages_per_s,
        "index_build_pages_per_s": stats.index_pages_per_s,
        "build_pages_per_s": stats.pages / (stats.store_s + stats.index_s),
        "search_p50_ms": percentile(search_ms, 50),
        "search_p99_ms": percentile(search_ms, 99),
        "lookup_p50_us": percentile(lookup_us, 50),
        "lookup_p99_us": percentile(lookup_us, 99),
    }


def bench_render(repeats: int) -> dict[str, float]:
    files = sorted(SHARED_PAGES.glob("*.html"))
    if not files:
        return {"render_pages": 0}
    bodies = [f.read_bytes() for f in files]
    for body in bodies:  # warm-up
        render_page(body, "https://example.com/")
    times_ms = []
    total_bytes = 0
    for _ in range(repeats):
        for body in bodies:
            t = time.perf_counter()
            render_page(body, "https://example.com/")
            times_ms.append((time.perf_counter() - t) * 1e3)
            total_bytes += len(body)
    return {
        "render_pages": len(bodies),
        "render_median_kb": statistics.median(len(b) for b in bodies) / 1024,
        "render_p50_ms": percentile(times_ms, 50),
        "render_p99_ms": percentile(times_ms, 99),
        "render_mb_per_s": total_bytes / 1e6 / (sum(times_ms) / 1e3),
    }


TARGETS = {
    "search_p50_ms": ("<=", 1.0),
    "render_p50_ms": ("<=", 3.0),
    "store_build_pages_per_s": (">=", 2000.0),
    "index_build_pages_per_s": (">=", 2000.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--render-repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        results = bench_synthetic(args.pages, Path(tmp), args.queries, args.lookups)
    results.update(bench_render(args.render_repeats))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["machine"] = f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")

    print(f"{'metric':<28}{'value':>14}  target")
    for key, value in results.items():
        target = TARGETS.get(key)
        mark = ""
        if target and isinstance(value, float):
            op, bound = target
            ok = value <= bound if op == "<=" else value >= bound
            mark = f"{op} {bound:g} {'ok' if ok else 'MISSED'}"
        shown = f"{value:14.3f}" if isinstance(value, float) else f"{value!s:>14}"
        print(f"{key:<28}{shown}  {mark}")


if __name__ == "__main__":
    main()
