#!/usr/bin/env bash
# Set up a fresh virtual environment, build and install memwatch, run the leak demo.
# Usage: bash scripts/demo.sh [demo args...]      (PYTHON=python3.X to pick an interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="$(bash scripts/find-python.sh --resolve "${PYTHON:-python3}")"
# One venv per interpreter: a venv made by 3.13 cannot run under 3.11.
VENV="${VENV:-.venv-demo-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q .
exec "$VENV/bin/python" examples/demo.py "$@"
