"""A bounded, seeded fuzz test of a live 2-worker server (issue 12, "Done means").

Every kind of request the server accepts — static GET/HEAD, ranges, conditionals, PUT,
POST (JSON, multipart, urlencoded, chunked), DELETE, OPTIONS, absolute-form targets,
/server-status, authenticated writes; requests to a mounted WSGI application
(tests/apps/echo.py, which never fails by itself: GET with a query, HEAD, POST with a
Content-Length or chunked body, PUT with Expect: 100-continue, the application's own early
403, a streamed answer of unknown length, an `[auth] require` prefix inside its mount,
absolute-form); pipelines mixing application, static and upload requests — is mutated
(bytes flipped, tokens that matter to a parser inserted, slices cut or repeated, lines
swapped, numbers changed) and sent on its own connection, then half-closed. One case in
TLS_SHARE goes to the same server's TLS listener: the HTTP bytes inside TLS are mutated,
not the TLS records, and the client ends its data with a TCP FIN (see exchange_tls).

Each reply must be whole responses and nothing else (a HEAD answer without content), none
a 500; the same bytes fed to the parser say how many answers are owed, so an empty or short
reply where answers are owed (a crashed loop) fails, unless a response said Connection:
close (tests/replies.py check_reply). Afterwards: the same worker PIDs, no traceback or
unhandled error in the error log, and the server still answers, on both listeners.

PREFORK_FUZZ_SEED and PREFORK_FUZZ_CASES change the seed and the number of cases; a
failure prints the seed, the case number and the bytes sent, so it can be replayed.
"""

from __future__ import annotations

import base64
import itertools
import os
import random
import re
import socket
import ssl
import time
from pathlib import Path

import bcrypt

from .conftest import ServerFactory, read_all
from .replies import Malformed, check_reply
from .test_tls import TLS_HOST, issue, ports_of, throwaway_ca

APPS = Path(__file__).resolve().parent / "apps"
SEED = int(os.environ.get("PREFORK_FUZZ_SEED", "12"))
CASES = int(os.environ.get("PREFORK_FUZZ_CASES", "1000"))
TLS_SHARE = 5  # one case in five goes over TLS
BUDGET_SECONDS = 60.0  # the loop stops sending new cases after this, whatever CASES says
REPLY_TIMEOUT = 15.0  # seconds to wait for one reply (the server's timeout is 10)

AUTH = "Authorization: Basic " + base64.b64encode(b"fuzz:pass").decode()
BOUNDARY = "fuzzb0undary"
MULTIPART = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
             f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
             f"filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
             f"--{BOUNDARY}--\r\n")


def request(line: str, fields: list[str], body: str = "") -> bytes:
    if body and not any(f.lower().startswith(("content-length", "transfer-encoding"))
                        for f in fields):
        fields = [*fields, f"Content-Length: {len(body.encode())}"]
    return (line + "\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n" + body).encode()


def seeds(origin: str) -> list[bytes]:
    """One well-formed request (or pipeline) of every kind the server accepts; `origin`
    (scheme://address:port of the listener) makes the absolute-form targets."""
    host = "Host: localhost"
    long_ago = "Sun, 06 Nov 1994 08:49:37 GMT"
    return [
        request("GET /about.html HTTP/1.1", [host, "User-Agent: fuzz", "Accept: */*"]),
        request("HEAD /index.html HTTP/1.1", [host]),
        request("GET / HTTP/1.0", []),
        request("GET /sub HTTP/1.1", [host]),
        request("GET /big.bin HTTP/1.1", [host, "Range: bytes=0-99,200-299,-50"]),
        request("GET /sample.txt HTTP/1.1", [host, "Range: bytes=5-",
                                             'If-Range: "nope"']),
        request("GET /about.html HTTP/1.1", [host, 'If-None-Match: "a", W/"b"',
                                             f"If-Modified-Since: {long_ago}"]),
        request("HEAD /about.html HTTP/1.1", [host, 'If-Match: "x"',
                                              f"If-Unmodified-Since: {long_ago}"]),
        request("PUT /uploads/fuzz.txt HTTP/1.1", [host, AUTH, "Content-Type: text/plain"],
                "hello"),
        request("PUT /uploads/chunked.txt HTTP/1.1", [host, AUTH, "Transfer-Encoding: chunked"],
                "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"),
        request("PUT /uploads/expect.txt HTTP/1.1", [host, AUTH, "Expect: 100-continue",
                                                     "If-None-Match: *"], "data"),
        request("DELETE /uploads/fuzz.txt HTTP/1.1", [host, AUTH, 'If-Match: "x"']),
        request("POST /upload HTTP/1.1", [host, "Content-Type: application/json"],
                '{"a": [1, 2, {"b": "caf\u00e9"}]}'),
        request("POST /upload HTTP/1.1", [host, "Content-Type: application/json",
                                          "Transfer-Encoding: chunked"],
                "7\r\n{\"a\": 1\r\n1\r\n}\r\n0\r\n\r\n"),
        request("POST /upload HTTP/1.1",
                [host, f"Content-Type: multipart/form-data; boundary={BOUNDARY}"], MULTIPART),
        request("POST /upload HTTP/1.1",
                [host, "Content-Type: application/x-www-form-urlencoded"], "data=x&file=y"),
        request("OPTIONS * HTTP/1.1", [host]),
        request("OPTIONS /uploads/fuzz.txt HTTP/1.1", [host]),
        request("OPTIONS /upload HTTP/1.1", [host]),
        request(f"GET {origin}/about.html?x=1 HTTP/1.1", ["Host: other"]),
        request("GET /server-status?auto HTTP/1.1", [host]),
        request("GET /server-status HTTP/1.1", [host]),
        request("GET /caf%C3%A9 HTTP/1.1", [host]),
        b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        request("GET /about.html HTTP/1.1", [host]) + request("HEAD / HTTP/1.1", [host])
        + request("GET /contact.html HTTP/1.1", [host, "Connection: close"]),
        request("POST /upload HTTP/1.1", [host, "Content-Type: application/json"], "{}")
        + request("GET /about.html HTTP/1.1", [host]),
        *app_seeds(origin),
    ]


def app_seeds(origin: str) -> list[bytes]:
    """Requests to the application mounted at /app (tests/apps/echo.py)."""
    host = "Host: localhost"
    form = "Content-Type: application/x-www-form-urlencoded"
    return [
        request("GET /app/echo?q=caf%C3%A9&n=1&n=2 HTTP/1.1", [host, "Accept: */*",
                                                              "Cookie: a=b; c=d"]),
        request("HEAD /app/echo?h=1 HTTP/1.1", [host]),
        request("GET /app HTTP/1.1", [host]),
        request("POST /app/echo HTTP/1.1", [host, form], "name=fuzz&x=%00%ff"),
        request("POST /app/stream HTTP/1.1", [host, "Content-Type: application/json",
                                              "Transfer-Encoding: chunked"],
                "7\r\n{\"a\": 1\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n"),
        request("PUT /app/echo/thing HTTP/1.1", [host, "Expect: 100-continue",
                                                 "Content-Type: text/plain"], "put body"),
        request("POST /app/deny HTTP/1.1", [host, form], "never=read"),
        request("GET /app/stream HTTP/1.0", []),
        request(f"GET {origin}/app/echo?abs=1 HTTP/1.1", [host]),
        request("GET /app/private/echo HTTP/1.1", [host]),
        request("POST /app/private/echo HTTP/1.1", [host, AUTH, form], "who=me"),
        request("GET /app/echo?1 HTTP/1.1", [host]) + request("GET /about.html HTTP/1.1", [host])
        + request("POST /upload HTTP/1.1", [host, "Content-Type: application/json"], "[1]")
        + request("POST /app/stream HTTP/1.1", [host, "Transfer-Encoding: chunked"],
                  "3\r\nabc\r\n0\r\n\r\n")
        + request("PUT /uploads/pipe.txt HTTP/1.1", [host, AUTH], "piped")
        + request("HEAD /app/echo HTTP/1.1", [host])
        + request("GET /sample.txt HTTP/1.1", [host, "Range: bytes=0-3"]),
        request("HEAD /index.html HTTP/1.1", [host])
        + request("PUT /app/echo HTTP/1.1", [host, "Expect: 100-continue"], "abc")
        + request("DELETE /app/echo/x HTTP/1.1", [host])
        + request("GET /app/deny HTTP/1.1", [host, "Connection: close"]),
        # Past the 8 requests one application thread serves in a row (docs/apps.md).
        b"".join(request(f"GET /app/echo?{n} HTTP/1.1", [host]) for n in range(10))
        + request("GET /about.html HTTP/1.1", [host]) + request("GET /app/deny HTTP/1.1", [host]),
        request("POST /app/echo HTTP/1.1", [host, "Content-Type: text/plain"], "b" * 70_000),
        request("GET /app/stream?pad=40 HTTP/1.1", [host])
        + request("HEAD /app/stream?pad=2 HTTP/1.1", [host]),
    ]


TOKENS = [b"\r\n", b"\r\n\r\n", b"\n", b"\r", b" ", b"\t", b":", b",", b";", b"=", b'"',
          b"\x00", b"\x7f", b"\x80", b"\xc3\xa9", b"\xff", b"%", b"%00", b"%2f", b"..", b"/",
          b"*", b"?", b"#", b"-1", b"0", b"00000000000000000009", b"99999999999999999999",
          b"chunked", b"gzip, chunked", b"bytes=", b"bytes=0-0,-1", b"100-continue",
          b"close", b"keep-alive", b"HTTP/1.0", b"HTTP/2.0", b"Host: x\r\n",
          b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n",
          b"If-None-Match: *\r\n", b"Range: bytes=1-2,4-5\r\n", b"Expect: foo\r\n",
          b"Expect: 100-continue\r\n", b"Connection: close\r\n", b"Content-Length: 0\r\n",
          AUTH.encode() + b"\r\n", b"/app", b"/app/stream", b"/app/deny", b"/app/private",
          b"/uploads/", b"/upload"]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT",
           b"PATCH", b"BREW", b"get", b"X" * 300]
NUMBER = re.compile(rb"[0-9]+")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Apply one to three random mutations."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(9)
        at = rng.randrange(len(out) + 1)
        if kind == 0 and out:  # flip a byte
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif kind == 1:  # insert a token that means something to a parser
            out[at:at] = rng.choice(TOKENS)
        elif kind == 2 and out:  # cut a slice
            out[at:at + rng.randint(1, 20)] = b""
        elif kind == 3:  # repeat a slice
            piece = out[at:at + rng.randint(1, 40)]
            out[at:at] = piece * rng.randint(1, 4)
        elif kind == 4:  # end early
            del out[at:]
        elif kind == 5:  # swap two lines
            lines = bytes(out).split(b"\r\n")
            if len(lines) > 2:
                i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
                out = bytearray(b"\r\n".join(lines))
        elif kind == 6:  # change a number
            numbers = list(NUMBER.finditer(out))
            if numbers:
                match = rng.choice(numbers)
                value = rng.choice([b"0", b"1", b"7", b"65536", b"-1", b"1" * 19,
                                    str(rng.randrange(10 ** 6)).encode()])
                out[match.start():match.end()] = value
        elif kind == 7:  # change the method
            space = out.find(b" ")
            if space > 0:
                out[:space] = rng.choice(METHODS)
        else:  # a long run of one byte: limits
            out[at:at] = bytes([rng.choice(b"aA \t:/%\xe9")]) * rng.choice([100, 8200, 20000])
    return bytes(out)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at `cuts`: sent one send call (over TLS, one record) each."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def exchange(port: int, data: bytes, cuts: list[int]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in pieces(data, cuts):
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early (a 413, a 400): its answer is still there
        return read_all(sock)


def exchange_tls(context: ssl.SSLContext, port: int, data: bytes, cuts: list[int]) -> bytes:
    """`data` over TLS, the client's end of data sent as a bare TCP FIN. A client cannot
    half-close TLS with close_notify and go on reading: OpenSSL discards what arrives once
    it has sent close_notify. The server reads the FIN as the end of the client's data,
    as close_notify; OpenSSL 3 then answers it with a decode_error alert after the
    server's answers, and that alert ends the reply."""
    raw = socket.create_connection((TLS_HOST, port), timeout=REPLY_TIMEOUT)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        try:
            for piece in pieces(data, cuts):
                sock.sendall(piece)
            # TCP's half-close under TLS: SSLSocket.shutdown would end TLS for reading too.
            socket.socket.shutdown(sock, socket.SHUT_WR)
        except OSError:
            pass  # as exchange
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except ssl.SSLError as exc:
                if exc.reason != "TLSV1_ALERT_DECODE_ERROR":
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_mutated_requests_never_break_the_server(server_factory: ServerFactory,
                                                 tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text("fuzz:" + bcrypt.hashpw(b"pass", bcrypt.gensalt(rounds=4)).decode()
                     + "\n")
    ca, ca_file = throwaway_ca(tmp_path)
    chain, key = issue(ca, tmp_path, "fuzz", "localhost", TLS_HOST)
    server = server_factory({
        "server": {"listen": f"127.0.0.1:0, {TLS_HOST}:0 ssl"},
        "workers": {"processes": "2"},
        "uploads": {"require_auth": "PUT DELETE"},
        "auth": {"users_file": str(users), "require": "/app/private"},
        "status": {"enabled": "on"},
        "tls": {"certificate": str(chain), "certificate_key": str(key)},
        "app:echo": {"mount": "/app", "module": "echo:application", "path": str(APPS),
                     "threads": "2"},
    }, start=False)
    port, tls_port = ports_of(server.start().stdout)
    context = ssl.create_default_context(cafile=str(ca_file))
    pids = sorted(server.worker_pids())
    assert len(pids) == 2
    plain_bases = seeds(f"http://127.0.0.1:{port}")
    tls_bases = seeds(f"https://{TLS_HOST}:{tls_port}")
    rng = random.Random(SEED)
    split = random.Random(-SEED)  # apart from rng: a seed's mutations stay as they were
    deadline = time.monotonic() + BUDGET_SECONDS
    sent = over_tls = 0
    echoed = {False: 0, True: 0}  # the application's answers to the unmutated seeds
    for number in range(CASES):
        if time.monotonic() > deadline:
            break
        # Every seed goes once as it is over each listener, then mutated.
        count = len(plain_bases)
        secure = count <= number < 2 * count or (number >= 2 * count
                                                  and number % TLS_SHARE == 0)
        base = (tls_bases if secure else plain_bases)[number % count]
        data = base if number < 2 * count else mutate(base, rng)
        # A share of the cases goes in pieces: the parser and the body readers resume
        # across reads (over TLS, across records).
        cuts = ([split.randrange(len(data) + 1) for _ in range(split.randint(1, 3))]
                if number >= 2 * count and split.randrange(3) == 0 else [])
        reply = b""
        try:
            reply = (exchange_tls(context, tls_port, data, cuts) if secure
                     else exchange(port, data, cuts))
            replies = check_reply(data, reply)
            if number < 2 * count:  # a seed as it is: the server's answers, never a fault
                assert all(r.status < 500 for r in replies), "a server error to a seed"
                answers = [r.body for r in replies if b'"SCRIPT_NAME": "/app"' in r.body]
                scheme = b'"scheme": "https"' if secure else b'"scheme": "http"'
                assert all(scheme in body for body in answers), "wsgi.url_scheme"
                echoed[secure] += len(answers)
        except (AssertionError, Malformed, OSError) as exc:
            where = "TLS" if secure else "plain"
            raise AssertionError(f"seed {SEED}, case {number} ({where}, cut at {cuts}): "
                                 f"{exc!r}\nsent {data[:600]!r}\ngot {reply[:600]!r}"
                                 ) from None
        sent += 1
        over_tls += secure
    assert sent >= min(CASES, 100), f"only {sent} cases within {BUDGET_SECONDS} s"
    assert over_tls >= sent // TLS_SHARE  # the share did go over TLS
    assert min(echoed.values()) >= len(app_seeds("")), echoed  # the seeds reach the app
    assert sorted(server.worker_pids()) == pids  # no worker died or was replaced
    log = server.log("error.log")
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    response, body = server.get("/about.html")
    assert response.status == 200 and body
    check_reply(app_seeds("")[0], exchange(port, app_seeds("")[0], []))
    check_reply(app_seeds("")[0], exchange_tls(context, tls_port, app_seeds("")[0], []))
