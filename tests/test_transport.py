"""The transport seam: the send queue writes through a Transport only, and a transport that
cannot sendfile (TLS) gets file regions read and sent in bounded pieces."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from prefork.http.framing import frame
from prefork.http.message import FileBody, Response
from prefork.serve.output import READ_CHUNK, SendQueue
from prefork.serve.transport import PlainTransport


class CountingTransport(PlainTransport):
    """A plain transport that refuses sendfile and records the largest send."""

    __slots__ = ("largest",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.can_sendfile = False
        self.largest = 0

    def send(self, data: bytes | memoryview, more: bool = False) -> int:
        self.largest = max(self.largest, len(data))
        return super().send(data, more)


def test_a_file_region_without_sendfile_goes_out_in_bounded_pieces(tmp_path: Path) -> None:
    content = os.urandom(3 << 20)
    (tmp_path / "big").write_bytes(content)
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    ours, theirs = socket.socketpair()
    received = bytearray()

    def read_all() -> None:
        while chunk := theirs.recv(1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    try:
        ours.setblocking(False)
        transport = CountingTransport(ours)
        queue = SendQueue()
        queue.load(frame(Response(200, [], FileBody(fd, 100, len(content) - 100)), "GET",
                         "HTTP/1.1", True))
        assert queue.flush(transport, timeout=10)
        assert queue.body_sent == len(content) - 100
        queue.clear()
    finally:
        ours.close()
        reader.join(10)
        theirs.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == content[100:]
    assert transport.largest <= READ_CHUNK  # never the whole file in memory
    try:
        os.fstat(fd)
        raise AssertionError("the region's descriptor was not released")
    except OSError:
        pass


class MemoryTLSTransport:
    """What the send queue asks of a transport like TLS: no sendfile, no corking (each
    write is a record). Subclasses say what send() does with the bytes."""

    can_sendfile = False
    corks = False
    inverted = False
    layered = True
    scheme = "https"
    fd = -1


class StallingTransport(MemoryTLSTransport):
    """A transport like TLS whose every other write cannot finish yet, as OpenSSL's
    want-write; the others take at most `take` bytes. Writes to memory."""

    def __init__(self, take: int) -> None:
        self.take = take
        self.calls = 0
        self.received = bytearray()
        self.blocked: bytes | memoryview | None = None
        self.retried_with_same = 0

    def send(self, data: bytes | memoryview, more: bool = False) -> int:
        self.calls += 1
        if self.blocked is not None:
            # OpenSSL must be handed the same bytes again after a want-write.
            assert bytes(data) == bytes(self.blocked)
            self.retried_with_same += data is self.blocked
            self.blocked = None
        elif self.calls % 2:
            self.blocked = data
            raise BlockingIOError
        sent = min(len(data), self.take)
        self.received += data[:sent]
        return sent


def test_a_file_piece_a_write_could_not_take_is_retried_not_read_again(tmp_path: Path) -> None:
    content = os.urandom(READ_CHUNK * 3 + 123)
    (tmp_path / "big").write_bytes(content)
    for take in (READ_CHUNK, 5000):  # whole pieces (TLS), and partial writes
        fd = os.open(tmp_path / "big", os.O_RDONLY)
        transport = StallingTransport(take)
        queue = SendQueue()
        queue.load(frame(Response(200, [], FileBody(fd, 0, len(content))), "GET",
                         "HTTP/1.1", True))
        for _ in range(10_000):
            if queue.flush(transport, timeout=None):  # type: ignore[arg-type]
                break
        else:
            raise AssertionError("the response never finished")
        _, _, body = bytes(transport.received).partition(b"\r\n\r\n")
        assert body == content and queue.body_sent == len(content)
        assert transport.retried_with_same > 3  # the file pieces: the same object, no pread
        assert queue.piece is None


class RecordingTransport(MemoryTLSTransport):
    """A transport that cannot cork (TLS: each write is a record); records every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def send(self, data: bytes | memoryview, more: bool = False) -> int:
        self.writes.append(bytes(data))
        return len(data)


def test_small_pieces_go_out_in_one_write_when_the_transport_cannot_cork() -> None:
    small = [b"hello ", b"world"]
    big = [b"x" * 10_000, b"y" * 10_000]  # together over a TLS record's 16 KiB
    for body, writes in ((small, 1), (big, 2)):
        transport = RecordingTransport()
        queue = SendQueue()
        queue.load(frame(Response(200, [], body), "GET", "HTTP/1.1", True))
        assert queue.flush(transport, timeout=None)  # type: ignore[arg-type]
        assert len(transport.writes) == writes
        _, _, sent = b"".join(transport.writes).partition(b"\r\n\r\n")
        assert sent == b"".join(body)
