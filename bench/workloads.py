"""The workloads, and how one run of a workload against one started server is measured."""

from __future__ import annotations

import json
import math
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import WrkResult, children_cpu_seconds, parse_wrk, tree_cpu_seconds, tree_pss_mb
from procs import Running
from servers import HOST, Variant

BENCH_DIR = Path(__file__).resolve().parent
FILES = {"/1k.bin": 1024, "/10m.bin": 10 * 1024 * 1024}
HOLDER_CONNECTIONS = 5000  # idle connections per holder process


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    path: str = "/1k.bin"
    connections: int = 50
    threads: int = 2
    headers: tuple[str, ...] = ()
    access_log: bool = False
    idle: int = 0  # > 0: hold this many idle connections and measure a 1-connection probe
    suite: str = "static"  # "apps": the application-hosting workloads (issue 14)
    app: str = ""  # the WSGI application served ("apps.hello:app"), bench/ on sys.path
    static_mount: str = ""  # the document root's mount beside the application
    script: str = "report.lua"  # the wrk script (bench/); post64k.lua adds a 64 KiB POST body
    sleep_s: float = 0.0  # the application's own wait per request (the ideal-rate figure)
    tls: bool = False  # over https (--suite tls): the servers terminate TLS themselves
    session_tickets: bool = True  # False: the servers offer no session tickets

    @property
    def ready(self) -> tuple[str, int | None]:
        """Readiness probe: a GET of this path answers 200 (with this many bytes if given)."""
        if self.app and not self.static_mount:
            return self.path, None
        return self.path, FILES[self.path.removeprefix(self.static_mount)]

    def variant(self) -> Variant:
        return Variant(access_log=self.access_log, long_keepalive=self.idle > 0,
                       connections=max(self.connections, self.idle + 1), app=self.app,
                       static_mount=self.static_mount,
                       close="Connection: close" in self.headers, tls=self.tls,
                       session_tickets=self.session_tickets)


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("ka_1k", "keep-alive, 1 KiB file, 50 connections (wrk -t2 -c50)"),
    Workload("close_1k", "Connection: close on every request, 1 KiB file, 50 connections",
             headers=("Connection: close",)),
    Workload("big_10m", "10 MiB file, keep-alive, 4 connections", path="/10m.bin",
             connections=4),
    Workload("c1000", "keep-alive, 1 KiB file, 1,000 connections (wrk -t2 -c1000)",
             connections=1000),
    Workload("ka_1k_logged", "as ka_1k with the access log on (combined format, a file)",
             access_log=True),
    Workload("idle_1k_probe", "1,000 idle keep-alive connections held; probe: wrk -t1 -c1",
             connections=1, threads=1, idle=1000),
    Workload("idle_10k_pss", "10,000 idle keep-alive connections held; PSS of the tree",
             connections=1, threads=1, idle=10000),
    # Application hosting (issue 14): WSGI applications from bench/apps/.
    Workload("hello_ka", "hello-world WSGI function, keep-alive, 50 connections (wrk -t2 -c50)",
             path="/", suite="apps", app="apps.hello:app"),
    Workload("hello_close", "hello-world WSGI function, Connection: close, 50 connections",
             path="/", suite="apps", app="apps.hello:app", headers=("Connection: close",)),
    Workload("flask_json", "Flask JSON endpoint GET /json, keep-alive, 50 connections",
             path="/json", suite="apps", app="apps.flask_json:app"),
    Workload("echo_64k", "POST of 64 KiB echoed back by the application, keep-alive, "
             "50 connections", path="/", suite="apps", app="apps.echo:app",
             script="post64k.lua"),
    Workload("sleep_10ms", "an application sleeping 10 ms per request, 200 connections "
             "(wrk -t2 -c200); ideal = processes x threads / 10 ms", path="/", suite="apps",
             app="apps.sleep:app", connections=200, sleep_s=0.010),
    Workload("static_app", "1 KiB static file at /static/1k.bin beside the hello-world app at "
             "/ (prefork) vs the same without the [app] (prefork-noapp), keep-alive, "
             "50 connections", path="/static/1k.bin", suite="apps", app="apps.hello:app",
             static_mount="/static"),
    # TLS termination (issue 15): the same files over https, the same certificate, protocols
    # and ciphers on every server.
    Workload("tls_ka_1k", "https, keep-alive, 1 KiB file, 50 connections (wrk -t2 -c50)",
             suite="tls", tls=True),
    # wrk keeps an SSL session across its reconnects (its ssl_close() is SSL_shutdown +
    # SSL_clear) and resumes it whenever the server issued a ticket: a full handshake per
    # request needs the tickets off on both sides. tls_resume_1k keeps the defaults.
    Workload("tls_close_1k", "https, Connection: close on every request, session tickets "
             "off on both servers: a full TLS 1.3 handshake per request, 1 KiB file, "
             "50 connections", suite="tls", tls=True, headers=("Connection: close",),
             session_tickets=False),
    Workload("tls_resume_1k", "as tls_close_1k with session tickets on (each server's "
             "default): wrk resumes its session on every new connection where it can",
             suite="tls", tls=True, headers=("Connection: close",)),
    Workload("tls_big_10m", "https, 10 MiB file, keep-alive, 4 connections; CPU s per GB",
             path="/10m.bin", connections=4, suite="tls", tls=True),
    Workload("tls_idle_1k_probe", "1,000 idle TLS keep-alive connections held (full "
             "handshakes); probe: wrk -t1 -c1 over https", connections=1, threads=1,
             idle=1000, suite="tls", tls=True),
]}
SUITES = {suite: [w.name for w in WORKLOADS.values() if w.suite == suite]
          for suite in ("static", "apps", "tls")}


def write_docroot(docroot: Path) -> None:
    """The files every server serves: 1 KiB and 10 MiB of fixed pseudo-random bytes."""
    docroot.mkdir(parents=True, exist_ok=True)
    seed = bytes(range(256)) * 4
    for path, size in FILES.items():
        target = docroot / path.lstrip("/")
        if not target.exists() or target.stat().st_size != size:
            reps = size // len(seed)
            target.write_bytes(seed * reps)


def wrk_argv(port: int, wl: Workload, seconds: float) -> list[str]:
    argv = ["wrk", "-t", str(wl.threads), "-c", str(wl.connections),
            "-d", f"{max(1, round(seconds))}s", "--timeout", "5s", "--latency",
            "-s", str(BENCH_DIR / wl.script)]
    for h in wl.headers:
        argv += ["-H", h]
    return [*argv, f"{'https' if wl.tls else 'http'}://{HOST}:{port}{wl.path}"]


def run_wrk(port: int, wl: Workload, seconds: float) -> tuple[WrkResult, str]:
    out = subprocess.run(wrk_argv(port, wl, seconds), capture_output=True, text=True,
                         timeout=seconds + 60)
    text = out.stdout + (f"\n[stderr]\n{out.stderr}" if out.stderr else "")
    if out.returncode != 0:
        raise RuntimeError(f"wrk exited {out.returncode}: {out.stderr.strip()[:300]}")
    return parse_wrk(out.stdout), text


def _load_metrics(res: WrkResult, cpu_s: float, client_s: float) -> dict[str, Any]:
    return {
        "requests": res.requests,
        "duration_s": round(res.duration_s, 3),
        "rps": round(res.rps, 1),
        # responses with a 2xx/3xx status per second (wrk's rate counts 503s too)
        "good_rps": round((res.requests - res.errors_status) / res.duration_s, 1)
        if res.duration_s else 0.0,
        "p50_ms": res.lat_p50_ms,
        "p90_ms": res.lat_p90_ms,
        "p99_ms": res.lat_p99_ms,
        "p999_ms": res.lat_p999_ms,
        "max_ms": res.lat_max_ms,
        "mb_s": round(res.mb_per_s, 2),
        "bytes": res.bytes,
        "errors": res.errors,
        "errors_detail": {"connect": res.errors_connect, "read": res.errors_read,
                          "write": res.errors_write, "status": res.errors_status,
                          "timeout": res.errors_timeout},
        "server_cpu_s": round(cpu_s, 3),
        "cpu_us_per_req": round(cpu_s * 1e6 / res.requests, 1) if res.requests else None,
        "cpu_s_per_gb": round(cpu_s / (res.bytes / 1e9), 3) if res.bytes else None,
        "client_cpu_s": round(client_s, 3),
    }


def measure_load(srv: Running, wl: Workload, seconds: float, warmup: float,
                 raw: Path) -> dict[str, Any]:
    """Warm up, then one measured wrk run with the server tree's CPU sampled around it."""
    texts = []
    if warmup > 0:
        _, text = run_wrk(srv.port, wl, warmup)
        texts.append("# warm-up\n" + text)
    cpu0, client0 = tree_cpu_seconds(srv.pid, srv.pid), children_cpu_seconds()
    res, text = run_wrk(srv.port, wl, seconds)
    cpu1, client1 = tree_cpu_seconds(srv.pid, srv.pid), children_cpu_seconds()
    texts.append("# measured\n" + text)
    raw.write_text("\n".join(texts))
    metrics = _load_metrics(res, cpu1 - cpu0, client1 - client0)
    metrics["pss_mb"] = round(tree_pss_mb(srv.pid, srv.pid), 1)
    return metrics


class Holders:
    """Child processes (bench/holder.py) that hold idle connections; killed by PID on exit."""

    def __init__(self, port: int, path: str, count: int, timeout: float,
                 tls: bool = False) -> None:
        n = max(1, math.ceil(count / HOLDER_CONNECTIONS))
        shares = [count // n + (1 if i < count % n else 0) for i in range(n)]
        self.timeout = timeout
        self.procs = [subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "holder.py"), "--port", str(port), "--path", path,
             "--count", str(share), "--timeout", str(timeout), *(["--tls"] if tls else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for share in shares]

    def _ask(self, cmd: str | None, timeout: float) -> list[dict[str, int]]:
        answers = []
        for p in self.procs:
            if cmd is not None and p.stdin is not None:
                p.stdin.write(cmd + "\n")
                p.stdin.flush()
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], timeout)
            line = p.stdout.readline() if ready else ""
            answers.append(json.loads(line) if line.strip() else {})
        return answers

    def wait_ready(self) -> int:
        return sum(a.get("ready", 0) for a in self._ask(None, self.timeout + 15))

    def still_open(self) -> int:
        return sum(a.get("open", 0) for a in self._ask("check", 30))

    def close(self) -> None:
        for p in self.procs:
            try:
                if p.stdin is not None:
                    p.stdin.write("quit\n")
                    p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def measure_idle(srv: Running, wl: Workload, seconds: float, raw: Path) -> dict[str, Any]:
    """Hold wl.idle idle connections, then probe on one more; PSS before and while holding."""
    pss0 = tree_pss_mb(srv.pid, srv.pid)
    holders = Holders(srv.port, wl.path, wl.idle, timeout=max(20.0, wl.idle / 250),
                      tls=wl.tls)
    try:
        t0 = time.monotonic()
        ready = holders.wait_ready()
        setup_s = time.monotonic() - t0
        time.sleep(1.0)
        pss1 = tree_pss_mb(srv.pid, srv.pid)
        cpu0, client0 = tree_cpu_seconds(srv.pid, srv.pid), children_cpu_seconds()
        res, text = run_wrk(srv.port, wl, seconds)
        cpu1, client1 = tree_cpu_seconds(srv.pid, srv.pid), children_cpu_seconds()
        held = holders.still_open()
    finally:
        holders.close()
    raw.write_text(f"# idle connections answered: {ready}/{wl.idle} in {setup_s:.1f}s; "
                   f"still open after the probe: {held}\n# probe\n{text}")
    metrics = _load_metrics(res, cpu1 - cpu0, client1 - client0)
    # Per connection only when most were held: with a few, PSS noise swamps the difference.
    per_conn = (pss1 - pss0) * 1e6 / 1024 / held if held >= wl.idle / 10 else None
    metrics.update({
        "idle_target": wl.idle,
        "idle_answered": ready,
        "idle_held": held,
        "idle_setup_s": round(setup_s, 2),
        "pss_mb": round(pss1, 1),
        "pss_base_mb": round(pss0, 1),
        "pss_kib_per_conn": round(per_conn, 2) if per_conn is not None else None,
    })
    return metrics


def measure(srv: Running, wl: Workload, seconds: float, warmup: float,
            raw: Path) -> dict[str, Any]:
    if wl.idle:
        return measure_idle(srv, wl, seconds, raw)
    return measure_load(srv, wl, seconds, warmup, raw)
