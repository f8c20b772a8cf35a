"""Open the store and search backend an environment browses, from a web directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from webdancer.web.search import SearchBackend
from webdancer.web.snapshots import SnapshotStore
from webdancer.web.webdir import WebDir

log = logging.getLogger("webdancer.envs")


def open_web(
    web: str | Path, *, mode: str = "replay", allow_hosts: Sequence[str] = (), search: str = "auto"
) -> tuple[SnapshotStore, SearchBackend | None]:
    """-> (store, search backend) for a web directory in ``mode``.

    ``search="auto"``: replay uses the directory's BM25 index (or recorded live
    results when it has none); record/live use Serper when ``SERPER_API_KEY`` is set
    (recording every result list into the store), else the BM25 index if present.
    """
    if mode not in ("replay", "record", "live"):
        raise ValueError(f"mode={mode!r} is not valid; use replay, record or live.")
    if mode == "replay":
        webdir = WebDir(web)
        store = webdir.store("replay")
    else:
        from webdancer.web.fetch import Fetcher

        Path(web).mkdir(parents=True, exist_ok=True)
        fetcher = Fetcher(allow_hosts=allow_hosts)
        store_dir = Path(web) / "store"
        store = SnapshotStore(store_dir, mode=mode, fetcher=fetcher)
        webdir = WebDir(web)
    return store, _pick_search(webdir, store, mode, search)


def _pick_search(webdir: WebDir, store: SnapshotStore, mode: str, search: str) -> SearchBackend | None:
    from webdancer.web.search import RecordedSearch, SerperSearch

    if search == "none":
        return None
    if search == "serper" or (search == "auto" and mode != "replay" and os.environ.get("SERPER_API_KEY")):
        return SerperSearch(store=store if mode == "record" else None)
    if search == "recorded":
        return RecordedSearch(store)
    if webdir.search_dir.exists():
        return webdir.search()
    if search == "auto":
        log.info("%s has no search index; replaying recorded search results instead", webdir.path)
        return RecordedSearch(store)
    raise FileNotFoundError(f"{webdir.path} has no search index; run `webdancer web build` or use search=recorded.")
