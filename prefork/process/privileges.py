"""Who the workers run as: looking up [server] user/group, handing files to that user,
and the switch itself (in the worker, after fork, before serving)."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable

from prefork.config.settings import Config


def lookup(user: str, group: str) -> tuple[int, int]:
    """Return (uid, gid) for `user` and `group` (default: the user's primary group).

    Raises RuntimeError naming them when either does not exist.
    """
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError:
        raise RuntimeError(f"unknown [server] user {user!r} or group {group!r}") from None
    return entry.pw_uid, gid


def worker_ids(config: Config) -> tuple[int, int] | None:
    """(uid, gid) the workers will switch to, or None when they keep ours (not root, no
    user configured, or an unknown user: the workers then fail to boot and say why)."""
    if os.geteuid() != 0 or not config.server.user:
        return None
    try:
        return lookup(config.server.user, config.server.group)
    except RuntimeError:
        return None


def give_to_workers(config: Config, paths: Iterable[str]) -> list[str]:
    """chown `paths` to the workers' user, so they can reopen them after dropping root.
    Returns one message per path that could not be handed over."""
    ids = worker_ids(config)
    problems = []
    if ids is not None:
        for path in paths:
            try:
                os.chown(path, *ids)
            except OSError as exc:
                problems.append(f"cannot give {path} to {config.server.user}: {exc}")
    return problems


def drop_privileges(user: str, group: str) -> None:
    """Switch to `user`/`group` when running as root (supplementary groups dropped).

    Raises PermissionError or KeyError (unknown user/group) for the boot-failure path.
    """
    if os.getuid() != 0 or not user:
        return
    uid, gid = lookup(user, group)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() == 0:
        raise PermissionError(f"still root after switching to {user}")
