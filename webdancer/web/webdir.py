"""A web directory: one snapshot store, its search index and (for the synthetic
site) its knowledge graph, kept together on disk.

    runs/web/site/
      web.json      what it is: kind, page count, seed, base URL
      store/        SnapshotStore (WARC files + index.sqlite)
      search/       BM25 index over the rendered pages
      graph.json    knowledge graph (synthetic sites only)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webdancer.web.snapshots import SnapshotStore

if TYPE_CHECKING:
    from webdancer.web.fetch import Fetcher
    from webdancer.web.search import BM25Search
    from webdancer.web.synthetic import KnowledgeGraph


@dataclass
class BuildStats:
    """Timings of a web build, in seconds and pages per second."""

    pages: int
    store_s: float
    index_s: float

    @property
    def store_pages_per_s(self) -> float:
        return self.pages / max(self.store_s, 1e-9)

    @property
    def index_pages_per_s(self) -> float:
        return self.pages / max(self.index_s, 1e-9)


class WebDir:
    """Opens the parts of a web directory; a bare store directory works too."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(
                f"web directory {self.path} does not exist; build one with `webdancer web build out={self.path}`."
            )
        self.manifest: dict[str, Any] = {}
        if (self.path / "web.json").exists():
            self.manifest = json.loads((self.path / "web.json").read_text(encoding="utf-8"))

    @property
    def store_dir(self) -> Path:
        nested = self.path / "store"
        return nested if nested.exists() else self.path

    @property
    def search_dir(self) -> Path:
        return self.path / "search"

    def store(self, mode: str = "replay", fetcher: Fetcher | None = None) -> SnapshotStore:
        return SnapshotStore(self.store_dir, mode=mode, fetcher=fetcher)  # type: ignore[arg-type]

    def search(self) -> BM25Search:
        from webdancer.web.search import BM25Search

        if not self.search_dir.exists():
            raise FileNotFoundError(
                f"{self.path} has no search index; rebuild it with `webdancer web build out={self.path}`."
            )
        return BM25Search.open(self.search_dir)

    def graph(self) -> KnowledgeGraph:
        from webdancer.web.synthetic import KnowledgeGraph

        path = self.path / "graph.json"
        if not path.exists():
            raise FileNotFoundError(f"{self.path} has no graph.json; only synthetic webs carry a knowledge graph.")
        return KnowledgeGraph.from_json(path)


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass overwrite=true or choose another out=.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def build_synthetic_web(
    out: str | Path,
    pages: int,
    seed: int = 0,
    base_url: str = "https://synthwiki.example",
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[WebDir, BuildStats]:
    """Generate the synthetic site into ``out`` and index it for search."""
    from webdancer.web.search import BM25Search
    from webdancer.web.synthetic import generate_site, write_site

    out = Path(out)
    _prepare(out, overwrite)
    t0 = time.perf_counter()
    site = generate_site(pages, seed=seed, base_url=base_url)
    with SnapshotStore(out / "store", mode="record") as store:
        n = write_site(site, store, progress=progress)
    site.graph.to_json(out / "graph.json")
    t1 = time.perf_counter()
    with SnapshotStore(out / "store") as store:
        BM25Search.build_from_store(store, out / "search", progress=progress)
    t2 = time.perf_counter()
    stats = BuildStats(pages=n, store_s=t1 - t0, index_s=t2 - t1)
    manifest = {"kind": "synthetic", "pages": n, "seed": seed, "base_url": base_url, "build": asdict(stats)}
    (out / "web.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return WebDir(out), stats


def index_web(path: str | Path, *, progress: bool = True) -> BM25Search:
    """(Re)build the search index of a web directory from its store."""
    from webdancer.web.search import BM25Search

    web = WebDir(path)
    if web.search_dir.exists():
        shutil.rmtree(web.search_dir)
    with web.store() as store:
        return BM25Search.build_from_store(store, web.search_dir, progress=progress)
