"""One connection's output: the send queue, sendfile(2), MSG_MORE, and blocking waits.

The queue holds what framing.frame() produced: bytes (or memoryviews of what is left of
them), FileBody regions sent with sendfile(2), then an optional body iterator pulled one
piece at a time (chunk-encoded when the response is chunked). On the loop thread a flush
stops when the socket is full and the loop waits for EPOLLOUT; on a pool thread it waits
with poll(2) on that one socket, at most `timeout` seconds without progress.
"""

from __future__ import annotations

import os
import select
from collections import deque
from collections.abc import Iterator

from prefork.errors import ApplicationAborted, ResponseLengthError
from prefork.http.framing import Output
from prefork.http.message import Body, FileBody
from prefork.http.parser import LAST_CHUNK, encode_chunk
from prefork.serve.transport import Transport

READ_CHUNK = 1 << 16  # bytes read per step when the transport cannot sendfile (TLS)
SENDFILE_CHUNK = 1 << 20  # bytes per sendfile(2) call: big enough to be cheap, fair to others
# Consecutive bytes items up to this many in all are joined into one write when the transport
# cannot cork (TLS): a head and a small body in one record and one syscall, not two. 16 KiB
# is a TLS record's largest plaintext.
JOIN_LIMIT = 1 << 14


def release(part: FileBody) -> None:
    """Close a region's descriptor if it owns it; forget it either way (idempotent)."""
    if part.fd >= 0:
        if part.owns:
            os.close(part.fd)
        part.fd = -1


def release_body(body: Body | None) -> None:
    """Release a body that will not be (fully) sent: its files, or its iterator's close()
    (PEP 3333 and generators alike). Idempotent for files; an iterator's close() must be."""
    if isinstance(body, FileBody):
        release(body)
    elif isinstance(body, list):
        for part in body:
            if isinstance(part, FileBody):
                release(part)
    elif body is not None and not isinstance(body, bytes):
        close = getattr(body, "close", None)
        if close is not None:
            close()


def wait_ready(fd: int, events: int, timeout: float) -> bool:
    """Block the calling (pool) thread until `fd` is ready for `events`; False on timeout."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def _write_events(transport: Transport) -> int:
    """What a blocked write waits for: the socket writable, or readable when the transport
    must read first (a TLS write during a handshake step: `inverted`)."""
    return select.POLLIN if transport.inverted else select.POLLOUT


def send_all(transport: Transport, data: bytes, timeout: float) -> None:
    """Write `data` whole from a pool thread (an interim 1xx response); raises OSError,
    TimeoutError after `timeout` seconds without progress."""
    view = memoryview(data)
    while view:
        try:
            view = view[transport.send(view):]
        except BlockingIOError:
            if not wait_ready(transport.fd, _write_events(transport), timeout):
                raise TimeoutError("timed out writing an interim response") from None


class SendQueue:
    """What remains to be sent of the current response."""

    __slots__ = ("body_sent", "chunked", "items", "length_fault", "piece", "stream",
                 "wire_sent")

    def __init__(self) -> None:
        self.items: deque[bytes | memoryview | FileBody] = deque()
        self.stream: Iterator[bytes] | None = None
        self.chunked = False
        self.body_sent = 0  # body bytes handed to the kernel (or queued bytes bodies)
        self.wire_sent = 0  # every byte of the response handed to the transport (%O)
        # Why a streamed body stopped at its declared Content-Length (framing.exactly): the
        # response is complete on the wire, but the connection must close after it.
        self.length_fault: str | None = None
        # What was read of the first FileBody (from its offset) and not yet taken by a
        # transport that cannot sendfile: a TLS write that could not finish is retried with
        # these same bytes (OpenSSL has already encrypted part of them), never re-read.
        self.piece: bytes | memoryview | None = None

    def __bool__(self) -> bool:
        return bool(self.items)

    def load(self, output: Output, already_sent: int = 0) -> None:
        """Queue a framed response (`already_sent`: bytes of it written before, for %O)."""
        self.wire_sent = already_sent
        release_body(output.unsent)
        self.chunked = output.chunked
        self.stream = output.stream
        self.length_fault = None
        self.piece = None
        self.body_sent = output.body_bytes
        self.items.extend(output.items)

    def flush(self, transport: Transport, timeout: float | None) -> bool:
        """Write queued output; True when everything is sent. `timeout` None: never block
        (False when the socket is full); else wait for the socket up to `timeout` seconds
        each time (TimeoutError). Raises OSError."""
        out = self.items
        while True:
            if not out and (self.stream is None or not self._pull_stream()):
                return True
            item = out[0]
            try:
                if isinstance(item, FileBody):
                    if item.length == 0:
                        release(item)
                        out.popleft()
                        continue
                    if transport.can_sendfile:
                        sent = transport.sendfile(item.fd, item.offset,
                                                  min(item.length, SENDFILE_CHUNK))
                    else:  # read and send in bounded pieces (memory flat for any size)
                        piece = self.piece
                        if piece is None:
                            piece = os.pread(item.fd, min(item.length, READ_CHUNK),
                                             item.offset)
                            self.piece = piece
                        sent = transport.send(piece, more=True) if piece else 0
                        self.piece = memoryview(piece)[sent:] if 0 < sent < len(piece) \
                            else None
                    if sent == 0:
                        raise OSError("file shrank while it was being sent")
                    item.offset += sent
                    item.length -= sent
                    self.body_sent += sent
                    self.wire_sent += sent
                    continue
                if len(out) > 1 and not transport.corks:
                    item = self._join_small(item)
                sent = transport.send(item, len(out) > 1)
                self.wire_sent += sent
            except BlockingIOError:
                if timeout is None:
                    return False
                if not wait_ready(transport.fd, _write_events(transport), timeout):
                    raise TimeoutError("timed out writing the response") from None
                continue
            if sent < len(item):
                out[0] = memoryview(item)[sent:]
            else:
                out.popleft()

    def _join_small(self, item: bytes | memoryview) -> bytes | memoryview:
        """The first item joined with the bytes items after it while they fit JOIN_LIMIT
        together (the queue's head becomes the joined item)."""
        out = self.items
        joined = [item]
        size = len(item)
        while len(out) > len(joined):
            nxt = out[len(joined)]
            if isinstance(nxt, FileBody) or size + len(nxt) > JOIN_LIMIT:
                break
            joined.append(nxt)
            size += len(nxt)
        if len(joined) == 1:
            return item
        for _ in joined:
            out.popleft()
        item = b"".join(joined)
        out.appendleft(item)
        return item

    def _pull_stream(self) -> bool:
        """Move the next piece of a streamed body into the queue; False once it is done."""
        try:
            piece = next(self.stream)  # type: ignore[arg-type]
        except StopIteration:
            self.stream = None
            if self.chunked:
                self.items.append(LAST_CHUNK)
                return True
            return False
        except (ResponseLengthError, ApplicationAborted) as exc:
            # The body cannot be completed (it disagrees with its length, or the application
            # failed after its first piece): no last chunk goes out, and the connection
            # closes after what was sent, so the client sees a truncated response.
            self.stream = None
            self.length_fault = str(exc)
            return False
        if piece:
            self.body_sent += len(piece)
            self.items.append(encode_chunk(piece) if self.chunked else piece)
        return True

    def clear(self) -> None:
        """Drop what is left, releasing open files and the body iterator."""
        for item in self.items:
            if isinstance(item, FileBody):
                release(item)
        self.items.clear()
        self.piece = None
        if self.stream is not None:
            close = getattr(self.stream, "close", None)
            if close:
                close()
            self.stream = None
