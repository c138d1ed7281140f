"""Starting, checking and stopping one server process and its whole tree, by PID."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import time
from pathlib import Path

from measure import stop_tree
from servers import HOST, Launch, Server

_RUNNING: list[Running] = []


class StartError(RuntimeError):
    pass


class Running:
    """One started server process (and its tree) with its log file."""

    def __init__(self, server: Server, launch: Launch, workdir: Path, port: int,
                 tls: bool = False) -> None:
        self.server = server
        self.port = port
        self.tls = tls  # readiness is probed over https
        self.workdir = workdir
        self.log_path = workdir / "server.out"
        env = {**os.environ, **launch.env}
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(launch.argv, cwd=launch.cwd, env=env,
                                             stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                raise StartError(f"{server.name}: cannot run {launch.argv[0]}: {e}") from e
        self.pid = self.proc.pid
        self.stop_signal = launch.stop_signal
        _RUNNING.append(self)

    def log_tail(self, lines: int = 15) -> str:
        texts = []
        for p in (self.log_path, self.workdir / "error.log",
                  self.workdir / "var" / "log" / "error.log"):
            if p.exists():
                texts += p.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(texts[-lines:])

    def wait_ready(self, path: str, size: int | None, timeout: float = 30.0) -> None:
        """Poll GET path until it answers 200 (with size bytes unless size is None), or fail
        with the log's tail."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"{self.server.name} exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")
            try:
                status, body = http_get(self.port, path, tls=self.tls)
                if status == 200 and (size is None or len(body) == size):
                    return
                last = f"HTTP {status}, {len(body)} bytes"
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise StartError(f"{self.server.name} not ready after {timeout:.0f}s ({last}):\n"
                         f"{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """Signal the root; after grace seconds SIGKILL by PID whatever of its tree is left."""
        if self not in _RUNNING:
            return
        stop_tree(self.proc, self.stop_signal, grace)
        _RUNNING.remove(self)


def stop_all() -> None:
    for r in list(_RUNNING):
        r.stop(grace=3.0)


def http_get(port: int, path: str, timeout: float = 2.0, tls: bool = False
             ) -> tuple[int, bytes]:
    conn: http.client.HTTPConnection
    if tls:  # the bench's throwaway self-signed certificate: no verification
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"{HOST}:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
