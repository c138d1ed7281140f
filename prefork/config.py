"""Configuration: every setting declared once, an INI reader that remembers line numbers,
validation that names file, line and key, and a frozen Config.

The SETTINGS table drives everything: loading, `--set` overrides, `httpdctl configtest`,
the defaults, and the shipped etc/httpd.ini (tests check that file against this table).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_CONFIG = "etc/httpd.ini"  # relative to the current directory, unless $HTTPD_CONF
CONFIG_ENV = "HTTPD_CONF"

# Apache's "combined" LogFormat.
COMBINED_FORMAT = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"'
LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit")


# ---------------------------------------------------------------- value types
# Each converter takes the raw string and returns the value, or raises ValueError whose text
# becomes the error message.

def _integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
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


def _seconds(raw: str) -> float:
    """Durations: "5", "2.5", "500ms", "30s", "2m", "1h"."""
    match = _DURATION.fullmatch(raw.strip().lower())
    if not match:
        raise ValueError(f"expected a duration such as 5, 0.5, 500ms, 30s or 2m, got {raw!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(raw: str) -> int:
    """Byte sizes: "1024", "64k", "10M", "1G" (binary multiples, like nginx)."""
    match = _SIZE.fullmatch(raw.strip().lower())
    if not match:
        raise ValueError(f"expected a size such as 8190, 64k, 10M or 1G, got {raw!r}")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "")[:1]]


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected on/off, yes/no or true/false, got {raw!r}")


def _string(raw: str) -> str:
    return raw.strip()


def _words(raw: str) -> tuple[str, ...]:
    """Space- or comma-separated list."""
    return tuple(w for w in re.split(r"[\s,]+", raw.strip()) if w)


def _choice(*options: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value
    return convert


def _processes(raw: str) -> int:
    """A number of processes, or "auto" for one per CPU."""
    if raw.strip().lower() == "auto":
        return os.cpu_count() or 1
    return _integer(1, 256)(raw)


def _extensions(raw: str) -> tuple[str, ...]:
    out = []
    for word in _words(raw):
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

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else \
            f"{self.host}:{self.port}"


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


def _listen_list(raw: str) -> tuple[ListenAddress, ...]:
    addresses = tuple(parse_listen(word) for word in _words(raw))
    if not addresses:
        raise ValueError("at least one listen address is required")
    if len(set(addresses)) != len(addresses):
        raise ValueError("the same address is listed twice")
    return addresses


# One Apache LogFormat directive: %h, %>s, %{Referer}i, %% ... (mod_log_config).
ACCESS_FORMAT_DIRECTIVE = re.compile(r"%(?:\{([^}]*)\})?([<>]?)([a-zA-Z%])")
ACCESS_FORMAT_LETTERS = frozenset("%abBDhHilmpPqrsTtuUv") | {"o"}


def _access_format(raw: str) -> str:
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
    stray = ACCESS_FORMAT_DIRECTIVE.sub("", text)
    if "%" in stray:
        raise ValueError("a % is not followed by a known directive (write %% for a literal %)")
    return text


def _path_or_off(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a path or 'off'")
    return "off" if value.lower() == "off" else value


# ------------------------------------------------------------------ the table

@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    key: str
    convert: Callable[[str], Any]
    default: str  # written as it would appear in the file, and converted like any value
    help: str
    is_path: bool = False  # resolved against the server root after conversion


def _s(section: str, key: str, convert: Callable[[str], Any], default: str, help: str,
       is_path: bool = False) -> Setting:
    return Setting(section, key, convert, default, help, is_path)


SETTINGS: tuple[Setting, ...] = (
    _s("server", "listen", _listen_list, "127.0.0.1:8080",
       "Addresses to listen on: host:port, [v6]:port or *:port; several separated by spaces."),
    _s("server", "server_name", _words, "localhost",
       "Names the Host header may carry (besides the listen addresses); * accepts any."),
    _s("server", "document_root", _string, "htdocs", "Directory served to clients.", True),
    _s("server", "pid_file", _string, "var/run/httpd.pid",
       "PID file, locked by the master for its whole life.", True),
    _s("server", "scoreboard_file", _string, "var/run/httpd.scoreboard",
       "Shared-memory scoreboard that `httpdctl status` reads.", True),
    _s("server", "user", _string, "", "User the workers run as when started as root."),
    _s("server", "group", _string, "", "Group the workers run as when started as root."),
    _s("server", "backlog", _integer(1, 65535), "1024", "Listen queue length (listen(2))."),
    _s("workers", "processes", _processes, "auto",
       "Worker processes: a number or auto (one per CPU)."),
    _s("workers", "threads", _integer(1, 64), "2",
       "Serving threads per worker; each runs its own event loop."),
    _s("workers", "blocking_threads", _integer(1, 256), "8",
       "Threads per worker for requests that may block for long (request bodies)."),
    _s("workers", "max_connections", _integer(1, 100000), "1000",
       "Connections one worker holds at most (active and idle)."),
    _s("workers", "max_requests", _integer(0), "0",
       "Recycle a worker after this many requests (0 = never)."),
    _s("workers", "max_requests_jitter", _integer(0), "0",
       "Random extra requests added to max_requests per worker, to stagger recycling."),
    _s("workers", "graceful_timeout", _seconds, "30",
       "Seconds a stopping worker may spend finishing requests before it is killed."),
    _s("workers", "boot_timeout", _seconds, "30",
       "Seconds a new worker may take to report that it is ready."),
    _s("workers", "heartbeat_timeout", _seconds, "30",
       "A worker whose heartbeat stops for this long is killed as hung and replaced."),
    _s("workers", "request_timeout", _seconds, "0",
       "A request running longer is logged with a stack dump and its worker retired "
       "(0 = no limit)."),
    _s("workers", "max_worker_memory", _size, "0",
       "Recycle a worker whose resident memory exceeds this (0 = no limit)."),
    _s("workers", "shutdown_delay", _seconds, "0",
       "Seconds to keep serving after SIGTERM before stopping (load balancer deregistration)."),
    _s("workers", "allow_root", _boolean, "off",
       "Allow workers to run as root when started as root without [server] user."),
    _s("http", "keepalive_timeout", _seconds, "5",
       "Seconds an idle persistent connection is kept open (0 disables keep-alive)."),
    _s("http", "max_keepalive_requests", _integer(0), "1000",
       "Requests served on one connection before it is closed (0 = unlimited)."),
    _s("http", "timeout", _seconds, "60",
       "Seconds allowed for reading a request or writing a response without progress."),
    _s("http", "limit_request_line", _integer(64, 1 << 20), "8190",
       "Longest request line in bytes (414 beyond)."),
    _s("http", "limit_request_fields", _integer(1, 10000), "100",
       "Most header fields in a request (431 beyond)."),
    _s("http", "limit_request_field_size", _integer(64, 1 << 20), "8190",
       "Longest header field line in bytes (431 beyond)."),
    _s("http", "limit_request_body", _size, "1G",
       "Largest request body (413 beyond; 0 = unlimited)."),
    _s("http", "header_timeout", _seconds, "20",
       "Seconds from a request's first byte to the end of its head (408 beyond); extended "
       "while data keeps arriving at min_rate, like Apache's RequestReadTimeout header=20-40."),
    _s("http", "body_timeout", _seconds, "20",
       "Seconds of silence allowed while reading a request body (408 beyond)."),
    _s("http", "min_rate", _size, "500",
       "Bytes per second a client must keep up while sending a head or body (0 = no minimum)."),
    _s("static", "index_files", _words, "index.html",
       "Files tried, in order, when a directory is requested."),
    _s("static", "download_extensions", _extensions, ".png .jpg .jpeg .txt",
       "Extensions sent as application/octet-stream with Content-Disposition: attachment."),
    _s("uploads", "directory", _string, "htdocs/uploads",
       "Where POST /upload stores files and PUT/DELETE may write; created at start.", True),
    _s("uploads", "require_auth", _words, "",
       "Methods that need Basic credentials from [auth] users_file, e.g. POST PUT DELETE."),
    _s("uploads", "writers", _words, "",
       "Users of users_file allowed the require_auth methods (empty: all of them); another "
       "authenticated user gets 403."),
    _s("auth", "users_file", _string, "",
       "Apache htpasswd file with bcrypt entries (htpasswd -B).", True),
    _s("auth", "realm", _string, "prefork",
       "Realm named in WWW-Authenticate."),
    _s("status", "enabled", _boolean, "off",
       "Serve /server-status (HTML, and ?auto for monitoring tools)."),
    _s("status", "path", _string, "/server-status", "Where the status page is served."),
    _s("status", "allow", _words, "127.0.0.1 ::1",
       "Client addresses (or CIDR networks) allowed to see the status page."),
    _s("logging", "access_log", _path_or_off, "var/log/access.log",
       "Access log path, or off.", True),
    _s("logging", "error_log", _string, "var/log/error.log", "Error log path.", True),
    _s("logging", "level", _choice(*LOG_LEVELS), "info",
       "Error log level: debug, info, notice, warn, error or crit."),
    _s("logging", "access_format", _access_format, COMBINED_FORMAT,
       "Access log format in Apache LogFormat syntax (default: combined)."),
)

SETTINGS_BY_NAME: dict[tuple[str, str], Setting] = {(s.section, s.key): s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))


# ------------------------------------------------------------------ the Config

class Section:
    """Read-only attribute view of one section's values."""

    __slots__ = ("_name", "_values")

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no setting [{self._name}] {key}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only")


@dataclass(frozen=True)
class Config:
    """A validated configuration. `source` is the file it came from (or "<defaults>")."""

    source: str
    server_root: Path
    values: Mapping[tuple[str, str], Any]
    raw: Mapping[tuple[str, str], str]  # the text each value came from (for reload diffs)

    def __post_init__(self) -> None:
        sections = {
            name: Section(name, {k: v for (s, k), v in self.values.items() if s == name})
            for name in SECTIONS
        }
        object.__setattr__(self, "_sections", sections)

    def get(self, section: str, key: str) -> Any:
        return self.values[(section, key)]

    def __getattr__(self, section: str) -> Section:
        sections = self.__dict__.get("_sections", {})
        if section in sections:
            return sections[section]
        raise AttributeError(section)


def server_root_for(config_path: Path) -> Path:
    """The directory above the config file's etc/ (or the config file's own directory)."""
    parent = config_path.resolve().parent
    return parent.parent if parent.name == "etc" else parent


@dataclass(frozen=True, slots=True)
class _RawValue:
    text: str
    file: str
    line: int | None


_SECTION_LINE = re.compile(r"\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY_LINE = re.compile(r"([A-Za-z0-9_.-]+)\s*[=:]\s*(.*)")
_INLINE_COMMENT = re.compile(r"\s+[#;].*$")


def _read_ini(path: Path, lenient: bool = False) -> dict[tuple[str, str], _RawValue]:
    """Read an INI file into {(section, key): raw value}, rejecting unknown names
    (or, when `lenient`, skipping what it cannot use)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("configuration file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file: {exc}", file=file) from None
    found: dict[tuple[str, str], _RawValue] = {}
    section: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            section = _read_line(line, number, file, section, found)
        except ConfigError:
            if not lenient:
                raise
            if _SECTION_LINE.fullmatch(line.strip()):
                section = None  # keys of an unknown section are skipped too
    return found


def _read_line(line: str, number: int, file: str, section: str | None,
               found: dict[tuple[str, str], _RawValue]) -> str | None:
    """Take one line into `found`; returns the section in force after it."""
    stripped = line.strip()
    if not stripped or stripped[0] in "#;":
        return section
    if match := _SECTION_LINE.fullmatch(stripped):
        name = match.group(1).lower()
        if name not in SECTIONS:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(SECTIONS)})",
                              file=file, line=number, key=name)
        return name
    match = _KEY_LINE.fullmatch(stripped)
    if not match:
        raise ConfigError(f"cannot parse line {stripped!r}; expected 'key = value'",
                          file=file, line=number)
    key, value = match.group(1).lower(), _INLINE_COMMENT.sub("", match.group(2))
    if section is None:
        raise ConfigError(f"'{key}' appears before any [section]", file=file, line=number,
                          key=key)
    if (section, key) not in SETTINGS_BY_NAME:
        raise ConfigError("unknown setting", file=file, line=number, key=f"{section}.{key}")
    if (section, key) in found:
        first = found[(section, key)].line
        raise ConfigError(f"set twice (first on line {first})", file=file, line=number,
                          key=f"{section}.{key}")
    found[(section, key)] = _RawValue(value, file, number)
    return section


def _parse_override(text: str) -> tuple[tuple[str, str], _RawValue]:
    name, sep, value = text.partition("=")
    section, dot, key = name.strip().lower().partition(".")
    if not sep or not dot:
        raise ConfigError(f"expected section.key=value, got {text!r}", file="--set")
    if (section, key) not in SETTINGS_BY_NAME:
        raise ConfigError("unknown setting", file="--set", key=f"{section}.{key}")
    return (section, key), _RawValue(value.strip(), "--set", None)


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Iterable[str] = (), lenient: bool = False) -> Config:
    """Load and validate a configuration file plus `section.key=value` overrides.

    Returns a frozen Config; raises ConfigError naming file, line and key on any problem.
    With `lenient`, unusable lines and values fall back to defaults instead: httpdctl uses
    that to find the PID file of a running server whose file was since broken, so that
    `stop` and `status` still work.
    """
    config_path = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    raw = _read_ini(config_path, lenient)
    for item in overrides:
        try:
            name, value = _parse_override(item)
        except ConfigError:
            if lenient:
                continue
            raise
        raw[name] = value
    root = server_root_for(config_path)
    values: dict[tuple[str, str], Any] = {}
    texts: dict[tuple[str, str], str] = {}
    for setting in SETTINGS:
        name = (setting.section, setting.key)
        given = raw.get(name)
        text = given.text if given else setting.default
        try:
            value = setting.convert(text)
        except ValueError as exc:
            if lenient:
                text = setting.default
                value = setting.convert(text)
                given = None
            else:
                where = given or _RawValue(text, "<default>", None)
                raise ConfigError(str(exc), file=where.file, line=where.line,
                                  key=f"{setting.section}.{setting.key}") from None
        if setting.is_path and isinstance(value, str) and value not in ("", "off"):
            value = str((root / value).resolve()) if not os.path.isabs(value) else value
        values[name] = value
        texts[name] = text
    config = Config(str(config_path.resolve()), root, values, texts)
    if not lenient:
        _check_consistency(config, raw)
    return config


def _check_consistency(config: Config, raw: Mapping[tuple[str, str], _RawValue]) -> None:
    """Cross-setting checks that a single converter cannot make."""
    def fail(section: str, key: str, message: str) -> None:
        where = raw.get((section, key))
        raise ConfigError(message, file=where.file if where else config.source,
                          line=where.line if where else None, key=f"{section}.{key}")

    root = config.server.document_root
    if not os.path.isdir(root):
        fail("server", "document_root", f"not a directory: {root}")


def render_default_ini() -> str:
    """Return the commented default configuration file, generated from SETTINGS."""
    lines = ["# prefork configuration. Every setting is shown with its default.",
             "# Relative paths resolve against the server root: the directory above etc/.", ""]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for setting in (s for s in SETTINGS if s.section == section):
            lines.append(f"# {setting.help}")
            lines.append(f"{setting.key} = {setting.default}".rstrip())
        lines.append("")
    return "\n".join(lines)
