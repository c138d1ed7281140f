"""What one worker serves with: its event loops, its blocking pool and the router behind
them, built in the child after fork — and the hooks supervision calls on the site.

Supervision (prefork.process) never imports this layer or the site: `httpdctl start` hands
the master a `ServedSite`, and the master calls it through the `process.hooks.SiteHooks`
protocol — to check and prepare the configuration, to clean up after a dead worker, and, in
each new worker, to build the `WorkerService` that accepts and serves connections.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Sequence

from prefork.config.settings import Config
from prefork.http.framing import AddedFields
from prefork.http.parser import Limits
from prefork.log import AccessLog, ErrorLog
from prefork.scoreboard import THREAD_LIMIT, Scoreboard, ThreadSlot
from prefork.serve.context import ServerContext
from prefork.serve.loop import Capacity, EventLoop
from prefork.serve.pool import BlockingPool
from prefork.serve.quick import QuickPath
from prefork.serve.tls import TLSServer
from prefork.serve.tls_context import TLSContexts, build_contexts, expiry_warnings
from prefork.serve.tls_context import check as check_tls
from prefork.site import hooks as site_hooks
from prefork.site.apps import load_apps
from prefork.site.router import Router, app_pool

JOIN_STEP = 0.2  # seconds between checks while waiting for the loops to finish


def tls_listeners(config: Config, listeners: list[socket.socket], error_log: ErrorLog,
                  contexts: TLSContexts | None = None) -> dict[int, TLSServer]:
    """{listener descriptor: its TLS server} for the listeners marked ssl, with `contexts`
    (the master's, made before fork for this generation), else contexts built here from
    the files as they are now. Listeners come in the order of [server] listen
    (process.listeners.bind_listeners keeps it)."""
    if not any(address.tls for address in config.server.listen):
        return {}
    if contexts is None:
        contexts = build_contexts(config)  # checked by the master already; ConfigError
    assert contexts is not None
    server = TLSServer(contexts, error_log)
    return {sock.fileno(): server
            for address, sock in zip(config.server.listen, listeners, strict=False)
            if address.tls}


class WorkerService:
    """A worker's loops and blocking pool, serving `listeners` with one router."""

    def __init__(self, config: Config, listeners: list[socket.socket], scoreboard: Scoreboard,
                 process_slot: int, generation: int, error_log: ErrorLog,
                 access_log: AccessLog, on_loop_death: Callable[[], None],
                 tls_contexts: TLSContexts | None = None) -> None:
        http = config.http
        # Applications are imported here, after fork: each generation runs the code as it
        # is on disk now (a reload picks up new code); an import error fails the boot.
        apps = load_apps(config.apps, error_log, config.workers.processes)
        # The first ssl listener's port as bound (port 0 in the file: the kernel's choice),
        # where [server] https_redirect sends plain-HTTP requests.
        https_port = next((sock.getsockname()[1] for address, sock
                           in zip(config.server.listen, listeners, strict=False)
                           if address.tls and sock.family != socket.AF_UNIX), None)
        router = Router(config, apps, https_port)
        limits = Limits(http.limit_request_line, http.limit_request_fields,
                        http.limit_request_field_size, http.limit_request_body)
        debug = error_log.enabled_for("debug")
        # At debug level every request shows its parser and router events: no quick path.
        quick = QuickPath(router, limits) if config.static.quick_path and not debug else None
        ctx = ServerContext(
            router=router,
            access_log=access_log,
            error_log=error_log,
            limits=limits,
            keepalive_timeout=http.keepalive_timeout,
            max_keepalive_requests=http.max_keepalive_requests,
            timeout=http.timeout,
            header_timeout=http.header_timeout,
            body_timeout=http.body_timeout,
            min_rate=http.min_rate,
            debug=debug,
            quick=quick,
            discard_body_limit=http.discard_body_limit,
            tls_fields=AddedFields.of(
                (("Strict-Transport-Security", config.server.hsts),) if config.server.hsts
                else ()),
        )
        workers = config.workers
        capacity = Capacity(workers.max_connections)
        threads = workers.threads

        def slots_from(first: int) -> Callable[[int], ThreadSlot | None]:
            def slot_for(index: int) -> ThreadSlot | None:
                if first + index >= THREAD_LIMIT:
                    return None
                return scoreboard.thread_slot(process_slot, first + index, generation)
            return slot_for

        # Thread slots: the loops first, then the blocking pool, then each application's.
        first = threads
        self.pools: dict[str, BlockingPool] = {
            "": BlockingPool(workers.blocking_threads, workers.blocking_queue,
                             slots_from(first))}
        first += workers.blocking_threads
        for app, _handler in apps:
            # An application's queue is bounded by the connections a worker holds: a request
            # waiting for an application thread is a connection the worker already took (as
            # gunicorn's requests wait in the backlog), so it is not refused below that.
            self.pools[app_pool(app)] = BlockingPool(app.threads, workers.max_connections,
                                                     slots_from(first), app_pool(app))
            first += app.threads
        self.tls = tls_listeners(config, listeners, error_log, tls_contexts)
        self.loops: list[EventLoop] = []
        for index in range(threads):
            slot = scoreboard.thread_slot(process_slot, index, generation)
            loop = EventLoop(index, listeners, ctx, slot, capacity, self.pools, on_loop_death,
                             self.tls)
            capacity.loops.append(loop)
            self.loops.append(loop)
        for any_slot in self.slots():
            any_slot.mount_of = ctx.router.mount_label

    def start(self) -> None:
        for pool in self.pools.values():
            pool.start()
        for loop in self.loops:
            loop.start()

    def alive(self) -> bool:
        """Every loop thread is running."""
        return all(loop.thread.is_alive() for loop in self.loops)

    def ticking(self, now: float, stall: float) -> bool:
        """Every loop turned within `stall` seconds (monotonic `now`)."""
        return all(now - loop.last_tick < stall for loop in self.loops)

    def slots(self) -> list[ThreadSlot]:
        return [loop.slot for loop in self.loops] + [
            slot for pool in self.pools.values() for slot in pool.slots]

    def drain(self, idle_grace: float | None) -> None:
        """Ask every loop to take what is queued, stop accepting and finish its connections;
        returns at once."""
        for loop in self.loops:
            loop.request_drain(idle_grace)

    def accepting_done(self) -> bool:
        """Every loop has taken its last connection from the listeners (or ended)."""
        return all(not loop.thread.is_alive() or (loop.draining and not loop.accepting)
                   for loop in self.loops)

    def wait(self, deadline: float, give_up: Callable[[], bool]) -> None:
        """Wait until every loop has finished (monotonic `deadline`, or `give_up()`)."""
        for loop in self.loops:
            while loop.thread.is_alive() and time.monotonic() < deadline and not give_up():
                loop.thread.join(JOIN_STEP)

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()


class ServedSite:
    """The `process.hooks.SiteHooks` of this server: static files, uploads, status, apps."""

    def __init__(self) -> None:
        # (a generation's Config, its contexts), newest last. The contexts are made in the
        # master before fork, so every worker of a generation (respawns included) inherits
        # them: one session-ticket key per generation, as OpenSSL makes one per context (a
        # ticket resumes on any worker, like nginx's shared key), and key files are read with
        # the master's privileges (a key readable by root alone, as certbot leaves it, works
        # with [server] user).
        self.shared_tls: list[tuple[Config, TLSContexts | None]] = []

    def check(self, config: Config) -> None:
        site_hooks.check(config)
        # Each key against its certificate (OpenSSL's load_cert_chain); ConfigError. What
        # is only a warning (a certificate about to expire) goes to stderr: httpdctl's
        # configtest and start show it; the master logs it too, in prepare().
        for warning in check_tls(config):
            print(f"httpdctl: warning: {warning}", file=sys.stderr)

    def prepare(self, config: Config, error_log: ErrorLog, owner: tuple[int, int] | None
                ) -> None:
        site_hooks.prepare(config, error_log, owner)
        for warning in expiry_warnings(config):
            error_log.warn(warning)

    def before_fork(self, config: Config, alive: Sequence[Config]) -> None:
        contexts = build_contexts(config) if any(
            address.tls for address in config.server.listen) else None
        # Kept while their generation runs (its workers may be respawned), however many
        # reloads fail meanwhile; dropped once it is retired, or its reload failed.
        kept = [(made_for, made) for made_for, made in self.shared_tls
                if any(made_for is running for running in alive)]
        self.shared_tls = [*kept, (config, contexts)]

    def worker_gone(self, config: Config, pid: int, error_log: ErrorLog) -> None:
        site_hooks.worker_gone(config, pid, error_log)

    def serve(self, config: Config, listeners: list[socket.socket], scoreboard: Scoreboard,
              process_slot: int, generation: int, error_log: ErrorLog, access_log: AccessLog,
              on_loop_death: Callable[[], None]) -> WorkerService:
        shared = next((contexts for made_for, contexts in self.shared_tls
                       if made_for is config), None)
        return WorkerService(config, listeners, scoreboard, process_slot, generation,
                             error_log, access_log, on_loop_death, shared)
