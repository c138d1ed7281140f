"""The router: request-level checks (Host, method) and dispatch to a handler.

Handlers are plain objects with `serve(request) -> Response`; the router never touches
sockets, and raises HTTPError subclasses for the connection to answer.
"""

from __future__ import annotations

from typing import Protocol

from prefork.config.settings import Config
from prefork.errors import BadRequest, Forbidden, MethodNotAllowed, NotImplementedMethod
from prefork.http.message import FieldNames, Request, Response
from prefork.site.static import StaticFiles
from prefork.site.status import ServerStatus
from prefork.site.uploads.forms import UPLOAD_PATH, PostHandler
from prefork.site.uploads.put import UploadHandler

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


def split_host(host: str) -> tuple[str, int | None]:
    """Split a Host value into (lower-case name without brackets, port or None)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = host.partition(":")
    port = int(port_text) if port_text.isdigit() else None
    return name.lower(), port


class Router:
    """Checks the Host header against the configured names, then dispatches by path."""

    reads_fields: FieldNames = frozenset({"host"})  # request.host, in check_host()

    def __init__(self, config: Config) -> None:
        server = config.server
        self.any_host = "*" in server.server_name
        self.accepted_hosts: dict[str, tuple[str, int]] = {}  # Host value -> local address
        self.names = frozenset(n.lower().strip("[]") for n in server.server_name)
        listen = server.listen
        self.listen_hosts = frozenset(a.host for a in listen if a.host not in WILDCARDS)
        self.listen_ports = frozenset(a.port for a in listen)
        self.static = StaticFiles(server.document_root, config.static.index_files,
                                  config.static.download_extensions)
        # /uploads/...; raises ConfigError (auth). None with [uploads] enabled = off: then
        # /upload and /uploads/ are plain static paths (writes answered 405).
        self.uploads = UploadHandler(config) if config.uploads.enabled else None
        self.post: PostHandler | None = None
        if self.uploads is not None:
            # The uploads directory (htdocs/uploads by default) is served under /uploads/
            # only, with its own rules: not through aliases such as //uploads/ or /%75ploads/.
            self.static.excluded = (self.uploads.directory,)
            self.post = PostHandler(self.uploads)  # POST /upload
        self.status = ServerStatus(config) if config.status.enabled else None
        self.status_path = config.status.path

    def may_block(self, method: str, path: str) -> bool:
        """True when a request without a body may still take long to serve (a bcrypt
        check for a method that needs credentials), so it is better handed to a blocking
        thread than served inside the event loop."""
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
        if request.path == "*":
            if method != "OPTIONS":
                raise BadRequest("the asterisk target is only valid with OPTIONS", close=False)
            return Response(204, [("Allow", ", ".join(SERVER_METHODS))])
        if method == "TRACE":
            raise MethodNotAllowed(READ_METHODS, "TRACE is disabled")
        return self.handler_for(request.path).serve(request)

    def handler_for(self, path: str) -> Handler:
        """The handler for a (non-asterisk) request path."""
        if self.status is not None and path == self.status_path:
            return self.status
        if self.post is not None and path == UPLOAD_PATH:
            return self.post
        if self.uploads is not None and self.uploads.handles(path):
            return self.uploads
        return self.static  # PUT/DELETE/POST elsewhere: 405 + static Allow
