"""Uploads and write methods: the storage primitives every write uses, the master's
clean-up functions, and GET/HEAD/OPTIONS/PUT/DELETE under /uploads/ (POST /upload, for
JSON and forms, is forms.py's PostHandler, built on the same primitives).

How this works. Every write streams the request body, 64 KiB at a time, into a temporary
file created (O_EXCL, mode 0644 less the umask) in the *target* directory under a hidden
name `.tmp-<pid>-<16 hex>`, which the static handler never serves. Once the whole body is in,
the file is fsync'ed and renamed into place in one step — os.replace() for PUT (the last
complete writer wins), link(2) for the new names POST creates (link fails rather than
overwrite, so two uploads never clobber each other) — and the directory is fsync'ed so the
new name survives a crash. Any failure before that (a client that disconnects or is too
slow, a body over the limit, ENOSPC/EDQUOT → 507, a malformed form) unlinks the temporary,
so a reader only ever sees the old file or the new one. A worker killed mid-upload cannot
clean up: the master removes that worker's `.tmp-<pid>-*` files when it reaps it
(remove_temporaries) and every stale temporary at start (prepare_upload_directory).

Checks that refuse a request (method, credentials, path, preconditions) all run before the
first body read, so a refused client never receives `100 Continue`. Paths are resolved by
the same StaticFiles.resolve() that guards GET (no "..", encoded slashes, NUL, backslash,
hidden names or symlinks out of the root); PUT and DELETE take an flock(2) on the target
directory around "check preconditions, then rename/unlink", so If-Match / If-None-Match are
atomic with respect to this server's other writers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from prefork.config.settings import Config
from prefork.config.values import Switch
from prefork.errors import (
    OUT_OF_DESCRIPTORS,
    ConfigError,
    Conflict,
    Forbidden,
    InsufficientStorage,
    MethodNotAllowed,
    NotFound,
    OutOfDescriptors,
    PreconditionFailed,
)
from prefork.http.message import FieldNames, Request, Response
from prefork.site import preconditions
from prefork.site.access import covering_rule
from prefork.site.auth import BasicAuth, load_htpasswd
from prefork.site.preconditions import validators_for
from prefork.site.static import (
    STATIC_METHODS,
    Located,
    StaticFiles,
    attachment,
    refusal,
    url_path,
)

CHUNK = 64 * 1024  # bytes per body read and per write(2)
PREFIX = "/uploads"  # URL prefix mapped onto [uploads] directory
UPLOAD_PATH = "/upload"  # POST here (forms.py), for JSON and forms
FILE_ALLOW = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
WRITE_METHODS = ("POST", "PUT", "DELETE")
AUTH_METHODS = frozenset({*FILE_ALLOW, "POST"})  # what [uploads] require_auth may name
NAME_ATTEMPTS = 100  # random names tried before giving up (collisions are ~impossible)
MAX_NAME_TRIES = 2000  # candidate names tried for one stored file (name, name-1, ...)
TEMP_PREFIX = ".tmp-"
TEMP_NAME = re.compile(r"\.tmp-(\d+)-[0-9a-f]{16}")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


# ---------------------------------------------------------------- for the master

def prepare_upload_directory(directory: str, uid: int = -1, gid: int = -1) -> int:
    """Create `directory` (with parents, mode 0755 less the umask) and remove every stale
    `.tmp-*` temporary in it and its subdirectories. Call once at start, before any worker.

    When `uid`/`gid` are given (the master runs as root and workers as [server] user), a
    directory created here is handed to that owner so workers can write to it.
    Returns how many temporaries were removed; raises OSError if it cannot be created.
    """
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if uid != -1 or gid != -1:
            os.chown(directory, uid, gid)
    return _remove_temporaries(directory, None)


def remove_temporaries(directory: str, pid: int) -> int:
    """Remove the `.tmp-<pid>-*` files a dead worker left under `directory`.

    The master calls it when it reaps a worker. Returns how many were removed; never raises
    for a missing directory.
    """
    return _remove_temporaries(directory, pid)


def _remove_temporaries(directory: str, pid: int | None) -> int:
    removed = 0
    if not os.path.isdir(directory):
        return 0
    # fwalk + unlink(dir_fd=): a directory swapped for a symlink mid-walk cannot redirect us.
    for _path, _dirs, files, dirfd in os.fwalk(directory):
        for name in files:
            match = TEMP_NAME.fullmatch(name)
            if match and (pid is None or int(match.group(1)) == pid):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dirfd)
                    removed += 1
    return removed


# Where each write method writes: a path of its own, to match [auth] require against.
_WRITE_PATHS = {"POST": UPLOAD_PATH, "PUT": PREFIX + "/", "DELETE": PREFIX + "/"}


def open_write_methods(config: Config) -> tuple[str, ...]:
    """The write methods (POST, PUT, DELETE) that need no credentials: neither [uploads]
    require_auth nor an [auth] require rule covering the uploads URLs names them."""
    required = {m.upper() for m in config.uploads.require_auth}
    rules = config.auth.require
    return tuple(m for m in WRITE_METHODS if m not in required and not (
        (rule := covering_rule(rules, _WRITE_PATHS[m])) is not None and rule.covers(m)))


def writes_are_open(config: Config) -> bool:
    """True when uploads are on, some write method needs no credentials and an address
    served is not loopback (Config.addresses): start refuses that unless [uploads]
    allow_anonymous = on, and then warns (open_writes_warning)."""
    return config.uploads_enabled and bool(open_write_methods(config)) \
        and not config.loopback_only


def open_writes_warning(config: Config) -> str | None:
    """Return the start-log warning text when writes are open beyond loopback, else None."""
    if not writes_are_open(config):
        return None
    return (f"uploads: {' '.join(open_write_methods(config))} need no credentials and the "
            f"server listens beyond loopback ({config.exposed()}): anyone who can reach it "
            f"can write to {config.uploads.directory} ([uploads] allow_anonymous = on)")


def uploads_off_notice(config: Config) -> str | None:
    """The start-log notice when [uploads] enabled = auto turned uploads off, else None."""
    if config.uploads.enabled is not Switch.AUTO or config.uploads_enabled:
        return None
    return (f"uploads: off: [uploads] enabled = auto and the server listens beyond loopback "
            f"({config.exposed()}); set enabled = on, with require_auth, to accept writes")


def check_upload_config(config: Config) -> None:
    """Cross-check [uploads] and [auth] (for configtest, start-up and reload).

    Raises ConfigError: require_auth names an unknown method, or names methods (or [auth]
    require names paths) while users_file is empty, or the users file is unreadable or
    holds entries of a refused scheme, or writes are open beyond loopback without
    allow_anonymous, or the uploads directory cannot be used.
    """
    required = config.uploads.require_auth
    for method in required:
        if method.upper() not in AUTH_METHODS:
            raise ConfigError(f"{method!r} is not one of {', '.join(sorted(AUTH_METHODS))}",
                              key="uploads.require_auth")
    if required and not config.auth.users_file:
        raise ConfigError("methods need credentials but [auth] users_file is not set",
                          key="uploads.require_auth")
    if config.auth.require and not config.auth.users_file:
        raise ConfigError("paths need credentials but [auth] users_file is not set",
                          file=config.source, key="auth.require")
    if config.auth.users_file:
        load_htpasswd(config.auth.users_file)
    check_open_writes(config)
    problem = upload_directory_problem(config)
    if problem:
        raise ConfigError(problem, file=config.source, key="uploads.directory")
    _check_no_mount_shadows_uploads(config)


def check_open_writes(config: Config) -> None:
    """Refuse write methods that need no credentials on a server reachable beyond loopback,
    unless [uploads] allow_anonymous = on. configtest judges [server] listen; start and
    reload judge what is actually served (Config.served), so this runs again in the master
    once systemd's sockets are known. Raises ConfigError (one line)."""
    if writes_are_open(config) and not config.uploads.allow_anonymous:
        raise ConfigError(
            f"{', '.join(open_write_methods(config))} would need no credentials and the "
            f"server listens beyond loopback ({config.exposed()}): list them in [uploads] "
            f"require_auth (with [auth] users_file), or set [uploads] allow_anonymous = on",
            file=config.source, key="uploads.require_auth")


def _shadowed_uploads_url(where: str) -> str | None:
    """The uploads URL a mount at `where` would take requests from, or None: a prefix or
    exact path at or under /uploads, or at /upload itself (a prefix mount there would lose
    its own root to POST /upload, an exact one would clash with it)."""
    if where == PREFIX or where.startswith(PREFIX + "/"):
        return PREFIX + "/"
    if where == UPLOAD_PATH:
        return UPLOAD_PATH
    return None


def _check_no_mount_shadows_uploads(config: Config) -> None:
    """While uploads are on, /uploads/... and /upload belong to their handlers: what
    clients stored is served there with nosniff and a sandbox and written under
    require_auth. Another mount there would take those requests instead (or, at the same
    place, stop every worker from booting), so it is refused here, in one line."""
    if not config.uploads_enabled:
        return
    mounts = [("static", config.static.mount)]
    mounts += [(f"app:{app.name}" if app.name else "app", app.mount) for app in config.apps]
    if config.status.enabled:
        mounts.append(("status", config.status.path))
    for section, where in mounts:
        taken = _shadowed_uploads_url(where)
        if taken is None:
            continue
        key = "path" if section == "status" else "mount"
        file, line = config.where(section, key)
        raise ConfigError(
            f"{where} would take requests for {taken} from the uploads, which serve what "
            f"clients stored (nosniff, sandboxed) and check require_auth: mount it "
            f"elsewhere, or set [uploads] enabled = off", file=file, line=line,
            key=f"{section}.{key}")


def upload_directory_problem(config: Config) -> str | None:
    """Why [uploads] directory cannot be used by this process, or None (also when uploads
    are off). The master creates it at start, so it must exist or be creatable; a server
    that is not root must also be able to write to it."""
    if not config.uploads_enabled:
        return None
    directory = config.uploads.directory
    advice = "set [uploads] directory to a writable place, or [uploads] enabled = off"
    real, root = os.path.realpath(directory), os.path.realpath(config.server.document_root)
    if root == real or root.startswith(real + os.sep):
        # Every uploaded file would be a page of the site, index files included.
        return (f"{directory} holds the document root: uploaded files would be served as "
                f"the site's own pages; give uploads a directory of their own (the default "
                f"htdocs/uploads, or one outside the document root)")
    if os.path.isdir(directory):
        if os.geteuid() != 0 and not os.access(directory, os.W_OK | os.X_OK):
            return f"{directory} is not writable by this user ({advice})"
        return None
    if os.path.lexists(directory):
        return f"{directory} exists and is not a directory"
    parent = os.path.dirname(directory)
    while parent and not os.path.isdir(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent or ".", os.W_OK | os.X_OK):
        return f"cannot create {directory}: {parent} is not writable ({advice})"
    return None


# ---------------------------------------------------------------- files

@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn "disk full" / "quota exceeded" into 507 Insufficient Storage (RFC 4918 §11.5),
    out of descriptors into 503 with Retry-After; other OSErrors pass through (the
    connection answers 500 and logs them)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise InsufficientStorage(f"cannot store the upload: {exc.strerror}",
                                      close=True) from None
        if exc.errno in OUT_OF_DESCRIPTORS:
            raise OutOfDescriptors(f"out of file descriptors storing an upload "
                                   f"({exc.strerror})") from None
        raise


def fsync_directory(directory: str) -> None:
    """Make a rename or unlink in `directory` durable; raises OSError."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_directory(directory: str) -> Iterator[None]:
    """Hold an exclusive flock(2) on `directory` (serialises check-then-rename among this
    server's writers, across threads and processes); raises OSError."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class TempFile:
    """A hidden temporary in `directory`, to be renamed into place once complete.

    Use as a context manager: leaving it always removes the temporary name (after a
    successful commit the name is already gone, or is a second link to drop).
    """

    def __init__(self, directory: str, digest: bool = False) -> None:
        """Create the file; raises OSError (ENOSPC included)."""
        self.directory = directory
        self.size = 0
        self.sha256 = hashlib.sha256() if digest else None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while True:
            self.path = os.path.join(directory,
                                     f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
            try:
                self.fd = os.open(self.path, flags, 0o644)
                return
            except FileExistsError:
                continue

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    def write(self, data: bytes) -> None:
        """Append `data` (all of it); raises OSError."""
        if self.sha256 is not None:
            self.sha256.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def finish(self) -> os.stat_result:
        """fsync and close; returns the file's final stat (its ETag survives the rename)."""
        os.fsync(self.fd)
        info = os.fstat(self.fd)
        os.close(self.fd)
        self.fd = -1
        return info

    def link_unique(self, names: Iterator[str]) -> str:
        """Give the file the first of `names` that does not exist yet (link(2) never
        overwrites); returns that name. Raises OSError."""
        for name in islice(names, MAX_NAME_TRIES):
            try:
                os.link(self.path, os.path.join(self.directory, name))
                return name
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free name for the upload")

    def discard(self) -> None:
        """Close and unlink the temporary name (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _stat(path: str) -> os.stat_result | None:
    """The stat of a path a client named, None when nothing is there; raises what GET
    answers for the other refusals (static.refusal: a name too long → 404, a symbolic
    link loop → 403), so every method gets the same class of answer for one path."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise refusal(exc) from None


def stamped_names(suffix: str) -> Iterator[str]:
    """upload_YYYYMMDD_HHMMSS_xxxxxx<suffix>, a fresh random part each time (seed 003)."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for _ in range(NAME_ATTEMPTS):
        yield f"upload_{stamp}_{secrets.token_hex(3)}{suffix}"


def json_response(status: int, payload: dict[str, Any],
                  headers: list[tuple[str, str]] | None = None, close: bool = False) -> Response:
    """A JSON response (pretty, as seed 003 shows it)."""
    body = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return Response(status, [("Content-Type", "application/json"), *(headers or ())], body,
                    close=close)


def json_error(status: int, message: str, headers: list[tuple[str, str]] | None = None,
               close: bool = True) -> Response:
    """A JSON error answer. It closes by default: it is sent before the body was read."""
    return json_response(status, {"status": "error", "message": message}, headers, close)


# Media types a browser may run script in when it renders them (HTML, XHTML, SVG, any XML
# and XSLT, JavaScript and ECMAScript), by their essence (type/subtype, lower case).
_ACTIVE_TYPES = frozenset({"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml",
                           "application/xml", "text/xsl", "application/xslt+xml",
                           "application/x-shockwave-flash"})


def can_run_script(content_type: str) -> bool:
    """Whether a browser rendering `content_type` (a Content-Type value) may run script."""
    essence = content_type.partition(";")[0].strip().lower()
    return (essence in _ACTIVE_TYPES or essence.endswith("+xml")
            or "javascript" in essence or "ecmascript" in essence)


class UploadFiles(StaticFiles):
    """StaticFiles rooted at the uploads directory, for URLs under PREFIX.

    What clients uploaded is served so that it can never act as a page of this origin
    (stored cross-site scripting): every file with `X-Content-Type-Options: nosniff` (a
    browser uses the type we send, never one it guesses) and `Content-Security-Policy:
    sandbox` (rendered, it gets a unique origin with script disabled); a type that can run
    script (can_run_script) also as an attachment, which browsers download rather than
    render. No index file is taken from here: `PUT /uploads/index.html` is a file, never
    the page for `GET /uploads/`.
    """

    extra_fields = (("X-Content-Type-Options", "nosniff"),
                    ("Content-Security-Policy", "sandbox"))

    def _type_for(self, path: str) -> tuple[str, str | None]:
        content_type, disposition = super()._type_for(path)
        if disposition is None and can_run_script(content_type):
            disposition = attachment(os.path.basename(path))
        return content_type, disposition

    def locate(self, raw_path: str) -> Located:
        """Strip PREFIX, then resolve exactly as StaticFiles does (same refusals)."""
        if raw_path != PREFIX and not raw_path.startswith(PREFIX + "/"):
            raise NotFound("not under the uploads prefix")
        return super().locate(raw_path[len(PREFIX):])


# ---------------------------------------------------------------- the handler

class UploadHandler:
    """GET/HEAD/OPTIONS/PUT/DELETE under /uploads/; also owns the directory and the
    credentials check that POST /upload (forms.PostHandler) shares."""

    # GET and HEAD are the static handler's; writes check the same preconditions.
    reads_fields: FieldNames = StaticFiles.reads_fields | BasicAuth.reads_fields

    def __init__(self, config: Config, auth: BasicAuth | None = None) -> None:
        """Raises ConfigError when require_auth is set without a valid users file. `auth`:
        the checker to share with the router's [auth] require (one verified-credentials
        cache)."""
        uploads = config.uploads
        self.directory = os.path.realpath(uploads.directory)
        with contextlib.suppress(OSError):  # the master normally made it already
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
        self.files = UploadFiles(self.directory, (), config.static.download_extensions)
        self.require_auth = frozenset(m.upper() for m in uploads.require_auth)
        self.writers = frozenset(uploads.writers)
        self.auth: BasicAuth | None = None
        if self.require_auth:
            if not config.auth.users_file:
                raise ConfigError("methods need credentials but [auth] users_file is not set",
                                  key="uploads.require_auth")
            self.auth = auth or BasicAuth(config.auth.users_file, config.auth.realm)

    @staticmethod
    def handles(path: str) -> bool:
        """True for the URLs this handler owns: /uploads and /uploads/..."""
        return path == PREFIX or path.startswith(PREFIX + "/")

    def may_block(self, method: str) -> bool:
        """True when serving `method` may take long even without a body (a bcrypt check)."""
        return method in self.require_auth

    def serve(self, request: Request) -> Response:
        """Answer a request for one of our URLs; raises HTTPError subclasses."""
        method = request.method
        if method not in FILE_ALLOW:
            raise MethodNotAllowed(FILE_ALLOW)
        self.authorise(request)
        if method in ("GET", "HEAD"):
            return self.files.serve(request)
        if method == "OPTIONS":
            info = _stat(self.files.resolve(request.path))
            allowed = STATIC_METHODS if info and stat.S_ISDIR(info.st_mode) else FILE_ALLOW
            return Response(204, [("Allow", ", ".join(allowed))])
        if method == "PUT":
            return self._put(request)
        return self._delete(request)

    def authorise(self, request: Request) -> str | None:
        """Return the user when the method needs credentials (None when it does not);
        raises Unauthorized."""
        if self.auth is None or request.method not in self.require_auth:
            return None
        # Already authenticated by the router ([auth] require covers this path)?
        user = request.user or self.auth.authenticate(request)
        if self.writers and user not in self.writers:
            raise Forbidden(f"user {user!r} is not in [uploads] writers")
        return user

    def ensure_directory(self, content_length: int | None = None) -> None:
        """Create the uploads directory if it is missing (until the master does it at
        start), and refuse with 507 a declared body that cannot fit, before reading it.
        Raises InsufficientStorage or OSError."""
        with storage_errors():
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
        if content_length:
            fs = os.statvfs(self.directory)
            if content_length > fs.f_bavail * fs.f_frsize:
                raise InsufficientStorage("the upload is larger than the free space",
                                          close=True)

    # ------------------------------------------------------------- PUT / DELETE

    def _target(self, request: Request) -> tuple[str, os.stat_result | None]:
        """Resolve a write target; returns (path, its stat or None).

        Raises Forbidden (unsafe path), Conflict (parent directory missing: RFC 4918
        §9.7.1, as mod_dav), MethodNotAllowed (a directory), Forbidden (not a regular file).
        """
        located = self.files.locate(request.path)
        path = located.real
        info = _stat(path)
        if (info is not None and stat.S_ISDIR(info.st_mode)) or path == located.root:
            raise MethodNotAllowed(STATIC_METHODS, "the target is a directory")
        if os.path.basename(path).startswith("."):
            raise Forbidden("hidden names cannot be written")
        if not os.path.isdir(os.path.dirname(path)):
            raise Conflict("the parent directory does not exist")
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise Forbidden("not a regular file")
        return path, info

    @staticmethod
    def _check_preconditions(request: Request, info: os.stat_result | None) -> None:
        """RFC 9110 §13.1.1-§13.1.4 for a write; raises PreconditionFailed (412)."""
        if info is None:
            if request.headers.get("If-Match") is not None:
                raise PreconditionFailed("If-Match: the resource does not exist")
            return
        preconditions.evaluate(request.method, request.headers,
                               validators_for(info))

    def _put(self, request: Request) -> Response:
        """Create (201 + Location) or replace (204) a file; both carry the new ETag."""
        self.ensure_directory()
        path, info = self._target(request)
        self._check_preconditions(request, info)  # before reading: no 100 Continue on 412
        directory = os.path.dirname(path)
        self.ensure_directory(request.content_length)
        create_only = "*" in (request.headers.get_joined("If-None-Match") or "")
        with storage_errors(), TempFile(directory) as tmp:
            while chunk := request.body.read(CHUNK):
                tmp.write(chunk)
            new_info = tmp.finish()
            with locked_directory(directory):
                current = _stat(path)
                if current is not None and stat.S_ISDIR(current.st_mode):
                    raise MethodNotAllowed(STATIC_METHODS, "the target is a directory")
                self._check_preconditions(request, current)  # again, now atomically
                if create_only:
                    try:
                        os.link(tmp.path, path)  # fails, never overwrites, if it appeared
                    except FileExistsError:
                        raise PreconditionFailed("If-None-Match: the resource exists") \
                            from None
                else:
                    os.replace(tmp.path, path)
            fsync_directory(directory)
        headers = [("ETag", validators_for(new_info).etag)]
        if current is None:
            location = url_path(request.path)
            return json_response(201, {"status": "success",
                                       "message": "File created successfully",
                                       "filepath": location},
                                 [("Location", location), *headers])
        return Response(204, headers)

    def _delete(self, request: Request) -> Response:
        """Remove a file: 204, or 404 when it does not exist."""
        located = self.files.locate(request.path)
        path = located.real
        directory = os.path.dirname(path)
        lock = locked_directory(directory) if os.path.isdir(directory) else \
            contextlib.nullcontext()
        with storage_errors():
            with lock:
                info = _stat(path)
                if info is None:
                    raise NotFound("no such file")
                if stat.S_ISDIR(info.st_mode) or path == located.root:
                    raise MethodNotAllowed(STATIC_METHODS, "the target is a directory")
                if os.path.basename(path).startswith(".") or not stat.S_ISREG(info.st_mode):
                    raise Forbidden("not a regular file")
                self._check_preconditions(request, info)
                os.unlink(path)
            fsync_directory(directory)
        return Response(204)
