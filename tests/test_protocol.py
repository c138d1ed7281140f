"""HTTP/1.1 framing and connection management end to end, over raw sockets."""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import TCP_ESTABLISHED, Server, ServerFactory, read_all, tcp_state, wait_for
from .replies import check_reply
from .test_http_static import head_of, responses


def test_framing_error_closes_and_nothing_behind_it_is_answered(shared_server: Server) -> None:
    raw = shared_server.raw(
        b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        b"GET /contact.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
    statuses = [s for s, _, _ in responses(raw)]
    assert statuses == [200, 400]
    assert responses(raw)[1][1]["connection"] == "close"


def test_smuggling_cl_te_is_refused(shared_server: Server) -> None:
    raw = shared_server.raw(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG")
    assert head_of(raw)[0] == 400


def test_limits_have_their_own_statuses(server_factory: ServerFactory) -> None:
    server = server_factory({"http": {"limit_request_line": "256",
                                      "limit_request_fields": "10",
                                      "limit_request_field_size": "200"}})
    long_line = b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert head_of(server.raw(long_line))[0] == 414
    many = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"".join(
        b"X-%d: 1\r\n" % i for i in range(20)) + b"\r\n"
    assert head_of(server.raw(many))[0] == 431
    wide = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Wide: " + b"w" * 300 + b"\r\n\r\n"
    assert head_of(server.raw(wide))[0] == 431
    assert head_of(server.raw(b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n"))[0] == 505


def test_lingering_close_lets_a_sending_client_read_the_error(shared_server: Server) -> None:
    # The client is still sending a large body when the server answers 405 and closes:
    # it must read the 405, not a connection reset.
    with shared_server.socket() as sock:
        sock.sendall(b"POST /index.html HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 4194304\r\n\r\n")
        sent = 0
        try:
            while sent < 1 << 20:
                sent += sock.send(b"x" * 65536)
        except OSError:
            pass
        # Read only once the server has closed its side (FIN: CLOSE_WAIT here) or reset
        # the connection (CLOSE): a reset would have discarded the 405 we are to read.
        wait_for(lambda: tcp_state(sock) != TCP_ESTABLISHED)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 405 "), reply[:80]


def test_head_and_status_bodies(shared_server: Server) -> None:
    raw = shared_server.raw(b"HEAD /missing HTTP/1.1\r\nHost: localhost\r\n"
                            b"Connection: close\r\n\r\n")
    status, headers, body = head_of(raw)
    assert status == 404 and body == b"" and int(headers["content-length"]) > 0
    etag = shared_server.get("/about.html")[0].getheader("ETag")
    raw = shared_server.raw(b"GET /about.html HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: "
                            + etag.encode() + b"\r\nConnection: close\r\n\r\n")
    status, headers, body = head_of(raw)
    assert status == 304 and body == b"" and "content-length" not in headers


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(min_size=1, max_size=300),
    st.lists(st.sampled_from([b"GET", b" ", b"/", b"HTTP/1.1", b"\r\n", b"Host:", b"x",
                              b"Content-Length:", b"Transfer-Encoding:", b"chunked",
                              b"0", b"\n", b"\r", b":", b"%00", b"..", b"\t"]),
             min_size=1, max_size=30).map(b"".join),
))
def test_arbitrary_bytes_never_get_a_500(shared_server: Server, data: bytes) -> None:
    with shared_server.socket(timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        reply = read_all(sock)
    # The parser, fed the same bytes, says how many answers the server owes (a complete
    # request or a refused one is owed one; one cut short by the EOF may be dropped):
    # whole responses only, none a 500, none missing (an empty reply is a crashed loop).
    check_reply(data, reply)


def test_server_survived_the_garbage(shared_server: Server) -> None:
    assert shared_server.get("/")[0].status == 200
    assert "Traceback" not in shared_server.log("error.log")


def test_hostile_paths_get_4xx_never_500(shared_server: Server) -> None:
    cases = {
        b"/" + b"a" * 300: 404,  # a name longer than NAME_MAX
        b"/" + b"a/" * 3000: 404,  # a path longer than PATH_MAX
        b"/%zz": 400,
        b"/ab%2": 400,
        b"/%ff%fe": 400,  # not UTF-8
        b"/about.html/x": 404,  # a file used as a directory
    }
    for target, status in cases.items():
        raw = shared_server.raw(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n"
                                b"Connection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 %d " % status), (target[:20], raw[:40])
    log = shared_server.log("error.log")
    assert "Traceback" not in log
    assert all(len(line) < 10000 for line in log.splitlines())
