#!/usr/bin/env bash
# Print the path of a working CPython 3.MINOR, or nothing.  Usage: find-python.sh MINOR
# A candidate counts only if it runs and reports that version: `command -v`
# alone is not enough (pyenv's shims exist for versions that are not active).
minor="$1"
for cand in "$HOME"/.pyenv/versions/3."$minor".*/bin/python3 "python3.$minor" /usr/bin/python3."$minor" /usr/local/bin/python3."$minor"; do
  if out=$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) && [ "$out" = "3.$minor" ]; then
    command -v "$cand" 2>/dev/null || echo "$cand"
    exit 0
  fi
done
exit 1
