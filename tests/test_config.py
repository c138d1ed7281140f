"""Configuration loading and validation (pure: no server processes)."""

from __future__ import annotations

import configparser
import dataclasses
import socket
from pathlib import Path

import pytest

from prefork.config.ini import Known, parse_override, read_ini
from prefork.config.schema import Section, settings_of
from prefork.config.sections import SECTION_TYPES
from prefork.config.settings import (
    SETTINGS,
    load_config,
    parse_listen,
    render_default_ini,
    server_root_for,
)
from prefork.config.values import Switch
from prefork.errors import ConfigError
from tests.conftest import write_ini

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_lists_every_setting_with_its_default() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "etc" / "httpd.ini")
    for setting in SETTINGS:
        assert parser.has_option(setting.section, setting.key), setting.key
        assert parser.get(setting.section, setting.key) == setting.default, setting.key
    assert (REPO / "etc" / "httpd.ini").read_text() == render_default_ini()


def test_shipped_config_loads_and_resolves_paths_against_server_root() -> None:
    config = load_config(REPO / "etc" / "httpd.ini")
    assert config.server_root == REPO
    assert config.server.document_root == str(REPO / "htdocs")
    assert config.server.pid_file == str(REPO / "var" / "run" / "httpd.pid")
    assert [str(a) for a in config.server.listen] == ["127.0.0.1:8080"]
    assert config.logging.access_log == str(REPO / "var" / "log" / "access.log")
    assert config.workers.processes >= 1


def test_server_root_is_above_etc(tmp_path: Path) -> None:
    assert server_root_for(tmp_path / "etc" / "x.ini") == tmp_path.resolve()
    assert server_root_for(tmp_path / "conf" / "x.ini") == (tmp_path / "conf").resolve()


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[server]\nlisten = 127.0.0.1:0\n\n[http]\nkeepalive = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 5 and info.value.key == "http.keepalive"
    assert f"{path}:5" in str(info.value) and "http.keepalive" in str(info.value)


def test_unknown_section_and_key_before_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":2: .*unknown section \[nope\]"):
        load_config(write_ini(tmp_path, "# comment\n[nope]\n"))
    with pytest.raises(ConfigError, match=r":1: listen.*before any \[section\]"):
        load_config(write_ini(tmp_path, "listen = 1\n"))


@pytest.mark.parametrize(("line", "key", "message"), [
    ("[workers]\nprocesses = many", "workers.processes", "whole number"),
    ("[workers]\nthreads = 0", "workers.threads", "at least 1"),
    ("[http]\nkeepalive_timeout = soon", "http.keepalive_timeout", "duration"),
    ("[http]\nlimit_request_body = 1X", "http.limit_request_body", "size"),
    ("[server]\nlisten = 127.0.0.1:99999", "server.listen", "port"),
    ("[server]\nlisten = nowhere", "server.listen", "host:port"),
    ("[logging]\nlevel = loud", "logging.level", "one of"),
    ("[logging]\naccess_format = %h %Z", "logging.access_format", "unsupported directive"),
    ("[logging]\naccess_format = %h %{X Trace}i", "logging.access_format",
     "not a header field name"),
    ("[static]\ndownload_extensions = .p/ng", "static.download_extensions", "extension"),
])
def test_bad_values_name_line_and_key(tmp_path: Path, line: str, key: str,
                                      message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_ini(tmp_path, line + "\n"))
    assert info.value.key == key and info.value.line == 2
    assert message in str(info.value)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set twice"):
        load_config(write_ini(tmp_path, "[http]\ntimeout = 1\ntimeout = 2\n"))


def test_missing_document_root(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[server]\ndocument_root = nowhere\n")
    with pytest.raises(ConfigError, match=r"server\.document_root: not a directory"):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/etc/httpd.ini")


def test_overrides_win_and_are_validated(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[server]\nlisten = 127.0.0.1:8080\n")
    config = load_config(path, ["server.listen=0.0.0.0:9000", "workers.threads=3"])
    assert str(config.server.listen[0]) == "0.0.0.0:9000"
    assert config.workers.threads == 3
    with pytest.raises(ConfigError, match=r"--set: workers\.threads"):
        load_config(path, ["workers.threads=zero"])
    with pytest.raises(ConfigError, match=r"--set: nope\.key: unknown setting"):
        load_config(path, ["nope.key=1"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(path, ["threads"])


def test_inline_comments_units_and_lists(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "\n".join([
        "[server]",
        "listen = 127.0.0.1:0 [::1]:0   # two addresses",
        "server_name = example.org, www.example.org",
        "[http]",
        "keepalive_timeout = 500ms",
        "timeout = 2m",
        "limit_request_body = 10M",
        "[workers]",
        "processes = auto",
        "[logging]",
        "access_log = off",
    ]) + "\n")
    config = load_config(path)
    assert [str(a) for a in config.server.listen] == ["127.0.0.1:0", "[::1]:0"]
    assert config.server.server_name == ("example.org", "www.example.org")
    assert config.http.keepalive_timeout == 0.5 and config.http.timeout == 120
    assert config.http.limit_request_body == 10 << 20
    assert config.logging.access_log == "off"


def test_log_level_aliases(tmp_path: Path) -> None:
    for given, level in (("warning", "warn"), ("EMERG", "crit"), ("debug", "debug")):
        path = write_ini(tmp_path, f"[logging]\nlevel = {given}\n")
        assert load_config(path).logging.level == level


def test_parse_listen_forms() -> None:
    assert parse_listen("8080").host == "0.0.0.0"
    assert parse_listen("*:80").host == "0.0.0.0"
    v6 = parse_listen("[::1]:8080")
    assert v6.family == socket.AF_INET6 and v6.port == 8080 and str(v6) == "[::1]:8080"
    with pytest.raises(ValueError):
        parse_listen("[::1]8080")
    with pytest.raises(ValueError):
        parse_listen("127.0.0.1:http")


def test_config_is_read_only() -> None:
    config = load_config(REPO / "etc" / "httpd.ini")
    with pytest.raises(AttributeError):
        config.server.listen = ()
    with pytest.raises(AttributeError):
        _ = config.server.no_such_key


def test_the_table_is_derived_from_the_typed_sections() -> None:
    config = load_config(REPO / "etc" / "httpd.ini")
    assert [s.section for s in SETTINGS] == sorted(
        (s.section for s in SETTINGS), key=list(SECTION_TYPES).index)  # grouped, file order
    for setting in SETTINGS:
        section = getattr(config, setting.section)
        assert isinstance(section, SECTION_TYPES[setting.section])
        assert config.get(setting.section, setting.key) == getattr(section, setting.key)
        assert config.raw[(setting.section, setting.key)] == setting.default
    assert {f.name for f in dataclasses.fields(config.http)} == {
        s.key for s in SETTINGS if s.section == "http"}
    assert isinstance(config.http.timeout, float) and isinstance(config.workers.threads, int)
    assert isinstance(config.server.listen, tuple) and isinstance(config.uploads_enabled, bool)
    assert isinstance(config.uploads.enabled, Switch)  # the operator's word: auto, on, off
    with pytest.raises(KeyError):
        config.get("http", "no_such_key")
    with pytest.raises(KeyError):
        config.get("source", "x")


def test_a_field_without_setting_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Broken(Section):
        timeout: float = 1.0

    with pytest.raises(TypeError, match=r"Broken\.timeout is not declared with setting\(\)"):
        settings_of("broken", Broken)


NAMED = Known({"server": {"listen"}, "app": {"mount", "module"}}, named={"app"})


def test_named_sections_are_read_each_under_its_own_id(tmp_path: Path) -> None:
    path = tmp_path / "x.ini"
    path.write_text("[server]\nlisten = 1\n[app:Blog]\nmount = /blog\n[app:wiki]\n"
                    "[app:blog]\nmodule = blog:app\n")
    text = read_ini(path, NAMED)
    assert text.values[("app:blog", "mount")].text == "/blog"
    assert text.values[("app:blog", "module")].line == 7
    assert text.sections == {"server": 1, "app:blog": 3, "app:wiki": 5}  # wiki: no keys
    assert parse_override("app:wiki.mount=/w", NAMED)[0] == ("app:wiki", "mount")
    path.write_text("[app]\nmount = /\n")  # one application needs no name
    assert read_ini(path, NAMED).values[("app", "mount")].text == "/"
    for header, message in (("[server:x]", r"\[server\] takes no name"),
                            ("[tls:main]", r"unknown section \[tls:main\] \(known: server, "
                                           r"app:NAME\)")):
        path.write_text(f"# comment\n{header}\n")
        with pytest.raises(ConfigError, match=":2: .*" + message):
            read_ini(path, NAMED)
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_override("app:wiki.nope=/w", NAMED)


def test_lenient_loading_skips_a_section_it_does_not_know(tmp_path: Path) -> None:
    # A newer file read by an older httpdctl: the keys under [cache:blog] must not land in
    # the section before it.
    path = write_ini(tmp_path, "[workers]\nthreads = 2\n[cache:blog]\nthreads = 9\n")
    assert load_config(path, lenient=True).workers.threads == 2
    with pytest.raises(ConfigError, match=r":3: cache:blog: unknown section \[cache:blog\]"):
        load_config(path)


def test_application_sections_are_typed_and_ordered(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[static]\nmount = /static/\n"
                           "[app]\nmodule = site_wsgi\npath = apps/site lib\n"
                           "[app:blog]\nmount = /blog\nmodule = blog.wsgi:application\n"
                           "threads = 4\nenv = DJANGO_SETTINGS_MODULE=blog.settings A=1\n")
    config = load_config(path, ("app:blog.threads=6",))
    assert config.static.mount == "/static"
    first, blog = config.apps
    assert (first.name, first.mount, first.module, first.threads) == ("", "/", "site_wsgi", 8)
    assert first.path == (str(tmp_path / "apps" / "site"), str(tmp_path / "lib"))
    assert (blog.name, blog.mount, blog.threads) == ("blog", "/blog", 6)
    assert blog.env == (("DJANGO_SETTINGS_MODULE", "blog.settings"), ("A", "1"))
    assert load_config(write_ini(tmp_path, "")).apps == ()


@pytest.mark.parametrize("text, message", [
    ("[app]\nmount = /\n", r":\d+: app.module: required"),
    ("[app]\nmodule = a:b:c\n", r":2: app.module: expected package.module:callable"),
    ("[app]\nmodule = a\nmount = blog\n", r":3: app.mount: expected a URL path"),
    ("[app]\nmodule = a\nmount = /a/../b\n", r"app.mount: a mount may not contain"),
    ("[app]\nmodule = a\nenv = NOEQUALS\n", r"app.env: expected NAME=VALUE"),
    ("[app:a]\nmodule = a\n[app:b]\nmodule = b\nmount = /\n",
     r"app:a.mount: / is taken by \[static\] mount"),
    ("[static]\nmount = /s\n[app:a]\nmodule = a\nmount = /x\n[app:b]\nmodule = b\n"
     "mount = /x\n", r":8: app:b.mount: /x is taken by \[app:a\]"),
    ("[workers]\nblocking_threads = 100\n[app]\nmodule = a\nthreads = 60\n",
     r"the applications' threads \(60\) exceeds the 128"),
])
def test_application_sections_are_checked(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_ini(tmp_path, text))
