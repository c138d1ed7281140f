"""The INI reader: the configuration file's text into raw values that remember file and line,
and `--set section.key=value` overrides into the same shape. No conversion happens here.

Grammar (a strict subset of what configparser reads, so that tests can cross-check with it):
blank lines and lines starting with # or ; are comments; `[kind]` or `[kind:name]` opens a
section; `key = value` (or `key: value`) sets a key, and ` # ...` / ` ; ...` after a value is
a comment. Names are case-insensitive. A key may be set once per section.

Sections come in two sorts, which `Known` tells apart: a plain section (`[server]`) appears
once in the configuration; a named one (`[app:blog]`, `[tls:main]`) may appear under many
names, each a section of its own, identified as "kind:name" wherever a section is named
(raw keys, error messages, `--set app:blog.mount=/blog`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefork.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RawValue:
    """A value's text and where it was given (line is None for --set and defaults)."""

    text: str
    file: str
    line: int | None


@dataclass(frozen=True, slots=True)
class Known:
    """The names the reader accepts: each section kind with its keys, and which kinds are
    repeatable: written [kind] for one, or [kind:NAME] any number of times."""

    keys: Mapping[str, Collection[str]]
    named: Collection[str] = ()

    def section(self, kind: str, name: str | None) -> str:
        """The section id for a header, or ValueError saying why it is not one."""
        if kind not in self.keys:
            shown = [f"{k}:NAME" if k in self.named else k for k in self.keys]
            header = f"{kind}:{name}" if name is not None else kind
            raise ValueError(f"unknown section [{header}] (known: {', '.join(shown)})")
        if kind not in self.named and name is not None:
            raise ValueError(f"section [{kind}] takes no name (found [{kind}:{name}])")
        return kind if name is None else f"{kind}:{name}"

    def has(self, section: str, key: str) -> bool:
        """True if `key` belongs in the section with this id ("kind" or "kind:name")."""
        kind, colon, name = section.partition(":")
        try:
            self.section(kind, name if colon else None)
        except ValueError:
            return False
        return key in self.keys[kind]


@dataclass(slots=True)
class IniText:
    """What a file said: raw values by (section id, key), and every section that appeared
    (a named section may have no keys and still exist) with the line of its first header."""

    values: dict[tuple[str, str], RawValue] = field(default_factory=dict)
    sections: dict[str, int] = field(default_factory=dict)


_NAME = r"[A-Za-z0-9_.-]+"
_SECTION_LINE = re.compile(rf"\[\s*({_NAME})(?:\s*:\s*({_NAME}))?\s*\]")
_KEY_LINE = re.compile(rf"({_NAME})\s*[=:]\s*(.*)")
_INLINE_COMMENT = re.compile(r"\s+[#;].*$")


def read_ini(path: Path, known: Known, lenient: bool = False) -> IniText:
    """Read an INI file, rejecting unknown names with file and line (or, when `lenient`,
    skipping what it cannot use: a bad line, or a whole unknown section)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("configuration file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file: {exc}", file=file) from None
    found = IniText()
    section: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            section = _read_line(line, number, file, section, known, found)
        except ConfigError:
            if not lenient:
                raise
            if _SECTION_LINE.fullmatch(line.strip()):
                section = None  # keys of an unknown section are skipped too
    return found


def _read_line(line: str, number: int, file: str, section: str | None, known: Known,
               found: IniText) -> str | None:
    """Take one line into `found`; returns the section in force after it."""
    stripped = line.strip()
    if not stripped or stripped[0] in "#;":
        return section
    if match := _SECTION_LINE.fullmatch(stripped):
        kind, name = match.group(1).lower(), match.group(2)
        try:
            opened = known.section(kind, name.lower() if name is not None else None)
        except ValueError as exc:
            raise ConfigError(str(exc), file=file, line=number,
                              key=kind if name is None else f"{kind}:{name.lower()}") from None
        found.sections.setdefault(opened, number)
        return opened
    match = _KEY_LINE.fullmatch(stripped)
    if not match:
        raise ConfigError(f"cannot parse line {stripped!r}; expected 'key = value'",
                          file=file, line=number)
    key, value = match.group(1).lower(), _INLINE_COMMENT.sub("", match.group(2))
    if section is None:
        raise ConfigError(f"'{key}' appears before any [section]", file=file, line=number,
                          key=key)
    if not known.has(section, key):
        raise ConfigError("unknown setting", file=file, line=number, key=f"{section}.{key}")
    if (section, key) in found.values:
        first = found.values[(section, key)].line
        raise ConfigError(f"set twice (first on line {first})", file=file, line=number,
                          key=f"{section}.{key}")
    found.values[(section, key)] = RawValue(value, file, number)
    return section


def parse_override(text: str, known: Known) -> tuple[tuple[str, str], RawValue]:
    """`section.key=value` (section may be kind:name) from `--set`, as a raw value."""
    name, sep, value = text.partition("=")
    section, dot, key = name.strip().lower().partition(".")
    if not sep or not dot:
        raise ConfigError(f"expected section.key=value, got {text!r}", file="--set")
    if not known.has(section, key):
        raise ConfigError("unknown setting", file="--set", key=f"{section}.{key}")
    return (section, key), RawValue(value.strip(), "--set", None)
