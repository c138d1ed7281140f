"""Log formatting (pure)."""

from __future__ import annotations

import time

from prefork.config import COMBINED_FORMAT
from prefork.log import AccessRecord, compile_access_format, escape
from prefork.message import Headers


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
    ]


def test_specialised_combined_matches_the_general_renderer() -> None:
    fast = compile_access_format(COMBINED_FORMAT)
    general = compile_access_format(COMBINED_FORMAT, specialise=False)
    for record in records():
        assert fast(record) == general(record)


def test_escape_like_mod_log_config() -> None:
    assert escape("plain text") == "plain text"
    assert escape('a"b\\c') == 'a\\"b\\\\c'
    assert escape("caf\u00e9\x01") == "caf\\xc3\\xa9\\x01"


def test_other_directives() -> None:
    render = compile_access_format('%a %m %U%q %H %>s %B %D %{Referer}i %% %{X-Id}o')
    record = records()[0]
    record.query = "x=1"
    record.response_headers = [("X-Id", "7")]
    assert render(record) == "127.0.0.1 GET /?x=1 HTTP/1.1 200 5 1000 http://x/ % 7"
