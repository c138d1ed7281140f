"""HTTP/1.1 request parsing and response serialisation, sans I/O (RFC 9110 / RFC 9112).

INTERFACE STUB — the implementation is being written. Everything public below is the contract
connection.py relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import Headers

# Defaults follow Apache httpd's core limits (LimitRequestLine, LimitRequestFields,
# LimitRequestFieldSize) and its LimitRequestBody default of 1 GiB since 2.4.54.
DEFAULT_LIMIT_REQUEST_LINE = 8190
DEFAULT_LIMIT_REQUEST_FIELDS = 100
DEFAULT_LIMIT_REQUEST_FIELD_SIZE = 8190
DEFAULT_LIMIT_REQUEST_BODY = 1 << 30


@dataclass(frozen=True, slots=True)
class Limits:
    request_line: int = DEFAULT_LIMIT_REQUEST_LINE
    fields: int = DEFAULT_LIMIT_REQUEST_FIELDS
    field_size: int = DEFAULT_LIMIT_REQUEST_FIELD_SIZE
    body: int = DEFAULT_LIMIT_REQUEST_BODY  # 0 = unlimited


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: Headers
    keep_alive: bool
    content_length: int | None
    chunked: bool
    expect_continue: bool
    host: str

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(frozen=True, slots=True)
class BodyChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    trailers: Headers


class NeedData:
    """Sentinel type: the parser needs more bytes before it can produce an event."""


NEED_DATA = NeedData()

Event = RequestHead | BodyChunk | EndOfMessage | NeedData
