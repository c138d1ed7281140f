"""Upload safety (issue 4) against real servers: bounded memory for a 200 MiB PUT, clients
that disconnect, bodies over the limit, a worker killed mid-upload, a full disk, 50
concurrent uploads checked by hash, concurrent PUTs to one path, and Basic authentication.
Pure parts (htpasswd loading, credentials, names, temporaries) are tested in-process."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from prefork.config.settings import load_config
from prefork.errors import ConfigError, InsufficientStorage
from prefork.http.message import Headers, Request
from prefork.site.auth import BasicAuth, load_htpasswd, parse_basic
from prefork.site.uploads import put as upload_module
from prefork.site.uploads.forms import safe_filename
from prefork.site.uploads.put import (
    TempFile,
    check_upload_config,
    open_writes_warning,
    prepare_upload_directory,
    remove_temporaries,
    storage_errors,
    writes_are_open,
)

from .conftest import Server, ServerFactory, read_all, running_server, wait_for, write_ini
from .test_upload import leftovers, multipart, status_of, uploads

MiB = 1 << 20


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def temporaries_of(server: Server, pid: int) -> list[Path]:
    return list(uploads(server).rglob(f".tmp-{pid}-*"))


def start_partial_put(server: Server, path: str, declared: int, sent: int):
    """Open a PUT declaring `declared` bytes and send only `sent`; returns the socket."""
    sock = server.socket(timeout=30)
    sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: localhost\r\n"
                 f"Content-Length: {declared}\r\n\r\n".encode())
    sock.sendall(os.urandom(sent))
    return sock


# ------------------------------------------------------------------ memory

def test_200_mib_put_streams_in_bounded_memory(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1"}})
    [worker] = server.worker_pids()
    # Warm up: the blocking pool's thread and the code paths exist before the baseline.
    assert server.get("/uploads/warm.bin", "PUT", {}, os.urandom(MiB))[0].status == 201
    baseline = rss_kib(worker)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(worker))
            time.sleep(0.01)

    total = 200 * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for index in range(total // MiB):
            chunk = index.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            yield chunk

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        conn = server.connection(timeout=60)
        conn.request("PUT", "/uploads/huge.bin", body=body(),
                     headers={"Content-Length": str(total)})
        response = conn.getresponse()
        response.read()
        conn.close()
    finally:
        done.set()
        sampler.join()
    assert response.status == 201
    stored = uploads(server) / "huge.bin"
    try:
        check = hashlib.sha256()
        with open(stored, "rb") as handle:
            while chunk := handle.read(4 * MiB):
                check.update(chunk)
        assert stored.stat().st_size == total
        assert check.hexdigest() == digest.hexdigest()
    finally:
        stored.unlink()
    growth_mib = (peak - baseline) / 1024
    print(f"worker RSS baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
          f"growth {growth_mib:.1f} MiB for a 200 MiB PUT")
    assert growth_mib <= 16, growth_mib

    # The same bound for a multipart POST: parts stream through the parser to disk.
    boundary = "x" * 30
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    parts = 64
    done.clear()
    peak = baseline = rss_kib(worker)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        conn = server.connection(timeout=60)
        conn.request("POST", "/upload", body=iter([head, *([block] * parts), tail]),
                     headers={"Content-Length": str(len(head) + parts * MiB + len(tail)),
                              "Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
    finally:
        done.set()
        sampler.join()
    assert response.status == 201
    [stored_part] = answer["files"]
    assert stored_part["size"] == parts * MiB
    assert stored_part["sha256"] == hashlib.sha256(block * parts).hexdigest()
    (uploads(server) / stored_part["name"]).unlink()
    growth_mib = (peak - baseline) / 1024
    print(f"growth {growth_mib:.1f} MiB for a 64 MiB multipart POST")
    assert growth_mib <= 16, growth_mib


# ------------------------------------------------------------------ interrupted uploads

def test_client_disconnecting_mid_body_leaves_nothing(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1"}})
    assert server.get("/uploads/seed.txt", "PUT", {}, b"x")[0].status == 201
    sock = start_partial_put(server, "/uploads/abandoned.bin", 10 * MiB, MiB)
    wait_for(lambda: leftovers(server))  # the server is mid-write
    sock.close()
    wait_for(lambda: not leftovers(server))
    assert not (uploads(server) / "abandoned.bin").exists()
    # Same for a multipart POST: nothing of the half-sent form is named.
    ctype, body = multipart([("a", "b")], [("file", "half.bin", "x/y", os.urandom(2 * MiB))])
    with server.socket() as sock:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:MiB])
        wait_for(lambda: leftovers(server))
    wait_for(lambda: not leftovers(server))
    assert sorted(p.name for p in uploads(server).iterdir()) == ["seed.txt"]


def test_body_over_the_limit_is_413_and_leaves_nothing(server_factory: ServerFactory) -> None:
    server = server_factory({"http": {"limit_request_body": "1M"}})
    # Content-Length over the limit: 413 at once, never 100 Continue (which would have to
    # come first).
    with server.socket() as sock:
        sock.sendall(b"PUT /uploads/big.bin HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
        first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 413 "), first[:100]
    # A chunked body that grows past the limit while streaming.
    with server.socket() as sock:
        sock.sendall(b"PUT /uploads/chunked.bin HTTP/1.1\r\nHost: localhost\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = os.urandom(64 * 1024)
        with contextlib.suppress(OSError):
            for _ in range(40):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        raw = read_all(sock)
    assert status_of(raw) == 413
    wait_for(lambda: not leftovers(server))
    assert not (uploads(server) / "chunked.bin").exists()
    assert not (uploads(server) / "big.bin").exists()
    # Just under the limit is fine.
    response, _ = server.get("/uploads/fits.bin", "PUT", {}, os.urandom(MiB - 1000))
    assert response.status == 201


def test_worker_killed_mid_upload_leaves_no_partial_file(server_factory: ServerFactory) -> None:
    """The final name never appears; the dead worker's temporary is removed by the master
    when it reaps the worker (master.py calls upload.remove_temporaries)."""
    server = server_factory({"workers": {"processes": "1"}})
    [worker] = server.worker_pids()
    sock = start_partial_put(server, "/uploads/killed.bin", 10 * MiB, 2 * MiB)
    try:
        wait_for(lambda: temporaries_of(server, worker))
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: (pids := server.worker_pids()) and worker not in pids, timeout=20)
    finally:
        sock.close()
    assert not (uploads(server) / "killed.bin").exists()
    wait_for(lambda: not temporaries_of(server, worker))
    # The replacement worker serves uploads normally.
    assert server.get("/uploads/after.bin", "PUT", {}, b"ok")[0].status == 201


def test_stale_temporaries_are_removed_at_start(server_factory: ServerFactory) -> None:
    server = server_factory(start=False)
    directory = uploads(server)
    directory.mkdir()
    (directory / "sub").mkdir()
    stale = [directory / ".tmp-999999-0123456789abcdef", directory / "sub" /
             ".tmp-1-fedcba9876543210"]
    for path in stale:
        path.write_bytes(b"partial")
    (directory / "keep.txt").write_bytes(b"keep")
    server.start()
    assert not any(p.exists() for p in stale)
    assert (directory / "keep.txt").read_bytes() == b"keep"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real full disk (the tests run as root, as CI does)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                   check=True, capture_output=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_507_and_leaves_nothing(server_factory: ServerFactory,
                                             tiny_disk: Path) -> None:
    server = server_factory({"uploads": {"directory": str(tiny_disk)}})
    # Declared too large for the free space: refused before the body is read.
    with server.socket() as sock:
        sock.sendall(b"PUT /uploads/declared.bin HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 6000000\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 507 ")
    # Chunked (size unknown): the disk fills mid-write.
    with server.socket() as sock:
        sock.sendall(b"PUT /uploads/chunked.bin HTTP/1.1\r\nHost: localhost\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = os.urandom(256 * 1024)
        with contextlib.suppress(OSError):
            for _ in range(18):  # 4.5 MiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        raw = read_all(sock)
    assert status_of(raw) == 507, raw[:200]
    wait_for(lambda: not list(tiny_disk.iterdir()))
    response, _ = server.get("/uploads/small.bin", "PUT", {}, os.urandom(MiB))
    assert response.status == 201  # the space was given back


def test_storage_errors_discard_the_temporary(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    with pytest.raises(InsufficientStorage) as caught, storage_errors(), \
            TempFile(str(tmp_path)) as tmp:
        monkeypatch.setattr(upload_module.os, "write", full)
        tmp.write(b"data")
    monkeypatch.undo()
    assert caught.value.status == 507 and caught.value.close
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ concurrency

def test_50_concurrent_uploads_are_stored_exactly(server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "2", "blocking_threads": "8"}})
    rng = random.Random(4)
    jobs = [(index, rng.choice(("PUT", "POST")), os.urandom(rng.randint(64 * 1024, 2 * MiB)))
            for index in range(50)]
    results: dict[int, tuple[int, str]] = {}
    errors: list[str] = []

    def run(index: int, method: str, data: bytes) -> None:
        try:
            conn = server.connection(timeout=60)
            if method == "PUT":
                conn.request("PUT", f"/uploads/c{index}.bin", body=data)
                response = conn.getresponse()
                response.read()
                results[index] = (response.status, f"c{index}.bin")
            else:
                ctype, body = multipart([("n", str(index))],
                                        [("file", "same-name.bin", "x/y", data)])
                conn.request("POST", "/upload", body=body, headers={"Content-Type": ctype})
                response = conn.getresponse()
                answer = json.loads(response.read())
                results[index] = (response.status, answer["files"][0]["name"])
            conn.close()
        except Exception as exc:  # reported below
            errors.append(f"{index}: {exc!r}")

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    names = [name for _status, name in results.values()]
    assert len(set(names)) == 50  # 25-odd POSTs of "same-name.bin" never overwrote each other
    for index, _method, data in jobs:
        status, name = results[index]
        assert status == 201, (index, status)
        stored = (uploads(server) / name).read_bytes()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest(), name
    assert not leftovers(server)


def test_concurrent_puts_to_one_path_last_complete_writer_wins(
        server_factory: ServerFactory) -> None:
    server = server_factory({})
    payloads = [bytes([n]) * (MiB + n * 4099) for n in range(16)]
    statuses: list[int] = []
    stop = threading.Event()
    torn: list[str] = []

    def reader() -> None:  # every read sees one complete version, never a mix
        while not stop.is_set():
            try:
                response, body = server.get("/uploads/contended.bin")
            except Exception as exc:  # an aborted response is a torn read too
                torn.append(repr(exc))
                continue
            if response.status == 200 and body not in payloads:
                torn.append(f"{len(body)} bytes of mixed content")

    def writer(data: bytes) -> None:
        statuses.append(server.get("/uploads/contended.bin", "PUT", {}, data)[0].status)

    watchers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in watchers:
        thread.start()
    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    for thread in watchers:
        thread.join(30)
    assert sorted(statuses) == [201] + [204] * (len(payloads) - 1)
    assert (uploads(server) / "contended.bin").read_bytes() in payloads
    assert not torn


# ------------------------------------------------------------------ authentication

def htpasswd_line(user: str, password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))
    return f"{user}:{hashed.replace(b'$2b$', b'$2y$').decode()}"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's checks of authenticated writes (they leave it as they
    found it)."""
    base = tmp_path_factory.mktemp("auth")
    users = base / "htpasswd"
    users.write_text("# writers\n" + htpasswd_line("alice", "s3cret") + "\n\n"
                     + htpasswd_line("bob", "p\u00e4ss:word") + "\n")
    with running_server(base, {"uploads": {"require_auth": "POST PUT DELETE"},
                               "auth": {"users_file": str(users), "realm": "uploads"}}) as server:
        yield server


def test_auth_required_for_writes(auth_server: Server) -> None:
    server = auth_server
    challenge = 'Basic realm="uploads", charset="UTF-8"'
    for headers in ({}, basic("alice", "wrong"), basic("mallory", "s3cret"),
                    {"Authorization": "Basic !!!notbase64"},
                    {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
                    {"Authorization": "Bearer abc"}):
        response, _ = server.get("/upload", "POST", {**JSON_TYPE, **headers}, b"{}")
        assert response.status == 401, headers
        assert response.getheader("WWW-Authenticate") == challenge
        response, _ = server.get("/uploads/a.txt", "PUT", headers, b"x")
        assert response.status == 401
    assert not (uploads(server) / "a.txt").exists()
    response, _ = server.get("/upload", "POST", {**JSON_TYPE, **basic("alice", "s3cret")}, b"{}")
    assert response.status == 201
    response, _ = server.get("/uploads/a.txt", "PUT", basic("bob", "p\u00e4ss:word"), b"x")
    assert response.status == 201
    assert server.get("/uploads/a.txt")[1] == b"x"  # reading needs no credentials
    assert server.get("/uploads/a.txt", "DELETE")[0].status == 401
    assert server.get("/uploads/a.txt", "DELETE", basic("alice", "s3cret"))[0].status == 204
    # Known user, forbidden target: 403 (not 401) once authenticated.
    raw = server.raw(b"PUT /uploads/../index.html HTTP/1.1\r\nHost: localhost\r\n"
                     b"Authorization: " + basic("alice", "s3cret")["Authorization"].encode()
                     + b"\r\nContent-Length: 1\r\n\r\nx")
    assert status_of(raw) == 403


def test_uploads_are_read_only_through_their_own_url(server_factory: ServerFactory,
                                                     tmp_path: Path) -> None:
    """Aliases of /uploads/ (which the static files handler would otherwise see, the
    directory being under the document root) must not bypass the uploads' rules."""
    users = tmp_path / "htpasswd"
    users.write_text(htpasswd_line("alice", "s3cret") + "\n")
    server = server_factory({"uploads": {"require_auth": "GET HEAD PUT"},
                             "auth": {"users_file": str(users)}})
    (uploads(server) / "private.txt").write_text("private\n")
    assert server.get("/uploads/private.txt")[0].status == 401
    assert server.get("/uploads/private.txt", headers=basic("alice", "s3cret"))[1] == \
        b"private\n"
    (server.root / "htdocs" / "pub").mkdir()
    (server.root / "htdocs" / "pub" / "index.html").symlink_to(uploads(server) / "private.txt")
    for alias in ("//uploads/private.txt", "/./uploads/private.txt", "/pub/",
                  "/%75ploads/private.txt", "/sub/../uploads/private.txt", "//uploads/"):
        for _ in range(2):  # and not from the quick path's memory either
            raw = server.raw(f"GET {alias} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            assert status_of(raw) == 403, (alias, raw[:80])


def test_known_user_without_rights_gets_403(server_factory: ServerFactory,
                                            tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text(htpasswd_line("alice", "s3cret") + "\n" + htpasswd_line("eve", "pw") + "\n")
    server = server_factory({"uploads": {"require_auth": "PUT DELETE", "writers": "alice"},
                             "auth": {"users_file": str(users)}})
    response, _ = server.get("/uploads/w.txt", "PUT", basic("eve", "pw"), b"x")
    assert response.status == 403  # authenticated, but not a writer
    assert server.get("/uploads/w.txt", "PUT", basic("eve", "bad"), b"x")[0].status == 401
    assert server.get("/uploads/w.txt", "PUT", basic("alice", "s3cret"), b"x")[0].status == 201
    assert "not in [uploads] writers" not in server.get(
        "/uploads/w.txt", "DELETE", basic("eve", "pw"))[1].decode()  # reason stays in the log


def test_unauthenticated_upload_never_gets_100_continue(auth_server: Server) -> None:
    with auth_server.socket() as sock:
        sock.sendall(b"PUT /uploads/x.bin HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 401 "), first[:60]


JSON_TYPE = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("entry", "kind"), [
    # Well-formed $apr1$ and {SHA} entries are read (tests/test_writes_auth.py); these are
    # cut short.
    ("carol:$apr1$Vd5U0Z1k$0aeTbe2xrqSc1VhPQxFfh", "Apache MD5"),
    ("carol:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ", "SHA-1"),
    ("carol:rqXexS6ZhobKA", "crypt"),
    ("carol:plaintext-password", "plain"),
    ("carol:$6$saltsalt$somehash", "SHA-512"),
    ("no-colon-here", "user:hash"),
])
def test_htpasswd_loader_rejects_non_bcrypt(tmp_path: Path, entry: str, kind: str) -> None:
    users = tmp_path / "htpasswd"
    users.write_text(htpasswd_line("alice", "x") + "\n# comment\n\n" + entry + "\n")
    with pytest.raises(ConfigError) as caught:
        load_htpasswd(str(users))
    message = str(caught.value)
    assert f"{users}:4" in message and kind in message


def test_htpasswd_loader_accepts_htpasswd_b_output(tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    lines = [htpasswd_line("alice", "a"), htpasswd_line("bob", "b").replace("$2y$", "$2b$")]
    users.write_text("\n".join(["# users", "", *lines, ""]))
    table = load_htpasswd(str(users))
    assert sorted(table) == ["alice", "bob"]
    users.write_text("\n".join([*lines, lines[0]]))
    with pytest.raises(ConfigError, match="listed twice"):
        load_htpasswd(str(users))


def test_credentials_are_verified_and_the_file_reloaded(tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text(htpasswd_line("alice", "one") + "\n")
    auth = BasicAuth(str(users), "r")

    def request(user: str, password: str) -> Request:
        return Request("PUT", "/uploads/x", "/uploads/x", "", "HTTP/1.1",
                       Headers(basic(user, password).items()), ("127.0.0.1", 1))

    assert auth.authenticate(request("alice", "one")) == "alice"
    assert auth.authenticate(request("alice", "one")) == "alice"  # from the cache
    users.write_text(htpasswd_line("alice", "two") + "\n")
    os.utime(users, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    with pytest.raises(Exception, match="wrong password"):
        auth.authenticate(request("alice", "one"))  # the cached success is for the old hash
    assert auth.authenticate(request("alice", "two")) == "alice"


@pytest.mark.parametrize(("value", "expected"), [
    ("Basic " + base64.b64encode(b"alice:pw:with:colons").decode(), ("alice", b"pw:with:colons")),
    ("basic " + base64.b64encode(b"al\xc3\xafce:").decode(), ("al\u00efce", b"")),
    (None, None), ("", None), ("Basic", None), ("Basic ===", None), ("Digest abc", None),
    ("Basic " + base64.b64encode(b":nouser").decode(), None),
    ("Basic " + base64.b64encode(b"\xff:x").decode(), None),
])
def test_parse_basic(value: str | None, expected: tuple[str, bytes] | None) -> None:
    assert parse_basic(value) == expected


# ------------------------------------------------------------------ pure helpers

@pytest.mark.parametrize(("raw", "expected"), [
    ("report.pdf", "report.pdf"), ("../../etc/passwd", "passwd"), ("..\\..\\win.ini", "win.ini"),
    (".hidden", "hidden"), ("...", "upload.bin"), ("", "upload.bin"), (None, "upload.bin"),
    ("a/b/c.txt", "c.txt"), ("line\nbreak\r.txt", "line_break_.txt"), ("nul\x00.txt", "nul_.txt"),
    ("  spaced .txt ", "spaced .txt"), ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),
    ("x" * 300 + ".txt", "x" * 196 + ".txt"), ("\u00e9" * 150, "\u00e9" * 100),
    ("rtl\u202egnp.exe", "rtl_gnp.exe"),
])
def test_safe_filename(raw: str | None, expected: str) -> None:
    assert safe_filename(raw) == expected
    assert len(safe_filename(raw).encode()) <= 200


def test_temporaries_are_cleaned_by_owner(tmp_path: Path) -> None:
    directory = tmp_path / "up"
    assert prepare_upload_directory(str(directory)) == 0
    assert directory.is_dir() and (directory.stat().st_mode & 0o777) == 0o755 & ~current_umask()
    (directory / "deep").mkdir()
    mine = [directory / ".tmp-42-0123456789abcdef", directory / "deep" / ".tmp-42-aaaaaaaaaaaaaaaa"]
    others = [directory / ".tmp-43-0123456789abcdef", directory / ".tmp-420-0123456789abcdef"]
    keep = [directory / "file.txt", directory / ".tmp-42-not-ours", directory / ".tmp-notes"]
    for path in mine + others + keep:
        path.write_bytes(b"x")
    assert remove_temporaries(str(directory), 42) == 2
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others + keep)
    assert prepare_upload_directory(str(directory)) == 2
    assert all(p.exists() for p in keep)
    assert remove_temporaries(str(tmp_path / "missing"), 42) == 0


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_open_writes_warning(tmp_path: Path) -> None:
    local = load_config(write_ini(tmp_path, "[server]\nlisten = 127.0.0.1:8080 [::1]:8080\n"))
    assert not writes_are_open(local) and open_writes_warning(local) is None
    # Beyond loopback, open writes take enabled = on and allow_anonymous = on (issue 16).
    anyone = "[uploads]\nenabled = on\nallow_anonymous = on\n"
    wide = load_config(write_ini(tmp_path, "[server]\nlisten = 0.0.0.0:8080\n" + anyone))
    assert writes_are_open(wide)
    warning = open_writes_warning(wide)
    assert warning is not None and "POST PUT DELETE" in warning and "0.0.0.0:8080" in warning
    users = tmp_path / "htpasswd"
    users.write_text(htpasswd_line("alice", "x") + "\n")
    closed = load_config(write_ini(
        tmp_path, f"[server]\nlisten = 0.0.0.0:8080\n[uploads]\nrequire_auth = POST PUT "
                  f"DELETE\n[auth]\nusers_file = {users}\n"))
    assert not writes_are_open(closed)
    check_upload_config(closed)
    partly = load_config(write_ini(
        tmp_path, f"[server]\nlisten = 0.0.0.0:8080\n{anyone}require_auth = PUT\n"
                  f"[auth]\nusers_file = {users}\n"))
    assert re.search(r"POST DELETE need no credentials", open_writes_warning(partly) or "")


@pytest.mark.parametrize(("text", "problem"), [
    ("[uploads]\nrequire_auth = PUT\n", "users_file is not set"),
    ("[uploads]\nrequire_auth = PUTT\n", "'PUTT' is not one of"),
    ("[auth]\nusers_file = /nonexistent/htpasswd\n", "cannot read users file"),
])
def test_check_upload_config(tmp_path: Path, text: str, problem: str) -> None:
    config = load_config(write_ini(tmp_path, text))
    with pytest.raises(ConfigError, match=problem):
        check_upload_config(config)
