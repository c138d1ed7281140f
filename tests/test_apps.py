"""WSGI applications hosted by real workers: Flask, Django and PEP 3333 edge cases
(tests/apps/), beside the static files, through real sockets."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KeepAliveLoad, Server, ServerFactory, running_server, wait_for

APPS = Path(__file__).resolve().parent / "apps"
pytest.importorskip("flask", reason="Flask is a test dependency: pip install -e '.[test]'")
pytest.importorskip("django", reason="Django is a test dependency: pip install -e '.[test]'")


def app_settings(base: Path) -> dict[str, dict[str, str]]:
    events = base / "events.log"
    blob = base / "blob.bin"
    blob.write_bytes(os.urandom(300_000))
    env = f"PLAIN_EVENTS={events} PLAIN_FILE={blob}"
    return {
        "workers": {"processes": "2"},
        "app:plain": {"mount": "/plain", "module": "plain:application", "path": str(APPS),
                      "threads": "4", "env": env},
        "app:raw": {"mount": "/raw", "module": "plain:unchecked", "path": str(APPS),
                    "threads": "2"},
        "app:flask": {"mount": "/flask", "module": "flask_app:app", "path": str(APPS)},
        "app:django": {"mount": "/django", "module": "djsite.wsgi:application",
                       "path": str(APPS), "env": "DJANGO_SETTINGS_MODULE=djsite.settings"},
    }


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("apps")
    with running_server(base, app_settings(base)) as server:
        yield server


def events(server: Server) -> list[str]:
    path = server.root.parent / "events.log"
    return path.read_text().splitlines() if path.exists() else []


def multipart(fields: dict[str, str], name: str, filename: str, content: bytes
              ) -> tuple[bytes, str]:
    boundary = "prefork-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def reply_body(reply: bytes) -> bytes:
    """The body of one raw HTTP/1.1 reply, framed by Content-Length or chunked."""
    head, _, rest = reply.partition(b"\r\n\r\n")
    if b"\r\ntransfer-encoding: chunked" not in head.lower():
        return rest
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, rest = body + rest[:size], rest[size + 2:]


def raw_exchange(server: Server, request: bytes, timeout: float = 10.0) -> bytes:
    """Send `request` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("prefix, script_key", [("/flask", "script_root"),
                                                ("/django", "script_name")])
def test_flask_and_django_json_form_stream_and_static_beside(apps: Server, prefix: str,
                                                             script_key: str) -> None:
    response, body = apps.get(f"{prefix}/api/items/7")
    assert response.status == 200 and response.getheader("Content-Type") == "application/json"
    data = json.loads(body)
    assert data["id"] == 7 and data[script_key] == prefix

    content = os.urandom(200_000)
    form, content_type = multipart({"name": "Ada"}, "file", "notes.bin", content)
    response, body = apps.get(f"{prefix}/form", "POST", {"Content-Type": content_type}, form)
    assert response.status == 200, body
    assert json.loads(body) == {"name": "Ada", "filename": "notes.bin", "size": len(content),
                                "sha256": hashlib.sha256(content).hexdigest()}

    response, body = apps.get(f"{prefix}/stream?n=3")
    assert response.status == 200 and body == b"piece 0\npiece 1\npiece 2\n"
    assert response.getheader("Transfer-Encoding") == "chunked"  # no length: chunked

    response, body = apps.get("/about.html")  # the document root beside the applications
    assert response.status == 200 and b"<html" in body.lower()


def test_flask_json_post_and_keep_alive(apps: Server) -> None:
    conn = apps.connection()
    try:
        for number in range(3):
            payload = json.dumps({"n": number}).encode()
            conn.request("POST", "/flask/api/echo", payload,
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["received"] == {"n": number}
            assert not response.will_close  # one connection for all three
    finally:
        conn.close()


def test_environ_of_a_mounted_application(apps: Server) -> None:
    conn = apps.connection()
    conn.putrequest("GET", "/plain/environ/a%2Fb/caf%C3%A9?", skip_accept_encoding=True)
    conn.putheader("Accept", "text/html")
    conn.putheader("Accept", "*/*")
    conn.putheader("X_Spoofed", "1")
    conn.endheaders()
    response = conn.getresponse()
    env = json.loads(response.read())
    conn.close()
    assert response.status == 200
    assert env["SCRIPT_NAME"] == "/plain"
    assert env["PATH_INFO"] == "/environ/a/b/caf\u00c3\u00a9"  # latin-1 tunnelled UTF-8
    assert env["QUERY_STRING"] == ""
    assert env["HTTP_ACCEPT"] == "text/html, */*"
    assert "HTTP_X_SPOOFED" not in env
    assert env["SERVER_PORT"] == str(apps.port) and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REQUEST_METHOD"] == "GET"
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is True  # threads = 4


def test_a_chunked_upload_is_streamed_to_the_application(apps: Server) -> None:
    content = os.urandom(3 << 20)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(content[i:i + 100_000]), content[i:i + 100_000])
                      for i in range(0, len(content), 100_000)) + b"0\r\n\r\n"
    head = (b"POST /plain/upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    reply = raw_exchange(apps, head + chunks)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert json.loads(reply_body(reply)) == {
        "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def test_100_continue_is_sent_only_when_the_application_reads(apps: Server) -> None:
    with socket.create_connection(("127.0.0.1", apps.port), timeout=10) as sock:
        sock.sendall(b"POST /plain/refuse HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 403 "), first  # no 100 before the refusal
    with socket.create_connection(("127.0.0.1", apps.port), timeout=10) as sock:
        sock.sendall(b"POST /plain/upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"size": 5' in reply


def test_head_calls_the_application_and_sends_no_body(apps: Server) -> None:
    reply = raw_exchange(apps, b"HEAD /plain/head HTTP/1.1\r\nHost: localhost\r\n"
                               b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\n")
    assert b"Content-Length: 5\r\n" in reply
    wait_for(lambda: "closed head" in events(apps))
    assert "called HEAD" in events(apps)


def test_an_exception_before_the_first_byte_is_a_500_and_the_worker_lives(apps: Server
                                                                          ) -> None:
    pids = sorted(apps.worker_pids())
    response, _ = apps.get("/plain/fail-before")
    assert response.status == 500
    log = wait_for(lambda: (text := apps.log("error.log")) and "before its first byte" in text
                   and text)
    assert "Traceback" in log and "GET /plain/fail-before" in log
    assert apps.get("/plain/environ")[0].status == 200
    assert sorted(apps.worker_pids()) == pids


def test_an_exception_after_the_first_byte_truncates_and_closes(apps: Server) -> None:
    reply = raw_exchange(apps, b"GET /plain/fail-after HTTP/1.1\r\nHost: localhost\r\n\r\n"
                               b"GET /plain/environ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"first piece" in reply
    assert not reply.endswith(b"0\r\n\r\n")  # no last chunk: the client sees it truncated
    assert reply.count(b"HTTP/1.1 ") == 1  # the pipelined request is never answered
    wait_for(lambda: "closed failing" in events(apps))


def test_a_body_shorter_than_its_content_length_closes_the_connection(apps: Server) -> None:
    reply = raw_exchange(apps, b"GET /plain/wrong-length HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 100\r\n" in reply
    assert reply.endswith(b"only twenty bytes!!\n")
    wait_for(lambda: "short" in apps.log("error.log"))


def test_a_hop_by_hop_field_from_the_application_is_a_500(apps: Server) -> None:
    response, _ = apps.get("/raw/hop-by-hop")
    assert response.status == 500


def test_file_wrapper_and_write_callable(apps: Server) -> None:
    response, body = apps.get("/plain/file")
    assert response.status == 200
    assert body == (apps.root.parent / "blob.bin").read_bytes()
    response, body = apps.get("/plain/write")
    assert response.status == 200 and body == b"written, then returned"


def test_a_client_gone_mid_download_closes_the_iterable_with_one_log_line(apps: Server
                                                                          ) -> None:
    with socket.create_connection(("127.0.0.1", apps.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /plain/slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    wait_for(lambda: "closed slow" in events(apps), timeout=30)
    lines = wait_for(lambda: [line for line in apps.log("access.log").splitlines()
                              if "GET /plain/slow " in line] or None)
    assert len(lines) == 1


def test_status_shows_an_application_request_with_its_mount(apps: Server) -> None:
    """httpdctl status (and /server-status) name what serves a busy thread's request."""
    with socket.create_connection(("127.0.0.1", apps.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /plain/slow?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")

        def busy_threads() -> list[dict[str, object]] | None:
            threads = [thread for worker in apps.status()["workers"]
                       for thread in worker["threads"]
                       if thread["request"] == "GET /plain/slow?x=1 HTTP/1.1"]
            return threads if threads and all(t["mount"] for t in threads) else None
        busy = wait_for(busy_threads)
        assert [thread["mount"] for thread in busy] == ["app:plain /plain"]
        text = apps.ctl("status").stdout
        assert "[app:plain /plain] GET /plain/slow?x=1 HTTP/1.1" in text, text
    wait_for(lambda: "closed slow" in events(apps), timeout=30)


def test_a_client_gone_mid_upload_is_logged_once_and_serving_goes_on(apps: Server) -> None:
    with socket.create_connection(("127.0.0.1", apps.port), timeout=10) as sock:
        sock.sendall(b"POST /plain/upload HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 10000000\r\n\r\n" + b"z" * 1_000_000)
    lines = wait_for(lambda: [line for line in apps.log("access.log").splitlines()
                              if "POST /plain/upload " in line and '" 499 ' in line] or None)
    assert len(lines) == 1
    # The client's leaving is not the application's fault: no "application failed" line.
    assert "application failed (POST /plain/upload" not in apps.log("error.log")
    assert apps.get("/plain/environ")[0].status == 200


# ---------------------------------------------------------------------- reloads


def version_app(base: Path, version: str) -> Path:
    """A copy of tests/apps/plain.py answering `version` at /app/version."""
    directory = base / "code"
    directory.mkdir(exist_ok=True)
    text = (APPS / "plain.py").read_text().replace('VERSION = "one"', f'VERSION = "{version}"')
    (directory / "versioned.py").write_text(text)
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)
    return directory


def test_reload_imports_new_code_and_a_broken_reload_keeps_the_old(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    code = version_app(tmp_path, "one")
    server = server_factory({"workers": {"processes": "1"},
                             "app": {"mount": "/app", "module": "versioned:application",
                                     "path": str(code)}})
    assert server.get("/app/version")[1] == b"one"
    version_app(tmp_path, "two")
    assert server.ctl("reload").returncode == 0
    assert server.get("/app/version")[1] == b"two"

    (code / "versioned.py").write_text("def application(environ, start_response:\n")
    result = server.ctl("reload", check=False)
    assert result.returncode == 1 and "SyntaxError" in (result.stdout + result.stderr
                                                        + server.log("error.log"))
    assert server.get("/app/version")[1] == b"two"  # the old generation keeps serving


@pytest.mark.slow
def test_twenty_reloads_with_code_changes_under_load_lose_no_request(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    code = version_app(tmp_path, "v0")
    server = server_factory({"workers": {"processes": "2"},
                             "app": {"mount": "/app", "module": "versioned:application",
                                     "path": str(code), "threads": "4"}})
    with KeepAliveLoad(lambda: http.client.HTTPConnection("127.0.0.1", server.port,
                                                          timeout=10),
                       path="/app/version", good=lambda body: body.startswith(b"v"),
                       per_connection=20) as load:
        for number in range(1, 21):
            version_app(tmp_path, f"v{number}")
            outcome = server.reload_by_signal()
            assert outcome["ok"], outcome
            fresh = server.get("/app/version")[1]
            assert fresh == f"v{number}".encode()  # the new code answers once reloaded
    assert not load.failures, load.failures[:5]
    assert load.ok > 100


def peak_rss(pid: int) -> int:
    """The process's resident-memory high-water mark (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_streaming_both_ways_keeps_the_worker_memory_flat(apps: Server) -> None:
    """256 MiB up (read by the application in pieces) and 256 MiB down (a generator): the
    workers' peak memory grows by far less than either body."""
    size = 256 << 20
    pids = apps.worker_pids()
    before = {pid: peak_rss(pid) for pid in pids}
    piece = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", apps.port), timeout=60) as sock:
        sock.sendall(b"POST /plain/upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(piece)):
            sock.sendall(piece)
            digest.update(piece)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert json.loads(reply_body(reply)) == {"size": size, "sha256": digest.hexdigest()}
    received = 0
    with socket.create_connection(("127.0.0.1", apps.port), timeout=60) as sock:
        sock.sendall(b"GET /plain/stream?%d HTTP/1.1\r\nHost: localhost\r\n"
                     b"Connection: close\r\n\r\n" % (size // 65536))
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    assert received > size  # the body, plus the head and the chunk framing
    growth = max(peak_rss(pid) - before[pid] for pid in pids)
    assert growth < 48 << 20, f"a worker's peak memory grew by {growth >> 20} MiB"


def test_a_reader_too_slow_holds_an_application_thread_only_up_to_the_write_timeout(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    settings = app_settings(tmp_path)
    settings = {"workers": {"processes": "1"}, "http": {"timeout": "1"},
                "app:plain": settings["app:plain"]}
    server = server_factory(settings)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /plain/slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        began = time.monotonic()
        # We read nothing: once the socket buffers are full, the write waits at most
        # [http] timeout (1 s) without progress, then the response is abandoned.
        log = tmp_path / "events.log"
        wait_for(lambda: log.exists() and "closed slow" in log.read_text(), timeout=20)
        assert time.monotonic() - began < 15
    assert wait_for(lambda: '" 200 ' in server.log("access.log"))


def read_replies(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """`count` replies framed by Content-Length, read off one connection: (head, body)."""
    data, replies = b"", []
    while len(replies) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end]
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            end = head_end + 4 + length
            if len(data) >= end:
                replies.append((head, data[head_end + 4:end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(replies)} of {count} replies"
        data += chunk
    return replies


def test_a_pipelined_burst_is_answered_completely_and_in_order(apps: Server) -> None:
    """A pool thread that finds the next request buffered with the one it answered serves it
    itself (pool.CONSECUTIVE_LIMIT in a row), and hands a request for another pool or for
    the loop back: every answer comes, in order, whatever serves it."""
    targets = [f"/plain/environ?n={n}" for n in range(20)]
    targets[7] = "/sub/page.html"  # static: the loop's
    targets[12] = "/raw/environ?n=12"  # another application's pool
    burst = b"".join(f"GET {t} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for t in targets)
    with socket.create_connection(("127.0.0.1", apps.port), timeout=10) as sock:
        sock.sendall(burst)
        replies = read_replies(sock, len(targets))
        sock.sendall(b"GET /plain/environ?n=last HTTP/1.1\r\nHost: localhost\r\n\r\n")
        last = read_replies(sock, 1)  # the connection lives on after the burst
    for target, (head, body) in zip(targets, replies, strict=True):
        assert head.startswith(b"HTTP/1.1 200 "), (target, head)
        if target.endswith(".html"):
            assert b"page" in body
        else:
            assert json.loads(body)["QUERY_STRING"] == target.partition("?")[2], target
    assert json.loads(last[0][1])["QUERY_STRING"] == "n=last"
