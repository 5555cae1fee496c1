#!/usr/bin/env bash
# Install what the live page's browser test (tests/test_livepage_browser.py) needs:
# Debian's chromium (apt) and the Python playwright package (PyPI, the `browser`
# extra; it drives /usr/bin/chromium, so no browser download), in a fresh venv.
# Usage: bash scripts/ci-browser.sh   (PYTHON=python3.X, VENV=dir to choose)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ]; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y chromium
fi
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-browser}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q ".[test,browser]"
