"""Static serving, Host checks, path safety, keep-alive and pipelining against a real server."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from prefork.site.static import StaticFiles

from .conftest import Server, read_all, wait_for

HTDOCS = Path(__file__).resolve().parent.parent / "htdocs"


def head_of(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of Content-Length-framed responses."""
    out = []
    while raw:
        status, headers, rest = head_of(raw)
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:length]))
        raw = rest[length:]
    return out


def one_response(sock: socket.socket) -> bytes:
    """Read exactly one Content-Length-framed response, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed inside a response head: {data!r}"
        data += chunk
    _status, headers, body = head_of(data)
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed inside a response body"
        body += chunk
    assert len(body) == int(headers["content-length"]), "more than one response"
    return data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" + body


def test_index_with_all_the_headers(shared_server: Server) -> None:
    response, body = shared_server.get("/")
    assert response.status == 200
    assert body == (HTDOCS / "index.html").read_bytes()
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert int(response.getheader("Content-Length")) == len(body)
    assert response.getheader("Server", "").startswith("prefork/")
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', response.getheader("ETag"))
    assert response.getheader("Last-Modified").endswith(" GMT")
    assert response.getheader("Date").endswith(" GMT")


def test_head_matches_get_without_body(shared_server: Server) -> None:
    get, _ = shared_server.get("/about.html")
    head, body = shared_server.get("/about.html", method="HEAD")
    assert head.status == 200 and body == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified"):
        assert head.getheader(name) == get.getheader(name)


@pytest.mark.parametrize(("path", "content_type"), [
    ("/logo.png", "image/png"), ("/photo.jpg", "image/jpeg"), ("/sample.txt", "text/plain"),
])
def test_binary_downloads_as_attachment(shared_server: Server, path: str,
                                        content_type: str) -> None:
    response, body = shared_server.get(path)
    assert response.status == 200
    assert body == (HTDOCS / path.lstrip("/")).read_bytes()
    assert response.getheader("Content-Type") == "application/octet-stream"
    name = path.lstrip("/")
    assert response.getheader("Content-Disposition") == f'attachment; filename="{name}"'


def test_large_file_is_complete(shared_server: Server) -> None:
    response, body = shared_server.get("/big.bin")
    assert response.status == 200
    assert body == (shared_server.root / "htdocs" / "big.bin").read_bytes()


def test_directory_redirect_and_index(shared_server: Server) -> None:
    response, _ = shared_server.get("/sub?x=1")
    assert response.status == 301 and response.getheader("Location") == "/sub/?x=1"
    response, body = shared_server.get("/sub/")
    assert response.status == 200 and b"sub index" in body
    response, _ = shared_server.get("/empty/")
    assert response.status == 403


def test_not_found_and_method_errors(shared_server: Server) -> None:
    response, body = shared_server.get("/missing.html")
    assert response.status == 404
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b"<h1>Not Found</h1>" in body
    response, _ = shared_server.get("/index.html", method="DELETE")
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD, OPTIONS"
    response, _ = shared_server.get("/index.html", method="BREW")
    assert response.status == 501


@pytest.mark.parametrize("target", [
    "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/sub/..%2f..%2fetc%2fpasswd",
    "/sub%5c..%5c..%5cetc%5cpasswd", "/index.html%00.txt", "/.secret", "/escape.txt",
    "/sub/../../outside.txt",
])
def test_traversal_is_refused(shared_server: Server, target: str) -> None:
    raw = shared_server.raw(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n"
                            f"Connection: close\r\n\r\n".encode())
    status, _, body = head_of(raw)
    assert status == 403, (target, raw[:200])
    assert b"root:" not in body and b"SECRET-OUTSIDE" not in body and b"symbolic" not in body


def test_dot_segments_inside_the_root_are_normalised(shared_server: Server) -> None:
    raw = shared_server.raw(b"GET /sub/../about.html HTTP/1.1\r\nHost: localhost\r\n"
                            b"Connection: close\r\n\r\n")
    assert head_of(raw)[0] == 200
    response, _ = shared_server.get("/inside-link.html")  # a symlink that stays inside
    assert response.status == 200


@pytest.mark.parametrize(("host", "status"), [
    (None, 400), ("evil.example", 403), ("localhost", 200), ("LOCALHOST", 200),
    ("127.0.0.1", 200), ("127.0.0.1:{port}", 200), ("localhost:1", 403),
])
def test_host_header_rules(shared_server: Server, host: str | None, status: int) -> None:
    header = "" if host is None else f"Host: {host.format(port=shared_server.port)}\r\n"
    raw = shared_server.raw(f"GET / HTTP/1.1\r\n{header}Connection: close\r\n\r\n".encode())
    assert head_of(raw)[0] == status


def test_http10_without_host_is_fine_and_closes(shared_server: Server) -> None:
    raw = shared_server.raw(b"GET /about.html HTTP/1.0\r\n\r\n")
    status, headers, _ = head_of(raw)
    assert status == 200 and headers["connection"] == "close"


def test_keep_alive_and_pipelining_in_order(shared_server: Server) -> None:
    with shared_server.socket() as sock:
        request = "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        sock.sendall("".join(request.format(p) for p in
                             ("/about.html", "/contact.html", "/missing", "/")).encode()
                     + b"GET /sub/page.html HTTP/1.1\r\nHost: localhost\r\n"
                       b"Connection: close\r\n\r\n")
        got = responses(read_all(sock))
    assert [s for s, _, _ in got] == [200, 200, 404, 200, 200]
    assert got[0][2] == (HTDOCS / "about.html").read_bytes()
    assert got[1][2] == (HTDOCS / "contact.html").read_bytes()
    assert got[3][2] == (HTDOCS / "index.html").read_bytes()
    assert got[4][1]["connection"] == "close" and b"page" in got[4][2]


def test_http10_keep_alive_is_honoured(shared_server: Server) -> None:
    with shared_server.socket() as sock:
        sock.sendall(b"GET /about.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        # The whole first response, then the second request: the connection outlived it.
        first = one_response(sock)
        sock.sendall(b"GET /about.html HTTP/1.0\r\n\r\n")
        got = responses(first + read_all(sock))
    assert [s for s, _, _ in got] == [200, 200]
    assert got[0][1]["connection"] == "keep-alive" and got[1][1]["connection"] == "close"


def test_conditional_and_range_requests(shared_server: Server) -> None:
    response, _ = shared_server.get("/about.html")
    etag, modified = response.getheader("ETag"), response.getheader("Last-Modified")
    response, body = shared_server.get("/about.html", headers={"If-None-Match": etag})
    assert response.status == 304 and body == b"" and response.getheader("ETag") == etag
    response, _ = shared_server.get("/about.html", headers={"If-Modified-Since": modified})
    assert response.status == 304
    response, _ = shared_server.get("/about.html", headers={"If-Match": '"nope"'})
    assert response.status == 412
    full = (HTDOCS / "about.html").read_bytes()
    response, body = shared_server.get("/about.html", headers={"Range": "bytes=0-9"})
    assert response.status == 206 and body == full[:10]
    assert response.getheader("Content-Range") == f"bytes 0-9/{len(full)}"
    response, body = shared_server.get("/about.html", headers={"Range": "bytes=-5"})
    assert response.status == 206 and body == full[-5:]
    response, _ = shared_server.get("/about.html", headers={"Range": f"bytes={len(full)}-"})
    assert response.status == 416
    assert response.getheader("Content-Range") == f"bytes */{len(full)}"
    response, body = shared_server.get("/about.html", headers={"Range": "bytes=0-1,5-6"})
    assert response.status == 206
    assert response.getheader("Content-Type").startswith("multipart/byteranges; boundary=")


def test_access_and_error_log_formats(shared_server: Server) -> None:
    shared_server.get("/contact.html", headers={"User-Agent": "probe/1.0",
                                                 "Referer": "http://localhost/"})
    shared_server.get("/definitely-missing")
    combined = re.compile(
        r'127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
        r'"GET /contact\.html HTTP/1\.1" 200 \d+ "http://localhost/" "probe/1\.0"')
    missing = re.compile(r'"GET /definitely-missing HTTP/1\.1" 404 \d+ "-" "Python-urllib|'
                         r'"GET /definitely-missing HTTP/1\.1" 404 \d+ "-" "-"')
    # The line is written just after the response is sent: wait for it, do not race it.
    wait_for(lambda: combined.search(shared_server.log("access.log")))
    wait_for(lambda: missing.search(shared_server.log("access.log")))
    error_line = re.compile(r"^\[\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2}\.\d{6} \d{4}\] "
                            r"\[core:(notice|info)\] \[pid \d+:tid \d+\] ", re.M)
    assert error_line.search(shared_server.log("error.log"))


def test_malformed_request_gets_400_and_server_keeps_serving(shared_server: Server) -> None:
    raw = shared_server.raw(b"GARBAGE\r\n\r\n")
    assert head_of(raw)[0] == 400
    response, _ = shared_server.get("/")
    assert response.status == 200


def test_options(shared_server: Server) -> None:
    raw = shared_server.raw(b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    status, headers, _ = head_of(raw)
    assert status == 204 and "GET" in headers["allow"]


def test_idle_keepalive_connection_is_closed_after_timeout(server_factory) -> None:
    server = server_factory({"http": {"keepalive_timeout": "1", "max_keepalive_requests": "3"}})
    with server.socket() as sock:
        sock.sendall(b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        rest = read_all(sock)  # the server closes the idle connection
        assert rest == b"" and 0.5 < time.monotonic() - started < 5
    with server.socket() as sock:  # max_keepalive_requests = 3: the third response closes
        sock.sendall(b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n" * 4)
        got = responses(read_all(sock))
    assert len(got) == 3 and got[2][1]["connection"] == "close"


def test_partial_head_times_out_with_408(server_factory) -> None:
    server = server_factory({"http": {"header_timeout": "1"}, "workers": {"processes": "1"}})
    with server.socket() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: local")
        raw = read_all(sock)
    assert head_of(raw)[0] == 408


def test_saturated_worker_answers_503(server_factory) -> None:
    server = server_factory({"workers": {"processes": "1", "threads": "1",
                                         "max_connections": "2"}})
    held = [server.socket(), server.socket()]
    try:
        for sock in held:  # make sure both were accepted (they hold the two places)
            sock.sendall(b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
            extra.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, headers, _ = head_of(read_all(extra))
        assert status == 503 and headers["retry-after"] == "1"
        wait_for(lambda: "worker pool saturated" in server.log("error.log"))
    finally:
        for sock in held:
            sock.close()
    response, _ = server.get("/")
    assert response.status == 200


def test_a_download_named_with_control_characters(shared_server: Server) -> None:
    """A field value cannot carry controls: the quoted name replaces them, the RFC 8187
    form keeps the real name (percent-encoded)."""
    (shared_server.root / "htdocs" / "a\nb\x01.txt").write_bytes(b"odd name\n")
    for _ in range(2):  # the full path, then the cached answer
        response, body = shared_server.get("/a%0Ab%01.txt")
        assert (response.status, body) == (200, b"odd name\n")
        assert response.getheader("Content-Disposition") == \
            "attachment; filename=\"a_b_.txt\"; filename*=UTF-8''a%0Ab%01.txt"


def test_no_descriptor_is_left_open_when_a_response_cannot_be_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "page.html").write_text("page\n")
    static = StaticFiles(str(tmp_path), ("index.html",), ())

    def failing(headers: list[tuple[str, str]]) -> bytes:
        raise ValueError("a field the head cannot carry")

    monkeypatch.setattr("prefork.site.static.serialize_fields", failing)
    named, real = static.locate("/page.html")[:2]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(ValueError):
            static._remember("/page.html", named, real, time.monotonic())
    assert len(os.listdir("/proc/self/fd")) == before
