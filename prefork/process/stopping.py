"""Stopping the master's workers: a graceful stop in steps, and a fast one.

Graceful (TERM): with [workers] shutdown_delay, keep serving that long first (a load
balancer notices STOPPING=1 or the state file). Then the listeners refuse new handshakes
(a socket filter drops bare SYNs) for HANDSHAKE_GRACE, while handshakes under way complete
and are accepted as usual. Then the master closes its copies of the listeners and tells the
workers to stop: each accepts what is queued, closes its copies, finishes its requests. When
the last copy closes the kernel answers new clients with a reset to their SYN (refused),
and no client whose handshake completed is left in a backlog to be reset.
Fast (INT, QUIT): everything closes at once; workers get FAST_STOP_GRACE, then SIGKILL.
All deadlines are on time.monotonic().
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from prefork.process.listeners import refuse_new_connections
from prefork.process.systemd import sd_notify

if TYPE_CHECKING:
    from prefork.process.master import Master

# How long listeners that refuse new handshakes stay open so that handshakes already under
# way (a round trip; with TCP_DEFER_ACCEPT, until the request's first bytes) complete and
# are accepted, rather than reset when the sockets close.
HANDSHAKE_GRACE = 0.5
FAST_STOP_GRACE = 3.0  # seconds workers get to exit on INT/QUIT before SIGKILL
REAP_STEP = 0.05  # seconds between reaping attempts during a fast stop


class Stopping:
    """The master's stop, graceful or fast (see the module comment), and its state."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.stopping = False  # the workers were told to stop
        self.deadline = 0.0  # monotonic: when the stopping workers get SIGKILL
        self.step_at = 0.0  # monotonic: when the next step of a graceful stop is due
        self.refusing = False  # graceful stop: listeners no longer start handshakes

    @property
    def requested(self) -> bool:
        """A stop is under way or waiting for its first step (state file: `stopping`)."""
        return self.stopping or bool(self.step_at)

    def graceful(self) -> None:
        """TERM, in steps: (shutdown_delay: keep serving while a load balancer notices,)
        refuse new handshakes for HANDSHAKE_GRACE while those under way complete and are
        accepted, then close our listeners and tell the workers to drain."""
        if self.requested:
            return
        sd_notify("STOPPING=1")
        delay = self.master.config.workers.shutdown_delay
        if delay:
            # Keep serving while a load balancer notices we are going (its health checks
            # can watch for STOPPING=1 or the state file).
            self.step_at = time.monotonic() + delay
            if self.master.error_log:
                self.master.error_log.notice(f"stop requested; serving {delay:g}s more "
                                             f"([workers] shutdown_delay)")
            return
        self._refuse_new_connections()

    def fast(self) -> None:
        """INT or QUIT: everything stops at once."""
        self._begin(fast=True)

    def tick(self, now: float) -> None:
        """Each round: take the graceful stop's next step when it is due."""
        if self.step_at and now >= self.step_at:
            self.step_at = 0.0
            if self.refusing:
                self._begin(fast=False)
            else:
                self._refuse_new_connections()

    def _refuse_new_connections(self) -> None:
        for generation in self.master.generations.values():
            for sock in generation.listeners:
                if sock.fileno() != -1:
                    refuse_new_connections(sock)
        self.refusing = True
        self.step_at = time.monotonic() + HANDSHAKE_GRACE

    def _begin(self, fast: bool) -> None:
        master = self.master
        if self.stopping and not fast:
            return
        self.stopping = True
        sd_notify("STOPPING=1")
        config = master.current.config if master.current else master.config
        grace = FAST_STOP_GRACE if fast else config.workers.graceful_timeout
        self.deadline = time.monotonic() + grace
        if master.error_log:
            master.error_log.notice(f"{'fast' if fast else 'graceful'} stop requested; "
                                    f"workers have {grace:g}s")
        self.shutdown_all(fast)

    def shutdown_all(self, fast: bool) -> None:
        """Close our listener copies, then signal every worker of every generation."""
        master = self.master
        # Our copies of the listeners go first: once the workers have accepted what is
        # queued and closed theirs, new clients are refused rather than left in a backlog
        # nobody accepts from, to be reset when we exit (worker.py closes after its last
        # accept).
        for generation in master.generations.values():
            generation.close_listeners(set())
        for generation in master.generations.values():
            for worker in generation.workers.values():
                master.stop_worker(worker, signal.SIGQUIT if fast else signal.SIGTERM)
        if fast:
            deadline = time.monotonic() + FAST_STOP_GRACE
            while any(g.workers for g in master.generations.values()) \
                    and time.monotonic() < deadline:
                time.sleep(REAP_STEP)
                master.reap()
