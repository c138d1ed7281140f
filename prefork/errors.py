"""Every exception the server raises on purpose.

HTTPError subclasses carry their own status, reason, extra headers and whether the
connection must close afterwards, so the one place that turns exceptions into responses
(connection.py) never needs an isinstance ladder. This module imports nothing from the
package.
"""

from __future__ import annotations

import errno

# Characters of an error's detail kept: details quote what a client sent (a method, a
# coding), and both the error page and the error log must stay small whatever it sent.
MAX_DETAIL = 256
# Retry-After of a 503 for a shortage that passes quickly (descriptors, a full pool).
RETRY_AFTER_SECONDS = 1


class PreforkError(Exception):
    """Base class of every error the server raises deliberately."""


class ConfigError(PreforkError):
    """A configuration problem, located as precisely as we can: file, line and key."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.detail = message
        where = []
        if file:
            where.append(f"{file}:{line}" if line else file)
        if key:
            where.append(key)
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ControlError(PreforkError):
    """An httpdctl operation could not be carried out (not running, already running...)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StartupError(PreforkError):
    """The master could not start: port in use, permission denied, workers failed to boot."""


class HTTPError(PreforkError):
    """An error that has an HTTP answer.

    `close` says whether the connection must be closed after the response: always for
    framing errors, where we no longer know where the next request would start
    (RFC 9112 §9.6 / §11.2 on request smuggling).
    """

    status: int = 500
    reason: str = "Internal Server Error"
    close: bool = False
    # When False, the error page shows `public_text` instead of the detail, which then goes
    # only to the error log (a 403 must not tell a prober *why*: symlink, hidden file...).
    show_detail: bool = True
    public_text: str = ""
    # The error log says so at most once per this many seconds per worker (0: every time):
    # for a shortage that would otherwise repeat itself on every request.
    log_every: float = 0.0

    def __init__(
        self, detail: str = "", *, headers: list[tuple[str, str]] | None = None,
        close: bool | None = None,
    ) -> None:
        if len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL] + f"... ({len(detail) - MAX_DETAIL} more)"
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason
        self.headers: list[tuple[str, str]] = list(headers or ())
        if close is not None:
            self.close = close

    @property
    def server_fault(self) -> bool:
        """Whether the server, not the client, is at fault: a 5xx other than 501 and 505,
        which answer what the client asked for (RFC 9110 §15.6.2, §15.6.6). Server faults
        go to the error log at `error`; client errors at most at `info`."""
        return self.status >= 500 and self.status not in (501, 505)


class BadRequest(HTTPError):
    status, reason, close = 400, "Bad Request", True


class Unauthorized(HTTPError):
    status, reason = 401, "Unauthorized"


class Forbidden(HTTPError):
    status, reason = 403, "Forbidden"
    show_detail, public_text = False, "You don't have permission to access this resource."


class NotFound(HTTPError):
    status, reason = 404, "Not Found"
    show_detail, public_text = False, "The requested URL was not found on this server."


class MethodNotAllowed(HTTPError):
    """405; RFC 9110 §15.5.6 requires an Allow header listing what the resource supports."""

    status, reason = 405, "Method Not Allowed"

    def __init__(self, allowed: list[str] | tuple[str, ...], detail: str = "") -> None:
        super().__init__(detail, headers=[("Allow", ", ".join(allowed))])
        self.allowed = tuple(allowed)


class RequestTimeout(HTTPError):
    status, reason, close = 408, "Request Timeout", True


class Conflict(HTTPError):
    status, reason = 409, "Conflict"


class PreconditionFailed(HTTPError):
    status, reason = 412, "Precondition Failed"


class ContentTooLarge(HTTPError):
    """413 (RFC 9110 §15.5.14). We close: the unread body would otherwise be parsed as a request."""

    status, reason, close = 413, "Content Too Large", True


class URITooLong(HTTPError):
    status, reason, close = 414, "URI Too Long", True


class UnsupportedMediaType(HTTPError):
    status, reason = 415, "Unsupported Media Type"


class RangeNotSatisfiable(HTTPError):
    status, reason = 416, "Range Not Satisfiable"


class ExpectationFailed(HTTPError):
    status, reason, close = 417, "Expectation Failed", True


class HeaderFieldsTooLarge(HTTPError):
    """431 (RFC 6585 §5): too many header fields, or one too large."""

    status, reason, close = 431, "Request Header Fields Too Large", True


class InternalServerError(HTTPError):
    status, reason, close = 500, "Internal Server Error", True
    show_detail = False
    public_text = "The server encountered an internal error and could not complete the request."


class NotImplementedMethod(HTTPError):
    """501: a method or transfer coding the server does not recognise (RFC 9110 §15.6.2)."""

    status, reason, close = 501, "Not Implemented", True


class ServiceUnavailable(HTTPError):
    status, reason, close = 503, "Service Unavailable", True


# errno values that mean "out of file descriptors" (the process's or the system's limit).
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


class OutOfDescriptors(ServiceUnavailable):
    """503 when opening a file fails with EMFILE or ENFILE: a shortage that passes (nginx
    answers 503 too), so the client is told when to retry and the log is not flooded."""

    log_every = 10.0

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or "out of file descriptors",
                         headers=[("Retry-After", str(RETRY_AFTER_SECONDS))])


class VersionNotSupported(HTTPError):
    status, reason, close = 505, "HTTP Version Not Supported", True


class InsufficientStorage(HTTPError):
    status, reason, close = 507, "Insufficient Storage", True


class ResponseLengthError(PreforkError):
    """A streamed response body was longer or shorter than its declared Content-Length: the
    connection must close at the declared length (RFC 9112 §6.3), never send more."""


class ClientDisconnected(PreforkError):
    """The peer went away (EOF or reset) while we were reading or writing its request."""


class ApplicationAborted(PreforkError):
    """A hosted application failed after its response began: the status line is on the wire,
    so the only honest end is to close the connection (the reason is in the error log)."""
