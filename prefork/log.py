"""Access log (Apache LogFormat, Combined by default) and error log (Apache 2.4 layout).

How this works: each log owns one file descriptor opened with O_APPEND, and every record is
written with a single os.write(), so lines from many processes and threads never interleave.
reopen() opens the path again and dup2()s the new file onto the old descriptor number, which
swaps files atomically for every thread without a lock (this is what logrotate needs).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prefork.config.settings import ACCESS_FORMAT_DIRECTIVE, COMBINED_FORMAT, LOG_LEVELS
from prefork.config.values import (
    APACHE_LEVELS,
    DEFAULT_ERROR_FORMAT,
    ErrorItem,
    parse_error_format,
    time_format,
)
from prefork.errors import HTTPError

LOG_FILE_MODE = 0o640
MAX_MESSAGE = 8192  # characters of one error-log message (a stack dump is longer: it is
# written whole, as the traceback lines after the message)
LOGGED_REQUEST = 200  # characters of a client's request quoted in an error-log line
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _open_append(path: str) -> int:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    return os.open(path, _OPEN_FLAGS, LOG_FILE_MODE)


class _LogFile:
    """An append-only file descriptor that can be reopened in place."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = _open_append(path)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # a full disk must not take the server down; nothing better to report to

    def reopen(self) -> None:
        """Open the path again (creating it) and swap it in; raises OSError, leaving the
        old file in place, when it cannot be opened."""
        if self.fd < 0:
            return
        new_fd = _open_append(self.path)
        try:
            os.dup2(new_fd, self.fd, inheritable=False)
        finally:
            os.close(new_fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ------------------------------------------------------------------ escaping

_SAFE = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}
_NEEDS_ESCAPE = re.compile(r'[^\x20-\x7e]|["\\]')


def escape(value: str) -> str:
    """Escape like mod_log_config: quotes and backslashes, control and non-ASCII bytes as \\xhh.

    `value` is wire text: what the client sent, decoded as latin-1, one character per byte
    (the parser's request-line, path, fields). So a character up to U+00FF is one byte and
    is written once as \\xhh: raw UTF-8 in a target logs as Apache and nginx log it. A
    character above U+00FF cannot come from the wire; it is written as its UTF-8 bytes.
    """
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    out = []
    for ch in value:
        code = ord(ch)
        if code in _SAFE:
            out.append(ch)
        elif ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 controls


def _hex(match: re.Match[str]) -> str:
    return f"\\x{ord(match[0]):02x}"


def escape_text(value: str) -> str:
    """Escape text that is not wire text (a user name decoded from UTF-8) by its UTF-8
    bytes, as it came from the client."""
    return escape(value.encode("utf-8", "surrogateescape").decode("latin-1"))


# ------------------------------------------------------------------ access log

class TLSSession(Protocol):
    """What %{SSL_PROTOCOL}x and %{SSL_CIPHER}x read of a connection (serve/tls.py's
    TLSTransport): asked only when a format names them, so a format without them costs no
    call into OpenSSL."""

    def version(self) -> str | None: ...

    def cipher(self) -> str | None: ...


@dataclass(slots=True)
class AccessRecord:
    """Everything a LogFormat directive may ask for about one request."""

    client_ip: str
    local_port: int
    request_line: str
    method: str
    path: str
    query: str
    protocol: str
    status: int
    body_bytes: int
    start: float  # time.time() when the request began
    duration: float  # seconds
    request_headers: object = None  # message.Headers or None
    response_headers: list[tuple[str, str]] | None = None
    user: str = "-"  # the authenticated user (Basic auth), as text; "-" when none
    server_name: str = "-"
    # mod_logio's %I and %O: bytes received (request line, fields, body as framed) and sent
    # (status line, fields, body as framed); None when the caller did not count them.
    bytes_received: int | None = None
    bytes_sent: int | None = None
    tls: TLSSession | None = None  # the connection's TLS session; None: plain


class ClfClock:
    """Formats %t ([10/Oct/2000:13:55:36 +0000]), cached per second.

    The cache is one tuple replaced whole, so threads can share it without a lock.
    """

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, "")

    def format(self, timestamp: float) -> str:
        second = int(timestamp)
        cached = self._cached
        if cached[0] == second:
            return cached[1]
        local = time.localtime(second)
        offset = (local.tm_gmtoff or 0) // 60
        sign = "+" if offset >= 0 else "-"
        text = (time.strftime("[%d/%b/%Y:%H:%M:%S ", local)
                + f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}]")
        self._cached = (second, text)
        return text


def _header_value(headers: object, name: str) -> str:
    value = headers.get(name) if headers is not None else None  # type: ignore[attr-defined]
    return escape(value) if value else "-"


def _response_header(headers: list[tuple[str, str]] | None, name: str) -> str:
    lname = name.lower()
    for key, value in headers or ():
        if key.lower() == lname:
            return escape(value)
    return "-"


Field = Callable[[AccessRecord], str]

_FIELDS: dict[str, Field] = {
    "a": lambda r: r.client_ip,
    "h": lambda r: r.client_ip,
    "l": lambda r: "-",
    "u": lambda r: escape_text(r.user) or "-",
    "r": lambda r: escape(r.request_line) if r.request_line else "-",
    "s": lambda r: str(r.status),
    "b": lambda r: str(r.body_bytes) if r.body_bytes else "-",
    "B": lambda r: str(r.body_bytes),
    "D": lambda r: str(int(r.duration * 1_000_000)),
    "T": lambda r: str(int(r.duration)),
    "m": lambda r: escape(r.method) or "-",
    "U": lambda r: escape(r.path) or "-",
    "q": lambda r: "?" + escape(r.query) if r.query else "",
    "H": lambda r: escape(r.protocol) or "-",  # a refused request's, as the client sent it
    "p": lambda r: str(r.local_port),
    "I": lambda r: "-" if r.bytes_received is None else str(r.bytes_received),
    "O": lambda r: "-" if r.bytes_sent is None else str(r.bytes_sent),
    "P": lambda r: str(os.getpid()),
    "v": lambda r: r.server_name,
}


def _combined() -> Callable[[AccessRecord], str]:
    """The default (Combined) format as one f-string: the same output as the general
    renderer (a test checks), at a fraction of its cost per request."""
    clock = ClfClock()

    def render(r: AccessRecord) -> str:
        line = escape(r.request_line) if r.request_line else "-"
        user = escape_text(r.user) if r.user != "-" else "-"
        return (f'{r.client_ip} - {user} {clock.format(r.start)} "{line}" {r.status} '
                f'{r.body_bytes or "-"} "{_header_value(r.request_headers, "Referer")}" '
                f'"{_header_value(r.request_headers, "User-agent")}"')

    return render


def _time_field(arg: str = "") -> Field:
    """%t (the CLF date), or %{format}t: mod_log_config's begin:/end: prefix, then sec,
    msec, usec, msec_frac, usec_frac, or a strftime(3) format in local time."""
    if not arg:
        clock = ClfClock()  # one per directive: it caches the last second it formatted
        return lambda r: clock.format(r.start)
    at_end, unit = time_format(arg)

    def moment(r: AccessRecord) -> float:
        return r.start + r.duration if at_end else r.start

    if unit == "sec":
        return lambda r: str(int(moment(r)))
    if unit == "msec":
        return lambda r: str(int(moment(r) * 1000))
    if unit == "usec":
        return lambda r: str(int(moment(r) * 1_000_000))
    if unit == "msec_frac":
        return lambda r: f"{int(moment(r) * 1000) % 1000:03d}"
    if unit == "usec_frac":
        return lambda r: f"{int(moment(r) * 1_000_000) % 1_000_000:06d}"
    cache: list[tuple[int, str]] = [(-1, "")]  # (second, text), replaced whole: no lock

    def render(r: AccessRecord) -> str:
        second = int(moment(r))
        cached = cache[0]
        if cached[0] != second:
            cached = cache[0] = (second, time.strftime(unit, time.localtime(second)))
        return cached[1]

    return render


def _tls_field(name: str) -> Field:
    """%{SSL_PROTOCOL}x (TLSv1.3...) or %{SSL_CIPHER}x (OpenSSL's name of the suite), as
    mod_ssl logs them; "-" on a plain connection."""
    if name == "SSL_PROTOCOL":
        return lambda r: (r.tls.version() if r.tls is not None else None) or "-"
    if name == "SSL_CIPHER":
        return lambda r: (r.tls.cipher() if r.tls is not None else None) or "-"
    raise ValueError(f"%{{{name}}}x: expected %{{SSL_PROTOCOL}}x or %{{SSL_CIPHER}}x")


def _header_field(letter: str, name: str) -> Field:
    """%{name}i (a request field) or %{name}o (a response field)."""
    if letter == "i":
        return lambda r: _header_value(r.request_headers, name)
    return lambda r: _response_header(r.response_headers, name)


def compile_access_format(fmt: str, specialise: bool = True
                          ) -> Callable[[AccessRecord], str]:
    """Compile an Apache LogFormat string into a function from AccessRecord to a line.

    Raises ValueError for an unknown directive (config.py validates the same grammar).
    """
    if specialise and fmt == COMBINED_FORMAT:
        return _combined()
    parts: list[str | Field] = []
    position = 0
    for match in ACCESS_FORMAT_DIRECTIVE.finditer(fmt):
        if match.start() > position:
            parts.append(fmt[position:match.start()])
        position = match.end()
        arg, letter = match.group(1), match.group(3)
        if letter == "%":
            parts.append("%")
        elif letter == "t":
            parts.append(_time_field(arg or ""))
        elif letter in "io":
            if not arg:  # the config refuses it first (values.access_format)
                raise ValueError(f"%{letter} needs a header name, as in %{{Referer}}{letter}")
            parts.append(_header_field(letter, arg))
        elif letter == "x":
            parts.append(_tls_field(arg or ""))
        elif letter in _FIELDS:
            parts.append(_FIELDS[letter])
        else:
            raise ValueError(f"unsupported directive %{letter}")
    if position < len(fmt):
        parts.append(fmt[position:])
    def render(record: AccessRecord) -> str:
        return "".join(p if isinstance(p, str) else p(record) for p in parts)

    return render


class _FileLog:
    """A log whose file may be absent (access_log = off, or tests)."""

    file: _LogFile | None

    def reopen(self) -> None:
        if self.file is not None:
            self.file.reopen()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class AccessLog(_FileLog):
    """Writes one line per request; `None` path (access_log = off) makes log() a no-op."""

    def __init__(self, path: str | None, fmt: str) -> None:
        self.file = _LogFile(path) if path else None
        self.render = compile_access_format(fmt)

    @property
    def enabled(self) -> bool:
        return self.file is not None

    def log(self, record: AccessRecord) -> None:
        if self.file is not None:
            self.file.write((self.render(record) + "\n").encode("utf-8", "backslashreplace"))


# ------------------------------------------------------------------ error log

LEVEL_RANK = {name: rank for rank, name in enumerate(LOG_LEVELS)}
# Refusals an operator acts on (fail2ban-style filters, limits to raise), logged at info with
# the client's address: failed or missing credentials, forbidden paths, slow clients, and
# requests past a limit; and the protocol errors a client cannot cause by following a link.
OPERATOR_STATUSES = frozenset({401, 403, 408, 413, 414, 431, 501, 505})


def error_time(timestamp: float) -> str:
    """Apache 2.4 error-log time: Sat Nov 21 23:30:00.123456 2026."""
    local = time.localtime(timestamp)
    micros = int((timestamp % 1) * 1_000_000)
    return time.strftime("%a %b %d %H:%M:%S", local) + f".{micros:06d} {local.tm_year}"


def error_time_compact(timestamp: float, micros: bool) -> str:
    """Apache's compact ISO 8601 error-log time (%{c}t, %{cu}t): 2026-11-21 23:30:00.123456."""
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    return text + f".{int((timestamp % 1) * 1_000_000):06d}" if micros else text


@dataclass(slots=True)
class ErrorEvent:
    """What an error-log format may ask for about one record."""

    level: str
    message: str  # already clipped and escaped: one line
    client: tuple[str, int] | str | None
    exc: BaseException | None
    when: float


def _client_text(client: tuple[str, int] | str | None) -> str:
    if not client:
        return ""
    return client if isinstance(client, str) else f"{client[0]}:{client[1]}"


def _client_host(client: tuple[str, int] | str | None) -> str:
    if not client:
        return ""
    if isinstance(client, str):  # "ip:port" or "[v6]:port", as the caller wrote it
        host, _, port = client.rpartition(":")
        return host.strip("[]") if host and port.isdigit() else client
    return client[0]


def _os_error(exc: BaseException | None) -> str:
    """%E: Apache prints an APR/OS status as (errno)text; prefork's is an OSError's."""
    if isinstance(exc, OSError) and exc.errno:
        return f"({exc.errno}){exc.strerror or os.strerror(exc.errno)}"
    return ""


_THIS_FILE = __file__


def _caller() -> str:
    """%F: file(line) of the code that logged, the first frame outside this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == _THIS_FILE:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return ""
    return f"{os.path.basename(frame.f_code.co_filename)}({frame.f_lineno})"


ErrorField = Callable[[ErrorEvent], str]


def _error_field(item: ErrorItem) -> ErrorField:
    letter, arg = item.letter, item.arg
    if letter == "t":
        if "c" in arg:
            micros = "u" in arg
            return lambda e: error_time_compact(e.when, micros)
        if arg == "u":
            return lambda e: error_time(e.when)
        return lambda e: time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(e.when))
    fields: dict[str, ErrorField] = {
        "a": lambda e: _client_text(e.client),
        "h": lambda e: _client_host(e.client),
        "E": lambda e: _os_error(e.exc),
        "F": lambda e: _caller(),
        "l": lambda e: e.level,
        "m": lambda e: "core",
        "M": lambda e: e.message,
        "P": lambda e: str(os.getpid()),
        "T": (lambda e: str(threading.get_native_id())) if arg == "g"
        else (lambda e: str(threading.get_ident())),
    }
    return fields[letter]


def _default_error_line(event: ErrorEvent) -> str:
    """DEFAULT_ERROR_FORMAT, written out: the same text as the general renderer (a test
    checks), and the layout every earlier prefork wrote."""
    prefix = (f"[{error_time(event.when)}] [core:{event.level}] "
              f"[pid {os.getpid()}:tid {threading.get_native_id()}] ")
    if event.client:
        prefix += f"[client {_client_text(event.client)}] "
    return prefix + event.message


def compile_error_format(fmt: str, specialise: bool = True) -> Callable[[ErrorEvent], str]:
    """Compile an Apache ErrorLogFormat string (config.values.parse_error_format, which
    raises ValueError for what prefork cannot render) into a function from an ErrorEvent
    to the record's first line. Fields are dropped as Apache's do_errorlog_format drops
    them: an item with no value removes its whole field, back to where that field began."""
    if specialise and fmt == DEFAULT_ERROR_FORMAT:
        return _default_error_line
    items = [(item, None if not item.letter else _error_field(item))
             for item in parse_error_format(fmt)]

    def render(event: ErrorEvent) -> str:
        out: list[str] = []
        field_start = 0
        skipping = False
        level = APACHE_LEVELS[event.level]
        for item, field in items:
            if item.starts_field:
                if skipping:
                    skipping = False
                else:
                    field_start = len(out)
            if item.letter == "M":  # the message is always written, as in Apache
                out.append(event.message)
                continue
            if skipping:
                continue
            if field is None:
                out.append(item.text)
                continue
            value = field(event) if item.min_level <= level else ""
            if value:
                out.append(value)
            elif item.hyphen and item.min_level <= level:
                out.append("-")
            else:
                del out[field_start:]
                skipping = True
        return "".join(out)

    return render


class ErrorLog(_FileLog):
    """One line per record in `fmt` (an Apache ErrorLogFormat; by default
    `[date] [core:level] [pid N:tid N] [client ip:port] message`), filtered by level.

    With `mirror_to_stderr` (httpdctl start --foreground) every record also goes to stderr,
    which is where systemd's journal and a developer's terminal look.
    """

    def __init__(self, path: str | None, level: str = "info",
                 mirror_to_stderr: bool = False, fmt: str = DEFAULT_ERROR_FORMAT) -> None:
        self.file = _LogFile(path) if path else None
        self.threshold = LEVEL_RANK[level]
        self.mirror_to_stderr = mirror_to_stderr
        self.render = compile_error_format(fmt)
        # For HTTPError.log_every: error class name -> (monotonic time before which its
        # lines are held back, how many were held back). One entry per class: bounded.
        self._held: dict[str, tuple[float, int]] = {}
        self._held_lock = threading.Lock()

    def enabled_for(self, level: str) -> bool:
        return LEVEL_RANK[level] >= self.threshold

    def log(self, level: str, message: str, client: tuple[str, int] | str | None = None,
            exc: BaseException | None = None, appendix: str = "") -> None:
        """Write one record if its level passes: the one-line message, then the traceback of
        `exc` and the lines of `appendix` (a stack dump), indented, in the same write()."""
        if LEVEL_RANK[level] < self.threshold:
            return
        if len(message) > MAX_MESSAGE:  # client-controlled text must not flood the log
            message = message[:MAX_MESSAGE] + f"... ({len(message) - MAX_MESSAGE} more)"
        event = ErrorEvent(level, message.replace("\n", "\\n"), client, exc, time.time())
        text = self.render(event) + "\n"
        if exc is not None:
            appendix = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) \
                + appendix
        if appendix:
            text += "".join("    " + line for line in appendix.splitlines(True))
            text += "" if text.endswith("\n") else "\n"
        data = text.encode("utf-8", "backslashreplace")
        if self.file is not None:
            self.file.write(data)
        if self.mirror_to_stderr:
            try:
                sys.stderr.buffer.write(data)
                sys.stderr.buffer.flush()
            except (OSError, ValueError):
                pass

    def http_error(self, exc: HTTPError, request: str = "",
                   client: tuple[str, int] | str | None = None,
                   protocol: bool = False) -> None:
        """Record an error answer at the level its cause deserves: `error` for a server
        fault (HTTPError.server_fault), `info` for a client's protocol error (`protocol`:
        the parser refused the request) and the refusals in OPERATOR_STATUSES (401, 403,
        408, 413, 414, 431, 501, 505), `debug` for a handler's ordinary refusal (404, 405,
        409...: the access log has those). `request` (a method and target, as received)
        and the detail are clipped and escaped, so a client can neither flood the log nor
        write raw bytes into it (the detail is our text: only its control characters are
        escaped). An error class with
        `log_every` is written at most once per that many seconds in this process."""
        if exc.server_fault:
            level = "error"
        elif protocol or exc.status in OPERATOR_STATUSES:
            level = "info"
        else:
            level = "debug"
        if LEVEL_RANK[level] < self.threshold:
            return
        note = ""
        if exc.log_every:
            held = self.hold(type(exc).__name__, exc.log_every)
            if held is None:
                return
            if held:
                note = f" ({held} more since the last such line)"
            note += f"; the next such line comes {exc.log_every:g} s from now at the earliest"
        message = f"{exc.status} {_CONTROLS.sub(_hex, exc.detail)}"
        if request:
            clipped = request[:LOGGED_REQUEST] + ("..." if len(request) > LOGGED_REQUEST else "")
            message += f": {escape(clipped)}"
        self.log(level, message + note, client)

    def hold(self, key: str, interval: float) -> int | None:
        """Rate-limit lines of one kind (`key`) to one per `interval` seconds in this
        process: None while they are held back (counted); else how many were."""
        now = time.monotonic()
        with self._held_lock:
            until, held = self._held.get(key, (0.0, 0))
            if now < until:
                self._held[key] = (until, held + 1)
                return None
            self._held[key] = (now + interval, 0)
            return held

    def debug(self, message: str, client: tuple[str, int] | str | None = None) -> None:
        if self.threshold == 0:
            self.log("debug", message, client)

    def info(self, message: str, client: tuple[str, int] | str | None = None) -> None:
        self.log("info", message, client)

    def notice(self, message: str, client: tuple[str, int] | str | None = None) -> None:
        self.log("notice", message, client)

    def warn(self, message: str, client: tuple[str, int] | str | None = None) -> None:
        self.log("warn", message, client)

    def error(self, message: str, client: tuple[str, int] | str | None = None,
              exc: BaseException | None = None) -> None:
        self.log("error", message, client, exc)
