"""Hold N idle keep-alive connections to 127.0.0.1:PORT (run as a child of bench/run.py).

Each connection sends one GET and reads the whole response, then stays open and idle (unless
the response said the connection ends: then it closes its side, as a client would). With
--tls each connection first makes a full TLS handshake (non-blocking, no session reuse, the
certificate not verified: the bench's is a throwaway self-signed one), then does the same
over TLS, reading whatever post-handshake messages (TLS 1.3 session tickets) come. Once
every connection has been answered (or the deadline passed) it prints one JSON line
{"ready": answered, "failed": not_answered} and then serves commands on stdin:
  check  -> {"open": n}  connections that were answered and are still open (not closed by the
            server), checked with a non-blocking MSG_PEEK
  quit (or end of input) -> close everything and exit.
It raises its own RLIMIT_NOFILE soft limit to the hard limit.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import selectors
import socket
import ssl
import sys
import time


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Conn:
    __slots__ = ("buf", "closed", "done", "keep", "need", "sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock  # an ssl.SSLSocket once wrapped (--tls)
        self.sent = False  # the request went out
        self.buf = b""
        self.need = -1  # total bytes of head + body once the head is parsed
        self.done = False
        self.keep = True  # False: the response said the connection ends (we close our side)
        self.closed = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            lines = self.buf[:end].split(b"\r\n")
            self.keep = lines[0].startswith(b"HTTP/1.1")
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    self.keep = value != b"close" and (self.keep or value == b"keep-alive")
            self.need = end + 4 + length
        if len(self.buf) >= self.need:
            self.done = True
            self.buf = b""


def _connect_more(port: int, sel: selectors.BaseSelector, conns: list[Conn], count: int,
                  pending: int, batch: int) -> int:
    """Start non-blocking connects until `count` connections exist or `batch` are under
    way; each waits for writability (the connect's end). Returns how many are under way."""
    while len(conns) < count and pending < batch:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        c = Conn(s)
        conns.append(c)
        sel.register(s, selectors.EVENT_WRITE, c)
        pending += 1
    return pending


def open_all(port: int, path: str, count: int, deadline: float, batch: int) -> list[Conn]:
    """Connect, request and read one response on count connections, batch at a time."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    conns: list[Conn] = []
    pending = 0
    while time.monotonic() < deadline and (len(conns) < count or pending):
        pending = _connect_more(port, sel, conns, count, pending, batch)
        for key, events in sel.select(timeout=0.2):
            c = key.data
            if events & selectors.EVENT_WRITE:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    sel.unregister(c.sock)
                    pending -= 1
                    continue
                try:
                    c.sock.send(request)
                except OSError:
                    sel.unregister(c.sock)
                    pending -= 1
                    continue
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                c.feed(data)
            if c.done or not data:
                sel.unregister(c.sock)
                pending -= 1
            if c.done and not c.keep:  # as a client does when told the connection ends
                c.sock.close()
                c.closed = True
    sel.close()
    return conns


def _tls_step(c: Conn, request: bytes) -> int | None:
    """Advance one TLS connection as far as it goes without blocking: handshake, request,
    response. Returns the readiness it waits for next, None when finished (answered, or
    failed: then c.done stays False)."""
    tls = c.sock
    assert isinstance(tls, ssl.SSLSocket)
    try:
        if not c.sent:
            tls.do_handshake()
            tls.sendall(request)  # a few dozen bytes: one record, fits a fresh socket
            c.sent = True
        while True:
            data = tls.recv(65536)
            if not data:
                return None
            c.feed(data)
            if c.done:
                return None
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    except (ssl.SSLError, OSError):
        return None


def open_all_tls(port: int, path: str, count: int, deadline: float, batch: int) -> list[Conn]:
    """As open_all, each connection over TLS with a full handshake (no session reuse)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sel = selectors.DefaultSelector()
    conns: list[Conn] = []
    pending = 0
    while time.monotonic() < deadline and (len(conns) < count or pending):
        pending = _connect_more(port, sel, conns, count, pending, batch)
        for key, _events in sel.select(timeout=0.2):
            c = key.data
            if not isinstance(c.sock, ssl.SSLSocket):  # the TCP connect finished
                sel.unregister(c.sock)
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    pending -= 1
                    continue
                c.sock = context.wrap_socket(c.sock, do_handshake_on_connect=False)
                sel.register(c.sock, selectors.EVENT_WRITE, c)
            wait = _tls_step(c, request)
            if wait is None:
                sel.unregister(c.sock)
                pending -= 1
                if c.done and not c.keep:
                    c.sock.close()
                    c.closed = True
            else:
                sel.modify(c.sock, wait, c)
    sel.close()
    return conns


def still_open_tls(conns: list[Conn]) -> int:
    """Answered TLS connections the server has not closed: not readable, or readable with
    nothing but a partial record (a close_notify, an EOF or an error means closed)."""
    n = 0
    for c in conns:
        if not c.done or c.closed:
            continue
        poller = select.poll()
        poller.register(c.sock.fileno(), select.POLLIN)
        if not poller.poll(0):
            n += 1
            continue
        try:
            n += 1 if c.sock.recv(1) else 0
        except ssl.SSLWantReadError:
            n += 1
        except (ssl.SSLError, OSError):
            pass
    return n


def still_open(conns: list[Conn]) -> int:
    n = 0
    for c in conns:
        if not c.done or c.closed:
            continue
        try:
            data = c.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            n += 1 if data else 0  # b"": the server closed it
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/1k.bin")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--tls", action="store_true",
                    help="TLS with a full handshake per connection, certificate not verified")
    a = ap.parse_args()
    raise_nofile()
    opener = open_all_tls if a.tls else open_all
    conns = opener(a.port, a.path, a.count, time.monotonic() + a.timeout, a.batch)
    ready = sum(c.done for c in conns)
    print(json.dumps({"ready": ready, "failed": a.count - ready}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            count = still_open_tls(conns) if a.tls else still_open(conns)
            print(json.dumps({"open": count}), flush=True)
        elif cmd == "quit":
            break
    for c in conns:
        if not c.closed:
            c.sock.close()


if __name__ == "__main__":
    main()
