"""Low-level WARC record reading and writing for the snapshot store.

Records written here are WARC/1.1, one gzip member per record, so a record can be
read with one seek and one small decompression. Records from other tools are
parsed with warcio, which also undoes chunked transfer-encoding and gzip/deflate
content-encoding.
"""

from __future__ import annotations

import io
import os
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParser, StatusAndHeadersParserException

# Headers that describe the wire encoding of a body; bodies here are always stored
# decoded, so these would be wrong if kept.
WIRE_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})

# On HTML pages level 6 takes about three times as long as level 1 for files ~8%
# smaller; a site build writes 100k pages, so write speed wins.
GZIP_LEVEL = 1

_HTTP_PARSER = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1"], verify=False)
_SCAN_PREFIX = 65536  # bytes of a record block kept while scanning, enough for HTTP headers


@dataclass(frozen=True)
class Problem:
    """A WARC record that could not be read: file path, byte offset, what went wrong."""

    file: str
    offset: int
    message: str


@dataclass(frozen=True)
class Record:
    """One decoded response or resource record."""

    kind: str  # "response" | "resource"
    uri: str
    date: str
    status: int
    content_type: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class ScanEntry:
    """Where a readable record lies in a WARC file (offset and length in bytes)."""

    uri: str
    offset: int
    length: int
    kind: str
    status: int
    content_type: str


def warc_date(now: float | None = None) -> str:
    """WARC-Date for `now` (seconds since the epoch; default: the current time), UTC
    with second precision, e.g. '2025-01-31T12:00:00Z'."""
    second = int(time.time() if now is None else now)
    if second != _last_date[0]:  # formatting costs more than the rest of a small put
        _last_date[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))]
    return str(_last_date[1])


_last_date: list[int | str] = [-1, ""]


def _clean(value: str) -> str:
    # A CR or LF inside a header value would end the header block early.
    return value.replace("\r", " ").replace("\n", " ")


def encode_record(kind: str, uri: str, block: bytes, content_type: str, date: str) -> bytes:
    """One complete WARC/1.1 record as a gzip member; `block` is the record content
    (the HTTP message for responses). Digest headers are optional in WARC and are
    left out: computing them would cost a third of the write time."""
    target = f"WARC-Target-URI: {_clean(uri)}\r\n" if uri else ""
    head = (
        f"WARC/1.1\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:{uuid.uuid4()}>\r\n"
        f"WARC-Date: {date}\r\n{target}Content-Type: {_clean(content_type)}\r\n"
        f"Content-Length: {len(block)}\r\n\r\n"
    ).encode()
    return zlib.compress(head + block + b"\r\n\r\n", GZIP_LEVEL, 31)


def http_block(
    status: int, content_type: str, headers: Iterable[tuple[str, str]], body: bytes
) -> bytes:
    """An HTTP/1.1 response message: status line, headers, blank line, body."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}".rstrip(), f"Content-Type: {_clean(content_type)}"]
    for name, value in headers:
        low = name.lower()
        if low not in WIRE_HEADERS and low != "content-type":
            lines.append(f"{_clean(name)}: {_clean(str(value))}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def warcinfo_record(date: str) -> bytes:
    """A warcinfo record naming the writer, placed at the start of each file."""
    fields = b"software: webdancer\r\nformat: WARC File Format 1.1\r\n"
    return encode_record("warcinfo", "", fields, "application/warc-fields", date)


# What reading damaged WARC data raises: warcio's own errors, broken gzip members,
# truncation, malformed headers or numbers (ValueError, KeyError, IndexError; a bad
# encoding is a ValueError too) and I/O errors.
DAMAGED_DATA_ERRORS = (ArchiveLoadFailed, StatusAndHeadersParserException, zlib.error, EOFError, ValueError,
                       KeyError, IndexError, OSError)


def parse_own(data: bytes) -> Record:
    """Decode one gzip-member record written by `encode_record` (no chunking, no
    content-encoding, CRLF line ends); raises ValueError or KeyError on anything else."""
    raw = zlib.decompress(data, 31)
    head_end = raw.index(b"\r\n\r\n")
    # Own records always write "Name: value", so a plain split suffices here.
    warc = dict(line.split(": ", 1) for line in raw[:head_end].decode("utf-8").split("\r\n")[1:])
    start = head_end + 4
    block = raw[start : start + int(warc["Content-Length"])]
    kind, uri, date = warc["WARC-Type"], warc.get("WARC-Target-URI", ""), warc["WARC-Date"]
    if kind != "response":
        return Record(kind, uri, date, 200, warc["Content-Type"], (), block)
    http_end = block.index(b"\r\n\r\n")
    lines = block[:http_end].decode("iso-8859-1").split("\r\n")
    pairs = (line.split(": ", 1) for line in lines[1:])
    headers = [(k, v) for k, v in pairs if k.lower() not in WIRE_HEADERS]
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    status = int(lines[0].split(" ", 2)[1])
    return Record(kind, uri, date, status, content_type, tuple(headers), block[http_end + 4 :])


def parse_any(data: bytes) -> Record:
    """Decode one response or resource record of any WARC writer with warcio
    (gzip member or plain); the body has transfer- and content-encoding undone."""
    for rec in ArchiveIterator(io.BytesIO(data)):
        kind = rec.rec_type
        uri = rec.rec_headers.get_header("WARC-Target-URI") or ""
        date = rec.rec_headers.get_header("WARC-Date") or ""
        if kind == "response" and rec.http_headers is not None:
            body = rec.content_stream().read()
            pairs = rec.http_headers.headers
            headers = tuple((k, v) for k, v in pairs if k.lower() not in WIRE_HEADERS)
            return Record(kind, uri, date, int(rec.http_headers.get_statuscode() or 0),
                          rec.http_headers.get_header("Content-Type") or "", headers, body)
        body = rec.content_stream().read()
        return Record(kind, uri, date, 200, rec.rec_headers.get_header("Content-Type") or "",
                      (), body)
    raise ValueError("no WARC record at this offset")


def _http_summary(prefix: bytes) -> tuple[int, str]:
    """Status code and Content-Type from the start of an HTTP response block."""
    parsed = _HTTP_PARSER.parse(io.BytesIO(prefix))
    code = parsed.get_statuscode()
    return int(code) if code and code.isdigit() else 0, parsed.get_header("Content-Type") or ""


def _read_block(stream: io.RawIOBase) -> tuple[int, bytes]:
    """Read a record block to its end: (bytes read, first _SCAN_PREFIX bytes)."""
    total, prefix = 0, b""
    while chunk := stream.read(65536):
        if len(prefix) < _SCAN_PREFIX:
            prefix += chunk[: _SCAN_PREFIX - len(prefix)]
        total += len(chunk)
    return total, prefix


def scan_warc(path: str) -> tuple[list[ScanEntry], list[Problem]]:
    """Locate every response and resource record of a WARC file.

    Request, metadata, warcinfo and revisit records are skipped. A record whose
    block is shorter than its Content-Length, unparseable data, or bytes left after
    the last readable record each become a Problem; records before it are kept.
    """
    entries: list[ScanEntry] = []
    problems: list[Problem] = []
    end = 0
    with open(path, "rb") as fh:
        it = ArchiveIterator(fh, no_record_parse=True)
        try:
            for rec in it:
                declared = rec.rec_headers.get_header("Content-Length")
                got, prefix = _read_block(rec.raw_stream)
                offset, length = it.get_record_offset(), it.get_record_length()
                end = offset + length
                if declared is None or not declared.strip().isdigit():
                    problems.append(Problem(path, offset, "record has no valid Content-Length"))
                    continue
                if got < int(declared):
                    problems.append(Problem(
                        path, offset, f"record truncated: {got} of {declared} bytes present"))
                    continue
                kind = rec.rec_type
                uri = rec.rec_headers.get_header("WARC-Target-URI") or ""
                if kind == "response":
                    status, ctype = _http_summary(prefix)
                elif kind == "resource":
                    status, ctype = 200, rec.rec_headers.get_header("Content-Type") or ""
                else:
                    continue
                entries.append(ScanEntry(uri.strip("<>"), offset, length, kind, status, ctype))
        except DAMAGED_DATA_ERRORS as exc:
            text = str(exc).strip()
            if "non-chunked gzip" in text:  # no record can be reached by seeking
                return [], [Problem(path, 0, "the file is one gzip stream, not one gzip member "
                                             "per record; run `warcio recompress IN OUT` and "
                                             "add the output instead")]
            first = text.splitlines()[0] if text else ""
            problems.append(Problem(path, end, f"unreadable data ({type(exc).__name__}: {first})"))
            return entries, problems
    _check_tail(path, end, problems)
    return entries, problems


def _check_tail(path: str, end: int, problems: list[Problem]) -> None:
    """Report bytes after the last record that are not blank lines (a record cut
    inside its headers leaves such a tail and is otherwise silently dropped)."""
    size = os.path.getsize(path)
    if size <= end:
        return
    with open(path, "rb") as fh:
        fh.seek(end)
        tail = fh.read(4096)
    if tail.strip(b"\r\n") or size - end > 4096:
        problems.append(Problem(path, end, f"{size - end} bytes after the last record are "
                                           "not a readable record (truncated file?)"))

