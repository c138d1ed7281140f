"""How a setting is declared, and the flat table derived from the declarations.

Each section of the configuration is a frozen dataclass (prefork.config.sections); each of its
fields is one setting, declared with `setting()`: the converter, the default as it is written
in the file, the help text and whether the value is a path travel in the field's metadata, and
the field's annotation is the converted value's type. `setting()` is typed so that mypy checks
the annotation against the converter's return type (`timeout: int = setting(seconds, ...)` is
an error: seconds returns float).

The reader, `--set`, `httpdctl configtest` and the shipped etc/httpd.ini work from a flat
table of `Setting` rows; `settings_of()` derives it from the dataclasses, so every setting is
declared exactly once.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TypeVar, cast

T = TypeVar("T")

_SPEC = "prefork.config.setting"  # the metadata key under which a field carries its Setting


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the derived table: where a setting lives and how its text becomes a value."""

    section: str
    key: str
    convert: Callable[[str], object]
    default: str  # written as it would appear in the file, and converted like any value
    help: str
    is_path: bool = False  # normalised against the server root after conversion


@dataclass(frozen=True, slots=True)
class _Spec:
    convert: Callable[[str], object]
    default: str
    help: str
    is_path: bool


def setting(convert: Callable[[str], T], default: str, help: str, *, path: bool = False) -> T:
    """Declare one setting as a dataclass field (no Python default: the loader always passes
    the converted value, the default text included).

    Returns the `dataclasses.field` typed as the converted value, so that the annotation of
    the field it is assigned to must agree with what `convert` returns.
    """
    return cast(T, field(metadata={_SPEC: _Spec(convert, default, help, path)}))


class Section:
    """Base of the section dataclasses: `sections_of()` finds a Config's sections by it."""

    __slots__ = ()


_HEADER = "prefork.config.header"  # metadata key of a repeatable section's name field


def header_name() -> str:
    """Declare the field of a repeatable section that holds the NAME of its [kind:NAME]
    header ("" for a bare [kind]); it is not a setting."""
    return cast(str, field(metadata={_HEADER: True}))


def sections_of(config_type: type) -> dict[str, type[Section]]:
    """{section name: its dataclass} for each field of `config_type` typed as a Section, in
    declaration order (the order of the shipped file)."""
    hints = typing.get_type_hints(config_type)
    found: dict[str, type[Section]] = {}
    for item in fields(config_type):
        hint = hints[item.name]
        if isinstance(hint, type) and issubclass(hint, Section):
            found[item.name] = hint
    return found


def settings_of(name: str, section_type: type[Section]) -> tuple[Setting, ...]:
    """The rows of one section, in field order. Every field must be declared with setting()."""
    if not is_dataclass(section_type):
        raise TypeError(f"{section_type.__name__} is not a dataclass")
    rows = []
    for item in fields(section_type):
        if item.metadata.get(_HEADER):
            continue
        spec = item.metadata.get(_SPEC)
        if not isinstance(spec, _Spec):
            raise TypeError(f"{section_type.__name__}.{item.name} is not declared with setting()")
        rows.append(Setting(name, item.name, spec.convert, spec.default, spec.help,
                            spec.is_path))
    return tuple(rows)


def build(kind: type[T], values: Mapping[str, object]) -> T:
    """Make a section (or the Config) from values keyed by field name.

    The one place where values typed `object` meet the typed fields: each setting's value was
    produced by the converter declared on its own field, which mypy checked against the
    field's annotation, and the dataclass's __init__ still refuses a missing or unknown name.
    """
    make = cast(Callable[..., T], kind)
    return make(**values)
