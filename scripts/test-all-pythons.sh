#!/usr/bin/env bash
# Build and test memwatch on every supported CPython found on this machine.
# Usage: bash scripts/test-all-pythons.sh [pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for minor in 10 11 12 13; do
  py=""
  for cand in "python3.$minor" "$HOME/.pyenv/versions/3.$minor"*/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 || [ -x "$cand" ]; then py="$cand"; break; fi
  done
  if [ -z "$py" ]; then echo "== CPython 3.$minor: not found, skipped"; continue; fi
  echo "== CPython 3.$minor ($py)"
  if ! PYTHON="$py" bash scripts/test.sh -q "$@"; then status=1; echo "== CPython 3.$minor FAILED"; fi
done
exit $status
