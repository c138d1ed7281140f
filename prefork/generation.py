"""The master's records of its workers: one WorkerProcess per child, grouped in Generations.

A generation is the set of workers forked from one configuration: the first at start, one
more per reload. Old generations drain and disappear; their listening sockets are closed
once no generation uses them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from .config import Config
from .log import AccessLog, ErrorLog


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


def signal_worker(pid: int, signum: int) -> None:
    """Send `signum` to a worker; one that has exited meanwhile (not reaped yet, or gone)
    is not an error for the master."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
