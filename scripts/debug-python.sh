#!/usr/bin/env bash
# The C-core tests under Debian's debug build of CPython 3.14 (python3.14d:
# built with assertions and Py_DEBUG reference-count checks, which catch a
# refcount slip, a borrowed pointer used after free or a bad tp_traverse
# that a release build runs through silently).  memwatch itself is built
# with MEMWATCH_DEBUG=1 (-O0 -g, assertions on).
# Usage: bash scripts/debug-python.sh [pytest args...]   (root: uses the chroot)
set -euo pipefail
cd "$(dirname "$0")/.."
# The modules that call into the C code (_core, _graph, _gchook, _sampler):
# census, HeapDiff, graph/snapshots, retainers, the tracker's GC hooks, the
# allocation sampler's allocator hooks, version-specific paths.
CORE_TESTS="tests/test_census.py tests/test_heapdiff.py tests/test_snapshot.py tests/test_retainers.py tests/test_tracker.py tests/test_sampling.py tests/test_pythons.py"
# Left out: the tracker's verdict scenarios (pure Python, timed, ~4 min),
# which exercise no C code the other tests do not; and the million-deep
# structures (no recursion in the walks), which took 3.5 of the 13.5 min
# here: the debug build's checks see the same code paths on the smaller
# heaps of the other tests, and every release build runs them at full size.
SKIP="not never_cries_wolf and not flat_base_with_forced_gcs and not verdict_history_stays_bounded"
SKIP="$SKIP and not million and not deep_chain_is_walked_without_recursion"
# The venv is kept between runs (debian-python.sh makes it once); its test
# dependencies come from the chroot's pip cache; memwatch is rebuilt from
# this tree every run.
exec bash scripts/debian-python.sh --run 3.14d /bin/bash -c '
  set -euo pipefail
  "$PYTHON" -c "import sys; assert hasattr(sys, \"gettotalrefcount\"), \"not a debug build\""
  MEMWATCH_DEBUG=1 "$VENV/bin/python" -m pip install -q ".[test]"
  "$VENV/bin/python" -c "import sys, memwatch._core as c; print(\"== debug build:\", sys.version.split()[0], \"total refcount\", sys.gettotalrefcount(), c.__file__)"
  exec "$VENV/bin/python" -X dev -m pytest -p no:cacheprovider "$@"
' _ -k "$SKIP" "$@" $CORE_TESTS
