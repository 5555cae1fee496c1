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
import math
import io
import os
import sys
import time
import warnings
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import pytest

__all__ = ["LeakFailed", "Measurements", "RunDelta", "check_no_leak", "NotRepeatable",
           "NotRepeatableWarning", "Inconclusive", "InconclusiveWarning", "CONFIRM_CALLS",
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
    retainer path (a string) of a new object, filled in only when it leaked.

    ``calls`` is how many times the function was called in all;
    ``screened`` is true when the cheap first pass found no growth (no
    census was taken: ``deltas`` is empty); ``confirmed_calls`` is the
    number of calls the growth was followed over, ``stopped`` the types
    (and ``"memory"``) that grew on the measured runs and then stopped: a
    cache that filled, not a leak."""

    def __init__(self, *, label: str, warmup: int, runs: int, tolerance: float,
                 ignore: tuple[str, ...], deltas: list[RunDelta], growing: list[str],
                 memory_grew: bool, overhead: float, calls: int = 0,
                 screened: bool = False) -> None:
        self.calls = calls
        self.screened = screened
        self.confirmed_calls = 0
        self.stopped: list[str] = []
        self.confirm_note: str | None = None
        self.not_repeatable: str | None = None
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
        text = (f"{self.label} leaks: {' and '.join(parts)} on every one of "
                f"{self.runs} measured runs (after {self.warmup} warm-up runs)")
        if self.confirmed_calls:
            text += f" and kept growing over {self.confirmed_calls} calls"
            if self.confirm_note:
                text += f" ({self.confirm_note} reached)"
        return text

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

# Growth seen on the measured runs is followed up to this many calls of the
# test in all: a bounded cache that one call adds to has filled by then (the
# last stage, calls 128-256, sees it flat), a leak still grows.
CONFIRM_CALLS = 256
# ... or until the follow-up has taken this long (slow tests): the verdict
# then says over how many calls the growth continued.
CONFIRM_SECONDS = 30.0
# Under --memwatch-leaks (every test, none asked for) the follow-up gets this
# long, and growth still going when it ends is no failure: too few calls to
# tell a cache that fills slowly from a leak (the issue asks 200 and more).
# The test is "not measured: inconclusive", with a warning saying how far it
# got; the no_leak marker on it runs the full follow-up.  (attrs' Hypothesis
# tests, 0.3-1 s a call: 6 of them took 36-41 s each at a 30 s limit.)
AUTO_CONFIRM_SECONDS = 10.0
# Under --memwatch-leaks a follow-up that could not get this far in its time
# (at the measured runs' mean call) is not run: the test is inconclusive
# at once.  A quarter of CONFIRM_CALLS: before it, the stages are short and
# judged on the allocator's counters; a cache of Hypothesis's examples is
# still filling.
_FOLLOW_UP_REACH = CONFIRM_CALLS // 4
# A stage confirms growth when it grew by at least this share of what the
# measured runs' slowest rate predicts for its length.
_CONFIRM_SHARE = 0.5


# Under --memwatch-leaks, a test still growing on each of this many census
# runs whose follow-up could not reach _FOLLOW_UP_REACH calls even after the
# other runs is inconclusive at once: the other runs could only clear it.
# One run: on attrs' suite the second run (a call of 0.15-0.6 s and a census
# of about 0.19 s on its heap) cleared 1-2 of some 17 such Hypothesis tests
# and cost about 4 s in all (plugin CPU 45.9 and 46.5 s against 41.7 and
# 42.5 s, alternating runs).  It cannot cost a report: a test is reported
# only after a follow-up of CONFIRM_CALLS calls, four times this reach.
_UNREACHABLE_RUNS = 1


# Under --memwatch-leaks, a test still growing on each of this many census
# runs goes on to the follow-up at once where the follow-up's calls (at the
# runs' slowest) would cost less than the remaining runs' censuses (each a
# full collection and a heap walk).  The remaining runs could only clear a
# cache that fills within two more calls, and the follow-up does that as
# well: its first stage's counters (read in microseconds) show the growth
# stopped, and one census drops what stopped.  For a leak they were two
# censuses more before the same follow-up: 0.4 s on attrs' session heap, 2 s
# at the end of packaging's (a planted leak there cost about 10 s in all).
_FOLLOW_UP_RUNS = 3


def _short_reach(grew: str, what: list[str], call_wall: float, seconds: float,
                 reach: float) -> str:
    return (f"{grew} ({', '.join(what)}); at {call_wall:.2g} s a call (its slowest), the follow-up's "
            f"{seconds:g} s would reach about {int(reach)} calls, short of the "
            f"{_FOLLOW_UP_REACH} it needs to tell a filling cache from a leak; mark it "
            f"no_leak for the full {CONFIRM_CALLS}-call follow-up")


class Inconclusive(Exception):
    """Under ``--memwatch-leaks``: growth still going when the follow-up's
    time ran out, over too few calls for a verdict (the test's own result
    stands)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"inconclusive: {reason}")
        self.reason = reason


class NotRepeatable(Exception):
    """A call after the first failed: the test cannot be measured by calling
    it again (its first call passed, and that is its verdict)."""

    def __init__(self, call_no: int, reason: str) -> None:
        super().__init__(f"not repeatable: call {call_no} {reason}")
        self.call_no = call_no
        self.reason = f"call {call_no} {reason}"


def _describe(exc: BaseException) -> str:
    if type(exc).__name__ == "_Recorded":
        return str(exc)
    if isinstance(exc, pytest.skip.Exception):
        return f"was skipped: {_clip(str(exc.msg if hasattr(exc, 'msg') else exc), 160)}"
    text = str(exc).strip().splitlines()
    first = _clip(text[0], 160) if text else ""
    return f"raised {type(exc).__name__}" + (f": {first}" if first else "")


def _settle(collect: Callable[..., int]) -> None:
    # A young pass after the full one: finalizers and weakref callbacks can
    # free more, and what they drop or make is new, so a young collection
    # finds it (a full one costs as much as the first: 5-160 ms on a pytest
    # session's heap).  It runs whether or not the full one found garbage:
    # a full collection empties the free lists, and the young one leaves a
    # block in one of those _fill_free_lists does not fill (3.14), so a
    # reading after a pass that found garbage had a block more than one
    # after a pass that found none: a 1-block-a-call leak read 0 on that
    # step and went unreported.
    collect()
    collect(0)
    _clear_type_cache()


# CPython's type attribute cache (4096 slots) keeps a strong reference to the
# name of each lookup it caches.  A name built at run time ('visit_' +
# node.__class__.__name__ in ast.NodeVisitor, pickle's global names, inspect)
# is a new str object on every call, and each one stays alive in a slot until
# another lookup evicts it: the allocator's blocks then grow by a few a call,
# for thousands of calls, with no type growing in a census (the cache is no
# object the walk sees).  Measured on toolz's suite: 22 of its 190 tests went
# on to a census for that alone, and every one was flat with the cache
# emptied before each reading.  Emptying it only costs the next lookups a
# miss.  (3.14 deprecates _clear_type_cache for _clear_internal_caches.)
_clear_type_cache: Callable[[], None] = (
    getattr(sys, "_clear_type_cache", None) if sys.version_info < (3, 14)
    else getattr(sys, "_clear_internal_caches", None)) or (lambda: None)


def _malloc_in_use_function() -> Callable[[], int] | None:
    """glibc's mallinfo2(): the bytes malloc has handed out (Python's blocks
    over 512 bytes, C buffers), in microseconds; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError, ImportError):
        return None

    class _Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2.restype = _Info
    mallinfo2.argtypes = []

    def in_use() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


_MALLOC: list[Any] = []


def _malloc_in_use() -> Callable[[], int] | None:
    if not _MALLOC:
        _MALLOC.append(_malloc_in_use_function())
    return _MALLOC[0]


def _fill_free_lists() -> None:
    """Fill the free lists of dicts (and their keys), lists and floats to
    the brim: a leaked dict taken from a free list adds no allocator block,
    so the blocks are compared with those free lists in the same (full)
    state each time.  Allocating as many as a list holds and dropping them
    all leaves it full, whatever it held before.  (The tuple free lists hold
    2000 per size: filling them would cost more than the pass.)  Ints have
    one from 3.14: a leaked int taken from it adds no block either."""
    keep = [{"k": i} for i in range(100)]
    keep += [[] for _ in range(100)]
    keep += [i + 0.5 for i in range(120)]
    keep += [i + _MEDIUM for i in range(120)]
    del keep


# i + _MEDIUM is a new one-digit int (3.14's free list holds only those),
# not one of the small cached ones.
_MEDIUM = 1 << 20


# A reading of sys.getallocatedblocks() walks every pymalloc pool: 8 us on
# boltons' and toolz's session heaps, 37 us on idna's, 170 us on
# packaging's (64k tests).  The counting hooks read in 0.13 us, but while
# they are in every allocation is dearer (+20% on a loop that only
# allocates).  A check counts with the hooks where a reading costs more
# than this share of the test's first call (packaging's test_version.py,
# 51k tests: 110 -> 82 CPU s; boltons' 522, 0.5-5 ms a call: 5% dearer
# with the hooks).  The reading's cost is timed again every 128 checks
# (the heap grows over a session).
_COUNTER_SHARE = 0.1
_READ_COST = [0.0, 0]       # seconds a reading took, checks since it was timed


def _use_block_counter(first_call: float) -> bool:
    cost = _READ_COST
    if cost[1] % 128 == 0:
        t0 = time.perf_counter()
        sys.getallocatedblocks()
        cost[0] = time.perf_counter() - t0
    cost[1] += 1
    return cost[0] > _COUNTER_SHARE * first_call


def _live_blocks() -> int | None:
    from memwatch import _core
    return _core.live_blocks()


def _start_block_counter() -> None:
    from memwatch import _core
    _core.start_block_counter()


class _Screen:
    """The cheap first pass of ``--memwatch-leaks``: after each call a
    young-generation collection and two counters that cost microseconds:
    the blocks Python's allocators have handed out and not taken back
    (every object, tracked or not, big ones too: ``sys.getallocatedblocks()``,
    or the counting hooks' ``_core.live_blocks()`` where that is dearer, see
    _use_block_counter) and the
    bytes malloc has handed out (C buffers).  A leak of objects adds
    blocks on every call; a test that grew neither is clean without a heap
    walk.  A full automatic collection during a call can free old garbage
    and hide a growth: the steps up to it are not judged."""

    __slots__ = ("blocks", "bytes", "full_collections", "in_use", "since", "full", "tuples",
                 "counter", "counted")

    def __init__(self, full: bool = False, counter: bool = False) -> None:
        self.blocks = array("q")
        self.bytes = array("q")
        self.in_use = _malloc_in_use()
        self.full_collections = -1
        self.since = 0                 # the first sample after the last full collection
        self.full = full               # full collections (not young ones) before reading
        # The tuple free lists filled before each reading too (about 1 ms: a
        # full collection empties them anyway; see fill_tuple_free_lists).
        self.tuples = False
        # Blocks from the counting hooks, not sys.getallocatedblocks() (see
        # _use_block_counter), and the sample from which they have counted
        # without a break (they are started at the first).
        self.counter = counter
        self.counted = 0

    def sample(self) -> None:
        import gc
        from memwatch._gcstate import quiet_collect
        if self.full:
            _settle(quiet_collect)
        else:
            quiet_collect(1)
            _clear_type_cache()
        full = gc.get_stats()[-1]["collections"]
        # (After a full collection of its own, an automatic one hid nothing.)
        if full != self.full_collections and not self.full:
            if self.full_collections >= 0:
                self.since = len(self.blocks)      # this sample
            self.full_collections = full
        del full
        # What the pass itself keeps is in place before the counters are
        # read, so it is no step between two samples: the arrays' room for
        # this sample, the collection count (an int object above 256).  An
        # empty test's first step was +5 blocks before (the arrays' first
        # buffers, that int, the timer's floats and the loop's iterator).
        blocks, in_use = self.blocks, self.bytes
        blocks.append(0)
        in_use.append(0)
        _fill_free_lists()
        if self.tuples:
            from memwatch import _core
            _core.fill_tuple_free_lists()
        n = _live_blocks() if self.counter else sys.getallocatedblocks()
        if n is None:
            # The counter was not running (the first sample) or lost its
            # hooks (another tool restored an allocator from before them):
            # counting starts here, and no step up to here is judged.
            _start_block_counter()
            n = _live_blocks()
            self.since = self.counted = len(blocks) - 1
        blocks[-1] = n
        in_use[-1] = self.in_use() if self.in_use is not None else 0

    def counted_since(self, k: int) -> bool:
        """Whether the blocks of sample ``k`` and the latest are comparable."""
        return self.counted <= k

    def judged(self, last: int = 2) -> bool:
        """Whether the ``last`` latest steps came after any full collection."""
        return len(self.blocks) - 1 - self.since >= last

    def grew(self, tolerance: float, last: int = 2) -> bool:
        """Whether the blocks, or the bytes by more than ``tolerance``, grew
        on each of the ``last`` latest steps between samples; true as well
        when a full collection leaves fewer steps to judge (inconclusive)."""
        if not self.judged(last):
            return True
        b, s = self.blocks, self.bytes
        steps = range(len(b) - last, len(b))
        return (all(b[i] > b[i - 1] for i in steps)
                or all(s[i] - s[i - 1] > tolerance for i in steps))


# The first pass: 3 calls (2 when the first step grew nothing).  When they
# grew and a call is cheap (at most _SCREEN_CHEAP seconds), it goes on to
# _SCREEN_CALLS calls and the growth
# must go on over the last _SCREEN_LAST steps: what grows over the first few
# calls and then stops (glibc's per-thread cache of freed chunks filling,
# which mallinfo2 counts as in use; first-call caches; 3.14's specialising
# interpreter) is no reason for a census.  A leak grows in every step once
# the allocator's caches of its size are used up (glibc keeps 7 chunks per
# size by default).  A full collection inside the last steps adds calls
# (_SCREEN_LAST more at most).
_SCREEN_CALLS = 16
_SCREEN_LAST = 4
_SCREEN_CHEAP = 0.005          # CPU seconds a call
_SCREEN_CHEAP_WALL = 0.05      # wall seconds a call
# Where the first call cost more CPU than this, the census runs follow it at
# once, with it as their only warm-up; where it did not but the second call
# of the first pass did and grew, they follow that one.  The first pass's
# later calls and its full-collection pass (two more calls) would cost more
# than the census's heap walks, and the first census run clears what they
# would have (growth must show on every run, after full collections).
# python-dateutil's tz data tests, 3.5 s a call, went from 5-6 calls to 3,
# then to 2 (a dear first call: 29 of dateutil's 32 and all 22 of attrs'
# had a dear second call too; the other 3 went through census runs they did
# not need, 0.2 s each on dateutil's heap).
_SCREEN_DEAR = 0.1


def check_no_leak(call: Callable[[], Any], *, label: str = "the function",
                  warmup: int | None = None, runs: int | None = None,
                  ignore: Any = None, tolerance: float | None = None,
                  examples: bool = True, raise_on_leak: bool = True,
                  funcargs: Iterable[Any] = (), node: Any = None,
                  screen: bool = False, confirm: bool = True) -> Measurements:
    """Call ``call()`` ``warmup`` times, then ``runs`` times with a census
    after a full collection around each, and judge the growth; growth on
    every measured run is followed up (``confirm``) to ``CONFIRM_CALLS``
    calls and is a leak only when it keeps going.

    The first call is the test's own: its exceptions propagate unchanged.
    An exception from a later call raises :class:`NotRepeatable`.  With
    ``screen``, a cheap first pass decides whether the census runs at all.
    Raises :class:`LeakFailed` (a pytest failure) when it leaks and
    ``raise_on_leak``; returns the :class:`Measurements` otherwise."""
    from memwatch import _core
    try:
        return _measure(call, label, warmup, runs, ignore, tolerance, examples, raise_on_leak,
                        funcargs, node, screen, confirm)
    finally:
        # The counting hooks cost every allocation an indirect call: they
        # are in only while a test is measured (see _blocks.h).
        _core.stop_block_counter()


def _measure(call: Callable[[], Any], label: str, warmup: int | None, runs: int | None,
             ignore: Any, tolerance: float | None, examples: bool, raise_on_leak: bool,
             funcargs: Iterable[Any], node: Any, screen: bool, confirm: bool) -> Measurements:
    warmup, runs, ignore_names, tolerance = _options(warmup, runs, ignore, tolerance)
    from memwatch import _core
    from memwatch._gcstate import quiet_collect

    walk = _core.walk
    perf = time.perf_counter
    sinks = _Sinks()
    sinks.begin(funcargs, node)
    calls = 0
    counter = [False]           # whether this check's block readings are the hooks'
    first_cpu = 0.0             # the first call's CPU seconds

    def invoke() -> None:
        nonlocal calls, first_cpu
        calls += 1
        if calls == 1:
            # The first call runs before the sinks are marked, so its
            # captured logs and warnings stay in the report.
            w0, c0 = perf(), time.process_time()
            call()
            first_cpu = time.process_time() - c0
            counter[0] = _use_block_counter(perf() - w0)
            sinks.mark()
            return
        failure = None
        try:
            call()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - pytest outcomes too
            failure = _describe(exc)
            del exc
        sinks.trim()
        if failure is not None:
            raise NotRepeatable(calls, failure)

    dear = False        # the first pass hands a dear call straight to the census runs
    settled = False     # the heap was last read after full collections, with no call since
    if screen:
        first = _Screen(counter=counter[0])
        flat = False
        for i in range(3):
            invoke()
            if i == 0 and first_cpu > _SCREEN_DEAR:
                # A dear first call: the census runs judge it from here,
                # with the first call as their warm-up (see _SCREEN_DEAR).
                dear = True
                break
            if i == 0:
                first.counter = counter[0]      # (decided by the first call)
                # The first call's own first-time work is not its cost.
                # (Taken before the first sample, as is the loop's iterator:
                # what the pass itself holds is no step between samples.)
                t0, c0 = perf(), time.process_time()
            first.sample()
            if i == 1 and not first.grew(tolerance, 1):
                # Growth must show on both steps: a first step that grew
                # neither counter (after no full collection) settles it,
                # and the third call is saved.
                flat = True
                break
            if i == 1 and time.process_time() - c0 > _SCREEN_DEAR:
                # A dear call: the census runs judge it from here (see
                # _SCREEN_DEAR), with the two calls made as its warm-up.
                dear = True
                break
        # The samples' own cost (a young collection, the free lists) is
        # counted with the calls: cheap enough either way.  CPU time decides
        # (a loaded machine does not make a call dear); wall time bounds it
        # (a test that sleeps or waits is dear).
        cheap = (not flat and not dear and (time.process_time() - c0) / 2 <= _SCREEN_CHEAP
                 and (perf() - t0) / 2 <= _SCREEN_CHEAP_WALL)
        grew = dear or (not flat and first.grew(tolerance))
        if grew and cheap:
            # From here on the tuple free lists are full at each reading: a
            # list filling up over the calls is the commonest growth that is
            # no leak (a tuple resized while built moves a block a call from
            # one size's list to another's).  The step that fills them is no
            # evidence; after it, a step that grew nothing settles it, as in
            # the first three calls.
            first.tuples = True
            filled = len(first.blocks)
            while calls < _SCREEN_CALLS or (not first.judged(_SCREEN_LAST)
                                            and calls < _SCREEN_CALLS + _SCREEN_LAST):
                invoke()
                first.sample()
                if len(first.blocks) > filled + 1 and not first.grew(tolerance, 1):
                    grew = False
                    break
            else:
                grew = first.grew(tolerance, _SCREEN_LAST)
        if grew and not dear:
            # Growth after young collections can be garbage the collections
            # promoted before it became garbage (a cycle dropped on the next
            # call): the same counters after full collections, over two more
            # calls, before the census (which costs a heap walk per call).
            # Growth must show on both steps here too: a first step that grew
            # nothing settles it, and the second call is saved.
            # (No loop: its iterator, made after the first sample, would be a
            # block on the first step.)
            second = _Screen(full=True, counter=counter[0])
            second.sample()
            invoke()
            second.sample()
            grew = second.grew(tolerance, 1)
            if grew:
                invoke()
                second.sample()
                grew = second.grew(tolerance)
            settled = True
        if not grew:
            return Measurements(label=label, warmup=warmup, runs=runs, tolerance=tolerance,
                                ignore=ignore_names, deltas=[], growing=[],
                                memory_grew=False, overhead=0.0, calls=calls,
                                screened=True)
    while calls < warmup and not dear:
        invoke()
        settled = False

    raws: list[Any] = [None] * (runs + 1)
    spent = array("d", bytes(8 * (runs + 1)))
    # Under --memwatch-leaks the runs stop as soon as no type has grown on
    # every run so far and the bytes have not either: the verdict (growth on
    # every run) is then settled, clean.  A dear test that got this far
    # (dateutil's tz data tests, 4 s a call) is spared 3-4 of its 5 runs.
    # Made before the first census, and only changed in place, so every
    # census counts them alike.
    candidates: set[str] = set()
    memory = [True]
    t0 = perf()
    if settled:
        # The full-collection pass's last sample collected it all, and what
        # was made since (its counters, the census's arrays) is no garbage
        # cycle: another full collection (80-110 ms on attrs' and dateutil's
        # session heaps) would find nothing a young one does not.
        quiet_collect(0)
        _clear_type_cache()
    else:
        _settle(quiet_collect)
    raws[0] = walk()
    spent[0] = perf() - t0
    call_cpu = math.inf
    # The runs' slowest call, wall seconds: what the follow-up's reach is
    # judged on (see below).
    call_slow = 0.0
    done = runs
    for i in range(1, runs + 1):
        c0, w0 = time.process_time(), perf()
        invoke()
        call_cpu = min(call_cpu, time.process_time() - c0)
        call_slow = max(call_slow, perf() - w0)
        t0 = perf()
        _settle(quiet_collect)
        raws[i] = walk()
        spent[i] = perf() - t0
        if screen and i < runs and not _growth_possible(raws, i, candidates, memory,
                                                        ignore_names, tolerance):
            done = i
            break
        if screen and confirm and _UNREACHABLE_RUNS <= i < runs:
            # Still growing on every run.  If the follow-up could not get
            # far enough even after the remaining runs, those runs could only
            # clear the test, never find a leak: the test is inconclusive now
            # (attrs' Hypothesis tests, 0.2-0.5 s a call, spent 7 calls to
            # end inconclusive).
            reach = calls + runs - i + AUTO_CONFIRM_SECONDS / call_slow if call_slow else math.inf
            if reach < _FOLLOW_UP_REACH:
                raise Inconclusive(_short_reach(
                    "grew on its first census run" if i == 1 else
                    f"grew on each of its first {i} census runs",
                    sorted(candidates)[:3] + (["memory"] if memory[0] else []),
                    call_slow, AUTO_CONFIRM_SECONDS, reach))
        if (screen and confirm and i == _FOLLOW_UP_RUNS < runs
                and (CONFIRM_CALLS - calls) * call_slow
                <= (runs - i) * sum(spent[:i + 1]) / (i + 1)):
            # Still growing on each run, and the follow-up's calls would
            # cost less than the remaining runs' censuses: it goes on now
            # (see _FOLLOW_UP_RUNS).
            done = i
            break
    del candidates, memory
    raws = raws[:done + 1]
    measured_warmup = calls - done
    m = _judge(raws, label=label, warmup=measured_warmup, runs=done, tolerance=tolerance,
               ignore=ignore_names, overhead=sum(spent[:done + 1]) / (done + 1))
    last = _table(raws[-1])
    _uncount_own(last, done, raws[0])
    # Only what the follow-up compares is kept: a whole table (a list and
    # ints per type) alive during the next census would count as growth.
    counts = {n: last[n][0] for n in m.growing}
    total = _total(last, ignore_names)
    del raws, last
    m.calls = calls
    if m.leaked and confirm:
        seconds = AUTO_CONFIRM_SECONDS if screen else CONFIRM_SECONDS
        # The follow-up's time limit is wall time, spent on calls: the
        # slowest census-run call predicts it.  The fastest predicted too
        # little (dateutil's test_timespec_auto, 0.28 s plainly, still spent
        # 12 s), and so did the mean where calls vary: a random test's calls
        # vary 2x (attrs' test_fields, Hypothesis: 0.12-0.31 s), and its mean
        # said 64 calls where the follow-up made 53 in its 10 s (test_fields;
        # test_no_changes: 26 calls in 5 s).
        reach = calls + (seconds / call_slow if call_slow > 0 else math.inf)
        if screen and reach < _FOLLOW_UP_REACH:
            # The follow-up could only time out, or clear the test on a
            # partial stage far from the calls that decide: not worth its
            # seconds (attrs' Hypothesis tests, 0.3-1 s a call, spent 10 s
            # each to end inconclusive at 12-40 calls).
            raise Inconclusive(_short_reach(
                f"grew over {calls} calls",
                m.growing[:3] + (["memory"] if m.memory_grew else []),
                call_slow, seconds, reach))
        _confirm(m, invoke, lambda: calls, counts, total, walk, quiet_collect, seconds,
                 counter[0], _FOLLOW_UP_REACH if screen else 0)
    del counts
    if m.leaked and screen and m.confirm_note:
        grew = ", ".join(m.growing[:3] + (["memory"] if m.memory_grew else []))
        raise Inconclusive(f"grew over {m.confirmed_calls} calls ({grew}) and was still "
                           f"growing when the follow-up's {AUTO_CONFIRM_SECONDS:g} s ran "
                           f"out; mark it no_leak for the full {CONFIRM_CALLS}-call follow-up")
    if m.leaked:
        if examples:
            try:
                # (No call since the last census's full collections.)
                _find_examples(m, invoke, sinks, trace=call_cpu <= _TRACE_CALL_CPU,
                               settled=True)
            except (pytest.fail.Exception, NotRepeatable):
                raise
            except BaseException as exc:  # noqa: BLE001 - diagnostics only
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                m.example_note = f"finding retainer paths failed: {type(exc).__name__}: {exc}"
        if raise_on_leak:
            raise LeakFailed(m)
    return m


def _confirm(m: Measurements, invoke: Callable[[], None], calls: Callable[[], int],
             last: dict[str, int], total_size: int, walk: Callable[[], Any],
             collect: Callable[[], int], seconds: float = CONFIRM_SECONDS,
             counter: bool = False, reach: int = 0) -> None:
    """Keep calling to CONFIRM_CALLS calls in stages ending at 16, 32, ...:
    a growing type (or the bytes) must grow over every stage by at least
    half what its slowest measured rate predicts.  What stops growing was a
    cache filling; the verdict keeps only what grew to the end.

    A census (a full collection and a heap walk) is taken at the last two
    checkpoints, which decide; at the earlier ones the allocator's blocks
    and malloc's bytes (microseconds) are read first, and a census follows
    only when they grew less than the growing types predict (the growth may
    have stopped: the follow-up can end early).  Stages with no census are
    judged together with the next one.

    With ``reach`` (under ``--memwatch-leaks``), a follow-up whose slowest
    call so far says it can no longer get to ``reach`` calls in its time
    stops there: the test is :class:`Inconclusive`."""
    rates = {n: min(d.count(n) for d in m.deltas) for n in m.growing}
    byte_rate = min(m.size_diffs) if m.memory_grew else 0
    start = time.perf_counter()
    checkpoint = 16
    decisive = CONFIRM_CALLS // 2
    cheap = _Screen(counter=counter)
    cheap.sample()
    census_at = calls()
    slowest = 0.0
    while (rates or byte_rate > 0) and calls() < CONFIRM_CALLS:
        while checkpoint <= calls():
            checkpoint *= 2
        checkpoint = min(checkpoint, CONFIRM_CALLS)
        before = calls()
        while calls() < checkpoint:
            w0 = time.perf_counter()
            invoke()
            now = time.perf_counter()
            slowest = max(slowest, now - w0)
            if now - start > seconds:
                break
            left = calls() + (seconds - (now - start)) / slowest if slowest > 0 else math.inf
            if left < reach:
                # Calls got slower than the census runs' (a random test's
                # vary 2x; attrs' test_asdict_preserve_order ran its whole
                # 10 s to end short of 64): the rest of the time could only
                # run out.
                raise Inconclusive(_short_reach(
                    f"grew over {calls()} calls",
                    sorted(rates)[:3] + (["memory"] if byte_rate > 0 else []),
                    slowest, seconds, left))
        timed_out = time.perf_counter() - start > seconds
        if calls() < decisive and not timed_out:
            cheap.sample()
            stage = calls() - before
            blocks = cheap.blocks[-1] - cheap.blocks[-2]
            in_use = cheap.bytes[-1] - cheap.bytes[-2]
            # Every object is at least one block; bytes growth alone shows
            # only in malloc's bytes (big objects, C buffers).  (A block
            # counter started again in the stage proves nothing: a census.)
            objects_on = (bool(rates) and cheap.counted_since(len(cheap.blocks) - 2)
                          and blocks >= _CONFIRM_SHARE * sum(rates.values()) * stage)
            bytes_on = byte_rate > 0 and in_use >= _CONFIRM_SHARE * byte_rate * stage
            if objects_on or (not rates and bytes_on):
                continue
        stage = calls() - census_at
        _settle(collect)
        raw = walk()
        table = _table(raw)
        del raw
        for name in list(rates):
            grown = table.get(name, (0, 0))[0] - last[name]
            if grown < _CONFIRM_SHARE * rates[name] * stage:
                del rates[name]
        new_total = _total(table, m.ignore)
        if byte_rate > 0 and new_total - total_size < _CONFIRM_SHARE * byte_rate * stage:
            byte_rate = 0
        for name in rates:
            last[name] = table.get(name, (0, 0))[0]
        total_size, census_at = new_total, calls()
        del table
        cheap.sample()
        if timed_out:
            m.confirm_note = f"time limit {seconds:g} s"
            break
    stopped = [n for n in m.growing if n not in rates]
    m.confirmed_calls = calls()
    if stopped or (m.memory_grew and byte_rate <= 0):
        m.stopped = stopped + (["memory"] if m.memory_grew and byte_rate <= 0 else [])
    m.growing = [n for n in m.growing if n in rates]
    m.memory_grew = m.memory_grew and byte_rate > 0


def _growth_possible(raws: list[Any], i: int, candidates: set[str], memory: list[bool],
                     ignore: tuple[str, ...], tolerance: float) -> bool:
    """After census ``i``: whether a type has grown in count on every run so
    far (``candidates``, narrowed in place) or the bytes have (``memory[0]``):
    what ``_judge`` needs on every run.  The two tables are dropped before
    the next census."""
    prev = _table(raws[i - 1])
    _uncount_own(prev, i - 1, raws[0])
    cur = _table(raws[i])
    _uncount_own(cur, i, raws[0])
    grown = [n for n, (c, _) in cur.items()
             if c > prev.get(n, (0, 0))[0] and not _matches(n, ignore)]
    if i == 1:
        candidates.update(grown)
    else:
        candidates.intersection_update(grown)
    memory[0] = memory[0] and _total(cur, ignore) - _total(prev, ignore) > tolerance
    return bool(candidates) or memory[0]


def _uncount_own(table: dict[str, list[int]], k: int, raw: Any) -> None:
    # Census k saw the k results taken before it: take them out.
    slot = table.get(_RAW_TYPE)
    if slot is not None and k:
        slot[0] -= k
        slot[1] -= k * sys.getsizeof(raw)


def _total(table: dict[str, list[int]], ignore: tuple[str, ...]) -> int:
    return sum(s for n, (_, s) in table.items() if not _matches(n, ignore))


# CPython 3.10 gives a code object an inline cache once it has run 1024
# times, and sys.getsizeof(code) counts it (176 -> 282 bytes for a small
# function): code grows as it gets hot, which is warm-up, not a leak.  There
# code is sized at one fixed mean per object (taken from the first census), so
# its bytes change only with its count: new code objects still show.
_CODE_GROWS_WHEN_HOT = sys.version_info < (3, 11)
_code_mean_size: int | None = None


def _table(raw: Any) -> dict[str, list[int]]:
    global _code_mean_size
    table: dict[str, list[int]] = {}
    for name, count, size in raw.rows():
        slot = table.get(name)
        if slot is None:
            table[name] = [count, size]
        else:
            slot[0] += count
            slot[1] += size
    code = table.get("code") if _CODE_GROWS_WHEN_HOT else None
    if code is not None and code[0] > 0:
        if _code_mean_size is None:
            _code_mean_size = max(1, code[1] // code[0])
        code[1] = code[0] * _code_mean_size
    return table


def _judge(raws: list[Any], *, label: str, warmup: int, runs: int, tolerance: float,
           ignore: tuple[str, ...], overhead: float) -> Measurements:
    tables = [_table(r) for r in raws]
    for k, t in enumerate(tables):
        _uncount_own(t, k, raws[0])
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

def _live_objects() -> list[Any]:
    """Every object on the heap (tracked or not), as strong references: the
    census walk in C (``keep_objects``), which takes its references at the
    end of the walk, while the walk still pins every object it counted, and
    never one to an object with no reference left (a stale pointer CPython
    3.12 leaves to a free-listed object).  Unsized, it allocates a handful
    of blocks, so it costs the same with tracemalloc tracing: the Python
    scan it replaced (gc.get_objects() and a walk through the plain
    containers) allocated an object or two per object seen, each one traced
    with 16 frames: 6-9 s a scan on toolz's suite, against 0.03 s.  (Sized,
    each C __sizeof__ returns a new int, traced too: 0.3 s.)"""
    from memwatch import _core
    return _core.walk(keep_objects=True, sizes=False).objects


_TRACE_FRAMES = 16             # tracemalloc frames kept while finding examples
# The call traced for allocation sites is skipped when a call costs more CPU
# than this: tracing costs 10-80x (a Hypothesis test of attrs, about 1 s a
# call, took 86 s traced).
_TRACE_CALL_CPU = 0.1
_OWN_DIR = __file__.rsplit("/", 1)[0].rsplit("\\", 1)[0]


def _foreign_frames(traceback: Any) -> list[Any]:
    """The allocation's frames, innermost first, without memwatch's, pytest's
    and pluggy's own."""
    import os
    skip = (_OWN_DIR + os.sep, os.sep + "_pytest" + os.sep, os.sep + "pluggy" + os.sep)
    # A tracemalloc.Traceback runs from the oldest frame to the most recent.
    frames = list(traceback)[::-1]
    return [f for f in frames if not any(s in f.filename for s in skip)]


def _format_site(frames: list[Any]) -> str:
    """Where it was allocated: the innermost frame, and the innermost one
    outside the standard library (the caller's code) when that is another."""
    import linecache
    import os
    import sysconfig
    stdlib = sysconfig.get_paths().get("stdlib", "\0") + os.sep
    shown = frames[:1] + [f for f in frames[1:] if not f.filename.startswith(stdlib)][:1] \
        if frames and frames[0].filename.startswith(stdlib) else frames[:1]
    cwd = os.getcwd() + os.sep
    parts = []
    for f in shown:
        name = f.filename[len(cwd):] if f.filename.startswith(cwd) else f.filename
        line = linecache.getline(f.filename, f.lineno).strip()
        parts.append(f"{name}:{f.lineno}" + (f" ({_clip(line, 60)})" if line else ""))
    return " <- ".join(parts)


def _describe_function(func: Any) -> str:
    code = getattr(func, "__code__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    module = getattr(func, "__module__", None)
    text = f"{module}.{name}" if module and module != "builtins" else name
    if code is not None:
        text += f" ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"
    return text


def _thread_target(thread: Any) -> str | None:
    """What a thread runs: its target, its own run(), or the function its
    running frame entered from Thread.run."""
    import threading
    target = getattr(thread, "_target", None)
    if target is not None:
        return _describe_function(target)
    run = getattr(type(thread), "run", None)
    if run is not None and run is not threading.Thread.run:
        return _describe_function(run)
    ident = getattr(thread, "ident", None)
    frame = sys._current_frames().get(ident) if ident is not None else None
    run_code = threading.Thread.run.__code__
    while frame is not None:
        back = frame.f_back
        if back is not None and back.f_code is run_code:
            code = frame.f_code
            return (f"{getattr(code, 'co_qualname', code.co_name)} "
                    f"({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})")
        frame = back
    return None


def _holder_path(chain: list[Any], roots: dict[int, str]) -> str:
    """A shortest retainer chain of an object itself (for a class: of the
    class, never of its instances) as text, with the holders named as a
    reader looks for them: ``gc.garbage`` when that list holds it, a thread's
    target when a thread holds it (or is it)."""
    import gc
    import threading
    from memwatch.retainer_paths import _build_path
    path = _build_path(chain, roots)
    text = str(path)
    start = 1 if chain and chain[0] is None else 0
    # gc.garbage is reached from the gc module (or, when nothing else holds
    # it, from outside the graph): the path from that list on is the story.
    at = next((i for i, o in enumerate(chain[start:]) if o is gc.garbage), None)
    if at is not None:
        labels = [s.label for s in path.steps]
        head = labels[at]
        for prefix in ("list (external)", "list"):
            if head.startswith(prefix):
                head = head[len(prefix):]
                break
        text = " -> ".join(["gc.garbage" + head] + labels[at + 1:])
    del path
    thread = next((o for o in chain[start:] if isinstance(o, threading.Thread)), None)
    if thread is not None:
        target = _thread_target(thread)
        if target:
            text += f" (thread {thread.name!r} running {target})"
    del thread
    return text


def _find_examples(m: Measurements, call: Callable[[], Any], sinks: _Sinks,
                   trace: bool = True, settled: bool = False) -> None:
    """One more call, traced by tracemalloc (unless ``trace`` is false), with
    every object listed before and after it: an example is an object of a
    top type that is new, was allocated during the call and not by memwatch;
    its holder is found by the C graph search and its allocation site is
    shown.  ``settled``: full collections ran since the last call (a young
    one is then enough before the first listing)."""
    import tracemalloc
    from memwatch import _core, type_name
    from memwatch._gcstate import quiet_collect

    import tracemalloc     # before the first scan: its module is no new object
    wanted = m.table_types()[:_EXAMPLE_TYPES]
    if not wanted:
        return
    for name in wanted:
        m.examples[name] = None
    try:
        from memwatch import _graph
        from memwatch.retainer_paths import _build_path  # noqa: F401
    except ImportError:
        m.example_note = "memwatch.retainers() is not available in this memwatch"
        return
    wanted_set = set(wanted)
    names: dict[type, str] = {}

    # Both scans hold every object only for a few C calls (set, map, sorted,
    # new_objects: no bytecode runs, so no other thread does): another
    # thread's tuple(generator) must never find its tuple shared (see
    # docs/DEVELOPING.md).  The old addresses go into a C array, not a set of
    # ints: no int made here survives into the second scan.
    if settled:
        # What memwatch made since is no garbage cycle (as for the census
        # baseline in _measure): a full collection here (85 ms on attrs'
        # session heap, 230 ms at the end of packaging's) would find nothing.
        quiet_collect(0)
        _clear_type_cache()
    else:
        _settle(quiet_collect)
    objects = _live_objects()
    before = _core.sorted_addresses(objects)
    del objects
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing and trace:
        tracemalloc.start(_TRACE_FRAMES)
    elif not was_tracing:
        m.example_note = (f"allocation sites not traced: a call takes over "
                          f"{_TRACE_CALL_CPU:g} s of CPU, and tracing every allocation "
                          f"costs 10-80 times that")
    found: dict[str, list[Any]] = {n: [] for n in wanted}
    # New objects tracemalloc has no traceback for: taken from a free list
    # (dicts on every version, ints from 3.14, floats, tuples...) their memory
    # was allocated before tracing began, so the leaked object itself is often
    # one of these.  Tried after those with a traceback of their own.
    reused: dict[str, list[Any]] = {n: [] for n in wanted}
    sites: dict[int, list[Any]] = {}
    own = (found, reused, sites, names)
    try:
        call()
        _settle(quiet_collect)
        # The new objects, picked in C: while tracemalloc traces, a Python
        # loop over the heap (an id() int per object, a set of the old
        # addresses) cost 60-200 us an object on toolz's suite.
        objects = _live_objects()
        new = _core.new_objects(objects, None, before)
        del objects
        for tp in set(map(type, new)):
            if tp not in names:
                names[tp] = type_name(tp)
        types = {tp for tp, name in names.items() if name in wanted_set}
        mine = {id(x) for x in (*names.values(), *own, *found.values(), *reused.values(),
                                before, new)}
        for obj in new:
            if type(obj) not in types or id(obj) in mine:
                continue
            traceback = tracemalloc.get_object_traceback(obj)
            if traceback is None and not was_tracing:
                bucket = reused[names[type(obj)]]
                if len(bucket) < _EXAMPLE_CANDIDATES:
                    bucket.append(obj)
                continue
            bucket = found[names[type(obj)]]
            if len(bucket) >= _EXAMPLE_CANDIDATES:
                continue
            frames = _foreign_frames(traceback) if traceback is not None else []
            if traceback is not None and not frames:
                continue           # memwatch's (or pytest's) own bookkeeping
            bucket.append(obj)
            if frames:
                # Formatted once tracing is off, for the example shown only
                # (it reads source lines).
                sites[id(obj)] = frames
        # (The last bucket is no holder: drop this frame's name for it.)
        obj = bucket = None
        del new, mine, types
    finally:
        if not was_tracing and trace:
            tracemalloc.stop()
    del before
    # Every candidate of every type in one search (a heap graph costs about
    # 70 ms on a pytest session's heap), those with a traceback first.  The
    # tuple is their only holder here: this frame keeps no name for any.
    order = [name for name in wanted for _ in range(len(found[name]) + len(reused[name]))]
    targets = tuple(x for name in wanted for x in (*found.pop(name), *reused.pop(name)))
    chains, roots = _graph.shortest_paths_many(targets, own)
    target = chain = None
    for name, target, chain in zip(order, targets, chains):
        if chain is None or m.examples[name] is not None:
            continue
        frames = sites.get(id(target))
        site = _format_site(frames) if frames else ""
        m.examples[name] = (_holder_path(chain, roots)
                            + (f"\n      allocated at {site}" if site else ""))
    del targets, chains, target, chain


# --------------------------------------------------------------------------
# pytest hooks
# --------------------------------------------------------------------------

_STATUS_PROPERTY = "memwatch_status"
_MEASURED = "measured"
_LEAKED = "leaked"
_NOT_REPEATABLE = "not repeatable: "
_INCONCLUSIVE = "inconclusive: "
_NOT_MEASURED = "not measured: "
_AUTO = pytest.StashKey[bool]()


class NotRepeatableWarning(pytest.PytestWarning):
    """A test passed its first call and failed a repeated one: memwatch could
    not measure it (the test still passes)."""


class InconclusiveWarning(pytest.PytestWarning):
    """Under ``--memwatch-leaks``, a test's growth was still going when the
    follow-up's time ran out: no verdict (the test still passes)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memwatch", "memwatch: memory leak checks")
    group.addoption("--memwatch-leaks", action="store_true", default=False,
                    dest="memwatch_leaks",
                    help="check every test (unittest.TestCase ones too) for memory "
                         "that grows with every call: a cheap first pass, then "
                         "measured calls with a heap census where it grew; lists "
                         "the tests that leaked and those not measured at the end")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "no_leak(warmup=3, runs=5, ignore=(), tolerance=0): call the test function "
        "warmup + runs times (fixtures set up once) and fail it when a type's count, "
        "or the bytes beyond tolerance, grow on every measured run and keep growing "
        f"up to {CONFIRM_CALLS} calls (memwatch)")
    if not config.pluginmanager.has_plugin("memwatch-leak-summary"):
        config.pluginmanager.register(_LeakSummary(config), "memwatch-leak-summary")


def _set_status(item: Any, status: str) -> None:
    item.user_properties.append((_STATUS_PROPERTY, status))


def _is_testcase(item: pytest.Item) -> bool:
    unittest = sys.modules.get("_pytest.unittest")
    cls = getattr(unittest, "TestCaseFunction", None)
    return cls is not None and isinstance(item, cls)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    auto = config.getoption("memwatch_leaks", False)
    for item in items:
        if not isinstance(item, pytest.Function):
            if auto:
                _set_status(item, f"{_NOT_MEASURED}not a Python test function "
                                  f"({type(item).__name__})")
            continue
        if auto and item.get_closest_marker(MARKER) is None \
                and MARKER not in getattr(item, "fixturenames", ()):
            item.add_marker(MARKER)
            item.stash[_AUTO] = True
        if _is_testcase(item) and item.get_closest_marker(MARKER) is not None:
            _wrap_testcase(item)


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
    _set_status(item, _LEAKED)
    item.user_properties.append((_LEAK_PROPERTY, m.summary()))


def _inconclusive(item: Any, failure: Inconclusive) -> None:
    _set_status(item, _INCONCLUSIVE + failure.reason)
    try:
        item.warn(InconclusiveWarning(f"memwatch: {item.name} not measured: "
                                      f"inconclusive ({failure.reason})"))
    except Warning:
        pass    # -W error: the summary still lists it; the test must not turn red


def _not_repeatable(item: Any, failure: NotRepeatable) -> None:
    _set_status(item, _NOT_REPEATABLE + failure.reason)
    try:
        item.warn(NotRepeatableWarning(
            f"memwatch: {item.name} not measured: not repeatable ({failure.reason}); "
            f"its first call passed and is its result"))
    except Warning:
        pass    # -W error: the summary still lists it; the test must not turn red


def _run_checked(item: Any, call: Callable[[], None], funcargs: Iterable[Any]) -> None:
    marker = item.get_closest_marker(MARKER)
    options = _marker_options(marker)
    try:
        check_no_leak(call, label=item.name, funcargs=funcargs, node=item,
                      screen=bool(item.stash.get(_AUTO, False)), **options)
    except LeakFailed as failure:
        _record_leak(item, failure.measurements)
        raise
    except NotRepeatable as failure:
        _not_repeatable(item, failure)
        return
    except Inconclusive as failure:
        _inconclusive(item, failure)
        return
    _set_status(item, _MEASURED)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object | None:
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None:
        return None
    testfunction = pyfuncitem.obj
    if inspect.iscoroutinefunction(testfunction) or inspect.isasyncgenfunction(testfunction):
        # No async plugin wrapped it: pytest's own hook reports that.
        _set_status(pyfuncitem, f"{_NOT_MEASURED}async test without an async plugin")
        return None
    funcargs = pyfuncitem.funcargs
    testargs = {arg: funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}

    def call() -> None:
        testfunction(**testargs)

    _run_checked(pyfuncitem, call, testargs.values())
    return True


# -- unittest.TestCase tests ------------------------------------------------
# pytest runs them through TestCaseFunction.runtest(), which hands the test
# to unittest with the item as its result object: outcomes are recorded in
# item._excinfo, not raised, and pytest_pyfunc_call is never called.

class _Recorded(Exception):
    """An outcome unittest recorded on the item during a call."""


def _wrap_testcase(item: Any) -> None:
    runtest = item.runtest

    def checked_runtest() -> None:
        _run_testcase(item, runtest)

    item.runtest = checked_runtest


def _run_testcase(item: Any, runtest: Callable[[], None]) -> None:
    if inspect.iscoroutinefunction(getattr(item, "obj", None)):
        _set_status(item, f"{_NOT_MEASURED}async unittest test")
        runtest()
        return
    state = {"first": True, "sub_failed": None}

    def add_subtest(test_case: Any, test: Any, exc_info: Any) -> None:
        # Repeated calls report no subtests again; a failing one makes the
        # call a failure.
        if exc_info is not None and state["sub_failed"] is None:
            value = exc_info[1] if isinstance(exc_info, tuple) else exc_info.value
            state["sub_failed"] = _describe(value)

    def call() -> None:
        recorded = item.__dict__.get("_excinfo")
        n = len(recorded) if recorded else 0
        first = state["first"]
        state["first"] = False
        if not first:
            item.addSubTest = add_subtest
        try:
            runtest()
        finally:
            if not first:
                del item.addSubTest
        recorded = item.__dict__.get("_excinfo")
        if recorded and len(recorded) > n:
            if first:
                raise _Recorded("first call")   # the test's own outcome: pytest reports it
            text = _describe(recorded[n].value)
            del recorded[n:]
            raise _Recorded(text)
        if state["sub_failed"] is not None:
            text, state["sub_failed"] = state["sub_failed"], None
            raise _Recorded(f"had a failing subtest: {text}")

    try:
        _run_checked(item, call, ())
    except _Recorded:
        return


@pytest.fixture
def no_leak(request: pytest.FixtureRequest) -> Callable[..., Measurements]:
    """``no_leak(func, *args, **kwargs)``: call ``func(*args, **kwargs)``
    ``warmup`` times, then ``runs`` measured times with a heap census after a
    full collection around each; fail the test when a type's count grows on
    every measured run, or the bytes grow on every run by more than
    ``tolerance``, and keep growing up to ``CONFIRM_CALLS`` calls.  Keyword
    options: ``warmup=3``, ``runs=5``, ``ignore=()`` (type names, glob
    patterns or types), ``tolerance=0`` (bytes per run).  Returns the
    :class:`Measurements`; when a call after the first fails, the returned
    measurements have ``not_repeatable`` set (the reason) and a warning says
    so.  A coroutine function is run on one event loop kept for all the calls."""

    def check(func: Callable[..., Any], /, *args: Any, warmup: int | None = None,
              runs: int | None = None, ignore: Iterable[Any] | None = None,
              tolerance: float | None = None, **kwargs: Any) -> Measurements:
        if not callable(func):
            raise TypeError(f"no_leak() needs a callable, not {func!r}")
        label = getattr(func, "__qualname__", None) or repr(func)
        options = dict(label=label, warmup=warmup, runs=runs, ignore=ignore,
                       tolerance=tolerance)
        if inspect.iscoroutinefunction(func):
            return _check_async(request, func, args, kwargs, **options)

        def call() -> None:
            func(*args, **kwargs)

        return _fixture_check(request, call, options)

    return check


def _fixture_check(request: pytest.FixtureRequest, call: Callable[[], None],
                   options: dict[str, Any]) -> Measurements:
    try:
        m = check_no_leak(call, node=request.node, **options)
    except LeakFailed as failure:
        _record_leak(request.node, failure.measurements)
        raise
    except NotRepeatable as failure:
        _not_repeatable(request.node, failure)
        warmup, runs, ignore, tolerance = _options(options["warmup"], options["runs"],
                                                   options["ignore"], options["tolerance"])
        m = Measurements(label=options["label"], warmup=warmup, runs=runs,
                         tolerance=tolerance, ignore=ignore, deltas=[], growing=[],
                         memory_grew=False, overhead=0.0, calls=failure.call_no)
        m.not_repeatable = failure.reason
        return m
    _set_status(request.node, _MEASURED)
    return m


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

        return _fixture_check(request, call, options)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _status_of(report: pytest.TestReport) -> str | None:
    status = None
    for prop in report.user_properties:
        if len(prop) == 2 and prop[0] == _STATUS_PROPERTY:
            status = str(prop[1])
    return status


class _LeakSummary:
    """Collects the leaked tests and every test's measurement status (their
    reports also come from xdist workers) and prints them at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.leaks: list[tuple[str, str]] = []
        self.status: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if type(report).__name__ == "SubtestReport":
            return
        nodeid = report.nodeid
        status = _status_of(report)
        if report.when == "setup":
            if status is not None and status.startswith(_NOT_MEASURED):
                self.status[nodeid] = status
            elif report.skipped:
                self.status[nodeid] = _NOT_MEASURED + "skipped"
            elif report.failed:
                self.status[nodeid] = _NOT_MEASURED + "setup failed"
            return
        if report.when != "call":
            return
        if report.failed:
            for prop in report.user_properties:
                if len(prop) == 2 and prop[0] == _LEAK_PROPERTY:
                    self.leaks.append((nodeid, str(prop[1])))
        if status == _LEAKED and report.failed:
            self.status[nodeid] = _LEAKED
        elif hasattr(report, "wasxfail"):
            self.status[nodeid] = _NOT_MEASURED + "xfail"
        elif report.skipped:
            self.status[nodeid] = _NOT_MEASURED + "skipped"
        elif report.failed and status != _LEAKED:
            self.status[nodeid] = _NOT_MEASURED + "failed on its first call"
        elif status is not None:
            self.status[nodeid] = status
        else:
            self.status[nodeid] = _NOT_MEASURED + "not marked no_leak"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        leaks = self.leaks
        auto = self.config.getoption("memwatch_leaks", False)
        not_repeatable = [(n, s[len(_NOT_REPEATABLE):]) for n, s in self.status.items()
                          if s.startswith(_NOT_REPEATABLE)]
        inconclusive = [(n, s[len(_INCONCLUSIVE):]) for n, s in self.status.items()
                        if s.startswith(_INCONCLUSIVE)]
        if not leaks and not auto and not not_repeatable:
            return
        tr = terminalreporter
        if not leaks:
            tr.write_sep("=", "memwatch: no test leaked", green=True)
        else:
            tr.write_sep("=", f"memwatch: {len(leaks)} test{'s' if len(leaks) != 1 else ''} "
                              f"leaked", red=True)
            for nodeid, summary in leaks:
                tr.write_line(f"LEAK {nodeid} - {summary}")
        if auto:
            tr.write_line(self.counts())
        for nodeid, reason in not_repeatable:
            tr.write_line(f"NOT REPEATABLE {nodeid} - {reason}")
        for nodeid, reason in inconclusive:
            tr.write_line(f"INCONCLUSIVE {nodeid} - {reason}")

    def counts(self) -> str:
        """'memwatch: 12 of 15 tests measured; not measured: 2 skipped, 1 not repeatable'."""
        statuses = list(self.status.values())
        measured = sum(s in (_MEASURED, _LEAKED) for s in statuses)
        reasons: dict[str, int] = {}
        for s in statuses:
            if s.startswith(_NOT_REPEATABLE):
                why = "not repeatable"
            elif s.startswith(_INCONCLUSIVE):
                why = "inconclusive"
            elif s.startswith(_NOT_MEASURED):
                why = s[len(_NOT_MEASURED):]
            else:
                continue
            reasons[why] = reasons.get(why, 0) + 1
        text = f"memwatch: {measured} of {len(statuses)} tests measured"
        if reasons:
            text += "; not measured: " + ", ".join(
                f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        return text
