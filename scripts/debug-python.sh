#!/usr/bin/env bash
# The C-core tests under Debian's debug build of CPython 3.14 (python3.14d:
# built with assertions and Py_DEBUG reference-count checks, which catch a
# refcount slip, a borrowed pointer used after free or a bad tp_traverse
# that a release build runs through silently).  memwatch itself is built
# with MEMWATCH_DEBUG=1 (-O0 -g, assertions on).
# Usage: bash scripts/debug-python.sh [pytest args...]   (root: uses the chroot)
set -euo pipefail
cd "$(dirname "$0")/.."
# The modules that call into _core, _graph and _gchook: census, HeapDiff,
# graph/snapshots, retainers, the tracker's GC hooks, version-specific paths.
CORE_TESTS="tests/test_census.py tests/test_heapdiff.py tests/test_snapshot.py tests/test_retainers.py tests/test_tracker.py tests/test_pythons.py"
# The tracker's verdict scenarios (pure Python, timed, ~4 min) stay out:
# they exercise no C code the other tests do not.
SKIP="not never_cries_wolf and not flat_base_with_forced_gcs and not verdict_history_stays_bounded"
exec bash scripts/debian-python.sh --run 3.14d /bin/bash -c '
  set -euo pipefail
  "$PYTHON" -c "import sys; assert hasattr(sys, \"gettotalrefcount\"), \"not a debug build\""
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  MEMWATCH_DEBUG=1 "$VENV/bin/python" -m pip install -q --no-cache-dir ".[test]"
  "$VENV/bin/python" -c "import sys, memwatch._core as c; print(\"== debug build:\", sys.version.split()[0], \"total refcount\", sys.gettotalrefcount(), c.__file__)"
  exec "$VENV/bin/python" -X dev -m pytest -p no:cacheprovider "$@"
' _ -k "$SKIP" "$@" $CORE_TESTS
