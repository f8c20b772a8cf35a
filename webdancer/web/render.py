"""HTML -> agent text: a title, a markdown-ish body with numbered links, pages and passages.

``render_page`` turns raw response bytes (any charset, any quality of markup) into
the text an agent reads after a ``visit``:

    # Page title

    ## A heading

    A paragraph with a link [1].

    - a list item
      - a nested item

    | a | table |
    | --- | --- |
    | 1 | 2 |

Links are numbered in order of first appearance (``RenderedPage.links``), site
chrome (navigation, banners, cookie notices, ads) is dropped, and the text is cut
into ``pages`` of at most ``page_size`` characters and into ``passages`` that
``rank_passages`` orders against a goal. Nothing here raises: a page that cannot
be rendered comes back as a page whose text says why.
"""

from __future__ import annotations

import codecs
import html as html_lib
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from lxml import etree

__all__ = ["Link", "RenderedPage", "rank_passages", "render_page"]

MAX_INPUT_CHARS = 5_000_000  # bytes (or characters) of a document that are parsed
MAX_TEXT_CHARS = 500_000  # characters of rendered body text kept
MAX_BLOCKS = 20_000  # blocks (paragraphs, items, ...) kept; bounds the walk on pathological pages
MIN_PAGE_SIZE = 100  # characters; smaller page sizes are raised to this
TABLE_MAX_ROWS = 60  # body rows of a table shown (plus its header row)
TABLE_MAX_COLS = 12
CELL_MAX_CHARS = 200
LAYOUT_CELL_CHARS = 1000  # a cell longer than this marks a layout table
LINK_TEXT_CHARS = 200
PASSAGE_TARGET = 800  # characters a run of list items grows to before a new passage starts
PASSAGE_MAX = 2000  # characters; longer passages are split
PRUNE_FALLBACK_CHARS = 200  # under this much text after pruning, render without pruning

_BR = "\x00"  # stands for <br> inside a text buffer; input NULs are removed before parsing


@dataclass(frozen=True)
class Link:
    """One numbered link of a rendered page; ``url`` is absolute when the page URL is known."""

    index: int
    text: str
    url: str

    def line(self) -> str:
        """How an observation lists the link: ``[3] Talgard -> https://...``."""
        return f"[{self.index}] {self.text} -> {self.url}"


@dataclass(frozen=True)
class RenderedPage:
    """A page as an agent reads it.

    ``text`` is the whole rendering (first line ``# <title>``); ``pages`` are chunks of
    ``text`` of at most ``page_size`` characters cut on block boundaries; ``passages``
    are paragraph-level blocks, each headed by the headings right before it.
    """

    url: str
    title: str
    text: str
    links: tuple[Link, ...]
    pages: tuple[str, ...]
    passages: tuple[str, ...]


# ----------------------------------------------------------------------------- bytes -> tree

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_META_CHARSET = re.compile(rb"<meta[^>]+?charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.\-]+)", re.IGNORECASE)
_CT_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.\-]+)", re.IGNORECASE)
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_CHARSET_ALIASES = {"utf8mb4": "utf-8", "unicode": "utf-8", "x-sjis": "shift_jis"}
_MAGIC = (b"%PDF-", b"\x89PNG", b"GIF87a", b"GIF89a", b"\xff\xd8\xff", b"PK\x03\x04",
          b"\x1f\x8b", b"\x7fELF", b"wOFF", b"wOF2", b"OggS", b"\x1a\x45\xdf\xa3", b"RIFF")
_BINARY_TYPES = ("image/", "audio/", "video/", "font/", "application/pdf", "application/zip",
                 "application/gzip", "application/x-gzip")
_PLAIN_TYPES = ("text/plain", "text/csv", "text/markdown", "application/json", "text/x-")
# Every byte except the C0 controls that never occur in text (tab, LF, FF, CR and ESC do).
_TEXT_BYTES = bytes(b for b in range(256) if b >= 32 or b in (9, 10, 12, 13, 27))


def _codec(label: str) -> str | None:
    """Python codec for a declared charset; Latin-1 labels mean cp1252, as browsers read them."""
    label = label.strip().lower()
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return _CHARSET_ALIASES.get(label)
    if name in ("iso8859-1", "ascii"):
        return "cp1252"
    if name.startswith(("utf-16", "utf-32")):  # declared inside bytes that read as ASCII: wrong
        return "utf-8"
    return name


def _choose_encoding(data: bytes, content_type: str) -> tuple[str, bool]:
    """(codec, whether the bytes may go to libxml2 as UTF-8 unchanged) for ``data``.

    The charset is the header's, else the <meta> one, else a guess; but bytes that read
    as UTF-8 are UTF-8 whatever they claim (multi-byte sequences are vanishingly rare in
    real single-byte text). Undeclared bytes that are not UTF-8 are cp1252 unless they
    are mostly UTF-8 with a few bad bytes. The evidence is a 16 KB window from the
    first non-ASCII byte on, so that a long page is not decoded twice.
    """
    match = _CT_CHARSET.search(content_type) if content_type else None
    declared = _codec(match.group(1)) if match else None
    if declared is None:
        meta = _META_CHARSET.search(data, 0, 16384)
        declared = _codec(meta.group(1).decode("ascii")) if meta else None
    first = _NON_ASCII.search(data)
    if first is None:
        return declared or "utf-8", True
    window = data[first.start() : first.start() + 16384]
    # rstrip: a character cut by the window's end (or by a truncated body) is not evidence
    text = window.decode("utf-8", "replace").rstrip("\ufffd")
    bad = text.count("\ufffd") - window.count(b"\xef\xbf\xbd")
    if bad <= 0:
        return "utf-8", True
    if declared and declared != "utf-8":
        return declared, False
    good_multibyte = len(window) - len(text)
    return ("utf-8" if good_multibyte > 4 * bad else "cp1252"), False


def _sniff(data: bytes, content_type: str) -> str:
    """'binary', 'plain' or 'html' for a body and its (possibly empty) content type."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime.startswith(_BINARY_TYPES) or data.startswith(_MAGIC):
        return "binary"
    head = data[:8192]
    if len(head.translate(None, _TEXT_BYTES)) > max(2, len(head) // 100):
        return "binary"
    if mime.startswith(_PLAIN_TYPES):
        start = head.lstrip()[:1024].lower()
        if not (start.startswith(b"<") and (b"<html" in start or b"<!doctype html" in start)):
            return "plain"
    return "html"


def _open_self_closed(data: bytes) -> bytes:
    """Rewrite ``<script .../>`` as ``<script ...>``: browsers ignore that slash (the code up
    to ``</script>`` stays hidden) but libxml2 closes the element and shows the code as text.
    Returns ``data`` itself when there is nothing to rewrite."""
    pieces = []
    done = 0
    for opener in (b"<script", b"<SCRIPT", b"<style", b"<STYLE"):
        start = data.find(opener)
        while start >= 0:
            end = data.find(b">", start)
            if end < 0:
                break
            if data[end - 1 : end] == b"/":
                pieces.append((end - 1, end))
            start = data.find(opener, end)
    if not pieces:
        return data
    out = []
    for cut_from, cut_to in sorted(pieces):
        out.append(data[done:cut_from])
        done = cut_to
    out.append(data[done:])
    return b"".join(out)


class _Parsers(threading.local):
    """lxml parsers are not safe to share across threads: one per thread."""

    def __init__(self) -> None:
        # The encoding is always given: libxml2's own <meta> detection misses often (a
        # conditional comment before <html> is enough), and reading UTF-8 costs nothing.
        # collect_ids=False: no id hash table, which nothing here looks up.
        self.utf8 = etree.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True,
            huge_tree=True, collect_ids=False,
        )


_PARSERS = _Parsers()


def _to_tree(data: bytes, content_type: str) -> tuple[etree._Element | None, bytes]:
    """(tree or None for an empty document, the UTF-8 bytes parsed) for a body in any charset."""
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    encoding, utf8 = _choose_encoding(data, content_type)
    if not (encoding == "utf-8" and utf8):
        data = data.decode(encoding, "replace").encode("utf-8")
    root = etree.fromstring(data, _PARSERS.utf8)
    if root is not None and _may_show_code(root):
        fixed = _open_self_closed(data)
        if fixed is not data:
            data, root = fixed, etree.fromstring(fixed, _PARSERS.utf8)
    return root, data


def _may_show_code(root: etree._Element) -> bool:
    """Whether an empty <script>/<style> is followed by text: the mark of ``<script/>``
    (scanning the bytes for it on every page would cost a tenth of a render)."""
    for el in root.iter("script", "style"):
        if not el.text and not len(el) and el.tail and not el.tail.isspace():
            return True
    return False


def _parse_gave_up() -> bool:
    """Whether libxml2 stopped early (nesting deeper than it allows), losing the rest."""
    error = _PARSERS.utf8.error_log.last_error
    return error is not None and error.level_name == "FATAL"


_BLOCK_TAG = re.compile(r"</?(?:p|div|br|li|h[1-6]|tr|table|ul|ol|dl|dt|dd|section|article"
                        r"|pre|blockquote|header|footer|main|nav|aside|form|hr)\b[^>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^>]*>")
_BLANK_LINE = re.compile(r"\n\s*\n")


def _markup_blocks(data: bytes) -> list[tuple[str, str]]:
    """Paragraphs of a document by tag stripping: the fallback when it cannot be parsed."""
    text = _without_code(data.decode("utf-8", "replace"))
    text = html_lib.unescape(_ANY_TAG.sub("", _BLOCK_TAG.sub("\n\n", text)))
    paragraphs = (" ".join(chunk.split()) for chunk in text.split("\n\n"))
    return [("p", paragraph) for paragraph in paragraphs if paragraph][:MAX_BLOCKS]


def _without_code(text: str) -> str:
    """``text`` without <script> and <style> elements, in one linear scan."""
    lower = text.lower()
    kept = []
    pos = 0
    next_at = {"script": lower.find("<script"), "style": lower.find("<style")}
    while True:
        for tag, at in next_at.items():  # each tag's next opening, found again only when passed
            if 0 <= at < pos:
                next_at[tag] = lower.find("<" + tag, pos)
        found = [(at, tag) for tag, at in next_at.items() if at >= 0]
        if not found:
            break
        start, tag = min(found)
        kept.append(text[pos:start])
        end = lower.find("</" + tag, start)
        if end < 0:
            return " ".join(kept)
        pos = lower.find(">", end) + 1 or len(text)
    kept.append(text[pos:])
    return " ".join(kept)


# ----------------------------------------------------------------------------- boilerplate

_JUNK_NAME = re.compile(
    r"(?:^|[\s_-])(?:cookie|gdpr|consent|advert|sidebar|breadcrumb|newsletter|adsbygoogle"
    r"|addthis|sharethis|sharedaddy|skip-?link)"
    r"|(?:^|[\s_-])(?:ads?|adslot|adunit|sponsored|promo|popup|social|share|sharing)"
    r"(?:[-_](?:bar|box|buttons?|container|links?|icons?|slot|unit|wrapper|widget|block"
    r"|banner|label|tools?|top|bottom|media|follow|nav))*(?=\s|$)"
)
_JUNK_ROLES = frozenset({"navigation", "banner", "contentinfo"})
_junk_cache: dict[str, bool] = {}


def _junk_name(name: str) -> bool:
    """Whether a class or id value names site chrome; cached because pages repeat them."""
    hit = _junk_cache.get(name)
    if hit is None:
        if len(_junk_cache) > 50_000:
            _junk_cache.clear()
        hit = _junk_cache[name] = _JUNK_NAME.search(name.lower()) is not None
    return hit


def _holds_content(el: etree._Element) -> bool:
    """A candidate for pruning that wraps the main content (h1, article, main) is kept."""
    return next(el.iter("h1", "article", "main"), None) is not None


# ----------------------------------------------------------------------------- the walk

# Element kinds; INLINE elements contribute only their text.
(INLINE, SKIP, BR, LINK, PRE, HEADING, FLOW, BLOCK, LIST, ITEM, TABLE, ROW, CELL, LANDMARK,
 ARTICLE) = range(15)
_CHECKED = frozenset({BLOCK, LIST, ITEM, TABLE, CELL, LANDMARK})
_CODE_TAGS = "script style noscript template svg"  # code and drawings: never page text
_TAG_KIND: dict[str, int] = {}
for _kind, _tags in (
    (SKIP, (_CODE_TAGS + " iframe frame frameset object embed canvas head title meta link base input "
            "select textarea button option optgroup datalist audio video map area math")),
    (BR, "br"), (LINK, "a"), (PRE, "pre listing xmp plaintext"),
    (HEADING, "h1 h2 h3 h4 h5 h6"),
    (FLOW, "html body caption"),
    (BLOCK, ("p div section blockquote center address details summary figure figcaption "
             "fieldset legend form dl dt dd hgroup hr dialog search noframes")),
    (LIST, "ul ol menu dir"), (ITEM, "li"), (TABLE, "table"), (ROW, "tr"), (CELL, "td th"),
    (LANDMARK, "nav header footer aside"), (ARTICLE, "article main"),
):
    for _tag in _tags.split():
        _TAG_KIND[_tag] = _kind


_PLAIN_INLINE = tuple(
    "span b i em strong font small code abbr u s sup sub mark cite q time kbd var bdi bdo dfn "
    "samp strike tt big label nobr wbr ins del picture source col colgroup tbody thead tfoot"
    .split()
)


@dataclass
class _Table:
    """Rows of cells while a <table> is open; each cell is its own list of blocks."""

    layout: bool
    rows: list[list[list[tuple[str, str]]]] = field(default_factory=list)
    row: list[list[tuple[str, str]]] | None = None
    saved: tuple | None = None  # the walker state outside the open cell


class _Walker:
    """One pass over a parsed tree: (kind, text) blocks plus numbered links."""

    def __init__(self, base: str, prune: bool) -> None:
        self.base = base
        self.base_parts = _base_parts(base)
        self.prune = prune
        self.blocks: list[tuple[str, str]] = []
        self.buf: list[str] = []
        self.gen = 0  # bumped whenever ``buf`` is emptied or swapped, so link starts stay valid
        self.prefix = ""  # list marker or indent for the next block
        self.items: list[str] = []  # continuation indent of each open <li>
        self.lists: list[list[int]] = []  # [ordered, last number] of each open list
        self.tables: list[_Table] = []
        # (url, gen, buffer length, block list, block count) when each open <a> started
        self.open_links: list[tuple[str, int, int, list, int] | None] = []
        self.links: list[Link] = []
        self.link_numbers: dict[str, int] = {}
        self.url_cache: dict[str, str | None] = {}
        self.quote = 0
        self.list_serial = 0  # top-level lists are numbered so that two lists stay apart
        self.article = 0
        self.size = 0
        self.pruned = 0
        self.full = False

    def walk(self, root: etree._Element) -> list[tuple[str, str]]:
        """Render the subtree of ``root`` into blocks; iterative, so any depth is fine."""
        walker = etree.iterwalk(root, events=("start", "end"))
        kinds = _TAG_KIND
        append = self.buf.append
        skipped = False
        for event, el in walker:
            tag = el.tag
            kind = kinds.get(tag, INLINE) if tag.__class__ is str else SKIP
            if event == "start":
                if kind == BR:
                    append(_BR)
                elif kind:
                    if not self._start(el, tag, kind):
                        walker.skip_subtree()
                        skipped = True
                        continue
                    append = self.buf.append
                text = el.text
                if text:
                    append(text)
            else:
                if skipped:
                    skipped = False
                elif kind > BR:
                    self._end(el, tag, kind)
                    append = self.buf.append
                    if self.full:
                        break
                tail = el.tail
                if tail:
                    append(tail)
        self._flush()
        return self.blocks

    def _start(self, el: etree._Element, tag: str, kind: int) -> bool:
        """Open a non-inline element; False means skip its subtree."""
        if kind == SKIP:
            return False
        if self.prune and kind in _CHECKED and self._is_chrome(el, tag, kind):
            self.pruned += 1
            return False
        if kind == LINK:
            self._open_link(el)
            return True
        if self.buf:
            self._flush()
        if kind == PRE:
            self._pre(el)
            return False
        if kind == LIST:
            if not self.lists:
                self.list_serial += 1
            self.lists.append([tag == "ol", _list_start(el) - 1])
        elif kind == ITEM:
            self._open_item()
        elif kind == TABLE:
            self.tables.append(_Table(layout=el.get("role") == "presentation"))
        elif kind == ROW and self.tables:
            self._close_row(self.tables[-1])
            self.tables[-1].row = []
        elif kind == CELL and self.tables:
            self._open_cell(self.tables[-1])
        elif kind == ARTICLE:
            self.article += 1
        elif tag == "blockquote":
            self.quote += 1
        return True

    def _end(self, el: etree._Element, tag: str, kind: int) -> None:
        if kind == LINK:
            self._close_link(el)
            return
        if kind == HEADING:
            self._flush(level=int(tag[1]))
            return
        if self.buf:
            self._flush()
        if kind == LIST:
            if self.lists:
                self.lists.pop()
        elif kind == ITEM:
            if self.items:
                self.items.pop()
            self.prefix = self.items[-1] if self.items else ""
        elif kind == TABLE and self.tables:
            self._close_table(self.tables.pop())
        elif kind == ROW and self.tables:
            self._close_row(self.tables[-1])
        elif kind == CELL and self.tables:
            self._close_cell(self.tables[-1], el)
        elif kind == ARTICLE:
            self.article -= 1
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)

    def _is_chrome(self, el: etree._Element, tag: str, kind: int) -> bool:
        """Navigation, banners, footers, cookie notices, ads, share bars; never main content."""
        if kind == LANDMARK:
            if tag == "nav":
                return True
            if self.article:  # an article's own header, footer or aside is part of it
                return False
            return tag != "header" or next(el.iter("h1"), None) is None
        for name, value in el.items():  # one call for all attributes: cheaper than three gets
            if name == "class" or name == "id":
                hit = _junk_cache.get(value)
                if hit is None:
                    hit = _junk_name(value)
            elif name == "role":
                hit = value.lower() in _JUNK_ROLES and not (self.article and value != "navigation")
            else:
                continue
            if hit:
                return not _holds_content(el)
        return False

    # --- blocks

    def _flush(self, level: int = 0) -> None:
        """Close the text gathered so far into a block (a heading when ``level`` > 0)."""
        buf = self.buf
        if not buf:
            return
        raw = "".join(buf)
        buf.clear()
        self.gen += 1
        if raw.isspace():
            return
        text = _collapse_lines(raw) if _BR in raw else " ".join(raw.split())
        if not text:
            return
        if level:
            self._add("h", "#" * level + " " + text.replace("\n", " "))
            return
        kind = "p"
        if self.items:
            kind = f"li{self.list_serial}"
            text = self.prefix + text.replace("\n", "\n" + self.items[-1])
            self.prefix = self.items[-1]
        if self.quote:
            marks = "> " * self.quote
            text = marks + text.replace("\n", "\n" + marks)
        self._add(kind, text)

    def _add(self, kind: str, text: str) -> None:
        self.blocks.append((kind, text))
        self.size += len(text)
        if self.size > MAX_TEXT_CHARS or len(self.blocks) > MAX_BLOCKS:
            self.full = True

    def _pre(self, el: etree._Element) -> None:
        text = _text_of(el).strip("\r\n").rstrip()
        if text.strip():
            self._add("pre", "```\n" + text.replace("\x00", "") + "\n```")

    def _open_item(self) -> None:
        indent = self.items[-1] if self.items else ""
        marker = "- "
        if self.lists and self.lists[-1][0]:
            self.lists[-1][1] += 1
            marker = f"{self.lists[-1][1]}. "
        self.prefix = indent + marker
        self.items.append(indent + " " * len(marker))

    # --- tables

    def _open_cell(self, table: _Table) -> None:
        if table.saved is not None:  # a cell never closed: close it before the next opens
            self._close_cell(table, None)
        if table.row is None:
            table.row = []
        table.saved = (self.blocks, self.buf, self.gen, self.prefix, self.items, self.lists,
                       self.quote)
        self.blocks, self.buf, self.prefix, self.items, self.lists = [], [], "", [], []
        self.quote = 0
        self.gen += 1

    def _close_cell(self, table: _Table, el: etree._Element | None) -> None:
        if table.saved is None:
            return
        self._flush()
        cell = self.blocks
        (self.blocks, self.buf, gen, self.prefix, self.items, self.lists,
         self.quote) = table.saved
        self.gen = max(self.gen, gen) + 1
        table.saved = None
        if table.row is None:
            table.row = []
        table.row.append(cell)
        span = el.get("colspan") if el is not None else None
        if span and span.strip().isdigit():
            table.row.extend([] for _ in range(min(int(span), TABLE_MAX_COLS) - 1))

    def _close_row(self, table: _Table) -> None:
        if table.saved is not None:
            self._close_cell(table, None)
        if table.row:
            table.rows.append(table.row)
        table.row = None

    def _close_table(self, table: _Table) -> None:
        self._close_row(table)
        text = _table_markdown(table)
        if text is not None:
            self._add("table", text)
            return
        for row in table.rows:  # a layout table: its cells are ordinary content
            for cell in row:
                self.blocks.extend(cell)

    # --- links

    def _open_link(self, el: etree._Element) -> None:
        href = el.get("href")
        url = None
        if href:
            url = self.url_cache.get(href, "")
            if url == "":
                url = self.url_cache[href] = _resolve(href, self.base, self.base_parts)
        self.open_links.append(
            (url, self.gen, len(self.buf), self.blocks, len(self.blocks)) if url else None
        )

    def _close_link(self, el: etree._Element) -> None:
        opened = self.open_links.pop() if self.open_links else None
        if opened is None:
            return
        url, gen, start, blocks, first_block = opened
        inline = gen == self.gen
        if inline:
            raw = "".join(self.buf[start:])
        elif blocks is self.blocks:  # the link wrapped whole blocks: its text is theirs
            raw = " ".join([text for _, text in blocks[first_block:]] + self.buf)
        else:
            raw = _text_of(el)
        text = " ".join(raw.replace(_BR, " ").split())
        if not text:
            img = next(el.iter("img"), None)
            alt = img.get("alt") if img is not None else None
            text = " ".join((alt or el.get("aria-label") or el.get("title") or "").split())
            if not text:
                return  # an empty link (an icon): nothing for the agent to refer to
            self.buf.append(text)
        number = self.link_numbers.get(url)
        if number is None:
            number = self.link_numbers[url] = len(self.links) + 1
            self.links.append(Link(number, text[:LINK_TEXT_CHARS], url))
        marker = f" [{number}]"
        if not inline and self.blocks and not "".join(self.buf).strip():
            kind, last = self.blocks[-1]  # the link wrapped whole blocks: mark the last one
            self.blocks[-1] = (kind, last + marker)
        else:
            self.buf.append(marker)


def _text_of(el: etree._Element) -> str:
    """All text inside ``el`` (libxml2 serialises it, much faster than ``itertext``)."""
    return etree.tostring(el, method="text", encoding="unicode", with_tail=False)


def _collapse_lines(raw: str) -> str:
    """Collapse whitespace within lines made by <br>; at most one empty line in a row."""
    lines = [" ".join(line.split()) for line in raw.split(_BR)]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")


def _list_start(el: etree._Element) -> int:
    start = el.get("start")
    return int(start) if start and start.strip().isdigit() else 1


def _table_markdown(table: _Table) -> str | None:
    """A pipe table for a data table; None for a layout table (one column, one row, long cells)."""
    if table.layout or len(table.rows) < 2:
        return None
    rows: list[list[str]] = []
    for row in table.rows:
        cells = []
        for blocks in row:
            if any(kind in ("h", "table", "pre") for kind, _ in blocks):
                return None
            text = " ".join(text for _, text in blocks).replace("\n", " ")
            if len(text) > LAYOUT_CELL_CHARS:
                return None
            cells.append(text)
        if any(cells):
            rows.append(cells)
    ncols = max((len(cells) for cells in rows), default=0)
    if ncols < 2 or len(rows) < 2:
        return None
    shown = min(ncols, TABLE_MAX_COLS)

    def line(cells: list[str]) -> str:
        cells = [_cell(text) for text in cells[:shown]] + [""] * (shown - len(cells))
        return "| " + " | ".join(cells) + " |"

    lines = [line(rows[0]), "|" + " --- |" * shown]
    lines.extend(line(cells) for cells in rows[1 : TABLE_MAX_ROWS + 1])
    if len(rows) > TABLE_MAX_ROWS + 1:
        lines.append(f"({len(rows) - TABLE_MAX_ROWS - 1} more rows not shown)")
    if ncols > shown:
        lines.append(f"({ncols - shown} more columns not shown)")
    return "\n".join(lines)


def _cell(text: str) -> str:
    if len(text) > CELL_MAX_CHARS:
        text = text[: CELL_MAX_CHARS - 1].rstrip() + "…"
    return text.replace("|", "\\|")


# ----------------------------------------------------------------------------- URLs

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")


def _base_parts(base: str) -> tuple[str, str, str] | None:
    """(scheme, origin, directory) of an http(s) base URL, for resolving without urljoin."""
    if not base.lower().startswith(("http://", "https://")):
        return None
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path or "/"
    return parts.scheme, origin, origin + path[: path.rfind("/") + 1]


def _resolve(href: str, base: str, parts: tuple[str, str, str] | None) -> str | None:
    """Absolute http(s) URL of a link without its fragment; None for links an agent cannot visit.

    The common shapes (absolute, //host, /path, plain relative) are resolved by string
    operations, which is many times faster than ``urljoin``; the rest go to ``urljoin``.
    """
    href = href.strip()
    if "\n" in href or "\t" in href or "\r" in href:
        href = href.replace("\n", "").replace("\t", "").replace("\r", "")
    if not href or href[0] == "#":
        return None
    if href[:8].lower().startswith(("http://", "https://")):
        url = href
    elif href.startswith("//"):
        url = (parts[0] + ":" + href) if parts else ("https:" + href)
    elif _SCHEME.match(href):
        return None  # javascript:, mailto:, tel:, data:, ftp: ...
    elif parts is None:
        url = urljoin(base, href) if base else href  # no page URL: keep it relative
    elif "./" in href or href.startswith(("?", ".")):
        url = urljoin(base, href)
    elif href[0] == "/":
        url = parts[1] + href
    else:
        url = parts[2] + href
    url = url.split("#", 1)[0]
    if parts is not None and not url.lower().startswith(("http://", "https://")):
        return None
    return url or None


# ----------------------------------------------------------------------------- assembly

def render_page(
    html: bytes | str, url: str = "", *, page_size: int = 8000, content_type: str = ""
) -> RenderedPage:
    """Render an HTML (or plain-text) response for an agent; never raises.

    ``html`` is the raw body (bytes in any charset, or already-decoded text); ``url`` is
    the page address, used to resolve links and as the title of last resort;
    ``page_size`` is the maximum characters per entry of ``pages`` (at least
    MIN_PAGE_SIZE); ``content_type`` is the response header, whose charset and media
    type take part in decoding.
    """
    size = max(page_size, MIN_PAGE_SIZE) if isinstance(page_size, int) else 8000
    try:
        return _render(html, url, size, content_type or "")
    except Exception as exc:  # noqa: BLE001  the contract is never to raise: the agent reads why instead
        return _message_page(url, f"(This page could not be rendered: {type(exc).__name__}.)", size)


# What page_text leaves out of a search index: code, site chrome (the landmarks) and forms.
_INDEX_DROP = (*_CODE_TAGS.split(), *(tag for tag, kind in _TAG_KIND.items() if kind == LANDMARK), "form")
_SPACES = re.compile(r"\s+")


def page_text(html: bytes | str, url: str = "", *, content_type: str = "") -> tuple[str, str]:
    """``(title, plain text)`` of a page for a search index: the same decoding as
    ``render_page`` without the layout walk, several times faster. Never raises."""
    try:
        data, content_type = _as_bytes(html, content_type)
        kind = _sniff(data, content_type)
        if kind != "html":
            encoding, _ = _choose_encoding(data, content_type)
            text = data.decode(encoding, "replace") if kind == "plain" else ""
            return url, _SPACES.sub(" ", text).strip()
        root, utf8 = _to_tree(data, content_type)
        if root is None or _parse_gave_up():  # as render_page: no text, or the tag-stripped paragraphs
            blocks = _markup_blocks(utf8) if root is not None else []
            return url or "(untitled)", " ".join(text for _, text in blocks)
        head, body = root.find("head"), root.find("body")
        title = _title(head, body, url)
        content = body if body is not None else root
        etree.strip_elements(content, *_INDEX_DROP, with_tail=False)  # the parser already dropped comments
        return title, _SPACES.sub(" ", " ".join(content.itertext())).strip()
    except Exception:  # noqa: BLE001  never raises: a page we cannot read is indexed by its address alone
        return url, ""


def _render(html: bytes | str, url: str, page_size: int, content_type: str) -> RenderedPage:
    data, content_type = _as_bytes(html, content_type)
    kind = _sniff(data, content_type)
    if kind == "binary":
        what = content_type.split(";", 1)[0].strip() or "binary data"
        note = f"(The content at this address is {what}, not text.)"
        return _message_page(url, note, page_size)
    if kind == "plain":
        encoding, _ = _choose_encoding(data, content_type)
        blocks = _plain_blocks(data.decode(encoding, "replace"))
        return _assemble(url, url or "(untitled)", blocks, (), page_size)
    root, utf8 = _to_tree(data, content_type)
    if root is None:
        return _message_page(url, "(This page has no readable text.)", page_size)
    if _parse_gave_up():
        return _assemble(url, url or "(untitled)", _markup_blocks(utf8), (), page_size)
    head, body = root.find("head"), root.find("body")
    # Plain inline elements only carry text: merging it into their parents in C leaves
    # the Python walk fewer nodes to visit.
    etree.strip_tags(root, *_PLAIN_INLINE)
    base = _base_url(url, head)
    content = body if body is not None else root
    walker = _Walker(base, prune=True)
    blocks = walker.walk(content)
    if walker.size < PRUNE_FALLBACK_CHARS and walker.pruned:
        unpruned = _Walker(base, prune=False)
        unpruned_blocks = unpruned.walk(content)
        if unpruned.size > 4 * walker.size:  # pruning took nearly everything: keep it all
            walker, blocks = unpruned, unpruned_blocks
    title = _title(head, body, url)
    if blocks and blocks[0][0] == "h" and blocks[0][1].lstrip("#").strip() == title:
        blocks = blocks[1:]  # the page's own <h1> repeating the title line
    return _assemble(url, title, blocks, tuple(walker.links), page_size)


def _as_bytes(html: bytes | str, content_type: str) -> tuple[bytes, str]:
    """The body as at most MAX_INPUT_CHARS bytes; text and BOM-marked bodies become UTF-8."""
    if isinstance(html, str):  # already text: its charset is ours, whatever it declares
        data = html[:MAX_INPUT_CHARS].encode("utf-8", "replace")
    else:
        data = bytes(html[:MAX_INPUT_CHARS])
        for bom, enc in _BOMS:  # a BOM outranks every declaration (UTF-16 would look binary)
            if data.startswith(bom):
                data = data[len(bom) :].decode(enc, "replace").encode("utf-8")
                break
        else:
            return data, content_type
    return data, (content_type.split(";", 1)[0].strip() or "text/html") + "; charset=utf-8"


def _plain_blocks(text: str) -> list[tuple[str, str]]:
    """Paragraphs of a plain-text body (blank-line separated; line breaks kept)."""
    paragraphs = (_collapse_lines(chunk.replace("\n", _BR)) for chunk in _BLANK_LINE.split(text))
    return [("p", paragraph) for paragraph in paragraphs if paragraph][:MAX_BLOCKS]


def _base_url(url: str, head: etree._Element | None) -> str:
    base = head.find("base") if head is not None else None
    href = (base.get("href") or "").strip() if base is not None else ""
    if not href or href.lower().startswith(("javascript:", "data:")):
        return url
    return urljoin(url, href) if url else href


def _title(head: etree._Element | None, body: etree._Element | None, url: str) -> str:
    """<title>, else the first <h1>, else the URL."""
    for el in (head.find("title") if head is not None else None,
               next(body.iter("h1"), None) if body is not None else None):
        if el is not None:
            text = " ".join(((el.text if len(el) == 0 else _text_of(el)) or "").split())
            if text:
                return text[:300]
    return url or "(untitled)"


def _message_page(url: str, message: str, page_size: int, title: str = "") -> RenderedPage:
    """A page whose text is a note about the page (empty, binary, unrenderable)."""
    title = title or url or "(untitled)"
    text = f"# {title}\n\n{message}"
    pages = (text,) if len(text) <= page_size else tuple(_hard_split(text, page_size))
    return RenderedPage(url=url, title=title, text=text, links=(), pages=pages, passages=())


def _assemble(url: str, title: str, blocks: list[tuple[str, str]], links: tuple[Link, ...],
              page_size: int) -> RenderedPage:
    """Join blocks into the text (list items on adjacent lines) and cut pages and passages."""
    if not blocks:
        return _message_page(url, "(This page has no readable text.)", page_size, title)
    units = ["# " + title]
    seps = [""]
    previous = "h"
    for kind, text in blocks:
        seps.append("\n" if kind == previous and kind[:2] == "li" else "\n\n")
        units.append(text)
        previous = kind
    if sum(map(len, units)) > MAX_TEXT_CHARS:
        units, seps = _cut_units(units, seps, MAX_TEXT_CHARS)
        units.append("(… text cut here: the page is too long.)")
        seps.append("\n\n")
    full = "".join(part for pair in zip(seps, units) for part in pair)
    return RenderedPage(url=url, title=title, text=full, links=links,
                        pages=_paginate(units, seps, page_size), passages=_passages(blocks))


def _cut_units(units: list[str], seps: list[str], limit: int) -> tuple[list[str], list[str]]:
    """The leading units (with their separators) that fit in ``limit`` chars, the last one cut."""
    total = 0
    for i, unit in enumerate(units):
        total += len(unit) + len(seps[i])
        if total > limit:
            room = limit - (total - len(unit))
            return units[:i] + [unit[: max(room, 0)]], seps[: i + 1]
    return units, seps


def _paginate(units: list[str], seps: list[str], page_size: int) -> tuple[str, ...]:
    """Greedy chunks of whole blocks of at most ``page_size`` chars; an over-long block is cut."""
    pages: list[str] = []
    current: list[str] = []
    length = 0
    for unit, sep in zip(units, seps):
        if len(unit) > page_size:
            if current:
                pages.append("".join(current))
                current, length = [], 0
            pages.extend(_hard_split(unit, page_size))
            continue
        added = len(unit) + (len(sep) if current else 0)
        if current and length + added > page_size:
            pages.append("".join(current))
            current, length, added = [], 0, len(unit)
        if current:
            current.append(sep)
        current.append(unit)
        length += added
    if current:
        pages.append("".join(current))
    return tuple(pages)


def _hard_split(text: str, size: int) -> list[str]:
    """Pieces of at most ``size`` chars, cut at a space or newline when one is near the end."""
    pieces = []
    start = 0
    while start < len(text):
        end = start + size
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut > start + size // 2:
                end = cut
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = end
    return pieces


def _passages(blocks: list[tuple[str, str]]) -> tuple[str, ...]:
    """Paragraph-level passages; headings lead the block after them, list runs are merged."""
    passages: list[str] = []
    heads: list[str] = []
    group: list[str] = []
    group_len = 0
    group_kind = ""

    def close_group() -> None:
        nonlocal heads, group, group_len
        if group:
            body = "\n".join(group)
            pieces = _hard_split(body, PASSAGE_MAX) if len(body) > PASSAGE_MAX else [body]
            head = "\n".join(heads)
            passages.append(f"{head}\n{pieces[0]}" if head else pieces[0])
            passages.extend(pieces[1:])
            heads, group, group_len = [], [], 0

    for kind, text in blocks:
        if kind == "h":
            close_group()
            heads.append(text)
            continue
        same_list = kind == group_kind and kind[:2] == "li"
        if not (same_list and group_len + len(text) <= PASSAGE_TARGET):
            close_group()
        group.append(text)
        group_len += len(text) + 1
        group_kind = kind
    close_group()
    if heads:
        passages.append("\n".join(heads))
    return tuple(passages)


# ----------------------------------------------------------------------------- ranking

_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an and are as at be been but by can did do does for from had has have how i if in into "
    "is it its me my no not of on or our so than that the their them then there these they "
    "this to was we were what when where which who whom why will with would you your".split()
)
BM25_K1 = 1.2
BM25_B = 0.75


def _terms(text: str) -> list[str]:
    """Lowercase word tokens without stopwords, with plural and -ing/-ed endings stripped."""
    out = []
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 4:
            if word.endswith("ing"):
                word = word[:-3]
            elif word.endswith("ed") or (word.endswith("es") and not word.endswith("ies")):
                word = word[:-2]
            elif word.endswith("s") and not word.endswith("ss"):
                word = word[:-1]
        out.append(word)
    return out


def rank_passages(passages: Sequence[str], query: str, budget_chars: int, *, only_matches: bool = False) -> list[str]:
    """Passages best-first by BM25 against ``query`` whose lengths sum to <= ``budget_chars``.

    BM25 (k1 = 1.2, b = 0.75) uses the passages themselves as the collection:
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)). Ties and passages that match nothing
    follow in document order (with ``only_matches``, passages that match nothing are
    left out unless none matches); an empty query gives document order. The last
    passage taken is truncated (ending in "…") to use the remaining budget.
    """
    if budget_chars <= 0 or not passages:
        return []
    query_terms = set(_terms(query or ""))
    order: Sequence[int] = range(len(passages))
    if query_terms:
        scores = _bm25(passages, query_terms)
        order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
        if only_matches and scores[order[0]] > 0:
            order = [i for i in order if scores[i] > 0]
    chosen: list[str] = []
    room = budget_chars
    for i in order:
        passage = passages[i]
        if len(passage) <= room:
            chosen.append(passage)
            room -= len(passage)
        else:
            if room >= 20:
                chosen.append(_truncate(passage, room))
            break
    return chosen


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def evidence_units(passages: Sequence[str]) -> list[str]:
    """The passages cut into single facts: prose sentences, table rows, list items.

    A two-cell table row reads "label: value". A list item or a table row under a heading carries that heading ("Students: Rosaren
    Ruskmere [4]"), since the heading is what says how the item relates to the page;
    headings alone and table separator rows are dropped. This is the unit of the
    ``facts`` visit mode: an extractive stand-in for the LLM page summarizer of
    WebDancer's visit tool, which returns the sentences that serve the goal.
    """
    units: list[str] = []
    for passage in passages:
        heading = ""
        for raw in passage.split("\n"):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.startswith("|"):
                if set(line) <= set("|-: "):
                    continue
                cells = [c.strip() for c in line.strip("|").split("|")]
                row = f"{cells[0]}: {cells[1]}" if len(cells) == 2 else line  # an infobox row reads "Born: 1761"
                units.append(f"{heading}: {row}" if heading else row)
            elif line.startswith(("- ", "* ")):
                units.append(f"{heading}: {line[2:]}" if heading else line[2:])
            else:
                units.extend(s for s in _SENTENCE_END.split(line) if s)
    return units


def _bm25(passages: Sequence[str], query_terms: set[str]) -> list[float]:
    counts: list[dict[str, int]] = []
    lengths: list[int] = []
    df: dict[str, int] = dict.fromkeys(query_terms, 0)
    for passage in passages:
        terms = _terms(passage)
        tf: dict[str, int] = {}
        for term in terms:
            if term in query_terms:
                tf[term] = tf.get(term, 0) + 1
        for term in tf:
            df[term] += 1
        counts.append(tf)
        lengths.append(len(terms))
    n = len(passages)
    avg = max(sum(lengths) / n, 1e-9)
    idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
    scores = []
    for tf, length in zip(counts, lengths):
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / avg)
        scores.append(sum(idf[t] * f * (BM25_K1 + 1) / (f + norm) for t, f in tf.items()))
    return scores


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` chars, at a word boundary when one is near, plus "…"."""
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.7:
        cut = cut[:space]
    return cut.rstrip() + "…"
