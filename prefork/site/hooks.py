"""What the site asks of supervision, as plain functions the master calls through
`process.hooks.SiteHooks` (wired by `httpdctl start`): check the site's settings, prepare the
uploads directory before any worker starts, and remove a dead worker's upload temporaries."""

from __future__ import annotations

from prefork.config.settings import Config
from prefork.errors import ConfigError
from prefork.log import ErrorLog
from prefork.site.appcheck import check_apps
from prefork.site.auth import weak_entries_warning
from prefork.site.uploads.put import (
    check_open_writes,
    check_upload_config,
    open_writes_warning,
    prepare_upload_directory,
    remove_temporaries,
    upload_directory_problem,
    uploads_off_notice,
)


def check(config: Config) -> None:
    """Cross-checks of [uploads] and [auth], and that every [app] imports (in a child
    process: site/appcheck.py), for configtest, start and reload. Raises ConfigError."""
    check_upload_config(config)
    check_apps(config)


def prepare(config: Config, error_log: ErrorLog, owner: tuple[int, int] | None) -> None:
    """In the master, before forking: create the uploads directory (handed to `owner`, the
    workers' uid and gid, when the master runs as root), remove temporaries a previous run
    left, and warn when anyone who can reach the server may write, or when the users file
    holds weak ($apr1$, {SHA}) entries. Raises ConfigError, also for writes open beyond
    loopback: `check` ran on [server] listen, and under socket activation `config` now
    tells what is served."""
    check_open_writes(config)
    weak = weak_entries_warning(config.auth.users_file) if config.auth.users_file else None
    if weak:
        error_log.warn(weak)
    if not config.uploads_enabled:
        notice = uploads_off_notice(config)
        if notice:
            error_log.notice(notice)
        return
    problem = upload_directory_problem(config)
    if problem:
        raise ConfigError(problem, file=config.source, key="uploads.directory")
    uid, gid = owner or (-1, -1)
    try:
        removed = prepare_upload_directory(config.uploads.directory, uid, gid)
    except OSError as exc:
        raise ConfigError(f"cannot create the uploads directory {config.uploads.directory}: "
                          f"{exc.strerror or exc}", file=config.source,
                          key="uploads.directory") from None
    if removed:
        error_log.notice(f"uploads: removed {removed} stale temporary file(s)")
    warning = open_writes_warning(config)
    if warning:
        error_log.warn(warning)


def worker_gone(config: Config, pid: int, error_log: ErrorLog) -> None:
    """A worker was reaped: a worker killed mid-upload leaves its temporary (only that
    pid's are removed)."""
    uploads = config.uploads
    removed = remove_temporaries(uploads.directory, pid) if config.uploads_enabled else 0
    if removed:
        error_log.info(f"uploads: removed {removed} temporary file(s) of pid {pid}")
