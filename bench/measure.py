"""What the harness reads from the kernel and from wrk: process trees, CPU, PSS, wrk's JSON.

Server CPU is the sum of utime+stime+cutime+cstime (fields 14-17 of /proc/PID/stat, in clock
ticks) over the server's whole process tree: the process the harness started, every descendant
found through the ppid chains in /proc/*/stat, and every process still in its process group.
cutime/cstime count children that already exited and were reaped, so a worker that is replaced
during a run is not lost. The figure of a run is the difference between two samples taken right
before and right after the load generator runs.

PSS is the sum of the Pss line of /proc/PID/smaps_rollup over the same tree: shared pages are
split between the processes sharing them, so the sum is what the tree costs in memory.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_JSON_MARK = "BENCH_JSON "


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    pgrp: int
    starttime: int
    cpu_ticks: int  # utime + stime + cutime + cstime


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/PID/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        starttime=int(rest[19]),
        cpu_ticks=int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
    )


def all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                stats[st.pid] = st
    return stats


def process_tree(root: int, pgrp: int | None = None) -> list[ProcStat]:
    """The root process, its descendants, and (if pgrp is given) the members of that group."""
    stats = all_stats()
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    found: dict[int, ProcStat] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in found or pid not in stats:
            continue
        found[pid] = stats[pid]
        todo.extend(children.get(pid, []))
    if pgrp is not None:
        for st in stats.values():
            if st.pgrp == pgrp and st.pid not in found:
                found[st.pid] = st
    return sorted(found.values(), key=lambda s: s.pid)


def kill_recorded(starts: dict[int, int]) -> None:
    """SIGKILL what is left of processes recorded as {pid: starttime}, by PID: a PID reused
    by another process since (different start time) is left alone, and so are we."""
    for pid, start in starts.items():
        cur = read_stat(pid)
        if cur is not None and cur.starttime == start and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass



def stop_tree(proc: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    """Send `sig` to a child started in its own session; after `grace` seconds SIGKILL, by
    PID, whatever of its tree is left (recorded before and after the signal, so a process
    that forked meanwhile is not missed), then reap the child."""
    tree = {st.pid: st.starttime for st in process_tree(proc.pid, proc.pid)}
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for st in process_tree(proc.pid, proc.pid):
        tree.setdefault(st.pid, st.starttime)
    kill_recorded(tree)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass

def tree_cpu_seconds(root: int, pgrp: int | None = None) -> float:
    return sum(st.cpu_ticks for st in process_tree(root, pgrp)) / CLK_TCK


def pss_kib(pid: int) -> int:
    """Pss of one process in KiB (0 if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def tree_pss_mb(root: int, pgrp: int | None = None) -> float:
    """PSS of the whole tree in MB (10^6 bytes)."""
    return sum(pss_kib(st.pid) for st in process_tree(root, pgrp)) * 1024 / 1e6


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children (the load generator, once it was waited for)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_status: int
    errors_timeout: int
    lat_mean_ms: float
    lat_p50_ms: float
    lat_p90_ms: float
    lat_p99_ms: float
    lat_p999_ms: float
    lat_max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration_s / 1e6 if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return (self.errors_connect + self.errors_read + self.errors_write
                + self.errors_status + self.errors_timeout)


def parse_wrk(stdout: str) -> WrkResult:
    """Read the JSON line that bench/report.lua prints from wrk's done() hook."""
    for line in stdout.splitlines():
        if line.startswith(WRK_JSON_MARK):
            d = json.loads(line[len(WRK_JSON_MARK):])
            us = 1000.0
            return WrkResult(
                requests=int(d["requests"]),
                duration_s=d["duration_us"] / 1e6,
                bytes=int(d["bytes"]),
                errors_connect=int(d["errors"]["connect"]),
                errors_read=int(d["errors"]["read"]),
                errors_write=int(d["errors"]["write"]),
                errors_status=int(d["errors"]["status"]),
                errors_timeout=int(d["errors"]["timeout"]),
                lat_mean_ms=d["latency_us"]["mean"] / us,
                lat_p50_ms=d["latency_us"]["p50"] / us,
                lat_p90_ms=d["latency_us"]["p90"] / us,
                lat_p99_ms=d["latency_us"]["p99"] / us,
                lat_p999_ms=d["latency_us"]["p999"] / us,
                lat_max_ms=d["latency_us"]["max"] / us,
            )
    raise ValueError("no wrk summary line (is bench/report.lua loaded?)")


_RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")


def wrk_text_rps(stdout: str) -> float | None:
    """wrk's own Requests/sec line, kept as a cross-check of the JSON figure."""
    m = _RPS_RE.search(stdout)
    return float(m.group(1)) if m else None
