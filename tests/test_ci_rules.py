"""The test suite's own rules: under CI=true nothing may skip, and no test leaves registrations behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SKIPPING = """
import pytest
pytest.importorskip("a_package_that_is_not_installed")

def test_never_runs():
    pass
"""
SKIPPING_AT_RUN = """
import pytest

def test_skips():
    pytest.skip("no model here")
"""


def _run(folder: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        capture_output=True, text=True, env=env, cwd=folder, check=False,
    )  # fmt: skip


def test_a_skip_is_a_failure_under_ci_only(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_import_skip.py").write_text(SKIPPING)
    (tmp_path / "test_run_skip.py").write_text(SKIPPING_AT_RUN)
    local = _run(tmp_path, ci=False)
    assert local.returncode == 0 and "2 skipped" in local.stdout, local.stdout
    ci = _run(tmp_path, ci=True)
    assert ci.returncode != 0, ci.stdout
    assert ci.stdout.count("skipped under CI=true") >= 2, ci.stdout
