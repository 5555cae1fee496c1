"""Real services under load, with memwatch inside the server: the shared harness.

One *scenario* is an app of this folder served by a real server (gunicorn,
waitress, uvicorn, or the job worker's own loop) in a subprocess, with
memwatch's leak listener inside the serving process (``_mw.py``), driven by a
bounded load generator on loopback.  ``run_scenario()`` starts the server,
waits until it answers, drives it at a fixed request rate until the run's time
is up (or, for a leaking app, until the first ``leak`` line appears), stops it
and returns what happened: the leak events (seconds after the load started),
the number of ``stats`` samples, the request rate actually served.

Used by ``tests/test_service_scenarios.py`` (short time scale, all scenarios at
once) and ``benchmarks/bench_services.py`` (memwatch's defaults, real time).
One scenario from the command line (prints ``RESULT {json}`` last)::

    python tests/services/_harness.py flask_cache --leak --scale 0.1 --duration 40
"""
from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Scenario:
    name: str
    requires: tuple[str, ...]      # importable modules the app needs
    expect_type: str               # what a leak report's top_types must name
    server: str                    # "gunicorn", "uvicorn", "script" (the app serves itself)
                                   # or "run" (the script under `memwatch run --jsonl`)
    target: str = ""               # the WSGI/ASGI app for gunicorn/uvicorn ("module:name")
    path: str = ""                 # HTTP path template ({n}: request number); "" = job lines
    description: str = ""

    def command(self, port: int, jsonl: Path | None = None, scale: float = 1.0) -> list[str]:
        py = sys.executable
        if self.server == "run" and jsonl is not None:
            # memwatch's own wrapper instead of _mw.install(): the events come
            # from `memwatch run --jsonl` (see read_events for its line format).
            scaled = ["--time-scale", repr(scale)] if scale != 1 else []
            return [py, "-m", "memwatch", "run", "--jsonl", str(jsonl), "-q", *scaled,
                    f"{self.name}.py", str(port)]
        if self.server == "gunicorn":
            # One worker with 4 threads; no --preload, so the app (and
            # memwatch) is imported in the worker that serves the requests.
            return [py, "-m", "gunicorn", "--workers", "1", "--threads", "4",
                    "--worker-class", "gthread", "--bind", f"127.0.0.1:{port}",
                    "--timeout", "300", "--graceful-timeout", "5",
                    "--log-level", "warning", self.target]
        if self.server == "uvicorn":
            return [py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                    "--loop", "asyncio", "--http", "h11", "--log-level", "warning",
                    "--no-access-log", self.target]
        return [py, f"{self.name}.py", str(port)]

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("flask_cache", ("flask", "gunicorn"), "flask_cache.RenderedPage", "gunicorn",
             "flask_cache:app", "/page/{item}?v={n}", "module-level dict memoising every URL"),
    Scenario("django_signals", ("django", "gunicorn"), "django_signals.OrderWatcher",
             "gunicorn", "django_signals:application", "/order/{n}",
             "DEBUG=True; a signal receiver connected per request (weak=False)"),
    Scenario("fastapi_tasks", ("fastapi", "uvicorn"), "_asyncio.Task", "uvicorn",
             "fastapi_tasks:app", "/report/{n}", "finished asyncio tasks kept in a set"),
    # waitress is started by the app's own __main__ (waitress.serve, 4 threads).
    Scenario("flask_logging", ("flask", "waitress"), "logging.StreamHandler", "script",
             "", "/order/{n}", "a logging.StreamHandler added per request"),
    Scenario("worker_jobs", (), "__main__.JobRecord", "run", "", "",
             "a job worker appending every job's record to a list (jobs as JSON lines on TCP)"),
)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(jsonl: Path | None, scale: float, leak: bool) -> dict[str, str]:
    """The server's environment; ``jsonl`` None: _mw.install() stays off."""
    env = dict(os.environ)
    # The apps import _mw from this folder; memwatch comes from wherever the
    # caller imports it (an installed package, or src/ in a checkout).
    paths = [str(HERE)] + [p for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["SERVICE_LEAK"] = "1" if leak else "0"
    env["MEMWATCH_SERVICE_SCALE"] = repr(scale)
    if jsonl is None:
        env.pop("MEMWATCH_SERVICE_JSONL", None)
    else:
        env["MEMWATCH_SERVICE_JSONL"] = str(jsonl)
    env.pop("MEMWATCH_TRACE_GC", None)
    return env


def read_events(jsonl: Path) -> list[dict]:
    try:
        text = jsonl.read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:       # `memwatch run` flushes whole lines, but be safe
            continue
        events.append(event if "wall" in event else _from_runner(event))
    return events


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _from_runner(event: dict) -> dict:
    """A `memwatch run --jsonl` line in _mw.py's shape."""
    kind = event.get("event")
    if kind == "start":
        return {"event": "ready", "pid": event.get("pid"), "wall": _wall(event["timestamp"]),
                "options": None}
    if kind == "stats":
        return {"event": "stats", "wall": _wall(event["timestamp"]),
                "current_base": event.get("current_base"), "rss": event.get("rss")}
    if kind == "leak":
        # The line has no time of its own: the confirming collection's (seconds
        # before the listener, after the window's end) is the nearest.
        confirmed = (event.get("confirmation") or {}).get("timestamp")
        return {"event": "leak", "wall": _wall(confirmed or event["end"]),
                "reason": event.get("reason"),
                "window": round(_wall(event["end"]) - _wall(event["start"]), 3),
                "growth": event.get("growth"), "samples": event.get("samples"),
                "top_types": [d.get("what") for d in event.get("top_types") or []]}
    return {"event": kind, "wall": 0.0}


def wait_ready(port: int, proc: subprocess.Popen, jsonl: Path | None, timeout: float) -> None:
    """Until the server accepts connections (and memwatch said it is installed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        ready = jsonl is None or any(e["event"] == "ready" for e in read_events(jsonl))
        if ready:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"server not answering on port {port} after {timeout:.0f} s")


class Load:
    """A bounded load generator: ``threads`` clients sharing one request rate.

    Each client keeps one connection (HTTP/1.1 keep-alive, or one TCP stream of
    job lines) and takes the next request's slot from a shared schedule, so the
    rate is ``rate`` per second at most, whatever the server's speed; a slow
    server just gets fewer.  Stops when ``stop`` is set."""

    def __init__(self, scenario: Scenario, port: int, rate: float, threads: int,
                 requests: int | None = None) -> None:
        self.scenario = scenario
        self.limit = requests
        self.port = port
        self.rate = rate
        self.threads = threads
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.issued = 0
        self.done = 0
        self.errors: list[str] = []
        self.t0 = 0.0
        self.wall0 = 0.0

    def _slot(self) -> int | None:
        with self.lock:
            n = self.issued
            if self.limit is not None and n >= self.limit:
                return None              # this client is done; the others finish their slots
            self.issued += 1
        delay = self.t0 + n / self.rate - time.monotonic()
        if delay > 0 and self.stop.wait(delay):
            return None
        return None if self.stop.is_set() else n

    def _http_client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        template = self.scenario.path
        try:
            while (n := self._slot()) is not None:
                try:
                    conn.request("GET", template.format(n=n, item=n % 97))
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 200:
                        self.errors.append(f"HTTP {resp.status}")
                    else:
                        with self.lock:
                            self.done += 1
                except (OSError, http.client.HTTPException) as exc:
                    self.errors.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if len(self.errors) > 20:
                    self.stop.set()
        finally:
            conn.close()

    def _job_client(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
                while (n := self._slot()) is not None:
                    job = {"id": n, "kind": "sum", "args": [n, n + 1, n + 2, n % 7]}
                    s.sendall(json.dumps(job).encode() + b"\n")
                    with self.lock:
                        self.done += 1
        except OSError as exc:
            self.errors.append(repr(exc))
            self.stop.set()

    def start(self) -> list[threading.Thread]:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        target = self._http_client if self.scenario.path else self._job_client
        threads = [threading.Thread(target=target, daemon=True, name=f"load-{i}")
                   for i in range(self.threads)]
        for t in threads:
            t.start()
        return threads


@dataclass
class Result:
    scenario: str
    leaking: bool
    scale: float
    memwatch: bool
    ran: float = 0.0                 # real seconds of load
    requests: int = 0                # served (HTTP 200), or job lines sent
    rate: float = 0.0                # requests served per real second
    errors: list = field(default_factory=list)
    leaks: list = field(default_factory=list)
    stats: int = 0
    rss_first: int | None = None     # the server's RSS when the load started and ended
    rss_last: int | None = None      # (psutil; else its first and last stats sample)
    server_cpu: float | None = None  # CPU seconds of the serving process(es) during the load
    pid: int | None = None
    options: dict | None = None
    returncode: int | None = None
    stderr: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _server_total(pid: int, read) -> float | None:
    """``read(process)`` summed over a server and its children (gunicorn's worker)."""
    try:
        import psutil
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
        total = 0.0
        for p in procs:
            try:
                total += read(p)
            except psutil.Error:
                pass
        return total
    except Exception:                  # psutil missing, or the server already gone
        return None


def server_cpu(pid: int) -> float | None:
    """CPU seconds of a server and its children, or None."""
    total = _server_total(pid, lambda p: sum(p.cpu_times()[:2]))
    return None if total is None else round(total, 2)


def server_rss(pid: int) -> int | None:
    """RSS bytes of a server and its children, or None (read from outside memwatch)."""
    total = _server_total(pid, lambda p: p.memory_info().rss)
    return None if total is None else int(total)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session``: the whole session
    (gunicorn's worker too), SIGTERM first, SIGKILL after 20 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_scenario(name: str, *, leak: bool, scale: float, duration: float,
                 rate: float = 200.0, threads: int = 4, requests: int | None = None,
                 memwatch: bool = True, stop_at_leak: bool = True,
                 twin_file: Path | None = None, startup_timeout: float = 120.0) -> Result:
    """Serve ``name`` (its leaky version if ``leak``) under load.

    The load stops after ``duration`` real seconds, after ``requests`` requests,
    or (a leaky app, ``stop_at_leak``) at the first leak event, whichever is first.

    ``twin_file`` pairs a leaky run with its clean twin running at the same time:
    the leaky run writes there how many requests it served when it stopped; the
    clean run goes on until that file appears, then until it has served as many
    (at least ``requests``), so a clean twin always sees the traffic that got
    its leaky twin reported, however long that took on a loaded machine."""
    scenario = SCENARIOS[name]
    result = Result(name, leak, scale, memwatch)
    with tempfile.TemporaryDirectory(prefix=f"memwatch-{name}-") as tmp:
        jsonl = Path(tmp) / "events.jsonl" if memwatch else None
        port = free_port()
        spawned = time.time()
        errlog = open(Path(tmp) / "stderr.txt", "w+")    # noqa: SIM115
        via_run = scenario.server == "run"
        proc = subprocess.Popen(scenario.command(port, jsonl, scale), cwd=HERE,
                                env=server_env(None if via_run else jsonl, scale, leak),
                                stdout=subprocess.DEVNULL, stderr=errlog,
                                start_new_session=True)
        threads_ = []
        cpu0 = None
        waiting_for_twin = twin_file is not None and not leak
        load = Load(scenario, port, rate, threads, None if waiting_for_twin else requests)
        try:
            wait_ready(port, proc, jsonl, startup_timeout)
            cpu0 = server_cpu(proc.pid)     # start-up (imports) left out of the load's CPU
            result.rss_first = server_rss(proc.pid)
            threads_ = load.start()
            while not load.stop.is_set():
                if time.monotonic() - load.t0 >= duration or proc.poll() is not None:
                    break
                if waiting_for_twin and twin_file.exists():
                    try:
                        twin = int(twin_file.read_text())
                    except ValueError:      # being written
                        twin = None
                    if twin is not None:
                        waiting_for_twin = False
                        with load.lock:
                            load.limit = max(twin, requests or 0)
                if not any(t.is_alive() for t in threads_):
                    break                # all requests issued and answered
                if stop_at_leak and leak and jsonl is not None and any(
                        e["event"] == "leak" for e in read_events(jsonl)):
                    break
                load.stop.wait(0.25)
        finally:
            load.stop.set()
            result.ran = round(time.monotonic() - load.t0, 2) if load.t0 else 0.0
            for t in threads_:
                t.join(timeout=70)
            result.returncode = proc.poll()
            if result.returncode is None:
                cpu1 = server_cpu(proc.pid)
                result.rss_last = server_rss(proc.pid)
                if cpu0 is not None and cpu1 is not None:
                    result.server_cpu = round(cpu1 - cpu0, 3)
                stop_server(proc)
            errlog.seek(0)
            result.stderr = errlog.read()[-4000:]
            errlog.close()
        result.requests = load.done
        if twin_file is not None and leak:
            tmp_file = twin_file.with_suffix(".tmp")
            tmp_file.write_text(str(load.done))
            tmp_file.replace(twin_file)      # whole or absent for the twin's reader
        result.rate = round(load.done / result.ran, 1) if result.ran else 0.0
        result.errors = load.errors[:5]
        if jsonl is not None:
            events = read_events(jsonl)
            ready = [e for e in events if e["event"] == "ready"]
            if ready:
                result.pid = ready[-1]["pid"]
                result.options = ready[-1]["options"]
            stats = [e for e in events if e["event"] == "stats"]
            result.stats = len(stats)
            if stats and (result.rss_first is None or result.rss_last is None):
                result.rss_first, result.rss_last = stats[0]["rss"], stats[-1]["rss"]
            for e in events:
                if e["event"] == "leak":
                    after = e["wall"] - load.wall0
                    result.leaks.append({"after_load_start": round(after, 1),
                                         "after_server_start": round(e["wall"] - spawned, 1),
                                         "nominal": round(after / scale, 1),
                                         "reason": e["reason"], "growth": e["growth"],
                                         "window": e.get("window"),
                                         "top_types": e["top_types"]})
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--leak", action="store_true", help="serve the leaky version")
    p.add_argument("--scale", type=float, default=1.0,
                   help="the tracker's time_scale (default 1: memwatch's defaults)")
    p.add_argument("--duration", type=float, default=240.0, help="real seconds of load")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second")
    p.add_argument("--requests", type=int, default=None, help="stop after this many requests")
    p.add_argument("--twin-file", type=Path, default=None,
                   help="pair with the twin run: the leaky run writes its request count "
                        "there, the clean run serves at least as many")
    p.add_argument("--threads", type=int, default=4, help="load generator's connections")
    p.add_argument("--no-memwatch", action="store_true", help="serve without memwatch")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at the first leak event")
    args = p.parse_args(argv)
    missing = SCENARIOS[args.scenario].missing()
    if missing:
        print("RESULT " + json.dumps({"scenario": args.scenario, "skipped":
                                      f"missing {', '.join(missing)}"}), flush=True)
        return
    result = run_scenario(args.scenario, leak=args.leak, scale=args.scale,
                          duration=args.duration, rate=args.rate, threads=args.threads,
                          requests=args.requests, twin_file=args.twin_file,
                          memwatch=not args.no_memwatch, stop_at_leak=not args.keep_going)
    print("RESULT " + json.dumps(result.as_dict()), flush=True)


if __name__ == "__main__":
    main()
