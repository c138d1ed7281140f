"""Medians over rounds, ratios to the peers, and the Markdown/JSON results."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

MEDIAN_KEYS = ("rps", "p50_ms", "p99_ms", "p999_ms", "mb_s", "cpu_us_per_req", "cpu_s_per_gb",
               "pss_mb", "pss_base_mb", "pss_kib_per_conn", "errors", "requests",
               "client_cpu_s", "duration_s", "idle_answered", "idle_held", "log_bytes",
               "concurrency", "ideal_rps", "x_ideal", "good_rps", "error_pct")
# ratio name -> (metric, reference server)
RATIOS = {
    "rps_x_nginx": ("rps", "nginx"),
    "rps_x_gunicorn_sync": ("rps", "gunicorn-sync"),
    "p99_x_nginx": ("p99_ms", "nginx"),
    "cpu_x_nginx": ("cpu_us_per_req", "nginx"),
    "cpu_per_gb_x_nginx": ("cpu_s_per_gb", "nginx"),
    # the application workloads (--suite apps)
    "rps_x_gunicorn_gthread": ("rps", "gunicorn-gthread"),
    "rps_x_uwsgi": ("rps", "uwsgi"),
    "rps_x_granian": ("rps", "granian"),
    "p99_x_gunicorn_gthread": ("p99_ms", "gunicorn-gthread"),
    "cpu_x_gunicorn_gthread": ("cpu_us_per_req", "gunicorn-gthread"),
    "rps_x_prefork_noapp": ("rps", "prefork-noapp"),
    "p99_x_prefork_noapp": ("p99_ms", "prefork-noapp"),
    # --prefork-base: the same prefork configuration from another checkout (before/after)
    "rps_x_prefork_base": ("rps", "prefork-base"),
    "cpu_x_prefork_base": ("cpu_us_per_req", "prefork-base"),
    "cpu_per_gb_x_prefork_base": ("cpu_s_per_gb", "prefork-base"),
}


def _median(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _per_round_ratio(runs: list[dict[str, Any]], server: str, workload: str, metric: str,
                     ref: str) -> float | None:
    """Median over rounds of server/ref for one metric, each ratio taken within one round."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["workload"] == workload and r["ok"] and r.get(metric) is not None:
            by_round.setdefault(r["round"], {})[r["server"]] = r[metric]
    ratios = [vals[server] / vals[ref] for vals in by_round.values()
              if server in vals and ref in vals and vals[ref]]
    return _median(ratios)


def _counts(run: dict[str, Any], key: str) -> bool:
    """Per-connection PSS only from runs that held at least a tenth of what was asked."""
    if key != "pss_kib_per_conn":
        return True
    return run.get("idle_held", 0) >= run.get("idle_target", 0) / 10


def summarize(runs: list[dict[str, Any]], workloads: list[str],
              servers: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """workload -> server -> medians and ratios (servers that never ran are left out)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for wl in workloads:
        out[wl] = {}
        for srv in servers:
            mine = [r for r in runs if r["workload"] == wl and r["server"] == srv]
            if not mine:
                continue
            ok = [r for r in mine if r["ok"]]
            row: dict[str, Any] = {"rounds_ok": len(ok), "rounds": len(mine)}
            if not ok:
                row["error"] = mine[-1].get("error", "failed")
            for key in MEDIAN_KEYS:
                row[key] = _median([r.get(key) for r in ok if _counts(r, key)])
            for name, (metric, ref) in RATIOS.items():
                row[name] = _per_round_ratio(runs, srv, wl, metric, ref)
            out[wl][srv] = row
    _logging_cost(out)
    _concurrency_drop(out)
    return out


def _concurrency_drop(summary: dict[str, dict[str, dict[str, Any]]]) -> None:
    """For c1000: requests/s at 1,000 connections as a fraction of ka_1k's (50), per server."""
    base, wide = summary.get("ka_1k", {}), summary.get("c1000", {})
    for srv, row in wide.items():
        if row.get("rps") and base.get(srv, {}).get("rps"):
            row["rps_x_ka_1k"] = row["rps"] / base[srv]["rps"]


def _logging_cost(summary: dict[str, dict[str, dict[str, Any]]]) -> None:
    """For ka_1k_logged: requests/s with the log on as a fraction of ka_1k's, per server."""
    plain, logged = summary.get("ka_1k", {}), summary.get("ka_1k_logged", {})
    for srv, row in logged.items():
        base = plain.get(srv, {})
        if row.get("rps") and base.get("rps"):
            row["rps_x_unlogged"] = row["rps"] / base["rps"]
        if row.get("cpu_us_per_req") and base.get("cpu_us_per_req"):
            row["log_cpu_us_per_req"] = row["cpu_us_per_req"] - base["cpu_us_per_req"]


def _f(v: Any, digits: int = 0, suffix: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    return f"{v}{suffix}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


COLUMNS: list[tuple[str, Any]] = [
    ("req/s", lambda r: _f(r["rps"], 0)),
    ("x nginx", lambda r: _x(r["rps_x_nginx"])),
    ("x gunicorn-sync", lambda r: _x(r["rps_x_gunicorn_sync"])),
    ("p50 ms", lambda r: _f(r["p50_ms"], 2)),
    ("p99 ms", lambda r: _f(r["p99_ms"], 2)),
    ("p99 x nginx", lambda r: _x(r["p99_x_nginx"])),
    ("CPU µs/req", lambda r: _f(r["cpu_us_per_req"], 1)),
    ("MB/s", lambda r: _f(r["mb_s"], 1)),
    ("PSS MB", lambda r: _f(r["pss_mb"], 1)),
    ("wrk CPU %", lambda r: _f(_pct(r), 0)),
    ("errors", lambda r: _f(r["errors"], 0)),
]
BIG_COLUMNS: list[tuple[str, Any]] = [
    ("MB/s", lambda r: _f(r["mb_s"], 0)),
    ("x nginx", lambda r: _x(r["rps_x_nginx"])),
    ("CPU s/GB", lambda r: _f(r["cpu_s_per_gb"], 3)),
    ("CPU/GB x nginx", lambda r: _x(r["cpu_per_gb_x_nginx"])),
    ("p99 ms", lambda r: _f(r["p99_ms"], 1)),
    ("PSS MB", lambda r: _f(r["pss_mb"], 1)),
    ("errors", lambda r: _f(r["errors"], 0)),
]
IDLE_COLUMNS: list[tuple[str, Any]] = [
    ("held / asked", lambda r: f"{_f(r['idle_held'], 0)} / {_f(r.get('idle_target'), 0)}"),
    ("probe p50 ms", lambda r: _f(r["p50_ms"], 2)),
    ("probe p99 ms", lambda r: _f(r["p99_ms"], 2)),
    ("probe req/s", lambda r: _f(r["rps"], 0)),
    ("PSS MB idle → held", lambda r: f"{_f(r['pss_base_mb'], 1)} → {_f(r['pss_mb'], 1)}"),
    ("KiB/conn", lambda r: _f(r["pss_kib_per_conn"], 1)),
    ("CPU µs/req", lambda r: _f(r["cpu_us_per_req"], 1)),
    ("probe errors", lambda r: _f(r["errors"], 0)),
]
LOGGED_EXTRA: list[tuple[str, Any]] = [
    ("x unlogged", lambda r: _x(r.get("rps_x_unlogged"))),
    ("log CPU µs/req", lambda r: _f(r.get("log_cpu_us_per_req"), 1)),
]


C1000_EXTRA: list[tuple[str, Any]] = [
    ("x ka_1k (50 conns)", lambda r: _x(r.get("rps_x_ka_1k"))),
]


APP_COLUMNS: list[tuple[str, Any]] = [
    ("req/s", lambda r: _f(r["rps"], 0)),
    ("x gunicorn-gthread", lambda r: _x(r["rps_x_gunicorn_gthread"])),
    ("x uwsgi", lambda r: _x(r["rps_x_uwsgi"])),
    ("x granian", lambda r: _x(r["rps_x_granian"])),
    ("p50 ms", lambda r: _f(r["p50_ms"], 2)),
    ("p99 ms", lambda r: _f(r["p99_ms"], 2)),
    ("p99 x gthread", lambda r: _x(r["p99_x_gunicorn_gthread"])),
    ("CPU µs/req", lambda r: _f(r["cpu_us_per_req"], 1)),
    ("CPU x gthread", lambda r: _x(r["cpu_x_gunicorn_gthread"])),
    ("MB/s", lambda r: _f(r["mb_s"], 1)),
    ("PSS MB", lambda r: _f(r["pss_mb"], 1)),
    ("wrk CPU %", lambda r: _f(_pct(r), 0)),
    ("errors", lambda r: _f(r["errors"], 0)),
]
SLEEP_COLUMNS: list[tuple[str, Any]] = [
    ("2xx req/s", lambda r: _f(r["good_rps"], 0)),
    ("all req/s", lambda r: _f(r["rps"], 0)),
    ("errors %", lambda r: _f(r["error_pct"], 1)),
    ("procs x threads", lambda r: _f(r["concurrency"], 0)),
    ("ideal req/s", lambda r: _f(r["ideal_rps"], 0)),
    ("2xx x ideal", lambda r: _x(r["x_ideal"])),
    ("p50 ms", lambda r: _f(r["p50_ms"], 2)),
    ("p99 ms", lambda r: _f(r["p99_ms"], 2)),
    ("CPU µs/req", lambda r: _f(r["cpu_us_per_req"], 1)),
    ("PSS MB", lambda r: _f(r["pss_mb"], 1)),
    ("errors", lambda r: _f(r["errors"], 0)),
]
STATIC_APP_COLUMNS: list[tuple[str, Any]] = [
    ("req/s", lambda r: _f(r["rps"], 0)),
    ("x prefork-noapp", lambda r: _x(r["rps_x_prefork_noapp"])),
    ("p50 ms", lambda r: _f(r["p50_ms"], 2)),
    ("p99 ms", lambda r: _f(r["p99_ms"], 2)),
    ("p99 x noapp", lambda r: _x(r["p99_x_prefork_noapp"])),
    ("CPU µs/req", lambda r: _f(r["cpu_us_per_req"], 1)),
    ("PSS MB", lambda r: _f(r["pss_mb"], 1)),
    ("wrk CPU %", lambda r: _f(_pct(r), 0)),
    ("errors", lambda r: _f(r["errors"], 0)),
]
APP_WORKLOADS = ("hello_ka", "hello_close", "flask_json", "echo_64k")


def _pct(r: dict[str, Any]) -> float | None:
    if r.get("client_cpu_s") is None or not r.get("duration_s"):
        return None
    return 100.0 * r["client_cpu_s"] / r["duration_s"]


TLS_COLUMNS: list[tuple[str, Any]] = [
    ("req/s", lambda r: _f(r["rps"], 0)),
    ("x nginx", lambda r: _x(r["rps_x_nginx"])),
    ("p50 ms", lambda r: _f(r["p50_ms"], 2)),
    ("p99 ms", lambda r: _f(r["p99_ms"], 2)),
    ("p99 x nginx", lambda r: _x(r["p99_x_nginx"])),
    ("CPU µs/req", lambda r: _f(r["cpu_us_per_req"], 1)),
    ("CPU x nginx", lambda r: _x(r["cpu_x_nginx"])),
    ("PSS MB", lambda r: _f(r["pss_mb"], 1)),
    ("wrk CPU %", lambda r: _f(_pct(r), 0)),
    ("errors", lambda r: _f(r["errors"], 0)),
]
BASE_COLUMNS: list[tuple[str, Any]] = [  # with --prefork-base
    ("x base", lambda r: _x(r["rps_x_prefork_base"])),
    ("CPU x base", lambda r: _x(r["cpu_x_prefork_base"])),
]
BIG_BASE_COLUMNS: list[tuple[str, Any]] = [
    ("CPU/GB x base", lambda r: _x(r["cpu_per_gb_x_prefork_base"])),
]


def _columns(workload: str, with_base: bool = False) -> list[tuple[str, Any]]:
    if workload in ("tls_ka_1k", "tls_close_1k", "tls_resume_1k"):
        return TLS_COLUMNS + (BASE_COLUMNS if with_base else [])
    if workload == "tls_big_10m" and with_base:
        return BIG_COLUMNS + BIG_BASE_COLUMNS
    workload = workload.removeprefix("tls_")  # the idle and big workloads: as over plain TCP
    if workload in APP_WORKLOADS:
        return APP_COLUMNS
    if workload == "sleep_10ms":
        return SLEEP_COLUMNS
    if workload == "static_app":
        return STATIC_APP_COLUMNS
    if workload.startswith("idle"):
        return IDLE_COLUMNS
    if workload.startswith("big"):
        return BIG_COLUMNS
    if workload.endswith("logged"):
        return COLUMNS[:1] + LOGGED_EXTRA + COLUMNS[1:]
    if workload == "c1000":
        return COLUMNS[:1] + C1000_EXTRA + COLUMNS[1:]
    return COLUMNS


def workload_table(workload: str, rows: dict[str, dict[str, Any]], idle_target: int) -> str:
    cols = _columns(workload, "prefork-base" in rows)
    lines = ["| server | " + " | ".join(c for c, _ in cols) + " | rounds |",
             "|---|" + "---:|" * len(cols) + "---:|"]
    for srv, row in rows.items():
        if row["rounds_ok"] == 0:
            err = str(row.get("error", "failed")).splitlines()[0][:120]
            lines.append(f"| {srv} | failed: {err} |" + " |" * len(cols))
            continue
        row = {**row, "idle_target": idle_target}
        cells = " | ".join(fn(row) for _, fn in cols)
        lines.append(f"| {srv} | {cells} | {row['rounds_ok']}/{row['rounds']} |")
    return "\n".join(lines)


def markdown(meta: dict[str, Any], summary: dict[str, dict[str, dict[str, Any]]],
             titles: dict[str, str], idle_targets: dict[str, int]) -> str:
    out = [f"# Benchmark results — {meta['date']}", "",
           f"Command: `{meta['command']}`  ",
           f"Machine: {meta['machine']}  ",
           f"Rounds: {meta['rounds']} x {meta['duration_s']} s measured (+{meta['warmup_s']} s "
           "warm-up), servers rotated each round; figures are medians over rounds, ratios are "
           "medians of per-round ratios.", ""]
    if meta.get("interrupted"):
        out += ["**Interrupted: partial results.**", ""]
    for wl, rows in summary.items():
        if not rows:
            continue
        out += [f"## {wl}: {titles.get(wl, '')}", "",
                workload_table(wl, rows, idle_targets.get(wl, 0)), ""]
        na = meta.get("not_applicable", {}).get(wl, {})
        if na:
            out += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in na.items()), ""]
    for title, targets in (("Issue 14's targets (prefork hosting the application)",
                            app_targets(summary)),
                           ("Issue 15's targets (prefork terminating TLS)",
                            tls_targets(summary))):
        if targets:
            out += [f"## {title}", "", "| target | measured | |", "|---|---|---|"]
            out += [f"| {t} | {m} | "
                    f"{'met' if ok else ('**not met**' if ok is False else '-')} |"
                    for t, m, ok in targets]
            out += [""]
    if meta.get("tls_certificate"):
        out += [f"TLS: {meta['tls_certificate']}; every server: TLSv1.2 and TLSv1.3, prefork's "
                "default TLS 1.2 cipher list, OpenSSL's TLS 1.3 suites, session tickets as "
                "each server's default.", ""]
    out += ["## Servers", "", "| server | configuration | version |", "|---|---|---|"]
    for name, info in meta["servers"].items():
        out.append(f"| {name} | {info['config']} | {info['version']} |")
    if meta["skipped"]:
        out += ["", "Skipped:", ""]
        out += [f"- {name}: {why}" for name, why in meta["skipped"].items()]
    out += ["", "CPU µs/req: utime+stime of the server's whole process tree (from /proc) over "
            "the measured run, divided by its requests. PSS: sum over the tree of "
            "/proc/PID/smaps_rollup Pss, right after the run. wrk CPU %: the load "
            "generator's CPU over the run (200 % = both cores). MB = 10^6 bytes.", ""]
    return "\n".join(out)


def app_targets(summary: dict[str, dict[str, dict[str, Any]]]
                ) -> list[tuple[str, str, bool | None]]:
    """Issue 14's targets for prefork: (target, what was measured, met / not / unknown)."""
    rows: list[tuple[str, str, bool | None]] = []

    def pf(wl: str) -> dict[str, Any]:
        return summary.get(wl, {}).get("prefork", {})

    def ratio_row(wl: str, key: str, ref: str, want: float, title: str) -> None:
        row = pf(wl)
        if not row or row.get("rounds_ok", 0) == 0:
            return
        v = row.get(key)
        ref_rps = summary.get(wl, {}).get(ref, {}).get("rps")
        text = (f"{_f(row.get('rps'), 0)} vs {_f(ref_rps, 0)} req/s: **{_x(v)}** "
                "(median of per-round ratios)")
        rows.append((title, text, None if v is None else v >= want))

    ratio_row("hello_ka", "rps_x_gunicorn_gthread", "gunicorn-gthread", 3.0,
              "`hello_ka` ≥ 3× gunicorn-gthread")
    ratio_row("hello_ka", "rps_x_uwsgi", "uwsgi", 1.0, "`hello_ka` ≥ 1× uWSGI")
    ratio_row("hello_ka", "rps_x_granian", "granian", 0.8, "`hello_ka` ≥ 0.8× granian")
    row = pf("hello_ka")
    if row.get("rounds_ok"):
        v = row.get("p99_x_gunicorn_gthread")
        ref = summary["hello_ka"].get("gunicorn-gthread", {}).get("p99_ms")
        rows.append(("`hello_ka` p99 ≤ gunicorn-gthread's",
                     f"{_f(row.get('p99_ms'), 2)} vs {_f(ref, 2)} ms: **{_x(v)}**",
                     None if v is None else v <= 1.0))
    ratio_row("flask_json", "rps_x_gunicorn_gthread", "gunicorn-gthread", 1.5,
              "`flask_json` ≥ 1.5× gunicorn-gthread")
    row = pf("sleep_10ms")
    if row.get("rounds_ok"):
        v, err = row.get("x_ideal"), row.get("error_pct") or 0.0
        rows.append(("`sleep_10ms` within 10% of processes × threads / 10 ms (and every "
                     "request answered 2xx)",
                     f"{_f(row.get('good_rps'), 0)} 2xx req/s vs ideal "
                     f"{_f(row.get('ideal_rps'), 0)}: **{_x(v)}**; {_f(err, 1)} % of the "
                     f"responses were errors ({_f(row.get('rps'), 0)} req/s in all)",
                     None if v is None else (v >= 0.9 and err < 1.0)))
    row = pf("static_app")
    if row.get("rounds_ok"):
        v = row.get("rps_x_prefork_noapp")
        ref = summary["static_app"].get("prefork-noapp", {}).get("rps")
        # "no slower": within the run-to-run noise of ±5 % counts as level.
        rows.append(("`static_app` no slower than without the application",
                     f"{_f(row.get('rps'), 0)} vs {_f(ref, 0)} req/s: **{_x(v)}** "
                     "(≥ 0.95× counted as level)", None if v is None else v >= 0.95))
    return rows


def tls_targets(summary: dict[str, dict[str, dict[str, Any]]]
                ) -> list[tuple[str, str, bool | None]]:
    """Issue 15's targets for prefork: (target, what was measured, met / not / unknown)."""
    rows: list[tuple[str, str, bool | None]] = []

    def pf(wl: str) -> dict[str, Any]:
        return summary.get(wl, {}).get("prefork", {})

    def ng(wl: str) -> dict[str, Any]:
        return summary.get(wl, {}).get("nginx", {})

    for wl, want in (("tls_ka_1k", 0.6), ("tls_close_1k", 0.7)):
        row = pf(wl)
        if row.get("rounds_ok"):
            v = row.get("rps_x_nginx")
            rows.append((f"`{wl}` ≥ {want}× nginx",
                         f"{_f(row.get('rps'), 0)} vs {_f(ng(wl).get('rps'), 0)} req/s: "
                         f"**{_x(v)}** (CPU {_f(row.get('cpu_us_per_req'), 1)} vs "
                         f"{_f(ng(wl).get('cpu_us_per_req'), 1)} µs/req)",
                         None if v is None else v >= want))
    row = pf("tls_big_10m")
    if row.get("rounds_ok"):
        v = row.get("cpu_per_gb_x_nginx")
        rows.append(("`tls_big_10m` CPU per GB ≤ 2.5× nginx's",
                     f"{_f(row.get('cpu_s_per_gb'), 2)} vs "
                     f"{_f(ng('tls_big_10m').get('cpu_s_per_gb'), 2)} CPU s/GB: **{_x(v)}**",
                     None if v is None else v <= 2.5))
    row = pf("tls_idle_1k_probe")
    if row.get("rounds_ok"):
        v = row.get("p99_ms")
        held = row.get("idle_held")
        rows.append(("`tls_idle_1k_probe` probe p99 ≤ 5 ms with 1,000 idle TLS connections "
                     "held (worker memory reported)",
                     f"p99 **{_f(v, 2)} ms**, {_f(held, 0)} held; PSS "
                     f"{_f(row.get('pss_base_mb'), 1)} → {_f(row.get('pss_mb'), 1)} MB "
                     f"({_f(row.get('pss_kib_per_conn'), 1)} KiB/connection)",
                     None if v is None else (v <= 5.0 and (held or 0) >= 1000)))
    return rows


def write_results(out_dir: Path, meta: dict[str, Any], runs: list[dict[str, Any]],
                  summary: dict[str, dict[str, dict[str, Any]]], titles: dict[str, str],
                  idle_targets: dict[str, int]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / "latest.md", out_dir / "latest.json"
    md_path.write_text(markdown(meta, summary, titles, idle_targets))
    json_path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs},
                                    indent=1, sort_keys=False) + "\n")
    return md_path, json_path


def rerender(out_dir: Path) -> Path:
    """Write latest.md again from latest.json (after a change to the report's layout)."""
    data = json.loads((out_dir / "latest.json").read_text())
    meta, runs = data["meta"], data["runs"]
    workloads = list(dict.fromkeys(r["workload"] for r in runs))
    servers = list(dict.fromkeys(r["server"] for r in runs))
    data["summary"] = summarize(runs, workloads, servers)
    (out_dir / "latest.json").write_text(json.dumps(data, indent=1) + "\n")
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown(meta, data["summary"], meta.get("titles", {}),
                                meta.get("idle_targets", {})))
    return md_path


if __name__ == "__main__":
    import sys

    print(rerender(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")))
