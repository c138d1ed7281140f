"""A bounded stress run (issue 12, "Done means"): a few seconds of mixed traffic against two
workers — keep-alive GETs, POSTs with bodies (kept alive, and one per connection as `ab -p`
beside keep-alive GETs, which lost responses and crashed workers once), pipelined bodies,
aborted uploads, early 405s with bodies; and, since applications and TLS changed the
worker's I/O core, keep-alive and pipelined requests to an application mount (static and
upload requests pipelined behind them), aborted application uploads, and TLS clients
(keep-alive, pipelined to the application, a download reset mid-response) — then every
complete request was answered, the access log has one line per request head sent, no worker
died, and the workers hold as many descriptors as before."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

from .conftest import Server, make_root, wait_for
from .test_serve_core import (
    JSON_BODY,
    Responses,
    access_lines,
    assert_no_worker_trouble,
    exchange_all,
    fd_count,
    get,
    post,
    put_head,
    run_clients,
)
from .test_tls import TLSServer, running_tls, throwaway_ca, tls_settings

SECONDS = 4.0


class Tally:
    """Request heads sent (each must get exactly one access-log line), thread-safe."""

    def __init__(self) -> None:
        self.heads = 0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.heads += count


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a client killed mid-transfer does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def clients(server: Server, tally: Tally, tls: TLSServer) -> list:
    """The client kinds; each repeats its round until `stop_at` (at least one round)."""
    def one_by_one(sock: socket.socket, reader: Responses, requests: list[bytes],
                   statuses: tuple[int, ...]) -> None:
        """Keep-alive: each request sent once the one before was answered, its status
        one of `statuses`."""
        for request in requests:
            sock.sendall(request)
            answer = reader.next()
            tally.add(1)
            assert answer is not None and answer[0] in statuses, answer

    def keepalive_gets() -> None:
        with server.socket() as sock:
            one_by_one(sock, Responses(sock),
                       [get(path) for path in ("/sample.txt", "/about.html", "/missing") * 5],
                       (200, 404))

    def posts() -> None:
        with server.socket() as sock:
            one_by_one(sock, Responses(sock), [post("/upload", JSON_BODY)] * 3, (201,))

    def closing_posts() -> None:  # as `ab -p`: one POST per connection, closed after it
        tally.add(1)
        exchange_all(server, post("/upload", JSON_BODY, b"Connection: close\r\n"), [201])

    def pipelined() -> None:
        tally.add(5)
        exchange_all(server, post("/upload", JSON_BODY) + get("/sample.txt")
                     + post("/upload", b"[1]") + post("/about.html", b"early")
                     + get("/about.html"), [201, 200, 201, 405, 200])

    def early_405s() -> None:
        with server.socket() as sock:
            reader = Responses(sock)
            for _ in range(5):
                sock.sendall(post("/sample.txt", b"x" * 3000) + get("/sample.txt"))
                tally.add(2)
                first, second = reader.next(), reader.next()
                assert first is not None and first[0] == 405, first
                assert second is not None and second[0] == 200, second

    def aborted_upload() -> None:
        with server.socket() as sock:
            sock.sendall(put_head("/uploads/aborted.bin", 100000) + b"x" * 5000)
            tally.add(1)
        time.sleep(0.05)  # pacing: this client aborts ~20 uploads a second, not thousands

    def app_keepalive() -> None:
        with server.socket() as sock:
            one_by_one(sock, Responses(sock), [get(path) for path in (
                "/plain/pid", "/plain/environ", "/plain/missing") * 3], (200, 404))

    def app_pipelined() -> None:  # a pool thread serves its series; others go back
        tally.add(6)
        exchange_all(server, get("/plain/pid") + get("/plain/environ") + get("/sample.txt")
                     + post("/plain/upload", JSON_BODY) + post("/upload", b"[2]")
                     + get("/plain/pid"), [200, 200, 200, 200, 201, 200])

    def app_aborted_upload() -> None:
        with server.socket() as sock:
            sock.sendall(post("/plain/upload", b"x" * 5000).replace(
                b"Content-Length: 5000", b"Content-Length: 100000"))
            tally.add(1)
        time.sleep(0.05)  # pacing, as aborted_upload

    def tls_clients() -> None:
        with tls.connect() as sock:
            reader = Responses(sock)
            one_by_one(sock, reader, [get("/sample.txt"), get("/plain/pid")], (200,))
            sock.sendall(get("/plain/environ") + get("/about.html") + get("/plain/pid"))
            tally.add(3)
            statuses = [answer[0] if (answer := reader.next()) else None for _ in range(3)]
            assert statuses == [200, 200, 200], statuses
        with tls.connect() as sock:  # a download the client resets mid-response
            sock.sendall(get("/big.bin"))
            tally.add(1)
            assert sock.recv(4096)
            reset(sock)
        time.sleep(0.02)  # pacing: handshakes cost far more than requests

    def repeat(round_):
        def until(stop_at: float) -> None:
            while True:
                round_()
                if time.monotonic() >= stop_at:
                    return
        until.__name__ = round_.__name__
        return until

    return [repeat(r) for r in [keepalive_gets] * 4 + [posts] * 2 + [closing_posts] * 2
            + [pipelined] * 2 + [early_405s] * 2 + [aborted_upload] + [app_keepalive] * 2
            + [app_pipelined] * 2 + [app_aborted_upload] + [tls_clients]]


def test_mixed_stress_run_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    ca, ca_file = throwaway_ca(tmp_path)
    settings = tls_settings(tmp_path, ca)
    settings["workers"] = {"processes": "2", "threads": "1"}
    with running_tls(make_root(tmp_path), settings, ca, ca_file) as tls:
        run_mixed(tls.server, tls)


def run_mixed(server: Server, tls: TLSServer) -> None:
    workers = server.worker_pids()
    warm = Tally()
    for target in clients(server, warm, tls):  # every code path once, before the baseline
        target(0.0)
    wait_for(lambda: len(access_lines(server)) == warm.heads)
    baseline = {pid: fd_count(pid) for pid in workers}
    tally = Tally()
    errors = run_clients(clients(server, tally, tls), SECONDS)
    assert not errors, errors[:5]
    assert tally.heads > 200
    total = warm.heads + tally.heads
    wait_for(lambda: len(access_lines(server)) >= total, timeout=20)
    lines = access_lines(server)
    assert len(lines) == total, (len(lines), total)
    assert sum(" 499 " in line for line in lines) >= 1
    wait_for(lambda: {pid: fd_count(pid) for pid in workers} == baseline, timeout=20)
    assert_no_worker_trouble(server, workers)
