"""The PID file and the control verbs.

The master holds an exclusive flock on its PID file for its whole life. A PID file that is
not locked is stale (the master died without cleaning up), whatever PID it names, so a
recycled PID can never make `start` refuse or make `stop` signal a stranger.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from dataclasses import dataclass
from typing import Any

from prefork.errors import ControlError

# One table maps control verbs to the signals the master understands (as nginx -s does).
SIGNALS: dict[str, signal.Signals] = {
    "stop": signal.SIGTERM,  # graceful: finish in-flight requests
    "stop-now": signal.SIGQUIT,  # fast: close everything at once
    "reload": signal.SIGHUP,  # new configuration, new generation of workers
    "reopen-logs": signal.SIGUSR1,
    "add-worker": signal.SIGTTIN,
    "remove-worker": signal.SIGTTOU,
}

# LSB init-script exit code for "program is not running" (status) .
EXIT_NOT_RUNNING = 3


class PidFile:
    """An flock-held PID file. `acquire()` in the master; `read_running()` from httpdctl."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        """Lock the PID file; raises ControlError naming the running master if it is held."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(self.path)
            raise ControlError(f"already running (pid {pid}, pid file {self.path})") from None
        self.fd = fd

    def write(self, pid: int) -> None:
        """Record `pid` (the master's, after daemonizing) in the locked file."""
        assert self.fd is not None, "acquire() first"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self, remove: bool = True) -> None:
        """Remove the file (while still holding the lock, so no start races us) and unlock."""
        if self.fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None

    def forget(self) -> None:
        """Close our descriptor without unlocking for others: used in forked workers, which
        must not keep the master's lock alive after the master is gone."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def state_file(pid_file: str) -> str:
    """The master's state file (bound addresses, generation, reload and log-reopen
    outcomes), beside its PID file: var/run/httpd.pid -> var/run/httpd.state."""
    return os.path.splitext(pid_file)[0] + ".state"


def read_state(pid_file: str) -> dict[str, Any]:
    """The running master's published state, or {} when there is none (yet)."""
    try:
        with open(state_file(pid_file), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


@dataclass(frozen=True, slots=True)
class RunningMaster:
    pid: int
    pid_file: str


def find_master(pid_file: str) -> RunningMaster | None:
    """Return the running master named by a *locked* PID file, or None when not running."""
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(pid_file)
            return RunningMaster(pid, pid_file) if pid else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: stale
    finally:
        os.close(fd)


def send(pid_file: str, verb: str) -> RunningMaster:
    """Send the signal for `verb` to the running master; raises ControlError if not running."""
    master = find_master(pid_file)
    if master is None:
        raise ControlError(f"not running (no locked pid file at {pid_file})", EXIT_NOT_RUNNING)
    try:
        os.kill(master.pid, SIGNALS[verb])
    except ProcessLookupError:
        raise ControlError(f"not running (pid {master.pid} is gone)", EXIT_NOT_RUNNING) from None
    except PermissionError:
        raise ControlError(f"permission denied signalling pid {master.pid}") from None
    return master
