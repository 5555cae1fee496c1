"""memwatch's numbers for Prometheus (``pip install memwatch[prometheus]``).

::

    import memwatch.prometheus
    memwatch.prometheus.register()            # the default prometheus_client registry

Series (all prefixed ``memwatch_``):

=====================================  =======  ==================================================
``current_base_bytes``                 gauge    heap after the last full collection
``estimated_base_bytes``               gauge    its smoothed trend
``min_bytes`` / ``max_bytes``          gauge    the smallest / largest current_base seen
``usage_trend``                        gauge    node-memwatch's usage_trend
``rss_bytes``                          gauge    resident memory at the last stats event
``last_gc_pause_seconds``              gauge    how long the last full collection took
``last_stats_timestamp_seconds``       gauge    when the last stats event came (Unix time)
``full_gc_total``                      counter  full collections (num_full_gc)
``inc_gc_total``                       counter  younger-generation collections (num_inc_gc)
``heap_compactions_total``             counter  node's heap_compactions
``stats_events_total``                 counter  stats events seen
``leaks_total``                        counter  leak events seen
``leak_growth_bytes``                  gauge    growth of the last leak event
``type_objects{type}``                 gauge    (``top_types=N``) objects per type, last census
``type_bytes{type}``                   gauge    (``top_types=N``) bytes per type, last census
=====================================  =======  ==================================================

The census behind ``type_*`` is never taken at scrape time (it walks the whole
heap): it is the last one taken through the HTTP API (``POST /ah/census``) or
handed to :meth:`MemwatchCollector.record_census`.

**Multiprocess mode** (gunicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` set):
a custom collector would only ever show the one worker that answers the
scrape, so :func:`register` instead creates ordinary ``Gauge``/``Counter``
metrics that prometheus_client stores in its per-process files and copies
memwatch's numbers into them from a small daemon thread (every ``interval``
seconds; restarted in forked children).  Gauges use ``multiprocess_mode=
'liveall'`` (one series per live worker, labelled ``pid``); counters add up
across workers.  Call :func:`register` in each worker (gunicorn's
``post_worker_init`` hook, or at import time without ``--preload``), serve
``prometheus_client.multiprocess.MultiProcessCollector`` as usual, and call
``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` in
``child_exit``.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Iterator

__all__ = ["MemwatchCollector", "MultiprocessSync", "register", "in_multiprocess_mode"]

_GAUGES = [
    # (metric name, stats key, help)
    ("current_base_bytes", "current_base", "Heap after the last full collection (node-memwatch's current_base)."),
    ("estimated_base_bytes", "estimated_base", "Smoothed trend of current_base (estimated_base)."),
    ("min_bytes", "min", "Smallest current_base seen."),
    ("max_bytes", "max", "Largest current_base seen."),
    ("usage_trend", "usage_trend", "node-memwatch's usage_trend: positive while the base heap grows."),
    ("rss_bytes", "rss", "Resident memory of the process at the last stats event."),
    ("last_gc_pause_seconds", "pause", "Duration of the last full collection."),
]
_COUNTERS = [
    ("full_gc", "num_full_gc", "Full collections (num_full_gc)."),
    ("inc_gc", "num_inc_gc", "Younger-generation collections (num_inc_gc)."),
    ("heap_compactions", "heap_compactions", "node-memwatch's heap_compactions."),
]


def _require_client() -> None:
    """prometheus_client is an optional dependency: say how to get it."""
    try:
        import prometheus_client  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "prometheus_client":
            raise
        raise ModuleNotFoundError(
            "memwatch.prometheus needs the prometheus_client package: "
            "pip install 'memwatch[prometheus]' (or pip install prometheus-client)",
            name="prometheus_client") from None


def in_multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _stamp(value: Any) -> float | None:
    if hasattr(value, "timestamp"):
        try:
            return float(value.timestamp())
        except (TypeError, ValueError, OverflowError):
            return None
    return _num(value)


def _snapshot(state: Any, top_types: int) -> dict[str, Any]:
    """Everything the metrics show, read once from the state (no lock, no heap walk)."""
    stats = state.last_gc or {}
    leak = state.last_leak or {}
    out: dict[str, Any] = {"gauges": {}, "counters": {}, "types": []}
    for name, key, _help in _GAUGES:
        v = _num(stats.get(key))
        if v is not None:
            out["gauges"][name] = v
    ts = _stamp(stats.get("timestamp"))
    if ts is not None:
        out["gauges"]["last_stats_timestamp_seconds"] = ts
    if _num(leak.get("growth")) is not None:
        out["gauges"]["leak_growth_bytes"] = float(leak["growth"])
    for name, key, _help in _COUNTERS:
        v = _num(stats.get(key))
        if v is not None:
            out["counters"][name] = v
    out["counters"]["stats_events"] = float(state.stats_count)
    out["counters"]["leaks"] = float(state.leak_count)
    census = state.last_census
    if top_types and census is not None:
        out["types"] = [(r.name, r.count, r.size) for r in census.top(top_types)]
    return out


_EXTRA_HELP = {
    "last_stats_timestamp_seconds": "Unix time of the last stats event.",
    "leak_growth_bytes": "Heap growth reported by the last leak event.",
    "stats_events": "stats events seen.",
    "leaks": "leak events seen.",
}


def _help(name: str) -> str:
    for n, _k, h in _GAUGES + _COUNTERS:
        if n == name:
            return h
    return _EXTRA_HELP.get(name, name)


class MemwatchCollector:
    """A prometheus_client collector reading memwatch's last events at scrape time.

    ``state`` defaults to the HTTP API's shared state (which subscribes to the
    tracker); ``top_types=N`` adds the N biggest types of the last census."""

    def __init__(self, state: Any = None, *, top_types: int = 0, prefix: str = "memwatch") -> None:
        if state is None:
            from memwatch.httpapi import default_state
            state = default_state()
        self.state = state
        self.top_types = top_types
        self.prefix = prefix

    def record_census(self, census: Any) -> None:
        """Show ``census`` (a ``memwatch.Census``) as the ``type_*`` series."""
        self.state.last_census = census

    def describe(self) -> list:
        return []  # names depend on what has been seen; skip the registry's duplicate check

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = _snapshot(self.state, self.top_types)
        p = self.prefix
        for name, value in snap["gauges"].items():
            yield GaugeMetricFamily(f"{p}_{name}", _help(name), value=value)
        for name, value in snap["counters"].items():
            yield CounterMetricFamily(f"{p}_{name}", _help(name), value=value)
        if self.top_types:
            objs = GaugeMetricFamily(f"{p}_type_objects", "Objects per type in the last census.",
                                     labels=["type"])
            size = GaugeMetricFamily(f"{p}_type_bytes", "Bytes per type in the last census.",
                                     labels=["type"])
            for tname, count, nbytes in snap["types"]:
                objs.add_metric([tname], count)
                size.add_metric([tname], nbytes)
            yield objs
            yield size


class MultiprocessSync:
    """Multiprocess mode: copy memwatch's numbers into file-backed metrics.

    prometheus_client's values take a lock, so they are never touched from the
    event handlers (which may run inside the GC): a daemon thread copies the
    last numbers every ``interval`` seconds, and :meth:`sync` does it now."""

    def __init__(self, state: Any = None, *, top_types: int = 0, interval: float = 1.0,
                 prefix: str = "memwatch") -> None:
        from prometheus_client import Counter, Gauge

        if state is None:
            from memwatch.httpapi import default_state
            state = default_state()
        self.state = state
        self.top_types = top_types
        self.interval = interval
        names = [n for n, _k, _h in _GAUGES] + ["last_stats_timestamp_seconds", "leak_growth_bytes"]
        self._gauges = {n: Gauge(f"{prefix}_{n}", _help(n), multiprocess_mode="liveall", registry=None)
                        for n in names}
        self._counters = {n: Counter(f"{prefix}_{n}", _help(n), registry=None)
                          for n in [n for n, _k, _h in _COUNTERS] + ["stats_events", "leaks"]}
        self._type_objects = self._type_bytes = None
        if top_types:
            self._type_objects = Gauge(f"{prefix}_type_objects", "Objects per type in the last census.",
                                       ["type"], multiprocess_mode="liveall", registry=None)
            self._type_bytes = Gauge(f"{prefix}_type_bytes", "Bytes per type in the last census.",
                                     ["type"], multiprocess_mode="liveall", registry=None)
        self._shown_types: set[str] = set()
        self._sent: dict[str, float] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start()
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: (lambda s: s and s._after_fork())(ref()))

    def _after_fork(self) -> None:
        # A forked worker starts counting from zero in its own files.
        self._lock = threading.Lock()
        self._sent = {}
        self._shown_types = set()
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._thread = None
        self.start()

    def record_census(self, census: Any) -> None:
        self.state.last_census = census

    def sync(self) -> None:
        snap = _snapshot(self.state, self.top_types)
        with self._lock:
            for name, value in snap["gauges"].items():
                self._gauges[name].set(value)
            for name, value in snap["counters"].items():
                delta = value - self._sent.get(name, 0.0)
                if delta > 0:
                    self._counters[name].inc(delta)
                    self._sent[name] = value
            if self._type_objects is not None and snap["types"]:
                shown = set()
                for tname, count, nbytes in snap["types"]:
                    self._type_objects.labels(tname).set(count)
                    self._type_bytes.labels(tname).set(nbytes)
                    shown.add(tname)
                for gone in self._shown_types - shown:  # the files keep them: show 0
                    self._type_objects.labels(gone).set(0)
                    self._type_bytes.labels(gone).set(0)
                self._shown_types = shown

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - metrics must never kill the service
                time.sleep(self.interval)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self.sync()
            self._thread = threading.Thread(target=self._loop, name="memwatch-prometheus", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sync()


def register(registry: Any = None, *, top_types: int = 0, state: Any = None,
             interval: float = 1.0) -> MemwatchCollector | MultiprocessSync:
    """Expose memwatch's numbers to Prometheus; returns the collector (or the sync thread).

    Outside multiprocess mode: registers a :class:`MemwatchCollector` with
    ``registry`` (default: prometheus_client's ``REGISTRY``).  In multiprocess
    mode: starts a :class:`MultiprocessSync` (``registry`` is not used: the
    numbers go to the per-process files)."""
    _require_client()
    with _register_lock:
        if in_multiprocess_mode():
            # one sync per process: a second call (e.g. a hook run twice) returns it
            if _registered.get("multiprocess") is None:
                _registered["multiprocess"] = MultiprocessSync(state, top_types=top_types,
                                                               interval=interval)
            return _registered["multiprocess"]
        if registry is None:
            from prometheus_client import REGISTRY as registry  # noqa: N811
        existing = _registered.get(id(registry))
        if existing is not None and existing[0]() is registry:
            return existing[1]          # already there: the same series twice would be invalid
        collector = MemwatchCollector(state, top_types=top_types)
        registry.register(collector)
        _registered[id(registry)] = (weakref.ref(registry), collector)
        return collector


_register_lock = threading.Lock()
_registered: dict[Any, Any] = {}
