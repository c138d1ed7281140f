"""Installed and operated like a packaged server: `httpdctl init` from a wheel, the generated
systemd unit, the seed's upper-case verbs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from prefork.cli import scaffold
from prefork.cli.unitfile import render_unit
from prefork.config.settings import load_config

REPO = Path(__file__).resolve().parent.parent
HTTPDCTL = [sys.executable, str(REPO / "bin" / "httpdctl")]


def ctl(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HTTPDCTL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_init_lays_out_a_root_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "site"
    made = ctl("init", str(target), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert f"cd {target}" in made.stdout and "httpdctl start" in made.stdout
    for path in ("etc/httpd.ini", "etc/logrotate.d/prefork", "htdocs/index.html",
                 "examples/CTest.json", "examples/LTest.json"):
        assert (target / path).is_file(), path
    assert (target / "var" / "log").is_dir() and (target / "var" / "run").is_dir()
    config = load_config(target / "etc" / "httpd.ini")  # every setting, and it loads
    assert config.server.document_root == str(target / "htdocs")
    rotate = (target / "etc" / "logrotate.d" / "prefork").read_text()
    assert f"{target}/var/log/access.log" in rotate and "reopen-logs" in rotate

    (target / "htdocs" / "index.html").write_text("mine\n")
    again = ctl("init", str(target), cwd=tmp_path)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert (target / "htdocs" / "index.html").read_text() == "mine\n"


def test_init_copies_no_byte_code_from_the_installed_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip byte-compiles examples/app.py when it installs the wheel; init lays out the
    example, never the __pycache__ of the interpreter that installed it."""
    package = tmp_path / "package"
    examples = package / "skeleton" / "examples"
    (examples / "__pycache__").mkdir(parents=True)
    (examples / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00")
    (examples / "app.py").write_text("application = None\n")
    (examples / "stale.pyc").write_bytes(b"\x00")
    (package / "skeleton" / "htdocs").mkdir()
    (package / "skeleton" / "htdocs" / "index.html").write_text("hi\n")
    monkeypatch.setattr(scaffold.resources, "files", lambda _name: package)
    files = scaffold.plan(tmp_path / "root").files
    assert Path("examples/app.py") in files and Path("htdocs/index.html") in files
    assert not [p for p in files if "__pycache__" in p.parts or p.suffix == ".pyc"], files


def test_start_without_a_configuration_says_how_to_get_one(tmp_path: Path) -> None:
    result = ctl("start", cwd=tmp_path)
    assert result.returncode == 1
    assert "configuration file not found" in result.stderr
    assert "httpdctl init" in result.stderr


@pytest.mark.parametrize("verb", ["START", "STOP", "RESTART", "RELOAD", "STATUS"])
def test_the_seeds_upper_case_verbs_are_aliases(tmp_path: Path, verb: str) -> None:
    lower = ctl(verb.lower(), "--help", cwd=tmp_path)
    upper = ctl(verb, "--help", cwd=tmp_path)
    assert upper.returncode == 0, upper.stderr
    assert upper.stdout.replace(verb, verb.lower()) == lower.stdout


def test_upper_case_stop_talks_to_the_server(tmp_path: Path) -> None:
    ctl("init", str(tmp_path), cwd=tmp_path)
    stopped = ctl("STOP", cwd=tmp_path)
    assert stopped.returncode == 3 and "not running" in stopped.stderr


# ---------------------------------------------------------------------- systemd unit

def _unit_for(root: Path, **server: str) -> Path:
    ctl("init", str(root), cwd=root.parent)
    ini = root / "etc" / "httpd.ini"
    if server:
        text = ini.read_text()
        for key, value in server.items():
            text = text.replace(f"\n{key} =", f"\n{key} = {value}\n#", 1)
        ini.write_text(text)
    unit = root / "prefork.service"
    result = ctl("systemd-unit", cwd=root)
    assert result.returncode == 0, result.stderr
    unit.write_text(result.stdout)
    return unit


def test_the_unit_names_this_installation_and_sandboxes_the_server(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    text = _unit_for(root).read_text()
    assert f"ExecStart={sys.executable} -m prefork -f {root}/etc/httpd.ini start" in text
    assert "Type=notify" in text and "ProtectSystem=strict" in text
    assert f"ReadWritePaths={root}/var" in text
    assert "CapabilityBoundingSet=\n" in text  # port 8080, no user: no capability at all
    assert "~@privileged" in text

    config = load_config(root / "etc" / "httpd.ini",
                         ("server.listen=0.0.0.0:80", "server.user=nobody"))
    privileged = render_unit(config, root / "etc" / "httpd.ini")
    caps = next(line for line in privileged.splitlines()
                if line.startswith("CapabilityBoundingSet="))
    assert set(caps.split("=", 1)[1].split()) == {
        "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"}
    assert "~@privileged" not in privileged  # setuid/setgroups must stay allowed


# Every path of the shipped configuration outside /tmp and /home, wherever this checkout lies (a
# CI clone under /tmp or /home would otherwise relax the sandbox through the document root).
OUTSIDE_TMP_AND_HOME = ("server.document_root=/usr/share",  # must exist; only rendered
             "uploads.directory=/srv/prefork/htdocs/uploads",
             "logging.access_log=/srv/prefork/var/log/access.log",
             "logging.error_log=/srv/prefork/var/log/error.log")


def _sandbox(unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.splitlines()
                if line.startswith(("ProtectHome=", "PrivateTmp=")))


def test_the_sandbox_leaves_readable_every_file_the_configuration_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ProtectHome=yes hides /home, /root and /run/user, PrivateTmp=yes /tmp and /var/tmp:
    a certificate, an application or the interpreter's real location there must relax
    them, or the service cannot start."""
    root = Path("/srv/prefork")  # the unit is only rendered: nothing is read there
    ini = root / "etc" / "httpd.ini"
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    # and no virtual environment: a checkout under /tmp (a CI clone) has its venv's
    # site-packages there, which rightly turns PrivateTmp off
    monkeypatch.setattr(sys, "prefix", "/usr")
    config = load_config(REPO / "etc" / "httpd.ini", OUTSIDE_TMP_AND_HOME)
    assert _sandbox(render_unit(config, ini)) == {"ProtectHome": "yes", "PrivateTmp": "yes"}

    tls = tmp_path / "t.ini"
    tls.write_text("[server]\nlisten = 127.0.0.1:8443 ssl\n[tls]\n"
                   "certificate = /home/alice/tls/fullchain.pem\n"
                   "certificate_key = /home/alice/tls/privkey.pem\n")
    assert _sandbox(render_unit(load_config(tls, OUTSIDE_TMP_AND_HOME),
                                ini))["ProtectHome"] == "read-only"
    app = tmp_path / "a.ini"
    app.write_text("[app]\nmount = /app\nmodule = blog:app\npath = /tmp/apps/blog\n")
    sandbox = _sandbox(render_unit(load_config(app, OUTSIDE_TMP_AND_HOME),
                                   ini))
    assert sandbox == {"ProtectHome": "yes", "PrivateTmp": "no"}

    # A virtual environment outside /home whose python links into /root (pyenv): the
    # interpreter the unit runs and its standard library live there.
    link = tmp_path / "venv-python"
    link.symlink_to("/root/.pyenv/versions/3.11.7/bin/python3.11")
    monkeypatch.setattr(sys, "executable", str(link))
    monkeypatch.setattr(sys, "base_prefix", "/root/.pyenv/versions/3.11.7")
    assert _sandbox(render_unit(config, ini))["ProtectHome"] == "read-only"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
def test_the_unit_passes_verify_and_rates_at_most_4(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    unit = _unit_for(root)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)
    if "--offline" in security.stderr and "unrecognized" in security.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    level = next(line for line in security.stdout.splitlines()
                 if "Overall exposure level" in line)
    score = float(level.split(":", 1)[1].split()[0])
    assert score <= 4.0, security.stdout


# ---------------------------------------------------------------------- from a wheel

@pytest.mark.slow
def test_a_wheel_in_a_fresh_environment_inits_serves_reloads_and_stops(tmp_path: Path) -> None:
    """Nothing from the checkout: build the wheel, install it in a new virtual environment,
    and run the installed httpdctl in an empty directory."""
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
             str(REPO)]
    subprocess.run(build, check=True, timeout=300, capture_output=True)
    wheel = next(dist.glob("prefork-*.whl"))
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    installed = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    if installed.returncode != 0 and "No matching distribution" in installed.stderr:
        pytest.skip(f"the package index cannot be reached: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr
    httpdctl = str(env_dir / "bin" / "httpdctl")
    site = tmp_path / "empty"
    site.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HTTPD_CONF")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([httpdctl, *args], cwd=site, env=env, capture_output=True,
                              text=True, timeout=90)

    assert run("init").returncode == 0
    assert not list(site.rglob("__pycache__")), "init copied byte code pip wrote"
    ini = (site / "etc" / "httpd.ini").read_text()
    for section in ("[server]", "[uploads]", "[auth]", "[logging]", "# [app:blog]", "# [tls]"):
        assert section in ini, section  # every setting, the repeatable sections commented
    overrides = ("--set", "server.listen=127.0.0.1:0", "--set", "workers.processes=1")
    started = run(*overrides, "start")
    assert started.returncode == 0, started.stderr
    try:
        port = int(started.stdout.rsplit(":", 1)[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert reply.status == 200 and b"<html" in reply.read().lower()
        reloaded = run(*overrides, "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sample.txt", timeout=10) as reply:
            assert reply.status == 200
        confirmed = subprocess.run(  # the wheel's client, on init's examples/CTest.json
            [str(env_dir / "bin" / "httpd-client"), "confirm", "GET",
             "--url", f"http://127.0.0.1:{port}"],
            cwd=site, env=env, capture_output=True, text=True, timeout=90)
        assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
        assert "examples/CTest.json" in confirmed.stdout
        stopped = run(*overrides, "stop")
        assert stopped.returncode == 0, stopped.stderr
    finally:
        pid_file = site / "var" / "run" / "httpd.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass


def test_the_checkout_script_without_dependencies_says_so_in_one_line() -> None:
    """bin/httpdctl run by an interpreter that lacks prefork's dependencies (here: no
    site-packages at all, -S) names what it could not import and how to get it, instead of
    a traceback."""
    result = subprocess.run([sys.executable, "-S", str(REPO / "bin" / "httpdctl"), "status"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.splitlines()
    assert "cannot import" in line and ".venv/bin/pip install -e ." in line, line
