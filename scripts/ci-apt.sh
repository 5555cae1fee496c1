#!/usr/bin/env bash
# Install, in one apt transaction, the Debian packages CI's checks use:
# debootstrap (the 3.14/3.15 chroots), chromium (the live page's browser test),
# golang-go (`go tool pprof` reads our profiles), prometheus (metrics end to end),
# valgrind and wrk (benchmarks and the debug runs).  Each check still skips with a
# clear message when its tool is missing, so a machine without apt or root
# runs everything else.
set -uo pipefail
PKGS="debootstrap chromium golang-go prometheus valgrind wrk"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -z "$missing" ]; then echo "ci-apt: all present ($PKGS)"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "ci-apt: cannot install$missing (no apt-get as root); the checks that need them skip"
  exit 0
fi
echo "ci-apt: installing$missing"
apt-get update -qq >/dev/null 2>&1 || echo "ci-apt: apt-get update failed"
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null \
  || echo "ci-apt: install of$missing failed; the checks that need them skip"
exit 0
