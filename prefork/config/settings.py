"""Configuration loading: the settings table derived from the typed sections, the loader
(file + `--set` overrides, lenient or strict), the cross-setting checks, and the default
configuration file generated from the table.

Every setting is declared once, as a field of its section's dataclass in
prefork.config.sections; SETTINGS, the reader's known names, `httpdctl configtest` and the
shipped etc/httpd.ini (tests check that file against this table) are derived from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from prefork.config.ini import Known, RawValue, parse_override, read_ini
from prefork.config.schema import Setting, build, settings_of
from prefork.config.sections import SECTION_KEYS, SECTION_TYPES, Config
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
_KNOWN = Known(SECTION_KEYS)


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
    raw = read_ini(config_path, _KNOWN, lenient).values
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
        text, value = _convert(setting, given, lenient)
        if setting.is_path and isinstance(value, str) and value not in ("", "off"):
            # Normalised, not resolved: a document_root that is a symbolic link switched
            # between releases must stay that link.
            value = os.path.normpath(root / value) if not os.path.isabs(value) else value
        values[setting.section][setting.key] = value
        texts[(setting.section, setting.key)] = text
    sections = {name: build(kind, values[name]) for name, kind in SECTION_TYPES.items()}
    config = build(Config, {"source": str(config_path.resolve()), "server_root": root,
                            "raw": texts, **sections})
    if not lenient:
        _check_consistency(config, raw)
    return config


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
