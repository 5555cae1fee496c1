#!/usr/bin/env bash
# Print the path of a working CPython 3.MINOR, or nothing (exit 1).
#   find-python.sh MINOR              e.g. find-python.sh 13
#   find-python.sh --resolve PYTHON   PYTHON as given if it runs; else, for a name
#                                     like python3.13 that does not run (a pyenv
#                                     shim for a version that is not active), a
#                                     working 3.13 found as above; else an error.
# A candidate counts only if it runs and reports that version: `command -v`
# alone is not enough (pyenv's shims exist for versions that are not active).
find_minor() {
  local minor="$1" cand out
  for cand in "$HOME"/.pyenv/versions/3."$minor".*/bin/python3 "python3.$minor" /usr/bin/python3."$minor" /usr/local/bin/python3."$minor"; do
    if out=$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) && [ "$out" = "3.$minor" ]; then
      command -v "$cand" 2>/dev/null || echo "$cand"
      return 0
    fi
  done
  return 1
}

if [ "${1:-}" = "--resolve" ]; then
  want="${2:?usage: find-python.sh --resolve PYTHON}"
  if "$want" -c 'import sys' >/dev/null 2>&1; then
    echo "$want"
    exit 0
  fi
  if [[ "$(basename "$want")" =~ ^python3\.([0-9]+)$ ]] && find_minor "${BASH_REMATCH[1]}"; then
    exit 0
  fi
  echo "find-python.sh: '$want' does not run and no working CPython of that version was found;" \
       "set PYTHON to an interpreter's path (bash scripts/find-python.sh 13 prints one)" >&2
  exit 1
fi
find_minor "${1:?usage: find-python.sh MINOR | --resolve PYTHON}"
