"""In-process micro-benchmark of the quick path: one keep-alive connection over a socket
pair, a remembered static answer, and the time per request of Connection.on_readable()
(recv, match, send, access-log line, scoreboard) plus the client's send and recv.

    python bench/quick_micro.py [--requests N] [--runs R] [--no-log] [--tree DIR] [--no-io]

Prints the median (and the fastest) of R runs of N requests, in microseconds of this thread's
CPU time per request;
--tree imports `prefork` from another checkout, to compare two versions in one session;
--no-io swaps the socket for one that always has the request and takes every send, and
the log file for /dev/null, leaving the Python work alone (the steadiest figure). It measures only
what a change to the quick path moves, on this machine; bench/run.py measures the server.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = Path(os.environ.get("QUICK_MICRO_TREE", REPO))  # set by --tree before the imports
sys.path.insert(0, str(TREE))

from prefork.config.settings import load_config  # noqa: E402
from prefork.http.parser import Limits  # noqa: E402
from prefork.log import AccessLog, ErrorLog  # noqa: E402
from prefork.scoreboard import THREAD_SLOT, ThreadSlot  # noqa: E402
from prefork.serve.connection import Action, Connection, ServerContext  # noqa: E402

try:  # a checkout measured with --tree may predate the transport seam
    from prefork.serve.transport import PlainTransport
except ImportError:  # pragma: no cover - older trees take the socket itself
    PlainTransport = None  # type: ignore[assignment,misc]
from prefork.serve.quick import QuickPath  # noqa: E402
from prefork.site import static as static_module  # noqa: E402
from prefork.site.router import Router  # noqa: E402

REQUEST = (b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench/1.0\r\n"
           b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n\r\n")


def setup(base: Path, log: bool) -> tuple[Connection, socket.socket]:
    root = base / "srv"
    shutil.copytree(REPO / "htdocs", root / "htdocs", ignore=shutil.ignore_patterns("uploads"))
    (root / "etc").mkdir()
    (root / "etc" / "httpd.ini").write_text(
        "[server]\nlisten = 127.0.0.1:0\nserver_name = localhost\n"
        "[uploads]\nenabled = off\n")
    config = load_config(root / "etc" / "httpd.ini")
    # Every measured request a quick one: no re-resolution each second (slow under valgrind).
    static_module.RESOLVE_SECONDS = float("inf")
    router = Router(config)
    limits = Limits()
    access = AccessLog(str(base / "access.log") if log else None,
                       config.logging.access_format)
    ctx = ServerContext(router, access, ErrorLog(None, "warn"), limits, 5.0, 0, 10.0, 10.0,
                        10.0, 0, False, quick=QuickPath(router, limits))
    server_end, client_end = socket.socketpair()
    server_end.setblocking(False)
    slot = ThreadSlot(mmap.mmap(-1, THREAD_SLOT), 0, 1)
    conn = Connection(PlainTransport(server_end) if PlainTransport else server_end,  # type: ignore[arg-type]
                      ("127.0.0.1", 40000), ("127.0.0.1", 8080), ctx, slot)
    for _ in range(3):  # the first answer teaches the quick path
        client_end.sendall(REQUEST)
        assert conn.on_readable() is Action.WANT_READ
        client_end.recv(65536)
    return conn, client_end


class NoSocket:
    """Always has the request to read, takes every send whole: no system calls."""

    def recv(self, size: int) -> bytes:
        return REQUEST

    def send(self, data: bytes, flags: int = 0) -> int:
        return len(data)

    def fileno(self) -> int:
        return -1


def run_no_io(conn: Connection, requests: int) -> float:
    readable = conn.on_readable
    start = time.thread_time()
    for _ in range(requests):
        readable()
    return (time.thread_time() - start) / requests * 1e6


def run(conn: Connection, client: socket.socket, requests: int) -> float:
    send, recv, readable = client.send, client.recv, conn.on_readable
    # CPU time of this thread (the syscalls' kernel time included): other processes on a
    # shared machine lengthen wall-clock time, much less this.
    start = time.thread_time()
    for _ in range(requests):
        send(REQUEST)
        readable()
        recv(65536)
    return (time.thread_time() - start) / requests * 1e6


def main() -> None:
    if "--tree" in sys.argv and "QUICK_MICRO_TREE" not in os.environ:
        tree = sys.argv[sys.argv.index("--tree") + 1]
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "QUICK_MICRO_TREE": os.path.abspath(tree)})
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", help="a checkout whose prefork/ to measure")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--no-log", action="store_true")
    parser.add_argument("--no-io", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        conn, client = setup(Path(tmp), not args.no_log)
        hits = 0
        answer = conn.ctx.quick.answer  # type: ignore[union-attr]

        def counting(*a: object) -> object:
            nonlocal hits
            result = answer(*a)  # type: ignore[arg-type]
            hits += result is not None
            return result

        conn.ctx.quick.answer = counting  # type: ignore[union-attr,method-assign,assignment]
        run(conn, client, 10)
        assert hits == 10, "the quick path did not answer"
        conn.ctx.quick.answer = answer  # type: ignore[union-attr,method-assign]
        if args.no_io:
            conn.sock = NoSocket()  # type: ignore[assignment]
            if PlainTransport is not None:  # the connection speaks through its transport
                conn.transport = PlainTransport(NoSocket())  # type: ignore[arg-type]
            if conn.ctx.access_log.file is not None:
                conn.ctx.access_log.file.close()
                conn.ctx.access_log.file = type(conn.ctx.access_log.file)(os.devnull)
            results = [run_no_io(conn, args.requests) for _ in range(args.runs)]
        else:
            results = [run(conn, client, args.requests) for _ in range(args.runs)]
    mode = ("no log" if args.no_log else "Combined log") + (", no I/O" if args.no_io else "")
    print(f"{TREE.name}, {mode}: median "
          f"{statistics.median(results):.2f} µs/request, fastest {min(results):.2f} (runs: "
          f"{' '.join(f'{r:.2f}' for r in sorted(results))})")


if __name__ == "__main__":
    main()
