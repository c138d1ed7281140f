"""The servers under test: how each one is configured, started, checked and stopped.

Every server gets its own configuration in a fresh temporary directory, listens on a free port
on 127.0.0.1 only, and serves the same document root. Each is started as a child process in
its own session, so the harness knows its whole process tree; stopping signals the root, then
SIGKILLs by PID whatever of that tree is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
LONG_KEEPALIVE_S = 120
# The TLS suite: prefork's default [tls] ciphers (Mozilla "intermediate", docs/tls.md), given
# to nginx too; TLS 1.3 suites stay OpenSSL's defaults on both sides.
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"
TLS_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
               "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
               "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


@dataclass
class Options:
    """Harness-wide settings the servers' configurations depend on."""

    repo: Path
    bench_dir: Path
    venv: Path
    prefork_python: str | None = None
    prefork_threads: int = 1
    apache_threads: int = 25
    nofile: int = 1024
    app_threads: int = 4  # threads per process running the WSGI application (Python peers)
    prefork_base: Path | None = None  # another checkout run as "prefork-base" (before/after)
    tls_cert: Path | None = None  # the TLS suite's throwaway certificate and key (PEM)
    tls_key: Path | None = None


@dataclass
class Variant:
    """What a workload asks of a server's configuration."""

    access_log: bool = False
    long_keepalive: bool = False  # idle workloads: keep idle connections for minutes
    connections: int = 50  # the most connections the workload opens at once
    app: str = ""  # a WSGI application to serve instead of the static files ("apps.hello:app")
    static_mount: str = ""  # prefork: the document root's mount when an application owns /
    close: bool = False  # every request carries Connection: close
    tls: bool = False  # listen with TLS (opts.tls_cert / opts.tls_key)
    session_tickets: bool = True  # False: no TLS session tickets (no resumption possible)


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _is_root() -> bool:
    return os.geteuid() == 0


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


class Server(ABC):
    name = ""
    processes_note = ""
    access_log_note = ""  # empty: the server can log accesses and ka_1k_logged turns it on
    hosts_apps = False  # can serve a WSGI application (the application workloads)
    static_beside_app = False  # takes part in the static-beside-an-application workload
    only_static_beside_app = False  # takes part in nothing else (prefork-noapp)

    def concurrency(self, opts: Options) -> int:
        """How many application requests it runs at once: processes x threads."""
        return 0

    @abstractmethod
    def unavailable(self, opts: Options) -> str | None:
        """Why this server cannot run here, or None."""

    def config_note(self, opts: Options) -> str:
        """How it is configured, for the report."""
        return self.processes_note

    @abstractmethod
    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch: ...

    @abstractmethod
    def version(self, opts: Options) -> str: ...


class Nginx(Server):
    name = "nginx"
    processes_note = "worker_processes 2, sendfile on, access_log off"
    extra_http = ""  # directives added to the http block by a variant

    def unavailable(self, opts: Options) -> str | None:
        return None if shutil.which("nginx") else "nginx not installed (run bench/setup.sh)"

    def version(self, opts: Options) -> str:
        return _first_line(["nginx", "-v"])

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        log = f"{workdir}/access.log combined" if v.access_log else "off"
        keepalive = LONG_KEEPALIVE_S if v.long_keepalive else 65
        user = "user nobody nogroup;\n" if _is_root() else ""
        ssl, tls = "", ""
        if v.tls:
            # The same certificate, protocols and TLS 1.2 ciphers as prefork's defaults; the
            # client's cipher preference (prefork's choice; nginx's default too); session
            # tickets and the (absent) session cache left at nginx's defaults.
            ssl = " ssl"
            tls = (f"        ssl_certificate {opts.tls_cert};\n"
                   f"        ssl_certificate_key {opts.tls_key};\n"
                   f"        ssl_protocols {TLS_PROTOCOLS};\n"
                   f"        ssl_ciphers {TLS_CIPHERS};\n"
                   "        ssl_prefer_server_ciphers off;\n")
            if not v.session_tickets:
                tls += "        ssl_session_tickets off;\n"
        conf = f"""{user}worker_processes 2;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
worker_rlimit_nofile {opts.nofile};
events {{ worker_connections {max(4096, min(opts.nofile - 100, 16384))}; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {log};
    sendfile on;
    tcp_nopush on;
    keepalive_timeout {keepalive};
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
{self.extra_http}    server {{
        listen {HOST}:{port}{ssl} backlog=4096;
        server_name localhost;
        root {docroot};
{tls}        location / {{ }}
    }}
}}
"""
        (workdir / "nginx.conf").write_text(conf)
        return Launch(["nginx", "-p", f"{workdir}/", "-c", f"{workdir}/nginx.conf",
                       "-e", f"{workdir}/error.log"], stop_signal=signal.SIGTERM)


class NginxTuned(Nginx):
    """nginx as tuning guides set it up for static files: descriptors and metadata of hot
    files cached (open_file_cache), so a request costs no open/fstat/close. The price is
    staleness: a changed file is noticed only after open_file_cache_valid (60 s)."""

    name = "nginx-tuned"
    processes_note = ("worker_processes 2, sendfile on, access_log off, "
                      "open_file_cache max=1000 inactive=60s (valid 60s)")
    extra_http = "    open_file_cache max=1000 inactive=60s;\n    open_file_cache_valid 60s;\n"


class Apache(Server):
    name = "apache"
    processes_note = "mpm_event, 2 processes x ThreadsPerChild, EnableSendfile On, no access log"

    def config_note(self, opts: Options) -> str:
        return (f"mpm_event, 2 processes x ThreadsPerChild {opts.apache_threads}, "
                "KeepAliveTimeout 5, MaxKeepAliveRequests 1000, EnableSendfile On, no access log")

    def unavailable(self, opts: Options) -> str | None:
        if not shutil.which("apache2"):
            return "apache2 not installed (run bench/setup.sh)"
        if not (APACHE_MODULES / "mod_mpm_event.so").exists():
            return f"mod_mpm_event.so not found in {APACHE_MODULES}"
        return None

    def version(self, opts: Options) -> str:
        return _first_line(["apache2", "-v"])

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        t = opts.apache_threads
        mods = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so"
                         for m in ("mpm_event", "authz_core", "mime"))
        log = ""
        if v.access_log:
            log = ('LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" '
                   '\\"%{User-agent}i\\"" combined\n'
                   f"CustomLog {workdir}/access.log combined\n")
        user = "User nobody\nGroup nogroup\n" if _is_root() else ""
        keepalive = LONG_KEEPALIVE_S if v.long_keepalive else 5
        conf = f"""ServerRoot {workdir}
{mods}
{user}Listen {HOST}:{port}
ListenBacklog 4096
ServerName localhost
PidFile {workdir}/apache.pid
DefaultRuntimeDir {workdir}
ErrorLog {workdir}/error.log
LogLevel warn
{log}TypesConfig /etc/mime.types
StartServers 2
ServerLimit 2
ThreadLimit {t}
ThreadsPerChild {t}
MaxRequestWorkers {2 * t}
MinSpareThreads 1
MaxSpareThreads {2 * t}
MaxConnectionsPerChild 0
KeepAlive On
KeepAliveTimeout {keepalive}
MaxKeepAliveRequests 1000
EnableSendfile On
DocumentRoot {docroot}
<Directory />
    AllowOverride None
    Options None
    Require all granted
</Directory>
"""
        (workdir / "apache2.conf").write_text(conf)
        return Launch(["apache2", "-d", str(workdir), "-f", f"{workdir}/apache2.conf",
                       "-DFOREGROUND"], stop_signal=signal.SIGTERM)


class Gunicorn(Server):
    """gunicorn with the static-file WSGI app in bench/wsgi_static.py."""

    hosts_apps = True

    def __init__(self, name: str, worker: str, threads: int = 1) -> None:
        self.name = name
        self.worker = worker
        self.threads = threads
        extra = f" --threads {threads}" if worker == "gthread" else ""
        keep = "keep-alive" if worker == "gthread" else "no keep-alive: closes after each response"
        self.processes_note = f"-w 2 -k {worker}{extra} ({keep})"

    def concurrency(self, opts: Options) -> int:
        return 2 * (self.threads if self.worker == "gthread" else 1)

    def unavailable(self, opts: Options) -> str | None:
        if not (opts.venv / "bin" / "gunicorn").exists():
            return f"gunicorn not in {opts.venv} (run bench/setup.sh)"
        return None

    def version(self, opts: Options) -> str:
        return _first_line([str(opts.venv / "bin" / "gunicorn"), "--version"])

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        argv = [str(opts.venv / "bin" / "gunicorn"), "-w", "2", "-k", self.worker,
                "-b", f"{HOST}:{port}", "--no-control-socket", "--chdir", str(opts.bench_dir),
                "--error-logfile", f"{workdir}/error.log", "--log-level", "warning",
                "--worker-tmp-dir", str(workdir)]
        if self.worker == "gthread":
            argv += ["--threads", str(self.threads),
                     "--worker-connections", str(max(1000, v.connections))]
        if v.long_keepalive:
            argv += ["--keep-alive", str(LONG_KEEPALIVE_S)]
        if v.access_log:
            argv += ["--access-logfile", f"{workdir}/access.log"]
        argv.append(v.app or "wsgi_static:app")
        return Launch(argv, env={"BENCH_DOCROOT": str(docroot)}, stop_signal=signal.SIGINT)


class Waitress(Server):
    name = "waitress"
    processes_note = "1 process, --threads=4 (waitress has no worker processes)"
    access_log_note = "no access log of its own"
    hosts_apps = True

    def concurrency(self, opts: Options) -> int:
        return 4

    def unavailable(self, opts: Options) -> str | None:
        if not (opts.venv / "bin" / "waitress-serve").exists():
            return f"waitress not in {opts.venv} (run bench/setup.sh)"
        return None

    def version(self, opts: Options) -> str:
        return _first_line([str(opts.venv / "bin" / "python"), "-c",
                            "import importlib.metadata as m; print('waitress', "
                            "m.version('waitress'))"])

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        argv = [str(opts.venv / "bin" / "waitress-serve"), f"--listen={HOST}:{port}",
                "--threads=4"]
        if v.long_keepalive:
            argv.append(f"--channel-timeout={LONG_KEEPALIVE_S}")
        argv.append(v.app or "wsgi_static:app")
        env = {"BENCH_DOCROOT": str(docroot), "PYTHONPATH": str(opts.bench_dir)}
        return Launch(argv, env=env, cwd=opts.bench_dir, stop_signal=signal.SIGTERM)


class HttpServer(Server):
    name = "http.server"
    processes_note = "1 process, a thread per connection, HTTP/1.0 (closes after each response)"
    access_log_note = "always logs each request to stderr (sent to a file)"

    def unavailable(self, opts: Options) -> str | None:
        return None

    def version(self, opts: Options) -> str:
        return f"python {sys.version.split()[0]} http.server"

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        return Launch([sys.executable, "-m", "http.server", "--bind", HOST,
                       "--directory", str(docroot), str(port)], stop_signal=signal.SIGTERM)


class Uwsgi(Server):
    """uWSGI from PyPI (pyuwsgi), its workers speaking HTTP/1.1 themselves (--http11-socket:
    keep-alive, no router process in front), a master and 2 processes x --threads."""

    name = "uwsgi"
    hosts_apps = True

    def config_note(self, opts: Options) -> str:
        return (f"pyuwsgi --http11-socket (--http-socket for Connection: close) --master --processes 2 --threads {opts.app_threads} "
                "--disable-logging --listen 1024")

    def concurrency(self, opts: Options) -> int:
        return 2 * opts.app_threads

    def unavailable(self, opts: Options) -> str | None:
        if not (opts.venv / "bin" / "pyuwsgi").exists():
            return f"pyuwsgi not in {opts.venv} (run bench/setup.sh)"
        return None

    def version(self, opts: Options) -> str:
        return "uWSGI (pyuwsgi) " + _first_line([str(opts.venv / "bin" / "pyuwsgi"),
                                                  "--version"])

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        # --http11-socket keeps the connection open even when the request says
        # "Connection: close" (the client then never reconnects), so a close workload runs
        # uWSGI with --http-socket, which closes after every response.
        sock = "--http-socket" if v.close else "--http11-socket"
        argv = [str(opts.venv / "bin" / "pyuwsgi"), sock, f"{HOST}:{port}",
                "--master", "--processes", "2", "--threads", str(opts.app_threads),
                "--chdir", str(opts.bench_dir), "--module", v.app or "wsgi_static:app",
                "--need-app", "--disable-logging", "--die-on-term", "--listen", "1024",
                "--pidfile", f"{workdir}/uwsgi.pid"]
        if v.long_keepalive:
            argv += ["--socket-timeout", str(LONG_KEEPALIVE_S)]
        return Launch(argv, env={"BENCH_DOCROOT": str(docroot)}, stop_signal=signal.SIGINT)


class Granian(Server):
    """granian (Rust HTTP, WSGI interface): 2 workers, each a Rust runtime thread and
    --blocking-threads Python threads running the application."""

    name = "granian"
    hosts_apps = True

    def config_note(self, opts: Options) -> str:
        return (f"--interface wsgi --workers 2 --blocking-threads {opts.app_threads} "
                "--runtime-threads 1 --no-ws, access log off (its default)")

    def concurrency(self, opts: Options) -> int:
        return 2 * opts.app_threads

    def unavailable(self, opts: Options) -> str | None:
        if not (opts.venv / "bin" / "granian").exists():
            return f"granian not in {opts.venv} (run bench/setup.sh)"
        return None

    def version(self, opts: Options) -> str:
        return _first_line([str(opts.venv / "bin" / "granian"), "--version"])

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        argv = [str(opts.venv / "bin" / "granian"), "--interface", "wsgi", "--host", HOST,
                "--port", str(port), "--workers", "2", "--blocking-threads",
                str(opts.app_threads), "--runtime-threads", "1", "--no-ws",
                "--working-dir", str(opts.bench_dir), "--log-level", "warning",
                "--backlog", "1024", v.app or "wsgi_static:app"]
        return Launch(argv, env={"BENCH_DOCROOT": str(docroot)}, stop_signal=signal.SIGINT)


PREFORK_DEPS_CHECK = "import click, psutil, setproctitle"


def find_prefork_python(repo: Path, explicit: str | None) -> tuple[str | None, str]:
    """The interpreter to run bin/httpdctl with, and what was tried if none fits."""
    candidates = [explicit] if explicit else [
        os.environ.get("PREFORK_PYTHON"),
        str(repo / ".venv" / "bin" / "python"),
        sys.executable,
        str(repo.parent / "venv" / "bin" / "python"),
    ]
    tried = []
    for c in candidates:
        if not c or not Path(c).exists():
            continue
        tried.append(c)
        ok = subprocess.run([c, "-c", PREFORK_DEPS_CHECK], capture_output=True, timeout=30)
        if ok.returncode == 0:
            return c, ""
    return None, ("no interpreter with click, psutil and setproctitle among "
                  f"{tried or candidates}; pass --prefork-python or set PREFORK_PYTHON")


class Prefork(Server):
    name = "prefork"
    processes_note = "processes = 2, threads = --prefork-threads, access_log = off"
    hosts_apps = True
    static_beside_app = True
    serves_app = True  # prefork-noapp: the same configuration without the [app] section

    def config_note(self, opts: Options) -> str:
        return (f"processes = 2, threads = {opts.prefork_threads}, access_log = off; "
                f"application workloads: [app] mount = /, threads = {opts.app_threads}; "
                "static beside it: [static] mount = /static")

    def concurrency(self, opts: Options) -> int:
        return 2 * opts.app_threads

    def repo(self, opts: Options) -> Path:
        """The checkout whose bin/httpdctl runs."""
        return opts.repo

    def unavailable(self, opts: Options) -> str | None:
        ctl = self.repo(opts) / "bin" / "httpdctl"
        if not ctl.exists():
            return f"{ctl} not found: {self.name} skipped"
        py, why = find_prefork_python(opts.repo, opts.prefork_python)
        if py is None:
            return why
        opts.prefork_python = py
        return None

    def version(self, opts: Options) -> str:
        repo = self.repo(opts)
        return f"prefork from {repo} ({_git_head(repo)}), python {opts.prefork_python}"

    def launch(self, workdir: Path, port: int, docroot: Path, v: Variant,
               opts: Options) -> Launch:
        for sub in ("etc", "var/log", "var/run"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        _link_tree(docroot, workdir / "htdocs")
        log = "var/log/access.log" if v.access_log else "off"
        lines = [
            "[server]",
            f"listen = {HOST}:{port}{' ssl' if v.tls else ''}",
            "document_root = htdocs",
            "pid_file = var/run/httpd.pid",
            "server_name = localhost 127.0.0.1",
            "",
            "[workers]",
            "processes = 2",
            f"threads = {opts.prefork_threads}",
        ]
        if v.connections > 1000:
            lines.append(f"max_connections = {v.connections}")
        if v.long_keepalive:
            lines += ["", "[http]", f"keepalive_timeout = {LONG_KEEPALIVE_S}"]
        static_mount = v.static_mount or ("/static" if v.app and self.serves_app else "")
        if static_mount:  # an application owns /: the document root moves aside
            lines += ["", "[static]", f"mount = {static_mount}"]
        if v.app and self.serves_app:
            lines += ["", "[app]", "mount = /", f"module = {v.app}",
                      f"path = {opts.bench_dir}", f"threads = {opts.app_threads}"]
        if v.tls:  # protocols, ciphers and session tickets: prefork's defaults
            lines += ["", "[tls]", f"certificate = {opts.tls_cert}",
                      f"certificate_key = {opts.tls_key}"]
            if not v.session_tickets:
                lines.append("session_tickets = off")
        lines += ["", "[logging]", f"access_log = {log}", "error_log = var/log/error.log",
                  "level = warn", ""]
        (workdir / "etc" / "httpd.ini").write_text("\n".join(lines))
        assert opts.prefork_python is not None
        argv = [opts.prefork_python, str(self.repo(opts) / "bin" / "httpdctl"),
                "-f", str(workdir / "etc" / "httpd.ini"), "start", "--foreground"]
        return Launch(argv, stop_signal=signal.SIGINT)  # SIGINT: fast stop


class PreforkNoApp(Prefork):
    """prefork with the static-beside-an-application configuration minus the [app]
    section: the same file at the same URL (/static/...), no application loaded."""

    name = "prefork-noapp"
    hosts_apps = False
    only_static_beside_app = True
    serves_app = False

    def config_note(self, opts: Options) -> str:
        return (f"processes = 2, threads = {opts.prefork_threads}, access_log = off, "
                "[static] mount = /static, no [app]")


class PreforkBase(Prefork):
    """prefork from another checkout (--prefork-base PATH), configured exactly as `prefork`:
    a change measured before and after in the same rotated rounds."""

    name = "prefork-base"

    def repo(self, opts: Options) -> Path:
        assert opts.prefork_base is not None
        return opts.prefork_base

    def unavailable(self, opts: Options) -> str | None:
        if opts.prefork_base is None:
            return "no --prefork-base checkout given"
        return super().unavailable(opts)


def _git_head(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or "unknown commit"


def _link_tree(src: Path, dst: Path) -> None:
    """Populate dst with hard links to src's files (copies across filesystems)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        target = dst / f.name
        if not target.exists():
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)


ALL_SERVERS: list[Server] = [
    Prefork(), Nginx(), NginxTuned(), Apache(), Gunicorn("gunicorn-sync", "sync"),
    Gunicorn("gunicorn-gthread", "gthread", threads=4), Waitress(), HttpServer(),
    Uwsgi(), Granian(), PreforkNoApp(), PreforkBase(),
]
# The servers each suite runs when --servers is not given.
DEFAULT_SERVERS = {
    "static": ["prefork", "nginx", "nginx-tuned", "apache", "gunicorn-sync",
               "gunicorn-gthread", "waitress", "http.server"],
    "apps": ["prefork", "prefork-noapp", "gunicorn-sync", "gunicorn-gthread", "uwsgi",
             "granian", "waitress"],
    "tls": ["prefork", "nginx"],
}
# The servers that can terminate TLS themselves (the TLS workloads run only these).
TLS_SERVERS = frozenset({"prefork", "prefork-base", "nginx", "nginx-tuned"})


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed EC P-256 certificate for localhost/127.0.0.1 (openssl req),
    readable by workers that drop to nobody. Returns (certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    for path in (directory, cert, key):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return cert, key


def by_name(names: list[str]) -> list[Server]:
    known = {s.name: s for s in ALL_SERVERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; known: {list(known)}")
    return [known[n] for n in names]
