"""Shared fixtures: running isolated scripts in a fresh interpreter, a throwaway
module to hold objects from, and every allocation failure of a C pass in turn."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
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


@pytest.fixture
def app_module():
    """A module ``app.handlers`` in ``sys.modules``: objects held from it have
    a root of their own (``app.handlers -> dict 'NAME' -> ...``)."""
    mod = types.ModuleType("app.handlers")
    sys.modules["app.handlers"] = mod
    yield mod
    del sys.modules["app.handlers"]
    mod.__dict__.clear()


def allocation_failures(fail_after):
    """(n, gc enabled) for each allocation failure a C pass is tried with:
    ``fail_after(n)`` makes its n-th allocation fail, with the collector on
    and off (a pass must restore either state); failures are off again after."""
    import gc
    try:
        for n in list(range(0, 12)) + [50, 200]:
            for enabled in (True, False):
                (gc.enable if enabled else gc.disable)()
                fail_after(n)
                yield n, enabled
    finally:
        fail_after(-1)
        gc.enable()
