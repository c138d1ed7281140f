"""The messages handlers see: Request, Response, Headers and FileBody.

Handlers receive a Request and return a Response; they never touch sockets. A Response body
is bytes, a FileBody (a region of an open file, sent with sendfile), a list mixing both
(multipart/byteranges), or an iterator of bytes (streamed with chunked coding when no
Content-Length is set).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

# The request fields a piece of code reads, as lower-case names: each handler declares its
# own (`reads_fields`), the router those it routes on, the parser those it acts on. The
# quick path (serve/quick.py) derives from them which fields it may ignore, and a test
# (tests/test_fields.py) serves requests through each with a recording Headers to hold the
# declarations to the code. EVERY_FIELD: all of them (a WSGI application sees every field).
FieldNames = frozenset[str]
EVERY_FIELD: FieldNames = frozenset({"*"})


class Headers:
    """Case-insensitive, multi-valued header fields, in the order they arrived.

    Names keep their original spelling for iteration; look-ups fold case.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        self._map: dict[str, list[str]] = {}
        for name, value in self._items:
            self._map.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of `name`, or `default` when absent."""
        values = self._map.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Return every value of `name` in arrival order (empty list when absent)."""
        return list(self._map.get(name.lower(), ()))

    def get_joined(self, name: str) -> str | None:
        """Return all values of a list-valued field joined with ", " (RFC 9110 §5.3)."""
        values = self._map.get(name.lower())
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> list[str]:
        """Return the comma-separated, lower-cased tokens of a list-valued field."""
        out: list[str] = []
        for value in self._map.get(name.lower(), ()):
            out.extend(t.strip().lower() for t in value.split(",") if t.strip())
        return out

    def count(self, name: str) -> int:
        return len(self._map.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container: not hashable

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class BodyReader(Protocol):
    """A request body as the handler sees it: bytes pulled on demand, already de-chunked."""

    def read(self, size: int = -1) -> bytes:
        """Return up to `size` bytes (all remaining when -1); b"" at the end of the body.

        Raises ContentTooLarge when the body exceeds the limit, RequestTimeout when the
        client is too slow, ClientDisconnected when it goes away.
        """
        ...


class _EmptyBody:
    def read(self, size: int = -1) -> bytes:
        return b""


EMPTY_BODY: BodyReader = _EmptyBody()


@dataclass(slots=True)
class Request:
    """One parsed request head plus its body reader. Handlers must treat it as read-only
    (it is not frozen only because a frozen dataclass costs ~1 µs more to build, per request).

    `path` is the raw (still percent-encoded) path of the request-target; `query` is what
    followed the "?" (without it), or "". Both are wire text: the received bytes decoded as
    latin-1, one character per byte (raw UTF-8 in a target stays bytes until a handler
    decodes the path). `host` is the request's host, lower-cased: the absolute-form's
    authority when the target has one (RFC 9112 §3.2.2), else the Host field's value, ""
    for an HTTP/1.0 request without either. `user` is the one field written after
    construction: the authentication step records who the credentials named (Apache's
    r->user), for the access log's %u.
    """

    method: str
    target: str
    path: str
    query: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: Headers
    client: tuple[str, int]
    keep_alive: bool = True
    has_body: bool = False
    content_length: int | None = None
    body: BodyReader = field(default=EMPTY_BODY, compare=False, repr=False)
    host: str = ""
    user: str | None = None
    local: tuple[str, int] = ("", 0)  # the server's address the client connected to
    scheme: str = "http"  # "https" when it came over TLS

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} {self.version}"


@dataclass(slots=True)
class FileBody:
    """A region of an open file, sent with sendfile. Only a description: the connection
    that sends it releases `fd` when done (serve.output.release), so this protocol layer
    holds no file code.

    Regions of one file in one response (multipart/byteranges) share one descriptor: only
    the last region `owns` it; the others only forget it. The connection sends regions in
    order, so the descriptor stays open until the last one is sent.
    """

    fd: int
    offset: int
    length: int
    owns: bool = True


BodyPart = bytes | FileBody
Body = bytes | FileBody | list[BodyPart] | Iterator[bytes]


class Repeatable(Protocol):
    """A 200 a handler answered whole from something it keeps (the static file cache), that
    depends on the request-line, the Host and the fields the handler declares, nothing
    else. The quick path (serve/quick.py) may send it again while `current()` holds."""

    @property
    def raw_headers(self) -> bytes:
        """The response's fields, serialised (Content-Length included)."""
        ...

    @property
    def body(self) -> bytes | None:
        """The whole content, or None when it is not kept (sent with sendfile instead)."""
        ...

    def current(self) -> bool:
        """Whether the answer is still what the handler would give (a file unchanged)."""
        ...


@dataclass(slots=True)
class Response:
    """What a handler answers. The connection adds Date, Server, Connection and framing."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Body = b""
    reason: str = ""
    close: bool = False  # the handler wants the connection closed afterwards
    # `headers` already serialised and validated (field lines, Content-Length included), for
    # responses a handler prepared once and serves many times; the connection then appends
    # only Date, Server and Connection.
    raw_headers: bytes = b""
    # Set by a handler whose 200 may be repeated without it (see Repeatable).
    repeatable: Repeatable | None = None

    def header(self, name: str) -> str | None:
        """Return the first value of response header `name` (case-insensitive) or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def body_length(self) -> int | None:
        """Return the body's byte length when known without consuming it, else None."""
        body = self.body
        if isinstance(body, bytes):
            return len(body)
        if isinstance(body, FileBody):
            return body.length
        if isinstance(body, list):
            return sum(len(p) if isinstance(p, bytes) else p.length for p in body)
        return None
