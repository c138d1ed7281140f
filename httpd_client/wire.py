"""Reading HTTP/1.x responses without I/O: the head, chunked bodies, and naming failures.

Only what a load generator needs to frame responses on a persistent connection
(RFC 9112 §6.3): status, Content-Length, chunked, and whether the connection stays open.
"""

from __future__ import annotations

import errno

MAX_LINE = 8192  # longest chunk-size or trailer line accepted


class BadResponse(Exception):
    """The server's bytes are not an HTTP/1.x response we can frame."""


def parse_head(buf: bytes, end: int) -> tuple[int, int, bool, bool]:
    """(status, Content-Length or -1, chunked, keep-alive) from a response head.

    `end` is the index of the blank line's CRLFCRLF in `buf`. Raises BadResponse."""
    if not buf.startswith(b"HTTP/1.") or len(buf) < 12 or buf[8:9] != b" ":
        raise BadResponse("not an HTTP/1.x status line")
    try:
        status = int(buf[9:12])
    except ValueError:
        raise BadResponse("bad status code") from None
    head = buf[:end + 2].lower()
    length, chunked = -1, False
    pos = head.find(b"\r\ntransfer-encoding:")
    if pos >= 0:  # RFC 9112 §6.3: chunked as the final coding wins over Content-Length
        chunked = head[pos + 20:head.index(b"\r\n", pos + 2)].rstrip().endswith(b"chunked")
    pos = head.find(b"\r\ncontent-length:")
    if pos >= 0 and not chunked:
        try:
            length = int(head[pos + 17:head.index(b"\r\n", pos + 2)])
        except ValueError:
            raise BadResponse("bad Content-Length") from None
        if length < 0:
            raise BadResponse("bad Content-Length")
    keep = buf[7:8] == b"1"  # HTTP/1.1 defaults to persistent, 1.0 to close (RFC 9112 §9.3)
    pos = head.find(b"\r\nconnection:")
    if pos >= 0:
        value = head[pos + 13:head.index(b"\r\n", pos + 2)]
        if b"close" in value:
            keep = False
        elif b"keep-alive" in value:
            keep = True
    return status, length, chunked, keep


class ChunkedReader:
    """Follows a chunked body (RFC 9112 §7.1) across reads, counting rather than keeping it."""

    __slots__ = ("left", "line", "trailer")

    def __init__(self) -> None:
        self.left = 0  # bytes of chunk data (and its CRLF) still to come
        self.line = b""  # a size or trailer line cut by the end of a read
        self.trailer = False  # past the last chunk

    def feed(self, data: bytes) -> bool:
        """Consume `data`; True once the body is complete. Raises BadResponse."""
        pos, size = 0, len(data)
        while pos < size:
            if self.left:
                take = min(self.left, size - pos)
                self.left -= take
                pos += take
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self.line += data[pos:]
                if len(self.line) > MAX_LINE:
                    raise BadResponse("chunk size line too long")
                return False
            line = (self.line + data[pos:eol]).rstrip(b"\r")
            self.line = b""
            pos = eol + 1
            if self.trailer:
                if not line:
                    if pos != size:
                        raise BadResponse("bytes after the last chunk")
                    return True
                continue
            try:
                chunk = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadResponse("bad chunk size") from None
            if chunk == 0:
                self.trailer = True
            else:
                self.left = chunk + 2  # the data and its CRLF
        return False


def error_kind(exc: OSError) -> str:
    """A short name for a socket error, used as the key of the errors table."""
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken_pipe"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return errno.errorcode.get(exc.errno or 0, "os_error").lower()


def connect_kind(err: int) -> str:
    """The errors-table name for a failed connect's errno."""
    if err == errno.ECONNREFUSED:
        return "connect_refused"
    if err == errno.ETIMEDOUT:
        return "connect_timeout"
    return "connect_" + errno.errorcode.get(err, "error").lower()
