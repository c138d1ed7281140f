"""Pure checks of the semantics layer: RFC 9110 §13 precedence, §14 ranges, and response
framing (RFC 9112 §6) for bodies of every kind."""

from __future__ import annotations

import os

import pytest

from prefork.errors import PreconditionFailed
from prefork.http.framing import frame
from prefork.http.message import FileBody, Headers, Response
from prefork.serve.output import release
from prefork.site.preconditions import (
    MAX_RANGES,
    Unsatisfiable,
    Validators,
    evaluate,
    if_range_allows,
    parse_ranges,
)

V = Validators('"abc-10"', 1_700_000_000.0)
OLD = "Sun, 01 Jan 2023 00:00:00 GMT"  # before V.last_modified
NEW = "Fri, 01 Jan 2038 00:00:00 GMT"  # after it


def h(**fields: str) -> Headers:
    return Headers((k.replace("_", "-"), v) for k, v in fields.items())


def test_if_match_wins_over_if_unmodified_since() -> None:
    # A matching If-Match means If-Unmodified-Since is not even looked at (§13.2.2 step 2).
    assert evaluate("GET", h(If_Match='"abc-10"', If_Unmodified_Since=OLD), V) is None
    with pytest.raises(PreconditionFailed):
        evaluate("GET", h(If_Match='"other"'), V)
    with pytest.raises(PreconditionFailed):
        evaluate("GET", h(If_Match='W/"abc-10"'), V)  # strong comparison
    with pytest.raises(PreconditionFailed):
        evaluate("GET", h(If_Unmodified_Since=OLD), V)
    assert evaluate("GET", h(If_Unmodified_Since=NEW), V) is None


def test_if_none_match_wins_over_if_modified_since() -> None:
    assert evaluate("GET", h(If_None_Match='W/"abc-10"'), V) == 304  # weak comparison
    assert evaluate("HEAD", h(If_None_Match='"x", "abc-10"'), V) == 304
    assert evaluate("GET", h(If_None_Match='"x"', If_Modified_Since=NEW), V) is None
    assert evaluate("GET", h(If_Modified_Since=NEW), V) == 304
    assert evaluate("GET", h(If_Modified_Since=OLD), V) is None
    assert evaluate("GET", h(If_Modified_Since="garbage"), V) is None
    with pytest.raises(PreconditionFailed):
        evaluate("PUT", h(If_None_Match="*"), V)


def test_ranges() -> None:
    assert parse_ranges("bytes=0-9", 100) == [(0, 9)]
    assert parse_ranges("bytes=90-", 100) == [(90, 99)]
    assert parse_ranges("bytes=-5", 100) == [(95, 99)]
    assert parse_ranges("bytes=-500", 100) == [(0, 99)]
    assert parse_ranges("bytes=0-200", 100) == [(0, 99)]
    assert parse_ranges("bytes=0-9,5-19,30-39,40-49", 100) == [(0, 19), (30, 49)]  # merged
    assert parse_ranges("bytes=5-1", 100) is None  # invalid: ignore the header
    assert parse_ranges("items=0-1", 100) is None
    assert parse_ranges("bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)), 100) is None
    assert parse_ranges("bytes=200-300,0-1", 100) == [(0, 1)]
    with pytest.raises(Unsatisfiable):
        parse_ranges("bytes=100-", 100)
    with pytest.raises(Unsatisfiable):
        parse_ranges("bytes=-0", 100)


def test_if_range() -> None:
    assert if_range_allows(h(), V)
    assert if_range_allows(h(If_Range='"abc-10"'), V)
    assert not if_range_allows(h(If_Range='W/"abc-10"'), V)
    assert not if_range_allows(h(If_Range=OLD), V)


def body_of(items: list) -> bytes:
    return b"".join(i for i in items if isinstance(i, bytes))


def test_framing_of_each_body_kind(tmp_path) -> None:
    out = frame(Response(200, [("Content-Type", "text/plain")], b"hello"), "GET", "HTTP/1.1",
                True)
    head = out.items[0]
    assert b"Content-Length: 5\r\n" in head and head.endswith(b"\r\n\r\nhello")
    assert b"Connection" not in head and b"Date: " in head and out.keep_alive

    stream = frame(Response(200, [], iter([b"ab", b"cd"])), "GET", "HTTP/1.1", True)
    assert b"Transfer-Encoding: chunked" in stream.items[0] and stream.chunked
    assert stream.stream is not None

    old = frame(Response(200, [], iter([b"ab"])), "GET", "HTTP/1.0", True)
    assert not old.keep_alive and b"Connection: close" in old.items[0]
    assert b"Transfer-Encoding" not in old.items[0]

    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    files = frame(Response(200, [], FileBody(fd, 2, 5)), "GET", "HTTP/1.0", True)
    assert b"Content-Length: 5" in files.items[0]
    assert b"Connection: keep-alive" in files.items[0]
    assert isinstance(files.items[1], FileBody)
    release(files.items[1])

    for status in (204, 304):
        none = frame(Response(status, [], b""), "GET", "HTTP/1.1", True)
        assert b"Content-Length" not in none.items[0] and none.items[0].endswith(b"\r\n\r\n")
    head_only = frame(Response(404, [], b"<p>missing</p>"), "HEAD", "HTTP/1.1", False)
    assert head_only.items == [head_only.items[0]] and b"Content-Length: 14" in head_only.items[0]
    assert head_only.unsent == b"<p>missing</p>"  # described, for the connection to release
    assert head_only.items[0].endswith(b"Connection: close\r\n\r\n")


def test_framing_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        frame(Response(200, [("X-Evil", "a\r\nSet-Cookie: x=1")], b""), "GET", "HTTP/1.1",
              True)
