"""Reloads at their edges: two `httpdctl reload` commands at once each get the outcome of
their own reload, and a reload never fails for lack of scoreboard slots while workers of an
older generation are only finishing their requests.

The slow parts are held by files, not by sleeps: a new worker's import of tests' gated
application waits while `boot-gate` exists (the import checks in httpdctl and in the master
pass at once), and a request to /app/hold waits while `request-gate` exists; each leaves a
marker file naming its process, so the test waits for exactly the state it needs."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .conftest import Server, ServerFactory, wait_for, write_config

GATED_APP = '''\
import os, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def _wait_while(name):
    deadline = time.monotonic() + 60  # bounded: a test that fails must not hang a worker
    while os.path.exists(os.path.join(HERE, name)) and time.monotonic() < deadline:
        time.sleep(0.005)


def _mark(what):
    open(os.path.join(HERE, f"{what}-{os.getpid()}"), "w").close()


# A worker's boot (the import checks run as `python -c` and pass through).
if sys.argv[:1] != ["-c"] and os.path.exists(os.path.join(HERE, "boot-gate")):
    _mark("booting")
    _wait_while("boot-gate")


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/hold":
        _mark("holding")
        _wait_while("request-gate")
    body = b"ok\\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

DEFERRED = "reload requested while another is under way"


def gated_app(directory: Path) -> dict[str, str]:
    """The [app] section of the gated application, written into `directory`."""
    directory.mkdir(exist_ok=True)
    (directory / "gated.py").write_text(GATED_APP)
    return {"mount": "/app", "module": "gated:application", "path": str(directory),
            "threads": "1"}


def markers(directory: Path, what: str) -> set[str]:
    return {p.name.split("-", 1)[1] for p in directory.glob(f"{what}-*")}


def reload_command(server: Server) -> subprocess.Popen[str]:
    return subprocess.Popen([*server.launcher, "-f", str(server.config), "reload"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def commands() -> Iterator[list[subprocess.Popen[str]]]:
    """Reload commands started by the test; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str = "/") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_two_reload_commands_each_report_their_own_reload(server_factory: ServerFactory,
                                                          tmp_path: Path) -> None:
    """The first command's reload is slow (its new worker imports while `boot-gate`
    exists); the second command edits the configuration after that reload read it, and
    asks while it is under way. Each command must report the reload that began after it
    asked: the second returns once its own configuration serves, or with its own
    reload's failure — never the first one's outcome, and the first never the second's."""
    app_dir = tmp_path / "app"
    app = gated_app(app_dir)
    workers = {"processes": "1", "threads": "1", "blocking_threads": "1"}
    server = server_factory({"app": app, "workers": workers})
    gate = app_dir / "boot-gate"
    with commands() as started:
        # 1. The second configuration adds a listen port: the second command returns once
        #    that port serves.
        gate.touch()
        first = reload_command(server)
        started.append(first)
        wait_for(lambda: markers(app_dir, "booting"), timeout=30)  # generation 2 boots
        port = unused_port()
        write_config(server.root, {"app": app, "workers": workers,
                                   "server": {"listen": f"127.0.0.1:0 127.0.0.1:{port}"}})
        second = reload_command(server)
        started.append(second)
        wait_for(lambda: DEFERRED in server.log("error.log"), timeout=30)
        gate.unlink()
        code, output = finish(second)
        assert code == 0, output
        assert get(port, "/app/") == 200, output  # already serving when the command returned
        code, output = finish(first)
        assert code == 0, output

        # 2. The third configuration cannot be served (its new port is taken): the third
        #    command's reload fails, and the one under way when it asked still succeeds.
        for marker in app_dir.glob("booting-*"):
            marker.unlink()
        gate.touch()
        third = reload_command(server)
        started.append(third)
        wait_for(lambda: markers(app_dir, "booting"), timeout=30)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            write_config(server.root, {"workers": workers, "server": {
                "listen": f"127.0.0.1:0 127.0.0.1:{port} 127.0.0.1:{busy}"}})
            fourth = reload_command(server)
            started.append(fourth)
            wait_for(lambda: server.log("error.log").count(DEFERRED) == 2, timeout=30)
            gate.unlink()
            code, output = finish(fourth)
            assert code == 1 and f"127.0.0.1:{busy}: port in use" in output, output
            code, output = finish(third)
            assert code == 0 and "generation 4 serving" in output, output
    assert get(server.port, "/app/") == 200  # generation 4 serves on


SLOTS_WAIT = "waiting for workers of older generations to finish"


@contextlib.contextmanager
def reload_waiting_for_slots(server_factory: ServerFactory, tmp_path: Path
                             ) -> Iterator[tuple[Server, subprocess.Popen[str],
                                                 Callable[[], list[int]]]]:
    """64 workers, the most there are: the scoreboard holds 2 x 64 + 1 process slots. Two
    workers of generation 1 each hold a long request; two reloads are asked for back to
    back. The first starts generation 2 (64 + 64 slots); the second, deferred, needs 64
    slots while generation 2 and the two finishing workers hold 66 of 129: it waits.
    Yields the server, the second command (still waiting) and `release`, which lets the
    long requests end and returns their statuses."""
    app_dir = tmp_path / "app"
    app = gated_app(app_dir)
    # One connection per worker: a worker holding a request stops polling the listeners,
    # so the next request goes to another worker. One thread of each kind keeps 192
    # processes light.
    workers = {"processes": "64", "threads": "1", "blocking_threads": "1",
               "max_connections": "1"}
    server = server_factory({"app": app, "workers": workers})
    request_gate = app_dir / "request-gate"
    request_gate.touch()
    statuses: list[int] = []
    held: list[threading.Thread] = []

    def release() -> list[int]:
        request_gate.unlink(missing_ok=True)
        for thread in held:
            thread.join(30)
        return statuses

    with commands() as started:
        try:
            for number in (1, 2):
                thread = threading.Thread(
                    target=lambda: statuses.append(get(server.port, "/app/hold")))
                thread.start()
                held.append(thread)
                wait_for(lambda n=number: len(markers(app_dir, "holding")) == n, timeout=30)
            first = reload_command(server)
            started.append(first)
            wait_for(lambda: "starting generation 2" in server.log("error.log"), timeout=30)
            second = reload_command(server)
            started.append(second)
            code, output = finish(first)
            assert code == 0 and "generation 2 serving" in output, output
            # The second reload began once the first was done, and waits for slots.
            wait_for(lambda: SLOTS_WAIT in server.log("error.log") or second.poll() is not None,
                     timeout=30)
            assert second.poll() is None, finish(second)[1]
            yield server, second, release
        finally:
            release()


def test_a_reload_waits_for_slots_that_finishing_workers_hold(server_factory: ServerFactory,
                                                              tmp_path: Path) -> None:
    """The second reload waits for the slots the finishing workers hold instead of failing,
    and both reloads succeed once the long requests are done."""
    with reload_waiting_for_slots(server_factory, tmp_path) as (server, second, release):
        assert release() == [200, 200]  # the long requests were answered in full
        code, output = finish(second)
        assert code == 0 and "generation 3 serving" in output, output
    assert server.status()["generation"] == 3
    assert len(server.worker_pids(generation=3)) == 64


def test_a_reload_waiting_for_slots_leaves_respawns_theirs(server_factory: ServerFactory,
                                                           tmp_path: Path) -> None:
    """A worker of the serving generation dies while a reload waits for slots: its
    replacement gets the slot the dead worker freed. The waiting reload took it (63 + 1
    free made its 64), and the master logged "all scoreboard slots are in use" at every
    round while generation 2 served a worker short."""
    with reload_waiting_for_slots(server_factory, tmp_path) as (server, second, release):
        victim = server.worker_pids(generation=2)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in (pids := server.worker_pids(generation=2))
                 and len(pids) == 64, timeout=30)
        assert second.poll() is None, finish(second)[1]  # still waiting for the held slots
        assert "slots are in use" not in server.log("error.log")
        assert release() == [200, 200]
        code, output = finish(second)
        assert code == 0 and "generation 3 serving" in output, output
    assert len(server.worker_pids(generation=3)) == 64


def test_the_tickets_file_is_readable_by_the_master_whatever_the_umask(tmp_path: Path) -> None:
    """The first `httpdctl reload` creates var/run/httpd.reloads. Under umask 077 (root's,
    on hardened hosts) it was made 0600: a master running as another user could not read
    it, filed every outcome under a stale ticket, and each command waited out its timeout
    though its reload was done. The file holds a count, nothing secret: always 0644."""
    from prefork.control import last_reload_ticket, reload_tickets_file, take_reload_ticket

    pid_file = str(tmp_path / "httpd.pid")
    old = os.umask(0o077)
    try:
        assert take_reload_ticket(pid_file) == 1
    finally:
        os.umask(old)
    assert os.stat(reload_tickets_file(pid_file)).st_mode & 0o777 == 0o644
    assert take_reload_ticket(pid_file) == 2
    assert last_reload_ticket(pid_file) == 2
