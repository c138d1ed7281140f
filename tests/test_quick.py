"""The quick path (prefork/serve/quick.py) answers exactly as the full path would.

In-process: one Connection with the quick path and one without, each over a real socket
pair, get the same requests (a list of edge cases and hypothesis-generated heads); their
responses and access-log lines must match byte for byte, Date and multipart boundaries
aside. The log lines carry the Combined format and the fields a browser or a proxy adds
(%{Name}i), so a quick answer is logged with its own request's fields. The fields that send
a request the full way come from the handlers' declarations (tests/test_fields.py holds
those to the code). Against a live server: a cached answer never outlives the file it came
from, and requests that must not take the quick path do not.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.config.settings import COMBINED_FORMAT, Config, load_config
from prefork.http.message import EVERY_FIELD
from prefork.http.parser import MAX_EMPTY_LINES, READS_FIELDS, Limits
from prefork.log import AccessLog, ErrorLog, compile_access_format
from prefork.scoreboard import THREAD_SLOT, ThreadSlot
from prefork.serve.connection import Action, Connection, ServerContext
from prefork.serve.quick import _FIELD_RE, QuickHit, QuickPath
from prefork.serve.transport import PlainTransport
from prefork.site.router import Router
from prefork.site.static import StaticFiles

from .conftest import Server, make_root, read_all, wait_for, write_config

LOCAL = ("127.0.0.1", 8080)
CLIENT = ("127.0.0.1", 40000)
_DATE = re.compile(rb"Date: [^\r]*\r\n")
_BOUNDARY = re.compile(rb"[0-9a-f]{32}")
_LOG_TIME = re.compile(r"\[[^\]]*\]")
_LOG_BOUNDARY = re.compile(r"boundary=[0-9a-f]{32}")


# What a proxy or a browser adds, which no code making a static answer reads: the quick
# path repeats answers whatever they say, and the log must still show each request's own.
PROXY_FORMAT = ('"%{X-Forwarded-For}i" "%{Forwarded}i" "%{X-Forwarded-Proto}i" '
                '"%{Accept-Encoding}i" "%{Cookie}i" "%{Content-Type}o" %{Content-Length}o '
                "%m %U %q %H %u %b %>s")


class BothFormats(AccessLog):
    """Each line: the Combined format (by its own fast renderer), then PROXY_FORMAT."""

    def __init__(self, path: str) -> None:
        super().__init__(path, COMBINED_FORMAT)
        combined, proxy = self.render, compile_access_format(PROXY_FORMAT)
        self.render = lambda record: f"{combined(record)} | {proxy(record)}"


class Side:
    """A worker's serving context, with or without the quick path, and its access log."""

    def __init__(self, config: Config, log_path: Path, quick: bool) -> None:
        router = Router(config)
        limits = Limits(200, 8, 200)  # small, so the limit checks are exercised too
        self.log_path = log_path
        self.quick = QuickPath(router, limits) if quick else None
        self.hits = 0
        if self.quick is not None:
            answer = self.quick.answer

            def counting(data: bytes, local: tuple[str, int]) -> QuickHit | None:
                hit = answer(data, local)
                self.hits += hit is not None
                return hit

            self.quick.answer = counting  # type: ignore[method-assign]
        self.ctx = ServerContext(router, BothFormats(str(log_path)),
                                 ErrorLog(None, "warn"), limits, 5, 3, 10, 10, 10, 0, False,
                                 quick=self.quick)
        self.slot = ThreadSlot(mmap.mmap(-1, THREAD_SLOT), 0, 1)

    def exchange(self, data: bytes) -> bytes:
        """Send `data` on a new connection and return what the server wrote back."""
        server_end, client_end = socket.socketpair()
        with client_end:
            server_end.setblocking(False)
            conn = Connection(PlainTransport(server_end), CLIENT, LOCAL, self.ctx, self.slot)
            client_end.sendall(data)
            action = conn.on_readable()
            if action is not Action.CLOSE:
                conn.close()
            return read_all(client_end)

    def log_lines(self) -> list[str]:
        return [_LOG_BOUNDARY.sub("B", _LOG_TIME.sub("[]", line))
                for line in self.log_path.read_text().splitlines()]


def normalise(response: bytes) -> bytes:
    return _BOUNDARY.sub(b"B", _DATE.sub(b"Date: D\r\n", response))


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    base = tmp_path_factory.mktemp("quick")
    root = make_root(base)
    config = load_config(write_config(root, {"static": {"download_extensions": ".bin"}}))
    yield Side(config, base / "quick.log", True), Side(config, base / "full.log", False)


def compare(sides: tuple[Side, Side], request: bytes) -> list[bytes]:
    """Send `request` twice (the first may teach the quick path) to both sides; the
    answers must be equal. Returns them."""
    quick, full = sides
    logged = [len(side.log_lines()) for side in sides]
    answers = [normalise(side.exchange(request)) for side in (quick, full, quick, full)]
    assert answers[0] == answers[1] and answers[2] == answers[3], request
    assert quick.log_lines()[logged[0]:] == full.log_lines()[logged[1]:], request
    return answers


ELIGIBLE = [
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nhost: LOCALHOST:8080\r\nUser-Agent: x/1\r\nAccept: */*\r\n"
    b"Referer: http://localhost/\r\nConnection: Keep-Alive\r\n\r\n",
    b"HEAD /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    b"GET /sub/ HTTP/1.1\r\nHost: localhost \t\r\nCache-Control:no-cache\r\n\r\n",
    b"GET /about.html?v=3&x=%41 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /about.html HTTP/1.0\r\n\r\n",
    b"GET /about.html HTTP/1.0\r\nConnection: keep-alive\r\nHost: localhost\r\n\r\n",
    b"HEAD /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # Runs of white space inside and after a value (OWS is stripped, inner spaces kept).
    b"GET /about.html?ows HTTP/1.1\r\nHost: localhost\r\nUser-Agent: a" + b" \t" * 30
    + b"b \t \r\nAccept:" + b" " * 30 + b"\r\n\r\n",
    # Fields no code making a static answer reads: they are only logged.
    b"GET /about.html?proxied HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 192.0.2.1\r\n"
    b"Forwarded: for=192.0.2.1;proto=https\r\nX-Forwarded-Proto: https\r\n"
    b"Accept-Encoding: gzip, br\r\nCookie: a=b\r\nX-Other: 1\r\n\r\n",
]

FULL_PATH_ONLY = [
    b"GET /about.html HTTP/1.1\r\n\r\n",  # no Host: 400
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: evil.example\r\n\r\n",  # 403
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: *\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-3,6-9\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nX: a\r\n \tfolded\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nAccept : x\r\n\r\n",
    b"GET /about.html HTTP/1.1\nHost: localhost\r\n\r\n",
    b"\r\nGET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: caf\xc3\xa9\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n"
    b"F: 6\r\nG: 7\r\nH: 8\r\n\r\n",  # nine fields, over the limit of 8: 431
    b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",  # 414
    b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /.secret HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /escape.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-99\r\n\r\n",
    b"GET /server-status?auto HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /uploads/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"POST /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /sub HTTP/1.1\r\nHost: localhost\r\n\r\n",  # 301
    b"GET /about.html HTTP/1.2\r\nHost: localhost\r\n\r\n",
]


def test_eligible_requests_are_answered_quickly_and_identically(sides: tuple[Side, Side]
                                                                 ) -> None:
    for request in ELIGIBLE:
        before = sides[0].hits
        answers = compare(sides, request)
        assert sides[0].hits == before + 1, request  # the second time, from the quick path
        assert answers[0].startswith(b"HTTP/1.1 200 OK\r\n"), answers[0][:100]


def test_other_requests_take_the_full_path(sides: tuple[Side, Side]) -> None:
    for request in ELIGIBLE:  # teach the quick path every answer first
        compare(sides, request)
    before = sides[0].hits
    for request in FULL_PATH_ONLY:
        compare(sides, request)
    assert sides[0].hits == before


_NAME = st.sampled_from(["Host", "host", "HOST", "User-Agent", "Accept", "Connection",
                         "If-None-Match", "Range", "Cookie", "X-Other", "Content-Length",
                         "Transfer-Encoding", "Expect", "accept-encoding", "Accept-Encoding",
                         "X-Forwarded-For", "Forwarded", "X-Forwarded-Proto",
                         "x-forwarded-for"])
_VALUE = st.sampled_from(["localhost", "localhost:8080", "127.0.0.1", "evil", "", " x ",
                          "close", "keep-alive", "Keep-Alive", "*", "bytes=0-1", "0", "1",
                          "chunked", "100-continue", "a\tb", "v\x7f", "\xe9", "gzip, br",
                          "identity;q=0", "192.0.2.1, 10.0.0.1", "for=192.0.2.1;proto=https",
                          'for="[2001:db8::1]"', "https"])
_TARGET = st.sampled_from(["/", "/about.html", "/about.html?q=1", "/sub/", "/sub",
                           "/missing", "/contact.html", "/.secret", "/%41bout.html",
                           "//about.html"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "HEAD", "get", "OPTIONS"]), target=_TARGET,
       version=st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2"]),
       fields=st.lists(st.tuples(_NAME, _VALUE), max_size=5),
       separator=st.sampled_from([": ", ":", ":\t", " : "]))
def test_generated_requests_get_the_full_paths_answer(
        sides: tuple[Side, Side], method: str, target: str, version: str,
        fields: list[tuple[str, str]], separator: str) -> None:
    lines = [f"{method} {target} {version}"] + [f"{n}{separator}{v}" for n, v in fields]
    compare(sides, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


@given(st.text(alphabet=" \tab~!:", max_size=40).map(str.encode))
def test_a_field_value_is_read_without_its_surrounding_white_space(value: bytes) -> None:
    assert _FIELD_RE.findall(b"X-Name:" + value + b"\r\n") == [(b"X-Name", value.strip(b" \t"))]


def read_response(sock: socket.socket, has_body: bool = True) -> bytes:
    """One whole response (head and Content-Length body) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
    while has_body and len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_empty_lines_before_each_quick_request_are_counted_per_request(
        sides: tuple[Side, Side]) -> None:
    """RFC 9112 §2.2: a client may send empty lines before a request-line; the limit on them
    (MAX_EMPTY_LINES) applies to each request, whichever path answered the one before."""
    request = b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    for side in sides:
        ctx = dataclasses.replace(side.ctx, max_keepalive_requests=0)  # no cap on requests
        server_end, client_end = socket.socketpair()
        with server_end, client_end:
            server_end.setblocking(False)
            conn = Connection(PlainTransport(server_end), CLIENT, LOCAL, ctx, side.slot)
            for _ in range(MAX_EMPTY_LINES + 5):  # each read holds one request or one CRLF
                client_end.sendall(request)
                assert conn.on_readable() is Action.WANT_READ
                assert read_response(client_end).startswith(b"HTTP/1.1 200 OK\r\n")
                client_end.sendall(b"\r\n")
                assert conn.on_readable() is Action.WANT_READ
            conn.close()


# ----------------------------------------------------------------------------- file changes

def fresh_sides(base: Path, settings: dict[str, dict[str, str]] | None = None
                ) -> tuple[Side, Side]:
    root = make_root(base)
    config = load_config(write_config(root, settings or {}))
    return Side(config, base / "quick.log", True), Side(config, base / "full.log", False)


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


def test_a_symlink_swapped_to_a_new_release_is_served_at_once(tmp_path: Path) -> None:
    sides = fresh_sides(tmp_path)
    docs = tmp_path / "srv" / "htdocs"
    for release in ("v1", "v2"):
        (docs / "releases" / release).mkdir(parents=True)
        (docs / "releases" / release / "app.js").write_text(f"release {release}\n")
    (docs / "current").symlink_to("releases/v1")
    request = b"GET /current/app.js HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert body_of(compare(sides, request)[2]) == b"release v1\n"
    (docs / "next").symlink_to("releases/v2")
    os.replace(docs / "next", docs / "current")  # ln -sfn, as deploy tools do
    answers = compare(sides, request)
    assert body_of(answers[0]) == body_of(answers[2]) == b"release v2\n"


def test_a_path_is_resolved_again_once_its_resolution_is_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("prefork.site.static.RESOLVE_SECONDS", 0.2)
    sides = fresh_sides(tmp_path)
    docs = tmp_path / "srv" / "htdocs"
    request = b"GET /sub/page.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert compare(sides, request)[2].startswith(b"HTTP/1.1 200 ")
    # The same files, now reached through a symbolic link out of the document root.
    os.rename(docs / "sub", tmp_path / "moved-out")
    (docs / "sub").symlink_to(tmp_path / "moved-out")
    time.sleep(0.3)
    answers = compare(sides, request)
    assert answers[0].startswith(b"HTTP/1.1 403 ") and answers[2].startswith(b"HTTP/1.1 403 ")


def test_an_answer_is_not_repeated_once_the_file_cache_let_it_go(tmp_path: Path) -> None:
    sides = fresh_sides(tmp_path)
    quick = sides[0]
    static = quick.ctx.router.static
    static.cache_size = 2
    request = b"GET /sub/page.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    compare(sides, request)
    for name in ("about.html", "contact.html"):  # evict it with 304s (nothing remembered)
        quick.exchange(b"GET /%s HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: *\r\n\r\n"
                       % name.encode())
    assert "/sub/page.html" not in static.cache
    before = quick.hits
    quick.exchange(request)
    assert quick.hits == before  # the full path answered (and the cache holds it again)
    assert "/sub/page.html" in static.cache


def test_a_switched_document_root_is_served_at_once(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    for release in ("v1", "v2"):
        (root / "releases" / release).mkdir(parents=True)
        (root / "releases" / release / "app.js").write_text(f"release {release}\n")
    (root / "current").symlink_to("releases/v1")
    config = load_config(write_config(root, {"server": {"document_root": "current"}}))
    sides = (Side(config, tmp_path / "q.log", True), Side(config, tmp_path / "f.log", False))
    request = b"GET /app.js HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert body_of(compare(sides, request)[2]) == b"release v1\n"
    (root / "next").symlink_to("releases/v2")
    os.replace(root / "next", root / "current")
    assert body_of(compare(sides, request)[0]) == b"release v2\n"


def test_a_root_switched_during_a_look_up_is_never_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ln -sfn` may land between resolving the root and resolving the file: the file is
    then checked against the root it was found under, not against the other release."""
    for release in ("v1", "v2"):
        (tmp_path / "releases" / release).mkdir(parents=True)
        (tmp_path / "releases" / release / "app.js").write_text(f"release {release}\n")
    (tmp_path / "current").symlink_to("releases/v1")
    static = StaticFiles(str(tmp_path / "current"), ("index.html",), ())
    realpath = os.path.realpath
    switched: list[str] = []

    def switching_realpath(path: str) -> str:
        result = realpath(path)
        if not switched:  # right after the first resolution, the release changes
            switched.append(result)
            (tmp_path / "next").symlink_to("releases/v2")
            os.replace(tmp_path / "next", tmp_path / "current")
        return result

    monkeypatch.setattr(os.path, "realpath", switching_realpath)
    located = static.locate("/app.js")
    assert switched and located.root == realpath(tmp_path / "releases" / "v1")
    assert located.real == os.path.join(located.root, "app.js")


def test_index_files_follow_the_same_rules(tmp_path: Path) -> None:
    sides = fresh_sides(tmp_path, {"static": {"index_files": "index.html public/main.html"}})
    docs = tmp_path / "srv" / "htdocs"
    (docs / "app" / "public").mkdir(parents=True)
    (docs / "app" / "public" / "main.html").write_text("main\n")
    before = sides[0].hits
    assert body_of(compare(sides, b"GET /app/ HTTP/1.1\r\nHost: localhost\r\n\r\n")[2]) \
        == b"main\n"
    assert sides[0].hits == before + 1  # an index under a subdirectory is remembered too
    (docs / "out").mkdir()
    (docs / "out" / "index.html").symlink_to(tmp_path / "outside.txt")
    answers = compare(sides, b"GET /out/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answers[0].startswith(b"HTTP/1.1 403 ")
    for path in (b"/about.html/", b"/about.html/.", b"/about.html/%2e", b"/about.html/x/.."):
        answers = compare(sides, b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path)
        assert answers[0].startswith(b"HTTP/1.1 404 "), path  # a file is not a directory
    answers = compare(sides, b"GET /sub/. HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert body_of(answers[0]).endswith(b"sub index\n")  # "/sub/." is "/sub/"
    # As Apache's mod_dir: an index name that is refused or not a file is passed over.
    (docs / "both" / "public").mkdir(parents=True)
    (docs / "both" / "public" / "main.html").write_text("second choice\n")
    (docs / "both" / "index.html").mkdir()
    (docs / "linked").mkdir()
    (docs / "linked" / "public").symlink_to(docs / "both" / "public")
    (docs / "linked" / "index.html").symlink_to(tmp_path / "outside.txt")
    for path in (b"/both/", b"/linked/"):
        answers = compare(sides, b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path)
        assert body_of(answers[0]) == b"second choice\n", path


def test_a_quick_answer_the_socket_takes_in_parts_is_finished_like_any(tmp_path: Path
                                                                       ) -> None:
    """A send() that takes part of the answer: the connection writes the rest as it writes
    any response, and logs and counts it once, as the full path does."""
    sides = fresh_sides(tmp_path)
    (tmp_path / "srv" / "htdocs" / "large.txt").write_bytes(b"x" * 30000)  # cached whole
    request = b"GET /large.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"

    def exchange_in_parts(side: Side) -> tuple[bytes, int]:
        server_end, client_end = socket.socketpair()
        with client_end:
            server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            server_end.setblocking(False)
            conn = Connection(PlainTransport(server_end), CLIENT, LOCAL, side.ctx, side.slot)
            client_end.sendall(request)
            action, writes = conn.on_readable(), 0
            received = b""
            while action is Action.WANT_WRITE:
                received += client_end.recv(65536)
                action, writes = conn.on_writable(), writes + 1
            assert action is Action.WANT_READ  # kept alive, ready for the next request
            conn.close()
            return normalise(received + read_all(client_end)), writes

    quick, full = sides
    for _ in range(2):  # the second time from the quick path
        logged = [len(side.log_lines()) for side in sides]
        (answer, writes), (expected, _writes) = exchange_in_parts(quick), exchange_in_parts(full)
        assert writes > 0 and answer == expected and answer.endswith(b"x" * 30000)
        assert quick.log_lines()[logged[0]:] == full.log_lines()[logged[1]:]
        assert len(quick.log_lines()) == logged[0] + 1
    assert quick.hits == 1
    assert " 200 30000 " in quick.log_lines()[-1]


def test_the_fields_that_send_a_request_the_full_way_are_the_declared_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is listed by hand: the parser's, the router's and the static handler's
    declarations decide. A static handler that starts to read Accept-Encoding (and declares
    it, as tests/test_fields.py makes it) is never shadowed by a remembered answer."""
    quick = fresh_sides(tmp_path / "before")[0]
    assert quick.quick is not None
    assert quick.quick.forcing == READS_FIELDS | Router.reads_fields | StaticFiles.reads_fields
    monkeypatch.setattr(StaticFiles, "reads_fields",
                        StaticFiles.reads_fields | {"accept-encoding"})
    sides = fresh_sides(tmp_path / "after")
    plain = b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    negotiated = plain[:-2] + b"Accept-Encoding: gzip\r\n\r\n"
    compare(sides, plain)
    assert sides[0].hits == 1
    compare(sides, negotiated)
    assert sides[0].hits == 1  # the full path answered both times


def test_an_answer_is_remembered_only_from_a_request_the_quick_path_could_take(
        tmp_path: Path) -> None:
    """A 200 to a request with a field its handler reads (a validator that did not match)
    may depend on that field: it is not remembered, even for requests without it."""
    sides = fresh_sides(tmp_path)
    plain = b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    conditional = plain[:-2] + b'If-None-Match: "other"\r\n\r\n'
    assert compare(sides, conditional)[2].startswith(b"HTTP/1.1 200 ")
    assert sides[0].exchange(plain).startswith(b"HTTP/1.1 200 ")
    assert sides[0].hits == 0
    assert sides[0].exchange(plain).startswith(b"HTTP/1.1 200 ")
    assert sides[0].hits == 1


def test_a_handler_reading_every_field_leaves_only_host_and_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StaticFiles, "reads_fields", EVERY_FIELD)
    sides = fresh_sides(tmp_path)
    bare = b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
    compare(sides, bare)
    assert sides[0].hits == 1
    compare(sides, bare[:-2] + b"User-Agent: x\r\n\r\n")
    assert sides[0].hits == 1


def test_uploads_directory_may_be_the_document_root(tmp_path: Path) -> None:
    sides = fresh_sides(tmp_path, {"uploads": {"directory": "htdocs"}})
    answers = compare(sides, b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answers[0].startswith(b"HTTP/1.1 200 ")


# ----------------------------------------------------------------------------- live server

def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request on a keep-alive socket and read its whole response."""
    sock.sendall(request)
    return read_response(sock, has_body=not request.startswith(b"HEAD"))


def test_a_changed_or_removed_file_is_never_served_from_memory(shared_server: Server) -> None:
    page = shared_server.root / "htdocs" / "quick-change.html"
    page.write_bytes(b"first version\n")
    request = b"GET /quick-change.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with shared_server.socket() as sock:
        for _ in range(3):  # served, remembered, then repeated
            assert exchange(sock, request).endswith(b"\r\n\r\nfirst version\n")
        page.write_bytes(b"other version\n")  # the same size, at once
        assert exchange(sock, request).endswith(b"\r\n\r\nother version\n")
        os.rename(page, page.with_suffix(".old"))
        assert exchange(sock, request).startswith(b"HTTP/1.1 404 ")


def test_validators_and_ranges_still_apply_after_a_file_is_remembered(
        shared_server: Server) -> None:
    request = b"GET /contact.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with shared_server.socket() as sock:
        first = exchange(sock, request)
        exchange(sock, request)
        etag = re.search(rb"ETag: ([^\r]+)", first)[1]  # type: ignore[index]
        conditional = request[:-2] + b"If-None-Match: " + etag + b"\r\n\r\n"
        sock.sendall(conditional)
        assert sock.recv(65536).startswith(b"HTTP/1.1 304 ")
        ranged = exchange(sock, request[:-2] + b"Range: bytes=0-4\r\n\r\n")
        assert ranged.startswith(b"HTTP/1.1 206 ") and ranged.endswith(b"\r\n\r\n<!DOC")


def test_pipelined_close_and_http10_requests(shared_server: Server) -> None:
    request = b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    closing = request[:-2] + b"Connection: close\r\n\r\n"
    old = b"GET /about.html HTTP/1.0\r\nHost: localhost\r\n\r\n"
    for _ in range(2):  # the second time from memory (each worker learns on its own)
        both = shared_server.raw(request + closing)
        assert both.count(b"HTTP/1.1 200 OK\r\n") == 2
        assert both.count(b"Connection: close") == 1
        for single in (closing, old):
            answer = shared_server.raw(single)  # raw() reads until the server closes
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in answer


def test_quick_answers_are_logged_and_counted(shared_server: Server) -> None:
    def served() -> int:
        return shared_server.status()["totals"]["requests"]

    before = served()
    request = (b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: quick-probe\r\n"
               b"Referer: http://localhost/q\r\n\r\n")
    with shared_server.socket() as sock:
        for _ in range(6):
            assert exchange(sock, request).startswith(b"HTTP/1.1 200 OK\r\n")
    line = re.compile(r'"GET /index\.html HTTP/1\.1" 200 \d+ "http://localhost/q" '
                      r'"quick-probe"')
    wait_for(lambda: len(line.findall(shared_server.log("access.log"))) == 6)
    wait_for(lambda: served() >= before + 6)  # the scoreboard is published once a second


def test_the_quick_path_can_be_switched_off(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Its answers are the full path's byte for byte, so only an instrumented worker can
    tell which path answered (tests/quick_probe.py). On, the repeats come from the quick
    path (so the probe sees it); off, no worker even builds one, and the answers are the
    same."""
    import sys  # here, so that this test's change stays within it

    request = b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    seen: dict[str, list[str]] = {}
    for setting in ("on", "off"):
        server = server_factory({"static": {"quick_path": setting},
                                 "workers": {"processes": "1"}}, start=False)
        probe = server.root / "var" / "quick-probe"
        server.launcher = [sys.executable, str(Path(__file__).with_name("quick_probe.py"))]
        server.env = {"PREFORK_QUICK_PROBE": str(probe)}
        server.start()
        with server.socket() as sock:
            answers = [normalise(exchange(sock, request)) for _ in range(3)]
        assert answers[0] == answers[1] == answers[2]
        assert answers[0].startswith(b"HTTP/1.1 200 OK\r\n")
        if setting == "on":  # the first answer is remembered, the next two repeated
            wait_for(lambda probe=probe: probe.read_text().count("answered") == 2)
        seen[setting] = probe.read_text().split() if probe.exists() else []
    assert seen["on"] == ["made", "answered", "answered"], seen
    assert seen["off"] == [], seen
