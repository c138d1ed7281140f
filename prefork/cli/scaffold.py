"""`httpdctl init`: lay out a new server root from what the installed package carries.

A wheel holds only the `prefork` package, so everything a new root needs travels inside it as
package data (`prefork/skeleton/`: the sample site and the httpd-client specs) or is rendered
from code (the configuration, from the one settings table; the logrotate snippet, from the
paths of this installation). In a checkout, the top-level `htdocs/` and `examples/` are links
to the same skeleton, so a checkout and an `init`-made root serve the same site.

Nothing is ever overwritten: if any file `init` would write exists, it writes nothing.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from prefork.config.settings import render_default_ini
from prefork.errors import ConfigError

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11 on

CONFIG_PATH = Path("etc") / "httpd.ini"
LOGROTATE_PATH = Path("etc") / "logrotate.d" / "prefork"
EMPTY_DIRS = (Path("var") / "log", Path("var") / "run")
SKELETON_TREES = ("htdocs", "examples")  # directories copied whole from prefork/skeleton/
# Never copied: what a checkout's server stored, hidden files, and the byte code pip writes
# next to examples/app.py when it installs the wheel (it belongs to that interpreter).
SKIPPED_NAMES = frozenset({"uploads", "__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Plan:
    """What `init` writes below `root`: files with their bytes, and empty directories."""

    root: Path
    files: dict[Path, bytes]
    dirs: tuple[Path, ...]

    def conflicts(self) -> list[Path]:
        return sorted(path for path in self.files if (self.root / path).exists())


def httpdctl_command(config: Path) -> str:
    """How to run this installation's httpdctl on `config`: its interpreter, so a unit file
    or a cron line never depends on PATH or on which virtual environment is active."""
    return f"{shlex.quote(sys.executable)} -m prefork -f {shlex.quote(str(config))}"


def logrotate_snippet(root: Path) -> str:
    """logrotate(8) configuration for the logs of `root` (see docs and etc/logrotate.d/)."""
    logs = root / "var" / "log"
    command = httpdctl_command(root / CONFIG_PATH)
    return (
        "# logrotate(8) configuration for prefork, written by `httpdctl init`.\n"
        "# Install: cp etc/logrotate.d/prefork /etc/logrotate.d/prefork\n"
        "# `httpdctl reopen-logs` returns once the master and every worker reopened their\n"
        "# files (and fails, naming the worker, if one could not), so compressing the\n"
        "# rotated file right after is safe.\n"
        f"{logs / 'access.log'} {logs / 'error.log'} {{\n"
        "    daily\n"
        "    rotate 14\n"
        "    missingok\n"
        "    notifempty\n"
        "    compress\n"
        "    sharedscripts\n"
        "    postrotate\n"
        f"        {command} reopen-logs >/dev/null\n"
        "    endscript\n"
        "}\n")


def _skeleton_files() -> dict[Path, bytes]:
    files: dict[Path, bytes] = {}
    skeleton = resources.files("prefork") / "skeleton"

    def walk(node: Traversable, relative: Path) -> None:
        for child in node.iterdir():
            name = child.name
            if name in SKIPPED_NAMES or name.startswith(".") or name.endswith(SKIPPED_SUFFIXES):
                continue
            if child.is_dir():
                walk(child, relative / child.name)
            else:
                files[relative / child.name] = child.read_bytes()

    for tree in SKELETON_TREES:
        walk(skeleton / tree, Path(tree))
    return files


def plan(root: Path) -> Plan:
    root = root.resolve()
    files = _skeleton_files()
    files[CONFIG_PATH] = render_default_ini().encode()
    files[LOGROTATE_PATH] = logrotate_snippet(root).encode()
    return Plan(root, files, EMPTY_DIRS)


def init_root(root: Path) -> Plan:
    """Write a new server root at `root` (created if missing). Raises ConfigError, writing
    nothing, if a file it would write exists already."""
    layout = plan(root)
    taken = layout.conflicts()
    if taken:
        shown = ", ".join(str(path) for path in taken[:3])
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise ConfigError(f"{layout.root}: refusing to overwrite {shown}{more}; "
                          f"choose an empty directory")
    written: list[Path] = []
    try:
        for relative in layout.dirs:
            (layout.root / relative).mkdir(parents=True, exist_ok=True)
        for relative, data in sorted(layout.files.items()):
            target = layout.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:  # "x": never replace a file created meanwhile
                written.append(target)
                out.write(data)
    except OSError as exc:
        for path in written:  # leave no half-made root behind
            path.unlink(missing_ok=True)
        raise ConfigError(f"{layout.root}: cannot lay out a server root: {exc}") from None
    return layout


def next_steps(layout: Plan) -> str:
    root = shlex.quote(str(layout.root))
    return (f"A server root is ready in {layout.root}. Next:\n"
            f"  cd {root}\n"
            f"  httpdctl start        # serves htdocs/ on the [server] listen address\n"
            f"  curl -i http://127.0.0.1:8080/\n"
            f"Stop it with `httpdctl stop`; settings are in {CONFIG_PATH}.\n")


def missing_config_hint() -> str:
    """One sentence for `start` without a configuration: how to get one."""
    return ("run `httpdctl init DIR` to lay out a server root (configuration, site, logs), "
            "then start from DIR, or name a file with -f / $HTTPD_CONF")

