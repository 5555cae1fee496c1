"""Shared harness of the tracker's scenario programs.

Every scenario is a small program that runs a workload under memwatch's
tracker and prints, as its last line, ``RESULT {json}``: the leak events it
got (with the *nominal* time since the leak started), the number of stats
events, and whether it was meant to leak.

Time is nominal: a scenario is written in real-life seconds ("leak 100 KB/s,
run ten minutes") and runs ``--scale`` times faster: every sleep, and every
duration of the tracker (``memwatch.configure(time_scale=...)``), is
multiplied by the scale, while the bytes stay the same.  So a scenario run at
``--scale 0.05`` replays ten minutes of a service in thirty seconds, with the
same growth in bytes, and the verdict sees the same picture.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import tracemalloc

import memwatch


class Run:
    def __init__(self, name: str, *, leaking: bool, duration: float,
                 description: str = "") -> None:
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--scale", type=float, default=1.0,
                            help="real seconds per nominal second (default 1: real time)")
        parser.add_argument("--duration", type=float, default=duration,
                            help="nominal seconds to run (default %(default)s)")
        parser.add_argument("--keep-going", action="store_true",
                            help="do not stop at the first leak event")
        parser.add_argument("--verbose", action="store_true", help="print every event")
        parser.add_argument("--measure", default="rss", help="the tracker's measure")
        parser.add_argument("--top-types", type=int, default=10,
                            help="top_types option of the tracker (0: no censuses)")
        parser.add_argument("--retainers", type=int, default=None,
                            help="retainers option of the tracker (default: the default)")
        self.args = parser.parse_args()
        self.name = name
        self.leaking = leaking
        self.scale = self.args.scale
        self.duration = self.args.duration
        self.leaks: list[dict] = []
        self.stats = 0
        self.max_base = 0
        self._lock = threading.Lock()
        self.leak_started: float | None = None
        self.done = threading.Event()
        # Budgets are fractions of real time: at scale s, the same budget per
        # nominal second is budget / s of real time.
        from memwatch.tracker import DEFAULTS
        budgets = {key: min(0.25, DEFAULTS[key] / self.scale)
                   for key in ("timer_budget", "census_budget", "confirm_budget")}
        memwatch.configure(time_scale=self.scale, measure=self.args.measure,
                           top_types=self.args.top_types, **budgets)
        if self.args.retainers is not None:
            memwatch.configure(retainers=self.args.retainers)
        memwatch.on("leak", self._on_leak)
        memwatch.on("stats", self._on_stats)
        self.t0 = time.monotonic()
        self.wall0 = time.time()

    # -- time --------------------------------------------------------------------
    def now(self) -> float:
        """Nominal seconds since the start."""
        return (time.monotonic() - self.t0) / self.scale

    def sleep(self, nominal: float) -> None:
        time.sleep(max(0.0, nominal * self.scale))

    def running(self) -> bool:
        if self.done.is_set():
            return False
        if self.now() >= self.duration:
            self.done.set()
            return False
        return True

    def mark_leak_start(self) -> None:
        if self.leak_started is None:
            self.leak_started = self.now()

    # -- events ------------------------------------------------------------------
    def _nominal(self, when) -> float | None:
        """Nominal seconds since the start at an aware datetime of a payload."""
        if when is None:
            return None
        return round((when.timestamp() - self.wall0) / self.scale, 1)

    def _on_leak(self, info: dict) -> None:
        t = self.now()
        since = t - (self.leak_started if self.leak_started is not None else 0.0)
        confirmation = info.get("confirmation") or {}
        # Where the time to detection goes: the window's end (when the
        # verdict's rule was first met), the confirming collection, delivery.
        record = {"t": round(t, 1), "after_leak_start": round(since, 1),
                  "window": [self._nominal(info["start"]), self._nominal(info["end"])],
                  "confirmed_at": self._nominal(confirmation.get("timestamp")),
                  "confirm_pause": confirmation.get("pause"),
                  "reason": info["reason"], "growth": info["growth"],
                  "samples": info["samples"],
                  "top_types": [d["what"] for d in info["top_types"][:10]],
                  "holders": [d.get("holder") for d in info["top_types"][:3]],
                  "kind": info.get("kind"),
                  "thread": threading.current_thread().name}
        with self._lock:
            self.leaks.append(record)
        if self.args.verbose:
            print("LEAK", json.dumps(record), flush=True)
        if self.leaking and not self.args.keep_going:
            self.done.set()

    def _on_stats(self, stats: dict) -> None:
        with self._lock:
            self.stats += 1
            self.max_base = max(self.max_base, stats["current_base"])
        if self.args.verbose:
            print("STATS", round(self.now(), 1), stats["current_base"], stats["estimated_base"],
                  stats["usage_trend"], flush=True)

    def finish(self, **extra: object) -> None:
        info = memwatch.tracker_info()
        result = {"scenario": self.name, "leaking": self.leaking, "scale": self.scale,
                  "ran": round(self.now(), 1), "leak_started": self.leak_started,
                  "leaks": self.leaks, "stats": self.stats,
                  "num_full_gc": info["num_full_gc"], "num_inc_gc": info["num_inc_gc"],
                  "clock_samples": info["clock_samples"], "suspects": info["suspects"],
                  "rejected": info["rejected"],
                  "max_base": self.max_base, **extra}
        print("RESULT " + json.dumps(result), flush=True)
        memwatch.stop()


def unit_size(make, n: int = 300) -> float:
    """Bytes one ``make()`` result keeps alive (measured with tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = [make() for _ in range(n)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return max(1.0, (after - before) / n)


class Pacer:
    """Produce ``rate`` bytes per nominal second of ``make()`` units into ``sink``."""

    def __init__(self, run: Run, rate: float, make, sink, unit: float | None = None) -> None:
        self.run = run
        self.rate = rate
        self.make = make
        self.sink = sink
        self.unit = unit if unit is not None else unit_size(make)
        self.made = 0
        self.start = run.now()

    def step(self) -> None:
        due = int((self.run.now() - self.start) * self.rate / self.unit)
        make, sink = self.make, self.sink
        while self.made < due:
            sink(make())
            self.made += 1


def heap_arg(default: int = 500_000) -> tuple[int, int]:
    """The scenario's ``--heap N`` (long-lived objects) and ``--blob B`` (bytes of
    untracked payload per item, default 0), removed from sys.argv for Run."""
    import sys
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--heap", type=int, default=default)
    pre.add_argument("--blob", type=int, default=0)
    ns, rest = pre.parse_known_args()
    sys.argv[1:] = rest
    return ns.heap, ns.blob


def long_lived_heap(n: int, blob: int = 0) -> list:
    """``n`` small dicts (about 3 objects and 350 bytes each; with ``blob``, one
    ``bytes`` of that size more) that live for the whole run: a big heap, on which
    CPython's full collections are rare and slow.  ``--heap 700000 --blob 1100``:
    2.8M objects (1.4M of them tracked by the GC), about 1 GB."""
    if blob:
        return [{"id": i, "tags": [i], "name": "item%d" % i, "blob": b"%07d" % i * (blob // 7)}
                for i in range(n)]
    return [{"id": i, "tags": [i], "name": "item%d" % i} for i in range(n)]


def heap_facts(heap: list) -> dict:
    """What the big-heap scenarios report about their heap (once, at the end)."""
    import gc
    from memwatch._measures import read_rss
    return {"heap": len(heap), "tracked_objects": len(gc.get_objects()), "rss_end": read_rss()}


def churn(n: int = 2000) -> None:
    """Short-lived garbage, some of it cyclic: keeps the young GC busy."""
    for i in range(n):
        a = {"i": i, "s": str(i)}
        b = [a, (i, i + 1)]
        a["b"] = b
    return None
