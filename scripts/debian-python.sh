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
#   bash scripts/debian-python.sh 3.14|3.15 [pytest args...]
#        the README's test command (scripts/test.sh, PYTHON=python3.X)
#   bash scripts/debian-python.sh --run 3.14|3.15|3.14d CMD [ARGS...]
#        CMD inside the chroot, in the copy of the tree, with $PYTHON set
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
  tar -C "$REPO" --exclude='./.git' --exclude='./.venv*' --exclude='./build' --exclude='./dist' \
      --exclude='*.so' --exclude='__pycache__' --exclude='*.egg-info' --exclude='./src/memwatch/*.c' \
      -cf - . | tar -C "$dest" -xf -
}

python_for() {
  case "$1" in
    3.14|3.15) echo "python$1" ;;
    3.14d|3.14-dbg) echo "python3.14d" ;;
    *) die "unknown version '$1': use 3.14, 3.15 or 3.14d (the debug build)" ;;
  esac
}

# All of the work is in one function, read whole before it runs: editing
# this file while a (long) run is going cannot change what that run does.
main() {
  mode=test
  case "${1:-}" in
    --prepare) prepare; exit 0 ;;
    --run) mode=run; shift ;;
    ""|-h|--help) sed -n '2,24p' "$0"; exit 2 ;;
  esac
  version="$1"; shift
  py=$(python_for "$version")
  prepare
  # One run per version at a time: they share the copy of the tree and the venv.
  exec 8>"$ROOT.run-$version.lock"
  flock -n 8 || { echo "== waiting for another $version run to finish"; flock 8; }
  copy_tree "$version"
  echo "== $(in_chroot "" "$py" --version 2>&1) in the Debian sid chroot $ROOT"
  # The venv lives outside the copied tree, so it survives between runs
  # (test.sh reuses an existing venv and reinstalls memwatch into it).
  venv="/work/venv-$version"
  if [ "$mode" = test ]; then
    in_chroot "PYTHON=$py VENV=$venv MEMWATCH_TEST_EXTRAS=${MEMWATCH_TEST_EXTRAS:-test}" /bin/bash -c 'cd "$1" && shift && exec bash scripts/test.sh "$@"' _ "/work/memwatch-$version" "$@"
  else
    [ $# -gt 0 ] || die "--run needs a command"
    in_chroot "PYTHON=$py VENV=$venv" /bin/bash -c 'cd "$1" && shift && exec "$@"' _ "/work/memwatch-$version" "$@"
  fi
}

main "$@"
exit $?
