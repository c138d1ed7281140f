"""Turning a Response into what goes on the wire (RFC 9112 §6 message body framing).

Pure decisions, no I/O: the head bytes (Date, Server, Connection added to a copy of the
handler's fields: the handler's Response is never changed), whether the body is framed by
Content-Length, chunked, or the connection's close, and the queue of items the connection
writes: bytes, FileBody regions (sendfile), or a body iterator to stream.

Framing is ours alone (RFC 9112 §6): a handler may declare Content-Length, but it must be
one valid length, equal to the body's when that is known (else ValueError: the connection
answers 500), and a streamed body is held to it — at most the declared bytes go out, and
ResponseLengthError is raised when the body proves longer or ends short, so the connection
closes rather than let the next response start inside this one. Transfer-Encoding is
refused from a handler.

A connection may add fields of its own to every response (`AddedFields`: the
Strict-Transport-Security of [server] hsts, over TLS only): after Server, on prepared heads
and framed ones alike, unless the handler's response has a field of the same name (the
handler's wins).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from prefork import SERVER_SOFTWARE
from prefork.errors import ResponseLengthError
from prefork.http.message import Body, BodyPart, FileBody, Response
from prefork.http.parser import REASONS, format_response_head, http_date

SMALL_BODY_JOIN = 16384  # bytes bodies up to this size go out in the same send() as the head
SERVER_LINE = f"\r\nServer: {SERVER_SOFTWARE}\r\n".encode()
STATUS_LINES = {status: f"HTTP/1.1 {status} {REASONS[status]}\r\n".encode()
                for status in (200, 206, 304)}
_LENGTH_RE = re.compile(r"[0-9]{1,18}")  # Content-Length = 1*DIGIT (RFC 9110 §8.6)


@dataclass(frozen=True, slots=True)
class AddedFields:
    """Fields a connection adds to every response it sends unless the handler set a field
    of the same name; `lines` are `fields` serialised, ready for a prepared head."""

    fields: tuple[tuple[str, str], ...] = ()
    lines: bytes = b""
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, fields: tuple[tuple[str, str], ...]) -> AddedFields:
        """Raises ValueError for a field that cannot be sent (format_response_head's)."""
        head = format_response_head("HTTP/1.1", 200, "OK", list(fields))
        return cls(fields, head[head.index(b"\r\n") + 2:-2],
                   frozenset(name.lower() for name, _value in fields))

    def beside(self, headers: list[tuple[str, str]]) -> AddedFields:
        """What is added to a response with `headers`: those the handler did not set."""
        names = self.names
        if not any(name.lower() in names for name, _value in headers):
            return self
        taken = {name.lower() for name, _value in headers}
        return AddedFields.of(tuple(f for f in self.fields if f[0].lower() not in taken))


NO_FIELDS = AddedFields()


@dataclass(slots=True)
class Output:
    items: list[bytes | BodyPart] = field(default_factory=list)
    keep_alive: bool = True
    chunked: bool = False
    stream: Iterator[bytes] | None = None
    body_bytes: int = 0  # bytes bodies queued now (FileBody regions count as they are sent)
    # The fields as sent, for the access log's %{...}o: the handler's plus what framing
    # added; a prepared head's are the handler's (Content-Length included, Date not).
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A body framing decided not to send (HEAD, 1xx, 204, 304): whoever owns the response's
    # resources releases it (its files, its iterator's close()).
    unsent: Body | None = None


def frame(response: Response, method: str, version: str, keep_alive: bool,
          added: AddedFields = NO_FIELDS) -> Output:
    """Return the Output for `response` to a `method` request of HTTP `version`.

    `keep_alive` is the connection's wish; the result may turn it off (an HTTP/1.0 body of
    unknown length is delimited by closing). `added`: the connection's own fields (see the
    module comment). Raises ValueError if a header would inject, or the handler's framing
    fields are invalid or disagree with its body (see the module comment). Never changes
    `response`, except to close the files of a body not sent.
    """
    body = response.body
    if added.fields:
        added = added.beside(response.headers)
    if response.raw_headers and (method == "HEAD" or isinstance(body, (bytes, FileBody))):
        return _prepared(response, method, version, keep_alive, added)
    status = response.status
    no_body = method == "HEAD" or status < 200 or status in (204, 304)
    length = response.body_length()
    declared = _declared_length(response.headers, length, no_body)
    headers = [*response.headers, ("Date", http_date()), ("Server", SERVER_SOFTWARE),
               *added.fields]
    out = Output(headers=headers)
    if length is not None and declared is None and status >= 200 \
            and status not in (204, 304) and (length or not no_body):
        headers.append(("Content-Length", str(length)))  # HEAD: what GET would send (§9.3.2)
    elif length is None and declared is None and not no_body:
        if version == "HTTP/1.1":
            headers.append(("Transfer-Encoding", "chunked"))
            out.chunked = True
        else:
            keep_alive = False  # HTTP/1.0 without a length: the close delimits the body
    if keep_alive:
        if version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
    else:
        headers.append(("Connection", "close"))
    out.keep_alive = keep_alive
    head = format_response_head("HTTP/1.1", status,
                                response.reason or REASONS.get(status, "Unknown"), headers)
    items = out.items
    if no_body:
        out.unsent = body
        items.append(head)
    elif isinstance(body, bytes):
        if len(body) <= SMALL_BODY_JOIN:
            items.append(head + body)
        else:
            items += (head, body)
        out.body_bytes = len(body)
    elif isinstance(body, FileBody):
        items += (head, body)
    elif isinstance(body, list):
        items.append(head)
        items.extend(body)
        out.body_bytes = sum(len(p) for p in body if isinstance(p, bytes))
    else:
        items.append(head)
        out.stream = body if declared is None else exactly(body, declared)
    return out


def _declared_length(headers: list[tuple[str, str]], length: int | None,
                     no_body: bool) -> int | None:
    """The handler's Content-Length, or None. Raises ValueError for Transfer-Encoding, for
    more than one or an invalid Content-Length, or one that differs from a known body's
    `length` when the body is sent (a HEAD answer declares what a GET would get)."""
    declared = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == "transfer-encoding":
            raise ValueError("a handler may not set Transfer-Encoding: framing is ours")
        if lowered == "content-length":
            if declared is not None or _LENGTH_RE.fullmatch(value) is None:
                raise ValueError(f"invalid or repeated Content-Length {value!r}")
            declared = int(value)
    if declared is not None and length is not None and not no_body and declared != length:
        raise ValueError(f"Content-Length {declared} but the body has {length} bytes")
    return declared


def exactly(body: Iterator[bytes], length: int) -> Iterator[bytes]:
    """Yield `body` cut to `length` bytes; then raise ResponseLengthError if it was longer
    or ended short. The handler's iterator is closed whatever happens."""
    remaining = length
    try:
        for piece in body:
            if len(piece) > remaining:
                if remaining:
                    yield piece[:remaining]
                raise ResponseLengthError(
                    f"the response body is longer than its Content-Length {length}")
            remaining -= len(piece)
            if piece:
                yield piece
        if remaining:
            raise ResponseLengthError(f"the response body ended {remaining} bytes short of "
                                      f"its Content-Length {length}")
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def prepared_head_start(status: int, raw_headers: bytes) -> bytes:
    """The status line and a handler's serialised fields, up to the Date field's value."""
    status_line = (STATUS_LINES.get(status)
                   or b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "").encode()))
    return status_line + raw_headers + b"Date: "


def connection_tail(keep_alive: bool, version: str) -> bytes:
    """What follows the Server field of a prepared head: the Connection field, if any, and
    the empty line."""
    if not keep_alive:
        return b"Connection: close\r\n\r\n"
    if version == "HTTP/1.0":
        return b"Connection: keep-alive\r\n\r\n"
    return b"\r\n"


def _prepared(response: Response, method: str, version: str, keep_alive: bool,
              added: AddedFields) -> Output:
    """The fast path for fields a handler serialised once (a cached static file): the head
    is a few byte concatenations, and a small body joins it in one send()."""
    head = b"".join((prepared_head_start(response.status, response.raw_headers),
                     http_date().encode(), SERVER_LINE, added.lines,
                     connection_tail(keep_alive, version)))
    body = response.body
    out = Output(keep_alive=keep_alive, headers=[*response.headers, *added.fields]
                 if added.fields else response.headers)
    if method == "HEAD":
        out.unsent = body
        out.items.append(head)
    elif isinstance(body, bytes):
        out.items.append(head + body)
        out.body_bytes = len(body)
    else:
        assert isinstance(body, FileBody)  # framing() sends only bytes or a FileBody here
        out.items += (head, body)
    return out
