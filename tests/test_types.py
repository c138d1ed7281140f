"""mypy passes on prefork/ and httpd_client/ with the configuration in pyproject.toml
([tool.mypy]), and the typed configuration gives it something to check: no setting reads
as Any."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed: pip install -e '.[test]'")


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_mypy_passes_on_the_package() -> None:
    result = mypy()  # the files come from [tool.mypy] files
    assert result.returncode == 0, result.stdout + result.stderr


# Mistakes mypy must catch, one per line, each with the code it reports.
PROBE = '''
from prefork.config.schema import Section, setting
from prefork.config.sections import Config
from prefork.config.values import seconds

def use(config: Config) -> None:
    count: str = config.workers.processes
    config.http.no_such_setting
    config.http.timeout = 1.0
    reveal_type(config.server.listen)

class Declared(Section):
    timeout: int = setting(seconds, "5", "A duration declared as an int.")
'''
EXPECTED = [
    (7, "[assignment]"),   # processes is an int
    (8, "[attr-defined]"),  # no __getattr__: an unknown setting is an error, not Any
    (9, "[misc]"),         # frozen
    (10, "tuple[prefork.config.values.ListenAddress, ...]"),
    (13, "[assignment]"),  # the annotation must agree with the converter's result
]


def test_settings_are_typed_for_mypy(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    output = mypy(str(probe)).stdout
    for line, expected in EXPECTED:
        # Matched by the file's name: mypy's cache may report an earlier run's directory.
        found = [text for text in output.splitlines() if f"probe.py:{line}: " in text]
        assert any(expected in text for text in found), (line, expected, output)
