"""The processes: start/stop/status/restart/reload, respawn, graceful stop, CLI errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from .conftest import (
    HTTPDCTL,
    Server,
    ServerFactory,
    pid_alive,
    read_all,
    refuses_connections,
    wait_for,
)


def test_start_status_stop(server: Server) -> None:
    status = server.status()
    assert status["running"] is True
    assert status["master"]["pid"] == server.pid
    assert status["listen"] == [f"127.0.0.1:{server.port}"]
    workers = status["workers"]
    assert len(workers) == 2 and {w["generation"] for w in workers} == {1}
    for worker in workers:
        assert pid_alive(worker["pid"])
        with open(f"/proc/{worker['pid']}/stat") as handle:
            assert int(handle.read().split(")")[-1].split()[1]) == server.pid  # ppid
        assert worker["state"] == "ready" and len(worker["threads"]) >= 2
    with open(f"/proc/{server.pid}/cmdline", "rb") as handle:
        assert handle.read().startswith(b"httpd: master -f ")
    with open(f"/proc/{workers[0]['pid']}/cmdline", "rb") as handle:
        assert handle.read().startswith(b"httpd: worker ")
    for _ in range(5):
        assert server.get("/")[0].status == 200
    status = wait_for(lambda: (s := server.status())["totals"]["requests"] >= 5 and s)
    # What status --json says matches /proc (this was test_supervisor's
    # test_status_json_matches_reality): every child of the master, and only those.
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server.pid:
                children.add(int(entry.name))
    assert {w["pid"] for w in status["workers"]} == children
    assert all(len(w["threads"]) >= 2 and w["rss"] > 0 for w in status["workers"])
    assert status["master"]["pid"] == server.pid and status["generation"] == 1
    assert status["totals"]["requests"] == sum(w["requests"] for w in status["workers"])
    text = server.ctl("status").stdout
    assert f"master pid {server.pid}" in text and "REQUESTS" in text
    pid_file = server.root / "var" / "run" / "httpd.pid"
    assert pid_file.read_text().strip() == str(server.pid)
    result = server.ctl("stop")
    assert "stopped" in result.stdout
    assert not pid_alive(server.pid) and not pid_file.exists()
    assert not any(pid_alive(w["pid"]) for w in workers)
    again = server.ctl("status", check=False)
    assert again.returncode == 3 and "not running" in again.stderr


def test_cli_errors_are_one_line_and_non_zero(server_factory: ServerFactory) -> None:
    server = server_factory()
    again = server.ctl("start", check=False)
    assert again.returncode == 1
    assert "already running" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    # A second server on the first one's port.
    other = server_factory({"server": {"listen": f"127.0.0.1:{server.port}"}}, start=False)
    busy = other.ctl("start", check=False)
    assert busy.returncode == 1 and "port in use" in busy.stderr
    assert not (other.root / "var" / "run" / "httpd.pid").exists()
    server.ctl("stop")
    missing = server.ctl("stop", check=False)
    assert missing.returncode == 3 and "not running" in missing.stderr
    # A bad configuration names file, line and key; configtest says the same.
    config = other.config
    config.write_text(config.read_text() + "\n[http]\nkeepalive_timeout = forever\n")
    for verb in ("start", "configtest"):
        bad = other.ctl(verb, check=False)
        assert bad.returncode == 1
        assert f"{config}:" in bad.stderr and "keepalive_timeout" in bad.stderr
    assert "Syntax OK" in server.ctl("configtest").stdout


def test_stale_pid_file_does_not_block_start(server_factory: ServerFactory) -> None:
    server = server_factory(start=False)
    pid_file = server.root / "var" / "run" / "httpd.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a live PID, but nobody holds the lock
    server.start()
    assert server.get("/")[0].status == 200


def test_graceful_stop_lets_a_download_finish(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1", "graceful_timeout": "30"},
                             "http": {"keepalive_timeout": "30"}})
    [worker] = server.worker_pids()
    big = (server.root / "htdocs" / "huge.bin")
    big.write_bytes(os.urandom(32 << 20))
    sock = server.socket(timeout=30)
    sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first = sock.recv(65536)  # it has started; 32 MiB cannot fit in the socket buffers
    assert first.startswith(b"HTTP/1.1 200")
    stopped: list[subprocess.CompletedProcess[str]] = []
    stopper = threading.Thread(target=lambda: stopped.append(server.ctl("stop")))
    stopper.start()

    # While we read nothing, the stop goes ahead: the worker has closed its listeners
    # (new clients are refused) with our download in flight, and `stop` is waiting on it.
    wait_for(lambda: refuses_connections(server.port), timeout=20)
    assert "graceful stop requested" in server.log("error.log")
    assert pid_alive(worker) and stopper.is_alive()
    received = bytearray(first)
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert b"\r\nContent-Length: %d\r\n" % (32 << 20) in head
    assert len(body) < 32 << 20  # still downloading while the stop was under way
    # Read to the end of the body. The response was framed for keep-alive before the stop;
    # once it is sent, the idle wait is the stop's grace (0.5 s), not the 30 s keep-alive.
    while len(body) < 32 << 20 and (chunk := sock.recv(1 << 20)):
        body += chunk
    sock.settimeout(5)
    assert sock.recv(1) == b""  # the server closed it (a timeout here: it waited for 30 s)
    sock.close()
    stopper.join(30)
    assert stopped and "stopped" in stopped[0].stdout
    assert len(body) == 32 << 20 and body == big.read_bytes()
    assert not pid_alive(server.pid) and not pid_alive(worker)


def test_restart_gives_a_new_master(server: Server) -> None:
    old = server.pid
    result = server.ctl("restart")
    assert "stopped" in result.stdout and "started" in result.stdout
    new = server.status()["master"]["pid"]
    assert new != old and not pid_alive(old)
    server.known_pids.add(new)
    server.port = int(server.status()["listen"][0].rsplit(":", 1)[1])
    assert server.get("/")[0].status == 200


def test_reload_replaces_workers_and_keeps_serving(server: Server) -> None:
    old_workers = server.worker_pids()
    result = server.ctl("reload")
    assert "generation 2 serving" in result.stdout
    wait_for(lambda: not any(pid_alive(p) for p in old_workers))
    status = server.status()
    assert status["generation"] == 2
    assert {w["generation"] for w in status["workers"]} == {2}
    assert server.get("/")[0].status == 200


def test_reload_with_bad_config_keeps_old_generation(server: Server) -> None:
    workers = server.worker_pids()
    server.config.write_text(server.config.read_text() + "\n[http]\nbogus = 1\n")
    result = server.ctl("reload", check=False)
    assert result.returncode == 1 and "http.bogus" in result.stderr
    assert server.worker_pids() == workers and server.get("/")[0].status == 200
    stopped = server.ctl("stop")  # a file broken since the start must not block a stop
    assert "warning" in stopped.stderr and "http.bogus" in stopped.stderr
    assert not pid_alive(server.pid)


def test_workers_exit_when_master_is_killed(server: Server) -> None:
    workers = server.worker_pids()
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in workers), timeout=15)


def test_foreground_debug_prints_console_events(server_factory: ServerFactory) -> None:
    server = server_factory({"logging": {"level": "debug"},
                             "workers": {"processes": "1"}}, start=False)
    process = subprocess.Popen([*HTTPDCTL, "-f", str(server.config), "start", "--foreground"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    server.known_pids.add(process.pid)
    try:
        state = server.root / "var" / "run" / "httpd.state"
        wait_for(state.exists, timeout=15)
        server.port = int(server.status()["listen"][0].rsplit(":", 1)[1])
        server.known_pids.update(server.worker_pids())
        with server.socket() as sock:
            sock.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n"
                         b"Connection: close\r\n\r\n")
            assert read_all(sock).startswith(b"HTTP/1.1 404")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout == b""  # nothing but the CLI's own output goes to stdout
    text = stderr.decode()
    for event in ("connection accepted", "request 'GET /nothing-here HTTP/1.1'",
                  "response 404", "ready: all workers accepting"):
        assert event in text, event


def test_privileged_port_without_the_capability(server_factory: ServerFactory) -> None:
    """Root without CAP_NET_BIND_SERVICE binds a low port as an ordinary user would: EACCES."""
    setpriv = shutil.which("setpriv")
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as handle:
        unprivileged_start = int(handle.read())
    if os.geteuid() != 0 or setpriv is None or unprivileged_start <= 81:
        pytest.skip("needs root, setpriv, and privileged ports below 1024")
    server = server_factory({"server": {"listen": "127.0.0.1:81"}}, start=False)
    result = subprocess.run(
        [setpriv, "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service",
         *HTTPDCTL, "-f", str(server.config), "start"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "permission denied" in result.stderr and "127.0.0.1:81" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
