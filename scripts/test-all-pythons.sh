#!/usr/bin/env bash
# Build and test memwatch on every supported CPython (3.10 to 3.15) found on this machine.
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
# 3.14 and 3.15: the interpreter on PATH when there is one, otherwise
# Debian's, in the chroot scripts/debian-python.sh makes (root only).
debian=()
for minor in 14 15; do
  if py=$(bash scripts/find-python.sh "$minor"); then
    echo "== CPython 3.$minor ($py)"
    if ! PYTHON="$py" bash scripts/test.sh -q "$@"; then status=1; echo "== CPython 3.$minor FAILED"; fi
  elif [ "$(id -u)" = 0 ]; then
    debian+=("3.$minor")
  else
    echo "== CPython 3.$minor: not found (as root, scripts/debian-python.sh 3.$minor runs Debian's), skipped"
  fi
done
# Debian's, one chroot session for all of them (it prints each one's result).
if [ ${#debian[@]} -gt 0 ] && ! bash scripts/debian-python.sh "${debian[@]}" -q "$@"; then status=1; fi
exit $status
