"""The worker's I/O core (issue 12) against real servers (mixed traffic and one owner per
descriptor: tests/test_stress.py): bounded admission to the blocking pool, bodies discarded
to keep a connection, an aborted upload logged once, a reserved descriptor for accept()
under EMFILE; and, in process, the exception barriers of the event loop and the blocking
pool."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from .conftest import Server, ServerFactory, wait_for

HOST = b"Host: localhost\r\n"
JSON_BODY = b'{"user": "test", "data": [1, 2, 3]}'
TRACE_MARKS = ("Traceback", "failed", "crashed", "died", "exited with code", "killed by")


# ------------------------------------------------------------------ a small HTTP client

class Responses:
    """Reads Content-Length framed responses from one socket, pipelined ones included."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self.buf += data
        return bool(data)

    def next(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes] | None:
        """The next response (status, lower-cased fields, body); None at EOF before one."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                if self.buf:
                    raise AssertionError(f"EOF inside a response head: {self.buf[:80]!r}")
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if status == 100:
            return self.next(head_only)
        if (not head_only and status not in (204, 304)
                and fields.get("transfer-encoding") == "chunked"):
            return status, fields, self._chunked()
        length = 0 if head_only or status in (204, 304) else \
            int(fields.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                raise AssertionError("EOF inside a response body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, fields, body

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError("EOF inside a chunked body")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _chunked(self) -> bytes:
        """A chunked body (an application's streamed answer), without trailers."""
        body = b""
        while size := int(self._line().split(b";")[0], 16):
            while len(self.buf) < size + 2:
                if not self._fill():
                    raise AssertionError("EOF inside a chunk")
            body, self.buf = body + self.buf[:size], self.buf[size + 2:]
        assert self._line() == b"", "trailers"
        return body

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within `timeout` (nothing more sent)."""
        self.sock.settimeout(timeout)
        try:
            return not self.buf and not self._fill()
        except TimeoutError:
            return False


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\n" % path.encode() + HOST
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\n" % path.encode() + HOST + extra + b"\r\n"


def put_head(path: str, length: int, extra: bytes = b"") -> bytes:
    return (b"PUT %s HTTP/1.1\r\n" % path.encode() + HOST
            + b"Content-Length: %d\r\n" % length + extra + b"\r\n")


def access_lines(server: Server) -> list[str]:
    return server.log("access.log").splitlines()


def assert_no_worker_trouble(server: Server, workers: list[int]) -> None:
    assert sorted(server.worker_pids()) == sorted(workers)
    log = server.log("error.log")
    troubles = [line for line in log.splitlines() if any(m in line for m in TRACE_MARKS)]
    assert not troubles, "\n".join(troubles[:20])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ------------------------------------------------------------------ mixed traffic

def run_clients(targets: list, seconds: float) -> list[str]:
    """Run each target(stop_at) in a thread; returns the errors they reported."""
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def guarded(target) -> None:
        try:
            target(stop_at)
        except Exception as exc:
            errors.append(f"{target.__name__}: {exc!r}")

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return errors


def exchange_all(server: Server, batch: bytes, expected: list[int]) -> None:
    """Send `batch` on a new connection; its responses must have the `expected` statuses."""
    with server.socket() as sock:
        reader = Responses(sock)
        sock.sendall(batch)
        statuses = [answer[0] if (answer := reader.next()) else None for _ in expected]
        assert statuses == expected, statuses


# ------------------------------------------------------------------ bounded admission

def test_silent_upload_heads_do_not_starve_a_real_upload(server_factory: ServerFactory) -> None:
    """32 connections send a PUT head and nothing more: a 5-byte PUT is still answered at
    once (a request holds a pool thread only once its body is arriving); they get 408 at
    body_timeout, counted from the end of their heads."""
    server = server_factory({"workers": {"processes": "1", "blocking_threads": "2"},
                             "http": {"body_timeout": "3"}})
    [worker] = server.worker_pids()
    baseline = fd_count(worker)
    silent = [server.socket(timeout=20) for _ in range(32)]
    try:
        started = time.monotonic()
        for index, sock in enumerate(silent):
            sock.sendall(put_head(f"/uploads/silent{index}.bin", 100))
        # Accepted on their first bytes (TCP_DEFER_ACCEPT), and read at once.
        wait_for(lambda: fd_count(worker) >= baseline + 32)
        began = time.monotonic()
        response, _ = server.get("/uploads/legit.txt", "PUT", {}, b"hello")
        took = time.monotonic() - began
        assert response.status == 201
        assert took < 1.0, f"the legitimate PUT took {took:.2f}s"
        for sock in silent:
            answer = Responses(sock).next()
            assert answer is not None and answer[0] == 408, answer
        waited = time.monotonic() - started
        assert 2.5 < waited < 8, waited
    finally:
        for sock in silent:
            sock.close()
    assert (server.root / "htdocs" / "uploads" / "legit.txt").read_bytes() == b"hello"
    wait_for(lambda: sum(" 408 " in line for line in access_lines(server)) == 32)


def test_full_pool_queue_answers_503_with_retry_after(server_factory: ServerFactory) -> None:
    """One pool thread busy with a trickling upload, one request queued behind it: the
    next request that is ready for a thread gets 503 + Retry-After, logged in both logs."""
    server = server_factory({"workers": {"processes": "1", "blocking_threads": "1",
                                         "blocking_queue": "1"},
                             "http": {"body_timeout": "5"}})
    [worker] = server.worker_pids()
    uploads = server.root / "htdocs" / "uploads"
    baseline = fd_count(worker)
    busy = server.socket(timeout=20)
    queued = server.socket(timeout=20)
    refused = server.socket(timeout=20)
    try:
        busy.sendall(put_head("/uploads/busy.bin", 10) + b"x")  # holds the only thread
        wait_for(lambda: list(uploads.glob(".tmp-*")))  # its PUT is being written
        queued.sendall(put_head("/uploads/queued.bin", 2) + b"ok")
        wait_for(lambda: fd_count(worker) >= baseline + 3)  # two sockets, one temporary
        refused.sendall(put_head("/uploads/refused.bin", 2) + b"no")
        # The queue holds one: of these two, the one the loop takes first is queued and the
        # other refused at once. Which one is epoll's order (the accepted socket's data and
        # the listener's next connection may be reported in one batch, either way round).
        ready, _, _ = select.select([queued, refused], [], [], 10)
        assert len(ready) == 1, "exactly one of the two is answered while the thread is busy"
        [turned_away] = ready
        waiting = refused if turned_away is queued else queued
        answer = Responses(turned_away).next()
        assert answer is not None and answer[0] == 503, answer
        assert answer[1].get("retry-after") == "1" and answer[1].get("connection") == "close"
        busy.sendall(b"y" * 9)
        assert Responses(busy).next()[0] == 201  # type: ignore[index]
        assert Responses(waiting).next()[0] == 201  # type: ignore[index]
    finally:
        for sock in (busy, queued, refused):
            sock.close()
    wait_for(lambda: any(re.search(r'"PUT /uploads/(refused|queued)\.bin HTTP/1\.1" 503', line)
                         for line in access_lines(server)))
    assert "blocking pool" in server.log("error.log")


def test_a_static_request_behind_an_app_request_is_served_by_the_loop(
        server_factory: ServerFactory) -> None:
    """A pool thread that finds the next request buffered begins it (pipelining); a static
    GET begun so once went to the worker's blocking pool, where uploads filling that pool
    got it a 503 (or a wait up to `timeout`) — the same GET alone is served by the loop at
    once. Begun by a pool thread or not, a request the loop serves goes to the loop."""
    server = server_factory({
        "workers": {"processes": "1", "blocking_threads": "1", "blocking_queue": "1"},
        "http": {"body_timeout": "10"},
        "app:plain": {"mount": "/plain", "module": "plain:application",
                      "path": str(Path(__file__).resolve().parent / "apps")}})
    [worker] = server.worker_pids()
    baseline = fd_count(worker)
    uploads = [server.socket(timeout=20) for _ in range(3)]
    try:
        uploads[0].sendall(put_head("/uploads/hold0.bin", 10) + b"x")  # the only thread
        wait_for(lambda: list((server.root / "htdocs" / "uploads").glob(".tmp-*")))
        uploads[1].sendall(put_head("/uploads/hold1.bin", 10) + b"x")  # queued
        # Accepted and queued in one step (its body came with the head).
        wait_for(lambda: fd_count(worker) >= baseline + 3)  # two sockets, one temporary
        uploads[2].sendall(put_head("/uploads/refused.bin", 2) + b"no")
        answer = Responses(uploads[2]).next()  # the blocking pool is full: proven so
        assert answer is not None and answer[0] == 503, answer
        with server.socket() as sock:
            reader = Responses(sock)
            began = time.monotonic()
            sock.sendall(get("/plain/environ") + get("/sample.txt") + get("/plain/pid"))
            statuses = [answer[0] if (answer := reader.next()) else None for _ in range(3)]
            took = time.monotonic() - began
        assert statuses == [200, 200, 200] and took < 2, (statuses, took)
    finally:
        for sock in uploads:
            sock.close()
    wait_for(lambda: sum(" 200 " in line for line in access_lines(server)) == 3)


def htpasswd(tmp_path: Path) -> Path:
    users = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    users.write_text(f"alice:{hashed}\n")
    return users


def test_authenticated_empty_put_is_answered_at_once(server_factory: ServerFactory,
                                                     tmp_path: Path) -> None:
    server = server_factory({"uploads": {"require_auth": "POST PUT DELETE"},
                             "auth": {"users_file": str(htpasswd(tmp_path))},
                             "http": {"body_timeout": "5"}})
    token = base64.b64encode(b"alice:s3cret")
    with server.socket(timeout=20) as sock:
        reader = Responses(sock)
        began = time.monotonic()
        sock.sendall(put_head("/uploads/empty.txt", 0, b"Authorization: Basic %s\r\n" % token))
        answer = reader.next()
        assert answer is not None and answer[0] == 201, answer
        assert time.monotonic() - began < 2
        sock.sendall(b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
                     b"Authorization: Basic %s\r\nContent-Length: 0\r\n\r\n" % token)
        answer = reader.next()
        assert answer is not None and answer[0] != 408 and time.monotonic() - began < 3


# ------------------------------------------------------------------ discarding bodies

def test_small_unread_body_is_discarded_and_the_connection_kept(shared_server: Server) -> None:
    """405 to a POST with a body, 200 to a GET with one: the body is read and thrown away
    (within [http] discard_body_limit), and the next request on the connection is answered."""
    with shared_server.socket() as sock:
        reader = Responses(sock)
        sock.sendall(b"POST /sample.txt HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello"
                     + get("/about.html"))
        first, second = reader.next(), reader.next()
        assert first is not None and first[0] == 405 and first[1].get("connection") != "close"
        assert second is not None and second[0] == 200
        sock.sendall(get("/sample.txt", b"Content-Length: 3\r\n") + b"abc" + get("/about.html"))
        first, second = reader.next(), reader.next()
        assert first is not None and first[0] == 200 and second is not None and second[0] == 200
        chunked = (b"POST /about.html HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n")
        sock.sendall(chunked + get("/sample.txt"))
        first, second = reader.next(), reader.next()
        assert first is not None and first[0] == 405 and second is not None and second[0] == 200


def test_malformed_or_oversized_unread_body_still_closes(shared_server: Server) -> None:
    with shared_server.socket() as sock:
        reader = Responses(sock)
        sock.sendall(b"POST /about.html HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n"
                     b"\r\n5\r\nhello\r\nzz\r\n\r\n" + get("/sample.txt"))
        answer = reader.next()
        assert answer is not None and answer[0] == 400 and reader.closed()
    with shared_server.socket() as sock:
        reader = Responses(sock)
        sock.sendall(b"POST /about.html HTTP/1.1\r\n" + HOST
                     + b"Content-Length: %d\r\n\r\n" % (2 << 20) + b"x" * 1000)
        answer = reader.next()
        assert answer is not None and answer[0] == 405
        assert answer[1].get("connection") == "close"


# ------------------------------------------------------------------ one log line per request

def test_aborted_upload_is_logged_as_499_and_frees_its_slot(
        server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1", "request_timeout": "1"}})
    with server.socket() as sock:
        sock.sendall(put_head("/uploads/gone.bin", 1000) + b"x" * 10)
        wait_for(lambda: list((server.root / "htdocs" / "uploads").glob(".tmp-*")))
    with server.socket() as sock:
        sock.sendall(put_head("/uploads/never.bin", 1000))  # not a byte of its body
    wait_for(lambda: sum(" 499 " in line for line in access_lines(server)) == 2)
    lines = access_lines(server)
    assert any('"PUT /uploads/gone.bin HTTP/1.1" 499' in line for line in lines), lines
    assert any('"PUT /uploads/never.bin HTTP/1.1" 499' in line for line in lines), lines
    # An absence: wait until the worker's request watchdog has looked after a slot left
    # busy would have run past request_timeout. It runs once a round, right after the
    # heartbeat: a beat past that time, then the next beat (that round's watchdog is done).
    [worker] = server.worker_pids()
    overdue = time.monotonic() + 1  # request_timeout
    first = wait_for(lambda: (beat := server.heartbeats()[worker]) > overdue and beat)
    wait_for(lambda: server.heartbeats()[worker] > first, timeout=15)
    log = server.log("error.log")
    assert "request_timeout" not in log, log
    busy = [t for w in server.status()["workers"] for t in w.get("threads", [])
            if t.get("state") == "W"]
    assert not busy, busy


# ------------------------------------------------------------------ out of descriptors

def test_accept_out_of_descriptors_answers_503_and_logs_once(
        server_factory: ServerFactory) -> None:
    """Under EMFILE a reserved descriptor lets the worker accept, answer 503 with
    Retry-After and close, instead of leaving clients waiting in the backlog (and the error
    log gets one line per 10 s, not one per 50 ms)."""
    server = server_factory({"workers": {"processes": "1", "threads": "1"}})
    [worker] = server.worker_pids()
    assert server.get("/sample.txt")[0].status == 200
    limit = fd_count(worker) + 4
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, limit))
    held: list[socket.socket] = []
    try:
        answers = []
        for _ in range(12):
            sock = server.socket(timeout=5)
            sock.sendall(b"GET /sample.txt HTTP/1.1\r\n")  # an incomplete head: kept open
            held.append(sock)
        # Each socket gets 3 s to be answered, all at once (the ones accepted normally
        # wait for their head: they are not answered, and time out together).
        waiting = {sock.fileno(): sock for sock in held}
        deadline = time.monotonic() + 3
        while waiting and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(waiting), [], [], left)
            for fd in ready:
                with contextlib.suppress(OSError):
                    answers.append(waiting[fd].recv(65536))
                del waiting[fd]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        assert len(refused) >= 4, answers
        assert all(b"\r\nRetry-After: " in a for a in refused)
        log = server.log("error.log")
        assert len(re.findall(r"descriptors", log)) == 1, log
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: server.get("/about.html")[0].status == 200)
    assert sorted(server.worker_pids()) == [worker]


# ------------------------------------------------------------------ barriers, in process

@pytest.fixture
def loop_harness(tmp_path: Path) -> Iterator[object]:
    from .serve_harness import LoopHarness

    harness = LoopHarness(tmp_path)
    try:
        yield harness
    finally:
        harness.stop()


def test_a_fault_in_a_loop_answers_500_and_the_loop_lives_on(loop_harness) -> None:
    harness = loop_harness
    with harness.connect() as sock:
        reader = Responses(sock)
        sock.sendall(get("/explode-in-framing"))
        answer = reader.next()
        assert answer is not None and answer[0] == 500
        assert reader.closed()
    with harness.connect() as sock:
        sock.sendall(get("/fine"))
        answer = Responses(sock).next()
        assert answer is not None and answer[0] == 200
    assert harness.loop.thread.is_alive()
    log = harness.error_log_text()
    assert "Traceback" in log and "/explode-in-framing" in log


def test_a_fault_in_a_pool_thread_answers_500_and_the_loop_closes_it(loop_harness) -> None:
    harness = loop_harness
    with harness.connect() as sock:
        sock.sendall(post("/explode-in-framing", b"hello"))
        reader = Responses(sock)
        answer = reader.next()
        assert answer is not None and answer[0] == 500
        assert reader.closed()
    with harness.connect() as sock:
        sock.sendall(post("/fine", b"hello"))
        answer = Responses(sock).next()
        assert answer is not None and answer[0] == 200
    # The loop closed it (once the pool thread handed it back) and lives on: a dead loop
    # with an empty table must not pass.
    wait_for(lambda: not harness.loop.conns)
    assert harness.loop.thread.is_alive()


def test_a_base_exception_in_a_pool_thread_is_a_500_and_the_thread_lives_on(loop_harness
                                                                           ) -> None:
    """A handler raising what `except Exception` misses (an application's sys.exit(),
    KeyboardInterrupt) once killed the pool thread: no answer, and each such request took
    a thread away for good until the pool answered nothing but 503. The pool's barrier
    catches it like any fault: 500, logged with its traceback, and the thread serves on."""
    harness = loop_harness
    for _ in range(harness.pool.size + 1):  # more than there are threads to lose
        with harness.connect() as sock:
            sock.sendall(post("/exit-in-handler", b"hello"))
            answer = Responses(sock).next()
            assert answer is not None and answer[0] == 500, answer
    with harness.connect() as sock:
        sock.sendall(post("/fine", b"hello"))
        answer = Responses(sock).next()
        assert answer is not None and answer[0] == 200
    assert all(thread.is_alive() for thread in harness.pool._threads)
    assert "SystemExit" in harness.error_log_text()


def test_a_busy_application_pool_names_its_own_bound(loop_harness) -> None:
    """An application's admission queue is bounded by [workers] max_connections (its
    requests wait on connections the worker holds already), not by blocking_queue, which
    bounds the worker's own blocking pool; the "pool busy" line named the wrong setting for
    an application, so an operator raising blocking_queue changed nothing."""
    from prefork.serve.pool import BlockingPool

    harness = loop_harness
    harness.loop.pools["app:demo"] = BlockingPool(1, 7, lambda _index: None, "app:demo")
    harness.loop._log_busy("app:demo", "a request waited past its deadline")
    line = harness.error_log_text().splitlines()[-1]
    assert "of at most 7 ([workers] max_connections)" in line, line
    assert "blocking_queue" not in line, line


def test_a_dead_loop_reports_its_death(loop_harness) -> None:
    harness = loop_harness
    harness.kill_loop()
    wait_for(lambda: harness.deaths)
    # The death is reported from the dying thread itself, before it has finished closing.
    harness.loop.thread.join(timeout=5)
    assert not harness.loop.thread.is_alive()
    assert "event loop 0 died" in harness.error_log_text()


def test_a_worker_whose_loop_died_exits_at_once(tmp_path: Path) -> None:
    """No half-alive worker: the dying loop wakes the main thread, which exits non-zero
    without draining (the master then starts a replacement)."""
    from types import SimpleNamespace

    from prefork.log import ErrorLog
    from prefork.process.worker import EXIT_LOOP_DIED, Worker

    log_path = tmp_path / "error.log"
    spec = SimpleNamespace(error_log=ErrorLog(str(log_path), "info"), master_pid=os.getppid(),
                           number=1)
    worker = Worker(spec)  # type: ignore[arg-type]
    worker.wake_r, worker.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        worker._on_loop_death()
        began = time.monotonic()
        assert worker._watch() == EXIT_LOOP_DIED
        assert time.monotonic() - began < 0.5
    finally:
        os.close(worker.wake_r)
        os.close(worker.wake_w)
    assert "an event loop died" in log_path.read_text()
