"""Stopping the master's workers: a graceful stop in steps, and a fast one. A step of the
Master (which inherits it), kept apart from master.py for size.

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

from prefork.process.listeners import refuse_new_connections
from prefork.process.systemd import sd_notify

# How long listeners that refuse new handshakes stay open so that handshakes already under
# way (a round trip; with TCP_DEFER_ACCEPT, until the request's first bytes) complete and
# are accepted, rather than reset when the sockets close.
HANDSHAKE_GRACE = 0.5
FAST_STOP_GRACE = 3.0  # seconds workers get to exit on INT/QUIT before SIGKILL


class StopMixin:
    """Stop steps of the Master (see the module comment). Uses its config, current,
    generations, stopping, stop_at, stop_deadline, refusing, error_log, _stop_worker and
    _reap."""

    def handle_sigterm(self) -> None:
        """A graceful stop, in steps: (shutdown_delay: keep serving while a load balancer
        notices,) refuse new handshakes for HANDSHAKE_GRACE while those under way complete
        and are accepted, then close our listeners and tell the workers to drain."""
        if self.stopping or self.stop_at:
            return
        sd_notify("STOPPING=1")
        delay = self.config.workers.shutdown_delay
        if delay:
            # Keep serving while a load balancer notices we are going (its health checks
            # can watch for STOPPING=1 or the state file).
            self.stop_at = time.monotonic() + delay
            if self.error_log:
                self.error_log.notice(f"stop requested; serving {delay:g}s more "
                                      f"([workers] shutdown_delay)")
            return
        self._refuse_new_connections()

    def _refuse_new_connections(self) -> None:
        for generation in self.generations.values():
            for sock in generation.listeners:
                if sock.fileno() != -1:
                    refuse_new_connections(sock)
        self.refusing = True
        self.stop_at = time.monotonic() + HANDSHAKE_GRACE

    def handle_sigint(self) -> None:
        self._begin_stop(fast=True)

    def handle_sigquit(self) -> None:
        self._begin_stop(fast=True)

    def _begin_stop(self, fast: bool) -> None:
        if self.stopping and not fast:
            return
        self.stopping = True
        sd_notify("STOPPING=1")
        config = self.current.config if self.current else self.config
        grace = FAST_STOP_GRACE if fast else config.workers.graceful_timeout
        self.stop_deadline = time.monotonic() + grace
        if self.error_log:
            self.error_log.notice(f"{'fast' if fast else 'graceful'} stop requested; "
                                  f"workers have {grace:g}s")
        self._shutdown_all(fast)

    def _shutdown_all(self, fast: bool) -> None:
        # Our copies of the listeners go first: once the workers have accepted what is
        # queued and closed theirs, new clients are refused rather than left in a backlog
        # nobody accepts from, to be reset when we exit (worker.py closes after its last
        # accept).
        for generation in self.generations.values():
            generation.close_listeners(set())
        for generation in self.generations.values():
            for worker in generation.workers.values():
                self._stop_worker(worker, signal.SIGQUIT if fast else signal.SIGTERM)
        if fast:
            deadline = time.monotonic() + FAST_STOP_GRACE
            while any(g.workers for g in self.generations.values()) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
                self._reap()
