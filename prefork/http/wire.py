"""What the server writes: response heads, chunks, reason phrases and HTTP dates
(RFC 9110 §5.6.7, §15; RFC 9112 §4, §7.1). Split from http11.py, which re-exports it."""

from __future__ import annotations

import calendar
import math
import re
import time
from http import HTTPStatus

# token = 1*tchar (RFC 9110 §5.6.2); field names must be tokens.
_TOKEN_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")

LAST_CHUNK = b"0\r\n\r\n"
# Reason phrases (RFC 9110 §15), with the names RFC 9110 gave a few codes over older ones.
REASONS: dict[int, str] = {status.value: status.phrase for status in HTTPStatus} | {
    306: "(Unused)", 413: "Content Too Large", 414: "URI Too Long",
    416: "Range Not Satisfiable", 422: "Unprocessable Content"}
# status-line = HTTP-version SP status-code SP [ reason-phrase ]         (RFC 9112 §4)
_VERSION_RE = re.compile(r"HTTP/[0-9]\.[0-9]")


def format_response_head(version: str, status: int, reason: str,
                         headers: list[tuple[str, str]]) -> bytes:
    """Return the status line and field lines, ending in the empty line (RFC 9112 §4).
    Raises ValueError for a bad version or status, a field name that is not a token, CR,
    LF or NUL in the reason or a value (response splitting), or a non-latin-1 character."""
    parts = [f"{version} {status} {reason}\r\n"]
    token = _TOKEN_RE.fullmatch
    for name, value in headers:
        if token(name) is None:
            raise ValueError(f"field name is not a token: {name!r}")
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    text = "".join(parts)
    lines = len(parts)  # any CR, LF or NUL more than these is in a reason or a value
    if (not _VERSION_RE.fullmatch(version) or not 100 <= status <= 999 or "\0" in text
            or text.count("\r") != lines or text.count("\n") != lines):
        raise ValueError("bad version or status, or CR, LF or NUL in a reason or a value")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("header field outside latin-1") from None


def encode_chunk(data: bytes) -> bytes:
    """Return `data` as one chunk (RFC 9112 §7.1); ValueError if empty (the last chunk)."""
    if not data:
        raise ValueError("an empty chunk would end the body; send LAST_CHUNK instead")
    return b"%x\r\n%b\r\n" % (len(data), data)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = {name: i + 1 for i, name in enumerate(_MONTHS)}
_DAY, _MON = "|".join(_DAYS), "(?P<mon>" + "|".join(_MONTHS) + ")"
_TIME = r"(?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})"
# IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT             (RFC 9110 §5.6.7)
# date1 = day SP month SP year                       e.g. Sun, 06 Nov 1994 08:49:37 GMT
_IMF_RE = re.compile(rf"(?:{_DAY}), (?P<d>[0-9]{{2}}) {_MON} (?P<y>[0-9]{{4}}) {_TIME} GMT")
# rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT
# date2 = day "-" month "-" 2DIGIT                     e.g. Sunday, 06-Nov-94 08:49:37 GMT
_RFC850_RE = re.compile(r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, "
                        rf"(?P<d>[0-9]{{2}})-{_MON}-(?P<y>[0-9]{{2}}) {_TIME} GMT")
# asctime-date = day-name SP date3 SP time-of-day SP year
# date3 = month SP ( 2DIGIT / ( SP DIGIT ) )                  e.g. Sun Nov  6 08:49:37 1994
_ASCTIME_RE = re.compile(rf"(?:{_DAY}) {_MON} (?P<d>[0-9]{{2}}| [0-9]) {_TIME} (?P<y>[0-9]{{4}})")
_MIN_DATE, _MAX_DATE = -62135596800, 253402300800  # 0001-01-01 .. 10000-01-01 UTC
_now: tuple[int, str] = (-1, "")  # (second, its IMF-fixdate): replaced whole, never mutated


def http_date(timestamp: float | None = None) -> str:
    """Return `timestamp` (default: now) as an IMF-fixdate (RFC 9110 §5.6.7). "Now" is
    cached per second in one tuple, swapped atomically: threads need no lock. Raises
    ValueError for a timestamp outside the years 1-9999."""
    global _now
    if timestamp is None:
        cached, second = _now, int(time.time())
        if cached[0] == second:
            return cached[1]
    elif _MIN_DATE <= timestamp < _MAX_DATE:
        second = math.floor(timestamp)
    else:
        raise ValueError(f"timestamp out of range: {timestamp!r}")
    t = time.gmtime(second)
    text = (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
    if timestamp is None:
        _now = (second, text)
    return text


def parse_http_date(value: str) -> float | None:
    """Return the POSIX timestamp of an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, RFC 850 or
    asctime, case-sensitive), or None when it is none of those."""
    match = _IMF_RE.fullmatch(value) or _RFC850_RE.fullmatch(value) or \
        _ASCTIME_RE.fullmatch(value)
    if match is None:
        return None
    year, month, day = int(match["y"]), _MONTH[match["mon"]], int(match["d"])
    h, m, s = int(match["h"]), int(match["m"]), int(match["s"])
    if len(match["y"]) == 2:  # RFC 850: more than 50 years ahead means the last century
        this_year = time.gmtime().tm_year
        year += this_year // 100 * 100
        if year > this_year + 50:
            year -= 100
    if (year < 1 or h > 23 or m > 59 or s > 60
            or not 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    return float(calendar.timegm((year, month, day, h, m, s, 0, 0, 0)))
