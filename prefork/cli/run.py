"""`httpdctl run MODULE:CALLABLE`: serve one WSGI application in the foreground, without a
configuration file (gunicorn's one-liner, for development and for trying prefork out).

How this works: the configuration is the settings' defaults plus the options, loaded the
way `start` loads a file, so every value is checked by the same converters and an app that
does not import is refused the same way (site/appcheck.py). `run` writes a small fixed
httpd.ini into a private runtime directory (tempfile.mkdtemp) and passes the options as
`--set` overrides of it: the server root is that directory, so the PID file, scoreboard,
state file and error log live there and are removed at exit, and a reload (SIGHUP) reads the
same file and overrides again, importing the application anew. Nothing is written in the
current directory. The error log mirrors to stderr (the foreground's rule) and the access
log goes to /dev/stderr, as gunicorn's `--access-logfile -`.

The application owns `/`. Without `--static`, no file is served: the document root is an
empty directory of the runtime directory, mounted at NO_STATIC_MOUNT, a dot-segment no
application routes (the mount table needs a document root somewhere; a mount at /static
would take /static/ away from the application, which frameworks often serve themselves in
development). Uploads (POST /upload, /uploads/) are off, so those paths are the app's too,
and any Host is accepted (server_name = *), as gunicorn does; an application that cares
checks it itself (Django's ALLOWED_HOSTS). The current directory, and each --pythonpath,
goes in front of sys.path, as gunicorn does, so `run myproject.wsgi:application` works from
the project's directory; workers are forked from this process and inherit it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import click

from prefork.cli.main import Context, fail
from prefork.config.settings import Config, load_config
from prefork.errors import ConfigError, ControlError, StartupError

NO_STATIC_MOUNT = "/.prefork-no-static"
DEFAULT_LISTEN = "127.0.0.1:8000"  # gunicorn's default bind
STDERR = "/dev/stderr"

RUN_INI = """\
# Written by `httpdctl run` for one foreground run; removed when it exits. The command's
# options are --set overrides of this file.
[server]
server_name = *
[workers]
processes = 1
[uploads]
enabled = off
[static]
mount = {static_mount}
[logging]
access_log = {access_log}
"""

# Which option gave a setting, for messages about a bad value.
OPTION_OF = {"server.listen": "--listen", "workers.processes": "--processes",
             "app.threads": "--threads", "app.module": "MODULE", "app.env": "--env",
             "static.mount": "--static", "server.document_root": "--static"}


@click.command()
@click.argument("module", metavar="MODULE:CALLABLE")
@click.option("-b", "--listen", "--bind", "listen", default=DEFAULT_LISTEN,
              show_default=True, metavar="HOST:PORT",
              help="Address to listen on (port 0: any free port, reported on stderr).")
@click.option("-w", "--processes", "--workers", "processes", default="1", show_default=True,
              metavar="N", help="Worker processes (a number, or auto: one per CPU).")
@click.option("--threads", default=None, metavar="N",
              help="Threads per worker running the application (default: [app] threads).")
@click.option("--static", "static", default=None, metavar="PREFIX=DIR",
              help="Serve the files of DIR at URL PREFIX beside the application "
                   "(e.g. /static=./public).")
@click.option("--chdir", default=None, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="Change to DIR before importing the application.")
@click.option("--pythonpath", multiple=True, metavar="DIR",
              help="Put DIR in front of sys.path too (repeatable).")
@click.option("-e", "--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Environment variable for the application (repeatable).")
@click.pass_obj
def run(ctx: Context, module: str, listen: str, processes: str, threads: str | None,
        static: str | None, chdir: str | None, pythonpath: tuple[str, ...],
        env: tuple[str, ...]) -> None:
    """Serve one WSGI application in the foreground, without a configuration file
    (Ctrl-C stops). MODULE:CALLABLE as gunicorn's APP_MODULE, e.g. myproject.wsgi:application.
    Any setting can still be given with the global --set, e.g.
    `httpdctl --set http.timeout=120 run app:app`."""
    if ctx.config_path is not None:
        fail("run takes no configuration file (-f): it builds its own from its options; "
             "`httpdctl -f FILE start --foreground` serves a configured site")
    if chdir is not None:
        os.chdir(chdir)
    for directory in (*reversed(pythonpath), os.getcwd()):
        path = os.path.abspath(directory)
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    overrides = [f"app.module={module}", f"server.listen={listen}",
                 f"workers.processes={processes}"]
    if threads is not None:
        overrides.append(f"app.threads={threads}")
    if env:
        overrides.append(f"app.env={' '.join(env)}")
    static_mount = NO_STATIC_MOUNT
    if static is not None:
        prefix, sep, directory = static.partition("=")
        if not sep or not prefix or not directory:
            fail(f"--static: expected PREFIX=DIR, e.g. /static=./public, got {static!r}")
        if prefix.strip().rstrip("/") == "":
            fail("--static: the application owns /: serve the files at a prefix, "
                 "e.g. --static /static=DIR")
        static_mount = prefix.strip()
        overrides.append(f"server.document_root={os.path.abspath(directory)}")
    runtime = Path(tempfile.mkdtemp(prefix="prefork-run-"))
    owner = os.getpid()
    try:
        config, path, all_overrides = _configure(ctx, runtime, static_mount, overrides)
        _serve(config, path, all_overrides, module)
    except KeyboardInterrupt:  # Ctrl-C before the master took SIGINT over
        sys.exit(130)
    finally:
        if os.getpid() == owner:  # never in a worker (they leave by os._exit anyway)
            shutil.rmtree(runtime, ignore_errors=True)


def _configure(ctx: Context, runtime: Path, static_mount: str, overrides: list[str]
               ) -> tuple[Config, str, tuple[str, ...]]:
    """Lay out the runtime directory, load its configuration with the options as overrides
    (and the global --set ones after them), and check it as `start` does."""
    from prefork.serve.service import ServedSite

    for directory in ("etc", "htdocs", "var/run", "var/log"):
        (runtime / directory).mkdir(parents=True)
    path = runtime / "etc" / "httpd.ini"
    path.write_text(RUN_INI.format(static_mount=static_mount, access_log=_access_log()),
                    encoding="utf-8")
    all_overrides = (*overrides, *ctx.overrides)
    try:
        config = load_config(path, all_overrides)
        ServedSite().check(config)
    except ConfigError as exc:
        if exc.key == "app.module" and exc.file == "--set":
            fail(exc.detail)
        option = OPTION_OF.get(exc.key or "") if exc.file == "--set" else None
        fail(f"{option}: {exc.detail}" if option else str(exc))
    return config, str(path), all_overrides


def _access_log() -> str:
    """/dev/stderr when it can be opened for appending (a terminal, a pipe, a file; not the
    socket systemd gives a service), else off. When stderr is a file (`2> run.log`), it is
    put in append mode too: the access log's own descriptor appends, and the error log's
    writes through fd 2 must not overwrite its lines."""
    try:
        if stat.S_ISREG(os.fstat(2).st_mode):
            fcntl.fcntl(2, fcntl.F_SETFL, fcntl.fcntl(2, fcntl.F_GETFL) | os.O_APPEND)
        os.close(os.open(STDERR, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        click.echo(f"httpdctl: warning: access log off: cannot open {STDERR}: "
                   f"{exc.strerror or exc}", err=True)
        return "off"
    return STDERR


def _serve(config: Config, path: str, overrides: tuple[str, ...], module: str) -> None:
    from prefork.process.listeners import shown_addresses
    from prefork.process.master import Master
    from prefork.serve.service import ServedSite

    master = Master(config, path, overrides, ServedSite(), foreground=True)
    try:
        listeners = master.prepare()
    except (ControlError, StartupError) as exc:
        fail(str(exc))
    addresses = ", ".join(shown_addresses(listeners, config.server.listen))
    static = "" if config.static.mount == NO_STATIC_MOUNT else \
        f"; files of {config.server.document_root} at {config.static.mount}"
    click.echo(f"httpd running {module} in the foreground (Ctrl-C stops){static}, "
               f"listening on {addresses}", err=True)
    with contextlib.suppress(BrokenPipeError):
        sys.stderr.flush()
    sys.exit(master.run(listeners))
