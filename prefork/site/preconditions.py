"""Conditional requests (RFC 9110 §13) and byte ranges (RFC 9110 §14) for a static resource.

Pure functions over headers and a resource's validators; static.py turns the outcome into a
response. Evaluation order follows RFC 9110 §13.2.2 exactly:
If-Match, else If-Unmodified-Since; then If-None-Match, else If-Modified-Since (GET/HEAD only);
then Range (with If-Range).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from prefork.errors import PreconditionFailed
from prefork.http.message import FieldNames, Headers
from prefork.http.parser import parse_http_date

# Apache's MaxRanges default is 200; past it the whole resource is sent (as Apache does).
MAX_RANGES = 200
NOT_MODIFIED = 304
# What evaluate() and if_range_allows() read; parse_ranges() is given the Range value.
READS_FIELDS: FieldNames = frozenset({"if-match", "if-unmodified-since", "if-none-match",
                                      "if-modified-since", "if-range"})


@dataclass(frozen=True, slots=True)
class Validators:
    etag: str  # strong entity tag, quoted: "5f2c-400"
    last_modified: float  # seconds since the epoch, whole seconds


def validators_for(info: os.stat_result) -> Validators:
    """The validators of a file: a strong ETag from mtime (ns) and size, in hex, and its
    modification time in whole seconds (HTTP dates have no fractions)."""
    return Validators(f'"{info.st_mtime_ns:x}-{info.st_size:x}"', float(int(info.st_mtime)))


def _etag_list(value: str) -> list[str]:
    """Split an If-Match / If-None-Match list into entity-tags (weak ones keep their W/)."""
    return re.findall(r'(?:W/)?"[^"]*"|\*', value)


def _weak_match(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


def evaluate(method: str, headers: Headers, validators: Validators) -> int | None:
    """Return 304 when the client's copy is current, None to go on; raise PreconditionFailed.

    RFC 9110 §13.2.2 steps 1-4. Dates are compared only when the etag headers are absent.
    """
    if_match = headers.get_joined("If-Match")
    if if_match is not None:
        tags = _etag_list(if_match)
        # Strong comparison (§13.1.1): weak tags never match.
        if "*" not in tags and validators.etag not in tags:
            raise PreconditionFailed("If-Match did not match the current entity tag")
    else:
        since = headers.get("If-Unmodified-Since")
        stamp = parse_http_date(since) if since else None
        if stamp is not None and validators.last_modified > stamp:
            raise PreconditionFailed("resource was modified after If-Unmodified-Since")

    if_none_match = headers.get_joined("If-None-Match")
    if if_none_match is not None:
        tags = _etag_list(if_none_match)
        if "*" in tags or any(_weak_match(t, validators.etag) for t in tags):
            if method in ("GET", "HEAD"):
                return NOT_MODIFIED
            raise PreconditionFailed("If-None-Match matched the current entity tag")
    elif method in ("GET", "HEAD"):
        since = headers.get("If-Modified-Since")
        stamp = parse_http_date(since) if since else None
        if stamp is not None and validators.last_modified <= stamp:
            return NOT_MODIFIED
    return None


_RANGE_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


class Unsatisfiable(Exception):
    """No requested range overlaps the representation: 416 with Content-Range bytes */len."""


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Parse a Range header into [(first, last)] inclusive byte positions within `size`.

    Returns None when the header must be ignored (not bytes, malformed, too many ranges:
    RFC 9110 §14.2 lets a server ignore Range), raises Unsatisfiable for 416. Overlapping or
    adjacent ranges are coalesced, as RFC 9110 §14.2 suggests against abuse.
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    parts = spec.split(",")
    if len(parts) > MAX_RANGES:
        return None
    for part in parts:
        if not part.strip():
            continue
        match = _RANGE_SPEC.fullmatch(part)
        if not match or (not match.group(1) and not match.group(2)):
            return None
        first_text, last_text = match.groups()
        if first_text:
            first = int(first_text)
            last = int(last_text) if last_text else size - 1
            if last_text and last < first:
                return None
            if first >= size:
                continue  # unsatisfiable on its own; others may still be satisfiable
            ranges.append((first, min(last, size - 1)))
        else:
            suffix = int(last_text)
            if suffix == 0:
                continue
            ranges.append((max(0, size - suffix), size - 1))
    if not ranges:
        if any(p.strip() for p in parts):
            raise Unsatisfiable()
        return None
    ranges.sort()
    merged = [ranges[0]]
    for first, last in ranges[1:]:
        prev_first, prev_last = merged[-1]
        if first <= prev_last + 1:
            merged[-1] = (prev_first, max(prev_last, last))
        else:
            merged.append((first, last))
    return merged


def if_range_allows(headers: Headers, validators: Validators) -> bool:
    """RFC 9110 §13.1.5: honour Range only if If-Range (when present) still matches."""
    value = headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == validators.etag  # strong comparison; a weak tag never matches
    stamp = parse_http_date(value)
    return stamp is not None and stamp == validators.last_modified
