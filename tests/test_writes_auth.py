"""Safe writes and authentication for any path prefix (issue 16, items 5 and 6).

Writes: [uploads] enabled = auto (on only while every listen address is loopback), the
refusal to start (configtest, reload) with writes open beyond loopback, uploaded content
served so that it never acts as a page of the site (nosniff, sandbox, active types as
attachments, no index files), on the full and the quick path alike.
Auth: [auth] require = PREFIX[:METHODS] ..., matched on the path handlers act on; bcrypt,
$apr1$ and {SHA} entries (the last two with a start-up warning naming the users); the user
reaches %u and REMOTE_USER; protected requests run in a pool thread.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from passlib.hash import apr_md5_crypt, ldap_sha1

from prefork.config.settings import Config, load_config
from prefork.config.values import AccessRule, Switch, access_rules, switch
from prefork.errors import ConfigError
from prefork.http.message import Headers, Request
from prefork.site.access import covering_rule, normalised
from prefork.site.auth import BasicAuth, load_htpasswd, weak_entries_warning
from prefork.site.router import Router
from prefork.site.uploads.put import can_run_script, check_upload_config

from .conftest import (
    Server,
    ServerFactory,
    make_root,
    refused_activated_start,
    start_activated,
    stop_activated,
    wait_for,
    write_config,
    write_ini,
)
from .test_quick import compare, fresh_sides

TESTS = Path(__file__).resolve().parent


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def users_file(path: Path) -> Path:
    """alice (bcrypt), bob ($apr1$), carol ({SHA}): each password is the user's name + 1."""
    alice = bcrypt.hashpw(b"alice1", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"alice:{alice}\nbob:{apr_md5_crypt.hash('bob1')}\n"
                    f"carol:{ldap_sha1.hash('carol1')}\n")
    return path


def config_from(tmp_path: Path, text: str) -> Config:
    return load_config(write_ini(tmp_path, text))


# ------------------------------------------------------------------ the typed settings

def test_enabled_is_a_tri_state_resolved_against_the_listen_addresses(tmp_path: Path) -> None:
    assert switch("auto") is Switch.AUTO and switch("yes") is Switch.ON
    assert switch("Off") is Switch.OFF
    with pytest.raises(ValueError, match="auto, on or off"):
        switch("maybe")
    with pytest.raises(TypeError):
        bool(Switch.AUTO)  # a call site must resolve it, never truth-test it
    cases = [("127.0.0.1:8080 [::1]:8080", "auto", True), ("0.0.0.0:8080", "auto", False),
             ("127.0.0.1:80 192.0.2.1:80", "auto", False), ("0.0.0.0:8080", "off", False),
             ("127.0.0.1:8080", "off", False), ("0.0.0.0:8080", "on", True)]
    for listen, enabled, expected in cases:
        config = config_from(tmp_path, f"[server]\nlisten = {listen}\n[uploads]\n"
                                       f"enabled = {enabled}\nallow_anonymous = on\n")
        assert config.uploads_enabled is expected, (listen, enabled)


def test_require_rules_parse_as_an_operator_writes_them() -> None:
    rules = access_rules("/admin  /uploads:PUT,post,DELETE /docs:GET /")
    assert rules == (AccessRule("/admin"), AccessRule("/uploads", frozenset({"PUT", "POST",
                                                                              "DELETE"})),
                     AccessRule("/docs", frozenset({"GET", "HEAD"})), AccessRule("/"))
    assert access_rules("") == ()
    for bad, problem in [("admin", "path prefix"), ("/a:", "no method"),
                         ("/a:FETCH", "FETCH is not one of"), ("/a /a/", "listed twice"),
                         ("/a/../b", "path prefix"), ("/a%2f", "path prefix")]:
        with pytest.raises(ValueError, match=problem):
            access_rules(bad)


def test_rules_match_the_path_handlers_act_on() -> None:
    rules = access_rules("/admin /admin/public:PUT /uploads:PUT")
    for raw in ("/admin", "/admin/", "/%61dmin/x", "//admin/x", "/pub/../admin/x",
                "/./admin", "/admin%2fx", "/../admin"):
        rule = covering_rule(rules, normalised(raw))
        assert rule == AccessRule("/admin"), raw
    assert covering_rule(rules, normalised("/administrator")) is None
    assert covering_rule(rules, normalised("/admin/public/x")) == \
        AccessRule("/admin/public", frozenset({"PUT"}))
    assert normalised("/%ff/x") == "/\u00ff/x"  # not UTF-8: matched as latin-1


# ------------------------------------------------------------------ refusing open writes

def test_open_writes_beyond_loopback_are_refused_with_one_line(tmp_path: Path) -> None:
    users = users_file(tmp_path / "htpasswd")
    wide = "[server]\nlisten = 0.0.0.0:8080\n"
    # auto beyond loopback: uploads are off, nothing to refuse.
    check_upload_config(config_from(tmp_path, wide))
    config = config_from(tmp_path, wide + "[uploads]\nenabled = on\n")
    with pytest.raises(ConfigError) as caught:
        check_upload_config(config)
    message = str(caught.value)
    assert "\n" not in message and "uploads.require_auth" in message
    assert "POST, PUT, DELETE" in message and "allow_anonymous" in message
    check_upload_config(config_from(tmp_path, wide + "[uploads]\nenabled = on\n"
                                                     "allow_anonymous = on\n"))
    check_upload_config(config_from(tmp_path, wide + "[uploads]\nenabled = on\nrequire_auth ="
                                                     f" POST PUT DELETE\n[auth]\nusers_file = "
                                                     f"{users}\n"))
    by_prefix = wide + f"[uploads]\nenabled = on\n[auth]\nusers_file = {users}\nrequire = "
    check_upload_config(config_from(tmp_path, by_prefix + "/uploads:PUT,DELETE /upload:POST\n"))
    check_upload_config(config_from(tmp_path, by_prefix + "/\n"))
    # /uploads does not hold /upload (segment boundaries): POST stays open and is named.
    with pytest.raises(ConfigError, match=r"require_auth: POST would need no credentials"):
        check_upload_config(config_from(tmp_path, by_prefix + "/uploads:PUT,POST,DELETE\n"))


def test_rules_need_a_users_file_and_uploads_need_their_own_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth\.require: paths need credentials"):
        check_upload_config(config_from(tmp_path, "[auth]\nrequire = /admin\n"))
    with pytest.raises(ConfigError, match=r"uploads\.directory: .* holds the document root"):
        check_upload_config(config_from(tmp_path, "[uploads]\ndirectory = htdocs\n"))
    with pytest.raises(ConfigError, match="holds the document root"):
        check_upload_config(config_from(tmp_path, "[uploads]\ndirectory = .\n"))
    check_upload_config(config_from(tmp_path, "[uploads]\ndirectory = htdocs\nenabled = off\n"))


@pytest.mark.parametrize(("text", "key"), [
    ("[static]\nmount = /uploads\n", "static.mount"),
    ("[static]\nmount = /uploads/site\n", "static.mount"),
    ("[app:files]\nmount = /uploads\nmodule = files:app\n", "app:files.mount"),
    ("[app]\nmount = /uploads/x\nmodule = files:app\n", "app.mount"),
    ("[app]\nmount = /upload\nmodule = files:app\n", "app.mount"),
    ("[status]\nenabled = on\npath = /upload\n", "status.path"),
    ("[status]\nenabled = on\npath = /uploads/status\n", "status.path"),
])
def test_no_mount_shadows_the_uploads_urls(tmp_path: Path, text: str, key: str) -> None:
    """/uploads/... and /upload belong to the uploads handlers, which serve what clients
    stored with nosniff and a sandbox, and check require_auth: another mount there would
    take those requests (or fail the workers' boot, two mounts at one place), so
    configtest refuses it in one line while uploads are on."""
    with pytest.raises(ConfigError) as caught:
        check_upload_config(config_from(tmp_path, text))
    message = str(caught.value)
    assert key in message and "uploads" in message and "\n" not in message
    check_upload_config(config_from(tmp_path, text + "[uploads]\nenabled = off\n"))
    check_upload_config(config_from(tmp_path, text.replace("/upload", "/files")))


def test_configtest_refuses_an_application_mounted_over_the_uploads(
        server_factory: ServerFactory) -> None:
    server = server_factory(start=False)
    server.config.write_text(server.config.read_text() + "\n[app:files]\nmount = /uploads\n"
                             f"module = plain:application\npath = {TESTS / 'apps'}\n")
    result = server.ctl("configtest", check=False)
    assert result.returncode == 1 and "app:files.mount" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_configtest_start_and_reload_refuse_open_writes_beyond_loopback(
        server_factory: ServerFactory) -> None:
    server = server_factory({"server": {"listen": "0.0.0.0:0"}, "uploads": {"enabled": "on"}},
                            start=False)
    for verb in ("configtest", "start"):
        result = server.ctl(verb, check=False)
        assert result.returncode == 1, (verb, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "uploads.require_auth" in result.stderr and "allow_anonymous" in result.stderr
    # A server on loopback that reloads into open writes beyond it keeps its generation.
    server.config.write_text(write_config(server.root, {}).read_text())
    server.start()
    write_config(server.root, {"server": {"listen": f"0.0.0.0:{server.port}"},
                               "uploads": {"enabled": "on"}})
    result = server.ctl("reload", check=False)
    assert result.returncode != 0 and "uploads.require_auth" in result.stdout + result.stderr
    assert server.get("/uploads/still.txt", "PUT", body=b"on")[0].status == 201


def test_socket_activation_beyond_loopback_turns_auto_uploads_off(
        server_factory: ServerFactory) -> None:
    """[server] listen says 127.0.0.1, but systemd passes a socket on 0.0.0.0: what is
    served decides, at start and at every reload — uploads off under auto, and a reload
    into enabled = on without credentials fails, naming the passed socket."""
    server = server_factory({"workers": {"processes": "1", "allow_root": "on"}}, start=False)
    process, port = start_activated(server, "0.0.0.0")
    try:
        wait_for(lambda: server.state().get("generation") == 1, timeout=20)
        assert server.state()["listen"] == [f"0.0.0.0:{port}"]
        notice = "uploads: off: [uploads] enabled = auto and the server listens beyond " \
                 f"loopback (0.0.0.0:{port}"
        assert notice in server.log("error.log")
        assert server.get("/uploads/x.txt", "PUT", body=b"x")[0].status == 405
        assert server.reload_by_signal()["ok"]
        assert server.get("/uploads/x.txt", "PUT", body=b"x")[0].status == 405
        write_config(server.root, {"workers": {"processes": "1", "allow_root": "on"},
                                   "uploads": {"enabled": "on"}})
        outcome = server.reload_by_signal()
        assert not outcome["ok"] and "uploads.require_auth" in outcome["message"], outcome
        assert f"0.0.0.0:{port}" in outcome["message"], outcome
        assert server.get("/uploads/x.txt", "PUT", body=b"x")[0].status == 405
    finally:
        stop_activated(process)


def test_socket_activation_beyond_loopback_refuses_open_writes(
        server_factory: ServerFactory) -> None:
    server = server_factory({"workers": {"processes": "1", "allow_root": "on"},
                             "uploads": {"enabled": "on"}}, start=False)
    port, err = refused_activated_start(server, "0.0.0.0")
    reason = [line for line in err.splitlines() if "start-up failed" in line]
    assert len(reason) == 1, err
    assert "uploads.require_auth" in reason[0] and f"0.0.0.0:{port}" in reason[0], reason
    assert "allow_anonymous" in reason[0], reason


@pytest.mark.skipif(os.geteuid() != 0, reason="the root policy applies to a master run as root")
def test_socket_activation_beyond_loopback_needs_a_user_as_root(
        server_factory: ServerFactory) -> None:
    """Workers keep root only while nothing beyond loopback can reach them: the passed
    socket decides that too, not [server] listen."""
    server = server_factory({"workers": {"processes": "1"}}, start=False)
    port, err = refused_activated_start(server, "0.0.0.0")
    assert f"refusing to run workers as root while listening on 0.0.0.0:{port}" in err, err


def test_auto_beyond_loopback_starts_with_writes_off(server_factory: ServerFactory) -> None:
    # allow_root: the suite may run as root, which beyond loopback needs saying.
    server = server_factory({"server": {"listen": "0.0.0.0:0"},
                             "workers": {"allow_root": "on"}})
    assert "uploads: off: [uploads] enabled = auto" in server.log("error.log")
    response, _ = server.get("/uploads/x.txt", "PUT", body=b"x")
    assert response.status == 405 and response.getheader("Allow") == "GET, HEAD, OPTIONS"
    assert server.get("/upload", "POST", {"Content-Type": "application/json"},
                      b"{}")[0].status == 405
    # What the directory holds is not served while uploads are off.
    (server.root / "htdocs" / "uploads").mkdir(exist_ok=True)
    (server.root / "htdocs" / "uploads" / "old.html").write_text("<script>1</script>")
    assert server.get("/uploads/old.html")[0].status == 403
    assert server.get("/about.html")[0].status == 200


# ------------------------------------------------------------------ serving uploaded content

ACTIVE = {"page.html": "text/html", "page.htm": "text/html", "pic.svg": "image/svg+xml",
          "data.xml": "text/xml", "code.js": "javascript", "style.xsl": "application/xml"}
# A name the type table does not know (.xhtml in Python's built-in one) is
# application/octet-stream, which a browser told nosniff downloads.
PASSIVE = {"notes.md": "text/markdown", "doc.json": "application/json", "pic.gif": "image/gif",
           "page.xhtml": "application/octet-stream"}


def test_active_types_are_named() -> None:
    for content_type in ("text/html; charset=utf-8", "image/svg+xml", "text/javascript",
                         "application/javascript", "application/rss+xml", "text/xml",
                         "application/ecmascript", "TEXT/HTML"):
        assert can_run_script(content_type), content_type
    for content_type in ("text/plain; charset=utf-8", "application/json", "image/png",
                         "application/octet-stream", "text/css", "application/pdf"):
        assert not can_run_script(content_type), content_type


def test_uploaded_content_never_acts_as_a_page(server: Server) -> None:
    for name in [*ACTIVE, *PASSIVE]:
        assert server.get(f"/uploads/{name}", "PUT", body=b"<script>alert(1)</script>"
                          )[0].status == 201
    for name, kind in {**ACTIVE, **PASSIVE}.items():
        for method, headers in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=0-3"}),
                                ("GET", {"Range": "bytes=0-1,3-4"})):
            response, _ = server.get(f"/uploads/{name}", method, headers)
            assert response.status in (200, 206), (name, method)
            assert response.getheader("X-Content-Type-Options") == "nosniff", name
            assert response.getheader("Content-Security-Policy") == "sandbox", name
            disposition = response.getheader("Content-Disposition") or ""
            if name in ACTIVE:
                assert disposition == f'attachment; filename="{name}"', (name, method)
            else:
                assert disposition == "", name
            if "," not in headers.get("Range", ""):
                assert kind in (response.getheader("Content-Type") or ""), name
    # The site's own pages are untouched.
    response, _ = server.get("/about.html")
    assert response.getheader("Content-Security-Policy") is None
    assert response.getheader("Content-Disposition") is None


def test_an_uploaded_index_file_is_never_the_directory_page(server: Server) -> None:
    assert server.get("/uploads/index.html", "PUT", body=b"<h1>defaced</h1>")[0].status == 201
    (server.root / "htdocs" / "uploads" / "sub").mkdir()
    assert server.get("/uploads/sub/index.html", "PUT", body=b"<h1>x</h1>")[0].status == 201
    for path in ("/uploads/", "/uploads/sub/"):
        response, body = server.get(path)
        assert response.status == 403 and b"defaced" not in body, path
    response, _ = server.get("/uploads/index.html")
    assert response.status == 200
    assert response.getheader("Content-Disposition") == 'attachment; filename="index.html"'


def test_uploaded_answers_are_the_same_on_the_quick_and_the_full_path(tmp_path: Path) -> None:
    sides = fresh_sides(tmp_path)
    uploads = Path(sides[0].ctx.router.uploads.directory)  # type: ignore[union-attr]
    (uploads / "x.html").write_text("<script>alert(1)</script>\n")
    (uploads / "x.md").write_text("hello\n")
    for name in ("x.html", "x.md"):
        request = f"GET /uploads/{name} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        answers = compare(sides, request)
        for answer in answers:
            head = answer.partition(b"\r\n\r\n")[0]
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b"\r\nX-Content-Type-Options: nosniff" in head
            assert b"\r\nContent-Security-Policy: sandbox" in head
            assert (b"\r\nContent-Disposition: attachment" in head) is (name == "x.html")
    # The site's pages still take the quick path; uploaded files never do.
    compare(sides, b"GET /about.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert sides[0].hits == 1


# ------------------------------------------------------------------ htpasswd schemes

def test_apr1_and_sha_entries_are_read_and_their_users_named(tmp_path: Path) -> None:
    path = users_file(tmp_path / "htpasswd")
    assert sorted(load_htpasswd(str(path))) == ["alice", "bob", "carol"]
    warning = weak_entries_warning(str(path)) or ""
    assert "$apr1$" in warning and "bob" in warning and "{SHA}" in warning \
        and "carol" in warning and "alice" not in warning
    auth = BasicAuth(str(path), "r")
    for user in ("alice", "bob", "carol"):
        request = Request("GET", "/", "/", "", "HTTP/1.1",
                          Headers(basic(user, user + "1").items()), ("127.0.0.1", 1))
        assert auth.authenticate(request) == user and request.user == user
        wrong = Request("GET", "/", "/", "", "HTTP/1.1",
                        Headers(basic(user, "nope").items()), ("127.0.0.1", 1))
        with pytest.raises(Exception, match="wrong password"):
            auth.authenticate(wrong)
    path.write_text(f"dave:{bcrypt.hashpw(b'x', bcrypt.gensalt(rounds=4)).decode()}\n")
    assert weak_entries_warning(str(path)) is None


# ------------------------------------------------------------------ auth for any prefix

def test_protected_requests_run_in_the_blocking_pool(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    users = users_file(tmp_path / "htpasswd")
    router = Router(load_config(write_config(root, {"auth": {
        "users_file": str(users), "require": "/admin /uploads:PUT /docs:GET"}})))
    assert router.pool_for("GET", "/admin/") == "" and router.pool_for("GET", "/%61dmin") == ""
    assert router.pool_for("PUT", "/uploads/x") == ""
    assert router.pool_for("GET", "/uploads/x") is None
    assert router.pool_for("HEAD", "/docs/a") == "" and router.pool_for("OPTIONS", "/docs") \
        is None
    assert router.pool_for("GET", "/about.html") is None
    assert "authorization" in router.reads_fields  # the quick path never repeats them


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("guarded")
    users = users_file(base / "htpasswd")
    settings = {"auth": {"users_file": str(users), "realm": "staff only",
                         "require": "/admin /uploads:PUT,DELETE /upload:POST /plain"},
                "uploads": {"require_auth": "PUT", "writers": "alice bob"},
                "app:plain": {"mount": "/plain", "module": "plain:application",
                              "path": str(TESTS / "apps")},
                "logging": {"access_format": "%u %m %U %>s"}}
    root = make_root(base)
    (root / "htdocs" / "admin").mkdir()
    (root / "htdocs" / "admin" / "index.html").write_text("<h1>admin</h1>\n")
    server = Server(root, write_config(root, settings))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def test_a_protected_prefix_challenges_and_admits(guarded: Server) -> None:
    for path in ("/admin/", "/admin/index.html", "/%61dmin/", "//admin/", "/x/../admin/"):
        response, _ = guarded.get(path)
        assert response.status == 401, path
        assert response.getheader("WWW-Authenticate") == \
            'Basic realm="staff only", charset="UTF-8"', path
    for user in ("alice", "bob", "carol"):
        response, body = guarded.get("/admin/", headers=basic(user, user + "1"))
        assert response.status == 200 and b"admin" in body, user
    assert guarded.get("/admin/", headers=basic("alice", "wrong"))[0].status == 401
    assert guarded.get("/about.html")[0].status == 200
    assert guarded.get("/administrator")[0].status == 404  # not under /admin


def test_methods_per_prefix_and_upload_rights(guarded: Server) -> None:
    assert guarded.get("/uploads/a.txt", "PUT", body=b"a")[0].status == 401
    assert guarded.get("/uploads/a.txt", "PUT", basic("alice", "alice1"), b"a")[0].status \
        == 201
    assert guarded.get("/uploads/a.txt")[0].status == 200  # GET is not listed
    # carol is a valid user, but [uploads] writers does not name her for PUT.
    assert guarded.get("/uploads/a.txt", "PUT", basic("carol", "carol1"), b"c")[0].status \
        == 403
    # DELETE is protected by the prefix alone (require_auth names PUT only): any user.
    assert guarded.get("/uploads/a.txt", "DELETE")[0].status == 401
    assert guarded.get("/uploads/a.txt", "DELETE", basic("carol", "carol1"))[0].status == 204
    response, _ = guarded.get("/upload", "POST", {"Content-Type": "application/json"}, b"{}")
    assert response.status == 401


def test_the_user_reaches_the_access_log_and_the_application(guarded: Server) -> None:
    assert guarded.get("/plain/environ")[0].status == 401
    response, body = guarded.get("/plain/environ", headers=basic("bob", "bob1"))
    assert response.status == 200 and json.loads(body)["REMOTE_USER"] == "bob"
    guarded.get("/admin/", headers=basic("carol", "carol1"))
    # Each line is written once its answer is sent, by whichever worker served it: one
    # may land after a later request's, so wait for all three, not just the last.
    expected = ("carol GET /admin/ 200", "bob GET /plain/environ 200",
                "- GET /plain/environ 401")
    log = wait_for(lambda: all(line in (text := guarded.log("access.log"))
                               for line in expected) and text)
    assert isinstance(log, str) and all(line in log for line in expected), log


def test_weak_entries_are_named_in_the_start_log(guarded: Server) -> None:
    log = guarded.log("error.log")
    line = next(line for line in log.splitlines() if "cheap to brute-force" in line)
    assert "bob" in line and "carol" in line and "alice" not in line
