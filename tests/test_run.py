"""`httpdctl run MODULE:CALLABLE`: one application in the foreground without a configuration
file. Each test starts the real command as a subprocess in its own session (so SIGINT to the
group is the terminal's Ctrl-C), in a project directory holding a small WSGI module, with
TMPDIR pointed at a directory of the test: what the run leaves behind can be seen."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HTTPDCTL, wait_for

APP = '''\
import json

def application(environ, start_response):
    body = json.dumps({
        "script_name": environ["SCRIPT_NAME"],
        "path_info": environ["PATH_INFO"],
        "method": environ["REQUEST_METHOD"],
        "multithread": environ["wsgi.multithread"],
        "greeting": GREETING,
        "env": __import__("os").environ.get("RUN_TEST_VALUE"),
        "body": environ["wsgi.input"].read().decode(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]

GREETING = "hello"
'''


class Run:
    """A running `httpdctl run`, its stderr collected line by line."""

    def __init__(self, args: list[str], cwd: Path, tmpdir: Path) -> None:
        env = {**os.environ, "TMPDIR": str(tmpdir)}
        env.pop("HTTPD_CONF", None)
        self.proc = subprocess.Popen([*HTTPDCTL, "run", *args], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> int:
        wait_for(lambda: "ready: all workers accepting connections" in self.stderr
                 or self.proc.poll() is not None, timeout=30)
        assert self.proc.poll() is None, self.stderr
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.stderr)
        assert match, self.stderr
        self.port = int(match.group(1))
        return self.port

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole process group, as a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "hello.py").write_text(APP)
    (directory / "public").mkdir()
    (directory / "public" / "style.css").write_text("body { color: teal }\n")
    return directory


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.kill()


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")
            if "__pycache__" not in p.parts}


def start(runs: list[Run], args: list[str], cwd: Path, tmp_path: Path) -> Run:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    run = Run(args, cwd, tmpdir)
    runs.append(run)
    return run


def test_run_serves_the_app_and_static_files_and_stops_on_ctrl_c(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    before = files_under(project)
    run = start(runs, ["hello:application", "--listen", "127.0.0.1:0", "--processes", "2",
                       "--threads", "4", "--static", "/static=public", "-e",
                       "RUN_TEST_VALUE=42"], project, tmp_path)
    run.wait_ready()
    status, body = run.request("POST", "/api/items?x=1", b"payload")
    assert status == 200
    answer = json.loads(body)
    assert answer == {"script_name": "", "path_info": "/api/items", "method": "POST",
                      "multithread": True, "greeting": "hello", "env": "42",
                      "body": "payload"}
    status, body = run.request("GET", "/static/style.css")
    assert (status, body) == (200, b"body { color: teal }\n")
    assert "2 workers" in run.stderr
    # The access log goes to stderr, one line per request.
    wait_for(lambda: '"GET /static/style.css HTTP/1.1" 200' in run.stderr)
    assert '"POST /api/items?x=1 HTTP/1.1" 200' in run.stderr
    assert run.interrupt() == 0, run.stderr
    assert "stopped" in run.lines[-1], run.stderr
    # Nothing left behind: not in the project, not in the temporary directory.
    assert files_under(project) == before
    assert list((tmp_path / "tmpdir").iterdir()) == []


def test_without_static_the_app_owns_every_path(project: Path, tmp_path: Path,
                                                runs: list[Run]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = start(runs, ["hello", "--listen", "127.0.0.1:0", "--chdir", str(project),
                       "--threads", "1"], elsewhere, tmp_path)
    run.wait_ready()
    for path in ("/", "/static/style.css", "/upload", "/uploads/x", "/index.html"):
        status, body = run.request("POST" if path == "/upload" else "GET", path)
        assert status == 200, (path, body)
        assert f'"path_info": "{path}"' in body.decode()
    assert '"multithread": false' in run.request("GET", "/")[1].decode()
    assert run.interrupt() == 0, run.stderr
    assert list((tmp_path / "tmpdir").iterdir()) == []
    assert list(elsewhere.iterdir()) == []


def test_a_reload_imports_the_new_code(project: Path, tmp_path: Path,
                                       runs: list[Run]) -> None:
    run = start(runs, ["hello:application", "--listen", "127.0.0.1:0"], project, tmp_path)
    run.wait_ready()
    assert b'"greeting": "hello"' in run.request("GET", "/")[1]
    (project / "hello.py").write_text(APP.replace('"hello"', '"reloaded"'))
    os.kill(run.proc.pid, signal.SIGHUP)
    wait_for(lambda: b'"greeting": "reloaded"' in run.request("GET", "/")[1], timeout=20)
    # New code that does not import: the reload fails, the running code keeps serving.
    (project / "hello.py").write_text("def application(:\n")
    os.kill(run.proc.pid, signal.SIGHUP)
    wait_for(lambda: "cannot import hello:application" in run.stderr, timeout=20)
    assert "SyntaxError" in run.stderr  # the reload failed: the old generation serves on
    assert b'"greeting": "reloaded"' in run.request("GET", "/")[1]
    assert run.interrupt() == 0, run.stderr


def test_a_reload_asked_for_during_another_follows_it(project: Path, tmp_path: Path,
                                                     runs: list[Run]) -> None:
    """A SIGHUP while a reload is under way (here: new workers importing slowly) is not
    dropped: one more reload follows, and the code as it is then answers."""
    run = start(runs, ["hello:application", "--listen", "127.0.0.1:0"], project, tmp_path)
    run.wait_ready()
    slow = "import time\ntime.sleep(1.5)\n" + APP
    (project / "hello.py").write_text(slow.replace('"hello"', '"second"'))
    os.kill(run.proc.pid, signal.SIGHUP)
    # The master has taken that reload up once it logged its import check or generation.
    wait_for(lambda: "reload" in run.stderr, timeout=20)
    (project / "hello.py").write_text(slow.replace('"hello"', '"third"'))
    os.kill(run.proc.pid, signal.SIGHUP)
    try:
        wait_for(lambda: b'"greeting": "third"' in run.request("GET", "/")[1], timeout=30)
    except AssertionError:
        raise AssertionError(run.stderr) from None
    assert run.interrupt() == 0, run.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["missing:app"], "httpdctl: cannot import missing:app: ModuleNotFoundError: "
                      "No module named 'missing'"),
    (["hello:nothing"], "httpdctl: cannot import hello:nothing: module hello has no nothing"),
    (["hello", "--listen", "nowhere"], "httpdctl: --listen: expected host:port"),
    (["hello", "--threads", "0"], "httpdctl: --threads: must be at least 1"),
    (["hello", "--static", "/=public"], "httpdctl: --static: the application owns /"),
    (["hello", "--static", "/static=no-such-dir"], "httpdctl: --static: not a directory: "),
])
def test_run_refuses_what_cannot_work(project: Path, tmp_path: Path, runs: list[Run],
                                      args: list[str], message: str) -> None:
    run = start(runs, args, project, tmp_path)
    assert run.proc.wait(timeout=30) == 1
    run.reader.join(timeout=5)
    assert len(run.lines) == 1 and run.lines[0].startswith(message), run.stderr
    assert list((tmp_path / "tmpdir").iterdir()) == []


def test_run_takes_no_configuration_file(project: Path) -> None:
    result = subprocess.run([*HTTPDCTL, "-f", "etc/httpd.ini", "run", "hello"], cwd=project,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "run takes no configuration file" in result.stderr


EXAMPLES = Path(__file__).resolve().parent.parent / "prefork" / "skeleton" / "examples"
HTTPD_CLIENT = [HTTPDCTL[0], str(Path(HTTPDCTL[1]).parent / "httpd-client")]


def test_the_example_app_answers_the_seed_clients_post(tmp_path: Path,
                                                       runs: list[Run]) -> None:
    """examples/app.py as its docstring says to run it, checked with its own spec by
    httpd-client (JSON data, multipart data with a file, PUT /update, static files)."""
    run = start(runs, ["app:application", "--chdir", str(EXAMPLES), "--static",
                       "/static=../htdocs", "--listen", "127.0.0.1:0"], tmp_path, tmp_path)
    run.wait_ready()
    result = subprocess.run([*HTTPD_CLIENT, "confirm", "ALL", "--spec",
                             str(EXAMPLES / "AppTest.json"), "--url",
                             f"http://127.0.0.1:{run.port}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: 6 of 6" in result.stdout
    assert run.interrupt() == 0, run.stderr


def test_the_example_app_follows_pep_3333() -> None:
    """Every answer of examples/app.py through wsgiref's validator."""
    import importlib.util
    import io
    from wsgiref.util import setup_testing_defaults
    from wsgiref.validate import validator

    spec = importlib.util.spec_from_file_location("example_app", EXAMPLES / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = validator(module.application)
    boundary = "xyzzy"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n"
                 f"Delta\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
                 f"--{boundary}--\r\n").encode()
    cases = [("GET", "/", "", b"", "200"),
             ("POST", "/something", "application/json", b'{"a": 1}', "201"),
             ("POST", "/something", f"multipart/form-data; boundary={boundary}", multipart,
              "201"),
             ("POST", "/something", "application/json", b"[1", "400"),
             ("POST", "/something", "text/plain", b"x", "415"),
             ("PUT", "/update", "application/json", b'{"b": 2}', "200"),
             ("DELETE", "/update", "", b"", "405"),
             ("GET", "/elsewhere", "", b"", "404")]
    for method, path, content_type, body, status in cases:
        environ: dict = {"REQUEST_METHOD": method, "PATH_INFO": path,
                         "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
                         "wsgi.input": io.BytesIO(body), "SCRIPT_NAME": "",
                         "QUERY_STRING": ""}
        setup_testing_defaults(environ)
        seen: list[str] = []

        def start_response(status_line: str, headers: list, exc_info: object = None,
                           seen: list[str] = seen) -> object:
            seen.append(status_line)
            return lambda data: None

        result = app(environ, start_response)
        data = b"".join(result)
        result.close()
        assert seen[0].startswith(status), (method, path, seen, data)
        answer = json.loads(data)
        if (method, path, status) == ("POST", "/something", "201") and "multipart" in \
                content_type:
            assert answer["fields"] == {"name": "Delta"}
            assert answer["file"]["name"] == "a.txt" and answer["file"]["size"] == 5
