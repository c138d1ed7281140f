"""Confirmation mode: send each selected spec entry once and check the response.

Requests go over one persistent http.client connection (https too), with exactly the
method, target, headers and body that request.prepare() built. A request that fails on a
reused connection before any response arrives is retried once on a new connection. If the
server cannot be connected to at all, Unreachable is raised: there is nothing to confirm.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .report import table
from .request import Prepared, Target, prepare, unreachable
from .spec import Entry, Expectation

RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass
class Check:
    entry: Entry
    status: int | None = None
    reason: str = ""
    elapsed: float = 0.0  # seconds
    size: int = 0  # body bytes
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Confirmer:
    def __init__(self, target: Target, timeout: float, insecure: bool = False,
                 debug: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.context = target.ssl_context(insecure)
        self.debug = debug
        self.conn: http.client.HTTPConnection | None = None

    def run(self, entries: tuple[Entry, ...]) -> list[Check]:
        """Check every entry, in order. Raises Unreachable, or UploadError for an upload
        file that cannot be read."""
        try:
            return [self.check(entry) for entry in entries]
        finally:
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            t = self.target
            if self.context is not None:
                self.conn = http.client.HTTPSConnection(t.host, t.port, timeout=self.timeout,
                                                        context=self.context)
            else:
                self.conn = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)
            try:
                self.conn.connect()
            except OSError as exc:
                self.conn = None
                raise unreachable(t, exc) from None
        return self.conn

    def check(self, entry: Entry) -> Check:
        request = prepare(entry, self.target)
        result = Check(entry)
        start = time.perf_counter()
        for attempt in (1, 2):
            reused = self.conn is not None
            conn = self.connect()
            start = time.perf_counter()
            try:
                response, body = self.exchange(conn, request)
                break
            except RETRYABLE as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                result.problems.append(f"connection closed without a response ({exc!r})")
            except TimeoutError:
                self.close()
                result.problems.append(f"no response within {self.timeout:g} s")
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                result.problems.append(f"bad response: {exc!r}")
            result.elapsed = time.perf_counter() - start
            self.log(f"{entry.label} -> error: {result.problems[-1]} "
                     f"({result.elapsed * 1000:.2f} ms)")
            return result
        result.elapsed = time.perf_counter() - start
        result.status, result.reason, result.size = response.status, response.reason, len(body)
        if response.will_close:
            self.close()
        self.log(f"{entry.label} -> {response.status} {response.reason} "
                 f"({result.elapsed * 1000:.2f} ms, {len(body)} bytes)")
        result.problems.extend(problems(entry.expect, response, body))
        return result

    @staticmethod
    def exchange(conn: http.client.HTTPConnection,
                 request: Prepared) -> tuple[http.client.HTTPResponse, bytes]:
        conn.putrequest(request.method, request.target, skip_host=True,
                        skip_accept_encoding=True)
        for name, value in request.headers:
            conn.putheader(name, value)
        conn.endheaders(request.body or None)
        response = conn.getresponse()
        return response, response.read()

    def log(self, line: str) -> None:
        if self.debug is not None:
            self.debug(line)


def problems(expect: Expectation, response: http.client.HTTPResponse,
             body: bytes) -> list[str]:
    """Every way the response misses the expectation (empty: it passes)."""
    found = []
    if not expect.status_ok(response.status):
        found.append(f"status {response.status}, expected {expect.describe_status()}")
    text = body.decode("utf-8", errors="replace")
    for needle in expect.body_contains:
        if needle not in text:
            found.append(f"body lacks {needle!r}")
    if expect.body_equals is not None and text != expect.body_equals:
        found.append(f"body is {_clip(text)!r}, expected {_clip(expect.body_equals)!r}")
    if expect.has_json:
        try:
            document = json.loads(text)
        except ValueError:
            found.append("body is not JSON")
        else:
            if not json_contains(document, expect.json_subset):
                found.append(f"JSON body {_clip(json.dumps(document))} does not contain "
                             f"{_clip(json.dumps(expect.json_subset))}")
    for name, value in expect.headers:
        actual = response.getheader(name)
        if actual is None:
            found.append(f"no {name} header")
        elif value.lower() not in actual.lower():
            found.append(f"{name} is {actual!r}, expected it to contain {value!r}")
    return found


def json_contains(document: Any, subset: Any) -> bool:
    """Objects: every key of `subset` is in `document` with a containing value; lists: same
    length, element by element; anything else: equal."""
    if isinstance(subset, dict):
        return isinstance(document, dict) and all(
            key in document and json_contains(document[key], value)
            for key, value in subset.items())
    if isinstance(subset, list):
        return (isinstance(document, list) and len(document) == len(subset)
                and all(json_contains(d, s) for d, s in zip(document, subset, strict=True)))
    return bool(document == subset and type(document) is type(subset))


def format_checks(checks: list[Check]) -> list[str]:
    """The confirm table: one row per request, the reasons for a FAIL beside it."""
    rows = []
    for c in checks:
        got = str(c.status) if c.status is not None else "-"
        rows.append((str(c.entry.index), c.entry.method, c.entry.url,
                     c.entry.expect.describe_status(), got, f"{c.elapsed * 1000:.1f}",
                     "OK" if c.ok else "FAIL  " + "; ".join(c.problems)))
    return table(("#", "method", "url", "expected", "got", "time ms", "result"), rows,
                 right={0, 5})


def checks_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [{"entry": c.entry.index, "method": c.entry.method, "url": c.entry.url,
             "expected": list(c.entry.expect.statuses) or "2xx/3xx", "status": c.status,
             "time_ms": round(c.elapsed * 1000, 3), "bytes": c.size, "ok": c.ok,
             "problems": c.problems} for c in checks]


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
