"""systemd integration without extra dependencies: sd_notify(3) datagrams."""

from __future__ import annotations

import os
import socket


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
