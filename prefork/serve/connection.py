"""One client connection, from accept to close.

How this works: the socket is always non-blocking. An event loop (loop.py) owns the
connection and calls on_readable() / on_writable() / on_timeout(); each returns an Action
telling the loop what to wait for next. The fast path, a request without a body (static
GET/HEAD), is parsed, handled and written entirely inside those calls: no thread hand-off.

A request that carries a body first returns WAIT_BODY: the loop keeps the connection until
the first body bytes arrive (a client that sends a head and then nothing holds no thread;
it gets 408 at body_timeout, counted from the end of its head). Then, or at once when the
bytes came with the head, when the client waits for 100 Continue, or when a bodiless request
may block (a bcrypt check), it returns HANDOFF: the loop lends the connection to a pool
thread (pool.py), which calls serve_blocking(); the body is read through a BodyReader that
waits with poll(2) on this one socket, so a slow upload never stalls the loop's other
connections. A lent connection is `lent`: its close() logs and finishes the request but
leaves the socket to the owning loop, which alone closes descriptors (one owner each).

A body the handler did not read is read and discarded when it fits discard_body_limit (as
Apache and nginx do), so the connection can carry the next request; a larger one closes it.

This module is the ONLY place that turns an exception into an HTTP response: HTTPError
subclasses carry their own status; anything else is a 500, logged with its traceback —
in _dispatch() for handlers, in fail() for whatever escapes the rest (the barrier the loop
and the pool call). Every request whose head was read gets exactly one access-log line:
one whose client went away before any response is logged with status 499 (nginx's "client
closed request"), the status of the response otherwise. The line and the scoreboard's end of
the request are accounting.finish()'s, for a quick answer (_answer_quickly) too.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from prefork import SERVER_SOFTWARE
from prefork.errors import (
    OUT_OF_DESCRIPTORS,
    ClientDisconnected,
    HTTPError,
    InternalServerError,
    OutOfDescriptors,
    RequestTimeout,
    ServiceUnavailable,
)
from prefork.http.framing import NO_FIELDS, Output, frame
from prefork.http.message import EMPTY_BODY, Request, Response
from prefork.http.message import BodyReader as Body
from prefork.http.parser import NEED_DATA, REASONS, RequestHead, RequestParser
from prefork.log import escape
from prefork.serve import accounting
from prefork.serve.body import BodyReader
from prefork.serve.context import Action, ServerContext
from prefork.serve.output import SendQueue, release_body
from prefork.serve.quick import QuickHit
from prefork.serve.transport import Transport

if TYPE_CHECKING:
    from prefork.scoreboard import ThreadSlot

# Action and ServerContext live in context.py; many modules import them from here.
__all__ = ["Action", "Connection", "ServerContext", "error_page"]

RECV_SIZE = 65536
LOGGED_TARGET = 256  # characters of a client's request-target quoted in the error log
LINGER_SECONDS = 2.0  # Apache's lingering close waits up to 2 s (MAX_SECS_TO_LINGER is 30)
LINGER_READ_LIMIT = 1 << 20  # stop lingering after discarding this much
RETRY_AFTER = "1"  # seconds, on 503 answers when no blocking thread is free
INTERNAL_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 22\r\nConnection: close\r\n\r\nInternal Server Error\n")
_INTERNAL_ERROR_HEAD_END = INTERNAL_ERROR.index(b"\r\n\r\n") + 2  # where added fields go


def error_page(status: int, reason: str, detail: str) -> bytes:
    """A small HTML error page; `detail` is escaped and never contains filesystem paths."""
    return (f"<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
            f"<body><h1>{reason}</h1><p>{html.escape(detail)}</p>"
            f"<hr><address>{SERVER_SOFTWARE}</address></body></html>\n").encode()


class Connection:
    """A client connection; see the module comment for the life cycle."""

    def __init__(self, transport: Transport, client: tuple[str, int], local: tuple[str, int],
                 ctx: ServerContext, slot: ThreadSlot, draining: bool = False) -> None:
        self.transport = transport  # the only way to the socket (serve/transport.py)
        self.fd = transport.fd
        self.client = client
        self.local = local
        # What an answer may depend on besides the request: where it came in, and whether
        # over TLS (the quick path's key; the redirect to https; hsts). Derived from the
        # transport, never from a list of addresses.
        self.listener = (local, transport.scheme)
        self.added = ctx.tls_fields if transport.scheme == "https" else NO_FIELDS
        self.ctx = ctx
        self.slot = slot
        self.parser = RequestParser(ctx.limits, ctx.host_memo)
        self.requests = 0
        self.draining = draining
        self.drain_grace: float | None = None  # idle grace of the stop under way, if any
        self.quick_received = 0  # a quick answer finished by _write: its request's size (%I)
        now = time.monotonic()
        self.deadline = now + ctx.timeout
        self.head: RequestHead | None = None
        self.request_line = ""  # the current request's, for the access log and scoreboard
        self.request_start = 0.0
        self.request_wall = 0.0
        self.out = SendQueue()  # what is left to send of the current response (output.py)
        self.response: Response | None = None
        self.discarded = 0  # bytes thrown away during a lingering close
        self.keep_alive = True
        self.linger_after = False  # the response being written ends in a lingering close
        self.continue_sent = False
        self.message_complete = True  # the current request's body has been read to its end
        self.head_done = 0.0  # monotonic time the head of a request with a body was complete
        self.closed = False  # finished: nothing more is read or written
        self.released = False  # the socket is closed (only ever by the owning loop's thread)
        self.lent = False  # a pool thread is serving it (set and cleared by the owning loop)
        self.pool_name = ""  # the pool the current request is lent to (see ServerContext)
        self.waiting = Action.WANT_READ  # what the owning loop waits for (the loop's record)
        self.events = 0  # the epoll events it is registered for (0: not registered)
        self.user: str | None = None  # who the current request authenticated as (%u)
        self.sent_headers: list[tuple[str, str]] | None = None  # as framed, for %{...}o

    # ------------------------------------------------------------------ loop entry points

    def on_readable(self) -> Action:
        """Read what the socket has and serve any complete requests; return the next Action."""
        try:
            data = self.transport.recv(RECV_SIZE)
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
            hit = quick.answer(data, self.listener)
            if hit is not None:
                return self._answer_quickly(hit, len(data))
        self.parser.feed(data)
        return self.advance()

    def on_writable(self) -> Action:
        try:
            if not self.out.flush(self.transport, None):
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
            data = self.transport.recv(RECV_SIZE)
        except BlockingIOError:
            return Action.LINGER
        except OSError:
            return self.close()
        self.discarded += len(data)
        if not data or self.discarded > LINGER_READ_LIMIT:
            return self.close()
        return Action.LINGER

    def on_body_readable(self) -> Action:
        """WAIT_BODY: the body has started to arrive (lend the connection to a pool thread),
        or the client went away before sending it (logged as 499)."""
        try:
            data = self.transport.recv(RECV_SIZE)
        except BlockingIOError:
            return Action.WAIT_BODY
        except OSError:
            return self.close()
        if not data:
            return self.close()
        self.parser.feed(data)
        return Action.HANDOFF

    def start_draining(self, idle_grace: float | None) -> Action | None:
        """The worker is retiring: every response from now on carries Connection: close.

        An idle keep-alive connection stays open until its keep-alive deadline, or at most
        `idle_grace` seconds (None: its natural deadline), so a request the client sent
        just now is answered rather than reset. Returns CLOSE if closed at once (grace 0).
        """
        self.draining = True
        self.drain_grace = idle_grace  # also for a response still under way: see advance()
        if self.parser.idle and not self.out and self.head is None and idle_grace is not None:
            if idle_grace <= 0:
                return self.close()
            self.deadline = min(self.deadline, time.monotonic() + idle_grace)
        return None

    # ------------------------------------------------------------------ request processing

    def advance(self, lent: bool = False) -> Action:
        """Serve every complete request the parser holds; return what to wait for next.

        `lent`: called in a pool thread (serve_next): no request is served here. One that
        needs a pool is lent (HANDOFF), so the pool thread decides whether it may take it
        itself; one the loop serves (no body, no pool: a static GET) is begun and returns
        SERVE, and the loop serves it (serve_begun) — never through the worker's blocking
        pool, whose queue uploads may fill."""
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
                    if self.draining and self.drain_grace is not None:
                        # A response that was under way when the worker began to stop: the
                        # idle wait after it is the stop's grace, not a keep-alive timeout.
                        limit = min(limit, self.drain_grace)
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
                # A body can take long to arrive, and some bodiless requests can take long
                # to serve (a bcrypt check, an application): those go to a pool thread —
                # an application's own pool, else the worker's blocking pool ("").
                pool = self.ctx.router.pool_for(event.method, event.path,
                                                self.transport.scheme)
                blocking = event.has_body or pool is not None
                self.pool_name = pool or ""
                self._begin(event, blocking or lent)  # the slot: the thread serving it
                if not event.has_body:
                    try:
                        self.parser.next_event()  # the EndOfMessage of a bodiless request
                    except HTTPError as exc:
                        return self._respond_error(exc)
                if blocking:
                    return self._lend(event)
                if lent:
                    return Action.SERVE
                action = self._serve_inline(event)
                if action is not None:
                    return action
                continue
            # A BodyChunk/EndOfMessage here means a body the handler did not read: the
            # connection was already marked to close, so this cannot happen; be safe.
            return self.close()

    def _serve_inline(self, head: RequestHead) -> Action | None:
        """On the loop: serve a request that needs no pool; None when done and the
        connection waits for the next request (see _send)."""
        response = self._dispatch(head)
        if response.repeatable is not None and self.ctx.quick is not None:
            self.ctx.quick.remember(head, self.request_line, self.listener, response,
                                    self.added)
        return self._send(response, blocking=False)

    def serve_begun(self) -> Action:
        """On the loop, for a SERVE hand-back: serve the request a pool thread began, then
        any that follow it, as advance() would have."""
        head = self.head
        assert head is not None and not self.lent
        self.slot.begin_request(self.request_line, self.client[0], self.request_wall)
        action = self._serve_inline(head)
        return action if action is not None else self.advance()

    def _lend(self, head: RequestHead) -> Action:
        """A blocking request's head is complete: what the loop does with the connection.

        Its deadline runs from now and carries over to the wait for a pool thread and the
        body itself (mod_reqtimeout's body timeout starts with the head too)."""
        ctx = self.ctx
        self.head_done = now = time.monotonic()
        if not head.has_body:
            self.deadline = now + ctx.timeout
            return Action.HANDOFF
        self.deadline = now + ctx.body_timeout
        if head.expect_continue or self.parser.buffered:
            return Action.HANDOFF  # bytes are here, or the client waits for our 100 first
        if self.parser.eof:
            return self.close()
        return Action.WAIT_BODY  # no thread for a body that has not started to arrive

    def serve_blocking(self, slot: ThreadSlot | None = None) -> Action:
        """In a pool thread: serve the current request to its end and return what the
        owning loop should do next. The pool's exception barrier: it never raises."""
        if slot is not None:
            self.slot = slot  # the loop puts its own back when the connection returns
        try:
            head = self.head
            assert head is not None and self.lent
            self.slot.begin_request(self.request_line, self.client[0], self.request_wall)
            body: Body = EMPTY_BODY
            if head.has_body:
                body = BodyReader(self, self.ctx.body_timeout, self.ctx.min_rate)
            response = None
            try:
                response = self._dispatch(head, body)
                if not self.message_complete and not response.close:
                    response = self._discard_body(body, response)
            except ClientDisconnected:
                if response is not None:
                    release_body(response.body)
                return self.close()  # logged as 499
            action = self._send(response, blocking=True)
            return action if action is not None else Action.WANT_READ
        except BaseException as exc:  # an app's sys.exit() too (see fail())
            return self.fail(exc)

    def serve_next(self) -> Action:
        """In a pool thread, after serve_blocking() returned WANT_READ: begin the next
        request if the parser holds it already (a pipelining client sent it with the one
        just answered). Returns HANDOFF with `pool_name` set when a request that needs a
        pool was begun (the pool thread serves it if it is its own pool's, else the loop
        lends it on), SERVE for one the loop serves itself, else what the loop should do.
        No recv: a socket that has nothing costs a syscall and a GIL hand-over for nothing
        (measured: no gain for a fast non-pipelining client, whose next request the loop
        reads anyway). The pool's exception barrier, as serve_blocking()."""
        if not self.parser.buffered:
            return Action.WANT_READ  # the loop reads the socket when it has more
        try:
            return self.advance(lent=True)
        except BaseException as exc:  # as in serve_blocking()
            return self.fail(exc)

    def _discard_body(self, body: Body, response: Response) -> Response:
        """The handler answered without reading the whole body. Read and drop a body of at
        most discard_body_limit bytes, so the connection can carry the next request (as
        Apache's ap_discard_request_body and nginx do); past that, or when the client
        still waits for a 100 Continue it never got (RFC 9110 §10.1.1: it will not send
        the body), the response closes the connection with a lingering close instead.
        Raises ClientDisconnected."""
        head = self.head
        limit = self.ctx.discard_body_limit
        if (head is None or not isinstance(body, BodyReader)
                or (head.expect_continue and not self.continue_sent)
                or (head.content_length or 0) > limit):
            return response
        try:
            body.discard(limit)  # leaves message_complete False past the limit
        except HTTPError as exc:  # a malformed chunk (400), too slow (408), too large (413)
            release_body(response.body)
            return self._error_response(exc)
        return response

    def refuse(self, detail: str) -> Action:
        """503 + Retry-After for a request no pool thread could take in time (on the loop
        thread); its body is unread, so the connection ends with a lingering close."""
        exc = ServiceUnavailable(detail, headers=[("Retry-After", RETRY_AFTER)])
        action = self._send(self._error_response(exc), blocking=False, linger=True)
        return action if action is not None else self.close()

    def fail(self, exc: BaseException) -> Action:
        """The last exception barrier (loop and pool threads): `exc` escaped the code
        serving this connection. It is logged with its traceback; the client gets a 500 if
        no response was started; the connection is closed, its state no longer trusted.

        In a pool thread this takes any BaseException: application code runs there, and a
        SystemExit or KeyboardInterrupt it raises (`except Exception` misses both) would
        otherwise end the thread — the pool a thread short for good, and the request
        unanswered. No signal is ever delivered to a pool thread, so nothing of the
        interpreter's own is caught by mistake."""
        line = self.request_line or (self.parser.request_line or "")
        self.ctx.error_log.error(f"internal error serving {line[:LOGGED_TARGET]!r}: {exc!r};"
                                 f" connection closed", self.client, exc)
        if self.response is None and not self.closed:
            self.request_wall = self.request_wall or time.time()
            self.request_start = self.request_start or time.monotonic()
            self.response = Response(500, [("Content-Type", "text/plain")])
            self.out.clear()
            try:
                answer = INTERNAL_ERROR
                if self.added.lines:  # hsts over TLS, on this answer too
                    cut = _INTERNAL_ERROR_HEAD_END
                    answer = answer[:cut] + self.added.lines + answer[cut:]
                self.transport.send(answer)  # non-blocking: what fits, best effort
            except OSError:
                pass
        return self.close()

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

    def _dispatch(self, head: RequestHead, body: Body | None = None) -> Response:
        """Run the router; every exception becomes an error response here."""
        request = Request(head.method, head.target, head.path, head.query, head.version,
                          head.headers, self.client, head.keep_alive, head.has_body,
                          head.content_length, body if body is not None else EMPTY_BODY,
                          host=head.host, local=self.local, scheme=self.transport.scheme)
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
        keep_alive = (head is not None and head.keep_alive and not response.close
                      and self.message_complete and self.keep_alive_allowed())
        # Without a parsed head (the parser refused the request) the method is still known
        # once the request-line began: an error answer to HEAD carries no body (§9.3.2).
        method = head.method if head else self.parser.method or "GET"
        version = head.version if head else "HTTP/1.1"
        try:
            output = frame(response, method, version, keep_alive, self.added)
        except ValueError as exc:  # the handler's fields cannot be sent: a server fault
            self.ctx.error_log.error(
                f"cannot send the {response.status} response to "
                f"{escape((self.request_line or '')[:LOGGED_TARGET])}: {exc}", self.client)
            release_body(response.body)
            response = self._error_response(InternalServerError("unframable response"))
            output = frame(response, method, version, False, self.added)
        except BaseException:
            release_body(response.body)  # nothing was sent: fail() can still answer 500
            raise
        return self._write(response, output, blocking, linger)

    def _write(self, response: Response, output: Output, blocking: bool, linger: bool = False,
               already_sent: int = 0) -> Action | None:
        """Write `output` (framed by _send, or a quick answer's unsent end: `already_sent`
        bytes of it went out before), as _send says."""
        self.response = response
        self.sent_headers = output.headers
        self.linger_after = linger  # kept as state: the write may finish in on_writable()
        self.keep_alive = output.keep_alive
        self.out.load(output, already_sent)
        try:
            done = self.out.flush(self.transport, self.ctx.timeout if blocking else None)
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

    def _answer_quickly(self, hit: QuickHit, received: int) -> Action:
        """Send the quick path's answer to `hit` (all that came: `received` bytes); counted,
        logged as any."""
        started, wall = time.monotonic(), time.time()
        self.parser.request_answered()  # what it counted towards this request starts over
        self.requests += 1
        self.slot.begin_request(hit.request_line, self.client[0], wall)
        keep_alive = hit.wants_keep_alive and self.keep_alive_allowed()
        payload = hit.payload(keep_alive)
        try:
            sent = self.transport.send(payload)
        except OSError:  # full, or failed: _write() below meets the same error and aborts
            sent = 0
        if sent == len(payload):
            accounting.finish(self.ctx, self.slot, self.client, self.local, hit.request_line,
                              hit, 200, hit.body_bytes, wall, started, hit.response_fields,
                              received=received, wire_sent=sent, session=self.transport)
            if not keep_alive:
                return self.close()
            self.deadline = started + self.ctx.keepalive_timeout
            return Action.WANT_READ
        # The rest is written, logged and finished as any response of the full path.
        self.head, self.request_line = hit.request_head(), hit.request_line
        self.request_start, self.request_wall, self.message_complete = started, wall, True
        self.quick_received = received
        action = self._write(hit.response(), hit.unsent(payload, sent, keep_alive), False,
                             already_sent=sent)
        return action if action is not None else self.advance()

    def _after_response(self) -> Action:
        action = self._complete()
        return action if action is not None else self.advance()

    def _complete(self) -> Action | None:
        if self.out.length_fault:  # the body disagreed with its Content-Length: cut, close
            self.ctx.error_log.error(
                f"{self.out.length_fault}; closing the connection after "
                f"{escape((self.request_line or '')[:LOGGED_TARGET])}", self.client)
            self.keep_alive = False
        self._finish_response(aborted=False)
        if not self.keep_alive:
            if self.linger_after or not self.message_complete:
                return self.linger()
            return self.close()
        self.parser.start_next_request()
        return None

    def _finish_response(self, aborted: bool) -> None:
        """Log, count and clean up the response just completed (or abandoned), or a request
        whose client went away before any response (accounting.finish)."""
        response, head = self.response, self.head
        if response is None:
            if head is None:
                return  # no request in progress
            sent, status, fields = 0, None, None
        else:
            self.response = None
            sent, status = self.out.body_sent, response.status
            fields = self.sent_headers or response.headers
            self.out.clear()
            release_body(response.body)
        received = self.quick_received or self.parser.received
        accounting.finish(self.ctx, self.slot, self.client, self.local,
                          self.request_line or self.parser.request_line or "", head, status,
                          sent, self.request_wall, self.request_start, fields, self.user,
                          aborted, self.keep_alive, received=received,
                          wire_sent=self.out.wire_sent, session=self.transport)
        self.quick_received = 0
        self.user = self.sent_headers = None
        self.head, self.request_line, self.request_start = None, "", 0.0

    # ------------------------------------------------------------------ closing

    def linger(self) -> Action:
        """Shut our write side and discard input briefly, so a client still sending its
        request reads our error response instead of a connection reset (Apache's lingering
        close)."""
        try:
            self.transport.shutdown_write()
        except OSError:
            return self.close()
        self.discarded = 0
        self.deadline = time.monotonic() + LINGER_SECONDS
        return Action.LINGER

    def close(self) -> Action:
        """End the connection: finish (log) the request in progress, then close the socket,
        unless a pool thread has it (`lent`): the owning loop closes it when it comes back,
        so a descriptor number is never freed while its loop still files it."""
        if not self.closed:
            self.closed = True
            self._finish_response(aborted=True)
        if not self.lent and not self.released:
            self.released = True
            self.out.clear()
            self.parser = _SPENT_PARSER  # the buffers of a long head are freed with it
            try:
                self.transport.close()
            except OSError:
                pass
        return Action.CLOSE


_SPENT_PARSER = RequestParser()  # every closed connection's parser: holds nothing
_SPENT_PARSER.feed_eof()
