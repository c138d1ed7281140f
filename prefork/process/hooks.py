"""What supervision needs from what is served, as protocols.

The master and its workers never import the site or the serving layer (an import contract
holds it): `httpdctl start` hands the master an implementation (`serve.service.ServedSite`),
so supervision stays about processes — fork, signals, generations — whatever a worker serves.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from prefork.config.settings import Config
from prefork.log import AccessLog, ErrorLog
from prefork.scoreboard import Scoreboard, ThreadSlot


class Service(Protocol):
    """A worker's serving machinery (its loops and pool), built in the child after fork."""

    def start(self) -> None: ...

    def alive(self) -> bool:
        """Every serving thread is running."""
        ...

    def ticking(self, now: float, stall: float) -> bool:
        """Every loop turned within `stall` seconds of the monotonic `now`."""
        ...

    def slots(self) -> list[ThreadSlot]: ...

    def drain(self, idle_grace: float | None) -> None:
        """Stop accepting after taking what is queued; finish connections (returns at once)."""
        ...

    def accepting_done(self) -> bool:
        """Every loop has taken its last connection from the listeners."""
        ...

    def wait(self, deadline: float, give_up: Callable[[], bool]) -> None:
        """Wait for the loops to finish, until the monotonic `deadline` or `give_up()`."""
        ...

    def shutdown(self) -> None: ...


class SiteHooks(Protocol):
    """The calls supervision makes on the site, at each stage of a server's life."""

    def check(self, config: Config) -> None:
        """Cross-checks of the site's settings (configtest, start, reload); ConfigError."""
        ...

    def prepare(self, config: Config, error_log: ErrorLog, owner: tuple[int, int] | None
                ) -> None:
        """In the master before forking a generation (directories the site writes to, owned
        by `owner` = the workers' uid and gid when switching user); ConfigError."""
        ...

    def before_fork(self, config: Config, alive: Sequence[Config]) -> None:
        """In the master before forking each generation (at start and at every reload):
        load what the generation's workers share, with the master's privileges; `alive`:
        the configurations of the generations still running, whose shared state must stay
        (their workers may be respawned); ConfigError."""
        ...

    def worker_gone(self, config: Config, pid: int, error_log: ErrorLog) -> None:
        """A worker of `config` was reaped: clean up what it may have left."""
        ...

    def serve(self, config: Config, listeners: list[socket.socket], scoreboard: Scoreboard,
              process_slot: int, generation: int, error_log: ErrorLog, access_log: AccessLog,
              on_loop_death: Callable[[], None]) -> Service:
        """In a new worker, privileges dropped: the machinery that serves `listeners`."""
        ...
