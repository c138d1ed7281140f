"""The hand-off machinery on its own: the blocking pool's admission queue (FIFO, bounded,
withdrawable, one idle thread woken per job) and the mailbox that rings its loop only when
the loop sleeps. The pool's 503 itself is tests/test_serve_core.py's
test_full_pool_queue_answers_503_with_retry_after."""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any

from prefork.serve.context import Action
from prefork.serve.pool import BlockingPool, Mailbox
from tests.conftest import wait_for


class FakeTransport:
    layered = False


class FakeConnection:
    """What a pool thread calls: serve_blocking(), recording the order; the first one
    waits for `gate` so the others queue behind it."""

    def __init__(self, name: str, served: list[str], gate: threading.Event | None = None
                 ) -> None:
        self.name, self.served, self.gate = name, served, gate
        self.transport = FakeTransport()
        self.pool_name = ""

    def serve_blocking(self, slot: Any = None) -> Action:
        if self.gate is not None:
            assert self.gate.wait(10)
        self.served.append(self.name)
        return Action.CLOSE  # back to the loop at once: no serve_next()


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_the_queue_is_fifo_bounded_and_withdrawable() -> None:
    served: list[str] = []
    gate = threading.Event()
    pool = BlockingPool(1, 2, lambda index: None)
    mailbox: Mailbox[Any] = Mailbox()
    pool.start()
    try:
        first = FakeConnection("first", served, gate)
        assert pool.submit(first, mailbox)  # type: ignore[arg-type]
        wait_for(lambda: pool.queued() == 0)  # the one thread holds it, waiting at the gate
        queued = [FakeConnection(name, served) for name in ("a", "b")]
        assert all(pool.submit(conn, mailbox) for conn in queued)  # type: ignore[arg-type]
        assert not pool.submit(FakeConnection("c", served), mailbox)  # type: ignore[arg-type]
        assert pool.withdraw(queued[0])  # type: ignore[arg-type]
        assert not pool.withdraw(first)  # type: ignore[arg-type]
        assert pool.submit(FakeConnection("d", served), mailbox)  # type: ignore[arg-type]
        gate.set()
        wait_for(lambda: len(served) == 3)
        assert served == ["first", "b", "d"]
        assert [conn.name for conn, _action in mailbox.take()] == served
    finally:
        pool.shutdown()
        mailbox.close()


def test_every_idle_thread_is_woken_for_a_burst_and_all_end_at_shutdown() -> None:
    served: list[str] = []
    pool = BlockingPool(4, 100, lambda index: None)
    mailbox: Mailbox[Any] = Mailbox()
    pool.start()
    try:
        for round_ in range(20):
            for n in range(10):
                assert pool.submit(FakeConnection(f"{round_}.{n}", served),  # type: ignore[arg-type]
                                   mailbox)
            wait_for(lambda round_=round_: len(served) == 10 * (round_ + 1))
    finally:
        pool.shutdown()
        mailbox.close()
    for thread in pool._threads:
        thread.join(5)
        assert not thread.is_alive()


def test_the_mailbox_rings_only_a_sleeping_loop_and_gives_back_in_order() -> None:
    mailbox: Mailbox[int] = Mailbox()
    try:
        assert mailbox.post(1)  # the loop is awake: queued, no ring
        assert mailbox.waiting() and not readable(mailbox.fd)
        mailbox.asleep = True  # the loop is about to poll: it looks first, and finds one
        assert mailbox.waiting()
        assert mailbox.post(2) and mailbox.post(3)  # asleep: rung
        assert readable(mailbox.fd)
        mailbox.asleep = False
        mailbox.clear()
        assert not readable(mailbox.fd)
        assert mailbox.take() == [1, 2, 3] and mailbox.take() == []
        assert mailbox.post(None) and readable(mailbox.fd)  # a drain request always rings
        mailbox.clear()
    finally:
        mailbox.close()
    assert not mailbox.post(4)  # closed: refused, and no write to the closed descriptor


def test_no_ring_is_lost_between_a_sleeping_loop_and_its_posters() -> None:
    """Round trips through the mailbox, as a loop and four pool threads make them, the loop
    also woken by another descriptor (a client's next bytes): a lost ring would leave an
    item waiting out the loop's 0.5 s poll, as the sweep interval does in a real loop."""
    mailbox: Mailbox[threading.Event] = Mailbox()
    other_r, other_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    epoll = select.epoll()
    epoll.register(mailbox.fd, select.EPOLLIN)
    epoll.register(other_r, select.EPOLLIN)
    done = threading.Event()
    late: list[float] = []

    def loop() -> None:
        while not done.is_set():
            mailbox.asleep = True
            ready = epoll.poll(0.0 if mailbox.waiting() else 0.5)
            mailbox.asleep = False
            for fd, _events in ready:
                if fd == mailbox.fd:
                    mailbox.clear()
                else:
                    os.read(other_r, 4096)
            for answered in mailbox.take():
                answered.set()

    def poster(index: int) -> None:
        for n in range(400):
            if late:
                return  # one is enough to fail, and each costs the loop's timeout
            if (n + index) % 2:
                os.write(other_w, b"x")
            answered = threading.Event()
            began = time.monotonic()
            mailbox.post(answered)
            if not answered.wait(0.4):
                late.append(time.monotonic() - began)
                answered.wait(1)

    thread = threading.Thread(target=loop)
    thread.start()
    posters = [threading.Thread(target=poster, args=(index,)) for index in range(4)]
    try:
        for each in posters:
            each.start()
        for each in posters:
            each.join(60)
    finally:
        done.set()
        mailbox.post(None)
        thread.join(5)
        epoll.close()
        mailbox.close()
        os.close(other_r)
        os.close(other_w)
    assert not late, f"{len(late)} hand-backs waited for the loop's timeout"
