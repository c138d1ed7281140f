"""TLS listeners (docs/tls.md): real workers with a plain and a TLS listener side by side,
certificates from a throwaway CA (trustme), clients from Python's ssl, curl and openssl."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import trustme

from tests.conftest import Server, make_root, read_all, wait_for, write_config

APPS = Path(__file__).resolve().parent / "apps"
HEADER_TIMEOUT = 2.0
TLS_HOST = "127.0.0.2"  # the TLS listener's own address (two port-0 listeners need two)


@dataclass
class TLSServer:
    server: Server
    plain_port: int
    tls_port: int
    ca: trustme.CA
    ca_file: Path

    def context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        for name, value in versions.items():
            setattr(context, name, value)
        return context

    def connect(self, server_hostname: str = "localhost",
                context: ssl.SSLContext | None = None, timeout: float = 10.0
                ) -> ssl.SSLSocket:
        raw = socket.create_connection((TLS_HOST, self.tls_port), timeout=timeout)
        return (context or self.context()).wrap_socket(raw, server_hostname=server_hostname)

    def https(self, timeout: float = 30.0) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(TLS_HOST, self.tls_port, timeout=timeout,
                                           context=self.context())
        # The certificate names localhost; the address is 127.0.0.2: connect, then check.
        conn.sock = self.connect()
        return conn


def issue(ca: trustme.CA, directory: Path, name: str, *names: str,
          not_after: datetime.datetime | None = None) -> tuple[Path, Path]:
    """A certificate for `names` from `ca`, written as chain and key PEM files."""
    cert = ca.issue_cert(*names, not_after=not_after) if not_after else ca.issue_cert(*names)
    chain, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return chain, key


def tls_settings(directory: Path, ca: trustme.CA) -> dict[str, dict[str, str]]:
    chain, key = issue(ca, directory, "main", "localhost", TLS_HOST)
    alt_chain, alt_key = issue(ca, directory, "alt", "alt.test")
    env = f"PLAIN_EVENTS={directory / 'events'} PLAIN_FILE={directory / 'blob'}"
    (directory / "blob").write_bytes(b"blob")
    return {
        "server": {"listen": f"127.0.0.1:0, {TLS_HOST}:0 ssl",
                   "server_name": "localhost alt.test"},
        "workers": {"processes": "2", "threads": "1"},
        "http": {"header_timeout": str(HEADER_TIMEOUT)},
        "tls": {"certificate": str(chain), "certificate_key": str(key)},
        "tls:alt": {"certificate": str(alt_chain), "certificate_key": str(alt_key),
                    "server_name": "alt.test"},
        "app:plain": {"mount": "/plain", "module": "plain:application", "path": str(APPS),
                      "threads": "2", "env": env},
    }


def ports_of(stdout: str) -> list[int]:
    match = re.search(r"listening on (.*)", stdout)
    assert match, stdout
    return [int(port) for port in re.findall(r":(\d+)", match.group(1))]


def throwaway_ca(base: Path) -> tuple[trustme.CA, Path]:
    """A CA for one test's certificates, its certificate written to base/ca.pem for the
    clients that trust it."""
    ca = trustme.CA()
    ca_file = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


Running = TypeVar("Running", bound=TLSServer)


@contextlib.contextmanager
def running_tls(root: Path, settings: dict[str, dict[str, str]], ca: trustme.CA,
                ca_file: Path, kind: type[Running] = TLSServer,  # type: ignore[assignment]
                ) -> Iterator[Running]:
    """A server started in `root` with `settings` (a plain and a TLS listener, as
    tls_settings makes them), stopped when the block ends."""
    server = Server(root, write_config(root, settings))
    try:
        plain, secure = ports_of(server.start().stdout)
        yield kind(server, plain, secure, ca, ca_file)
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    base = tmp_path_factory.mktemp("tls")
    ca, ca_file = throwaway_ca(base)
    with running_tls(make_root(base), tls_settings(base, ca), ca, ca_file) as server:
        yield server


def request(sock: socket.socket, path: str, keep_alive: bool = True) -> bytes:
    connection = "keep-alive" if keep_alive else "close"
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n".encode()


# ------------------------------------------------------------------ protocols and names


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_tls12_and_tls13_succeed(tls: TLSServer, version: str) -> None:
    pinned = getattr(ssl.TLSVersion, version)
    context = tls.context(minimum_version=pinned, maximum_version=pinned)
    with tls.connect(context=context) as sock:
        assert sock.version() == version.replace("_", ".")
        assert sock.selected_alpn_protocol() is None  # not offered by the client
        sock.sendall(request(sock, "/", keep_alive=False))
        assert read_all(sock).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_protocols_are_refused(tls: TLSServer, version: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(tls.ca_file))
    context.set_ciphers("ALL:@SECLEVEL=0")
    pinned = getattr(ssl.TLSVersion, version)
    context.minimum_version = context.maximum_version = pinned
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls.connect(context=context).close()
    # The server goes on serving.
    with tls.connect() as sock:
        assert sock.version() == "TLSv1.3"


def test_alpn_says_http11(tls: TLSServer) -> None:
    context = tls.context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with tls.connect(context=context) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"


def test_sni_picks_the_certificate(tls: TLSServer) -> None:
    with tls.connect("alt.test") as sock:
        names = [value for kind, value in sock.getpeercert()["subjectAltName"]]
        assert names == ["alt.test"]
    with tls.connect("localhost") as sock:
        names = [value for kind, value in sock.getpeercert()["subjectAltName"]]
        assert "localhost" in names
    # An unknown name gets the default certificate (which then fails verification).
    with pytest.raises(ssl.SSLCertVerificationError):
        tls.connect("unknown.test").close()


def test_weak_ciphers_are_refused(tls: TLSServer) -> None:
    context = tls.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("AES128-SHA:AES256-SHA:ECDHE-RSA-AES128-SHA")  # no AEAD, or no PFS
    with pytest.raises(ssl.SSLError):
        tls.connect(context=context).close()


# ------------------------------------------------------------------ HTTP over TLS


def test_keep_alive_and_pipelining(tls: TLSServer) -> None:
    with tls.connect() as sock:
        for _ in range(3):  # keep-alive: one request at a time on one connection
            sock.sendall(request(sock, "/"))
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += sock.recv(65536)
        # Pipelining: three requests in one write (one TLS record), answered in order.
        sock.sendall(request(sock, "/sub/") + request(sock, "/sub/page.html")
                     + request(sock, "/sub/", keep_alive=False))
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert answer.index(b"sub index") < answer.index(b"page\n") < answer.rindex(b"sub index")


def test_application_sees_https(tls: TLSServer) -> None:
    conn = tls.https()
    conn.request("GET", "/plain/environ", headers={"Host": "localhost"})
    response = conn.getresponse()
    env = json.loads(response.read())
    conn.close()
    assert env["wsgi.url_scheme"] == "https"
    plain = http.client.HTTPConnection("127.0.0.1", tls.plain_port, timeout=10)
    plain.request("GET", "/plain/environ", headers={"Host": "localhost"})
    assert json.loads(plain.getresponse().read())["wsgi.url_scheme"] == "http"
    plain.close()


# ------------------------------------------------------------------ what is not TLS


def test_plain_http_to_the_tls_port_gets_400(tls: TLSServer) -> None:
    with socket.create_connection((TLS_HOST, tls.tls_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"The plain HTTP request was sent to HTTPS port" in answer


def test_garbage_before_the_handshake_is_closed(tls: TLSServer) -> None:
    with socket.create_connection((TLS_HOST, tls.tls_port), timeout=10) as sock:
        sock.sendall(b"\x00\x01\x02garbage\r\n\r\n")
        assert read_all(sock) == b""


def test_stalled_handshake_is_closed_and_blocks_nobody(tls: TLSServer) -> None:
    stalled = [socket.create_connection((TLS_HOST, tls.tls_port), timeout=10)
               for _ in range(4)]
    started = time.monotonic()
    # A handshake sent half-way (the record header only) stalls just the same.
    stalled[0].sendall(b"\x16\x03\x01\x02\x00")
    try:
        # Others are served meanwhile, over TLS and plain.
        with tls.connect() as sock:
            sock.sendall(request(sock, "/", keep_alive=False))
            assert read_all(sock).startswith(b"HTTP/1.1 200 OK")
        assert time.monotonic() - started < HEADER_TIMEOUT
        for sock in stalled:
            assert read_all(sock) == b""  # closed by the server
        elapsed = time.monotonic() - started
        assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + 3.0
    finally:
        for sock in stalled:
            sock.close()


def test_handshake_failures_are_logged_at_info(tls: TLSServer) -> None:
    context = tls.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("AES128-SHA")
    with pytest.raises(ssl.SSLError):
        tls.connect(context=context).close()
    wait_for(lambda: "TLS: handshake failed" in tls.server.log("error.log"))
    line = next(line for line in tls.server.log("error.log").splitlines()
                if "TLS: handshake failed" in line)
    # Rate-bounded per reason and worker: the line may be an earlier test's failure.
    assert ":info]" in line and "[client 127.0.0.1:" in line


# ------------------------------------------------------------------ command-line tools


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_cacert(tls: TLSServer) -> None:
    result = subprocess.run(
        ["curl", "-sS", "--cacert", str(tls.ca_file), "--resolve",
         f"localhost:{tls.tls_port}:{TLS_HOST}", "-o", "/dev/null", "-w",
         "%{http_code} %{http_version}", f"https://localhost:{tls.tls_port}/"],
        capture_output=True, text=True, timeout=30)
    assert result.stdout == "200 1.1", result.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client(tls: TLSServer) -> None:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{TLS_HOST}:{tls.tls_port}", "-servername",
         "localhost", "-CAfile", str(tls.ca_file), "-alpn", "http/1.1", "-tls1_3"],
        input="", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout + result.stderr
    assert "ALPN protocol: http/1.1" in result.stdout
    assert "TLSv1.3" in result.stdout
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{TLS_HOST}:{tls.tls_port}", "-tls1_1"],
        input="", capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


# ------------------------------------------------------------------ configtest


@pytest.fixture
def cold(tmp_path: Path) -> tuple[Server, trustme.CA, Path]:
    """A server root with TLS settings, not started."""
    ca = trustme.CA()
    root = make_root(tmp_path)
    return Server(root, write_config(root, tls_settings(tmp_path, ca))), ca, tmp_path


def test_addresses_are_listed_with_their_ssl_mark(cold: tuple[Server, trustme.CA, Path]
                                                 ) -> None:
    """configtest, start, status (text and JSON) and the error log's start line list a TLS
    listener as the file writes it: `127.0.0.2:PORT ssl`."""
    server = cold[0]
    configtest = server.ctl("configtest").stdout
    assert f"listen 127.0.0.1:0, {TLS_HOST}:0 ssl;" in configtest, configtest
    try:
        started = server.start().stdout
        plain, secure = ports_of(started)
        listed = f"127.0.0.1:{plain}, {TLS_HOST}:{secure} ssl"
        assert f"listening on {listed}\n" in started, started
        assert f"listening on {listed}\n" in server.ctl("status").stdout
        assert server.status()["listen"] == [f"127.0.0.1:{plain}", f"{TLS_HOST}:{secure} ssl"]
        assert f"listening on {listed}" in server.log("error.log")
    finally:
        server.cleanup()


def test_a_session_ticket_resumes_on_another_worker(tmp_path: Path) -> None:
    """The workers of a generation share their contexts, made before fork, and so one
    ticket key: a ticket resumes whichever worker takes the client's next connection. Each
    worker holds one connection at most, so while one is held the other takes the next."""
    ca, ca_file = throwaway_ca(tmp_path)
    settings = tls_settings(tmp_path, ca)
    settings["workers"]["max_connections"] = "1"
    with running_tls(make_root(tmp_path), settings, ca, ca_file) as tls:
        context = tls.context()

        def connect(session: ssl.SSLSession | None) -> ssl.SSLSocket:
            raw = socket.create_connection((TLS_HOST, tls.tls_port), timeout=10)
            return context.wrap_socket(raw, server_hostname="localhost", session=session)

        def pid_of(sock: ssl.SSLSocket, keep_alive: bool) -> int:
            sock.sendall(request(sock, "/plain/pid", keep_alive))
            if keep_alive:
                return int(sock.recv(4096).partition(b"\r\n\r\n")[2])
            return int(read_all(sock).partition(b"\r\n\r\n")[2])

        resumed: list[tuple[int, int, bool]] = []
        for _ in range(3):
            with connect(None) as first:  # held open: its worker takes no other connection
                issuer = pid_of(first, keep_alive=True)
                session = first.session  # its tickets came with the answer
                with connect(session) as other:
                    resumed.append((issuer, pid_of(other, keep_alive=False),
                                    other.session_reused))
        assert all(issuer != pid and reused for issuer, pid, reused in resumed), resumed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: [server] user and a root-only key")
def test_a_key_only_root_can_read_serves_with_a_user_and_reloads() -> None:
    """certbot leaves privkey.pem readable by root alone: the master reads it before fork,
    so workers running as [server] user serve with it, and a reload reads it again."""
    base = Path(tempfile.mkdtemp(prefix="prefork-tls-user-"))
    try:
        base.chmod(0o755)
        ca, ca_file = throwaway_ca(base)
        settings = tls_settings(base, ca)
        del settings["app:plain"]
        settings["server"]["user"] = "nobody"
        (base / "main.key").chmod(0o600)
        with running_tls(make_root(base), settings, ca, ca_file) as tls:

            def fetch() -> bytes:
                with tls.connect() as sock:
                    sock.sendall(request(sock, "/", keep_alive=False))
                    return read_all(sock)
            assert fetch().startswith(b"HTTP/1.1 200 ")
            tls.server.ctl("reload")
            assert fetch().startswith(b"HTTP/1.1 200 ")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_generation_keeps_its_shared_contexts_through_failed_reloads(
        cold: tuple[Server, trustme.CA, Path]) -> None:
    """The contexts made before fork stay while their generation runs (a respawned worker
    gets them), however many reloads come and fail meanwhile; a retired one's go."""
    from prefork.config.settings import load_config
    from prefork.serve.service import ServedSite

    server, _ca, _directory = cold
    site = ServedSite()
    serving = load_config(server.config)
    site.before_fork(serving, [])
    for _ in range(5):  # reloads whose generation never got going: alive is the old one
        site.before_fork(load_config(server.config), [serving])
    kept = [made_for for made_for, contexts in site.shared_tls if contexts is not None]
    assert any(made_for is serving for made_for in kept)
    assert len(site.shared_tls) == 2  # the serving generation's, and the newest attempt's
    newer = load_config(server.config)
    site.before_fork(newer, [newer])  # the old generation retired
    assert [made_for for made_for, _ in site.shared_tls] == [newer]


def test_configtest_with_a_wrong_key_names_the_key(cold: tuple[Server, trustme.CA, Path]
                                                     ) -> None:
    server, ca, directory = cold
    _chain, other_key = issue(ca, directory, "other", "other.test")
    text = server.config.read_text().replace(str(directory / "main.key"), str(other_key))
    server.config.write_text(text)
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1
    line = text.splitlines().index(f"certificate_key = {other_key}") + 1
    assert f"{server.config.resolve()}:{line}: tls.certificate_key:" in result.stderr
    assert "is not the key of the certificate" in result.stderr


def test_configtest_names_a_missing_file(cold: tuple[Server, trustme.CA, Path]) -> None:
    server, _ca, directory = cold
    text = server.config.read_text().replace(str(directory / "alt.pem"), "/nonexistent.pem")
    server.config.write_text(text)
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1
    assert "tls:alt.certificate: /nonexistent.pem: not found" in result.stderr


def test_tls_listener_without_tls_section_is_an_error(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    server = Server(root, write_config(root, {"server": {"listen": "127.0.0.1:0 ssl"}}))
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1
    assert "server.listen:" in result.stderr and "no [tls] section" in result.stderr


def test_an_expiring_certificate_warns(cold: tuple[Server, trustme.CA, Path]) -> None:
    server, ca, directory = cold
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)
    issue(ca, directory, "main", "localhost", TLS_HOST, not_after=soon)
    result = server.ctl("configtest")
    assert "warning: [tls] certificate" in result.stderr and "expires on" in result.stderr
    assert "in 2 days" in result.stderr or "in 3 days" in result.stderr


# ------------------------------------------------------------------ reload


def serial_seen(port: int, ca_file: Path) -> int:
    """The serial number of the certificate a new connection is offered."""
    context = ssl.create_default_context(cafile=str(ca_file))
    raw = socket.create_connection((TLS_HOST, port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        return int(sock.getpeercert()["serialNumber"], 16)


def test_reload_picks_up_a_renewed_certificate(cold: tuple[Server, trustme.CA, Path]
                                               ) -> None:
    server, ca, directory = cold
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    _plain, port = ports_of(server.start().stdout)
    try:
        before = serial_seen(port, ca_file)
        held = socket.create_connection((TLS_HOST, port), timeout=10)
        old = ssl.create_default_context(cafile=str(ca_file)).wrap_socket(
            held, server_hostname="localhost")
        issue(ca, directory, "main", "localhost", TLS_HOST)  # the renewal
        server.ctl("reload")
        assert serial_seen(port, ca_file) != before
        old.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert read_all(old).startswith(b"HTTP/1.1 200 OK")  # the old one finishes
        old.close()
        # A broken renewal: the reload fails and the old generation keeps serving.
        (directory / "main.key").write_text("not a key\n")
        result = server.ctl("reload", check=False)
        assert result.returncode == 1 and "tls.certificate_key" in result.stderr
        assert serial_seen(port, ca_file) != before
    finally:
        server.cleanup()


def test_an_encrypted_key_with_its_password_file(cold: tuple[Server, trustme.CA, Path]
                                                 ) -> None:
    from cryptography.hazmat.primitives import serialization

    server, _ca, directory = cold
    key_path = directory / "main.key"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    result = server.ctl("configtest", check=False)  # no password given
    assert result.returncode == 1 and "tls.certificate_key: cannot decrypt" in result.stderr
    (directory / "password").write_text("wrong\n")
    text = server.config.read_text().replace(
        f"certificate_key = {key_path}",
        f"certificate_key = {key_path}\nkey_password_file = {directory / 'password'}")
    server.config.write_text(text)
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1 and "tls.key_password_file: cannot decrypt" in result.stderr
    (directory / "password").write_text("s3cret\n")
    server.ctl("configtest")


def test_a_send_during_a_stalled_handshake_waits_for_the_client_to_write() -> None:
    """A 408 sent while the handshake still waits for the client's bytes must wait for the
    socket to be readable (inverted), not writable: writable is always true, which would
    make the loop spin until the write timeout."""
    from prefork.log import ErrorLog
    from prefork.serve.tls import TLSServer, TLSTransport
    from prefork.serve.tls_context import TLSContexts

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        transport = TLSTransport(ours, TLSServer(TLSContexts(context), ErrorLog(None)),
                                 ("127.0.0.1", 40000))
        theirs.sendall(b"\x16\x03\x01\x00\x40")  # a handshake record begins, then stalls
        with pytest.raises(BlockingIOError):
            transport.recv(65536)
        assert transport.inverted is False  # a read waiting to read: plain readiness
        with pytest.raises(BlockingIOError):
            transport.send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        assert transport.inverted is True  # a write waiting for the client to write


def test_goaccess_reads_the_lines_of_applications_and_tls(tls: TLSServer,
                                                          tmp_path: Path) -> None:
    """GoAccess --log-format=COMBINED parses every access-log line this module's server
    wrote: static and application answers (streamed, a 500, a file) over plain HTTP and
    TLS, beside the refused handshakes and plain-to-TLS 400s the tests above caused."""
    if shutil.which("goaccess") is None:
        pytest.skip("goaccess is not installed (Debian: apt-get install goaccess)")
    for path in ("/plain/environ", "/plain/stream", "/plain/fail-before", "/plain/file",
                 "/plain/no-such-route", "/sub/"):
        for conn in (tls.https(), http.client.HTTPConnection("127.0.0.1", tls.plain_port,
                                                             timeout=10)):
            conn.request("GET", path, headers={"Host": "localhost"})
            conn.getresponse().read()
            conn.close()
    log = tls.server.root / "var" / "log" / "access.log"
    lines = wait_for(lambda: len(text := [line for line in log.read_text().splitlines()
                                          if "/plain/" in line or "/sub/" in line]) >= 12
                     and text)
    assert isinstance(lines, list)
    report, invalid = tmp_path / "report.json", tmp_path / "invalid.log"
    subprocess.run(["goaccess", str(log), "--log-format=COMBINED", "--no-global-config",
                    "-o", str(report), f"--invalid-requests={invalid}"], check=True,
                   capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    general = json.loads(report.read_text())["general"]
    assert general["total_requests"] == len(log.read_text().splitlines())
    assert general["failed_requests"] == 0, invalid.read_text()
