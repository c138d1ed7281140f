"""An event loop and a blocking pool run in the test process, around a stub router, so the
exception barriers can be driven with faults a real site does not have on demand."""

from __future__ import annotations

import mmap
import socket
from pathlib import Path

from prefork.http.message import Request, Response
from prefork.http.parser import Limits
from prefork.log import COMBINED_FORMAT, AccessLog, ErrorLog
from prefork.scoreboard import THREAD_SLOT, ThreadSlot
from prefork.serve.connection import Action, ServerContext
from prefork.serve.loop import Capacity, EventLoop
from prefork.serve.pool import BlockingPool

EXPLODE = "/explode-in-framing"
EXIT = "/exit-in-handler"  # a handler that raises SystemExit, as an application's sys.exit()


class ExplodingResponse(Response):
    def body_length(self) -> int | None:
        raise RuntimeError("a bug in a response")


class StubRouter:
    """`/explode-in-framing` answers a response that raises when framing asks its length
    (a bug, not a field framing could refuse): framing raises after the handler returned,
    outside the handler's own barrier. `/exit-in-handler` raises SystemExit, which no
    `except Exception` catches. Anything else: 200 "ok"."""

    def pool_for(self, method: str, path: str, scheme: str = "http") -> str | None:
        return None


    def handle(self, request: Request, local: tuple[str, int]) -> Response:
        request.body.read()
        if request.path == EXPLODE:
            return ExplodingResponse(200, [], b"never sent")
        if request.path == EXIT:
            raise SystemExit(3)
        return Response(200, [("Content-Type", "text/plain")], b"ok")


class LoopHarness:
    def __init__(self, base: Path) -> None:
        self.error_path = base / "error.log"
        ctx = ServerContext(StubRouter(), AccessLog(str(base / "access.log"), COMBINED_FORMAT),
                            ErrorLog(str(self.error_path), "info"), Limits(), 5, 100, 5, 5, 5,
                            0, False)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.pool = BlockingPool(2, 4, lambda _index: None)
        self.deaths: list[int] = []
        slot = ThreadSlot(mmap.mmap(-1, THREAD_SLOT), 0, 1)
        self.loop = EventLoop(0, [self.listener], ctx, slot, Capacity(100), {"": self.pool},
                              lambda: self.deaths.append(1))
        self.pool.start()
        self.loop.start()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def kill_loop(self) -> None:
        """Hand the loop something that is no connection: a bug outside every barrier."""
        self.loop.mailbox.post(("not a connection", Action.CLOSE))  # type: ignore[arg-type]

    def error_log_text(self) -> str:
        return self.error_path.read_text() if self.error_path.exists() else ""

    def stop(self) -> None:
        if self.loop.thread.is_alive():
            self.loop.request_drain(0)
            self.loop.thread.join(10)
        self.pool.shutdown()
        self.listener.close()
