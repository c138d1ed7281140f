"""Checking that the configured applications import, before they are served: in a child
process (`configtest`, `start`, `reload` and the master's SIGHUP reload call it through
site/hooks.py), so a syntax error, a missing module or a missing callable is refused with
`file:line: app:NAME.module: reason` instead of workers that fail to boot.

How this works: the child is this interpreter (`sys.executable -c`), given this process's
sys.path (a worker is forked from the master, so it has the same one), and imports the
applications the way a worker's `load_apps` does: in file order, each one's `path` in front
of sys.path and its `env` in os.environ first. It reports on its own copy of stdout, one JSON
object a line (`{"start": i}` before each import, then `{"failed": i, "reason": ...}` or
`{"ok": true}`); what the application prints while importing goes to stderr and is kept for
when the child dies without a word. Started as root with `[server] user`, the child runs as
that user, as the workers will: application code never runs with more privileges here than
it will be served with; when that user cannot run the interpreter, or reach the standard
library or prefork (a pyenv build under a 0700 /root), the refusal names the user, the path
and the directory in the way (key server.user), not a bare "Permission denied".
`boot_timeout` bounds the import, as it bounds a worker's boot.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefork.config.settings import Config
from prefork.errors import ConfigError

_CHILD = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
          "from prefork.site.appcheck import child_main; child_main()")
_OWN_FILES = ("prefork/site/appcheck.py", "prefork/site/apps.py", "<frozen ")


def check_apps(config: Config) -> None:
    """Import every configured application in a child process; raise ConfigError naming
    the failing section's `module` key (file and line) and the reason."""
    if not config.apps:
        return
    apps = [{"module": app.module, "path": list(app.path), "env": dict(app.env)}
            for app in config.apps]
    timeout = config.workers.boot_timeout
    user = _workers_user(config)
    run_as: dict[str, Any] = {} if user is None else {
        "user": user.uid, "group": user.gid, "extra_groups": []}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(sys.path)], input=json.dumps(apps),
            capture_output=True, text=True, timeout=timeout, **run_as)
        stdout, stderr, status = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        stdout, stderr, status = _text(exc.stdout), _text(exc.stderr), None
    except OSError as exc:  # cannot start the interpreter: nothing to say about the apps
        if user is not None and exc.errno in (errno.EACCES, errno.EPERM):
            _refuse_unreachable(config, user)
        raise ConfigError(f"cannot start {sys.executable} to check the applications: "
                          f"{exc.strerror or exc}", file=config.source) from None
    reports = [_parse(line) for line in stdout.splitlines()]
    if any(report.get("ok") for report in reports):
        return
    started = [report["start"] for report in reports if "start" in report]
    if not started and status is not None and user is not None:
        # The child died before it reached our code: as that user, Python or prefork
        # itself may be out of reach (a pyenv build under /root, a checkout in a home).
        _refuse_unreachable(config, user)
    index = started[-1] if started else 0
    failed = [report for report in reports if "failed" in report]
    if failed:
        reason = str(failed[-1].get("reason"))
    elif status is None:
        reason = f"the import did not finish within boot_timeout ({timeout:g}s)"
    else:
        last = [line for line in stderr.splitlines() if line.strip()]
        reason = (f"the import ended the process (status {status})"
                  + (f": {last[-1].strip()}" if last else ""))
    app = config.apps[index]
    section = f"app:{app.name}" if app.name else "app"
    file, line = config.where(section, "module")
    raise ConfigError(f"cannot import {app.module}: {reason}", file=file, line=line,
                      key=f"{section}.module")


@dataclass(frozen=True)
class _User:
    """The workers' user, as the check's child runs: that uid and one group, no others."""

    name: str
    uid: int
    gid: int


def _workers_user(config: Config) -> _User | None:
    """The user the child runs as: [server] user when we are root, else None (ourselves)."""
    user = config.server.user
    if os.geteuid() != 0 or not user:
        return None
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        group = config.server.group
        gid = entry.pw_gid if not group else int(group) if group.isdigit() \
            else grp.getgrnam(group).gr_gid
    except KeyError:
        return None  # unknown user or group: configtest warns, workers could not start
    return _User(entry.pw_name, entry.pw_uid, gid)


def _refuse_unreachable(config: Config, user: _User) -> None:
    """Raise the one-line ConfigError (key server.user) naming what `user` cannot reach of
    what the check's child needs — the interpreter, its standard library, prefork itself —
    and what to do. Returns when all of it looks reachable (the caller reports as before)."""
    needed = ((sys.executable, _EXECUTE, "execute", "Python"),
              (os.path.dirname(os.__file__), _READ | _EXECUTE, "read", "Python"),  # stdlib
              (str(Path(__file__).resolve().parents[1]), _READ | _EXECUTE, "read", "prefork"))
    for path, bits, verb, what in needed:
        why = _blocked(path, user, bits)
        if why is None:
            continue
        file, line = config.where("server", "user")
        raise ConfigError(
            f"user {user.name} cannot {verb} {path} ({why}), and the applications are "
            f"checked as that user: install {what} where {user.name} can read it, or run "
            f"without [server] user", file=file, line=line, key="server.user")


_READ, _EXECUTE = 4, 1  # the "other" permission bits; shifted for group and owner


def _blocked(path: str, user: _User, bits: int) -> str | None:
    """Why `user` cannot use `path` by its mode bits (ACLs aside): the first directory on the
    way there it cannot search — along the name as given, then where its links lead — or
    the file itself; None when nothing is in the way."""
    real = os.path.realpath(path)
    for target in dict.fromkeys((os.path.abspath(path), real)):
        for directory in reversed(Path(target).parents):
            if not _may(str(directory), user, _EXECUTE):
                leads = f"{path} leads to {real}; " if target != os.path.abspath(path) else ""
                return f"{leads}{directory} is not searchable by {user.name}"
    if not _may(real, user, bits):
        return f"{real} is not {'executable' if bits == _EXECUTE else 'readable'} by " \
               f"{user.name}"
    return None


def _may(path: str, user: _User, bits: int) -> bool:
    if user.uid == 0:
        return True
    try:
        info = os.stat(path)
    except OSError:
        return True  # not ours to judge: the caller's own error says what happened
    shift = 6 if info.st_uid == user.uid else 3 if info.st_gid == user.gid else 0
    return info.st_mode & (bits << shift) == bits << shift


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _parse(line: str) -> dict[str, Any]:
    try:
        report = json.loads(line)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


# ------------------------------------------------------------------ in the child

def child_main() -> None:
    """The child: import each application read from stdin; report on the original stdout."""
    from prefork.site.apps import load_application

    apps = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the application's prints go to stderr, not into the report

    def emit(report: dict[str, Any]) -> None:
        out.write(json.dumps(report) + "\n")
        out.flush()

    for index, app in enumerate(apps):
        emit({"start": index})
        # As load_apps does in a worker: path in front of sys.path, env into os.environ.
        for directory in reversed(app["path"]):
            if directory not in sys.path:
                sys.path.insert(0, directory)
        os.environ.update(app["env"])
        spec: str = app["module"]
        module_name, _, attribute = spec.partition(":")
        try:
            __import__(module_name)
        except BaseException as exc:
            emit({"failed": index, "reason": describe(exc)})
            os._exit(1)
        try:
            load_application(spec)
        except BaseException as exc:
            reason = describe(exc)
            if isinstance(exc, AttributeError):
                reason = (f"module {module_name} has no {attribute or 'application'} "
                          f"(the WSGI callable): {exc}")
            emit({"failed": index, "reason": reason})
            os._exit(1)
    emit({"ok": True})
    os._exit(0)  # no atexit handlers of the applications: they were only imported


def describe(exc: BaseException) -> str:
    """One line: the exception and where the application raised it."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}: " if exc.filename else ""
        return f"{where}{type(exc).__name__}: {exc.msg}"
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not any(own in frame.filename for own in _OWN_FILES)]
    if frames:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return text
