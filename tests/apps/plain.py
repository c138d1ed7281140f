"""Hand-written WSGI applications for PEP 3333 edge cases, each wrapped in
wsgiref.validate.validator (any misuse by the server raises, and the test sees a 500).

`application` dispatches on PATH_INFO; every response body is bytes. Events the tests must
see from outside (an iterable closed, a body read) are appended to the file named by the
environment variable PLAIN_EVENTS, one line each.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

Start = Callable[..., Any]


def note(event: str) -> None:
    path = os.environ.get("PLAIN_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(event + "\n")


class Tracked:
    """A result iterable that notes when the server closes it."""

    def __init__(self, name: str, pieces: Iterable[bytes], delay: float = 0.0,
                 fail_after: int | None = None) -> None:
        self.name = name
        self.pieces = pieces
        self.delay = delay
        self.fail_after = fail_after

    def __iter__(self) -> Iterator[bytes]:
        for index, piece in enumerate(self.pieces):
            if self.fail_after is not None and index == self.fail_after:
                raise RuntimeError(f"{self.name} failed after {index} pieces")
            if self.delay:
                time.sleep(self.delay)
            yield piece

    def close(self) -> None:
        note(f"closed {self.name}")


def environ_view(environ: dict[str, Any], start: Start) -> list[bytes]:
    keys = [k for k in environ if k.isupper()]
    shown = {k: environ[k] for k in sorted(keys)}
    shown["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    shown["wsgi.multithread"] = environ["wsgi.multithread"]
    shown["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
    body = json.dumps(shown).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def upload(environ: dict[str, Any], start: Start) -> list[bytes]:
    """Read the body in 64 KiB pieces (chunked bodies too) and answer its size and digest."""
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while piece := stream.read(65536):
        digest.update(piece)
        size += len(piece)
    note(f"read {size}")
    body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
    start("200 OK", [("Content-Type", "application/json")])
    return [body]


def refuse(environ: dict[str, Any], start: Start) -> list[bytes]:
    """Answers without reading the body: a client waiting for 100 Continue never gets it."""
    start("403 Forbidden", [("Content-Type", "text/plain")])
    return [b"not you\n"]


def stream(environ: dict[str, Any], start: Start) -> Tracked:
    count = int(environ.get("QUERY_STRING") or "5")
    start("200 OK", [("Content-Type", "text/plain")])
    return Tracked("stream", (b"x" * 65536 for _ in range(count)))


def slow_download(environ: dict[str, Any], start: Start) -> Tracked:
    start("200 OK", [("Content-Type", "application/octet-stream")])
    return Tracked("slow", (b"y" * 65536 for _ in range(10_000)), delay=0.001)


def fail_before(environ: dict[str, Any], start: Start) -> list[bytes]:
    raise RuntimeError("the application failed before its first byte")


def fail_after(environ: dict[str, Any], start: Start) -> Tracked:
    start("200 OK", [("Content-Type", "text/plain")])
    return Tracked("failing", [b"first piece\n", b"never"], fail_after=1)


def wrong_length(environ: dict[str, Any], start: Start) -> Iterator[bytes]:
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    yield b"only twenty bytes!!\n"


def hop_by_hop(environ: dict[str, Any], start: Start) -> list[bytes]:
    start("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [b"x"]


def head(environ: dict[str, Any], start: Start) -> Tracked:
    note(f"called {environ['REQUEST_METHOD']}")
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return Tracked("head", [b"hello"])


def file(environ: dict[str, Any], start: Start) -> Any:
    handle = open(os.environ["PLAIN_FILE"], "rb")  # noqa: SIM115  (the wrapper closes it)
    size = os.fstat(handle.fileno()).st_size
    start("200 OK", [("Content-Type", "application/octet-stream"),
                     ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](handle, 65536)


def legacy_write(environ: dict[str, Any], start: Start) -> list[bytes]:
    write = start("200 OK", [("Content-Type", "text/plain")])
    write(b"written, ")
    return [b"then returned"]


def version(environ: dict[str, Any], start: Start) -> list[bytes]:
    """The code version a reload test edits (see test_apps.py)."""
    body = VERSION.encode()
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def pid(environ: dict[str, Any], start: Start) -> list[bytes]:
    """The worker's process id: which worker served a connection."""
    body = str(os.getpid()).encode()
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


VERSION = "one"
ROUTES: dict[str, Callable[[dict[str, Any], Start], Iterable[bytes]]] = {
    "/environ": environ_view, "/upload": upload, "/refuse": refuse, "/stream": stream,
    "/slow": slow_download, "/fail-before": fail_before, "/fail-after": fail_after,
    "/wrong-length": wrong_length, "/hop-by-hop": hop_by_hop, "/head": head, "/file": file,
    "/write": legacy_write, "/version": version, "/pid": pid,
}


def dispatch(environ: dict[str, Any], start: Start) -> Iterable[bytes]:
    route = ROUTES.get("/" + environ["PATH_INFO"].split("/")[1])
    if route is None:
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such route\n"]
    return route(environ, start)


application = validator(dispatch)
unchecked = dispatch  # for what the validator itself would refuse (a hop-by-hop field)
