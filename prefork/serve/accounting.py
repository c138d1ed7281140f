"""The one path that finishes a request: its access-log line, the end of its scoreboard slot
(which the code serving it began with ThreadSlot.begin_request), and its debug note.

Every way a request ends comes here: the full path (connection.py: answered, refused,
failed, or abandoned by its client: 499) and the quick path (a remembered answer sent
straight from the received bytes, quick.py). The access record is built here alone, from
what was asked (`Asked`: the parser's RequestHead, or the quick path's QuickHit) and what
was sent, so the two paths cannot log one request differently. The request fields a log
format reads (%{Name}i; Referer and User-Agent in the Combined format) are always the
logged request's own, never those of the request a remembered answer was first made for:
that is why the quick path may repeat an answer whatever those fields say.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from prefork.http.parser import request_line_parts
from prefork.log import AccessRecord, TLSSession

if TYPE_CHECKING:
    from prefork.scoreboard import ThreadSlot
    from prefork.serve.context import ServerContext

CLIENT_CLOSED = 499  # logged for a client gone before any response (nginx's status)


class FieldSource(Protocol):
    """The request's fields as the access log reads them (message.Headers has this get)."""

    def get(self, name: str, default: str | None = None) -> str | None: ...


class Asked(Protocol):
    """What the access log needs of a request's head."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def headers(self) -> FieldSource: ...


def finish(ctx: ServerContext, slot: ThreadSlot, client: tuple[str, int],
           local: tuple[str, int], request_line: str, asked: Asked | None, status: int | None,
           sent: int, wall: float, started: float,
           response_fields: list[tuple[str, str]] | None, user: str | None = None,
           aborted: bool = False, keep_alive: bool = False, received: int | None = None,
           wire_sent: int | None = None, session: TLSSession | None = None) -> None:
    """A request is over: write its access-log line (when the log is on), end its scoreboard
    slot, note it at debug level. `asked` is None when no head was parsed (the parser
    refused it); `status` None when the client went away before any response (logged as
    CLIENT_CLOSED); `sent` counts body bytes; `wall` is time.time() and `started`
    time.monotonic() at its start; `response_fields` are the fields as sent (%{Name}o);
    `aborted`: the response was not sent whole; `keep_alive`: the connection stays open
    (both only for the debug note: the quick path, off at level debug, leaves them out);
    `received` (the parser's count: request-line, fields, body as framed) and `wire_sent`
    (status line, fields and body as framed) are %I and %O, "-" when not given; `session`
    is the connection's transport, which %{SSL_PROTOCOL}x and %{SSL_CIPHER}x ask (only
    those: a format without them never calls it)."""
    if status is None:
        status = CLIENT_CLOSED
    duration = time.monotonic() - started
    log = ctx.access_log
    if log.enabled:
        if asked is None:
            # Refused by the parser: its request-line, as far as it was read, still names
            # the method, target and version (%m %U %q %H), like Apache's for a 400.
            method, path, query, version = request_line_parts(request_line)
            fields: FieldSource | None = None
        else:
            method, path, query = asked.method, asked.path, asked.query
            version, fields = asked.version, asked.headers
        log.log(AccessRecord(client[0], local[1], request_line, method, path, query, version,
                             status, sent, wall, duration, fields, response_fields,
                             user or "-", bytes_received=received, bytes_sent=wire_sent,
                             tls=session))
    slot.end_request(sent, duration)
    if ctx.debug:
        ctx.error_log.debug(f"response {status}, {sent} body bytes"
                            f"{' (aborted)' if aborted else ''}, keep-alive "
                            f"{'yes' if keep_alive and not aborted else 'no'}", client)
