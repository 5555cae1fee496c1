"""memwatch's HTTP API: find a leak in a live service with curl.

The routes and JSON shapes of autohost-memwatch (``/ah/...``), plus the routes
it left out: start and end a HeapDiff, take a census, write a snapshot, force
a collection.  Offered three ways, all sharing one state per process:

* ``memwatch.serve(port=8079)``: a background server on the standard library
  (a daemon thread), bound to 127.0.0.1 unless told otherwise;
* ``memwatch.make_wsgi_app(app=None)``: a WSGI app; given ``app``, a middleware
  that answers ``/ah/...`` and hands every other request to ``app``
  (Flask: ``app.wsgi_app = memwatch.make_wsgi_app(app.wsgi_app)``);
* ``memwatch.make_asgi_app(app=None)``: the same for ASGI, written by hand
  (FastAPI/Starlette: ``app.mount("/debug", memwatch.make_asgi_app())`` or wrap
  the whole app; Django: wrap the ``application`` of ``asgi.py``).

Routes (all answers are JSON; an error is ``{"error": ..., "fix": ..., "status": ...}``)::

    GET    /ah                               this list of routes
    GET    /ah/memoryProfile/status          lastEvent, lastGC, lastLeak, lastDiff (+ counts)
    GET    /ah/memory[?details=true]         {"memoryProfiles": [ids]} (or the profiles)
    POST   /ah/memoryProfile                 start a HeapDiff; 201 with its id
    POST   /ah/memoryProfile/:id/end         end it: the profile now holds the diff
    GET    /ah/memoryProfile/:id             one profile (autohost's shape + id/kind/state)
    DELETE /ah/memoryProfile/:id             {"message": "Deleted profile :id"}
    POST   /ah/census[?top=25]               a census by type, stored as a profile; 201
    POST   /ah/gc                            a full collection; the stats it produced
    POST   /ah/snapshot                      write a V8 .heapsnapshot on the server's disk;
                                             answers its path and a download link
    GET    /ah/snapshot/:name                download a snapshot this server wrote
    GET    /ah/history                       current_base/estimated_base/RSS samples, leak events
    POST   /ah/retainers?type=NAME[&limit=5] shortest paths from the roots to instances of a type
    GET    /ah/ui                            the live page (HTML; see memwatch.livepage)
    GET    /ah/profile[?key=lineno&top=50]   the sampled live heap by allocation site
    GET    /ah/profile.pprof                 the same, gzipped pprof (go tool pprof URL)
    GET    /ah/sampling                      is allocation sampling running, who started it
    POST   /ah/sampling/start[?seconds=S]    start it (?interval=BYTES, ?nframe=N); 201
    POST   /ah/sampling/stop                 stop the session started over HTTP

Safety: no object contents in any JSON answer (type names and numbers only;
a snapshot is written in a directory the server chose, and only the snapshots
this server wrote can be downloaded, with the same token as every route), an
optional bearer token (``token=...``: every route then needs
``Authorization: Bearer <token>``), at most ``max_profiles`` stored profiles
(the oldest finished one is dropped) and ``max_open_diffs`` open HeapDiffs.

Threads: the ``stats``/``leak`` handlers run wherever the tracker calls them
(possibly inside the GC); they only store a reference to the payload, take no
lock and allocate almost nothing.  Heavy work (census, HeapDiff, snapshot,
gc) runs one at a time in the request's own thread (the ASGI app moves it to
a worker thread), never in the GC; ``status`` and the listing never wait for it.
"""
from __future__ import annotations

import datetime as _dt
import hmac
import itertools
import json
import logging
import math
import os
import re
import selectors
import sys
import tempfile
import threading
import time
import warnings
from array import array
from collections import OrderedDict, deque
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

__all__ = ["MemwatchState", "default_state", "make_wsgi_app", "make_asgi_app", "serve",
           "MemwatchServer", "ROUTES_HELP"]

_UTC = _dt.timezone.utc

ROUTES_HELP = [
    {"method": "GET", "path": "/ah", "does": "this list of routes"},
    {"method": "GET", "path": "/ah/memoryProfile/status",
     "does": "lastEvent, lastGC (last stats event), lastLeak, lastDiff, each with a timestamp"},
    {"method": "GET", "path": "/ah/memory", "does": "ids of the stored profiles; ?details=true for the profiles"},
    {"method": "POST", "path": "/ah/memoryProfile", "does": "start a HeapDiff (a profile in state 'running')"},
    {"method": "POST", "path": "/ah/memoryProfile/:id/end", "does": "end the HeapDiff; the profile holds the diff"},
    {"method": "GET", "path": "/ah/memoryProfile/:id", "does": "one profile"},
    {"method": "DELETE", "path": "/ah/memoryProfile/:id", "does": "delete a profile (an open HeapDiff is discarded)"},
    {"method": "POST", "path": "/ah/census", "does": "census of the heap by type (?top=N rows), stored as a profile"},
    {"method": "POST", "path": "/ah/gc", "does": "force a full collection; answers the stats it produced"},
    {"method": "POST", "path": "/ah/snapshot", "does": "write a V8 .heapsnapshot on the server's disk; answers its path"},
    {"method": "GET", "path": "/ah/snapshot/:name", "does": "download a .heapsnapshot this server wrote"},
    {"method": "GET", "path": "/ah/history", "does": "samples of current_base, estimated_base and RSS, and leak events"},
    {"method": "POST", "path": "/ah/retainers", "does": "?type=NAME[&limit=5]: shortest paths from the roots "
                                                       "to instances of a type (a short name is resolved)"},
    {"method": "GET", "path": "/ah/ui", "does": "the live page (HTML, no network; token in the URL fragment)"},
    {"method": "GET", "path": "/ah/profile", "does": "sampled live heap by allocation site (?key=lineno|filename|traceback, ?top=N); needs memwatch.start_sampling()"},
    {"method": "GET", "path": "/ah/sampling", "does": "is allocation sampling running, who started it, its counters"},
    {"method": "POST", "path": "/ah/sampling/start", "does": "start allocation sampling (?interval=BYTES&nframe=N&seconds=S: stop after S seconds)"},
    {"method": "POST", "path": "/ah/sampling/stop", "does": "stop the sampling started over HTTP"},
    {"method": "GET", "path": "/ah/profile.pprof", "does": "the same as gzipped pprof (go tool pprof http://HOST/ah/profile.pprof)"},
]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_UTC)


def _epoch(value: Any) -> float:
    """A stats/leak timestamp (aware datetime or number) as Unix seconds."""
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return time.time()


def _num(value: Any) -> float:
    """A number for the history rings; NaN when missing (answered as null)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _iso(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    # Never repr() an unknown object: that could put object contents in an answer.
    return f"<{type(obj).__name__}>"


def _finite(obj: Any) -> Any:
    """NaN and infinities are not JSON: answer null for them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --- sampling (issue 11): the profile routes ---
def _sampling_route(name: str, query: dict) -> tuple[int, Any]:
    from memwatch import heapprofile
    if name == "sampling":
        return 200, heapprofile.sampling_info()
    if name == "sampling_start":
        return _sampling_start(query)
    if name == "sampling_stop":
        return _sampling_stop()
    if not heapprofile.is_sampling():
        raise HTTPError(409, "allocation sampling is not running",
                        "start it over HTTP with POST /ah/sampling/start[?seconds=N], or in the "
                        "service with memwatch.start_sampling() or "
                        "memwatch.configure(sample_allocations=True) "
                        "(or run it with memwatch run --sample)")
    prof = heapprofile.take_heap_profile()
    if name == "profile_pprof":
        return 200, RawAnswer(prof.to_pprof(), "application/octet-stream",
                              [("Content-Disposition", 'attachment; filename="memwatch.pprof"')])
    key = (query.get("key") or ["lineno"])[-1]
    if key not in ("lineno", "filename", "traceback"):
        raise HTTPError(400, f"?key={key!r} is not a key type",
                        "give ?key= lineno, filename or traceback")
    return 200, prof.to_dict(key, _query_int(query, "top", 50, 1, 10000))


# An operator turns sampling on for a while, reads /ah/profile, and turns it
# off; a time limit (?seconds=N) makes sure a forgotten session ends.  Only a
# session started over HTTP can be stopped over HTTP: one the program or its
# tracker started feeds their own top_sites and is theirs to stop.
_MAX_SAMPLING_SECONDS = 7 * 86400


def _sampling_start(query: dict) -> tuple[int, Any]:
    from memwatch import _sampler, heapprofile
    interval = _query_int(query, "interval", heapprofile.DEFAULT_INTERVAL, 64, 1 << 30)
    nframe = _query_int(query, "nframe", heapprofile.DEFAULT_NFRAME, 1, _sampler.MAX_NFRAME)
    seconds = _query_int(query, "seconds", None, 1, _MAX_SAMPLING_SECONDS)
    try:
        heapprofile._start(interval, nframe, heapprofile.DEFAULT_MAX_SAMPLES,
                           heapprofile.DEFAULT_MAX_STACKS, None, owner="http", seconds=seconds)
    except heapprofile.SamplingError:
        running = heapprofile._session
        who = heapprofile._OWNER_WORDS[running["owner"]] if running else "another caller"
        raise HTTPError(409, f"allocation sampling is already running (started by {who})",
                        "read its profile with GET /ah/profile; to change its settings, stop it "
                        "first (POST /ah/sampling/stop stops a session started over HTTP)") from None
    return 201, heapprofile.sampling_info()


def _sampling_stop() -> tuple[int, Any]:
    from memwatch import heapprofile
    session = heapprofile._session
    if session is None:
        return 200, {"stopped": False, "message": "allocation sampling was not running"}
    if session["owner"] != "http":
        raise HTTPError(409, f"this sampling session was started by "
                        f"{heapprofile._OWNER_WORDS[session['owner']]}, not over HTTP",
                        "stop it in the service (memwatch.stop_sampling(), or "
                        "memwatch.configure(sample_allocations=False) for the tracker's)")
    stopped = heapprofile._stop_session(session)
    return 200, {"stopped": stopped, "message": "allocation sampling stopped" if stopped
                 else "allocation sampling had already stopped"}
# --- end sampling


def to_json(obj: Any) -> bytes:
    return (json.dumps(_finite(obj), default=_json_default, indent=2, allow_nan=False)
            + "\n").encode("utf-8")


def _with_timestamp(payload: dict | None, default_ts: _dt.datetime | None) -> dict | None:
    if payload is None:
        return None
    out = dict(payload)
    if "timestamp" not in out and default_ts is not None:
        out = {"timestamp": default_ts, **out}
    return out


class HTTPError(Exception):
    """An answer other than 2xx: status, the problem and the fix."""

    def __init__(self, status: int, error: str, fix: str, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(error)
        self.status = status
        self.error = error
        self.fix = fix
        self.headers = list(headers)


_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}


class MemwatchState:
    """What the HTTP API knows: the last events, the stored profiles, the open HeapDiffs.

    One per process is enough (``default_state()``); the WSGI app, the ASGI app
    and ``serve()`` all use it unless given another.
    """

    def __init__(self, *, max_profiles: int = 20, max_open_diffs: int = 2,
                 snapshot_dir: str | None = None, keep_snapshots: int = 3,
                 census_top: int = 25, heavy_timeout: float = 60.0, history: int = 2000) -> None:
        if max_profiles < 1 or max_open_diffs < 1:
            raise ValueError("max_profiles and max_open_diffs must be at least 1")
        self.max_profiles = max_profiles
        self.max_open_diffs = max_open_diffs
        self.snapshot_dir = snapshot_dir
        self.keep_snapshots = keep_snapshots
        self.census_top = census_top
        self.heavy_timeout = heavy_timeout
        # Written by the event handlers without a lock: one reference each,
        # replaced whole (atomic under the GIL), read once by the requests.
        self.last_event: str = ""
        self.last_gc: dict | None = None
        self.last_leak: dict | None = None
        self.last_diff: dict | None = None
        self.last_census: Any = None          # a memwatch.Census
        self.stats_count = 0
        self.leak_count = 0
        # The live page's chart: preallocated rings of doubles (time,
        # current_base, estimated_base, rss), written in place by on_stats, so
        # the handler creates no object the GC tracks (it may run in a pending
        # call during interpreter shutdown, where a collection must not start).
        if history < 1:
            raise ValueError("history must be at least 1")
        self._ring = [array("d", bytes(8 * history)) for _ in range(4)]
        self._ring_len = history
        self._ring_next = 0        # samples written so far (the slot is next % len)
        self.leaks: "deque[dict]" = deque(maxlen=100)
        self._stats_counter = itertools.count(1)
        self._leak_counter = itertools.count(1)
        self._ids = itertools.count(1)
        # Profiles: touched only by request threads, never by event handlers,
        # so a GC inside the locked region cannot deadlock on it.
        self._lock = threading.Lock()
        self._profiles: "OrderedDict[str, dict]" = OrderedDict()
        self._open: dict[str, Any] = {}       # id -> HeapDiff
        self._footprints: dict[str, dict] = {}  # id -> the starting request's objects by type
        self._heavy = threading.Lock()        # one census/HeapDiff/snapshot/gc at a time
        self._snapshots: list[str] = []
        self._attached = False
        self._attach_lock = threading.Lock()
        self.started = _now()

    # -- events ------------------------------------------------------------
    def on_stats(self, stats: dict) -> None:
        """The ``stats`` handler: keep the payload (no lock, no heavy work)."""
        self.last_gc = stats
        # At interpreter exit the tracker may still deliver from inside the
        # last collection, when the payload can be half torn down: then read
        # nothing of it (3.13 crashed here reading its timestamp).
        if not sys.is_finalizing():
            n = self._ring_next
            i = n % self._ring_len
            t, cur, est, rss = self._ring
            t[i] = _epoch(stats.get("timestamp"))
            cur[i] = _num(stats.get("current_base"))
            est[i] = _num(stats.get("estimated_base"))
            rss[i] = _num(stats.get("rss"))
            self._ring_next = n + 1
        self.stats_count = next(self._stats_counter)
        self.last_event = "stats"

    def on_leak(self, info: dict) -> None:
        """The ``leak`` handler: keep the payload, stamped with its arrival."""
        self.last_leak = {"timestamp": _now(), **info}
        self.leaks.append(self.last_leak)
        self.leak_count = next(self._leak_counter)
        self.last_event = "leak"

    def attach(self) -> "MemwatchState":
        """Subscribe to the tracker's ``stats`` and ``leak`` events (idempotent)."""
        with self._attach_lock:
            if not self._attached:
                import memwatch
                memwatch.on("stats", self.on_stats)
                memwatch.on("leak", self.on_leak)
                self._attached = True
        return self

    def detach(self) -> None:
        with self._attach_lock:
            if self._attached:
                import memwatch
                memwatch.off("stats", self.on_stats)
                memwatch.off("leak", self.on_leak)
                self._attached = False

    # -- views -------------------------------------------------------------
    def status(self) -> dict:
        last_gc, last_leak, last_diff = self.last_gc, self.last_leak, self.last_diff
        return {
            "lastEvent": self.last_event,
            "lastGC": _with_timestamp(last_gc, None),
            "lastLeak": last_leak,
            "lastDiff": last_diff,
            "counts": {"stats": self.stats_count, "leak": self.leak_count},
            "profiles": len(self._profiles),
            "openDiffs": len(self._open),
            "pid": os.getpid(),
            "since": self.started,
        }

    def _capture(self, diff: bool = True) -> dict:
        # autohost's profile keys; they come after the profile's own result
        # so that `POST /ah/census?top=3` starts with the census.
        out = {"lastEvent": self.last_event, "lastGC": self.last_gc, "lastLeak": self.last_leak}
        if diff:
            out["lastDiff"] = self.last_diff
        return out

    def profile_ids(self) -> list[str]:
        with self._lock:
            return list(self._profiles)

    def profiles(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self._profiles.values()]

    def get_profile(self, pid: str, top: int | None = None) -> dict:
        with self._lock:
            prof = self._profiles.get(pid)
            if prof is None:
                raise self._unknown(pid)
            return _top_details(prof, top)

    def _unknown(self, pid: str) -> HTTPError:
        known = ", ".join(list(self._profiles)[-5:]) or "none"
        return HTTPError(404, f"no profile {pid!r} (stored: {known})",
                         "list the stored profiles with GET /ah/memory; start one with "
                         "POST /ah/memoryProfile or POST /ah/census (at most "
                         f"{self.max_profiles} are kept, the oldest finished ones are dropped)")

    def delete_profile(self, pid: str) -> dict:
        with self._lock:
            if pid not in self._profiles:
                raise self._unknown(pid)
            del self._profiles[pid]
            hd = self._open.pop(pid, None)
            self._footprints.pop(pid, None)
        del hd  # an open HeapDiff's records are freed with it
        return {"message": f"Deleted profile {pid}"}

    def _store(self, prof: dict) -> None:
        # caller holds self._lock
        self._profiles[prof["id"]] = prof
        while len(self._profiles) > self.max_profiles:
            victim = next((k for k, p in self._profiles.items() if p["state"] != "running"), None)
            if victim is None:
                break
            del self._profiles[victim]

    # -- heavy work ---------------------------------------------------------
    def _heavy_work(self) -> threading.Lock:
        if not self._heavy.acquire(timeout=self.heavy_timeout):
            raise HTTPError(503, "another census, HeapDiff, snapshot or gc is still running",
                            "retry in a few seconds", [("Retry-After", "5")])
        return self._heavy

    def start_diff(self) -> dict:
        with self._lock:
            if len(self._open) >= self.max_open_diffs:
                raise HTTPError(409, f"{len(self._open)} HeapDiffs are already open "
                                f"({', '.join(self._open)}); at most {self.max_open_diffs} at once",
                                "end one with POST /ah/memoryProfile/:id/end or delete it with "
                                "DELETE /ah/memoryProfile/:id")
            pid = f"diff-{next(self._ids)}"
            # Reserve the slot before the slow part so concurrent starts stay bounded.
            self._open[pid] = None
        try:
            lock = self._heavy_work()
            try:
                from memwatch.heapdiff import HeapDiff
                from memwatch.typestats import type_name  # noqa: F401 - loaded before the walk
                # This request's own objects, seen by the first walk: read before
                # and after it, since other connections close concurrently.
                early = _request_footprint()
                hd = HeapDiff()
                footprint = _merge_footprints(early, _request_footprint())
            finally:
                lock.release()
        except BaseException:
            with self._lock:
                self._open.pop(pid, None)
            raise
        started = _now()
        prof = {"id": pid, "kind": "heapdiff", "state": "running", "timestamp": started,
                "started": started, "ended": None, "end": f"POST /ah/memoryProfile/{pid}/end",
                "lastDiff": None, **self._capture(diff=False)}
        with self._lock:
            self._open[pid] = hd
            self._footprints[pid] = footprint
            self._store(prof)
        return dict(prof)

    def end_diff(self, pid: str, top: int | None = None) -> dict:
        with self._lock:
            prof = self._profiles.get(pid)
            if prof is None:
                raise self._unknown(pid)
            if prof.get("kind") != "heapdiff":
                raise HTTPError(409, f"profile {pid!r} is a {prof.get('kind')}, not a HeapDiff",
                                "start a HeapDiff with POST /ah/memoryProfile and end that one")
            hd = self._open.get(pid)
            if prof["state"] != "running" or hd is None:
                if prof["state"] == "running":
                    raise HTTPError(409, f"HeapDiff {pid!r} is still being started",
                                    "retry in a moment")
                raise HTTPError(409, f"HeapDiff {pid!r} has already ended",
                                f"read it with GET /ah/memoryProfile/{pid}")
            self._open[pid] = None  # claimed: a second end() gets a 409
            # memwatch's own since the start: this profile and the start's footprint
            own = (prof, self._footprints.get(pid))
        try:
            lock = self._heavy_work()
            try:
                early = _request_footprint(extra=own)
                diff = hd.end()
                footprint = _merge_footprints(early, _request_footprint(extra=own))
            finally:
                lock.release()
        except BaseException:
            with self._lock:
                if pid in self._open:
                    self._open[pid] = hd
            raise
        ended = _now()
        with self._lock:
            started_fp = self._footprints.pop(pid, {})
        diff = {"timestamp": ended, **_without_requests(diff, started_fp, footprint)}
        self.last_diff = diff
        self.last_event = "diff"
        with self._lock:
            self._open.pop(pid, None)
            prof = dict(self._profiles.get(pid) or prof)
            prof.pop("end", None)
            prof.update(state="done", ended=ended, timestamp=ended, lastDiff=diff)
            prof.update(self._capture(diff=False))
            if pid in self._profiles:
                self._profiles[pid] = prof
        del hd, own
        return _top_details(prof, top)

    def take_census(self, top: int | None = None) -> dict:
        top = self.census_top if top is None else top
        lock = self._heavy_work()
        try:
            from memwatch.typestats import census
            c = census(collect=True)
        finally:
            lock.release()
        self.last_census = c
        ts = _now()
        body = c.to_dict(limit=top)
        body["timestamp"] = ts
        with self._lock:
            pid = f"census-{next(self._ids)}"
            prof = {"id": pid, "kind": "census", "state": "done", "census": body, "timestamp": ts,
                    "started": ts, "ended": ts, **self._capture(diff=False)}
            self._store(prof)
        return dict(prof)

    def force_gc(self) -> dict:
        import memwatch
        lock = self._heavy_work()
        try:
            stats = memwatch.gc()
        finally:
            lock.release()
        return stats

    def write_snapshot(self) -> dict:
        try:
            import memwatch
            writer = memwatch.write_snapshot
        except (AttributeError, ImportError):
            raise HTTPError(501, "this memwatch has no snapshot writer (memwatch.write_snapshot)",
                            "upgrade memwatch, or use POST /ah/census and POST /ah/memoryProfile")
        directory = self.snapshot_dir or tempfile.gettempdir()
        name = f"memwatch-{os.getpid()}-{time.strftime('%Y%m%dT%H%M%S')}-{next(self._ids)}.heapsnapshot"
        path = os.path.join(directory, name)
        lock = self._heavy_work()
        try:
            info = writer(path)
        finally:
            lock.release()
        size = os.path.getsize(path)
        with self._lock:
            self._snapshots.append(path)
            old = self._snapshots[:-self.keep_snapshots] if self.keep_snapshots > 0 else []
            self._snapshots = self._snapshots[len(old):]
        for p in old:
            try:
                os.unlink(p)
            except OSError:
                pass
        from memwatch.formatting import format_size
        nodes = info.get("nodes") if isinstance(info, dict) else None
        return {"path": path, "name": name, "download": f"/ah/snapshot/{name}",
                "size_bytes": size, "size": format_size(size), "nodes": nodes,
                "timestamp": _now(),
                "open": "Chrome DevTools > Memory > Load profile; at most "
                        f"{self.keep_snapshots} snapshots are kept, older ones are deleted"}


    def snapshot_file(self, name: str) -> "RawAnswer":
        """The bytes of a snapshot this state wrote (and still keeps), as a download."""
        with self._lock:
            path = next((p for p in self._snapshots if os.path.basename(p) == name), None)
            kept = [os.path.basename(p) for p in self._snapshots]
        if path is None:
            raise HTTPError(404, f"no snapshot {name!r} written by this server (kept: "
                            f"{', '.join(kept) or 'none'})",
                            "write one with POST /ah/snapshot and download the name it answers")
        with open(path, "rb") as f:
            data = f.read()
        return RawAnswer(data, "application/json", [
            ("Content-Disposition", f'attachment; filename="{name}"')])

    def history_view(self) -> dict:
        """The live page's chart: (time, current_base, estimated_base, rss) samples and leaks."""
        n, size = self._ring_next, self._ring_len
        first = max(0, n - size)
        rows = [[col[k % size] for col in self._ring] for k in range(first, n)]
        # NaN marks a missing value (null in JSON), see _num
        samples = [[None if v != v else v for v in row] for row in rows]
        leaks = [{"timestamp": _epoch(lk.get("timestamp")), "start": _epoch(lk.get("start")),
                  "end": _epoch(lk.get("end")), "growth": lk.get("growth"),
                  "reason": lk.get("reason")} for lk in list(self.leaks)]
        return {"fields": ["time", "current_base", "estimated_base", "rss"], "samples": samples,
                "leaks": leaks, "now": time.time(), "rss": _rss_now(), "pid": os.getpid()}

    def retainers_of(self, name: str, limit: int = 5) -> dict:
        """Retainer paths of the instances of the type called ``name`` (short names resolved)."""
        lock = self._heavy_work()
        try:
            tp, resolved = resolve_type_name(name)
            try:
                import memwatch
                paths = memwatch.retainers(tp, limit=limit, instances=True)
            finally:
                del tp
        finally:
            lock.release()
        rows = [_safe_path(p) for p in paths]
        del paths
        holders: dict[str, int] = {}
        for row in rows:
            if row["holder"] is not None:
                holders[row["holder"]] = holders.get(row["holder"], 0) + 1
        common = sorted(holders.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"type": resolved, "asked": name, "paths": rows,
                "holders": [{"holder": h, "paths": n} for h, n in common],
                "note": None if rows else f"no instance of {resolved} is reachable from the roots"}


# The request being served by this thread (set by serve()'s handler): its
# objects are the server's, not the program's, and a HeapDiff started and
# ended over HTTP leaves them out.
_request = threading.local()
# Every request being served right now (serve()'s workers and the WSGI/ASGI
# mounts; a key per request -> its roots): concurrent requests' objects are
# the server's too.  _active_shared holds, per mounted request, the objects
# every request shares (the user's app, memwatch's router and state): the
# walk of a request's objects stops at them.
_active_requests: dict[int, tuple] = {}
_active_shared: dict[int, tuple] = {}


def _request_footprint(limit: int = 20000, extra: tuple = ()) -> dict[str, list[int]]:
    """{type name: [objects, bytes]} of what the requests being served hold:
    the handler and its socket, files and headers, the request's thread (a
    mount's: the WSGI environ and start_response, the ASGI scope, receive,
    send and task); never the server, the state, the mounted apps, modules,
    classes or functions (shared by all)."""
    import gc
    import sys
    import types as _types
    from memwatch.typestats import type_name
    roots = [o for group in list(_active_requests.values()) for o in group]
    if not roots:
        return {}
    roots += list(getattr(_request, "objects", ()))     # serve()'s idle connections
    roots += [o for o in extra if o is not None]
    stop = {id(o) for o in getattr(_request, "shared", None) or ()}
    stop.update(id(o) for group in list(_active_shared.values()) for o in group)
    shared_kinds = (type, _types.ModuleType, _types.FunctionType, _types.CodeType,
                    _types.BuiltinFunctionType, MemwatchState, Router)
    out: dict[str, list[int]] = {}
    seen: set[int] = set()
    stack = list(roots)
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in stop:
            continue
        if type(obj) is int and -5 <= obj <= 256:
            continue      # CPython's cached small ints are never allocated
        seen.add(id(obj))
        if isinstance(obj, shared_kinds) and not (
                isinstance(obj, _types.BuiltinFunctionType) and not isinstance(
                    getattr(obj, "__self__", None), (_types.ModuleType, type(None)))):
            continue      # shared; a method bound to a request object is the request's
        slot = out.setdefault(type_name(type(obj)), [0, 0])
        slot[0] += 1
        slot[1] += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    del stack, roots
    return out


def _merge_footprints(a: dict, b: dict) -> dict:
    """Per type, the larger of two footprints (read before and after a walk)."""
    out = {k: list(v) for k, v in a.items()}
    for k, (n, size) in b.items():
        cur = out.setdefault(k, [0, 0])
        if n > cur[0]:
            cur[0] = n
        if size > cur[1]:
            cur[1] = size
    return out


def _without_requests(diff: dict, before: dict, after: dict) -> dict:
    """The diff minus the requests' own objects: the starting request's (freed
    since) and the ending one's (allocated since)."""
    if not (before or after):
        return diff
    from memwatch.formatting import format_size
    change = dict(diff["change"])
    rows = []
    removed = 0
    for d in change["details"]:
        name = d["what"]
        plus = d["+"] - min(d["+"], after.get(name, (0, 0))[0])
        minus = d["-"] - min(d["-"], before.get(name, (0, 0))[0])
        size = d["size_bytes"] - after.get(name, (0, 0))[1] + before.get(name, (0, 0))[1]
        if plus == d["+"] and minus == d["-"]:
            rows.append(d)
            continue
        removed += d["size_bytes"] - size
        if plus == 0 and minus == 0:
            removed += size
            continue      # only the requests' objects: not a row of the program's
        rows.append({**d, "+": plus, "-": minus, "size_bytes": size, "size": format_size(size)})
    change["details"] = rows
    change["size_bytes"] -= removed
    change["size"] = format_size(change["size_bytes"])
    change["allocated_nodes"] = sum(d["+"] for d in rows)
    change["freed_nodes"] = sum(d["-"] for d in rows)
    return {**diff, "change": change}


def _top_details(prof: dict, top: int | None) -> dict:
    """A copy of a profile whose diff lists at most ``top`` rows (all when None)."""
    out = dict(prof)
    diff = out.get("lastDiff")
    if top is not None and isinstance(diff, dict) and isinstance(diff.get("change"), dict):
        details = diff["change"].get("details") or []
        change = {**diff["change"], "details": details[:top], "details_total": len(details)}
        out["lastDiff"] = {**diff, "change": change}
    return out


def _rss_now() -> int | None:
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except Exception:  # noqa: BLE001 - psutil missing or the platform refuses
        return None


_IDENT = re.compile(r"^'[A-Za-z_][A-Za-z0-9_]{0,63}'$")


def _safe_path(path: Any) -> dict:
    """A retainer path for an HTTP answer: type names, attribute names, indices;
    a dict key is shown only when it reads like an identifier (it could be data)."""
    from memwatch.retainer_paths import _suffix
    labels = []
    for k, st in enumerate(path.steps):
        head = st.type_name if k else (path.root if st.kind != "external"
                                          else f"{st.type_name} (external)")
        name = st.name
        if st.kind == "key" and not (isinstance(name, str) and _IDENT.match(name)):
            name = "<key>"
        labels.append(head if k + 1 == len(path.steps) or st.kind in ("module", "thread", "external")
                      else head + _suffix(st.kind, name))
    # The holder: the path up to the object that refers to the target, with
    # list/tuple positions folded, so instances kept in one container count
    # as one holder ("most common holder of this type").
    holder = re.sub(r"\[\d+\]", "[*]", " -> ".join(labels[:-1])) if len(labels) >= 2 else None
    return {"path": " -> ".join(labels), "length": len(path.steps), "root": path.root,
            "holder": holder}


def resolve_type_name(name: str) -> tuple[type, str]:
    """:func:`memwatch.retainer_paths.resolve_type` with HTTP errors."""
    from memwatch.retainer_paths import resolve_type
    if not (name or "").strip():
        raise HTTPError(400, "no type name given", "add ?type=NAME, e.g. ?type=app.Session or ?type=dict")
    try:
        return resolve_type(name)
    except LookupError as e:
        raise HTTPError(404, str(e), "use a name from a census or a diff (POST /ah/census), "
                        "e.g. app.Session or dict") from None
    except ValueError as e:
        raise HTTPError(400, str(e), "give the full name as memwatch prints it (module.Class)") from None


class RawAnswer:
    """A non-JSON answer (the live page, a snapshot download): bytes, type, extra headers."""

    __slots__ = ("body", "content_type", "headers")

    def __init__(self, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()):
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)


_default_state: MemwatchState | None = None
_default_lock = threading.Lock()


def default_state() -> MemwatchState:
    """The process's shared state, subscribed to the tracker on first use."""
    global _default_state
    with _default_lock:
        if _default_state is None:
            _default_state = MemwatchState()
        state = _default_state
    return state.attach()


# ---------------------------------------------------------------------------
# Routing, independent of the server.

_PROFILE = r"(?P<pid>[A-Za-z0-9_.-]{1,64})"
# (pattern, {method: (handler name, heavy)})
_ROUTES: list[tuple[re.Pattern, dict[str, tuple[str, bool]]]] = [
    (re.compile(r"^/ah/?$"), {"GET": ("index", False)}),
    (re.compile(r"^/ah/memoryProfile/status/?$"), {"GET": ("status", False)}),
    (re.compile(r"^/ah/memory/?$"), {"GET": ("list", False)}),
    (re.compile(r"^/ah/memoryProfile/?$"), {"POST": ("start", True)}),
    (re.compile(rf"^/ah/memoryProfile/{_PROFILE}/end/?$"), {"POST": ("end", True)}),
    (re.compile(rf"^/ah/memoryProfile/{_PROFILE}/?$"), {"GET": ("get", False), "DELETE": ("delete", False)}),
    (re.compile(r"^/ah/census/?$"), {"POST": ("census", True)}),
    (re.compile(r"^/ah/gc/?$"), {"POST": ("gc", True)}),
    (re.compile(r"^/ah/snapshot/?$"), {"POST": ("snapshot", True)}),
    (re.compile(r"^/ah/snapshot/(?P<name>[A-Za-z0-9_.-]{1,128}\.heapsnapshot)$"),
     {"GET": ("download", True)}),
    (re.compile(r"^/ah/history/?$"), {"GET": ("history", False)}),
    (re.compile(r"^/ah/retainers/?$"), {"POST": ("retainers", True)}),
    (re.compile(r"^/ah/ui/?$"), {"GET": ("ui", False)}),
    # sampling (issue 11)
    (re.compile(r"^/ah/profile/?$"), {"GET": ("profile", True)}),
    (re.compile(r"^/ah/profile\.pprof$"), {"GET": ("profile_pprof", True)}),
    (re.compile(r"^/ah/sampling/?$"), {"GET": ("sampling", False)}),
    (re.compile(r"^/ah/sampling/start/?$"), {"POST": ("sampling_start", False)}),
    (re.compile(r"^/ah/sampling/stop/?$"), {"POST": ("sampling_stop", False)}),
]

# Served without the token: the page is static (no data in it); its script
# reads the token from the URL fragment and sends it on every API call.
_PUBLIC_PATH = re.compile(r"^/ah/ui/?$")

# JSON body fields each POST route takes (a body is optional; the query string
# says the same).  Anything else is a 400, never silently ignored.
_BODY_FIELDS = {"start": (), "end": ("top",), "census": ("top",), "gc": (), "snapshot": (),
                "retainers": ("type", "limit"), "sampling_start": ("interval", "nframe", "seconds"),
                "sampling_stop": ()}


def _query_flag(query: dict, name: str) -> bool:
    vals = query.get(name)
    return bool(vals) and vals[-1].lower() in ("1", "true", "yes", "on")


def _query_int(query: dict, name: str, default: int | None, lo: int, hi: int) -> int | None:
    vals = query.get(name)
    if not vals:
        return default
    try:
        v = int(vals[-1])
    except ValueError:
        raise HTTPError(400, f"?{name}={vals[-1]!r} is not a whole number",
                        f"give ?{name}= a number from {lo} to {hi}") from None
    if not lo <= v <= hi:
        raise HTTPError(400, f"?{name}={v} is out of range", f"give ?{name}= a number from {lo} to {hi}")
    return v


class Router:
    """Maps (method, path, query, headers) to (status, headers, body bytes)."""

    def __init__(self, state: MemwatchState | None = None, token: str | None = None) -> None:
        self._state = state
        self.token = token

    @property
    def state(self) -> MemwatchState:
        if self._state is None:
            self._state = default_state()
        return self._state

    def match(self, method: str, path: str) -> tuple[str, bool, dict]:
        """(handler, heavy, path params); raises HTTPError 404/405."""
        for pattern, methods in _ROUTES:
            m = pattern.match(path)
            if m is None:
                continue
            if method == "HEAD" and "GET" in methods:
                method = "GET"
            if method not in methods:
                allow = ", ".join(sorted(methods))
                raise HTTPError(405, f"{method} is not allowed on {path}; this route takes {allow}",
                                f"use {allow} {path} (see GET /ah for every route)",
                                [("Allow", allow)])
            name, heavy = methods[method]
            return name, heavy, m.groupdict()
        raise HTTPError(404, f"no route {method} {path}",
                        "the routes are listed by GET /ah; profiles are at /ah/memoryProfile/:id")

    def check_auth(self, authorization: str | None) -> None:
        if self.token is None:
            return
        expected = f"Bearer {self.token}".encode()
        given = (authorization or "").strip().encode()
        if not hmac.compare_digest(given, expected):
            problem = "missing bearer token" if not authorization else "wrong bearer token"
            raise HTTPError(401, f"{problem}: this memwatch API requires a token",
                            "send the header 'Authorization: Bearer <token>' "
                            "(curl -H 'Authorization: Bearer ...')",
                            [("WWW-Authenticate", 'Bearer realm="memwatch"')])

    def prepare(self, method: str, path: str, authorization: str | None) -> tuple[str, bool, dict]:
        # The token first, even for unknown routes (nothing leaks about them),
        # except the static page, which holds no data and must load to send it.
        if not (method.upper() in ("GET", "HEAD") and _PUBLIC_PATH.match(path)):
            self.check_auth(authorization)
        return self.match(method.upper(), path)

    def call(self, name: str, params: dict, query_string: str, body: bytes = b"") -> tuple[int, Any]:
        query = parse_qs(query_string or "", keep_blank_values=True)
        for key, value in _parse_body(name, body).items():
            query.setdefault(key, [str(value)])
        st = self.state
        if name == "ui":
            from memwatch.livepage import page_answer
            return 200, page_answer()
        if name == "history":
            return 200, st.history_view()
        if name == "download":
            return 200, st.snapshot_file(params["name"])
        if name == "retainers":
            vals = query.get("type") or [""]
            return 200, st.retainers_of(vals[-1], _query_int(query, "limit", 5, 1, 100))
        if name == "index":
            return 200, {"routes": ROUTES_HELP, "token_required": self.token is not None}
        if name == "status":
            return 200, st.status()
        if name == "list":
            if _query_flag(query, "details"):
                return 200, {"memoryProfiles": st.profiles()}
            return 200, {"memoryProfiles": st.profile_ids()}
        if name == "get":
            return 200, st.get_profile(params["pid"], _query_int(query, "top", None, 1, 100000))
        if name == "delete":
            return 200, st.delete_profile(params["pid"])
        if name == "start":
            return 201, st.start_diff()
        if name == "end":
            return 200, st.end_diff(params["pid"], _query_int(query, "top", None, 1, 100000))
        if name == "census":
            top = _query_int(query, "top", None, 1, 1000)
            return 201, st.take_census(top)
        if name == "gc":
            return 200, st.force_gc()
        if name == "snapshot":
            return 201, st.write_snapshot()
        if name in ("profile", "profile_pprof", "sampling", "sampling_start", "sampling_stop"):
            return _sampling_route(name, query)
        raise HTTPError(500, f"route handler {name!r} missing", "report this as a memwatch bug")

    @staticmethod
    def error_body(err: HTTPError) -> tuple[int, list[tuple[str, str]], bytes]:
        body = to_json({"error": err.error, "fix": err.fix, "status": err.status})
        return err.status, [("Content-Type", "application/json"), *err.headers], body

    @staticmethod
    def encode(status: int, obj: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for a handler's result; headers start with Content-Type."""
        if isinstance(obj, RawAnswer):
            return status, [("Content-Type", obj.content_type), *obj.headers], obj.body
        return status, [("Content-Type", "application/json")], to_json(obj)

    def respond(self, method: str, path: str, query_string: str,
                authorization: str | None, body: bytes = b"") -> tuple[int, list[tuple[str, str]], bytes]:
        """The whole request in the calling thread."""
        try:
            name, _heavy, params = self.prepare(method, path, authorization)
            return self.encode(*self.call(name, params, query_string, body))
        except HTTPError as err:
            return self.error_body(err)
        except Exception as exc:  # noqa: BLE001 - answer JSON, never a traceback
            return self.error_body(HTTPError(500, _internal(exc),
                                             "see the service's log; report it if it persists"))


def _parse_body(name: str, body: bytes) -> dict:
    """A POST's optional JSON object body; malformed JSON or an unknown field is a 400."""
    if not body or not body.strip():
        return {}
    fields = _BODY_FIELDS.get(name)
    if fields is None:
        raise HTTPError(400, "this route takes no request body", "send the request without a body")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"the request body is not valid JSON ({type(e).__name__} at "
                        f"{getattr(e, 'pos', '?')})",
                        "send a JSON object (Content-Type: application/json) or no body") from None
    if not isinstance(obj, dict):
        raise HTTPError(400, f"the request body is a JSON {type(obj).__name__}, not an object",
                        "send a JSON object such as {\"top\": 10}, or no body")
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise HTTPError(400, f"unknown field(s) in the request body: {', '.join(map(str, unknown))}",
                        f"this route takes these fields: {known}")
    return obj


def _internal(exc: BaseException) -> str:
    # The traceback goes to the service's log; the answer never echoes the
    # message: it could quote object contents.
    logging.getLogger("memwatch").error("memwatch HTTP API: internal error", exc_info=exc)
    return f"{type(exc).__name__} in memwatch (message withheld: it could quote object contents)"


_MAX_BODY = 65536
# On every answer: the live page's token must not leave in a Referer header,
# and nothing may frame or sniff the answers.
_SECURITY_HEADERS = [("Referrer-Policy", "no-referrer"), ("X-Content-Type-Options", "nosniff")]


def _is_api_path(path: str) -> bool:
    return path == "/ah" or path.startswith("/ah/")


# ---------------------------------------------------------------------------
# WSGI

def _unregister(key: int) -> None:
    _active_requests.pop(key, None)
    _active_shared.pop(key, None)


class _WSGIAnswer(list):
    """The body of an API answer; its close() ends the request's registration."""

    __slots__ = ("key",)

    def close(self) -> None:
        # Once: the key (the environ's id) may serve a later request.  While
        # registered, the entry holds the environ, so the id is still ours.
        key, self.key = self.key, None
        if key is not None:
            _unregister(key)

    def __del__(self) -> None:
        # A server that never calls close(): the registration (which holds
        # the environ) must not outlive the answer.
        self.close()


def make_wsgi_app(app: Callable | None = None, *, token: str | None = None,
                  state: MemwatchState | None = None) -> Callable:
    """A WSGI app serving the routes above under ``/ah``.

    Given ``app``, a middleware: requests outside ``/ah`` go to ``app``.
    Without it, anything else is a JSON 404.  The state defaults to the
    process's shared one (subscribed to the tracker's events)."""
    router = Router(state, token)

    def memwatch_wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if app is not None and not _is_api_path(path):
            return app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        request_body = environ["wsgi.input"].read(length) if 0 < length <= _MAX_BODY else b""
        # This request's objects (the environ, the server's handler behind
        # start_response, a per-request thread) are the server's: a HeapDiff
        # over HTTP leaves them out, as serve() does for its own.
        key = id(environ)
        _active_shared[key] = (app, memwatch_wsgi, router, router.state,
                               environ.get("wsgi.errors"), sys.stderr, sys.stdout)
        _active_requests[key] = (threading.current_thread(), environ, start_response)
        try:
            status, headers, body = router.respond(environ.get("REQUEST_METHOD", "GET"), path,
                                                   environ.get("QUERY_STRING", ""),
                                                   environ.get("HTTP_AUTHORIZATION"), request_body)
            headers = [headers[0], ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), *_SECURITY_HEADERS, *headers[1:]]
            start_response(f"{status} {_REASONS.get(status, '')}", headers)
            # Registered until the server has sent the answer and closes it
            # (PEP 3333), so the next request's HeapDiff does not meet this
            # one's objects still in use as the program's.
            answer = _WSGIAnswer([b"" if environ.get("REQUEST_METHOD") == "HEAD" else body])
            answer.key = key
        except BaseException:
            _unregister(key)
            raise
        return answer

    memwatch_wsgi.router = router  # type: ignore[attr-defined]
    return memwatch_wsgi


# ---------------------------------------------------------------------------
# ASGI (HTTP only; lifespan is passed on or accepted)

async def _in_own_thread(key: int, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` in a thread of its own, registered as the request's and
    joined before the answer: an executor's work item and future would be
    the program's objects to a HeapDiff (started in one request, ended in
    another), and a finishing thread would still hold them."""
    import asyncio
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def run() -> None:
        try:
            result: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the request's task
            result = (False, exc)
        loop.call_soon_threadsafe(_settle, done, result)

    worker = threading.Thread(target=run, name="memwatch-asgi-heavy", daemon=True)
    _active_requests[key] = (*_active_requests.get(key, ()), worker)
    worker.start()
    ok, value = await done
    # It has handed over its result: only its exit is left.  (Cancelled, the
    # request leaves it to finish alone: joining would block the event loop.)
    worker.join()
    if not ok:
        raise value
    return value


def _settle(fut: Any, result: tuple[bool, Any]) -> None:
    if not fut.cancelled():
        fut.set_result(result)


def make_asgi_app(app: Callable | None = None, *, token: str | None = None,
                  state: MemwatchState | None = None) -> Callable:
    """An ASGI app serving the routes above under ``/ah``; see :func:`make_wsgi_app`.

    Mounted under a prefix (``root_path``), it strips the prefix itself.
    Heavy routes run in a worker thread so the event loop keeps answering."""
    import asyncio

    router = Router(state, token)

    async def memwatch_asgi(scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope.get("type")
        if kind != "http":
            if app is not None:
                return await app(scope, receive, send)
            if kind == "lifespan":
                while True:
                    msg = await receive()
                    if msg["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif msg["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return None
        path = scope.get("path") or "/"
        root = scope.get("root_path") or ""
        if root and path.startswith(root + "/"):
            path = path[len(root):]
        if app is not None and not _is_api_path(path):
            return await app(scope, receive, send)
        method = scope.get("method", "GET")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        # Read the request body (a small JSON object at most; more is dropped).
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size <= _MAX_BODY:
                chunks.append(chunk)
            more = msg.get("more_body", False)
        request_body = b"".join(chunks) if size <= _MAX_BODY else b""
        # As for WSGI: the scope, the server's receive/send (its protocol and
        # transport) and this task are the server's; the event loop and the
        # apps are shared by every request.
        key = id(scope)
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        _active_shared[key] = (app, memwatch_asgi, router, router.state, asyncio.get_running_loop(),
                               scope.get("app"), scope.get("router"), scope.get("state"))
        _active_requests[key] = (scope, receive, send, task, chunks)
        del task
        try:
            name, heavy, params = router.prepare(method, path, headers.get("authorization"))
            if heavy:
                status, obj = await _in_own_thread(key, router.call, name, params, query,
                                                   request_body)
            else:
                status, obj = router.call(name, params, query, request_body)
            status, extra, body = router.encode(status, obj)
        except HTTPError as err:
            status, extra, body = router.error_body(err)
        except Exception as exc:  # noqa: BLE001
            status, extra, body = router.error_body(
                HTTPError(500, _internal(exc),
                          "see the service's log; report it if it persists"))
        finally:
            _active_requests.pop(key, None)
            _active_shared.pop(key, None)
        raw_headers = [(b"content-length", str(len(body)).encode()),
                       (b"cache-control", b"no-store")]
        raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in [extra[0], *_SECURITY_HEADERS, *extra[1:]]]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        return None

    memwatch_asgi.router = router  # type: ignore[attr-defined]
    return memwatch_asgi


# ---------------------------------------------------------------------------
# Standalone server on the standard library

class MemwatchServer:
    """A running background server: ``.url``, ``.port``, ``.close()``; a context manager."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ui_url(self) -> str:
        """The live page (add ``#token=...`` when the server has a token)."""
        return self.url + "/ah/ui"

    def close(self) -> None:
        """Stop serving and free the port (waits for the serving thread)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MemwatchServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MemwatchServer {self.url}>"


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class _Conn:
    __slots__ = ("sock", "buf", "started", "last", "headers")

    def __init__(self, sock: Any, now: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.started = now      # first byte of the request being read (0: none yet)
        self.last = now         # last activity
        self.headers = None     # the request being answered (a root of _request_footprint)


class _PooledServer:
    """The standalone server: one selector thread, a fixed pool of workers.

    A connection costs no thread while its request head is arriving or while
    it idles between keep-alive requests: the selector thread reads heads
    (non-blocking) and hands complete ones to the workers.  So slow or idle
    clients cannot take the threads a status request needs; a head that takes
    longer than ``head_timeout`` gets a 408, an idle connection is closed after
    ``idle_timeout``, past ``max_connections`` the longest-idle connection is
    dropped to admit a new one, and the listen backlog is ``backlog``."""

    MAX_HEAD = 65536
    MAX_BODY = 65536

    def __init__(self, address: tuple, family: int, respond: Callable, *, workers: int,
                 idle_timeout: float, head_timeout: float, max_connections: int,
                 backlog: int) -> None:
        import collections
        import queue
        import socket
        self._respond = respond
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(address)
            self.sock.listen(backlog)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.server_address = self.sock.getsockname()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[Any, _Conn] = {}         # in the selector (no worker)
        self._busy = 0                              # with a worker
        self._busy_lock = threading.Lock()
        self._returned: Any = collections.deque()   # handed back by workers
        self._ready: Any = queue.Queue(maxsize=workers * 4)
        self._stop = threading.Event()
        self._loop_done = threading.Event()
        self._next_reap = 0.0
        self._workers = [threading.Thread(target=self._work, daemon=True,
                                          name=f"memwatch-http-worker-{i}")
                         for i in range(workers)]
        for t in self._workers:
            t.start()

    # -- the selector thread ------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        try:
            while not self._stop.is_set():
                for key, _mask in self._sel.select(poll_interval):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                    else:
                        self._read(key.data)
                while self._returned:
                    conn = self._returned.popleft()
                    with self._busy_lock:
                        self._busy -= 1
                    conn.last = time.monotonic()
                    conn.started = 0.0
                    self._conns[conn.sock] = conn
                    self._sel.register(conn.sock, selectors.EVENT_READ, conn)
                self._reap()
        finally:
            self._loop_done.set()

    def _accept(self) -> None:
        import errno
        for _ in range(64):
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: make room rather than spin on a
                    # listening socket that stays readable.
                    if not self._evict():
                        time.sleep(0.05)
                return
            if len(self._conns) + self._busy >= self.max_connections:
                self._evict()
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic())
            conn.started = 0.0
            self._conns[sock] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _evict(self) -> bool:
        """Drop the connection idle (or stalled) for longest; False if none."""
        if not self._conns:
            return False
        oldest = min(self._conns.values(), key=lambda c: c.last)
        self._close(oldest)
        return True

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _answer_and_close(self, conn: _Conn, status: int, error: str, fix: str,
                          headers: Iterable[tuple[str, str]] = ()) -> None:
        """A short error answer from the selector thread: one non-blocking send."""
        try:
            conn.sock.send(self._encode(*Router.error_body(HTTPError(status, error, fix, headers)),
                                        close=True, head=False))
        except OSError:
            pass
        self._close(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        now = time.monotonic()
        if not conn.buf:
            conn.started = now
        conn.last = now
        conn.buf += data
        if b"\r\n\r\n" in conn.buf:
            self._sel.unregister(conn.sock)
            del self._conns[conn.sock]
            with self._busy_lock:
                self._busy += 1
            try:
                self._ready.put_nowait(conn)
            except Exception:  # queue.Full: every worker busy, and a queue behind them
                with self._busy_lock:
                    self._busy -= 1
                self._conns[conn.sock] = conn   # so _close() unregisters nothing twice
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
                self._answer_and_close(conn, 503, "too many requests at once",
                                       "retry in a moment", [("Retry-After", "1")])
        elif len(conn.buf) > self.MAX_HEAD:
            self._answer_and_close(conn, 400, "request head too large",
                                   f"send at most {self.MAX_HEAD} bytes of request line and headers")

    def _reap(self) -> None:
        now = time.monotonic()
        if now < self._next_reap:
            return
        self._next_reap = now + min(0.5, self.idle_timeout / 4, self.head_timeout / 4)
        for conn in list(self._conns.values()):
            if conn.buf and now - conn.started > self.head_timeout:
                self._answer_and_close(conn, 408, "request head not received in time",
                                       f"send the whole request within {self.head_timeout:g} s")
            elif not conn.buf and now - conn.last > self.idle_timeout:
                self._close(conn)

    # -- the workers --------------------------------------------------------

    @staticmethod
    def _encode(status: int, extra: list, body: bytes, *, close: bool, head: bool) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}", "Server: memwatch"]
        if not any(k.lower() == "content-type" for k, _ in extra):
            lines.append("Content-Type: application/json")
        lines += [f"Content-Length: {len(body)}", "Cache-Control: no-store"]
        lines += [f"{k}: {v}" for k, v in [*extra, *_SECURITY_HEADERS]]
        if close:
            lines.append("Connection: close")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return out if head else out + body

    def _work(self) -> None:
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            keep = False
            # While a worker has it, the connection (socket, buffer, the request's
            # headers) is the server's: a HeapDiff over HTTP leaves it out.
            ident = threading.get_ident()
            _active_requests[ident] = (threading.current_thread(), conn)
            try:
                conn.sock.settimeout(self.idle_timeout)
                keep = self._serve_requests(conn)
            except Exception:  # a broken connection: never a traceback on stderr
                keep = False
            finally:
                conn.headers = None
            if keep and not self._stop.is_set():
                try:
                    conn.sock.setblocking(False)
                    self._returned.append(conn)
                    self._wake_w.send(b"x")
                    # No reference left in this idle worker's frame: a closed
                    # connection must not outlive its request (HeapDiffs over HTTP).
                    conn = None
                    _active_requests.pop(ident, None)
                    continue
                except OSError:
                    pass
            try:
                conn.sock.close()
            except OSError:
                pass
            conn = None
            _active_requests.pop(ident, None)
            self._returned_closed()

    def _returned_closed(self) -> None:
        with self._busy_lock:
            self._busy -= 1

    def _serve_requests(self, conn: _Conn) -> bool:
        """Answer the complete request(s) in conn.buf; True to keep the connection."""
        import http.client
        import io
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                return True          # the next request's head: back to the selector
            head = bytes(conn.buf[:end])
            rest = conn.buf[end + 4:]
            line, _, header_block = head.partition(b"\r\n")
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._send(conn, 400, "malformed request line",
                           "send 'METHOD /path HTTP/1.1'", close=True)
                return False
            method, target, version = parts
            try:
                headers = http.client.parse_headers(io.BytesIO(header_block + b"\r\n\r\n"))
            except (http.client.HTTPException, ValueError):
                self._send(conn, 400, "malformed headers", "send at most 100 well-formed headers",
                           close=True)
                return False
            lengths = headers.get_all("Content-Length") or []
            if headers.get("Transfer-Encoding"):
                self._send(conn, 400, "chunked request bodies are not accepted",
                           "send a Content-Length (the API takes no body)", close=True)
                return False
            if any(not (v.strip().isascii() and v.strip().isdigit()) for v in lengths) \
                    or len({v.strip() for v in lengths}) > 1:
                self._send(conn, 400, f"bad Content-Length: {', '.join(lengths)[:40]!r}",
                           "send one Content-Length: a non-negative decimal integer", close=True)
                return False
            length = int(lengths[0]) if lengths else 0
            if length > self.MAX_BODY:
                self._send(conn, 400, f"request body too large ({length} bytes)",
                           f"send at most {self.MAX_BODY} bytes (the API takes no body)", close=True)
                return False
            deadline = time.monotonic() + self.head_timeout
            while len(rest) < length:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = conn.sock.recv(65536)
                if not chunk:
                    return False
                rest += chunk
            conn.buf = bytearray(rest[length:])
            connection = (headers.get("Connection") or "").lower()
            close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
            path, _, query = target.partition("?")
            conn.headers = headers
            # Idle keep-alive connections (in the selector) are the server's too.
            _request.objects = (*list(self._conns.values()), *list(self._returned))
            try:
                status, extra, body = self._respond(method, path, query,
                                                    headers.get("Authorization"),
                                                    bytes(rest[:length]))
            finally:
                _request.objects = ()
            conn.sock.sendall(self._encode(status, extra, body, close=close, head=method == "HEAD"))
            if close or self._stop.is_set():
                return False

    def _send(self, conn: _Conn, status: int, error: str, fix: str, *, close: bool) -> None:
        conn.sock.sendall(self._encode(*Router.error_body(HTTPError(status, error, fix)),
                                       close=close, head=False))

    # -- lifetime (the socketserver interface MemwatchServer uses) ----------

    def shutdown(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._loop_done.wait(5)

    def server_close(self) -> None:
        self._stop.set()
        for conn in list(self._conns.values()):
            self._close(conn)
        for _ in self._workers:
            try:
                self._ready.put_nowait(None)
            except Exception:
                pass
        for sock in (self.sock, self._wake_r, self._wake_w):
            try:
                sock.close()
            except OSError:
                pass
        try:
            self._sel.close()
        except OSError:
            pass


def serve(port: int = 0, host: str = "127.0.0.1", token: str | None = None, *,
          state: MemwatchState | None = None, max_threads: int = 8,
          idle_timeout: float = 15.0, head_timeout: float = 10.0,
          max_connections: int = 512, backlog: int = 512) -> MemwatchServer:
    """Serve the HTTP API from a daemon thread; returns a :class:`MemwatchServer`.

    ``port=0`` picks a free port (see ``.port``).  Binds to loopback unless
    ``host`` says otherwise; binding elsewhere without a ``token`` warns.
    ``max_threads`` workers answer requests (more waiting than four per
    worker get a 503).  Slow and idle clients take no thread: a request
    head must arrive within ``head_timeout`` seconds (else 408), an idle
    keep-alive connection is closed after ``idle_timeout``, at most
    ``max_connections`` are kept open (the longest idle is dropped for a new
    one), and ``backlog`` is the listen queue."""
    import socket

    for name, value in (("max_threads", max_threads), ("max_connections", max_connections),
                        ("backlog", backlog)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    for name, value in (("idle_timeout", idle_timeout), ("head_timeout", head_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
    if host not in _LOOPBACK and token is None:
        warnings.warn(f"memwatch.serve(host={host!r}) without a token: anyone who can reach "
                      "this port can read memory statistics and run heap walks; pass token=...",
                      RuntimeWarning, stacklevel=2)
    router = Router(state, token)
    router.state  # subscribe now, not on the first request

    def respond(method: str, path: str, query: str, authorization: str | None,
                body: bytes = b"") -> tuple[int, list[tuple[str, str]], bytes]:
        # The objects of this request are the server's (see _request_footprint).
        # (the worker registered its connection in _active_requests)
        _request.shared = (httpd, router, router.state)
        try:
            return router.respond(method, path, query, authorization, body)
        finally:
            _request.shared = None

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    httpd = _PooledServer((host, port), family, respond, workers=max_threads,
                          idle_timeout=float(idle_timeout), head_timeout=float(head_timeout),
                          max_connections=max_connections, backlog=backlog)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                              name=f"memwatch-http:{httpd.server_address[1]}", daemon=True)
    thread.start()
    server = MemwatchServer(httpd, thread)
    # The start-up line links the live page; never the token (logs are read widely).
    logging.getLogger("memwatch").info(
        "memwatch: HTTP API on %s/ah; live page: %s%s", server.url, server.ui_url,
        "#token=<your token>" if token is not None else "")
    return server
