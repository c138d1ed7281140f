"""HTTP/1.1 request parsing and response serialisation, sans I/O (RFC 9110 / RFC 9112).

How this works: RequestParser keeps received bytes in a bytearray and `_pos`, the first
byte not consumed; feed() drops the consumed prefix (O(1) for a bytearray) and appends.
next_event() runs a state machine (any error → DEAD, which raises that error again):

    HEAD ─RequestHead─► DATA (Content-Length) ──────────────────────────► END ─┐
                   └──► CHUNK_SIZE ⇄ DATA (chunk) ... last chunk ─► TRAILERS ─┴─EndOfMessage─► DONE
    DONE ─start_next_request()─► HEAD

A complete head takes the fast path: one find(b"\\r\\n\\r\\n"), one latin-1 decode, one regex
for the request-line, one findall() for all field lines; counting CR, LF and matches proves
each line ended in CRLF, held no other CR/LF and parsed. Any doubt, and every incomplete
head, goes to _scan_lines(): it walks only lines not seen before and raises 414/431/400
(limits, bare CR or LF) as soon as the buffer proves them, the error at the earliest byte
first; syntax errors come after those. So the outcome never depends on how the input was
split into feed() calls.

Where the RFCs allow either: a bare LF line ending gets 400 (RFC 9112 §2.2 MAY accept it,
but a front end that does not sees other header lines: a desync vector); up to 10 empty
lines before a request-line are skipped (§2.2, Apache's bound); HTTP/1.x other than 1.0
and 1.1 gets 505; an empty Host gets 400; Transfer-Encoding must be a list ending in one
"chunked": another final coding or an empty element → 400, codings before chunked → 501
(we decode none); identical repeated Content-Lengths are accepted (RFC 9110 §8.6);
100-continue on HTTP/1.0 is ignored (RFC 9110 §10.1.1), other expectations get 417; a
request-target may hold any visible ASCII and obs-text bytes 0x80-0xFF, raw UTF-8 (as nginx
and Apache), but no control, SP or DEL.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from prefork import errors
from prefork.errors import BadRequest, ClientDisconnected, HTTPError
from prefork.http.message import Headers
from prefork.http.wire import (  # re-exported: the serialising half of the protocol
    LAST_CHUNK,
    REASONS,
    encode_chunk,
    format_response_head,
    http_date,
    parse_http_date,
)

__all__ = ["LAST_CHUNK", "NEED_DATA", "REASONS", "BodyChunk", "EndOfMessage", "Limits",
           "NeedData", "RequestHead", "RequestParser", "encode_chunk", "format_response_head",
           "http_date", "parse_http_date", "request_line_parts"]

# Defaults follow Apache httpd's core limits (LimitRequestLine, LimitRequestFields,
# LimitRequestFieldSize) and its LimitRequestBody default of 1 GiB since 2.4.54.
DEFAULT_LIMIT_REQUEST_LINE = 8190
DEFAULT_LIMIT_REQUEST_FIELDS = 100
DEFAULT_LIMIT_REQUEST_FIELD_SIZE = 8190
DEFAULT_LIMIT_REQUEST_BODY = 1 << 30
MAX_EMPTY_LINES = 10  # CRLFs skipped before a request-line (Apache's DEFAULT_LIMIT_BLANK_LINES)
# The request fields the parser acts on (_parse_head): its message.FieldNames.
READS_FIELDS = frozenset({"host", "content-length", "transfer-encoding", "expect", "connection"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Bytes, CRLF not counted. field_size also bounds chunk-size lines, fields trailers."""

    request_line: int = DEFAULT_LIMIT_REQUEST_LINE
    fields: int = DEFAULT_LIMIT_REQUEST_FIELDS
    field_size: int = DEFAULT_LIMIT_REQUEST_FIELD_SIZE
    body: int = DEFAULT_LIMIT_REQUEST_BODY  # 0 = unlimited


@dataclass(slots=True)  # not frozen: that would cost ~1.5 µs per request
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

# ----------------------------------------------------------------------------- grammar

# token = 1*tchar                                                     (RFC 9110 §5.6.2)
# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
#         / "~" / DIGIT / ALPHA
_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)

# request-line = method SP request-target SP HTTP-version               (RFC 9112 §3)
# method = token ; HTTP-version = HTTP-name "/" DIGIT "." DIGIT        (RFC 9112 §2.3)
# request-target: visible US-ASCII or obs-text (%x80-FF) here; _target() checks its form.
# RFC 3986 has no raw non-ASCII in a URI, but clients send raw UTF-8 paths and Apache and
# nginx serve them as if percent-encoded; controls, SP and DEL stay refused (400).
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}) ([\x21-\x7e\x80-\xff]+) (HTTP/[0-9]\.[0-9])")
_METHOD_RE = re.compile(rf"({_TOKEN}) ".encode())  # the start of a request-line

# field-line = field-name ":" OWS field-value OWS CRLF                  (RFC 9112 §5)
# field-name = token ; field-value = *field-content                    (RFC 9110 §5.5)
# field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
# field-vchar = VCHAR / obs-text    (CTLs but HTAB are ruled out first: see _ALLOWED)
# findall() runs it over a whole section; "^" keeps a bad line (obs-fold, space before
# the colon...) from matching in part, so the match count shows it. OWS: stripped after.
_FIELD_LINE_RE = re.compile(rf"^({_TOKEN}):[ \t]*(.*)\r\n", re.MULTILINE)
_ALLOWED = bytes(b for b in range(256) if (b > 31 and b != 127) or b in b"\t\r\n")

# Host = uri-host [ ":" port ]                                          (RFC 9110 §7.2)
# uri-host = IP-literal / IPv4address / reg-name ; port = *DIGIT     (RFC 3986 §3.2.2)
# IP-literal = "[" ( IPv6address / IPvFuture ) "]"   (IPv6address: ipaddress checks it)
# IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
# reg-name = *( unreserved / pct-encoded / sub-delims )    (1* here: RFC 9110 §4.2.1)
_HOST_RE = re.compile(
    r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|\[v[0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+\]"
    r"|(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::[0-9]*)?")

# absolute-form = absolute-URI                                       (RFC 9112 §3.2.2)
# http-URI = "http" "://" authority path-abempty [ "?" query ]       (RFC 9110 §4.2.1)
# (https-URI likewise; the authority must pass _HOST_RE: no userinfo, not empty)
_ABSOLUTE_RE = re.compile(r"(?i:https?)://([^/?]*)([^?]*)(?:\?(.*))?")

# Content-Length = 1*DIGIT (RFC 9110 §8.6); at most 18 digits: no unbounded integers
_LENGTH_RE = re.compile(r"[0-9]{1,18}")

# chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF               (RFC 9112 §7.1)
# chunk-size = 1*HEXDIG                                    (at most 16 digits here)
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )  (§7.1.1)
# chunk-ext-name = token ; chunk-ext-val = token / quoted-string
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE              (RFC 9110 §5.6.4)
# qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
# quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
_BTOKEN = _TOKEN.encode()
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
_CHUNK_LINE_RE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*" + _BTOKEN
                            + rb"(?:[ \t]*=[ \t]*(?:" + _BTOKEN + rb"|" + _QUOTED + rb"))?)*")

_HEAD, _DATA, _CHUNK_SIZE, _TRAILERS, _END, _DONE, _DEAD = range(7)
_CONNECTION = {"keep-alive": True, "close": False}  # the usual whole Connection values
HOST_MEMO_SIZE = 256  # Host values a memo remembers before it starts over
_NO_TRAILERS = EndOfMessage(Headers())


class RequestParser:
    """Turns received bytes into RequestHead, BodyChunk and EndOfMessage events."""

    __slots__ = ("_begin", "_buf", "_chunked", "_crlf", "_dropped", "_eof", "_error", "_hosts",
                 "_limits", "_lines", "_pos", "_remaining", "_request_line", "_scan", "_skipped",
                 "_state", "_total")

    def __init__(self, limits: Limits = Limits(), host_memo: dict[str, str] | None = None
                 ) -> None:
        """`host_memo`: Host values already found valid -> lower-cased; a worker shares one
        between its connections so the RFC 3986 check runs once per distinct Host."""
        self._limits, self._buf, self._state = limits, bytearray(), _HEAD
        self._hosts = host_memo if host_memo is not None else {}
        self._eof = self._chunked = self._crlf = False  # _crlf: CRLF must end chunk-data
        self._error: HTTPError | ClientDisconnected | None = None
        self._request_line: str | None = None
        # _pos: the first byte not consumed; _scan: the first line _scan_lines() has not
        # passed, _lines: how many it passed in this section; _skipped: empty lines before
        # the request-line; _remaining: bytes left in the body or the current chunk;
        # _total: chunked body bytes announced so far.
        self._pos = self._scan = self._lines = self._skipped = self._remaining = self._total = 0
        # For `received`: bytes feed() dropped from the front of the buffer so far, and the
        # offset (counted from the first byte ever fed) where the current request began.
        self._dropped = self._begin = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes (ignored after feed_eof() or an error)."""
        if self._eof or self._state == _DEAD:
            return
        if self._pos:
            self._dropped += self._pos
            del self._buf[:self._pos]
            self._scan = max(0, self._scan - self._pos)
            self._pos = 0
        self._buf += data

    def feed_eof(self) -> None:
        """The peer half-closed or closed: no more bytes will come."""
        self._eof = True

    def next_event(self) -> Event:
        """Return the next event, or NEED_DATA when more bytes are needed. Raises HTTPError
        (close=True) for an invalid request, ClientDisconnected for EOF inside a message;
        from then on the parser is dead and raises that again."""
        try:
            return _STEPS[self._state](self)
        except (HTTPError, ClientDisconnected) as exc:
            self._state = _DEAD
            self._error = exc
            raise

    def start_next_request(self) -> None:
        """After EndOfMessage, get ready for the next (maybe already buffered) request.
        No-op before a head or once dead; RuntimeError in the middle of a body (a bug)."""
        if self._state == _DONE:
            self._state, self._request_line, self._scan = _HEAD, None, self._pos
            self._lines = self._skipped = 0
            self._begin = self._dropped + self._pos
        elif self.in_body:
            raise RuntimeError("start_next_request() before the body was read to its end")

    def request_answered(self) -> None:
        """A request was read and answered without this parser while it was idle (the quick
        path): the empty lines it skipped counted towards that request, and the limit starts
        over for the next one, as after EndOfMessage."""
        if self.idle:
            self._lines = self._skipped = 0

    @property
    def idle(self) -> bool:
        """True between requests with no bytes buffered: safe to close on a timeout."""
        return self._state == _HEAD and self._pos == len(self._buf)

    @property
    def eof(self) -> bool:
        """True once feed_eof() was called."""
        return self._eof

    @property
    def buffered(self) -> int:
        """The number of bytes received and not yet consumed."""
        return len(self._buf) - self._pos

    @property
    def received(self) -> int:
        """Bytes of the current request the parser took (request-line, fields, the body as
        framed, empty lines before it): mod_logio's %I. Once the parser refused the request,
        everything received for it counts, as far as it was read."""
        taken = self._dropped + self._pos - self._begin
        return taken + self.buffered if self._state == _DEAD else taken

    @property
    def request_line(self) -> str | None:
        """The current request-line (latin-1) once complete, even if parsing failed later."""
        return self._request_line

    @property
    def method(self) -> str | None:
        """The current request's method as soon as its request-line starts with one (a
        token and SP), even when the request was refused (a line too long, a bad version):
        an error answer to HEAD must carry no body (RFC 9110 §9.3.2). None otherwise."""
        if self._request_line is not None:
            method, sep, _ = self._request_line.partition(" ")
            return method if sep else None
        match = _METHOD_RE.match(self._buf, self._pos)
        return match[1].decode("latin-1") if match else None

    @property
    def in_body(self) -> bool:
        """True after a RequestHead until its EndOfMessage has been returned."""
        return _HEAD < self._state < _DONE

    def _need(self, where: str) -> NeedData:  # raises ClientDisconnected after EOF
        if self._eof:
            raise ClientDisconnected(f"EOF in the middle of {where}")
        return NEED_DATA

    def _dead(self) -> Event:
        assert self._error is not None
        raise self._error

    def _end(self) -> Event:
        self._state = _DONE
        return _NO_TRAILERS

    def _head(self) -> Event:
        buf = self._buf
        pos = self._pos
        while buf.startswith(b"\r\n", pos):  # RFC 9112 §2.2: skip empty lines before it
            self._skipped += 1
            if self._skipped > MAX_EMPTY_LINES:
                raise BadRequest("too many empty lines before the request-line")
            pos = self._pos = pos + 2
            self._scan = max(self._scan, pos)
        end = buf.find(b"\r\n\r\n", max(pos, self._scan - 2))
        if end < 0:
            self._scan_lines(True)
            return self._need("a request head") if len(buf) > pos else NEED_DATA
        line, fields, problem = self._section(pos, end, True)
        self._request_line = line
        head = self._parse_head(line, fields, problem)
        self._pos = self._scan = end + 4
        self._chunked, self._remaining, self._total = head.chunked, head.content_length or 0, 0
        self._state = _CHUNK_SIZE if head.chunked else _DATA if self._remaining else _END
        return head

    def _section(self, pos: int, end: int,
                 head: bool) -> tuple[str, list[tuple[str, str]], str | None]:
        """Split a complete head (or trailer section): buf[pos:end] and its last CRLF.
        Returns (request-line or "", [(name, value)], a field syntax problem or None);
        raises what _scan_lines() finds (stray CR or LF, limits) before anything else."""
        raw = self._buf[pos:end + 2]
        text = raw.decode("latin-1")
        lines = text.count("\n")
        first = text.find("\r\n") + 2 if head else 0
        fields = _FIELD_LINE_RE.findall(text, first)
        count = len(fields)
        limits = self._limits
        problem = None
        if (count != lines - head or text.count("\r") != lines or count > limits.fields
                or first - 2 > limits.request_line or raw.translate(None, _ALLOWED)
                or len(text) - first - 2 * count > limits.field_size):
            self._scan_lines(head)  # the exact checks; then only syntax can be wrong
            if count != lines - head or raw.translate(None, _ALLOWED):
                problem = "malformed field line (RFC 9112 §5; no obs-fold: §5.2)"
        if " \r\n" in text or "\t\r\n" in text:
            fields = [(name, value.rstrip(" \t")) for name, value in fields]
        return text[:first - 2], fields, problem

    def _scan_lines(self, head: bool) -> None:
        """Check the lines from self._scan on, the last one possibly incomplete. Raises
        URITooLong or HeaderFieldsTooLarge (a line too long, too many lines) or BadRequest
        (CR without LF, LF without CR: RFC 9112 §2.2), whichever starts first."""
        buf = self._buf
        size = len(buf)
        limits = self._limits
        start = self._scan
        while True:
            nl = buf.find(b"\n", start)
            end = size if nl < 0 else nl
            length = end - start  # a complete line's length counts its CR
            if nl == start + 1 and buf[start] == 13:
                break  # the empty line ending the section
            if self._lines >= limits.fields + head and (
                    nl >= 0 or length > 1 or (length == 1 and buf[start] != 13)):
                raise errors.HeaderFieldsTooLarge(f"more than {limits.fields} header fields")
            first = head and self._lines == 0
            limit = limits.request_line if first else limits.field_size
            cr = buf.find(b"\r", start, end - 1)
            if length > limit + 1 and (cr < 0 or cr - start > limit):
                raise (errors.URITooLong if first else errors.HeaderFieldsTooLarge)(
                    f"line longer than {limit} bytes")
            if cr >= 0:
                raise BadRequest("CR not followed by LF (RFC 9112 §2.2)")
            if nl < 0:
                break
            if length == 0 or buf[end - 1] != 13:
                raise BadRequest("line ends in a bare LF (CRLF required)")
            if first:
                self._request_line = buf[start:end - 1].decode("latin-1")
            self._lines += 1
            start = nl + 1
        self._scan = start

    def _parse_head(self, line: str, fields: list[tuple[str, str]],
                    problem: str | None) -> RequestHead:
        """Return the RequestHead; raises HTTPError (see the module comment)."""
        match = _REQUEST_LINE_RE.fullmatch(line)
        if match is None:
            raise BadRequest("malformed request-line (RFC 9112 §3)")
        method, target, version = match.groups()
        if version != "HTTP/1.1" and version != "HTTP/1.0":
            raise errors.VersionNotSupported(f"{version} is not supported")
        if problem:
            raise BadRequest(problem)
        headers = Headers(fields)
        path, query, authority = _target(method, target)
        http11 = version == "HTTP/1.1"
        hosts = headers.get_all("host")  # RFC 9112 §3.2: one valid Host; 1.1 requires it
        if len(hosts) > 1 or (http11 and not hosts):
            raise BadRequest("a request needs exactly one Host header field")
        memo = self._hosts
        host = memo.get(hosts[0]) if hosts else ""
        if host is None:
            if not _valid_host(hosts[0]):
                raise BadRequest("invalid Host header field")
            if len(memo) >= HOST_MEMO_SIZE:
                memo.clear()
            host = memo[hosts[0]] = hosts[0].lower()
        if authority is not None:  # §3.2.2: the absolute-form's authority wins
            host = authority
        length = None
        lengths = headers.get_all("content-length")
        chunked = "transfer-encoding" in headers and _check_codings(  # RFC 9112 §6.1, §6.3
            headers.get_all("transfer-encoding"), http11, lengths)
        if lengths and not chunked:
            length = _content_length(lengths)
            if self._limits.body and length > self._limits.body:
                raise errors.ContentTooLarge(f"Content-Length over {self._limits.body}")
        expect_continue = False
        if "expect" in headers:  # RFC 9110 §10.1.1
            expect = headers.get_joined("expect") or ""  # present: "expect" in headers
            items = [e.strip(" \t").lower() for e in expect.split(",")]
            if any(e and e != "100-continue" for e in items):
                raise errors.ExpectationFailed("only 100-continue is supported")
            expect_continue = http11 and any(items)
        connection = headers.get_joined("connection")  # RFC 9112 §9.3
        if connection is None:
            keep_alive = http11
        elif (keep_alive := _CONNECTION.get(connection.lower())) is None:
            tokens = headers.tokens("connection")
            keep_alive = "close" not in tokens and (http11 or "keep-alive" in tokens)
        return RequestHead(method, target, path, query, version, headers, keep_alive,
                           length, chunked, expect_continue, host)

    def _data(self) -> Event:
        """Body bytes: of the Content-Length body, or of the current chunk."""
        buf = self._buf
        pos = self._pos
        n = min(len(buf) - pos, self._remaining)
        if n == 0:
            return self._need("a request body")
        self._pos = pos + n
        self._remaining -= n
        if not self._remaining:
            self._state = _CHUNK_SIZE if self._chunked else _END
        return BodyChunk(bytes(buf[pos:pos + n]))

    def _chunk_size(self) -> Event:
        """The CRLF ending chunk-data, then a chunk-size line (RFC 9112 §7.1). Raises
        BadRequest when either is malformed, ContentTooLarge over limits.body."""
        buf = self._buf
        pos = self._pos
        if self._crlf:
            if buf[pos:pos + 2] != b"\r\n"[:len(buf) - pos]:
                raise BadRequest("chunk-data not followed by CRLF")
            if len(buf) - pos < 2:
                return self._need("a chunked body")
            pos = self._pos = pos + 2
            self._crlf = False
        limit = self._limits.field_size
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if len(buf) - pos > limit + 1 or buf.find(b"\r", pos, len(buf) - 1) >= 0:
                raise BadRequest("malformed chunk-size line")
            return self._need("a chunked body")
        match = _CHUNK_LINE_RE.fullmatch(buf, pos, nl - 1)
        if match is None or buf[nl - 1] != 13 or nl - pos > limit + 1:
            raise BadRequest("malformed chunk-size line")
        size = int(match[1], 16)
        self._total += size
        if self._limits.body and self._total > self._limits.body:
            raise errors.ContentTooLarge(f"chunked body over the limit of {self._limits.body}")
        self._pos = self._scan = nl + 1
        if size == 0:
            self._state = _TRAILERS
            self._lines = 0
            return self._trailers()
        self._state = _DATA
        self._remaining = size
        self._crlf = True
        return self._data()

    def _trailers(self) -> Event:
        """The trailer section after the last chunk (RFC 9112 §7.1.2)."""
        buf = self._buf
        pos = self._pos
        if buf.startswith(b"\r\n", pos):
            self._pos = pos + 2
            self._state = _DONE
            return _NO_TRAILERS
        end = buf.find(b"\r\n\r\n", max(pos, self._scan - 2))
        if end < 0:
            self._scan_lines(False)
            return self._need("a trailer section")
        _, fields, problem = self._section(pos, end, False)
        if problem:
            raise BadRequest(problem)
        self._pos = end + 4
        self._state = _DONE
        return EndOfMessage(Headers(fields))


_STEPS = (RequestParser._head, RequestParser._data, RequestParser._chunk_size,
          RequestParser._trailers, RequestParser._end, lambda self: NEED_DATA,
          RequestParser._dead)  # indexed by state


def request_line_parts(line: str) -> tuple[str, str, str, str]:
    """(method, path, query, version) of a request-line as far as it splits on SP, for the
    access log of a request the parser refused after reading its line (no Host, a bad
    field...): "" for a part the line does not have. Never raises."""
    method, _, rest = line.partition(" ")
    target, _, version = rest.partition(" ")
    path, _, query = target.partition("?")
    return method, path, query, version


def _valid_host(value: str) -> bool:
    """Return whether `value` is uri-host [ ":" port ] (RFC 3986 §3.2.2, non-empty)."""
    match = _HOST_RE.fullmatch(value)
    try:
        return match is not None and (match["ip6"] is None
                                      or bool(ipaddress.IPv6Address(match["ip6"])))
    except ValueError:
        return False


def _target(method: str, target: str) -> tuple[str, str, str | None]:
    """Return (path, query, authority or None) for a request-target (RFC 9112 §3.2).
    Raises NotImplementedMethod for CONNECT's authority-form, BadRequest for a form the
    method may not use or a malformed absolute-form."""
    if method == "CONNECT":  # §3.2.3: authority-form = uri-host ":" port; no tunnels here
        if _valid_host(target) and target.rpartition(":")[2].isdigit():
            raise errors.NotImplementedMethod("CONNECT is not supported")
        raise BadRequest("CONNECT needs an authority-form request-target")
    if target[0] == "/":  # origin-form, §3.2.1
        path, _, query = target.partition("?")
        return path, query, None
    if target == "*" and method == "OPTIONS":  # asterisk-form, §3.2.4
        return "*", "", None
    match = _ABSOLUTE_RE.fullmatch(target)  # absolute-form, §3.2.2
    if match is None or not _valid_host(match[1]):
        raise BadRequest("invalid request-target for this method")
    return match[2] or "/", match[3] or "", match[1].lower()


def _check_codings(values: list[str], http11: bool, lengths: list[str]) -> bool:
    """Return True: the Transfer-Encoding is chunked (RFC 9112 §6.1, §6.3). Raises
    BadRequest on HTTP/1.0, beside Content-Length, when chunked is not the final coding or
    is there twice; NotImplementedMethod for codings before chunked."""
    if not http11 or lengths:
        raise BadRequest("Transfer-Encoding with Content-Length or in HTTP/1.0")
    codings = [c.strip(" \t").lower() for c in ",".join(values).split(",")]
    if codings[-1] != "chunked" or not all(codings) or codings.count("chunked") > 1:
        raise BadRequest("chunked is not the final transfer coding, or is there twice")
    if len(codings) > 1:
        raise errors.NotImplementedMethod(f"transfer coding {codings[0]!r} is not supported")
    return True


def _content_length(values: list[str]) -> int:
    """Return the Content-Length (RFC 9110 §8.6; identical repeats accepted). Raises
    BadRequest for anything but 1*DIGIT (at most 18) or for differing values."""
    items = [item.strip(" \t") for value in values for item in value.split(",")]
    if not all(_LENGTH_RE.fullmatch(item) for item in items) or len(set(map(int, items))) > 1:
        raise BadRequest("invalid Content-Length")
    return int(items[0])
