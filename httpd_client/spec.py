"""Spec files (CTest.json, LTest.json): reading and validating them.

A spec file is JSON: either a bare list of request entries, or an object
``{"comment": "...", "requests": [...]}``. Each entry is an object:

    method       GET, HEAD, POST, PUT, DELETE (also OPTIONS, PATCH); default GET
    url          request target, default "/"; a query string is allowed
    data         key/value pairs: a JSON body (default), a form (``"encoding": "form"``),
                 form fields of a multipart body (with ``file``), or the query string
                 (GET, HEAD, DELETE, OPTIONS)
    file         {"name", "path", "fileType"}: an upload (POST, PUT, PATCH); a relative
                 ``path`` is resolved against the spec file's directory
    body         a raw request body (a string), sent as is
    encoding     json | form | multipart | raw: overrides how data/file are sent
    headers      extra request headers (they replace the client's defaults of the same name)
    expect       a status (200), a list of statuses, or an object with status,
                 body_contains, body_equals, json (a subset the JSON body must contain)
                 and headers (each value must occur in the response header)
    comment, description, name   free text, ignored

Every mistake raises SpecError naming the file and the entry (1-based, as the tables print).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
ENCODINGS = ("json", "form", "multipart", "raw")
ENTRY_KEYS = frozenset({"method", "url", "data", "file", "body", "encoding", "headers",
                        "expect", "comment", "description", "name"})
FILE_KEYS = frozenset({"name", "path", "fileType", "contentType"})
EXPECT_KEYS = frozenset({"status", "body_contains", "body_equals", "json", "headers"})
TOP_KEYS = frozenset({"comment", "description", "requests"})
# fileType shorthands of seed 000; anything containing "/" is taken as a media type.
FILE_TYPES = {"text": "text/plain", "json": "application/json", "html": "text/html",
              "binary": "application/octet-stream"}
Scalar = str | int | float | bool


class SpecError(Exception):
    """A spec file that cannot be used. str() is one line: file, entry, what is wrong."""

    def __init__(self, path: Path | str, message: str, index: int | None = None,
                 label: str = "") -> None:
        self.path = str(path)
        self.index = index
        self.message = message
        where = self.path
        if index is not None:
            where += f": entry #{index}" + (f" ({label})" if label else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class FileSpec:
    name: str  # the filename sent to the server
    path: Path  # the local file (absolute)
    content_type: str


@dataclass(frozen=True)
class Expectation:
    statuses: tuple[int, ...] = ()  # empty: any 2xx or 3xx passes
    body_contains: tuple[str, ...] = ()
    body_equals: str | None = None
    json_subset: Any = None
    has_json: bool = False
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def explicit(self) -> bool:
        return bool(self.statuses)

    def describe_status(self) -> str:
        return "/".join(map(str, self.statuses)) if self.statuses else "2xx/3xx"

    def status_ok(self, status: int) -> bool:
        return status in self.statuses if self.statuses else 200 <= status < 400


@dataclass(frozen=True)
class Entry:
    index: int  # 1-based position in the file
    method: str
    url: str
    data: dict[str, Any] | None = None
    file: FileSpec | None = None
    body: str | None = None
    encoding: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    expect: Expectation = field(default_factory=Expectation)
    comment: str = ""

    @property
    def label(self) -> str:
        return f"{self.method} {self.url}"


@dataclass(frozen=True)
class Spec:
    path: Path
    entries: tuple[Entry, ...]
    comment: str = ""

    def select(self, method: str) -> tuple[Entry, ...]:
        """The entries of one method (``ALL`` or ``*``: every entry)."""
        method = method.upper()
        if method in ("ALL", "*"):
            return self.entries
        return tuple(e for e in self.entries if e.method == method)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file. Raises SpecError (also for a missing file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(path, f"cannot read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}:{exc.lineno}:{exc.colno}",
                        f"invalid JSON: {exc.msg}") from None
    return parse_spec(document, path)


def parse_spec(document: Any, path: Path) -> Spec:
    """Validate an already decoded spec document (see the module docstring)."""
    comment = ""
    if isinstance(document, dict):
        unknown = sorted(set(document) - TOP_KEYS)
        if unknown:
            raise SpecError(path, f"unknown top-level key {unknown[0]!r}; "
                                  f"allowed: {', '.join(sorted(TOP_KEYS))}")
        comment = str(document.get("comment") or document.get("description") or "")
        if "requests" not in document:
            raise SpecError(path, "the top-level object needs a \"requests\" list")
        document = document["requests"]
    if not isinstance(document, list):
        raise SpecError(path, "expected a list of request objects "
                              "(or an object with a \"requests\" list)")
    if not document:
        raise SpecError(path, "no requests in the file")
    base = path.resolve().parent
    entries = tuple(_entry(raw, i, path, base) for i, raw in enumerate(document, 1))
    return Spec(path=path, entries=entries, comment=comment)


def _entry(raw: Any, index: int, path: Path, base: Path) -> Entry:
    if not isinstance(raw, dict):
        raise SpecError(path, f"expected an object, got {_kind(raw)}", index)
    method = raw.get("method", "GET")
    url = raw.get("url", "/")
    label = f"{method} {url}" if isinstance(method, str) and isinstance(url, str) else ""

    def fail(message: str) -> SpecError:
        return SpecError(path, message, index, label)

    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(ENTRY_KEYS))}")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise fail(f"\"method\" must be one of {', '.join(METHODS)}, got {method!r}")
    method = method.upper()
    if not isinstance(url, str) or not url or any(c in url for c in " \r\n\t"):
        raise fail(f"\"url\" must be a path such as \"/index.html\", got {url!r}")
    if "://" in url:
        raise fail("\"url\" is a path on the server; point at the server with --url")
    if not url.startswith("/"):
        url = "/" + url
    label = f"{method} {url}"

    data = raw.get("data")
    if data is not None and not isinstance(data, dict):
        raise fail(f"\"data\" must be an object of key/value pairs, got {_kind(data)}")
    body = raw.get("body")
    if body is not None and not isinstance(body, str):
        raise fail(f"\"body\" must be a string, got {_kind(body)}")
    encoding = raw.get("encoding")
    if encoding is not None and encoding not in ENCODINGS:
        raise fail(f"\"encoding\" must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    upload = _file(raw.get("file"), base, fail) if "file" in raw else None
    if upload is not None and method not in BODY_METHODS:
        raise fail(f"\"file\" needs POST, PUT or PATCH, not {method}")
    if body is not None and (data is not None or upload is not None):
        raise fail("\"body\" cannot be combined with \"data\" or \"file\"")
    if data is not None and (method not in BODY_METHODS or encoding in ("form", "multipart")
                             or upload is not None):
        for key, value in data.items():
            if not isinstance(value, Scalar):
                raise fail(f"\"data\" value of {key!r} must be a string or number here "
                           f"(only a JSON body can nest), got {_kind(value)}")
    if encoding == "multipart" and data is None and upload is None:
        raise fail("\"encoding\": \"multipart\" needs \"data\" or \"file\"")
    if encoding == "raw" and upload is None and body is None:
        raise fail("\"encoding\": \"raw\" needs \"file\" or \"body\"")
    return Entry(index=index, method=method, url=url, data=data, file=upload, body=body,
                 encoding=encoding, headers=_headers(raw.get("headers"), fail, "headers"),
                 expect=_expect(raw.get("expect"), fail),
                 comment=str(raw.get("comment") or raw.get("description") or ""))


def _file(raw: Any, base: Path, fail: Any) -> FileSpec:
    if not isinstance(raw, dict):
        raise fail(f"\"file\" must be an object with name, path, fileType, got {_kind(raw)}")
    unknown = sorted(set(raw) - FILE_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} in \"file\"; "
                   f"allowed: {', '.join(sorted(FILE_KEYS))}")
    local = raw.get("path")
    if not isinstance(local, str) or not local:
        raise fail("\"file\" needs a \"path\" (the local file to upload)")
    resolved = (base / local).resolve()
    if not resolved.is_file():
        raise fail(f"\"file\" path {local!r} is not a readable file ({resolved})")
    name = raw.get("name", resolved.name)
    if not isinstance(name, str) or not name or any(c in name for c in "\r\n\"/\\"):
        raise fail(f"\"file\" name must be a plain filename, got {name!r}")
    content_type = raw.get("contentType")
    if content_type is None:
        content_type = _content_type(raw.get("fileType"), resolved)
    if not isinstance(content_type, str) or "/" not in content_type:
        raise fail(f"\"file\" contentType must be a media type, got {content_type!r}")
    return FileSpec(name=name, path=resolved, content_type=content_type)


def _content_type(file_type: Any, path: Path) -> str:
    import mimetypes

    guessed = mimetypes.guess_type(path.name)[0]
    if isinstance(file_type, str):
        if "/" in file_type:
            return file_type
        if file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        if guessed and guessed.startswith(file_type + "/"):
            return guessed  # "image" + photo.jpg -> image/jpeg
        if file_type == "image":
            return "image/" + (path.suffix.lstrip(".").lower() or "octet-stream")
    return guessed or "application/octet-stream"


def _headers(raw: Any, fail: Any, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise fail(f"\"{where}\" must be an object of name/value pairs, got {_kind(raw)}")
    out = []
    for name, value in raw.items():
        if not name or any(c in name for c in " :\r\n\t"):
            raise fail(f"bad header name {name!r} in \"{where}\"")
        if not isinstance(value, Scalar) or any(c in str(value) for c in "\r\n"):
            raise fail(f"header {name!r} in \"{where}\" needs a one-line string value")
        out.append((name, str(value)))
    return tuple(out)


def _expect(raw: Any, fail: Any) -> Expectation:
    if raw is None:
        return Expectation()
    if isinstance(raw, int | list):
        return Expectation(statuses=_statuses(raw, fail))
    if not isinstance(raw, dict):
        raise fail(f"\"expect\" must be a status, a list of statuses or an object, "
                   f"got {_kind(raw)}")
    unknown = sorted(set(raw) - EXPECT_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} in \"expect\"; "
                   f"allowed: {', '.join(sorted(EXPECT_KEYS))}")
    contains = raw.get("body_contains", ())
    if isinstance(contains, str):
        contains = (contains,)
    if not isinstance(contains, list | tuple) or not all(isinstance(s, str) for s in contains):
        raise fail("\"expect.body_contains\" must be a string or a list of strings")
    equals = raw.get("body_equals")
    if equals is not None and not isinstance(equals, str):
        raise fail("\"expect.body_equals\" must be a string")
    statuses = _statuses(raw["status"], fail) if "status" in raw else ()
    return Expectation(statuses=statuses, body_contains=tuple(contains), body_equals=equals,
                       json_subset=raw.get("json"), has_json="json" in raw,
                       headers=_headers(raw.get("headers"), fail, "expect.headers"))


def _statuses(raw: Any, fail: Any) -> tuple[int, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool)
                             and 100 <= v <= 599 for v in values):
        raise fail(f"expected status must be an integer 100-599 (or a list of them), "
                   f"got {raw!r}")
    return tuple(values)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
