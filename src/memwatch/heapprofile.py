"""Where was it allocated: memwatch's sampling heap profiler.

``start_sampling()`` installs PEP 445 hooks on the MEM and OBJ allocator
domains (wrapping whatever is installed, tracemalloc included) that pick
allocations by bytes, with exponentially distributed gaps of mean
``interval`` bytes, and remember the Python stack of each picked block and
whether it is still alive.  ``take_heap_profile()`` returns the estimated
live heap, and what was allocated since sampling started, per stack.  See
``docs/sampling.md``.
"""
from __future__ import annotations

import atexit
import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, NamedTuple

from memwatch.formatting import format_size

__all__ = [
    "start_sampling", "stop_sampling", "is_sampling", "take_heap_profile",
    "sampling_info", "HeapProfile", "Frame", "StackSample", "SiteStat", "SiteStatDiff",
    "SamplingError", "DEFAULT_INTERVAL", "DEFAULT_NFRAME",
]

# Mean bytes between two samples.  Chosen from benchmarks/bench_sampling.py
# (docs/sampling.md): a sample (stack walk + intern) is about 650
# instructions, so the interval sets the cost once the wrapper is cheap.
# 16 KiB puts a 5 MB site at ~300 samples (5.7% standard error) and a 20 MB
# one at ~1200 (2.9%): the documented bounds (15% at 20 MB, 30% at 5 MB)
# are then 5 standard errors away; the samples cost about 1% of the
# instructions of memwatch's allocation-heaviest workload (the wrapper 2%).
DEFAULT_INTERVAL = 16 * 1024
DEFAULT_NFRAME = 32
# Bounds on the bookkeeping (docs/sampling.md has the arithmetic): live
# samples tracked, and distinct stacks kept.  Hitting one is counted.
DEFAULT_MAX_SAMPLES = 1 << 17
DEFAULT_MAX_STACKS = 1 << 14

_KEY_TYPES = ("lineno", "filename", "traceback")
_OWN_FILES = None     # memwatch files whose allocations are its own bookkeeping


class SamplingError(RuntimeError):
    """The sampler cannot do what was asked (another allocator hook is in the way)."""


class Frame(NamedTuple):
    filename: str
    lineno: int
    name: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} {self.name}"


NO_PYTHON_FRAME = Frame("<no Python frame>", 0, "<C>")
OVERFLOW_FRAME = Frame("<stacks over the cap>", 0, "<other>")


class StackSample(NamedTuple):
    """One interned stack of a profile: estimated live bytes and objects
    allocated there and still alive, and estimated bytes and objects
    allocated there since sampling started; ``samples`` counts the live
    sampled blocks behind the estimate (its precision)."""
    traceback: tuple          # of Frame, innermost first
    size: float
    count: float
    samples: int
    alloc_size: float
    alloc_count: float
    alloc_samples: int


class SiteStat(NamedTuple):
    """A row of ``HeapProfile.statistics()``: ``key`` is a Frame ('lineno'),
    a file name ('filename') or a tuple of Frames, innermost first ('traceback')."""
    key: Any
    size: int
    count: int
    samples: int
    alloc_size: int
    alloc_count: int

    def __str__(self) -> str:
        return (f"{_key_str(self.key)}: {format_size(self.size)} live, {self.count} objects "
                f"({self.samples} samples); {format_size(self.alloc_size)} allocated")


class SiteStatDiff(NamedTuple):
    key: Any
    size: int
    size_diff: int
    count: int
    count_diff: int
    alloc_size_diff: int

    def __str__(self) -> str:
        sign = "+" if self.size_diff >= 0 else "-"
        return (f"{_key_str(self.key)}: {format_size(self.size)} live "
                f"({sign}{format_size(abs(self.size_diff))}), {self.count} objects "
                f"({self.count_diff:+d})")


def _key_str(key: Any) -> str:
    if isinstance(key, Frame):
        return f"{key.filename}:{key.lineno}"
    if isinstance(key, tuple):
        return " <- ".join(f"{f.filename}:{f.lineno}" for f in key) or "<empty>"
    return str(key)


def _key_json(key: Any) -> Any:
    if isinstance(key, Frame):
        return {"filename": key.filename, "lineno": key.lineno, "name": key.name}
    if isinstance(key, tuple):
        return [_key_json(f) for f in key]
    return key


def _check_key_type(key_type: str) -> None:
    if key_type not in _KEY_TYPES:
        raise ValueError(f"key_type must be one of {', '.join(map(repr, _KEY_TYPES))}, "
                         f"not {key_type!r}")


class HeapProfile:
    """The sampled heap at one moment (see ``take_heap_profile()``)."""

    def __init__(self, stacks: Iterable[StackSample], *, interval: float, nframe: int,
                 timestamp: datetime | None = None, info: dict | None = None) -> None:
        self.stacks = sorted(stacks, key=lambda s: (-s.size, -s.alloc_size))
        self.interval = interval
        self.nframe = nframe
        self.timestamp = timestamp or datetime.now(timezone.utc)
        self.info = dict(info or {})

    # ---- totals ----
    @property
    def total_size(self) -> int:
        """Estimated live bytes allocated since sampling started."""
        return round(sum(s.size for s in self.stacks))

    @property
    def total_alloc_size(self) -> int:
        return round(sum(s.alloc_size for s in self.stacks))

    # ---- rows ----
    def _grouped(self, key_type: str) -> dict:
        _check_key_type(key_type)
        groups: dict = {}
        for s in self.stacks:
            if key_type == "traceback":
                key = s.traceback
            else:
                frame = s.traceback[0] if s.traceback else NO_PYTHON_FRAME
                key = frame if key_type == "lineno" else frame.filename
            g = groups.get(key)
            if g is None:
                groups[key] = [s.size, s.count, s.samples, s.alloc_size, s.alloc_count]
            else:
                g[0] += s.size
                g[1] += s.count
                g[2] += s.samples
                g[3] += s.alloc_size
                g[4] += s.alloc_count
        return groups

    def statistics(self, key_type: str = "lineno", *, allocated: bool = False) -> list[SiteStat]:
        """Rows grouped by the innermost frame ('lineno'), its file
        ('filename') or the whole stack ('traceback'), biggest estimated live
        size first (``allocated=True``: biggest allocated-since-start first)."""
        rows = [SiteStat(k, round(g[0]), round(g[1]), g[2], round(g[3]), round(g[4]))
                for k, g in self._grouped(key_type).items()]
        if allocated:
            rows.sort(key=lambda r: (-r.alloc_size, -r.size))
        else:
            rows.sort(key=lambda r: (-r.size, -r.alloc_size))
        return rows

    def compare_to(self, old: "HeapProfile", key_type: str = "lineno") -> list[SiteStatDiff]:
        """Per-site change of the estimated live heap from ``old`` (an earlier
        profile of the same session) to this one, biggest change first."""
        if not isinstance(old, HeapProfile):
            raise TypeError(f"compare_to() needs a HeapProfile, not {type(old).__name__}")
        new_g = self._grouped(key_type)
        old_g = old._grouped(key_type)
        zero = [0.0, 0.0, 0, 0.0, 0.0]
        diffs = []
        for key in new_g.keys() | old_g.keys():
            n = new_g.get(key, zero)
            o = old_g.get(key, zero)
            d = SiteStatDiff(key, round(n[0]), round(n[0] - o[0]), round(n[1]),
                             round(n[1] - o[1]), round(n[3] - o[3]))
            if d.size or d.size_diff or d.count_diff:
                diffs.append(d)
        diffs.sort(key=lambda d: (-abs(d.size_diff), -abs(d.count_diff), -d.size))
        return diffs

    def to_dict(self, key_type: str = "lineno", limit: int | None = None) -> dict:
        """JSON-ready: totals, the sampler's counters and the top rows."""
        rows = self.statistics(key_type)
        if limit is not None:
            rows = rows[:limit]
        return {
            "timestamp": self.timestamp.isoformat(),
            "interval": self.interval,
            "nframe": self.nframe,
            "total_size": self.total_size,
            "total_alloc_size": self.total_alloc_size,
            "info": self.info,
            "key_type": key_type,
            "sites": [{"where": _key_json(r.key), "size": r.size, "count": r.count,
                       "samples": r.samples, "alloc_size": r.alloc_size,
                       "alloc_count": r.alloc_count} for r in rows],
        }

    def format(self, limit: int = 10, key_type: str = "lineno") -> str:
        """A table a person can read: the sites holding the most live memory."""
        rows = self.statistics(key_type)
        lines = [f"Heap profile (sampled every {format_size(self.interval)} on average): "
                 f"{format_size(self.total_size)} live, {format_size(self.total_alloc_size)} "
                 f"allocated since sampling started"]
        lines.append(f"{'live':>10} {'objects':>9} {'samples':>8} {'allocated':>10}  site")
        for r in rows[:limit]:
            lines.append(f"{format_size(r.size):>10} {r.count:>9} {r.samples:>8} "
                         f"{format_size(r.alloc_size):>10}  {_key_str(r.key)}"
                         + (f" ({r.key.name})" if isinstance(r.key, Frame) else ""))
        if len(rows) > limit:
            lines.append(f"... {len(rows) - limit} more sites")
        dropped = self.info.get("dropped_samples", 0) + self.info.get("dropped_stacks", 0)
        if dropped:
            lines.append(f"note: {self.info.get('dropped_samples', 0)} samples not tracked and "
                         f"{self.info.get('dropped_stacks', 0)} booked on '<other>' "
                         f"(caps max_samples/max_stacks reached)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return (f"<HeapProfile {format_size(self.total_size)} live in {len(self.stacks)} "
                f"stacks, interval {format_size(self.interval)}>")

    # ---- files ----
    def write_pprof(self, path: str | os.PathLike) -> None:
        """Gzipped profile.proto with Go's heap sample types (alloc_objects,
        alloc_space, inuse_objects, inuse_space): ``go tool pprof``,
        Pyroscope, Parca and Perfetto read it."""
        from memwatch.pprof import encode_profile
        data = encode_profile(self)
        with open(path, "wb") as f:
            f.write(data)

    def to_pprof(self) -> bytes:
        from memwatch.pprof import encode_profile
        return encode_profile(self)

    def collapsed(self, value: str = "inuse_space") -> str:
        """Folded stacks (``outer;...;inner value`` lines) for flame graphs."""
        from memwatch.pprof import collapsed_lines
        return "".join(line + "\n" for line in collapsed_lines(self, value))

    def write_collapsed(self, path: str | os.PathLike, value: str = "inuse_space") -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.collapsed(value))


# ---- the session ----
_lock = threading.Lock()
_session: dict | None = None
_registered = False


def _own_files() -> frozenset:
    global _OWN_FILES
    if _OWN_FILES is None:
        here = os.path.dirname(os.path.abspath(__file__))
        _OWN_FILES = frozenset(os.path.join(here, n) for n in ("heapprofile.py", "pprof.py"))
    return _OWN_FILES


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return value


def _on_fork_child() -> None:
    from memwatch import _sampler
    _sampler.after_fork_child()


def _at_exit() -> None:
    # Interpreter shutdown: stop sampling while the runtime is whole.
    if _session is not None:
        try:
            stop_sampling()
        except SamplingError:
            pass


def start_sampling(interval: int = DEFAULT_INTERVAL, nframe: int = DEFAULT_NFRAME, *,
                   max_samples: int = DEFAULT_MAX_SAMPLES,
                   max_stacks: int = DEFAULT_MAX_STACKS, seed: int | None = None) -> None:
    """Start sampling allocations: on average one per ``interval`` bytes
    allocated, remembering up to ``nframe`` frames of the allocating stack.
    ``max_samples`` caps the live sampled blocks tracked and ``max_stacks``
    the distinct stacks kept (both counted in ``sampling_info()`` when hit).
    ``seed`` makes the sampling points reproducible (tests)."""
    _start(interval, nframe, max_samples, max_stacks, seed, owner="program")


#: Who started the running session: the program (start_sampling()), the
#: tracker (configure(sample_allocations=...)) or an operator over HTTP
#: (POST /ah/sampling/start).  Each stops only its own session.
OWNERS = ("program", "tracker", "http")
_OWNER_WORDS = {"program": "the program (memwatch.start_sampling())",
                "tracker": "the tracker (memwatch.configure(sample_allocations=...))",
                "http": "an operator over HTTP (POST /ah/sampling/start)"}


def _start(interval: Any, nframe: Any, max_samples: Any, max_stacks: Any, seed: Any,
           owner: str, seconds: float | None = None) -> dict:
    from memwatch import _sampler
    global _session, _registered
    interval = _check_int("interval", interval, 1)
    nframe = _check_int("nframe", nframe, 1, _sampler.MAX_NFRAME)
    max_samples = _check_int("max_samples", max_samples, 1)
    max_stacks = _check_int("max_stacks", max_stacks, 1, 1 << 30)
    if seed is not None:
        seed = _check_int("seed", seed, 1, (1 << 64) - 1)
    with _lock:
        if _session is not None:
            raise SamplingError(f"sampling is already running (started by "
                                f"{_OWNER_WORDS[_session['owner']]} at "
                                f"{_session['started'].isoformat()}): call "
                                "memwatch.stop_sampling() first to change its settings")
        if not _registered:
            os.register_at_fork(after_in_child=_on_fork_child)
            atexit.register(_at_exit)
            _registered = True
        _sampler.start(float(interval), nframe, max_samples, max_stacks, seed or 0)
        started = datetime.now(timezone.utc)
        session = {"interval": interval, "nframe": nframe, "started": started,
                   "owner": owner, "stops_at": None, "timer": None}
        if seconds is not None:
            # A session with a time limit (an operator's, over HTTP): a daemon
            # timer stops it then, unless it was stopped or replaced meanwhile.
            session["stops_at"] = started + timedelta(seconds=seconds)
            timer = threading.Timer(seconds, _stop_session, args=(session,))
            timer.name = "memwatch-sampling-timer"
            timer.daemon = True
            session["timer"] = timer
            timer.start()
        _session = session
    return session


def _stop_session(session: dict) -> bool:
    """Stop sampling if ``session`` is still the running one; True if it was."""
    from memwatch import _sampler
    global _session
    with _lock:
        if _session is not session:
            return False
        _session = None
        _baselines.clear()
        _sampler.stop()
    timer = session.get("timer")
    if timer is not None and timer is not threading.current_thread():
        timer.cancel()
    return True


def stop_sampling() -> None:
    """Stop sampling and forget the profile.  The allocators in place at
    ``start_sampling()`` are restored exactly; if another tool hooked the
    allocator after memwatch (tracemalloc.start() for instance), memwatch's
    hooks stay chained under it and only pass calls through, so that tool
    keeps working, and the next ``start_sampling()`` re-activates them."""
    session = _session
    if session is not None:
        _stop_session(session)


def is_sampling() -> bool:
    """True while sampling runs and memwatch's hooks are still called (another
    tool can remove them by restoring an allocator saved before memwatch)."""
    if _session is None:
        return False
    from memwatch import _sampler
    return _sampler.is_active()


def sampling_info() -> dict:
    """The sampler's counters: samples taken, live samples tracked, stacks,
    caps, what was dropped at a cap, bookkeeping bytes, hook state."""
    from memwatch import _sampler
    info = _sampler.stats()
    state = _sampler.hook_state()
    info["hooks"] = {1: "on top", 0: "chained under another hook",
                     -1: "removed by another tool", -2: "not installed"}[state]
    info["sampling"] = _session is not None and info["active"] and state >= 0
    session = _session
    if session is not None:
        info["started"] = session["started"].isoformat()
        info["started_by"] = session["owner"]
        info["stops_at"] = session["stops_at"].isoformat() if session["stops_at"] else None
    return info


def take_heap_profile() -> HeapProfile:
    """The estimated live heap by allocating stack, and what was allocated
    since sampling started.  memwatch's own profile objects are left out."""
    if _session is None:
        raise SamplingError("sampling is not running: call memwatch.start_sampling() first")
    from memwatch import _sampler
    session = _session
    rows = _sampler.profile()
    info = sampling_info()
    own = _own_files()
    cache: dict = {}
    stacks = []
    own_samples = 0
    for frames, overflow, lb, lo, ls, ab, ao, asmp in rows:
        if frames and frames[0][0] in own:
            own_samples += asmp
            continue
        tb = cache.get(frames)
        if tb is None:
            if overflow:
                tb = (OVERFLOW_FRAME,)
            elif not frames:
                tb = (NO_PYTHON_FRAME,)
            else:
                # From a list, never a generator: tuple(generator) resizes the
                # tuple it builds, which fails (SystemError) when another thread
                # holds gc.get_objects() meanwhile (a heap walk, a census).
                tb = tuple([Frame(f[0], f[1], f[2]) for f in frames])
            cache[frames] = tb
        stacks.append(StackSample(tb, lb, lo, ls, ab, ao, asmp))
    info["own_samples"] = own_samples
    if not info["sampling"]:
        info["warning"] = ("memwatch's allocator hooks were removed by another tool "
                           "(it restored an allocator saved before start_sampling()): "
                           "the profile stopped changing; call stop_sampling() then "
                           "start_sampling() again")
    return HeapProfile(stacks, interval=session["interval"], nframe=session["nframe"], info=info)


# ---- the tracker's option: configure(sample_allocations=...) ----
def check_sample_allocations(value: Any) -> None:
    """Validate the tracker option: False/None (off), True (the default
    interval) or the mean interval in bytes."""
    if value is None or isinstance(value, bool):
        return
    if not isinstance(value, int):
        raise TypeError("sample_allocations must be True, False or the mean sampling "
                        f"interval in bytes (an int), not {type(value).__name__}")
    if value < 1:
        raise ValueError("sample_allocations must be True, False or a positive interval "
                         f"in bytes (e.g. {DEFAULT_INTERVAL}), not {value}")


def tracker_sampling(value: Any) -> None:
    """Make sampling follow the tracker's ``sample_allocations`` option
    (``value`` is False while the tracker is stopped).  Only a session the
    tracker started itself is stopped or restarted: one the program started
    with start_sampling() is left alone (it feeds top_sites all the same)."""
    session = _session
    if not value:
        if session is not None and session["owner"] == "tracker":
            _stop_session(session)
        return
    interval = DEFAULT_INTERVAL if value is True else int(value)
    if session is not None:
        if session["owner"] != "tracker" or session["interval"] == interval:
            return
        _stop_session(session)   # the option changed the interval
    try:
        _start(interval, DEFAULT_NFRAME, DEFAULT_MAX_SAMPLES, DEFAULT_MAX_STACKS, None,
               owner="tracker")
    except SamplingError:
        pass                     # the program started its own session meanwhile


# ---- the tracker's leak info: top_sites (called from tracker.py only while
# sampling runs; see _Tracker._leak_payload) ----
_MAX_BASELINES = 6
_baselines: list = []          # (wall, {Frame: live bytes}) oldest first


def _live_by_line() -> dict:
    return {r.key: r.size for r in take_heap_profile().statistics("lineno")}


def note_baseline(wall: float, spacing: float) -> None:
    """Remember the live heap by line now if the last baseline is older
    than ``spacing`` seconds: the starts of future leak windows."""
    if _session is None:
        return
    if _baselines and wall - _baselines[-1][0] < spacing:
        return
    _baselines.append((wall, _live_by_line()))
    if len(_baselines) > _MAX_BASELINES:
        # drop the inner baseline whose neighbours are closest: old and
        # recent ones both stay, spaced roughly geometrically
        k = min(range(1, len(_baselines) - 1),
                key=lambda i: _baselines[i + 1][0] - _baselines[i - 1][0])
        del _baselines[k]


def leak_top_sites(start_wall: float, limit: int = 10) -> list[dict]:
    """The lines whose estimated live bytes grew most since the baseline
    closest before ``start_wall`` (the earliest one if none is before)."""
    if _session is None or limit <= 0:
        return []
    base: dict = {}
    for wall, sizes in _baselines:
        if wall <= start_wall or not base:
            base = sizes
        if wall > start_wall:
            break
    now = _live_by_line()
    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    rows = []
    for frame, size in now.items():
        if frame.filename.startswith(pkg):
            continue          # memwatch's own bookkeeping (censuses, baselines)
        change = size - base.get(frame, 0)
        if change > 0:
            rows.append({"where": f"{frame.filename}:{frame.lineno}", "function": frame.name,
                         "size_change": change, "size": size})
    rows.sort(key=lambda r: -r["size_change"])
    return rows[:limit]


def profile_event(limit: int = 20, stacks: int = 300) -> dict:
    """The current profile for an event log (``memwatch run --sample``
    records one at exit; ``memwatch report`` draws it): the top sites by
    line and the top folded stacks by live bytes."""
    from memwatch.pprof import collapsed_lines
    prof = take_heap_profile()
    folded = []
    for line in collapsed_lines(prof, "inuse_space"):
        names, _, value = line.rpartition(" ")
        folded.append([names, int(value)])
        if len(folded) >= stacks:
            break
    return {"timestamp": prof.timestamp, "interval": prof.interval,
            "total_size": prof.total_size, "total_alloc_size": prof.total_alloc_size,
            "sites": prof.to_dict("lineno", limit)["sites"], "folded": folded}
