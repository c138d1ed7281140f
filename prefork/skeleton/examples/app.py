"""A small WSGI application (PEP 3333) for prefork: the seed client's `POST /something`.

    httpdctl run app:application --chdir examples --static /static=../htdocs

or, in etc/httpd.ini (with the document root moved out of the way):

    [static]
    mount = /static
    [app]
    module = app:application
    path = examples

Endpoints, all answering JSON:

    GET  /              what this application offers
    POST /something     form fields and an optional file: a JSON object, a urlencoded form,
                        or multipart/form-data with the file in the part named "file" (what
                        `httpd-client` sends for an entry with "data" and "file")
    PUT  /update        a JSON object, echoed back with what changed

Nothing is stored: the file is read in blocks and summed (its size and SHA-256 are in the
answer), so the example stays safe to run anywhere. Replace `describe_file` with your own
storage. Form parsing uses `multipart`, the form parser prefork itself depends on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

from multipart import MultipartError, parse_form_data

MAX_BODY = 64 << 20  # bytes of a request body this application accepts
BLOCK = 64 << 10
StartResponse = Callable[..., Any]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"] or "/"
    routes = {"/": ("GET", index), "/something": ("POST", something),
              "/update": ("PUT", update)}
    if path not in routes:
        return answer(start_response, "404 Not Found", {"error": f"no endpoint {path}"})
    allowed, handler = routes[path]
    if method not in (allowed, "HEAD" if allowed == "GET" else allowed):
        return answer(start_response, "405 Method Not Allowed",
                      {"error": f"{path} takes {allowed}"}, [("Allow", allowed)])
    length = environ.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > MAX_BODY:
        return answer(start_response, "413 Content Too Large",
                      {"error": f"the body is over {MAX_BODY} bytes"})
    try:
        status, body = handler(environ)
    except (ValueError, MultipartError) as exc:  # JSONDecodeError is a ValueError
        status, body = "400 Bad Request", {"error": f"unreadable body: {exc}"}
    return answer(start_response, status, body)


def index(environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "200 OK", {"endpoints": ["POST /something", "PUT /update"],
                      "mounted_at": environ["SCRIPT_NAME"] or "/"}


def something(environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The fields as a dict, and the file (if any) described."""
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.startswith("application/json"):
        data = json.loads(read_body(environ) or b"{}")
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return "201 Created", {"status": "success", "fields": data, "file": None}
    if not content_type.startswith(("multipart/form-data",
                                    "application/x-www-form-urlencoded")):
        return "415 Unsupported Media Type", {
            "error": "send JSON, a urlencoded form or multipart/form-data"}
    forms, files = parse_form_data(environ, strict=True, disk_limit=MAX_BODY)
    upload = files.get("file")
    try:
        described = describe_file(upload) if upload is not None else None
    finally:
        for part in files.values():
            part.close()  # its temporary file, when a large part was spooled to disk
    return "201 Created", {"status": "success", "fields": dict(forms.items()),
                           "file": described}


def describe_file(upload: Any) -> dict[str, Any]:
    """Read the uploaded part in blocks: its name, type, size and SHA-256."""
    digest, size = hashlib.sha256(), 0
    stream = upload.file
    stream.seek(0)
    while block := stream.read(BLOCK):
        digest.update(block)
        size += len(block)
    return {"name": upload.filename, "content_type": upload.content_type, "size": size,
            "sha256": digest.hexdigest()}


def update(environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    data = json.loads(read_body(environ) or b"{}")
    return "200 OK", {"status": "updated", "received": data}


def read_body(environ: dict[str, Any]) -> bytes:
    """The body, CONTENT_LENGTH bytes of it (PEP 3333's portable read: with a size). A
    chunked body has no CONTENT_LENGTH; prefork ends wsgi.input at its end anyway
    (wsgi.input_terminated), so read() without a size is the way to take it there."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        return bytes(environ["wsgi.input"].read(int(length)))
    if environ.get("wsgi.input_terminated"):
        return bytes(environ["wsgi.input"].read())
    return b""


def answer(start_response: StartResponse, status: str, body: dict[str, Any],
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), *(headers or [])])
    return [data]
