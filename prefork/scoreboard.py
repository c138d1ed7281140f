"""The scoreboard: shared-memory slots, one per worker process and one per worker thread.

How this works: the master creates a file (scoreboard_file) of fixed size and maps it
MAP_SHARED before forking, so every worker writes into the same pages, and `httpdctl status`
maps the same file read-only from outside. Each slot has exactly one writer (the master for
process slots' identity, the owning thread for a thread slot), so writers never lock; a reader
may see a slot mid-update, which costs at worst one stale number in a status report.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prefork.config.settings import MAX_PROCESSES, MAX_THREAD_SLOTS

MAGIC = b"PFSB0003"
# Capacity, like Apache's ServerLimit/ThreadLimit, derived from the limits the configuration
# enforces (config.MAX_PROCESSES, MAX_THREAD_SLOTS), so a configuration that passes
# configtest always fits: a reload runs two generations side by side, and one recycled
# worker's replacement may start during it. A reload that finds fewer free slots than it has
# workers (an older generation's workers still finishing requests) waits for them.
PROCESS_LIMIT = 2 * MAX_PROCESSES + 1
THREAD_LIMIT = MAX_THREAD_SLOTS

_HEADER = struct.Struct("<8sIIIdI")
# magic, process_limit, thread_limit, master_pid, started, log_seq (bumped per log reopen)
_PROCESS = struct.Struct("<IIIBBxxddII")
# pid, generation, number, state, recycle reason, started (wall clock, for display),
# heartbeat (CLOCK_MONOTONIC: system-wide, so the master compares it with its own reading,
# and a step of the wall clock cannot make a worker look hung), log_seq (acknowledged),
# log_failed (the log_seq whose reopen failed in this worker)
_HEARTBEAT = struct.Struct("<d")
_U32 = struct.Struct("<I")
_LOG_SEQ_OFFSET = 28  # within the header
_P_REASON, _P_HEARTBEAT, _P_LOG_SEQ, _P_LOG_FAILED = 13, 24, 32, 36  # within a process slot
_THREAD = struct.Struct("<cxxxIQQIIdd112s32sdII32s")
# state letter, generation, requests, bytes, open connections, of them idle in keep-alive,
# request start, last update, request line, client address, seconds spent serving requests
# (summed), connections being written to while the loop waits for the socket, connections
# in a lingering close (the last three: mod_status's Total Duration and event MPM's
# ConnsAsyncWriting / ConnsAsyncClosing; keep-alive is its ConnsAsyncKeepAlive), and the
# mount serving the request (mod_status's VHost column has that place)

HEADER_SIZE = 64
PROCESS_SLOT = 64
THREAD_SLOT = _THREAD.size
PROCESS_BASE = HEADER_SIZE
THREAD_BASE = PROCESS_BASE + PROCESS_LIMIT * PROCESS_SLOT
TOTAL_SIZE = THREAD_BASE + PROCESS_LIMIT * THREAD_LIMIT * THREAD_SLOT

# Process slot states. RECYCLE: the worker asks the master for a replacement. FINISHING: a
# stopping worker took its last connection and closed its listeners; it finishes requests.
FREE, STARTING, READY, STOPPING, RECYCLE, FINISHING = 0, 1, 2, 3, 4, 5
PROCESS_STATE_NAMES = {FREE: "free", STARTING: "starting", READY: "ready",
                       STOPPING: "stopping", RECYCLE: "recycling", FINISHING: "finishing"}
STOPPING_STATES = frozenset({STOPPING, FINISHING})
# Why a worker asked to be recycled (the master logs it).
RECYCLE_REASONS = {0: "", 1: "max_requests reached", 2: "a request exceeded request_timeout",
                   3: "an event loop thread died"}

# Apache mod_status letters for thread slots: the ones prefork uses. A thread is "W" for
# the whole of a request; the status page shows a stopping worker's busy threads as "G".
OPEN = b"."
WAITING = b"_"
WRITING = b"W"
GRACEFUL = b"G"


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    slot: int
    pid: int
    generation: int
    number: int
    state: int
    reason: int
    started: float
    heartbeat: float  # time.monotonic() of the worker's last beat
    log_seq: int
    log_failed: int  # the log_seq whose reopen failed in this worker (0: none)


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    process_slot: int
    thread: int
    state: str
    generation: int
    requests: int
    bytes: int
    connections: int
    request_start: float
    last_update: float
    request_line: str
    client: str
    keepalive: int = 0  # open connections idle between requests
    duration: float = 0.0  # seconds spent serving this thread's requests, summed
    writing: int = 0  # connections waiting for the socket to take more of a response
    closing: int = 0  # connections in a lingering close
    mount: str = ""  # what serves the request: "static /", "app:api /api", ...


class Scoreboard:
    """A mapped scoreboard file. Create with `create()` (master) or `open()` (readers)."""

    def __init__(self, path: str, buffer: mmap.mmap) -> None:
        self.path = path
        self.buffer = buffer
        # CPython's mmap keeps a dup() of the file's descriptor for the mapping's life: a
        # forked worker that closes what it does not need must keep that one.
        self.fd = _descriptor_of(path)

    @classmethod
    def create(cls, path: str, master_pid: int) -> Scoreboard:
        """Create (or reset) the scoreboard file and map it shared; returns the Scoreboard."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, TOTAL_SIZE)
            buffer = mmap.mmap(fd, TOTAL_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        _HEADER.pack_into(buffer, 0, MAGIC, PROCESS_LIMIT, THREAD_LIMIT, master_pid, time.time(),
                          0)
        for slot in range(PROCESS_LIMIT):
            for thread in range(THREAD_LIMIT):
                buffer[_thread_offset(slot, thread)] = OPEN[0]
        return cls(path, buffer)

    @classmethod
    def open(cls, path: str) -> Scoreboard:
        """Map an existing scoreboard read-only; raises OSError or ValueError if unusable."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            buffer = mmap.mmap(fd, TOTAL_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        if buffer[:8] != MAGIC:
            raise ValueError(f"{path} is not a prefork scoreboard")
        return cls(path, buffer)

    def header(self) -> tuple[int, float]:
        """Return (master pid, master start time)."""
        _magic, _plimit, _tlimit, pid, started, _seq = _HEADER.unpack_from(self.buffer, 0)
        return pid, started

    @property
    def log_seq(self) -> int:
        """How many times the master asked for logs to be reopened."""
        seq: int = _U32.unpack_from(self.buffer, _LOG_SEQ_OFFSET)[0]
        return seq

    @log_seq.setter
    def log_seq(self, value: int) -> None:
        _U32.pack_into(self.buffer, _LOG_SEQ_OFFSET, value)

    # ---------------------------------------------------------------- processes (master)

    def claim_process_slot(self) -> int:
        """Return a free process slot number; raises RuntimeError when all are in use."""
        for slot in range(PROCESS_LIMIT):
            if self.process(slot).state == FREE:
                return slot
        raise RuntimeError(f"all {PROCESS_LIMIT} scoreboard process slots are in use")

    def free_process_slots(self) -> int:
        return sum(1 for slot in range(PROCESS_LIMIT) if self.process(slot).state == FREE)

    def set_process(self, slot: int, pid: int, generation: int, number: int, state: int) -> None:
        _PROCESS.pack_into(self.buffer, PROCESS_BASE + slot * PROCESS_SLOT,
                           pid, generation, number, state, 0, time.time(), time.monotonic(),
                           self.log_seq, 0)

    def set_process_state(self, slot: int, state: int, reason: int = 0) -> None:
        base = PROCESS_BASE + slot * PROCESS_SLOT
        self.buffer[base + _P_REASON] = reason
        self.buffer[base + 12] = state

    def beat(self, slot: int) -> None:
        """A worker's heartbeat: its main thread found every loop thread alive and ticking."""
        _HEARTBEAT.pack_into(self.buffer, PROCESS_BASE + slot * PROCESS_SLOT + _P_HEARTBEAT,
                             time.monotonic())

    def acknowledge_log_seq(self, slot: int, failed: bool = False) -> None:
        """A worker reopened its logs for the current log_seq (or tried and `failed`)."""
        seq = self.log_seq
        base = PROCESS_BASE + slot * PROCESS_SLOT
        if failed:
            _U32.pack_into(self.buffer, base + _P_LOG_FAILED, seq)
        _U32.pack_into(self.buffer, base + _P_LOG_SEQ, seq)

    def free_process_slot(self, slot: int) -> None:
        self.set_process(slot, 0, 0, 0, FREE)
        for thread in range(THREAD_LIMIT):
            offset = _thread_offset(slot, thread)
            self.buffer[offset:offset + THREAD_SLOT] = b"\0" * THREAD_SLOT
            self.buffer[offset] = OPEN[0]

    def process(self, slot: int) -> ProcessInfo:
        pid, generation, number, state, reason, started, heartbeat, log_seq, log_failed = \
            _PROCESS.unpack_from(self.buffer, PROCESS_BASE + slot * PROCESS_SLOT)
        return ProcessInfo(slot, pid, generation, number, state, reason, started, heartbeat,
                           log_seq, log_failed)

    def processes(self) -> Iterator[ProcessInfo]:
        for slot in range(PROCESS_LIMIT):
            info = self.process(slot)
            if info.state != FREE:
                yield info

    # ---------------------------------------------------------------- threads (workers)

    def thread_slot(self, process_slot: int, thread: int, generation: int) -> ThreadSlot:
        return ThreadSlot(self.buffer, _thread_offset(process_slot, thread), generation)

    def threads(self, process_slot: int) -> Iterator[ThreadInfo]:
        for thread in range(THREAD_LIMIT):
            offset = _thread_offset(process_slot, thread)
            if self.buffer[offset] in (0, OPEN[0]):
                continue
            (state, generation, requests, nbytes, connections, keepalive, start, updated,
             line, client, duration, writing, closing, mount) = _THREAD.unpack_from(
                self.buffer, offset)
            yield ThreadInfo(process_slot, thread, state.decode("latin-1"), generation,
                             requests, nbytes, connections, start, updated,
                             line.rstrip(b"\0").decode("latin-1"),
                             client.rstrip(b"\0").decode("latin-1"), keepalive, duration,
                             writing, closing, mount.rstrip(b"\0").decode("latin-1"))

    def close(self) -> None:
        self.buffer.close()


def _descriptor_of(path: str) -> int | None:
    """The descriptor of ours open on `path` (the mapping's), or None."""
    try:
        target = os.path.realpath(path)
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{name}") == target:
                    return int(name)
    except OSError:
        pass
    return None


def _thread_offset(process_slot: int, thread: int) -> int:
    return THREAD_BASE + (process_slot * THREAD_LIMIT + thread) * THREAD_SLOT


class ThreadSlot:
    """One thread's slot. The serving thread only sets Python attributes (the hot path pays
    no encoding or packing); publish() copies them into shared memory, called by the
    worker's main thread every second, which is then the slot's only writer. Readers of the
    scoreboard therefore see figures at most a second old."""

    __slots__ = (
        "_mount_line",
        "buffer",
        "bytes",
        "client",
        "closing",
        "connections",
        "duration",
        "generation",
        "ident",
        "keepalive",
        "line",
        "mount",
        "mount_of",
        "native_id",
        "offset",
        "reported",
        "requests",
        "start",
        "started_mono",
        "state",
        "writing",
    )

    def __init__(self, buffer: mmap.mmap, offset: int, generation: int) -> None:
        self.buffer = buffer
        self.offset = offset
        self.generation = generation
        self.requests = 0
        self.bytes = 0
        self.connections = 0
        # The connections' states, counted by the loop's sweep (twice a second), not per
        # request: the hot path pays nothing for them.
        self.keepalive = self.writing = self.closing = 0
        self.duration = 0.0  # seconds, summed over the requests served
        self.start = 0.0  # wall clock, for the status page
        self.started_mono = 0.0  # time.monotonic() at the request's start, for the watchdog
        self.line = ""
        self.client = ""
        self.state = WAITING
        self.ident = 0  # threading.get_ident() of the thread using the slot (for stack dumps)
        self.native_id = 0  # its kernel thread id, as the error log's [tid N] shows it
        self.reported = 0.0  # started_mono of the request the watchdog already reported
        # Names the mount of a request line (the serving layer sets it). It runs when the
        # slot is published (twice a second), never per request: the hot path pays nothing.
        self.mount_of: Callable[[str], str] | None = None
        self.mount = ""
        self._mount_line = ""  # the request line self.mount was found for
        self.update(WAITING)

    def update(self, state: bytes) -> None:
        self.state = state
        self.publish()

    def publish(self) -> None:
        """Copy the slot into shared memory."""
        if self.mount_of is not None and self.line != self._mount_line:
            self._mount_line = self.line
            self.mount = self.mount_of(self.line)
        _THREAD.pack_into(self.buffer, self.offset, self.state, self.generation, self.requests,
                          self.bytes, self.connections, self.keepalive, self.start, time.time(),
                          self.line.encode("latin-1", "replace")[:112],
                          self.client.encode("latin-1", "replace")[:32], self.duration,
                          self.writing, self.closing,
                          self.mount.encode("latin-1", "replace")[:32])

    def begin_request(self, line: str, client: str, now: float) -> None:
        self.line = line
        self.client = client
        self.start = now
        self.started_mono = time.monotonic()
        self.state = WRITING

    def end_request(self, sent: int, duration: float = 0.0) -> None:
        self.requests += 1
        self.bytes += sent
        self.duration += duration
        self.state = WAITING
