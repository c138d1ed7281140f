"""A worker process: everything after fork().

The worker sets its title, asks the kernel to signal it when the master dies, drops
privileges, builds what it serves with (the site's hooks: event loops, a blocking pool),
tells the master it is ready (one byte on its pipe), then its main thread only watches:
signals, the master's existence and the recycling limit. It never binds or forks.

Descriptors: the first thing a new worker does is close every descriptor it inherited except
its own (stdio, its boot pipe, its generation's listeners and log files, the scoreboard's
mapping): the master's PID file, wake-up pipe, other workers' boot pipes and older
generations' sockets and logs never live on in a worker.

Signals: the master blocks signals across fork(); the worker unblocks them only once its own
handlers are installed, so a TERM or USR2 sent right after the spawn waits for them instead
of reaching the master's handlers in the child (and being lost). TERM = graceful stop
(accept what is queued, close the listeners, finish requests, close idle connections after
a short grace, exit 0); USR2 = retire (the same, but idle keep-alive connections may bring one
more request until their keep-alive deadline: used for reloads and recycling, so no client
that sends just then sees a reset); INT/QUIT = exit now; USR1 = reopen logs and acknowledge
in the scoreboard; HUP ignored (reloads are the master's business).

Health: every second the main thread writes a heartbeat into the scoreboard if every event
loop has ticked recently (the master kills a worker whose heartbeat stops), and runs the
request watchdog: a request older than request_timeout is logged with a stack dump of its
thread, and the worker asks the master to replace it. Reaching max_requests also asks for a
replacement; the master starts it before this worker retires, so capacity never drops.
"""

from __future__ import annotations

import ctypes
import os
import random
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from prefork.config.settings import Config
from prefork.log import AccessLog, ErrorLog
from prefork.process.hooks import Service, SiteHooks
from prefork.process.privileges import drop_privileges
from prefork.scoreboard import (
    FINISHING,
    READY,
    RECYCLE,
    STOPPING,
    WRITING,
    Scoreboard,
    ThreadSlot,
)

# Exit codes the master interprets (gunicorn uses 3 for a worker that failed to boot).
EXIT_OK = 0
EXIT_BOOT_FAILED = 3
EXIT_ORPHANED = 4
EXIT_LOOP_DIED = 5  # an event loop failed past its barriers: exit now, the master respawns

WATCH_INTERVAL = 1.0  # seconds between the main thread's checks
LOOP_STALL = 10.0  # a loop that has not ticked for this long stops the heartbeat
STOP_IDLE_GRACE = 0.5  # seconds idle connections may still send a request during a stop
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RECYCLE_MAX_REQUESTS, RECYCLE_HUNG_REQUEST, RECYCLE_LOOP_DIED = 1, 2, 3  # scoreboard codes


@dataclass
class WorkerSpec:
    """What the master hands a new worker."""

    config: Config
    listeners: list[socket.socket]
    number: int
    generation: int
    process_slot: int
    scoreboard: Scoreboard
    master_pid: int
    ready_fd: int  # write end of the pipe the master watches
    error_log: ErrorLog
    access_log: AccessLog
    signal_mask: AbstractSet[int]  # the mask to restore once our handlers are installed
    site: SiteHooks  # builds what this worker serves with (process/hooks.py)


def keep_only(keep: set[int]) -> None:
    """Close every descriptor of this process not in `keep` (after fork: what the master
    held is not ours to keep)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory listing's own descriptor, closed already


def own_descriptors(spec: WorkerSpec) -> set[int]:
    """What a worker keeps: stdio, its boot pipe, its listeners, its logs, the scoreboard."""
    keep = {0, 1, 2, spec.ready_fd, *(sock.fileno() for sock in spec.listeners)}
    for log in (spec.error_log, spec.access_log):
        if log.file is not None:
            keep.add(log.file.fd)
    if spec.scoreboard.fd is not None:
        keep.add(spec.scoreboard.fd)
    return keep


def set_parent_death_signal(signum: int) -> None:
    """Ask Linux to send `signum` when the parent dies (prctl PR_SET_PDEATHSIG); best effort."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the periodic getppid() check still catches an orphaned worker


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.stop_requested = False
        self.fast_exit = False
        self.reopen_requested = False
        self.idle_grace: float | None = STOP_IDLE_GRACE
        self.recycle_asked = False
        self.loop_died = False
        self.service: Service | None = None
        self.request_limit = 0

    def run(self) -> int:
        """Serve until told to stop; returns the process exit code."""
        spec = self.spec
        log = spec.error_log
        try:
            self._setup()
        except Exception as exc:
            log.error(f"worker {spec.number} (generation {spec.generation}) failed to boot: "
                      f"{exc}", exc=exc)
            return EXIT_BOOT_FAILED
        os.write(spec.ready_fd, b"R")
        os.close(spec.ready_fd)
        spec.scoreboard.set_process_state(spec.process_slot, READY)
        code = self._watch()
        if code != EXIT_LOOP_DIED:  # with a loop dead, nothing is drained: exit at once
            self._drain()
        return code

    def _setup(self) -> None:
        spec = self.spec
        config = spec.config
        try:
            from setproctitle import setproctitle

            setproctitle(f"httpd: worker {spec.number} gen {spec.generation}")
        except ImportError:
            pass
        set_parent_death_signal(signal.SIGTERM)
        self._install_signals()
        # Our handlers are in place: signals that arrived since fork() are delivered now.
        signal.pthread_sigmask(signal.SIG_SETMASK, spec.signal_mask)
        if os.getppid() != spec.master_pid:
            raise RuntimeError("the master exited while this worker was starting")
        drop_privileges(config.server.user, config.server.group)
        self.service = spec.site.serve(config, spec.listeners, spec.scoreboard,
                                       spec.process_slot, spec.generation, spec.error_log,
                                       spec.access_log, self._on_loop_death)
        workers = config.workers
        if workers.max_requests:
            self.request_limit = workers.max_requests + random.randint(
                0, workers.max_requests_jitter)
        self.service.start()

    def _on_loop_death(self) -> None:
        """Called by a dying loop thread: wake the main thread, which exits at once."""
        self.loop_died = True
        try:
            os.write(self.wake_w, b"L")
        except OSError:
            pass  # the pipe is full: the main thread is awake already

    def _install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

        def graceful(_signum: int, _frame: object) -> None:
            self.stop_requested = True

        def retire(_signum: int, _frame: object) -> None:
            self.stop_requested = True
            self.idle_grace = None

        def fast(_signum: int, _frame: object) -> None:
            self.stop_requested = True
            self.fast_exit = True

        def reopen(_signum: int, _frame: object) -> None:
            self.reopen_requested = True

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, fast)
        signal.signal(signal.SIGQUIT, fast)
        signal.signal(signal.SIGUSR1, reopen)
        signal.signal(signal.SIGUSR2, retire)
        for ignored in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(ignored, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _watch(self) -> int:
        """The main thread's loop: returns the exit code once the worker should stop."""
        spec = self.spec
        log = spec.error_log
        while not self.stop_requested:
            select.select([self.wake_r], [], [], WATCH_INTERVAL)
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            if self.fast_exit:
                os._exit(EXIT_OK)
            if self.reopen_requested:
                self.reopen_requested = False
                self._reopen_logs()
            if os.getppid() != spec.master_pid:
                log.error("the master process is gone; this worker stops")
                return EXIT_ORPHANED
            for slot in self._slots():
                slot.publish()
            now = time.monotonic()
            service = self.service
            if self.loop_died or service is None or not service.alive():
                log.error(f"worker {spec.number} exits: an event loop died (see above); the "
                          f"master starts a replacement")
                return EXIT_LOOP_DIED
            if service.ticking(now, LOOP_STALL):
                spec.scoreboard.beat(spec.process_slot)
            if self.request_limit and self._requests_served() >= self.request_limit:
                self._ask_recycle(RECYCLE_MAX_REQUESTS)
            if spec.config.workers.request_timeout:
                self._watchdog(spec.config.workers.request_timeout)
        return EXIT_OK

    def _reopen_logs(self) -> None:
        """Reopen both logs; one that cannot be reopened keeps its old file (and this worker
        keeps serving), and the failure is acknowledged so `httpdctl reopen-logs` names us."""
        spec = self.spec
        failed = False
        for log in (spec.access_log, spec.error_log):
            try:
                log.reopen()
            except OSError as exc:
                failed = True
                spec.error_log.error(f"worker {spec.number} (generation {spec.generation}) "
                                     f"cannot reopen {exc.filename or 'a log'}: "
                                     f"{exc.strerror or exc}; it keeps writing to the old file")
        spec.scoreboard.acknowledge_log_seq(spec.process_slot, failed)

    def _ask_recycle(self, reason: int) -> None:
        """Ask the master for a replacement; we keep serving until it tells us to retire."""
        if not self.recycle_asked:
            self.recycle_asked = True
            self.spec.scoreboard.set_process_state(self.spec.process_slot, RECYCLE, reason)

    def _slots(self) -> list[ThreadSlot]:
        return self.service.slots() if self.service is not None else []

    def _requests_served(self) -> int:
        return sum(slot.requests for slot in self._slots())

    def _watchdog(self, limit: float) -> None:
        """Report each request running longer than `limit` once, with its thread's stack.
        Measured on the monotonic clock: a step of the wall clock reports nothing."""
        now = time.monotonic()
        frames = sys._current_frames()
        for slot in self._slots():
            started = slot.started_mono
            if slot.state != WRITING or not started or slot.reported == started:
                continue
            running = now - started
            if running <= limit:
                continue
            slot.reported = started
            frame = frames.get(slot.ident)
            stack = "".join(traceback.format_stack(frame)) if frame else "(no stack)\n"
            self.spec.error_log.log(
                "error",
                f"request running {running:.1f}s exceeds [workers] request_timeout "
                f"({limit:g}s): {slot.line[:256]!r} from {slot.client} in thread (tid) "
                f"{slot.native_id}; this worker will be replaced. Stack of that thread:",
                appendix=stack)
            self._ask_recycle(RECYCLE_HUNG_REQUEST)

    def _drain(self) -> None:
        """Graceful stop: loops take what is queued, finish in-flight requests, then end.
        The master enforces graceful_timeout with SIGKILL; we also give up at that point."""
        spec = self.spec
        spec.scoreboard.set_process_state(spec.process_slot, STOPPING)
        service = self.service
        assert service is not None
        service.drain(self.idle_grace)
        deadline = time.monotonic() + spec.config.workers.graceful_timeout
        self._close_listeners_after_last_accept(service, deadline)
        service.wait(deadline, lambda: self.fast_exit)
        service.shutdown()
        for sock in spec.listeners:
            sock.close()

    def _close_listeners_after_last_accept(self, service: Service, deadline: float) -> None:
        """Close our copies of the listening sockets as soon as every loop has taken its
        last connection from them (it accepts what is queued, then stops polling them).

        The master closed its own copies before telling us to stop; once the last worker
        closes its copies the kernel refuses new connections (RST to the SYN) instead of
        completing handshakes nobody will accept, to be reset when we exit. On a reload the
        new generation holds the sockets it kept, so they stay open for it."""
        while time.monotonic() < deadline and not self.fast_exit:
            if service.accepting_done():
                break
            time.sleep(0.005)
        for sock in self.spec.listeners:
            sock.close()
        # The master waits for this before it reports a reload done: from then on, only the
        # new generation takes connections (and so answers with the new code).
        self.spec.scoreboard.set_process_state(self.spec.process_slot, FINISHING)


def run_worker(spec: WorkerSpec) -> None:
    """Entry point in the child after fork(); never returns."""
    code = EXIT_BOOT_FAILED
    try:
        keep_only(own_descriptors(spec))
        code = Worker(spec).run()
    except BaseException as exc:  # the child must never fall back into the master's code
        try:
            spec.error_log.error(f"worker {spec.number} crashed: {exc!r}", exc=exc)
        except Exception:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)
