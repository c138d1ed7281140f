"""Fixtures that run real prefork servers: a temporary server root (etc/, htdocs/, var/),
`bin/httpdctl` in a subprocess, port 0 on 127.0.0.1, and clean-up of every process by PID."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from prefork.cli.status import collect
from prefork.config.settings import Config, load_config
from prefork.control import find_master, send
from prefork.errors import ControlError
from prefork.scoreboard import Scoreboard

REPO = Path(__file__).resolve().parent.parent
HTTPDCTL = [sys.executable, str(REPO / "bin" / "httpdctl")]
CTL_TIMEOUT = 60.0

BASE_SETTINGS: dict[str, dict[str, str]] = {
    "server": {"listen": "127.0.0.1:0", "server_name": "localhost"},
    "workers": {"processes": "2", "threads": "2", "graceful_timeout": "10",
                "boot_timeout": "10"},
    "http": {"keepalive_timeout": "5", "timeout": "10"},
    "logging": {"level": "info"},
}


def write_config(root: Path, settings: dict[str, dict[str, str]]) -> Path:
    """Write root/etc/httpd.ini from BASE_SETTINGS updated with `settings`."""
    merged: dict[str, dict[str, str]] = {s: dict(v) for s, v in BASE_SETTINGS.items()}
    for section, values in settings.items():
        merged.setdefault(section, {}).update(values)
    lines = []
    for section, values in merged.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    path = root / "etc" / "httpd.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def write_ini(root: Path, text: str) -> Path:
    """Write `text` as root/etc/httpd.ini (with the htdocs it names by default), for tests
    of the configuration itself."""
    (root / "htdocs").mkdir(exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    path = root / "etc" / "httpd.ini"
    path.write_text(text)
    return path


def make_root(base: Path) -> Path:
    """A server root with the project's site plus test files (a 2 MiB binary, a subdir)."""
    root = base / "srv"
    shutil.copytree(REPO / "htdocs", root / "htdocs",
                    ignore=shutil.ignore_patterns("uploads"))
    (root / "var" / "log").mkdir(parents=True)
    (root / "var" / "run").mkdir(parents=True)
    docs = root / "htdocs"
    (docs / "big.bin").write_bytes(os.urandom(2 << 20))
    (docs / "sub").mkdir()
    (docs / "sub" / "index.html").write_text("<!DOCTYPE html><title>sub</title>sub index\n")
    (docs / "sub" / "page.html").write_text("<!DOCTYPE html><title>page</title>page\n")
    (docs / "empty").mkdir()
    (docs / ".secret").write_text("hidden\n")
    (base / "outside.txt").write_text("SECRET-OUTSIDE-CONTENT\n")
    (docs / "escape.txt").symlink_to(base / "outside.txt")
    (docs / "inside-link.html").symlink_to(docs / "sub" / "page.html")
    return root


@dataclass
class Server:
    root: Path
    config: Path
    port: int = 0
    pid: int = 0
    known_pids: set[int] = field(default_factory=set)
    # What runs httpdctl, and extra environment for it (tests/quick_probe.py instruments).
    launcher: list[str] = field(default_factory=lambda: list(HTTPDCTL))
    env: dict[str, str] = field(default_factory=dict)

    # ----------------------------------------------------------------- control

    def ctl(self, *args: str, check: bool = True,
            timeout: float = CTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.launcher, "-f", str(self.config), *args],
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, **self.env} if self.env else None)
        if check and result.returncode != 0:
            raise AssertionError(f"httpdctl {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stdout}{result.stderr}")
        return result

    def start(self) -> subprocess.CompletedProcess[str]:
        result = self.ctl("start")
        match = re.search(r"pid (\d+)\), listening on \S+?:(\d+)", result.stdout)
        assert match, result.stdout
        self.pid, self.port = int(match.group(1)), int(match.group(2))
        self.known_pids.add(self.pid)
        # The master's children, read from /proc in this process: recorded so that clean-up
        # can kill any that outlive it (a `status --json` here cost a process per start).
        self.known_pids.update(child.pid for child in psutil.Process(self.pid).children())
        return result

    def status(self) -> dict:
        result = self.ctl("status", "--json", check=False)
        return json.loads(result.stdout)

    def control_config(self) -> Config:
        """The configuration as `httpdctl stop/status` read it: leniently, so a file a test
        broke on purpose still names the PID file and the scoreboard."""
        return load_config(self.config, lenient=True)

    def worker_pids(self, generation: int | None = None) -> list[int]:
        """The workers in the scoreboard, read in this process by the code behind
        `httpdctl status --json` (the CLI itself is tested by `status()`); [] when the
        server is not running, as the CLI says."""
        try:
            workers = collect(self.control_config())["workers"]
        except ControlError:
            workers = []
        pids = [w["pid"] for w in workers
                if generation is None or w["generation"] == generation]
        self.known_pids.update(pids)
        return pids

    def heartbeats(self) -> dict[int, float]:
        """Each worker's last heartbeat (time.monotonic(), system-wide), from the scoreboard:
        a worker's main thread beats once a round, right before its request watchdog."""
        board = Scoreboard.open(self.state()["scoreboard"])
        try:
            return {info.pid: info.heartbeat for info in board.processes()}
        finally:
            board.close()

    def stop(self) -> None:
        self.ctl("stop", check=False)

    def cleanup(self) -> None:
        """Stop the server at once and SIGKILL any process we ever saw that is still there.
        The fast stop is sent as `httpdctl stop --now` sends it, from this process (the CLI
        verb has its own tests), and waited on the same way: until the PID-file lock goes."""
        with contextlib.suppress(Exception):  # clean-up goes on whatever the test left
            pid_file = self.control_config().server.pid_file
            send(pid_file, "stop-now")
            wait_for(lambda: find_master(pid_file) is None, timeout=20, interval=0.02)
        for pid in self.known_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ----------------------------------------------------------------- talking to it

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[http.client.HTTPResponse, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response, data
        finally:
            conn.close()

    def socket(self, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send raw bytes, half-close, and return everything until the server closes."""
        with self.socket(timeout) as sock:
            sock.sendall(data)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            return read_all(sock)

    def log(self, name: str) -> str:
        path = self.root / "var" / "log" / name
        return path.read_text() if path.exists() else ""

    def state(self) -> dict:
        """The master's state file (what `httpdctl reload/status` read); {} when absent."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.root / "var" / "run" / "httpd.state").read_text())
        return {}

    def reload_by_signal(self, timeout: float = 30) -> dict:
        """SIGHUP the master directly and wait for the reload's outcome in the state file,
        as `httpdctl reload` does (without a process per reload; the verb has its tests)."""
        before = self.state().get("reload_seq", 0)
        os.kill(self.pid, signal.SIGHUP)
        # A reload takes ~15 ms: a close poll of one small file keeps it that.
        return wait_for(lambda: (s := self.state()).get("reload_seq", 0) > before
                        and s["reload"], timeout=timeout, interval=0.005)  # type: ignore[return-value]


def start_activated(server: Server, host: str, stderr: int = subprocess.DEVNULL
                    ) -> tuple[subprocess.Popen[bytes], int]:
    """Start `server` in the foreground as systemd socket activation does: a socket bound
    to `host`, port 0, handed over as fd 3 with LISTEN_PID/LISTEN_FDS (whatever [server]
    listen says). Returns the master's process and the socket's port."""
    activated = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    activated.bind((host, 0))
    activated.listen(16)
    port, fd = activated.getsockname()[1], activated.fileno()
    script = f'exec 3<&{fd}; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@"'
    process = subprocess.Popen(["bash", "-c", script, "bash", *HTTPDCTL, "-f",
                                str(server.config), "start", "--foreground"], pass_fds=[fd],
                               stdout=subprocess.DEVNULL, stderr=stderr,
                               stdin=subprocess.DEVNULL)
    activated.close()
    server.known_pids.add(process.pid)
    server.pid, server.port = process.pid, port
    return process, port


def stop_activated(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def refused_activated_start(server: Server, host: str) -> tuple[int, str]:
    """start_activated where the start must fail: returns the socket's port and what the
    master wrote on stderr, once it exited 1."""
    process, port = start_activated(server, host, stderr=subprocess.PIPE)
    try:
        _out, err = process.communicate(timeout=30)
    finally:
        stop_activated(process)
    assert process.returncode == 1, err
    return port, err.decode()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             interval: float = 0.05) -> object:
    """Poll `predicate` until it returns something truthy; fail the test on timeout.
    The pause starts at 2 ms and doubles up to `interval`: most conditions hold within a
    few milliseconds (a reload, a log line), and a fixed 50 ms poll made each wait cost
    25 ms on average for nothing (10 s over the 200-reload test)."""
    deadline = time.monotonic() + timeout
    pause = min(0.002, interval)
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(pause)
        pause = min(pause * 2, interval)
    raise AssertionError(f"condition not met within {timeout}s")


class KeepAliveLoad:
    """Clients that GET `path` over keep-alive connections until stopped, counting outcomes.

    `connect()` opens a connection (plain or TLS); `good(body)` says whether a 200's body is
    whole. A response with `Connection: close` (or, with `per_connection`, that many
    requests) is followed by a new connection, as any HTTP/1.1 client does; everything else
    that goes wrong counts as a failure."""

    def __init__(self, connect: Callable[[], http.client.HTTPConnection],
                 path: str = "/about.html", good: Callable[[bytes], bool] = bool,
                 clients: int = 4, per_connection: int | None = None) -> None:
        self.connect = connect
        self.path = path
        self.good = good
        self.per_connection = per_connection
        self.ok = 0
        self.connections = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> KeepAliveLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        sent = 0
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn, sent = self.connect(), 0
                    self.connections += 1
                conn.request("GET", self.path, headers={"Host": "localhost"})
                response = conn.getresponse()
                body = response.read()
                sent += 1
                if response.status != 200 or not self.good(body):
                    self.failures.append(f"status {response.status}, {body[:40]!r}")
                else:
                    self.ok += 1
                if response.will_close or sent == self.per_connection:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of `sock` (tcp_info.tcpi_state: 1 ESTABLISHED, 7 CLOSE,
    8 CLOSE_WAIT), to wait for what the peer did instead of sleeping."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


TCP_ESTABLISHED = 1


def refuses_connections(port: int) -> bool:
    """Whether a connection to 127.0.0.1:`port` is refused: every copy of the listener is
    closed (while a stop drains, a new SYN is first dropped, which is not a refusal)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as handle:
        if handle.read().split(")")[-1].split()[0] == "Z":
            return False
    return True


ServerFactory = Callable[..., Server]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Build (and by default start) servers; every one is stopped and killed afterwards."""
    servers: list[Server] = []

    def factory(settings: dict[str, dict[str, str]] | None = None,
                start: bool = True) -> Server:
        base = tmp_path / f"s{len(servers)}"
        base.mkdir()
        root = make_root(base)
        server = Server(root, write_config(root, settings or {}))
        servers.append(server)
        if start:
            server.start()
        return server

    yield factory
    for server in servers:
        server.cleanup()


@pytest.fixture
def server(server_factory: ServerFactory) -> Server:
    return server_factory()


@contextlib.contextmanager
def running_server(base: Path, settings: dict[str, dict[str, str]] | None = None
                   ) -> Iterator[Server]:
    """A started server in a new root under `base`, stopped and killed on exit."""
    root = make_root(base)
    server = Server(root, write_config(root, settings or {}))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a module's read-only HTTP checks (saves start-up time)."""
    with running_server(tmp_path_factory.mktemp("shared")) as server:
        yield server
