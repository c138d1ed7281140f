"""A bounded, seeded fuzz test of a live 2-worker server (issue 12, "Done means").

Every kind of request the server accepts — static GET/HEAD, ranges, conditionals, PUT,
POST (JSON, multipart, urlencoded, chunked), DELETE, OPTIONS, absolute-form targets,
/server-status, authenticated writes, pipelines — is mutated (bytes flipped, tokens that
matter to a parser inserted, slices cut or repeated, lines swapped, numbers changed) and
sent on its own connection, then half-closed. Each reply must be whole responses and
nothing else (a HEAD answer without content), none a 500; the same bytes fed to the parser
say how many answers are owed, so an empty or short reply where answers are owed (a crashed
loop) fails, unless a response said Connection: close (tests/replies.py check_reply).
Afterwards: the same worker PIDs, no traceback or unhandled error in the error log, and
the server still answers.

PREFORK_FUZZ_SEED and PREFORK_FUZZ_CASES change the seed and the number of cases; a
failure prints the seed, the case number and the bytes sent, so it can be replayed.
"""

from __future__ import annotations

import base64
import os
import random
import re
import socket
import time
from pathlib import Path

import bcrypt

from .conftest import ServerFactory, read_all
from .replies import Malformed, check_reply

SEED = int(os.environ.get("PREFORK_FUZZ_SEED", "12"))
CASES = int(os.environ.get("PREFORK_FUZZ_CASES", "400"))
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


def seeds(port: int) -> list[bytes]:
    """One well-formed request (or pipeline) of every kind the server accepts."""
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
        request(f"GET http://127.0.0.1:{port}/about.html?x=1 HTTP/1.1", ["Host: other"]),
        request("GET /server-status?auto HTTP/1.1", [host]),
        request("GET /server-status HTTP/1.1", [host]),
        request("GET /caf%C3%A9 HTTP/1.1", [host]),
        b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        request("GET /about.html HTTP/1.1", [host]) + request("HEAD / HTTP/1.1", [host])
        + request("GET /contact.html HTTP/1.1", [host, "Connection: close"]),
        request("POST /upload HTTP/1.1", [host, "Content-Type: application/json"], "{}")
        + request("GET /about.html HTTP/1.1", [host]),
    ]


TOKENS = [b"\r\n", b"\r\n\r\n", b"\n", b"\r", b" ", b"\t", b":", b",", b";", b"=", b'"',
          b"\x00", b"\x7f", b"\x80", b"\xc3\xa9", b"\xff", b"%", b"%00", b"%2f", b"..", b"/",
          b"*", b"?", b"#", b"-1", b"0", b"00000000000000000009", b"99999999999999999999",
          b"chunked", b"gzip, chunked", b"bytes=", b"bytes=0-0,-1", b"100-continue",
          b"close", b"keep-alive", b"HTTP/1.0", b"HTTP/2.0", b"Host: x\r\n",
          b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n",
          b"If-None-Match: *\r\n", b"Range: bytes=1-2,4-5\r\n", b"Expect: foo\r\n"]
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


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early (a 413, a 400): its answer is still there
        return read_all(sock)


def test_mutated_requests_never_break_the_server(server_factory: ServerFactory,
                                                 tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text("fuzz:" + bcrypt.hashpw(b"pass", bcrypt.gensalt(rounds=4)).decode()
                     + "\n")
    server = server_factory({
        "workers": {"processes": "2"},
        "uploads": {"require_auth": "PUT DELETE"},
        "auth": {"users_file": str(users)},
        "status": {"enabled": "on"},
    })
    pids = sorted(server.worker_pids())
    assert len(pids) == 2
    bases = seeds(server.port)
    rng = random.Random(SEED)
    deadline = time.monotonic() + BUDGET_SECONDS
    sent = 0
    for number in range(CASES):
        if time.monotonic() > deadline:
            break
        base = bases[number % len(bases)]
        data = base if number < len(bases) else mutate(base, rng)
        reply = b""
        try:
            reply = exchange(server.port, data)
            check_reply(data, reply)
        except (AssertionError, Malformed, OSError) as exc:
            raise AssertionError(f"seed {SEED}, case {number}: {exc!r}\n"
                                 f"sent {data[:600]!r}\ngot {reply[:600]!r}") from None
        sent += 1
    assert sent >= min(CASES, 100), f"only {sent} cases within {BUDGET_SECONDS} s"
    assert sorted(server.worker_pids()) == pids  # no worker died or was replaced
    log = server.log("error.log")
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    response, body = server.get("/about.html")
    assert response.status == 200 and body
