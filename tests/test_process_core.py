"""The supervising side made trustworthy (issue 12): the master's exception barrier,
generations that own their descriptors, monotonic health clocks, signals around fork,
an honest stop, what used to kill the master, one source of truth for the limits, log
rotation with [server] user, and a non-root start with a read-only document root.

Real processes on port 0, except where a test says it checks the master's handling of an
error it cannot provoke from outside (fork EAGAIN, ENOSPC on the state file)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefork import config as config_module
from prefork import scoreboard as scoreboard_module
from prefork.config.settings import load_config
from prefork.log import AccessLog, ErrorLog
from prefork.process.generation import Generation
from prefork.process.health import HealthMonitor
from prefork.process.master import Master
from prefork.scoreboard import Scoreboard
from prefork.serve.service import ServedSite

from .conftest import (
    HTTPDCTL,
    Server,
    ServerFactory,
    make_root,
    pid_alive,
    read_all,
    start_activated,
    stop_activated,
    wait_for,
    write_config,
)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (setpriv, chown)")
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return targets


# ------------------------------------------------------------------ 1, 6: the barrier


def test_worker_killed_by_a_realtime_signal_is_logged_and_respawned(server: Server) -> None:
    """Either worker killed, by a realtime signal or by SIGKILL, is logged by its signal's
    name and respawned (this was also test_lifecycle's test_worker_killed_is_respawned)."""
    first, second = server.worker_pids()
    os.kill(first, 40)  # SIGRTMIN+6: signal.Signals(40) raises ValueError
    wait_for(lambda: "killed by signal SIGRTMIN+6" in server.log("error.log"), timeout=15)
    wait_for(lambda: first not in server.worker_pids() and len(server.worker_pids()) == 2,
             timeout=15)
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: second not in server.worker_pids() and len(server.worker_pids()) == 2,
             timeout=15)
    assert "killed by signal SIGKILL; respawning" in server.log("error.log")
    assert pid_alive(server.pid)
    for _ in range(10):
        assert server.get("/about.html")[0].status == 200
    assert server.get("/")[0].status == 200
    assert "Traceback" not in server.log("error.log")


def test_the_main_loop_logs_an_unexpected_error_and_goes_on(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """In-process: the barrier around each round of the master's main loop."""
    master = _bare_master(tmp_path)
    rounds = iter([RuntimeError("a bug in a round"), False, True])

    def round_() -> bool:
        outcome = next(rounds)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(master, "_round", round_)
    monkeypatch.setattr(master, "_cleanup", lambda: None)
    assert master._supervise() == 0
    text = (tmp_path / "error.log").read_text()
    assert "unexpected error in the main loop, carrying on" in text
    assert "Traceback" in text and "RuntimeError: a bug in a round" in text
    _close_master(master)


# ------------------------------------------------------------------ 2: generations own


def test_master_descriptors_are_flat_across_200_reloads(server_factory: ServerFactory,
                                                        capsys: pytest.CaptureFixture) -> None:
    server = server_factory({"workers": {"processes": "1", "threads": "1"}})
    assert server.reload_by_signal()["ok"]
    # Counted once the replaced generation is gone (as after the 200 below): its worker
    # may still be finishing when the reload is reported.
    wait_for(lambda: len(server.worker_pids()) == 1, timeout=30)
    before = fd_count(server.pid)
    started = time.monotonic()
    for _ in range(200):
        outcome = server.reload_by_signal()
        assert outcome["ok"], outcome
    wait_for(lambda: len(server.worker_pids()) == 1, timeout=30)
    after = fd_count(server.pid)
    with capsys.disabled():
        print(f"\nmaster descriptors: {before} after 1 reload, {after} after 201 "
              f"({time.monotonic() - started:.1f}s for 200 reloads)")
    assert after == before
    assert server.get("/")[0].status == 200
    # A failed reload's generation is retired with all it opened, too.
    server.config.write_text(server.config.read_text().replace(
        "[server]\n", "[server]\nuser = no-such-user-here\n"))
    for _ in range(10):
        assert not server.reload_by_signal()["ok"]
    wait_for(lambda: fd_count(server.pid) == before, timeout=10)


def test_a_worker_keeps_only_its_own_descriptors(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1", "threads": "1"}})
    [first] = server.worker_pids()
    first_fds = sorted(fd_targets(first))
    for _ in range(2):
        assert server.reload_by_signal()["ok"]
    wait_for(lambda: len(server.worker_pids()) == 1, timeout=30)
    [third] = server.worker_pids()
    third_fds = fd_targets(third)
    pid_file = str(server.root / "var" / "run" / "httpd.pid")
    assert pid_file not in third_fds
    for name in ("error.log", "access.log"):
        assert third_fds.count(str(server.root / "var" / "log" / name)) == 1, third_fds
    assert len(third_fds) == len(first_fds), (first_fds, sorted(third_fds))


def test_reload_that_removes_an_address_refuses_connections_to_it(
        server_factory: ServerFactory) -> None:
    server = server_factory({"server": {"listen": "127.0.0.1:0 [::1]:0"},
                             "workers": {"processes": "1"}})
    v6_port = int(server.status()["listen"][1].rsplit(":", 1)[1])
    server.config.write_text(server.config.read_text().replace(
        "listen = 127.0.0.1:0 [::1]:0", "listen = 127.0.0.1:0"))
    server.ctl("reload")

    def refused() -> bool:
        try:
            with socket.create_connection(("::1", v6_port), timeout=2):
                return False
        except ConnectionRefusedError:
            return True

    wait_for(refused, timeout=15, interval=0.2)
    assert server.get("/")[0].status == 200


# ------------------------------------------------------------------ 3: monotonic time


def test_heartbeats_are_monotonic_and_a_wall_clock_step_kills_no_one(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real clock cannot be stepped here (a shared machine, no libfaketime): this checks
    the mechanism. Heartbeats in the scoreboard are CLOCK_MONOTONIC readings, and the
    health check, fed those, finds nobody hung whatever the wall clock says."""
    board = Scoreboard.open(str(server.root / "var" / "run" / "httpd.scoreboard"))
    try:
        infos = wait_for(lambda: [p for p in board.processes() if p.heartbeat], timeout=10)
        for info in infos:
            assert abs(info.heartbeat - time.monotonic()) < 10
        health = HealthMonitor(board, heartbeat_timeout=30)
        workers = [_Worker(p.pid, p.slot) for p in infos]
        real_time = time.time
        for step in (60.0, -60.0):
            monkeypatch.setattr(time, "time", lambda step=step: real_time() + step)
            assert health.hung(workers) == []
    finally:
        board.close()


class _Worker:
    def __init__(self, pid: int, slot: int) -> None:
        self.pid, self.slot, self.ready, self.stopping = pid, slot, True, False


def test_request_watchdog_measures_with_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    board = Scoreboard.create(str(tmp_path / "sb"), os.getpid())
    try:
        slot = board.thread_slot(0, 0, 1)
        slot.begin_request("GET / HTTP/1.1", "127.0.0.1", time.time())
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 60)
        assert time.monotonic() - slot.started_mono < 5
    finally:
        board.close()


# ------------------------------------------------------------------ 4: signals around fork


def test_term_right_after_a_spawn_is_honoured(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "4", "threads": "1",
                                         "graceful_timeout": "25"}})
    started = time.monotonic()
    # HUP and TERM handled in one round of the master (both pending while it is stopped):
    # the reload forks new workers and the stop signals them at once.
    os.kill(server.pid, signal.SIGSTOP)
    os.kill(server.pid, signal.SIGHUP)
    os.kill(server.pid, signal.SIGTERM)
    os.kill(server.pid, signal.SIGCONT)
    wait_for(lambda: not pid_alive(server.pid), timeout=40)
    assert time.monotonic() - started < 10, "a new worker lost its TERM"


# ------------------------------------------------------------------ 5: honest stop


def test_stop_returns_promptly_when_the_master_is_a_zombie(server_factory: ServerFactory
                                                           ) -> None:
    server = server_factory({"workers": {"processes": "1", "graceful_timeout": "4"}},
                            start=False)
    # We are the master's parent and do not reap it until the end: a zombie, as under an
    # init that does not reap.
    process = subprocess.Popen([*HTTPDCTL, "-f", str(server.config), "start", "--foreground"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL)
    server.known_pids.add(process.pid)
    try:
        wait_for(lambda: server.state().get("pid") == process.pid, timeout=20)
        started = time.monotonic()
        result = server.ctl("stop", check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 8
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_graceful_stop_answers_or_refuses_every_new_client(server_factory: ServerFactory
                                                          ) -> None:
    server = server_factory({"workers": {"processes": "1", "threads": "1",
                                         "graceful_timeout": "20"},
                             "http": {"body_timeout": "20"}})
    slow = server.socket(timeout=20)
    # An upload in flight keeps the worker draining while new clients arrive.
    slow.sendall(b"PUT /uploads/slow.txt HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Length: 10\r\n\r\nabc")
    wait_for(lambda: list((server.root / "htdocs" / "uploads").glob(".tmp-*")))  # in flight
    os.kill(server.pid, signal.SIGTERM)
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
            except (ConnectionRefusedError, TimeoutError):
                # Refused, or a SYN left unanswered while the listener drains: either
                # way no handshake completed.
                outcomes["refused"] = outcomes.get("refused", 0) + 1
                time.sleep(0.05)  # pacing the attempts over the 3 s, not a wait
                continue
            with sock:
                try:
                    sock.sendall(b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n"
                                 b"Connection: close\r\n\r\n")
                    data = read_all(sock)
                    kind = "answered" if data.startswith(b"HTTP/1.1 200") else "reset"
                except TimeoutError:
                    kind = "hanging"
                except OSError:
                    kind = "reset"
            outcomes[kind] = outcomes.get(kind, 0) + 1
    finally:
        with contextlib.suppress(OSError):
            slow.sendall(b"defghij")
            read_all(slow)
        slow.close()
    assert set(outcomes) <= {"refused", "answered"}, outcomes
    assert outcomes.get("refused")
    wait_for(lambda: not pid_alive(server.pid), timeout=30)


# ------------------------------------------------------------------ 6: what killed the master


def test_reload_under_socket_activation_with_another_listen_count(
        server_factory: ServerFactory) -> None:
    server = server_factory({"server": {"listen": "127.0.0.1:0 [::1]:0"},
                             "workers": {"processes": "1"}}, start=False)
    process, port = start_activated(server, "127.0.0.1")
    try:
        wait_for(lambda: server.state().get("generation") == 1, timeout=20)
        outcome = server.reload_by_signal()
        assert outcome["ok"], outcome
        assert process.poll() is None
        assert server.get("/")[0].status == 200
        assert server.state()["listen"] == [f"127.0.0.1:{port}"]
    finally:
        stop_activated(process)


@contextlib.contextmanager
def nobody_root(settings: dict[str, dict[str, str]] | None = None) -> Iterator[Server]:
    """A server root owned by nobody, in a directory nobody can reach, whose httpdctl runs
    as nobody (setpriv): the server is not root."""
    base = Path(tempfile.mkdtemp(prefix="prefork-nobody-"))
    base.chmod(0o755)
    root = make_root(base)
    server = NobodyServer(root, write_config(root, settings or {}))
    subprocess.run(["chown", "-R", "nobody:nogroup", str(root)], check=True)
    try:
        yield server
    finally:
        server.cleanup()
        subprocess.run(["chmod", "-R", "u+rwX", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


class NobodyServer(Server):
    def ctl(self, *args: str, check: bool = True,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*AS_NOBODY, *HTTPDCTL, "-f", str(self.config), *args],
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"httpdctl {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stdout}{result.stderr}")
        return result


@needs_root
def test_a_failing_log_reopen_is_reported_and_the_master_goes_on() -> None:
    with nobody_root({"workers": {"processes": "1"}}) as server:
        server.start()
        log_dir = server.root / "var" / "log"
        for name in ("error.log", "access.log"):
            (log_dir / name).rename(log_dir / f"{name}.1")
        log_dir.chmod(0o555)  # nobody may not create the new files: EACCES
        result = server.ctl("reopen-logs", check=False)
        assert result.returncode != 0
        assert "access.log" in result.stderr and "Permission denied" in result.stderr
        assert pid_alive(server.pid)
        assert server.get("/")[0].status == 200
        assert "cannot reopen" in (log_dir / "error.log.1").read_text()
        log_dir.chmod(0o755)
        assert "every worker" in server.ctl("reopen-logs").stdout
        server.get("/contact.html")
        wait_for(lambda: "/contact.html" in server.log("access.log"))


def test_fork_failure_is_logged_frees_its_slot_and_leaks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: fork() EAGAIN cannot be provoked for the master alone from outside."""
    master = _bare_master(tmp_path)
    generation = master.generations[1]
    before = fd_count(os.getpid())

    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert master.spawn(generation, 1) is None
    assert fd_count(os.getpid()) == before
    assert list(master.scoreboard.processes()) == []
    assert master.next_spawn > time.monotonic()  # back-off before the next attempt
    text = (tmp_path / "error.log").read_text()
    assert "cannot fork worker 1" in text and "Resource temporarily unavailable" in text
    _close_master(master)


def test_state_file_enospc_is_logged_and_the_master_goes_on(tmp_path: Path) -> None:
    """In-process: a full disk under var/run, as /dev/full plays it."""
    master = _bare_master(tmp_path)
    os.symlink("/dev/full", master.state_path + ".tmp")
    master.write_state()  # must not raise
    assert "cannot write the state file" in (tmp_path / "error.log").read_text()
    _close_master(master)


def _bare_master(tmp_path: Path) -> Master:
    root = make_root(tmp_path)
    config = load_config(write_config(root, {}))
    master = Master(config, config.source, (), ServedSite())
    master.scoreboard = Scoreboard.create(str(tmp_path / "sb"), os.getpid())
    master.health = HealthMonitor(master.scoreboard)
    master.error_log = ErrorLog(str(tmp_path / "error.log"))
    master.wake_r, master.wake_w = os.pipe2(os.O_CLOEXEC)
    generation = Generation(1, config, [], 1, master.error_log, AccessLog(None, "%h"))
    master.generations[1] = generation
    master.current = generation
    return master


def _close_master(master: Master) -> None:
    os.close(master.wake_r)
    os.close(master.wake_w)
    assert master.error_log is not None and master.scoreboard is not None
    master.error_log.close()
    master.scoreboard.close()


# ------------------------------------------------------------------ 7: one source of truth


def test_limits_agree() -> None:
    # A reload runs two generations side by side, and a recycled worker's replacement
    # may start during it.
    assert 2 * config_module.MAX_PROCESSES + 1 <= scoreboard_module.PROCESS_LIMIT
    assert config_module.MAX_THREAD_SLOTS == scoreboard_module.THREAD_LIMIT


@pytest.mark.parametrize(("settings", "key"), [
    ({"workers": {"processes": "65"}}, "workers.processes"),
    ({"workers": {"threads": "64", "blocking_threads": "100"}},
     "workers.blocking_threads"),
])
def test_configtest_refuses_what_cannot_run_or_reload(server_factory: ServerFactory,
                                                      settings: dict, key: str) -> None:
    server = server_factory(settings, start=False)
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1
    assert re.search(re.escape(str(server.config)) + r":\d+: " + re.escape(key),
                     result.stderr), result.stderr


# ------------------------------------------------------------------ 8: logs and [server] user


@needs_root
def test_workers_keep_logging_after_rotation_with_a_user() -> None:
    base = Path(tempfile.mkdtemp(prefix="prefork-rotate-"))
    base.chmod(0o755)
    root = make_root(base)
    server = Server(root, write_config(root, {"server": {"user": "nobody"},
                                              "workers": {"processes": "2"}}))
    try:
        server.start()
        workers = sorted(server.worker_pids())
        log_dir = root / "var" / "log"
        # logrotate as shipped: rename; with `create`, new root-owned files appear too.
        for name in ("error.log", "access.log"):
            (log_dir / name).rename(log_dir / f"{name}.1")
        (log_dir / "access.log").touch(mode=0o640)
        result = server.ctl("reopen-logs")
        assert "every worker" in result.stdout
        for _ in range(6):
            assert server.get("/contact.html")[0].status == 200
        wait_for(lambda: server.log("access.log").count("/contact.html") == 6)
        assert sorted(server.worker_pids()) == workers
        # Workers that cannot reach the new files: reopen-logs says which one failed.
        log_dir.chmod(0o700)
        for name in ("error.log", "access.log"):
            (log_dir / name).rename(log_dir / f"{name}.2")
        failed = server.ctl("reopen-logs", check=False)
        assert failed.returncode == 1 and "worker 1" in failed.stderr
        assert sorted(server.worker_pids()) == workers
        assert server.get("/")[0].status == 200
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ 9: non-root start-up


@needs_root
def test_non_root_with_a_read_only_document_root() -> None:
    with nobody_root({"workers": {"processes": "1"}}) as server:
        (server.root / "htdocs").chmod(0o555)
        check = server.ctl("configtest", check=False)
        assert check.returncode == 1 and "uploads.directory" in check.stderr
        start = server.ctl("start", check=False)
        assert start.returncode == 1 and "uploads.directory" in start.stderr
        assert "uploads.directory" in server.log("error.log")
        text = server.config.read_text().replace(
            "[logging]", "[uploads]\ndirectory = var/uploads\n\n[logging]")
        server.config.write_text(text)
        assert server.ctl("configtest", check=False).returncode == 0
        server.start()
        response, _ = server.get("/uploads/a.txt", "PUT", body=b"hello")
        assert response.status == 201
        response, body = server.get("/uploads/a.txt")
        assert response.status == 200 and body == b"hello"
        assert (server.root / "var" / "uploads" / "a.txt").read_bytes() == b"hello"
        server.ctl("stop")
        server.config.write_text(text.replace("directory = var/uploads", "enabled = off"))
        server.start()
        # Uploads off: /uploads/ is plain static files, where a write is 405 as elsewhere.
        assert server.get("/uploads/a.txt", "PUT", body=b"x")[0].status == 405
        assert server.get("/")[0].status == 200


def test_every_start_up_failure_reaches_the_error_log(server_factory: ServerFactory) -> None:
    first = server_factory()
    other = server_factory({"server": {"listen": f"127.0.0.1:{first.port}"}}, start=False)
    result = other.ctl("start", check=False)
    assert result.returncode == 1 and "port in use" in result.stderr
    lines = [line for line in other.log("error.log").splitlines() if "port in use" in line]
    assert len(lines) == 1
    # A scoreboard that cannot be created (its directory is a file).
    broken = server_factory({"server": {"scoreboard_file": "var/run/file/scoreboard"}},
                            start=False)
    (broken.root / "var" / "run" / "file").write_text("")
    result = broken.ctl("start", check=False)
    assert result.returncode == 1 and "scoreboard" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "scoreboard" in broken.log("error.log")
