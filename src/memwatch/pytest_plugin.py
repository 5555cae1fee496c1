"""memwatch's pytest plugin: fail a test when memory grows with every call.

Registered through the ``pytest11`` entry point.  Loading it costs nothing:
it imports neither the C core nor anything else of memwatch until a test
asks for a check.

* Fixture ``no_leak``: ``no_leak(func, *args, **kwargs)`` calls ``func`` a few
  times to warm up, then ``runs`` measured times, taking a heap census after
  a full collection around each measured call.
* Marker ``@pytest.mark.no_leak(...)``: the same for the whole test function
  (called again and again with the same fixture values; fixtures are set up
  once).
* ``--memwatch-leaks``: the marker on every collected test, and a summary of
  the tests that leaked at the end of the session.

The verdict follows CPython's refleak hunter (``regrtest -R``): after the
warm-ups, a type leaks when its count grows on *every* measured run, and
memory leaks when the bytes grow on every measured run by more than the
tolerance.  There is no single before/after comparison, so caches that fill
once (``re``, ``functools.lru_cache``, ``logging``, first imports, interned
strings) do not fail a test.

The plugin's own bookkeeping stays out of the numbers: the per-run results
are :class:`memwatch._core.RawCensus` objects whose data lives in C memory,
kept in a list allocated before the first census; the only Python objects
that accumulate are those results themselves, whose exact count and size are
subtracted.  What pytest itself accumulates while a test is called again and
again (captured log records, recorded warnings) is trimmed back after every
call to what the first call left.
"""
from __future__ import annotations

import fnmatch
import inspect
import io
import os
import sys
import time
import warnings
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import pytest

__all__ = ["LeakFailed", "Measurements", "RunDelta", "check_no_leak",
           "DEFAULT_WARMUP", "DEFAULT_RUNS", "DEFAULT_TOLERANCE"]

MARKER = "no_leak"
DEFAULT_WARMUP = 3
DEFAULT_RUNS = 5
DEFAULT_TOLERANCE = 0          # bytes per run
_EXAMPLE_TYPES = 3             # retainer paths shown for this many types
_EXAMPLE_CANDIDATES = 5        # new objects tried per type to find a path
_LEAK_PROPERTY = "memwatch_leak"
_RAW_TYPE = "memwatch._core.RawCensus"


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

class RunDelta:
    """What one measured call left behind: per-type change since the census
    before it (only changed types), and the totals over the types not ignored."""

    __slots__ = ("types", "count_diff", "size_diff")

    def __init__(self, types: dict[str, tuple[int, int]], count_diff: int, size_diff: int) -> None:
        self.types = types            # name -> (count_diff, size_diff)
        self.count_diff = count_diff
        self.size_diff = size_diff

    def count(self, name: str) -> int:
        return self.types.get(name, (0, 0))[0]

    def size(self, name: str) -> int:
        return self.types.get(name, (0, 0))[1]

    def __repr__(self) -> str:
        return f"<RunDelta count_diff={self.count_diff:+d} size_diff={self.size_diff:+d}>"


class Measurements:
    """The measured runs of one ``no_leak`` check and its verdict.

    ``deltas`` has one :class:`RunDelta` per measured run; ``growing`` names
    the types whose count grew on every run; ``memory_grew`` is true when the
    bytes (ignored types left out) grew on every run by more than
    ``tolerance``; ``leaked`` is either; ``examples`` maps a type name to one
    retainer path (a string) of a new object, filled in only when it leaked."""

    def __init__(self, *, label: str, warmup: int, runs: int, tolerance: float,
                 ignore: tuple[str, ...], deltas: list[RunDelta], growing: list[str],
                 memory_grew: bool, overhead: float) -> None:
        self.label = label
        self.warmup = warmup
        self.runs = runs
        self.tolerance = tolerance
        self.ignore = ignore
        self.deltas = deltas
        self.growing = growing
        self.memory_grew = memory_grew
        self.overhead = overhead      # seconds per measured run (collection + census)
        self.examples: dict[str, str | None] = {}
        self.example_note: str | None = None
        self.example_sites: dict[str, str] = {}   # type -> where an example was allocated

    @property
    def leaked(self) -> bool:
        return bool(self.growing) or self.memory_grew

    @property
    def count_diffs(self) -> list[int]:
        return [d.count_diff for d in self.deltas]

    @property
    def size_diffs(self) -> list[int]:
        return [d.size_diff for d in self.deltas]

    def __bool__(self) -> bool:       # "if no_leak(f): ..." reads as "is clean"
        return not self.leaked

    def __repr__(self) -> str:
        return (f"<Measurements {self.label}: {'LEAKED' if self.leaked else 'clean'}, "
                f"runs={self.runs}, bytes per run={self.size_diffs}, growing={self.growing}>")

    # -- the report ---------------------------------------------------------

    def table_types(self) -> list[str]:
        """The types the failure table shows: those whose count grew on every
        run; else (bytes-only growth) those whose bytes grew on every run;
        else the biggest growers in total."""
        if self.growing:
            names = list(self.growing)
        else:
            names = [n for n in self._all_names()
                     if not self._ignored(n) and all(d.size(n) > 0 for d in self.deltas)]
            if not names:
                names = [n for n in self._all_names()
                         if not self._ignored(n) and sum(d.size(n) for d in self.deltas) > 0]
        names.sort(key=lambda n: (-sum(d.size(n) for d in self.deltas),
                                  -sum(d.count(n) for d in self.deltas), n))
        return names

    def _all_names(self) -> set[str]:
        names: set[str] = set()
        for d in self.deltas:
            names.update(d.types)
        return names

    def _ignored(self, name: str) -> bool:
        return _matches(name, self.ignore)

    def headline(self) -> str:
        parts = []
        if self.growing:
            what = "type" if len(self.growing) == 1 else "types"
            parts.append(f"{len(self.growing)} {what} grew in count")
        if self.memory_grew:
            from memwatch.formatting import format_size
            limit = f" by more than {format_size(self.tolerance)}" if self.tolerance else ""
            parts.append(f"memory grew{limit}")
        return (f"{self.label} leaks: {' and '.join(parts)} on every one of "
                f"{self.runs} measured runs (after {self.warmup} warm-up runs)")

    def format(self, limit: int = 15) -> str:
        """The failure table: each growing type with its count and bytes per run."""
        from memwatch.formatting import format_size

        def signed(n: int) -> str:
            return f"{n:+d}"

        def signed_size(n: int) -> str:
            text = format_size(n)
            return text if text.startswith("-") else "+" + text

        names = self.table_types()
        shown = names[:limit]
        rows = [("type", "count per run", "bytes per run")]
        for n in shown:
            rows.append((n, " ".join(signed(d.count(n)) for d in self.deltas),
                         ", ".join(signed_size(d.size(n)) for d in self.deltas)))
        if len(names) > limit:
            rows.append((f"... {len(names) - limit} more types", "", ""))
        label = "all types" if not self.ignore else "all types not ignored"
        rows.append((label, " ".join(signed(d.count_diff) for d in self.deltas),
                     ", ".join(signed_size(d.size_diff) for d in self.deltas)))
        w0 = min(max(len(r[0]) for r in rows), 60)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"{_clip(a, w0):<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
        return "\n".join(lines)

    def report(self) -> str:
        """The whole failure message: headline, table, retainer paths."""
        out = [f"memwatch: {self.headline()}", "", self.format()]
        if self.examples or self.example_note:
            out += ["", "Who holds a new object (one example per type):"]
            for name, path in self.examples.items():
                out.append(f"  {name}: {path if path else 'no retainer path found'}")
                if name in self.example_sites:
                    out.append(f"    allocated at {self.example_sites[name]}")
            if self.example_note:
                out.append(f"  ({self.example_note})")
        return "\n".join(out)

    def summary(self) -> str:
        """One line for the end-of-session summary."""
        from memwatch.formatting import format_size

        def per_run(total: float) -> str:
            avg = round(total / max(len(self.deltas), 1))
            return ("+" if avg >= 0 else "") + format_size(avg)

        parts = [f"{n} {self.deltas[-1].count(n):+d}/run "
                 f"({per_run(sum(d.size(n) for d in self.deltas))})"
                 for n in self.table_types()[:3]]
        head = f"{per_run(sum(self.size_diffs))} per run"
        return f"{head}: {', '.join(parts)}" if parts else head


class LeakFailed(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """The test failure raised when memory grows with the calls; carries the
    :class:`Measurements` as ``.measurements``."""

    def __init__(self, measurements: Measurements) -> None:
        super().__init__(measurements.report(), pytrace=False)
        self.measurements = measurements


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if name == p or fnmatch.fnmatchcase(name, p):
            return True
    return False


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------

def _options(warmup: Any = None, runs: Any = None, ignore: Any = None,
             tolerance: Any = None) -> tuple[int, int, tuple[str, ...], float]:
    warmup = DEFAULT_WARMUP if warmup is None else warmup
    runs = DEFAULT_RUNS if runs is None else runs
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"no_leak: warmup must be an int >= 0, not {warmup!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 2:
        raise ValueError(f"no_leak: runs must be an int >= 2 (growth on every one "
                         f"of several runs is the verdict), not {runs!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"no_leak: tolerance must be a number of bytes >= 0, not {tolerance!r}")
    return warmup, runs, _ignore_names(ignore), tolerance


def _ignore_names(ignore: Any) -> tuple[str, ...]:
    if ignore is None:
        return ()
    if isinstance(ignore, (str, type)):
        ignore = (ignore,)
    names = []
    for item in ignore:
        if isinstance(item, type):
            from memwatch import type_name
            names.append(type_name(item))
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(f"no_leak: ignore= takes type names, glob patterns or "
                            f"types, not {item!r}")
    return tuple(names)


# --------------------------------------------------------------------------
# What pytest accumulates while one test is called again and again
# --------------------------------------------------------------------------

class _Sinks:
    """What pytest accumulates while one test is called again and again.

    * captured log records (``caplog`` and the report's "Captured log"),
      recorded warnings, in-memory captured output (``capsys``,
      ``--capture=sys``): ``mark()`` after the first call notes their
      lengths, ``trim()`` after each later call cuts them back, so the first
      call's output stays in the report and the repeats add nothing;
    * ``monkeypatch`` fixtures handed to the test: ``begin()`` before the
      first call notes what the fixtures patched; ``trim()`` undoes what the
      call patched, so every call starts from the state the fixtures set up.
    """

    __slots__ = ("lists", "streams", "patches", "node", "finalizers")

    def __init__(self) -> None:
        self.lists: list[tuple[list, int]] = []
        self.streams: list[tuple[Any, int]] = []
        self.patches: list[tuple[Any, int, int, bool, bool]] = []
        self.node: Any = None
        self.finalizers: tuple[list, int] | None = None

    def begin(self, funcargs: Iterable[Any] = (), node: Any = None) -> None:
        self.node = node
        for value in funcargs:
            tp = type(value)
            if tp.__name__ == "MonkeyPatch" and tp.__module__.startswith("_pytest"):
                setattrs = getattr(value, "_setattr", None)
                setitems = getattr(value, "_setitem", None)
                if type(setattrs) is list and type(setitems) is list:
                    self.patches.append((value, len(setattrs), len(setitems),
                                         getattr(value, "_savesyspath", None) is None,
                                         getattr(value, "_cwd", None) is None))

    def mark(self) -> None:
        self.lists = []
        self.streams = []
        # request.addfinalizer() in the test body: the first call's finalizers
        # run at teardown; later calls' run right after their call.
        try:
            fins = self.node.session._setupstate.stack[self.node][0]
        except (AttributeError, KeyError, TypeError, IndexError):
            fins = None
        self.finalizers = (fins, len(fins)) if type(fins) is list else None
        logging = sys.modules.get("logging")
        if logging is not None:
            for handler in logging.getLogger().handlers:
                if not type(handler).__module__.startswith("_pytest"):
                    continue
                records = getattr(handler, "records", None)
                if type(records) is list:
                    self.lists.append((records, len(records)))
                stream = getattr(handler, "stream", None)
                if type(stream) is io.StringIO:
                    self.streams.append((stream, stream.tell()))
        impl = getattr(warnings, "_showwarnmsg_impl", None)
        log = getattr(impl, "__self__", None)
        if type(log) is list:
            self.lists.append((log, len(log)))
        for stream in (sys.stdout, sys.stderr):
            if (isinstance(stream, io.TextIOWrapper)
                    and type(stream).__module__.startswith("_pytest")
                    and isinstance(getattr(stream, "buffer", None), io.BytesIO)):
                try:
                    self.streams.append((stream, stream.tell()))
                except (OSError, ValueError):
                    pass

    def trim(self) -> None:
        if self.finalizers is not None:
            fins, n = self.finalizers
            while len(fins) > n:
                fins.pop()()
        for lst, n in self.lists:
            if len(lst) > n:
                del lst[n:]
        for stream, pos in self.streams:
            try:
                if not stream.closed and stream.tell() > pos:
                    stream.seek(pos)
                    stream.truncate()
            except (OSError, ValueError):
                pass
        for mp, n_attr, n_item, no_syspath, no_cwd in self.patches:
            _undo_patches(mp, n_attr, n_item, no_syspath, no_cwd)


def _undo_patches(mp: Any, n_attr: int, n_item: int, no_syspath: bool, no_cwd: bool) -> None:
    """Undo what a MonkeyPatch did after the noted lengths (as its undo() does)."""
    import os
    module = sys.modules.get(type(mp).__module__)
    # Older pytest names its sentinel ``notset``, newer ones ``NOTSET``.
    notsets = [v for v in (getattr(module, "notset", None), getattr(module, "NOTSET", None))
               if v is not None]

    def is_notset(value: Any) -> bool:
        return any(value is n for n in notsets)

    setattrs = mp._setattr
    for obj, name, value in reversed(setattrs[n_attr:]):
        if not is_notset(value):
            setattr(obj, name, value)
        else:
            delattr(obj, name)
    del setattrs[n_attr:]
    setitems = mp._setitem
    for dictionary, key, value in reversed(setitems[n_item:]):
        if is_notset(value):
            try:
                del dictionary[key]
            except KeyError:
                pass
        else:
            dictionary[key] = value
    del setitems[n_item:]
    if no_syspath and getattr(mp, "_savesyspath", None) is not None:
        sys.path[:] = mp._savesyspath
        mp._savesyspath = None
    if no_cwd and getattr(mp, "_cwd", None) is not None:
        os.chdir(mp._cwd)
        mp._cwd = None


# --------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------

def _settle(collect: Callable[[], int]) -> None:
    # A second pass when the first found garbage: finalizers and weakref
    # callbacks can free more.
    if collect():
        collect()


def check_no_leak(call: Callable[[], Any], *, label: str = "the function",
                  warmup: int | None = None, runs: int | None = None,
                  ignore: Any = None, tolerance: float | None = None,
                  examples: bool = True, raise_on_leak: bool = True,
                  funcargs: Iterable[Any] = (), node: Any = None) -> Measurements:
    """Call ``call()`` ``warmup`` times, then ``runs`` times with a census
    after a full collection around each, and judge the growth.

    Exceptions from ``call`` propagate unchanged.  Raises :class:`LeakFailed`
    (a pytest failure) when it leaks and ``raise_on_leak``; returns the
    :class:`Measurements` otherwise."""
    warmup, runs, ignore_names, tolerance = _options(warmup, runs, ignore, tolerance)
    from memwatch import _core
    from memwatch._gcstate import quiet_collect

    walk = _core.walk
    perf = time.perf_counter
    sinks = _Sinks()
    sinks.begin(funcargs, node)
    raws: list[Any] = [None] * (runs + 1)
    spent = array("d", bytes(8 * (runs + 1)))

    # The first call runs before the sinks are marked, so its captured logs
    # and warnings stay in the report.
    first = True
    for _ in range(warmup):
        call()
        if first:
            sinks.mark()
            first = False
        sinks.trim()
    t0 = perf()
    _settle(quiet_collect)
    raws[0] = walk()
    spent[0] = perf() - t0
    for i in range(1, runs + 1):
        call()
        if first:
            sinks.mark()
            first = False
        sinks.trim()
        t0 = perf()
        _settle(quiet_collect)
        raws[i] = walk()
        spent[i] = perf() - t0

    m = _judge(raws, label=label, warmup=warmup, runs=runs, tolerance=tolerance,
               ignore=ignore_names, overhead=sum(spent) / (runs + 1))
    del raws
    if m.leaked:
        if examples:
            try:
                _find_examples(m, call, sinks)
            except pytest.fail.Exception:
                raise
            except BaseException as exc:  # noqa: BLE001 - diagnostics only
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                m.example_note = f"finding retainer paths failed: {type(exc).__name__}: {exc}"
        if raise_on_leak:
            raise LeakFailed(m)
    return m


def _table(raw: Any) -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}
    for name, count, size in raw.rows():
        slot = table.get(name)
        if slot is None:
            table[name] = [count, size]
        else:
            slot[0] += count
            slot[1] += size
    return table


def _judge(raws: list[Any], *, label: str, warmup: int, runs: int, tolerance: float,
           ignore: tuple[str, ...], overhead: float) -> Measurements:
    tables = [_table(r) for r in raws]
    # Census k saw the k results taken before it: take them out.
    own_size = sys.getsizeof(raws[0])
    for k, t in enumerate(tables):
        if k:
            slot = t.get(_RAW_TYPE)
            if slot is not None:
                slot[0] -= k
                slot[1] -= k * own_size
    ignored = {n for t in tables for n in t if _matches(n, ignore)}
    deltas = []
    for prev, cur in zip(tables, tables[1:]):
        types = {}
        total_count = total_size = 0
        for name in prev.keys() | cur.keys():
            c, s = cur.get(name, (0, 0))
            pc, ps = prev.get(name, (0, 0))
            if c != pc or s != ps:
                types[name] = (c - pc, s - ps)
                if name not in ignored:
                    total_count += c - pc
                    total_size += s - ps
        deltas.append(RunDelta(types, total_count, total_size))
    names = set().union(*(d.types for d in deltas)) - ignored
    growing = [n for n in names if all(d.count(n) > 0 for d in deltas)]
    memory_grew = all(d.size_diff > tolerance for d in deltas)
    growing.sort(key=lambda n: (-sum(d.size(n) for d in deltas),
                                -sum(d.count(n) for d in deltas), n))
    return Measurements(label=label, warmup=warmup, runs=runs, tolerance=tolerance,
                        ignore=ignore, deltas=deltas, growing=growing,
                        memory_grew=memory_grew, overhead=overhead)


# --------------------------------------------------------------------------
# Retainer paths for the failure message
# --------------------------------------------------------------------------

def _retainers_function() -> Callable[..., Any] | None:
    try:
        import memwatch
        return getattr(memwatch, "retainers")
    except (ImportError, AttributeError):
        return None


_PLAIN_CONTAINERS = (list, tuple, set, frozenset)


def _live_objects() -> list[Any]:
    """Every object the GC tracks, and the untracked ones (str, int, bytes,
    float, untracked tuples and dicts) that plain containers hold, as strong
    references.  Only ``gc.get_objects()`` and iteration of exact lists,
    tuples, sets and dicts: no ``tp_traverse`` pointers are turned into
    references (on CPython 3.12 that can pick up a stale pointer from a
    finished coroutine and corrupt the GC; see the report of issue 4)."""
    import gc
    is_tracked = gc.is_tracked
    tracked = gc.get_objects()
    seen = set(map(id, tracked))
    found = list(tracked)
    frontier = tracked
    while frontier:
        nxt = []
        for obj in frontier:
            tp = type(obj)
            try:
                if tp is dict:
                    items: Any = (*obj.keys(), *obj.values())
                elif tp in _PLAIN_CONTAINERS:
                    items = tuple(obj)
                else:
                    continue
            except RuntimeError:     # changed size under another thread
                continue
            for item in items:
                if not is_tracked(item) and id(item) not in seen:
                    seen.add(id(item))
                    nxt.append(item)
        found.extend(nxt)
        frontier = nxt
    return found


def _find_examples(m: Measurements, call: Callable[[], Any], sinks: _Sinks) -> None:
    """One more call, with every object listed before and after it: a new
    object of a top type is one whose address was not there before; ask
    memwatch.retainers() who holds it."""
    from memwatch import type_name
    from memwatch._gcstate import quiet_collect

    import tracemalloc     # before the first scan: its module is no new object
    wanted = m.table_types()[:_EXAMPLE_TYPES]
    if not wanted:
        return
    for name in wanted:
        m.examples[name] = None
    retainers = _retainers_function()
    if retainers is None:
        m.example_note = "memwatch.retainers() is not available in this memwatch"
        return
    wanted_set = set(wanted)
    names: dict[type, str] = {}

    def wanted_types(objects: list[Any]) -> set[type]:
        # One name per distinct type (kept, so the same str objects serve both scans).
        for tp in set(map(type, objects)):
            if tp not in names:
                names[tp] = type_name(tp)
        return {tp for tp, name in names.items() if name in wanted_set}

    _settle(quiet_collect)
    objects = _live_objects()
    types = wanted_types(objects)
    # Addresses in a C array, not a set of ints: no new int survives the call.
    before = array("Q", sorted(id(o) for o in objects if type(o) in types))
    del objects
    # --- sampling (issue 11): exact tracing of this one extra call says where
    # the examples were allocated (a test can afford tracemalloc)
    own_tracing = not tracemalloc.is_tracing()
    if own_tracing:
        tracemalloc.start(16)
    try:
        call()
    except BaseException:
        if own_tracing:
            tracemalloc.stop()
        raise
    # --- end sampling
    sinks.trim()
    _settle(quiet_collect)
    objects = _live_objects()
    types = wanted_types(objects)
    old = set(before)
    # The type names made for the scans are new objects too: not examples.
    old.update(map(id, names.values()))
    old.add(id(before))
    found: dict[str, list[Any]] = {n: [] for n in wanted}
    for obj in objects:
        if type(obj) in types and id(obj) not in old:
            bucket = found[names[type(obj)]]
            if len(bucket) < _EXAMPLE_CANDIDATES:
                bucket.append(obj)
    obj = None
    del objects, old, before, types
    # --- sampling (issue 11): the allocating line of one example per type
    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    for name, bucket in found.items():
        tb = tracemalloc.get_object_traceback(bucket[0]) if bucket else None
        for frame in reversed(list(tb or ())):      # most recent call first
            if not frame.filename.startswith(pkg):
                m.example_sites[name] = f"{frame.filename}:{frame.lineno}"
                break
    if own_tracing:
        tracemalloc.stop()
    # --- end sampling
    try:
        params = inspect.signature(retainers).parameters
    except (TypeError, ValueError):
        params = {}
    options = "ignore" in params and "collect" in params
    for name in wanted:
        candidates = found.pop(name)
        candidates.reverse()
        while candidates:
            # Passed straight from the list: this frame holds no name for it,
            # and the plugin's own containers are no path.
            if options:
                paths = retainers(candidates.pop(), limit=1, ignore=(found, candidates),
                                  collect=False)
            else:
                paths = retainers(candidates.pop(), limit=1)
            if paths:
                m.examples[name] = str(paths[0])
                break
        del candidates


# --------------------------------------------------------------------------
# pytest hooks
# --------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memwatch", "memwatch: memory leak checks")
    group.addoption("--memwatch-leaks", action="store_true", default=False,
                    dest="memwatch_leaks",
                    help="check every test as @pytest.mark.no_leak does (warm up, "
                         "then measured calls with a heap census around each) and "
                         "list the tests that leaked at the end")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "no_leak(warmup=3, runs=5, ignore=(), tolerance=0): call the test function "
        "warmup + runs times (fixtures set up once) and fail it when a type's count, "
        "or the bytes beyond tolerance, grow on every measured run (memwatch)")
    if not config.pluginmanager.has_plugin("memwatch-leak-summary"):
        config.pluginmanager.register(_LeakSummary(config), "memwatch-leak-summary")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("memwatch_leaks", False):
        return
    for item in items:
        if (isinstance(item, pytest.Function) and item.get_closest_marker(MARKER) is None
                and MARKER not in getattr(item, "fixturenames", ())):
            item.add_marker(MARKER)


def _marker_options(marker: pytest.Mark) -> dict[str, Any]:
    if marker.args:
        raise pytest.UsageError(
            f"@pytest.mark.no_leak takes keyword options only "
            f"(warmup=, runs=, ignore=, tolerance=), got {marker.args!r}")
    unknown = set(marker.kwargs) - {"warmup", "runs", "ignore", "tolerance"}
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.no_leak: unknown options {sorted(unknown)}")
    return dict(marker.kwargs)


def _record_leak(item: pytest.Item, m: Measurements) -> None:
    item.user_properties.append((_LEAK_PROPERTY, m.summary()))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object | None:
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None:
        return None
    testfunction = pyfuncitem.obj
    if inspect.iscoroutinefunction(testfunction) or inspect.isasyncgenfunction(testfunction):
        return None   # no async plugin wrapped it: pytest's own hook reports that
    options = _marker_options(marker)
    funcargs = pyfuncitem.funcargs
    testargs = {arg: funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}

    def call() -> None:
        testfunction(**testargs)

    try:
        check_no_leak(call, label=pyfuncitem.name, funcargs=testargs.values(),
                      node=pyfuncitem, **options)
    except LeakFailed as failure:
        _record_leak(pyfuncitem, failure.measurements)
        raise
    return True


@pytest.fixture
def no_leak(request: pytest.FixtureRequest) -> Callable[..., Measurements]:
    """``no_leak(func, *args, **kwargs)``: call ``func(*args, **kwargs)``
    ``warmup`` times, then ``runs`` measured times with a heap census after a
    full collection around each; fail the test when a type's count grows on
    every measured run, or the bytes grow on every run by more than
    ``tolerance``.  Keyword options: ``warmup=3``, ``runs=5``, ``ignore=()``
    (type names, glob patterns or types), ``tolerance=0`` (bytes per run).
    Returns the :class:`Measurements`.  A coroutine function is run on one
    event loop kept for all the calls."""

    def check(func: Callable[..., Any], /, *args: Any, warmup: int | None = None,
              runs: int | None = None, ignore: Iterable[Any] | None = None,
              tolerance: float | None = None, **kwargs: Any) -> Measurements:
        if not callable(func):
            raise TypeError(f"no_leak() needs a callable, not {func!r}")
        label = getattr(func, "__qualname__", None) or repr(func)
        if inspect.iscoroutinefunction(func):
            return _check_async(request, func, args, kwargs, label=label, warmup=warmup,
                                runs=runs, ignore=ignore, tolerance=tolerance)

        def call() -> None:
            func(*args, **kwargs)

        try:
            return check_no_leak(call, label=label, warmup=warmup, runs=runs,
                                 ignore=ignore, tolerance=tolerance, node=request.node)
        except LeakFailed as failure:
            _record_leak(request.node, failure.measurements)
            raise

    return check


def _check_async(request: pytest.FixtureRequest, func: Callable[..., Any], args: tuple,
                 kwargs: dict, **options: Any) -> Measurements:
    import asyncio
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("no_leak(coroutine function) runs its own event loop; call it "
                           "from a sync test, or mark the async test @pytest.mark.no_leak")
    loop = asyncio.new_event_loop()
    try:
        def call() -> None:
            loop.run_until_complete(func(*args, **kwargs))

        try:
            return check_no_leak(call, node=request.node, **options)
        except LeakFailed as failure:
            _record_leak(request.node, failure.measurements)
            raise
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class _LeakSummary:
    """Collects the leaked tests (their reports also come from xdist workers)
    and prints them at the end of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.leaks: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" or not report.failed:
            return
        for prop in report.user_properties:
            if len(prop) == 2 and prop[0] == _LEAK_PROPERTY:
                self.leaks.append((report.nodeid, str(prop[1])))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        leaks = self.leaks
        if not leaks and not self.config.getoption("memwatch_leaks", False):
            return
        tr = terminalreporter
        if not leaks:
            tr.write_sep("=", "memwatch: no test leaked", green=True)
            return
        tr.write_sep("=", f"memwatch: {len(leaks)} test{'s' if len(leaks) != 1 else ''} leaked",
                     red=True)
        for nodeid, summary in leaks:
            tr.write_line(f"LEAK {nodeid} - {summary}")
