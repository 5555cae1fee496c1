#!/usr/bin/env bash
# Build and test memwatch on every supported CPython found on this machine.
# Usage: bash scripts/test-all-pythons.sh [pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for minor in 10 11 12 13; do
  if ! py=$(bash scripts/find-python.sh "$minor"); then
    echo "== CPython 3.$minor: not found, skipped"; continue
  fi
  echo "== CPython 3.$minor ($py)"
  if ! PYTHON="$py" bash scripts/test.sh -q "$@"; then status=1; echo "== CPython 3.$minor FAILED"; fi
done
exit $status
