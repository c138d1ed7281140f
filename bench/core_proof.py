#!/usr/bin/env python3
"""Issue 12's closing figures, reproducible: mixed traffic, a starved PUT, master descriptors
across reloads and worker deaths, measured on one or more prefork checkouts.

    python3 bench/core_proof.py                         # the checkout this script sits in
    python3 bench/core_proof.py --tree /tmp/base --tree .   # before/after, one column each
    python3 bench/core_proof.py --only mixed --seconds 10

Each tree gets its own server (2 workers, 127.0.0.1, a free port, a temporary server root),
started with `bin/httpdctl -f ROOT/etc/httpd.ini start --foreground` and kept for the whole
script, so "worker deaths" covers every phase. Every process started here (the master and
its tree, ab, wrk, each `httpdctl reload`) is stopped by PID. Nothing but the standard
library, ab and wrk; the figures are printed as a table and written as JSON under
bench/results/core_proof/.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure import parse_wrk, process_tree, stop_tree

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
PHASES = ("mixed", "starve", "fds")
DEPS_CHECK = "import click, psutil, setproctitle"
# An error-log line about a worker that ended without being asked to; planned ends (reload,
# stop) are logged as "... stopped: exited with code 0" and are not deaths.
DEATH = re.compile(r"worker .*(exited with|killed|failed to boot)")
PLANNED = " stopped: "
JSON_BODY = json.dumps({"name": "core_proof", "note": "issue 12 mixed run",
                        "values": list(range(40))}).encode()
READY_TIMEOUT = 40.0
SETTLE_S = 0.5  # lets the server read the silent PUT heads before the legitimate PUT

_STARTED: list[subprocess.Popen[bytes]] = []  # every child, for cleanup by PID


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def find_python(tree: Path, explicit: str | None) -> str:
    candidates = [explicit] if explicit else [
        os.environ.get("PREFORK_PYTHON"), str(tree / ".venv" / "bin" / "python"),
        str(BENCH.parent / ".venv" / "bin" / "python"), sys.executable]
    for c in candidates:
        if c and Path(c).exists() and subprocess.run(
                [c, "-c", DEPS_CHECK], capture_output=True, timeout=30).returncode == 0:
            return c
    sys.exit(f"no interpreter with click, psutil and setproctitle among {candidates}; "
             "pass --python or set PREFORK_PYTHON")


def git_head(tree: Path) -> str:
    r = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
                       capture_output=True, text=True)
    return r.stdout.strip()[:72] if r.returncode == 0 else ""  # e.g. a `git archive` copy


def stop_child(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
               grace: float = 10.0) -> None:
    stop_tree(proc, sig, grace)
    if proc in _STARTED:
        _STARTED.remove(proc)


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
    _STARTED.append(proc)
    return proc


def cleanup() -> None:
    for proc in list(_STARTED):
        stop_child(proc, grace=3.0)


def raw_exchange(port: int, data: bytes, timeout: float) -> tuple[int | None, float]:
    """Send `data` on a new connection and read one response head: (status, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return status_of(buf), time.monotonic() - t0


def status_of(buf: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m.group(1)) if m else None


@dataclass
class Server:
    tree: Path
    python: str
    body_timeout: float
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="core_proof.")))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    app: bool = False  # the tree accepted an [app:hello] mount
    app_note: str = ""

    @property
    def ini(self) -> Path:
        return self.root / "etc" / "httpd.ini"

    @property
    def error_log(self) -> Path:
        return self.root / "var" / "log" / "error.log"

    def ctl(self, *args: str) -> list[str]:
        return [self.python, str(self.tree / "bin" / "httpdctl"), "-f", str(self.ini), *args]

    def write_config(self, with_app: bool) -> None:
        lines = ["[server]", f"listen = {HOST}:{self.port}", "document_root = htdocs",
                 "pid_file = var/run/httpd.pid", "server_name = localhost 127.0.0.1", "",
                 "[workers]", "processes = 2", "",
                 "[http]", f"body_timeout = {self.body_timeout:g}", "",
                 "[uploads]", "directory = var/uploads", "",
                 "[logging]", "access_log = var/log/access.log",
                 "error_log = var/log/error.log", "level = info", ""]
        if with_app:
            lines += ["[app:hello]", "mount = /app", "module = apps.hello:app",
                      f"path = {BENCH}", ""]
        self.ini.write_text("\n".join(lines))

    def start(self) -> None:
        for sub in ("etc", "var/log", "var/run", "var/uploads", "htdocs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "htdocs" / "hello.txt").write_bytes(b"Hello, World!\n")
        self.port = free_port()
        self.write_config(with_app=True)
        check = subprocess.run(self.ctl("configtest"), capture_output=True, text=True,
                               timeout=60)
        self.app = check.returncode == 0
        if not self.app:  # an older tree without [app:NAME]: measure it without the row
            said = (check.stderr or check.stdout).strip().splitlines()
            self.app_note = said[-1] if said else f"configtest exited {check.returncode}"
            self.write_config(with_app=False)
        with open(self.root / "server.out", "wb") as out:
            self.proc = spawn(self.ctl("start", "--foreground"), stdout=out,
                              stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.tree}: server exited:\n{self.tail()}")
            try:
                status, _ = raw_exchange(self.port, self.get("/hello.txt"), 2.0)
                if status == 200 and len(self.workers()) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{self.tree}: not ready in {READY_TIMEOUT:g}s:\n{self.tail()}")
        if self.app:
            status, _ = raw_exchange(self.port, self.get("/app/"), 5.0)
            if status != 200:
                self.app, self.app_note = False, f"GET /app/ answered {status}"

    def get(self, path: str) -> bytes:
        return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                "Connection: close\r\n\r\n").encode()

    def tail(self, n: int = 15) -> str:
        lines: list[str] = []
        for p in (self.root / "server.out", self.error_log):
            if p.exists():
                lines += p.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines[-n:])

    @property
    def master(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> set[int]:
        return {st.pid for st in process_tree(self.master) if st.pid != self.master}

    def log_size(self) -> int:
        return self.error_log.stat().st_size if self.error_log.exists() else 0

    def log_since(self, offset: int) -> list[str]:
        if not self.error_log.exists():
            return []
        with open(self.error_log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc, signal.SIGINT)  # SIGINT: fast stop


def deaths(lines: list[str]) -> list[str]:
    return [ln for ln in lines if DEATH.search(ln) and PLANNED not in ln]


def faults(lines: list[str]) -> list[str]:
    """Error-level lines and tracebacks (what a finding quotes)."""
    return [ln for ln in lines if ":error]" in ln or ":crit]" in ln or "Traceback" in ln]


def run_ab(url: str, seconds: int, body: Path) -> subprocess.Popen[bytes]:
    # -n after -t: ab's -t alone caps the run at 50,000 requests.
    return spawn(["ab", "-q", "-t", str(seconds), "-n", "10000000", "-c", "8",
                  "-p", str(body), "-T", "application/json", url],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def parse_ab(out: str, err: str, code: int) -> dict[str, Any]:
    def num(label: str) -> int:
        m = re.search(rf"^{label}:\s+(\d+)", out, re.M)
        return int(m.group(1)) if m else 0
    r: dict[str, Any] = {"complete": num("Complete requests"), "failed": num("Failed requests"),
                         "non_2xx": num("Non-2xx responses"), "exit": code}
    m = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", out)
    if m:
        names = ("connect", "receive", "length", "exceptions")
        r.update(zip(names, map(int, m.groups()), strict=True))
    if code != 0 or err.strip():
        r["stderr"] = err.strip()[-300:]
    return r


def mixed(srv: Server, seconds: int, path: str) -> dict[str, Any]:
    body = srv.root / "body.json"
    body.write_bytes(JSON_BODY)
    before, offset = srv.workers(), srv.log_size()
    url = f"http://{HOST}:{srv.port}"
    ab = run_ab(f"{url}/upload", seconds, body)
    wrk = spawn(["wrk", "-t1", "-c20", f"-d{seconds}s", "-s", str(BENCH / "report.lua"),
                 f"{url}{path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    limit = seconds + 60
    try:
        w_out, w_err = wrk.communicate(timeout=limit)
        a_out, a_err = ab.communicate(timeout=limit)
    finally:
        stop_child(wrk)
        stop_child(ab)
    w = parse_wrk(w_out.decode(errors="replace"))
    log = srv.log_since(offset)
    after = srv.workers()
    return {
        "path": path,
        "wrk": {"requests": w.requests, "connect": w.errors_connect, "read": w.errors_read,
                "write": w.errors_write, "timeout": w.errors_timeout,
                "non_2xx_3xx": w.errors_status, "p99_ms": w.lat_p99_ms,
                **({"stderr": w_err.decode()[-300:]} if wrk.returncode else {})},
        "ab": parse_ab(a_out.decode(errors="replace"), a_err.decode(errors="replace"),
                       ab.returncode),
        "workers_before": sorted(before), "workers_after": sorted(after),
        "worker_deaths": deaths(log), "faults": faults(log)[:20],
    }


def starve_round(srv: Server, silent: int) -> dict[str, Any]:
    head = (f"PUT /uploads/x.bin HTTP/1.1\r\nHost: {HOST}:{srv.port}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n").encode()
    socks: list[socket.socket] = []
    sent: dict[socket.socket, float] = {}
    try:
        for _ in range(silent):
            s = socket.create_connection((HOST, srv.port), timeout=5)
            s.sendall(head)
            sent[s] = time.monotonic()
            socks.append(s)
        time.sleep(SETTLE_S)
        legit = (f"PUT /uploads/ok.bin HTTP/1.1\r\nHost: {HOST}:{srv.port}\r\n"
                 "Content-Type: application/octet-stream\r\nContent-Length: 5\r\n"
                 "Connection: close\r\n\r\nhello").encode()
        try:
            status, took = raw_exchange(srv.port, legit, srv.body_timeout * 20 + 60)
        except OSError as e:
            status, took = None, float("nan")
            print(f"  legitimate PUT: {e}", file=sys.stderr)
        # What the silent ones get, and when (from their head).
        answers: dict[socket.socket, tuple[int | None, float]] = {}
        bufs: dict[socket.socket, bytes] = {s: b"" for s in socks}
        deadline = time.monotonic() + srv.body_timeout * 20 + 60
        while len(answers) < len(socks) and time.monotonic() < deadline:
            waiting = [s for s in socks if s not in answers]
            ready, _, _ = select.select(waiting, [], [], 1.0)
            for s in ready:
                try:
                    chunk = s.recv(4096)
                except OSError:
                    chunk = b""
                bufs[s] += chunk
                if not chunk or b"\r\n" in bufs[s]:
                    answers[s] = (status_of(bufs[s]), time.monotonic() - sent[s])
        return {"legit_status": status, "legit_s": took,
                "silent": [answers.get(s, (None, float("nan"))) for s in socks],
                "unanswered": len(socks) - len(answers)}
    finally:
        for s in socks:
            s.close()


def starve(srv: Server, silent: int, tries: int) -> dict[str, Any]:
    before, offset = srv.workers(), srv.log_size()
    rounds = [starve_round(srv, silent) for _ in range(tries)]
    log = srv.log_since(offset)
    statuses: dict[str, int] = {}
    times: list[float] = []
    for r in rounds:
        for status, t in r["silent"]:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status is not None:
                times.append(t)
    legit = [r["legit_s"] for r in rounds]
    return {
        "silent_connections": silent, "tries": tries, "body_timeout_s": srv.body_timeout,
        "legit_put_s": legit, "legit_put_median_s": statistics.median(legit),
        "legit_statuses": [r["legit_status"] for r in rounds],
        "silent_statuses": statuses,
        "silent_answer_s": ({"min": min(times), "median": statistics.median(times),
                             "max": max(times)} if times else None),
        "silent_unanswered": sum(r["unanswered"] for r in rounds),
        "workers_before": sorted(before), "workers_after": sorted(srv.workers()),
        "worker_deaths": deaths(log), "faults": faults(log)[:20],
    }


def fd_targets(pid: int) -> dict[str, int]:
    """How many of the master's descriptors point at each kind of target."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = re.sub(r"\[\d+\]", "", target) if ":" in target else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def reload(srv: Server) -> tuple[bool, float, str]:
    t0 = time.monotonic()
    proc = spawn(srv.ctl("reload"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        stop_child(proc)
    return proc.returncode == 0, time.monotonic() - t0, out.decode(errors="replace").strip()


def settled(srv: Server, timeout: float = 15.0) -> tuple[int, float]:
    """The master's descriptor count once the previous generation is gone: `reload` returns
    when the new workers serve, while the old ones may still be finishing and their
    generation (log files, pipes) is retired only when the last is reaped. Waits until only
    the 2 current workers are left and the count holds for 0.3 s; (count, seconds waited)."""
    t0 = time.monotonic()
    last, since = -1, t0
    while time.monotonic() - t0 < timeout:
        n = len(os.listdir(f"/proc/{srv.master}/fd"))
        now = time.monotonic()
        if n != last or len(srv.workers()) != 2:
            last, since = n, now
        elif now - since >= 0.3:
            break
        time.sleep(0.05)
    return last, time.monotonic() - t0


def fds(srv: Server, reloads: int) -> dict[str, Any]:
    offset = srv.log_size()
    count = lambda: len(os.listdir(f"/proc/{srv.master}/fd"))  # noqa: E731
    start = count()
    failed: list[str] = []
    times: list[float] = []
    right_after: dict[int, int] = {}  # counted as `httpdctl reload` returns
    after: dict[int, int] = {}  # once the previous generation is retired
    waited: dict[int, float] = {}
    kinds_1: dict[str, int] = {}
    for n in range(1, reloads + 2):
        ok, took, out = reload(srv)
        times.append(took)
        if not ok:
            failed.append(f"reload {n}: {out[-200:]}")
        if n in (1, reloads + 1):
            right_after[n] = count()
            after[n], waited[n] = settled(srv)
            if n == 1:
                kinds_1 = fd_targets(srv.master)
    kinds_n = fd_targets(srv.master)
    log = srv.log_since(offset)
    grown = {k: (kinds_1.get(k, 0), v) for k, v in kinds_n.items() if v != kinds_1.get(k, 0)}
    return {"master_fds_start": start, "master_fds_after": after,
            "master_fds_right_after": right_after, "settle_s": waited,
            "reloads": reloads + 1,
            "reload_failures": failed[:10], "reload_failures_count": len(failed),
            "reload_median_s": statistics.median(times), "fd_kinds_changed": grown,
            "worker_deaths": deaths(log), "faults": faults(log)[:20]}


def measure_tree(tree: Path, opts: argparse.Namespace) -> dict[str, Any]:
    srv = Server(tree, find_python(tree, opts.python), opts.body_timeout)
    result: dict[str, Any] = {"tree": str(tree), "head": git_head(tree)}
    print(f"== {tree} ({result['head']})", file=sys.stderr)
    try:
        srv.start()
        result.update(port=srv.port, app_mount=srv.app, app_note=srv.app_note,
                      workers_start=sorted(srv.workers()))
        if "mixed" in opts.only:
            print(f"  mixed run, static ({opts.seconds}s)", file=sys.stderr)
            result["mixed_static"] = mixed(srv, opts.seconds, "/hello.txt")
            if srv.app:
                print(f"  mixed run, [app:hello] ({opts.seconds}s)", file=sys.stderr)
                result["mixed_app"] = mixed(srv, opts.seconds, "/app/")
        if "starve" in opts.only:
            print(f"  starved PUT ({opts.tries} tries)", file=sys.stderr)
            result["starve"] = starve(srv, opts.silent, opts.tries)
        if "fds" in opts.only:
            print(f"  {opts.reloads + 1} reloads", file=sys.stderr)
            result["fds"] = fds(srv, opts.reloads)
        log = srv.log_since(0)
        result["worker_deaths"] = deaths(log)
        result["faults"] = faults(log)[:40]
        result["faults_count"] = len(faults(log))
        result["tracebacks"] = sum("Traceback" in ln for ln in log)
    finally:
        srv.stop()
        if opts.keep:
            print(f"  kept {srv.root}", file=sys.stderr)
        else:
            shutil.rmtree(srv.root, ignore_errors=True)
    return result


def table(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    def cell(r: dict[str, Any], key: str) -> str:
        try:
            return ROWS[key](r)
        except (KeyError, TypeError, ValueError):
            return "—"

    def wrk(m: dict[str, Any]) -> str:
        w = m["wrk"]
        return (f"{w['requests']:,} req; sock err c{w['connect']}/r{w['read']}/w{w['write']}"
                f"/t{w['timeout']}; non-2xx {w['non_2xx_3xx']}")

    def ab(m: dict[str, Any]) -> str:
        a = m["ab"]
        extra = f" (length {a['length']})" if a.get("length") else ""
        aborted = f"; ab exit {a['exit']}" if a["exit"] else ""
        return f"{a['complete']:,} complete, {a['failed']} failed{extra}{aborted}"

    def lived(m: dict[str, Any]) -> str:
        same = "same" if m["workers_before"] == m["workers_after"] else "CHANGED"
        return f"{len(m['worker_deaths'])} (PIDs {same})"

    def starve_row(s: dict[str, Any]) -> str:
        return (f"median {s['legit_put_median_s'] * 1000:.0f} ms "
                f"(max {max(s['legit_put_s']) * 1000:.0f} ms), "
                f"statuses {sorted(set(s['legit_statuses']), key=str)}")

    def silent_row(s: dict[str, Any]) -> str:
        t = s["silent_answer_s"]
        when = f" at {t['min']:.1f} to {t['max']:.1f} s" if t else ""
        return (f"{s['silent_statuses']}{when} (body_timeout {s['body_timeout_s']:g} s)"
                + (f", {s['silent_unanswered']} unanswered" if s["silent_unanswered"] else ""))

    def fd_row(f: dict[str, Any]) -> str:
        a = f["master_fds_after"]
        r = f["master_fds_right_after"]
        return (f"{a[1]} → {a[f['reloads']]} (start {f['master_fds_start']}; as reload "
                f"returns {r[1]} → {r[f['reloads']]}; "
                f"{f['reload_failures_count']} failed; {f['reload_median_s']:.2f} s each)")

    ROWS = {
        "mixed, static: wrk": lambda r: wrk(r["mixed_static"]),
        "mixed, static: ab POST /upload": lambda r: ab(r["mixed_static"]),
        "mixed, static: worker deaths": lambda r: lived(r["mixed_static"]),
        "mixed, app: wrk": lambda r: wrk(r["mixed_app"]),
        "mixed, app: ab POST /upload": lambda r: ab(r["mixed_app"]),
        "mixed, app: worker deaths": lambda r: lived(r["mixed_app"]),
        f"starved PUT: 5-byte PUT ({opts.silent} silent)": lambda r: starve_row(r["starve"]),
        "starved PUT: the silent ones get": lambda r: silent_row(r["starve"]),
        "starved PUT: worker deaths": lambda r: lived(r["starve"]),
        f"master fds after 1 → {opts.reloads + 1} reloads": lambda r: fd_row(r["fds"]),
        "worker deaths, whole script": lambda r: str(len(r["worker_deaths"])),
        "error/crit lines, tracebacks": lambda r: f"{r['faults_count']}, {r['tracebacks']}",
    }
    heads = [f"`{Path(r['tree']).name}` {r['head'].split()[0] if r['head'] else ''}"
             for r in results]
    out = ["| figure | " + " | ".join(heads) + " |", "|---|" + "---|" * len(results)]
    for key in ROWS:
        out.append(f"| {key} | " + " | ".join(cell(r, key) for r in results) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", type=Path,
                    help="a prefork checkout to measure (repeatable; default: this one)")
    ap.add_argument("--python", help="interpreter for bin/httpdctl (default: searched)")
    ap.add_argument("--only", default=",".join(PHASES),
                    help="phases, comma-separated: mixed,starve,fds")
    ap.add_argument("--seconds", type=int, default=30, help="length of each mixed run")
    ap.add_argument("--body-timeout", type=float, default=3.0,
                    help="[http] body_timeout given to the server (starved PUT)")
    ap.add_argument("--silent", type=int, default=32, help="silent PUT connections")
    ap.add_argument("--tries", type=int, default=5, help="legitimate PUTs (median)")
    ap.add_argument("--reloads", type=int, default=200,
                    help="reloads after the first one before the second fd count")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "core_proof")
    ap.add_argument("--keep", action="store_true", help="keep the temporary server roots")
    opts = ap.parse_args()
    opts.only = {p.strip() for p in opts.only.split(",") if p.strip()}
    if opts.only - set(PHASES):
        ap.error(f"--only takes {','.join(PHASES)}")
    for tool in ("ab", "wrk") if "mixed" in opts.only else ():
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (apt-get install apache2-utils wrk)")
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    trees = [t.resolve() for t in (opts.tree or [BENCH.parent])]
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results = [measure_tree(t, opts) for t in trees]
    load_after = os.getloadavg()
    text = table(results, opts)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(text)
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}; after: {uptime}")
    opts.out.mkdir(parents=True, exist_ok=True)
    doc = {"started": started, "argv": sys.argv, "load_before": load_before,
           "uptime_after": uptime, "options": {k: (sorted(v) if isinstance(v, set) else
                                                   str(v) if isinstance(v, Path) else v)
                                               for k, v in vars(opts).items() if k != "tree"},
           "results": results, "table": text, "load_after": load_after}
    (opts.out / "latest.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (opts.out / "latest.md").write_text(
        f"# core_proof {started}\n\n`{' '.join(sys.argv)}`\n\n{text}\n\n"
        f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {uptime}\n")
    print(f"written {opts.out / 'latest.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
