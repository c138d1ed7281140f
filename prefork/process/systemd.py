"""systemd integration without extra dependencies: sd_notify(3) datagrams, socket activation."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from prefork.config.values import ListenAddress


def sd_notify(message: str) -> None:
    """Send a datagram to systemd's NOTIFY_SOCKET, if there is one (sd_notify(3))."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), path)
    except OSError:
        pass


SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed sockets start at descriptor 3


def inherited_sockets() -> list[socket.socket]:
    """Listening sockets passed by systemd socket activation (LISTEN_FDS/LISTEN_PID), if any.

    The variables are removed afterwards, as sd_listen_fds(unset_environment=1) does, so
    workers and children never misread them.
    """
    try:
        pid = int(os.environ.get("LISTEN_PID", "0"))
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    if pid != os.getpid() or count <= 0:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def served_addresses(sockets: Sequence[socket.socket], listen: Sequence[ListenAddress]
                     ) -> tuple[ListenAddress, ...]:
    """The addresses `sockets` are bound to (getsockname), `ssl` marked by position as the
    serving layer pairs them with [server] listen. A Unix socket is left out: only this
    machine reaches it, as loopback."""
    found = []
    for index, sock in enumerate(sockets):
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        host, port = sock.getsockname()[:2]
        tls = index < len(listen) and listen[index].tls
        found.append(ListenAddress(host, port, sock.family, tls=tls))
    return tuple(found)


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings when systemd's WatchdogSec= is set (half its period)."""
    usec = os.environ.get("WATCHDOG_USEC")
    owner = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (owner and owner != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
