"""Reading raw HTTP/1.1 replies strictly, as a test oracle: a reply is a sequence of whole
responses (status line, fields, a body framed exactly as RFC 9112 §6.3 says), and nothing
else. A crashed loop gives an empty or cut reply; an error page sent after a HEAD response
leaves bytes that are no response (RFC 9110 §9.3.2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prefork.errors import ClientDisconnected, HTTPError
from prefork.http.parser import NEED_DATA, EndOfMessage, RequestHead, RequestParser

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-9][0-9]{2}) [\t !-~\x80-\xff]*")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names, the last value wins
    body: bytes


class Malformed(AssertionError):
    """The bytes are not a sequence of whole responses."""


def _chunked(data: bytes, pos: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise Malformed("cut in a chunk-size line")
        size = int(data[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                raise Malformed("cut in the trailers")
            return bytes(body), end + 4
        if len(data) < pos + size + 2 or data[pos + size:pos + size + 2] != b"\r\n":
            raise Malformed("cut or malformed chunk")
        body += data[pos:pos + size]
        pos += size + 2


def parse_replies(data: bytes, methods: list[str] | None = None,
                  allow_close_delimited: bool = False,
                  versions: list[str] | None = None) -> list[Reply]:
    """Split `data` into whole responses. `methods`: the request method each response
    answers, in order (HEAD: no body); missing entries count as GET. `versions`: the HTTP
    version of each request, in the same order: a response to an HTTP/1.0 request that
    says `Connection: close` may delimit its body by the close (RFC 9112 §6.3, an HTTP/1.0
    client cannot read chunked); missing entries count as HTTP/1.1. Raises Malformed."""
    replies: list[Reply] = []
    answered = 0  # final responses so far: a 1xx answers no request on its own
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise Malformed(f"a head cut short: {data[pos:pos + 80]!r}")
        lines = data[pos:end].split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise Malformed(f"not a status line: {lines[0][:80]!r}")
        status = int(match[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise Malformed(f"not a field line: {line[:80]!r}")
            headers[name.decode("latin-1").lower()] = value.strip(b" \t").decode("latin-1")
        pos = end + 4
        method = methods[answered] if methods and answered < len(methods) else "GET"
        version = versions[answered] if versions and answered < len(versions) else "HTTP/1.1"
        answered += status >= 200
        if method == "HEAD" or status < 200 or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, pos = _chunked(data, pos)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            body = data[pos:pos + length]
            if len(body) != length:
                raise Malformed(f"body cut short: {len(body)} of {length} bytes")
            pos += length
        elif allow_close_delimited or (version == "HTTP/1.0" and _closes_fields(headers)):
            body, pos = data[pos:], len(data)
        else:
            raise Malformed("a body delimited by the close")
        replies.append(Reply(status, headers, body))
    return replies


def owed(data: bytes) -> tuple[int, list[str]]:
    """What a server owes a client that sent `data` and then EOF, as the parser sees it:
    (how many answers are owed, the method of each request it will answer); see
    owed_requests."""
    answers, methods, _versions = owed_requests(data)
    return answers, methods


def owed_requests(data: bytes) -> tuple[int, list[str], list[str]]:
    """As owed, and the HTTP version of each request it will answer. A complete
    request or a refused one is owed an answer; a request cut short by the EOF, even in
    its body, may be dropped. A refused request is answered as its method says once the
    request-line has started (a HEAD gets no content)."""
    parser = RequestParser()
    parser.feed(data)
    parser.feed_eof()
    methods: list[str] = []
    versions: list[str] = []
    complete = 0
    while True:
        try:
            event = parser.next_event()
        except HTTPError:  # refused: answered with a length, whatever the version
            methods.append(parser.method or "GET")
            versions.append("HTTP/1.1")
            return complete + 1, methods, versions
        except ClientDisconnected:
            return complete, methods, versions
        if event is NEED_DATA:
            return complete, methods, versions
        if isinstance(event, RequestHead):
            methods.append(event.method)
            versions.append(event.version)
        elif isinstance(event, EndOfMessage):
            complete += 1
            parser.start_next_request()


def _closes_fields(headers: dict[str, str]) -> bool:
    return "close" in (token.strip() for token in
                       headers.get("connection", "").lower().split(","))


def _closes(reply: Reply) -> bool:
    return _closes_fields(reply.headers)


def check_reply(data: bytes, reply: bytes) -> list[Reply]:
    """The oracle for a server sent `data` then EOF: `reply` is whole responses (Malformed
    otherwise), none a 500, and every answer owed is there, unless a response said
    `Connection: close` (the server may stop there). An empty or short reply where answers
    are owed is what a crashed loop gives."""
    answers_owed, methods, versions = owed_requests(data)
    replies = parse_replies(reply, methods, versions=versions)
    final = [r for r in replies if r.status >= 200]
    assert len(final) >= answers_owed or (final and _closes(final[-1])), \
        f"{len(final)} answers where {answers_owed} were owed"
    assert all(r.status != 500 for r in replies), "a 500"
    return replies
