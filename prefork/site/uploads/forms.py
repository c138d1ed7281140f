"""POST /upload: JSON documents (seed 003) and HTML forms — multipart/form-data (RFC 7578)
and application/x-www-form-urlencoded (seed 000's "data" + "file") — plus the safe names
uploaded files are stored under.

The multipart grammar is parsed by the `multipart` package's PushMultipartParser (the parser
bottle uses): a sans-I/O parser fed 64 KiB at a time, which holds at most one chunk plus one
part's header block, so memory stays bounded whatever the upload's size. Each file part
streams into its own temporary (upload.TempFile); nothing gets a name until the whole body
has been read, so a failed submission leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

from multipart import (
    MultipartError,
    MultipartSegment,
    ParserLimitReached,
    PushMultipartParser,
    parse_options_header,
)

from prefork.errors import MethodNotAllowed
from prefork.http.message import FieldNames, Request, Response
from prefork.site.auth import BasicAuth
from prefork.site.preconditions import validators_for
from prefork.site.uploads.put import (
    PREFIX,
    TempFile,
    UploadHandler,
    fsync_directory,
    json_error,
    json_response,
    stamped_names,
    storage_errors,
)

POST_ALLOW = ("POST", "OPTIONS")
ACCEPT_POST = "application/json, multipart/form-data, application/x-www-form-urlencoded"
# json.loads builds every value in memory: a 1 MiB document of nested empty arrays costs
# ~24 MiB while it is validated, so JSON bodies are capped well below limit_request_body.
MAX_JSON_BYTES = 1 << 20

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

# Explicit aliases: the multipart package ships no type information, so mypy sees its
# classes as Any and would take a plain assignment for a variable.
Segment: TypeAlias = MultipartSegment  # headers of one part: .name, .filename, .content_type
Event: TypeAlias = MultipartSegment | bytes | None  # a part starts, some of its bytes, it ends


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


def _is_json(kind: str) -> bool:
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class PostHandler:
    """POST (and OPTIONS) for /upload; shares the directory and credentials of `uploads`."""

    reads_fields: FieldNames = frozenset({"content-type"}) | BasicAuth.reads_fields

    def __init__(self, uploads: UploadHandler) -> None:
        self.uploads = uploads
        self.directory = uploads.directory

    def may_block(self, method: str) -> bool:
        """True when serving `method` may take long even without a body (a bcrypt check)."""
        return self.uploads.may_block(method)

    def serve(self, request: Request) -> Response:
        """Answer a request for /upload; raises HTTPError subclasses."""
        if request.method not in POST_ALLOW:
            raise MethodNotAllowed(POST_ALLOW)
        if request.method == "OPTIONS":
            return Response(204, [("Allow", ", ".join(POST_ALLOW)),
                                  ("Accept-Post", ACCEPT_POST)])
        user = self.uploads.authorise(request)
        return self._post(request, user)

    def _post(self, request: Request, user: str | None) -> Response:
        kind, params = media_type(request.headers.get("Content-Type"))
        if _is_json(kind):
            return self._post_json(request)
        if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            self.uploads.ensure_directory(request.content_length)
            try:
                return self._post_form(request, kind, params.get("boundary", ""), user)
            except FormError as exc:
                return json_error(exc.status, exc.message)
        return json_error(415, f"unsupported Content-Type {kind or '(none)'!r}; send "
                               f"{ACCEPT_POST}", [("Accept-Post", ACCEPT_POST)])

    def _post_json(self, request: Request) -> Response:
        """Validate a JSON body and store it, byte for byte, under a new unique name."""
        if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
            return json_error(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
        self.uploads.ensure_directory(request.content_length)
        data = bytearray()
        while chunk := request.body.read(READ_SIZE):
            data += chunk
            if len(data) > MAX_JSON_BYTES:
                return json_error(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
        try:
            json.loads(bytes(data), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            detail = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            return json_error(400, f"invalid JSON: {detail}", close=False)
        with storage_errors(), TempFile(self.directory) as tmp:
            tmp.write(bytes(data))
            info = tmp.finish()
            name = tmp.link_unique(stamped_names(".json"))
            fsync_directory(self.directory)
        location = f"{PREFIX}/{name}"
        return json_response(201, {"status": "success", "message": "File created successfully",
                                   "filepath": location},
                             [("Location", location), ("ETag", validators_for(info).etag)])

    def _post_form(self, request: Request, kind: str, boundary: str,
                   user: str | None) -> Response:
        """Store a form's files under safe unique names and its fields as a JSON record.

        Every part goes to its own temporary; nothing is named until the whole body has
        been read, so a failed submission leaves nothing behind. Raises FormError and what
        the body reader raises.
        """
        fields = FieldCollector()
        parts: list[tuple[Segment, TempFile]] = []
        try:
            with storage_errors():
                if kind == "multipart/form-data":
                    if not boundary:
                        raise FormError(400, "multipart/form-data without a boundary")
                    self._receive_parts(request, boundary, fields, parts)
                else:
                    read_urlencoded(request.body.read, fields)
                return self._commit_form(request, fields, parts, user)
        finally:
            for _segment, tmp in parts:
                tmp.discard()

    def _receive_parts(self, request: Request, boundary: str, fields: FieldCollector,
                       parts: list[tuple[Segment, TempFile]]) -> None:
        current: TempFile | None = None
        for event in multipart_events(request.body.read, boundary, request.content_length):
            if isinstance(event, bytes):
                if current is not None:
                    current.write(event)
                else:
                    fields.feed(event)
            elif event is None:
                if current is not None:
                    current.finish()
                    current = None
                else:
                    fields.end()
            elif event.filename is not None:
                current = TempFile(self.directory, digest=True)
                parts.append((event, current))
            else:
                fields.begin(event.name or "", event.charset)

    def _commit_form(self, request: Request, fields: FieldCollector,
                     parts: list[tuple[Segment, TempFile]], user: str | None) -> Response:
        """Name every stored part, then write the record; on failure unname them again."""
        # A browser sends an empty part with filename="" for a file input left empty.
        parts = [(s, t) for s, t in parts if s.filename or t.size]
        if not parts and not fields.fields:
            raise FormError(400, "the form is empty")
        stored: list[dict[str, Any]] = []
        try:
            for segment, tmp in parts:
                name = tmp.link_unique(candidate_names(safe_filename(segment.filename)))
                stored.append({
                    "field": segment.name, "filename": segment.filename, "name": name,
                    "filepath": f"{PREFIX}/{name}", "size": tmp.size,
                    "sha256": tmp.sha256.hexdigest() if tmp.sha256 else None,
                    "content_type": segment.content_type or "application/octet-stream"})
            record = {"received": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "client": request.client[0], "user": user, "fields": fields.fields,
                      "files": stored}
            with TempFile(self.directory) as tmp:
                tmp.write((json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())
                tmp.finish()
                record_name = tmp.link_unique(stamped_names(".form.json"))
            fsync_directory(self.directory)
        except BaseException:
            for entry in stored:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, entry["name"]))
            raise
        location = f"{PREFIX}/{record_name}"
        return json_response(201, {
            "status": "success",
            "message": f"Stored {len(stored)} file{'' if len(stored) == 1 else 's'} "
                       "and the form record",
            "form": location, "fields": fields.fields, "files": stored},
            [("Location", location)])
