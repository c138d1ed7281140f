"""The quick path: a repeated GET/HEAD of a cached static file, answered from the raw bytes.

How this works (the idea of Apache's CacheQuickHandler, without ever serving stale data):
when the full pipeline (parser, router, static handler, framing) has answered a GET or HEAD
with a 200 built whole from the static file cache, remember() keeps that answer under the
request's exact request-line, Host value and local address. answer() serves a later
request from it, skipping the parser, the router and the handler, only when
  * the received bytes are exactly one complete head matching _HEAD_RE: GET or HEAD, an
    origin-form target, HTTP/1.0 or 1.1, field lines of token names and visible-ASCII
    values, nothing after the empty line (pipelined bytes are the parser's business).
    Origin-form only: there the Host field is the request's host, which the router
    checked when the answer was remembered under it; an absolute-form target's authority
    overrides Host (RFC 9112 §3.2.2), so such requests always take the full path;
  * the head is within the configured limits, and every field is one this server ignores
    for static files (INERT_FIELDS: no validators, Range, credentials, body framing or
    Expect); Host appears at most once, Connection at most once, as keep-alive or close;
  * the static file cache still holds the very entry the answer was built from, and finds
    it current (StaticFiles.is_current: one stat() of the path as named, and a resolution
    under a second old), exactly as it would for the full path.
Anything else, every malformed request included, takes the full path, so the quick path
only repeats what the full path answered to the same request-line and Host; the bytes sent
are the ones the full path would send (tests/test_quick.py compares them).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefork.http.framing import SERVER_LINE, connection_tail, prepared_head_start
from prefork.http.message import Headers, Response
from prefork.http.parser import Limits, RequestHead, http_date
from prefork.log import AccessRecord
from prefork.serve.connection import Action, Connection
from prefork.site.static import CachedFile

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

# Request fields that cannot change a static 200 here: the static handler reads only the
# validators and Range, the router Host, the parser the framing fields, Expect and
# Connection. Any field not listed sends the request the full way.
INERT_FIELDS = frozenset({
    b"user-agent", b"accept", b"accept-language", b"accept-encoding", b"accept-charset",
    b"referer", b"cache-control", b"pragma", b"cookie", b"dnt", b"priority",
    b"upgrade-insecure-requests", b"sec-fetch-dest", b"sec-fetch-mode", b"sec-fetch-site",
    b"sec-fetch-user", b"sec-ch-ua", b"sec-ch-ua-mobile", b"sec-ch-ua-platform", b"sec-gpc",
    b"x-requested-with", b"x-forwarded-for", b"x-forwarded-proto", b"x-real-ip",
    b"forwarded", b"via",  # from a reverse proxy; this server does not act on them
})

Key = tuple[bytes, "bytes | None", tuple[str, int]]  # request-line, Host value, local address


@dataclass(frozen=True, slots=True)
class QuickEntry:
    path: str  # the request path: the static cache's key for `file`
    file: CachedFile
    head_start: bytes  # the status line and the file's fields, up to "Date: "
    body: bytes  # b"" for HEAD
    response_headers: list[tuple[str, str]]  # for the access log


class QuickPath:
    """One per worker, shared by its threads (dict operations are atomic)."""

    def __init__(self, router: Router, limits: Limits) -> None:
        self.router = router
        self.static = router.static
        self.entries: dict[Key, QuickEntry] = {}
        self.lock = threading.Lock()  # for every change to `entries`; look-ups need none
        # Within these, no line of the head can pass a limit the parser enforces.
        self.max_head = min(limits.request_line, limits.field_size)
        self.max_fields = limits.fields

    def remember(self, head: RequestHead, request_line: str, local: tuple[str, int],
                 response: Response) -> None:
        """After the full path answered `head`: keep the answer if it may be repeated."""
        entry = response.cache_entry
        if (not isinstance(entry, CachedFile) or response.status != 200
                or head.method not in ("GET", "HEAD") or not head.target.startswith("/")
                or self.router.handler_for(head.path) is not self.router.static):
            return
        if head.method == "GET" and entry.body is None:
            return  # a large file: sendfile() from the full path
        host = head.headers.get("Host")
        key = (request_line.encode("latin-1"),
               host.encode("latin-1") if host is not None else None, local)
        if len(key[0]) + len(key[1] or b"") > min(self.max_head, QUICK_KEY_BYTES):
            return
        known = self.entries.get(key)
        if known is not None and known.file is entry:
            return
        quick = QuickEntry(head.path, entry, prepared_head_start(200, entry.raw_headers),
                           b"" if head.method == "HEAD" else entry.body or b"",
                           list(response.headers))
        with self.lock:
            if key not in self.entries and len(self.entries) >= QUICK_ENTRIES:
                del self.entries[next(iter(self.entries))]  # oldest first
            self.entries[key] = quick

    def answer(self, conn: Connection, data: bytes) -> Action | None:
        """Answer `data` (all the connection has received, the parser idle) if it is a
        request the quick path may repeat; None: give it to the parser."""
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
        for name, value in fields:
            name = name.lower()
            if name in INERT_FIELDS:
                continue
            if name == b"host" and host is None:
                host = value
            elif name == b"connection" and connection is None:
                connection = value.lower()
                if connection != b"close" and connection != b"keep-alive":
                    return None
            else:
                return None
        key = (line, host, conn.local)
        entry = self.entries.get(key)
        if entry is None:
            return None
        static = self.static
        if static.cache.get(entry.path) is not entry.file or not static.is_current(entry.file):
            with self.lock:
                self.entries.pop(key, None)  # the full path will resolve it again
            return None
        if minor == b"1":
            wants_keep_alive, version = connection != b"close", "HTTP/1.1"
        else:
            wants_keep_alive, version = connection == b"keep-alive", "HTTP/1.0"
        return self._send(conn, entry, line, method.decode(), fields, wants_keep_alive, version)

    def _send(self, conn: Connection, entry: QuickEntry, line: bytes, method: str,
              fields: list[tuple[bytes, bytes]], wants_keep_alive: bool,
              version: str) -> Action:
        start = time.monotonic()
        wall = time.time()
        request_line = line.decode("latin-1")
        conn.parser.request_answered()  # what it counted towards this request starts over
        conn.requests += 1
        conn.slot.begin_request(request_line, conn.client[0], wall)
        keep_alive = wants_keep_alive and conn.keep_alive_allowed()
        body = entry.body
        payload = b"".join((entry.head_start, http_date().encode(), SERVER_LINE,
                            connection_tail(keep_alive, version), body))
        try:
            sent = conn.sock.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = -1
        if sent < len(payload):  # the connection finishes (or aborts) it like any other
            head = _request_head(request_line, fields, wants_keep_alive)
            response = Response(200, list(entry.response_headers), body,
                                raw_headers=entry.file.raw_headers, cache_entry=entry.file)
            action = conn.adopt_response(head, request_line, response,
                                         memoryview(payload)[max(sent, 0):], keep_alive,
                                         start, wall)
            return action if sent >= 0 else conn.close()  # logged as aborted
        ctx = conn.ctx
        if ctx.access_log.enabled:
            target = request_line.split(" ", 2)[1]
            path, _, query = target.partition("?")
            ctx.access_log.log(AccessRecord(
                conn.client[0], conn.local[1], request_line, method,
                path, query, version, 200, len(body), wall, time.monotonic() - start,
                ReceivedFields(fields), entry.response_headers))
        conn.slot.end_request(len(body))
        if not keep_alive:
            return conn.close()
        conn.deadline = start + ctx.keepalive_timeout
        return Action.WANT_READ


def _request_head(request_line: str, fields: list[tuple[bytes, bytes]],
                  wants_keep_alive: bool) -> RequestHead:
    """The RequestHead the parser would have made of a quick request."""
    method, target, version = request_line.split(" ")
    path, _, query = target.partition("?")
    headers = Headers([(name.decode("latin-1"), value.decode("latin-1"))
                       for name, value in fields])
    host = headers.get("Host")
    return RequestHead(method, target, path, query, version, headers, wants_keep_alive,
                       None, False, False, host.lower() if host is not None else "")


class ReceivedFields:
    """The request's fields as the access log reads them (Headers.get), decoded only when
    asked for: the Combined format wants two of them."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("latin-1", "replace")  # "?" is in no field name
        for key, value in self.fields:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default
