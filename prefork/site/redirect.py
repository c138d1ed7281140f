"""[server] https_redirect: every request on a plain listener answered with the same URL over
https, as nginx's `return 301 https://$host$request_uri;` in a port-80 server block.

How the address is built: `https://HOST[:PORT]TARGET`.
  * HOST is the request's host as the router checked it (check_host runs first: a Host
    naming another site gets 403, never a redirect there), without its port. It is
    reflected only when it is a plain DNS name or an IP address; anything else the parser
    lets through (percent-encoded or sub-delims reg-names, IPvFuture) or no host at all
    (HTTP/1.0 without Host) falls back to the first [server] server_name, else 400.
  * PORT is the first ssl listener's (its bound port when configured as 0), left out when
    it is 443.
  * TARGET is the request's path and query as sent (an absolute-form target's path and
    query), bytes beyond ASCII percent-encoded.

GET and HEAD get 301 (Moved Permanently), anything else 308 (Permanent Redirect), which
keeps the method and the body (RFC 9110 §15.4.9): a form posted over http is posted again
over https rather than turned into a GET. Paths under /.well-known/acme-challenge/ are
served as usual, so certbot's webroot HTTP-01 challenge (always over port 80) keeps working;
the test is made on the normalised path (site/access.py), so `/.well-known/acme-challenge/
../../x` is redirected like /x.
"""

from __future__ import annotations

import html
import ipaddress
import re

from prefork.errors import BadRequest
from prefork.http.message import Request, Response
from prefork.site.access import normalised
from prefork.site.static import url_path

ACME_CHALLENGE = "/.well-known/acme-challenge"
HTTPS_PORT = 443
# A DNS name as an operator writes one in server_name (labels of letters, digits, "-" and
# "_", dot separated, an optional final dot), or a dotted IPv4 address, which it also matches.
_DNS_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_][a-z0-9_-]{0,62})*\.?")


def host_for_url(name: str) -> str | None:
    """`name` (lower-case, without port or brackets) as the host of an https URL, or None
    when it is not a plain DNS name or IP address."""
    if len(name) <= 253 and _DNS_NAME.fullmatch(name):
        return name
    try:
        return f"[{ipaddress.IPv6Address(name).compressed}]"
    except ValueError:
        return None


class HttpsRedirect:
    """The redirect of plain-HTTP requests to the https listener (see the module comment)."""

    def __init__(self, https_port: int, server_names: tuple[str, ...]) -> None:
        self.port_part = "" if https_port == HTTPS_PORT else f":{https_port}"
        # The host used when the request's cannot be reflected: the first usable name.
        self.fallback = next((host for host in map(host_for_url, (
            n.lower().strip("[]") for n in server_names if n != "*")) if host), None)

    @staticmethod
    def applies(path: str) -> bool:
        """Whether a request for `path` (as sent) is redirected: all but ACME challenges."""
        if "well-known" not in path and "%" not in path:
            return True  # cannot name the challenge directory: skip the normalisation
        plain = normalised(path)
        return not (plain == ACME_CHALLENGE or plain.startswith(ACME_CHALLENGE + "/"))

    def location(self, request: Request) -> str:
        """The https URL of `request`; raises BadRequest when no host can be named."""
        name = request.host
        if name.startswith("["):  # an IP literal: an IPv6 address, or nothing we reflect
            inner = name[1:].partition("]")[0]
            host = host_for_url(inner) if ":" in inner else None
        else:
            name = name.rpartition(":")[0] if ":" in name else name
            host = host_for_url(name) if name else None
        host = host or self.fallback
        if host is None:
            raise BadRequest("cannot redirect to https: the request names no usable host "
                             "and [server] server_name has none")
        target = request.target if request.target.startswith("/") else (
            request.path + (f"?{request.query}" if request.query else ""))
        return f"https://{host}{self.port_part}{url_path(target)}"

    def response(self, request: Request) -> Response:
        """301 for GET and HEAD, 308 (method and body kept) for any other method."""
        location = self.location(request)
        status = 301 if request.method in ("GET", "HEAD") else 308
        title = "Moved Permanently" if status == 301 else "Permanent Redirect"
        body = (f'<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>'
                f'<body><h1>{title}</h1><p>The document has moved '
                f'<a href="{html.escape(location)}">here</a>.</p></body></html>\n').encode()
        return Response(status, [("Location", location),
                                 ("Content-Type", "text/html; charset=utf-8")], body)
