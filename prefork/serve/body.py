"""A request body as a handler reads it, from a blocking-pool thread.

The body is pulled from the connection's parser on demand, so it never sits whole in
memory. `100 Continue` is sent lazily, on the first read: by then the request has passed
every check the handler makes first (limits, authentication, method), as RFC 9110 §10.1.1
intends. Slow clients are bounded like Apache's mod_reqtimeout `body=20,MinRate=500`: at most
`body_timeout` seconds of silence, and an overall deadline that starts at `body_timeout` and
moves one second later per `min_rate` bytes received. Both clocks are monotonic and start
when the head was complete (Connection.head_done), not at the first read: time spent waiting
for the body to start or for a pool thread counts.

discard() reads what a handler left unread and drops it, so the connection stays usable.
"""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING

from prefork.errors import ClientDisconnected, RequestTimeout
from prefork.http.parser import BodyChunk, EndOfMessage
from prefork.serve.output import send_all, wait_ready

if TYPE_CHECKING:
    from prefork.serve.connection import Connection

RECV_SIZE = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyReader:
    """Implements message.BodyReader for one request of `conn`."""

    def __init__(self, conn: Connection, body_timeout: float, min_rate: int) -> None:
        self.conn = conn
        self.body_timeout = body_timeout
        self.min_rate = min_rate
        self.pending = bytearray()
        self.done = False
        self.received = 0  # bytes received from the socket (framing included)
        self.delivered = 0  # body bytes the parser produced
        self.started = conn.head_done or time.monotonic()
        self.first_read = True

    def read(self, size: int = -1) -> bytes:
        """Return up to `size` body bytes (all when -1); b"" at the end.

        Raises ContentTooLarge / BadRequest (from the parser), RequestTimeout for a client
        too slow, ClientDisconnected when it goes away.
        """
        conn = self.conn
        if self.first_read:
            self.first_read = False
            if conn.head is not None and conn.head.expect_continue and not conn.continue_sent:
                conn.continue_sent = True
                try:
                    send_all(conn.transport, CONTINUE, conn.ctx.timeout)
                except OSError as exc:
                    raise ClientDisconnected(str(exc)) from None
        while not self.done and (size < 0 or len(self.pending) < size):
            event = conn.parser.next_event()
            if isinstance(event, BodyChunk):
                self.pending += event.data
                self.delivered += len(event.data)
            elif isinstance(event, EndOfMessage):
                self.done = True
                conn.message_complete = True
            else:
                self._receive()
        if size < 0 or size >= len(self.pending):
            data = bytes(self.pending)
            self.pending.clear()
            return data
        data = bytes(self.pending[:size])
        del self.pending[:size]
        return data

    def discard(self, limit: int) -> bool:
        """Read the rest of the body and drop it, stopping once more than `limit` body bytes
        came in all; True when the body was read to its end. Raises as read() does."""
        while not self.done and self.delivered <= limit:
            self.pending.clear()
            self.read(RECV_SIZE)
        self.pending.clear()
        return self.done

    def _receive(self) -> None:
        conn = self.conn
        while True:
            try:
                data = conn.transport.recv(RECV_SIZE)
            except BlockingIOError:
                wait = self.body_timeout
                if self.min_rate:
                    deadline = self.started + self.body_timeout + self.received / self.min_rate
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise RequestTimeout("the client sent its request body too slowly") \
                            from None
                # A TLS read may wait for the socket to take a record first (inverted).
                events = select.POLLOUT if conn.transport.inverted else select.POLLIN
                if not wait_ready(conn.fd, events, wait):
                    raise RequestTimeout("timed out reading the request body") from None
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from None
            if not data:
                conn.parser.feed_eof()
            else:
                self.received += len(data)
                conn.parser.feed(data)
            return
