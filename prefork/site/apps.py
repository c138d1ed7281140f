"""Hosting a WSGI application (PEP 3333) at a URL prefix: the handler for an app mount.

How this works: the handler runs in a blocking-pool thread (an application may block for
as long as it likes; the event loops never call it). `serve()` builds the environ from the
parsed request, calls the application and iterates its result until the first non-empty
piece (PEP 3333: the head may not be sent before that), so `start_response` — also a late one
with `exc_info` — decides the status and fields. What follows is streamed from the
iterable by the connection, which calls the iterable's `close()` whatever happens (the end,
an error, a client gone away). A finite result (a list, as most frameworks return) is joined
into one bytes body, so the common answer gets a Content-Length and no chunking.

Errors are the application's and stay inside this request: an exception before the first
piece is a 500 with its traceback in the error log; after it, `ApplicationAborted` tells the
connection to close (the status line is on the wire already). A malformed status, a
hop-by-hop field (RFC 9110 §7.6.1), or a field a response must not carry is refused the same
way: never forwarded to the client.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from prefork.config.sections import AppSettings
from prefork.errors import (
    ApplicationAborted,
    ClientDisconnected,
    HTTPError,
    InternalServerError,
)
from prefork.http.message import (
    EVERY_FIELD,
    Body,
    BodyReader,
    FieldNames,
    FileBody,
    Request,
    Response,
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

# RFC 9110 §7.6.1 hop-by-hop fields, plus the framing fields the server owns (an application
# declares a body's length with Content-Length; the server chooses chunking itself).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"})
STATUS_RE = re.compile(r"[1-5][0-9][0-9] [\t\x20-\x7e\x80-\xff]*\Z")  # RFC 9112 §4
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
FIELD_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")
READLINE_CHUNK = 8192
MAX_LATE_WRITE = 1 << 20  # bytes write() may buffer before the first piece of the body


class ErrorSink(Protocol):
    def log(self, level: str, message: str, client: tuple[str, int] | None = None,
            exc: BaseException | None = None, appendix: str = "") -> None: ...


class WSGIInput:
    """`wsgi.input`: the request body, read on demand (PEP 3333 "Input and Error Streams").

    Reads never go past the body's end, chunked bodies included (the body reader has taken
    the coding off), so `read()` with no size is safe, and `100 Continue` goes out on the
    first read only — an application that answers without reading never gets the client to
    send its body."""

    def __init__(self, body: BodyReader) -> None:
        self._body = body
        self._buffer = b""
        self._eof = False

    def _fill(self, size: int) -> None:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            piece = self._body.read(READLINE_CHUNK if size < 0 else
                                    max(size - len(self._buffer), 1))
            if not piece:
                self._eof = True
            else:
                self._buffer += piece

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        if size < 0:
            data = self._buffer + self._body.read(-1) if not self._eof else self._buffer
            self._buffer, self._eof = b"", True
            return data
        if size > len(self._buffer):
            self._fill(size)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0 and (size < 0 or end < size):
                return self.read(end + 1)
            if (0 <= size <= len(self._buffer)) or self._eof:
                return self.read(size)
            self._fill(len(self._buffer) + READLINE_CHUNK)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class WSGIErrors(io.TextIOBase):
    """`wsgi.errors`: text the application writes becomes error-log lines of this request."""

    def __init__(self, log: ErrorSink, client: tuple[str, int]) -> None:
        self._log = log
        self._client = client
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line:
                self._log.log("error", f"application: {line}", self._client)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._log.log("error", f"application: {line}", self._client)


class FileWrapper:
    """`wsgi.file_wrapper`: an iterable over a file; a regular file is sent with sendfile."""

    def __init__(self, filelike: Any, block_size: int = 65536) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        while data := self.filelike.read(self.block_size):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def file_region(self, declared: int | None) -> FileBody | None:
        """The rest of the file as a sendfile region (its own descriptor), or None when the
        object is not a regular file at a known position."""
        try:
            fd = self.filelike.fileno()
            offset = self.filelike.tell()
            info = os.fstat(fd)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        length = max(info.st_size - offset, 0)
        if declared is not None:
            length = min(length, declared)
        return FileBody(os.dup(fd), offset, length)


class StreamedBody:
    """The rest of an application's result after its first piece, as the connection pulls
    it; `close()` closes the application's iterable exactly once (PEP 3333)."""

    def __init__(self, first: list[bytes], rest: Iterator[bytes], result: Iterable[bytes],
                 log: ErrorSink, client: tuple[str, int], what: str) -> None:
        self._first = first
        self._rest = rest
        self._result = result
        self._log = log
        self._client = client
        self._what = what
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._first:
            return self._first.pop(0)
        try:
            piece = next(self._rest)
        except StopIteration:
            raise
        except Exception as exc:
            self._log.log("error", f"application failed after the response began ({self._what})"
                          f": {exc!r}", self._client, exc)
            self.close()
            raise ApplicationAborted("the application failed mid-response") from exc
        if not isinstance(piece, bytes):
            self.close()
            self._log.log("error", f"application yielded {type(piece).__name__}, not bytes "
                          f"({self._what})", self._client)
            raise ApplicationAborted("the application yielded a non-bytes piece")
        return piece

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close_result(self._result, self._log, self._client, self._what)


def _close_result(result: Iterable[bytes], log: ErrorSink, client: tuple[str, int],
                  what: str) -> None:
    close = getattr(result, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # the response is complete; the app's cleanup failed
        log.log("error", f"application's close() failed ({what}): {exc!r}", client, exc)


class _StartResponse:
    """The `start_response` callable of one request, and what it was told."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        self.written: list[bytes] = []
        self.written_size = 0

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid a reference cycle through the traceback
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        if not isinstance(status, str) or not STATUS_RE.match(status):
            raise ValueError(f"malformed status {status!r}")
        checked: list[tuple[str, str]] = []
        for item in headers:
            if not (isinstance(item, tuple) and len(item) == 2
                    and isinstance(item[0], str) and isinstance(item[1], str)):
                raise TypeError(f"response header {item!r} is not a (str, str) tuple")
            name, value = item
            if not TOKEN_RE.match(name) or not FIELD_VALUE_RE.match(value):
                raise ValueError(f"malformed response header {name!r}: {value!r}")
            if name.lower() in HOP_BY_HOP:
                raise ValueError(f"hop-by-hop header {name!r} from the application")
            checked.append((name, value.strip(" \t")))
        self.status, self.reason = int(status[:3]), status[4:]
        self.headers = checked
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy imperative write(): buffered for transmission (PEP 3333 allows it)
        until the application returns; bounded, since the data sits in memory."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, bytes):
            raise TypeError("write() takes bytes")
        self.written_size += len(data)
        if self.written_size > MAX_LATE_WRITE:
            raise ValueError(f"write() buffered over {MAX_LATE_WRITE} bytes: return an "
                             f"iterable instead")
        self.written.append(data)


class WSGIHandler:
    """Serves one application mounted at `mount` (a prefix without trailing slash, "" for /)."""

    reads_fields: FieldNames = EVERY_FIELD  # the environ carries every field (HTTP_*)

    def __init__(self, app: WSGIApp, mount: str, error_log: ErrorSink, *, multithread: bool,
                 multiprocess: bool, url_scheme: str = "http") -> None:
        self.app = app
        self.mount = mount.rstrip("/")
        self.error_log = error_log
        self.base_environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url_scheme,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,  # read() returns b"" at the body's end, chunked too
            "SCRIPT_NAME": self.mount,
            "SERVER_SOFTWARE": "prefork",
        }

    def environ(self, request: Request, local: tuple[str, int], user: str | None = None
                ) -> dict[str, Any]:
        """The PEP 3333 environ of `request` (received on the local address `local`)."""
        env = dict(self.base_environ)
        if request.scheme != "http":  # over TLS (the base says "http" or what was configured)
            env["wsgi.url_scheme"] = request.scheme
        path = request.path[len(self.mount):] if request.path != "*" else "*"
        env["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
        env["QUERY_STRING"] = request.query
        env["REQUEST_METHOD"] = request.method
        env["REQUEST_URI"] = env["RAW_URI"] = request.target
        env["SERVER_PROTOCOL"] = request.version
        env["REMOTE_ADDR"] = request.client[0]
        env["REMOTE_PORT"] = str(request.client[1])
        host = request.headers.get("Host")
        if host:
            name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if not name or not port.isdigit():
                name, port = host, str(local[1])
            env["SERVER_NAME"], env["SERVER_PORT"] = name.strip("[]"), port
        else:
            env["SERVER_NAME"], env["SERVER_PORT"] = local[0], str(local[1])
        if user is not None:
            env["REMOTE_USER"] = user
            env["AUTH_TYPE"] = "Basic"
        for name, value in request.headers:
            key = name.upper()
            if "_" in key:
                continue  # X_Forwarded_For would pass for X-Forwarded-For (nginx drops them too)
            key = key.replace("-", "_")
            if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                env[key] = value
                continue
            key = "HTTP_" + key
            if key in env:  # RFC 9110 §5.3: repeated fields combine into one list
                env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
            else:
                env[key] = value
        if request.has_body and "CONTENT_LENGTH" not in env and request.content_length:
            env["CONTENT_LENGTH"] = str(request.content_length)
        env["wsgi.input"] = WSGIInput(request.body)
        env["wsgi.errors"] = WSGIErrors(self.error_log, request.client)
        return env

    def serve(self, request: Request) -> Response:
        env = self.environ(request, request.local, request.user)
        what = f"{request.method} {request.target[:256]}"
        start = _StartResponse()
        result: Iterable[bytes] | None = None
        try:
            result = self.app(env, start)
            pieces, rest = _first_pieces(result)
            if start.status is None:
                raise AssertionError("the application returned without calling start_response()")
        except (HTTPError, ClientDisconnected):
            # Not the application's fault: its request body could not be read (a client too
            # slow or too large: 408/413), or the client went away (logged as 499).
            if result is not None:
                _close_result(result, self.error_log, request.client, what)
            raise
        except Exception as exc:
            if result is not None:
                _close_result(result, self.error_log, request.client, what)
            self.error_log.log("error", f"application failed ({what}): {exc!r}",
                               request.client, exc)
            raise InternalServerError("the application failed") from None
        finally:
            env["wsgi.errors"].flush()
        start.head_sent = True
        pieces = start.written + pieces
        declared = _declared_length(start.headers)
        body: Body
        if rest is None:  # finite and fully taken: one bytes body
            _close_result(result, self.error_log, request.client, what)
            body = b"".join(pieces)
        elif isinstance(result, FileWrapper) and not pieces and \
                (region := result.file_region(declared)) is not None:
            _close_result(result, self.error_log, request.client, what)
            body = region
        else:
            body = StreamedBody(pieces, rest, result, self.error_log, request.client, what)
        return Response(start.status, start.headers, body, start.reason)


def _declared_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value) if value.isdigit() else None
    return None


def _first_pieces(result: Iterable[bytes]) -> tuple[list[bytes], Iterator[bytes] | None]:
    """Take the result's pieces up to the first non-empty one (all of them for a list or
    tuple). Returns them and the iterator of the rest, or None when nothing is left."""
    if isinstance(result, (list, tuple)):
        for piece in result:
            if not isinstance(piece, bytes):
                raise TypeError(f"the application's result holds {type(piece).__name__}, "
                                f"not bytes")
        return list(result), None
    if isinstance(result, FileWrapper):
        return [], iter(result)
    iterator = iter(result)
    pieces: list[bytes] = []
    for piece in iterator:
        if not isinstance(piece, bytes):
            raise TypeError(f"the application yielded {type(piece).__name__}, not bytes")
        pieces.append(piece)
        if piece:
            return pieces, iterator
    return pieces, None


def load_apps(apps: tuple[AppSettings, ...], error_log: ErrorSink, processes: int
              ) -> list[tuple[AppSettings, WSGIHandler]]:
    """Import every configured application, in a worker after fork (so each generation
    imports the code as it is now: a reload picks up new code). Each application's `path`
    goes in front of sys.path and its `env` into os.environ first; both are process-wide,
    so applications sharing a worker share them. Raises what the import raises."""
    loaded = []
    for app in apps:
        for directory in reversed(app.path):
            if directory not in sys.path:
                sys.path.insert(0, directory)
        os.environ.update(dict(app.env))
        handler = WSGIHandler(load_application(app.module), app.mount, error_log,
                              multithread=app.threads > 1, multiprocess=processes > 1)
        loaded.append((app, handler))
    return loaded


def load_application(spec: str) -> WSGIApp:
    """Import `package.module:callable` (gunicorn's APP_MODULE); the callable may be an
    attribute path (`module:factory.app`). Raises ImportError/AttributeError/TypeError."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "application"
    __import__(module_name)
    target: Any = sys.modules[module_name]
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]
