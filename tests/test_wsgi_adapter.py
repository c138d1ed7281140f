"""The WSGI adapter alone (PEP 3333): environ, input, start_response, results, errors.

These tests call the handler in-process with a parsed request and a body reader over bytes:
the adapter is pure translation between a Request/Response and the WSGI calling convention.
Every application is wrapped in wsgiref.validate.validator, whose assertions fail the test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest

from prefork.errors import ApplicationAborted, InternalServerError
from prefork.http.message import FileBody, Headers, Request
from prefork.serve.output import release
from prefork.site.apps import FileWrapper, StreamedBody, WSGIHandler, load_application

# wsgiref.validate warns on misuse, and asserts when an iterable is dropped unclosed
pytestmark = [pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning"),
              pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")]


class BytesBody:
    """A body reader over bytes that records how it was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if size < 0:
            size = len(self.data)
        piece, self.data = self.data[:size], self.data[size:]
        return piece


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, BaseException | None]] = []

    def log(self, level: str, message: str, client: tuple[str, int] | None = None,
            exc: BaseException | None = None, appendix: str = "") -> None:
        self.lines.append((level, message, exc))


def request(target: str = "/app/x", method: str = "GET", headers: list[tuple[str, str]] | None
            = None, body: bytes = b"", version: str = "HTTP/1.1",
            local: tuple[str, int] = ("127.0.0.1", 8080)) -> Request:
    path, _, query = target.partition("?")
    fields = Headers(headers if headers is not None else [("Host", "example.org:8080")])
    return Request(method, target, path, query, version, fields, ("192.0.2.7", 51234),
                   has_body=bool(body), content_length=len(body) if body else None,
                   body=BytesBody(body), local=local)


def handler(app: Any, mount: str = "/app", log: Log | None = None) -> WSGIHandler:
    return WSGIHandler(validator(app), mount, log or Log(), multithread=True,
                       multiprocess=True)


def body_of(response: Any) -> bytes:
    body = response.body
    if isinstance(body, bytes):
        return body
    try:
        return b"".join(body)
    finally:
        body.close()


def echo_environ(keys: Iterable[str]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr({k: environ.get(k) for k in keys}).encode()]
    return app


def test_environ_splits_the_mount_and_decodes_the_path() -> None:
    keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "SERVER_NAME",
            "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD")
    response = handler(echo_environ(keys)).serve(
        request("/app/a%2Fb/caf%C3%A9?x=1&y"))
    env = eval(body_of(response))  # repr of a dict of str: a literal
    assert env == {
        "SCRIPT_NAME": "/app", "PATH_INFO": "/a/b/caf\xc3\xa9", "QUERY_STRING": "x=1&y",
        "REQUEST_URI": "/app/a%2Fb/caf%C3%A9?x=1&y", "SERVER_NAME": "example.org",
        "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_PORT": "51234", "REQUEST_METHOD": "GET"}
    # PEP 3333's latin-1 tunnel: the application recovers the UTF-8 it was sent
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/a/b/café"


def test_environ_at_the_root_mount_and_the_mount_itself() -> None:
    keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING")
    root = eval(body_of(handler(echo_environ(keys), mount="/").serve(request("/x"))))
    assert root == {"SCRIPT_NAME": "", "PATH_INFO": "/x", "QUERY_STRING": ""}
    bare = eval(body_of(handler(echo_environ(keys)).serve(request("/app"))))
    assert bare == {"SCRIPT_NAME": "/app", "PATH_INFO": "", "QUERY_STRING": ""}


def test_fields_are_combined_and_underscored_names_dropped() -> None:
    keys = ("HTTP_ACCEPT", "HTTP_COOKIE", "HTTP_X_FORWARDED_FOR", "CONTENT_TYPE",
            "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "SERVER_NAME", "SERVER_PORT")
    fields = [("Host", "[::1]"), ("Accept", "text/html"), ("accept", "*/*"),
              ("Cookie", "a=1"), ("Cookie", "b=2"), ("X_Forwarded_For", "10.0.0.1"),
              ("Content-Type", "application/json"), ("Content-Length", "2")]
    env = eval(body_of(handler(echo_environ(keys)).serve(
        request("/app/", "POST", fields, b"{}", local=("::1", 8443)))))
    assert env == {"HTTP_ACCEPT": "text/html, */*", "HTTP_COOKIE": "a=1; b=2",
                   "HTTP_X_FORWARDED_FOR": None, "CONTENT_TYPE": "application/json",
                   "CONTENT_LENGTH": "2", "HTTP_CONTENT_TYPE": None,
                   "SERVER_NAME": "::1", "SERVER_PORT": "8443"}


def test_input_supports_read_readline_readlines_and_iteration() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        seen["read"] = stream.read(3)
        seen["line"] = stream.readline()
        seen["short"] = stream.readline(2)
        seen["lines"] = stream.readlines()
        seen["after"] = stream.read(10)
        start_response("204 No Content", [])
        return []

    body = b"abcdef\nxyz\nline3\nlast"
    body_of(handler(app).serve(request("/app/up", "POST", body=body)))
    assert seen == {"read": b"abc", "line": b"def\n", "short": b"xy",
                    "lines": [b"z\n", b"line3\n", b"last"], "after": b""}

    def iterate(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        lines = list(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"|".join(lines)]

    assert body_of(handler(iterate).serve(request("/app", "POST", body=b"1\n2\n3"))) == \
        b"1\n|2\n|3"


def test_an_app_that_does_not_read_never_touches_the_body() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("413 Content Too Large", [("Content-Type", "text/plain")])
        return [b"no"]

    req = request("/app", "POST", body=b"x" * 100)
    body_of(handler(app).serve(req))
    assert req.body.reads == 0  # type: ignore[attr-defined]  # so no 100 Continue was sent


class Closing:
    """A result iterable that records close()."""

    def __init__(self, pieces: list[bytes], fail_at: int | None = None) -> None:
        self.pieces = pieces
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, piece in enumerate(self.pieces):
            if index == self.fail_at:
                raise RuntimeError("boom in the middle")
            yield piece

    def close(self) -> None:
        self.closed += 1


def test_a_list_becomes_one_body_and_a_generator_streams_with_close_called_once() -> None:
    def listing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello ", b"world"]

    response = handler(listing).serve(request())
    assert (response.status, body_of(response)) == (200, b"hello world")
    unwrapped = WSGIHandler(listing, "/app", Log(), multithread=False, multiprocess=False)
    assert unwrapped.serve(request()).body == b"hello world"  # a list: one bytes body

    result = Closing([b"", b"one", b"two"])

    def streaming(environ: dict[str, Any], start_response: Any) -> Closing:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    response = handler(streaming).serve(request())
    assert isinstance(response.body, StreamedBody)
    assert body_of(response) == b"onetwo"
    assert result.closed == 1


def test_start_response_may_come_late_from_inside_the_generator() -> None:
    def late(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        yield b"made"

    response = handler(late).serve(request())
    assert body_of(response) == b"made"
    assert response.status == 201 and response.reason == "Created"


def test_an_exception_before_the_first_byte_is_a_500_with_the_traceback() -> None:
    log = Log()
    result = Closing([b"x"], fail_at=0)

    def failing(environ: dict[str, Any], start_response: Any) -> Closing:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    with pytest.raises(InternalServerError):
        handler(failing, log=log).serve(request())
    assert result.closed == 1
    level, message, exc = log.lines[-1]
    assert level == "error" and "GET /app/x" in message and isinstance(exc, RuntimeError)


def test_an_exception_after_the_first_byte_aborts_and_closes() -> None:
    log = Log()
    result = Closing([b"first", b"second"], fail_at=1)

    def failing(environ: dict[str, Any], start_response: Any) -> Closing:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    response = handler(failing, log=log).serve(request())
    body = response.body
    assert next(body) == b"first"  # type: ignore[call-overload]
    with pytest.raises(ApplicationAborted):
        next(body)  # type: ignore[call-overload]
    assert result.closed == 1
    assert "after the response began" in log.lines[-1][1]


def test_exc_info_replaces_the_status_before_anything_was_sent() -> None:
    def recovering(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("found out late")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"sorry"]

    response = handler(recovering).serve(request())
    assert (response.status, body_of(response)) == (503, b"sorry")


@pytest.mark.parametrize("status, headers", [
    ("200 OK", [("Connection", "close")]),
    ("200 OK", [("Transfer-Encoding", "chunked")]),
    ("200 OK", [("X-Bad", "a\r\nInjected: 1")]),
    ("OK", []),
    ("2000 OK", []),
])
def test_what_the_app_may_not_send_is_a_500(status: str, headers: list[tuple[str, str]]
                                            ) -> None:
    def bad(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"x"]

    log = Log()
    raw = WSGIHandler(bad, "/app", log, multithread=False, multiprocess=False)
    with pytest.raises(InternalServerError):
        raw.serve(request())
    assert log.lines and log.lines[-1][0] == "error"


def test_write_callable_output_comes_first() -> None:
    def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]

    assert body_of(handler(legacy).serve(request())) == b"written returned"


def test_file_wrapper_on_a_regular_file_is_sent_with_sendfile(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "blob").write_bytes(data)

    def download(environ: dict[str, Any], start_response: Any) -> Any:
        handle = open(tmp_path / "blob", "rb")  # noqa: SIM115  (closed by the wrapper)
        handle.seek(10)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](handle, 8192)

    raw = WSGIHandler(download, "/app", Log(), multithread=False, multiprocess=False)
    response = raw.serve(request())
    body = response.body
    assert isinstance(body, FileBody)
    try:
        assert (body.offset, body.length) == (10, len(data) - 10)
        assert os.pread(body.fd, body.length, body.offset) == data[10:]
    finally:
        release(body)


def test_file_wrapper_on_a_stream_is_iterated() -> None:
    import io

    def download(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return FileWrapper(io.BytesIO(b"x" * 20_000), 4096)

    assert body_of(handler(download).serve(request())) == b"x" * 20_000


def test_wsgi_errors_become_error_log_lines() -> None:
    log = Log()

    def noisy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.errors"].write("first line\nsecond ")
        environ["wsgi.errors"].write("half\n")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    body_of(handler(noisy, log=log).serve(request()))
    assert [m for _, m, _ in log.lines] == ["application: first line",
                                            "application: second half"]


def test_load_application_names_module_and_callable(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mysite_wsgi.py").write_text(
        "class Factory:\n    @staticmethod\n    def app(environ, start_response):\n"
        "        return []\napplication = Factory.app\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert callable(load_application("mysite_wsgi"))
    assert callable(load_application("mysite_wsgi:Factory.app"))
    with pytest.raises(AttributeError):
        load_application("mysite_wsgi:missing")
    with pytest.raises(ImportError):
        load_application("no_such_module_here:app")


def test_an_iterator_that_gave_its_whole_declared_length_becomes_one_prepared_body() -> None:
    """A framework's usual answer (one piece from an iterator, Content-Length declared) is
    taken whole: one bytes body and a prepared head, the iterable closed once. A piece past
    the declared length, or a failure after it, still streams and is refused as before."""
    def answer(result: Closing, length: str, status: str = "200 OK") -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> Closing:
            start_response(status, [("Content-Type", "text/plain"),
                                    ("Content-Length", length)])
            return result
        return app

    whole = Closing([b"", b"hello", b""])
    response = handler(answer(whole, "5")).serve(request())
    assert (response.body, whole.closed) == (b"hello", 1)
    assert response.raw_headers == b"Content-Type: text/plain\r\nContent-Length: 5\r\n"

    longer = Closing([b"hello", b"", b"more"])
    response = handler(answer(longer, "5")).serve(request())
    assert isinstance(response.body, StreamedBody) and body_of(response) == b"hellomore"
    assert longer.closed == 1  # framing cuts it at 5 bytes and closes the connection

    failing = Closing([b"hello", b""], fail_at=1)
    response = handler(answer(failing, "5")).serve(request())
    with pytest.raises(ApplicationAborted):
        body_of(response)
    assert failing.closed == 1

    custom = Closing([b"hello"])  # a reason of its own: the general path keeps it
    response = handler(answer(custom, "5", "200 Fine")).serve(request())
    assert (response.body, response.reason, response.raw_headers) == (b"hello", "Fine", b"")


def test_a_prepared_head_gets_the_length_and_checked_fields_are_checked_each_time() -> None:
    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Thing", " spaced")])
        return [b"made"]

    bare = WSGIHandler(plain, "/app", Log(), multithread=True, multiprocess=True)
    for _ in range(2):  # the second time from the memo: the same answer
        response = bare.serve(request())
        assert response.raw_headers == (b"Content-Type: text/plain\r\nX-Thing: spaced\r\n"
                                        b"Content-Length: 4\r\n")
        assert response.headers == [("Content-Type", "text/plain"), ("X-Thing", "spaced"),
                                    ("Content-Length", "4")]
    assert bare.serve(request(method="HEAD")).raw_headers == b""

    def wrong(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "9")])
        return [b"short"]

    response = WSGIHandler(wrong, "/app", Log(), multithread=True, multiprocess=True
                           ).serve(request())
    assert response.raw_headers == b""  # left to framing, which refuses the wrong length

    def hop(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Connection", "close")])
        return [b""]

    for _ in range(2):  # refused every time, never remembered as good
        with pytest.raises(InternalServerError):
            WSGIHandler(hop, "/app", Log(), multithread=True, multiprocess=True
                        ).serve(request())
