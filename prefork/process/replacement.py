"""Replacing workers without losing capacity: reloads (a whole generation) and recycling
(one worker). Kept apart from master.py for size; the Master class inherits these steps.

Reload: the new configuration is loaded first (a bad file changes nothing); a new generation
is forked on the kept or newly bound sockets; only when all of it reported ready is the old
generation retired (SIGUSR2: finish requests, answer what idle connections still send).
If a new worker fails to boot or boot_timeout passes, the new generation is killed and the
old one keeps serving. The outcome goes to the state file that `httpdctl reload` waits for.

Recycling: a worker that asked for it (max_requests, a hung request, a dead loop) or grew
past max_worker_memory gets a replacement first; it retires once the replacement is ready.
One at a time.
"""

from __future__ import annotations

import signal
import socket
import time

from prefork.config.settings import load_config
from prefork.errors import ConfigError, StartupError
from prefork.process.generation import Generation, signal_worker
from prefork.process.listeners import bind_listeners, refuse_new_connections
from prefork.process.systemd import sd_notify

FAST_KILL_GRACE = 3.0  # seconds to reap a failed generation after SIGKILL


class ReplacementMixin:
    """Reload and recycling steps of the Master (see the module comment).

    Uses the Master's state: generations, current, pending, recycling, scoreboard, health,
    error_log, config_path, overrides, next_spawn; and its _spawn, _stop_worker,
    _open_logs and _write_state.
    """

    def _retire(self, generation: Generation) -> None:
        """An old (or failed) generation has no workers left: close all it owns."""
        del self.generations[generation.number]
        generation.close(self._sockets_in_use())

    def _sockets_in_use(self, besides: Generation | None = None) -> set[int]:
        """id()s of the sockets the generations (other than `besides`) listen on."""
        return {id(s) for g in self.generations.values() if g is not besides
                for s in g.listeners}

    def _check_health(self) -> None:
        """Kill hung workers, recycle one worker at a time, collect log-reopen acks."""
        generation = self.current
        assert self.health is not None and self.scoreboard is not None
        if generation is None:
            return
        workers = [w for g in self.generations.values() for w in g.workers.values()]
        for verdict in self.health.hung(workers):
            generation.error_log.error(f"worker pid {verdict.pid} killed because {verdict.reason}")
            signal_worker(verdict.pid, signal.SIGKILL)
        if self.reopen_pending:
            self._collect_reopen_acks(workers)
        if self.recycling is not None:
            self._advance_recycling(generation)
            return
        candidates = [w for w in generation.workers.values() if not w.retiring]
        verdicts = self.health.due_for_recycling(candidates,
                                                 generation.config.workers.max_worker_memory)
        if verdicts and time.monotonic() >= self.next_spawn:
            old = generation.workers[verdicts[0].pid]
            new = self._spawn(generation, old.number)
            if new is not None:
                old.retiring = True
                self.recycling = (old, new)
                generation.error_log.notice(
                    f"recycling worker {old.number} (pid {old.pid}): {verdicts[0].reason}; "
                    f"replacement pid {new.pid} starting first")

    def _advance_recycling(self, generation: Generation) -> None:
        assert self.recycling is not None
        old, new = self.recycling
        alive = {pid for g in self.generations.values() for pid in g.workers}
        if new.pid not in alive:  # the replacement failed: keep the old one, try later
            old.retiring = False
            self.recycling = None
        elif new.ready and not old.stopping:
            self._stop_worker(old, signal.SIGUSR2)
        elif old.pid not in alive:
            self.recycling = None

    def _reload(self) -> None:
        log = self.error_log
        assert log is not None and self.current is not None
        if self.pending is not None:
            log.warn("reload requested while another is in progress; ignored")
            return
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC)//1000}")
        try:
            config = load_config(self.config_path, self.overrides)
            self.site.check(config)
        except ConfigError as exc:
            self._reload_done(False, f"configuration error: {exc}")
            return
        current = self.current
        if self.socket_activated:
            # The sockets are systemd's (its .socket unit says what to listen on): a reload
            # keeps them as they are, whatever [server] listen says.
            listeners = list(current.listeners)
        else:
            reuse = dict(zip(current.config.server.listen, current.listeners, strict=False))
            try:
                listeners = bind_listeners(config.server.listen, config.server.backlog, reuse)
            except StartupError as exc:
                self._reload_done(False, str(exc))
                return
        free = self.scoreboard.free_process_slots()
        if free < config.workers.processes:
            self._close_new(listeners, current.listeners)
            self._reload_done(False, f"{config.workers.processes} new workers need as many "
                                     f"scoreboard slots, {free} are free (workers of older "
                                     f"generations are still finishing requests)")
            return
        try:
            error_log, access_log = self._open_logs(config)
        except OSError as exc:
            self._close_new(listeners, current.listeners)
            self._reload_done(False, f"cannot open the logs: {exc.strerror or exc}: "
                                     f"{exc.filename}")
            return
        generation = Generation(current.number + 1, config, listeners,
                                config.workers.processes, error_log, access_log)
        generation.boot_deadline = time.monotonic() + config.workers.boot_timeout
        self.generations[generation.number] = generation
        self.pending = generation
        log.notice(f"reloading: starting generation {generation.number}")
        for number in range(1, generation.target + 1):
            self._spawn(generation, number)

    @staticmethod
    def _close_new(listeners: list[socket.socket], kept: list[socket.socket]) -> None:
        """A reload gave up before its generation existed: close the sockets it bound."""
        for sock in listeners:
            if all(sock is not k for k in kept):
                sock.close()

    def _check_reload(self) -> None:
        generation = self.pending
        if generation is None:
            return
        workers = list(generation.workers.values())
        if len(workers) == generation.target and all(w.ready for w in workers):
            old = self.current
            self.current = generation
            self.pending = None
            self.config = generation.config
            self.error_log = generation.error_log
            if old is not None:
                # A listen address the new configuration dropped: our copy closes now, the
                # old workers close theirs after their last accept, and new clients are
                # refused instead of waiting in a backlog nobody accepts from.
                in_use = self._sockets_in_use(besides=old)
                for sock in old.listeners:
                    if id(sock) not in in_use:
                        refuse_new_connections(sock)
                old.close_listeners(in_use)
                for worker in old.workers.values():
                    self._stop_worker(worker, signal.SIGUSR2)
                if not old.workers:
                    self._retire(old)
            self._reload_done(True, f"generation {generation.number} serving")
            return
        failed = len(workers) < generation.target
        if failed or time.monotonic() > generation.boot_deadline:
            reason = ("a new worker failed to boot (see the error log)" if failed else
                      f"new workers not ready within {generation.config.workers.boot_timeout:g}s")
            for worker in workers:
                self._stop_worker(worker, signal.SIGKILL)
            self.pending = None
            deadline = time.monotonic() + FAST_KILL_GRACE
            while generation.workers and time.monotonic() < deadline:
                time.sleep(0.02)
                self._reap()
            # Retired now, or by _on_exit when its last (killed) worker is reaped.
            if generation.number in self.generations and not generation.workers:
                self._retire(generation)
            self._reload_done(False, reason)

    def _reload_done(self, ok: bool, message: str) -> None:
        self.reload_seq += 1
        self.last_reload = {"ok": ok, "message": message}
        log = self.error_log
        if log:
            if ok:
                log.notice(f"reload complete: {message}")
            else:
                log.error(f"reload failed, previous generation keeps serving: {message}")
        self._write_state()
        sd_notify("READY=1\nSTATUS=" + ("serving" if ok else f"reload failed: {message}"))

