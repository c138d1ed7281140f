#!/usr/bin/env python3
"""Benchmark prefork against the servers a user would pick instead. One command:

    python3 bench/run.py [--rounds 3] [--duration 5] [--servers nginx,apache,...]
                         [--workloads ka_1k,close_1k,...] [--quick]
    python3 bench/run.py --suite apps     # WSGI application hosting against the Python peers

Each round runs every selected workload against every available server, starting each round
with a different server; each (round, workload, server) gets a freshly started server with its
own configuration. Results: bench/results/latest.md and latest.json; raw wrk output in
bench/results/raw/<date>/. Stdlib only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import Running, StartError, stop_all
from report import summarize, write_results
from servers import (DEFAULT_SERVERS, TLS_SERVERS, Options, Server, by_name, free_port,
                     make_certificate)
from workloads import SUITES, WORKLOADS, Workload, measure, write_docroot

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (0: none)")
    ap.add_argument("--suite", choices=sorted(SUITES), default="static",
                    help="static: the static-file workloads (default); apps: the WSGI "
                         "application workloads of issue 14; tls: the static files over "
                         "https against nginx (issue 15). Sets the default --servers, "
                         "--workloads and --out")
    ap.add_argument("--servers", default=None,
                    help="comma-separated; default for --suite static: "
                         f"{','.join(DEFAULT_SERVERS['static'])}; for --suite apps: "
                         f"{','.join(DEFAULT_SERVERS['apps'])}; for --suite tls: "
                         f"{','.join(DEFAULT_SERVERS['tls'])}; also uwsgi, granian")
    ap.add_argument("--workloads", default=None,
                    help="comma-separated; default: the suite's, from "
                         f"{','.join(WORKLOADS)}")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 round of 2 s, 1 s warm-up")
    ap.add_argument("--prefork-python", default=None,
                    help="interpreter for bin/httpdctl (needs click, psutil, setproctitle)")
    ap.add_argument("--prefork-base", type=Path, default=None,
                    help="another checkout of prefork (e.g. `git archive` of the commit before "
                         "a change) run as server prefork-base beside prefork, configured the "
                         "same, in the same rotated rounds; added to --servers")
    ap.add_argument("--prefork-threads", type=int, default=1, help="[workers] threads")
    ap.add_argument("--apache-threads", type=int, default=25, help="ThreadsPerChild")
    ap.add_argument("--app-threads", type=int, default=4,
                    help="threads per process running the application: prefork [app] "
                         "threads, uwsgi --threads, granian --blocking-threads "
                         "(gunicorn-gthread and waitress keep --threads 4)")
    ap.add_argument("--venv", type=Path, default=BENCH_DIR / ".venv",
                    help="venv with gunicorn and waitress (bench/setup.sh makes it)")
    ap.add_argument("--out", type=Path, default=None,
                    help="where latest.md, latest.json and raw/ go (default bench/results, "
                         "bench/results/apps for --suite apps, bench/results/tls for --suite "
                         "tls)")
    a = ap.parse_args(argv)
    if a.servers is None:
        a.servers = ",".join(DEFAULT_SERVERS[a.suite])
    if a.prefork_base is not None and "prefork-base" not in a.servers.split(","):
        a.servers += ",prefork-base"
    if a.workloads is None:
        a.workloads = ",".join(SUITES[a.suite])
    if a.out is None:
        a.out = BENCH_DIR / "results" / ("" if a.suite == "static" else a.suite)
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 2.0, 1.0
    return a


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; the servers started from here inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} x {model}, {mem_gib:.0f} GiB, Linux {platform.release()}, "
            f"load average {os.getloadavg()[0]:.2f} at start")


def run_one(server: Server, wl: Workload, rnd: int, base: Path, docroot: Path, raw_dir: Path,
            args: argparse.Namespace, opts: Options) -> dict[str, Any]:
    """Start a fresh server, measure one workload against it, stop it."""
    rec: dict[str, Any] = {"workload": wl.name, "server": server.name, "round": rnd,
                           "ok": False}
    workdir = Path(tempfile.mkdtemp(prefix=f"{server.name}-{wl.name}-", dir=base))
    workdir.chmod(0o755)
    port = free_port()
    srv = Running(server, server.launch(workdir, port, docroot, wl.variant(), opts),
                  workdir, port, tls=wl.tls)
    try:
        srv.wait_ready(*wl.ready)
        raw = raw_dir / f"{wl.name}.{server.name}.r{rnd}.txt"
        rec.update(measure(srv, wl, args.duration, args.warmup, raw))
        rec["raw"] = str(raw.relative_to(args.out))
        rec["ok"] = rec["requests"] > 0 or wl.idle > 0
        if wl.sleep_s:
            rec["concurrency"] = server.concurrency(opts)
            rec["ideal_rps"] = rec["concurrency"] / wl.sleep_s
            rec["x_ideal"] = round(rec["good_rps"] / rec["ideal_rps"], 4)
            rec["error_pct"] = round(100.0 * rec["errors"] / max(1, rec["requests"]), 2)
        if rec["requests"] == 0:
            rec["error"] = f"no request completed (wrk socket errors: {rec['errors_detail']})"
            for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "cpu_us_per_req"):
                rec[key] = None
        if srv.proc.poll() is not None:
            rec["ok"] = False
            rec["error"] = f"server exited ({srv.proc.returncode}) during the run"
        if wl.access_log:
            rec["log_bytes"] = sum(p.stat().st_size for p in workdir.rglob("access.log"))
    except StartError:
        raise
    except Exception as e:  # a failed measurement is recorded, the next run goes on
        rec["error"] = f"{type(e).__name__}: {e}\n{srv.log_tail(5)}"
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rec


def progress(rec: dict[str, Any]) -> str:
    head = f"r{rec['round']} {rec['workload']:<14} {rec['server']:<17}"
    if not rec["ok"]:
        lines = [x for x in str(rec.get("error", "")).splitlines() if x.strip()]
        return f"{head} FAILED: {' | '.join(lines[:1] + lines[-2:])[:300]}"
    text = (f"{head} {rec['rps']:>10,.0f} req/s  p99 {rec['p99_ms'] or 0:8.2f} ms  "
            f"cpu {rec['cpu_us_per_req'] or 0:7.1f} µs/req  {rec['mb_s']:8.1f} MB/s  "
            f"pss {rec['pss_mb']:6.1f} MB  err {rec['errors']}")
    if "idle_held" in rec:
        text += f"  held {rec['idle_held']}/{rec['idle_target']}"
    return text


def run_all(servers: list[Server], workloads: list[Workload], args: argparse.Namespace,
            opts: Options, base: Path, raw_dir: Path) -> tuple[list[dict[str, Any]], dict]:
    runs: list[dict[str, Any]] = []
    broken: dict[str, str] = {}
    failed_starts: dict[str, int] = {}  # consecutive; two in a row and the server is dropped
    for rnd in range(args.rounds):
        for wl in workloads:
            live = [s for s in servers if s.name not in broken]
            if not live:
                break
            k = rnd % len(live)
            for server in live[k:] + live[:k]:
                if server.name in broken or not_applicable(server, wl):
                    continue
                try:
                    rec = run_one(server, wl, rnd, base, base / "htdocs", raw_dir, args, opts)
                    failed_starts[server.name] = 0
                except StartError as e:
                    failed_starts[server.name] = failed_starts.get(server.name, 0) + 1
                    if failed_starts[server.name] >= 2:
                        broken[server.name] = f"did not start (twice in a row): {e}"
                    rec = {"workload": wl.name, "server": server.name, "round": rnd,
                           "ok": False, "error": f"did not start: {e}"}
                runs.append(rec)
                print(progress(rec), flush=True)
    return runs, broken


def not_applicable(server: Server, wl: Workload) -> str:
    """Why a workload does not apply to a server ("" if it does)."""
    if wl.tls and server.name not in TLS_SERVERS:
        return "does not terminate TLS here"
    if wl.access_log and server.access_log_note:
        return server.access_log_note
    if wl.static_mount and not server.static_beside_app:
        return "static beside an application: prefork and prefork-noapp only"
    if server.only_static_beside_app:
        return "" if wl.static_mount else "runs only the static-beside-an-application workload"
    if wl.app and not server.hosts_apps:
        return "serves no WSGI application"
    return ""


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk not found: run bench/setup.sh (apt-get install wrk)")
    nofile = raise_nofile()
    opts = Options(repo=REPO, bench_dir=BENCH_DIR, venv=args.venv,
                   prefork_python=args.prefork_python, prefork_threads=args.prefork_threads,
                   apache_threads=args.apache_threads, nofile=nofile,
                   app_threads=args.app_threads,
                   prefork_base=args.prefork_base.resolve() if args.prefork_base else None)
    workloads = [WORKLOADS[n] for n in _names(args.workloads, WORKLOADS)]
    if nofile < 12000 and any(w.idle >= 10000 for w in workloads):
        print(f"warning: RLIMIT_NOFILE hard limit is {nofile}; idle_10k_pss needs ~12000 "
              "(raise it with ulimit -Hn as root)", file=sys.stderr)
    chosen = by_name(_names(args.servers, None))
    skipped = {s.name: why for s in chosen if (why := s.unavailable(opts))}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    servers = [s for s in chosen if s.name not in skipped]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    raw_dir = args.out / "raw" / stamp
    raw_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": shlex.join(["python3", "bench/run.py", *(sys.argv[1:] if argv is None
                                                            else argv)]),
        "suite": args.suite, "machine": machine(), "rounds": args.rounds, "duration_s": args.duration,
        "warmup_s": args.warmup, "nofile": nofile, "wrk": _wrk_version(),
        "servers": {s.name: {"config": s.config_note(opts), "version": s.version(opts),
                             "access_log": s.access_log_note or "on in ka_1k_logged"}
                    for s in servers},
        "skipped": skipped, "raw_dir": str(raw_dir),
        "not_applicable": {w.name: {s.name: why for s in servers
                                    if (why := not_applicable(s, w))} for w in workloads},
    }
    base = Path(tempfile.mkdtemp(prefix="prefork-bench-"))
    base.chmod(0o755)  # workers that drop to nobody must read the document root
    write_docroot(base / "htdocs")
    if any(w.tls for w in workloads):  # one throwaway certificate for every server
        opts.tls_cert, opts.tls_key = make_certificate(base / "tls")
        meta["tls_certificate"] = "self-signed EC P-256 (openssl req), made for this run"
    old = signal.signal(signal.SIGTERM, on_sigterm)
    runs: list[dict[str, Any]] = []
    try:
        runs, broken = run_all(servers, workloads, args, opts, base, raw_dir)
        meta["skipped"].update(broken)
    except KeyboardInterrupt:
        meta["interrupted"] = True
        print("interrupted: stopping servers, writing partial results", file=sys.stderr)
    finally:
        stop_all()
        signal.signal(signal.SIGTERM, old)
        shutil.rmtree(base, ignore_errors=True)
    summary = summarize(runs, [w.name for w in workloads], [s.name for s in servers])
    meta["titles"] = {w.name: w.title for w in workloads}
    meta["idle_targets"] = {w.name: w.idle for w in workloads}
    md, js = write_results(args.out, meta, runs, summary, meta["titles"], meta["idle_targets"])
    print(f"\nwrote {md} and {js}")
    print(md.read_text())
    return 1 if meta.get("interrupted") else 0


def _names(text: str, known: dict | None) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if known is not None:
        bad = [n for n in names if n not in known]
        if bad:
            sys.exit(f"unknown workload(s) {bad}; known: {list(known)}")
    return names


def _wrk_version() -> str:
    import subprocess

    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).strip().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
