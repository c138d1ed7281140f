"""Every request field a piece of code reads is one it declares (`reads_fields`).

The quick path (serve/quick.py) may ignore every field that the code making its answers
does not declare, so an undeclared read would let it repeat a wrong answer. Here a corpus
of requests goes through the router and each handler, the parser and the helpers with a
Headers that records every name asked for (a field's absence is an answer too) and counts
iteration as reading them all: a read that is not declared fails the test.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import bcrypt
import pytest

from prefork.config.settings import load_config
from prefork.errors import HTTPError
from prefork.http import parser as parser_module
from prefork.http.message import EVERY_FIELD, FieldNames, Headers, Request, Response
from prefork.http.parser import READS_FIELDS, NeedData, RequestHead, RequestParser
from prefork.serve.output import release_body
from prefork.site import preconditions
from prefork.site.apps import WSGIHandler
from prefork.site.auth import BasicAuth
from prefork.site.preconditions import Validators
from prefork.site.router import Handler, Router
from prefork.site.static import StaticFiles
from prefork.site.uploads.forms import PostHandler
from prefork.site.uploads.put import UploadHandler

from .conftest import make_root, write_config

LOCAL = ("127.0.0.1", 8080)
OLD = "Sun, 06 Nov 1994 08:49:37 GMT"
FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"


class RecordingHeaders(Headers):
    """Headers that note, in lower case, every field name code asks about."""

    __slots__ = ("read",)

    def __init__(self, items: Iterable[tuple[str, str]] = (),
                 read: set[str] | None = None) -> None:
        super().__init__(items)
        self.read: set[str] = read if read is not None else set()

    def get(self, name: str, default: str | None = None) -> str | None:
        self.read.add(name.lower())
        return super().get(name, default)

    def get_all(self, name: str) -> list[str]:
        self.read.add(name.lower())
        return super().get_all(name)

    def get_joined(self, name: str) -> str | None:
        self.read.add(name.lower())
        return super().get_joined(name)

    def tokens(self, name: str) -> list[str]:
        self.read.add(name.lower())
        return super().tokens(name)

    def count(self, name: str) -> int:
        self.read.add(name.lower())
        return super().count(name)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name.lower())
        return super().__contains__(name)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self.read |= EVERY_FIELD  # whoever walks the fields may depend on any of them
        return super().__iter__()

    def __len__(self) -> int:
        self.read |= EVERY_FIELD
        return super().__len__()


def undeclared(read: set[str], declared: FieldNames) -> set[str]:
    """The names read beyond `declared` (nothing when it declares every field)."""
    return set() if declared >= EVERY_FIELD else read - declared


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) if size < 0 else size
        piece, self.data = self.data[:size], self.data[size:]
        return piece


def credentials(password: str) -> str:
    return "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()


# Fields with values that steer the code through its branches; every request carries Host.
PROBES: list[tuple[str, str]] = [
    ("If-Match", "*"), ("If-Match", '"nope"'), ("If-None-Match", "*"),
    ("If-None-Match", '"nope"'), ("If-Modified-Since", OLD), ("If-Modified-Since", FUTURE),
    ("If-Unmodified-Since", OLD), ("If-Unmodified-Since", FUTURE), ("Range", "bytes=0-3"),
    ("Range", "bytes=0-1,4-5"), ("Range", "bytes=999999-"), ("Range", "lines=1-2"),
    ("If-Range", '"nope"'), ("If-Range", OLD), ("Authorization", credentials("s3cret")),
    ("Authorization", credentials("wrong")), ("Authorization", "Bearer x"),
    ("Content-Type", "application/json"), ("Content-Type", "multipart/form-data; boundary=b"),
    ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Type", "text/plain"),
    ("Accept-Encoding", "gzip, br"), ("X-Forwarded-For", "192.0.2.1"),
    ("Forwarded", "for=192.0.2.1;proto=https"), ("X-Forwarded-Proto", "https"),
    ("Cookie", "a=b"), ("User-Agent", "probe/1"), ("Accept", "*/*"),
]


def field_sets() -> Iterator[list[tuple[str, str]]]:
    yield []
    for probe in PROBES:
        yield [probe]
    for ranged in (("Range", "bytes=0-3"), ("Range", "bytes=0-1,4-5")):
        for condition in PROBES:
            if condition[0] != "Range":
                yield [ranged, condition]
    firsts = {name: (name, value) for name, value in reversed(PROBES)}
    yield list(firsts.values())


BODIES = {"application/json": b'{"a": 1}\n',
          "multipart/form-data; boundary=b":
              b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nv\r\n--b--\r\n',
          "application/x-www-form-urlencoded": b"x=v"}
TARGETS = [("GET", "/about.html"), ("HEAD", "/about.html"), ("OPTIONS", "/about.html"),
           ("GET", "/"), ("GET", "/sub"), ("GET", "/missing"), ("GET", "/big.bin"),
           ("POST", "/about.html"), ("GET", "/uploads/"), ("GET", "/uploads/probe.txt"),
           ("HEAD", "/uploads/probe.txt"), ("OPTIONS", "/uploads/probe.txt"),
           ("PUT", "/uploads/probe.txt"), ("DELETE", "/uploads/gone.txt"),
           ("POST", "/upload"), ("OPTIONS", "/upload"), ("GET", "/server-status"),
           ("GET", "/server-status?auto"), ("OPTIONS", "*"), ("TRACE", "/")]


def request(method: str, target: str, fields: list[tuple[str, str]], read: set[str]
            ) -> Request:
    path, _, query = target.partition("?")
    content_type = dict(fields).get("Content-Type", "application/json")
    data = BODIES.get(content_type, b"x") if method in ("PUT", "POST") else b""
    headers = RecordingHeaders([("Host", "localhost"), *fields], read)
    return Request(method, target, path, query, "HTTP/1.1", headers, ("127.0.0.1", 40000),
                   has_body=bool(data), content_length=len(data) if data else None,
                   body=Body(data), host="localhost")


def serve(handler: Handler | Router, req: Request) -> None:
    """Serve `req`, whatever the answer; release what the response holds."""
    try:
        response: Response = (handler.handle(req, LOCAL) if isinstance(handler, Router)
                              else handler.serve(req))
    except (HTTPError, OSError):
        return
    release_body(response.body)
    close = getattr(response.body, "close", None)
    if close is not None:
        close()


@pytest.fixture(scope="module", params=["open", "authenticated"])
def router(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Router:
    base = tmp_path_factory.mktemp("fields")
    root = make_root(base)
    settings = {"status": {"enabled": "on"}}
    if request.param == "authenticated":
        users = base / "htpasswd"
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
        users.write_text(f"alice:{hashed}\n")
        settings |= {"uploads": {"require_auth": "GET HEAD OPTIONS POST PUT DELETE"},
                     "auth": {"users_file": str(users)}}
    router = Router(load_config(write_config(root, settings)))
    assert router.uploads is not None and router.post is not None
    (Path(router.uploads.directory) / "probe.txt").write_text("probe\n")
    return router


def test_the_router_and_its_handlers_read_only_the_fields_they_declare(router: Router
                                                                       ) -> None:
    seen: dict[str, set[str]] = {}  # handler class -> every field it was seen to read
    for (method, target), fields in itertools.product(TARGETS, field_sets()):
        if method == "DELETE":
            (Path(router.uploads.directory) / "gone.txt").write_text("gone\n")  # type: ignore[union-attr]
        path = target.partition("?")[0]
        handler = router.handler_for(path) if path != "*" else None
        declared = router.reads_fields | (handler.reads_fields if handler else frozenset())
        read: set[str] = set()
        serve(router, request(method, target, fields, read))
        assert not undeclared(read, declared), (method, target, fields, read - declared)
        if handler is not None:  # the handler alone, behind no router
            read = set()
            serve(handler, request(method, target, fields, read))
            assert not undeclared(read, handler.reads_fields), (method, target, fields)
            seen.setdefault(type(handler).__name__, set()).update(read)
    # The corpus reaches every declared read (status reads only request.host, which the
    # parser derives from Host): a declaration wider than the code costs quick answers.
    unused = set() if router.uploads.auth else BasicAuth.reads_fields  # type: ignore[union-attr]
    assert seen == {"StaticFiles": StaticFiles.reads_fields,
                    "UploadHandler": UploadHandler.reads_fields - unused,
                    "PostHandler": PostHandler.reads_fields - unused, "ServerStatus": set()}


def heads() -> Iterator[bytes]:
    yield b"GET / HTTP/1.0\r\n\r\n"
    for line in (b"GET / HTTP/1.1", b"GET http://localhost/ HTTP/1.1", b"PUT /x HTTP/1.1"):
        for fields in field_sets():
            extra = [f"{n}: {v}".encode("latin-1") for n, v in fields]
            for framing in ([], [b"Content-Length: 3"], [b"Transfer-Encoding: chunked"],
                            [b"Expect: 100-continue"], [b"Connection: close"],
                            [b"Connection: keep-alive, Upgrade"], [b"Expect: x"]):
                yield b"\r\n".join([line, b"Host: localhost", *extra, *framing, b"", b""])


def test_the_parser_acts_only_on_the_fields_it_declares(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    read: set[str] = set()
    monkeypatch.setattr(parser_module, "Headers",
                        lambda items: RecordingHeaders(items, read))
    parsed = 0
    for head in heads():
        parser = RequestParser()
        parser.feed(head)
        try:
            event = parser.next_event()
        except HTTPError:
            continue
        parsed += isinstance(event, RequestHead)
        assert not isinstance(event, NeedData)
    assert parsed > 100
    assert read == READS_FIELDS


def test_the_helpers_read_only_the_fields_their_users_declare(tmp_path: Path) -> None:
    validators = Validators('"1-2"', 784111777.0)
    for fields in field_sets():
        read: set[str] = set()
        headers = RecordingHeaders(fields, read)
        for method in ("GET", "HEAD", "PUT"):
            try:
                preconditions.evaluate(method, headers, validators)
            except HTTPError:
                pass
        preconditions.if_range_allows(headers, validators)
        assert not undeclared(read, preconditions.READS_FIELDS), fields
    users = tmp_path / "htpasswd"
    users.write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode())
    auth = BasicAuth(str(users), "test")
    for fields in field_sets():
        read = set()
        try:
            auth.authenticate(request("GET", "/", fields, read))
        except HTTPError:
            pass
        assert not undeclared(read, BasicAuth.reads_fields), fields


def test_an_application_sees_every_field_and_declares_so() -> None:
    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        start_response("200 OK", [])  # type: ignore[operator]
        return [b""]

    read: set[str] = set()
    handler = WSGIHandler(app, "/app", _NoLog(), multithread=True, multiprocess=True)
    serve(handler, request("GET", "/app/x", [("X-Forwarded-For", "192.0.2.1")], read))
    assert read >= EVERY_FIELD and handler.reads_fields >= EVERY_FIELD


class _NoLog:
    def log(self, level: str, message: str, client: tuple[str, int] | None = None,
            exc: BaseException | None = None, appendix: str = "") -> None:
        pass


def test_a_read_left_undeclared_fails_this_check(router: Router) -> None:
    """The mechanism itself: a static handler that starts to read Accept-Encoding without
    declaring it is caught by the same corpus."""

    class Negotiating(StaticFiles):
        def serve(self, request: Request) -> Response:
            request.headers.get("Accept-Encoding")
            return super().serve(request)

    static = router.static
    negotiating = Negotiating(static.named_root, static.index_files, ())
    read: set[str] = set()
    serve(negotiating, request("GET", "/about.html", [], read))
    assert undeclared(read, Negotiating.reads_fields) == {"accept-encoding"}
