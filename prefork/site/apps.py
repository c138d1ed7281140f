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
from itertools import chain
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
from prefork.http.parser import REASONS

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
# What was checked once need not be checked again: start_response's statuses and fields,
# the environ keys of request field names and the SERVER_NAME/PORT of Host values repeat
# from request to request. Each memo forgets everything when it reaches MEMO_LIMIT entries
# (varying values, such as cookies, only cost the check they would have cost anyway).
MEMO_LIMIT = 4096
_checked_status: dict[str, tuple[int, str]] = {}
_checked_fields: dict[tuple[str, str], tuple[str, str, bool]] = {}  # -> name, value, is C-L
_NO_KEY = ""  # a field name the environ leaves out (it holds "_")


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
        self.length: str | None = None  # the one Content-Length the application declared

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
        parsed = _checked_status.get(status) if type(status) is str else None
        if parsed is None:
            if not isinstance(status, str) or not STATUS_RE.match(status):
                raise ValueError(f"malformed status {status!r}")
            parsed = int(status[:3]), status[4:]
            _remember(_checked_status, status, parsed)
        checked: list[tuple[str, str]] = []
        length: str | None = None
        lengths = 0
        for item in headers:
            field = _checked_fields.get(item) if type(item) is tuple else None
            if field is None:
                field = _check_field(item)
            checked.append(field[:2])
            if field[2]:
                length = field[1]
                lengths += 1
        self.status, self.reason = parsed
        self.headers = checked
        self.length = length if lengths == 1 else None
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


def _check_field(item: object) -> tuple[str, str, bool]:
    """A response field from the application, checked: (name, value without surrounding
    whitespace, whether it is Content-Length); raises TypeError/ValueError."""
    if not (isinstance(item, tuple) and len(item) == 2
            and isinstance(item[0], str) and isinstance(item[1], str)):
        raise TypeError(f"response header {item!r} is not a (str, str) tuple")
    name, value = item
    if not TOKEN_RE.match(name) or not FIELD_VALUE_RE.match(value):
        raise ValueError(f"malformed response header {name!r}: {value!r}")
    lowered = name.lower()
    if lowered in HOP_BY_HOP:
        raise ValueError(f"hop-by-hop header {name!r} from the application")
    field = (name, value.strip(" \t"), lowered == "content-length")
    if type(name) is str and type(value) is str:  # not a subclass that could change
        _remember(_checked_fields, (name, value), field)
    return field


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _environ_key(name: str) -> str:
    """The environ key of request field `name` (_NO_KEY: left out)."""
    key = name.upper()
    if "_" in key:
        return _NO_KEY  # X_Forwarded_For would pass for X-Forwarded-For (nginx drops them too)
    key = key.replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def _prepared_fields(status: int, reason: str, headers: list[tuple[str, str]],
                     length: str | None, body: bytes) -> bytes:
    """The application's checked fields serialised once for framing's prepared path (a
    whole bytes body, the usual reason phrase), Content-Length added when it declared none;
    b"" to leave the answer to the general path (which refuses a wrong length)."""
    if reason != REASONS.get(status) or status < 200 or status in (204, 304):
        return b""
    if length is None:
        headers.append(("Content-Length", str(len(body))))
    elif length != str(len(body)):
        return b""
    # Checked by start_response: token names, values without CR/LF/NUL, within latin-1.
    return "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1")


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
        self._keys: dict[str, str] = {}  # request field name -> environ key (_environ_key)
        self._servers: dict[tuple[str, tuple[str, int]], tuple[str, str]] = {}  # Host, local

    def environ(self, request: Request, local: tuple[str, int], user: str | None = None
                ) -> dict[str, Any]:
        """The PEP 3333 environ of `request` (received on the local address `local`)."""
        env = dict(self.base_environ)
        if request.scheme != "http":  # over TLS (the base says "http" or what was configured)
            env["wsgi.url_scheme"] = request.scheme
        path = request.path[len(self.mount):] if request.path != "*" else "*"
        env["PATH_INFO"] = path if "%" not in path and path.isascii() else \
            unquote_to_bytes(path).decode("latin-1")
        env["QUERY_STRING"] = request.query
        env["REQUEST_METHOD"] = request.method
        env["REQUEST_URI"] = env["RAW_URI"] = request.target
        env["SERVER_PROTOCOL"] = request.version
        client = request.client
        env["REMOTE_ADDR"] = client[0]
        env["REMOTE_PORT"] = str(client[1])
        host = request.headers.get("Host") or ""
        server = self._servers.get((host, local))
        if server is None:
            server = _server_of(host, local)
            _remember(self._servers, (host, local), server)
        env["SERVER_NAME"], env["SERVER_PORT"] = server
        if user is not None:
            env["REMOTE_USER"] = user
            env["AUTH_TYPE"] = "Basic"
        keys = self._keys
        for name, value in request.headers:
            key = keys.get(name)
            if key is None:
                key = _environ_key(name)
                _remember(keys, name, key)
            if not key:  # _NO_KEY
                continue
            if key in env and key[0] == "H":  # §5.3: repeated fields combine into one list
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
        if rest is not None and start.length is not None and \
                not isinstance(result, FileWrapper) and \
                start.length == str(sum(len(piece) for piece in pieces)):
            rest = _rest_of_declared(rest)
        body: Body
        raw = b""
        if rest is None:  # finite and fully taken: one bytes body
            _close_result(result, self.error_log, request.client, what)
            body = b"".join(pieces)
            if request.method != "HEAD":
                raw = _prepared_fields(start.status, start.reason, start.headers,
                                       start.length, body)
        elif isinstance(result, FileWrapper) and not pieces and \
                (region := result.file_region(_declared_length(start.headers))) is not None:
            _close_result(result, self.error_log, request.client, what)
            body = region
        else:
            body = StreamedBody(pieces, rest, result, self.error_log, request.client, what)
        return Response(start.status, start.headers, body, start.reason, raw_headers=raw)


def _server_of(host: str, local: tuple[str, int]) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from the Host field (else the local address)."""
    if not host:
        return local[0], str(local[1])
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name or not port.isdigit():
        name, port = host, str(local[1])
    return name.strip("[]"), port


def _declared_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value) if value.isdigit() else None
    return None


def _rest_of_declared(rest: Iterator[bytes]) -> Iterator[bytes] | None:
    """The pieces taken so far hold the whole declared Content-Length (a framework's usual
    answer: one piece from an iterator): take the rest now, which can only be empty pieces,
    so the answer goes out as one bytes body with a prepared head. None when nothing
    followed; else an iterator that gives what did (a piece too many, not bytes, or the
    application's exception), for StreamedBody to refuse as it always does. PEP 3333's
    "no delay" holds: with its length declared and given, the response has no block left
    to wait for."""
    try:
        for piece in rest:
            if type(piece) is not bytes or piece:
                return chain((piece,), rest)
    except Exception as exc:
        return _raising(exc)
    return None


def _raising(exc: Exception) -> Iterator[bytes]:
    raise exc
    yield b""  # a generator: the exception comes with the first next()


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
