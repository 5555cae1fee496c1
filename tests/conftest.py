"""Shared fixtures: running isolated scripts in a fresh interpreter."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def run_script(tmp_path):
    """Run Python source in a fresh interpreter; return the CompletedProcess.

    The child sees the same memwatch the tests import (installed or PYTHONPATH)."""

    def run(source: str, *args: str, timeout: float = 120, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source))
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in [str(TESTS_DIR)] + sys.path if p)
        if env:
            child_env.update(env)
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, timeout=timeout, env=child_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run
