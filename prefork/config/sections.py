"""The typed configuration: one frozen dataclass per section, and Config, which holds one of
each. These classes ARE the declaration of every setting (see prefork.config.schema): a field's
annotation is its value's type, its `setting()` carries the converter, the default as written
in the file, the help text and whether it is a path. The settings table, the INI reader's
known names, `--set`, `configtest` and etc/httpd.ini are all derived from them.

Sections appear in the shipped file in the order Config declares them, and settings in the
order their section declares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefork.config.schema import Section, header_name, sections_of, setting, settings_of
from prefork.config.values import (
    COMBINED_FORMAT,
    DEFAULT_ERROR_FORMAT,
    MAX_PROCESSES,
    MAX_THREAD_SLOTS,
    AccessRule,
    ListenAddress,
    Switch,
    access_format,
    access_rules,
    app_module,
    boolean,
    cipher_list,
    environment,
    error_format,
    extensions,
    hsts_value,
    integer,
    listen_list,
    path_or_off,
    realm_value,
    seconds,
    size,
    string_value,
    switch,
    tls_protocols,
    url_prefix,
    words,
)
from prefork.config.values import level as log_level
from prefork.config.values import processes as process_count


@dataclass(frozen=True, slots=True)
class ServerSettings(Section):
    """The [server] section."""

    listen: tuple[ListenAddress, ...] = setting(
        listen_list, "127.0.0.1:8080",
        "Addresses to listen on: host:port, [v6]:port or *:port; several separated by spaces; "
        "`ssl` after an address makes it a TLS listener (needs a [tls] section).")
    server_name: tuple[str, ...] = setting(
        words, "localhost",
        "Names the Host header may carry (besides the listen addresses); * accepts any.")
    document_root: str = setting(string_value, "htdocs", "Directory served to clients.", path=True)
    pid_file: str = setting(
        string_value, "var/run/httpd.pid",
        "PID file, locked by the master for its whole life.", path=True)
    scoreboard_file: str = setting(
        string_value, "var/run/httpd.scoreboard",
        "Shared-memory scoreboard that `httpdctl status` reads.", path=True)
    user: str = setting(string_value, "", "User the workers run as when started as root.")
    group: str = setting(string_value, "", "Group the workers run as when started as root.")
    backlog: int = setting(integer(1, 65535), "1024", "Listen queue length (listen(2)).")
    https_redirect: bool = setting(
        boolean, "off",
        "Answer every request on a plain (not ssl) listener with a redirect to the same URL "
        "over https on the first ssl listener (301 for GET/HEAD, 308 otherwise), except "
        "under /.well-known/acme-challenge/ (certbot's webroot).")
    hsts: str = setting(
        hsts_value, "",
        "Strict-Transport-Security sent on every response over TLS (never over plain "
        "HTTP), e.g. max-age=63072000; includeSubDomains; empty: none.")


@dataclass(frozen=True, slots=True)
class WorkersSettings(Section):
    """The [workers] section."""

    processes: int = setting(
        process_count, "auto",
        f"Worker processes: a number up to {MAX_PROCESSES}, or auto (one per CPU).")
    threads: int = setting(
        integer(1, 64), "1",
        "Event-loop threads per worker. One is fastest (threads of a process share Python's "
        "lock: see docs/architecture.md); more help when slow disks block stat()/open().")
    blocking_threads: int = setting(
        integer(1, MAX_THREAD_SLOTS - 1), "8",
        "Threads per worker for requests that may block for long (request bodies); "
        f"threads + blocking_threads is at most {MAX_THREAD_SLOTS}.")
    blocking_queue: int = setting(
        integer(1, 100000), "64",
        "Requests one worker queues for a blocking thread at most; beyond, and for a request "
        "still queued at its deadline, the answer is 503 with Retry-After.")
    max_connections: int = setting(
        integer(1, 100000), "1000",
        "Connections one worker holds at most (active and idle).")
    max_requests: int = setting(
        integer(0), "0",
        "Recycle a worker after this many requests (0 = never).")
    max_requests_jitter: int = setting(
        integer(0), "0",
        "Random extra requests added to max_requests per worker, to stagger recycling.")
    graceful_timeout: float = setting(
        seconds, "30",
        "Seconds a stopping worker may spend finishing requests before it is killed.")
    boot_timeout: float = setting(
        seconds, "30",
        "Seconds a new worker may take to report that it is ready.")
    heartbeat_timeout: float = setting(
        seconds, "30",
        "A worker whose heartbeat stops for this long is killed as hung and replaced.")
    request_timeout: float = setting(
        seconds, "0",
        "A request running longer is logged with a stack dump and its worker retired "
        "(0 = no limit).")
    max_worker_memory: int = setting(
        size, "0",
        "Recycle a worker whose resident memory exceeds this (0 = no limit).")
    shutdown_delay: float = setting(
        seconds, "0",
        "Seconds to keep serving after SIGTERM before stopping (load balancer deregistration).")
    allow_root: bool = setting(
        boolean, "off",
        "Allow workers to run as root when started as root without [server] user.")


@dataclass(frozen=True, slots=True)
class HttpSettings(Section):
    """The [http] section."""

    keepalive_timeout: float = setting(
        seconds, "5",
        "Seconds an idle persistent connection is kept open (0 disables keep-alive).")
    max_keepalive_requests: int = setting(
        integer(0), "1000",
        "Requests served on one connection before it is closed (0 = unlimited).")
    timeout: float = setting(
        seconds, "60",
        "Seconds allowed for reading a request or writing a response without progress.")
    limit_request_line: int = setting(
        integer(64, 1 << 20), "8190",
        "Longest request line in bytes (414 beyond).")
    limit_request_fields: int = setting(
        integer(1, 10000), "100",
        "Most header fields in a request (431 beyond).")
    limit_request_field_size: int = setting(
        integer(64, 1 << 20), "8190",
        "Longest header field line in bytes (431 beyond).")
    limit_request_body: int = setting(
        size, "1G",
        "Largest request body (413 beyond; 0 = unlimited).")
    header_timeout: float = setting(
        seconds, "20",
        "Seconds from a request's first byte to the end of its head (408 beyond); extended "
        "while data keeps arriving at min_rate, like Apache's RequestReadTimeout header=20-40.")
    body_timeout: float = setting(
        seconds, "20",
        "Seconds of silence allowed while reading a request body (408 beyond).")
    discard_body_limit: int = setting(
        size, "1M",
        "A request body the server answers without reading (405, 401, a GET with a body...) "
        "is read and discarded up to this size so the connection stays open; a larger one "
        "closes the connection.")
    min_rate: int = setting(
        size, "500",
        "Bytes per second a client must keep up while sending a head or body (0 = no minimum).")


@dataclass(frozen=True, slots=True)
class StaticSettings(Section):
    """The [static] section."""

    mount: str = setting(
        url_prefix, "/",
        "URL prefix the document root is served at (/static when an application owns /); "
        "the longest mount prefix wins.")
    index_files: tuple[str, ...] = setting(
        words, "index.html",
        "Files tried, in order, when a directory is requested.")
    download_extensions: tuple[str, ...] = setting(
        extensions, ".png .jpg .jpeg .txt",
        "Extensions sent as application/octet-stream with Content-Disposition: attachment.")
    quick_path: bool = setting(
        boolean, "on",
        "Answer a repeated GET/HEAD of an unchanged cached file straight from the request "
        "bytes, skipping the parser and router (docs/architecture.md); off: every request "
        "takes the full path.")


@dataclass(frozen=True, slots=True)
class UploadsSettings(Section):
    """The [uploads] section."""

    enabled: Switch = setting(
        switch, "auto",
        "Accept uploads (POST /upload, PUT/DELETE under /uploads/): auto = on only while "
        "every [server] listen address is loopback; on = also beyond loopback, where the "
        "write methods must then need credentials (require_auth) or allow_anonymous = on; "
        "off: no uploads directory is needed and every write is refused (405).")
    directory: str = setting(
        string_value, "htdocs/uploads",
        "Where POST /upload stores files and PUT/DELETE may write, served under /uploads/ "
        "wherever it is (it may live outside document_root); created at start.", path=True)
    require_auth: tuple[str, ...] = setting(
        words, "",
        "Methods that need Basic credentials from [auth] users_file, e.g. POST PUT DELETE.")
    writers: tuple[str, ...] = setting(
        words, "",
        "Users of users_file allowed the require_auth methods (empty: all of them); another "
        "authenticated user gets 403.")
    allow_anonymous: bool = setting(
        boolean, "off",
        "With enabled = on and a listen address beyond loopback, let write methods that "
        "need no credentials stay open to anyone (otherwise start and configtest refuse).")


@dataclass(frozen=True, slots=True)
class AuthSettings(Section):
    """The [auth] section."""

    users_file: str = setting(
        string_value, "",
        "Apache htpasswd file: bcrypt entries (htpasswd -B); $apr1$ (MD5) and {SHA} "
        "entries are accepted with a start-up warning naming their users.", path=True)
    realm: str = setting(realm_value, "prefork", "Realm named in WWW-Authenticate.")
    require: tuple[AccessRule, ...] = setting(
        access_rules, "",
        "Path prefixes that need Basic credentials from users_file, each PREFIX (every "
        "method) or PREFIX:METHOD,METHOD (those only; GET covers HEAD), e.g. /admin "
        "/uploads:PUT,DELETE; the longest matching prefix decides.")


@dataclass(frozen=True, slots=True)
class StatusSettings(Section):
    """The [status] section."""

    enabled: bool = setting(
        boolean, "off",
        "Serve /server-status (HTML, and ?auto for monitoring tools).")
    path: str = setting(string_value, "/server-status", "Where the status page is served.")
    allow: tuple[str, ...] = setting(
        words, "127.0.0.1 ::1",
        "Client addresses (or CIDR networks) allowed to see the status page.")


@dataclass(frozen=True, slots=True)
class LoggingSettings(Section):
    """The [logging] section."""

    access_log: str = setting(
        path_or_off, "var/log/access.log",
        "Access log path, or off.", path=True)
    error_log: str = setting(string_value, "var/log/error.log", "Error log path.", path=True)
    level: str = setting(
        log_level, "info",
        "Error log level: debug, info, notice, warn, error or crit.")
    access_format: str = setting(
        access_format, COMBINED_FORMAT,
        "Access log format in Apache LogFormat syntax (default: combined; also %I, %O, "
        "%{strftime}t: docs/logging.md).")
    error_format: str = setting(
        error_format, DEFAULT_ERROR_FORMAT,
        "Error log line in Apache ErrorLogFormat syntax (%t %{u}t %{cu}t %l %m %P %T %{g}T "
        "%a %h %E %F %M; docs/logging.md); the default is Apache 2.4's layout.")


@dataclass(frozen=True, slots=True)
class AppSettings(Section):
    """An [app] section, or one of several [app:NAME] sections: a WSGI application."""

    name: str = header_name()
    mount: str = setting(url_prefix, "/",
                         "URL prefix the application is mounted at (its SCRIPT_NAME).")
    module: str = setting(
        app_module, "",
        "The WSGI callable as package.module:callable (gunicorn's APP_MODULE; the callable "
        "defaults to application). Required.")
    path: tuple[str, ...] = setting(
        words, "",
        "Directories put in front of sys.path before the import, relative to the server "
        "root.", path=True)
    threads: int = setting(
        integer(1, MAX_THREAD_SLOTS - 2), "8",
        "Threads per worker running this application's requests.")
    env: tuple[tuple[str, str], ...] = setting(
        environment, "",
        "Environment variables for the application, as NAME=VALUE words.")


# Mozilla's "intermediate" policy for TLS 1.2: forward secret (ECDHE) AEAD suites only. TLS 1.3
# suites are OpenSSL's (all AEAD and forward secret) and are not set by this string.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


@dataclass(frozen=True, slots=True)
class TLSSettings(Section):
    """A [tls] section, or one of several [tls:NAME] sections: a certificate and how it is
    offered. The bare [tls] (else the first in the file) is the default; the others are
    chosen by the name the client asks for (SNI) among their server_name."""

    name: str = header_name()
    certificate: str = setting(
        string_value, "",
        "The certificate chain in PEM: the server's certificate first, then the "
        "intermediates. Required.", path=True)
    certificate_key: str = setting(
        string_value, "",
        "The private key of the certificate, in PEM. Required.", path=True)
    key_password_file: str = setting(
        string_value, "",
        "A file whose first line is the password of an encrypted key (empty: the key is "
        "not encrypted).", path=True)
    server_name: tuple[str, ...] = setting(
        words, "",
        "Names (SNI) this certificate answers for; *.example.com matches one label. "
        "Required for [tls:NAME] sections other than the default.")
    protocols: tuple[str, ...] = setting(
        tls_protocols, "TLSv1.2 TLSv1.3",
        "TLS versions offered: TLSv1.2 and/or TLSv1.3 (older ones are never offered).")
    ciphers: str = setting(
        cipher_list, INTERMEDIATE_CIPHERS,
        "OpenSSL cipher list for TLS 1.2 (default: Mozilla intermediate, forward-secret "
        "AEAD suites only); TLS 1.3 suites are OpenSSL's defaults.")
    session_tickets: bool = setting(
        boolean, "on",
        "Offer session tickets, so returning clients resume without a full handshake.")


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration: one typed attribute per section.

    `source` is the file it came from, `server_root` the directory relative paths were
    normalised against, and `raw` the text each value came from, keyed by (section, key),
    so that a reload can tell what changed in the words the operator wrote.
    """

    source: str
    server_root: Path
    raw: Mapping[tuple[str, str], str]
    server: ServerSettings
    workers: WorkersSettings
    http: HttpSettings
    static: StaticSettings
    uploads: UploadsSettings
    auth: AuthSettings
    status: StatusSettings
    logging: LoggingSettings
    apps: tuple[AppSettings, ...] = ()  # [app] / [app:NAME] sections, in file order
    tls: tuple[TLSSettings, ...] = ()  # [tls] / [tls:NAME] sections, in file order
    # Where each given value was written, (section, key) -> (file, line) — ("--set", None)
    # for an override — and each section's header under (section, ""): checks made after
    # loading (the files a setting names, an application that does not import) report
    # file and line too.
    origins: Mapping[tuple[str, str], tuple[str, int | None]] = field(default_factory=dict)
    # What is actually served when it is not [server] listen: the sockets systemd passed
    # (socket activation), as the master found them (getsockname; a Unix socket, reachable
    # from this machine only, is left out). None: [server] listen is what is served. Never
    # read from the file: the master sets it (Master.as_served), configtest cannot.
    served: tuple[ListenAddress, ...] | None = None

    def where(self, section: str, key: str) -> tuple[str, int | None]:
        """(file, line) of the value of `key` in `section`: its own line, else (left at its
        default) the section's header line, else the file alone."""
        return (self.origins.get((section, key)) or self.origins.get((section, ""))
                or (self.source, None))

    @property
    def addresses(self) -> tuple[ListenAddress, ...]:
        """The addresses clients connect to: the passed sockets' under socket activation,
        else [server] listen. What may reach the server is judged on these."""
        return self.server.listen if self.served is None else self.served

    @property
    def loopback_only(self) -> bool:
        """Every address served is loopback: only this machine can connect (directly)."""
        return all(address.is_loopback for address in self.addresses)

    def exposed(self) -> str:
        """The addresses served beyond loopback, for a message ("" when there are none);
        under socket activation it says so, since [server] listen shows others."""
        shown = ", ".join(str(a) for a in self.addresses if not a.is_loopback)
        return f"{shown}, from systemd socket activation" \
            if shown and self.served is not None else shown

    @property
    def uploads_enabled(self) -> bool:
        """Whether uploads are on: [uploads] enabled resolved (auto: on only while every
        address served is loopback)."""
        enabled = self.uploads.enabled
        if enabled is Switch.AUTO:
            return self.loopback_only
        return enabled is Switch.ON

    def get(self, section: str, key: str) -> object:
        """Generic access by name, for code that walks the settings table (typed access is
        by attribute: `config.http.timeout`). Raises KeyError for an unknown name."""
        if key not in SECTION_KEYS.get(section, ()):
            raise KeyError((section, key))
        value: object = getattr(getattr(self, section), key)
        return value


# {section name: its dataclass}, in the order of the shipped file, and each section's keys.
SECTION_TYPES: dict[str, type[Section]] = sections_of(Config)
# Repeatable sections ([kind] or [kind:NAME], any number): kind -> its dataclass.
REPEATED_TYPES: dict[str, type[Section]] = {"app": AppSettings, "tls": TLSSettings}
SECTION_KEYS: dict[str, frozenset[str]] = {
    name: frozenset(row.key for row in settings_of(name, kind))
    for name, kind in (SECTION_TYPES | REPEATED_TYPES).items()
}
