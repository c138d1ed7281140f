"""Logs and monitoring as an operator meets them: the error-log format (Apache's
ErrorLogFormat), refusals worth acting on at `info`, the access log's %{strftime}t, %I, %O
and a refused request's request-line, GoAccess reading every line, and /server-status?auto
with the keys Apache 2.4's mod_status prints, read by the Prometheus apache_exporter."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from prefork.config.values import DEFAULT_ERROR_FORMAT, parse_error_format
from prefork.errors import Forbidden, NotFound, Unauthorized
from prefork.http.parser import RequestParser, request_line_parts
from prefork.log import (
    AccessRecord,
    ErrorEvent,
    ErrorLog,
    compile_access_format,
    compile_error_format,
)
from prefork.site.status import cpu_times, uptime_text
from tests.conftest import Server, ServerFactory, wait_for

# The seed's error-log layout, `[date] [core: level] [pid: P:tid T] [client-ip] [message]`,
# as an error_format (docs/logging.md shows it).
SEED_FORMAT = r"[%t] [%m:\ %l] [pid:\ %P:tid\ %{g}T] [%h] [%M]"
SEED_LINE = re.compile(r"^\[\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} \d{4}\] \[core: (\w+)\] "
                       r"\[pid: (\d+):tid (\d+)\] (?:\[([0-9.:a-f]+)\] )?\[(.*)\]$")
# The layout every earlier prefork wrote (and the default still writes), spelled out.
OLD_LINE = re.compile(r"^\[\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2}\.\d{6} \d{4}\] \[core:(\w+)\] "
                      r"\[pid (\d+):tid (\d+)\] (?:\[client ([^\]]+)\] )?(.*)$")
WHEN = 1_700_000_000.25


def event(level: str = "info", client: tuple[str, int] | str | None = ("10.0.0.7", 4711),
          exc: BaseException | None = None, message: str = "hello") -> ErrorEvent:
    return ErrorEvent(level, message, client, exc, WHEN)


# ------------------------------------------------------------------ error format (pure)

def test_the_default_error_format_is_the_layout_prefork_always_wrote() -> None:
    fast = compile_error_format(DEFAULT_ERROR_FORMAT)
    general = compile_error_format(DEFAULT_ERROR_FORMAT, specialise=False)
    local = time.localtime(WHEN)
    date = time.strftime("%a %b %d %H:%M:%S", local) + f".250000 {local.tm_year}"
    ids = f"[pid {os.getpid()}:tid {threading.get_native_id()}]"
    for client, shown in ((("10.0.0.7", 4711), "[client 10.0.0.7:4711] "),
                          ("[::1]:80", "[client [::1]:80] "), (None, "")):
        for level in ("debug", "info", "error"):
            expected = f"[{date}] [core:{level}] {ids} {shown}hello"
            assert fast(event(level, client)) == expected
            assert general(event(level, client)) == expected
            # an OSError (%E) and a debug level (%7F) change nothing: neither is in it
            assert general(event(level, client, OSError(2, "gone"))) == expected


def test_fields_are_dropped_and_kept_as_apache_drops_them() -> None:
    apache = r"[%{u}t] [%-m:%l] [pid %P:tid %T] %7F: %E: [client\ %a] %M"
    render = compile_error_format(apache)
    line = render(event("info", exc=OSError(2, "No such file or directory")))
    assert line.endswith(f"[pid {os.getpid()}:tid {threading.get_ident()}] "
                         "(2)No such file or directory: [client 10.0.0.7:4711] hello")
    assert render(event("info", client=None)).endswith(f":tid {threading.get_ident()}] hello")
    # %7F: the source of the call, in debug lines only (Apache's level 7)
    debug = render(event("debug"))
    assert re.search(r"\] \w+\.py\(\d+\): \[client 10\.0\.0\.7:4711\] hello$", debug), debug
    # %-a: a hyphen instead of dropping the field; % : an empty field separator
    assert compile_error_format("%-a% [%a]% %M")(event(client=None)) == "-hello"
    assert compile_error_format("%{cu}t %M")(event()).startswith(
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(WHEN)) + ".250000 ")
    assert compile_error_format(r"%{c}t\ \ %h\\%% %M")(event()).endswith(
        "  10.0.0.7\\% hello")


def test_the_seed_layout_is_a_format_that_works() -> None:
    render = compile_error_format(SEED_FORMAT)
    line = render(event("error"))
    match = SEED_LINE.match(line)
    assert match, line
    assert match.groups()[:1] + match.groups()[3:] == ("error", "10.0.0.7", "hello")
    assert SEED_LINE.match(render(event("info", client=None)))


@pytest.mark.parametrize("fmt, reason", [
    ("%M %A", "%A: prefork's error-log lines do not carry the local address"),
    (r"%M% ,\ referer\ %{Referer}i", "%i: prefork's error-log lines do not carry request"),
    ("%+a %M", "the + modifier"),
    ("%x %M", "unknown directive %x"),
    ("%{z}t %M", "%{z}t: expected %t or %{u}t"),
    ("[%t] [%l]", "has no %M"),
    ("%M %", "ends inside a % directive"),
    (r"%M \q", "a backslash must be followed by"),
])
def test_a_directive_that_cannot_be_rendered_is_refused(fmt: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_error_format(fmt)


def test_refusals_operators_act_on_are_logged_at_info(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    log = ErrorLog(str(path), "info")
    log.http_error(Unauthorized("wrong password for user 'eve'"), "PUT /uploads/a",
                   ("192.0.2.9", 5555))
    log.http_error(Forbidden("hidden files are not served"), "GET /.secret", ("192.0.2.9", 1))
    log.http_error(NotFound("no such file"), "GET /nothing", ("192.0.2.9", 2))  # debug
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2, lines
    assert all(OLD_LINE.match(line) for line in lines)
    assert "[core:info]" in lines[0] and "[client 192.0.2.9:5555] 401 wrong password for " \
        "user 'eve': PUT /uploads/a" in lines[0]
    assert "[client 192.0.2.9:1] 403 hidden files are not served: GET /.secret" in lines[1]


# ------------------------------------------------------------------ access log (pure)

def record(**changes: object) -> AccessRecord:
    base = AccessRecord("127.0.0.1", 80, "GET /a?b=1 HTTP/1.1", "GET", "/a", "b=1",
                        "HTTP/1.1", 200, 5, WHEN, 0.5, None)
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def test_strftime_times_bytes_in_and_out() -> None:
    render = compile_access_format("%{%Y-%m-%d}t|%{end:sec}t|%{msec_frac}t|%I|%O|%t")
    parts = render(record(bytes_received=78, bytes_sent=245)).split("|")
    assert parts[0] == time.strftime("%Y-%m-%d", time.localtime(WHEN))
    assert parts[1:5] == [str(int(WHEN + 0.5)), "250", "78", "245"]
    assert parts[5].startswith("[") and parts[5].endswith("]")
    assert compile_access_format("%I %O")(record()) == "- -"  # not counted: not invented
    assert compile_access_format("%H")(record(protocol='HTTP/"1')) == 'HTTP/\\"1'


def test_a_refused_request_line_splits_as_far_as_it_was_read() -> None:
    assert request_line_parts("GET /x?y=1 HTTP/1.1") == ("GET", "/x", "y=1", "HTTP/1.1")
    assert request_line_parts("GET /x") == ("GET", "/x", "", "")
    assert request_line_parts("") == ("", "", "", "")


def test_the_parser_counts_what_it_took_for_each_request() -> None:
    parser = RequestParser()
    first = b"\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    second = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    parser.feed(first + second[:5])
    while parser.next_event().__class__.__name__ != "EndOfMessage":
        pass
    assert parser.received == len(first)
    parser.start_next_request()
    parser.feed(second[5:])
    parser.next_event()
    assert parser.received == len(second)
    refused = RequestParser()
    refused.feed(b"GET /c HTTP/1.1\r\n\r\n")  # no Host: 400, all of it was read
    with pytest.raises(Exception, match="Host"):
        refused.next_event()
    assert refused.received == 19 and refused.request_line == "GET /c HTTP/1.1"


# ------------------------------------------------------------------ status (pure)

def test_uptime_and_cpu_as_mod_status_prints_them() -> None:
    assert uptime_text(1) == "1 second"
    assert uptime_text(328) == "5 minutes 28 seconds"
    assert uptime_text(90061) == "1 day 1 hour 1 minute 1 second"
    assert uptime_text(7200) == "2 hours"
    times = cpu_times([os.getpid(), os.getpid(), 999_999_999])
    assert times is not None and len(times) == 4 and times[0] + times[1] > 0


# ------------------------------------------------------------------ a real server

@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import bcrypt
    path = tmp_path_factory.mktemp("users") / "htpasswd"
    path.write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode())
    return path


ACCESS = '%h %u [%{%Y-%m-%d}t] "%m %U%q %H" %>s'


def test_seed_layout_4xx_at_info_and_refused_request_lines(server_factory: ServerFactory,
                                                           users: Path) -> None:
    server = server_factory({
        "logging": {"error_format": SEED_FORMAT, "access_format": ACCESS},
        "uploads": {"require_auth": "PUT"}, "auth": {"users_file": str(users)},
        "http": {"limit_request_line": "100"},
    })
    assert server.get("/uploads/a.txt", "PUT", body=b"x")[0].status == 401
    assert server.get("/.secret")[0].status == 403
    assert b" 400 " in server.raw(b"GET /nohost?q=1 HTTP/1.1\r\n\r\n")
    assert b" 414 " in server.raw(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    today = time.strftime("%Y-%m-%d")
    access = wait_for(lambda: (text := server.log("access.log")).count("\n") >= 4 and text)
    assert f'127.0.0.1 - [{today}] "PUT /uploads/a.txt HTTP/1.1" 401' in access
    assert f'127.0.0.1 - [{today}] "GET /nohost?q=1 HTTP/1.1" 400' in access
    assert f'127.0.0.1 - [{today}] "- - -" 414' in access  # its line was never read whole

    def refusals() -> list[tuple[str, ...]]:
        matches = (SEED_LINE.match(line) for line in server.log("error.log").splitlines())
        return [m.groups() for m in matches if m and m[1] == "info" and m[4] and
                m[5][:3] in ("400", "401", "403", "414")]

    seen = wait_for(lambda: len(found := refusals()) >= 4 and found)
    assert {(g[3], g[4][:3]) for g in seen} >= {  # type: ignore[union-attr]
        ("127.0.0.1", "401"), ("127.0.0.1", "403"), ("127.0.0.1", "400"),
        ("127.0.0.1", "414")}
    assert all(SEED_LINE.match(line) for line in server.log("error.log").splitlines())


def test_configtest_refuses_an_error_format_it_cannot_render(server_factory: ServerFactory
                                                             ) -> None:
    server = server_factory(start=False)
    text = server.config.read_text()
    server.config.write_text(text + "\n[logging]\nerror_format = [%t] %A %M\n")
    line = len(text.splitlines()) + 3
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1
    assert f"{server.config}:{line}: logging.error_format: %A: prefork's error-log lines " \
        "do not carry the local address" in result.stderr


def test_goaccess_reads_every_line_of_the_combined_log(server: Server,
                                                       tmp_path: Path) -> None:
    """GoAccess --log-format=COMBINED parses every line: ordinary, refused (a 400 with its
    request-line, a 414 without), odd bytes in the target, a user name and a client gone."""
    if shutil.which("goaccess") is None:
        pytest.skip("goaccess is not installed (Debian: apt-get install goaccess)")
    server.get("/", headers={"User-Agent": 'odd "agent" \\', "Referer": "http://x/"})
    server.get("/definitely-missing")
    server.raw(b"GET /caf\xc3\xa9?x=\xff HTTP/1.1\r\nHost: localhost\r\n\r\n")
    server.raw(b"GET /nohost HTTP/1.1\r\n\r\n")
    server.raw(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    server.raw(b"GARBAGE\r\n\r\n")
    server.raw(b"HEAD / HTTP/1.0\r\n\r\n")
    server.raw(b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWxpY2U6eA==\r\n"
               b"\r\n")
    lines = wait_for(lambda: len(text := server.log("access.log").splitlines()) >= 8 and text)
    report, invalid = tmp_path / "report.json", tmp_path / "invalid.log"
    subprocess.run(["goaccess", str(server.root / "var" / "log" / "access.log"),
                    "--log-format=COMBINED", "--no-global-config", "-o", str(report),
                    f"--invalid-requests={invalid}"], check=True, capture_output=True,
                   timeout=60, stdin=subprocess.DEVNULL)
    general = json.loads(report.read_text())["general"]
    assert general["total_requests"] == len(lines)  # type: ignore[arg-type]
    assert general["failed_requests"] == 0, invalid.read_text()


def test_server_status_auto_carries_apache_keys(server_factory: ServerFactory) -> None:
    server = server_factory({"status": {"enabled": "on"}})
    for _ in range(3):
        server.get("/")
    keep = server.connection()  # an idle keep-alive connection, counted as such
    keep.request("GET", "/")
    keep.getresponse().read()

    def auto() -> dict[str, str]:
        _response, body = server.get("/server-status?auto")
        lines = body.decode().splitlines()[1:]
        return dict(line.split(": ", 1) for line in lines)

    fields = wait_for(lambda: (f := auto()) and int(f["Total Accesses"]) >= 4
                      and int(f["ConnsAsyncKeepAlive"]) >= 1 and f)
    keep.close()
    assert isinstance(fields, dict)
    expected = ["ServerVersion", "ServerMPM", "CurrentTime", "RestartTime",
                "ParentServerConfigGeneration", "ParentServerMPMGeneration",
                "ServerUptimeSeconds", "ServerUptime", "Load1", "Load5", "Load15",
                "Total Accesses", "Total kBytes", "Total Duration", "CPUUser", "CPUSystem",
                "CPUChildrenUser", "CPUChildrenSystem", "CPULoad", "Uptime", "ReqPerSec",
                "BytesPerSec", "BytesPerReq", "DurationPerReq", "BusyWorkers", "IdleWorkers",
                "Processes", "Stopping", "ConnsTotal", "ConnsAsyncWriting",
                "ConnsAsyncKeepAlive", "ConnsAsyncClosing", "Scoreboard"]
    assert list(fields) == expected  # Apache's order; nothing made up (no Server Built)
    assert float(fields["CPUUser"]) + float(fields["CPUSystem"]) > 0
    assert float(fields["CPULoad"]) > 0
    assert int(fields["Total Duration"]) >= 0 and float(fields["DurationPerReq"]) >= 0
    assert fields["ParentServerMPMGeneration"] == fields["ParentServerConfigGeneration"] == "1"
    assert int(fields["ConnsTotal"]) >= int(fields["ConnsAsyncKeepAlive"]) >= 1


def test_prometheus_apache_exporter_reads_cpu_duration_generation_and_connections(
        server_factory: ServerFactory) -> None:
    exporter = shutil.which("prometheus-apache-exporter")
    if exporter is None:
        pytest.skip("prometheus-apache-exporter is not installed "
                    "(Debian: apt-get install prometheus-apache-exporter)")
    server = server_factory({"status": {"enabled": "on"}})
    server.get("/")
    process = subprocess.Popen(
        [exporter, "--telemetry.address=127.0.0.1:0",
         f"--scrape_uri=http://127.0.0.1:{server.port}/server-status?auto"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def port() -> int:  # the port it bound, read from the kernel: no guessing
            listening = [c.laddr.port for c in psutil.Process(process.pid).net_connections()
                         if c.status == psutil.CONN_LISTEN]
            return listening[0] if listening else 0

        metrics_port = wait_for(port)

        def metrics() -> str:
            # A scrape the exporter is not ready to answer (its listener up before its
            # handler, a reset under load) is polled again, as Prometheus would next time.
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=10) as response:
                    return response.read().decode()
            except (OSError, http.client.HTTPException):
                return ""

        text = wait_for(lambda: "apache_up 1" in (m := metrics()) and m)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert isinstance(text, str)
    samples = {line.split(" ")[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
               if line.startswith("apache_")}
    for name in ('apache_cpu_time_ms_total{type="system"}',
                 'apache_cpu_time_ms_total{type="user"}', "apache_cpuload",
                 "apache_duration_ms_total", 'apache_generation{type="config"}',
                 'apache_generation{type="mpm"}', 'apache_connections{state="total"}',
                 'apache_connections{state="keepalive"}', 'apache_connections{state="writing"}',
                 'apache_connections{state="closing"}', "apache_accesses_total",
                 "apache_uptime_seconds_total"):
        assert name in samples, (name, sorted(samples))
    assert float(samples["apache_cpuload"]) > 0
    assert float(samples['apache_generation{type="mpm"}']) == 1


def test_bytes_in_and_out_are_logged_on_the_full_and_the_quick_path(
        server_factory: ServerFactory) -> None:
    """%I counts the request as received, %O the response as written (head included), for a
    first (full-path) answer and its quick-path repeats alike."""
    server = server_factory({"workers": {"processes": "1"},
                             "logging": {"access_format": '"%r" %>s %I %O %b'}})
    request = b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with server.socket() as sock:
        replies = []
        for _ in range(3):  # the first fills the quick path, the others are quick answers
            sock.sendall(request)
            reply = b""
            while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < int(
                    re.search(rb"Content-Length: (\d+)", reply)[1]):  # type: ignore[index]
                reply += sock.recv(65536)
            replies.append(reply)
    lines = wait_for(lambda: (found := [line for line in server.log("access.log").splitlines()
                                        if "/about.html" in line]) and len(found) == 3 and found)
    for line, reply in zip(lines, replies, strict=True):  # type: ignore[arg-type]
        _request, status, received, sent, body = line.rsplit(" ", 4)
        assert status == "200" and int(received) == len(request)
        assert int(sent) == len(reply) and int(body) == len(reply.partition(b"\r\n\r\n")[2])
