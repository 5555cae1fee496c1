#!/usr/bin/env bash
# End-to-end: a real Prometheus server scrapes memwatch's metrics on loopback.
#
# Starts two test services on 127.0.0.1 (a single process, and gunicorn with
# two workers in prometheus_client's multiprocess mode), runs Debian's
# prometheus with its own config and storage in a
# temporary directory (not as a system service), and asks its HTTP query API
# for memwatch's series.  Installs what it needs (apt: prometheus; pip:
# prometheus-client, gunicorn); skips with a clear message, exit 0, where it cannot.
# Everything is bounded: it gives up after E2E_TIMEOUT seconds (default 120).
#
# Usage: bash scripts/prometheus-e2e.sh          (PYTHON=python3.X to pick an interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON="${PYTHON:-python3}"
TIMEOUT="${E2E_TIMEOUT:-120}"

skip() { echo "prometheus-e2e: SKIPPED: $*"; exit 0; }

PROM="$(command -v prometheus || true)"
if [ -z "$PROM" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "prometheus-e2e: installing Debian's prometheus package"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || skip "apt-get install prometheus failed"
    PROM="$(command -v prometheus || true)"
  fi
  [ -n "$PROM" ] || skip "no 'prometheus' binary and no apt-get as root to install Debian's package"
fi

for pkg in prometheus_client:prometheus-client gunicorn:gunicorn; do
  if ! "$PYTHON" -c "import ${pkg%%:*}" 2>/dev/null; then
    echo "prometheus-e2e: installing ${pkg#*:} from PyPI"
    "$PYTHON" -m pip install -q "${pkg#*:}" || skip "pip install ${pkg#*:} failed"
  fi
done
# memwatch: the installed one, or this checkout (built in place if needed).
if ! "$PYTHON" -c "import memwatch._core" 2>/dev/null; then
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PYTHON" -c "import memwatch._core" 2>/dev/null; then
    echo "prometheus-e2e: building memwatch in place"
    "$PYTHON" -c "import Cython, setuptools" 2>/dev/null \
      || "$PYTHON" -m pip install -q 'Cython>=3.0.10' 'setuptools>=77' \
      || skip "pip install Cython setuptools failed"
    "$PYTHON" setup.py -q build_ext --inplace >/dev/null
  fi
fi
"$PYTHON" -c "import memwatch; memwatch.on" 2>/dev/null \
  || { echo "prometheus-e2e: FAILED: this memwatch has no tracker (memwatch.on)"; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/memwatch-prom-e2e.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

read -r P_SINGLE P_MULTI P_PROM < <("$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
EOF
)

cat > "$WORK/service.py" <<'EOF'
"""The single-process service: memwatch's tracker + Prometheus metrics on 127.0.0.1, bounded."""
import gc, sys, time
port, lifetime = int(sys.argv[1]), float(sys.argv[2])
import memwatch, memwatch.prometheus as mwp
from prometheus_client import start_http_server

coll = mwp.register(top_types=10)
coll.record_census(memwatch.census())
start_http_server(port, addr="127.0.0.1")
end = time.monotonic() + lifetime
leak = []
while time.monotonic() < end:
    junk = [[] for _ in range(2000)]
    for j in junk:
        j.append(j)
    del junk
    leak.append(["x" * 64 for _ in range(200)])  # grows: a small, steady leak
    gc.collect()
    time.sleep(0.1)
EOF

# The multiprocess service: real gunicorn with two workers in prometheus_client's
# multiprocess mode; memwatch is registered in each worker by post_worker_init.
mkdir -p "$WORK/mp"
cat > "$WORK/gunicorn_app.py" <<'EOF'
import gc
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

registry = CollectorRegistry()
MultiProcessCollector(registry)
metrics = make_wsgi_app(registry)
leak = []

def app(environ, start_response):
    if environ.get("PATH_INFO") == "/metrics":
        leak.append(["x" * 64 for _ in range(200)])   # each scrape leaks a little
        junk = [[] for _ in range(2000)]
        for j in junk:
            j.append(j)
        del junk
        gc.collect()
        return metrics(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
EOF
cat > "$WORK/gunicorn_conf.py" <<'EOF'
workers = 2
loglevel = "warning"

def post_worker_init(worker):
    import memwatch, memwatch.prometheus
    memwatch.configure(timer_interval=1.0)   # a sample every second even when idle
    memwatch.prometheus.register(interval=0.2)

def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
EOF

LIFETIME=$((TIMEOUT + 10))
"$PYTHON" "$WORK/service.py" "$P_SINGLE" "$LIFETIME" > "$WORK/single.log" 2>&1 & PIDS+=($!)
(cd "$WORK" && PROMETHEUS_MULTIPROC_DIR="$WORK/mp" exec timeout "$LIFETIME" "$PYTHON" -m gunicorn \
   -c gunicorn_conf.py -b "127.0.0.1:$P_MULTI" gunicorn_app:app) > "$WORK/multi.log" 2>&1 & PIDS+=($!)

cat > "$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: single
    static_configs: [{targets: ["127.0.0.1:$P_SINGLE"]}]
  - job_name: multi
    static_configs: [{targets: ["127.0.0.1:$P_MULTI"]}]
EOF
"$PROM" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$P_PROM" --log.level=warn > "$WORK/prometheus.log" 2>&1 & PIDS+=($!)
echo "prometheus-e2e: $("$PROM" --version 2>&1 | head -1) on 127.0.0.1:$P_PROM scraping 127.0.0.1:$P_SINGLE (single) and 127.0.0.1:$P_MULTI (gunicorn, 2 workers, multiprocess mode)"

if "$PYTHON" - "$P_PROM" "$TIMEOUT" <<'EOF'
import json, sys, time, urllib.parse, urllib.request
port, timeout = int(sys.argv[1]), float(sys.argv[2])
def query(q):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
    except OSError:
        return None
    return body["data"]["result"] if body.get("status") == "success" else None
checks = {
    "current_base, single process": ('memwatch_current_base_bytes{job="single"}', lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0),
    "estimated_base, single process": ('memwatch_estimated_base_bytes{job="single"}', lambda r: len(r) == 1),
    "rss, single process": ('memwatch_rss_bytes{job="single"}', lambda r: len(r) == 1 and float(r[0]["value"][1]) > 1e6),
    "full collections counted": ('increase(memwatch_full_gc_total{job="single"}[10s])', lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0),
    "leak counter exposed": ('memwatch_leaks_total{job="single"}', lambda r: len(r) == 1),
    "top types of the census": ('memwatch_type_bytes{job="single"}', lambda r: len(r) == 10),
    "one current_base per worker (multiprocess)": ('memwatch_current_base_bytes{job="multi"}', lambda r: len({x["metric"].get("pid") for x in r}) == 2),
    "counters summed over workers (multiprocess)": ('memwatch_full_gc_total{job="multi"}', lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0),
}
deadline = time.monotonic() + timeout
passed, last = set(), {}
while time.monotonic() < deadline and len(passed) < len(checks):
    for name, (q, ok) in checks.items():
        if name in passed:
            continue
        r = query(q)
        last[name] = r
        if r is not None and ok(r):
            passed.add(name)
            sample = ", ".join(f'{ {k: v for k, v in x["metric"].items() if k in ("job", "pid", "type")} } = {x["value"][1]}' for x in r[:2])
            print(f"  ok   {name}: {q} -> {sample}")
    time.sleep(1)
for name in checks:
    if name not in passed:
        print(f"  FAIL {name}: {checks[name][0]} -> {json.dumps(last.get(name))[:300]}")
sys.exit(0 if len(passed) == len(checks) else 1)
EOF
then
  echo "prometheus-e2e: PASSED (${SECONDS}s)"
else
  echo "prometheus-e2e: FAILED (${SECONDS}s); logs:"
  tail -n 20 "$WORK"/*.log
  exit 1
fi
