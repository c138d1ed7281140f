"""A small static-file WSGI app for the Python peers (gunicorn, waitress).

It serves files from $BENCH_DOCROOT the way a plain WSGI static handler does: per request it
resolves the path, opens the file, fstat()s it and hands it to the server's wsgi.file_wrapper
(gunicorn and waitress both have one; gunicorn's uses sendfile). Nothing is cached in memory
between requests, so it does the same per-request work a file server does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from email.utils import formatdate

DOCROOT = os.path.realpath(os.environ.get("BENCH_DOCROOT", "."))
BLOCK = 64 * 1024


def _not_found(start_response: Callable[..., object]) -> list[bytes]:
    body = b"not found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:
    rel = environ.get("PATH_INFO", "/").lstrip("/")
    path = os.path.realpath(os.path.join(DOCROOT, rel))
    if not path.startswith(DOCROOT + os.sep) or not os.path.isfile(path):
        return _not_found(start_response)
    f = open(path, "rb")  # noqa: SIM115 - closed by the server through the file wrapper
    st = os.fstat(f.fileno())
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(st.st_size)),
        ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
    ])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, BLOCK)
    return _read_blocks(f)


def _read_blocks(f: object) -> Iterable[bytes]:
    with f:  # type: ignore[attr-defined]
        while block := f.read(BLOCK):  # type: ignore[attr-defined]
            yield block
