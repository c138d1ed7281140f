"""The supervisor's contract (issue 5) against real processes: lossless reloads, failed
reloads that change nothing, graceful stops under load, health, signals, systemd."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from .conftest import (
    HTTPDCTL,
    KeepAliveLoad,
    Server,
    ServerFactory,
    make_root,
    pid_alive,
    read_all,
    refuses_connections,
    start_activated,
    stop_activated,
    wait_for,
    write_config,
)

RELOADS_UNDER_LOAD = 50


def test_fifty_reloads_under_keepalive_load_lose_nothing(server_factory: ServerFactory,
                                                         capsys: pytest.CaptureFixture) -> None:
    server = server_factory({"workers": {"processes": "2", "threads": "1"}})
    with KeepAliveLoad(lambda: http.client.HTTPConnection("127.0.0.1", server.port,
                                                          timeout=15)) as load:
        for number in range(RELOADS_UNDER_LOAD):
            # SIGHUP and the outcome in the state file, as `httpdctl reload` does (the verb
            # itself is tested in test_lifecycle.py): 50 CLI processes cost half a minute.
            outcome = server.reload_by_signal()
            assert outcome["ok"] and f"generation {number + 2} serving" in outcome["message"], \
                outcome
        # The last generation serves the load for a while, not just its first requests.
        served = load.ok
        wait_for(lambda: load.ok >= served + 200, timeout=30)
    with capsys.disabled():
        print(f"\n{RELOADS_UNDER_LOAD} reloads under load: {load.ok} requests succeeded, "
              f"{len(load.failures)} failed")
    assert load.ok > RELOADS_UNDER_LOAD and load.failures == []
    status = server.status()
    assert status["generation"] == RELOADS_UNDER_LOAD + 1
    assert {w["generation"] for w in status["workers"]} == {RELOADS_UNDER_LOAD + 1}


def test_reload_whose_workers_cannot_boot_keeps_old_generation(server: Server) -> None:
    workers = server.worker_pids()
    server.config.write_text(server.config.read_text().replace(
        "[server]\n", "[server]\nuser = no-such-user-here\n"))
    result = server.ctl("reload", check=False)
    assert result.returncode == 1
    assert "failed to boot" in result.stderr and "still serving" in result.stderr
    assert server.worker_pids() == workers
    assert server.get("/")[0].status == 200
    assert "unknown [server] user 'no-such-user-here'" in server.log("error.log")
    assert server.status()["generation"] == 1


def test_reload_can_add_a_listen_address(server: Server) -> None:
    text = server.config.read_text().replace("listen = 127.0.0.1:0",
                                             "listen = 127.0.0.1:0 [::1]:0")
    server.config.write_text(text)
    server.ctl("reload")
    listen = server.status()["listen"]
    assert listen[0] == f"127.0.0.1:{server.port}"  # the kept socket
    v6_port = int(listen[1].rsplit(":", 1)[1])
    with socket.create_connection(("::1", v6_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")


def test_term_during_twenty_slow_downloads_all_complete(server_factory: ServerFactory) -> None:
    """20 downloads of 8 MiB, more than the socket buffers hold (net.ipv4.tcp_wmem's 4 MiB
    at most, and the client's receive buffer): none can finish while its client does not
    read, so the stop is shown under way (listeners closed, workers and `stop` still
    waiting) with every download in flight; then the clients read and all complete."""
    server = server_factory({"workers": {"processes": "2"}})
    payload = os.urandom(8 << 20)
    (server.root / "htdocs" / "eight.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).digest()
    results: list[bytes] = []
    started = threading.Barrier(21)
    draining = threading.Event()

    def download() -> None:
        with server.socket(timeout=60) as sock:
            sock.sendall(b"GET /eight.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = bytearray(sock.recv(65536))
            started.wait(30)
            draining.wait(30)  # read nothing more until the stop is under way
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = bytes(data).partition(b"\r\n\r\n")
            received, check = len(body), hashlib.sha256(body)
            while received < len(payload) and (chunk := sock.recv(1 << 20)):
                received += len(chunk)
                check.update(chunk)
        results.append(check.digest() if received == len(payload) else head)

    threads = [threading.Thread(target=download) for _ in range(20)]
    for thread in threads:
        thread.start()
    workers = server.worker_pids()
    started.wait(30)
    stopped: list[subprocess.CompletedProcess[str]] = []
    stopper = threading.Thread(target=lambda: stopped.append(server.ctl("stop", timeout=90)))
    stopper.start()
    try:
        wait_for(lambda: refuses_connections(server.port), timeout=20)
        assert "graceful stop requested" in server.log("error.log")
        assert all(pid_alive(pid) for pid in workers) and stopper.is_alive()
    finally:
        draining.set()
    for thread in threads:
        thread.join(60)
    stopper.join(90)
    assert stopped and "stopped" in stopped[0].stdout
    assert len(results) == 20 and all(result == digest for result in results)
    assert not pid_alive(server.pid)


def test_stuck_request_is_reported_with_a_stack_and_worker_retired(
        server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1", "request_timeout": "1"},
                             "http": {"body_timeout": "30"}})
    [old] = server.worker_pids()
    with server.socket(timeout=30) as sock:
        # A body that trickles in: its request runs past request_timeout.
        sock.sendall(b"PUT /uploads/slow.txt HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 100\r\n\r\n")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "request_timeout" not in server.log("error.log"):
            sock.sendall(b"x")
            time.sleep(0.2)
    log = server.log("error.log")
    assert "exceeds [workers] request_timeout" in log and "PUT /uploads/slow.txt" in log
    assert "Stack of that thread" in log and 'File "' in log
    wait_for(lambda: old not in server.worker_pids() and len(server.worker_pids()) == 1,
             timeout=30)
    assert "recycling worker 1" in server.log("error.log")


def test_hung_worker_is_killed_and_replaced(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "2", "heartbeat_timeout": "2"}})
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGSTOP)
    wait_for(lambda: f"pid {victim} killed because hung" in server.log("error.log"), 20)
    wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 20)
    assert server.get("/")[0].status == 200


def test_max_requests_recycles_without_losing_capacity(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1", "max_requests": "20"}})
    [first] = server.worker_pids()
    for _ in range(60):
        response, _ = server.get("/about.html")
        assert response.status == 200
    wait_for(lambda: first not in server.worker_pids(), timeout=20)
    log = server.log("error.log")
    assert "recycling worker 1" in log and "max_requests reached" in log
    assert "replacement pid" in log


def test_memory_limit_recycles(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1", "max_worker_memory": "1M"}})
    [first] = server.worker_pids()
    wait_for(lambda: "exceeds max_worker_memory" in server.log("error.log"), timeout=20)
    wait_for(lambda: first not in server.worker_pids(), timeout=20)
    assert server.get("/")[0].status == 200


def test_ttin_ttou_change_the_worker_count(server: Server) -> None:
    server.ctl("add-worker")
    wait_for(lambda: len(server.worker_pids()) == 3, timeout=15)
    server.ctl("remove-worker")
    wait_for(lambda: len(server.worker_pids()) == 2, timeout=15)


def test_reopen_logs_waits_for_every_worker(server: Server) -> None:
    log_dir = server.root / "var" / "log"
    server.get("/")
    (log_dir / "access.log").rename(log_dir / "access.log.1")
    result = server.ctl("reopen-logs")
    assert "every worker" in result.stdout
    for _ in range(4):  # both workers write to the new file
        server.get("/contact.html")
    wait_for(lambda: "/contact.html" in server.log("access.log"))
    assert "/contact.html" not in (log_dir / "access.log.1").read_text()


def test_shutdown_delay_keeps_serving(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"shutdown_delay": "2"}})
    began = time.monotonic()
    os.kill(server.pid, signal.SIGTERM)
    # The master has taken the stop and entered the delay (it says so as it takes it) ...
    wait_for(lambda: "([workers] shutdown_delay)" in server.log("error.log"))
    assert server.get("/")[0].status == 200  # ... and still serves during it,
    assert "graceful stop requested" not in server.log("error.log")  # before the drain.
    wait_for(lambda: not pid_alive(server.pid), timeout=20)
    assert time.monotonic() - began >= 2  # the delay was kept in full


def test_a_reload_asked_for_during_a_stop_is_refused(server_factory: ServerFactory) -> None:
    """Once a stop was asked for, a SIGHUP forks no new generation: the reload fails, saying
    why, and the stop goes on."""
    server = server_factory({"workers": {"shutdown_delay": "2"}})
    os.kill(server.pid, signal.SIGTERM)
    wait_for(lambda: "([workers] shutdown_delay)" in server.log("error.log"))
    os.kill(server.pid, signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log("error.log"))
    assert "the server is stopping" in server.log("error.log")
    wait_for(lambda: not pid_alive(server.pid), timeout=20)
    assert "starting generation 2" not in server.log("error.log")


def test_reload_says_so_when_the_master_dies_before_reporting(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    """httpdctl reload waits for its outcome, but not for a master that is gone."""
    (tmp_path / "slowapp.py").write_text(
        "import os, time\n"
        f"slow = {str(tmp_path / 'slow')!r}\n"
        "if os.path.exists(slow) and open(slow).read() == str(os.getppid()):\n"
        "    time.sleep(30)  # in the master's import check, not in httpdctl's\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'ok']\n")
    server = server_factory({"app": {"mount": "/app", "module": "slowapp:application",
                                     "path": str(tmp_path)}})
    (tmp_path / "slow").write_text(str(server.pid))  # the master's import check: 30 s
    children: list[psutil.Process] = []
    reload = subprocess.Popen([*server.launcher, "-f", str(server.config), "reload"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: server.state().get("reload_requested"))  # the master took it
        children += psutil.Process(server.pid).children(recursive=True)  # its import check
        os.kill(server.pid, signal.SIGKILL)
        _out, err = reload.communicate(timeout=10)
        assert reload.returncode == 1 and "exited before it reported" in err, err
    finally:
        if reload.poll() is None:
            reload.kill()
            reload.wait()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_fast_stop(server_factory: ServerFactory) -> None:
    server = server_factory()
    workers = server.worker_pids()
    started = time.monotonic()
    server.ctl("stop", "--now")
    assert time.monotonic() - started < 8
    assert not pid_alive(server.pid) and not any(pid_alive(p) for p in workers)


def test_server_status_page(server_factory: ServerFactory) -> None:
    server = server_factory({"status": {"enabled": "on"}})
    server.get("/")

    def auto() -> dict[str, str]:
        response, body = server.get("/server-status?auto")
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
        return dict(line.split(": ", 1) for line in body.decode().splitlines()[1:])

    # The scoreboard is published once a second: poll until our request shows.
    fields = wait_for(lambda: (f := auto()) and int(f["Total Accesses"]) >= 1 and f)
    assert fields["Processes"] == "2" and int(fields["Uptime"]) >= 0
    assert set(fields["Scoreboard"]) <= set("_RWGLC.")
    response, body = server.get("/server-status")
    assert response.status == 200 and b"prefork server status" in body
    closed = server_factory({"status": {"enabled": "on", "allow": "10.0.0.0/8"}})
    assert closed.get("/server-status")[0].status == 403
    off = server_factory({})
    assert off.get("/server-status")[0].status == 404


def test_sd_notify_messages(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory({"workers": {"processes": "1"}}, start=False)
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(20)
    # WatchdogSec=1: pings every 0.5 s (and STATUS= as often).
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")
    process = subprocess.Popen([*HTTPDCTL, "-f", str(server.config), "start", "--foreground"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL)
    server.known_pids.add(process.pid)
    messages: list[str] = []

    def expect(word: str) -> str:
        """Wait for the next message containing `word` (earlier ones do not count)."""
        while True:
            messages.append(listener.recv(4096).decode())
            if word in messages[-1]:
                return messages[-1]

    try:
        assert f"MAINPID={process.pid}" in expect("READY=1")
        expect("WATCHDOG=1")
        os.kill(process.pid, signal.SIGHUP)
        assert "MONOTONIC_USEC=" in expect("RELOADING=1")
        expect("READY=1")
        expect("STATUS=generation 2")
        os.kill(process.pid, signal.SIGTERM)
        expect("STOPPING=1")
        assert process.wait(30) == 0
    finally:
        listener.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_refuses_root_workers_beyond_loopback(server_factory: ServerFactory) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: this checks what happens when started as root")
    server = server_factory({"server": {"listen": "0.0.0.0:0"}}, start=False)
    result = server.ctl("start", check=False)
    assert result.returncode == 1 and "refusing to run workers as root" in result.stderr



def test_a_reload_beyond_loopback_as_root_is_refused_as_a_start_is(
        server_factory: ServerFactory) -> None:
    """The root policy holds at reload too: a root server on loopback reloaded into a
    public address without [server] user fails, and the old generation serves on."""
    if os.geteuid() != 0:
        pytest.skip("needs root: this checks what happens when started as root")
    server = server_factory({"workers": {"processes": "1"}})
    [before] = server.worker_pids()
    write_config(server.root, {"server": {"listen": "0.0.0.0:0"},
                               "workers": {"processes": "1"}})
    outcome = server.reload_by_signal()
    assert not outcome["ok"] and "refusing to run workers as root" in outcome["message"], \
        outcome
    assert server.worker_pids() == [before]
    assert server.get("/about.html")[0].status == 200


def test_workers_drop_to_the_configured_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    base = Path(tempfile.mkdtemp(prefix="prefork-user-"))
    base.chmod(0o755)
    root = make_root(base)
    server = Server(root, write_config(root, {"server": {"user": "nobody"}}))
    try:
        server.start()
        for pid in server.worker_pids():
            uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
            groups = Path(f"/proc/{pid}/status").read_text().split("Groups:")[1].split("\n")[0]
            assert set(uids) == {"65534"} and groups.strip() == ""
        assert Path(f"/proc/{server.pid}/status").read_text().split("Uid:")[1].split()[0] \
            == "0"
        assert server.get("/")[0].status == 200
        assert os.stat(root / "var" / "log" / "access.log").st_uid == 65534
        server.ctl("reopen-logs")
        server.get("/about.html")
        wait_for(lambda: "/about.html" in server.log("access.log"))
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_socket_activation_uses_the_passed_socket(server_factory: ServerFactory) -> None:
    """systemd socket activation: a listening socket handed over as fd 3 (LISTEN_FDS=1,
    LISTEN_PID = the master's pid) is used instead of binding [server] listen."""
    server = server_factory({"workers": {"processes": "1"}}, start=False)
    process, port = start_activated(server, "127.0.0.1")
    try:
        wait_for((server.root / "var" / "run" / "httpd.state").exists, timeout=15)
        assert server.status()["listen"] == [f"127.0.0.1:{port}"]
        server.known_pids.update(server.worker_pids())
        assert server.get("/")[0].status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        stop_activated(process)


def test_the_watchdog_is_fed_while_workers_are_degraded() -> None:
    """One worker in boot back-off must not get the whole service restarted by systemd:
    WATCHDOG=1 follows the master's loop, and STATUS= says what is missing."""
    from prefork.process.master import systemd_status

    healthy = systemd_status(3, 2, 2, 10, watchdog=True)
    assert healthy.splitlines() == ["STATUS=generation 3: 2/2 workers ready, 10 requests served",
                                    "WATCHDOG=1"]
    degraded = systemd_status(3, 1, 2, 10, watchdog=True)
    assert "1/2 workers ready (degraded: 1 not ready)" in degraded
    assert degraded.endswith("\nWATCHDOG=1")
    assert "WATCHDOG" not in systemd_status(3, 0, 2, 0, watchdog=False)
