"""Configuration loading: the settings table derived from the typed sections, the loader
(file + `--set` overrides, lenient or strict), the cross-setting checks, and the default
configuration file generated from the table.

Every setting is declared once, as a field of its section's dataclass in
prefork.config.sections; SETTINGS, the reader's known names, `httpdctl configtest` and the
shipped etc/httpd.ini (tests check that file against this table) are derived from there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prefork.config.ini import Known, RawValue, parse_override, read_ini
from prefork.config.schema import Setting, build, settings_of
from prefork.config.sections import (
    REPEATED_TYPES,
    SECTION_KEYS,
    SECTION_TYPES,
    Config,
    TLSSettings,
)
from prefork.config.values import (
    ACCESS_FORMAT_DIRECTIVE,
    COMBINED_FORMAT,
    LOG_LEVELS,
    MAX_PROCESSES,
    MAX_THREAD_SLOTS,
    ListenAddress,
    parse_listen,
)
from prefork.errors import ConfigError

# Names other modules import from here.
__all__ = [
    "ACCESS_FORMAT_DIRECTIVE", "COMBINED_FORMAT", "LOG_LEVELS", "MAX_PROCESSES",
    "MAX_THREAD_SLOTS", "SECTIONS", "SETTINGS", "SETTINGS_BY_NAME", "Config", "ListenAddress",
    "Setting", "config_file", "load_config", "parse_listen", "render_default_ini",
    "server_root_for",
]

DEFAULT_CONFIG = "etc/httpd.ini"  # relative to the current directory, unless $HTTPD_CONF
CONFIG_ENV = "HTTPD_CONF"


# ------------------------------------------------------------------ the table, derived

SETTINGS: tuple[Setting, ...] = tuple(
    row for name, kind in SECTION_TYPES.items() for row in settings_of(name, kind))
SETTINGS_BY_NAME: dict[tuple[str, str], Setting] = {(s.section, s.key): s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(SECTION_TYPES)
_KNOWN = Known(SECTION_KEYS, named=tuple(REPEATED_TYPES))
# The rows of each repeatable kind, keyed by kind (their section ids are kind or kind:NAME).
REPEATED_SETTINGS: dict[str, tuple[Setting, ...]] = {
    kind: settings_of(kind, section_type) for kind, section_type in REPEATED_TYPES.items()}


# ------------------------------------------------------------------ loading

def server_root_for(config_path: Path) -> Path:
    """The directory above the config file's etc/ (or the config file's own directory)."""
    parent = config_path.resolve().parent
    return parent.parent if parent.name == "etc" else parent


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
    text = read_ini(config_path, _KNOWN, lenient)
    raw = text.values
    for item in overrides:
        try:
            name, override = parse_override(item, _KNOWN)
        except ConfigError:
            if lenient:
                continue
            raise
        raw[name] = override
    root = server_root_for(config_path)
    values: dict[str, dict[str, object]] = {section: {} for section in SECTIONS}
    texts: dict[tuple[str, str], str] = {}
    for setting in SETTINGS:
        given = raw.get((setting.section, setting.key))
        text_value, value = _convert(setting, given, lenient)
        values[setting.section][setting.key] = _normalise(setting, value, root)
        texts[(setting.section, setting.key)] = text_value
    sections = {name: build(kind, values[name]) for name, kind in SECTION_TYPES.items()}
    # Repeatable sections, in the order they first appear ([app], [app:blog]...; a --set
    # may name one the file does not have).
    found = dict(text.sections)
    for section_id, _key in raw:
        found.setdefault(section_id, 0)
    repeated: dict[str, list[object]] = {kind: [] for kind in REPEATED_TYPES}
    for section_id in found:
        kind, _, section_name = section_id.partition(":")
        if kind not in REPEATED_TYPES:
            continue
        fields: dict[str, object] = {"name": section_name}
        for row in REPEATED_SETTINGS[kind]:
            given = raw.get((section_id, row.key))
            where = Setting(section_id, row.key, row.convert, row.default, row.help, row.is_path)
            text_value, value = _convert(where, given, lenient)
            fields[row.key] = _normalise(row, value, root)
            texts[(section_id, row.key)] = text_value
        repeated[kind].append(build(REPEATED_TYPES[kind], fields))
    config = build(Config, {"source": str(config_path.resolve()), "server_root": root,
                            "raw": texts, **sections,
                            "apps": tuple(repeated["app"]), "tls": tuple(repeated["tls"]),
                            "origins": _origins_of(raw, found, str(config_path.resolve()))})
    if not lenient:
        _check_consistency(config, raw)
    return config


def _origins_of(raw: Mapping[tuple[str, str], RawValue], headers: Mapping[str, int],
                source: str) -> dict[tuple[str, str], tuple[str, int | None]]:
    """(section, key) -> (file, line) of each given value ("--set", None for an override);
    (section, "") -> the file and line of each section's header."""
    origins: dict[tuple[str, str], tuple[str, int | None]] = {
        (section, ""): (source, line) for section, line in headers.items() if line}
    origins.update({name: (source if value.line is not None else value.file, value.line)
                    for name, value in raw.items()})
    return origins


def _normalise(setting: Setting, value: object, root: Path) -> object:
    """A path setting's value against the server root: normalised, not resolved (a
    document_root that is a symbolic link switched between releases must stay that link)."""
    if not setting.is_path:
        return value
    if isinstance(value, tuple):
        return tuple(_normalise(setting, item, root) for item in value)
    if isinstance(value, str) and value not in ("", "off") and not os.path.isabs(value):
        return os.path.normpath(root / value)
    return value


def _convert(setting: Setting, given: RawValue | None, lenient: bool) -> tuple[str, object]:
    """(text, value) of one setting: the given text converted, or the default's."""
    text = given.text if given else setting.default
    try:
        return text, setting.convert(text)
    except ValueError as exc:
        if lenient:
            return setting.default, setting.convert(setting.default)
        where = given or RawValue(text, "<default>", None)
        raise ConfigError(str(exc), file=where.file, line=where.line,
                          key=f"{setting.section}.{setting.key}") from None


def _check_consistency(config: Config, raw: Mapping[tuple[str, str], RawValue]) -> None:
    """Cross-setting checks that a single converter cannot make. A key the file does not
    set is blamed on its section's header line, when the section has one (Config.where)."""
    def fail(section: str, key: str, message: str) -> None:
        file, line = config.where(section, key)
        raise ConfigError(message, file=file, line=line, key=f"{section}.{key}")

    root = config.server.document_root
    if not os.path.isdir(root):
        fail("server", "document_root", f"not a directory: {root}")
    workers = config.workers
    app_threads = sum(app.threads for app in config.apps)
    if workers.threads + workers.blocking_threads + app_threads > MAX_THREAD_SLOTS:
        # Each thread has its own scoreboard slot (status, watchdog); none may share one.
        key = "blocking_threads" if ("workers", "blocking_threads") in raw else "threads"
        apps = f" + the applications' threads ({app_threads})" if app_threads else ""
        fail("workers", key, f"threads ({workers.threads}) + blocking_threads "
                             f"({workers.blocking_threads}){apps} exceeds the "
                             f"{MAX_THREAD_SLOTS} scoreboard slots a worker has")
    mounts = {config.static.mount: "[static] mount"}
    for app in config.apps:
        section = f"app:{app.name}" if app.name else "app"
        if not app.module:
            fail(section, "module", "required: the WSGI callable, as package.module:callable")
        if app.mount in mounts:
            fail(section, "mount", f"{app.mount} is taken by {mounts[app.mount]} (set "
                                   f"[static] mount = /static when an application owns /)")
        mounts[app.mount] = f"[{section}]"
    _check_tls(config, fail)


def default_tls(config: Config) -> TLSSettings | None:
    """The certificate offered when no server_name matches: the bare [tls], else the first."""
    return next((tls for tls in config.tls if not tls.name), config.tls[0] if config.tls
                else None)


def _check_tls(config: Config, fail: Callable[[str, str, str], None]) -> None:
    """What the [tls] sections must say; the files they name are checked when the contexts
    are built (prefork.serve.tls_context, at configtest, start and reload)."""
    tls_listeners = [str(a) for a in config.server.listen if a.tls]
    if tls_listeners and not config.tls:
        fail("server", "listen", f"{', '.join(tls_listeners)} is marked ssl but there is no "
                                 f"[tls] section with a certificate and its key")
    if not tls_listeners:
        # Both would be silently useless: nothing to redirect to, nothing to send it over.
        if config.server.https_redirect:
            fail("server", "https_redirect", "is on but no [server] listen address is "
                                             "marked ssl: there is no https to redirect to")
        if config.server.hsts:
            fail("server", "hsts", "is sent only over TLS, and no [server] listen address "
                                   "is marked ssl")
    names: dict[str, str] = {}
    default = default_tls(config)
    for tls in config.tls:
        section = f"tls:{tls.name}" if tls.name else "tls"
        if not tls.certificate:
            fail(section, "certificate", "required: the certificate chain (PEM)")
        if not tls.certificate_key:
            fail(section, "certificate_key", "required: the certificate's private key (PEM)")
        if tls is not default and not tls.server_name:
            fail(section, "server_name", "required: the names (SNI) this certificate is for")
        for name in tls.server_name:
            lowered = name.lower()
            if lowered in names:
                fail(section, "server_name", f"{name} is already served by [{names[lowered]}]")
            names[lowered] = section


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
    lines += ["# Applications: an [app] section, or several [app:NAME] sections, each a WSGI",
              "# application served by every worker at its mount (docs/apps.md). For example:",
              "#", "# [app:blog]"]
    rows = REPEATED_SETTINGS["app"]
    examples = {"mount": "/blog", "module": "blog.wsgi:application", "path": "apps/blog",
                "env": "DJANGO_SETTINGS_MODULE=blog.settings"}
    lines += [f"# {row.key} = {examples.get(row.key, row.default)}" for row in rows]
    lines.append("#")
    lines += [f"# {row.key}: {row.help}" for row in rows]
    lines.append("")
    lines += ["# TLS: listen = 0.0.0.0:8443 ssl marks a TLS listener; a [tls] section holds the",
              "# default certificate, [tls:NAME] sections others chosen by SNI (docs/tls.md):",
              "#", "# [tls]"]
    rows = REPEATED_SETTINGS["tls"]
    examples = {"certificate": "etc/tls/fullchain.pem", "certificate_key": "etc/tls/privkey.pem"}
    lines += [f"# {row.key} = {examples.get(row.key, row.default)}".rstrip() for row in rows]
    lines.append("#")
    lines += [f"# {row.key}: {row.help}" for row in rows]
    lines.append("")
    return "\n".join(lines)
