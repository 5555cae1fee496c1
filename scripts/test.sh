#!/usr/bin/env bash
# Set up a fresh virtual environment, build and install memwatch, run every test.
# Usage: bash scripts/test.sh [pytest args...]      (PYTHON=python3.X to pick an interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="$(bash scripts/find-python.sh --resolve "${PYTHON:-python3}")"
VENV="${VENV:-.venv-test-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# A real install (not editable): the tests run against the built wheel's code.
"$VENV/bin/python" -m pip install -q ".[${MEMWATCH_TEST_EXTRAS:-test}]"
# Run from a directory where ./src is not importable, so the installed package is tested.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" tests
