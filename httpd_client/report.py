"""Turning measurements into reports: the load summary (text and JSON) and the confirm table.

Latency percentiles are exact: every response's latency is kept, the processes' samples are
merged and sorted, and pN is the nearest-rank value (the smallest sample with at least N% of
the samples at or below it). Failed requests have no latency; they are counted by kind.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

from .engine import WorkerResult
from .load import LoadOptions, LoadOutcome
from .request import Target
from .spec import Entry

PERCENTILES = (50, 90, 99)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when it is empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(outcome: LoadOutcome, target: Target, entries: tuple[Entry, ...],
              options: LoadOptions, spec: str) -> dict[str, Any]:
    """The load run as one JSON-ready dict (the shape `load --json` prints)."""
    results: list[WorkerResult] = outcome.results
    samples = array("d")
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    per_entry = [[0.0, 0.0, 0.0, 0.0] for _ in entries]
    for res in results:
        samples.extend(res.latencies)
        for status, n in res.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
        for kind, n in res.errors.items():
            errors[kind] = errors.get(kind, 0) + n
        for i, counts in enumerate(res.per_entry):
            for j, value in enumerate(counts):
                per_entry[i][j] += value
    ordered = sorted(samples)
    completed = len(ordered)
    failed = sum(errors.values())
    elapsed = outcome.elapsed
    received = sum(r.bytes_received for r in results)
    latency = {"min": ordered[0] if ordered else 0.0,
               "mean": (math.fsum(ordered) / completed) if completed else 0.0,
               **{f"p{p}": percentile(ordered, p) for p in PERCENTILES},
               "max": ordered[-1] if ordered else 0.0}
    return {
        "url": target.url(),
        "spec": spec,
        "processes": outcome.processes,
        "concurrency": outcome.concurrency,
        "planned": outcome.planned,
        "duration_s": options.duration,
        "interrupted": outcome.interrupted,
        "elapsed_s": round(elapsed, 6),
        "requests": completed + failed,
        "responses": completed,
        "requests_per_s": round(completed / elapsed, 1),
        "latency_ms": {k: round(v * 1000, 3) for k, v in latency.items()},
        "bytes": {"received": received, "sent": sum(r.bytes_sent for r in results),
                  "received_per_s": round(received / elapsed)},
        "status": {str(k): statuses[k] for k in sorted(statuses)},
        "unexpected_status": sum(r.unexpected for r in results),
        "errors": {"total": failed, "by_kind": dict(sorted(errors.items()))},
        "connections": {"opened": sum(r.connects for r in results),
                        "closed_by_server": sum(r.server_closes for r in results),
                        "retried_requests": sum(r.retries for r in results)},
        "abandoned_in_flight": sum(r.abandoned for r in results),
        "entries": [{"entry": e.index, "method": e.method, "url": e.url,
                     "responses": int(done), "errors": int(bad), "unexpected": int(odd),
                     "mean_ms": round(total / done * 1000, 3) if done else None}
                    for e, (done, bad, odd, total) in zip(entries, per_entry, strict=True)],
    }


def format_load(summary: dict[str, Any]) -> str:
    """The human-readable load report."""
    lat = summary["latency_ms"]
    errors = summary["errors"]
    conns = summary["connections"]
    if summary["planned"] is not None:
        plan = f"{summary['planned']} requests planned"
    else:
        plan = f"for {summary['duration_s']:g} s"
    lines = [
        f"httpd-client load: {summary['url']} (spec {summary['spec']})",
        f"  {summary['processes']} process(es), {summary['concurrency']} connection(s), "
        f"{plan}" + (", INTERRUPTED" if summary["interrupted"] else ""),
        "",
        f"requests     {summary['requests']} in {summary['elapsed_s']:.2f} s: "
        f"{summary['requests_per_s']:.1f} requests/s, {errors['total']} failed",
        "latency      " + ", ".join(f"{k} {_ms(v)}" for k, v in lat.items()),
        f"transfer     received {_size(summary['bytes']['received'])} "
        f"({_size(summary['bytes']['received_per_s'])}/s), "
        f"sent {_size(summary['bytes']['sent'])}",
        "status       " + (", ".join(f"{k}: {v}" for k, v in summary["status"].items())
                           or "none"),
        "errors       " + (", ".join(f"{k}: {v}" for k, v in errors["by_kind"].items())
                           or "none"),
        f"connections  {conns['opened']} opened, {conns['closed_by_server']} closed by the "
        f"server, {conns['retried_requests']} request(s) retried",
    ]
    if summary["unexpected_status"]:
        lines.append(f"unexpected   {summary['unexpected_status']} response(s) with a status "
                     f"the spec's \"expect\" does not allow")
    if summary["abandoned_in_flight"]:
        lines.append(f"abandoned    {summary['abandoned_in_flight']} request(s) in flight "
                     f"at the end")
    rows = [(str(e["entry"]), e["method"], e["url"], str(e["responses"]), str(e["errors"]),
             str(e["unexpected"]), "-" if e["mean_ms"] is None else f"{e['mean_ms']:.2f}")
            for e in summary["entries"]]
    lines.append("")
    lines.extend(table(("#", "method", "url", "responses", "errors", "unexpected",
                        "mean ms"), rows, right={0, 3, 4, 5, 6}))
    return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[str]],
          right: set[int] | frozenset[int] = frozenset()) -> list[str]:
    """Plain-text table lines; columns in `right` are right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for row in [header, *rows]:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
