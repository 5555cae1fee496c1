#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of memwatch's C core, and
# the C-core tests (census, retainers, and the hostile cases, which cover
# HeapDiff and snapshots, in subprocesses that inherit the sanitizers; the
# sampler's allocator hooks) run against it.
# Clean means no report at all: any ASan/UBSan report fails this script.
#
# Usage: bash scripts/sanitizers.sh [pytest args...]   (PYTHON=python3.X to pick one)
# Needs gcc with libasan/libubsan (Debian: gcc, which CI has to build the extension).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv-sanitizers}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/memwatch-sanitizers.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The test extra's tools, plus the third-party C types the hostile cases use
# (each case skips cleanly without them; here they are wanted).
"$VENV/bin/python" -m pip install -q 'Cython>=3.0.10' 'setuptools>=77' 'psutil>=5.9' \
    'pytest>=7.4' 'pytest-asyncio>=0.23' 'hypothesis>=6.0' \
    ${MEMWATCH_SANITIZER_PACKAGES-greenlet numpy pandas}

# Build in a copy, so the working tree's own build is left alone.
mkdir "$WORK/src"
cp -r src/memwatch "$WORK/src/"
cp setup.py pyproject.toml "$WORK/"
cp -r tests "$WORK/tests"
find "$WORK/src" \( -name '*.so' -o -name '*.c' \) -delete
SAN='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined'
(cd "$WORK" && CFLAGS="-O1 -g $SAN" LDFLAGS="$SAN" \
    "$VENV/bin/python" setup.py -q build_ext --inplace --force >"$WORK/build.log" 2>&1) || {
    cat "$WORK/build.log"; echo "sanitizers: build failed"; exit 1; }

# Prove the build really is instrumented (CFLAGS ignored would pass vacuously).
for so in "$WORK"/src/memwatch/_core*.so "$WORK"/src/memwatch/_graph*.so "$WORK"/src/memwatch/_sampler*.so; do
    # (nm's whole output first: with pipefail, grep -q closing the pipe early fails nm)
    syms=$(nm -D "$so")
    grep -q __asan_report <<<"$syms" || { echo "sanitizers: $so is not instrumented"; exit 1; }
    grep -q __ubsan_handle <<<"$syms" || { echo "sanitizers: $so has no UBSan checks"; exit 1; }
done

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -e "$LIBASAN" ] || { echo "sanitizers: libasan.so not found (install gcc)"; exit 1; }
mkdir "$WORK/reports"
# CPython itself leaks at exit: no leak checking.  Reports go to files, so the
# hostile cases' subprocesses (which inherit all this) are checked too.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$WORK/reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$WORK/reports/ubsan"
export LD_PRELOAD="$LIBASAN"
export PYTHONPATH="$WORK/src"
export MEMWATCH_SANITIZERS=1
status=0
(cd "$WORK" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider -x \
    tests/test_census.py tests/test_retainers.py tests/test_hostile.py tests/test_sampling.py "$@") || status=$?
unset LD_PRELOAD
if compgen -G "$WORK/reports/*" >/dev/null; then
    echo "sanitizers: reports found:"
    cat "$WORK"/reports/*
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitizers: tests failed (status $status)"
    exit "$status"
fi
echo "sanitizers: clean (no ASan/UBSan report; extension built with $SAN)"
