"""Reopening the log files (SIGUSR1, `httpdctl reopen-logs`, logrotate's postrotate).

The master (root, when [server] user is set) reopens every generation's logs first, which
creates the new files, and hands them to the workers' user as nginx does, so that workers
that dropped root can open them. Then every worker reopens its own and acknowledges in the
scoreboard, with a flag when it could not (it then keeps its old file and keeps serving).
Once every serving worker acknowledged, the outcome goes to the state file: `httpdctl
reopen-logs` exits 0, or 1 naming the master's or each worker's failure.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from prefork.config.settings import Config
from prefork.process.generation import WorkerProcess, signal_worker
from prefork.process.privileges import give_to_workers

if TYPE_CHECKING:
    from prefork.process.master import Master


class LogReopen:
    """The master's log reopening: a sequence number workers acknowledge in the scoreboard,
    and the failures of the last reopen (see the module comment)."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.seq = 0
        self.pending = False  # waiting for the workers' acknowledgements
        self.failures: list[str] = []  # of the last reopen (state file: reopen-logs)

    @property
    def completed_seq(self) -> int:
        """The last reopen every worker acknowledged (what `httpdctl reopen-logs` waits for)."""
        return self.seq - 1 if self.pending else self.seq

    def give_logs_to_workers(self, config: Config) -> None:
        """Started as root with [server] user: workers must be able to reopen the logs."""
        logging = config.logging
        paths = [p for p in (logging.error_log, logging.access_log) if p and p != "off"]
        for problem in give_to_workers(config, paths):
            if self.master.error_log:
                self.master.error_log.warn(problem)

    def begin(self) -> None:
        """USR1: reopen every log in every process; `httpdctl reopen-logs` waits for the
        workers' acknowledgements, which collect_acks gathers from the scoreboard.

        The master (root, when [server] user is set) opens the new files first, creating
        them, and hands them to the workers' user, as nginx does, so that workers that
        dropped root can open them. A log that cannot be reopened keeps its old file; the
        failure is logged and reported to `httpdctl reopen-logs`."""
        master = self.master
        assert master.scoreboard is not None
        self.seq += 1
        master.scoreboard.log_seq = self.seq
        self.failures = []
        paths: set[str] = set()
        for generation in master.generations.values():
            for log in (generation.error_log, generation.access_log):
                if log.file is None:
                    continue
                paths.add(log.file.path)
                try:
                    log.reopen()
                except OSError as exc:
                    self.failures.append(
                        f"master: cannot reopen {log.file.path}: {exc.strerror or exc}")
        for problem in give_to_workers(master.config, sorted(paths)):
            self.failures.append(f"master: {problem}")
        for generation in master.generations.values():
            for worker in generation.workers.values():
                signal_worker(worker.pid, signal.SIGUSR1)
        self.pending = True
        if master.error_log:
            for failure in self.failures:
                master.error_log.error(f"{failure}; the old file stays in use")
            master.error_log.notice("log files reopened; waiting for the workers")

    def collect_acks(self, workers: list[WorkerProcess]) -> None:
        """Once every serving worker acknowledged the log reopen, publish the outcome,
        naming each worker that could not reopen its logs."""
        scoreboard = self.master.scoreboard
        assert scoreboard is not None
        serving = [w for w in workers if w.ready and not w.stopping]
        infos = [(w, scoreboard.process(w.slot)) for w in serving]
        if any(info.log_seq < self.seq for _w, info in infos):
            return
        self.pending = False
        for worker, info in infos:
            if info.log_failed == self.seq:
                self.failures.append(
                    f"worker {worker.number} (generation {worker.generation}, pid "
                    f"{worker.pid}) could not reopen its logs (see the error log)")
        self.master.write_state()
