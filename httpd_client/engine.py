"""The load generator's hot path: one selector loop per process driving many connections.

How this works. Each request of the spec is serialised once into bytes (request.py). A
process owns `connections` non-blocking sockets registered with one selector. A connection
cycles: connect (non-blocking, + TLS handshake for https) → send the request bytes → read
the response → record latency and status → send the next request on the same socket
(keep-alive) or reconnect when the server closed it. The response reader is minimal but
follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; otherwise chunked, else
Content-Length, else everything until the server closes. Interim 1xx responses are skipped.

Latency is measured from the moment a request starts (including the connect when a new
connection is needed) to its response's last byte, with time.perf_counter().

A request that fails on a *reused* connection before any response byte arrived (the server
closed an idle keep-alive connection just as we sent) is retried once on a new connection,
as browsers and http.client do; every other failure is counted under its kind.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import ssl
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .wire import BadResponse, ChunkedReader, connect_kind, error_kind, parse_head

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
RECV_SIZE = 256 * 1024
SWEEP_INTERVAL = 0.1  # seconds between timeout / deadline / stop checks
PROGRESS_EVERY = 64  # publish the completed count every this many requests
EMPTY = memoryview(b"")

# Connection states. IDLE: retired, no more work. PENDING: waiting in Worker.ready for its
# next request (a failure never starts the next request itself, so failing connects cannot
# recurse).
IDLE, PENDING, CONNECTING, HANDSHAKE, SENDING, HEAD, BODY, CHUNKED, UNTIL_CLOSE = range(9)


@dataclass
class Work:
    """What one process does: which requests, over how many connections, for how long."""

    requests: list[bytes]  # serialised request per spec entry
    no_body: list[bool]  # HEAD: the response has no body whatever its headers say
    expected: list[frozenset[int]]  # empty: not checked
    labels: list[str]
    family: int
    sockaddr: tuple[Any, ...]
    connections: int
    first: int  # global sequence number of this process's first request
    count: int | None  # None: until the deadline
    deadline: float | None  # time.monotonic() value
    timeout: float
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    debug: bool = False


@dataclass
class WorkerResult:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0  # responses whose status the entry's "expect" does not allow
    bytes_received: int = 0
    bytes_sent: int = 0
    connects: int = 0
    server_closes: int = 0  # connections the server closed (Connection: close or EOF)
    retries: int = 0
    abandoned: int = 0  # in flight when the deadline or a stop came
    # per spec entry: [responses, errors, unexpected statuses, latency sum in seconds]
    per_entry: list[list[float]] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


class Conn:
    __slots__ = ("buf", "chunks", "close_after", "entry", "got", "no_body", "out",
                 "remaining", "retried", "reused", "seq", "sock", "state", "status", "t0",
                 "writing")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.state = IDLE
        self.seq = 0
        self.entry = 0
        self.t0 = 0.0
        self.out: memoryview = EMPTY
        self.writing = False  # registered for EVENT_WRITE too (a send is pending)
        self.buf = b""  # head bytes so far
        self.got = 0  # response bytes received for the current request
        self.remaining = 0
        self.chunks = ChunkedReader()
        self.status = 0
        self.no_body = False
        self.close_after = False
        self.reused = False
        self.retried = False


class Worker:
    def __init__(self, work: Work, publish: Callable[[int], None] | None = None) -> None:
        self.w = work
        self.publish = publish
        self.sel = selectors.DefaultSelector()
        self.res = WorkerResult(per_entry=[[0, 0, 0, 0.0] for _ in work.requests])
        self.next_seq = work.first
        self.end_seq = None if work.count is None else work.first + work.count
        self.done = 0
        self.active = 0
        self.stopping = False
        self.ready: list[Conn] = []
        self.recv_buf = bytearray(RECV_SIZE)
        self.recv_view = memoryview(self.recv_buf)

    # ------------------------------------------------------------------ driving

    def stop(self, *_args: object) -> None:
        """Ask the loop to finish (signal-safe: it only sets a flag)."""
        self.stopping = True

    def run(self) -> WorkerResult:
        res, w = self.res, self.w
        res.started = time.monotonic()
        conns = [Conn() for _ in range(w.connections)]
        self.active = len(conns)
        for conn in conns:
            self.next_request(conn)
        select = self.sel.select
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while self.active > 0:
            for key, mask in select(0 if self.ready else SWEEP_INTERVAL):
                conn = key.data
                if conn.sock is not key.fileobj:
                    continue  # stale: that request already ended and its socket is gone
                state = conn.state
                if state >= HEAD:
                    self.on_readable(conn)
                elif state == SENDING:
                    if mask & WRITE:
                        self.send(conn)
                    if mask & READ and conn.sock is key.fileobj and conn.state >= SENDING:
                        self.on_readable(conn)
                elif state == CONNECTING:
                    self.on_connected(conn)
                elif state == HANDSHAKE:
                    self.handshake(conn)
            if self.ready:
                ready, self.ready = self.ready, []
                for conn in ready:
                    self.next_request(conn)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SWEEP_INTERVAL
                self.sweep(conns, now)
        res.finished = time.monotonic()
        if self.publish is not None:
            self.publish(self.done)
        self.sel.close()
        return res

    def sweep(self, conns: list[Conn], now: float) -> None:
        w = self.w
        if self.stopping or (w.deadline is not None and now >= w.deadline):
            self.stopping = True
            for conn in conns:
                if conn.state > PENDING:  # PENDING ones retire when the ready list drains
                    self.res.abandoned += 1
                    self.retire(conn)
            return
        limit = time.perf_counter() - w.timeout
        for conn in conns:
            if conn.state > PENDING and conn.t0 < limit:
                self.fail(conn, "connect_timeout" if conn.state <= HANDSHAKE else "timeout")
        if self.publish is not None:
            self.publish(self.done)

    def next_request(self, conn: Conn) -> None:
        """Start the next request on `conn`, or retire it when there is no more work."""
        if self.stopping or (self.end_seq is not None and self.next_seq >= self.end_seq):
            self.retire(conn)
            return
        seq = self.next_seq
        self.next_seq = seq + 1
        conn.seq = seq
        conn.entry = seq % len(self.w.requests)
        conn.retried = False
        self.begin(conn)

    def begin(self, conn: Conn) -> None:
        w = self.w
        conn.t0 = time.perf_counter()
        conn.out = memoryview(w.requests[conn.entry])
        conn.no_body = w.no_body[conn.entry]
        conn.buf = b""
        conn.got = 0
        if conn.sock is None:
            self.connect(conn)
        else:
            conn.reused = True
            conn.state = SENDING
            self.send(conn)

    def retire(self, conn: Conn) -> None:
        self.close(conn)
        conn.state = IDLE
        self.active -= 1

    def close(self, conn: Conn) -> None:
        sock = conn.sock
        if sock is not None:
            conn.sock = None
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    # ------------------------------------------------------------------ connecting

    def connect(self, conn: Conn) -> None:
        w = self.w
        conn.reused = False
        try:
            sock = socket.socket(w.family, socket.SOCK_STREAM)
        except OSError as exc:
            self.fail(conn, error_kind(exc))
            return
        sock.setblocking(False)
        if w.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.res.connects += 1
        conn.sock = sock
        conn.state = CONNECTING
        err = sock.connect_ex(w.sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self.fail(conn, connect_kind(err))
            return
        conn.writing = False
        self.sel.register(sock, WRITE, conn)

    def on_connected(self, conn: Conn) -> None:
        sock = conn.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(conn, connect_kind(err))
            return
        if self.w.ssl_context is not None:
            self.sel.unregister(sock)  # the TLS wrapper is a new object on the same fd
            try:
                sock = conn.sock = self.w.ssl_context.wrap_socket(
                    sock, server_hostname=self.w.server_hostname,
                    do_handshake_on_connect=False)
            except (ssl.SSLError, OSError):
                conn.sock = None
                sock.close()
                self.fail(conn, "tls")
                return
            self.sel.register(sock, READ, conn)
            conn.state = HANDSHAKE
            self.handshake(conn)
            return
        conn.state = SENDING
        self.sel.modify(sock, READ, conn)
        self.send(conn)

    def handshake(self, conn: Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.modify(sock, READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.sel.modify(sock, WRITE, conn)
            return
        except (ssl.SSLError, OSError) as exc:
            self.fail(conn, "tls" if isinstance(exc, ssl.SSLError) else error_kind(exc))
            return
        conn.state = SENDING
        self.sel.modify(sock, READ, conn)
        self.send(conn)

    # ------------------------------------------------------------------ sending

    def send(self, conn: Conn) -> None:
        sock = conn.sock
        assert sock is not None
        out = conn.out
        try:
            sent = sock.send(out)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as exc:
            self.fail(conn, error_kind(exc))
            return
        self.res.bytes_sent += sent
        if sent == len(out):
            conn.out = EMPTY
            conn.state = HEAD
            if conn.writing:
                conn.writing = False
                self.sel.modify(sock, READ, conn)
            return
        conn.out = out[sent:]
        if not conn.writing:
            conn.writing = True
            self.sel.modify(sock, READ | WRITE, conn)

    # ------------------------------------------------------------------ receiving

    def on_readable(self, conn: Conn) -> None:
        sock = conn.sock
        assert sock is not None
        view = self.recv_view
        while True:
            try:
                n = sock.recv_into(self.recv_buf)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLError:
                self.fail(conn, "tls")
                return
            except OSError as exc:
                self.fail(conn, error_kind(exc))
                return
            if n == 0:
                self.on_eof(conn)
                return
            self.res.bytes_received += n
            conn.got += n
            state = conn.state
            try:
                end = self.feed(conn, b"" if state in (BODY, UNTIL_CLOSE)
                                else bytes(view[:n]), n)
            except BadResponse:
                self.fail(conn, "bad_response")
                return
            if end:
                self.complete(conn)
                return
            # TLS may hold decrypted bytes the selector cannot see; a plain socket gets
            # another readiness event for whatever is left.
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return

    def feed(self, conn: Conn, data: bytes, n: int) -> bool:
        """Consume `n` received bytes; True when the response is complete.

        For BODY and UNTIL_CLOSE only the count matters, so `data` is empty there."""
        state = conn.state
        if state == BODY:
            conn.remaining -= n
            if conn.remaining < 0:
                raise BadResponse("more bytes than Content-Length")
            return conn.remaining == 0
        if state == UNTIL_CLOSE:
            return False
        if state == CHUNKED:
            return conn.chunks.feed(data)
        if state == SENDING:  # the server answered before reading all of the body
            conn.out = EMPTY
            conn.state = HEAD
            if conn.writing:
                conn.writing = False
                assert conn.sock is not None  # we are reading from it
                self.sel.modify(conn.sock, READ, conn)
        buf = conn.buf + data if conn.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    raise BadResponse("response head too long")
                conn.buf = buf
                return False
            status, length, chunked, keep = parse_head(buf, end)
            rest = buf[end + 4:]
            if 100 <= status < 200 and status != 101:
                buf = rest  # interim response: the real one follows
                continue
            break
        conn.buf = b""
        conn.status = status
        conn.close_after = not keep
        if conn.no_body or status in (204, 304) or status < 200:
            if rest:
                raise BadResponse("bytes after a response without a body")
            return True
        if chunked:
            conn.state = CHUNKED
            conn.chunks = ChunkedReader()
            return conn.chunks.feed(rest)
        if length >= 0:
            conn.remaining = length - len(rest)
            if conn.remaining < 0:
                raise BadResponse("more bytes than Content-Length")
            if conn.remaining == 0:
                return True
            conn.state = BODY
            return False
        conn.state = UNTIL_CLOSE  # RFC 9112 §6.3 rule 8: the body ends when the server closes
        conn.close_after = True
        return False

    def on_eof(self, conn: Conn) -> None:
        if conn.state == UNTIL_CLOSE:
            self.res.server_closes += 1
            self.complete(conn)
        elif conn.got == 0 and conn.reused and not conn.retried:
            self.retry(conn)
        else:
            self.fail(conn, "closed")

    def retry(self, conn: Conn) -> None:
        self.res.retries += 1
        self.close(conn)
        conn.retried = True
        self.begin(conn)

    # ------------------------------------------------------------------ outcomes

    def complete(self, conn: Conn) -> None:
        latency = time.perf_counter() - conn.t0
        res, entry, status = self.res, conn.entry, conn.status
        res.latencies.append(latency)
        res.statuses[status] = res.statuses.get(status, 0) + 1
        counts = res.per_entry[entry]
        counts[0] += 1
        counts[3] += latency
        expected = self.w.expected[entry]
        if expected and status not in expected:
            res.unexpected += 1
            counts[2] += 1
        if self.w.debug:
            _debug(f"{self.w.labels[entry]} -> {status} {latency * 1000:.2f} ms "
                   f"{conn.got} bytes\n")
        self.count_done()
        if conn.close_after and conn.state != UNTIL_CLOSE:
            res.server_closes += 1
        if conn.close_after:
            self.close(conn)
        conn.state = SENDING  # reading is over; next_request sets the real state
        self.next_request(conn)

    def fail(self, conn: Conn, kind: str) -> None:
        if kind in ("reset", "broken_pipe") and conn.got == 0 and conn.reused \
                and not conn.retried:
            self.retry(conn)
            return
        res = self.res
        res.errors[kind] = res.errors.get(kind, 0) + 1
        res.per_entry[conn.entry][1] += 1
        if self.w.debug:
            _debug(f"{self.w.labels[conn.entry]} -> error {kind} "
                   f"{(time.perf_counter() - conn.t0) * 1000:.2f} ms\n")
        self.count_done()
        self.close(conn)
        conn.state = PENDING
        self.ready.append(conn)

    def count_done(self) -> None:
        self.done += 1
        if self.publish is not None and self.done % PROGRESS_EVERY == 0:
            self.publish(self.done)


def _debug(line: str) -> None:
    try:
        os.write(2, f"[{os.getpid()}] {line}".encode())  # one write: lines never interleave
    except OSError:
        pass


def install_stop(worker: Worker) -> None:
    """In a child process: SIGTERM finishes the run early (the report still comes back);
    SIGINT is left to the parent, which forwards it as SIGTERM."""
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
