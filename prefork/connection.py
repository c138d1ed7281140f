"""One client connection, from accept to close.

How this works: the socket is always non-blocking. An event loop (loop.py) owns the
connection and calls on_readable() / on_writable() / on_timeout(); each returns an Action
telling the loop what to wait for next. The fast path, a request without a body (static
GET/HEAD), is parsed, handled and written entirely inside those calls: no thread hand-off.
A request that carries a body returns HANDOFF; the loop gives the connection to a blocking
thread, which calls serve_blocking(): the body is then read through a BodyReader that waits
with poll(2) on this one socket, so a slow upload never stalls the loop's other connections.

This module is the ONLY place that turns an exception into an HTTP response: HTTPError
subclasses carry their own status; anything else is a 500, logged with its traceback.
"""

from __future__ import annotations

import enum
import html
import os
import select
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import SERVER_SOFTWARE
from .errors import (
    OUT_OF_DESCRIPTORS,
    ClientDisconnected,
    HTTPError,
    InternalServerError,
    OutOfDescriptors,
    RequestTimeout,
    ResponseLengthError,
)
from .framing import discard_body, frame
from .http11 import (
    LAST_CHUNK,
    NEED_DATA,
    REASONS,
    Limits,
    RequestHead,
    RequestParser,
    encode_chunk,
)
from .log import AccessLog, AccessRecord, ErrorLog, escape
from .message import EMPTY_BODY, FileBody, Request, Response
from .request_body import BodyReader

if TYPE_CHECKING:
    from .handlers.router import Router
    from .quick import QuickPath
    from .scoreboard import ThreadSlot

RECV_SIZE = 65536
LOGGED_TARGET = 256  # characters of a client's request-target quoted in the error log
SENDFILE_CHUNK = 1 << 20  # bytes per sendfile(2) call: big enough to be cheap, fair to others
LINGER_SECONDS = 2.0  # Apache's lingering close waits up to 2 s (MAX_SECS_TO_LINGER is 30)
LINGER_READ_LIMIT = 1 << 20  # stop lingering after discarding this much


class Action(enum.Enum):
    WANT_READ = 1
    WANT_WRITE = 2
    HANDOFF = 3  # hand the connection to a blocking thread (request with a body)
    LINGER = 4  # response sent, write side shut; read and discard until EOF or deadline
    CLOSE = 5  # already closed


@dataclass(frozen=True, slots=True)
class ServerContext:
    """What every connection of a worker shares (built once per worker)."""

    router: Router
    access_log: AccessLog
    error_log: ErrorLog
    limits: Limits
    keepalive_timeout: float
    max_keepalive_requests: int
    timeout: float
    header_timeout: float
    body_timeout: float
    min_rate: int
    debug: bool
    host_memo: dict[str, str] = field(default_factory=dict)  # shared by the worker's parsers
    quick: QuickPath | None = None  # repeats answers of the static file cache (quick.py)


def error_page(status: int, reason: str, detail: str) -> bytes:
    """A small HTML error page; `detail` is escaped and never contains filesystem paths."""
    return (f"<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
            f"<body><h1>{reason}</h1><p>{html.escape(detail)}</p>"
            f"<hr><address>{SERVER_SOFTWARE}</address></body></html>\n").encode()


class Connection:
    """A client connection; see the module comment for the life cycle."""

    def __init__(self, sock: socket.socket, client: tuple[str, int], local: tuple[str, int],
                 ctx: ServerContext, slot: ThreadSlot, draining: bool = False) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.local = local
        self.ctx = ctx
        self.slot = slot
        self.parser = RequestParser(ctx.limits, ctx.host_memo)
        self.requests = 0
        self.draining = draining
        now = time.monotonic()
        self.deadline = now + ctx.timeout
        self.head: RequestHead | None = None
        self.request_line = ""  # the current request's, for the access log and scoreboard
        self.request_start = 0.0
        self.request_wall = 0.0
        # Output queue: bytes / memoryview, FileBody regions, then an optional body iterator.
        self.out: deque[bytes | memoryview | FileBody] = deque()
        self.response: Response | None = None
        self.streaming = None
        self.chunked = False
        self.body_sent = 0
        self.discarded = 0  # bytes thrown away during a lingering close
        self.keep_alive = True
        self.linger_after = False  # the response being written ends in a lingering close
        self.continue_sent = False
        self.message_complete = True  # the current request's body has been read to its end
        self.user: str | None = None  # who the current request authenticated as (%u)
        self.sent_headers: list[tuple[str, str]] | None = None  # as framed, for %{...}o
        self.closed = False

    # ------------------------------------------------------------------ loop entry points

    def on_readable(self) -> Action:
        """Read what the socket has and serve any complete requests; return the next Action."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return Action.WANT_READ
        except OSError:
            return self.close()
        if not data:
            if self.parser.idle:
                return self.close()
            self.parser.feed_eof()
            return self.advance()
        quick = self.ctx.quick
        if quick is not None and self.parser.idle:
            action = quick.answer(self, data)
            if action is not None:
                return action
        self.parser.feed(data)
        return self.advance()

    def on_writable(self) -> Action:
        try:
            if not self._flush(blocking=False):
                self.deadline = time.monotonic() + self.ctx.timeout
                return Action.WANT_WRITE
        except OSError:
            self._finish_response(aborted=True)
            return self.close()
        return self._after_response()

    def on_timeout(self) -> Action:
        """Called by the loop once the deadline has passed."""
        if self.out:  # the client stopped reading our response
            self._finish_response(aborted=True)
            return self.close()
        if self.parser.idle or self.parser.eof:
            return self.close()  # an idle keep-alive connection: close quietly, as Apache does
        return self._respond_error(RequestTimeout("timed out reading the request"))

    def on_linger_readable(self) -> Action:
        """Discard what a client still sends after our final response (lingering close)."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return Action.LINGER
        except OSError:
            return self.close()
        self.discarded += len(data)
        if not data or self.discarded > LINGER_READ_LIMIT:
            return self.close()
        return Action.LINGER

    def start_draining(self, idle_grace: float | None) -> Action | None:
        """The worker is retiring: every response from now on carries Connection: close.

        An idle keep-alive connection stays open until its keep-alive deadline, or at most
        `idle_grace` seconds (None: its natural deadline), so a request the client sent
        just now is answered rather than reset. Returns CLOSE if closed at once (grace 0).
        """
        self.draining = True
        if self.parser.idle and not self.out and self.head is None and idle_grace is not None:
            if idle_grace <= 0:
                return self.close()
            self.deadline = min(self.deadline, time.monotonic() + idle_grace)
        return None

    # ------------------------------------------------------------------ request processing

    def advance(self) -> Action:
        """Serve every complete request the parser holds; return what to wait for next."""
        while True:
            try:
                event = self.parser.next_event()
            except HTTPError as exc:
                return self._respond_error(exc)
            except ClientDisconnected:
                return self.close()
            if event is NEED_DATA:
                if self.parser.eof:
                    return self.close()
                now = time.monotonic()
                ctx = self.ctx
                if self.parser.idle:
                    limit = ctx.keepalive_timeout if self.requests else ctx.header_timeout
                    self.deadline = now + limit
                elif self.head is None:
                    if not self.request_start:
                        self.request_start = now  # first byte of a head: its clock starts
                    # mod_reqtimeout's header=20-40,MinRate=500: the deadline moves by one
                    # second per min_rate bytes received, up to twice header_timeout.
                    extra = self.parser.buffered / ctx.min_rate if ctx.min_rate else 0.0
                    self.deadline = self.request_start + min(ctx.header_timeout + extra,
                                                             2 * ctx.header_timeout)
                return Action.WANT_READ
            if isinstance(event, RequestHead):
                # A body can take long to arrive, and a few bodiless requests can take long
                # to serve (a bcrypt check): those go to a blocking thread.
                blocking = event.has_body or self.ctx.router.may_block(event.method,
                                                                       event.path)
                self._begin(event, blocking)
                if not event.has_body:
                    try:
                        self.parser.next_event()  # the EndOfMessage of a bodiless request
                    except HTTPError as exc:
                        return self._respond_error(exc)
                if blocking:
                    return Action.HANDOFF
                response = self._dispatch(event)
                if response.cache_entry is not None and self.ctx.quick is not None:
                    self.ctx.quick.remember(event, self.request_line, self.local, response)
                action = self._send(response, blocking=False)
                if action is not None:
                    return action
                continue
            # A BodyChunk/EndOfMessage here means a body the handler did not read: the
            # connection was already marked to close, so this cannot happen; be safe.
            return self.close()

    def serve_blocking(self) -> Action:
        """In a blocking thread: serve the current request (it has a body) to the end."""
        assert self.head is not None
        self.slot.begin_request(self.request_line, self.client[0], self.request_wall)
        try:
            response = self._dispatch(self.head, BodyReader(self, self.ctx.body_timeout,
                                                            self.ctx.min_rate))
        except ClientDisconnected:
            self._finish_response(aborted=True)
            return self.close()
        action = self._send(response, blocking=True)
        if action is not None:
            return action
        return Action.WANT_READ

    def _begin(self, head: RequestHead, blocking: bool) -> None:
        self.head = head
        self.request_line = self.parser.request_line or ""
        self.requests += 1
        if not self.request_start:
            self.request_start = time.monotonic()
        self.request_wall = time.time()
        self.continue_sent = False
        self.message_complete = not head.has_body
        if not blocking:  # else the blocking thread records it in its own slot
            self.slot.begin_request(self.request_line, self.client[0], self.request_wall)
        if self.ctx.debug:
            self.ctx.error_log.debug(f"request {self.request_line!r}", self.client)

    def _dispatch(self, head: RequestHead, body: BodyReader | None = None) -> Response:
        """Run the router; every exception becomes an error response here."""
        request = Request(head.method, head.target, head.path, head.query, head.version,
                          head.headers, self.client, head.keep_alive, head.has_body,
                          head.content_length, body if body is not None else EMPTY_BODY,
                          host=head.host)
        try:
            return self.ctx.router.handle(request, self.local)
        except HTTPError as exc:
            self.ctx.error_log.http_error(exc, f"{head.method} {head.target}", self.client)
            return self._error_response(exc)
        except ClientDisconnected:
            raise
        except Exception as exc:  # the one place unexpected errors become 500s
            if isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS:
                # Any handler out of descriptors: a shortage that passes, not a bug.
                shortage = OutOfDescriptors(f"out of file descriptors ({exc.strerror})")
                self.ctx.error_log.http_error(shortage, f"{head.method} {head.target}",
                                              self.client)
                return self._error_response(shortage)
            self.ctx.error_log.error(
                f"unhandled error serving {escape(head.method[:LOGGED_TARGET])} "
                f"{escape(head.target[:LOGGED_TARGET])}: {str(exc)[:LOGGED_TARGET]}",
                self.client, exc)
            return self._error_response(InternalServerError("unexpected server error"))
        finally:
            self.user = request.user  # set by the authentication step, for %u

    def _error_response(self, exc: HTTPError) -> Response:
        reason = exc.reason or REASONS.get(exc.status, "Error")
        headers = [("Content-Type", "text/html; charset=utf-8"), *exc.headers]
        text = exc.detail if exc.show_detail else exc.public_text
        return Response(exc.status, headers, error_page(exc.status, reason, text),
                        reason, close=exc.close)

    def _respond_error(self, exc: HTTPError) -> Action:
        """Answer a protocol-level error (the parser's), then close: the framing is lost."""
        if self.out:  # mid-response already: nothing sensible to add
            return self.close()
        self.ctx.error_log.http_error(exc, self.parser.request_line or "", self.client,
                                      protocol=True)
        exc.close = True
        if self.head is None:
            self.request_wall = self.request_wall or time.time()
            self.request_start = self.request_start or time.monotonic()
        action = self._send(self._error_response(exc), blocking=False, linger=True)
        return action if action is not None else self.close()

    # ------------------------------------------------------------------ writing

    def _send(self, response: Response, blocking: bool, linger: bool = False) -> Action | None:
        """Queue and write `response`; `linger`: close with a lingering close afterwards
        (the client may still be sending). Returns None when done and the connection stays
        open for another request, else the Action for the loop (WANT_WRITE, LINGER, CLOSE)."""
        head = self.head
        self.linger_after = linger  # kept as state: the write may finish in on_writable()
        keep_alive = (head is not None and head.keep_alive and not response.close
                      and self.message_complete and self.keep_alive_allowed())
        # Without a parsed head (the parser refused the request) the method is still known
        # once the request-line began: an error answer to HEAD carries no body (§9.3.2).
        method = head.method if head else self.parser.method or "GET"
        version = head.version if head else "HTTP/1.1"
        try:
            output = frame(response, method, version, keep_alive)
        except ValueError as exc:  # the handler's fields cannot be sent: a server fault
            self.ctx.error_log.error(
                f"cannot send the {response.status} response to "
                f"{escape((self.request_line or '')[:LOGGED_TARGET])}: {exc}", self.client)
            discard_body(response)
            response = self._error_response(InternalServerError("unframable response"))
            output = frame(response, method, version, False)
        self.response = response
        self.sent_headers = output.headers
        self.keep_alive = output.keep_alive
        self.chunked = output.chunked
        self.streaming = output.stream
        self.body_sent = output.body_bytes
        self.out.extend(output.items)
        try:
            done = self._flush(blocking)
        except OSError:
            self._finish_response(aborted=True)
            return self.close()
        if not done:
            self.deadline = time.monotonic() + self.ctx.timeout
            return Action.WANT_WRITE
        return self._complete()

    def keep_alive_allowed(self) -> bool:
        """Whether the server lets this connection stay open after the current request."""
        ctx = self.ctx
        return (not self.draining and ctx.keepalive_timeout > 0
                and (not ctx.max_keepalive_requests
                     or self.requests < ctx.max_keepalive_requests))

    def adopt_response(self, head: RequestHead, request_line: str, response: Response,
                       rest: memoryview, keep_alive: bool, start: float, wall: float
                       ) -> Action:
        """Take over a quick-path answer the socket did not take whole: `rest` is written,
        logged and finished like any response of the full path."""
        self.head, self.request_line, self.response = head, request_line, response
        self.request_start, self.request_wall = start, wall
        self.keep_alive, self.linger_after, self.message_complete = keep_alive, False, True
        self.chunked, self.streaming = False, None
        self.body_sent = len(response.body) if isinstance(response.body, bytes) else 0
        self.out.append(rest)
        self.deadline = time.monotonic() + self.ctx.timeout
        return Action.WANT_WRITE

    def _after_response(self) -> Action:
        action = self._complete()
        if action is not None:
            return action
        return self.advance()

    def _complete(self) -> Action | None:
        self._finish_response(aborted=False)
        if not self.keep_alive:
            if self.linger_after or not self.message_complete:
                return self.linger()
            return self.close()
        self.parser.start_next_request()
        return None

    def _flush(self, blocking: bool) -> bool:
        """Write queued output; returns True when everything is sent. Raises OSError."""
        out = self.out
        sock = self.sock
        while True:
            if not out and (self.streaming is None or not self._pull_stream()):
                return True
            item = out[0]
            try:
                if isinstance(item, FileBody):
                    if item.length == 0:
                        item.close()
                        out.popleft()
                        continue
                    sent = os.sendfile(self.fd, item.fd, item.offset,
                                       min(item.length, SENDFILE_CHUNK))
                    if sent == 0:
                        raise OSError("file shrank while it was being sent")
                    item.offset += sent
                    item.length -= sent
                    self.body_sent += sent
                    continue
                more = socket.MSG_MORE if len(out) > 1 else 0
                sent = sock.send(item, more)
            except BlockingIOError:
                if not blocking:
                    return False
                if not self.wait(select.POLLOUT):
                    raise TimeoutError("timed out writing the response") from None
                continue
            if sent < len(item):
                out[0] = memoryview(item)[sent:]
            else:
                out.popleft()

    def _pull_stream(self) -> bool:
        """Move the next piece of a streamed body into the queue; False once it is done."""
        try:
            piece = next(self.streaming)  # type: ignore[call-overload]
        except StopIteration:
            self.streaming = None
            if self.chunked:
                self.out.append(LAST_CHUNK)
                return True
            return False
        except ResponseLengthError as exc:  # stopped at the declared length: close after it
            self.ctx.error_log.error(
                f"{exc}; closing the connection after "
                f"{escape((self.request_line or '')[:LOGGED_TARGET])}", self.client)
            self.streaming = None
            self.keep_alive = False
            return False
        if piece:
            self.body_sent += len(piece)
            self.out.append(encode_chunk(piece) if self.chunked else piece)
        return True

    def wait(self, events: int, timeout: float | None = None) -> bool:
        """Block this (blocking-pool) thread until the socket is ready; False on timeout."""
        poller = select.poll()
        poller.register(self.fd, events)
        seconds = self.ctx.timeout if timeout is None else timeout
        return bool(poller.poll(max(0.0, seconds) * 1000))

    def send_interim(self, data: bytes) -> None:
        """Write an interim (1xx) response from a blocking thread; raises OSError."""
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                if not self.wait(select.POLLOUT):
                    raise TimeoutError("timed out writing 100 Continue") from None

    def _finish_response(self, aborted: bool) -> None:
        """Access log, scoreboard and clean-up for the response just completed (or abandoned)."""
        response = self.response
        if response is None:
            return
        self.response = None
        for item in self.out:
            if isinstance(item, FileBody):
                item.close()
        self.out.clear()
        response.close_files()
        if self.streaming is not None:
            close = getattr(self.streaming, "close", None)
            if close:
                close()
            self.streaming = None
        head = self.head
        ctx = self.ctx
        if ctx.access_log.enabled:
            ctx.access_log.log(AccessRecord(
                self.client[0], self.local[1],
                self.request_line or self.parser.request_line or "",
                head.method if head else "", head.path if head else "",
                head.query if head else "", head.version if head else "",
                response.status, self.body_sent, self.request_wall,
                time.monotonic() - self.request_start,
                head.headers if head else None, self.sent_headers or response.headers,
                self.user or "-"))
        self.user = self.sent_headers = None
        self.slot.end_request(self.body_sent)
        if ctx.debug:
            ctx.error_log.debug(f"response {response.status}, {self.body_sent} body bytes"
                                f"{' (aborted)' if aborted else ''}, keep-alive "
                                f"{'yes' if self.keep_alive and not aborted else 'no'}",
                                self.client)
        self.head = None
        self.request_line = ""
        self.request_start = 0.0

    # ------------------------------------------------------------------ closing

    def linger(self) -> Action:
        """Shut our write side and discard input briefly, so a client still sending its
        request reads our error response instead of a connection reset (Apache's lingering
        close)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self.close()
        self.discarded = 0
        self.deadline = time.monotonic() + LINGER_SECONDS
        return Action.LINGER

    def close(self) -> Action:
        if not self.closed:
            self.closed = True
            self._finish_response(aborted=True)
            try:
                self.sock.close()
            except OSError:
                pass
        return Action.CLOSE
