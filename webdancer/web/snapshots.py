"""SnapshotStore: web pages kept as WARC files plus an on-disk URL index.

Layout of a store directory:

    root/snap-00000.warc.gz   WARC/1.1, one gzip member per record, rotated past ~1 GB
    root/index.sqlite         normalized URL -> (file, byte offset, record length, kind, ...)
    root/writer.lock          held (flock) by the one process allowed to write

A lookup is one index query, one positioned read and one small decompression.
Modes: ``replay`` serves only what is stored and never touches the network;
``record`` fetches and stores what is missing; ``live`` fetches every time and
stores nothing.
"""

from __future__ import annotations

import codecs
import fcntl
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urljoin

from webdancer.web.urls import normalize_url
from webdancer.web.warc import (
    DAMAGED_DATA_ERRORS,
    WIRE_HEADERS,
    Problem,
    Record,
    encode_record,
    http_block,
    parse_any,
    parse_own,
    scan_warc,
    warc_date,
    warcinfo_record,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from webdancer.web.fetch import Fetcher

__all__ = ["Miss", "Page", "Problem", "SnapshotStore"]

logger = logging.getLogger("webdancer.web")

Mode = Literal["replay", "record", "live"]
_MODES = ("replay", "record", "live")
INDEX_NAME = "index.sqlite"
LOCK_NAME = "writer.lock"
MAX_FILE_BYTES = 1 << 30
MAX_REDIRECTS = 5
_BATCH = 5000  # index rows per transaction while writing
_BUFFER_BYTES = 1 << 20  # WARC bytes gathered before one write() call
_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
_HTTP_MSG = "application/http;msgtype=response"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, own INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    url TEXT PRIMARY KEY, file_id INTEGER NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, kind TEXT NOT NULL, status INTEGER NOT NULL,
    content_type TEXT NOT NULL) WITHOUT ROWID;
"""
_SELECT = "SELECT file_id, offset, length, kind, status, content_type FROM entries WHERE url = ?"
_INSERT = "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)"

_Row = tuple[int, int, int, str, int, str]  # file_id, offset, length, kind, status, content_type
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _valid_codec(name: str) -> str | None:
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def _charset(content_type: str, body: bytes) -> str:
    """Charset from the Content-Type parameter, else a BOM, else an HTML meta tag
    in the first 2 KB, else utf-8."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and (codec := _valid_codec(value)):
            return codec
    if body.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if m := _META_CHARSET.search(body[:2048]):
        return _valid_codec(m.group(1).decode("ascii")) or "utf-8"
    return "utf-8"


@dataclass(frozen=True)
class Page:
    """A stored or fetched response. `url` is where the content was found (after
    redirects); `date` is the WARC-Date (ISO 8601, UTC) of the capture."""

    url: str
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    date: str = ""

    @property
    def text(self) -> str:
        """Body decoded with its declared charset (fallback utf-8, bad bytes replaced)."""
        return self.body.decode(_charset(self.content_type, self.body), errors="replace")

    def header(self, name: str) -> str | None:
        """First header value named `name` (case-insensitive), or None."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


@dataclass(frozen=True)
class Miss:
    """A URL the store could not serve, and why; a value, never an exception."""

    url: str
    reason: str


class SnapshotStore:
    """Pages kept as WARC records with a SQLite URL index (see module docstring).

    `readonly` defaults to True for replay and live, False for record. A replay
    store that is written to (e.g. by a site builder) is opened with
    ``readonly=False``. Any number of processes may read a store; one may write.
    """

    def __init__(
        self,
        root: str | Path,
        mode: Mode = "replay",
        fetcher: Fetcher | None = None,
        readonly: bool | None = None,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"Unknown snapshot mode {mode!r}; use one of {', '.join(_MODES)}.")
        if readonly is None:
            readonly = mode != "record"
        if readonly and mode == "record":
            raise ValueError("Record mode writes pages; open the store with readonly=False.")
        self.root = Path(root)
        self.mode: Mode = mode
        self.readonly = readonly
        self.max_file_bytes = max_file_bytes
        self._fetcher = fetcher
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._files: dict[int, tuple[str, bool]] = {}
        self._fds: dict[str, int] = {}
        self._pending: dict[str, _Row] = {}
        # The WARC being written: its descriptor and index id, its size including
        # `_buf`, which holds records not yet written. An explicit buffer (rather
        # than a buffered file object) lets a forked child drop unwritten bytes
        # instead of flushing them into the parent's file.
        self._out_fd: int | None = None
        self._out_id = -1
        self._out_size = 0
        self._buf = bytearray()
        self._inherited: list[sqlite3.Connection] = []
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._open()

    # ---- opening and closing -------------------------------------------------

    def _open(self) -> None:
        index = self.root / INDEX_NAME
        if self.readonly:
            if not index.exists():
                if self.mode == "live":
                    return  # live needs no stored pages
                raise FileNotFoundError(
                    f"No snapshot store at {self.root} ({INDEX_NAME} is missing); build one, or "
                    "record one with SnapshotStore(root, mode='record')."
                )
            self._db = self._connect_readonly(index)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(
                f"Another process is writing to the snapshot store at {self.root}; "
                "open it with readonly=True or wait for the writer to close it."
            ) from None
        self._db = sqlite3.connect(index, timeout=30.0, check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA synchronous=NORMAL")

    def _connect_readonly(self, index: Path) -> sqlite3.Connection:
        # immutable=1 skips all locking; safe only when nobody can write the directory.
        immutable = "" if os.access(self.root, os.W_OK) else "&immutable=1"
        uri = f"file:{quote(str(index.resolve()))}?mode=ro{immutable}"
        db = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
        # Memory-mapped index pages: a lookup then costs no read() system calls.
        db.execute(f"PRAGMA mmap_size={1 << 30}")
        db.execute("PRAGMA cache_size=-65536")  # KiB; allocated only as pages are used
        return db

    def _check_process(self) -> None:
        """After fork, reopen read handles: SQLite connections and file offsets must
        not be shared between processes. The writer role stays with the parent."""
        if os.getpid() == self._pid:
            return
        self._pid = os.getpid()
        for fd in [*self._fds.values(), self._out_fd, self._lock_fd]:
            if fd is not None:
                os.close(fd)  # the child's copies; the parent's stay open
        self._fds, self._out_fd, self._out_id = {}, None, -1
        self._buf, self._pending = bytearray(), {}
        if self._lock_fd is not None:
            self._lock_fd, self.readonly = None, True
        if self._db is not None:
            # Closing the parent's connection here could disturb its locks; keep it unused.
            self._inherited.append(self._db)
        index = self.root / INDEX_NAME
        self._db = self._connect_readonly(index) if index.exists() else None

    def flush(self) -> None:
        """Write buffered records to disk and commit the index."""
        with self._lock:
            self._check_process()
            self._flush_index()

    def close(self) -> None:
        """Flush, then release files, the index and the writer lock. Idempotent."""
        with self._lock:
            if os.getpid() == self._pid:
                self._flush_index()
                for fd in [*self._fds.values(), self._out_fd]:
                    if fd is not None:
                        os.close(fd)
                if self._db is not None:
                    self._db.close()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # closing releases the flock
            self._out_fd, self._out_id, self._fds = None, -1, {}
            self._db, self._lock_fd = None, None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        if not self.readonly:
            raise TypeError(
                "A writable SnapshotStore cannot be pickled; open a readonly=True store "
                "in each process instead."
            )
        return {"root": self.root, "mode": self.mode, "fetcher": self._fetcher,
                "readonly": True, "max_file_bytes": self.max_file_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        max_file_bytes = state.pop("max_file_bytes")
        self.__init__(**state, max_file_bytes=max_file_bytes)  # type: ignore[misc]

    # ---- reading -------------------------------------------------------------

    def get(self, url: str) -> Page | Miss:
        """The page stored for `url` (normalized; stored redirects are followed),
        fetched per the mode when absent. Never raises for a missing page."""
        if self.mode == "live":
            return self._fetch(url, write=False)
        with self._lock:
            self._check_process()
            hit = self._lookup(normalize_url(url), url)
        if hit is not None:
            return hit
        if self.mode == "record":
            return self._fetch(url, write=True)
        return Miss(url, "not in snapshot")

    def _lookup(self, key: str, url: str) -> Page | Miss | None:
        row = self._row(key)
        if row is None:
            return None
        page = self._read(row, url)
        seen = {key}
        while isinstance(page, Page) and 300 <= page.status < 400 and len(seen) <= MAX_REDIRECTS:
            location = page.header("Location")
            target = normalize_url(urljoin(page.url, location)) if location else ""
            row = self._row(target) if target not in seen else None
            if row is None:
                break
            seen.add(target)
            page = self._read(row, url)
        return page

    def _row(self, key: str) -> _Row | None:
        row = self._pending.get(key)
        if row is None and self._db is not None:
            row = self._db.execute(_SELECT, (key,)).fetchone()
        return row

    def _read(self, row: _Row, url: str) -> Page | Miss:
        file_id, offset, length = row[0], row[1], row[2]
        try:
            path, own = self._file(file_id)
            if file_id == self._out_id:
                self._write_buffer()  # the record may not be written yet
            data = os.pread(self._fd(path), length, offset)
            rec: Record = parse_own(data) if own else parse_any(data)
        except DAMAGED_DATA_ERRORS as exc:  # a damaged store must not crash an episode
            logger.warning("snapshot record for %s unreadable (%s: %s)", url,
                           type(exc).__name__, exc)
            return Miss(url, f"snapshot record unreadable ({type(exc).__name__})")
        return Page(rec.uri or url, rec.status, rec.content_type, rec.body, rec.headers, rec.date)

    def _file(self, file_id: int) -> tuple[str, bool]:
        if file_id not in self._files:
            assert self._db is not None
            found = self._db.execute("SELECT path, own FROM files WHERE id = ?", (file_id,))
            path, own = found.fetchone()
            full = path if os.path.isabs(path) else str(self.root / path)
            self._files[file_id] = (full, bool(own))
        return self._files[file_id]

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def __contains__(self, url: str) -> bool:
        with self._lock:
            self._check_process()
            return self._row(normalize_url(url)) is not None

    def __len__(self) -> int:
        with self._lock:
            self._check_process()
            self._flush_index()
            if self._db is None:
                return 0
            return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def urls(self) -> Iterator[str]:
        """Every stored key (normalized URL or URN), in sorted order."""
        with self._lock:
            self._check_process()
            self._flush_index()
            if self._db is None:
                return iter(())
            cursor = self._db.execute("SELECT url FROM entries ORDER BY url")
        return (url for (url,) in cursor)

    def pages(self) -> Iterator[Page]:
        """Every stored 2xx HTML or plain-text page (the newest capture per URL),
        read in file order so the disk reads are sequential."""
        with self._lock:
            self._check_process()
            self._flush_index()
            if self._db is None:
                return
            rows = self._db.execute(
                "SELECT url, file_id, offset, length, kind, status, content_type FROM entries "
                "WHERE status BETWEEN 200 AND 299 ORDER BY file_id, offset").fetchall()
        for url, *row in rows:
            if not url.startswith(("http://", "https://")):
                continue
            if row[5].split(";")[0].strip().lower() not in _TEXT_TYPES:
                continue
            with self._lock:
                page = self._read(tuple(row), url)  # type: ignore[arg-type]
            if isinstance(page, Page):
                yield page

    # ---- writing -------------------------------------------------------------

    def _check_writable(self) -> None:
        self._check_process()
        if self.readonly:
            raise PermissionError(
                f"The snapshot store at {self.root} is open read-only; "
                "open it with readonly=False (in the process that owns the writer lock) to write."
            )

    def put(
        self,
        url: str,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "text/html; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Store an HTTP response for `url`; a later put for the same URL wins.
        `body` is the decoded payload (Content-Encoding/Transfer-Encoding headers
        are dropped)."""
        pairs = list(headers.items()) if headers else []
        self._put_response(url, body, status, content_type, pairs)

    def _put_response(self, url: str, body: bytes, status: int, content_type: str,
                      headers: list[tuple[str, str]]) -> None:
        block = http_block(status, content_type, headers, body)
        record = encode_record("response", url, block, _HTTP_MSG, warc_date())
        self._append(normalize_url(url), record, "response", status, content_type)

    def put_resource(self, uri: str, body: bytes, content_type: str) -> None:
        """Store a resource record (no HTTP envelope), e.g. recorded search results
        under a URI like "urn:webdancer:search:...". A later put wins."""
        record = encode_record("resource", uri, body, content_type, warc_date())
        self._append(normalize_url(uri), record, "resource", 200, content_type)

    def _append(self, key: str, record: bytes, kind: str, status: int, ctype: str) -> None:
        with self._lock:
            self._check_writable()
            if self._out_fd is None or self._out_size + len(record) > self.max_file_bytes:
                self._start_file()
            self._pending[key] = (self._out_id, self._out_size, len(record), kind, status, ctype)
            self._buf += record
            self._out_size += len(record)
            if len(self._buf) >= _BUFFER_BYTES:
                self._write_buffer()
            if len(self._pending) >= _BATCH:
                self._flush_index()

    def _write_buffer(self) -> None:
        if self._buf and self._out_fd is not None:
            with memoryview(self._buf) as view:
                done = 0
                while done < len(view):  # write() may be partial
                    done += os.write(self._out_fd, view[done:])
            self._buf.clear()

    def _start_file(self) -> None:
        """Begin a new WARC file; each writer session and each rotation gets one."""
        self._flush_index()
        if self._out_fd is not None:
            os.close(self._out_fd)
        pattern = "snap-[0-9][0-9][0-9][0-9][0-9].warc.gz"
        taken = [int(p.name[5:10]) for p in self.root.glob(pattern)]
        name = f"snap-{max(taken, default=-1) + 1:05d}.warc.gz"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self._out_fd = os.open(self.root / name, flags, 0o644)
        self._buf = bytearray(warcinfo_record(warc_date()))
        self._out_size = len(self._buf)
        self._out_id = self._file_id(name, own=True)

    def _file_id(self, path: str, own: bool) -> int:
        assert self._db is not None
        # A file keeps the `own` flag it was first registered with: re-adding one of
        # this store's own files must not switch it to the slower generic parser.
        self._db.execute("INSERT OR IGNORE INTO files (path, own) VALUES (?, ?)", (path, own))
        file_id = self._db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()[0]
        self._db.commit()
        self._files.pop(file_id, None)
        return file_id

    def _flush_index(self) -> None:
        self._write_buffer()  # data first, so the index never points past the file end
        if not self._pending or self._db is None:
            return
        with self._db:
            self._db.executemany(_INSERT, ((k, *row) for k, row in self._pending.items()))
        self._pending.clear()

    def add_warc(self, path: str | Path) -> list[Problem]:
        """Index the response and resource records of an existing WARC file in place
        (gzip per record, or uncompressed). Damaged records are skipped, logged and
        returned as Problems; the records before them stay usable."""
        with self._lock:
            self._check_writable()
            full = Path(path).resolve()
            entries, problems = scan_warc(str(full))
            for problem in problems:
                logger.warning("%s at offset %d: %s", problem.file, problem.offset,
                               problem.message)
            try:
                stored = str(full.relative_to(self.root.resolve()))
            except ValueError:
                stored = str(full)
            file_id = self._file_id(stored, own=False)
            for e in entries:
                if e.uri:
                    row = (file_id, e.offset, e.length, e.kind, e.status, e.content_type)
                    self._pending[normalize_url(e.uri)] = row
            self._flush_index()
            return problems

    # ---- network (record and live modes) -------------------------------------

    def _get_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            from webdancer.web.fetch import Fetcher  # only record/live runs need requests

            self._fetcher = Fetcher()
        return self._fetcher

    def _fetch(self, url: str, write: bool) -> Page | Miss:
        """Fetch `url`; in record mode store the response under its final URL and,
        after a redirect, a 302 record pointing there from `url`."""
        result = self._get_fetcher().fetch(url)
        if result.error is not None:
            return Miss(url, f"fetch failed: {result.error}")
        final = result.final_url or url
        headers = [(k, v) for k, v in result.headers
                   if k.lower() not in WIRE_HEADERS and k.lower() != "content-type"]
        # 5xx answers are usually transient; storing one would freeze the failure.
        if not write or result.status >= 500:
            headers.insert(0, ("Content-Type", result.content_type))
            return Page(final, result.status, result.content_type, result.body,
                        tuple(headers), warc_date())
        with self._lock:
            self._put_response(final, result.body, result.status, result.content_type, headers)
            key = normalize_url(url)
            if key != normalize_url(final):
                self._put_response(url, b"", 302, "text/html; charset=utf-8",
                                   [("Location", final)])
            page = self._lookup(key, url)
        return page if page is not None else Miss(url, "recorded page could not be read back")
