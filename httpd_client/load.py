"""Load mode: split the work over forked processes, show progress, merge what they measured.

The parent resolves the server's address, checks it accepts a connection (an unreachable
server is one error, not a run full of them), serialises every spec entry once, and forks
`processes` children. Child i gets its share of the connections and a contiguous range of
the global request sequence (request k is spec entry k mod len(spec), so with -n N every
entry is sent exactly N times), runs an engine.Worker, and sends back its WorkerResult,
pickled, through a pipe. Progress comes through a shared anonymous mmap: one 8-byte counter
per child, written by the child, read by the parent for the progress bar.

Ctrl-C in the parent asks the children to stop (SIGTERM); what they measured is still
reported, marked as interrupted.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import selectors
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .engine import Work, Worker, WorkerResult, install_stop
from .request import Target, prepare, unreachable
from .spec import Entry

COUNTER = struct.Struct("q")
PROGRESS_TICK = 0.1  # seconds between progress-bar redraws
FD_MARGIN = 64  # descriptors beyond the connections: stdio, pipes, epoll, imports


@dataclass(frozen=True)
class LoadOptions:
    repeat: int | None  # replays of the spec; None: once, or unlimited with a duration
    concurrency: int
    duration: float | None
    processes: int
    timeout: float
    debug: bool = False
    insecure: bool = False


@dataclass
class LoadOutcome:
    results: list[WorkerResult]
    elapsed: float
    planned: int | None  # requests planned (None: until the duration ended)
    processes: int
    concurrency: int
    interrupted: bool


def preflight(target: Target, context: ssl.SSLContext | None,
              timeout: float) -> tuple[int, tuple[Any, ...]]:
    """Resolve the target and open (then close) one connection, with the TLS handshake
    for https.

    Returns (family, sockaddr). Raises Unreachable with a one-line reason."""
    try:
        family, sockaddr = target.resolve()
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            if context is not None:
                context.wrap_socket(sock, server_hostname=target.host).close()
    except OSError as exc:
        raise unreachable(target, exc) from None
    return family, sockaddr


def ensure_descriptors(connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE so that one process can hold `connections` sockets.

    Raises ValueError naming the limit when the hard limit is too low."""
    try:
        import resource
    except ImportError:  # not POSIX: let socket() report it
        return
    need = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise ValueError(f"{connections} connections in one process need {need} file "
                         f"descriptors, the limit is {hard} (raise ulimit -n, or use more "
                         f"--processes)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal shares (the first ones get the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def run_load(target: Target, entries: tuple[Entry, ...], options: LoadOptions,
             progress: Callable[[int, float], None] | None = None) -> LoadOutcome:
    """Run the load test; `progress(done, elapsed)` is called about 10 times a second.

    Raises Unreachable, UploadError, or ValueError when the connections do not fit the
    file-descriptor limit."""
    requests = [prepare(e, target).to_bytes() for e in entries]
    context: ssl.SSLContext | None = target.ssl_context(options.insecure)
    family, sockaddr = preflight(target, context, options.timeout)
    concurrency = max(1, options.concurrency)
    processes = max(1, min(options.processes, concurrency))
    planned: int | None = None
    if options.repeat is not None or options.duration is None:
        planned = (options.repeat or 1) * len(entries)
        processes = max(1, min(processes, planned))
        concurrency = max(1, min(concurrency, planned))
    conns = split(concurrency, processes)
    ensure_descriptors(max(conns))
    counts = split(planned, processes) if planned is not None else [None] * processes
    start = time.monotonic()
    deadline = start + options.duration if options.duration else None
    shared = mmap.mmap(-1, COUNTER.size * processes)
    children: dict[int, tuple[int, int]] = {}  # pid -> (read fd, index)
    first = 0
    try:
        for index in range(processes):
            work = Work(requests=requests, no_body=[e.method == "HEAD" for e in entries],
                        expected=[frozenset(e.expect.statuses) for e in entries],
                        labels=[e.label for e in entries], family=family, sockaddr=sockaddr,
                        connections=conns[index], first=first, count=counts[index],
                        deadline=deadline, timeout=options.timeout, ssl_context=context,
                        server_hostname=target.host if context else None,
                        debug=options.debug)
            first += counts[index] or 0
            pid, fd = _fork(work, shared, index)
            children[pid] = (fd, index)
        results, interrupted = _collect(children, shared, start, progress)
    finally:
        for pid in children:  # only reached with children alive after an error
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        shared.close()
    elapsed = max((r.finished for r in results), default=start) - start
    return LoadOutcome(results=results, elapsed=max(elapsed, 1e-9), planned=planned,
                       processes=processes, concurrency=concurrency, interrupted=interrupted)


def _fork(work: Work, shared: mmap.mmap, index: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    # Child: never return into the caller's stack (click, pytest...), always os._exit.
    code = 0
    try:
        os.close(read_fd)
        _die_with_parent()
        offset = index * COUNTER.size

        def publish(done: int) -> None:
            COUNTER.pack_into(shared, offset, done)

        worker = Worker(work, publish)
        install_stop(worker)
        payload = pickle.dumps(worker.run(), protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # report anything to the parent rather than a traceback
        payload = pickle.dumps(RuntimeError(f"load process {index}: {exc!r}"))
        code = 1
    try:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the parent dies (PR_SET_PDEATHSIG), so a killed
    parent never leaves load running."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _collect(children: dict[int, tuple[int, int]], shared: mmap.mmap, start: float,
             progress: Callable[[int, float], None] | None
             ) -> tuple[list[WorkerResult], bool]:
    """Read every child's pickled result, drawing progress meanwhile; reap the children."""
    sel = selectors.DefaultSelector()
    chunks: dict[int, list[bytes]] = {}
    for pid, (fd, _index) in children.items():
        sel.register(fd, selectors.EVENT_READ, pid)
        chunks[pid] = []
    interrupted = False
    open_fds = {fd for fd, _index in children.values()}
    try:
        while open_fds:
            try:
                events = sel.select(PROGRESS_TICK)
            except KeyboardInterrupt:
                interrupted = True
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                continue
            for key, _mask in events:
                data = os.read(key.fd, 1 << 20)
                if data:
                    chunks[key.data].append(data)
                else:
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    open_fds.discard(key.fd)
            if progress is not None:
                done = sum(COUNTER.unpack_from(shared, i * COUNTER.size)[0]
                           for i in range(len(children)))
                progress(done, time.monotonic() - start)
    finally:
        sel.close()
        for fd in open_fds:
            os.close(fd)
    results: list[WorkerResult] = []
    for pid in list(children):
        os.waitpid(pid, 0)
        del children[pid]
        try:
            result = pickle.loads(b"".join(chunks[pid]))
        except Exception:
            result = RuntimeError("a load process died without reporting")
        if isinstance(result, Exception):
            raise result
        results.append(result)
    return results, interrupted
