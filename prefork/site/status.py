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
        _pid, started = self.board.header()
        return {"state": state, "processes": processes, "started": started, "now": time.time()}

    @staticmethod
    def _letters(threads: list[ThreadInfo], stopping: bool) -> str:
        graceful = GRACEFUL.decode()
        return "".join(graceful if stopping and t.state in BUSY_STATES else t.state
                       for t in threads)

    def _auto(self, snap: dict[str, Any], host: str) -> str:
        now, started = snap["now"], snap["started"]
        uptime = max(1, int(now - started))
        threads = [t for _info, ts in snap["processes"] for t in ts]
        accesses = sum(t.requests for t in threads)
        total_bytes = sum(t.bytes for t in threads)
        busy = sum(1 for t in threads if t.state in BUSY_STATES)
        load = os.getloadavg()
        scoreboard = "".join(self._letters(ts, info.state in STOPPING_STATES)
                             for info, ts in snap["processes"])
        lines = [
            host,
            f"ServerVersion: {SERVER_SOFTWARE}",
            "ServerMPM: prefork-threaded",
            f"CurrentTime: {time.strftime('%A, %d-%b-%Y %H:%M:%S %Z', time.localtime(now))}",
            f"RestartTime: {time.strftime('%A, %d-%b-%Y %H:%M:%S %Z', time.localtime(started))}",
            f"ParentServerConfigGeneration: {snap['state'].get('generation', 1)}",
            f"ServerUptimeSeconds: {uptime}",
            f"Load1: {load[0]:.2f}",
            f"Load5: {load[1]:.2f}",
            f"Load15: {load[2]:.2f}",
            f"Total Accesses: {accesses}",
            f"Total kBytes: {total_bytes // 1024}",
            f"Uptime: {uptime}",
            f"ReqPerSec: {accesses / uptime:.6g}",
            f"BytesPerSec: {total_bytes / uptime:.6g}",
            f"BytesPerReq: {total_bytes / accesses if accesses else 0:.6g}",
            f"BusyWorkers: {busy}",
            f"IdleWorkers: {sum(1 for t in threads if t.state == '_')}",
            f"Processes: {len(snap['processes'])}",
            f"Stopping: {sum(1 for info, _ in snap['processes'] if info.state in STOPPING_STATES)}",
            f"ConnsTotal: {sum(t.connections for t in threads)}",
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
                        thread.client if busy else "", thread.request_line if busy else "",
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
            "<th>Client</th><th>Request</th></tr>" + "".join(rows) + "</table>"
            "<p>States: _ waiting, R reading, W writing, G finishing (graceful), "
            ". open slot</p></body></html>\n")
