#!/usr/bin/env bash
# CI: the `go` command, so tests/test_sampling.py can check memwatch's pprof
# files with the real consumer (`go tool pprof`).  Debian's golang-go; the
# test skips when go is missing, so a failed install only loses that check.
set -uo pipefail
if command -v go >/dev/null 2>&1; then
  echo "go present: $(go version)"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get -o DPkg::Lock::Timeout=900 install -y -q golang-go \
    >/tmp/ci-pprof-apt.log 2>&1 || { echo "golang-go install failed (see /tmp/ci-pprof-apt.log): the go tool pprof test will skip"; exit 0; }
fi
command -v go >/dev/null 2>&1 && echo "go installed: $(go version)" || echo "no go: the go tool pprof test will skip"
exit 0
