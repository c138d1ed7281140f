"""The per-thread event loop of a worker.

How this works: each serving thread owns an epoll instance. The shared listening sockets are
registered in every loop with EPOLLEXCLUSIVE, so the kernel wakes one loop that is actually
waiting (a busy loop does not take the wake-up), and that loop accepts. Accepted connections
stay in the accepting loop for life: idle keep-alive connections cost a dict entry and an
epoll registration, never a thread. Ready connections are served inline (connection.py); a
request that may block is lent to the worker's BlockingPool (pool.py) and comes back through
this loop's Mailbox.

One owner per descriptor: `conns` maps a descriptor number to the connection holding it.
Only this loop's thread adds to it, removes from it and closes a connection's socket, and
it does the last two together (_release), so the kernel cannot hand the number to a new
connection while the table still files the old one under it. A lent connection stays in
the table with its descriptor open; its hand-back is checked against the table by identity.

Exception barriers: every step taken for one connection (an epoll event, a hand-back, a
deadline, an accept) runs under a barrier: an exception escaping it is logged with its
traceback, answered 500 if no response was started, and closes that connection only
(Connection.fail). Should the loop itself fail, it logs, calls `on_death` and ends; the
worker then exits at once and the master starts a new one: no worker runs half its loops.

Capacity: a worker holds at most `max_connections`. At the limit a loop stops polling the
listeners, so the kernel hands new connections to other workers; if a connection is still
waiting after SATURATION_GRACE (every worker is full), it gets a fast 503 with Retry-After.
Out of descriptors (EMFILE/ENFILE) a loop closes its reserved descriptor, accepts with it,
answers 503 and closes, then reserves again (nginx's and libev's trick), so queued clients
are told rather than left waiting; the error log says so at most every FD_LOG_INTERVAL.
On a TLS listener both refusals are a bare close instead: a plaintext 503 is garbage to a
client that waits for a handshake, and a handshake is the work the server has no room for.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prefork.errors import OutOfDescriptors
from prefork.serve.connection import Action, Connection, ServerContext
from prefork.serve.pool import BlockingPool, Mailbox
from prefork.serve.tls import TLSServer, TLSTransport
from prefork.serve.transport import PlainTransport, Transport

if TYPE_CHECKING:
    from prefork.scoreboard import ThreadSlot

ACCEPT_BATCH = 16  # connections accepted per wake-up before serving the others again
SWEEP_INTERVAL = 0.5  # seconds between deadline scans
SATURATED_SWEEP_INTERVAL = 0.05
SATURATION_GRACE = 0.1  # seconds a connection may wait for a free worker before 503
SATURATION_LOG_INTERVAL = 10.0
FD_LOG_INTERVAL = OutOfDescriptors.log_every  # seconds between "out of descriptors" lines
BUSY_LOG_INTERVAL = 10.0  # seconds between "blocking pool full" lines, per worker
RETRY_AFTER_SECONDS = 1
OVERLOAD_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: %d\r\nConnection: close\r\nContent-Length: 33\r\n\r\n"
    b"Server busy, please retry later.\n" % RETRY_AFTER_SECONDS
)
REFUSED_READ_LIMIT = 65536  # request bytes read (and dropped) before closing a refused socket
WILDCARD_HOSTS = ("0.0.0.0", "::")
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_LISTEN_FLAGS = select.EPOLLIN | select.EPOLLEXCLUSIVE
WANT_READ, WANT_WRITE, LINGER = Action.WANT_READ, Action.WANT_WRITE, Action.LINGER
WAIT_BODY, HANDOFF, CLOSE = Action.WAIT_BODY, Action.HANDOFF, Action.CLOSE
SERVE = Action.SERVE


class Capacity:
    """What a worker's loops share: the connection count (each loop's dict is read
    lock-free) and the clocks that bound how often they log the same trouble."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.loops: list[EventLoop] = []
        self.last_saturation_log = 0.0
        self.last_busy_log = -BUSY_LOG_INTERVAL

    def used(self) -> int:
        return sum(len(loop.conns) for loop in self.loops)

    def full(self) -> bool:
        return self.used() >= self.limit


def reserve_descriptor() -> int:
    """A descriptor kept only to be closed when the process runs out (-1 if none is left)."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def answer_and_close(sock: socket.socket, response: bytes) -> None:
    """Send a short final answer (b"": none) on a socket we never serve, then close it. What
    the client sent already is read first: closing with unread input would reset the
    connection."""
    try:
        sock.setblocking(False)
        if response:
            sock.send(response)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(REFUSED_READ_LIMIT)
    except OSError:
        pass
    finally:
        sock.close()


class EventLoop:
    """One serving thread's loop; see the module comment."""

    def __init__(self, number: int, listeners: list[socket.socket], ctx: ServerContext,
                 slot: ThreadSlot, capacity: Capacity, pools: Mapping[str, BlockingPool],
                 on_death: Callable[[], None] | None = None,
                 tls: Mapping[int, TLSServer] | None = None) -> None:
        self.number = number
        self.listeners = {sock.fileno(): sock for sock in listeners}
        self.tls = tls or {}  # listener descriptor -> its TLS server (absent: plain)
        # What a client refused for want of room gets, by listener: the 503, or on a TLS
        # listener nothing but the close (see the module comment).
        self.refusal = {fd: b"" if fd in self.tls else OVERLOAD_RESPONSE
                        for fd in self.listeners}
        # For a listener bound to a specific address the local address is known already.
        self.local_of = {
            fd: (None if sock.getsockname()[0] in WILDCARD_HOSTS else sock.getsockname()[:2])
            for fd, sock in self.listeners.items()}
        self.ctx = ctx
        self.slot = slot
        self.capacity = capacity
        self.pools = pools  # by name: "" the worker's blocking pool, else an application's
        self.on_death = on_death
        self.epoll = select.epoll()
        self.mailbox: Mailbox[tuple[Connection, Action]] = Mailbox()
        self.reserve_fd = reserve_descriptor()
        self.conns: dict[int, Connection] = {}
        self.accepting = False
        self.saturated_since = 0.0
        self.drain_requested = False
        self.draining = False
        self.died = False
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
        self.mailbox.post(None)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        self.slot.ident, self.slot.native_id = threading.get_ident(), threading.get_native_id()
        try:
            self._serve()
        except BaseException as exc:  # past every barrier: this loop cannot go on
            self.died = True
            self.ctx.error_log.error(f"event loop {self.number} died: {exc!r}; the worker "
                                     f"exits and is replaced", exc=exc)
            if self.on_death is not None:
                self.on_death()
        finally:
            self._close_all()

    def _serve(self) -> None:
        epoll = self.epoll
        conns = self.conns
        listeners = self.listeners
        mailbox = self.mailbox
        mail_fd = mailbox.fd
        epoll.register(mail_fd, _IN)
        self._start_accepting()
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while not (self.draining and not conns):
            # The mailbox rings only while `asleep` (pool.Mailbox): set it, then look.
            mailbox.asleep = True
            timeout = 0.0 if mailbox.waiting() else max(0.0, next_sweep - time.monotonic())
            ready = epoll.poll(timeout)
            mailbox.asleep = False
            for fd, _events in ready:
                conn = conns.get(fd)
                if conn is not None:
                    state = conn.waiting
                    try:  # the barrier: costs nothing until something raises
                        if state is WANT_READ:
                            action = conn.on_readable()
                        elif state is WANT_WRITE:
                            action = conn.on_writable()
                        elif state is WAIT_BODY:
                            action = conn.on_body_readable()
                        elif state is LINGER:
                            action = conn.on_linger_readable()
                        else:  # lent: the client sent more, or a body arrives
                            self._quiet(conn)
                            continue
                        if action is not state or conn.transport.layered:
                            self._apply(conn, action)
                    except Exception as exc:
                        self._abandon(conn, exc)
                elif fd in listeners:
                    self._accept(listeners[fd], fd)
                elif fd == mail_fd:
                    mailbox.clear()
            # Hand-backs posted while the loop was awake rang nothing: take them every turn.
            if mailbox.waiting() or self.drain_requested:
                self._on_mail()
            now = time.monotonic()
            self.last_tick = now
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + (SATURATED_SWEEP_INTERVAL if self.saturated_since
                                    else SWEEP_INTERVAL)

    def _close_all(self) -> None:
        """The loop has ended: close what it owns. A connection still lent to a pool thread
        is left alone (the loop ended only because it died or the process exits)."""
        for conn in list(self.conns.values()):
            if not conn.lent:
                try:
                    self._release(conn)
                except Exception:
                    pass
        self.epoll.close()
        self.mailbox.close()
        if self.reserve_fd >= 0:
            os.close(self.reserve_fd)
            self.reserve_fd = -1

    # ------------------------------------------------------------------ connection states

    def _apply(self, conn: Connection, action: Action) -> None:
        """Change what the loop waits for on `conn` according to `action`.

        A transport with state of its own (TLS) may hold decrypted bytes epoll cannot see:
        they are read before waiting. Its read may wait for the socket to be writable (and a
        write for readable): `inverted` turns the events around."""
        transport = conn.transport
        while (action is WANT_READ or action is WAIT_BODY) and transport.pending():
            action = conn.on_readable() if action is WANT_READ else conn.on_body_readable()
        if action is CLOSE:
            self._release(conn)
        elif action is HANDOFF:
            self._lend(conn)
        else:
            events = _OUT if action is WANT_WRITE else _IN
            if transport.inverted:
                events = _IN if events == _OUT else _OUT
            if conn.events != events:
                if conn.events:
                    self.epoll.modify(conn.fd, events)
                else:
                    self.epoll.register(conn.fd, events)
                conn.events = events
            conn.waiting = action

    def _release(self, conn: Connection) -> None:
        """Remove `conn` from the table and close its socket, in the same step."""
        if self.conns.get(conn.fd) is conn:
            del self.conns[conn.fd]
        conn.lent = False
        conn.events = 0  # closing the descriptor takes it out of epoll
        try:
            conn.close()
        finally:
            if not conn.released:  # close() failed half-way: the descriptor still goes
                conn.released = True
                conn.transport.close()

    def _lend(self, conn: Connection) -> None:
        """Queue `conn` for a pool thread, or answer 503 when the queue is full.

        It stays registered in epoll: most lent requests come back before the client sends
        anything more, and then waiting for its next request costs no epoll_ctl at all. An
        event while it is lent takes it out (_quiet), so a body being read by the pool
        thread, or a pipelined request, does not wake this loop again and again."""
        conn.waiting = HANDOFF
        conn.lent = True  # before submit(): a pool thread may start on it at once
        if self.pools[conn.pool_name].submit(conn, self.mailbox):
            return
        conn.lent = False
        self._log_busy(conn.pool_name, "the queue is full")
        self._apply(conn, conn.refuse("no blocking thread is free; retry later"))

    def _quiet(self, conn: Connection) -> None:
        """An event for a lent connection: stop watching it until it comes back."""
        if conn.events:
            self.epoll.unregister(conn.fd)
            conn.events = 0

    def _log_busy(self, name: str, why: str) -> None:
        capacity = self.capacity
        now = time.monotonic()
        if now - capacity.last_busy_log >= BUSY_LOG_INTERVAL:
            capacity.last_busy_log = now
            pool = self.pools[name]
            threads = f"[{name}] threads" if name else "[workers] blocking_threads"
            # An application's queue is bounded by the connections the worker holds (see
            # WorkerService): name the setting that bounds this pool's.
            bound = "[workers] max_connections" if name else "[workers] blocking_queue"
            self.ctx.error_log.warn(
                f"{'the ' + name if name else 'blocking'} pool busy ({why}): {pool.size} "
                f"threads ({threads}), {pool.queued()} requests queued of at most "
                f"{pool.queue_limit} ({bound}); answering 503")

    def _on_mail(self) -> None:
        """Connections handed back by pool threads (a batch: all that wait, in the order
        posted, at most one per lent connection), and drain requests."""
        for conn, action in self.mailbox.take():
            if self.conns.get(conn.fd) is not conn or not conn.lent:
                self.ctx.error_log.error(f"loop {self.number}: a hand-back for a connection "
                                         f"this loop does not hold was ignored", conn.client)
                continue
            conn.lent = False
            conn.slot = self.slot
            try:
                if action is SERVE:  # a pipelined request the pool thread began: ours
                    action = conn.serve_begun()
                elif action is WANT_READ:
                    action = conn.advance()  # pipelined requests may be buffered
                if action is WANT_READ and self.draining:
                    action = conn.start_draining(self.idle_grace) or action
                self._apply(conn, action)
            except Exception as exc:
                self._abandon(conn, exc)
        if self.drain_requested and not self.draining:
            self._begin_drain()

    def _abandon(self, conn: Connection, exc: Exception) -> None:
        """The barrier's catch: `exc` escaped while serving `conn`. Answer 500 if nothing
        was sent yet, log, close that connection; the loop goes on."""
        if conn.lent:  # a pool thread serves it and will hand it back: only log
            self.ctx.error_log.error(f"loop {self.number}: {exc!r} while a pool thread holds "
                                     f"the connection", conn.client, exc)
            return
        try:
            conn.fail(exc)
        except Exception as second:
            self.ctx.error_log.error(f"loop {self.number}: closing a failed connection: "
                                     f"{second!r}", conn.client, second)
        try:
            self._release(conn)
        except Exception as third:
            self.ctx.error_log.error(f"loop {self.number}: releasing a failed connection: "
                                     f"{third!r}", conn.client, third)

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
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue  # the client gave up while queued
                if exc.errno in _OUT_OF_FILES and self._refuse_with_reserve(
                        listener, self.refusal[listener_fd], exc):
                    continue
                self._back_off(exc)
                return
            self._adopt_new(sock, address, listener_fd)

    def _refuse_with_reserve(self, listener: socket.socket, refusal: bytes, exc: OSError
                             ) -> bool:
        """Out of descriptors: close the reserved one, accept a client in its place, answer
        it `refusal` (the 503, or nothing on a TLS listener) and close, then reserve again.
        False if there was no reserve to use."""
        self._log_out_of_files(exc)
        if self.reserve_fd < 0:
            return False
        os.close(self.reserve_fd)
        self.reserve_fd = -1
        try:
            try:
                sock, _address = listener.accept()
            except OSError:
                return False
            answer_and_close(sock, refusal)
            return True
        finally:
            self.reserve_fd = reserve_descriptor()

    def _log_out_of_files(self, exc: OSError) -> None:
        # One limiter with the handlers' 503s for the same shortage (OutOfDescriptors): the
        # error log says "out of descriptors" at most once per interval per worker.
        held = self.ctx.error_log.hold(OutOfDescriptors.__name__, FD_LOG_INTERVAL)
        if held is None:
            return
        more = f" ({held} more since the last such line)" if held else ""
        self.ctx.error_log.error(
            f"accept(): out of file descriptors ({errno.errorcode.get(exc.errno or 0)}: "
            f"{exc.strerror}) with {self.capacity.used()} connections in this worker; new "
            f"clients get 503 (on a TLS listener, a close) through the reserved one. Raise "
            f"the limit (ulimit -n, systemd LimitNOFILE) or lower [workers] "
            f"max_connections{more}")

    def _back_off(self, exc: OSError) -> None:
        """accept() failed for want of memory or descriptors with no reserve left: stop
        polling the listeners until the next (quick) sweep."""
        if exc.errno in _OUT_OF_FILES:
            self._log_out_of_files(exc)
        else:
            self.ctx.error_log.error(f"accept() failed: {exc}")
        self._stop_accepting()
        self.saturated_since = time.monotonic()

    def _adopt_new(self, sock: socket.socket, address: tuple[Any, ...], listener_fd: int
                   ) -> None:
        try:
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = self.local_of[listener_fd] or sock.getsockname()[:2]
            tls = self.tls.get(listener_fd)
            transport: Transport = (PlainTransport(sock) if tls is None
                                    else TLSTransport(sock, tls, address[:2]))
            conn = Connection(transport, address[:2], local, self.ctx, self.slot,
                              self.draining)
            if tls is not None:  # the handshake must end within the header timeout
                conn.deadline = min(conn.deadline, time.monotonic() + self.ctx.header_timeout)
        except Exception:  # reset before we got to it (ENOTCONN...)
            sock.close()
            return
        self.conns[conn.fd] = conn
        try:
            self.epoll.register(conn.fd, _IN)
            conn.events = _IN
            if self.ctx.debug:
                self.ctx.error_log.debug(
                    f"connection accepted by loop {self.number}; "
                    f"{self.capacity.used()}/{self.capacity.limit} connections in this worker",
                    conn.client)
            # With TCP_DEFER_ACCEPT the request is usually here already: save a poll.
            action = conn.on_readable()
            if action is not WANT_READ or conn.transport.layered:
                self._apply(conn, action)
        except Exception as exc:
            self._abandon(conn, exc)

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
                f"another worker or get 503 (on a TLS listener, a close; consider more "
                f"processes or max_connections)")

    def _reject_waiting(self) -> None:
        """Every worker is full and a client has waited SATURATION_GRACE: answer it 503
        (close it, on a TLS listener)."""
        for fd, listener in self.listeners.items():
            readable, _, _ = select.select([fd], [], [], 0)
            if not readable:
                continue
            try:
                sock, _address = listener.accept()
            except OSError:
                continue
            answer_and_close(sock, self.refusal[fd])

    # ------------------------------------------------------------------ timers and draining

    def _sweep(self, now: float) -> None:
        """Act on every passed deadline (each under the barrier); resume accepting."""
        slot = self.slot
        slot.connections = len(self.conns)
        keepalive = writing = closing = 0
        for conn in list(self.conns.values()):
            # The states mod_status counts for an event MPM (ConnsAsync*), tallied here
            # rather than on every change: a sweep visits every connection anyway.
            state = conn.waiting
            if state is WANT_WRITE:
                writing += 1
            elif state is LINGER:
                closing += 1
            elif state is WANT_READ and conn.head is None and conn.requests:
                keepalive += 1
            if conn.deadline > now:
                continue
            try:
                state = conn.waiting
                if state is HANDOFF:
                    if not self.pools[conn.pool_name].withdraw(conn):
                        continue  # a thread has it: the body reader keeps its deadlines
                    conn.lent = False
                    self._log_busy(conn.pool_name, "a request waited past its deadline")
                    action = conn.refuse("no blocking thread was free in time")
                elif state is LINGER:
                    action = conn.close()
                else:
                    action = conn.on_timeout()
                self._apply(conn, action)
            except Exception as exc:
                self._abandon(conn, exc)
        slot.keepalive, slot.writing, slot.closing = keepalive, writing, closing
        if self.reserve_fd < 0:
            self.reserve_fd = reserve_descriptor()
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
            if conn.lent:
                conn.draining = True  # read by its pool thread when it frames the response
                continue
            try:
                action = conn.start_draining(self.idle_grace)
                if action is not None:
                    self._apply(conn, action)
            except Exception as exc:
                self._abandon(conn, exc)
