"""What memwatch costs a web service: wrk against waitress, with and without memwatch.

The same small WSGI app (a JSON answer built from a few hundred objects, some
of them in reference cycles, so the collector runs as in a real service) is
served by waitress on 127.0.0.1, once plain and once with memwatch's tracker
subscribed and its HTTP API mounted as middleware.  wrk loads it for a fixed
time; while memwatch is on, a poller asks ``GET /ah/memoryProfile/status``
twice a second and every answer must be a 200.  Runs alternate plain/memwatch
(ABBA) to spread drift over both; the table shows medians.

Usage: python benchmarks/bench_http_load.py [--rounds 5] [--duration 5] [--connections 16]
Needs: wrk (Debian package), waitress (PyPI).  Loopback only, bounded runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def make_app():
    class Node:
        __slots__ = ("parent", "children", "value")

        def __init__(self, parent, value):
            self.parent, self.children, self.value = parent, [], value

    def app(environ, start_response):
        root = Node(None, 0)
        for i in range(60):  # a small tree with parent links: cycles for the GC
            child = Node(root, i)
            root.children.append(child)
        items = [{"id": i, "name": f"item-{i}", "tags": ["a", "b", str(i)]} for i in range(40)]
        body = json.dumps({"path": environ.get("PATH_INFO"), "count": len(root.children),
                           "items": items}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve(mode: str, port: int, threads: int) -> None:
    import logging

    import waitress

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is 2"

    app = make_app()
    if mode == "memwatch":
        import memwatch
        from memwatch.httpapi import default_state, make_wsgi_app

        default_state()                      # subscribes to stats/leak (the tracker runs)
        app = make_wsgi_app(app)
        assert "on" in memwatch._LAZY
    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, _quiet=True)


def inprocess(mode: str, calls: int, repeats: int) -> None:
    """Print the app's CPU time per call, called directly (no server, no network)."""
    app = make_app()
    if mode == "memwatch":
        from memwatch.httpapi import default_state, make_wsgi_app

        default_state()
        app = make_wsgi_app(app)
    environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}

    def start_response(status, headers):
        pass

    results = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(calls):
            app(environ, start_response)
        results.append((time.process_time() - t) / calls * 1e6)
    print(json.dumps(results))


def measure_inprocess(args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    per_mode: dict[str, list[float]] = {"plain": [], "memwatch": []}
    for r in range(args.rounds):
        for mode in (("plain", "memwatch") if r % 2 == 0 else ("memwatch", "plain")):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--inprocess", mode],
                                 capture_output=True, text=True, env=env, check=True, timeout=300)
            per_mode[mode].append(statistics.median(json.loads(out.stdout.strip().splitlines()[-1])))
    return {m: statistics.median(v) for m, v in per_mode.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not come up")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(port: int, duration: float, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=duration + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": requests, "p50": _ms(lat.get("50", "nan")), "p99": _ms(lat.get("99", "nan")),
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def poll_status(port: int, stop: threading.Event, result: dict) -> None:
    url = f"http://127.0.0.1:{port}/ah/memoryProfile/status"
    while not stop.wait(0.5):
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
                ok = r.status == 200 and "lastGC" in body
        except Exception:  # noqa: BLE001
            ok, body = False, None
        result["lat"].append((time.perf_counter() - t) * 1e3)
        result["ok" if ok else "failed"] += 1
        if ok and body.get("lastGC"):
            result["stats_events"] = body["counts"]["stats"]


def one_run(mode: str, args: argparse.Namespace) -> dict:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", mode, str(port),
                               "--server-threads", str(args.server_threads)], env=env)
    try:
        _wait_up(port)
        run_wrk(port, 1, args.connections, args.wrk_threads)           # warm-up
        poll = {"ok": 0, "failed": 0, "lat": [], "stats_events": 0}
        stop = threading.Event()
        poller = None
        if mode == "memwatch":
            poller = threading.Thread(target=poll_status, args=(port, stop, poll), daemon=True)
            poller.start()
        cpu0 = cpu_seconds(server.pid)
        res = run_wrk(port, args.duration, args.connections, args.wrk_threads)
        cpu1 = cpu_seconds(server.pid)
        stop.set()
        # The server's own CPU time per answered request: unlike req/s, hardly moved
        # by other processes competing for the same cores.
        res["cpu_us"] = (cpu1 - cpu0) / max(res["requests"], 1) * 1e6
        if poller:
            poller.join(timeout=15)
        res.update(status_ok=poll["ok"], status_failed=poll["failed"],
                   status_max_ms=max(poll["lat"], default=0.0), stats_events=poll["stats_events"])
        return res
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--server-threads", type=int, default=4)
    p.add_argument("--json", metavar="FILE", help="also write the raw runs as JSON")
    p.add_argument("--serve", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    p.add_argument("--inprocess", metavar="MODE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inprocess:
        inprocess(args.inprocess, calls=20000, repeats=5)
        return 0
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.server_threads)
        return 0
    if not shutil.which("wrk"):
        print("bench_http_load: SKIPPED: wrk is not installed (apt-get install -y wrk)")
        return 0
    try:
        import waitress  # noqa: F401
    except ImportError:
        print("bench_http_load: SKIPPED: waitress is not installed (pip install waitress)")
        return 0
    runs: dict[str, list[dict]] = {"plain": [], "memwatch": []}
    order = ["plain", "memwatch"]
    for r in range(args.rounds):
        for mode in (order if r % 2 == 0 else order[::-1]):
            res = one_run(mode, args)
            runs[mode].append(res)
            extra = (f"  status {res['status_ok']} ok / {res['status_failed']} failed, "
                     f"max {res['status_max_ms']:.1f} ms, {res['stats_events']} stats events"
                     if mode == "memwatch" else "")
            print(f"round {r + 1} {mode:>8}: {res['rps']:9.1f} req/s  p50 {res['p50']:6.2f} ms  "
                  f"p99 {res['p99']:6.2f} ms  cpu {res['cpu_us']:6.1f} us/req{extra}", flush=True)
    med = {m: {k: statistics.median(x[k] for x in v) for k in ("rps", "p50", "p99", "cpu_us")}
           for m, v in runs.items()}
    base = med["plain"]
    print()
    print(f"waitress ({args.server_threads} threads) + wrk ({args.wrk_threads} thread, {args.connections} "
          f"connections, {args.duration:g}s per run), medians of {args.rounds} runs, loopback, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'':10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}")
    for m in ("plain", "memwatch"):
        print(f"{m:10} {med[m]['rps']:10.1f} {med[m]['p50']:8.2f} {med[m]['p99']:8.2f} "
              f"{med[m]['cpu_us']:11.1f}")
    cost = lambda k, sign: sign * (med["memwatch"][k] - base[k]) / base[k] * 100  # noqa: E731
    print(f"{'cost':10} {cost('rps', -1):+9.1f}% {cost('p50', 1):+7.1f}% {cost('p99', 1):+7.1f}% "
          f"{cost('cpu_us', 1):+10.1f}%   (positive = memwatch slower)")
    spread = {m: (min(x["rps"] for x in v), max(x["rps"] for x in v)) for m, v in runs.items()}
    print(f"req/s range over the runs: plain {spread['plain'][0]:.0f}-{spread['plain'][1]:.0f}, "
          f"memwatch {spread['memwatch'][0]:.0f}-{spread['memwatch'][1]:.0f} (other load on the "
          "machine moves req/s; CPU per request is the steadier measure)")
    mw = runs["memwatch"]
    ok, failed = sum(x["status_ok"] for x in mw), sum(x["status_failed"] for x in mw)
    print(f"status endpoint under load: {ok} answers 200, {failed} failed, slowest "
          f"{max(x['status_max_ms'] for x in mw):.1f} ms")
    ip = measure_inprocess(args)
    print(f"in process, no server (the app called directly, 20000 calls x 5, medians of "
          f"{args.rounds} processes each): plain {ip['plain']:.1f} us/call, memwatch "
          f"{ip['memwatch']:.1f} us/call, cost {(ip['memwatch'] - ip['plain']) / ip['plain'] * 100:+.1f}%")
    non2xx = sum(x["non2xx"] for v in runs.values() for x in v)
    if non2xx:
        print(f"WARNING: {non2xx} non-2xx answers to wrk")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": runs, "medians": med, "inprocess": ip}, fh, indent=2)
    return 1 if failed or non2xx else 0


if __name__ == "__main__":
    sys.exit(main())
