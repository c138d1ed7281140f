"""Listening sockets: bound once by the master, inherited by every worker across fork().

Binding errors become one-line StartupErrors an operator can act on (port in use, permission
denied on a privileged port, address not on this machine).
"""

from __future__ import annotations

import errno
import os
import socket

from .config import Config, ListenAddress
from .errors import StartupError


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


def check_root_policy(config: Config) -> None:
    """Refuse to run workers as root on a network-facing server unless explicitly allowed.

    Started as root, workers switch to [server] user. Without one, a server that listens
    only on loopback may keep root (development, tests) — the start log says so — but one
    that listens beyond loopback must name a user or set [workers] allow_root = on.
    Raises StartupError.
    """
    if os.geteuid() != 0 or config.server.user or config.workers.allow_root:
        return
    exposed = [str(a) for a in config.server.listen if not a.is_loopback]
    if exposed:
        raise StartupError(
            f"refusing to run workers as root while listening on {', '.join(exposed)}: "
            f"set [server] user (and group), or [workers] allow_root = on")
