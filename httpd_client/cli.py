"""`httpd-client`: confirmation and load testing driven by JSON spec files.

    httpd-client confirm METHOD [--spec CTest.json] [--json]
    httpd-client load [-n N] [-c CONCURRENCY] [--duration S] [--spec LTest.json] [--json]

Options common to both (given before or after the subcommand): --url, --timeout,
--debug, --insecure. Seed 000's spellings work too: `-c METHOD`, `-l [N]`, `--debug=True`.

Exit codes (EXIT_*): 0 everything passed; 1 a check failed (confirm) or a request failed
or got a status its "expect" does not allow (load); 2 usage or spec-file error; 3 the
server cannot be reached; 130 load interrupted with Ctrl-C (the partial report is printed).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from prefork import __version__

from .request import DEFAULT_URL, Target, Unreachable, UploadError, parse_target
from .spec import METHODS, Entry, SpecError, load_spec

EXIT_OK = 0
EXIT_FAILED = 1  # a mismatch (confirm), failed or unexpected requests (load)
EXIT_USAGE = 2  # click's own code for usage errors; bad spec files too
EXIT_UNREACHABLE = 3  # as httpdctl: "not running"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
DEFAULT_TIMEOUT = 10.0
CONFIRM_SPEC = "CTest.json"
LOAD_SPEC = "LTest.json"
CONNECTIONS_PER_PROCESS = 64
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"httpd-client: {message}", err=True)
    sys.exit(code)


@dataclass
class Settings:
    url: str | None = None
    timeout: float | None = None
    debug: bool | None = None
    insecure: bool | None = None
    spec: str | None = None

    def merged(self, **given: Any) -> Settings:
        """These settings with the subcommand's own options (those given) on top."""
        # A flag not given may arrive as False rather than None: the group's value stands.
        values = {k: getattr(self, k) if v is None or v is False else v
                  for k, v in given.items()}
        return Settings(**values)

    def target(self) -> Target:
        url = self.url or os.environ.get("HTTPD_CLIENT_URL") or DEFAULT_URL
        try:
            return parse_target(url)
        except ValueError as exc:
            fail(f"--url: {exc}", EXIT_USAGE)

    def spec_path(self, default: str) -> Path:
        """--spec, else ./NAME, else ./examples/NAME (so a checkout works as it is)."""
        if self.spec:
            return Path(self.spec)
        for candidate in (Path(default), Path("examples") / default):
            if candidate.is_file():
                return candidate
        fail(f"{default}: no such file (pass --spec PATH)", EXIT_USAGE)

    def entries(self, default: str) -> tuple[str, tuple[Entry, ...], str]:
        path = self.spec_path(default)
        try:
            spec = load_spec(path)
        except SpecError as exc:
            fail(str(exc), EXIT_USAGE)
        return str(path), spec.entries, spec.comment


def common(func: Any) -> Any:
    """The options every level takes; a subcommand's own value wins over the group's."""
    options = [
        click.option("--url", metavar="URL", default=None,
                     help=f"Server to test: http[s]://host[:port][/base] "
                          f"(default: $HTTPD_CLIENT_URL or {DEFAULT_URL})."),
        click.option("--timeout", type=click.FloatRange(min=0.001), default=None,
                     metavar="SECONDS",
                     help=f"Connect and response timeout (default {DEFAULT_TIMEOUT:g})."),
        click.option("--debug", is_flag=True, default=None,
                     help="Print every response's status and timing on stderr "
                          "(seed 000's --debug=True)."),
        click.option("-k", "--insecure", is_flag=True, default=None,
                     help="https: do not verify the server's certificate."),
        click.option("--spec", metavar="PATH", default=None,
                     help="Spec file (default: CTest.json for confirm, LTest.json for "
                          "load, in . or ./examples)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@common
@click.option("-c", "--confirmation", "confirm_method", metavar="METHOD", default=None,
              help="Seed 000's spelling of `confirm METHOD`.")
@click.option("-l", "--load", "load_repeat", metavar="[N]", type=click.IntRange(min=1),
              is_flag=False, flag_value=1, default=None,
              help="Seed 000's spelling of `load -n N`.")
@click.version_option(__version__, prog_name="httpd-client")
@click.pass_context
def cli(ctx: click.Context, url: str | None, timeout: float | None, debug: bool | None,
        insecure: bool | None, spec: str | None, confirm_method: str | None,
        load_repeat: int | None) -> None:
    """Confirmation and load tester for HTTP servers, driven by JSON spec files.

    \b
    httpd-client confirm GET                    check the GET entries of CTest.json
    httpd-client load -n 100 -c 32              replay LTest.json 100 times, 32 connections
    httpd-client --url https://host:8443 ...    any server, http or https
    """
    ctx.obj = Settings(url=url, timeout=timeout, debug=debug, insecure=insecure, spec=spec)
    if ctx.invoked_subcommand is not None:
        return
    if confirm_method is not None and load_repeat is not None:
        raise click.UsageError("-c and -l are two different modes: pick one")
    if confirm_method is not None:
        ctx.invoke(confirm, method=confirm_method)
    elif load_repeat is not None:
        ctx.invoke(load, repeat=load_repeat)
    else:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_USAGE)


@cli.command()
@click.argument("method", metavar="METHOD")
@common
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.pass_obj
def confirm(settings: Settings, /, method: str, as_json: bool = False, **given: Any) -> None:
    """Send the spec's METHOD requests (or ALL) once each and check the responses.

    An entry passes when its status is the one its "expect" names (any 2xx or 3xx when it
    names none) and the body and header checks it lists hold. Exits 0 when every entry
    passes, 1 otherwise, 2 for a bad spec, 3 when the server cannot be reached.
    """
    from .confirm import Confirmer, checks_json, format_checks

    settings = settings.merged(**{k: given.get(k) for k in
                                  ("url", "timeout", "debug", "insecure", "spec")})
    if method.upper() not in (*METHODS, "ALL", "*"):
        raise click.BadParameter(f"{method!r} is not one of {', '.join(METHODS)} or ALL",
                                 param_hint="METHOD")
    target = settings.target()
    path, entries, _comment = settings.entries(CONFIRM_SPEC)
    selected = tuple(e for e in entries if method.upper() in ("ALL", "*")
                     or e.method == method.upper())
    if not selected:
        fail(f"{path}: no {method.upper()} requests in the file", EXIT_USAGE)
    debug = (lambda line: click.echo(line, err=True)) if settings.debug else None
    confirmer = Confirmer(target, settings.timeout or DEFAULT_TIMEOUT,
                          insecure=bool(settings.insecure), debug=debug)
    try:
        checks = confirmer.run(selected)
    except Unreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except UploadError as exc:
        fail(f"{path}: {exc}", EXIT_USAGE)
    passed = sum(c.ok for c in checks)
    failed = len(checks) - passed
    if as_json:
        click.echo(json.dumps({"url": target.url(), "spec": path, "method": method.upper(),
                               "passed": passed, "failed": failed,
                               "results": checks_json(checks)}, indent=2))
    else:
        click.echo(f"httpd-client confirm {method.upper()}: {target.url()} (spec {path})\n")
        for line in format_checks(checks):
            click.echo(line)
        verdict = "PASS" if not failed else "FAIL"
        click.echo(f"\n{verdict}: {passed} of {len(checks)} request(s) as expected"
                   + (f", {failed} not" if failed else ""))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@cli.command()
@click.option("-n", "--repeat", "repeat", type=click.IntRange(min=1), default=None,
              metavar="N", help="Replay the spec N times (default 1: each entry once); "
                                "with --duration, an upper bound.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=1,
              show_default=True, help="Keep-alive connections open at once.")
@click.option("--duration", type=click.FloatRange(min=0.01), default=None, metavar="S",
              help="Run for S seconds, cycling through the spec.")
@click.option("-p", "--processes", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: one per 64 connections, at most half "
                   "the CPUs).")
@common
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.pass_obj
def load(settings: Settings, /, repeat: int | None = None, concurrency: int = 1,
         duration: float | None = None, processes: int | None = None, as_json: bool = False,
         progress: bool | None = None, **given: Any) -> None:
    """Replay the spec over keep-alive connections and report throughput and latency.

    Requests go out in spec order, entry k of the sequence being spec entry k mod the
    number of entries, spread over CONCURRENCY connections in PROCESSES processes. The
    report gives requests/s, latency min/mean/p50/p90/p99/max, bytes, a status histogram
    and errors by kind. Exits 0 when every request got a response its entry allows, 1 when
    some failed, 3 when the server cannot be reached, 130 when interrupted.
    """
    from .load import LoadOptions, run_load
    from .report import format_load, summarize

    settings = settings.merged(**{k: given.get(k) for k in
                                  ("url", "timeout", "debug", "insecure", "spec")})
    target = settings.target()
    path, entries, _comment = settings.entries(LOAD_SPEC)
    options = LoadOptions(repeat=repeat, concurrency=concurrency, duration=duration,
                          processes=processes or default_processes(concurrency),
                          timeout=settings.timeout or DEFAULT_TIMEOUT,
                          debug=bool(settings.debug), insecure=bool(settings.insecure))
    show = sys.stderr.isatty() if progress is None else progress
    bar = ProgressBar(repeat * len(entries) if repeat else (None if duration else
                                                              len(entries)), duration)
    try:
        outcome = run_load(target, entries, options, bar.update if show else None)
    except Unreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except UploadError as exc:
        fail(f"{path}: {exc}", EXIT_USAGE)
    except ValueError as exc:  # more connections than descriptors
        fail(str(exc), EXIT_USAGE)
    finally:
        if show:
            bar.clear()
    summary = summarize(outcome, target, entries, options, path)
    click.echo(json.dumps(summary, indent=2) if as_json else format_load(summary))
    if outcome.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    bad = summary["errors"]["total"] or summary["unexpected_status"]
    sys.exit(EXIT_FAILED if bad else EXIT_OK)


def default_processes(concurrency: int) -> int:
    """One process per CONNECTIONS_PER_PROCESS connections, at most half the CPUs.

    One process drives about 50,000 requests/s against nginx here, far more than a Python
    server answers; on a 2-core machine a second client process only takes CPU from a
    server running beside it (measured: fewer requests/s, see docs/client.md)."""
    half = max(1, (os.cpu_count() or 1) // 2)
    return max(1, min(half, -(-concurrency // CONNECTIONS_PER_PROCESS)))


class ProgressBar:
    """One line on stderr, redrawn in place: by requests when a count is planned (the
    smaller of the count and the duration when both are given), else by time."""

    WIDTH = 30

    def __init__(self, total: int | None, duration: float | None) -> None:
        self.total = total
        self.duration = duration
        self.drawn = False
        self.started = time.monotonic()

    def update(self, done: int, elapsed: float) -> None:
        fractions = []
        if self.total:
            fractions.append(done / self.total)
        if self.duration:
            fractions.append(elapsed / self.duration)
        fraction = min(1.0, max(fractions, default=0.0))
        filled = int(fraction * self.WIDTH)
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{done}/{self.total}" if self.total else str(done)
        line = (f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:3.0f}%  "
                f"{count} requests  {rate:,.0f}/s  {elapsed:.1f} s ")
        sys.stderr.write(line)
        sys.stderr.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


def seed_args(args: Sequence[str]) -> list[str]:
    """Seed 000 wrote `--debug=True`: accept it (and =False) alongside plain `--debug`."""
    out = []
    for arg in args:
        if arg.startswith("--debug="):
            value = arg.split("=", 1)[1].lower()
            if value in TRUE_WORDS:
                out.append("--debug")
                continue
            if value in FALSE_WORDS:
                continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`httpd-client`, `bin/httpd-client`, `python -m`)."""
    args = seed_args(sys.argv[1:] if argv is None else argv)
    cli.main(args=args, prog_name="httpd-client")


if __name__ == "__main__":
    main()
