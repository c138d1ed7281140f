"""prefork.http.parser: the request corpus, parser edge behaviour, and the response helpers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prefork.errors import (
    BadRequest,
    ClientDisconnected,
    ContentTooLarge,
    HeaderFieldsTooLarge,
    HTTPError,
    URITooLong,
)
from prefork.http import parser as http11
from prefork.http.parser import (
    LAST_CHUNK,
    NEED_DATA,
    REASONS,
    BodyChunk,
    EndOfMessage,
    Limits,
    RequestHead,
    RequestParser,
    encode_chunk,
    format_response_head,
    http_date,
    parse_http_date,
)
from tests.corpus_cases import CORPUS, check_expectations, load_cases, run, splits

CASES = load_cases()
GET = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"


# ----------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_corpus_case(case) -> None:
    """Whole, per line, per byte and in 20 random splits: one outcome, the expected one."""
    ways = splits(case.raw, case.name)
    expected = run(ways.pop("whole"), case.limits, case.eof)
    check_expectations(case, expected)
    for how, chunks in ways.items():
        assert run(chunks, case.limits, case.eof) == expected, how


def test_corpus_size_and_layout() -> None:
    valid = [c for c in CASES if c.name.startswith("valid/")]
    invalid = [c for c in CASES if c.name.startswith("invalid/")]
    assert len(valid) + len(invalid) == len(CASES) >= 170
    assert all(c.expect in ("ok", "incomplete") for c in valid)
    assert all(c.expect not in ("ok", "incomplete") for c in invalid)
    assert (CORPUS / "README.md").exists()
    statuses = {c.expect for c in invalid}
    assert {"400", "413", "414", "417", "431", "501", "505", "disconnect"} <= statuses


# ----------------------------------------------------------------------------- parser edges


def events(parser: RequestParser) -> list[object]:
    """Drain events until NEED_DATA (which is not included)."""
    out = []
    while (event := parser.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def test_pipelined_requests_wait_for_start_next_request() -> None:
    parser = RequestParser()
    second_request = GET.replace(b"/index.html", b"/two")
    parser.feed(GET + second_request)
    head, end = parser.next_event(), parser.next_event()
    assert isinstance(head, RequestHead) and head.path == "/index.html"
    assert isinstance(end, EndOfMessage) and len(end.trailers) == 0
    assert parser.next_event() is NEED_DATA  # until the caller is ready
    assert parser.buffered == len(second_request) and not parser.idle
    parser.start_next_request()
    assert parser.request_line is None
    second = parser.next_event()
    assert isinstance(second, RequestHead) and second.path == "/two"
    assert parser.request_line == "GET /two HTTP/1.1"
    assert isinstance(parser.next_event(), EndOfMessage)
    parser.start_next_request()
    assert parser.idle and parser.buffered == 0 and parser.next_event() is NEED_DATA


def test_idle_buffered_eof_and_in_body() -> None:
    parser = RequestParser()
    assert parser.idle and parser.buffered == 0 and not parser.eof and not parser.in_body
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    assert not parser.idle and parser.buffered > 0
    head = parser.next_event()
    assert isinstance(head, RequestHead) and head.has_body and parser.in_body
    assert parser.next_event() == BodyChunk(b"ab")
    assert parser.buffered == 0 and not parser.idle and parser.next_event() is NEED_DATA
    with pytest.raises(RuntimeError):
        parser.start_next_request()  # the rest of the body would be read as a request
    parser.feed(b"cd")
    chunk, end = events(parser)
    assert chunk == BodyChunk(b"cd") and isinstance(end, EndOfMessage) and not len(end.trailers)
    assert not parser.in_body
    parser.start_next_request()
    assert parser.idle
    parser.feed_eof()
    assert parser.eof and parser.next_event() is NEED_DATA and parser.next_event() is NEED_DATA


def test_idle_eof_after_empty_lines_is_quiet() -> None:
    parser = RequestParser()
    parser.feed(b"\r\n\r\n")
    assert parser.next_event() is NEED_DATA and parser.idle
    parser.feed_eof()
    assert parser.next_event() is NEED_DATA


def test_eof_mid_head_and_mid_body_disconnect() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HT")
    assert parser.next_event() is NEED_DATA and not parser.idle
    parser.feed_eof()
    for _ in range(2):  # dead: the same error again
        with pytest.raises(ClientDisconnected):
            parser.next_event()
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    parser.feed_eof()
    with pytest.raises(ClientDisconnected):
        parser.next_event()


def test_request_line_known_after_a_header_error() -> None:
    parser = RequestParser()
    parser.feed(b"GET /x?y HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n")
    with pytest.raises(BadRequest):
        parser.next_event()
    assert parser.request_line == "GET /x?y HTTP/1.1"
    # Known as soon as the line is complete, before the head is.
    parser = RequestParser(Limits(field_size=20))
    parser.feed(b"DELETE /a HTTP/1.1\r\nX-Long: ")
    assert parser.next_event() is NEED_DATA
    assert parser.request_line == "DELETE /a HTTP/1.1"
    parser.feed(b"y" * 30)
    with pytest.raises(HeaderFieldsTooLarge):
        parser.next_event()
    assert parser.request_line == "DELETE /a HTTP/1.1"


def test_dead_parser_raises_the_same_error_and_ignores_input() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n\r\n" + GET)
    with pytest.raises(BadRequest) as first:
        parser.next_event()
    parser.feed(GET)
    parser.start_next_request()  # no effect once dead
    with pytest.raises(BadRequest) as second:
        parser.next_event()
    assert second.value is first.value and first.value.close


def test_default_limits_414_and_431() -> None:
    parser = RequestParser()
    parser.feed(b"GET /" + b"a" * http11.DEFAULT_LIMIT_REQUEST_LINE)  # no CRLF yet
    with pytest.raises(URITooLong) as exc:
        parser.next_event()
    assert exc.value.status == 414 and exc.value.close
    line = b"GET /" + b"a" * (http11.DEFAULT_LIMIT_REQUEST_LINE - 14) + b" HTTP/1.1"
    assert len(line) == http11.DEFAULT_LIMIT_REQUEST_LINE
    parser = RequestParser()
    parser.feed(line + b"\r\nHost: a\r\n\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 100 + b"\r\n")
    with pytest.raises(HeaderFieldsTooLarge):
        parser.next_event()
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 99 + b"\r\n")
    assert len(parser.next_event().headers) == 100


def test_content_too_large_before_the_head_is_returned() -> None:
    parser = RequestParser(Limits(body=100))
    parser.feed(b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    with pytest.raises(ContentTooLarge) as exc:
        parser.next_event()
    assert exc.value.status == 413 and exc.value.close
    assert parser.request_line == "PUT /f HTTP/1.1"


def test_body_chunks_are_what_is_buffered_not_the_whole_body() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == BodyChunk(b"x" * 1000)
    got, ended = 1000, False
    while not ended:
        parser.feed(b"y" * 7000)
        for event in events(parser):
            if isinstance(event, BodyChunk):
                assert 0 < len(event.data) <= 7000
                got += len(event.data)
            else:
                ended = isinstance(event, EndOfMessage)
    assert got == 100000 and parser.buffered == 1000 + 7000 * 15 - 100000


def test_large_chunked_body_in_small_pieces() -> None:
    body = bytes(range(256)) * 40
    wire = b"".join(encode_chunk(body[i:i + 333]) for i in range(0, len(body), 333)) + LAST_CHUNK
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    got = bytearray()
    done = False
    for i in range(0, len(wire), 1000):
        parser.feed(wire[i:i + 1000])
        for event in events(parser):
            if isinstance(event, BodyChunk):
                got += event.data
            elif isinstance(event, EndOfMessage):
                done = True
    assert done and bytes(got) == body


def test_every_error_closes() -> None:
    for case in CASES:
        if case.expect.isdigit():
            parser = RequestParser(case.limits)
            parser.feed(case.raw)
            with pytest.raises(HTTPError) as exc:
                while True:
                    event = parser.next_event()
                    assert event is not NEED_DATA, case.name
                    if isinstance(event, EndOfMessage):
                        parser.start_next_request()
            assert exc.value.close and str(exc.value.status) == case.expect, case.name


def test_parse_speed_is_reasonable() -> None:
    """The typical keep-alive cycle; a loose bound (shared CI machines vary a lot)."""
    parser = RequestParser()
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        parser.feed(GET)
        parser.next_event()
        parser.next_event()
        parser.start_next_request()
    per_request = (time.perf_counter() - start) / n
    assert per_request < 500e-6, per_request


# ----------------------------------------------------------------------------- responses


def test_format_response_head() -> None:
    head = format_response_head("HTTP/1.1", 200, "OK",
                                [("Content-Type", "text/plain"), ("X-Empty", ""),
                                 ("X-Latin", "caf\u00e9")])
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Empty: \r\n"
                    b"X-Latin: caf\xe9\r\n\r\n")
    assert format_response_head("HTTP/1.0", 204, "", []) == b"HTTP/1.0 204 \r\n\r\n"


@pytest.mark.parametrize("headers", [
    [("X-A", "a\r\nSet-Cookie: evil=1")], [("X-A", "a\nb")], [("X-A", "a\rb")],
    [("X-A", "a\0b")], [("X A", "v")], [("X-A:", "v")], [("", "v")], [("X\r\nY", "v")],
    [("X-\u00e9", "v")], [("X-A", "\u20ac")],
])
def test_format_response_head_refuses_splitting(headers) -> None:
    with pytest.raises(ValueError):
        format_response_head("HTTP/1.1", 200, "OK", headers)


@pytest.mark.parametrize(("version", "status", "reason"), [
    ("HTTP/1.1", 200, "O\r\nK"), ("HTTP/1.1", 200, "OK\n"), ("HTTP/1.1", 99, "x"),
    ("HTTP/1.1", 1000, "x"), ("HTTP/1.1 ", 200, "OK"), ("http/1.1", 200, "OK"),
])
def test_format_response_head_refuses_bad_status_line(version, status, reason) -> None:
    with pytest.raises(ValueError):
        format_response_head(version, status, reason, [])


def test_encode_chunk_and_last_chunk() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    with pytest.raises(ValueError):
        encode_chunk(b"")


def test_reasons() -> None:
    expected = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
                206: "Partial Content", 207: "Multi-Status", 226: "IM Used",
                301: "Moved Permanently", 304: "Not Modified", 308: "Permanent Redirect",
                400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout",
                413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
                417: "Expectation Failed", 422: "Unprocessable Content",
                431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
                500: "Internal Server Error", 501: "Not Implemented",
                505: "HTTP Version Not Supported", 511: "Network Authentication Required"}
    for status, phrase in expected.items():
        assert REASONS[status] == phrase
    wanted = [100, 101, *range(200, 208), 226, *range(300, 309),
              *range(400, 419), *range(421, 427), 428, 429, 431, 451, *range(500, 509), 510, 511]
    assert set(wanted) <= set(REASONS)


def test_http_date() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(784111777.999) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(-1) == "Wed, 31 Dec 1969 23:59:59 GMT"
    now = http_date()
    assert now is http_date() or now == http_date(time.time())  # cached per second
    assert parse_http_date(now) is not None
    assert abs(parse_http_date(now) - time.time()) < 3
    for bad in (float("nan"), float("inf"), 1e300, -1e300):
        with pytest.raises(ValueError):
            http_date(bad)


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
    "Sun Nov  6 08:49:37 1994",  # obsolete asctime
    "Sun Nov 06 08:49:37 1994",
])
def test_parse_http_date_forms(value) -> None:
    assert parse_http_date(value) == 784111777.0


@pytest.mark.parametrize("value", [
    "", "Sun, 06 Nov 1994 08:49:37", "sun, 06 Nov 1994 08:49:37 GMT",
    "Sun, 06 nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC",
    "Sun, 6 Nov 1994 08:49:37 GMT", "Sun,  06 Nov 1994 08:49:37 GMT",
    " Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT ",
    "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 29 Feb 1900 00:00:00 GMT",
    "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT",
    "Sun, 06 Nov 1994 08:49:61 GMT", "Sun, 00 Nov 1994 08:49:37 GMT",
    "Sun, 06 Nov 0000 08:49:37 GMT", "Sun, 06 Nov 1994 8:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT\r\nX: y", "Sun, \uff10\uff16 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-1994 08:49:37 GMT", "Sun, 06-Nov-94 08:49:37 GMT",
    "Sun Nov 6 08:49:37 1994", "Sun Nov  6 08:49:37 94", "784111777",
])
def test_parse_http_date_invalid(value) -> None:
    assert parse_http_date(value) is None


def test_parse_http_date_leap_second_and_two_digit_years() -> None:
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == 1483228800.0
    this_year = time.gmtime().tm_year
    near = (this_year + 10) % 100
    far = (this_year + 60) % 100
    assert time.gmtime(parse_http_date(f"Monday, 01-Jan-{near:02d} 00:00:00 GMT")).tm_year \
        == this_year + 10
    assert time.gmtime(parse_http_date(f"Monday, 01-Jan-{far:02d} 00:00:00 GMT")).tm_year \
        == this_year + 60 - 100


def test_module_does_no_io() -> None:
    source = Path(http11.__file__).read_text()
    for word in ("import socket", "import threading", "import logging", "open("):
        assert word not in source
