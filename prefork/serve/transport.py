"""The transport seam: how a connection's bytes reach the socket.

A connection reads and writes only through a Transport — recv, send, sendfile, shutdown of
the write side, close — never through the socket itself, so another transport (TLS over the
same non-blocking socket) slots in without touching the connection's state machine, the
send queue or the body reader.

The contract a transport keeps: `recv` and `send` raise BlockingIOError when they cannot go
on now (the caller waits for the descriptor's readiness: EPOLLIN/POLLIN for recv, EPOLLOUT/
POLLOUT for send), OSError when the connection is gone; `recv` returns b"" at the peer's end.
`pending()` counts bytes the transport holds already decoded, which the descriptor's
readiness cannot show (TLS records read whole); the plain transport holds none. `inverted`:
the last BlockingIOError waits for the other readiness (a TLS read that must write first);
`layered`: the transport has state of its own beyond the socket's, so the loop asks it after
every event (never for the plain transport). `scheme` is what requests on it were sent with.
A transport that cannot `sendfile` says so (`can_sendfile`), and the send queue reads the
file in bounded pieces instead. `corks`: the transport honours `more` (MSG_MORE: the kernel
holds a small write back for what follows); one that does not (TLS: every write is a record
and a syscall of its own) gets consecutive small pieces joined by the send queue.
`version()` and `cipher()` name the TLS session (None when plain), for the access log.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol


class Transport(Protocol):
    """One connection's byte stream (see the module comment)."""

    fd: int
    can_sendfile: bool
    corks: bool
    inverted: bool
    layered: bool
    scheme: str

    def recv(self, size: int) -> bytes: ...

    def send(self, data: bytes | memoryview, more: bool = False) -> int:
        """Send what fits; `more`: further data follows at once (MSG_MORE, a hint)."""
        ...

    def sendfile(self, fd: int, offset: int, count: int) -> int: ...

    def pending(self) -> int: ...

    def shutdown_write(self) -> None: ...

    def close(self) -> None: ...

    def version(self) -> str | None:
        """The TLS protocol in use (TLSv1.3...), None on a plain connection."""
        ...

    def cipher(self) -> str | None:
        """The TLS cipher suite in use (OpenSSL's name), None on a plain connection."""
        ...


class PlainTransport:
    """TCP (or a Unix socket) as it is: the socket's own calls."""

    __slots__ = ("can_sendfile", "fd", "sock")

    corks = True
    inverted = False
    layered = False
    scheme = "http"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.can_sendfile = True

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def send(self, data: bytes | memoryview, more: bool = False) -> int:
        return self.sock.send(data, socket.MSG_MORE if more else 0)

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        return os.sendfile(self.fd, fd, offset, count)

    def pending(self) -> int:
        return 0

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()

    def version(self) -> str | None:
        return None

    def cipher(self) -> str | None:
        return None
