#!/usr/bin/env bash
# Install memlab's heap parser (@memlab/heap-analysis) and Chrome DevTools' heap
# snapshot code (heap-snapshot-toolkit) next to this script,
# for tests/test_snapshot_memlab.py.  Needs node and npm; downloads no browser.
# Usage: bash tests/memlab/install.sh && python -m pytest tests/test_snapshot_memlab.py
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "memlab check: node/npm not found, nothing installed" >&2
  exit 0
fi
PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROMIUM_DOWNLOAD=1 \
  npm install --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
node -e "require('./node_modules/@memlab/heap-analysis'); console.log('memlab heap parser installed')"
node --input-type=module -e "await import('heap-snapshot-toolkit'); console.log('DevTools heap snapshot code (heap-snapshot-toolkit) installed')"
