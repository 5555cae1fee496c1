#!/usr/bin/env bash
# Run memwatch's tests on Debian's own CPython 3.14, 3.15 or 3.14 debug build.
#
# No pyenv build of 3.14/3.15 is possible on these machines, but Debian's
# registry has them (suite sid: python3.14 + -dev/-venv/-dbg; suite
# experimental, later sid too: python3.15 + -dev/-venv).  This script makes (once) or reuses
# a minimal Debian sid chroot holding all of them side by side, copies the
# working tree into it and runs a command there.  The host's apt sources are
# never touched.
#
# Usage:
#   bash scripts/debian-python.sh 3.14|3.15 [3.15 ...] [pytest args...]
#        the README's test command (pip install ".[test]", then pytest
#        tests/) on each version in turn, in one chroot session; the
#        exit status is 1 when any version failed (each one's result and
#        times are printed)
#   bash scripts/debian-python.sh --run 3.14|3.15|3.14d CMD [ARGS...]
#        CMD inside the chroot, in the copy of the tree, with $PYTHON and
#        $VENV (the version's kept venv: create or fill it as needed) set
#   bash scripts/debian-python.sh --prepare   (only create/update the chroot)
#
# Environment: MEMWATCH_DEBIAN_ROOT (default /var/cache/memwatch/debian-sid),
# MEMWATCH_DEBIAN_MIRROR (default: the host's deb.debian.org mirror).
#
# Every mount (/proc, /dev) is made inside a private mount namespace
# (unshare --mount) that dies with the command: nothing is left mounted on
# the host even when the run is killed, so the chroot can always be deleted
# with rm -rf.  Needs root (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROOT="${MEMWATCH_DEBIAN_ROOT:-/var/cache/memwatch/debian-sid}"
MIRROR="${MEMWATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The mirror serves a dated snapshot: its Release files are "expired".
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o DPkg::Lock::Timeout=600 -o APT::Install-Recommends=false)
PKGS_SID="python3.14 python3.14-dev python3.14-venv python3.14-dbg gcc libc6-dev ca-certificates procps"
PKGS_315="python3.15 python3.15-dev python3.15-venv"
# The stamp records what was installed: a changed package list updates the chroot.
STAMP_WANT="sid: $PKGS_SID; 3.15: $PKGS_315"

die() { echo "debian-python.sh: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot); run it with sudo"

# in_chroot "VAR=x VAR2=y" CMD ARGS...: run CMD in the chroot with a clean
# environment plus those variables, /proc and /dev mounted in a private
# mount namespace (gone when the command exits).
in_chroot() {
  local extra_env="$1"; shift
  unshare --mount --propagation private -- /bin/bash -c '
    set -e
    root="$1"; extra_env="$2"; shift 2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
      PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
      $extra_env "$@"
  ' in_chroot "$ROOT" "$extra_env" "$@"
}

no_mounts_under() {
  ! awk -v p="$1" '$5 == p || index($5, p "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo
}

prepare() {
  mkdir -p "$(dirname "$ROOT")"
  # One creator at a time (two CI steps, or two developers, may start together).
  exec 9>"$ROOT.lock"
  flock 9
  if [ -f "$ROOT/.memwatch-stamp" ] && [ "$(cat "$ROOT/.memwatch-stamp")" = "$STAMP_WANT" ]; then
    flock -u 9; return 0
  fi
  if [ ! -f "$ROOT/.memwatch-debootstrapped" ]; then
    if ! command -v debootstrap >/dev/null; then
      # From the host's own (stable) sources: a fresh CI machine lacks it.
      echo "== apt-get install debootstrap (host)"
      { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q debootstrap \
          || { apt-get -o DPkg::Lock::Timeout=900 update -q \
               && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q debootstrap; }
      } >"$ROOT.host-apt.log" 2>&1 || { tail -20 "$ROOT.host-apt.log" >&2; die "could not install debootstrap"; }
    fi
    local tmp="$ROOT.partial"
    no_mounts_under "$tmp" || die "$tmp has mounts under it; unmount them first"
    rm -rf "$tmp"
    echo "== debootstrap --variant=minbase sid $ROOT ($MIRROR)"
    # In its own mount namespace too: debootstrap mounts /proc and /sys in
    # the target and would leave them mounted on the host if killed.
    unshare --mount --propagation private -- \
      debootstrap --variant=minbase sid "$tmp" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
      || { tail -30 "$ROOT.debootstrap.log" >&2; die "debootstrap failed (log: $ROOT.debootstrap.log)"; }
    touch "$tmp/.memwatch-debootstrapped"
    no_mounts_under "$ROOT" || die "$ROOT has mounts under it; unmount them first"
    rm -rf "$ROOT"
    mv "$tmp" "$ROOT"
  fi
  printf 'deb %s sid main\ndeb %s experimental main\n' "$MIRROR" "$MIRROR" >"$ROOT/etc/apt/sources.list"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  echo "== apt-get install in the chroot: $PKGS_SID $PKGS_315 (log: $ROOT.apt.log)"
  {
    in_chroot DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update -q
    # shellcheck disable=SC2086
    in_chroot DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q $PKGS_SID
    # 3.15 was first only in experimental, later also in sid: sid's when it
    # has them, experimental's otherwise.
    # shellcheck disable=SC2086
    in_chroot DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q $PKGS_315 \
      || in_chroot DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q -t experimental $PKGS_315
  } >"$ROOT.apt.log" 2>&1 || { tail -30 "$ROOT.apt.log" >&2; die "apt-get in the chroot failed (log: $ROOT.apt.log)"; }
  in_chroot "" apt-get clean
  # The host's CA bundle (it may hold a proxy's CA), copied after the
  # chroot's ca-certificates package has written its own.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  fi
  echo "$STAMP_WANT" >"$ROOT/.memwatch-stamp"
  flock -u 9
}

copy_tree() {
  # A fresh copy of the working tree (not only what is committed), without
  # venvs, build outputs or compiled extensions made for the host.
  local dest="$ROOT/work/memwatch-$1"
  rm -rf "$dest"
  mkdir -p "$dest"
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # The files git knows or would add (.gitignore leaves out venvs and build
    # outputs): a list fixed before copying, so other work writing into the
    # tree at the same time (CI's other lane builds there) cannot break it.
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
      tar --null -T - -cf -) | tar -C "$dest" -xf -
  else
    # Not a git checkout: everything but venvs and build outputs; a file that
    # changes while it is read (tar's status 1) is not an error here.
    { tar -C "$REPO" --warning=no-file-changed --exclude='./.venv*' --exclude='./build' \
        --exclude='./dist' --exclude='*.so' --exclude='__pycache__' --exclude='*.egg-info' \
        --exclude='./src/memwatch/*.c' -cf - . || [ $? = 1 ]; } | tar -C "$dest" -xf -
  fi
}

python_for() {
  case "$1" in
    3.14|3.15) echo "python$1" ;;
    3.14d|3.14-dbg) echo "python3.14d" ;;
    *) die "unknown version '$1': use 3.14, 3.15 or 3.14d (the debug build)" ;;
  esac
}

# What runs inside the chroot for each version, one after the other in one
# chroot session (the mounts and the chroot's checks are made once):
# reuse the version's venv (made once, with pip upgraded then), install
# memwatch from the copy of the tree as the README's command does (pip
# install ".[test]": the wheel is built from these sources, its dependencies
# come from the wheel cache in the chroot's /root/.cache/pip once fetched),
# run pytest from the copy, and print how long the setup and the tests took.
# $1 = "test" (the suite, tests/) or "run" (the command after the versions).
# shellcheck disable=SC2016
INNER='
  set -u
  mode=$1; extras=$2; shift 2
  versions=(); while [ "$1" != -- ]; do versions+=("$1"); shift; done; shift
  failed=()
  for entry in "${versions[@]}"; do
    version=${entry%%=*}; py=${entry#*=}
    venv=/work/venv-$version; tree=/work/memwatch-$version
    t0=$SECONDS
    echo "== $("$py" --version 2>&1) ($version) in the Debian sid chroot"
    (
      set -e
      cd "$tree"
      want="$("$py" -c "import sys; print(sys.version)")"
      if [ "$(cat "$venv/.memwatch-python" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c "" 2>/dev/null; then
        rm -rf "$venv"
        "$py" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        echo "$want" >"$venv/.memwatch-python"
      fi
      # pip always reinstalls a project given as a path; dependencies already there stay.
      if [ "$mode" = test ]; then "$venv/bin/python" -m pip install -q ".[$extras]"; fi
    ) || { echo "== $version: setup FAILED"; failed+=("$version"); continue; }
    t1=$SECONDS
    if [ "$mode" = test ]; then
      # From the copy, as scripts/test.sh does: ./src is not on sys.path, the
      # installed wheel is tested.  The whole of tests/ unless test files or
      # ids were given (pytest would collect both).
      where=tests
      for a in "$@"; do case $a in tests/*|*.py|*::*) where= ;; esac; done
      (cd "$tree" && exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@" $where)
    else
      (cd "$tree" && PYTHON="$py" VENV="$venv" exec "$@")
    fi
    rc=$?
    t2=$SECONDS
    if [ $rc = 0 ]; then verdict=passed; else verdict="FAILED (exit $rc)"; failed+=("$version"); fi
    echo "== $("$py" --version 2>&1) ($version): setup $((t1 - t0)) s, run $((t2 - t1)) s: $verdict"
  done
  [ ${#failed[@]} = 0 ] || { echo "== failed: ${failed[*]}"; exit 1; }
'

# All of the work is in one function, read whole before it runs: editing
# this file while a (long) run is going cannot change what that run does.
main() {
  mode=test
  case "${1:-}" in
    --prepare) prepare; exit 0 ;;
    --run) mode=run; shift ;;
    ""|-h|--help) sed -n '2,30p' "$0"; exit 2 ;;
  esac
  versions=()
  while [ $# -gt 0 ] && [[ "$1" =~ ^3\.[0-9]+(d|-dbg)?$ ]]; do versions+=("$1"); shift; done
  [ ${#versions[@]} -gt 0 ] || die "no version given: use 3.14, 3.15 or 3.14d (several for one session)"
  [ "$mode" = test ] || [ $# -gt 0 ] || die "--run needs a command"
  prepare
  # One run per version at a time: they share the copy of the tree and the
  # venv.  Locks are taken in a fixed order, so two multi-version runs
  # cannot wait for each other.
  local entries=() v fd
  for v in $(printf '%s\n' "${versions[@]}" | sort -u); do
    exec {fd}>"$ROOT.run-$v.lock"
    flock -n "$fd" || { echo "== waiting for another $v run to finish"; flock "$fd"; }
    copy_tree "$v"
    entries+=("$v=$(python_for "$v")")
  done
  in_chroot "" /bin/bash -c "$INNER" inner "$mode" "${MEMWATCH_TEST_EXTRAS:-test}" "${entries[@]}" -- "$@"
}

# On one line: bash has read the exit before main runs, so editing this file
# during a run cannot change what follows it.
main "$@"; exit $?
