"""configtest and start import the applications in a child process first: a broken app is
refused with `file:line: app:NAME.module: reason`, one line, before anything starts."""

from __future__ import annotations

import os
import re
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerFactory, write_config

GOOD = 'def app(environ, start_response):\n    start_response("200 OK", [])\n    return [b"ok"]\n'

BROKEN = {
    "syntax": ("def application(environ, start_response:\n    pass\n",
               r"broken\.py:1: SyntaxError: "),
    "missing-module": (None, r"ModuleNotFoundError: No module named 'broken'"),
    "missing-dependency": ("import no_such_dependency_xyz\n",
                           r"No module named 'no_such_dependency_xyz' \(at \S+broken\.py:1\)"),
    "missing-callable": ("x = 1\n", r"module broken has no application \(the WSGI callable\)"),
    "not-callable": ("application = 42\n", r"TypeError: broken is not callable"),
    "raises": ('raise RuntimeError("database down")\n',
               r"RuntimeError: database down \(at \S+broken\.py:1\)"),
}


def app_settings(root: Path, broken: str | None) -> dict[str, dict[str, str]]:
    apps = root / "apps"
    apps.mkdir(exist_ok=True)
    (apps / "good.py").write_text(GOOD)
    if broken is not None:
        (apps / "broken.py").write_text(broken)
    return {"static": {"mount": "/static"}, "uploads": {"enabled": "off"},
            "app": {"module": "good:app", "path": "apps"},
            "app:shop": {"mount": "/shop", "module": "broken", "path": "apps"}}


def module_line(config: Path) -> int:
    """The line of the [app:shop] section's module key in the written file."""
    lines = config.read_text().splitlines()
    header = lines.index("[app:shop]")
    return next(n for n, line in enumerate(lines, start=1)
                if n > header and line.startswith("module ="))


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_configtest_refuses_an_app_that_does_not_import(server_factory: ServerFactory,
                                                        case: str) -> None:
    server = server_factory(start=False)
    source, reason = BROKEN[case]
    write_config(server.root, app_settings(server.root, source))
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"httpdctl: {server.config.resolve()}:{module_line(server.config)}: " \
             f"app:shop.module: cannot import broken: "
    assert lines[0].startswith(prefix), (lines[0], prefix)
    assert re.search(reason, lines[0]), lines[0]


def test_start_refuses_a_broken_app_before_starting(server_factory: ServerFactory) -> None:
    server = server_factory(start=False)
    write_config(server.root, app_settings(server.root, "x = 1\n"))
    result = server.ctl("start", check=False)
    assert result.returncode == 1
    assert "app:shop.module: cannot import broken: module broken has no application" \
        in result.stderr
    assert not (server.root / "var" / "run" / "httpd.pid").exists()


def test_an_override_is_named_as_such(server_factory: ServerFactory) -> None:
    server = server_factory(start=False)
    write_config(server.root, app_settings(server.root, GOOD))
    assert server.ctl("configtest", check=False).returncode == 1  # broken:application
    result = server.ctl("--set", "app:shop.module=good:app", "configtest")
    assert "Syntax OK" in result.stdout
    result = server.ctl("--set", "app:shop.module=nowhere:app", "configtest", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("httpdctl: --set: app:shop.module: cannot import "
                                    "nowhere:app: ModuleNotFoundError"), result.stderr


def test_what_the_app_prints_while_importing_is_not_the_report(
        server_factory: ServerFactory) -> None:
    server = server_factory(start=False)
    write_config(server.root, app_settings(
        server.root, 'print("{\\"ok\\": true}")\nimport os\nos._exit(3)\n'))
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1
    assert "cannot import broken: the import ended the process (status 3)" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the check runs as [server] user "
                    "only when started as root")
def test_an_interpreter_the_user_cannot_execute_is_named_with_the_user(
        server_factory: ServerFactory) -> None:
    """Started as root with [server] user, the check runs the interpreter as that user: one
    it cannot reach (here behind a 0700 directory, in a directory anyone may search) is
    named, with the user, the directory in the way and what to do — not a bare
    "Permission denied"."""
    base = Path(tempfile.mkdtemp(prefix="prefork-exec-"))
    base.chmod(0o755)
    private = base / "private"
    private.mkdir(mode=0o700)
    python = private / "python"
    python.symlink_to(sys.executable)
    try:
        _check_unreachable_interpreter(server_factory, python)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_unreachable_interpreter(server_factory: ServerFactory, python: Path) -> None:
    server = server_factory(start=False)
    server.launcher = [str(python), str(REPO / "bin" / "httpdctl")]
    server.env = {"PYTHONPATH": sysconfig.get_paths()["purelib"]}
    settings = app_settings(server.root, GOOD.replace("def app", "def application"))
    settings["server"] = {"listen": "127.0.0.1:0", "server_name": "localhost",
                          "user": "nobody"}
    write_config(server.root, settings)
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "server.user: " in lines[0], lines[0]
    assert f"user nobody cannot execute {python}" in lines[0], lines[0]
    assert f"{python.parent} is not searchable by nobody" in lines[0], lines[0]
    assert "install Python where nobody can read it, or run without [server] user" \
        in lines[0], lines[0]
