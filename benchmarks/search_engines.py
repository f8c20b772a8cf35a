"""Offline search engines compared on one synthetic corpus: tantivy vs SQLite FTS5.

    python benchmarks/search_engines.py --out bench_out/search_engines.json [--pages 100000]

Pages are random words from a Zipfian vocabulary (deterministic seed) with short
titles; queries are 1-4 mid-frequency words, half of them plus one very common
word. Both engines stem English (tantivy ``en_stem``, FTS5 ``porter unicode61``),
rank with BM25 with titles weighted 2x, and OR the query terms. Measured: build
pages/s (insert + commit/merge) and query latency p50/p99 in ms, wall clock and
CPU, one query per call, warm cache, for the top 10 (url, title), the top 10 with
snippets (``BM25Search.search``; FTS5 ``snippet()``), and for tantivy also the
top 10 with every term kept (``common_df=1.0``, the exact equivalent of FTS5's OR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from webdancer.web.search import BM25Search

SYLLABLES = "ka lo mi ra te su no vi ze po an el or ur is ben tor mar kel dun".split()


def make_vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct pronounceable words; index = frequency rank."""
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < size:
        parts = rng.integers(0, len(SYLLABLES), rng.integers(2, 5))
        word = "".join(SYLLABLES[i] for i in parts)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


Doc = tuple[str, str, str]  # (url, title, body)


def make_corpus(pages: int, vocab: list[str], rng: np.random.Generator) -> list[Doc]:
    """(url, title, body) with bodies of 100-600 Zipf(1)-distributed words."""
    weights = 1.0 / (np.arange(len(vocab)) + 2.7)
    cdf = np.cumsum(weights / weights.sum())
    lengths = rng.integers(100, 600, pages)
    ids = np.searchsorted(cdf, rng.random(int(lengths.sum()))).clip(0, len(vocab) - 1).tolist()
    title_ids = rng.integers(0, 5000, (pages, 5)).tolist()
    title_lens = rng.integers(2, 6, pages).tolist()
    docs, start = [], 0
    for i, length in enumerate(lengths.tolist()):
        body = " ".join([vocab[j] for j in ids[start : start + length]])
        start += length
        title = " ".join([vocab[j] for j in title_ids[i][: title_lens[i]]])
        docs.append((f"https://site.example/page/{i}", title.capitalize(), body))
    return docs


def make_queries(count: int, vocab: list[str], rng: np.random.Generator) -> list[str]:
    queries = []
    for _ in range(count):
        words = [vocab[j] for j in rng.integers(50, 20000, rng.integers(1, 5))]
        if rng.random() < 0.5:
            words.insert(int(rng.integers(0, len(words) + 1)), vocab[int(rng.integers(0, 50))])
        queries.append(" ".join(words))
    return queries


def latencies_ms(run: Callable[[str], object], queries: Sequence[str]) -> dict[str, float]:
    """Wall-clock and CPU (this thread) percentiles; CPU time is what a busy,
    shared machine cannot inflate."""
    for query in queries[:20]:  # warm caches
        run(query)
    wall, cpu = [], []
    for query in queries:
        began, began_cpu = time.perf_counter(), time.thread_time()
        run(query)
        cpu.append((time.thread_time() - began_cpu) * 1e3)
        wall.append((time.perf_counter() - began) * 1e3)
    return {
        "p50_ms": float(np.percentile(wall, 50)),
        "p99_ms": float(np.percentile(wall, 99)),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
    }


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def bench_tantivy(docs: list[Doc], queries: list[str], workdir: Path) -> dict[str, object]:
    index_dir = workdir / "tantivy"
    began = time.perf_counter()
    engine = BM25Search.build(index_dir, docs)
    build_s = time.perf_counter() - began
    every_term = BM25Search(engine.index, common_df=1.0)
    return {
        "build_s": build_s,
        "build_pages_per_s": len(docs) / build_s,
        "index_mb": dir_mb(index_dir),
        "segments": engine.index.searcher().num_segments,
        "top10": latencies_ms(lambda q: engine.search([q], 10, snippets=False), queries),
        "top10_every_term": latencies_ms(
            lambda q: every_term.search([q], 10, snippets=False), queries
        ),
        "top10_snippets": latencies_ms(lambda q: engine.search([q], 10), queries),
    }


def fts5_match(query: str) -> str:
    """An FTS5 MATCH string that ORs the query's words, each quoted so that no
    word is read as syntax."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in query).split()]
    return " OR ".join(f'"{w}"' for w in words)


def bench_fts5(docs: list[Doc], queries: list[str], workdir: Path) -> dict[str, object]:
    path = workdir / "fts5.sqlite"
    began = time.perf_counter()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(
        "CREATE VIRTUAL TABLE docs USING fts5(url UNINDEXED, title, body, "
        "tokenize='porter unicode61')"
    )
    with db:
        db.executemany("INSERT INTO docs(url, title, body) VALUES (?, ?, ?)", docs)
        db.execute("INSERT INTO docs(docs) VALUES ('optimize')")
    build_s = time.perf_counter() - began
    ranked = "FROM docs WHERE docs MATCH ? ORDER BY bm25(docs, 0.0, 2.0, 1.0) LIMIT 10"
    top10 = f"SELECT url, title {ranked}"
    with_snippet = f"SELECT url, title, snippet(docs, 2, '', '', '...', 48) {ranked}"

    def run(sql: str) -> Callable[[str], object]:
        return lambda query: db.execute(sql, (fts5_match(query),)).fetchall()

    result = {
        "build_s": build_s,
        "build_pages_per_s": len(docs) / build_s,
        "index_mb": path.stat().st_size / 1e6,
        "top10": latencies_ms(run(top10), queries),
        "top10_snippets": latencies_ms(run(with_snippet), queries),
    }
    db.close()
    return result


def print_table(report: dict[str, Any]) -> None:
    pages, queries = report["pages"], report["queries"]
    print(f"\n{pages} pages, {queries} queries, mean body {report['mean_body_chars']:.0f} chars")
    print(f"{'engine':<8} {'build pages/s':>14} {'index MB':>9}")
    for name in ("tantivy", "fts5"):
        r = report[name]
        print(f"{name:<8} {r['build_pages_per_s']:>14,.0f} {r['index_mb']:>9.0f}")
    heads = ("p50 ms", "p99 ms", "cpu p50", "cpu p99")
    print(f"\n{'engine':<8} {'results':<10} " + " ".join(f"{h:>8}" for h in heads))
    for name in ("tantivy", "fts5"):
        for label, key in (
            ("top10", "top10"),
            ("+snippets", "top10_snippets"),
            ("all terms", "top10_every_term"),
        ):
            if key not in report[name]:
                continue
            t = report[name][key]
            print(
                f"{name:<8} {label:<10} {t['p50_ms']:>8.2f} {t['p99_ms']:>8.2f} "
                f"{t['cpu_p50_ms']:>8.2f} {t['cpu_p99_ms']:>8.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/search_engines.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    began = time.perf_counter()
    vocab = make_vocabulary(args.vocab, rng)
    docs = make_corpus(args.pages, vocab, rng)
    queries = make_queries(args.queries, vocab, rng)
    print(f"corpus: {len(docs)} pages in {time.perf_counter() - began:.1f} s")
    report: dict[str, Any] = {
        "pages": len(docs),
        "queries": len(queries),
        "mean_body_chars": sum(len(d[2]) for d in docs) / len(docs),
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["tantivy"] = bench_tantivy(docs, queries, Path(tmp))
        print(f"tantivy done in {time.perf_counter() - began:.1f} s")
        report["fts5"] = bench_fts5(docs, queries, Path(tmp))
    report["total_s"] = time.perf_counter() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {args.out} ({report['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
