"""Reopening the log files (SIGUSR1, `httpdctl reopen-logs`, logrotate's postrotate). A
step of the Master (which inherits it), kept apart from master.py for size.

The master (root, when [server] user is set) reopens every generation's logs first, which
creates the new files, and hands them to the workers' user as nginx does, so that workers
that dropped root can open them. Then every worker reopens its own and acknowledges in the
scoreboard, with a flag when it could not (it then keeps its old file and keeps serving).
Once every serving worker acknowledged, the outcome goes to the state file: `httpdctl
reopen-logs` exits 0, or 1 naming the master's or each worker's failure.
"""

from __future__ import annotations

import signal

from prefork.config.settings import Config
from prefork.process.generation import WorkerProcess, signal_worker
from prefork.process.privileges import give_to_workers


class LogReopenMixin:
    """Log reopen steps of the Master. Uses its config, generations, scoreboard, log_seq,
    reopen_pending, reopen_failures, error_log and _write_state."""

    def _give_logs_to_workers(self, config: Config) -> None:
        """Started as root with [server] user: workers must be able to reopen the logs."""
        logging = config.logging
        paths = [p for p in (logging.error_log, logging.access_log) if p and p != "off"]
        for problem in give_to_workers(config, paths):
            if self.error_log:
                self.error_log.warn(problem)

    def handle_sigusr1(self) -> None:
        """Reopen every log in every process; `httpdctl reopen-logs` waits for the workers'
        acknowledgements, which _check_health collects from the scoreboard.

        The master (root, when [server] user is set) opens the new files first, creating
        them, and hands them to the workers' user, as nginx does, so that workers that
        dropped root can open them. A log that cannot be reopened keeps its old file; the
        failure is logged and reported to `httpdctl reopen-logs`."""
        assert self.scoreboard is not None
        self.log_seq += 1
        self.scoreboard.log_seq = self.log_seq
        self.reopen_failures = []
        paths: set[str] = set()
        for generation in self.generations.values():
            for log in (generation.error_log, generation.access_log):
                if log.file is None:
                    continue
                paths.add(log.file.path)
                try:
                    log.reopen()
                except OSError as exc:
                    self.reopen_failures.append(
                        f"master: cannot reopen {log.file.path}: {exc.strerror or exc}")
        for problem in give_to_workers(self.config, sorted(paths)):
            self.reopen_failures.append(f"master: {problem}")
        for generation in self.generations.values():
            for worker in generation.workers.values():
                signal_worker(worker.pid, signal.SIGUSR1)
        self.reopen_pending = True
        if self.error_log:
            for failure in self.reopen_failures:
                self.error_log.error(f"{failure}; the old file stays in use")
            self.error_log.notice("log files reopened; waiting for the workers")

    def _collect_reopen_acks(self, workers: list[WorkerProcess]) -> None:
        """Once every serving worker acknowledged the log reopen, publish the outcome,
        naming each worker that could not reopen its logs."""
        assert self.scoreboard is not None
        serving = [w for w in workers if w.ready and not w.stopping]
        infos = [(w, self.scoreboard.process(w.slot)) for w in serving]
        if any(info.log_seq < self.log_seq for _w, info in infos):
            return
        self.reopen_pending = False
        for worker, info in infos:
            if info.log_failed == self.log_seq:
                self.reopen_failures.append(
                    f"worker {worker.number} (generation {worker.generation}, pid "
                    f"{worker.pid}) could not reopen its logs (see the error log)")
        self._write_state()
