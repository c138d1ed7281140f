"""Worker health, as the master judges it: hung workers, and workers due for recycling.

Policy only: the master asks, every round, which workers are hung (their heartbeat in the
scoreboard stopped) and which should be replaced (they asked — max_requests, a request over
request_timeout, a dead loop thread — or they grew past max_worker_memory, measured with
psutil). The master then acts: SIGKILL for hung ones; for recycling, a replacement starts
first and the old worker retires only once it is ready, one at a time, so capacity never
drops.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import psutil

from prefork.scoreboard import RECYCLE, RECYCLE_REASONS, Scoreboard

# A worker's main thread beats every second while its loops turn; Apache and gunicorn use
# 30 s as their default worker timeout.
HEARTBEAT_TIMEOUT = 30.0


class Supervised(Protocol):
    pid: int
    slot: int
    ready: bool
    stopping: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    pid: int
    reason: str


class HealthMonitor:
    def __init__(self, scoreboard: Scoreboard, heartbeat_timeout: float = HEARTBEAT_TIMEOUT
                 ) -> None:
        self.scoreboard = scoreboard
        self.heartbeat_timeout = heartbeat_timeout
        self._processes: dict[int, psutil.Process] = {}

    def hung(self, workers: Iterable[Supervised]) -> list[Verdict]:
        """Ready workers whose heartbeat is older than the timeout. Heartbeats are
        CLOCK_MONOTONIC readings (system-wide), so a step of the wall clock changes nothing."""
        now = time.monotonic()
        verdicts = []
        for worker in workers:
            if not worker.ready or worker.stopping:
                continue
            silent = now - self.scoreboard.process(worker.slot).heartbeat
            if silent > self.heartbeat_timeout:
                verdicts.append(Verdict(worker.pid,
                                        f"hung: no heartbeat for {silent:.0f}s"))
        return verdicts

    def due_for_recycling(self, workers: Iterable[Supervised], max_memory: int
                          ) -> list[Verdict]:
        """Ready workers that asked to be replaced, or whose RSS exceeds `max_memory`."""
        verdicts = []
        for worker in workers:
            if not worker.ready or worker.stopping:
                continue
            info = self.scoreboard.process(worker.slot)
            if info.state == RECYCLE:
                verdicts.append(Verdict(worker.pid, RECYCLE_REASONS.get(info.reason, "asked")))
            elif max_memory and (rss := self.resident_memory(worker.pid)) > max_memory:
                verdicts.append(Verdict(worker.pid, f"memory {rss >> 20} MiB exceeds "
                                                    f"max_worker_memory {max_memory >> 20} MiB"))
        return verdicts

    def resident_memory(self, pid: int) -> int:
        """RSS of `pid` in bytes (0 when it is gone)."""
        try:
            process = self._processes.get(pid)
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            return process.memory_info().rss
        except psutil.Error:
            self._processes.pop(pid, None)
            return 0

    def forget(self, pid: int) -> None:
        self._processes.pop(pid, None)
