"""The blocking pool of a worker, and the mailbox that gives a connection back to its loop.

How this works. A request that may block for long (one with a body, or one that needs a
bcrypt check) is served on a pool thread, so the event loop that owns the connection goes
on serving its other connections. Ownership never moves: the loop keeps the connection in
its table and only lends it. `submit()` puts it in a FIFO admission queue of at most
`queue_limit` entries and refuses (the loop answers 503) when the queue is full, so a burst
costs a fast, honest answer instead of an unbounded wait. A queued connection keeps its
deadline: the loop's sweep `withdraw()`s one whose deadline passed before a thread took it
(answered 503 as well). A pool thread serves the request, then posts the connection and what
the loop should do next to the loop's Mailbox; it never closes the socket, never touches
epoll and never reads the loop's table: only the owning loop does (docs/architecture.md,
"who owns what").

Bounds: the queue holds at most `queue_limit` connections; a mailbox holds at most one item
per connection lent out, so at most `size` items per loop (a queued connection is not in any
mailbox). Threads are started up front: their number is fixed and visible in the scoreboard.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from prefork.serve.context import Action

if TYPE_CHECKING:
    from prefork.scoreboard import ThreadSlot
    from prefork.serve.connection import Connection

CLOSE, HANDOFF, WANT_READ = Action.CLOSE, Action.HANDOFF, Action.WANT_READ
# Requests of one keep-alive connection a pool thread serves in a row when the next is
# buffered already (Connection.serve_next): it then goes back to its loop all the same, so
# one pipelining client cannot keep a thread to itself.
CONSECUTIVE_LIMIT = 8

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Items posted by other threads to one event loop, with an eventfd to wake it.

    The eventfd is written only when the loop sleeps (or is about to) in epoll: a loop that
    is awake takes the items before it next polls, so a busy loop gets its hand-backs for
    the price of a deque append. The handshake: the loop sets `asleep`, then looks at the
    items (`waiting()`), then polls; a poster appends, then reads `asleep`. Each does its
    write before its read (the GIL orders them), so either the loop sees the item and does
    not wait, or the poster sees the flag and rings. There is no "rung already" flag to save
    a second ring in one sleep: resetting it races with a ring under way, and a ring lost so
    leaves a hand-back waiting for the next sweep (half a second).

    The eventfd is written only under the lock and only while open, so a late post after
    the loop closed the mailbox can never write to a closed (or reused) descriptor."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self.asleep = False  # set and cleared by the loop around epoll.poll()

    def post(self, item: T | None) -> bool:
        """Queue `item` (None: only wake the loop); False when the mailbox is closed (the loop
        has ended: the process is exiting, and the item is dropped)."""
        if self._closed:
            return False
        if item is not None:
            self._items.append(item)  # deque.append is atomic: no lock needed
            if not self.asleep:
                return True  # awake: it takes the item before its next poll
        with self._lock:
            if self._closed:
                return False
            try:
                os.eventfd_write(self.fd, 1)
            except BlockingIOError:
                pass  # the counter is already non-zero: the loop will wake anyway
        return True

    def waiting(self) -> bool:
        """In the loop, after setting `asleep`: whether items wait (then it must not sleep)."""
        return bool(self._items)

    def clear(self) -> None:
        """In the loop, when `fd` was readable: reset the eventfd before taking the items."""
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def take(self) -> list[T]:
        """In the loop: the items posted so far, oldest first. Only those: what pool threads
        post meanwhile waits for the next turn, after the loop has polled its sockets."""
        items = self._items
        return [items.popleft() for _ in range(len(items))]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)


Job = tuple["Connection", Mailbox[tuple["Connection", "Action"]]]


class BlockingPool:
    """`size` threads behind a FIFO admission queue of at most `queue_limit` connections.

    The queue is a deque under one plain lock; a thread with nothing to do files its own
    wake-up lock in `_idle` and blocks on it, and submit() releases the lock of the idle
    thread that went idle last (its stack and caches are the warmest). That is one lock
    release per hand-off, where a Condition builds a new lock for every wait and takes its
    own lock again on waking."""

    def __init__(self, size: int, queue_limit: int,
                 slot_for: Callable[[int], ThreadSlot | None], name: str = "") -> None:
        """`slot_for(index)`: the scoreboard slot of pool thread `index` (None: the thread
        records its requests in the slot of the loop that lent the connection). `name`: the
        pool's key in the loops' table (Connection.pool_name): "" the worker's blocking
        pool, else an application's."""
        self.name = name
        self.size = size
        self.queue_limit = queue_limit
        self._queue: deque[Job] = deque()
        self._lock = threading.Lock()
        self._idle: list[threading.Lock] = []  # wake-up locks of the threads waiting for work
        self._stopping = False
        slots = [slot_for(index) for index in range(size)]
        self.slots: list[ThreadSlot] = [slot for slot in slots if slot is not None]
        self._threads = [threading.Thread(target=self._work, args=(slot,),
                                          name=f"blocking-{index}", daemon=True)
                         for index, slot in enumerate(slots)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, conn: Connection, mailbox: Mailbox[tuple[Connection, Action]]) -> bool:
        """Queue `conn` for a thread; False when the queue is full (the caller answers 503)."""
        with self._lock:
            if len(self._queue) >= self.queue_limit or self._stopping:
                return False
            self._queue.append((conn, mailbox))
            wake = self._idle.pop() if self._idle else None
        if wake is not None:
            wake.release()
        return True

    def withdraw(self, conn: Connection) -> bool:
        """Take `conn` back out of the queue; False when a thread has it already."""
        with self._lock:
            for job in self._queue:
                if job[0] is conn:
                    self._queue.remove(job)
                    return True
        return False

    def queued(self) -> int:
        return len(self._queue)

    def shutdown(self) -> None:
        """Let the threads end once the queue is empty (they are daemons: the process exit
        does not wait for one still serving)."""
        with self._lock:
            self._stopping = True
            idle, self._idle = self._idle, []
        for wake in idle:
            wake.release()

    def _next(self, wake: threading.Lock) -> Job | None:
        """The oldest queued job, waiting for one (None: the pool is stopping)."""
        while True:
            with self._lock:
                if self._queue:
                    return self._queue.popleft()
                if self._stopping:
                    return None
                self._idle.append(wake)  # submit() or shutdown() releases it, once
            wake.acquire()

    def _work(self, slot: ThreadSlot | None) -> None:
        if slot is not None:
            slot.ident, slot.native_id = threading.get_ident(), threading.get_native_id()
        wake = threading.Lock()
        wake.acquire()  # held: acquiring it again waits for a release by submit()
        while (job := self._next(wake)) is not None:
            conn, mailbox = job
            # serve_blocking() is the pool's exception barrier and returns an Action; should
            # even it fail, the connection still goes back to its loop, to be closed there,
            # and the thread serves on: a pool thread that ended would leave the pool a
            # thread short for the worker's life, and its mount answering 503 once all went.
            action = CLOSE
            try:
                action = conn.serve_blocking(slot)
                served = 1
                # A pipelining connection whose next request came with this one stays with
                # this thread (still lent: ownership does not move) while no one else waits
                # for the pool: a round trip through the loop saved.
                while (action is WANT_READ and served < CONSECUTIVE_LIMIT and not self._queue
                       and not conn.transport.layered):
                    action = conn.serve_next()
                    if action is not HANDOFF or conn.pool_name != self.name:
                        break
                    action = conn.serve_blocking(slot)
                    served += 1
            except BaseException as exc:  # the barrier itself failed
                action = CLOSE
                try:
                    conn.ctx.error_log.error(f"pool thread: {exc!r} escaped the barrier; the "
                                             f"connection is closed", conn.client, exc)
                except BaseException:  # nothing left to tell it with
                    pass
            finally:
                mailbox.post((conn, action))
