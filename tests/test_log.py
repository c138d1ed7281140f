"""Log formatting (pure)."""

from __future__ import annotations

import time

from prefork.config.settings import COMBINED_FORMAT
from prefork.http.message import Headers
from prefork.log import AccessRecord, compile_access_format, escape, escape_text


def records() -> list[AccessRecord]:
    now = time.time()
    plain = Headers([("Referer", "http://x/"), ("User-Agent", "curl/8")])
    odd = Headers([("referer", 'a"b\\c'), ("user-agent", "caf\u00e9\x01")])
    return [
        AccessRecord("127.0.0.1", 80, "GET / HTTP/1.1", "GET", "/", "", "HTTP/1.1", 200, 5,
                     now, 0.001, plain),
        AccessRecord("::1", 80, 'GET /"q" HTTP/1.1', "GET", '/"q"', "", "HTTP/1.1", 404, 0,
                     now, 0.2, odd, user="alice"),
        AccessRecord("10.0.0.1", 80, "", "", "", "", "", 400, 182, now, 0.0, None),
        AccessRecord("10.0.0.2", 80, "PUT /caf\u00c3\u00a9 HTTP/1.1", "PUT", "/caf\u00c3\u00a9",
                     "", "HTTP/1.1", 201, 0, now, 0.0, plain, user='jo "s\u00e9'),
    ]


def test_specialised_combined_matches_the_general_renderer() -> None:
    fast = compile_access_format(COMBINED_FORMAT)
    general = compile_access_format(COMBINED_FORMAT, specialise=False)
    for record in records():
        assert fast(record) == general(record)


def test_escape_like_mod_log_config() -> None:
    assert escape("plain text") == "plain text"
    assert escape('a"b\\c') == 'a\\"b\\\\c'
    # Wire text (latin-1, one character per byte): raw UTF-8 from a client logs each byte once.
    assert escape("caf\u00c3\u00a9\x01") == "caf\\xc3\\xa9\\x01"
    assert escape("caf\u00e9") == "caf\\xe9"  # a latin-1 byte as the client sent it
    assert escape("\u2603") == "\\xe2\\x98\\x83"  # not from the wire: its UTF-8 bytes
    assert escape_text("jos\u00e9") == "jos\\xc3\\xa9"  # a user name: text, logged as UTF-8


def test_the_user_is_escaped_as_utf8_bytes() -> None:
    line = compile_access_format(COMBINED_FORMAT)(records()[3])
    assert line.startswith('10.0.0.2 - jo \\"s\\xc3\\xa9 [')
    assert '"PUT /caf\\xc3\\xa9 HTTP/1.1" 201' in line
    assert compile_access_format("%u")(records()[0]) == "-"


def test_other_directives() -> None:
    render = compile_access_format('%a %m %U%q %H %>s %B %D %{Referer}i %% %{X-Id}o')
    record = records()[0]
    record.query = "x=1"
    record.response_headers = [("X-Id", "7")]
    assert render(record) == "127.0.0.1 GET /?x=1 HTTP/1.1 200 5 1000 http://x/ % 7"
