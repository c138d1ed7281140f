"""Uploads and write methods (issue 4) against a real server: POST /upload with JSON, forms
and files (http.client and curl), PUT/DELETE with preconditions, and path safety."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Server, read_all, running_server, wait_for
from .test_http_static import one_response

NAME = re.compile(r"/uploads/upload_\d{8}_\d{6}_[0-9a-f]{6}\.json")
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for this module's checks; the uploads directory starts absent."""
    with running_server(tmp_path_factory.mktemp("upload")) as server:
        yield server


def uploads(server: Server) -> Path:
    return server.root / "htdocs" / "uploads"


def leftovers(server: Server) -> list[str]:
    """Temporaries under the uploads directory (there must never be any at rest)."""
    return [p.name for p in uploads(server).rglob(".tmp-*")]


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, str, bytes]],
              boundary: str = "") -> tuple[str, bytes]:
    """Build a multipart/form-data body by hand: returns (Content-Type, body)."""
    boundary = boundary or "----prefork" + secrets.token_hex(12)
    out = bytearray()
    for name, value in fields:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, filename, ctype, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


# ------------------------------------------------------------------ POST /upload, JSON

def test_json_upload_is_stored_byte_for_byte(up: Server) -> None:
    payload = b'{"username": "test", "data": [1, 2, 3], "text": "caf\xc3\xa9"}'
    response, body = up.get("/upload", "POST", JSON, payload)
    assert response.status == 201
    answer = json.loads(body)
    assert answer["status"] == "success" and answer["message"] == "File created successfully"
    assert NAME.fullmatch(answer["filepath"])
    assert response.getheader("Location") == answer["filepath"]
    assert response.getheader("Content-Type") == "application/json"
    stored = uploads(up) / answer["filepath"].rsplit("/", 1)[1]
    assert stored.read_bytes() == payload
    response, body = up.get(answer["filepath"])
    assert response.status == 200 and body == payload
    assert response.getheader("ETag")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.api+json"])
def test_json_media_type_variants(up: Server, content_type: str) -> None:
    response, body = up.get("/upload", "POST", {"Content-Type": content_type}, b"[1]")
    assert response.status == 201, body


def test_json_names_are_unique(up: Server) -> None:
    names = set()
    for _ in range(20):
        response, body = up.get("/upload", "POST", JSON, b"{}")
        assert response.status == 201
        names.add(json.loads(body)["filepath"])
    assert len(names) == 20


@pytest.mark.parametrize("payload", [b'{"a": [1, 2}', b"", b"NaN", b'{"a": Infinity}',
                                     b"\xff\xfe{", b"[" * 100000, b'{"a": 1} trailing'])
def test_invalid_json_is_400_with_a_json_body(up: Server, payload: bytes) -> None:
    before = set(os.listdir(uploads(up))) if uploads(up).exists() else set()
    response, body = up.get("/upload", "POST", JSON, payload)
    assert response.status == 400
    assert response.getheader("Content-Type") == "application/json"
    answer = json.loads(body)
    assert answer["status"] == "error" and answer["message"].startswith("invalid JSON")
    assert set(os.listdir(uploads(up))) == before


@pytest.mark.parametrize("headers", [{"Content-Type": "text/plain"}, {},
                                     {"Content-Type": "application/xml"}])
def test_non_json_content_type_is_415(up: Server, headers: dict[str, str]) -> None:
    response, body = up.get("/upload", "POST", headers, b'{"a": 1}')
    assert response.status == 415
    assert json.loads(body)["status"] == "error"
    assert "application/json" in response.getheader("Accept-Post", "")


def test_json_over_its_cap_is_413(up: Server) -> None:
    response, body = up.get("/upload", "POST", JSON, b"[" + b"1," * (1 << 19) + b"1]")
    assert response.status == 413 and json.loads(body)["status"] == "error"


def test_upload_allows_only_post(up: Server) -> None:
    response, _ = up.get("/upload")
    assert response.status == 405 and response.getheader("Allow") == "POST, OPTIONS"
    response, _ = up.get("/upload", "PUT", {}, b"x")
    assert response.status == 405 and response.getheader("Allow") == "POST, OPTIONS"
    response, _ = up.get("/upload", "OPTIONS")
    assert response.status == 204 and response.getheader("Allow") == "POST, OPTIONS"


# ------------------------------------------------------------------ POST /upload, forms

def test_multipart_with_data_and_file_via_http_client(up: Server) -> None:
    # Content that looks like multipart framing must come back unchanged.
    data = os.urandom(300_000) + b"\r\n--not-the-boundary\r\n\r\n" + os.urandom(1000)
    ctype, body = multipart([("name", "Delta-server"), ("location", "pune")],
                            [("file", "serverToBeuploaded.txt", "text/plain", data)])
    response, answer_bytes = up.get("/upload", "POST", {"Content-Type": ctype}, body)
    assert response.status == 201, answer_bytes
    answer = json.loads(answer_bytes)
    [stored] = answer["files"]
    assert stored["field"] == "file" and stored["filename"] == "serverToBeuploaded.txt"
    assert re.fullmatch(r"serverToBeuploaded(-\d+)?\.txt", stored["name"])
    assert stored["size"] == len(data)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["content_type"] == "text/plain"
    assert (uploads(up) / stored["name"]).read_bytes() == data
    assert answer["fields"] == {"name": "Delta-server", "location": "pune"}
    assert response.getheader("Location") == answer["form"]
    record = json.loads((uploads(up) / answer["form"].rsplit("/", 1)[1]).read_text())
    assert record["fields"] == {"name": "Delta-server", "location": "pune"}
    assert record["files"][0]["sha256"] == stored["sha256"]
    response, got = up.get(stored["filepath"])
    assert response.status == 200 and got == data
    assert not leftovers(up)


def test_multipart_via_curl(up: Server, tmp_path: Path) -> None:
    source = tmp_path / "photo.bin"
    data = os.urandom(1 << 20)
    source.write_bytes(data)
    result = subprocess.run(
        ["/usr/bin/curl", "-sS", "--fail-with-body", "-F", "name=Delta-server",
         "-F", "location=pune", "-F", f"file=@{source};type=image/png",
         "-F", f"evil=@{source};filename=../../etc/passwd",
         f"http://127.0.0.1:{up.port}/upload"],
        capture_output=True, timeout=30, check=True)
    answer = json.loads(result.stdout)
    assert answer["fields"] == {"name": "Delta-server", "location": "pune"}
    by_field = {f["field"]: f for f in answer["files"]}
    assert re.fullmatch(r"photo(-\d+)?\.bin", by_field["file"]["name"])
    assert by_field["file"]["content_type"] == "image/png"
    assert re.fullmatch(r"passwd(-\d+)?", by_field["evil"]["name"])
    for entry in answer["files"]:
        assert (uploads(up) / entry["name"]).read_bytes() == data
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert not (up.root / "etc" / "passwd").exists()


def test_urlencoded_form_is_recorded(up: Server) -> None:
    response, body = up.get("/upload", "POST",
                            {"Content-Type": "application/x-www-form-urlencoded"},
                            b"name=Delta-server&location=pune&tag=a&tag=b&note=caf%C3%A9+ok")
    assert response.status == 201, body
    answer = json.loads(body)
    expected = {"name": "Delta-server", "location": "pune", "tag": ["a", "b"],
                "note": "caf\u00e9 ok"}
    assert answer["fields"] == expected and answer["files"] == []
    record = json.loads((uploads(up) / answer["form"].rsplit("/", 1)[1]).read_text())
    assert record["fields"] == expected


@pytest.mark.parametrize(("filename", "expected"), [
    ("../../etc/passwd", "passwd"), ("..\\..\\win.ini", "win.ini"), (".hidden", "hidden"),
    ("a/b/c.txt", "c.txt"), ("C:\\Users\\x\\report.pdf", "report.pdf"), ("..", "upload.bin"),
    ("/", "upload.bin"), ("tab\there.txt", "tab_here.txt"),
])
def test_multipart_filenames_are_made_safe(up: Server, filename: str, expected: str) -> None:
    data = secrets.token_bytes(1000)
    ctype, body = multipart([], [("file", filename, "application/octet-stream", data)])
    response, answer = up.get("/upload", "POST", {"Content-Type": ctype}, body)
    assert response.status == 201, answer
    [stored] = json.loads(answer)["files"]
    stem, ext = os.path.splitext(expected)
    assert re.fullmatch(re.escape(stem) + r"(-\d+)?" + re.escape(ext), stored["name"])
    path = uploads(up) / stored["name"]
    assert path.parent == uploads(up) and path.read_bytes() == data


def test_same_filename_twice_gets_a_suffix(up: Server) -> None:
    name = f"same-{secrets.token_hex(4)}.txt"
    stored = []
    for data in (b"first", b"second"):
        ctype, body = multipart([], [("file", name, "text/plain", data)])
        response, answer = up.get("/upload", "POST", {"Content-Type": ctype}, body)
        assert response.status == 201
        stored.append(json.loads(answer)["files"][0]["name"])
    assert stored == [name, name.replace(".txt", "-1.txt")]
    assert (uploads(up) / stored[0]).read_bytes() == b"first"
    assert (uploads(up) / stored[1]).read_bytes() == b"second"


@pytest.mark.parametrize("body", [
    b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n\r\nabc",
    b"no boundary here at all",
    b"--b\r\nContent-Type: text/plain\r\n\r\nabc\r\n--b--\r\n",
])
def test_malformed_multipart_is_400_and_leaves_nothing(up: Server, body: bytes) -> None:
    before = set(os.listdir(uploads(up)))
    response, answer = up.get("/upload", "POST",
                              {"Content-Type": "multipart/form-data; boundary=b"}, body)
    assert response.status == 400 and json.loads(answer)["status"] == "error"
    assert set(os.listdir(uploads(up))) == before


def test_multipart_without_boundary_is_400(up: Server) -> None:
    response, _ = up.get("/upload", "POST", {"Content-Type": "multipart/form-data"}, b"x")
    assert response.status == 400


# ------------------------------------------------------------------ PUT / DELETE

def test_put_creates_then_replaces(up: Server) -> None:
    path = f"/uploads/put-{secrets.token_hex(4)}.bin"
    response, _ = up.get(path, "PUT", {}, b"version one")
    assert response.status == 201 and response.getheader("Location") == path
    etag = response.getheader("ETag")
    response, body = up.get(path)
    assert body == b"version one" and response.getheader("ETag") == etag
    response, body = up.get(path, "PUT", {}, b"version two, longer")
    assert response.status == 204 and body == b""
    new_etag = response.getheader("ETag")
    assert new_etag != etag
    response, body = up.get(path)
    assert body == b"version two, longer" and response.getheader("ETag") == new_etag
    response, _ = up.get(path, "OPTIONS")
    assert response.getheader("Allow") == "GET, HEAD, OPTIONS, PUT, DELETE"


def test_put_preconditions(up: Server) -> None:
    path = f"/uploads/cond-{secrets.token_hex(4)}.txt"
    response, _ = up.get(path, "PUT", {"If-Match": '"nope"'}, b"x")
    assert response.status == 412  # If-Match on a missing resource
    response, _ = up.get(path, "PUT", {"If-None-Match": "*"}, b"original")
    assert response.status == 201
    etag = response.getheader("ETag")
    response, _ = up.get(path, "PUT", {"If-None-Match": "*"}, b"clobber")
    assert response.status == 412
    response, _ = up.get(path, "PUT", {"If-Match": '"0-0"'}, b"clobber")
    assert response.status == 412
    assert up.get(path)[1] == b"original"
    response, _ = up.get(path, "PUT", {"If-Match": etag}, b"updated")
    assert response.status == 204
    response, _ = up.get(path, "PUT", {"If-Match": etag}, b"lost update")  # stale tag
    assert response.status == 412
    assert up.get(path)[1] == b"updated"


def test_put_empty_body(up: Server) -> None:
    path = f"/uploads/empty-{secrets.token_hex(4)}.txt"
    response, _ = up.get(path, "PUT", {"Content-Length": "0"})
    assert response.status == 201
    assert (uploads(up) / path.rsplit("/", 1)[1]).read_bytes() == b""


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST"])
@pytest.mark.parametrize("path", ["/index.html", "/new.txt", "/sub/page.html"])
def test_writes_outside_uploads_are_405(up: Server, method: str, path: str) -> None:
    before = (up.root / "htdocs" / "index.html").read_bytes()
    response, _ = up.get(path, method, {"Content-Type": "text/plain"}, b"pwned")
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD, OPTIONS"
    assert (up.root / "htdocs" / "index.html").read_bytes() == before
    assert not (up.root / "htdocs" / "new.txt").exists()


@pytest.mark.parametrize("target", [
    "/uploads/../index.html", "/uploads/%2e%2e/x", "/uploads/%2e%2e/index.html",
    "/uploads/..%2findex.html", "/uploads/..%5cindex.html", "/uploads/.hidden",
    "/uploads/x%00.txt", "/uploads/../../outside.txt", "/uploads/%2E%2E/%2E%2E/outside.txt",
])
def test_write_traversal_is_403(up: Server, target: str) -> None:
    index = (up.root / "htdocs" / "index.html").read_bytes()
    for method in ("PUT", "DELETE"):
        raw = up.raw(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                     f"Connection: close\r\n\r\npwned".encode())
        assert status_of(raw) == 403, (method, target, raw[:120])
    assert (up.root / "htdocs" / "index.html").read_bytes() == index
    assert (up.root.parent / "outside.txt").read_text() == "SECRET-OUTSIDE-CONTENT\n"
    assert not (up.root / "htdocs" / "x").exists()


def test_put_through_a_symlink_out_of_uploads_is_403(up: Server) -> None:
    link = uploads(up) / f"link-{secrets.token_hex(4)}"
    link.symlink_to(up.root.parent / "outside.txt")
    try:
        response, _ = up.get(f"/uploads/{link.name}", "PUT", {}, b"pwned")
        assert response.status == 403
        response, _ = up.get(f"/uploads/{link.name}", "DELETE")
        assert response.status == 403
    finally:
        link.unlink()
    assert (up.root.parent / "outside.txt").read_text() == "SECRET-OUTSIDE-CONTENT\n"


def test_put_to_directories_and_missing_parents(up: Server) -> None:
    sub = uploads(up) / f"dir-{secrets.token_hex(4)}"
    sub.mkdir()
    for path in ("/uploads/", "/uploads", f"/uploads/{sub.name}", f"/uploads/{sub.name}/"):
        response, _ = up.get(path, "PUT", {}, b"x")
        assert response.status == 405, path
        assert response.getheader("Allow") == "GET, HEAD, OPTIONS"
    response, _ = up.get(f"/uploads/{sub.name}", "DELETE")
    assert response.status == 405 and sub.is_dir()
    response, _ = up.get("/uploads/no-such-dir/file.txt", "PUT", {}, b"x")
    assert response.status == 409  # as mod_dav: the parent collection does not exist
    response, _ = up.get(f"/uploads/{sub.name}/inner.txt", "PUT", {}, b"nested")
    assert response.status == 201 and (sub / "inner.txt").read_bytes() == b"nested"
    assert up.get(f"/uploads/{sub.name}/inner.txt")[1] == b"nested"


def test_delete(up: Server) -> None:
    path = f"/uploads/del-{secrets.token_hex(4)}.txt"
    assert up.get(path, "PUT", {}, b"bye")[0].status == 201
    response, _ = up.get(path, "DELETE", {"If-Match": '"stale"'})
    assert response.status == 412
    response, _ = up.get(path, "DELETE")
    assert response.status == 204
    assert not (uploads(up) / path.rsplit("/", 1)[1]).exists()
    assert up.get(path, "DELETE")[0].status == 404
    assert up.get(path)[0].status == 404


def test_uploads_directory_is_served_like_static_files(up: Server) -> None:
    assert up.get("/uploads/big-name.html", "PUT", {}, b"<p>hi</p>")[0].status in (201, 204)
    response, body = up.get("/uploads/big-name.html")
    assert response.status == 200 and body == b"<p>hi</p>"
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    response, _ = up.get("/uploads/big-name.html", "GET", {"Range": "bytes=0-2"})
    assert response.status == 206
    response, _ = up.get("/uploads")
    assert response.status == 301 and response.getheader("Location") == "/uploads/"
    assert up.get("/uploads/")[0].status == 403  # no listings
    assert up.get("/uploads/missing.txt")[0].status == 404


def test_interrupted_write_over_keepalive_then_next_request(up: Server) -> None:
    """A refused PUT's small unread body is discarded: the connection is kept and the next
    request on it is answered (and a new connection works too)."""
    with up.socket() as sock:
        sock.sendall(b"PUT /index.html HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 3\r\n\r\nabc")
        refused = one_response(sock)
        assert status_of(refused) == 405 and b"\r\nConnection: close" not in refused
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n"
                     b"Connection: close\r\n\r\n")
        assert status_of(read_all(sock)) == 200
    assert up.get("/index.html")[0].status == 200
    wait_for(lambda: not leftovers(up))
