"""What a worker's connections share (ServerContext), and the Action a connection returns to
the event loop that owns it (connection.py, loop.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefork.http.framing import NO_FIELDS, AddedFields
from prefork.http.parser import Limits
from prefork.log import AccessLog, ErrorLog

if TYPE_CHECKING:
    from prefork.serve.quick import QuickPath
    from prefork.site.router import Router


class Action(enum.Enum):
    WANT_READ = 1
    WANT_WRITE = 2
    HANDOFF = 3  # lend the connection to a blocking thread (request with a body)
    LINGER = 4  # response sent, write side shut; read and discard until EOF or deadline
    CLOSE = 5  # closed, or (lent) to be closed by the owning loop
    WAIT_BODY = 6  # a head with a body is complete: wait for the body's first bytes
    # (from a pool thread only) it began the next, pipelined request and it is one the loop
    # serves itself (no body, no pool): the loop serves it (Connection.serve_begun)
    SERVE = 7


@dataclass(frozen=True, slots=True)
class ServerContext:
    """What every connection of a worker shares (built once per worker)."""

    router: Router
    access_log: AccessLog
    error_log: ErrorLog
    limits: Limits
    keepalive_timeout: float
    max_keepalive_requests: int
    timeout: float
    header_timeout: float
    body_timeout: float
    min_rate: int
    debug: bool
    host_memo: dict[str, str] = field(default_factory=dict)  # shared by the worker's parsers
    quick: QuickPath | None = None  # repeats answers of the static file cache (quick.py)
    discard_body_limit: int = 1 << 20  # [http] discard_body_limit
    # Fields every response over TLS carries (Strict-Transport-Security: [server] hsts);
    # a connection takes them when its transport's scheme is https.
    tls_fields: AddedFields = NO_FIELDS
