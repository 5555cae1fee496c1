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
                                             answers its path, never its contents

Safety: no object contents in any answer (type names and numbers only; a
snapshot stays on the server's disk, in a directory the server chose), an
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
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
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
    {"method": "GET", "path": "/ah/profile", "does": "sampled live heap by allocation site (?key=lineno|filename|traceback, ?top=N); needs memwatch.start_sampling()"},
    {"method": "GET", "path": "/ah/profile.pprof", "does": "the same as gzipped pprof (go tool pprof http://HOST/ah/profile.pprof)"},
]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_UTC)


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


# --- sampling (issue 11): a body that is not JSON (the pprof profile) ---
class RawBody(bytes):
    """A response body sent as is, with its own content type."""
    content_type = "application/octet-stream"


def _content_type(body: bytes) -> str:
    return body.content_type if isinstance(body, RawBody) else "application/json"


def _sampling_route(name: str, query: dict) -> tuple[int, Any]:
    from memwatch import heapprofile
    if not heapprofile.is_sampling():
        raise HTTPError(409, "allocation sampling is not running",
                        "start it in the service with memwatch.start_sampling() "
                        "(or run it with memwatch run --sample)")
    prof = heapprofile.take_heap_profile()
    if name == "profile_pprof":
        return 200, RawBody(prof.to_pprof())
    key = (query.get("key") or ["lineno"])[-1]
    if key not in ("lineno", "filename", "traceback"):
        raise HTTPError(400, f"?key={key!r} is not a key type",
                        "give ?key= lineno, filename or traceback")
    return 200, prof.to_dict(key, _query_int(query, "top", 50, 1, 10000))
# --- end sampling


def to_json(obj: Any) -> bytes:
    if isinstance(obj, RawBody):
        return obj
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
                 census_top: int = 25, heavy_timeout: float = 60.0) -> None:
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
        self._stats_counter = itertools.count(1)
        self._leak_counter = itertools.count(1)
        self._ids = itertools.count(1)
        # Profiles: touched only by request threads, never by event handlers,
        # so a GC inside the locked region cannot deadlock on it.
        self._lock = threading.Lock()
        self._profiles: "OrderedDict[str, dict]" = OrderedDict()
        self._open: dict[str, Any] = {}       # id -> HeapDiff
        self._heavy = threading.Lock()        # one census/HeapDiff/snapshot/gc at a time
        self._snapshots: list[str] = []
        self._attached = False
        self._attach_lock = threading.Lock()
        self.started = _now()

    # -- events ------------------------------------------------------------
    def on_stats(self, stats: dict) -> None:
        """The ``stats`` handler: keep the payload (no lock, no heavy work)."""
        self.last_gc = stats
        self.stats_count = next(self._stats_counter)
        self.last_event = "stats"

    def on_leak(self, info: dict) -> None:
        """The ``leak`` handler: keep the payload, stamped with its arrival."""
        self.last_leak = {"timestamp": _now(), **info}
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

    def _capture(self) -> dict:
        return {"lastEvent": self.last_event, "lastGC": self.last_gc,
                "lastLeak": self.last_leak, "lastDiff": self.last_diff}

    def profile_ids(self) -> list[str]:
        with self._lock:
            return list(self._profiles)

    def profiles(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self._profiles.values()]

    def get_profile(self, pid: str) -> dict:
        with self._lock:
            prof = self._profiles.get(pid)
            if prof is None:
                raise self._unknown(pid)
            return dict(prof)

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
                hd = HeapDiff()
            finally:
                lock.release()
        except BaseException:
            with self._lock:
                self._open.pop(pid, None)
            raise
        started = _now()
        prof = {"id": pid, "kind": "heapdiff", "state": "running", "timestamp": started,
                "started": started, "ended": None, **self._capture(), "lastDiff": None,
                "end": f"POST /ah/memoryProfile/{pid}/end"}
        with self._lock:
            self._open[pid] = hd
            self._store(prof)
        return dict(prof)

    def end_diff(self, pid: str) -> dict:
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
        try:
            lock = self._heavy_work()
            try:
                diff = hd.end()
            finally:
                lock.release()
        except BaseException:
            with self._lock:
                if pid in self._open:
                    self._open[pid] = hd
            raise
        ended = _now()
        diff = {"timestamp": ended, **diff}
        self.last_diff = diff
        self.last_event = "diff"
        with self._lock:
            self._open.pop(pid, None)
            prof = dict(self._profiles.get(pid) or prof)
            prof.update(self._capture())
            prof.update(state="done", ended=ended, timestamp=ended)
            prof.pop("end", None)
            if pid in self._profiles:
                self._profiles[pid] = prof
        del hd
        return dict(prof)

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
            prof = {"id": pid, "kind": "census", "state": "done", "timestamp": ts,
                    "started": ts, "ended": ts, **self._capture(), "census": body}
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
        return {"path": path, "size_bytes": size, "size": format_size(size), "nodes": nodes,
                "timestamp": _now(),
                "open": "Chrome DevTools > Memory > Load profile; at most "
                        f"{self.keep_snapshots} snapshots are kept, older ones are deleted"}


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
    # sampling (issue 11)
    (re.compile(r"^/ah/profile/?$"), {"GET": ("profile", True)}),
    (re.compile(r"^/ah/profile\.pprof$"), {"GET": ("profile_pprof", True)}),
]


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
        self.check_auth(authorization)
        return self.match(method.upper(), path)

    def call(self, name: str, params: dict, query_string: str) -> tuple[int, Any]:
        query = parse_qs(query_string or "", keep_blank_values=True)
        st = self.state
        if name == "index":
            return 200, {"routes": ROUTES_HELP, "token_required": self.token is not None}
        if name == "status":
            return 200, st.status()
        if name == "list":
            if _query_flag(query, "details"):
                return 200, {"memoryProfiles": st.profiles()}
            return 200, {"memoryProfiles": st.profile_ids()}
        if name == "get":
            return 200, st.get_profile(params["pid"])
        if name == "delete":
            return 200, st.delete_profile(params["pid"])
        if name == "start":
            return 201, st.start_diff()
        if name == "end":
            return 200, st.end_diff(params["pid"])
        if name == "census":
            top = _query_int(query, "top", None, 1, 1000)
            return 201, st.take_census(top)
        if name == "gc":
            return 200, st.force_gc()
        if name == "snapshot":
            return 201, st.write_snapshot()
        if name in ("profile", "profile_pprof"):
            return _sampling_route(name, query)
        raise HTTPError(500, f"route handler {name!r} missing", "report this as a memwatch bug")

    @staticmethod
    def error_body(err: HTTPError) -> tuple[int, list[tuple[str, str]], bytes]:
        body = to_json({"error": err.error, "fix": err.fix, "status": err.status})
        return err.status, err.headers, body

    def respond(self, method: str, path: str, query_string: str,
                authorization: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
        """The whole request in the calling thread."""
        try:
            name, _heavy, params = self.prepare(method, path, authorization)
            status, obj = self.call(name, params, query_string)
            return status, [], to_json(obj)
        except HTTPError as err:
            return self.error_body(err)
        except Exception as exc:  # noqa: BLE001 - answer JSON, never a traceback
            return self.error_body(HTTPError(500, _internal(exc),
                                             "see the service's log; report it if it persists"))


def _internal(exc: BaseException) -> str:
    # The traceback goes to the service's log; the answer never echoes the
    # message: it could quote object contents.
    logging.getLogger("memwatch").error("memwatch HTTP API: internal error", exc_info=exc)
    return f"{type(exc).__name__} in memwatch (message withheld: it could quote object contents)"


def _is_api_path(path: str) -> bool:
    return path == "/ah" or path.startswith("/ah/")


# ---------------------------------------------------------------------------
# WSGI

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
        status, headers, body = router.respond(environ.get("REQUEST_METHOD", "GET"), path,
                                               environ.get("QUERY_STRING", ""),
                                               environ.get("HTTP_AUTHORIZATION"))
        headers = [("Content-Type", _content_type(body)), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store"), *headers]
        start_response(f"{status} {_REASONS.get(status, '')}", headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [body]

    memwatch_wsgi.router = router  # type: ignore[attr-defined]
    return memwatch_wsgi


# ---------------------------------------------------------------------------
# ASGI (HTTP only; lifespan is passed on or accepted)

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
        # Drain the request body (we take none).
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            more = msg.get("more_body", False)
        try:
            name, heavy, params = router.prepare(method, path, headers.get("authorization"))
            if heavy:
                loop = asyncio.get_running_loop()
                status, obj = await loop.run_in_executor(None, router.call, name, params, query)
            else:
                status, obj = router.call(name, params, query)
            status, extra, body = status, [], to_json(obj)
        except HTTPError as err:
            status, extra, body = router.error_body(err)
        except Exception as exc:  # noqa: BLE001
            status, extra, body = router.error_body(
                HTTPError(500, _internal(exc),
                          "see the service's log; report it if it persists"))
        raw_headers = [(b"content-type", _content_type(body).encode()),
                       (b"content-length", str(len(body)).encode()),
                       (b"cache-control", b"no-store")]
        raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra]
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


def serve(port: int = 0, host: str = "127.0.0.1", token: str | None = None, *,
          state: MemwatchState | None = None, max_threads: int = 8) -> MemwatchServer:
    """Serve the HTTP API from a daemon thread; returns a :class:`MemwatchServer`.

    ``port=0`` picks a free port (see ``.port``).  Binds to loopback unless
    ``host`` says otherwise; binding elsewhere without a ``token`` warns.
    At most ``max_threads`` requests are handled at once; more get a 503."""
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if host not in _LOOPBACK and token is None:
        warnings.warn(f"memwatch.serve(host={host!r}) without a token: anyone who can reach "
                      "this port can read memory statistics and run heap walks; pass token=...",
                      RuntimeWarning, stacklevel=2)
    router = Router(state, token)
    router.state  # subscribe now, not on the first request
    slots = threading.BoundedSemaphore(max_threads)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "memwatch"
        sys_version = ""

        def _handle(self) -> None:
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            if 0 < length <= 65536:
                self.rfile.read(length)
            elif length > 65536:
                self.close_connection = True
            if not slots.acquire(blocking=False):
                status, extra, body = Router.error_body(HTTPError(
                    503, f"too many requests at once (more than {max_threads})",
                    "retry in a moment", [("Retry-After", "1")]))
            else:
                try:
                    status, extra, body = router.respond(self.command, path, query,
                                                         self.headers.get("Authorization"))
                finally:
                    slots.release()
            self.send_response(status, _REASONS.get(status))
            self.send_header("Content-Type", _content_type(body))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = do_OPTIONS = _handle

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    if ":" in host:
        Server.address_family = socket.AF_INET6
    httpd = Server((host, port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                              name=f"memwatch-http:{httpd.server_address[1]}", daemon=True)
    thread.start()
    return MemwatchServer(httpd, thread)
