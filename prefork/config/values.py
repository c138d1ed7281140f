"""Value types of the configuration: each converter takes the raw text of a setting and
returns its value, or raises ValueError whose text becomes the ConfigError's message."""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Apache's "combined" LogFormat.
COMBINED_FORMAT = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"'
LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit")


# Each converter takes the raw string and returns the value, or raises ValueError whose text
# becomes the error message.

def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        try:
            value = int(raw, 10)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value
    convert.__doc__ = "integer"
    return convert


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def seconds(raw: str) -> float:
    """Durations: "5", "2.5", "500ms", "30s", "2m", "1h"."""
    match = _DURATION.fullmatch(raw.strip().lower())
    if not match:
        raise ValueError(f"expected a duration such as 5, 0.5, 500ms, 30s or 2m, got {raw!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(raw: str) -> int:
    """Byte sizes: "1024", "64k", "10M", "1G" (binary multiples, like nginx)."""
    match = _SIZE.fullmatch(raw.strip().lower())
    if not match:
        raise ValueError(f"expected a size such as 8190, 64k, 10M or 1G, got {raw!r}")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "")[:1]]


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected on/off, yes/no or true/false, got {raw!r}")


class Switch(enum.Enum):
    """A setting that is on, off, or decided by the rest of the configuration (auto).

    Truth-testing one raises TypeError: `auto` is neither, so code must ask what it
    resolves to (for [uploads] enabled: Config.uploads_enabled), and a call site that
    forgot to would fail in the tests rather than treat `auto` as on."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"

    def __bool__(self) -> bool:
        raise TypeError(f"{self.value!r} is a tri-state switch: resolve it, do not "
                        "truth-test it")


def switch(raw: str) -> Switch:
    """auto, or any on/off spelling boolean() takes."""
    if raw.strip().lower() == "auto":
        return Switch.AUTO
    try:
        return Switch.ON if boolean(raw) else Switch.OFF
    except ValueError:
        raise ValueError(f"expected auto, on or off, got {raw!r}") from None


def string_value(raw: str) -> str:
    return raw.strip()


def words(raw: str) -> tuple[str, ...]:
    """Space- or comma-separated list."""
    return tuple(w for w in re.split(r"[\s,]+", raw.strip()) if w)


def choice(*options: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value
    return convert


# Spellings other servers use for the same levels (Apache's emerg/alert, Python's warning).
_LEVEL_ALIASES = {"warning": "warn", "emerg": "crit", "alert": "crit", "critical": "crit"}


def level(raw: str) -> str:
    value = raw.strip().lower()
    return choice(*LOG_LEVELS)(_LEVEL_ALIASES.get(value, value))


# Capacity of the scoreboard, like Apache's ServerLimit and ThreadLimit: fixed when the master
# starts, and the one source of truth for how many processes and threads can run. A reload
# runs two generations side by side, and a recycled worker's replacement may start meanwhile,
# so the scoreboard holds 2 x MAX_PROCESSES + 1 process slots (scoreboard.PROCESS_LIMIT).
# Workers of a third generation still finishing long requests make the next reload wait for
# their slots (within graceful_timeout), never fail (process/reload.py).
MAX_PROCESSES = 64
MAX_THREAD_SLOTS = 128  # per worker: event-loop threads + blocking threads


def processes(raw: str) -> int:
    """A number of processes (at most MAX_PROCESSES), or "auto" for one per CPU."""
    if raw.strip().lower() == "auto":
        return min(os.cpu_count() or 1, MAX_PROCESSES)
    return integer(1, MAX_PROCESSES)(raw)


def extensions(raw: str) -> tuple[str, ...]:
    out = []
    for word in words(raw):
        ext = word.lower() if word.startswith(".") else "." + word.lower()
        if not re.fullmatch(r"\.[a-z0-9_+-]+", ext):
            raise ValueError(f"not a file extension: {word!r}")
        out.append(ext)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # "" never appears: wildcards are spelled 0.0.0.0 or ::
    port: int
    family: int
    # Marked `ssl` in the file (nginx's spelling). Not part of equality: the same address
    # cannot be both, and a reload that turns a listener to TLS keeps its socket.
    tls: bool = field(default=False, compare=False)

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8 and ::1 (hosts are always IP addresses by now)."""
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else \
            f"{self.host}:{self.port}"

    @property
    def shown(self) -> str:
        """The address as the file writes it, `ssl` mark included: what the operator is
        shown wherever addresses are listed (configtest, start, status, the start log)."""
        return f"{self} {TLS_MARK}" if self.tls else str(self)


def parse_listen(raw: str) -> ListenAddress:
    """Parse "host:port", "[v6]:port", "*:port" or a bare "port" (all IPv4 interfaces)."""
    text = raw.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        family = socket.AF_INET6
        if not sep:
            raise ValueError(f"IPv6 listen address must look like [::1]:8080, got {raw!r}")
    elif text.isdigit():
        host, port_text, family = "0.0.0.0", text, socket.AF_INET
    else:
        host, sep, port_text = text.rpartition(":")
        family = socket.AF_INET
        if not sep or not host:
            raise ValueError(f"expected host:port such as 127.0.0.1:8080, got {raw!r}")
        if host == "*":
            host = "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535 in {raw!r}")
    try:
        socket.inet_pton(family, host)
    except OSError:
        try:
            host = socket.gethostbyname(host) if family == socket.AF_INET else host
            socket.inet_pton(family, host)
        except OSError:
            raise ValueError(f"not an IP address or resolvable host: {host!r}") from None
    return ListenAddress(host, int(port_text), family)


TLS_MARK = "ssl"  # follows an address that speaks TLS: "0.0.0.0:8443 ssl"


def listen_list(raw: str) -> tuple[ListenAddress, ...]:
    """Addresses separated by spaces or commas; `ssl` after one marks it as a TLS listener."""
    found: list[ListenAddress] = []
    for word in words(raw):
        if word.lower() == TLS_MARK:
            if not found or found[-1].tls:
                raise ValueError(f"{TLS_MARK!r} must follow a listen address, as in "
                                 f"0.0.0.0:8443 ssl")
            last = found[-1]
            found[-1] = ListenAddress(last.host, last.port, last.family, tls=True)
        else:
            found.append(parse_listen(word))
    addresses = tuple(found)
    if not addresses:
        raise ValueError("at least one listen address is required")
    if len(set(addresses)) != len(addresses):
        raise ValueError("the same address is listed twice")
    return addresses


# One Apache LogFormat directive: %h, %>s, %{Referer}i, %% ... (mod_log_config).
ACCESS_FORMAT_DIRECTIVE = re.compile(r"%(?:\{([^}]*)\})?([<>]?)([a-zA-Z%])")
ACCESS_FORMAT_LETTERS = frozenset("%abBDhHiIlmOpPqrsTtuUvx") | {"o"}
# %{NAME}x: mod_ssl's variables of the connection's TLS session ("-" on a plain connection).
TLS_LOG_VARIABLES = ("SSL_PROTOCOL", "SSL_CIPHER")
# %{...}t: mod_log_config's named forms (an optional begin:/end: prefix, then sec, msec,
# usec, msec_frac, usec_frac or a strftime(3) format).
TIME_UNITS = ("sec", "msec", "usec", "msec_frac", "usec_frac")
_FIELD_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # token (RFC 9110 §5.6.2)


def access_format(raw: str) -> str:
    """An Apache LogFormat string using the directives log.py knows."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if "%" not in text:
        raise ValueError("contains no % directives")
    for match in ACCESS_FORMAT_DIRECTIVE.finditer(text):
        letter, arg = match.group(3), match.group(1)
        if letter not in ACCESS_FORMAT_LETTERS:
            raise ValueError(f"unsupported directive %{letter}")
        if letter in "io" and not arg:
            raise ValueError(f"%{letter} needs a header name, as in %{{Referer}}{letter}")
        if letter in "io" and not _FIELD_NAME.fullmatch(arg):
            raise ValueError(f"%{{{arg}}}{letter}: {arg!r} is not a header field name")
        if letter == "t" and arg:
            time_format(arg)
        if letter == "x" and arg not in TLS_LOG_VARIABLES:
            raise ValueError(f"%{{{arg or ''}}}x: expected %{{SSL_PROTOCOL}}x or "
                             f"%{{SSL_CIPHER}}x")
    stray = ACCESS_FORMAT_DIRECTIVE.sub("", text)
    if "%" in stray:
        raise ValueError("a % is not followed by a known directive (write %% for a literal %)")
    return text


def time_format(arg: str) -> tuple[bool, str]:
    """The argument of %{...}t as (at the end of the request, unit or strftime format);
    raises ValueError for a format strftime cannot render."""
    at_end = arg.startswith("end:")
    if at_end or arg.startswith("begin:"):
        arg = arg.partition(":")[2]
    if not arg:
        raise ValueError("%{...}t needs a format after begin: or end:")
    if arg in TIME_UNITS:
        return at_end, arg
    try:
        time.strftime(arg, time.localtime(0))
    except ValueError as exc:
        raise ValueError(f"%{{{arg}}}t: not a strftime format ({exc})") from None
    return at_end, arg


# ------------------------------------------------------------------ error-log format
# Apache's ErrorLogFormat (core), as far as prefork has the values: directives whose value an
# error-log line here never carries are refused, so a format that passes configtest renders.
# How a line is built (Apache's do_errorlog_format): the format is split into fields where
# whitespace follows non-whitespace ("\ " is a space that does not split, "% " an empty
# split); an item with no value removes its whole field, unless written %-x (then "-").
# A number after % (%7F) keeps the item only in messages of that Apache level or less
# severe (1 alert .. 7 debug).

# Apache 2.4's own default, for a threaded MPM, is
#   [%{u}t] [%-m:%l] [pid %P:tid %T] %7F: %E: [client\ %a] %M% ,\ referer\ %{Referer}i
# prefork's default is that layout minus what its lines never carry (the source file of a
# debug line, an OS error code, a Referer), with the kernel's thread id (%{g}T: what ps, top
# and py-spy show) where Apache prints pthread_self().
DEFAULT_ERROR_FORMAT = "[%{u}t] [%-m:%l] [pid %P:tid %{g}T] [client\\ %a] %M"
# Apache's level numbers (ap_log_error's APLOG_*), for the %N modifier.
APACHE_LEVELS = {"crit": 2, "error": 3, "warn": 4, "notice": 5, "info": 6, "debug": 7}
_ERROR_ITEM_ARGS: dict[str, tuple[str, ...]] = {
    "%": ("",), "a": ("", "c"), "h": ("",), "E": ("",), "F": ("",), "l": ("",), "m": ("",),
    "M": ("",), "P": ("",), "T": ("", "g"), "t": ("", "u", "c", "cu", "uc"),
}
_ERROR_ITEM_MISSING = {
    "A": "the local address", "e": "request environment variables",
    "i": "request header fields", "k": "keep-alive counts", "L": "log ids",
    "n": "request notes", "v": "server names", "V": "server names",
}


@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One piece of an error-log format: literal `text` (letter "") or a directive."""

    letter: str
    arg: str = ""
    text: str = ""
    starts_field: bool = False  # a new field begins here (whitespace, or "% ")
    hyphen: bool = False  # %-x: "-" when empty, instead of dropping the field
    min_level: int = 0  # %Nx: only in messages whose Apache level number is >= N


def parse_error_format(raw: str) -> tuple[ErrorItem, ...]:
    """Split an ErrorLogFormat string into items; raises ValueError naming what cannot be
    rendered."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    items: list[ErrorItem] = []
    pos, size = 0, len(text)
    while pos < size:
        if text[pos] != "%":
            literal, pos = _error_literal(text, pos)
            items.append(ErrorItem("", text=literal, starts_field=literal[0] == " "))
            continue
        pos += 1
        starts = False
        if text.startswith(" ", pos):  # "% ": an empty field separator
            starts, pos = True, pos + 1
            if pos >= size or text[pos] != "%":
                items.append(ErrorItem("", starts_field=True))
                continue
            pos += 1
        arg, hyphen, level = "", False, 0
        while pos < size and text[pos] in "{+-0123456789":
            char = text[pos]
            if char == "{":
                close = text.find("}", pos)
                if close < 0:
                    raise ValueError("a { is not closed by }")
                arg, pos = text[pos + 1:close], close + 1
            elif char == "+":
                raise ValueError("the + modifier belongs to Apache's once-per-connection and "
                                 "once-per-request formats, which prefork does not have")
            elif char == "-":
                hyphen, pos = True, pos + 1
            else:
                digits = re.match(r"\d+", text[pos:])
                assert digits is not None
                level, pos = int(digits[0]), pos + len(digits[0])
        if pos >= size:
            raise ValueError("the format ends inside a % directive")
        letter = text[pos]
        pos += 1
        if letter in _ERROR_ITEM_MISSING:
            raise ValueError(f"%{letter}: prefork's error-log lines do not carry "
                             f"{_ERROR_ITEM_MISSING[letter]}")
        if letter not in _ERROR_ITEM_ARGS:
            raise ValueError(f"unknown directive %{letter} (write %% for a literal %)")
        if arg not in _ERROR_ITEM_ARGS[letter]:
            allowed = " or ".join(f"%{{{a}}}{letter}" if a else f"%{letter}"
                                  for a in _ERROR_ITEM_ARGS[letter])
            raise ValueError(f"%{{{arg}}}{letter}: expected {allowed}")
        if letter == "%":
            items.append(ErrorItem("", text="%", starts_field=starts))
        else:
            items.append(ErrorItem(letter, arg, "", starts, hyphen, level))
    if not any(item.letter == "M" for item in items):
        raise ValueError("has no %M: the message would not be logged")
    return tuple(items)


_ESCAPES = {" ": " ", "\\": "\\", "t": "\t", "%": "%"}


def _error_literal(text: str, pos: int) -> tuple[str, int]:
    """Literal text from `pos`: leading spaces, then up to a % or the next unescaped space
    (which starts the next field). Returns (text, the position after it)."""
    out: list[str] = []
    at_start = True
    while pos < len(text) and text[pos] != "%" and (text[pos] != " " or at_start):
        char = text[pos]
        if char == "\\":
            if pos + 1 >= len(text) or text[pos + 1] not in _ESCAPES:
                raise ValueError("a backslash must be followed by a space, \\, t or %")
            out.append(_ESCAPES[text[pos + 1]])
            pos += 2
            at_start = False
            continue
        if char != " ":
            at_start = False
        out.append(char)
        pos += 1
    return "".join(out), pos


def error_format(raw: str) -> str:
    """An Apache ErrorLogFormat string that log.py can render (see parse_error_format)."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    parse_error_format(text)
    return text


def realm_value(raw: str) -> str:
    """The [auth] realm: text a response field can carry, so every 401 can be sent.

    The realm is a quoted-string in WWW-Authenticate (RFC 7617 §2, RFC 9110 §11.2), and a
    field value is bytes: visible ASCII, SP, HTAB and obs-text, which we send as latin-1.
    RFC 7617's charset parameter covers the credentials only; there is no encoding for a
    realm that user agents agree on, so a realm outside latin-1 (or with a control
    character) is refused here rather than shown garbled. Raises ValueError.
    """
    value = raw.strip()
    for char in value:
        if ord(char) > 0xFF:
            raise ValueError(f"{char!r} is outside latin-1: a WWW-Authenticate field cannot "
                             "carry it (RFC 7617 gives the realm no encoding)")
        if (ord(char) < 0x20 and char != "\t") or 0x7F <= ord(char) < 0xA0:
            raise ValueError(f"control character {char!r} in the realm")
    return value


TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")  # older ones are refused: RFC 8996 deprecates them


def tls_protocols(raw: str) -> tuple[str, ...]:
    """TLS versions to offer, among TLSv1.2 and TLSv1.3 (contiguous by construction)."""
    known = {name.lower(): name for name in TLS_PROTOCOLS}
    chosen = []
    for word in words(raw):
        name = known.get(word.lower())
        if name is None:
            raise ValueError(f"unsupported protocol {word!r}: expected TLSv1.2 and/or TLSv1.3 "
                             f"(TLS 1.0 and 1.1 are deprecated, RFC 8996)")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError("at least one protocol is required")
    return tuple(sorted(chosen, key=TLS_PROTOCOLS.index))


def cipher_list(raw: str) -> str:
    """An OpenSSL cipher string for TLS 1.2 (checked against OpenSSL when contexts are
    built: configtest names a string OpenSSL cannot use)."""
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"expected an OpenSSL cipher list such as "
                         f"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384, got {raw!r}")
    return value


# Strict-Transport-Security (RFC 6797 §6.1): directives separated by ";", each a token
# name with an optional token or quoted-string value; max-age first here, as every
# browser's and nginx's examples write it, so that a value is never sent without one.
_HSTS_TOKEN = _FIELD_NAME.pattern
_HSTS_DIRECTIVE = re.compile(
    rf'{_HSTS_TOKEN}(?:=(?:{_HSTS_TOKEN}|"[\t\x20\x21\x23-\x5b\x5d-\x7e]*"))?')
_HSTS_MAX_AGE = re.compile(r"max-age=[0-9]{1,10}", re.IGNORECASE)


def hsts_value(raw: str) -> str:
    """A Strict-Transport-Security value sent as written, or "" (none sent): it must start
    with max-age=SECONDS, e.g. max-age=63072000; includeSubDomains."""
    value = raw.strip()
    if not value:
        return ""
    directives = [part.strip() for part in value.split(";")]
    if not _HSTS_MAX_AGE.fullmatch(directives[0]):
        raise ValueError(f"must start with max-age=SECONDS, as in max-age=63072000; "
                         f"includeSubDomains, got {raw!r}")
    seen: set[str] = set()
    for directive in directives:
        if not directive:
            continue  # RFC 6797 allows empty directives (";;")
        if not _HSTS_DIRECTIVE.fullmatch(directive):
            raise ValueError(f"not a Strict-Transport-Security directive: {directive!r}")
        name = directive.partition("=")[0].lower()
        if name in seen:
            raise ValueError(f"the directive {name} appears twice (RFC 6797 §6.1)")
        seen.add(name)
    return value


def path_or_off(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a path or 'off'")
    return "off" if value.lower() == "off" else value


def url_prefix(raw: str) -> str:
    """A URL path prefix to mount something at: "/" or "/a/b" (no trailing slash, no query,
    no dot segments, visible ASCII)."""
    value = raw.strip()
    if value != "/":
        value = value.rstrip("/")
    if not value.startswith("/") or any(c in value for c in "?#%\\") \
            or not all("!" <= c <= "~" for c in value):
        raise ValueError(f"expected a URL path such as / or /app, got {raw!r}")
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"a mount may not contain . or .. segments: {raw!r}")
    return value


def environment(raw: str) -> tuple[tuple[str, str], ...]:
    """Environment variables as NAME=VALUE words (values without spaces)."""
    pairs = []
    for word in words(raw):
        name, sep, value = word.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"expected NAME=VALUE, got {word!r}")
        pairs.append((name, value))
    return tuple(pairs)


def app_module(raw: str) -> str:
    """gunicorn's APP_MODULE: package.module or package.module:callable (or :attr.path)."""
    value = raw.strip()
    if not value:
        return value  # "not set": the loader says it is required
    module, _, attribute = value.partition(":")
    dotted = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
    if not re.fullmatch(dotted, module) or (attribute and not re.fullmatch(dotted, attribute)):
        raise ValueError(f"expected package.module:callable, got {raw!r}")
    return value


# Methods an [auth] require rule may name (RFC 9110 §9 plus PATCH; TRACE is always refused).
RULE_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One word of [auth] require: requests under `prefix` (on a segment boundary) need
    credentials, for the methods in `methods`, or for every method when it is empty."""

    prefix: str
    methods: frozenset[str] = frozenset()

    def covers(self, method: str) -> bool:
        return not self.methods or method in self.methods

    def __str__(self) -> str:
        return f"{self.prefix}:{','.join(sorted(self.methods))}" if self.methods \
            else self.prefix


def access_rules(raw: str) -> tuple[AccessRule, ...]:
    """[auth] require: space-separated PREFIX or PREFIX:METHOD,METHOD... words.

    A prefix is a URL path as a mount is written (url_prefix); naming GET covers HEAD too,
    as Apache's <Limit GET> does. A prefix may appear once: the longest one that matches
    a request decides, as nginx picks a prefix location.
    """
    rules: list[AccessRule] = []
    for word in raw.split():
        path, sep, listed = word.partition(":")
        try:
            prefix = url_prefix(path)
        except ValueError:
            raise ValueError(f"{word!r}: expected a path prefix such as /admin, optionally "
                             "followed by :METHOD,METHOD (e.g. /uploads:PUT,POST,DELETE)") \
                from None
        methods = frozenset(m.upper() for m in listed.split(",") if m)
        if sep and not methods:
            raise ValueError(f"{word!r}: no method after ':' (leave out ':' for all methods)")
        unknown = sorted(methods - RULE_METHODS)
        if unknown:
            raise ValueError(f"{word!r}: {', '.join(unknown)} is not one of "
                             f"{', '.join(sorted(RULE_METHODS))}")
        if "GET" in methods:
            methods |= {"HEAD"}
        if any(rule.prefix == prefix for rule in rules):
            raise ValueError(f"{prefix} is listed twice")
        rules.append(AccessRule(prefix, methods))
    return tuple(rules)
