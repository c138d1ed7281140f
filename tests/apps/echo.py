"""A WSGI application for the fuzz test (tests/test_fuzz.py): it answers any request it is
given without ever failing, so a 500 from its mount is the server's fault.

Wrapped in wsgiref.validate.validator: a server that breaks PEP 3333 for some mutated
request (a malformed environ, a wrong input stream) makes the validator raise, and the
fuzz test sees that as a 500.

- `/deny...`: `403` without reading the body (an application's own early answer).
- `/stream...`: reads the whole body and answers in pieces of unknown length (chunked, or
  delimited by the close for HTTP/1.0); a query `pad=N` adds N pieces of 8 KiB (at most
  64, whatever N says).
- anything else: reads the whole body and answers a JSON summary of the request with a
  Content-Length.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import WSGIWarning, validator

Start = Callable[..., Any]

# An extension method (BREW, PATCH spelled in lower case) is a valid request; the
# validator's warning about it would only clutter the error log.
warnings.filterwarnings("ignore", category=WSGIWarning)


def summary(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while piece := stream.read(65536):
        digest.update(piece)
        size += len(piece)
    shown = {name: environ.get(name, "") for name in (
        "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_LENGTH",
        "CONTENT_TYPE", "SERVER_PROTOCOL", "HTTP_HOST", "REMOTE_USER")}
    shown.update(scheme=environ["wsgi.url_scheme"], size=size, sha256=digest.hexdigest())
    return json.dumps(shown).encode()  # ASCII: any str the environ holds can be shown


def pieces(body: bytes, pad: int) -> Iterator[bytes]:
    third = len(body) // 3 + 1
    for start in range(0, len(body), third):
        yield body[start:start + third]
    for _ in range(pad):
        yield b"p" * 8192


def padding(query: str) -> int:
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "pad" and value.isascii() and value.isdigit():
            return min(int(value), 64)
    return 0


def echo(environ: dict[str, Any], start: Start) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/deny"):
        start("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", "8")])
        return [b"not you\n"]
    body = summary(environ)
    if path.startswith("/stream"):
        start("200 OK", [("Content-Type", "application/json")])
        return pieces(body, padding(environ.get("QUERY_STRING", "")))
    start("200 OK", [("Content-Type", "application/json"),
                     ("Content-Length", str(len(body)))])
    return [body]


application = validator(echo)
