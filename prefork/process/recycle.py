"""Recycling: replacing one worker without losing capacity, and killing hung ones.

A worker that asked for it (max_requests, a hung request) or grew past max_worker_memory
gets a replacement first; it retires (SIGUSR2) once the replacement is ready. One at a time.
A worker whose heartbeat stopped is killed (and respawned by the master's upkeep).
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from prefork.process.generation import Generation, WorkerProcess, signal_worker

if TYPE_CHECKING:
    from prefork.process.master import Master


class Recycling:
    """The master's health checks and the one recycling under way (`old`, `new`)."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.under_way: tuple[WorkerProcess, WorkerProcess] | None = None  # (old, new)

    def check(self) -> None:
        """Each round: kill hung workers, collect log-reopen acknowledgements, advance or
        start one recycling."""
        master = self.master
        generation = master.current
        assert master.health is not None and master.scoreboard is not None
        if generation is None:
            return
        workers = [w for g in master.generations.values() for w in g.workers.values()]
        for verdict in master.health.hung(workers):
            generation.error_log.error(f"worker pid {verdict.pid} killed because {verdict.reason}")
            signal_worker(verdict.pid, signal.SIGKILL)
        if master.reopen.pending:
            master.reopen.collect_acks(workers)
        if self.under_way is not None:
            self._advance(generation)
            return
        candidates = [w for w in generation.workers.values() if not w.retiring]
        verdicts = master.health.due_for_recycling(candidates,
                                                   generation.config.workers.max_worker_memory)
        if verdicts and time.monotonic() >= master.next_spawn:
            old = generation.workers[verdicts[0].pid]
            new = master.spawn(generation, old.number)
            if new is not None:
                old.retiring = True
                self.under_way = (old, new)
                generation.error_log.notice(
                    f"recycling worker {old.number} (pid {old.pid}): {verdicts[0].reason}; "
                    f"replacement pid {new.pid} starting first")

    def _advance(self, generation: Generation) -> None:
        assert self.under_way is not None
        old, new = self.under_way
        alive = {pid for g in self.master.generations.values() for pid in g.workers}
        if new.pid not in alive:  # the replacement failed: keep the old one, try later
            old.retiring = False
            self.under_way = None
        elif new.ready and not old.stopping:
            self.master.stop_worker(old, signal.SIGUSR2)
        elif old.pid not in alive:
            self.under_way = None
