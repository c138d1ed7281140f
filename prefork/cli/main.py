"""`httpdctl`: start, stop, restart, reload, status, configtest, reopen-logs, and `run`
(one application in the foreground without a configuration file: cli/run.py).

Errors are one line on stderr, "httpdctl: <what went wrong>", with a non-zero exit code:
1 for failures (bad config, port in use, already running...), 3 when the server is not
running (LSB's "program is not running"). The master is imported lazily so that
`status` and `configtest` stay light.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from prefork.config.settings import Config, config_file, load_config
from prefork.control import find_master, send
from prefork.errors import ConfigError, ControlError, StartupError

EXIT_FAILURE = 1
START_MARGIN = 10.0  # seconds beyond boot_timeout that `start` waits for the master's word
STOP_MARGIN = 10.0  # seconds beyond graceful_timeout that `stop` waits for the master to exit
RELOAD_MARGIN = 15.0


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"httpdctl: {message}", err=True)
    sys.exit(code)


class Context:
    def __init__(self, config_path: str | None, overrides: tuple[str, ...]) -> None:
        self.config_path = config_path
        self.overrides = overrides

    def path(self) -> str:
        return str(config_file(self.config_path).resolve())

    def load(self, on_error: Callable[[str], None] | None = None) -> Config:
        """The configuration, fully checked (the file, and the files it names); exits 1
        with file, line and key on a problem (after passing it to `on_error`)."""
        from prefork.cli.scaffold import missing_config_hint
        from prefork.serve.service import ServedSite

        if not os.path.exists(self.path()):
            fail(f"{self.path()}: configuration file not found; {missing_config_hint()}")

        try:
            config = load_config(self.path(), self.overrides)
            ServedSite().check(config)
        except ConfigError as exc:
            if on_error is not None:
                on_error(str(exc))
            fail(str(exc))
        return config

    def load_for_control(self) -> Config:
        """The config for verbs that only need to find the running master (stop, status...):
        a file broken since the start must not keep an operator from stopping the server."""
        try:
            return load_config(self.path(), self.overrides)
        except ConfigError as exc:
            try:
                config = load_config(self.path(), self.overrides, lenient=True)
            except ConfigError:
                fail(str(exc))
            click.echo(f"httpdctl: warning: {exc} (using pid file {config.server.pid_file})",
                       err=True)
            return config


pass_ctx = click.make_pass_decorator(Context)


class VerbGroup(click.Group):
    """Commands are lower-case; the seed's spelling (START, STOP, RESTART, RELOAD...) is
    accepted as an alias of the same verb."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name.isupper():
            command = super().get_command(ctx, cmd_name.lower())
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command is not None else name), command, rest


@click.group(cls=VerbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--config", "config_path", metavar="PATH",
              help="Configuration file (default: $HTTPD_CONF or ./etc/httpd.ini).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one setting, e.g. --set server.listen=0.0.0.0:8000 (repeatable).")
@click.version_option(package_name="prefork", prog_name="prefork")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Control the prefork HTTP server."""
    ctx.obj = Context(config_path, overrides)


@main.command()
@click.option("--foreground", is_flag=True,
              help="Stay attached (for systemd and debugging); the error log mirrors to stderr.")
@pass_ctx
def start(ctx: Context, foreground: bool) -> None:
    """Start the server; returns once the workers accept connections."""
    config = ctx.load(on_error=lambda message: _log_startup_failure(ctx, None, message))
    _start(ctx, config, foreground)


def _log_startup_failure(ctx: Context, config: Config | None, message: str) -> None:
    """Every start-up failure is one line in the error log as well as on stderr. Before the
    configuration is valid, the error log it names (read leniently) is used if any."""
    from prefork.log import ErrorLog

    if config is None:
        try:
            config = load_config(ctx.path(), ctx.overrides, lenient=True)
        except ConfigError:
            return
    try:
        log = ErrorLog(config.logging.error_log, fmt=config.logging.error_format)
    except OSError:
        return  # nowhere to write: stderr has it
    try:
        log.error(f"start-up failed: {message}")
    finally:
        log.close()


def _start(ctx: Context, config: Config, foreground: bool) -> None:
    from prefork.process.master import Master
    from prefork.serve.service import ServedSite

    master = Master(config, ctx.path(), ctx.overrides, ServedSite(), foreground=foreground)
    try:
        listeners = master.prepare()
    except (ControlError, StartupError) as exc:
        _log_startup_failure(ctx, config, str(exc))
        fail(str(exc))
    if foreground:
        sys.exit(master.run(listeners))
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    if os.fork() > 0:
        os.close(write_end)
        for sock in listeners:
            sock.close()
        master.pid_file.forget()
        _await_start(read_end, config.workers.boot_timeout + START_MARGIN)
        return
    # The daemon: a new session, a second fork so it can never regain a terminal.
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    master.ready_notice = write_end
    code = 1
    try:
        code = master.run(listeners)
    finally:
        os._exit(code)


def _await_start(read_end: int, timeout: float) -> None:
    """Wait for the daemon's one-line report; print it and exit accordingly."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    line = data.decode(errors="replace").strip()
    if line.startswith("READY"):
        _word, pid, addresses = [*line.split(" ", 2), ""][:3]
        click.echo(f"httpd started (pid {pid}), listening on {addresses}")
        return
    if line.startswith("ERROR"):
        fail(line[6:] or "start-up failed (see the error log)")
    fail("the server did not report that it started (see the error log)")


def _wait_for_exit(pid_file: str, timeout: float) -> bool:
    """Wait until the master releases its PID-file lock (it holds it for its whole life).
    Not kill(pid, 0): a master that exited but was not reaped by its parent (a zombie, as
    under many container inits) still answers that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if find_master(pid_file) is None:
            return True
        time.sleep(0.05)
    return False


def _stop(config: Config, now: bool) -> None:
    try:
        master = send(config.server.pid_file, "stop-now" if now else "stop")
    except ControlError as exc:
        fail(str(exc), exc.exit_code)
    timeout = (0 if now else config.workers.graceful_timeout) + STOP_MARGIN
    if not _wait_for_exit(config.server.pid_file, timeout):
        fail(f"master pid {master.pid} did not exit within {timeout:g}s")


@main.command()
@click.option("--now", is_flag=True, help="Fast stop: do not wait for in-flight requests.")
@pass_ctx
def stop(ctx: Context, now: bool) -> None:
    """Stop gracefully (finish in-flight requests), or at once with --now."""
    config = ctx.load_for_control()
    _stop(config, now)
    click.echo("httpd stopped")


@main.command()
@pass_ctx
def restart(ctx: Context) -> None:
    """Stop (gracefully) if running, then start a new master."""
    config = ctx.load()
    if find_master(config.server.pid_file) is not None:
        _stop(config, now=False)
        click.echo("httpd stopped")
    _start(ctx, config, foreground=False)


@main.command()
@pass_ctx
def reload(ctx: Context) -> None:
    """Load the configuration again and replace the workers without dropping requests.

    Exits non-zero with the reason when the new configuration or its workers fail; the
    running generation then keeps serving.
    """
    config = ctx.load()  # a bad file fails here already, and names file, line and key
    from prefork.control import read_state, take_reload_ticket

    pid_file = config.server.pid_file
    state = read_state(pid_file)
    asked = Asked(state.get("pid"), state.get("reload_seq", 0), state.get("reload_requested"))
    # The ticket is taken after the configuration was written (and checked, above), so the
    # first reload that begins after it reads that configuration: its outcome is ours.
    try:
        asked.ticket = take_reload_ticket(pid_file)
    except (OSError, ValueError):
        pass  # var/run not writable by us: the request count says which reload is ours
    try:
        master = send(pid_file, "reload")
    except ControlError as exc:
        fail(str(exc), exc.exit_code)
    # A reload under way first, then ours; either may wait up to graceful_timeout for
    # scoreboard slots that workers of older generations still hold.
    workers = config.workers
    deadline = time.monotonic() + 2 * (workers.boot_timeout + workers.graceful_timeout) \
        + RELOAD_MARGIN
    while time.monotonic() < deadline:
        result = asked.outcome(read_state(pid_file))
        if result is not None:
            if result.get("ok"):
                click.echo(f"httpd reloaded: {result.get('message')}")
                return
            fail(f"reload failed: {result.get('message')} (previous generation still serving)")
        if not _running(master.pid):
            fail(f"the master (pid {master.pid}) exited before it reported the reload's "
                 f"outcome (see the error log)")
        time.sleep(0.05)
    fail("the master did not report the reload's outcome in time (see the error log)")


class Asked:
    """One `httpdctl reload` request, and how to find its outcome in the state file."""

    def __init__(self, pid: object, seq: object, requested: object) -> None:
        self.pid = pid  # the master whose state was read before the request
        self.seq = seq if isinstance(seq, int) else 0
        self.requested = requested if isinstance(requested, int) else None
        self.ticket: int | None = None

    def outcome(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The outcome of the first reload that began after our ticket was taken; None
        while there is none yet. Without a ticket (or with a master that files no
        tickets), that of the reload that covered our request by count."""
        outcomes = state.get("reloads")
        if self.ticket is not None and isinstance(outcomes, list):
            # Outcomes of this master finished before we asked are not ours, whatever their
            # ticket (a tickets file removed meanwhile starts again from 1).
            newer = self.seq if state.get("pid") == self.pid else 0
            for entry in outcomes:
                if isinstance(entry, dict) and entry.get("seq", 0) > newer \
                        and entry.get("ticket", 0) >= self.ticket:
                    return entry
            return None
        # Our request is number requested + 1 or later: the outcome is ours once a reload
        # that began after it is done (one under way when it came is followed by another).
        if not (state.get("reload_covered", 0) > self.requested if self.requested is not None
                else state.get("reload_seq", 0) > self.seq):
            return None
        result = state.get("reload")
        return result if isinstance(result, dict) else {}


def _running(pid: int) -> bool:
    """Whether process `pid` is alive (not gone, not a zombie)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_command(verb: str, done: str) -> Callable[[Context], None]:
    def command(ctx: Context) -> None:
        config = ctx.load_for_control()
        try:
            master = send(config.server.pid_file, verb)
        except ControlError as exc:
            fail(str(exc), exc.exit_code)
        click.echo(f"{done} (master pid {master.pid})")
    return command


REOPEN_WAIT = 10.0  # seconds for every worker to acknowledge a log reopen


@main.command("reopen-logs")
@pass_ctx
def reopen_logs(ctx: Context) -> None:
    """Reopen every log file in every process (after logrotate moved them).

    Returns once every worker has acknowledged, so the old files can be compressed safely.
    """
    config = ctx.load_for_control()
    from prefork.control import read_state

    target = read_state(config.server.pid_file).get("log_seq", 0) + 1
    try:
        master = send(config.server.pid_file, "reopen-logs")
    except ControlError as exc:
        fail(str(exc), exc.exit_code)
    deadline = time.monotonic() + REOPEN_WAIT
    while time.monotonic() < deadline:
        state = read_state(config.server.pid_file)
        if state.get("log_seq", 0) >= target:
            failures = state.get("log_failures") or []
            if failures:
                fail("logs not reopened everywhere: " + "; ".join(failures))
            click.echo(f"logs reopened by the master (pid {master.pid}) and every worker")
            return
        time.sleep(0.05)
    fail(f"not every worker acknowledged the log reopen within {REOPEN_WAIT:g}s")

main.command("add-worker", help="Add one worker process (SIGTTIN).")(
    pass_ctx(_signal_command("add-worker", "one more worker requested")))
main.command("remove-worker", help="Remove one worker process (SIGTTOU).")(
    pass_ctx(_signal_command("remove-worker", "one worker fewer requested")))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Show the master, its workers and their threads (exit 3 when not running)."""
    config = ctx.load_for_control()
    from prefork.cli.status import collect, render

    try:
        data: dict[str, Any] = collect(config)
    except ControlError as exc:
        if as_json:
            click.echo(json.dumps({"running": False, "error": str(exc)}))
            sys.exit(exc.exit_code)
        fail(str(exc), exc.exit_code)
    if as_json:
        click.echo(json.dumps({"running": True, **data}, indent=2))
    else:
        click.echo(render(data))


@main.command()
@pass_ctx
def configtest(ctx: Context) -> None:
    """Check the configuration file and report problems with file, line and key."""
    config = ctx.load()
    server = config.server
    for warning in _environment_warnings(config):
        click.echo(f"httpdctl: warning: {warning}", err=True)
    click.echo(f"Syntax OK: {config.source}")
    click.echo(f"  listen {', '.join(a.shown for a in server.listen)}; document_root "
               f"{server.document_root}; {config.workers.processes} workers x "
               f"{config.workers.threads} threads")


def _environment_warnings(config: Config) -> list[str]:
    """Things the file cannot show wrong but this machine may: an unknown user or group."""
    from prefork.process.privileges import lookup

    if not config.server.user:
        return []
    try:
        lookup(config.server.user, config.server.group)
    except RuntimeError as exc:
        return [f"{exc} on this machine: workers started as root would fail to boot"]
    return []


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Lay out a new server root in DIRECTORY (default: here): etc/httpd.ini with every
    setting, htdocs/ with a sample site, var/log, var/run, example client specs. Refuses
    to overwrite anything."""
    from prefork.cli.scaffold import init_root, next_steps

    try:
        layout = init_root(directory)
    except ConfigError as exc:
        fail(str(exc))
    click.echo(next_steps(layout), nl=False)


@main.command("systemd-unit")
@pass_ctx
def systemd_unit(ctx: Context) -> None:
    """Print a hardened systemd unit (Type=notify) for this installation and configuration."""
    from prefork.cli.unitfile import render_unit

    config = ctx.load()
    click.echo(render_unit(config, Path(ctx.path())), nl=False)


# `httpdctl run MODULE:CALLABLE`, the configuration-less foreground server (cli/run.py).
from prefork.cli.run import run as run_command  # noqa: E402

main.add_command(run_command)


if __name__ == "__main__":
    main()
