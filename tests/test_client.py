"""httpd-client end to end: the real command in a subprocess against real servers on
127.0.0.1 port 0 -- a small http.server peer run by the test (which records what it got,
and proves the client works with "any other HTTP server") and a prefork server."""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from httpd_client.cli import cli, seed_args
from httpd_client.spec import SpecError, load_spec
from httpd_client.wire import BadResponse, ChunkedReader, parse_head

REPO = Path(__file__).resolve().parent.parent
CLIENT = [sys.executable, str(REPO / "bin" / "httpd-client")]
UPLOAD = bytes(range(256)) * 8 + b"\r\n--not-a-boundary\r\n\r\n" + os.urandom(4096)


# ----------------------------------------------------------------------------- the peer

class Handler(BaseHTTPRequestHandler):
    """GET/HEAD/POST/PUT/DELETE with keep-alive; records every request on the server."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Peer

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", ctype: str = "text/plain",
              extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests.append((self.command, self.path, dict(self.headers), body))
        return body

    def do_GET(self) -> None:
        self.record()
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for part in (b"hello ", b"chunked ", b"world"):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self.close_connection = True
            self.reply(200, b"bye", extra=(("Connection", "close"),))
        elif self.path == "/garbage":
            self.close_connection = True
            self.wfile.write(b"this is not HTTP\r\n\r\n")
        elif self.path == "/slow":
            time.sleep(1.0)
            self.reply(200, b"late")
        elif self.path == "/missing":
            self.reply(404, b"not found")
        else:
            self.reply(200, b"<h1>hello</h1>\n" * 50, "text/html")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.record()
        self.reply(201, json.dumps({"status": "success", "filepath": "/uploads/x"}).encode(),
                   "application/json")

    def do_PUT(self) -> None:
        self.record()
        self.reply(201, b"created")

    def do_DELETE(self) -> None:
        self.record()
        self.reply(204)


class Peer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.scheme = "http"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client gave up on /slow, or closed a keep-alive connection: expected

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def bodies(self, method: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for m, _p, h, b in self.requests if m == method]


def serve(peer: Peer) -> Iterator[Peer]:
    # shutdown() waits for serve_forever to look at its flag, once per poll_interval (0.5 s
    # by default: half a second of teardown per test).
    thread = threading.Thread(target=peer.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer.shutdown()
        peer.server_close()
        thread.join(5)


@pytest.fixture
def peer() -> Iterator[Peer]:
    yield from serve(Peer())


# ----------------------------------------------------------------------------- helpers

@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def client(*args: str, cwd: Path | None = None, timeout: float = 60) -> Ran:
    """Run httpd-client: `bin/httpd-client` in a subprocess for load (it forks) and for
    another working directory; confirm in this process, through click's runner (faster)."""
    if cwd is not None or "load" in args or "-l" in args:
        done = subprocess.run([*CLIENT, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
        return Ran(done.returncode, done.stdout, done.stderr)
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click 8.1
    except TypeError:
        runner = CliRunner()  # click >= 8.2 keeps stderr apart by itself
    result = runner.invoke(cli, seed_args(args), prog_name="httpd-client")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def write_spec(tmp_path: Path, requests: Any, name: str = "spec.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(requests, indent=1))
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_json(peer_url: str, spec: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = client("--url", peer_url, "load", "--spec", spec, "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


CONFIRM_SPEC = {"comment": "a commented spec", "requests": [
    {"method": "GET", "url": "/", "expect": {"status": 200, "body_contains": "hello",
                                             "headers": {"Content-Type": "text/html"}}},
    {"method": "GET", "url": "/missing", "expect": 404, "comment": "a miss"},
    {"method": "GET", "url": "/chunked", "expect": {"body_equals": "hello chunked world"}},
    {"method": "GET", "url": "/close", "expect": 200},
    {"method": "HEAD", "url": "/", "description": "no body"},
    {"method": "POST", "url": "/upload", "data": {"name": "Delta-server"},
     "expect": {"status": 201, "json": {"status": "success"}}},
    {"method": "DELETE", "url": "/uploads/x", "expect": [204, 404]},
]}


# ----------------------------------------------------------------------------- confirm

def test_confirm_all_pass(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, CONFIRM_SPEC)
    result = client("confirm", "ALL", "--url", peer.url, "--spec", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.rstrip().endswith("OK")]
    assert len(rows) == 7
    assert "PASS: 7 of 7" in result.stdout
    assert len(peer.requests) == 7


def test_confirm_runs_only_that_method(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, CONFIRM_SPEC)
    result = client("--url", peer.url, "confirm", "get", "--spec", spec, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["method"] == "GET" and report["passed"] == 4 and report["failed"] == 0
    assert [r["entry"] for r in report["results"]] == [1, 2, 3, 4]
    assert {r["method"] for r in report["results"]} == {"GET"}
    assert report["results"][1] | {"time_ms": 0, "bytes": 0} == {
        "entry": 2, "method": "GET", "url": "/missing", "expected": [404], "status": 404,
        "time_ms": 0, "bytes": 0, "ok": True, "problems": []}
    assert [m for m, *_ in peer.requests] == ["GET"] * 4


def test_confirm_mismatch_exits_1(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [
        {"method": "GET", "url": "/missing", "expect": 200},
        {"method": "GET", "url": "/", "expect": {"body_contains": "absent text"}},
        {"method": "POST", "url": "/upload", "data": {"a": 1},
         "expect": {"json": {"status": "failure"}, "headers": {"X-Nope": "1"}}},
        {"method": "GET", "url": "/", "expect": 200},
    ])
    result = client("--url", peer.url, "confirm", "ALL", "--spec", spec)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "status 404, expected 200" in out
    assert "body lacks 'absent text'" in out
    assert "does not contain" in out and "no X-Nope header" in out
    assert "FAIL: 1 of 4 request(s) as expected, 3 not" in out


def test_confirm_timeout_is_a_failed_row(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/slow"}, {"url": "/"}])
    result = client("--url", peer.url, "--timeout", "0.3", "confirm", "GET", "--spec", spec)
    assert result.returncode == 1, result.stderr
    assert "no response within 0.3 s" in result.stdout
    assert result.stdout.count(" OK") == 1  # the next request still runs, on a new connection


def test_seed_spellings_and_debug(peer: Peer, tmp_path: Path) -> None:
    (tmp_path / "CTest.json").write_text(json.dumps(CONFIRM_SPEC))
    (tmp_path / "LTest.json").write_text(json.dumps(CONFIRM_SPEC["requests"][:2]))
    confirm = client("--url", peer.url, "-c", "GET", "--debug=True", cwd=tmp_path)
    assert confirm.returncode == 0, confirm.stderr
    assert "GET /missing -> 404 Not Found (" in confirm.stderr
    load = client("--url", peer.url, "-l", "3", "--debug=True", cwd=tmp_path)
    assert load.returncode == 0, load.stderr
    assert load.stderr.count("GET /missing -> 404") == 3
    assert "6 requests planned" in load.stdout


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(("document", "message"), [
    ([{"url": "/"}, {"method": "GET", "ulr": "/x"}], "entry #2 (GET /): unknown key 'ulr'"),
    ([{"url": "/"}, {"method": "FETCH"}], "entry #2 (FETCH /): \"method\" must be one of"),
    ([{"url": "/"}, {"url": "/", "expect": 99}], "entry #2 (GET /): expected status"),
    ([{"url": "/"}, "GET /"], "entry #2: expected an object, got a string"),
    ([{"url": "/"}, {"method": "POST", "file": {"path": "nope.bin"}}],
     "entry #2 (POST /): \"file\" path 'nope.bin' is not a readable file"),
    ([{"url": "/"}, {"method": "GET", "file": {"path": "spec.json"}}],
     "entry #2 (GET /): \"file\" needs POST, PUT or PATCH"),
    ([{"url": "/"}, {"method": "PUT", "data": {"a": {"b": 1}}, "encoding": "form"}],
     "entry #2 (PUT /): \"data\" value of 'a' must be a string or number"),
    ({"requests": []}, "no requests in the file"),
    ({"comment": "x"}, "the top-level object needs a \"requests\" list"),
])
def test_bad_spec_names_file_and_entry(tmp_path: Path, document: Any, message: str) -> None:
    path = write_spec(tmp_path, document)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(path + ": ")
    assert message in str(caught.value)


def test_bad_spec_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "CTest.json"
    path.write_text('[{"method": "GET"},\n {"method": "GET", "url": "/",}]')
    result = client("confirm", "GET", "--spec", str(path))
    assert result.returncode == 2
    # file:line:column; the wording of the JSON error is Python's own
    assert result.stderr.startswith(f"httpd-client: {path}:2:31: invalid JSON: ")
    assert result.stderr.count("\n") == 1
    missing = client("load", cwd=tmp_path)  # no LTest.json here, nor in ./examples
    assert missing.returncode == 2
    assert missing.stderr == "httpd-client: LTest.json: no such file (pass --spec PATH)\n"
    bad_url = client("--url", "ftp://x", "confirm", "GET", "--spec", str(path))
    assert bad_url.returncode == 2 and "unsupported scheme 'ftp'" in bad_url.stderr


def test_unreachable_server_exits_3(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/"}])
    port = free_port()
    for args in (["confirm", "GET"], ["load", "-n", "5", "-c", "2"]):
        result = client("--url", f"http://127.0.0.1:{port}", *args, "--spec", spec)
        assert result.returncode == 3, result.stdout + result.stderr
        assert result.stderr == (f"httpd-client: cannot connect to 127.0.0.1:{port}: "
                                 "Connection refused\n")
        assert result.stdout == ""


# ----------------------------------------------------------------------------- load

def test_load_counts_exactly(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/"}, {"method": "HEAD", "url": "/"},
                                 {"url": "/missing", "expect": 404}])
    code, report = load_json(peer.url, spec, "-n", "7", "-c", "5", "-p", "2")
    assert code == 0
    assert report["requests"] == report["responses"] == report["planned"] == 21
    assert report["processes"] == 2 and report["concurrency"] == 5
    assert report["status"] == {"200": 14, "404": 7}
    assert [e["responses"] for e in report["entries"]] == [7, 7, 7]
    assert report["errors"] == {"total": 0, "by_kind": {}}
    assert report["unexpected_status"] == 0
    assert report["connections"]["opened"] == 5  # keep-alive: one per connection
    assert set(report["latency_ms"]) == {"min", "mean", "p50", "p90", "p99", "max"}
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report["bytes"]["received"] > 7 * 750 and report["bytes"]["sent"] > 0
    assert len(peer.requests) == 21


def test_load_text_report(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/"}, {"url": "/missing", "expect": 200}])
    result = client("--url", peer.url, "load", "--spec", spec, "-n", "4", "-c", "2")
    assert result.returncode == 1  # the 404s are not what the spec expects
    out = result.stdout
    assert "8 in " in out and "requests/s, 0 failed" in out
    assert "p50" in out and "p99" in out and "max" in out
    assert "status       200: 4, 404: 4" in out
    assert "unexpected   4 response(s)" in out


def test_load_duration(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/"}, {"url": "/chunked"}])
    start = time.monotonic()
    code, report = load_json(peer.url, spec, "--duration", "0.6", "-c", "2")
    assert code == 0
    assert time.monotonic() - start < 5
    assert report["planned"] is None and report["duration_s"] == 0.6
    assert 0.5 <= report["elapsed_s"] < 3
    assert report["responses"] > 10 and report["errors"]["total"] == 0
    _code, capped = load_json(peer.url, spec, "--duration", "5", "-n", "3")
    assert capped["responses"] == 6 and capped["elapsed_s"] < 4  # -n caps a duration


def test_load_framing_close_and_chunked(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/chunked"}, {"url": "/close"},
                                 {"method": "HEAD", "url": "/chunked"}])
    code, report = load_json(peer.url, spec, "-n", "10", "-c", "3")
    assert code == 0, report["errors"]
    assert report["responses"] == 30
    assert report["connections"]["closed_by_server"] == 10
    assert report["connections"]["opened"] >= 11


def test_load_errors_by_kind(peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/garbage"}, {"url": "/slow"}, {"url": "/"}])
    code, report = load_json(peer.url, spec, "-n", "2", "-c", "2", "--timeout", "0.3")
    assert code == 1
    assert report["errors"] == {"total": 4, "by_kind": {"bad_response": 2, "timeout": 2}}
    assert report["responses"] == 2 and report["requests"] == 6
    assert [e["errors"] for e in report["entries"]] == [2, 2, 0]


def test_load_http10_body_until_close(tmp_path: Path) -> None:
    """A response without Content-Length or chunked ends when the server closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def answer() -> None:
        for _ in range(5):  # the pre-flight connection, then one per request
            conn, _addr = listener.accept()
            with conn:
                if conn.recv(65536):
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + b"z" * 5000)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        spec = write_spec(tmp_path, [{"url": "/a"}, {"url": "/b"}])
        code, report = load_json(f"http://127.0.0.1:{listener.getsockname()[1]}", spec,
                                 "-n", "2", "-c", "2")
        assert code == 0, report["errors"]
        assert report["responses"] == 4 and report["connections"]["closed_by_server"] == 4
        assert report["bytes"]["received"] > 4 * 5000
    finally:
        thread.join(10)
        listener.close()


# ----------------------------------------------------------------------------- uploads

def parse_multipart(headers: dict[str, str], body: bytes) -> dict[str, tuple[str | None, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"):
            (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


def test_uploads_arrive_intact(peer: Peer, tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "blob.bin").write_bytes(UPLOAD)
    spec = write_spec(tmp_path, [
        {"method": "POST", "url": "/upload", "data": {"name": "Delta-server", "n": 5},
         "file": {"name": "up.bin", "path": "files/blob.bin", "fileType": "binary"}},
        {"method": "POST", "url": "/upload", "data": {"name": "Delta", "nested": {"a": [1]}}},
        {"method": "POST", "url": "/upload", "data": {"a": "b c", "d": True},
         "encoding": "form"},
        {"method": "PUT", "url": "/uploads/up.bin", "file": {"path": "files/blob.bin"}},
    ])
    result = client("--url", peer.url, "confirm", "ALL", "--spec", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    posts = peer.bodies("POST")
    headers, body = posts[0]
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert parse_multipart(headers, body) == {
        "name": (None, b"Delta-server"), "n": (None, b"5"),
        "file": ("up.bin", UPLOAD)}
    assert posts[1][0]["Content-Type"] == "application/json"
    assert json.loads(posts[1][1]) == {"name": "Delta", "nested": {"a": [1]}}
    assert posts[2] == (posts[2][0], b"a=b+c&d=true")
    assert posts[2][0]["Content-Type"] == "application/x-www-form-urlencoded"
    (put_headers, put_body), = peer.bodies("PUT")
    assert put_body == UPLOAD and put_headers["Content-Type"] == "application/octet-stream"
    # The load mode sends the very same bytes.
    code, report = load_json(peer.url, spec, "-n", "3", "-c", "2")
    assert code == 0 and report["status"] == {"201": 12}
    multiparts = [(h, b) for h, b in peer.bodies("POST")
                  if h["Content-Type"].startswith("multipart/")]
    assert len(multiparts) == 4
    for headers, body in multiparts:
        assert parse_multipart(headers, body)["file"] == ("up.bin", UPLOAD)
    assert all(body == UPLOAD for _h, body in peer.bodies("PUT"))


# ----------------------------------------------------------------------------- https

@pytest.fixture
def tls_peer(tmp_path: Path) -> Iterator[Peer]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    peer = Peer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    peer.socket = context.wrap_socket(peer.socket, server_side=True)
    peer.scheme = "https"
    yield from serve(peer)


def test_https(tls_peer: Peer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [{"url": "/"}, {"url": "/chunked"}])
    address = tls_peer.url.removeprefix("https://")
    for args in (["confirm", "GET"], ["load"]):
        refused = client("--url", tls_peer.url, *args, "--spec", spec)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert refused.stderr == (
            f"httpd-client: TLS handshake with {address} failed: certificate verify failed: "
            "self-signed certificate (--insecure skips verification)\n")
    result = client("--url", tls_peer.url, "-k", "confirm", "GET", "--spec", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    code, report = load_json(tls_peer.url, spec, "-k", "-n", "5", "-c", "2")
    assert code == 0, report["errors"]
    assert report["responses"] == 10 and report["connections"]["opened"] == 2


# ----------------------------------------------------------------------------- prefork

def test_examples_against_prefork(server: Any) -> None:
    """The shipped examples' read-only entries pass against a real prefork server."""
    url = f"http://127.0.0.1:{server.port}"
    for method in ("GET", "HEAD"):
        result = client("--url", url, "confirm", method, cwd=REPO)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "examples/CTest.json" in result.stdout
    result = client("--url", url, "load", "-n", "20", "-c", "8", "--json", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    entries = len(load_spec(REPO / "examples" / "LTest.json").entries)
    assert report["responses"] == 20 * entries and report["errors"]["total"] == 0
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "httpd_client", "--version"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "httpd-client, version" in result.stdout


# ----------------------------------------------------------------------------- framing

RESPONSE = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n")


def test_chunked_reader_any_split() -> None:
    head_end = RESPONSE.index(b"\r\n\r\n")
    assert parse_head(RESPONSE, head_end) == (200, -1, True, True)
    body = RESPONSE[head_end + 4:]
    for size in (1, 2, 3, 7, len(body)):
        reader = ChunkedReader()
        pieces = [body[i:i + size] for i in range(0, len(body), size)]
        assert [reader.feed(p) for p in pieces][-1] is True
        assert not any(ChunkedReader().feed(p) for p in [body[:-1]])
    with pytest.raises(BadResponse):
        ChunkedReader().feed(b"zz\r\n")


@pytest.mark.parametrize(("head", "expected"), [
    (b"HTTP/1.1 204 No Content\r\n\r\n", (204, -1, False, True)),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", (200, 3, False, False)),
    (b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\nConnection: Keep-Alive\r\n\r\n",
     (200, 3, False, True)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n",
     (200, 9, False, False)),
])
def test_parse_head(head: bytes, expected: tuple[int, int, bool, bool]) -> None:
    assert parse_head(head, head.index(b"\r\n\r\n")) == expected
