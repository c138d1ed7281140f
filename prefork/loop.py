"""The per-thread event loop of a worker, and the blocking pool beside it.

How this works: each serving thread owns an epoll instance. The shared listening sockets are
registered in every loop with EPOLLEXCLUSIVE, so the kernel wakes one loop that is actually
waiting (a busy loop does not take the wake-up), and that loop accepts. Accepted connections
stay in the accepting loop for life: idle keep-alive connections cost a dict entry and an
epoll registration, never a thread. Ready connections are served inline (connection.py);
a request with a body is handed to the worker's BlockingPool and comes back through a queue
and an eventfd when done.

Capacity: a worker holds at most `max_connections`. At the limit a loop stops polling the
listeners, so the kernel hands new connections to other workers; if a connection is still
waiting after SATURATION_GRACE (every worker is full), it gets a fast 503 with Retry-After.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .connection import Action, Connection, ServerContext

if TYPE_CHECKING:
    from .scoreboard import Scoreboard, ThreadSlot

ACCEPT_BATCH = 16  # connections accepted per wake-up before serving the others again
SWEEP_INTERVAL = 0.5  # seconds between deadline scans
SATURATED_SWEEP_INTERVAL = 0.05
SATURATION_GRACE = 0.1  # seconds a connection may wait for a free worker before 503
SATURATION_LOG_INTERVAL = 10.0
RETRY_AFTER_SECONDS = 1
OVERLOAD_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: %d\r\nConnection: close\r\nContent-Length: 33\r\n\r\n"
    b"Server busy, please retry later.\n" % RETRY_AFTER_SECONDS
)
WILDCARD_HOSTS = ("0.0.0.0", "::")

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_LISTEN_FLAGS = select.EPOLLIN | select.EPOLLEXCLUSIVE


class Capacity:
    """Counts a worker's connections across its loops (each loop's dict is read lock-free)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.loops: list[EventLoop] = []
        self.last_saturation_log = 0.0

    def used(self) -> int:
        return sum(len(loop.conns) for loop in self.loops)

    def full(self) -> bool:
        return self.used() >= self.limit


class BlockingPool:
    """Threads for requests that may block for long; each thread has its own scoreboard slot."""

    def __init__(self, size: int, scoreboard: Scoreboard, process_slot: int, first_thread: int,
                 generation: int) -> None:
        self.local = threading.local()
        self.next_thread = first_thread
        self.slots: list[ThreadSlot] = []
        self.lock = threading.Lock()
        self.scoreboard = scoreboard
        self.process_slot = process_slot
        self.generation = generation
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="blocking",
                                           initializer=self._init_thread)

    def _init_thread(self) -> None:
        from .scoreboard import THREAD_LIMIT

        with self.lock:
            index = self.next_thread
            self.next_thread += 1
        if index < THREAD_LIMIT:
            slot = self.scoreboard.thread_slot(self.process_slot, index, self.generation)
            slot.ident, slot.native_id = threading.get_ident(), threading.get_native_id()
            self.local.slot = slot
            self.slots.append(slot)

    def slot(self, fallback: ThreadSlot) -> ThreadSlot:
        return getattr(self.local, "slot", fallback)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=False)


class EventLoop:
    """One serving thread's loop; see the module comment."""

    def __init__(self, number: int, listeners: list[socket.socket], ctx: ServerContext,
                 slot: ThreadSlot, capacity: Capacity, pool: BlockingPool) -> None:
        self.number = number
        self.listeners = {sock.fileno(): sock for sock in listeners}
        # For a listener bound to a specific address the local address is known already.
        self.local_of = {
            fd: (None if sock.getsockname()[0] in WILDCARD_HOSTS else sock.getsockname()[:2])
            for fd, sock in self.listeners.items()}
        self.ctx = ctx
        self.slot = slot
        self.capacity = capacity
        self.pool = pool
        self.epoll = select.epoll()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.conns: dict[int, Connection] = {}
        self.states: dict[int, Action] = {}
        self.returned: deque[tuple[Connection, Action]] = deque()
        self.accepting = False
        self.saturated_since = 0.0
        self.drain_requested = False
        self.draining = False
        self.idle_grace: float | None = None
        self.last_tick = time.monotonic()  # the worker's heartbeat checks that loops turn
        self.thread = threading.Thread(target=self.run, name=f"loop-{number}", daemon=True)

    # ------------------------------------------------------------------ control (other threads)

    def start(self) -> None:
        self.thread.start()

    def request_drain(self, idle_grace: float | None) -> None:
        """Ask the loop to stop accepting, finish its connections and end (thread-safe).

        `idle_grace`: how long idle keep-alive connections may still bring a request
        (None: until their keep-alive deadline, used when retiring for a reload)."""
        self.idle_grace = idle_grace
        self.drain_requested = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.eventfd_write(self.wake_fd, 1)
        except BlockingIOError:
            pass  # the counter is already non-zero: the loop will wake anyway

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        epoll = self.epoll
        conns = self.conns
        states = self.states
        listeners = self.listeners
        self.slot.ident, self.slot.native_id = threading.get_ident(), threading.get_native_id()
        epoll.register(self.wake_fd, _IN)
        self._start_accepting()
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not (self.draining and not conns):
                timeout = max(0.0, next_sweep - time.monotonic())
                for fd, _events in epoll.poll(timeout):
                    conn = conns.get(fd)
                    if conn is not None:
                        state = states[fd]
                        if state is Action.WANT_READ:
                            action = conn.on_readable()
                        elif state is Action.WANT_WRITE:
                            action = conn.on_writable()
                        elif state is Action.LINGER:
                            action = conn.on_linger_readable()
                        else:
                            continue
                        if action is not state:
                            self._apply(conn, action)
                    elif fd in listeners:
                        self._accept(listeners[fd], fd)
                    elif fd == self.wake_fd:
                        self._on_wake()
                now = time.monotonic()
                self.last_tick = now
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + (SATURATED_SWEEP_INTERVAL if self.saturated_since
                                        else SWEEP_INTERVAL)
        except Exception as exc:  # a bug here must not leave the worker half-alive
            self.ctx.error_log.error(f"event loop {self.number} failed: {exc!r}", exc=exc)
            raise
        finally:
            for conn in list(conns.values()):
                conn.close()
            epoll.close()
            os.close(self.wake_fd)

    def _apply(self, conn: Connection, action: Action) -> None:
        """Change what the loop waits for on `conn` according to `action`."""
        fd = conn.fd
        previous = self.states.get(fd)
        if action is Action.CLOSE:
            # Closing the only descriptor removed it from epoll already.
            self.conns.pop(fd, None)
            self.states.pop(fd, None)
        elif action is Action.HANDOFF:
            if previous is not Action.HANDOFF:
                self.epoll.unregister(fd)
            self.states[fd] = action
            self.pool.executor.submit(self._run_blocking, conn)
        elif action is Action.WANT_WRITE:
            if previous is Action.HANDOFF:
                self.epoll.register(fd, _OUT)
            elif previous is not Action.WANT_WRITE:
                self.epoll.modify(fd, _OUT)
            self.states[fd] = action
        else:  # WANT_READ or LINGER
            if previous is Action.HANDOFF:
                self.epoll.register(fd, _IN)
            elif previous is Action.WANT_WRITE:
                self.epoll.modify(fd, _IN)
            self.states[fd] = action

    def _run_blocking(self, conn: Connection) -> None:
        """In a pool thread: serve the request with a body, then give the connection back."""
        conn.slot = self.pool.slot(self.slot)
        try:
            action = conn.serve_blocking()
        except Exception as exc:
            self.ctx.error_log.error(f"blocking request failed: {exc!r}", conn.client, exc)
            action = conn.close()
        self.returned.append((conn, action))
        self._wake()

    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass
        while self.returned:
            conn, action = self.returned.popleft()
            conn.slot = self.slot
            if self.draining and action is Action.WANT_READ:
                drained = conn.start_draining(self.idle_grace)
                action = drained if drained is not None else action
            self._apply(conn, action)
            if action is Action.WANT_READ:
                self._apply(conn, conn.advance())  # pipelined requests may be buffered
        if self.drain_requested and not self.draining:
            self._begin_drain()

    # ------------------------------------------------------------------ accepting

    def _start_accepting(self) -> None:
        if not self.accepting and not self.draining:
            for fd in self.listeners:
                self.epoll.register(fd, _LISTEN_FLAGS)
            self.accepting = True
            self.saturated_since = 0.0

    def _stop_accepting(self) -> None:
        if self.accepting:
            for fd in self.listeners:
                self.epoll.unregister(fd)
            self.accepting = False

    def _accept(self, listener: socket.socket, listener_fd: int,
                limit: int | None = ACCEPT_BATCH) -> None:
        """Accept up to `limit` queued connections (None: all of them) while there is room."""
        capacity = self.capacity
        taken = 0
        while limit is None or taken < limit:
            taken += 1
            if capacity.full():
                self._on_saturated()
                return
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: back off until the next sweep
                self.ctx.error_log.error(f"accept() failed: {exc}")
                self._stop_accepting()
                self.saturated_since = time.monotonic()
                return
            self._adopt_new(sock, address, listener_fd)

    def _adopt_new(self, sock: socket.socket, address: tuple, listener_fd: int) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = self.local_of[listener_fd] or sock.getsockname()[:2]
        conn = Connection(sock, address[:2], local, self.ctx, self.slot, self.draining)
        fd = conn.fd
        self.conns[fd] = conn
        self.states[fd] = Action.WANT_READ
        self.epoll.register(fd, _IN)
        if self.ctx.debug:
            self.ctx.error_log.debug(
                f"connection accepted by loop {self.number}; "
                f"{self.capacity.used()}/{self.capacity.limit} connections in this worker",
                conn.client)
        # With TCP_DEFER_ACCEPT the request is usually here already: save a poll round trip.
        action = conn.on_readable()
        if action is not Action.WANT_READ:
            self._apply(conn, action)

    def _on_saturated(self) -> None:
        self._stop_accepting()
        now = time.monotonic()
        if not self.saturated_since:
            self.saturated_since = now
        capacity = self.capacity
        if now - capacity.last_saturation_log >= SATURATION_LOG_INTERVAL:
            capacity.last_saturation_log = now
            self.ctx.error_log.warn(
                f"worker pool saturated: {capacity.used()} connections reached "
                f"[workers] max_connections = {capacity.limit}; new connections wait for "
                f"another worker or get 503 (consider more processes or max_connections)")

    def _reject_waiting(self) -> None:
        """Every worker is full and a client has waited SATURATION_GRACE: answer it 503."""
        for fd, listener in self.listeners.items():
            readable, _, _ = select.select([fd], [], [], 0)
            if not readable:
                continue
            try:
                sock, _address = listener.accept()
            except OSError:
                continue
            try:
                sock.setblocking(False)
                sock.send(OVERLOAD_RESPONSE)
            except OSError:
                pass
            finally:
                sock.close()

    # ------------------------------------------------------------------ timers and draining

    def _sweep(self, now: float) -> None:
        self.slot.connections = len(self.conns)
        for fd, conn in list(self.conns.items()):
            state = self.states.get(fd)
            if state is Action.HANDOFF or conn.deadline > now:
                continue
            action = conn.close() if state is Action.LINGER else conn.on_timeout()
            self._apply(conn, action)
        if self.saturated_since and not self.draining:
            if not self.capacity.full():
                self._start_accepting()
            elif now - self.saturated_since >= SATURATION_GRACE:
                self._reject_waiting()

    def _begin_drain(self) -> None:
        """Stop accepting after taking what is already queued (so no queued client is reset),
        then let every connection finish its current request and close."""
        self.draining = True
        for fd, listener in self.listeners.items():
            if self.accepting:
                self._accept(listener, fd, limit=None)
        self._stop_accepting()
        for conn in list(self.conns.values()):
            if self.states.get(conn.fd) is Action.HANDOFF:
                conn.draining = True
                continue
            action = conn.start_draining(self.idle_grace)
            if action is not None:
                self._apply(conn, action)
