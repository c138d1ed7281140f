"""Framing (issue 12): a response is framed without touching the handler's data, a declared
Content-Length is enforced on every body, and a response that cannot be framed becomes a
500 instead of an exception in the loop. Pure tests of framing.frame(), then a Connection
driven over a socketpair with a stub router (no server process needed)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prefork.config.settings import COMBINED_FORMAT
from prefork.errors import ResponseLengthError
from prefork.http.framing import frame
from prefork.http.message import Request, Response
from prefork.http.parser import Limits
from prefork.log import AccessLog, ErrorLog
from prefork.serve.connection import Action, Connection, ServerContext
from prefork.serve.output import SendQueue
from prefork.serve.transport import PlainTransport

from .replies import parse_replies

# ------------------------------------------------------------------ frame(), pure


def test_frame_leaves_the_handlers_headers_alone() -> None:
    headers = [("Content-Type", "text/plain")]
    response = Response(200, headers, b"hello")
    first = frame(response, "GET", "HTTP/1.0", False).items[0]
    second = frame(response, "GET", "HTTP/1.0", False).items[0]
    assert headers == [("Content-Type", "text/plain")] and response.headers is headers
    assert first.count(b"Date: ") == 1 and second.count(b"Date: ") == 1
    assert second.count(b"Server: ") == 1 and second.count(b"Content-Length: 5") == 1
    streamed = [("Content-Type", "text/plain")]
    frame(Response(200, streamed, iter([b"x"])), "GET", "HTTP/1.1", True)
    assert streamed == [("Content-Type", "text/plain")]


def drain(stream: Iterator[bytes]) -> tuple[bytes, Exception | None]:
    out = b""
    try:
        for piece in stream:
            out += piece
    except ResponseLengthError as exc:
        return out, exc
    return out, None


def test_a_declared_length_is_enforced_on_a_streamed_body() -> None:
    exact = frame(Response(200, [("Content-Length", "5")], iter([b"he", b"llo"])),
                  "GET", "HTTP/1.1", True)
    assert not exact.chunked and drain(exact.stream) == (b"hello", None)

    longer = frame(Response(200, [("Content-Length", "5")], iter([b"hel", b"lo, world"])),
                   "GET", "HTTP/1.1", True)
    data, error = drain(longer.stream)
    assert data == b"hello" and error is not None and "longer" in str(error)

    closed = []

    def shorter_body() -> Iterator[bytes]:
        try:
            yield b"hel"
        finally:
            closed.append(True)

    shorter = frame(Response(200, [("Content-Length", "5")], shorter_body()),
                    "GET", "HTTP/1.1", True)
    data, error = drain(shorter.stream)
    assert data == b"hel" and error is not None and "short" in str(error)
    assert closed == [True]  # the handler's iterator is closed, whatever happened


@pytest.mark.parametrize("declared", ["4", "6", "abc", "-5", "5, 6"])
def test_a_declared_length_that_disagrees_with_a_known_body_is_refused(declared: str) -> None:
    with pytest.raises(ValueError):
        frame(Response(200, [("Content-Length", declared)], b"hello"), "GET", "HTTP/1.1", True)


def test_a_head_answer_may_declare_what_get_would_send() -> None:
    out = frame(Response(200, [("Content-Length", "1000")], b""), "HEAD", "HTTP/1.1", True)
    assert out.items == [out.items[0]] and b"Content-Length: 1000\r\n" in out.items[0]


def test_a_head_answer_releases_a_streamed_body() -> None:
    closed = []

    def body() -> Iterator[bytes]:
        try:
            yield b"x"
        finally:
            closed.append(True)

    stream = body()
    next(stream)
    out = frame(Response(200, [], stream), "HEAD", "HTTP/1.1", True)
    assert out.stream is None and out.unsent is stream and closed == []
    SendQueue().load(out)  # what the connection does with every framed response
    assert closed == [True]


def test_a_handler_may_not_frame_the_body_itself() -> None:
    with pytest.raises(ValueError):
        frame(Response(200, [("Transfer-Encoding", "chunked")], iter([b"x"])), "GET",
              "HTTP/1.1", True)


# ------------------------------------------------------------------ a Connection, live


class _Slot:
    def begin_request(self, *args: object) -> None:
        pass

    def end_request(self, *args: object) -> None:
        pass


class _Router:
    def __init__(self, answer: Callable[[Request], Response]) -> None:
        self.answer = answer

    def pool_for(self, method: str, path: str, scheme: str = "http") -> str | None:
        return None  # every request on the loop thread

    def handle(self, request: Request, local: tuple[str, int]) -> Response:
        return self.answer(request)


def serve(tmp_path: Path, answer: Callable[[Request], Response], data: bytes) -> bytes:
    """Drive one Connection over a socketpair through `data`; return all it wrote."""
    ctx = ServerContext(_Router(answer), AccessLog(str(tmp_path / "access.log"),
                                                   COMBINED_FORMAT),
                        ErrorLog(str(tmp_path / "error.log")), Limits(), 5.0, 100, 5.0,
                        5.0, 5.0, 0, False)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    conn = Connection(PlainTransport(ours), ("127.0.0.1", 40000), ("127.0.0.1", 80), ctx, _Slot())  # type: ignore[arg-type]
    theirs.sendall(data)
    theirs.shutdown(socket.SHUT_WR)
    received = b""
    action = conn.on_readable()
    for _ in range(100):
        while True:
            try:
                chunk = theirs.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not chunk:
                theirs.close()
                return received
            received += chunk
        if action is Action.WANT_WRITE:
            action = conn.on_writable()
        elif action is Action.WANT_READ:
            action = conn.on_readable()
        elif action is Action.LINGER:
            action = conn.on_linger_readable()
    theirs.close()
    raise AssertionError(f"the connection never closed: {action}, {received[:200]!r}")


TWO_REQUESTS = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")


def test_a_streamed_body_longer_than_declared_stops_there_and_closes(tmp_path: Path) -> None:
    def answer(request: Request) -> Response:
        return Response(200, [("Content-Length", "5")], iter([b"abc", b"defgh"]))

    raw = serve(tmp_path, answer, TWO_REQUESTS)
    replies = parse_replies(raw)  # exactly one whole response, nothing behind it
    assert [(r.status, r.body) for r in replies] == [(200, b"abcde")]
    log = (tmp_path / "error.log").read_text()
    assert "[core:error]" in log and "Content-Length" in log and "GET /a" in log


def test_a_streamed_body_shorter_than_declared_closes(tmp_path: Path) -> None:
    def answer(request: Request) -> Response:
        return Response(200, [("Content-Length", "10")], iter([b"abc"]))

    raw = serve(tmp_path, answer, TWO_REQUESTS)
    assert raw.endswith(b"\r\n\r\nabc") and raw.count(b"HTTP/1.1 ") == 1
    assert "short" in (tmp_path / "error.log").read_text()


def test_a_response_that_cannot_be_framed_is_a_500_not_a_dead_loop(tmp_path: Path) -> None:
    """A field outside latin-1 (as a bad realm made): a 500, logged; the next request on
    the connection is not answered (it closes), and nothing escapes to the loop."""
    def answer(request: Request) -> Response:
        return Response(401, [("WWW-Authenticate", 'Basic realm="\u2603"')], b"no")

    raw = serve(tmp_path, answer, TWO_REQUESTS)
    replies = parse_replies(raw)
    assert [r.status for r in replies] == [500]
    log = (tmp_path / "error.log").read_text()
    assert "[core:error]" in log and "401" in log
    assert "500" in (tmp_path / "access.log").read_text()
