"""A read-only view of a running server for `httpdctl status`: the master's state file,
the scoreboard, and psutil's view of each process (CPU, memory, connections)."""

from __future__ import annotations

import time
from typing import Any

import psutil

from prefork.config.settings import Config
from prefork.control import find_master, read_state
from prefork.errors import ControlError
from prefork.scoreboard import PROCESS_STATE_NAMES, Scoreboard


def _cpu_percent(process: psutil.Process, now: float) -> float:
    """CPU use over the process's life, as ps(1)'s %CPU and Apache's server-status "CPU
    load" give it: (user + system time) / time alive. Read at once, so `status` needs no
    sampling sleep (a 0.2 s sample made every `status` call 0.2 s slower)."""
    times = process.cpu_times()
    alive = max(now - process.create_time(), 1e-3)
    return round(100.0 * (times.user + times.system) / alive, 1)


def _connections(process: psutil.Process) -> int:
    try:
        getter = getattr(process, "net_connections", None) or process.connections
        return sum(1 for c in getter(kind="tcp") if c.status == psutil.CONN_ESTABLISHED)
    except (psutil.Error, OSError):
        return 0


def collect(config: Config) -> dict[str, Any]:
    """Return the status of the running server as a JSON-ready dict; raises ControlError."""
    master = find_master(config.server.pid_file)
    if master is None:
        raise ControlError("not running", exit_code=3)
    state = read_state(config.server.pid_file)
    try:
        master_proc = psutil.Process(master.pid)
    except psutil.NoSuchProcess:
        raise ControlError("not running (master vanished)", exit_code=3) from None
    try:
        board: Scoreboard | None = Scoreboard.open(state.get("scoreboard")
                                                   or config.server.scoreboard_file)
    except (OSError, ValueError):
        board = None
    procs: dict[int, psutil.Process] = {master.pid: master_proc}
    for child in master_proc.children():
        procs[child.pid] = child
    now = time.time()
    workers = []
    if board is not None:
        for info in sorted(board.processes(), key=lambda p: (p.generation, p.number)):
            threads = list(board.threads(info.slot))
            proc = procs.get(info.pid)
            workers.append({
                "pid": info.pid,
                "number": info.number,
                "generation": info.generation,
                "state": PROCESS_STATE_NAMES.get(info.state, "?"),
                "uptime": round(now - info.started, 1),
                "cpu_percent": _safe(lambda p=proc: _cpu_percent(p, now), 0.0),
                "rss": _safe(lambda p=proc: p.memory_info().rss, 0),
                "connections": _connections(proc) if proc else 0,
                "requests": sum(t.requests for t in threads),
                "bytes": sum(t.bytes for t in threads),
                "threads": [{
                    "thread": t.thread, "state": t.state, "requests": t.requests,
                    "bytes": t.bytes, "connections": t.connections,
                    "request": t.request_line if t.state not in "_." else "",
                    "client": t.client if t.state not in "_." else "",
                    "mount": t.mount if t.state not in "_." else "",
                    "seconds": round(now - t.request_start, 3)
                    if t.state not in "_." and t.request_start else 0.0,
                } for t in threads],
            })
        board.close()
    started = state.get("started") or master_proc.create_time()
    uptime = max(now - started, 1e-9)
    total_requests = sum(w["requests"] for w in workers)
    return {
        "master": {
            "pid": master.pid,
            "uptime": round(uptime, 1),
            "cpu_percent": _safe(lambda: _cpu_percent(master_proc, now), 0.0),
            "rss": _safe(lambda: master_proc.memory_info().rss, 0),
            "config": state.get("config", config.source),
        },
        "generation": state.get("generation"),
        "listen": state.get("listen", [a.shown for a in config.server.listen]),
        "last_reload": state.get("reload"),
        "workers": workers,
        "totals": {
            "workers": len(workers),
            "requests": total_requests,
            "bytes": sum(w["bytes"] for w in workers),
            "connections": sum(w["connections"] for w in workers),
            "requests_per_second": round(total_requests / uptime, 2),
            "rss": sum(w["rss"] for w in workers) + _safe(
                lambda: master_proc.memory_info().rss, 0),
        },
    }


def _safe(getter: Any, default: Any) -> Any:
    try:
        return getter()
    except (psutil.Error, AttributeError, OSError):
        return default


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours}:{minutes:02d}:{secs:02d}"


def _mib(value: int) -> str:
    return f"{value / (1 << 20):.1f}M"


def render(status: dict[str, Any]) -> str:
    """Human-readable status, in the spirit of Apache's server-status."""
    master = status["master"]
    lines = [
        f"prefork master pid {master['pid']}, up {_duration(master['uptime'])}, "
        f"generation {status['generation']}, config {master['config']}",
        f"listening on {', '.join(status['listen'])}",
    ]
    reload = status.get("last_reload")
    if reload and not reload.get("ok", True):
        lines.append(f"last reload FAILED: {reload.get('message')}")
    lines.append("")
    lines.append(f"{'PID':>7} {'GEN':>3} {'N':>3} {'STATE':<9} {'UPTIME':>10} {'CPU%':>6} "
                 f"{'RSS':>8} {'CONNS':>6} {'REQUESTS':>9}  THREADS")
    for worker in status["workers"]:
        letters = "".join(t["state"] for t in worker["threads"])
        lines.append(
            f"{worker['pid']:>7} {worker['generation']:>3} {worker['number']:>3} "
            f"{worker['state']:<9} {_duration(worker['uptime']):>10} "
            f"{worker['cpu_percent']:>6.1f} {_mib(worker['rss']):>8} "
            f"{worker['connections']:>6} {worker['requests']:>9}  {letters}")
        for thread in worker["threads"]:
            if thread["request"]:
                lines.append(f"{'':>12}thread {thread['thread']} [{thread['state']}] "
                             f"{thread['seconds']:.1f}s {thread['client']} "
                             + (f"[{thread['mount']}] " if thread['mount'] else "")
                             + thread['request'])
    totals = status["totals"]
    lines.append("")
    lines.append(f"totals: {totals['workers']} workers, {totals['connections']} connections, "
                 f"{totals['requests']} requests ({totals['requests_per_second']:.1f}/s since "
                 f"start), {_mib(totals['bytes'])} sent, {_mib(totals['rss'])} RSS")
    lines.append("thread states: _ waiting, R reading, W writing, G finishing, . open slot")
    return "\n".join(lines)
