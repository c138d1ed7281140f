"""Reading HTML form submissions: multipart/form-data (RFC 7578) and
application/x-www-form-urlencoded, plus the safe names uploaded files are stored under.

The multipart grammar is parsed by the `multipart` package's PushMultipartParser (the parser
bottle uses): a sans-I/O parser fed 64 KiB at a time, which holds at most one chunk plus one
part's header block, so memory stays bounded whatever the upload's size. This module does no
file I/O: upload.py decides where the bytes go.
"""

from __future__ import annotations

import os
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl

from multipart import (
    MultipartError,
    MultipartSegment,
    ParserLimitReached,
    PushMultipartParser,
    parse_options_header,
)

READ_SIZE = 64 * 1024
MAX_PARTS = 100  # parts in one multipart body (413 beyond)
MAX_PART_HEADER = 8190  # bytes in one part header line, as limit_request_field_size
MAX_PART_HEADERS = 8  # header lines per part; RFC 7578 uses at most three
MAX_FIELDS_BYTES = 1 << 20  # all non-file fields together (urlencoded bodies too): 413 beyond
MAX_FIELDS = 1000  # urlencoded name=value pairs
MAX_NAME_BYTES = 200  # a stored file name, UTF-8; NAME_MAX is 255 and suffixes need room
FALLBACK_NAME = "upload.bin"
# Charsets a text part may declare; anything else is refused rather than guessed at.
TEXT_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1",
                           "latin1"})

Segment = MultipartSegment  # headers of one part: .name, .filename, .content_type
Event = MultipartSegment | bytes | None  # a part starts, some of its bytes, it ends


class FormError(Exception):
    """The form cannot be accepted; `status` is 400 (malformed) or 413 (over a limit)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into (lower-case type/subtype, parameters).

    Returns ("", {}) when the header is absent.
    """
    if not value:
        return "", {}
    kind, params = parse_options_header(value)
    return kind, params


def safe_filename(raw: str | None) -> str:
    """Turn a client-supplied file name into one safe to create in the uploads directory.

    Returns the last path component (both "/" and "\\" separate: Windows paths too), with
    control and format characters replaced by "_", leading dots and surrounding spaces
    removed (no hidden names, no "." or ".."), cut to MAX_NAME_BYTES of UTF-8 keeping the
    extension, or FALLBACK_NAME when nothing is left. Never raises.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("_" if unicodedata.category(c)[0] == "C" else c for c in name)
    name = name.strip().lstrip(".").strip()
    if not name:
        return FALLBACK_NAME
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        stem, ext = os.path.splitext(name)
        ext_bytes = ext.encode("utf-8")
        if len(ext_bytes) > 16:
            stem, ext_bytes = name, b""
        room = MAX_NAME_BYTES - len(ext_bytes)
        name = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip() \
            + ext_bytes.decode("utf-8")
    return name


def candidate_names(name: str) -> Iterator[str]:
    """Yield `name`, then name-1.ext ... name-999.ext, then random suffixes forever.

    The caller creates each with O_EXCL / link(2) until one does not exist yet.
    """
    yield name
    stem, ext = os.path.splitext(name)
    if not stem:  # ".bashrc"-like names cannot reach here, but stay total
        stem, ext = name, ""
    for number in range(1, 1000):
        yield f"{stem}-{number}{ext}"
    while True:
        yield f"{stem}-{secrets.token_hex(4)}{ext}"


def multipart_events(read: Callable[[int], bytes], boundary: str,
                     content_length: int | None) -> Iterator[Event]:
    """Parse a multipart/form-data body pulled through `read(size)`.

    Yields, for each part, its Segment, then its content as non-empty bytes chunks, then
    None. Reads the body to its end (the epilogue is discarded). Raises FormError(400) for
    a malformed body, FormError(413) past MAX_PARTS or the part header limits; whatever
    `read` raises (ContentTooLarge, RequestTimeout, ClientDisconnected) passes through.
    """
    try:
        parser = PushMultipartParser(
            boundary, content_length=-1 if content_length is None else content_length,
            max_header_size=MAX_PART_HEADER, max_header_count=MAX_PART_HEADERS,
            max_segment_count=MAX_PARTS)
        with parser:
            while not parser.closed:
                yield from parser.parse(read(READ_SIZE))
    except ParserLimitReached as exc:
        raise FormError(413, f"multipart body over a limit: {exc}") from None
    except MultipartError as exc:
        raise FormError(400, f"malformed multipart body: {exc}") from None


class FieldCollector:
    """Collects the non-file fields of a form, bounded to MAX_FIELDS_BYTES in total."""

    def __init__(self) -> None:
        self.total = 0
        self.fields: dict[str, str | list[str]] = {}
        self._name: str | None = None
        self._charset = "utf-8"
        self._value = bytearray()

    def begin(self, name: str, charset: str | None = None) -> None:
        """Start a field part; raises FormError(400) for a charset we do not decode."""
        charset = (charset or "utf-8").lower()
        if charset not in TEXT_CHARSETS:
            raise FormError(400, f"field {name!r}: unsupported charset {charset!r}")
        self._name = name
        self._charset = charset
        self._value.clear()

    def feed(self, data: bytes) -> None:
        """Append part content; raises FormError(413) past the limit."""
        self.total += len(data)
        if self.total > MAX_FIELDS_BYTES:
            raise FormError(413, f"form fields exceed {MAX_FIELDS_BYTES} bytes")
        self._value += data

    def end(self) -> None:
        """Finish the current field; raises FormError(400) if it is not text."""
        assert self._name is not None
        try:
            value = self._value.decode(self._charset)
        except UnicodeDecodeError:
            raise FormError(400, f"field {self._name!r} is not {self._charset} text "
                                 "(send binary data as a file part)") from None
        self.add(self._name, value)
        self._name = None

    def add(self, name: str, value: str) -> None:
        """Record one value; a repeated name keeps every value, in order, as a list."""
        previous = self.fields.get(name)
        if previous is None:
            self.fields[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            self.fields[name] = [previous, value]


def read_urlencoded(read: Callable[[int], bytes], collector: FieldCollector) -> None:
    """Read an application/x-www-form-urlencoded body into `collector`.

    Raises FormError(413) past MAX_FIELDS_BYTES or MAX_FIELDS, FormError(400) when the body
    is not UTF-8 (after percent-decoding); what `read` raises passes through.
    """
    body = bytearray()
    while chunk := read(READ_SIZE):
        body += chunk
        if len(body) > MAX_FIELDS_BYTES:
            raise FormError(413, f"form body exceeds {MAX_FIELDS_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                          errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise FormError(400, "form body is not UTF-8") from None
    except ValueError:
        raise FormError(413, f"more than {MAX_FIELDS} form fields") from None
    for name, value in pairs:
        collector.add(name, value)
