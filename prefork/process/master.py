"""The master: binds, forks, reaps, respawns, reloads and stops. It never parses HTTP.

How this works: signal handlers only append the signal to a queue (and signal.set_wakeup_fd
wakes the main loop); the main loop, in `run()`, waits on that fd and on one pipe per
starting worker, then dispatches queued signals to `handle_<name>` methods, reaps children,
and keeps the current generation at its target size. A worker reports that it booted by
writing one byte to its pipe; EOF without that byte means it died while booting.

A reload (HUP) loads the new configuration first; if it is bad, nothing changes. Otherwise a
new generation is forked (unchanged listen addresses keep their sockets) and only once all
its workers report ready is the old generation told to stop gracefully; if any fails to
boot, or boot_timeout passes, the new generation is killed and the old one keeps serving.
The outcome is written to the state file, which `httpdctl reload` waits for.

Barrier: every round of the main loop runs under one `except Exception` that logs the
traceback to the error log (a file, also when daemonized) and goes on with the next round;
the known failures (fork EAGAIN, a log that cannot be reopened, a full disk under the state
file, an unknown signal number) are handled where they happen and logged as one line.

Time: every duration, deadline and back-off here is on time.monotonic(); the wall clock is
only written for display (the state file's "started").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import sys
import time
from collections import deque

from prefork.config.settings import MAX_PROCESSES, Config
from prefork.config.values import ListenAddress
from prefork.control import PidFile, state_file
from prefork.errors import ConfigError, StartupError
from prefork.log import AccessLog, ErrorLog
from prefork.process.generation import Generation, WorkerProcess, signal_name, signal_worker
from prefork.process.health import HealthMonitor
from prefork.process.hooks import SiteHooks
from prefork.process.listeners import (
    bind_listeners,
    check_root_policy,
)
from prefork.process.privileges import worker_ids
from prefork.process.recycle import Recycling
from prefork.process.reload import Reloads
from prefork.process.reopen import LogReopen
from prefork.process.stopping import Stopping
from prefork.process.systemd import (
    inherited_sockets,
    sd_notify,
    served_addresses,
    watchdog_interval,
)
from prefork.process.worker import EXIT_BOOT_FAILED, WorkerSpec, run_worker
from prefork.scoreboard import STARTING, Scoreboard

LOOP_INTERVAL = 0.5  # seconds between the master's housekeeping rounds
BACKOFF_FIRST = 0.5  # seconds before respawning after a failed boot; doubles per failure
BACKOFF_MAX = 30.0
STATUS_INTERVAL = 5.0  # seconds between systemd STATUS= updates
HANDOVER_POLL = 0.01  # seconds between looks at old workers while a reload hands over
FAULT_PAUSE = 0.1  # seconds the main loop rests after an unexpected exception (no busy loop)
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                   signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
# Blocked across fork(): what the master and the worker handle. The child unblocks them once
# the worker's own handlers are installed (worker.py), so none reaches the master's handlers
# in the child, where it would be lost.
FORK_BLOCKED = frozenset(HANDLED_SIGNALS) | {signal.SIGUSR2}


def startup_reason(exc: BaseException) -> str:
    """One line an operator can act on, for an exception raised while starting."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}:{where}" if where else exc.strerror
    return str(exc)


def systemd_status(generation: int, ready: int, target: int, requests: int,
                   watchdog: bool) -> str:
    """The sd_notify message of one housekeeping round. WATCHDOG=1 says the master's loop
    turns: it goes out every round, also while workers are missing, because the master is
    what brings them back and a systemd restart would only drop the ones that serve;
    degraded workers show in STATUS= instead."""
    state = "" if ready >= target else f" (degraded: {target - ready} not ready)"
    message = (f"STATUS=generation {generation}: {ready}/{target} workers ready{state}, "
               f"{requests} requests served")
    return message + "\nWATCHDOG=1" if watchdog else message


class Master:
    """Supervises generations of workers. `prepare()` in the start command, `run()` after.

    Its steps live in collaborators that own their state: `reloads` (process/reload.py),
    `recycling` (recycle.py), `stop` (stopping.py) and `reopen` (reopen.py)."""

    def __init__(self, config: Config, config_path: str, overrides: tuple[str, ...],
                 site: SiteHooks, foreground: bool = False) -> None:
        self.config = config
        self.site = site  # what the workers serve, and its hooks (process/hooks.py)
        self.config_path = config_path
        self.overrides = overrides
        self.foreground = foreground
        self.pid_file = PidFile(config.server.pid_file)
        self.state_path = state_file(config.server.pid_file)
        self.signals: deque[int] = deque()
        self.generations: dict[int, Generation] = {}
        self.current: Generation | None = None
        self.failures = 0
        self.next_spawn = 0.0
        self.started = time.time()
        self.reloads = Reloads(self)
        self.recycling = Recycling(self)
        self.stop = Stopping(self)
        self.reopen = LogReopen(self)
        self.socket_activated = False
        self.served: tuple[ListenAddress, ...] | None = None  # systemd's sockets' addresses
        self.next_status = 0.0
        self.health: HealthMonitor | None = None
        self.scoreboard: Scoreboard | None = None
        self.error_log: ErrorLog | None = None
        self.ready_notice: int | None = None  # pipe to the `httpdctl start` that waits for us

    # ------------------------------------------------------------------ start-up

    def prepare(self) -> list[socket.socket]:
        """Lock the PID file and bind the listeners (or take systemd's); raises ControlError
        or StartupError."""
        check_root_policy(self.config)
        self.pid_file.acquire()
        try:
            activated = inherited_sockets()
            if activated:
                self.socket_activated = True
                # Who can connect is what systemd passed, not [server] listen: every
                # configuration, this one and each a reload loads, carries those addresses.
                self.served = served_addresses(activated, self.config.server.listen)
                self.config = self.as_served(self.config)
                check_root_policy(self.config)
                return activated
            return bind_listeners(self.config.server.listen, self.config.server.backlog)
        except BaseException:
            self.pid_file.release(remove=True)  # we hold the lock: the file is ours to remove
            raise

    def as_served(self, config: Config) -> Config:
        """`config` with Config.served set to the addresses of the sockets systemd passed
        (socket activation), which decide who can connect; unchanged otherwise."""
        if self.served is None:
            return config
        return dataclasses.replace(config, served=self.served)

    def run(self, listeners: list[socket.socket]) -> int:
        """Start the first generation and supervise until stopped; returns the exit code.

        Every start-up failure is one line in the error log (when it could be opened) and
        the `ERROR reason` line `httpdctl start` prints on stderr."""
        try:
            ok, message = self._start(listeners)
        except (OSError, ConfigError, StartupError, RuntimeError) as exc:
            ok, message = False, startup_reason(exc)
        except Exception as exc:  # the reason must reach the operator
            ok, message = False, f"unexpected error: {exc!r}"
            if self.error_log:
                self.error_log.error("start-up failed with an unexpected error", exc=exc)
        if not ok:
            if self.error_log:
                self.error_log.error(f"start-up failed: {message}")
            self._tell_starter(f"ERROR {message}")
            if self.foreground and not (self.error_log and self.error_log.mirror_to_stderr):
                print(f"httpdctl: {message}", file=sys.stderr)
            self.stop.shutdown_all(fast=True)
            self._cleanup()
            return 1
        assert self.current is not None
        # The addresses end the line (", " between them: one may read "HOST:PORT ssl").
        self._tell_starter(f"READY {os.getpid()} {', '.join(self.current.addresses)}")
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving")
        assert self.error_log is not None
        self.error_log.notice("ready: all workers accepting connections")
        return self._supervise()

    def _start(self, listeners: list[socket.socket]) -> tuple[bool, str]:
        """Open the logs, the scoreboard and the uploads directory, boot the first
        generation; returns (ok, reason). Raises OSError and friends on the way."""
        config = self.config
        self.pid_file.write(os.getpid())
        error_log, access_log = self.open_logs(config)
        self.error_log = error_log
        try:
            self.scoreboard = Scoreboard.create(config.server.scoreboard_file, os.getpid())
        except OSError as exc:
            raise StartupError(f"cannot create the scoreboard {config.server.scoreboard_file}"
                               f": {exc.strerror or exc}") from None
        self.health = HealthMonitor(self.scoreboard, config.workers.heartbeat_timeout)
        self.reopen.give_logs_to_workers(config)
        self._install_signals()
        try:
            from setproctitle import setproctitle

            setproctitle(f"httpd: master -f {self.config_path}")
        except ImportError:
            pass
        generation = Generation(1, config, listeners, config.workers.processes,
                                error_log, access_log)
        self.generations[1] = generation
        self.current = generation
        error_log.notice(f"prefork starting: master pid {os.getpid()}, "
                         f"{generation.target} workers x {config.workers.threads} threads, "
                         f"listening on {', '.join(generation.addresses)}")
        self.site.prepare(config, error_log, worker_ids(config))
        self.site.before_fork(config, [])
        ok, message = self._boot(generation)
        if ok:
            self.write_state()
        return ok, message

    def open_logs(self, config: Config) -> tuple[ErrorLog, AccessLog]:
        logging = config.logging
        error_log = ErrorLog(logging.error_log, logging.level, mirror_to_stderr=self.foreground,
                             fmt=logging.error_format)
        access_path = None if logging.access_log == "off" else logging.access_log
        return error_log, AccessLog(access_path, logging.access_format)

    def _tell_starter(self, message: str) -> None:
        if self.ready_notice is not None:
            try:
                os.write(self.ready_notice, message.encode() + b"\n")
                os.close(self.ready_notice)
            except OSError:
                pass
            self.ready_notice = None

    def _boot(self, generation: Generation) -> tuple[bool, str]:
        """Fork a generation and wait until all its workers are ready (start-up only)."""
        generation.boot_deadline = time.monotonic() + generation.config.workers.boot_timeout
        for number in range(1, generation.target + 1):
            self.spawn(generation, number)
        while True:
            self._wait_events(LOOP_INTERVAL)
            self.reap()
            workers = generation.workers.values()
            if any(s in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) for s in self.signals):
                return False, "stopped while starting"
            if len(generation.workers) < generation.target:
                return False, "a worker could not be started or exited while booting " \
                              "(see the error log)"
            if all(w.ready for w in workers):
                return True, ""
            if time.monotonic() > generation.boot_deadline:
                return False, (f"workers did not report ready within "
                               f"{generation.config.workers.boot_timeout:g}s")

    # ------------------------------------------------------------------ processes

    def spawn(self, generation: Generation, number: int) -> WorkerProcess | None:
        """Fork worker `number` of `generation`; None (logged, back-off armed) if it could
        not be forked."""
        assert self.scoreboard is not None
        try:
            slot = self.scoreboard.claim_process_slot()
        except RuntimeError as exc:
            generation.error_log.error(str(exc))
            return None
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        master_pid = os.getpid()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN (process limit), ENOMEM
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(ready_r)
            os.close(ready_w)
            self.scoreboard.free_process_slot(slot)
            delay = self._back_off()
            generation.error_log.error(
                f"cannot fork worker {number} (generation {generation.number}): "
                f"{exc.strerror or exc}; next attempt in {delay:g}s")
            return None
        if pid == 0:
            self.pid_file.forget()
            run_worker(WorkerSpec(generation.config, generation.listeners, number,
                                  generation.number, slot, self.scoreboard, master_pid,
                                  ready_w, generation.error_log, generation.access_log,
                                  mask, self.site))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.scoreboard.set_process(slot, pid, generation.number, number, STARTING)
        worker = WorkerProcess(pid, number, generation.number, slot, ready_r, time.monotonic())
        generation.workers[pid] = worker
        generation.error_log.info(f"worker {number} (generation {generation.number}) "
                                  f"started, pid {pid}")
        return worker

    def _back_off(self) -> float:
        """Count one more failure to start a worker; returns the delay before the next."""
        self.failures += 1
        delay: float = min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX)
        self.next_spawn = time.monotonic() + delay
        return delay

    def reap(self) -> None:
        """Collect exited workers, log why each ended, and free their slots."""
        assert self.scoreboard is not None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for generation in list(self.generations.values()):
                worker = generation.workers.pop(pid, None)
                if worker is not None:
                    self._on_exit(generation, worker, status)
                    break

    def _on_exit(self, generation: Generation, worker: WorkerProcess, status: int) -> None:
        assert self.scoreboard is not None
        self.scoreboard.free_process_slot(worker.slot)
        if worker.ready_fd is not None:
            os.close(worker.ready_fd)
            worker.ready_fd = None
        log = generation.error_log
        if os.WIFSIGNALED(status):
            cause = f"killed by signal {signal_name(os.WTERMSIG(status))}"
        else:
            code = os.WEXITSTATUS(status)
            cause = "failed to boot" if code == EXIT_BOOT_FAILED else f"exited with code {code}"
        what = f"worker {worker.number} (generation {worker.generation}, pid {worker.pid})"
        assert self.health is not None
        self.health.forget(worker.pid)
        self.site.worker_gone(generation.config, worker.pid, generation.error_log)
        if worker.stopping or self.stop.stopping:
            log.info(f"{what} stopped: {cause}")
        elif not worker.ready:
            delay = self._back_off()
            log.error(f"{what} {cause} before it was ready; next attempt in {delay:g}s")
        else:
            log.error(f"{what} {cause}; respawning")
        if generation is not self.current and generation is not self.reloads.pending \
                and not generation.workers:
            self.retire(generation)

    def _maintain(self) -> None:
        """Keep the current generation at its target size (respecting boot back-off)."""
        generation = self.current
        if generation is None or self.stop.stopping or time.monotonic() < self.next_spawn:
            return
        active = [w for w in generation.workers.values() if not w.stopping and not w.retiring]
        numbers = {w.number for w in active}
        for number in range(1, generation.target + 1):
            if number not in numbers:
                self.spawn(generation, number)
                return  # one at a time; the next round spawns the next
        surplus = len(active) - generation.target
        for worker in sorted(active, key=lambda w: -w.number)[:max(0, surplus)]:
            self.stop_worker(worker, signal.SIGUSR2)  # retire: idle clients get answered

    def stop_worker(self, worker: WorkerProcess, signum: int) -> None:
        worker.stopping = True
        signal_worker(worker.pid, signum)

    def retire(self, generation: Generation) -> None:
        """An old (or failed) generation has no workers left: close all it owns."""
        del self.generations[generation.number]
        generation.close(self.sockets_in_use())

    def sockets_in_use(self, besides: Generation | None = None) -> set[int]:
        """id()s of the sockets the generations (other than `besides`) listen on."""
        return {id(s) for g in self.generations.values() if g is not besides
                for s in g.listeners}

    # ------------------------------------------------------------------ the main loop

    def _install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, lambda s, _f: self.signals.append(s))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _wait_events(self, timeout: float) -> None:
        fds = [self.wake_r] + [w.ready_fd for g in self.generations.values()
                               for w in g.workers.values() if w.ready_fd is not None]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            if fd == self.wake_r:
                try:
                    while os.read(fd, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            self._on_ready_pipe(fd)

    def _on_ready_pipe(self, fd: int) -> None:
        for generation in self.generations.values():
            for worker in generation.workers.values():
                if worker.ready_fd == fd:
                    try:
                        data = os.read(fd, 1)
                    except BlockingIOError:
                        return
                    os.close(fd)
                    worker.ready_fd = None
                    if data == b"R":
                        worker.ready = True
                        if generation is self.current:
                            self.failures = 0
                    return

    def _supervise(self) -> int:
        while True:
            try:
                if self._round():
                    break
            except Exception as exc:  # the barrier: log, carry on
                log = self.error_log
                if log is not None:
                    log.error(f"master: unexpected error in the main loop, carrying on: "
                              f"{exc!r}", exc=exc)
                time.sleep(FAULT_PAUSE)
        self._cleanup()
        if self.error_log:
            self.error_log.notice("stopped")
        return 0

    def _round(self) -> bool:
        """One round of supervision; True once a stop has completed."""
        timeout = LOOP_INTERVAL
        stop = self.stop
        if stop.step_at:
            timeout = min(timeout, max(0.0, stop.step_at - time.monotonic()))
        if self.reloads.handover is not None:
            timeout = min(timeout, HANDOVER_POLL)  # `httpdctl reload` is waiting on it
        self._wait_events(timeout)
        while self.signals:
            signum = self.signals.popleft()
            handler = getattr(self, f"handle_{signal_name(signum).lower()}", None)
            if handler is not None:
                handler()
        self.reap()
        stop.tick(time.monotonic())
        if stop.stopping:
            self.reloads.give_up_waiting()
            if not any(g.workers for g in self.generations.values()):
                return True
            if time.monotonic() > stop.deadline:
                for generation in self.generations.values():
                    for worker in generation.workers.values():
                        self.stop_worker(worker, signal.SIGKILL)
            return False
        self.reloads.check()
        self.recycling.check()
        self._maintain()
        self._report_to_systemd()
        return False

    def _report_to_systemd(self) -> None:
        now = time.monotonic()
        if now < self.next_status or not os.environ.get("NOTIFY_SOCKET"):
            return
        interval = watchdog_interval()
        self.next_status = now + min(STATUS_INTERVAL, interval or STATUS_INTERVAL)
        generation = self.current
        if generation is None or self.scoreboard is None:
            return
        workers = list(generation.workers.values())
        requests = sum(t.requests for w in workers for t in self.scoreboard.threads(w.slot))
        message = systemd_status(generation.number, sum(w.ready for w in workers),
                                 generation.target, requests, watchdog=interval is not None)
        sd_notify(message)

    # ------------------------------------------------------------------ signal handlers

    def handle_sigchld(self) -> None:
        """Reaping happens every round; the signal only woke us."""

    def handle_sighup(self) -> None:
        self.reloads.start()

    def handle_sigterm(self) -> None:
        self.stop.graceful()

    def handle_sigint(self) -> None:
        self.stop.fast()

    def handle_sigquit(self) -> None:
        self.stop.fast()

    def handle_sigusr1(self) -> None:
        self.reopen.begin()

    def handle_sigttin(self) -> None:
        if self.current and self.current.target >= MAX_PROCESSES:
            self.current.error_log.warn(f"workers: already {self.current.target}, the most "
                                        f"the scoreboard allows (TTIN ignored)")
        elif self.current:
            self.current.target += 1
            self.current.error_log.notice(f"workers: {self.current.target} (TTIN)")

    def handle_sigttou(self) -> None:
        if self.current and self.current.target > 1:
            self.current.target -= 1
            self.current.error_log.notice(f"workers: {self.current.target} (TTOU)")

    # ------------------------------------------------------------------ state and clean-up

    def write_state(self) -> None:
        """Publish what `httpdctl status/reload` need: addresses, generation, reload result."""
        current = self.current
        state = {
            "pid": os.getpid(),
            "started": self.started,
            "config": self.config_path,
            "generation": current.number if current else 0,
            "listen": current.addresses if current else [],
            "reload_seq": self.reloads.seq,
            "reload_requested": self.reloads.requested,
            "reload_covered": self.reloads.covered,
            "reload": self.reloads.last,
            "reloads": list(self.reloads.outcomes),
            "log_seq": self.reopen.completed_seq,
            "stopping": self.stop.requested,
            "scoreboard": self.config.server.scoreboard_file,
            "log_failures": self.reopen.failures,
        }
        temp = self.state_path + ".tmp"
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(state, handle)
            os.replace(temp, self.state_path)
        except OSError as exc:  # ENOSPC, EDQUOT, EROFS: httpdctl then waits in vain, told why
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if self.error_log:
                self.error_log.error(f"cannot write the state file {self.state_path}: "
                                     f"{exc.strerror or exc} (httpdctl reload, reopen-logs "
                                     f"and status cannot see this outcome)")

    def _cleanup(self) -> None:
        for path in (self.state_path,):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for generation in list(self.generations.values()):
            generation.close_listeners(set())
            if generation is not self.current:
                generation.close(set())
        self.pid_file.release(remove=True)
