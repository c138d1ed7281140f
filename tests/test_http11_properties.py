"""Property tests for prefork.http.parser: any input, any split, one outcome and no surprises.

corpus_cases.run() asserts the parser's invariants as it goes (only events or HTTPError,
close=True, ClientDisconnected only after feed_eof(), no empty BodyChunk...), so each
property below also checks those.
"""

from __future__ import annotations

import itertools
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.http.parser import Limits, format_response_head, http_date, parse_http_date
from tests.corpus_cases import load_cases, run

SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
VALID = [case.raw for case in load_cases() if case.expect == "ok" and case.raw]
SMALL = Limits(request_line=24, fields=3, field_size=24, body=16)
LIMITS = st.sampled_from([Limits(), SMALL])
# Pieces that make parsers disagree; joined at random they explore far more than bytes do.
PIECES = [b"GET", b"POST", b" ", b"  ", b"/", b"/a?b", b"*", b"http://h/", b"HTTP/1.1",
          b"HTTP/1.0", b"HTTP/2.0", b"\r\n", b"\r", b"\n", b"\r\n\r\n", b"Host: h", b":", b"\t",
          b"Content-Length: ", b"Transfer-Encoding: ", b"chunked", b"3", b"0", b"a", b"5;x=y",
          b"Expect: 100-continue", b"Connection: close", b"\x00", b"\xff", b"\x7f", b";", b"=",
          b'"', b",", b"abc", b"ffffffffffffffffff"]
INTERESTING = b"\r\n\t \x00:;,=\"0135aAfF\x7f\x80\xff/?*"


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid corpus request with a few bytes inserted, deleted, replaced or duplicated."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        byte = draw(st.sampled_from(INTERESTING))
        if op == "insert":
            data[at:at] = bytes([byte])
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 3))]
        elif op == "replace" and at < len(data):
            data[at] = byte
        else:
            data[at:at] = data[at:at + draw(st.integers(1, 8))]
    return bytes(data)


INPUTS = st.one_of(st.binary(max_size=200), mutated(),
                   st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join))


@SETTINGS
@given(data=INPUTS, cuts=st.lists(st.integers(0, 1000), max_size=12), limits=LIMITS,
       eof=st.booleans())
def test_outcome_does_not_depend_on_the_split(data, cuts, limits, eof) -> None:
    whole = run([data], limits, eof)
    assert run(chunks_of(data, cuts), limits, eof) == whole


@SETTINGS
@given(data=st.one_of(mutated(), st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join)),
       limits=LIMITS, eof=st.booleans())
def test_byte_by_byte_is_the_same(data, limits, eof) -> None:
    per_byte = [data[i:i + 1] for i in range(len(data))]
    assert run(per_byte, limits, eof) == run([data], limits, eof)


@SETTINGS
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 1000), max_size=6))
def test_arbitrary_bytes_then_eof(data, cuts) -> None:
    outcome = run(chunks_of(data, cuts), Limits(), eof=True)
    assert outcome.terminal != "incomplete"  # after EOF: done, an error, or a disconnect


# ----------------------------------------------------------------------------- responses

NAMES = st.one_of(st.text(alphabet="abcXYZ-_!#~", min_size=1, max_size=10),
                  st.text(alphabet="ab:\r\n\0 \t\u00e9(", max_size=6))
VALUES = st.text(alphabet="ab :,;\"\r\n\0\t\u00e9\u20ac\x7f\x01", max_size=20)


@SETTINGS
@given(reason=st.text(alphabet="OK \r\n\0\t", max_size=8),
       headers=st.lists(st.tuples(NAMES, VALUES), max_size=6))
def test_format_response_head_never_lets_a_line_break_through(reason, headers) -> None:
    try:
        head = format_response_head("HTTP/1.1", 200, reason, headers)
    except ValueError:
        texts = [reason, *(n for n, _ in headers), *(v for _, v in headers)]
        assert any(c in t for t in texts for c in "\r\n\0") or any(
            not n or any(c in n for c in ":\r\n\0 \t\u00e9(") for n, _ in headers) or any(
            "\u20ac" in v for _, v in headers)
        return
    text = head.decode("latin-1")
    assert text.endswith("\r\n\r\n")
    lines = text[:-4].split("\r\n")
    assert "\r" not in "".join(lines) and "\n" not in "".join(lines)
    assert lines[0] == f"HTTP/1.1 200 {reason}"
    assert lines[1:] == [f"{name}: {value}" for name, value in headers]


MIN_TS, MAX_TS = -62135596800, 253402300799  # 0001-01-01T00:00:00 .. 9999-12-31T23:59:59


@SETTINGS
@given(st.integers(MIN_TS, MAX_TS))
def test_http_date_round_trip(timestamp) -> None:
    assert parse_http_date(http_date(timestamp)) == timestamp


@SETTINGS
@given(st.floats(MIN_TS, MAX_TS, allow_nan=False))
def test_http_date_float_round_trip(timestamp) -> None:
    assert parse_http_date(http_date(timestamp)) == math.floor(timestamp)


@SETTINGS
@given(st.integers(MIN_TS, MAX_TS))
def test_obsolete_date_forms(timestamp) -> None:
    """RFC 850 (two-digit years: within 50 years ahead, else last century) and asctime."""
    t = time.gmtime(timestamp)
    fixdate = http_date(timestamp)
    day_name = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday",
                "Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}[fixdate[:3]]
    month = fixdate[8:11]
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    asctime = f"{fixdate[:3]} {month} {t.tm_mday:2d} {clock} {t.tm_year:04d}"
    assert parse_http_date(asctime) == timestamp
    rfc850 = f"{day_name}, {t.tm_mday:02d}-{month}-{t.tm_year % 100:02d} {clock} GMT"
    parsed = parse_http_date(rfc850)
    assert parsed is not None
    this_year = time.gmtime().tm_year
    year = time.gmtime(parsed).tm_year
    assert year % 100 == t.tm_year % 100 and this_year - 50 <= year <= this_year + 50
    if this_year - 49 <= t.tm_year <= this_year + 49:
        assert parsed == timestamp


@SETTINGS
@given(st.text(max_size=40))
def test_parse_http_date_never_raises(value) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)


# ----------------------------------------------------------------------------- round trip

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPECIAL = {"host", "content-length", "transfer-encoding", "expect", "connection"}
VCHARS = "".join(map(chr, [*range(0x21, 0x7F), *range(0x80, 0x100)]))


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict]:
    """A valid request, and what the parser should make of it."""
    method = draw(st.text(TCHARS, min_size=1, max_size=8).filter(lambda m: m != "CONNECT"))
    path = "/" + draw(st.text("".join(map(chr, range(0x21, 0x7F))).replace("?", ""),
                              max_size=20))
    query = draw(st.one_of(st.none(), st.text("abc=&?/%20", max_size=10)))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    value = st.text(VCHARS + " \t", max_size=12).map(lambda v: v.strip(" \t"))
    fields = draw(st.lists(st.tuples(
        st.text(TCHARS, min_size=1, max_size=10).filter(lambda n: n.lower() not in SPECIAL),
        value), max_size=6))
    fields.insert(draw(st.integers(0, len(fields))), ("Host", "Example.org:80"))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "HTTP/1.1"
                                   else ["none", "length"]))
    if framing == "none":
        body = b""
    elif framing == "length":
        fields.append(("Content-Length", str(len(body))))
    else:
        fields.append(("Transfer-Encoding", "chunked"))
    target = path if query is None else f"{path}?{query}"
    head = f"{method} {target} {version}\r\n" + "".join(
        f"{name}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{val}"
        f"{draw(st.sampled_from(['', ' ', chr(9)]))}\r\n" for name, val in fields) + "\r\n"
    wire = head.encode("latin-1")
    trailers: list[list[str]] = []
    if framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 9), max_size=6))
        pos = 0
        for size in sizes:
            piece = body[pos:pos + size]
            if piece:
                wire += b"%x\r\n%s\r\n" % (len(piece), piece)
            pos += size
        body = body[:pos]
        trailers = [[n, v] for n, v in draw(st.lists(st.tuples(
            st.text(TCHARS, min_size=1, max_size=6), value), max_size=2))]
        wire += b"0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in trailers).encode("latin-1")
        wire += b"\r\n"
    else:
        wire += body
    expected = {"method": method, "target": target, "path": path, "query": query or "",
                "version": version, "host": "example.org:80",
                "content_length": len(body) if framing == "length" else None,
                "chunked": framing == "chunked", "headers": [list(f) for f in fields],
                "body": body.decode("latin-1"), "trailers": trailers, "complete": True,
                "keep_alive": version == "HTTP/1.1", "expect_continue": False}
    return wire, expected


@SETTINGS
@given(request=requests(), cuts=st.lists(st.integers(0, 1000), max_size=10))
def test_valid_requests_round_trip(request, cuts) -> None:
    wire, expected = request
    outcome = run(chunks_of(wire + wire, cuts))  # twice: pipelined
    assert outcome.terminal == "ok", outcome
    assert outcome.requests == [expected, expected]
