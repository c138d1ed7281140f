"""What an operator adds around TLS listeners (docs/tls.md): the redirect of plain HTTP to
https ([server] https_redirect), Strict-Transport-Security ([server] hsts), the access log's
%{SSL_PROTOCOL}x and %{SSL_CIPHER}x, and refusals for want of room on a TLS listener (a
close, never a plaintext 503).

Live servers with a plain and a TLS listener (the fixtures' helpers of tests/test_tls.py,
certificates from trustme); and, in process, the quick path's memory with connections of
both kinds on one local address, so that the listener's kind, not its address, is what
keeps a remembered answer to its own kind of connection.
"""

from __future__ import annotations

import http.client
import mmap
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from prefork.config.settings import load_config
from prefork.config.values import access_format, hsts_value
from prefork.errors import BadRequest
from prefork.http.framing import AddedFields, frame
from prefork.http.message import Headers, Request, Response
from prefork.http.parser import Limits
from prefork.log import AccessLog, ErrorLog
from prefork.scoreboard import THREAD_SLOT, ThreadSlot
from prefork.serve.connection import Action, Connection, ServerContext
from prefork.serve.quick import QuickHit, QuickPath
from prefork.serve.transport import PlainTransport
from prefork.site.redirect import HttpsRedirect
from prefork.site.router import Router
from tests.conftest import Server, make_root, read_all, wait_for, write_config
from tests.test_tls import TLS_HOST, TLSServer, ports_of, running_tls, throwaway_ca, tls_settings

HSTS = "max-age=63072000; includeSubDomains"
APP_HSTS = "max-age=60"
LOG_FORMAT = '%>s %m %U%q %{SSL_PROTOCOL}x %{SSL_CIPHER}x "%{Strict-Transport-Security}o"'
TOKEN = "challenge-token-123"
STS_APP = '''
def application(environ, start_response):
    fields = [("Content-Type", "text/plain")]
    if environ["PATH_INFO"] == "/own":
        fields.append(("Strict-Transport-Security", "max-age=60"))
    start_response("200 OK", fields)
    return [b"app\\n"]
'''


# ------------------------------------------------------------------ a live server


@dataclass
class Features(TLSServer):
    def plain(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.plain_port), timeout=timeout)

    def access_line(self, marker: str) -> str:
        """The access-log line of the one request whose target carries `marker`."""
        found = wait_for(lambda: [line for line in self.server.log("access.log").splitlines()
                                  if marker in line])
        assert isinstance(found, list) and len(found) == 1, found
        return str(found[0])


def feature_settings(base: Path, ca: trustme.CA) -> dict[str, dict[str, str]]:
    settings = tls_settings(base, ca)
    (base / "sts_app.py").write_text(STS_APP)
    settings["server"].update({"https_redirect": "on", "hsts": HSTS})
    settings["workers"] = {"processes": "1", "threads": "1"}  # one quick-path memory
    settings["logging"] = {"access_format": LOG_FORMAT}
    settings["app:sts"] = {"mount": "/app", "module": "sts_app:application",
                           "path": str(base), "threads": "2"}
    return settings


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Features]:
    base = tmp_path_factory.mktemp("tlsfeatures")
    ca, ca_file = throwaway_ca(base)
    root = make_root(base)
    challenge = root / "htdocs" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / TOKEN).write_text("token-body\n")
    with running_tls(root, feature_settings(base, ca), ca, ca_file, Features) as site:
        yield site


@dataclass
class Answer:
    status: int
    fields: list[tuple[str, str]]
    body: bytes

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        assert len(values) <= 1, values
        return values[0] if values else None


def exchange(sock: socket.socket, data: bytes, head_only: bool = False) -> Answer:
    """Send `data` (one request) and read one response (by its Content-Length)."""
    sock.sendall(data)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = [(name, value.strip()) for name, _, value in
              (line.partition(":") for line in lines[1:])]
    answer = Answer(int(lines[0].split()[1]), fields, body)
    length = 0 if head_only else int(answer.get("Content-Length") or 0)
    while len(answer.body) < length:
        chunk = sock.recv(65536)
        assert chunk
        answer.body += chunk
    return answer


def get(path: str, host: str = "localhost", method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


# ------------------------------------------------------------------ the redirect


def test_plain_requests_are_redirected_to_the_tls_listener(site: Features) -> None:
    with site.plain() as sock:
        answer = exchange(sock, get("/about.html?a=1&b=%41", f"localhost:{site.plain_port}"))
        assert answer.status == 301
        assert answer.get("Location") == \
            f"https://localhost:{site.tls_port}/about.html?a=1&b=%41"
        assert answer.get("Strict-Transport-Security") is None  # never over plain HTTP
        assert b"https://localhost:" in answer.body
        head = exchange(sock, get("/sub/", method="HEAD"), head_only=True)
        assert head.status == 301 and head.body == b""
        assert head.get("Location") == f"https://localhost:{site.tls_port}/sub/"
        # A request for an application's mount is redirected as well, and the connection
        # carried all of them (keep-alive).
        answer = exchange(sock, get("/plain/environ", "127.0.0.1"))
        assert answer.status == 301
        assert answer.get("Location") == f"https://127.0.0.1:{site.tls_port}/plain/environ"
    line = site.access_line("/about.html?a=1&b=%41")
    assert line.startswith("301 GET /about.html?a=1&b=%41 - - ")


def test_other_methods_get_308_and_keep_their_body(site: Features) -> None:
    with site.plain() as sock:
        answer = exchange(sock, get("/upload", extra="Content-Type: text/plain\r\n"
                                    "Content-Length: 5\r\n", method="POST") + b"hello")
        assert answer.status == 308
        assert answer.get("Location") == f"https://localhost:{site.tls_port}/upload"
        # The connection goes on (the short body was read and dropped) ...
        assert exchange(sock, get("/x?after-post")).status == 301
    # ... and a client waiting for 100 Continue is answered without sending its body.
    with site.plain() as sock:
        sock.sendall(get("/uploads/x.bin", method="PUT", extra="Content-Length: 100000000\r\n"
                         "Expect: 100-continue\r\n"))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert f"\r\nLocation: https://localhost:{site.tls_port}/uploads/x.bin\r\n".encode() \
        in answer


def test_the_host_is_checked_before_it_is_reflected(site: Features) -> None:
    with site.plain() as sock:
        assert exchange(sock, get("/", "evil.example")).status == 403
    # An absolute-form target: its authority is the host, its path and query the target.
    with site.plain() as sock:
        answer = exchange(sock, b"GET http://alt.test/sub/page.html?x HTTP/1.1\r\n"
                                b"Host: localhost\r\n\r\n")
    assert answer.status == 301
    assert answer.get("Location") == f"https://alt.test:{site.tls_port}/sub/page.html?x"
    # HTTP/1.0 without a Host: the first server_name.
    with site.plain() as sock:
        sock.sendall(b"GET /about.html HTTP/1.0\r\n\r\n")
        answer_bytes = read_all(sock)
    assert answer_bytes.startswith(b"HTTP/1.1 301 ")
    assert f"\r\nLocation: https://localhost:{site.tls_port}/about.html\r\n".encode() \
        in answer_bytes


def test_acme_challenges_are_served_over_plain_http(site: Features) -> None:
    path = f"/.well-known/acme-challenge/{TOKEN}"
    with site.plain() as sock:
        for _ in range(3):  # the full path, then remembered answers
            answer = exchange(sock, get(path))
            assert (answer.status, answer.body) == (200, b"token-body\n")
            assert answer.get("Strict-Transport-Security") is None
        # Only the challenge directory: dot segments do not take a path out of the redirect.
        escaped = exchange(sock, get("/.well-known/acme-challenge/../../about.html"))
        assert escaped.status == 301
        assert exchange(sock, get("/.well-known/other")).status == 301
    # The same request over TLS: its own answer, with hsts (not the plain one, remembered).
    with site.connect() as tls:
        answer = exchange(tls, get(path))
        assert (answer.status, answer.body) == (200, b"token-body\n")
        assert answer.get("Strict-Transport-Security") == HSTS


def test_a_remembered_tls_answer_is_never_replayed_to_a_plain_connection(site: Features
                                                                        ) -> None:
    request = get("/sub/page.html?replay")
    with site.connect() as tls:
        for _ in range(3):  # taught, then answered from memory
            answer = exchange(tls, request)
            assert answer.status == 200 and answer.get("Strict-Transport-Security") == HSTS
    with site.plain() as sock:
        for _ in range(2):
            answer = exchange(sock, request)
            assert answer.status == 301, answer
            assert answer.get("Location") == \
                f"https://localhost:{site.tls_port}/sub/page.html?replay"


# ------------------------------------------------------------------ Strict-Transport-Security


def test_hsts_is_on_every_response_over_tls(site: Features) -> None:
    with site.connect() as tls:
        for request in (get("/about.html"), get("/about.html"), get("/missing.html"),
                        get("/sub/", method="HEAD"), get("/plain/environ"),
                        get("/app/plain"), get("/sub")):
            answer = exchange(tls, request, head_only=request.startswith(b"HEAD"))
            assert answer.get_all("Strict-Transport-Security") == [HSTS], request
    # A parser refusal (no Host) closes the connection: hsts all the same.
    with site.connect() as tls:
        tls.sendall(b"GET / HTTP/1.1\r\n\r\n")
        answer_bytes = read_all(tls)
    assert answer_bytes.startswith(b"HTTP/1.1 400 ")
    assert f"\r\nStrict-Transport-Security: {HSTS}\r\n".encode() in answer_bytes


def test_an_application_setting_its_own_hsts_wins(site: Features) -> None:
    with site.connect() as tls:
        answer = exchange(tls, get("/app/own"))
    assert answer.status == 200 and answer.get_all("Strict-Transport-Security") == [APP_HSTS]


# ------------------------------------------------------------------ the access log


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_the_access_log_names_protocol_and_cipher(site: Features, version: str) -> None:
    pinned = getattr(ssl.TLSVersion, version)
    context = site.context(minimum_version=pinned, maximum_version=pinned)
    with site.connect(context=context) as tls:
        protocol, cipher = tls.version(), tls.cipher()[0]  # type: ignore[index]
        for attempt in ("full", "quick"):  # the second is answered from memory
            exchange(tls, get(f"/about.html?log-{version}-{attempt}"))
        exchange(tls, get(f"/missing?log-{version}-error"))
    assert protocol == version.replace("_", ".")
    for attempt in ("full", "quick"):
        assert site.access_line(f"log-{version}-{attempt}") == \
            f'200 GET /about.html?log-{version}-{attempt} {protocol} {cipher} "{HSTS}"'
    assert site.access_line(f"log-{version}-error").startswith(
        f"404 GET /missing?log-{version}-error {protocol} {cipher} ")
    # Over plain HTTP both are "-".
    with site.plain() as sock:
        exchange(sock, get(f"/.well-known/acme-challenge/{TOKEN}?log-{version}-plain"))
    assert " - - " in site.access_line(f"log-{version}-plain")


# ------------------------------------------------------------------ configtest


def configtest(tmp_path: Path, server: dict[str, str], logging: dict[str, str] | None = None
               ) -> tuple[str, str]:
    """(stderr of a failed configtest, the configuration's text)."""
    root = make_root(tmp_path)
    settings = {"server": server, "logging": logging or {}}
    target = Server(root, write_config(root, settings))
    result = target.ctl("configtest", check=False)
    assert result.returncode == 1, result.stdout
    return result.stderr, target.config.read_text()


def line_of(text: str, start: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1)
                if line.startswith(start))


def test_configtest_refuses_a_redirect_without_a_tls_listener(tmp_path: Path) -> None:
    stderr, text = configtest(tmp_path, {"https_redirect": "on"})
    where = f":{line_of(text, 'https_redirect')}: server.https_redirect: "
    assert where in stderr and "no [server] listen address is marked ssl" in stderr


def test_configtest_refuses_hsts_without_a_tls_listener_or_max_age(tmp_path: Path) -> None:
    stderr, text = configtest(tmp_path / "a", {"hsts": "max-age=600"})
    assert f":{line_of(text, 'hsts')}: server.hsts: is sent only over TLS" in stderr
    stderr, text = configtest(tmp_path / "b", {"hsts": "includeSubDomains"})
    assert f":{line_of(text, 'hsts')}: server.hsts: must start with max-age=" in stderr


def test_configtest_refuses_an_unknown_x_directive(tmp_path: Path) -> None:
    stderr, text = configtest(tmp_path, {}, {"access_format": "%h %{SSL_SESSION_ID}x"})
    assert f":{line_of(text, 'access_format')}: logging.access_format: " in stderr
    assert "%{SSL_PROTOCOL}x" in stderr


def test_hsts_values() -> None:
    assert hsts_value("") == ""
    assert hsts_value(f"  {HSTS}; preload ") == f"{HSTS}; preload"
    assert hsts_value('MAX-AGE=0; foo="a b"') == 'MAX-AGE=0; foo="a b"'
    for bad in ("max-age", "max-age=-1", "max-age=1; max-age=2", "max-age=1; a b",
                "preload; max-age=1", "max-age=1\r\nX: y"):
        with pytest.raises(ValueError):
            hsts_value(bad)
    assert access_format("%{SSL_PROTOCOL}x %{SSL_CIPHER}x") == "%{SSL_PROTOCOL}x %{SSL_CIPHER}x"
    for bad in ("%x", "%{ssl_protocol}x", "%{SSL_CLIENT_S_DN}x"):
        with pytest.raises(ValueError):
            access_format(bad)


# ------------------------------------------------------------------ the redirect's host, in process


def request_for(host: str, target: str = "/a?b", method: str = "GET") -> Request:
    path, _, query = target.partition("?")
    return Request(method, target, path, query, "HTTP/1.1", Headers([]), ("127.0.0.1", 1),
                   host=host)


@pytest.mark.parametrize(("host", "expected"), [
    ("example.com", "https://example.com/a?b"),
    ("example.com:80", "https://example.com/a?b"),
    ("192.0.2.7:8080", "https://192.0.2.7/a?b"),
    ("[2001:db8::1]:80", "https://[2001:db8::1]/a?b"),
    ("exa%6dple.com", "https://www.example.com/a?b"),  # not reflected: the fallback
    ("a,b", "https://www.example.com/a?b"),
    ("[v1.x]", "https://www.example.com/a?b"),
    ("", "https://www.example.com/a?b"),
])
def test_the_redirect_reflects_only_a_plain_host(host: str, expected: str) -> None:
    redirect = HttpsRedirect(443, ("*", "www.example.com", "example.com"))
    assert redirect.location(request_for(host)) == expected


def test_the_redirect_port_status_and_fallback() -> None:
    redirect = HttpsRedirect(8443, ("*",))
    assert redirect.location(request_for("h.test", "/caf\xc3\xa9")) == \
        "https://h.test:8443/caf%C3%A9"
    with pytest.raises(BadRequest):
        redirect.location(request_for("bad%20host"))
    assert redirect.response(request_for("h.test")).status == 301
    assert redirect.response(request_for("h.test", method="HEAD")).status == 301
    assert redirect.response(request_for("h.test", method="PUT")).status == 308
    assert redirect.response(request_for("h.test", method="DELETE")).status == 308


def test_framing_adds_fields_unless_the_handler_set_them() -> None:
    added = AddedFields.of((("Strict-Transport-Security", HSTS),))
    for response in (Response(200, [("Content-Type", "text/plain")], b"x"),
                     Response(200, [("Content-Length", "1")], b"x",
                              raw_headers=b"Content-Length: 1\r\n")):
        out = frame(response, "GET", "HTTP/1.1", True, added)
        head = b"".join(item for item in out.items if isinstance(item, bytes))
        assert head.count(b"\r\nStrict-Transport-Security: ") == 1
        assert ("Strict-Transport-Security", HSTS) in out.headers
    own = Response(200, [("strict-transport-security", APP_HSTS)], b"x")
    out = frame(own, "GET", "HTTP/1.1", True, added)
    head = b"".join(item for item in out.items if isinstance(item, bytes))
    assert b"Strict-Transport-Security" not in head and APP_HSTS.encode() in head


# ------------------------------------------------------------------ the quick path, in process


class HttpsKind(PlainTransport):
    """A plain socket pair that says it carries TLS: what the connection, the router and the
    quick path see of a TLS listener, on the same local address as a plain one."""

    scheme = "https"

    def version(self) -> str | None:
        return "TLSv1.3"

    def cipher(self) -> str | None:
        return "TLS_AES_256_GCM_SHA384"


LOCAL = ("127.0.0.1", 8080)  # both kinds of connection: only the kind tells them apart


class Side:
    """A worker's serving context (quick path on or off) with redirect and hsts."""

    def __init__(self, root: Path, log: Path, quick: bool) -> None:
        settings = {"server": {"listen": "127.0.0.1:0, 127.0.0.2:0 ssl",
                               "https_redirect": "on", "hsts": HSTS},
                    "tls": {"certificate": "etc/c.pem", "certificate_key": "etc/c.key"}}
        config = load_config(write_config(root, settings))
        router = Router(config, https_port=8443)
        limits = Limits()
        self.quick = QuickPath(router, limits) if quick else None
        self.hits = 0
        if self.quick is not None:
            answer = self.quick.answer

            def counting(data: bytes, listener: tuple[tuple[str, int], str]
                         ) -> QuickHit | None:
                hit = answer(data, listener)
                self.hits += hit is not None
                return hit

            self.quick.answer = counting  # type: ignore[method-assign]
        self.log = log
        self.ctx = ServerContext(router, AccessLog(str(log), LOG_FORMAT),
                                 ErrorLog(None, "warn"), limits, 5, 3, 10, 10, 10, 0, False,
                                 quick=self.quick,
                                 tls_fields=AddedFields.of(
                                     (("Strict-Transport-Security", HSTS),)))
        self.slot = ThreadSlot(mmap.mmap(-1, THREAD_SLOT), 0, 1)

    def exchange(self, data: bytes, kind: type[PlainTransport]) -> bytes:
        server_end, client_end = socket.socketpair()
        with client_end:
            server_end.setblocking(False)
            conn = Connection(kind(server_end), ("127.0.0.1", 40000), LOCAL, self.ctx,
                              self.slot)
            client_end.sendall(data)
            if conn.on_readable() is not Action.CLOSE:
                conn.close()
            return read_all(client_end)


_DATE = re.compile(rb"Date: [^\r]*\r\n")


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Side, Side]:
    root = make_root(tmp_path)
    challenge = root / "htdocs" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / TOKEN).write_text("token-body\n")
    return Side(root, tmp_path / "quick.log", True), Side(root, tmp_path / "full.log", False)


def test_the_listener_kind_keys_the_quick_path(sides: tuple[Side, Side]) -> None:
    quick, _full = sides
    request = get("/about.html")
    for _ in range(3):
        answer = quick.exchange(request, HttpsKind)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert f"\r\nStrict-Transport-Security: {HSTS}\r\n".encode() in answer
    assert quick.hits == 2
    # Same local address, same request-line and Host, a plain connection: the redirect.
    for _ in range(2):
        answer = quick.exchange(request, PlainTransport)
        assert answer.startswith(b"HTTP/1.1 301 Moved Permanently\r\n"), answer
        assert b"\r\nLocation: https://localhost:8443/about.html\r\n" in answer
        assert b"Strict-Transport-Security" not in answer
    assert quick.hits == 2
    # A plain answer remembered (a challenge file) is not replayed to a TLS connection.
    request = get(f"/.well-known/acme-challenge/{TOKEN}")
    for _ in range(2):
        answer = quick.exchange(request, PlainTransport)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"Strict-Transport" not in answer
    assert quick.hits == 3
    answer = quick.exchange(request, HttpsKind)
    assert f"\r\nStrict-Transport-Security: {HSTS}\r\n".encode() in answer
    assert quick.hits == 3  # taught anew for its own kind


def test_quick_answers_over_tls_are_the_full_paths(sides: tuple[Side, Side]) -> None:
    requests = [get("/about.html"), get("/sub/", method="HEAD"),
                get("/sub/page.html", extra="Connection: close\r\n"),
                b"GET /about.html HTTP/1.0\r\nHost: localhost\r\n\r\n"]
    for request in requests:
        answers = [_DATE.sub(b"Date: D\r\n", side.exchange(request, HttpsKind))
                   for side in (*sides, *sides)]
        assert answers[0] == answers[1] and answers[2] == answers[3], request
        assert f"\r\nStrict-Transport-Security: {HSTS}\r\n".encode() in answers[2]
    assert sides[0].hits == len(requests)
    lines = [side.log.read_text().splitlines() for side in sides]
    assert lines[0] == lines[1]
    assert all(f' TLSv1.3 TLS_AES_256_GCM_SHA384 "{HSTS}"' in line for line in lines[0])


# ------------------------------------------------------------------ no room: a close


def overload_settings(base: Path, ca: trustme.CA, **workers: str) -> dict[str, dict[str, str]]:
    settings = tls_settings(base, ca)
    del settings["app:plain"]
    settings["workers"] = {"processes": "1", "threads": "1", **workers}
    return settings


def test_a_saturated_worker_closes_tls_clients_and_answers_plain_ones_503(
        tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    root = make_root(tmp_path)
    server = Server(root, write_config(root, overload_settings(tmp_path, ca,
                                                               max_connections="2")))
    try:
        plain_port, tls_port = ports_of(server.start().stdout)
        site = TLSServer(server, plain_port, tls_port, ca, ca_file)
        held = [site.connect(), site.connect()]
        for sock in held:  # both accepted: they hold the two places
            assert exchange(sock, get("/about.html")).status == 200
        # A TLS client: closed without a byte (a plaintext 503 would be garbage to it).
        with socket.create_connection((TLS_HOST, tls_port), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01\x00\x05hello")  # a handshake begins
            assert read_all(raw) == b""
        with pytest.raises((ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError)):
            site.connect().close()
        # A plain client of the same worker still gets the 503.
        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as raw:
            raw.sendall(get("/"))
            assert read_all(raw).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        wait_for(lambda: "worker pool saturated" in server.log("error.log"))
        for sock in held:
            sock.close()
        def served() -> bool:
            # Until the worker has seen the two closes it is still full, and closes a TLS
            # client at once: that is a refusal to retry, not a failure.
            try:
                with site.connect() as sock:
                    return exchange(sock, get("/about.html")).status == 200
            except (ssl.SSLError, ConnectionError):
                return False
        wait_for(served)
    finally:
        server.cleanup()


def test_out_of_descriptors_a_tls_client_is_closed_not_answered(tmp_path: Path) -> None:
    import resource

    ca = trustme.CA()
    root = make_root(tmp_path)
    settings = overload_settings(tmp_path, ca)
    settings["http"] = {"header_timeout": "20"}  # accepted handshakes stay open meanwhile
    server = Server(root, write_config(root, settings))
    held: list[socket.socket] = []
    try:
        _plain, tls_port = ports_of(server.start().stdout)
        [worker] = server.worker_pids()
        limit = len(os.listdir(f"/proc/{worker}/fd")) + 4
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, limit))
        for _ in range(12):
            sock = socket.create_connection((TLS_HOST, tls_port), timeout=5)
            sock.sendall(b"\x16\x03\x01\x00\x05hel")  # a handshake that stalls
            held.append(sock)
        answers: list[bytes] = []
        waiting = {sock.fileno(): sock for sock in held}
        deadline = time.monotonic() + 3
        while waiting and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(waiting), [], [], left)
            for fd in ready:
                try:
                    answers.append(waiting[fd].recv(65536))
                except OSError:
                    answers.append(b"")
                del waiting[fd]
        assert len(answers) >= 4 and all(answer == b"" for answer in answers), answers
        assert "out of file descriptors" in server.log("error.log")
    finally:
        for sock in held:
            sock.close()
        server.cleanup()


def test_http_client_follows_the_redirect_target(site: Features) -> None:
    """What a client does with the Location: the same request over https succeeds."""
    plain = http.client.HTTPConnection("127.0.0.1", site.plain_port, timeout=10)
    plain.request("GET", "/about.html", headers={"Host": "localhost"})
    response = plain.getresponse()
    response.read()
    plain.close()
    location = response.getheader("Location") or ""
    assert response.status == 301 and location.startswith("https://localhost:")
    conn = site.https()
    conn.request("GET", location.split(str(site.tls_port), 1)[1],
                 headers={"Host": "localhost"})
    secure = conn.getresponse()
    assert secure.status == 200 and secure.getheader("Strict-Transport-Security") == HSTS
    conn.close()
