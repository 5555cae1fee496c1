"""The GC-driven tracker: ``stats`` and ``leak`` events, and ``memwatch.gc()``.

node-memwatch's idea, on CPython: after every full collection (a collection
of the oldest generation, however it was triggered) the heap holds only live
objects, so the memory measured right then is a stable *base*.  The tracker
keeps a smoothed estimate of that base and its trend (the ``stats`` event),
and judges whether the base keeps growing (the ``leak`` event)::

    import memwatch

    @memwatch.on("leak")
    def report(info):
        log.warning("memory leak? %s", info["reason"])   # 'heap growth over ...'

    @memwatch.on("stats")
    def stats(s):
        metrics.gauge("heap_base", s["current_base"])

How it hooks in: one function in ``gc.callbacks``, installed with the first
listener (or :func:`start`) and removed by :func:`stop`; importing memwatch
installs nothing.  That callback runs inside the collector, so it only
records the sample (a few counters, the clock, RSS) and hands the rest to
``memwatch._deferred``, which runs it right after the collection, outside it:
in the main thread via ``Py_AddPendingCall`` when the main thread collected,
otherwise in memwatch's worker thread.  Listeners therefore may allocate,
call :func:`gc` or take a ``memwatch.HeapDiff()`` (whose collections are
"quiet": they produce no ``stats`` event and are not counted).  Listeners run
one at a time, in the order the samples were taken; in an asyncio program
they run either in the loop's thread (between two steps of whatever was
running) or in the worker thread, so hand work to the loop with
``loop.call_soon_threadsafe``.

The ``stats`` payload (node-memwatch's keys first, then memwatch's)::

    num_full_gc       collections of the oldest generation (generation 2) since the
                      tracker started, including memwatch.gc() and timer samples,
                      excluding memwatch's own quiet collections (HeapDiff, census)
    num_inc_gc        collections of the younger generations (0 and 1) since the
                      tracker started: CPython's cheap, frequent collections, the
                      counterpart of V8's scavenges and incremental marking steps
    heap_compactions  CPython never moves objects, so it never compacts; what it
                      does instead is give free memory back to the OS (empty arenas,
                      trimmed malloc heaps).  This counts the full collections after
                      which the process RSS was lower than just before them.
    estimated_base    recent smoothed base: exponential average of current_base over
                      about the last 10 samples (warming up from the first sample:
                      never simply equal to current_base, unlike node's first nine)
    current_base      the measure (default: process RSS, bytes) right after this
                      collection
    min, max          lowest and highest current_base since the tracker started
    usage_trend       recent base against ancient base (the mean of the samples, an
                      exponential average over about 120 samples once there are
                      more), in percent, signed (node's wrapped to 4 billion when
                      negative): > 0 means the base is higher now than it used to be
    timestamp         when the collection ended (aware UTC datetime)
    pause             how long the collection took, seconds (callbacks excluded)
    collected         objects the collection freed (gc.callbacks' "collected")
    uncollectable     objects it found uncollectable (gc.garbage)
    rss               process resident set size right after the collection, bytes
    measure           the name of the measure current_base comes from

The ``leak`` payload: ``start``, ``end`` (aware UTC datetimes), ``growth``
(in the measure's unit, bytes by default), ``reason`` in node's words
(``'heap growth over 7 consecutive GCs (1m 2s) - 11.67 mb/hr'``), ``samples``
(how many samples the window holds) and ``top_types`` (the types whose total
size grew most over the window, from two censuses, as
``{"what", "count_change", "size_change"}``; empty when disabled).  How the
verdict is reached is in ``memwatch._verdict``.

Why RSS is the default measure (quote-ready for the README): RSS is what
actually runs a service out of memory and what the operator sees; it counts
every kind of leak (tracked objects, strings and bytes the cyclic GC never
sees, memory that C extensions take with malloc); and it is cheap: one
``pread`` of ``/proc/self/statm`` on a descriptor kept open, read only after
*full* collections.  On ``benchmarks/bench_tracker.py``'s GC-heavy workload
(about 4,400 young and 29 full collections a second) the whole tracker costs
about 0.5% CPU with RSS, almost all of it CPython's own price for calling any
``gc.callbacks`` entry on each young collection; ``blocks`` costs the same,
``tracemalloc`` needs tracing (which alone makes that workload about 4 times
slower), and ``uss`` (a parse of ``/proc/self/smaps``) and ``python`` (a walk
of the heap) cost 0.5 ms and 5 ms per full collection, over the budget on a
GC-heavy program.  RSS's weakness is that it also moves when nothing is kept:
it creeps up as the allocator fragments after large spikes or under a
sawtooth.  So with a process-wide measure the leak verdict also requires
CPython's live block count (``sys.getallocatedblocks()``, read in the same
callback) to rise slice after slice (``confirm='blocks'``, the default):
fragmentation raises RSS, never the number of live allocations.
"""
from __future__ import annotations

import gc as _gc
import logging
import os
import sys
import threading
import time
from array import array
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

from memwatch import _deferred, _gchook
from memwatch._gcstate import in_quiet_collection
from memwatch._measures import Measure, get_measure, read_rss
from memwatch._verdict import LeakDetector
from memwatch.formatting import format_duration, format_rate

__all__ = ["on", "once", "off", "start", "stop", "configure", "gc", "tracker_info", "EVENTS"]

log = logging.getLogger("memwatch")

EVENTS = ("stats", "leak")

_RECENT = 10     # samples: node-memwatch's RECENT_PERIOD
_ANCIENT = 120   # samples: node-memwatch's ANCIENT_PERIOD

#: Defaults of :func:`configure`.  Durations are seconds (and all multiplied by
#: ``time_scale``); sizes are in the measure's unit.
DEFAULTS: dict[str, Any] = {
    "measure": "rss",          # 'rss', 'uss', 'python', 'blocks', 'tracemalloc' or a callable
    "min_growth": None,        # leak: minimum rise of the floor (None: 4 MiB, or 50000 blocks)
    "min_duration": 60.0,      # leak: shortest window judged
    "min_samples": 5,          # leak: fewest samples in a window
    "segments": 4,             # leak: slices of the window whose floors must all rise
    "warmup": None,            # leak: no window starts this soon after start (None: min_duration/2)
    "confirm": "blocks",       # leak: with a process-wide measure, live blocks must grow too
                               # (None: judge the measure alone)
    "timer_interval": 5.0,     # sample by forcing a full collection when none happened for
                               # this long (None: never); skipped while gc is disabled
    "timer_budget": 0.005,     # ... but spend at most this fraction of wall time on them
    "top_types": 10,           # leak: how many growing types to report (0: no censuses)
    "census_interval": None,   # seconds between baseline censuses (None: min_duration / 2)
    "census_budget": 0.002,    # ... and at most this fraction of wall time on censuses
    "time_scale": 1.0,         # multiplies every duration above (tests run scenarios fast)
}

_MAX_CENSUSES = 6


def _utc(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, timezone.utc)


class _Tracker:
    """The single tracker of this process (module-level ``_tracker``)."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = dict(DEFAULTS)
        self.listeners: dict[str, list[tuple[Callable, bool]]] = {e: [] for e in EVENTS}
        self.running = False
        self.implicit = False
        self._api_lock = threading.RLock()      # on/off/start/stop/configure; never in a GC callback
        self._reset_state()
        self._apply_options()

    # -- state -------------------------------------------------------------------

    def _reset_state(self) -> None:
        # Written only by the GC callback (collections never overlap: CPython
        # holds its "collecting" flag across the callbacks).
        self.n_full = 0
        self._young0 = _gchook.counts()[0]
        self._t_start: float | None = None
        self._rss_before = 0
        self._last_full = time.monotonic()
        self._raw: deque = deque()
        self._tls = threading.local()
        # Written only under _process_lock (in order, outside the collector).
        self._process_lock = threading.RLock()
        self._outbox: deque = deque()
        self._results: dict[int, dict[str, Any]] = {}
        self.samples = 0
        self.compactions = 0
        self._recent = 0.0
        self._ancient = 0.0
        self._min: float | None = None
        self._max: float | None = None
        self.last_stats: dict[str, Any] | None = None
        self.last_leak: dict[str, Any] | None = None
        self.leaks = 0
        self._censuses: list[tuple[float, Any]] = []
        self._names: dict[str, str] = {}
        self._census_cost = 0.0
        self._next_census = 0.0
        self._next_forced = 0.0
        self.detector: LeakDetector | None = None

    def _apply_options(self) -> None:
        opts = self.options
        scale = float(opts["time_scale"])
        self.measure: Measure = get_measure(opts["measure"])
        min_growth = opts["min_growth"]
        if min_growth is None:
            min_growth = self.measure.default_min_growth
        self.min_duration = float(opts["min_duration"]) * scale
        timer = opts["timer_interval"]
        self.timer_interval = None if timer is None else float(timer) * scale
        census_interval = opts["census_interval"]
        self.census_interval = (self.min_duration / 2 if census_interval is None
                                else float(census_interval) * scale)
        # Python-level measures need no confirmation: they count allocations.
        self._confirm = (opts["confirm"] == "blocks"
                         and self.measure.name not in ("blocks", "python", "tracemalloc"))
        warmup = opts["warmup"]
        self.warmup = self.min_duration / 2 if warmup is None else float(warmup) * scale
        self.detector = LeakDetector(min_growth=min_growth, min_duration=self.min_duration,
                                     min_samples=int(opts["min_samples"]),
                                     segments=int(opts["segments"]), warmup=self.warmup)
        self.min_growth = min_growth
        tick = 1.0 if self.timer_interval is None else min(1.0, self.timer_interval / 4)
        _deferred.set_tick([self._tick], tick)

    # -- inside the collector: record only -------------------------------------------
    # Called by memwatch._gchook's C callbacks, for full collections only (the
    # young ones are counted in C).  No lock, no listener, nothing that can block.

    def _full_start(self, info: dict) -> None:
        try:
            if in_quiet_collection():
                self._t_start = None
                return
            self._t_start = time.perf_counter()
            self._rss_before = read_rss()
        except Exception:  # pragma: no cover - never raise inside the collector
            pass

    def _full_stop(self, info: dict) -> None:
        try:
            if in_quiet_collection():
                return
            end = time.perf_counter()
            pause = end - self._t_start if self._t_start is not None else 0.0
            self._t_start = None
            self.n_full += 1
            rss = read_rss()
            measure = self.measure
            base = None
            if measure.name == "rss":
                base = rss
            elif measure.in_callback:
                try:
                    base = measure.read()
                except Exception:
                    base = None  # read again outside the collector, where errors are logged
            tls = self._tls
            token = getattr(tls, "token", None)
            if token is not None:
                tls.token = None
            now = time.monotonic()
            self._last_full = now
            young = _gchook.counts()[0] - self._young0
            blocks = sys.getallocatedblocks() if self._confirm else None
            self._raw.append((now, time.time(), pause, info.get("collected", 0),
                              info.get("uncollectable", 0), base, rss, self._rss_before,
                              self.n_full, young, token, blocks))
            _deferred.post(self._job)
        except Exception:  # pragma: no cover - never raise inside the collector
            pass

    # -- outside the collector ---------------------------------------------------

    def _job(self) -> None:
        self._process()
        self._emit()

    def _process(self) -> None:
        """Turn recorded samples into payloads, in order (any thread)."""
        with self._process_lock:
            while True:
                try:
                    raw = self._raw.popleft()
                except IndexError:
                    return
                self._process_one(raw)

    def _process_one(self, raw: tuple) -> None:
        (mono, wall, pause, collected, uncollectable, base, rss, rss_before,
         n_full, n_inc, token, blocks) = raw
        measure = self.measure
        if base is None:
            try:
                base = int(measure.read())
            except Exception:
                log.exception("memwatch: measure %r failed; using RSS for this sample", measure.name)
                base = rss
        if rss_before and rss < rss_before:
            self.compactions += 1
        self.samples += 1
        n = self.samples
        if n == 1:
            self._recent = self._ancient = float(base)
        else:
            # Exponential averages that warm up instead of starting at full
            # weight: the ancient one is the plain mean until it has 120 samples,
            # the recent one weighs new samples a little more (2 / (n + 1)) until
            # it has 10.  So estimated_base is an estimate from the second sample
            # on (node's integer division kept it equal to current_base for nine
            # samples) and the trend means something from the second sample on.
            self._recent += (base - self._recent) * max(2.0 / (n + 1), 1.0 / _RECENT)
            self._ancient += (base - self._ancient) / min(n, _ANCIENT)
        self._min = base if self._min is None or base < self._min else self._min
        self._max = base if self._max is None or base > self._max else self._max
        trend = ((self._recent - self._ancient) / self._ancient * 100.0) if self._ancient > 0 else 0.0
        payload = {
            "num_full_gc": n_full,
            "num_inc_gc": n_inc,
            "heap_compactions": self.compactions,
            "estimated_base": int(round(self._recent)),
            "current_base": int(base),
            "min": int(self._min),
            "max": int(self._max),
            "usage_trend": round(trend, 2),
            "timestamp": _utc(wall),
            "pause": pause,
            "collected": collected,
            "uncollectable": uncollectable,
            "rss": rss,
            "measure": measure.name,
        }
        self.last_stats = payload
        if token is not None:
            self._results[id(token)] = payload
        self._outbox.append(("stats", payload))
        self._maybe_census(mono)
        # --- sampling (issue 11): baselines for the leak's top_sites; free when off
        _hp = sys.modules.get("memwatch.heapprofile")
        if _hp is not None and _hp._session is not None:
            try:
                _hp.note_baseline(wall, self.census_interval)
            except Exception:
                log.exception("memwatch: heap profile baseline failed")
        # --- end sampling
        verdict = (self.detector.add(mono, base, wall, blocks)
                   if self.detector is not None else None)
        if verdict is not None:
            leak = self._leak_payload(verdict)
            self.last_leak = leak
            self.leaks += 1
            self._outbox.append(("leak", leak))

    def _leak_payload(self, verdict: Any) -> dict[str, Any]:
        duration = verdict.duration
        growth = int(round(verdict.growth))
        if self.measure.unit == "bytes":
            rate = format_rate(growth, duration)
        else:
            per_hour = growth * 3600.0 / duration if duration > 0 else 0.0
            rate = f"{per_hour:.0f} {self.measure.unit}/hr"
        reason = (f"heap growth over {verdict.samples} consecutive GCs "
                  f"({format_duration(duration)}) - {rate}")
        return {
            "start": _utc(verdict.start_wall),
            "end": _utc(verdict.end_wall),
            "growth": growth,
            "reason": reason,
            "samples": verdict.samples,
            "top_types": self._top_types(verdict.start),
            **self._top_sites(verdict.start_wall),
        }

    def _top_sites(self, start_wall: float) -> dict[str, Any]:
        # --- sampling (issue 11): where the growth was allocated, only while
        # memwatch.start_sampling() runs (no key otherwise)
        _hp = sys.modules.get("memwatch.heapprofile")
        if _hp is None or _hp._session is None:
            return {}
        try:
            return {"top_sites": _hp.leak_top_sites(start_wall, int(self.options["top_types"] or 10))}
        except Exception:
            log.exception("memwatch: top_sites failed")
            return {}

    # -- censuses for top_types ----------------------------------------------------

    def _take_census(self) -> tuple:
        # Kept compact: (names, counts, sizes) with the names shared between
        # censuses and the numbers in arrays, a handful of allocations per
        # census, so the ring of baselines shows up in no measure (the leak
        # verdict's block-count confirmation would otherwise see it grow).
        from memwatch import _core
        t = time.perf_counter()
        merged: dict[str, list[int]] = {}
        for name, count, size in _core.walk().rows():
            slot = merged.get(name)
            if slot is None:
                merged[name] = [count, size]
            else:
                slot[0] += count
                slot[1] += size
        cache = self._names
        names = tuple(cache.setdefault(name, name) for name in merged)
        counts = array("q", [v[0] for v in merged.values()])
        sizes = array("q", [v[1] for v in merged.values()])
        self._census_cost = time.perf_counter() - t
        # memwatch's own arrays (these baselines, the verdict's history) are
        # counted by the walk: remember their share so top_types can leave it out.
        own = [counts, sizes] + [a for c in self._censuses for a in c[1][1:3]]
        own_size = sum(sys.getsizeof(a) for a in own) + self._detector_bytes()
        return (names, counts, sizes, len(own) + 7, own_size)

    def _detector_bytes(self) -> int:
        b = getattr(self.detector, "_b", None)
        if b is None:
            return 0
        return sum(sys.getsizeof(getattr(b, col)) for col in
                   ("t0", "t1", "w0", "w1", "floor", "cfloor", "n"))

    def _maybe_census(self, mono: float) -> None:
        limit = int(self.options["top_types"] or 0)
        if limit <= 0 or mono < self._next_census or sys.is_finalizing():
            # At interpreter exit modules are being torn down: no census then.
            return
        try:
            snap = self._take_census()
        except Exception:
            log.exception("memwatch: census for top_types failed; top_types disabled")
            self.options["top_types"] = 0
            return
        budget = float(self.options["census_budget"]) or 0.002
        self._next_census = mono + max(self.census_interval, self._census_cost / budget)
        ring = self._censuses
        ring.append((mono, snap))
        if len(ring) > _MAX_CENSUSES:
            # Drop the inner entry whose neighbours are closest: keeps both old
            # and recent baselines, spaced roughly geometrically.
            k = min(range(1, len(ring) - 1), key=lambda i: ring[i + 1][0] - ring[i - 1][0])
            del ring[k]

    def _top_types(self, start: float) -> list[dict[str, Any]]:
        limit = int(self.options["top_types"] or 0)
        if limit <= 0 or not self._censuses or sys.is_finalizing():
            return []
        base = self._censuses[0][1]
        for t, snap in self._censuses:
            if t <= start + 1e-9:
                base = snap
            else:
                break
        try:
            now = self._take_census()
        except Exception:
            log.exception("memwatch: census for top_types failed")
            return []
        old = {name: (base[1][i], base[2][i]) for i, name in enumerate(base[0])}
        rows = []
        for i, name in enumerate(now[0]):
            count, size = now[1][i], now[2][i]
            old_count, old_size = old.get(name, (0, 0))
            if name == "array.array":   # minus memwatch's own
                count -= now[3] - base[3]
                size -= now[4] - base[4]
            if size > old_size and not name.startswith("memwatch."):
                rows.append((size - old_size, count - old_count, name))
        rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
        return [{"what": name, "count_change": dcount, "size_change": dsize}
                for dsize, dcount, name in rows[:limit]]

    # -- delivering ----------------------------------------------------------------

    def _emit(self) -> None:
        """Call the listeners for each pending payload (runs inside _deferred.drain)."""
        while True:
            try:
                event, payload = self._outbox.popleft()
            except IndexError:
                return
            with self._api_lock:
                entries = list(self.listeners[event])
                once = [entry for entry in entries if entry[1]]
                for entry in once:
                    try:
                        self.listeners[event].remove(entry)
                    except ValueError:
                        pass
            for listener, _ in entries:
                try:
                    listener(dict(payload))
                except Exception:
                    log.exception("memwatch: %r listener %r raised (ignored; the tracker "
                                  "and the other listeners go on)", event, listener)
            if once:
                self._maybe_autostop()

    def _tick(self) -> None:
        """Worker thread: force a sample when no full collection happened for a while."""
        interval = self.timer_interval
        if not self.running or interval is None or not _gc.isenabled():
            return
        now = time.monotonic()
        if now - self._last_full < interval or now < self._next_forced:
            return
        t = time.perf_counter()
        _gc.collect(2)
        cost = time.perf_counter() - t
        budget = float(self.options["timer_budget"]) or 0.005
        # Never spend more than `budget` of wall time on these collections.
        self._next_forced = time.monotonic() + cost / budget

    # -- public operations -----------------------------------------------------------

    def start(self, implicit: bool = False, **options: Any) -> None:
        with self._api_lock:
            if options:
                self.configure(**options)
            if self.running:
                if not implicit:
                    self.implicit = False
                return
            self._reset_state()
            self._apply_options()
            self.running = True
            self.implicit = implicit
            _deferred.ensure_worker()
            _gchook.set_full_hooks(self._full_start, self._full_stop)
            _deferred.acquire_hooks("tracker")

    def stop(self) -> None:
        with self._api_lock:
            if not self.running:
                return
            self.running = False
            self.implicit = False
            _gchook.set_full_hooks(None, None)
            _deferred.release_hooks("tracker")
        _deferred.post(self._job)      # deliver what was recorded before the stop
        if not _trace_active():
            _deferred.stop_worker()
        else:
            _deferred.drain()

    def configure(self, **options: Any) -> dict[str, Any]:
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown tracker option(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(DEFAULTS)}")
        with self._api_lock:
            new = dict(self.options)
            new.update(options)
            _validate(new)
            old = self.options
            with self._process_lock:      # not while a sample is being judged
                self.options = new
                try:
                    self._apply_options()
                except Exception:
                    self.options = old
                    self._apply_options()
                    raise
            return self.effective_options()

    def effective_options(self) -> dict[str, Any]:
        opts = dict(self.options)
        opts["min_growth"] = self.min_growth
        opts["min_duration"] = self.min_duration
        opts["timer_interval"] = self.timer_interval
        opts["census_interval"] = self.census_interval
        opts["warmup"] = self.warmup
        opts["measure"] = self.measure.name
        return opts

    def add_listener(self, event: str, listener: Callable, once: bool) -> None:
        _check_event(event)
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        with self._api_lock:
            self.listeners[event].append((listener, once))
            if not self.running:
                self.start(implicit=True)

    def remove_listener(self, event: str | None, listener: Callable | None) -> int:
        events = EVENTS if event is None else (_check_event(event),)
        removed = 0
        with self._api_lock:
            for ev in events:
                kept = [e for e in self.listeners[ev]
                        if listener is not None and e[0] != listener]
                removed += len(self.listeners[ev]) - len(kept)
                self.listeners[ev] = kept
        self._maybe_autostop()
        return removed

    def _maybe_autostop(self) -> None:
        with self._api_lock:
            if self.running and self.implicit and not any(self.listeners.values()):
                stop_needed = True
            else:
                stop_needed = False
        if stop_needed:
            self.stop()

    def collect(self) -> dict[str, Any]:
        if not self.running:
            self.start(implicit=True)
        if _gchook.in_collection() and threading.get_ident() == self._collecting_thread():
            # Called from inside a collection (a gc.callbacks entry): CPython
            # cannot collect here; the best answer is the last sample.
            return dict(self.last_stats) if self.last_stats else {}
        token = object()
        tls = self._tls
        tls.token = token
        deadline = time.monotonic() + 5.0
        try:
            while True:
                _gc.collect(2)
                if getattr(tls, "token", None) is None:
                    break  # our callback saw it
                if time.monotonic() > deadline:
                    break
                # Another thread was collecting (gc.collect() then returns 0 without
                # collecting): wait for it to finish and collect again.
                time.sleep(0.001)
        finally:
            tls.token = None
        self._process()
        payload = self._results.pop(id(token), None)
        _deferred.drain()           # deliver it now unless a drain is already running
        if payload is None:         # could not collect (e.g. gc() from inside a gc callback)
            payload = self.last_stats
        return dict(payload) if payload is not None else {}

    def _collecting_thread(self) -> int | None:
        return _gchook.collecting_thread()

    def info(self) -> dict[str, Any]:
        with self._api_lock:
            return {
                "running": self.running,
                "measure": self.measure.name,
                "options": self.effective_options(),
                "listeners": {e: len(v) for e, v in self.listeners.items()},
                "samples": self.samples,
                "num_full_gc": self.n_full,
                "num_inc_gc": _gchook.counts()[0] - self._young0,
                "leaks": self.leaks,
                "last_stats": dict(self.last_stats) if self.last_stats else None,
                "last_leak": dict(self.last_leak) if self.last_leak else None,
            }

    def after_fork_in_child(self) -> None:
        # One thread, stale locks and another process's history: start clean,
        # keep the listeners and the options (a pre-fork server's workers want them).
        self._api_lock = threading.RLock()
        self._reset_state()
        self._apply_options()
        if self.running:
            _gchook.set_full_hooks(self._full_start, self._full_stop)
            _deferred.acquire_hooks("tracker")
            _deferred.ensure_worker()


def _validate(opts: dict[str, Any]) -> None:
    for key in ("min_duration", "time_scale"):
        if not float(opts[key]) > 0:
            raise ValueError(f"{key} must be positive")
    if opts["timer_interval"] is not None and not float(opts["timer_interval"]) > 0:
        raise ValueError("timer_interval must be positive or None")
    if opts["warmup"] is not None and float(opts["warmup"]) < 0:
        raise ValueError("warmup must be >= 0 or None")
    if opts["census_interval"] is not None and not float(opts["census_interval"]) > 0:
        raise ValueError("census_interval must be positive or None")
    if opts["min_growth"] is not None and not float(opts["min_growth"]) > 0:
        raise ValueError("min_growth must be positive or None")
    if opts["confirm"] not in ("blocks", None):
        raise ValueError("confirm must be 'blocks' or None")
    if int(opts["segments"]) < 2:
        raise ValueError("segments must be at least 2")
    if int(opts["top_types"] or 0) < 0:
        raise ValueError("top_types must be >= 0")
    for key in ("timer_budget", "census_budget"):
        if not 0 < float(opts[key]) <= 1:
            raise ValueError(f"{key} must be in (0, 1]")


def _check_event(event: str) -> str:
    if event not in EVENTS:
        raise ValueError(f"unknown memwatch event {event!r}: valid events are "
                         f"{', '.join(repr(e) for e in EVENTS)}")
    return event


def _trace_active() -> bool:
    import sys
    mod = sys.modules.get("memwatch.gctrace")
    return bool(mod is not None and mod.is_tracing())


_tracker = _Tracker()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_tracker.after_fork_in_child)


# -- the public functions ---------------------------------------------------------------

def on(event: str, listener: Callable[[dict], Any] | None = None) -> Any:
    """Call ``listener(payload)`` on every ``event`` ('stats' or 'leak').

    Starts the tracker if it is not running.  Returns the listener, so it also
    works as a decorator: ``@memwatch.on('leak')``."""
    _check_event(event)
    if listener is None:
        def decorator(fn: Callable[[dict], Any]) -> Callable[[dict], Any]:
            _tracker.add_listener(event, fn, once=False)
            return fn
        return decorator
    _tracker.add_listener(event, listener, once=False)
    return listener


def once(event: str, listener: Callable[[dict], Any] | None = None) -> Any:
    """Like :func:`on`, for the next ``event`` only."""
    _check_event(event)
    if listener is None:
        def decorator(fn: Callable[[dict], Any]) -> Callable[[dict], Any]:
            _tracker.add_listener(event, fn, once=True)
            return fn
        return decorator
    _tracker.add_listener(event, listener, once=True)
    return listener


def off(event: str | None = None, listener: Callable[[dict], Any] | None = None) -> Any:
    """Remove ``listener`` from ``event``; every listener of ``event`` when no
    listener is given; every listener when neither is.  Returns the listener
    (usable as a decorator).  When the tracker was started by :func:`on` /
    :func:`once` / :func:`gc` and no listener is left, it stops."""
    if event is not None and listener is None and callable(event) and event not in EVENTS:
        raise TypeError("off(event, listener): the event name comes first")
    _tracker.remove_listener(event, listener)
    return listener


def start(**options: Any) -> None:
    """Install the tracker now (and apply ``options``, see :func:`configure`).

    It then runs until :func:`stop`, listeners or not."""
    _tracker.start(implicit=False, **options)


def stop() -> None:
    """Remove the tracker's GC callback and stop its thread.

    ``gc.callbacks`` is left as it was before the tracker started; listeners stay
    registered (a later :func:`start` or :func:`on` resumes with fresh statistics)."""
    _tracker.stop()


def configure(**options: Any) -> dict[str, Any]:
    """Set tracker options; returns the effective options (durations scaled).

    ``measure``: what ``current_base`` is: ``'rss'`` (default), ``'uss'``,
    ``'python'``, ``'blocks'``, ``'tracemalloc'`` or a callable returning bytes
    (with ``'blocks'`` the unit is blocks, and ``min_growth`` defaults to 50000).
    Leak verdict: ``min_growth``, ``min_duration``, ``min_samples``, ``segments``,
    ``warmup``, ``confirm``.
    Sampling: ``timer_interval``, ``timer_budget``.  ``top_types`` (0 disables
    the censuses), ``census_interval``, ``census_budget``.  ``time_scale``
    multiplies every duration.  Changing options restarts the leak verdict's
    history."""
    return _tracker.configure(**options)


def gc() -> dict[str, Any]:
    """Run one full collection and return the ``stats`` sample it produced.

    One call, one sample: the same sample is delivered to the ``stats``
    listeners.  Starts the tracker if needed (it then stops with the last
    listener, or with :func:`stop`)."""
    return _tracker.collect()


def tracker_info() -> dict[str, Any]:
    """The tracker's state: running, options, listener counts, counters, the last
    ``stats`` and ``leak`` payloads (for status pages and metrics)."""
    return _tracker.info()
