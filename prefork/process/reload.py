"""Reloads: a whole new generation replaces the current one without losing a request.

The new configuration is loaded first (a bad file changes nothing); a new generation is
forked on the kept or newly bound sockets; only when all of it reported ready is the old
generation retired (SIGUSR2: finish requests, answer what idle connections still send). If a
new worker fails to boot or boot_timeout passes, the new generation is killed and the old
one keeps serving. When workers of an older generation still finishing requests hold the
scoreboard slots the new generation needs, the reload waits for them (they end within
graceful_timeout) while the current generation serves. The outcome goes to the state file
that `httpdctl reload` waits for, under the last reload ticket taken when the reload began.
"""

from __future__ import annotations

import signal
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefork.config.settings import Config, load_config
from prefork.control import last_reload_ticket, reload_tickets_file
from prefork.errors import ConfigError, StartupError
from prefork.process.generation import Generation, WorkerProcess
from prefork.process.listeners import bind_listeners, check_root_policy, refuse_new_connections
from prefork.process.systemd import sd_notify
from prefork.scoreboard import FINISHING

if TYPE_CHECKING:
    from prefork.process.master import Master

FAST_KILL_GRACE = 3.0  # seconds to reap a failed generation after SIGKILL
HANDOVER_TIMEOUT = 5.0  # seconds old workers get to stop accepting before a reload reports
REAP_STEP = 0.02  # seconds between reaping attempts while a failed generation dies
SLOT_WAIT_MARGIN = 5.0  # seconds beyond graceful_timeout a reload waits for scoreboard slots
OUTCOMES_KEPT = 16  # reload outcomes in the state file, with the ticket each began after


@dataclass
class Waiting:
    """A reload that read its configuration and bound its sockets, waiting for as many free
    scoreboard slots as it has workers."""

    config: Config
    listeners: list[socket.socket]
    deadline: float  # monotonic
    bound: float  # seconds it may wait in all
    told: bool = False  # the error log said it waits


class Reloads:
    """The master's reloads: at most one under way (`pending`), and the last outcome."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.pending: Generation | None = None  # a reload's generation until it booted
        self.waiting: Waiting | None = None  # a reload waiting for scoreboard slots
        self.seq = 0  # counts outcomes
        # Requests (SIGHUP) counted as they come, and how many of them the last finished
        # reload covered (those received before it began): `httpdctl reload` waits until its
        # own request is covered. One asked for while another is under way is deferred (a
        # second SIGHUP after an edit must not be lost) and begins once that one is done.
        self.requested = 0
        self.covering = 0  # requests the reload under way covers
        self.covered = 0
        self.deferred = False
        self.last: dict[str, object] = {"ok": True, "message": "started"}
        # `httpdctl reload` takes a ticket before its SIGHUP (control.take_reload_ticket);
        # a reload notes the last ticket taken when it begins, before it reads the
        # configuration, and its outcome is filed under it: a command reports the first
        # outcome whose ticket is at least its own. The last few are kept, so that a command
        # still sees its own when a deferred reload finished right after it.
        self.ticket = 0  # the last ticket a reload began after
        self.outcomes: deque[dict[str, object]] = deque(maxlen=OUTCOMES_KEPT)
        # A promoted generation whose predecessor's workers are still taking their last
        # connections: (the old workers, the new generation's number, the deadline).
        self.handover: tuple[list[WorkerProcess], int, float] | None = None

    def start(self) -> None:
        """SIGHUP: load the configuration again and fork a new generation from it — now, or
        once the reload under way is done."""
        master = self.master
        self.requested += 1
        if self.pending is not None or self.handover is not None or self.waiting is not None:
            if not self.deferred and master.error_log is not None:
                master.error_log.notice("reload requested while another is under way: it "
                                        "follows once that one is done")
            self.deferred = True
            master.write_state()
            return
        self._begin()

    def _begin(self) -> None:
        master = self.master
        log = master.error_log
        current = master.current
        assert log is not None and current is not None and master.scoreboard is not None
        self.covering = self.requested
        ticket = last_reload_ticket(master.pid_file.path)
        if ticket is None:
            # Not newer than the last: a command whose ticket this misses waits for the
            # reload its own SIGHUP brings.
            log.warn(f"cannot read the reload tickets "
                     f"{reload_tickets_file(master.pid_file.path)}: httpdctl reload waits "
                     f"for the next reload")
        else:
            self.ticket = max(self.ticket, ticket)
        if master.stop.requested:
            # A stop was asked for first: no new generation now (httpdctl reload says so).
            self.done(False, "the server is stopping")
            return
        master.write_state()
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC="
                  f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            config = master.as_served(load_config(master.config_path, master.overrides))
            # As at start: workers keep root only while nobody beyond loopback can reach
            # them, judged on what is served (systemd's sockets, when it passed them).
            check_root_policy(config)
            master.site.check(config)
            master.site.before_fork(config, [g.config for g in master.generations.values()])
        except ConfigError as exc:
            self.done(False, f"configuration error: {exc}")
            return
        except StartupError as exc:
            self.done(False, str(exc))
            return
        if master.socket_activated:
            # The sockets are systemd's (its .socket unit says what to listen on): a reload
            # keeps them as they are, whatever [server] listen says.
            listeners = list(current.listeners)
        else:
            reuse = dict(zip(current.config.server.listen, current.listeners, strict=False))
            try:
                listeners = bind_listeners(config.server.listen, config.server.backlog, reuse)
            except StartupError as exc:
                self.done(False, str(exc))
                return
        # Workers of older generations still finishing long requests hold scoreboard slots
        # (three generations may not fit): the reload waits for them, as they end within
        # graceful_timeout, rather than being refused for a bookkeeping reason. Meanwhile
        # the master's loop goes on and the current generation serves.
        bound = max(g.config.workers.graceful_timeout for g in master.generations.values()) \
            + SLOT_WAIT_MARGIN
        self.waiting = Waiting(config, listeners, time.monotonic() + bound, bound)
        self._fork_when_slots_free()

    def _fork_when_slots_free(self) -> None:
        """Fork the waiting reload's generation once the scoreboard has a slot for each of
        its workers; give up when the server stops or the wait outlasts its bound."""
        waiting = self.waiting
        master = self.master
        current = master.current
        assert waiting is not None and current is not None and master.scoreboard is not None
        config = waiting.config
        need = config.workers.processes
        # Slots the serving generation's own respawns need come first: a worker of it that
        # died frees a slot its replacement is owed, not the waiting reload.
        active = sum(1 for w in current.workers.values() if not w.stopping and not w.retiring)
        free = max(0, master.scoreboard.free_process_slots() - max(0, current.target - active))
        if free < need:
            if master.stop.requested:
                self._give_up_waiting("the server is stopping")
            elif time.monotonic() > waiting.deadline:
                self._give_up_waiting(
                    f"{need} new workers need as many scoreboard slots, {free} are free "
                    f"after waiting {waiting.bound:g}s for workers of older generations to "
                    f"finish their requests")
            elif not waiting.told and master.error_log is not None:
                waiting.told = True
                master.error_log.notice(
                    f"reloading: {need} new workers need as many scoreboard slots, {free} "
                    f"are free; waiting for workers of older generations to finish their "
                    f"requests (at most {waiting.bound:g}s)")
            return
        self.waiting = None
        listeners = waiting.listeners
        try:
            error_log, access_log = master.open_logs(config)
        except OSError as exc:
            _close_new(listeners, current.listeners)
            self.done(False, f"cannot open the logs: {exc.strerror or exc}: {exc.filename}")
            return
        generation = Generation(current.number + 1, config, listeners,
                                config.workers.processes, error_log, access_log)
        generation.boot_deadline = time.monotonic() + config.workers.boot_timeout
        master.generations[generation.number] = generation
        self.pending = generation
        assert master.error_log is not None
        master.error_log.notice(f"reloading: starting generation {generation.number}")
        for number in range(1, generation.target + 1):
            master.spawn(generation, number)

    def give_up_waiting(self) -> None:
        """A stop began: a reload still waiting for slots ends (its sockets closed)."""
        if self.waiting is not None:
            self._give_up_waiting("the server is stopping")

    def _give_up_waiting(self, reason: str) -> None:
        waiting = self.waiting
        current = self.master.current
        assert waiting is not None and current is not None
        self.waiting = None
        _close_new(waiting.listeners, current.listeners)
        self.done(False, reason)

    def check(self) -> None:
        """Each round: promote the pending generation once all of it is ready, or give up
        on it when a worker failed or boot_timeout passed."""
        master = self.master
        if self.waiting is not None:
            self._fork_when_slots_free()
            return
        if self.handover is not None:
            self._check_handover()
            return
        generation = self.pending
        if generation is None:
            return
        workers = list(generation.workers.values())
        if len(workers) == generation.target and all(w.ready for w in workers):
            old = master.current
            master.current = generation
            self.pending = None
            master.config = generation.config
            master.error_log = generation.error_log
            if old is not None:
                # A listen address the new configuration dropped: our copy closes now, the
                # old workers close theirs after their last accept, and new clients are
                # refused instead of waiting in a backlog nobody accepts from.
                in_use = master.sockets_in_use(besides=old)
                for sock in old.listeners:
                    if id(sock) not in in_use:
                        refuse_new_connections(sock)
                old.close_listeners(in_use)
                for worker in old.workers.values():
                    master.stop_worker(worker, signal.SIGUSR2)
                if not old.workers:
                    master.retire(old)
                else:
                    self.handover = (list(old.workers.values()), generation.number,
                                     time.monotonic() + HANDOVER_TIMEOUT)
                    return
            self.done(True, f"generation {generation.number} serving")
            return
        failed = len(workers) < generation.target
        if failed or time.monotonic() > generation.boot_deadline:
            reason = ("a new worker failed to boot (see the error log)" if failed else
                      f"new workers not ready within {generation.config.workers.boot_timeout:g}s")
            for worker in workers:
                master.stop_worker(worker, signal.SIGKILL)
            self.pending = None
            deadline = time.monotonic() + FAST_KILL_GRACE
            while generation.workers and time.monotonic() < deadline:
                time.sleep(REAP_STEP)
                master.reap()
            # Retired now, or when its last (killed) worker is reaped.
            if generation.number in master.generations and not generation.workers:
                master.retire(generation)
            self.done(False, reason)

    def _check_handover(self) -> None:
        """The reload is done once every old worker took its last connection (it closed its
        listeners, or exited): from then on, the new code answers every new connection."""
        assert self.handover is not None
        old, number, deadline = self.handover
        scoreboard = self.master.scoreboard
        assert scoreboard is not None
        alive = {pid for g in self.master.generations.values() for pid in g.workers}
        waiting = [w for w in old if w.pid in alive
                   and scoreboard.process(w.slot).state != FINISHING]
        if waiting and time.monotonic() < deadline:
            return
        self.handover = None
        late = f" ({len(waiting)} old worker(s) still accepting after {HANDOVER_TIMEOUT:g}s)" \
            if waiting else ""
        self.done(True, f"generation {number} serving{late}")

    def done(self, ok: bool, message: str) -> None:
        self.seq += 1
        self.covered = self.covering
        self.last = {"ok": ok, "message": message}
        self.outcomes.append({"seq": self.seq, "ticket": self.ticket, **self.last})
        log = self.master.error_log
        if log:
            if ok:
                log.notice(f"reload complete: {message}")
            else:
                log.error(f"reload failed, previous generation keeps serving: {message}")
        self.master.write_state()
        sd_notify("READY=1\nSTATUS=" + ("serving" if ok else f"reload failed: {message}"))
        if self.deferred:
            self.deferred = False
            self._begin()


def _close_new(listeners: list[socket.socket], kept: list[socket.socket]) -> None:
    """A reload gave up before its generation existed: close the sockets it bound."""
    for sock in listeners:
        if all(sock is not k for k in kept):
            sock.close()
