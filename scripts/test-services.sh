#!/usr/bin/env bash
# The real-service scenarios with their frameworks installed (the `services`
# extra: Flask, gunicorn, waitress, FastAPI, uvicorn), in the venv that
# scripts/test.sh built for the same interpreter (memwatch already installed
# there from the wheel); builds one with scripts/test.sh's recipe if missing.
# Usage: bash scripts/test-services.sh [pytest args...]   (PYTHON=python3.X)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-test-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import memwatch' 2>/dev/null; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q ".[test]"
fi
# Only the extra's requirements: memwatch itself stays the installed wheel.
mapfile -t reqs < <("$VENV/bin/python" - <<'PY'
import re
text = open("pyproject.toml").read()
block = re.search(r'^services\s*=\s*\[(.*?)\]', text, re.S | re.M)
if block is None:
    raise SystemExit("pyproject.toml has no 'services' extra")
for req in re.findall(r'"([^"]+)"', block.group(1)):
    print(req)
PY
)
"$VENV/bin/python" -m pip install -q "${reqs[@]}"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" tests/test_service_scenarios.py
