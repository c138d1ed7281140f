"""Socket activation: the site judges the addresses systemd passed, not [server] listen.

Under socket activation (process/systemd.py `inherited_sockets`) the master serves the
sockets systemd hands over and keeps them across reloads, whatever [server] listen says:
`listen = 127.0.0.1:8080` may sit beside a `ListenStream=80` that anyone can reach. What
depends on who can connect (uploads under `enabled = auto`, the refusal of anonymous writes
beyond loopback, workers kept as root) must see those sockets, so every configuration the
site is handed carries them as `Config.served` — the one loaded at start and each one a
reload loads — through `ActivatedSite`, which wraps the site's hooks.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Sequence

from prefork.config.settings import Config
from prefork.config.values import ListenAddress
from prefork.log import AccessLog, ErrorLog
from prefork.process.hooks import Service, SiteHooks
from prefork.scoreboard import Scoreboard


def served_addresses(sockets: Sequence[socket.socket], listen: Sequence[ListenAddress]
                     ) -> tuple[ListenAddress, ...]:
    """The addresses `sockets` are bound to (getsockname), `ssl` marked by position as the
    serving layer pairs them with [server] listen. A Unix socket is left out: only this
    machine reaches it, as loopback."""
    found = []
    for index, sock in enumerate(sockets):
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        host, port = sock.getsockname()[:2]
        tls = index < len(listen) and listen[index].tls
        found.append(ListenAddress(host, port, sock.family, tls=tls))
    return tuple(found)


class ActivatedSite:
    """The site's hooks (process.hooks.SiteHooks), each given its configuration with the
    served addresses set. A configuration maps to one view for as long as a generation
    may use it: the site recognises a generation's configuration by identity (its TLS
    contexts, made before fork, are found again in a worker)."""

    def __init__(self, site: SiteHooks, served: tuple[ListenAddress, ...]) -> None:
        self.site = site
        self.served = served
        self._views: dict[int, tuple[Config, Config]] = {}  # id(config): (config, its view)

    def view(self, config: Config) -> Config:
        """`config` with Config.served set to the passed sockets' addresses."""
        if config.served is not None:
            return config
        known = self._views.get(id(config))
        if known is not None and known[0] is config:
            return known[1]
        seen = dataclasses.replace(config, served=self.served)
        self._views[id(config)] = (config, seen)
        return seen

    def check(self, config: Config) -> None:
        self.site.check(self.view(config))

    def prepare(self, config: Config, error_log: ErrorLog, owner: tuple[int, int] | None
                ) -> None:
        self.site.prepare(self.view(config), error_log, owner)

    def before_fork(self, config: Config, alive: Sequence[Config]) -> None:
        # Called before each generation is forked: views of configurations no generation
        # runs any more (and of reloads that failed) are dropped here.
        keep = {id(c) for c in (config, *alive)}
        self._views = {key: pair for key, pair in self._views.items() if key in keep}
        self.site.before_fork(self.view(config), [self.view(c) for c in alive])

    def worker_gone(self, config: Config, pid: int, error_log: ErrorLog) -> None:
        self.site.worker_gone(self.view(config), pid, error_log)

    def serve(self, config: Config, listeners: list[socket.socket], scoreboard: Scoreboard,
              process_slot: int, generation: int, error_log: ErrorLog, access_log: AccessLog,
              on_loop_death: Callable[[], None]) -> Service:
        return self.site.serve(self.view(config), listeners, scoreboard, process_slot,
                               generation, error_log, access_log, on_loop_death)
