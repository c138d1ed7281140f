"""Listening sockets: bound once by the master, inherited by every worker across fork().

Binding errors become one-line StartupErrors an operator can act on (port in use, permission
denied on a privileged port, address not on this machine).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence

from prefork.config.settings import Config, ListenAddress
from prefork.config.values import TLS_MARK
from prefork.errors import StartupError


def bind_listeners(addresses: tuple[ListenAddress, ...], backlog: int,
                   reuse: dict[ListenAddress, socket.socket] | None = None
                   ) -> list[socket.socket]:
    """Bind and listen on every address; returns the sockets (non-blocking, inheritable).

    Sockets in `reuse` are taken as they are. Raises StartupError with a one-line reason.
    """
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            if reuse and address in reuse:
                sockets.append(reuse[address])
                continue
            sock = socket.socket(address.family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address.host, address.port))
            except OSError as exc:
                raise StartupError(_bind_error(address, exc)) from None
            sock.listen(backlog)
            # Apache's default AcceptFilter on Linux: wake us only once data has arrived.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            sock.setblocking(False)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            if not reuse or sock not in reuse.values():
                sock.close()
        raise
    return sockets


def _bind_error(address: ListenAddress, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {address}: port in use (is another server running there?)"
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {address}: permission denied (ports below 1024 need root "
                f"or CAP_NET_BIND_SERVICE)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {address}: address not available on this machine"
    return f"cannot listen on {address}: {exc.strerror or exc}"


def bound_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def shown_addresses(sockets: Sequence[socket.socket], listen: Sequence[ListenAddress]
                    ) -> list[str]:
    """The sockets' addresses as bound (port 0 made real), each followed by `ssl` when the
    [server] listen entry it serves is marked so — paired by position, as the serving layer
    pairs them (also with systemd's sockets) — for the operator's listings."""
    marked = [address.tls for address in listen]
    return [bound_address(sock) + (f" {TLS_MARK}" if index < len(marked) and marked[index]
                                   else "") for index, sock in enumerate(sockets)]


def check_root_policy(config: Config) -> None:
    """Refuse to run workers as root on a network-facing server unless explicitly allowed.

    Started as root, workers switch to [server] user. Without one, a server that listens
    only on loopback may keep root (development, tests) — the start log says so — but one
    that listens beyond loopback must name a user or set [workers] allow_root = on.
    Raises StartupError.
    """
    if os.geteuid() != 0 or config.server.user or config.workers.allow_root:
        return
    exposed = config.exposed()
    if exposed:
        raise StartupError(
            f"refusing to run workers as root while listening on {exposed}: "
            f"set [server] user (and group), or [workers] allow_root = on")


# A classic BPF program for SO_ATTACH_FILTER that drops a TCP segment whose flags are SYN
# without ACK (a new connection) and lets everything else through. For a TCP socket the
# filter sees the segment from its TCP header, whose byte 13 holds the flags.
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
_BPF_LDB_ABS, _BPF_AND_K, _BPF_JEQ_K, _BPF_RET_K = 0x30, 0x54, 0x15, 0x06
_TCP_FLAGS, _SYN, _ACK = 13, 0x02, 0x10
_NO_NEW_CONNECTIONS = (
    (_BPF_LDB_ABS, 0, 0, _TCP_FLAGS),
    (_BPF_AND_K, 0, 0, _SYN | _ACK),
    (_BPF_JEQ_K, 0, 1, _SYN),  # a bare SYN: next instruction (drop), else skip it (keep)
    (_BPF_RET_K, 0, 0, 0),
    (_BPF_RET_K, 0, 0, 0xFFFFFFFF),
)


def refuse_new_connections(sock: socket.socket) -> bool:
    """Stop `sock` from starting handshakes while those under way still complete (their
    ACK and first data pass), so a listener can be drained and then closed without
    resetting a client the kernel had already accepted. The filter belongs to the socket,
    so it acts in every process that shares it. A dropped SYN is retried by the client and,
    once the socket is closed, refused. Returns False where Linux socket filters are not
    available (the close alone then leaves a short window)."""
    import ctypes
    import struct

    code = b"".join(struct.pack("HBBI", *insn) for insn in _NO_NEW_CONNECTIONS)
    program = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HxxxxxxQ", len(_NO_NEW_CONNECTIONS), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True
