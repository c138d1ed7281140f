"""`httpdctl systemd-unit`: a hardened systemd service unit for this installation.

The unit names this interpreter and this configuration file, so it works for a virtual
environment anywhere on disk. Its sandbox is derived from the configuration rather than
written once for every site, because what the server may do depends on it:

- the file system is read-only (`ProtectSystem=strict`) except `var/` (PID file, state,
  scoreboard, logs) and the uploads directory when uploads are on;
- the capability bounding set holds only what the master uses: `CAP_NET_BIND_SERVICE` when a
  port below 1024 is bound, `CAP_SETUID`/`CAP_SETGID` (and `CAP_CHOWN`, to hand fresh log
  files to that user) when `[server] user` is set; nothing otherwise;
- `ProtectHome=read-only` instead of `yes`, and `PrivateTmp=no` instead of `yes`, when a
  file the server must read lies in what they hide (/home, /root, /run/user; /tmp,
  /var/tmp): the server root, the interpreter (where its links lead, and its standard
  library), the document root, the uploads directory, the users file, an application's
  path, a certificate or key, a log file.

`Type=notify`: the master says READY=1 once every worker accepts, RELOADING=1 around reloads
and keeps the watchdog fed while the master itself is healthy (degraded workers show in
STATUS=, see docs/operations.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prefork.config.settings import Config, server_root_for

PRIVILEGED_PORT_LIMIT = 1024  # ports below need CAP_NET_BIND_SERVICE (ip(7))
HOME_TREES = (Path("/home"), Path("/root"), Path("/run/user"))  # hidden by ProtectHome=yes
TMP_TREES = (Path("/tmp"), Path("/var/tmp"))  # replaced by empty ones with PrivateTmp=yes
# How the service is sandboxed beyond the paths and capabilities computed below; each line is
# a systemd.exec(5) option that a static file and WSGI server does not need to be without.
HARDENING = """\
NoNewPrivileges=yes
PrivateMounts=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectClock=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
UMask=0027
"""


def _quote(path: Path | str) -> str:
    """A path as systemd reads it in ExecStart= and *Paths= (C-style quoting)."""
    text = str(path)
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def _under(path: Path, trees: tuple[Path, ...]) -> bool:
    return any(path == tree or tree in path.parents for tree in trees)


def needed_paths(config: Config, root: Path) -> list[Path]:
    """Every path the service reads or writes, as configured and where its links lead:
    what the sandbox must leave visible."""
    named = [root, Path(sys.executable), Path(sys.base_prefix), Path(sys.prefix),
             Path(config.server.document_root)]
    if config.uploads_enabled:
        named.append(Path(config.uploads.directory))
    named += [Path(p) for p in (config.auth.users_file, config.logging.access_log,
                                config.logging.error_log) if p and p != "off"]
    for app in config.apps:
        named += [Path(p) for p in app.path]
    for tls in config.tls:
        named += [Path(p) for p in (tls.certificate, tls.certificate_key,
                                    tls.key_password_file) if p]
    seen: list[Path] = []
    for path in named:
        for form in (path, Path(os.path.realpath(path))):
            if form.is_absolute() and form not in seen:
                seen.append(form)
    return seen


def capabilities(config: Config) -> list[str]:
    caps = []
    if any(0 < address.port < PRIVILEGED_PORT_LIMIT for address in config.server.listen):
        caps.append("CAP_NET_BIND_SERVICE")
    if config.server.user or config.server.group:
        caps += ["CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"]
    return caps


def denied_system_calls(config: Config) -> str:
    """System call groups (systemd-analyze syscall-filter) the server never makes. Switching
    to [server] user needs setgroups/setgid/setuid and chown from @privileged; without a
    user the whole group goes."""
    if config.server.user or config.server.group:
        return "~@clock @module @raw-io @reboot @swap @resources"
    return "~@privileged @resources"


def render_unit(config: Config, config_path: Path) -> str:
    """The unit text for serving `config` (read from `config_path`)."""
    config_path = config_path.resolve()
    root = server_root_for(config_path)
    interpreter = Path(sys.executable)
    command = f"{_quote(interpreter)} -m prefork -f {_quote(config_path)}"
    writable = [root / "var"]
    uploads = Path(config.uploads.directory)
    if config.uploads_enabled and not any(
            uploads == w or w in uploads.parents for w in writable):
        writable.append(uploads)
    for log in (config.logging.access_log, config.logging.error_log):
        if log and log.startswith("/") and not any(w in Path(log).parents for w in writable):
            writable.append(Path(log).parent)
    caps = capabilities(config)
    needed = needed_paths(config, root)
    home = "read-only" if any(_under(p, HOME_TREES) for p in needed) else "yes"
    private_tmp = "no" if any(_under(p, TMP_TREES) for p in needed) else "yes"
    lines = [
        "# systemd unit for prefork, written by `httpdctl systemd-unit` for",
        f"#   {config_path}",
        "# Install: httpdctl systemd-unit > /etc/systemd/system/prefork.service",
        "#          systemctl daemon-reload && systemctl enable --now prefork",
        "[Unit]",
        "Description=prefork HTTP server",
        "Documentation=https://pypi.org/project/prefork/",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={command} start --foreground",
        f"ExecReload={command} reload",
        "# TERM to the master only: it drains the workers within [workers] graceful_timeout.",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={int(config.workers.graceful_timeout) + 15}",
        "WatchdogSec=60",
        "Restart=on-failure",
        "RestartSec=2",
        "LimitNOFILE=65536",
        "",
        "# Sandbox (systemd.exec(5)); `systemd-analyze security prefork` rates it.",
        "ProtectSystem=strict",
        f"ProtectHome={home}",
        # "-": a directory the server creates at its first start (uploads) may not exist yet.
        "ReadWritePaths=" + " ".join([_quote(writable[0]),
                                      *("-" + _quote(path) for path in writable[1:])]),
        f"PrivateTmp={private_tmp}",
        "CapabilityBoundingSet=" + " ".join(caps),
        "AmbientCapabilities=",
        HARDENING.rstrip("\n"),
        "SystemCallFilter=" + denied_system_calls(config),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)

