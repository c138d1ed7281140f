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
import time
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


def reload_tickets_file(pid_file: str) -> str:
    """The reload tickets beside the PID file: var/run/httpd.pid -> var/run/httpd.reloads.
    It holds one number, the last ticket an `httpdctl reload` took; it only grows (across
    masters too), so a ticket names one request for good."""
    return os.path.splitext(pid_file)[0] + ".reloads"


def take_reload_ticket(pid_file: str) -> int:
    """Take the next reload ticket (the number in the tickets file plus one, written back
    under an exclusive flock, so two commands never hold the same one); raises OSError.

    A signal carries no payload, and SIGHUPs sent at once collapse into one, so the ticket
    is what tells a command's request apart: the master notes the last ticket taken when a
    reload begins, and that reload covers every ticket up to it (their configuration was
    written before it was read)."""
    fd = os.open(reload_tickets_file(pid_file), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        # The umask may have cut 0644 down (077: 0600). The master, perhaps another user,
        # must read it (last_reload_ticket), and it holds a count, nothing secret.
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        ticket = _ticket_value(os.pread(fd, 32, 0)) + 1
        data = f"{ticket}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return ticket
    finally:
        os.close(fd)  # and the lock with it


def last_reload_ticket(pid_file: str, attempts: int = 50, pause: float = 0.002) -> int | None:
    """The last ticket taken (0 when none ever was), read under a shared flock; None when
    the file cannot be read or a command holds the lock all along (a command holds it for
    microseconds: one stopped right there must not stall the master's loop)."""
    try:
        fd = os.open(reload_tickets_file(pid_file), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    except OSError:
        return None
    try:
        for _ in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(pause)
                continue
            try:
                return _ticket_value(os.pread(fd, 32, 0))
            except (OSError, ValueError):
                return None
        return None
    finally:
        os.close(fd)


def _ticket_value(data: bytes) -> int:
    text = data.decode("ascii").strip()
    return int(text) if text else 0


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
