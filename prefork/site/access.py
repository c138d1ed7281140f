"""Which requests need credentials: [auth] require's path prefixes, matched as the router
matches mounts (on segment boundaries, the longest prefix deciding), and the check itself.

How this works. A rule names a URL prefix, and the methods it covers (all when it names
none). The request path a rule is matched against is the one the handlers will act on, not
the bytes the client sent: percent-decoded once (%2F as "/", as WSGI's PATH_INFO and the
file system see it), empty and "." segments dropped, ".." resolved. So `/%61dmin/x`,
`//admin/x` and `/public/../admin/x` are all under `/admin`, whatever handler serves them:
no spelling of a path reaches a protected file or application unchallenged. Bytes that are
not UTF-8 are matched as latin-1: prefixes are ASCII, so they match the same.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote_to_bytes

from prefork.config.settings import Config
from prefork.config.values import AccessRule
from prefork.errors import ConfigError
from prefork.http.message import FieldNames, Request
from prefork.site.auth import BasicAuth


def normalised(raw_path: str) -> str:
    """The path a handler acts on: decoded once, dot segments and empty segments removed;
    always starts with "/" (".." never climbs above it)."""
    data = unquote_to_bytes(raw_path.encode("latin-1")) if "%" in raw_path \
        else raw_path.encode("latin-1")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    path = posixpath.normpath("/" + text)
    return "/" + path.lstrip("/")  # normpath keeps a leading "//"


def covering_rule(rules: tuple[AccessRule, ...], path: str) -> AccessRule | None:
    """The longest rule whose prefix holds `path` (already normalised), or None."""
    best: AccessRule | None = None
    for rule in rules:
        prefix = rule.prefix
        if (prefix == "/" or path == prefix or path.startswith(prefix + "/")) and \
                (best is None or len(prefix) > len(best.prefix)):
            best = rule
    return best


class AccessRules:
    """[auth] require: says which requests need credentials, and checks them."""

    reads_fields: FieldNames = BasicAuth.reads_fields

    def __init__(self, config: Config, auth: BasicAuth | None = None) -> None:
        """Raises ConfigError when rules are set without [auth] users_file (or the file is
        invalid). `auth`: the checker to share (one verified-credentials cache)."""
        self.rules = config.auth.require
        self.auth = auth
        if self.rules and self.auth is None:
            if not config.auth.users_file:
                raise ConfigError("paths need credentials but [auth] users_file is not set",
                                  key="auth.require")
            self.auth = BasicAuth(config.auth.users_file, config.auth.realm)

    def protects(self, method: str, raw_path: str) -> bool:
        """Whether `method` on `raw_path` needs credentials."""
        if not self.rules:
            return False
        rule = covering_rule(self.rules, normalised(raw_path))
        return rule is not None and rule.covers(method)

    def check(self, request: Request) -> None:
        """Authenticate a request that needs it (recording request.user, for %u and
        REMOTE_USER); raises Unauthorized with the challenge."""
        if self.auth is not None and self.protects(request.method, request.path):
            self.auth.authenticate(request)
