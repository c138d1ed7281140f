"""The quick path: a repeated GET/HEAD of a cached static file, answered from the raw bytes.

How this works (the idea of Apache's CacheQuickHandler, without ever serving stale data):
when the full pipeline (parser, router, static handler, framing) has answered a GET or HEAD
with a 200 its handler marked repeatable (message.Repeatable: built whole from the static
file cache), remember() keeps that answer under the request's exact request-line, Host value
and listener — the local address and the transport's scheme, both of which the answer may
depend on (the router redirects plain-HTTP requests when [server] https_redirect is on, and
a response over TLS carries the connection's added fields, [server] hsts) — provided the
request carried none of the fields below. answer() matches a later request's bytes to it
and returns a QuickHit, which the connection sends, counts and logs (accounting.py) with no
parser, router, handler or framing, only when
  * the received bytes are exactly one complete head matching _HEAD_RE: GET or HEAD, an
    origin-form target, HTTP/1.0 or 1.1, field lines of token names and visible-ASCII
    values, nothing after the empty line (pipelined bytes are the parser's business).
    Origin-form only: there the Host field is the request's host, which the router
    checked when the answer was remembered under it; an absolute-form target's authority
    overrides Host (RFC 9112 §3.2.2), so such requests always take the full path;
  * the head is within the configured limits and carries no field that the code making
    the answer reads: what the parser acts on, what the router routes on and what the
    static handler reads, each as its `reads_fields` declaration says (forcing_fields();
    tests/test_fields.py holds each declaration to its code). Of those, Host may appear
    once (it is part of the key) and Connection once, as keep-alive or close (the
    connection decides keep-alive itself). Any other field (User-Agent, Accept-Encoding,
    X-Forwarded-For, Cookie...) is read by nothing that made the answer, so it cannot
    change it; the access log reads the logged request's own fields (accounting.py);
  * the Repeatable the answer came from is still current() (for a static file: the cache
    still holds that entry and one stat() of the path as named finds it unchanged, with a
    resolution under a second old), exactly as it would be for the full path.
Anything else, every malformed request included, takes the full path, so the quick path
only repeats what the full path answered to the same request-line and Host; the bytes sent
are the ones the full path would send (tests/test_quick.py compares them).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefork.http.framing import (
    SERVER_LINE,
    AddedFields,
    Output,
    connection_tail,
    prepared_head_start,
)
from prefork.http.message import EVERY_FIELD, FieldNames, Headers, Repeatable, Response
from prefork.http.parser import READS_FIELDS, Limits, RequestHead, http_date

if TYPE_CHECKING:
    from prefork.site.router import Router

# Remembered answers per worker. Each holds a key of at most QUICK_KEY_BYTES and a body of at
# most CACHE_FILE_BYTES (32 KiB), shared with the static cache while it holds the file:
# 256 entries stay under 10 MiB even if every body were held here alone.
QUICK_ENTRIES = 256
QUICK_KEY_BYTES = 2048  # request-line plus Host; longer ones always take the full path

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2, as in http11.py
_HEAD_RE = re.compile(rb"((GET|HEAD) /[\x21-\x7e]* HTTP/1\.([01]))\r\n"
                      rb"((?:" + _TOKEN + rb":[\t\x20-\x7e]*\r\n)*)\r\n")
# A value is visible-ASCII words separated by runs of SP/HTAB, so OWS around it (RFC 9110
# §5.6.3) is left out of the group with no backtracking to speak of: a lazy value followed
# by optional OWS would be quadratic in a run of spaces (milliseconds per head).
_FIELD_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*"
                       rb"((?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?)[ \t]*\r\n")

# Where a connection came in: its local address and its transport's scheme (http, https).
Listener = tuple[tuple[str, int], str]
Key = tuple[bytes, "bytes | None", Listener]  # request-line, Host value, listener


def forcing_fields(router: Router) -> FieldNames:
    """The request fields that send a request the full way: those the parser acts on, the
    router routes on, and the static handler (whose answers are remembered) reads."""
    return READS_FIELDS | router.reads_fields | router.static.reads_fields


class _EveryName:
    """A container holding every field name: the forcing set when code reads them all."""

    def __contains__(self, name: object) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class QuickEntry:
    """A remembered answer."""

    source: Repeatable  # what the answer was made from; it says when it no longer holds
    head_start: bytes  # the status line and the file's fields, up to "Date: "
    server_tail: bytes  # the Server field and the connection's added fields (hsts)
    body: bytes  # b"" for HEAD
    response_headers: list[tuple[str, str]]  # as the full path logs them (%{Name}o)


class QuickPath:
    """One per worker, shared by its threads (dict operations are atomic)."""

    def __init__(self, router: Router, limits: Limits) -> None:
        self.router = router
        self.entries: dict[Key, QuickEntry] = {}
        self.lock = threading.Lock()  # for every change to `entries`; look-ups need none
        # Within these, no line of the head can pass a limit the parser enforces.
        self.max_head = min(limits.request_line, limits.field_size)
        self.max_fields = limits.fields
        # The fields that send a request the full way, as remember() and answer() meet them.
        forcing = forcing_fields(router)
        every = forcing >= EVERY_FIELD  # code that reads them all
        self.forcing: Container[str] = _EveryName() if every else forcing
        self.forcing_bytes: Container[bytes] = (
            _EveryName() if every else frozenset(name.encode("latin-1") for name in forcing))

    def remember(self, head: RequestHead, request_line: str, listener: Listener,
                 response: Response, added: AddedFields) -> None:
        """After the full path answered `head` on a connection from `listener`, which adds
        `added` to its responses: keep the answer if it may be repeated."""
        source = response.repeatable
        if (source is None or response.status != 200
                or head.method not in ("GET", "HEAD") or not head.target.startswith("/")
                or self.router.handler_for(head.path) is not self.router.static):
            return
        body = source.body
        if head.method == "GET" and body is None:
            return  # a large file: sendfile() from the full path
        host = head.headers.get("Host")
        key = (request_line.encode("latin-1"),
               host.encode("latin-1") if host is not None else None, listener)
        if len(key[0]) + len(key[1] or b"") > min(self.max_head, QUICK_KEY_BYTES):
            return
        known = self.entries.get(key)
        if known is not None and known.source is source:
            return
        forcing = self.forcing
        for name, _value in head.headers:
            name = name.lower()
            if name in forcing and name != "host" and name != "connection":
                return  # the answer may depend on it: only ever repeat field-free answers
        added = added.beside(response.headers)  # as framing adds them
        quick = QuickEntry(source, prepared_head_start(200, source.raw_headers),
                           SERVER_LINE + added.lines,
                           b"" if head.method == "HEAD" else body or b"",
                           [*response.headers, *added.fields])
        with self.lock:
            if key not in self.entries and len(self.entries) >= QUICK_ENTRIES:
                del self.entries[next(iter(self.entries))]  # oldest first
            self.entries[key] = quick

    def answer(self, data: bytes, listener: Listener) -> QuickHit | None:
        """The remembered answer to `data` (all a connection from `listener` has received,
        its parser idle) if it is a request the quick path may repeat; None: give it to the
        parser."""
        # Cheap refusals first, so the regex only ever sees one bounded, complete head: its
        # lines are the request-line, the fields and the empty line.
        if (len(data) > self.max_head or not data.endswith(b"\r\n\r\n")
                or data.count(b"\n") > self.max_fields + 2):
            return None
        match = _HEAD_RE.fullmatch(data)
        if match is None:
            return None
        line, method, minor, block = match.groups()
        fields = _FIELD_RE.findall(block)
        host = connection = None
        forcing = self.forcing_bytes
        for name, value in fields:
            name = name.lower()
            if name not in forcing:
                continue  # nothing that made the answer reads it
            if name == b"host" and host is None:
                host = value
            elif name == b"connection" and connection is None:
                connection = value.lower()
                if connection != b"close" and connection != b"keep-alive":
                    return None
            else:
                return None
        key = (line, host, listener)
        entry = self.entries.get(key)
        if entry is None:
            return None
        if not entry.source.current():
            with self.lock:
                self.entries.pop(key, None)  # the full path will make it again
            return None
        if minor == b"1":
            return QuickHit(entry, line, method, fields, "HTTP/1.1", connection != b"close")
        return QuickHit(entry, line, method, fields, "HTTP/1.0", connection == b"keep-alive")


class QuickHit:
    """A request answer() matched to a remembered answer (`entry`): the bytes to send
    (payload()), and what the access log reads of the request (an accounting.Asked)."""

    __slots__ = ("body_bytes", "entry", "headers", "method", "path", "query", "request_line",
                 "response_fields", "version", "wants_keep_alive")

    def __init__(self, entry: QuickEntry, line: bytes, method: bytes,
                 fields: list[tuple[bytes, bytes]], version: str,
                 wants_keep_alive: bool) -> None:
        self.entry = entry
        self.request_line = request_line = line.decode("latin-1")
        self.method = method.decode("latin-1")
        self.path, _, self.query = request_line[len(method) + 1:-9].partition("?")
        self.headers = ReceivedFields(fields)
        self.version = version
        self.wants_keep_alive = wants_keep_alive  # the client's wish; the server may refuse
        self.body_bytes = len(entry.body)
        self.response_fields = entry.response_headers  # as the full path logs them (%{X}o)

    def payload(self, keep_alive: bool) -> bytes:
        """The whole response: what the full path's framing (framing._prepared) sends."""
        entry = self.entry
        return b"".join((entry.head_start, http_date().encode(), entry.server_tail,
                         connection_tail(keep_alive, self.version), entry.body))

    def unsent(self, payload: bytes, sent: int, keep_alive: bool) -> Output:
        """What is left to send of `payload` once a send() took `sent` bytes of it."""
        return Output([payload[sent:]], keep_alive, body_bytes=self.body_bytes,
                      headers=self.response_fields)

    def request_head(self) -> RequestHead:
        """The RequestHead the parser would have made of this request."""
        headers = Headers([(name.decode("latin-1"), value.decode("latin-1"))
                           for name, value in self.headers])
        host = headers.get("Host")
        target = self.request_line[len(self.method) + 1:-9]  # before " HTTP/1.x"
        return RequestHead(self.method, target, self.path, self.query, self.version,
                           headers, self.wants_keep_alive, None, False, False,
                           host.lower() if host is not None else "")

    def response(self) -> Response:
        """The Response the full path would have framed for it."""
        entry = self.entry
        return Response(200, list(entry.response_headers), entry.body,
                        raw_headers=entry.source.raw_headers)


_WANTED: dict[str, bytes] = {}  # a field name as the access log asks -> as matched here


class ReceivedFields(list[tuple[bytes, bytes]]):
    """The request's fields as received, (name, value) bytes, which the access log reads as
    it reads Headers (get), decoded only when asked for: the Combined format wants two.
    A list, so that making one is no Python call on the hot path."""

    __slots__ = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = _WANTED.get(name)
        if wanted is None:  # "?" is in no field name
            wanted = name.lower().encode("latin-1", "replace")
            if len(_WANTED) < 64:  # the names of a log format: a handful
                _WANTED[name] = wanted
        for key, value in self:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default
