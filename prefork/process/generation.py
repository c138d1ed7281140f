"""The master's records of its workers: one WorkerProcess per child, grouped in Generations.

A generation is the set of workers forked from one configuration: the first at start, one
more per reload. A generation owns what was opened for it: its log files and its workers'
boot pipes always, its listening sockets except those a newer generation kept (a socket
belongs to every generation that lists it, and is closed when the last of them lets go).
When it is retired (its last worker reaped, or a failed reload's workers killed), the
master closes all of it: nothing of an old generation outlives it in the master.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass, field

from prefork.config.settings import Config
from prefork.log import AccessLog, ErrorLog
from prefork.process.listeners import shown_addresses


@dataclass
class WorkerProcess:
    pid: int
    number: int
    generation: int
    slot: int
    ready_fd: int | None  # read end of the boot pipe, until the worker reported
    started: float
    ready: bool = False
    stopping: bool = False
    retiring: bool = False  # a replacement is starting; this one retires once it is ready


@dataclass
class Generation:
    number: int
    config: Config
    listeners: list[socket.socket]
    target: int
    error_log: ErrorLog
    access_log: AccessLog
    boot_deadline: float = 0.0
    workers: dict[int, WorkerProcess] = field(default_factory=dict)
    closed: bool = False
    # As bound (port 0 made real), with the `ssl` mark: what status and the logs list.
    addresses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.addresses = shown_addresses(self.listeners, self.config.server.listen)

    def close_listeners(self, in_use: set[int]) -> None:
        """Close the master's copies of our sockets that no other generation uses (`in_use`
        holds their id()s); the workers close theirs after their last accept."""
        for sock in self.listeners:
            if id(sock) not in in_use:
                sock.close()

    def close(self, in_use: set[int]) -> None:
        """Release everything this generation owns (see the module comment); idempotent."""
        self.close_listeners(in_use)
        for worker in self.workers.values():
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
                worker.ready_fd = None
        if not self.closed:
            self.closed = True
            self.error_log.close()
            self.access_log.close()


def signal_worker(pid: int, signum: int) -> None:
    """Send `signum` to a worker; one that has exited meanwhile (not reaped yet, or gone)
    is not an error for the master."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def signal_name(signum: int) -> str:
    """SIGTERM, SIGRTMIN+6...: a name for any signal number, including real-time ones that
    signal.Signals does not know."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        if signal.SIGRTMIN <= signum <= signal.SIGRTMAX:
            return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
        return f"signal {signum}"
