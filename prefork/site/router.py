"""The router: request-level checks (the host, the method) and a mount table.

Handlers are plain objects with `serve(request) -> Response`; the router never touches
sockets, and raises HTTPError subclasses for the connection to answer.

The mount table maps URL prefixes to handlers, longest prefix first, as Apache's Alias and
nginx's prefix locations do: the document root is the mount `/`, the uploads directory
`/uploads`, and exact mounts serve one path (`/upload`, `/server-status`). A prefix matches
on a segment boundary only: `/uploads` serves `/uploads` and `/uploads/x`, never
`/uploadsx`. Hosted applications are mounts too.

On a plain listener with [server] https_redirect on, a request for a host that passed the
check is answered with a redirect to https (site/redirect.py) before anything else.

Before dispatch, [auth] require (site/access.py) decides whether the request needs
credentials, for every mount alike; the authenticated user is recorded on the request (%u,
REMOTE_USER). A bcrypt check takes ~100 ms, so such requests are served by a pool thread,
never on the event loop (pool_for).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from prefork.config.sections import AppSettings
from prefork.config.settings import Config
from prefork.errors import BadRequest, Forbidden, MethodNotAllowed, NotImplementedMethod
from prefork.http.message import FieldNames, Request, Response
from prefork.http.parser import request_line_parts
from prefork.site.access import AccessRules
from prefork.site.auth import BasicAuth
from prefork.site.redirect import HttpsRedirect
from prefork.site.static import StaticFiles
from prefork.site.status import ServerStatus
from prefork.site.uploads.forms import PostHandler
from prefork.site.uploads.put import PREFIX as UPLOADS_PREFIX
from prefork.site.uploads.put import UPLOAD_PATH, UploadHandler

# Methods this server knows (RFC 9110 §9 plus PATCH); anything else is 501 (RFC 9110 §9.1).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE",
                           "CONNECT", "PATCH"})
SERVER_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE")  # for `OPTIONS *`
READ_METHODS = ("GET", "HEAD", "OPTIONS")
WILDCARDS = frozenset({"0.0.0.0", "::"})
HOST_CACHE_SIZE = 256  # accepted Host values remembered per worker (bounded: clients choose them)


class Handler(Protocol):
    # The request fields serve() reads (message.FieldNames), checked by tests/test_fields.py.
    reads_fields: FieldNames

    def serve(self, request: Request) -> Response: ...


@dataclass(frozen=True, slots=True)
class Mount:
    """A handler at a URL prefix ("/" or "/name", no trailing slash), or at one exact path."""

    prefix: str
    handler: Handler
    exact: bool = False
    # Requests here run in a pool thread of this name ("" the worker's blocking pool, else
    # an application's own); None: on the loop thread, unless the handler says otherwise.
    pool: str | None = None
    name: str = ""  # what it is, for the status page: "static", "app:api", "uploads", ...

    def matches(self, path: str) -> bool:
        prefix = self.prefix
        if self.exact:
            return path == prefix
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")


class MountTable:
    """The mounts, searched exact paths first, then longest prefix first."""

    def __init__(self, mounts: list[Mount]) -> None:
        exact = [m for m in mounts if m.exact]
        prefixes = [m for m in mounts if not m.exact]
        for kind in (exact, prefixes):
            seen = [m.prefix for m in kind]
            if len(seen) != len(set(seen)):
                raise ValueError(f"two mounts at the same place: {sorted(seen)}")
        self.exact = {m.prefix: m for m in exact}
        self.prefixes = sorted(prefixes, key=lambda m: len(m.prefix), reverse=True)
        self.mounts = tuple(mounts)

    def find(self, path: str) -> Mount | None:
        """The mount serving `path` (an origin-form path, still percent-encoded)."""
        mount = self.exact.get(path)
        if mount is not None:
            return mount
        for mount in self.prefixes:
            if mount.matches(path):
                return mount
        return None


def split_host(host: str) -> tuple[str, int | None]:
    """Split a Host value into (lower-case name without brackets, port or None)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = host.partition(":")
    port = int(port_text) if port_text.isdigit() else None
    return name.lower(), port


def app_pool(app: AppSettings) -> str:
    """The name of an application's pool: its section's id."""
    return f"app:{app.name}" if app.name else "app"


class Router:
    """Checks the Host header against the configured names, then dispatches by path."""

    reads_fields: FieldNames = frozenset({"host"})  # request.host, in check_host()

    def __init__(self, config: Config, apps: Sequence[tuple[AppSettings, Handler]] = (),
                 https_port: int | None = None) -> None:
        """`https_port`: the first ssl listener's bound port (its configured one, when not
        given), where [server] https_redirect sends plain-HTTP requests."""
        server = config.server
        self.any_host = "*" in server.server_name
        self.accepted_hosts: dict[str, tuple[str, int]] = {}  # Host value -> local address
        self.names = frozenset(n.lower().strip("[]") for n in server.server_name)
        listen = server.listen
        self.listen_hosts = frozenset(a.host for a in listen if a.host not in WILDCARDS)
        self.listen_ports = frozenset(a.port for a in listen)
        self.redirect: HttpsRedirect | None = None
        if server.https_redirect:
            if https_port is None:
                https_port = next(a.port for a in listen if a.tls)  # configtest checked
            self.redirect = HttpsRedirect(https_port, server.server_name)
        self.static = StaticFiles(server.document_root, config.static.index_files,
                                  config.static.download_extensions,
                                  mount=config.static.mount)
        # One credentials checker for [auth] require and [uploads] require_auth, so a
        # client pays one bcrypt check per worker whichever asks first.
        auth = BasicAuth(config.auth.users_file, config.auth.realm) if (
            config.auth.users_file and (config.auth.require or config.uploads.require_auth)
        ) else None
        self.access = AccessRules(config, auth)  # raises ConfigError
        self.reads_fields = Router.reads_fields | (
            AccessRules.reads_fields if config.auth.require else frozenset())
        # /uploads/...; raises ConfigError (auth). None with uploads off ([uploads] enabled):
        # then /upload is a plain static path (writes answered 405).
        self.uploads = UploadHandler(config, auth) if config.uploads_enabled else None
        self.post: PostHandler | None = None
        # The uploads directory (htdocs/uploads by default) is served under /uploads/ only,
        # with its own rules (uploaded content never acts as a page of the site): not
        # through aliases such as //uploads/ or /%75ploads/, and, while uploads are off,
        # not at all.
        self.static.excluded = (os.path.realpath(config.uploads.directory),)
        if self.uploads is not None:
            self.post = PostHandler(self.uploads)  # POST /upload
        self.status = ServerStatus(config) if config.status.enabled else None
        mounts = [Mount(config.static.mount, self.static, name="static")]
        # Applications: each runs in its own pool, named after its section.
        mounts += [Mount(app.mount, handler, pool=app_pool(app), name=app_pool(app))
                   for app, handler in apps]
        if self.uploads is not None and self.post is not None:
            mounts += [Mount(UPLOADS_PREFIX, self.uploads, name="uploads"),
                       Mount(UPLOAD_PATH, self.post, exact=True, name="upload")]
        if self.status is not None:
            mounts.append(Mount(config.status.path, self.status, exact=True, name="status"))
        self.mounts = MountTable(mounts)

    def pool_for(self, method: str, path: str, scheme: str = "http") -> str | None:
        """The pool a request without a body runs in: an application's, the worker's
        blocking pool ("") for one that may take long, or None: on the loop thread (a
        request that will be redirected to https is answered there)."""
        if self.redirect is not None and scheme == "http" and self.redirect.applies(path):
            return None
        mount = self.mounts.find(path)
        if mount is not None and mount.pool is not None:
            return mount.pool
        return "" if self.may_block(method, path) else None

    def may_block(self, method: str, path: str) -> bool:
        """True when a request without a body may still take long to serve (a bcrypt
        check for a method that needs credentials: [auth] require, or [uploads]
        require_auth), so it is better handed to a blocking thread than served inside the
        event loop."""
        if self.access.protects(method, path):
            return True
        return self.uploads is not None and (
            path == UPLOAD_PATH or self.uploads.handles(path)) \
            and self.uploads.may_block(method)

    def check_host(self, request: Request, local: tuple[str, int]) -> None:
        """Raise Forbidden unless the request's host names this server (seed 003; DNS
        rebinding).

        The host is the absolute-form target's authority when there is one, else the Host
        field (RFC 9112 §3.2.2: a server MUST ignore Host then), as the parser found it
        (request.host). Accepted: a configured server_name, a listen address, or the
        address the client connected to. A port, when given, must be one we listen on (or
        the connection's). Missing and malformed Host headers are the parser's business
        (400); an HTTP/1.0 request without either has no host to check.
        """
        host = request.host
        if not host or self.any_host:
            return
        if self.accepted_hosts.get(host) == local:
            return  # seen and accepted before on this local address: the common case
        name, port = split_host(host.strip())
        if port is not None and port not in self.listen_ports and port != local[1]:
            raise Forbidden(f"Host header names port {port}, which this server does not serve")
        if name in self.names or name in self.listen_hosts or name == local[0]:
            if len(self.accepted_hosts) < HOST_CACHE_SIZE:
                self.accepted_hosts[host] = local
            return
        raise Forbidden("Host header does not name this server")

    def handle(self, request: Request, local: tuple[str, int]) -> Response:
        """Return the response for `request`; raises HTTPError subclasses."""
        method = request.method
        if method not in KNOWN_METHODS:
            raise NotImplementedMethod(f"method {method[:32]!r} is not implemented")
        self.check_host(request, local)
        redirect = self.redirect
        if (redirect is not None and request.scheme == "http" and request.path != "*"
                and redirect.applies(request.path)):
            return redirect.response(request)  # before credentials: none asked over http
        if request.path == "*":
            if method != "OPTIONS":
                raise BadRequest("the asterisk target is only valid with OPTIONS", close=False)
            return Response(204, [("Allow", ", ".join(SERVER_METHODS))])
        if method == "TRACE":
            raise MethodNotAllowed(READ_METHODS, "TRACE is disabled")
        self.access.check(request)  # before any handler reads a byte of the body
        return self.handler_for(request.path).serve(request)

    def mount_label(self, request_line: str) -> str:
        """What serves a request line, for the status page: "app:api /api", "static /";
        "" when the line names no mount (an asterisk or malformed target)."""
        target = request_line_parts(request_line)[1]
        if "://" in target:  # absolute form: the path after the authority
            target = "/" + target.partition("://")[2].partition("/")[2]
        mount = self.mounts.find(target) if target.startswith("/") else None
        return f"{mount.name} {mount.prefix}" if mount is not None else ""

    def handler_for(self, path: str) -> Handler:
        """The handler for a (non-asterisk) request path: its mount's."""
        mount = self.mounts.find(path)
        return mount.handler if mount is not None else self.static
