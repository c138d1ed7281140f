"""HTTP Basic authentication (RFC 7617) against an Apache htpasswd file.

Entries may be bcrypt (`$2y$`, `$2b$`, `$2a$`, as `htpasswd -B` writes them), Apache's MD5
(`$apr1$`, htpasswd's old default) or SHA-1 (`{SHA}`, `htpasswd -s`), the schemes Apache
reads. The last two are cheap to brute-force: they are accepted so that an existing file
keeps working, and the start log warns naming their users (weak_entries_warning). They are
verified by libpass (the maintained fork of passlib), bcrypt by the bcrypt package: no
crypto of our own. crypt(3), `$1$`/`$5$`/`$6$` and plain-text entries are refused when the
file is loaded, with an error naming the file and line.

bcrypt costs ~100 ms per check at cost 10, so a worker remembers the credentials it has
verified (a bounded LRU keyed by sha256 of user, password and stored hash: changing the hash
in the file invalidates the entry) for its life. The file is re-read when its mtime changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import bcrypt
from passlib.hash import apr_md5_crypt, ldap_sha1

from prefork.errors import ConfigError, InternalServerError, Unauthorized
from prefork.http.message import FieldNames, Request

BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
# bcrypt only reads the first 72 bytes of a password; Apache's htpasswd truncates the same
# way, so we truncate rather than refuse (the bcrypt package raises ValueError past 72).
BCRYPT_MAX_PASSWORD = 72
VERIFIED_CACHE_SIZE = 1024  # distinct verified credentials remembered per worker
DUMMY_COST = 10  # htpasswd -B's default cost, for unknown users when the file is empty
BCRYPT = "bcrypt"
APR1 = "Apache MD5 ($apr1$)"
SHA1 = "SHA-1 ({SHA})"
# The weak schemes htpasswd writes, read for compatibility, and the shape of an entry.
_WEAK_SCHEMES = {APR1: re.compile(rb"\$apr1\$[./0-9A-Za-z]{0,8}\$[./0-9A-Za-z]{22}"),
                 SHA1: re.compile(rb"\{SHA\}[+/0-9A-Za-z]{27}=")}
_OTHER_SCHEMES = (("$apr1$", APR1), ("{SHA}", SHA1),
                  ("$1$", "MD5-crypt ($1$)"), ("$5$", "SHA-256-crypt ($5$)"),
                  ("$6$", "SHA-512-crypt ($6$)"))


def _describe(hashed: str) -> str:
    for prefix, name in _OTHER_SCHEMES:
        if hashed.startswith(prefix):
            return f"a malformed {name} entry" if name in _WEAK_SCHEMES else name
    if len(hashed) == 13:
        return "crypt(3) or plain text"
    return "plain text or an unknown scheme"


def scheme_of(hashed: bytes) -> str | None:
    """The scheme of a stored entry: BCRYPT, APR1, SHA1, or None (not accepted)."""
    if hashed.startswith(BCRYPT_PREFIXES) and len(hashed) == 60:
        return BCRYPT
    for name, shape in _WEAK_SCHEMES.items():
        if shape.fullmatch(hashed):
            return name
    return None


def verify(password: bytes, hashed: bytes) -> bool:
    """Check a password against an entry load_htpasswd accepted (each library compares in
    constant time)."""
    scheme = scheme_of(hashed)
    if scheme == BCRYPT:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
    if scheme == APR1:
        return bool(apr_md5_crypt.verify(password, hashed.decode("ascii")))
    if scheme == SHA1:
        return bool(ldap_sha1.verify(password, hashed.decode("ascii")))
    return False


def weak_entries(users: dict[str, bytes]) -> dict[str, list[str]]:
    """{scheme: its users, sorted} for the entries that are not bcrypt."""
    found: dict[str, list[str]] = {}
    for user, hashed in sorted(users.items()):
        scheme = scheme_of(hashed)
        if scheme is not None and scheme != BCRYPT:
            found.setdefault(scheme, []).append(user)
    return found


def weak_entries_warning(users_file: str) -> str | None:
    """The start-log warning naming the users whose entries are $apr1$ or {SHA}, or None;
    raises ConfigError as load_htpasswd does."""
    weak = weak_entries(load_htpasswd(users_file))
    if not weak:
        return None
    listed = "; ".join(f"{scheme} for {', '.join(users)}" for scheme, users in weak.items())
    return (f"auth: {users_file} holds entries that are cheap to brute-force: {listed}; "
            f"replace them with bcrypt (htpasswd -B {users_file} USER)")


def load_htpasswd(path: str) -> dict[str, bytes]:
    """Read an htpasswd file into {user: stored entry}.

    Blank lines and lines starting with "#" are skipped. Returns the table; raises
    ConfigError naming the file and line for an unreadable file, a malformed line, a
    duplicate user, or an entry that is not bcrypt, $apr1$ or {SHA}.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read users file: {exc.strerror}", file=path,
                          key="auth.users_file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("users file is not UTF-8", file=path, key="auth.users_file") \
            from None
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        user, sep, hashed = stripped.partition(":")
        if not sep or not user or not hashed:
            raise ConfigError("expected 'user:hash'", file=path, line=number,
                              key="auth.users_file")
        encoded = hashed.encode("ascii", "replace")
        if scheme_of(encoded) is None:
            raise ConfigError(
                f"user {user!r}: only bcrypt (htpasswd -B), $apr1$ and {{SHA}} entries are "
                f"accepted, found {_describe(hashed)}", file=path, line=number,
                key="auth.users_file")
        if user in users:
            raise ConfigError(f"user {user!r} is listed twice", file=path, line=number,
                              key="auth.users_file")
        users[user] = encoded
    return users


def parse_basic(value: str | None) -> tuple[str, bytes] | None:
    """Decode an `Authorization: Basic` value (RFC 7617 §2).

    Returns (user, password bytes), or None when the header is absent, uses another
    scheme, is not valid base64, has no colon, or the user-id is not UTF-8.
    """
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user_bytes, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        user = user_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not user or any(ord(c) < 32 or ord(c) == 127 for c in user):
        return None
    return user, password


@dataclass(frozen=True, slots=True)
class _Loaded:
    mtime_ns: int
    size: int
    users: dict[str, bytes]


class BasicAuth:
    """Checks Basic credentials against the users file; thread-safe (blocking pool)."""

    reads_fields: FieldNames = frozenset({"authorization"})

    def __init__(self, users_file: str, realm: str) -> None:
        """Load the file now; raises ConfigError when it is missing or invalid."""
        self.path = users_file
        self.realm = realm.replace("\\", "\\\\").replace('"', '\\"')
        self._lock = threading.Lock()
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._dummy: bytes | None = None
        self._loaded = self._load()

    def _load(self) -> _Loaded:
        try:
            info = os.stat(self.path)
        except OSError as exc:
            raise ConfigError(f"cannot read users file: {exc.strerror}", file=self.path,
                              key="auth.users_file") from None
        return _Loaded(info.st_mtime_ns, info.st_size, load_htpasswd(self.path))

    def _users(self) -> dict[str, bytes]:
        """The current table, re-read when the file changed; raises InternalServerError
        (logged by the connection) when the changed file is unreadable or invalid: we
        fail closed rather than keep trusting entries the operator may have removed."""
        loaded = self._loaded
        try:
            info = os.stat(self.path)
            changed = (info.st_mtime_ns, info.st_size) != (loaded.mtime_ns, loaded.size)
            if changed:
                loaded = self._loaded = self._load()
        except (OSError, ConfigError) as exc:
            raise InternalServerError(f"users file: {exc}") from None
        return loaded.users

    def challenge(self, detail: str) -> Unauthorized:
        """Return the 401 to raise, with its WWW-Authenticate challenge (RFC 7617 §2.1)."""
        return Unauthorized(detail, headers=[
            ("WWW-Authenticate", f'Basic realm="{self.realm}", charset="UTF-8"')])

    def authenticate(self, request: Request) -> str:
        """Return the authenticated user name, also recorded as `request.user` (%u).

        Raises Unauthorized (with the challenge) for missing, malformed or wrong
        credentials, InternalServerError when the users file became invalid.
        """
        credentials = parse_basic(request.headers.get("Authorization"))
        if credentials is None:
            raise self.challenge("credentials are required")
        user, password = credentials
        users = self._users()
        hashed = users.get(user)
        if hashed is None:
            # Spend the same time as for a known user, so timing does not reveal names.
            verify(password, self._dummy_hash())
            raise self.challenge("unknown user or wrong password")
        if scheme_of(hashed) == BCRYPT:
            password = password[:BCRYPT_MAX_PASSWORD]  # what bcrypt reads (and the key)
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed))).digest()
        with self._lock:
            known = key in self._verified
            if known:
                self._verified.move_to_end(key)
        if not known:
            if not verify(password, hashed):  # constant-time comparison inside
                raise self.challenge("unknown user or wrong password")
            with self._lock:
                self._verified[key] = user
                while len(self._verified) > VERIFIED_CACHE_SIZE:
                    self._verified.popitem(last=False)
        request.user = user
        return user

    def _dummy_hash(self) -> bytes:
        """An entry in the scheme (and at the cost) of the file's first one, so a miss
        costs what a hit costs."""
        if self._dummy is None:
            cost = DUMMY_COST
            dummy = None
            for hashed in self._loaded.users.values():
                scheme = scheme_of(hashed)
                if scheme == APR1:
                    dummy = apr_md5_crypt.hash(b"dummy").encode("ascii")
                elif scheme == SHA1:
                    dummy = ldap_sha1.hash(b"dummy").encode("ascii")
                elif hashed[4:6].isdigit():
                    cost = max(4, min(31, int(hashed[4:6])))
                break
            self._dummy = dummy or bcrypt.hashpw(b"dummy", bcrypt.gensalt(rounds=cost))
        return self._dummy
