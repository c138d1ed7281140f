"""The layers of docs/architecture.md hold: import contracts (import-linter, configured in
pyproject.toml) over the installed tree, and a proof that a contract can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def lint_imports(cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(command).exists():
        pytest.fail("import-linter is not installed: pip install -e '.[test]'")
    env = None if extra_path is None else dict(os.environ, PYTHONPATH=str(extra_path))
    return subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_import_contracts_hold() -> None:
    result = lint_imports(REPO, REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_suite(tmp_path: Path) -> None:
    """A copy of the tree where the protocol layer imports the site must fail the check."""
    copy = tmp_path / "tree"
    shutil.copytree(REPO / "prefork", copy / "prefork",
                    ignore=shutil.ignore_patterns("__pycache__", "skeleton"))
    shutil.copytree(REPO / "httpd_client", copy / "httpd_client",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    framing = copy / "prefork" / "http" / "framing.py"
    framing.write_text(framing.read_text() + "\nfrom prefork.site import router  # noqa\n")
    result = lint_imports(copy, copy)
    assert result.returncode != 0
    assert "prefork.http.framing -> prefork.site.router" in result.stdout
