"""TLS over a connection's non-blocking socket: the TLSTransport, driven by the event loop.

Why `wrap_socket(do_handshake_on_connect=False)` rather than MemoryBIOs (asyncio's sslproto):
with the socket handed to OpenSSL, every record is read from and written to the descriptor
by C code, with no Python copy of the ciphertext in between, and OpenSSL's own "want read" /
"want write" say exactly which readiness of the descriptor it waits for. A BIO pair would buy
independence from the socket that this server does not need (one socket, one loop) at the
cost of two copies and a Python round trip per record.

Readiness. TLS decouples the two directions: a read may need the socket writable (OpenSSL
must send a handshake flight or a post-handshake message first) and a write may need it
readable. The transport raises BlockingIOError as any transport does and sets `inverted`
when the wait is for the other direction; the loop registers EPOLLOUT for a read (EPOLLIN
for a write) while it is set, and the pool threads poll the same way (serve/body.py,
serve/output.py). Decrypted bytes OpenSSL already holds are invisible to epoll: `recv`
returns what is buffered up to its size, and `pending()` tells the loop to read again before
it waits (serve/loop.py, EventLoop._apply).

The handshake runs inside the first `recv` (or `send`): each call advances it as far as the
socket allows. The connection sees only BlockingIOError until the handshake is done, so its
timers hold: a handshake is bounded by the header timeout the loop sets at accept.

Before the handshake the first byte is peeked: a TLS handshake record starts with 0x16; an
ASCII letter is a plain-HTTP request sent to the TLS port, answered with nginx's
`400 The plain HTTP request was sent to HTTPS port` and closed (it is not a request the
server parsed: no access-log line, an info line in the error log); anything else is garbage
and the connection is closed without a word. Handshake failures and alerts are logged at
info with the client and OpenSSL's reason, at most one line per reason per LOG_INTERVAL.

The hot calls skip ssl.py's wrappers. SSLSocket.recv/send/pending/do_handshake are Python
layers over its `_sslobj` (CPython's `_ssl._SSLSocket`, which holds OpenSSL's SSL*): each
checks closed-ness and flags on every call (recv goes recv -> read -> _sslobj.read), and
do_handshake resets the socket's timeout with an ioctl in a `finally` every time it is called.
The transport calls the object itself once the SSLSocket exists (`ssl_io`; on a Python without
`_sslobj` it is the SSLSocket, whose read/write/pending/do_handshake take the same arguments).
Its `read` reports a peer that closed TCP without close_notify as SSLEOFError, which the
SSLSocket wrapper turned into b"" (suppress_ragged_eofs): recv does the same.

`can_sendfile` is False: file bodies are read and encrypted in bounded pieces
(serve/output.py). Kernel TLS needs ssl.OP_ENABLE_KTLS (Python 3.12) and SSL_sendfile, which
Python's ssl module does not expose: `ktls_engaged()` says whether it engaged (never, here).
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol

from prefork.log import ErrorLog
from prefork.serve.connection import error_page
from prefork.serve.tls_context import TLSContexts

HANDSHAKE_RECORD = 0x16  # ContentType handshake (RFC 8446 §5.1)
LOG_INTERVAL = 10.0  # seconds between info lines about one kind of handshake failure
DRAIN_LIMIT = 65536  # bytes of a plain-HTTP request read before its 400 goes out
_PLAIN_HTTP_DETAIL = "The plain HTTP request was sent to HTTPS port"
_PLAIN_HTTP_BODY = error_page(400, "Bad Request", _PLAIN_HTTP_DETAIL)
PLAIN_HTTP_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_PLAIN_HTTP_BODY)
) + _PLAIN_HTTP_BODY


def ktls_engaged() -> bool:
    """Whether kernel TLS carries this server's records: never yet (see the module comment;
    Python 3.12's OP_ENABLE_KTLS would move records to the kernel, but file bodies would
    still pass through Python without SSL_sendfile)."""
    return False


class _SSLIO(Protocol):
    """What the transport calls for records: `_ssl._SSLSocket`, or an SSLSocket."""

    def do_handshake(self) -> None: ...

    def read(self, size: int) -> bytes: ...

    def write(self, data: bytes | memoryview) -> int: ...

    def pending(self) -> int: ...


@dataclass
class TLSServer:
    """What every TLS connection of a worker shares: the contexts and the error log."""

    contexts: TLSContexts
    error_log: ErrorLog

    def log_failure(self, kind: str, client: tuple[str, int], message: str) -> None:
        """An info line about a handshake that failed, bounded per `kind` in rate."""
        held = self.error_log.hold(f"tls:{kind}", LOG_INTERVAL)
        if held is None:
            return
        more = f" ({held} more since the last such line)" if held else ""
        self.error_log.info(f"TLS: {message}{more}", client)


class TLSTransport:
    """One TLS connection over a non-blocking socket (see the module comment)."""

    __slots__ = ("client", "established", "fd", "inverted", "raw", "server", "ssl_io", "tls")

    can_sendfile = False
    corks = False  # an SSLSocket takes no MSG_MORE: the send queue joins small pieces
    layered = True  # its readiness is not the socket's: the loop asks after every event
    scheme = "https"

    def __init__(self, sock: socket.socket, server: TLSServer, client: tuple[str, int]) -> None:
        self.raw: socket.socket | None = sock  # until the first byte says it is TLS
        self.tls: ssl.SSLSocket | None = None
        # The object the record calls go to (see the module comment): the SSLSocket's
        # _sslobj while TLS carries the connection, None before wrap_socket and after unwrap.
        self.ssl_io: _SSLIO | None = None
        self.fd = sock.fileno()
        self.server = server
        self.client = client
        self.established = False
        self.inverted = False  # the last BlockingIOError waits for the other readiness

    # ------------------------------------------------------------------ the handshake

    def _blocked(self, exc: ssl.SSLWantReadError | ssl.SSLWantWriteError, writing: bool
                 ) -> BlockingIOError:
        """What a caller that was `writing` (else reading) must wait for: `inverted` when
        OpenSSL wants the other direction (a read that needs to write, or the reverse)."""
        self.inverted = isinstance(exc, ssl.SSLWantWriteError) != writing
        return BlockingIOError()

    def _handshake(self, writing: bool) -> bool:
        """Advance the handshake on behalf of a recv (or a send, `writing`); True once done,
        False at the peer's end before it began. Raises BlockingIOError (setting
        `inverted` for that caller), ConnectionAbortedError when it fails."""
        if self.tls is None:
            raw = self.raw
            assert raw is not None
            first = raw.recv(1, socket.MSG_PEEK)  # BlockingIOError propagates
            if not first:
                return False
            if first[0] != HANDSHAKE_RECORD:
                self._not_tls(raw, first[0])
            self.tls = self.server.contexts.default.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False)
            self.ssl_io = getattr(self.tls, "_sslobj", None) or self.tls
            self.raw = None  # wrap_socket detached it: the SSLSocket owns the descriptor
        ssl_io = self.ssl_io
        assert ssl_io is not None
        try:
            ssl_io.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            raise self._blocked(exc, writing) from None
        except ssl.SSLError as exc:
            reason = exc.reason or type(exc).__name__
            self.server.log_failure(reason, self.client, f"handshake failed: {reason}"
                                    f" ({exc.library or 'ssl'})")
            raise ConnectionAbortedError(f"TLS handshake failed: {reason}") from None
        except OSError as exc:
            raise ConnectionAbortedError(f"TLS handshake: {exc}") from None
        self.established = True
        self.inverted = False
        return True

    def _not_tls(self, raw: socket.socket, first: int) -> None:
        """The client did not start a handshake: answer a plain-HTTP request with nginx's
        400, drop anything else; raises ConnectionAbortedError either way."""
        if chr(first).isascii() and chr(first).isalpha():
            try:
                raw.recv(DRAIN_LIMIT)  # read first: closing with unread input resets
                raw.send(PLAIN_HTTP_RESPONSE)
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.server.log_failure("plain-http", self.client, "a plain HTTP request was "
                                    "sent to a TLS port: answered 400")
            raise ConnectionAbortedError("plain HTTP on a TLS port")
        self.server.log_failure("garbage", self.client, f"not a TLS handshake (first byte "
                                f"0x{first:02x}): closed")
        raise ConnectionAbortedError("not a TLS handshake")

    # ------------------------------------------------------------------ the transport

    def recv(self, size: int) -> bytes:
        ssl_io = self.ssl_io
        if not self.established:
            if not self._handshake(writing=False):
                return b""
            ssl_io = self.ssl_io
        if ssl_io is None:  # after close_notify went out: raw bytes, which lingering discards
            assert self.tls is not None
            return self.tls.recv(size)
        try:
            data = ssl_io.read(size)
            # Decrypted bytes OpenSSL holds are invisible to epoll: hand them over now.
            while data and len(data) < size and ssl_io.pending():
                data += ssl_io.read(min(ssl_io.pending(), size - len(data)))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            raise self._blocked(exc, writing=False) from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # the peer's close_notify, or its end of TCP without one
        except ssl.SSLError as exc:
            reason = exc.reason or type(exc).__name__
            self.server.log_failure(reason, self.client, f"connection failed: {reason}")
            raise ConnectionResetError(f"TLS: {reason}") from None
        self.inverted = False
        return data

    def send(self, data: bytes | memoryview, more: bool = False) -> int:
        # `more` is not passed on: an SSLSocket takes no flags. Records are written whole.
        if not self.established and not self._handshake(writing=True):
            raise BrokenPipeError("the client left during the TLS handshake")
        ssl_io = self.ssl_io
        if ssl_io is None:
            raise BrokenPipeError("TLS: the connection's close_notify was sent")
        try:
            sent = ssl_io.write(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            raise self._blocked(exc, writing=True) from None
        except ssl.SSLError as exc:
            raise BrokenPipeError(f"TLS: {exc.reason or exc}") from None
        self.inverted = False
        return sent

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Not used (can_sendfile is False); kept for the protocol: read and send."""
        piece = os.pread(fd, min(count, 1 << 16), offset)
        return self.send(piece) if piece else 0

    def pending(self) -> int:
        ssl_io = self.ssl_io
        return ssl_io.pending() if ssl_io is not None and self.established else 0

    def shutdown_write(self) -> None:
        """Send close_notify, then shut the socket's write side."""
        tls = self.tls
        if tls is None:
            if self.raw is not None:
                self.raw.shutdown(socket.SHUT_WR)
            return
        self.ssl_io = None  # unwrap() ends the SSL object's use: reads are raw from here
        if self.established:
            try:
                tls.unwrap()  # sends close_notify; waiting for the peer's would block
            except (ssl.SSLError, OSError, ValueError):
                pass
        tls.shutdown(socket.SHUT_WR)  # from here on reads are raw: discarded by lingering

    def close(self) -> None:
        if self.tls is not None:
            self.tls.close()
        elif self.raw is not None:
            self.raw.close()

    # ------------------------------------------------------------------ for the access log

    def version(self) -> str | None:
        """The negotiated protocol (TLSv1.3...), once the handshake is done."""
        return self.tls.version() if self.tls is not None and self.established else None

    def cipher(self) -> str | None:
        found = self.tls.cipher() if self.tls is not None and self.established else None
        return found[0] if found else None
