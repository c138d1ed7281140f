"""Static files under the document root: safe path resolution, index files, MIME types,
validators, conditional and range requests, and the seed's forced downloads.

Path safety (a request can only ever name a file under document_root):
  1. the raw path may not contain encoded "/" or "\\" (%2f, %5c): 403;
  2. it is percent-decoded exactly once; NUL, backslash or invalid UTF-8: 403 / 400;
  3. "." and ".." segments are resolved lexically; a ".." that would climb above the root: 403;
     any other segment starting with "." (hidden files) is refused, except .well-known: 403;
  4. the result's real path (symlinks followed) must still lie under the root's: 403.
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from prefork.errors import (
    OUT_OF_DESCRIPTORS,
    BadRequest,
    Forbidden,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    OutOfDescriptors,
    RangeNotSatisfiable,
)
from prefork.http.message import FieldNames, FileBody, Request, Response
from prefork.http.parser import format_response_head
from prefork.site import preconditions
from prefork.site.preconditions import Unsatisfiable, Validators, validators_for

STATIC_METHODS = ("GET", "HEAD", "OPTIONS")
# The per-worker file cache (like nginx's open_file_cache, but checked with stat() on every
# request so a changed file is never served stale): metadata and prebuilt headers for up to
# CACHE_ENTRIES paths, and the bytes of files up to CACHE_FILE_BYTES (sent with the head in
# one send()), CACHE_TOTAL_BYTES at most. Larger files go out with sendfile(). The stat()
# follows the path as the request names it, so a symlink swapped to a new release is seen at
# once; the path's full resolution (the root check, which index file) is redone after
# RESOLVE_SECONDS (nginx: open_file_cache_valid, 60 s by default).
CACHE_ENTRIES = 1024
CACHE_FILE_BYTES = 32 * 1024
CACHE_TOTAL_BYTES = 16 << 20
RESOLVE_SECONDS = 1.0
_TEXT_TYPES = ("application/javascript", "application/json", "application/xml",
               "image/svg+xml")
ALLOWED_HIDDEN = frozenset({".well-known"})


def _content_type_table() -> mimetypes.MimeTypes:
    # Built-in table only: /etc/mime.types differs between machines, our answers should not.
    table = mimetypes.MimeTypes(filenames=())
    table.add_type("text/markdown", ".md")
    table.add_type("image/webp", ".webp")
    table.add_type("font/woff2", ".woff2")
    return table


# How a failed stat()/open() is answered, as nginx's static module does; out of descriptors
# is 503 with Retry-After (a shortage that passes); anything else (EIO...) is a real server
# error and goes up as a 500 with its traceback.
_NOT_FOUND = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})
_FORBIDDEN = frozenset({errno.EACCES, errno.EPERM, errno.ELOOP})
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_OBS_TEXT = re.compile(r"[\x80-\xff]")


def refusal(exc: OSError) -> HTTPError:
    """The HTTP error for a file-system error on a path a client named; re-raises others."""
    if exc.errno in _NOT_FOUND:
        return NotFound(f"no such file ({exc.strerror})")
    if exc.errno in _FORBIDDEN:
        return Forbidden(f"not accessible ({exc.strerror})")
    if exc.errno in OUT_OF_DESCRIPTORS:
        return OutOfDescriptors(f"out of file descriptors opening a file ({exc.strerror})")
    raise exc


def url_path(raw_path: str) -> str:
    """A request path (wire text) fit for a Location field or a JSON document: raw bytes
    0x80-0xFF percent-encoded (RFC 3986 §2.1), the rest as the client sent it."""
    if raw_path.isascii():
        return raw_path
    return _OBS_TEXT.sub(lambda m: f"%{ord(m[0]):02X}", raw_path)


def serialize_fields(headers: list[tuple[str, str]]) -> bytes:
    """The field lines of `headers` ("Name: value\\r\\n" each), validated as any response head
    is (format_response_head raises ValueError for injection attempts)."""
    head = format_response_head("HTTP/1.1", 200, "OK", headers)
    return head[head.index(b"\r\n") + 2:-2]


def file_identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must be unchanged for a cached file to still be the file on disk."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@dataclass(slots=True)
class CachedFile:
    """What the file cache keeps of one file; also the message.Repeatable of a 200 answered
    whole from it (raw_headers, body, current())."""

    path: str  # the real path, resolved and checked against the root when cached
    named: str  # the same file as the request names it, symlinks not followed
    resolved_at: float  # time.monotonic() of the resolution
    identity: tuple[int, int, int, int, int]
    validators: Validators
    headers: list[tuple[str, str]]  # Last-Modified, ETag, Content-Type, [Disposition], Ranges
    raw_headers: bytes  # those plus Content-Length, serialised and checked once
    size: int
    body: bytes | None  # the content of a small file
    key: str  # the request path it is cached under
    files: StaticFiles = field(repr=False, compare=False)  # whose cache holds it

    def current(self) -> bool:
        """Whether it still describes what its request path names: its cache holds it under
        `key`, it is the same file now (one stat()), and its resolution is less than
        RESOLVE_SECONDS old."""
        if (self.files.cache.get(self.key) is not self
                or time.monotonic() - self.resolved_at >= RESOLVE_SECONDS):
            return False
        try:
            return file_identity(os.stat(self.named)) == self.identity
        except OSError:
            return False


class Located(NamedTuple):
    """Where a request path leads under the document root."""

    named: str  # under the root as configured, symlinks not followed (freshness checks)
    real: str  # the real path, checked to lie under `root`
    root: str  # the root's real path, resolved once for this look-up
    names_directory: bool  # the normalised path ends with "/" (RFC 3986 §5.2.4)


class _Replaced(Exception):
    """The file on disk is no longer the cached one."""


@dataclass(frozen=True, slots=True)
class _NeedsBody:
    """A response that needs the file's descriptor, built once it is open and checked."""

    build: Callable[[int], Response]


class StaticFiles:
    """Serves GET/HEAD/OPTIONS for files under `root`."""

    reads_fields: FieldNames = preconditions.READS_FIELDS | {"range"}
    # Fields every answer of a file carries (200, 206; a 304 carries the validators only).
    extra_fields: tuple[tuple[str, str], ...] = ()

    def __init__(self, root: str, index_files: tuple[str, ...],
                 download_extensions: tuple[str, ...], cache_size: int = CACHE_ENTRIES,
                 mount: str = "/") -> None:
        # The root as configured: it may be a symbolic link switched between releases, so
        # its real path is worked out again, once, at each look-up (locate()).
        self.named_root = os.path.abspath(root)
        self.index_files = index_files
        self.download_extensions = frozenset(download_extensions)
        self._types = _content_type_table()
        # raw request path -> CachedFile; revalidated by one stat() per request, so never stale
        self.cache: dict[str, CachedFile] = {}
        self.cache_size = cache_size
        self.cache_bytes = 0
        self.cache_lock = threading.Lock()  # changes only; look-ups need none
        self.excluded: tuple[str, ...] = ()  # directories under the root not served here
        # The URL prefix the root is mounted at ([static] mount): "" for "/", else taken off
        # each request path (the router gives us only paths under it).
        self.prefix = "" if mount == "/" else mount

    # ------------------------------------------------------------- resolution

    def resolve(self, raw_path: str) -> str:
        """Map a raw (percent-encoded) request path to a filesystem path under the root.

        Returns the path (which may not exist). Raises Forbidden for anything that would
        leave the root or name a hidden file, BadRequest for undecodable bytes.
        """
        return self.locate(raw_path).real

    def locate(self, raw_path: str) -> Located:
        """Where `raw_path` leads: see resolve() for what it refuses."""
        if self.prefix and (raw_path == self.prefix or raw_path.startswith(self.prefix + "/")):
            raw_path = raw_path[len(self.prefix):]  # "/static" itself: the root, unslashed
        lowered = raw_path.lower()
        if "%2f" in lowered or "%5c" in lowered:
            raise Forbidden("encoded slashes are not allowed in paths")
        if "%" in raw_path and _BAD_ESCAPE.search(raw_path):
            raise BadRequest("malformed percent-encoding in the path (RFC 3986 §2.1)",
                             close=False)
        try:  # wire text: each character one byte (raw UTF-8 is decoded here, once)
            decoded = unquote_to_bytes(raw_path.encode("latin-1")).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the path is not valid UTF-8", close=False) from None
        if "\x00" in decoded or "\\" in decoded:
            raise Forbidden("NUL or backslash in path")
        segments: list[str] = []
        parts = decoded.split("/")
        for segment in parts:
            if segment in ("", "."):
                continue
            if segment == "..":
                if not segments:
                    raise Forbidden("path escapes the document root")
                segments.pop()
            elif segment.startswith(".") and segment not in ALLOWED_HIDDEN:
                raise Forbidden("hidden files are not served")
            else:
                segments.append(segment)
        # The real path is found below one resolution of the root and checked against that
        # same one: a root symlink switched meanwhile cannot make a good path look outside.
        root = os.path.realpath(self.named_root)
        real = os.path.realpath(os.path.join(root, *segments))
        self._check_real(real, root)
        # "" is the root itself as UploadFiles passes it for /uploads: no trailing slash.
        names_directory = parts[-1] in (".", "..") or (parts[-1] == "" and len(parts) > 1)
        return Located(os.path.join(self.named_root, *segments), real, root, names_directory)

    def _check_real(self, real: str, root: str) -> None:
        """Raise Forbidden unless the real path `real` lies under `root` (a real path) and
        outside the excluded directories. These are compared by identity, not by name: on
        a case-insensitive file system /Uploads is the uploads directory too."""
        if real != root and not real.startswith(root + os.sep):
            raise Forbidden("path resolves outside the document root (symbolic link)")
        if not self.excluded:
            return
        excluded = set()
        for directory in self.excluded:
            with contextlib.suppress(OSError):
                info = os.stat(directory)
                excluded.add((info.st_dev, info.st_ino))
        path = real
        while len(path) > len(root):
            with contextlib.suppress(OSError):
                info = os.stat(path)
                if (info.st_dev, info.st_ino) in excluded:
                    raise Forbidden("this directory is served under its own URL only")
            path = os.path.dirname(path)

    def is_current(self, entry: CachedFile) -> bool:
        """Whether a cache entry still describes what its request path names (see
        CachedFile.current: the quick path asks the entry itself)."""
        return entry.current()

    # ------------------------------------------------------------- serving

    def serve(self, request: Request) -> Response:
        """Answer a GET, HEAD or OPTIONS for a static resource."""
        if request.method not in STATIC_METHODS:
            raise MethodNotAllowed(STATIC_METHODS)
        entry = self.cache.get(request.path)
        if entry is not None and request.method != "OPTIONS":
            if self.is_current(entry):
                return self._file_response(request, entry, None)
            self._forget(request.path)
        resolved_at = time.monotonic()
        located = self.locate(request.path)
        named, path = located.named, located.real
        try:
            info = os.stat(path)
        except OSError as exc:
            raise refusal(exc) from None
        if located.names_directory and not stat.S_ISDIR(info.st_mode):
            raise NotFound("a file named with a trailing slash")  # as open(2): ENOTDIR
        if stat.S_ISDIR(info.st_mode):
            if not located.names_directory:
                location = url_path(request.path) + "/" + (f"?{url_path(request.query)}"
                                                            if request.query else "")
                return Response(301, [("Location", location),
                                      ("Content-Type", "text/html; charset=utf-8")],
                                _moved_body(location))
            name, path, info = self._index(path, located.root)
            named = os.path.join(named, name)
        if not stat.S_ISREG(info.st_mode):
            raise Forbidden("not a regular file")
        if request.method == "OPTIONS":
            return Response(204, [("Allow", ", ".join(STATIC_METHODS))])
        entry, fd = self._remember(request.path, named, path, resolved_at)
        return self._file_response(request, entry, fd)

    def _index(self, directory: str, root: str) -> tuple[str, str, os.stat_result]:
        """The first index file of `directory` that is a regular file passing the same
        checks as any other path: (its name, its real path, its stat). As Apache's mod_dir,
        a name that exists but is refused is passed over; if no name is served, the first
        refusal is raised, else Forbidden (no listings)."""
        refused: Forbidden | None = None
        for name in self.index_files:
            candidate = os.path.join(directory, name)
            try:
                info = os.stat(candidate)
            except OSError:
                continue
            real = os.path.realpath(candidate)
            try:
                self._check_real(real, root)
            except Forbidden as exc:
                refused = refused or exc
                continue
            if stat.S_ISREG(info.st_mode):
                return name, real, info
        raise refused or Forbidden("directory has no index file and listings are disabled")

    # ------------------------------------------------------------- the file cache

    def _remember(self, key: str, named: str, path: str, resolved_at: float
                  ) -> tuple[CachedFile, int]:
        """Open the file and build (and cache, when there is room) what a response needs.

        Returns the entry and the open descriptor. Everything — validators, size, the
        cached bytes — comes from fstat() and reads of that one descriptor, so a file
        replaced by a rename meanwhile can never be sent mixed with the old one's length.
        """
        fd = self._open(path)
        try:
            return self._remember_open(key, named, path, resolved_at, fd), fd
        except BaseException:
            os.close(fd)
            raise

    def _remember_open(self, key: str, named: str, path: str, resolved_at: float, fd: int
                       ) -> CachedFile:
        info = os.fstat(fd)
        validators = validators_for(info)
        content_type, disposition = self._type_for(path)
        headers = [("Last-Modified", formatdate(validators.last_modified, usegmt=True)),
                   ("ETag", validators.etag), ("Content-Type", content_type)]
        if disposition:
            headers.append(("Content-Disposition", disposition))
        headers += self.extra_fields
        headers.append(("Accept-Ranges", "bytes"))
        body = None
        if info.st_size <= CACHE_FILE_BYTES and self.cache_bytes < CACHE_TOTAL_BYTES:
            body = os.pread(fd, info.st_size, 0)
            if len(body) != info.st_size:
                body = None  # written to in place right now: serve it from the fd this time
        full = [*headers, ("Content-Length", str(info.st_size))]
        entry = CachedFile(path, named, resolved_at, file_identity(info), validators, headers,
                           serialize_fields(full), info.st_size, body, key, self)
        if self.cache_size:
            with self.cache_lock:
                self._forget_locked(key)
                if len(self.cache) >= self.cache_size:
                    self._forget_locked(next(iter(self.cache)))  # oldest first, O(1)
                self.cache[key] = entry
                self.cache_bytes += len(body or b"")
        return entry

    def _forget(self, key: str) -> None:
        with self.cache_lock:
            self._forget_locked(key)

    def _forget_locked(self, key: str) -> None:
        entry = self.cache.pop(key, None)
        if entry is not None:
            self.cache_bytes -= len(entry.body or b"")

    def _file_response(self, request: Request, entry: CachedFile, fd: int | None) -> Response:
        """Answer from `entry`. `fd` is the descriptor the entry was built from, or None for
        a cache hit: then the file is reopened only if its bytes are needed, and checked
        (fstat) to still be the cached one — else the entry is rebuilt from a fresh open."""
        try:
            return self._answer(request, entry, fd)
        except _Replaced:
            self._forget(request.path)
            return self.serve(request)

    def _descriptor(self, entry: CachedFile, fd: int | None) -> int:
        if fd is not None:
            return fd
        fd = self._open(entry.path)
        try:
            same = file_identity(os.fstat(fd)) == entry.identity
        except BaseException:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            raise _Replaced()
        return fd

    def _answer(self, request: Request, entry: CachedFile, fd: int | None) -> Response:
        """The response; `fd` (if given) and any descriptor opened here end up owned by the
        response's FileBody, or closed: on every error too."""
        try:
            response = self._answer_from(request, entry, entry.validators, entry.headers)
            if not isinstance(response, _NeedsBody):
                return response
            fd = self._descriptor(entry, fd)
            built = response.build(fd)
            fd = None  # the FileBody owns it now
            return built
        finally:
            if fd is not None:
                os.close(fd)

    def _answer_from(self, request: Request, entry: CachedFile, validators: Validators,
                     headers: list[tuple[str, str]]) -> Response | _NeedsBody:
        if preconditions.evaluate(request.method, request.headers, validators):
            return Response(304, headers[:2])
        size = entry.size
        ranges = None
        range_header = request.headers.get("Range")
        if range_header is not None and request.method == "GET" and \
                preconditions.if_range_allows(request.headers, validators):
            try:
                ranges = preconditions.parse_ranges(range_header, size)
            except Unsatisfiable:
                raise RangeNotSatisfiable(
                    "no requested range overlaps the file",
                    headers=[("Content-Range", f"bytes */{size}")]) from None
        if ranges is None:
            full = [*headers, ("Content-Length", str(size))]
            if request.method == "HEAD" or entry.body is not None:
                body = entry.body if request.method != "HEAD" and entry.body is not None \
                    else b""
                return Response(200, full, body, raw_headers=entry.raw_headers,
                                repeatable=entry)
            return _NeedsBody(lambda fd: Response(200, full, FileBody(fd, 0, size),
                                                  raw_headers=entry.raw_headers))
        if len(ranges) == 1:
            first, last = ranges[0]
            partial = [*headers, ("Content-Range", f"bytes {first}-{last}/{size}"),
                       ("Content-Length", str(last - first + 1))]
            return _NeedsBody(lambda fd: Response(206, partial,
                                                  FileBody(fd, first, last - first + 1)))
        content_type = headers[2][1]
        return _NeedsBody(lambda fd: _multipart(headers, content_type, ranges, size, fd))

    def _open(self, path: str) -> int:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise refusal(exc) from None

    def _type_for(self, path: str) -> tuple[str, str | None]:
        """(Content-Type, Content-Disposition or None) of the file at `path`."""
        name = os.path.basename(path)
        extension = os.path.splitext(name)[1].lower()
        if extension in self.download_extensions:
            return "application/octet-stream", attachment(name)
        guessed, _encoding = self._types.guess_type(name, strict=False)
        if guessed is None:
            return "application/octet-stream", None
        if guessed.startswith("text/") or guessed in _TEXT_TYPES:
            return guessed + "; charset=utf-8", None
        return guessed, None


# What the quoted-string fallback of a download's name may not carry: controls (a field
# value cannot), '"' and '\\' (they would need escapes that user agents handle unevenly).
_UNQUOTABLE = re.compile(r'[\x00-\x1f\x7f"\\]')


def attachment(name: str) -> str:
    """Content-Disposition for a download (RFC 6266), with an RFC 8187 UTF-8 form if needed."""
    ascii_name = _UNQUOTABLE.sub("_", name.encode("ascii", "replace").decode())
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


def _moved_body(location: str) -> bytes:
    from html import escape

    return (f'<!DOCTYPE html>\n<html><head><title>301 Moved Permanently</title></head>'
            f'<body><h1>Moved Permanently</h1><p>The document has moved '
            f'<a href="{escape(location)}">here</a>.</p></body></html>\n').encode()


def _multipart(headers: list[tuple[str, str]], content_type: str,
               ranges: list[tuple[int, int]], size: int, fd: int) -> Response:
    """206 multipart/byteranges (RFC 9110 §14.6): every part is a region of the one
    descriptor `fd`, owned (and closed, after it is sent) by the last part alone."""
    boundary = uuid.uuid4().hex
    body: list[bytes | FileBody] = []
    for index, (first, last) in enumerate(ranges):
        part_head = (f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n")
        body.append(part_head.encode("latin-1") if index else part_head[2:].encode("latin-1"))
        body.append(FileBody(fd, first, last - first + 1, owns=index == len(ranges) - 1))
    body.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
    length = sum(len(p) if isinstance(p, bytes) else p.length for p in body)
    kept = [(k, v) for k, v in headers if k != "Content-Type"]
    return Response(206, [*kept, ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
                          ("Content-Length", str(length))], body)
