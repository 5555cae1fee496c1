"""memwatch inside a service's process: a leak listener writing JSON lines.

Every app in this folder calls :func:`install` at import, in the process that
serves requests (a gunicorn worker, the uvicorn or waitress process, the job
worker).  It is configured by the environment the harness sets:

``MEMWATCH_SERVICE_JSONL``
    file to append the events to: one ``{"event": "ready"|"stats"|"leak", ...}``
    object a line.  Unset: memwatch is not installed (the app runs plain, to
    measure what the tracker costs).
``MEMWATCH_SERVICE_SCALE``
    the tracker's ``time_scale`` (default 1: memwatch's defaults, no
    ``configure()`` call at all).

Lines are written with one ``os.write`` on an ``O_APPEND`` descriptor: a whole
line or nothing, no buffered stream that a listener could re-enter, and the
harness can read the file while the server runs.
"""
from __future__ import annotations

import json
import os
import threading
import time

import memwatch

_fd: int | None = None
_t0 = time.time()


def _write(record: dict) -> None:
    if _fd is not None:
        os.write(_fd, (json.dumps(record, default=str) + "\n").encode())


def _on_leak(info: dict) -> None:
    _write({"event": "leak", "pid": os.getpid(), "wall": time.time(),
            "thread": threading.current_thread().name,
            "reason": info.get("reason"), "growth": info.get("growth"),
            "window": (info["end"] - info["start"]).total_seconds(),
            "samples": info.get("samples"),
            "top_types": [d.get("what") for d in info.get("top_types") or []]})


def _on_stats(stats: dict) -> None:
    _write({"event": "stats", "pid": os.getpid(), "wall": time.time(),
            "current_base": stats.get("current_base"), "rss": stats.get("rss")})


def _scaled_options(scale: float) -> dict:
    """Options for a short time scale, limited to the ones this tracker has.

    The forced-collection and census budgets are fractions of *real* time: at
    scale s the same budget per nominal second is budget / s (the scenario
    corpus's harness does the same).  Options a newer tracker dropped are left
    out rather than failing, so the harness runs unchanged across tracker
    versions."""
    known = set(memwatch.tracker_info().get("options") or ())
    # top_types 20, not 10: at 1/10 of real time a window holds five times fewer
    # of the leak's objects than at real time, while a one-off step in it is as
    # large (Django imports tens of code objects, functions and types at its
    # first requests), and that pushed django_signals.OrderWatcher (rank 6-7 at
    # real time) out of the first 10 in 2 of 4 runs on a loaded machine.
    wanted = {"time_scale": scale, "top_types": 20,
              "timer_budget": min(0.25, 0.005 / scale),
              "census_budget": min(0.25, 0.002 / scale)}
    return {k: v for k, v in wanted.items() if k in known or k == "time_scale"}


def install() -> None:
    global _fd
    path = os.environ.get("MEMWATCH_SERVICE_JSONL")
    if not path or _fd is not None:
        return
    scale = float(os.environ.get("MEMWATCH_SERVICE_SCALE", "1"))
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    options = memwatch.configure(**_scaled_options(scale)) if scale != 1 else None
    memwatch.on("leak", _on_leak)
    memwatch.on("stats", _on_stats)
    _write({"event": "ready", "pid": os.getpid(), "wall": time.time(),
            "options": options or memwatch.tracker_info().get("options")})
