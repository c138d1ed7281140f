"""Configuration: every setting declared once, an INI reader that remembers line numbers,
validation that names file, line and key, and a frozen Config.

The SETTINGS table drives everything: loading, `--set` overrides, `httpdctl configtest`,
the defaults, and the shipped etc/httpd.ini (tests check that file against this table).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefork.config.values import (  # noqa: F401 - re-exported: other modules import them from here
    ACCESS_FORMAT_DIRECTIVE,
    COMBINED_FORMAT,
    LOG_LEVELS,
    MAX_PROCESSES,
    MAX_THREAD_SLOTS,
    ListenAddress,
    access_format,
    boolean,
    extensions,
    integer,
    level,
    listen_list,
    parse_listen,
    path_or_off,
    processes,
    seconds,
    size,
    string_value,
    words,
)
from prefork.errors import ConfigError

DEFAULT_CONFIG = "etc/httpd.ini"  # relative to the current directory, unless $HTTPD_CONF
CONFIG_ENV = "HTTPD_CONF"


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
    _s("server", "listen", listen_list, "127.0.0.1:8080",
       "Addresses to listen on: host:port, [v6]:port or *:port; several separated by spaces."),
    _s("server", "server_name", words, "localhost",
       "Names the Host header may carry (besides the listen addresses); * accepts any."),
    _s("server", "document_root", string_value, "htdocs", "Directory served to clients.", True),
    _s("server", "pid_file", string_value, "var/run/httpd.pid",
       "PID file, locked by the master for its whole life.", True),
    _s("server", "scoreboard_file", string_value, "var/run/httpd.scoreboard",
       "Shared-memory scoreboard that `httpdctl status` reads.", True),
    _s("server", "user", string_value, "", "User the workers run as when started as root."),
    _s("server", "group", string_value, "", "Group the workers run as when started as root."),
    _s("server", "backlog", integer(1, 65535), "1024", "Listen queue length (listen(2))."),
    _s("workers", "processes", processes, "auto",
       f"Worker processes: a number up to {MAX_PROCESSES}, or auto (one per CPU)."),
    _s("workers", "threads", integer(1, 64), "1",
       "Event-loop threads per worker. One is fastest (threads of a process share Python's "
       "lock: see docs/architecture.md); more help when slow disks block stat()/open()."),
    _s("workers", "blocking_threads", integer(1, MAX_THREAD_SLOTS - 1), "8",
       "Threads per worker for requests that may block for long (request bodies); "
       f"threads + blocking_threads is at most {MAX_THREAD_SLOTS}."),
    _s("workers", "blocking_queue", integer(1, 100000), "64",
       "Requests one worker queues for a blocking thread at most; beyond, and for a request "
       "still queued at its deadline, the answer is 503 with Retry-After."),
    _s("workers", "max_connections", integer(1, 100000), "1000",
       "Connections one worker holds at most (active and idle)."),
    _s("workers", "max_requests", integer(0), "0",
       "Recycle a worker after this many requests (0 = never)."),
    _s("workers", "max_requests_jitter", integer(0), "0",
       "Random extra requests added to max_requests per worker, to stagger recycling."),
    _s("workers", "graceful_timeout", seconds, "30",
       "Seconds a stopping worker may spend finishing requests before it is killed."),
    _s("workers", "boot_timeout", seconds, "30",
       "Seconds a new worker may take to report that it is ready."),
    _s("workers", "heartbeat_timeout", seconds, "30",
       "A worker whose heartbeat stops for this long is killed as hung and replaced."),
    _s("workers", "request_timeout", seconds, "0",
       "A request running longer is logged with a stack dump and its worker retired "
       "(0 = no limit)."),
    _s("workers", "max_worker_memory", size, "0",
       "Recycle a worker whose resident memory exceeds this (0 = no limit)."),
    _s("workers", "shutdown_delay", seconds, "0",
       "Seconds to keep serving after SIGTERM before stopping (load balancer deregistration)."),
    _s("workers", "allow_root", boolean, "off",
       "Allow workers to run as root when started as root without [server] user."),
    _s("http", "keepalive_timeout", seconds, "5",
       "Seconds an idle persistent connection is kept open (0 disables keep-alive)."),
    _s("http", "max_keepalive_requests", integer(0), "1000",
       "Requests served on one connection before it is closed (0 = unlimited)."),
    _s("http", "timeout", seconds, "60",
       "Seconds allowed for reading a request or writing a response without progress."),
    _s("http", "limit_request_line", integer(64, 1 << 20), "8190",
       "Longest request line in bytes (414 beyond)."),
    _s("http", "limit_request_fields", integer(1, 10000), "100",
       "Most header fields in a request (431 beyond)."),
    _s("http", "limit_request_field_size", integer(64, 1 << 20), "8190",
       "Longest header field line in bytes (431 beyond)."),
    _s("http", "limit_request_body", size, "1G",
       "Largest request body (413 beyond; 0 = unlimited)."),
    _s("http", "header_timeout", seconds, "20",
       "Seconds from a request's first byte to the end of its head (408 beyond); extended "
       "while data keeps arriving at min_rate, like Apache's RequestReadTimeout header=20-40."),
    _s("http", "body_timeout", seconds, "20",
       "Seconds of silence allowed while reading a request body (408 beyond)."),
    _s("http", "discard_body_limit", size, "1M",
       "A request body the server answers without reading (405, 401, a GET with a body...) "
       "is read and discarded up to this size so the connection stays open; a larger one "
       "closes the connection."),
    _s("http", "min_rate", size, "500",
       "Bytes per second a client must keep up while sending a head or body (0 = no minimum)."),
    _s("static", "index_files", words, "index.html",
       "Files tried, in order, when a directory is requested."),
    _s("static", "download_extensions", extensions, ".png .jpg .jpeg .txt",
       "Extensions sent as application/octet-stream with Content-Disposition: attachment."),
    _s("static", "quick_path", boolean, "on",
       "Answer a repeated GET/HEAD of an unchanged cached file straight from the request "
       "bytes, skipping the parser and router (docs/architecture.md); off: every request "
       "takes the full path."),
    _s("uploads", "enabled", boolean, "on",
       "Accept uploads (POST /upload, PUT/DELETE under /uploads/); off: no uploads "
       "directory is needed and those requests are refused like any other write."),
    _s("uploads", "directory", string_value, "htdocs/uploads",
       "Where POST /upload stores files and PUT/DELETE may write, served under /uploads/ "
       "wherever it is (it may live outside document_root); created at start.", True),
    _s("uploads", "require_auth", words, "",
       "Methods that need Basic credentials from [auth] users_file, e.g. POST PUT DELETE."),
    _s("uploads", "writers", words, "",
       "Users of users_file allowed the require_auth methods (empty: all of them); another "
       "authenticated user gets 403."),
    _s("auth", "users_file", string_value, "",
       "Apache htpasswd file with bcrypt entries (htpasswd -B).", True),
    _s("auth", "realm", realm_value, "prefork",
       "Realm named in WWW-Authenticate."),
    _s("status", "enabled", boolean, "off",
       "Serve /server-status (HTML, and ?auto for monitoring tools)."),
    _s("status", "path", string_value, "/server-status", "Where the status page is served."),
    _s("status", "allow", words, "127.0.0.1 ::1",
       "Client addresses (or CIDR networks) allowed to see the status page."),
    _s("logging", "access_log", path_or_off, "var/log/access.log",
       "Access log path, or off.", True),
    _s("logging", "error_log", string_value, "var/log/error.log", "Error log path.", True),
    _s("logging", "level", level, "info",
       "Error log level: debug, info, notice, warn, error or crit."),
    _s("logging", "access_format", access_format, COMBINED_FORMAT,
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


def config_file(path: str | os.PathLike[str] | None = None) -> Path:
    """The configuration file to use: `path`, else $HTTPD_CONF, else ./etc/httpd.ini."""
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Iterable[str] = (), lenient: bool = False) -> Config:
    """Load and validate a configuration file plus `section.key=value` overrides.

    Returns a frozen Config; raises ConfigError naming file, line and key on any problem.
    With `lenient`, unusable lines and values fall back to defaults instead: httpdctl uses
    that to find the PID file of a running server whose file was since broken, so that
    `stop` and `status` still work.
    """
    config_path = config_file(path)
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
            # Normalised, not resolved: a document_root that is a symbolic link switched
            # between releases must stay that link.
            value = os.path.normpath(root / value) if not os.path.isabs(value) else value
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
    workers = config.workers
    if workers.threads + workers.blocking_threads > MAX_THREAD_SLOTS:
        # Each thread has its own scoreboard slot (status, watchdog); none may share one.
        key = "blocking_threads" if ("workers", "blocking_threads") in raw else "threads"
        fail("workers", key, f"threads ({workers.threads}) + blocking_threads "
                             f"({workers.blocking_threads}) exceeds the {MAX_THREAD_SLOTS} "
                             f"scoreboard slots a worker has")


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
