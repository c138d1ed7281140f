"""Loads the request corpus (tests/corpus/, format in its README.md) and runs the parser.

run() feeds chunks to a RequestParser and reduces everything it did to an Outcome: the
requests it produced (complete or not) and how it ended. The outcome of the whole input
must not depend on how the input is split, and must match the case's expectations.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefork.errors import ClientDisconnected, HTTPError
from prefork.http.parser import (
    NEED_DATA,
    BodyChunk,
    EndOfMessage,
    Limits,
    RequestHead,
    RequestParser,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt0\\]|.)")
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "0": "\0", "\\": "\\"}
DEFAULT_LIMITS = Limits()
TERMINALS = {"ok", "incomplete", "disconnect", "400", "413", "414", "417", "431", "501", "505"}


@dataclass
class Case:
    name: str
    raw: bytes
    expect: str
    limits: Limits = field(default_factory=Limits)
    eof: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    request_line: str | None = None
    has_request_line: bool = False


@dataclass
class Outcome:
    requests: list[dict[str, Any]]
    terminal: str  # "ok", "incomplete", "disconnect" or an error status
    request_line: str | None


def unescape(text: str) -> bytes:
    """Drop the file's own line breaks, then interpret \\r \\n \\t \\0 \\\\ and \\xHH."""
    text = text.replace("\r", "").replace("\n", "")

    def sub(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        if code in _SIMPLE:
            return _SIMPLE[code]
        raise ValueError(f"unknown escape \\{code}")

    return _ESCAPE.sub(sub, text).encode("latin-1")


def escape(data: bytes) -> str:
    """The inverse of unescape(), with a line break after every \\n for readability."""
    out = []
    for byte in data:
        char = chr(byte)
        if char == "\\":
            out.append("\\\\")
        elif char == "\r":
            out.append("\\r")
        elif char == "\n":
            out.append("\\n\n")
        elif char == "\t":
            out.append("\\t")
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def parse_case(path: Path) -> Case:
    """Read one .http case; raises ValueError when the file is malformed."""
    text = path.read_text(encoding="utf-8")
    meta, sep, body = text.partition("\n---\n")
    if not sep:
        raise ValueError(f"{path}: no '---' line")
    case = Case(name=str(path.relative_to(CORPUS).with_suffix("")), raw=unescape(body),
                expect="")
    for line in meta.splitlines():
        if not line.startswith("#"):
            raise ValueError(f"{path}: metadata lines start with '#': {line!r}")
        key, colon, value = line[1:].strip().partition(":")
        value = value.strip()
        if not colon or key not in {"expect", "limits", "eof", "request", "request_line"}:
            continue  # a comment
        if key == "expect":
            case.expect = value
        elif key == "limits":
            case.limits = Limits(**{k: int(v) for k, v in
                                    (item.split("=") for item in value.split())})
        elif key == "eof":
            case.eof = value == "true"
        elif key == "request":
            case.requests.append(json.loads(value))
        else:
            case.request_line = json.loads(value)
            case.has_request_line = True
    if case.expect not in TERMINALS:
        raise ValueError(f"{path}: '# expect:' must be one of {sorted(TERMINALS)}")
    return case


def load_cases() -> list[Case]:
    return [parse_case(path) for path in sorted(CORPUS.rglob("*.http"))]


def summary(head: RequestHead) -> dict[str, Any]:
    return {
        "method": head.method, "target": head.target, "path": head.path,
        "query": head.query, "version": head.version, "host": head.host,
        "keep_alive": head.keep_alive, "content_length": head.content_length,
        "chunked": head.chunked, "expect_continue": head.expect_continue,
        "headers": [list(pair) for pair in head.headers], "body": "", "trailers": [],
        "complete": False,
    }


def run(chunks: Iterable[bytes], limits: Limits = DEFAULT_LIMITS, eof: bool = False) -> Outcome:
    """Feed `chunks` (then EOF if asked), draining events after each; return the Outcome.

    Asserts the parser's invariants on the way: events in order, no empty BodyChunk,
    close=True on every error, the same error again once dead, ClientDisconnected only
    after feed_eof(), NEED_DATA after EndOfMessage until start_next_request().
    """
    parser = RequestParser(limits)
    requests: list[dict[str, Any]] = []

    def drain() -> str | None:
        while True:
            try:
                event = parser.next_event()
            except HTTPError as exc:
                assert exc.close, exc
                try:
                    parser.next_event()
                except HTTPError as again:
                    assert again.status == exc.status
                else:
                    raise AssertionError("a dead parser produced an event")
                return str(exc.status)
            except ClientDisconnected:
                assert parser.eof, "ClientDisconnected before feed_eof()"
                return "disconnect"
            if event is NEED_DATA:
                return None
            if isinstance(event, RequestHead):
                assert not requests or requests[-1]["complete"], "head inside a message"
                assert parser.in_body
                requests.append(summary(event))
            elif isinstance(event, BodyChunk):
                assert event.data, "empty BodyChunk"
                assert requests and not requests[-1]["complete"]
                requests[-1]["body"] += event.data.decode("latin-1")
            else:
                assert isinstance(event, EndOfMessage), event
                current = requests[-1]
                assert not current["complete"]
                if not current["chunked"]:
                    assert len(current["body"]) == (current["content_length"] or 0)
                current["trailers"] = [list(pair) for pair in event.trailers]
                current["complete"] = True
                assert not parser.in_body
                assert parser.next_event() is NEED_DATA
                parser.start_next_request()

    terminal = None
    for chunk in chunks:
        before = parser.buffered
        parser.feed(chunk)
        assert parser.buffered == before + len(chunk)
        terminal = drain()
        if terminal:
            break
    if terminal is None and eof:
        parser.feed_eof()
        terminal = drain()
        if terminal is None:
            assert parser.idle and parser.next_event() is NEED_DATA
    if terminal is None:
        terminal = "ok" if parser.idle else "incomplete"
    return Outcome(requests, terminal, parser.request_line)


def splits(data: bytes, seed: str, randoms: int = 20) -> dict[str, list[bytes]]:
    """The ways to split `data`: whole, after each LF, per byte, `randoms` random cuts."""
    ways = {"whole": [data], "bytes": [data[i:i + 1] for i in range(len(data))]}
    lines = data.split(b"\n")
    ways["lines"] = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    rng = random.Random(zlib.crc32(seed.encode()))
    for n in range(randoms):
        count = min(len(data) - 1, rng.randint(1, 12)) if len(data) > 1 else 0
        bounds = [0, *sorted(rng.sample(range(1, len(data)), count)), len(data)]
        ways[f"random{n}"] = [data[a:b] for a, b in itertools.pairwise(bounds)]
    return ways


def check_expectations(case: Case, outcome: Outcome) -> None:
    """Assert that `outcome` is what `case` expects (see tests/corpus/README.md)."""
    assert outcome.terminal == case.expect, (case.name, outcome.terminal, outcome.requests)
    assert len(outcome.requests) == len(case.requests), (case.name, outcome.requests)
    for got, want in zip(outcome.requests, case.requests, strict=True):
        want = {"body": "", "trailers": [], "complete": True, **want}
        for key, value in want.items():
            assert key in got, f"{case.name}: unknown key {key!r}"
            assert got[key] == value, (case.name, key, got[key], value)
    if case.has_request_line:
        assert outcome.request_line == case.request_line, (case.name, outcome.request_line)
