"""/server-status: the scoreboard as a page, in the spirit of Apache's mod_status.

`?auto` answers in mod_status's machine-readable format (the "Key: value" lines Prometheus'
apache_exporter and collectd's apache plugin scrape). Off by default; when enabled, only
clients in [status] allow (addresses or CIDR networks) may see it.
"""

from __future__ import annotations

import html
import ipaddress
import os
import time
from typing import Any

from prefork import SERVER_SOFTWARE
from prefork.config.settings import Config
from prefork.control import read_state
from prefork.errors import Forbidden, MethodNotAllowed
from prefork.http.message import FieldNames, Request, Response
from prefork.scoreboard import (
    GRACEFUL,
    PROCESS_STATE_NAMES,
    STOPPING_STATES,
    Scoreboard,
    ThreadInfo,
)

STATUS_METHODS = ("GET", "HEAD")
BUSY_STATES = frozenset("RWLG")


def uptime_text(seconds: int) -> str:
    """mod_status's ServerUptime: "1 day 2 hours 5 minutes 28 seconds" (zero parts left
    out, as Apache's show_time does)."""
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    parts = [f"{n} {unit}{'' if n == 1 else 's'}"
             for n, unit in ((days, "day"), (hrs, "hour"), (mins, "minute"), (secs, "second"))
             if n]
    return " ".join(parts)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times(pids: list[int]) -> tuple[float, float, float, float] | None:
    """(user, system, children's user, children's system) CPU seconds of the master and the
    workers now running, from /proc/PID/stat (proc(5): utime, stime, cutime, cstime).

    The children's figures are the master's (its workers that exited and were reaped, with
    their own children) plus the workers' (processes an application started). None when
    /proc cannot be read (not Linux, or hidepid), so the keys are left out."""
    totals = [0, 0, 0, 0]
    for pid in dict.fromkeys(pids):  # in order, once each
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                text = stat.read()
        except FileNotFoundError:
            continue  # a worker that just exited: its time is in the master's children
        except OSError:
            return None
        # The command name (field 2) may hold spaces and parentheses: split after its end.
        fields = text[text.rindex(b")") + 2:].split()
        for i in range(4):  # fields 14-17; fields[0] is field 3
            totals[i] += int(fields[11 + i])
    user, system, children_user, children_system = (t / _CLOCK_TICKS for t in totals)
    return user, system, children_user, children_system


class ServerStatus:
    """Serves the status page for an allowed client."""

    reads_fields: FieldNames = frozenset({"host"})  # request.host names the ?auto page

    def __init__(self, config: Config) -> None:
        self.allowed = [ipaddress.ip_network(a, strict=False) for a in config.status.allow]
        self.scoreboard_path = config.server.scoreboard_file
        self.pid_file = config.server.pid_file
        self.board: Scoreboard | None = None

    def allows(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed
                   if network.version == address.version)

    def serve(self, request: Request) -> Response:
        """Return the HTML page, or the ?auto text; raises Forbidden / MethodNotAllowed."""
        if request.method not in STATUS_METHODS:
            raise MethodNotAllowed(STATUS_METHODS)
        if not self.allows(request.client[0]):
            raise Forbidden(f"client {request.client[0]} is not in [status] allow")
        if self.board is None:
            self.board = Scoreboard.open(self.scoreboard_path)
        snapshot = self._snapshot()
        if request.query.split("&")[0] == "auto":
            body = self._auto(snapshot, request.host or "localhost")
            content_type = "text/plain; charset=utf-8"
        else:
            body = self._html(snapshot)
            content_type = "text/html; charset=utf-8"
        return Response(200, [("Content-Type", content_type), ("Cache-Control", "no-store")],
                        body.encode())

    def _snapshot(self) -> dict[str, Any]:
        assert self.board is not None
        state = read_state(self.pid_file)
        processes = []
        for info in self.board.processes():
            threads = list(self.board.threads(info.slot))
            processes.append((info, threads))
        master_pid, started = self.board.header()
        return {"state": state, "processes": processes, "started": started, "now": time.time(),
                "master_pid": master_pid}

    @staticmethod
    def _letters(threads: list[ThreadInfo], stopping: bool) -> str:
        graceful = GRACEFUL.decode()
        return "".join(graceful if stopping and t.state in BUSY_STATES else t.state
                       for t in threads)

    def _auto(self, snap: dict[str, Any], host: str) -> str:
        """mod_status's ?auto for an event MPM, key for key, in its order; a key prefork
        cannot fill honestly is left out (Server Built: a Python package has no build
        time), not printed with a made-up value."""
        now, started = snap["now"], snap["started"]
        uptime = max(1, int(now - started))
        threads = [t for _info, ts in snap["processes"] for t in ts]
        accesses = sum(t.requests for t in threads)
        total_bytes = sum(t.bytes for t in threads)
        duration_ms = int(sum(t.duration for t in threads) * 1000)
        busy = sum(1 for t in threads if t.state in BUSY_STATES)
        load = os.getloadavg()
        scoreboard = "".join(self._letters(ts, info.state in STOPPING_STATES)
                             for info, ts in snap["processes"])
        # prefork has one generation counter: a reload reads the configuration and starts
        # the workers of one new generation, so both of Apache's generations are it.
        generation = snap["state"].get("generation", 1)
        lines = [
            host,
            f"ServerVersion: {SERVER_SOFTWARE}",
            "ServerMPM: prefork-threaded",
            f"CurrentTime: {time.strftime('%A, %d-%b-%Y %H:%M:%S %Z', time.localtime(now))}",
            f"RestartTime: {time.strftime('%A, %d-%b-%Y %H:%M:%S %Z', time.localtime(started))}",
            f"ParentServerConfigGeneration: {generation}",
            f"ParentServerMPMGeneration: {generation}",
            f"ServerUptimeSeconds: {uptime}",
            f"ServerUptime: {uptime_text(uptime)}",
            f"Load1: {load[0]:.2f}",
            f"Load5: {load[1]:.2f}",
            f"Load15: {load[2]:.2f}",
            f"Total Accesses: {accesses}",
            f"Total kBytes: {total_bytes // 1024}",
            f"Total Duration: {duration_ms}",
        ]
        cpu = cpu_times([snap["master_pid"], *(info.pid for info, _ in snap["processes"])])
        if cpu is not None:
            user, system, children_user, children_system = cpu
            lines += [
                f"CPUUser: {user:g}",
                f"CPUSystem: {system:g}",
                f"CPUChildrenUser: {children_user:g}",
                f"CPUChildrenSystem: {children_system:g}",
                f"CPULoad: {sum(cpu) / uptime * 100:.6g}",
            ]
        lines += [
            f"Uptime: {uptime}",
            f"ReqPerSec: {accesses / uptime:.6g}",
            f"BytesPerSec: {total_bytes / uptime:.6g}",
            f"BytesPerReq: {total_bytes / accesses if accesses else 0:.6g}",
            f"DurationPerReq: {duration_ms / accesses if accesses else 0:.6g}",
            f"BusyWorkers: {busy}",
            f"IdleWorkers: {sum(1 for t in threads if t.state == '_')}",
            f"Processes: {len(snap['processes'])}",
            f"Stopping: {sum(1 for info, _ in snap['processes'] if info.state in STOPPING_STATES)}",
            f"ConnsTotal: {sum(t.connections for t in threads)}",
            f"ConnsAsyncWriting: {sum(t.writing for t in threads)}",
            f"ConnsAsyncKeepAlive: {sum(t.keepalive for t in threads)}",
            f"ConnsAsyncClosing: {sum(t.closing for t in threads)}",
            f"Scoreboard: {scoreboard}",
        ]
        return "\n".join(lines) + "\n"

    def _html(self, snap: dict[str, Any]) -> str:
        now = snap["now"]
        rows = []
        for info, threads in snap["processes"]:
            for thread in threads:
                busy = thread.state in BUSY_STATES
                rows.append(
                    "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                        info.pid, info.generation, info.number,
                        PROCESS_STATE_NAMES.get(info.state, "?"), thread.thread, thread.state,
                        thread.requests, thread.bytes, thread.connections,
                        f"{now - thread.request_start:.1f}" if busy else "",
                        thread.client if busy else "", thread.mount if busy else "",
                        thread.request_line if busy else "",
                    )) + "</tr>")
        state = snap["state"]
        uptime = int(now - snap["started"])
        threads = [t for _i, ts in snap["processes"] for t in ts]
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<title>prefork server status</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style></head><body>"
            f"<h1>prefork server status</h1><p>{html.escape(SERVER_SOFTWARE)}; master pid "
            f"{state.get('pid', '?')}; generation {state.get('generation', '?')}; "
            f"up {uptime}s; listening on {html.escape(', '.join(state.get('listen', [])))}</p>"
            f"<p>{sum(t.requests for t in threads)} requests, "
            f"{sum(t.bytes for t in threads)} bytes, "
            f"{sum(t.connections for t in threads)} open connections</p>"
            "<table><tr><th>PID</th><th>Gen</th><th>Worker</th><th>Process</th><th>Thread</th>"
            "<th>State</th><th>Requests</th><th>Bytes</th><th>Conns</th><th>Seconds</th>"
            "<th>Client</th><th>Mount</th><th>Request</th></tr>" + "".join(rows) + "</table>"
            "<p>States: _ waiting, R reading, W writing, G finishing (graceful), "
            ". open slot</p></body></html>\n")
