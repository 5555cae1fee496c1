"""The pytest plugin, checked the way a user runs it: through pytester.

The runs that measure happen in a fresh interpreter (``runpytest_subprocess``):
there the heap is the size a user's is, and first imports are really first.
In-process runs (``runpytest``) would measure inside this session's heap,
which grows with every in-process run and makes each census slower."""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import pytest

import memwatch

pytest_plugins = ["pytester"]

SRC_DIR = str(Path(memwatch.__file__).resolve().parent.parent)


def _entry_point_registered() -> bool:
    try:
        eps = importlib.metadata.entry_points(group="pytest11")
    except TypeError:  # pragma: no cover - very old importlib.metadata
        eps = importlib.metadata.entry_points().get("pytest11", [])
    return any(ep.value == "memwatch.pytest_plugin" for ep in eps)


# The installed package registers the plugin through its entry point; a
# PYTHONPATH=src checkout without metadata needs -p.
PLUGIN_ARGS = [] if _entry_point_registered() else ["-p", "memwatch.pytest_plugin"]
BASE_ARGS = PLUGIN_ARGS + ["-p", "no:cacheprovider", "-p", "no:randomly"]


@pytest.fixture
def run(pytester, monkeypatch):
    """run(*args) in a fresh interpreter; run(*args, subprocess=False) in process."""
    # pytest prints whole failure messages in its short summary when it runs
    # under CI (CI or BUILD_NUMBER set): the inner runs' output must not depend
    # on where the outer one runs.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [SRC_DIR, os.environ.get("PYTHONPATH")])))
    try:
        import pytest_asyncio  # noqa: F401
    except ImportError:
        pass
    else:
        pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")

    def runner(*args: str, subprocess: bool = True):
        if subprocess:
            return pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=600)
        return pytester.runpytest(*BASE_ARGS, *args)

    return runner


def _retainers_available() -> bool:
    try:
        return callable(getattr(memwatch, "retainers"))
    except AttributeError:
        return False


# --------------------------------------------------------------------------
# Loading costs nothing
# --------------------------------------------------------------------------

def test_loading_the_plugin_imports_no_c_code(pytester, run):
    pytester.makepyfile(test_plain="""
        import sys

        def test_plain(request):
            assert request.config.pluginmanager.hasplugin("memwatch.pytest_plugin") or \\
                request.config.pluginmanager.hasplugin("memwatch")
            assert "memwatch._core" not in sys.modules
            assert "memwatch.typestats" not in sys.modules
            assert "memwatch.tracker" not in sys.modules
    """)
    result = run("-q")
    result.assert_outcomes(passed=1)


def test_marker_and_option_are_registered(pytester, run):
    result = run("--markers", subprocess=False)
    result.stdout.fnmatch_lines(["@pytest.mark.no_leak(warmup=3, runs=5, ignore=(), tolerance=0)*"])
    result = run("--help", subprocess=False)
    result.stdout.fnmatch_lines(["*--memwatch-leaks*"])


# --------------------------------------------------------------------------
# Clean code never fails: twenty fresh first touches of the usual caches
# --------------------------------------------------------------------------

CLEAN = '''
import asyncio, functools, importlib, json, logging, re, sys, threading, warnings
import pytest

def make_clean(i):
    # Every repetition gets its own first touch: a fresh pattern, cache,
    # logger, interned string, class (type cache) and first import.
    @functools.lru_cache(maxsize=16)
    def cached(x):
        return [x] * 3
    logger = logging.getLogger(f"clean.{i}")
    Klass = type(f"K{i}", (), {"attr": i, "method": lambda self: self.attr})
    sys.modules.pop(f"freshmod{i}", None)

    def clean():
        re.match(rf"a{i}+b", f"a{i}b")
        re.sub(r"\\s+", " ", "a  b   c")
        cached(i % 4)
        logger.info("info %s", i)
        logger.warning("warned %s", i)
        sys.intern(f"interned-{i}")
        importlib.import_module(f"freshmod{i}")
        k = Klass()
        k.method()
        getattr(k, "missing", None)
        d = {str(n): n for n in range(50)}
        json.dumps(d)
        bytes(1000)
        warnings.warn(f"deprecated {i}", DeprecationWarning)
        return len(d)
    return clean

@pytest.mark.parametrize("i", range(20))
def test_clean_fixture(no_leak, i):
    m = no_leak(make_clean(i))
    assert not m.leaked

@pytest.mark.parametrize("i", range(20))
@pytest.mark.no_leak
def test_clean_marker(i, caplog, tmp_path):
    make_clean(100 + i)()
    (tmp_path / "out.txt").write_text("x" * i)
    assert "warned" in caplog.text

@pytest.mark.parametrize("i", range(20))
@pytest.mark.no_leak
def test_clean_threads(i):
    results = []
    threads = [threading.Thread(target=lambda: results.append(sum(range(100))))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
'''


def test_clean_code_never_fails_twenty_times(pytester, run):
    pytester.makepyfile(**{f"freshmod{i}": f"VALUE = {i}\nTABLE = list(range({i}))\n"
                            for i in range(120)})
    pytester.makepyfile(test_clean=CLEAN)
    result = run("-q")
    result.assert_outcomes(passed=60)
    assert "memwatch:" not in result.stdout.str()
    # The first call's captured warnings are kept; the repeats do not pile up.
    result.stdout.fnmatch_lines(["*deprecated 0*"])


# --------------------------------------------------------------------------
# Leaky code always fails
# --------------------------------------------------------------------------

LEAKY = '''
import pytest

KEEP = []

class Thing:
    pass

def leak_instance():
    KEEP.append(Thing())

def leak_closure():
    n = len(KEEP)
    KEEP.append(lambda: n)

def leak_str():
    KEEP.append(str(len(KEEP)) * 3)

def leak_bytes():
    KEEP.append(b"%d" % len(KEEP) * 64)

@pytest.mark.parametrize("i", range(1))
@pytest.mark.parametrize("func", [leak_instance, leak_closure, leak_str, leak_bytes])
def test_fixture(no_leak, func, i):
    no_leak(func)

@pytest.mark.parametrize("i", range(1))
@pytest.mark.parametrize("func", [leak_instance, leak_closure, leak_str, leak_bytes])
@pytest.mark.no_leak
def test_marker(func, i):
    func()
'''


def test_leaky_code_always_fails(pytester, run):
    pytester.makeconftest(SHORT_CONFIRM)
    pytester.makepyfile(test_leaky=LEAKY)
    result = run("-q")
    result.assert_outcomes(failed=8)
    out = result.stdout.str()
    # What grew, for each kind of leak.  ("and memory grew" is left out when
    # one run's total fell: on 3.14 the first measured run can free a few
    # dozen bytes of the interpreter's own while the type still grew.)
    result.stdout.fnmatch_lines([
        "*leak_instance leaks: 1 type grew in count* on every one of 5 "
        "measured runs (after 3 warm-up runs) and kept growing over 32 calls",
        "type * count per run * bytes per run",
        "test_leaky.Thing * +1 +1 +1 +1 +1 * +* bytes, +* bytes, +* bytes, +* bytes, +* bytes",
    ])
    for line in ["function * +1 +1 +1 +1 +1 *", "cell * +1 +1 +1 +1 +1 *",
                 "str * +1 +1 +1 +1 +1 *", "bytes * +1 +1 +1 +1 +1 *"]:
        result.stdout.fnmatch_lines([line])
    assert out.count("Who holds a new object") == 8
    result.stdout.fnmatch_lines(["*= memwatch: 8 tests leaked =*"])


def test_failure_message_names_the_retainer_path(pytester, run):
    pytester.makepyfile(app="""
        class Session:
            def __init__(self, user):
                self.user = user
    """, handlers="""
        import app
        CACHE = {"sessions": []}

        def handle(user):
            CACHE["sessions"].append(app.Session(user))
    """, test_app="""
        import handlers

        def test_handle(no_leak):
            no_leak(handlers.handle, "bob")
    """)
    result = run("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        # (on 3.10 each instance also has its own dict; "and memory grew" is
        # left out on 3.14 when the first measured run also freed a little)
        "*memwatch: handle leaks: * grew in count* on every one of 5 "
        "measured runs (after 3 warm-up runs)*",
        "",
        "type * count per run * bytes per run",
        "app.Session * +1 +1 +1 +1 +1 * +* bytes, +* bytes, +* bytes, +* bytes, +* bytes",
        "all types *",
        "",
        "Who holds a new object (one example per type):",
    ])
    if _retainers_available():
        result.stdout.fnmatch_lines(["  app.Session: handlers*CACHE*sessions*app.Session"])
    else:
        result.stdout.fnmatch_lines([
            "  app.Session: no retainer path found",
            "  (memwatch.retainers() is not available in this memwatch)",
        ])


def test_bytes_growth_without_new_objects_fails_unless_tolerated(pytester, run):
    pytester.makepyfile(test_grow="""
        import pytest
        STATE = {"log": ""}

        def grow():
            STATE["log"] = STATE["log"] + "x" * 200   # one str replaced by a longer one

        def test_grows(no_leak):
            no_leak(grow)

        def test_tolerated(no_leak):
            m = no_leak(grow, tolerance=300)
            assert not m.leaked and m.size_diffs == [200] * 5

        @pytest.mark.no_leak(tolerance=1024)
        def test_marker_tolerated():
            grow()
    """)
    result = run("-q")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*grow leaks: memory grew on every one of 5 measured runs*"])
    # The str row: no new str objects, 200 more bytes a run.  One run may
    # also free an interpreter-owned str or two (3.14/3.15 do, in one of the
    # measured runs), so four of the five runs must show exactly +200 bytes.
    row = next(l for l in result.stdout.lines if l.startswith("str "))
    counts = [int(c) for c in row.split()[1:6]]
    assert all(c <= 0 for c in counts), row
    assert row.count("+200 bytes") >= 4, row


# --------------------------------------------------------------------------
# Options and the returned measurements
# --------------------------------------------------------------------------

def test_options_and_measurements(pytester, run):
    pytester.makepyfile(test_opts="""
        import pytest
        from memwatch.pytest_plugin import Measurements

        KEEP = []

        class Thing:
            pass

        def clean(x, scale=1):
            return [x] * scale

        def leaky():
            KEEP.append(Thing())
            KEEP.append(str(len(KEEP)) * 2)

        calls = []

        def counted():
            calls.append(None)

        def test_returns_measurements(no_leak):
            m = no_leak(clean, 3, scale=10)
            assert isinstance(m, Measurements) and not m.leaked and m
            assert (m.warmup, m.runs, m.tolerance) == (3, 5, 0)
            assert len(m.deltas) == 5 and m.growing == [] and not m.memory_grew
            assert m.overhead > 0

        def test_counts_calls(no_leak):
            no_leak(counted, warmup=2, runs=4, ignore=["list", "NoneType"], tolerance=64)
            assert len(calls) == 6

        def test_ignore_by_name_and_type(no_leak):
            m = no_leak(leaky, ignore=[Thing, "str"], tolerance=10_000)
            assert not m.leaked
            assert all(d.count("test_opts.Thing") == 1 for d in m.deltas)

        def test_ignore_by_pattern(no_leak):
            assert not no_leak(leaky, ignore=["test_opts.*", "s?r"], tolerance=10_000).leaked

        @pytest.mark.no_leak(warmup=1, runs=2, ignore=["test_opts.Thing", "str"], tolerance=10_000)
        def test_marker_options():
            leaky()

        @pytest.mark.parametrize("bad", [dict(runs=1), dict(warmup=-1), dict(tolerance=-5),
                                         dict(runs=2.5), dict(ignore=[3])])
        def test_bad_options(no_leak, bad):
            with pytest.raises((ValueError, TypeError)):
                no_leak(clean, 1, **bad)

        def test_not_callable(no_leak):
            with pytest.raises(TypeError):
                no_leak(42)

        @pytest.mark.no_leak(5)
        def test_marker_positional():
            pass
    """)
    result = run("-q")
    result.assert_outcomes(passed=11, failed=1)
    result.stdout.fnmatch_lines(["*no_leak takes keyword options only*"])


def test_marker_calls_the_test_not_its_fixtures(pytester, run):
    pytester.makepyfile(test_fix="""
        import pytest

        SETUPS = []
        CALLS = []

        @pytest.fixture
        def resource():
            SETUPS.append(1)
            yield {"n": 0}
            SETUPS.append(-1)

        @pytest.mark.no_leak(warmup=2, runs=3)
        def test_uses(resource):
            resource["n"] += 1
            CALLS.append(resource["n"])

        def test_after():
            assert SETUPS == [1, -1]
            assert CALLS[-1] == 5 and len(CALLS) == 5
    """)
    result = run("-q")
    result.assert_outcomes(passed=2)


# --------------------------------------------------------------------------
# The test's own outcome always wins
# --------------------------------------------------------------------------

def test_own_exceptions_and_outcomes_are_not_swallowed(pytester, run):
    pytester.makepyfile(test_own="""
        import pytest

        KEEP = []

        def boom():
            raise ValueError("the test's own error")

        def test_fixture_raises(no_leak):
            no_leak(boom)

        def flaky_state(calls):
            calls.append(1)
            if len(calls) == 4:
                raise KeyError("fourth call")

        def test_fixture_raises_late(no_leak):
            no_leak(flaky_state, [])

        @pytest.mark.no_leak
        def test_marker_assert():
            assert 1 + 1 == 3, "own assertion"

        @pytest.mark.no_leak
        def test_marker_skip():
            pytest.skip("skipped by the test")

        @pytest.mark.no_leak
        @pytest.mark.xfail(reason="known", strict=True)
        def test_marker_xfail():
            raise RuntimeError("expected")

        CALLS = []

        @pytest.mark.no_leak
        def test_marker_raises_late():
            flaky_state(CALLS)
    """)
    result = run("-q", "-rA")
    # A failure on a later call is no failure: the first call passed.
    result.assert_outcomes(failed=2, passed=2, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*ValueError: the test's own error*",
        "*AssertionError: own assertion*",
    ])
    result.stdout.fnmatch_lines([
        "NOT REPEATABLE test_own.py::test_fixture_raises_late - call 4 raised KeyError: 'fourth call'",
    ])
    result.stdout.fnmatch_lines([
        "NOT REPEATABLE test_own.py::test_marker_raises_late - call 4 raised KeyError: 'fourth call'",
    ])
    assert "leaks:" not in result.stdout.str()


# --------------------------------------------------------------------------
# --memwatch-leaks, xdist, async, threads
# --------------------------------------------------------------------------

SUITE = '''
import pytest

KEEP = []

class Job:
    pass

def test_clean():
    {str(i): i for i in range(10)}

def test_leaks_jobs():
    KEEP.append(Job())

def test_leaks_strings():
    KEEP.append(str(len(KEEP)) + "-key")

def test_uses_fixture(no_leak):
    no_leak(lambda: None)

@pytest.mark.no_leak(runs=3)
def test_own_marker():
    pass
'''


def test_option_checks_every_test_and_summarises(pytester, run):
    pytester.makepyfile(test_suite=SUITE)
    result = run("-q", "--memwatch-leaks")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*= memwatch: 2 tests leaked =*",
        "LEAK test_suite.py::test_leaks_jobs - +* per run: test_suite.Job +1/run*",
        "LEAK test_suite.py::test_leaks_strings - +* per run: str +1/run*",
    ])
    # Without the option, nothing is measured and there is no summary.
    result = run("-q")
    result.assert_outcomes(passed=5)
    assert "memwatch" not in result.stdout.str()


def test_option_with_no_leaks_says_so(pytester, run):
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = run("-q", "--memwatch-leaks")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= memwatch: no test leaked =*"])


def test_xdist_workers_report_their_leaks(pytester, run):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_suite=SUITE)
    result = run("-q", "-n", "2", "--memwatch-leaks", "-p", "no:asyncio")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*= memwatch: 2 tests leaked =*"])
    result.stdout.fnmatch_lines(["LEAK test_suite.py::test_leaks_jobs - *"])
    result.stdout.fnmatch_lines(["LEAK test_suite.py::test_leaks_strings - *"])


def test_async_tests(pytester, run):
    pytest.importorskip("pytest_asyncio")
    pytester.makepyfile(test_async="""
        import asyncio
        import pytest

        KEEP = []

        class Conn:
            pass

        async def fetch(n):
            await asyncio.sleep(0)
            return [n] * 3

        async def leaky_fetch():
            await asyncio.sleep(0)
            KEEP.append(Conn())

        @pytest.mark.asyncio
        @pytest.mark.no_leak
        async def test_clean_async():
            await asyncio.gather(*(fetch(i) for i in range(5)))

        @pytest.mark.asyncio
        @pytest.mark.no_leak
        async def test_leaky_async():
            await leaky_fetch()

        @pytest.mark.asyncio
        @pytest.mark.no_leak
        async def test_async_own_failure():
            await asyncio.sleep(0)
            raise ValueError("async own error")

        def test_fixture_runs_coroutines(no_leak):
            assert not no_leak(fetch, 3).leaked

        def test_fixture_leaky_coroutine(no_leak):
            no_leak(leaky_fetch)
    """)
    result = run("-q", "-p", "asyncio", "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(["*ValueError: async own error*"])
    result.stdout.fnmatch_lines([
        "*test_leaky_async leaks: * grew *",
        "test_async.Conn * +1 +1 +1 +1 +1 *",
        "*leaky_fetch leaks: * grew *",
        "test_async.Conn * +1 +1 +1 +1 +1 *",
    ])


def test_threads(pytester, run):
    pytester.makepyfile(test_threads="""
        import queue
        import threading
        import pytest

        KEEP = []

        class Item:
            pass

        def work(leak):
            q = queue.Queue()
            def worker():
                q.put(sum(range(1000)))
                if leak:
                    KEEP.append(Item())
            threads = [threading.Thread(target=worker) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert q.qsize() == 2

        @pytest.mark.no_leak
        def test_clean_threads():
            work(False)

        def test_clean_threads_fixture(no_leak):
            no_leak(work, False)

        @pytest.mark.no_leak
        def test_leaky_threads():
            work(True)
    """)
    result = run("-q")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["test_threads.Item * +2 +2 +2 +2 +2 *"])


def test_pytest_fixtures_do_not_pile_up_across_calls(pytester, run):
    # The marker calls the test again and again with the same fixture values:
    # what pytest's fixtures keep per call must not read as a leak, and they
    # must still work.
    pytester.makepyfile(test_fixtures="""
        import logging, os, sys, warnings
        import pytest

        class Cfg:
            value = 1

        FINALIZED = []

        @pytest.fixture
        def patched(monkeypatch):
            monkeypatch.setattr(Cfg, "value", 10)
            return monkeypatch

        @pytest.mark.no_leak
        def test_monkeypatch(patched, tmp_path):
            assert Cfg.value == 10           # the fixture's patch stays
            patched.setattr(Cfg, "value", 2)
            patched.setenv("MEMWATCH_T", "1")
            patched.setitem(sys.modules, "fake_mod_memwatch", object())
            patched.syspath_prepend(str(tmp_path))
            patched.chdir(tmp_path)
            assert Cfg.value == 2

        @pytest.mark.no_leak
        def test_capsys(capsys):
            print("hello " * 50)

        @pytest.mark.no_leak
        def test_capsys_read(capsys):
            print("hello")
            assert capsys.readouterr().out == "hello\\n"

        @pytest.mark.no_leak
        def test_caplog(caplog):
            with caplog.at_level(logging.INFO):
                logging.getLogger("app").info("hi %s", "there")
            assert "hi there" in caplog.text

        @pytest.mark.no_leak
        def test_recwarn(recwarn):
            warnings.warn("careful", UserWarning)
            assert len(recwarn) >= 1

        @pytest.mark.no_leak
        def test_warns():
            with pytest.warns(UserWarning):
                warnings.warn("careful", UserWarning)

        @pytest.mark.no_leak(warmup=1, runs=2)
        def test_addfinalizer(request):
            request.addfinalizer(lambda: FINALIZED.append(1))

        def test_afterwards():
            assert Cfg.value == 1 and "MEMWATCH_T" not in os.environ
            assert "fake_mod_memwatch" not in sys.modules
            assert FINALIZED == [1, 1, 1]
    """)
    result = run("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=8)


def test_example_objects_are_the_new_leaked_ones(pytester, run):
    # The path of each example ends in KEEP: a new leaked object, never the
    # plugin's own bookkeeping (the type-name map, the candidate lists).
    pytester.makeconftest(SHORT_CONFIRM)
    pytester.makepyfile(test_examples="""
        import pytest
        KEEP = []

        class Thing:
            pass

        @pytest.mark.parametrize("make", [Thing, lambda: str(len(KEEP)) * 2,
                                          lambda: b"%d" % len(KEEP), lambda: len(KEEP) + 10**6,
                                          lambda: float(len(KEEP))])
        def test_kept(no_leak, make):
            no_leak(lambda: KEEP.append(make()))
    """)
    result = run("-q")
    result.assert_outcomes(failed=5)
    for name in ["test_examples.Thing", "str", "bytes", "int", "float"]:
        result.stdout.fnmatch_lines([f"  {name}: test_examples -> dict 'KEEP' -> list* -> {name}"])
    assert "no retainer path found" not in result.stdout.str()


# --------------------------------------------------------------------------
# Real suites (issue 13): TestCase tests, bounded caches, repeated calls,
# holders, the cheap first pass
# --------------------------------------------------------------------------

TESTCASES = '''
import unittest
import pytest

KEEP = []
CALLS = []

class Record:
    pass

class Plain(unittest.TestCase):
    def setUp(self):
        self.rows = [1, 2, 3]

    def tearDown(self):
        del self.rows

    def test_clean(self):
        self.assertEqual(sum(self.rows), 6)

    def test_leaks(self):
        KEEP.append(Record())

    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 3)

    @unittest.skip("not today")
    def test_skipped(self):
        pass

    def test_own_failure(self):
        self.assertEqual(1, 2)

    def test_once(self):
        CALLS.append(1)
        self.assertEqual(len(CALLS), 1)

@pytest.mark.no_leak
class Marked(unittest.TestCase):
    def test_marked_leak(self):
        KEEP.append(Record())
'''


def test_unittest_testcases_are_checked(pytester, run):
    pytester.makepyfile(test_tc=TESTCASES)
    # Explicit marker on a TestCase class, no option.
    result = run("-q", "test_tc.py::Marked")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_marked_leak leaks: 1 type grew in count*",
                                 "test_tc.Record * +1 +1 +1 +1 +1 *"])
    result = run("-q", "-rA", "--memwatch-leaks")
    result.assert_outcomes(passed=3, failed=3, skipped=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*= memwatch: 2 tests leaked =*",
        "LEAK test_tc.py::Plain::test_leaks - * test_tc.Record +1/run*",
        "LEAK test_tc.py::Marked::test_marked_leak - *",
        "memwatch: 4 of 7 tests measured; not measured: *",
        "NOT REPEATABLE test_tc.py::Plain::test_once - call 2 raised AssertionError: 2 != 1",
    ])
    # The TestCase's own failure is reported once, as unittest recorded it;
    # the subtests' reports are not repeated by the repeated calls.
    counts = [line for line in out.splitlines() if line.startswith("memwatch: 4 of 7")][0]
    for reason in ["1 not repeatable", "1 failed on its first call", "1 skipped"]:
        assert reason in counts
    assert out.count("AssertionError: 1 != 2") >= 1
    assert "test_clean leaks" not in out and "test_subtests leaks" not in out


CACHES = '''
import functools
import itertools
import pytest

KEEP = []
COUNTER = itertools.count()

@functools.lru_cache(maxsize=128)
def make_class(n):
    # typing's generic aliases do this: a new class per argument, held by a
    # bounded lru_cache until evicted.
    return type(f"Generic{n}", (), {"n": n})

def test_lru_cache_of_new_classes():
    make_class(next(COUNTER))

BOUNDED = {}

def test_bounded_dict_cache():
    n = next(COUNTER)
    BOUNDED[n] = {"value": [n] * 3}
    if len(BOUNDED) > 100:
        del BOUNDED[min(BOUNDED)]

def test_leak_next_to_them():
    KEEP.append([next(COUNTER)])
'''

HYPOTHESIS_CACHE = '''
from hypothesis import given, settings, strategies as st
import functools

@functools.lru_cache(maxsize=256)
def parsed(text):
    return [text] * 2

@settings(max_examples=30, database=None, deadline=None)
@given(st.text())
def test_random_inputs_fill_a_bounded_cache(text):
    parsed(text)
'''


def test_bounded_caches_are_not_leaks(pytester, run):
    pytester.makepyfile(test_caches=CACHES)
    for _ in range(2):     # the same verdicts from one run to the next
        result = run("-q", "--memwatch-leaks")
        result.assert_outcomes(passed=2, failed=1)
        result.stdout.fnmatch_lines([
            "*= memwatch: 1 test leaked =*",
            "LEAK test_caches.py::test_leak_next_to_them - *",
            "memwatch: 3 of 3 tests measured",
        ])
        assert "kept growing over 256 calls" in result.stdout.str()


def test_hypothesis_tests_are_not_reported_for_caches_they_fill(pytester, run):
    pytest.importorskip("hypothesis")
    pytester.makepyfile(test_hyp=HYPOTHESIS_CACHE)
    result = run("-q", "--memwatch-leaks", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= memwatch: no test leaked =*",
                                 "memwatch: 1 of 1 tests measured"])


NOT_REPEATABLE = '''
import warnings
import pytest

STATE = {"imported": False}

def test_import_state():
    assert not STATE["imported"], "already imported"
    STATE["imported"] = True

WARNED = set()

def warn_once(key):
    if key not in WARNED:
        WARNED.add(key)
        warnings.warn("first time only", UserWarning)

def test_did_not_warn():
    with pytest.warns(UserWarning):
        warn_once("k")

def test_fixture_late(no_leak):
    calls = []
    def once():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("second call")
    m = no_leak(once)
    assert m.not_repeatable == "call 2 raised RuntimeError: second call" and not m.leaked
'''


def test_failures_only_on_repeated_calls_are_not_repeatable(pytester, run):
    pytester.makepyfile(test_rep=NOT_REPEATABLE)
    # -W error: the plugin's warning must not turn the test red.
    for args in [(), ("-W", "error")]:
        result = run("-q", "--memwatch-leaks", *args)
        result.assert_outcomes(passed=3)
        result.stdout.fnmatch_lines([
            "*= memwatch: no test leaked =*",
            "memwatch: 0 of 3 tests measured; not measured: 3 not repeatable",
            "NOT REPEATABLE test_rep.py::test_import_state - call 2 raised AssertionError: "
            "already imported*",
            "NOT REPEATABLE test_rep.py::test_did_not_warn - call 2 raised Failed: DID NOT WARN*",
            "NOT REPEATABLE test_rep.py::test_fixture_late - call 2 raised RuntimeError: "
            "second call",
        ])
    result = run("-q", "--memwatch-leaks")
    result.stdout.fnmatch_lines(["*NotRepeatableWarning: memwatch: test_import_state not "
                                 "measured: not repeatable (call 2 raised AssertionError*"])


HOLDERS = '''
import gc
import threading
import pytest

KEEP = []

def test_leaks_dicts():
    KEEP.append({"n": len(KEEP)})

def test_leaks_classes():
    KEEP.append(type("Made", (), {}))

class Cycle:
    pass

def test_leaks_into_gc_garbage():
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        a, b = Cycle(), Cycle()
        a.other, b.other = b, a
        del a, b
        gc.collect()
    finally:
        gc.set_debug(0)

STOP = threading.Event()

def serve_forever():
    STOP.wait()

def test_leaks_threads():
    threading.Thread(target=serve_forever, daemon=True).start()
'''


SHORT_CONFIRM = """
import memwatch.pytest_plugin
# The growth is followed over 32 calls, not 256: these tests are about the
# message, and a thread or a full collection per call is slow.
memwatch.pytest_plugin.CONFIRM_CALLS = 32
"""


def test_failure_message_shows_the_real_holder(pytester, run):
    pytester.makeconftest(SHORT_CONFIRM)
    pytester.makepyfile(test_holders=HOLDERS)
    result = run("-q", "--memwatch-leaks", "-p", "no:asyncio")
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    lines = out.splitlines()
    # The dict in KEEP; never the plugin's own (a leaked dict is often one
    # reused from CPython's free list: it has no traceback of its own).
    result.stdout.fnmatch_lines(["  dict: test_holders -> dict 'KEEP' -> list[[]*] -> dict"])
    # Where it was made, when tracemalloc saw it (the free list's dict keeps
    # none, so the line may be absent).
    at = next(i for i, line in enumerate(lines)
              if line.startswith("  dict: test_holders -> dict 'KEEP'"))
    if at + 1 < len(lines) and lines[at + 1].startswith("      allocated at"):
        assert "test_holders.py:" in lines[at + 1], lines[at + 1]
    # At least one example says where it was allocated, in the test's file.
    assert any(line.startswith("      allocated at") and "test_holders.py:" in line
               for line in lines), out
    # A class: the path to the class itself, not to an instance of one.
    result.stdout.fnmatch_lines(["  type: test_holders -> dict 'KEEP' -> list[[]*] -> type"])
    result.stdout.fnmatch_lines(["  test_holders.Cycle: gc.garbage[[]*] -> test_holders.Cycle"])
    # A thread's objects: held by threading's registry of running threads
    # (found before any reference from outside the graph), target named.
    result.stdout.fnmatch_lines([
        "*: threading -> dict '_active' -> *(thread 'Thread-* (serve_forever)' running "
        "test_holders.serve_forever (test_holders.py:*))"])
    assert "cell (external).cell_contents -> dict" not in out
    assert "memwatch" not in "".join(line for line in out.splitlines()
                                     if line.startswith("      allocated at"))


# Two tests that keep a new object a call (and then do ``call``), the second
# marked no_leak: a leak asked for, and one found by --memwatch-leaks.
GROWING_PAIR = """
import pytest
KEEP = []

class Session:
    pass

def test_grows():
    KEEP.append(Session())
    {call}

@pytest.mark.no_leak
def test_grows_marked():
    KEEP.append(Session())
    {call}
"""


def test_growth_still_going_at_the_time_limit_is_inconclusive_not_a_failure(pytester, run):
    # Under --memwatch-leaks, a follow-up cut short by its time limit has too
    # few calls to tell a slowly filling cache from a leak: the test passes,
    # is "not measured: inconclusive", with a warning and a summary line.  A
    # test marked no_leak (asked for) still fails at its own time limit.
    pytester.makeconftest("import memwatch.pytest_plugin as p\n"
                          "p.AUTO_CONFIRM_SECONDS = 0.0\np.CONFIRM_SECONDS = 0.0\n"
                          "p._FOLLOW_UP_REACH = 0\n")
    pytester.makepyfile(test_slow=GROWING_PAIR.format(call="") + """
def test_clean():
    pass
""")
    result = run("-q", "--memwatch-leaks", "-p", "no:asyncio")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*InconclusiveWarning: memwatch: test_grows not measured: inconclusive (grew over "
        "* calls (test_slow.Session, memory) and was still growing when the follow-up's "
        "0 s ran out; mark it no_leak for the full 256-call follow-up)",
        "LEAK test_slow.py::test_grows_marked - *",
        "memwatch: 2 of 3 tests measured; not measured: 1 inconclusive",
        "INCONCLUSIVE test_slow.py::test_grows - grew over * calls*still growing*"])
    assert "time limit 0 s reached" in out         # the marked one's message
    assert "LEAK test_slow.py::test_grows -" not in out


def test_a_follow_up_that_could_not_decide_in_its_time_is_not_run(pytester, run):
    # 50 ms a call and a 1 s follow-up: about 20 more calls, far from the 64
    # that decide, so the unmarked test is inconclusive without it, and says
    # how far the follow-up would have got.  The marked one gets its follow-up.
    # (The census runs are all made: the rule that stops them early is the
    # next test's.)
    pytester.makeconftest("import memwatch.pytest_plugin as p\n"
                          "p.AUTO_CONFIRM_SECONDS = 1.0\np.CONFIRM_SECONDS = 0.0\n"
                          "p._UNREACHABLE_RUNS = 99\n")
    pytester.makepyfile(test_dear="import time\n" + GROWING_PAIR.format(call="time.sleep(0.05)"))
    result = run("-q", "--memwatch-leaks", "-p", "no:asyncio")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*InconclusiveWarning: memwatch: test_grows not measured: inconclusive (grew over "
        "* calls (test_dear.Session*); at 0.05* s a call (its slowest), the follow-up's 1 s would reach "
        "about * calls, short of the 64 it needs to tell a filling cache from a leak; "
        "mark it no_leak for the full 256-call follow-up)",
        "LEAK test_dear.py::test_grows_marked - *"])
    assert "time limit 0 s reached" in result.stdout.str()


# A test that keeps a new object a call and then does ``call``, and a test
# after it that checks how many calls it got.
COUNTED_GROWTH = """
import time
KEEP = []

class Session:
    pass

def test_grows():
    KEEP.append(Session())
    {call}

def test_calls_made():
    assert len(KEEP) {calls}, len(KEEP)
"""


def _one_second_follow_up(pytester: Any, run: Any, name: str, call: str, calls: str) -> Any:
    """Run test_grows and test_calls_made under --memwatch-leaks with a 1 s
    follow-up; both pass (test_grows inconclusive)."""
    pytester.makeconftest("import memwatch.pytest_plugin as p\np.AUTO_CONFIRM_SECONDS = 1.0\n")
    pytester.makepyfile(**{name: COUNTED_GROWTH.format(call=call, calls=calls)})
    result = run("-q", "--memwatch-leaks", "-p", "no:asyncio")
    result.assert_outcomes(passed=2)
    return result


def test_census_runs_that_could_only_clear_an_unreachable_test_are_not_made(pytester, run):
    # Still growing on its first census run, with a follow-up that could not
    # reach 64 calls even after the other 4 runs: those runs could only clear
    # the test, never find a leak, so it is inconclusive at once.  Calls:
    # 3 in the first pass, 2 after full collections, 1 census run (not 5).
    result = _one_second_follow_up(pytester, run, "test_dear", "time.sleep(0.05)", "== 6")
    result.stdout.fnmatch_lines([
        "*InconclusiveWarning: memwatch: test_grows not measured: inconclusive (grew on its "
        "first census run (test_dear.Session*); at 0.05* s a call (its slowest), the follow-up's "
        "1 s would reach about * calls, short of the 64 it needs to tell a filling cache "
        "from a leak; mark it no_leak for the full 256-call follow-up)",
        "memwatch: 1 of 2 tests measured; not measured: 1 inconclusive"])


def test_the_follow_up_s_reach_is_judged_on_the_slowest_call(pytester, run):
    # A call in three sleeps 30 ms, the others are instant: their mean says
    # the follow-up's 1 s would reach 64 calls and more, the slowest says
    # about 33.  Random tests' calls vary like this (Hypothesis: 2x), and
    # the mean sent them to follow-ups that ran out short of 64 calls.
    # Calls: the first pass and the census runs, no follow-up (60 or more).
    result = _one_second_follow_up(pytester, run, "test_uneven",
                                   "time.sleep(0.03) if len(KEEP) % 3 == 0 else None", "< 40")
    result.stdout.fnmatch_lines([
        "*InconclusiveWarning: memwatch: test_grows not measured: inconclusive (grew *); "
        "at 0.03* s a call (its slowest), the follow-up's 1 s would reach about * calls, "
        "short of the 64 it needs*"])


def test_a_follow_up_whose_calls_got_slower_stops_when_it_can_no_longer_reach_64(pytester, run):
    # Instant calls up to the follow-up, 30 ms ones from call 27: its 1 s
    # could then reach about 60 calls, not 64, and it stops at once rather
    # than run out its time (about 58 calls).
    result = _one_second_follow_up(pytester, run, "test_slower",
                                   "time.sleep(0.03) if len(KEEP) > 26 else None", "< 40")
    result.stdout.fnmatch_lines([
        "*InconclusiveWarning: memwatch: test_grows not measured: inconclusive (grew over "
        "* calls (test_slower.Session*); at 0.03* s a call (its slowest), the follow-up's 1 s "
        "would reach about * calls, short of the 64 it needs*"])


def test_a_dear_call_gets_its_holder_without_tracing(pytester, run):
    # Tracing every allocation multiplies a call's cost by 10-80: where a call
    # costs more than the limit, the extra call runs untraced and the message
    # says why there is no allocation site.
    pytester.makeconftest(SHORT_CONFIRM + "memwatch.pytest_plugin._TRACE_CALL_CPU = -1.0\n")
    pytester.makepyfile(test_dear="""
KEEP = []

class Session:
    pass

def test_leaks():
    KEEP.append(Session())
""")
    result = run("-q", "--memwatch-leaks", "-p", "no:asyncio")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "  test_dear.Session: test_dear -> dict 'KEEP' -> list[[]*] -> test_dear.Session",
        "  (allocation sites not traced: a call takes over -1 s of CPU*)"])
    assert "allocated at" not in result.stdout.str()


SCREEN = '''
import pytest
from memwatch.pytest_plugin import check_no_leak

KEEP = []

class Thing:
    pass

def test_clean_is_cleared_by_the_first_pass():
    # 2 or 3 calls; up to 16 (+ 4 when a full collection ran) where malloc's
    # caches fill over the first calls (3.14), and 2 more after full collections.
    m = check_no_leak(lambda: [str(i) for i in range(100)], screen=True)
    assert m.screened and not m.leaked and 2 <= m.calls <= 22 and m.deltas == []

def test_a_first_step_that_grew_nothing_ends_the_pass_at_two_calls():
    # Growth must show on both steps, so a flat first step settles it; the
    # pass's own bookkeeping (its arrays, timer, loop) is no step.
    import sys
    check_no_leak(lambda: None, screen=True)        # first-time effects
    m = check_no_leak(lambda: None, screen=True)
    assert m.screened and not m.leaked and 2 <= m.calls <= 3
    from memwatch import _core
    assert _core.live_blocks() is None      # its block counter is out again
    if sys.version_info < (3, 14):      # (3.14's malloc caches may move a block)
        assert m.calls == 2
    # One step is not enough to call growth a leak: a third call is made.
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      examples=False, confirm=False)
    assert not m.screened and m.leaked and m.calls > 3

def test_tuples_resized_while_built_are_no_growth():
    # A tuple built from a generator is allocated at one size and shrunk:
    # each call moves blocks from one size's free list into another's, which
    # fills over some 80 calls (+6 blocks a call here).  With the lists full
    # at each reading once growth is seen, the pass ends at the first flat
    # step, before the full-collection pass (which starts at call 17).
    import sys
    make = lambda: [tuple(x for x in range(k)) for k in range(3, 9)]
    m = check_no_leak(make, screen=True)
    assert m.screened and not m.leaked and m.deltas == []
    if sys.version_info < (3, 14):      # (3.14's malloc caches may need more calls)
        assert m.calls < 16, m.calls

def test_a_dear_first_call_goes_straight_to_the_census_runs(monkeypatch):
    import memwatch.pytest_plugin as p
    monkeypatch.setattr(p, "_SCREEN_DEAR", -1.0)     # every call is dear
    n = [0]

    def grows_twice():
        n[0] += 1
        if n[0] in (2, 3):
            KEEP.extend(Thing() for _ in range(20))

    # No more first-pass calls and no full-collection pass (those clear it,
    # screened): the census runs from call 2 on, with call 1 as the warm-up,
    # and they end early (runs 1 and 2 grew, run 3 did not, so nothing grew
    # on every run).
    m = check_no_leak(grows_twice, screen=True)
    assert not m.screened and not m.leaked and m.calls < 1 + 5, m.calls
    # A leak: the first call is its warm-up, then the 5 runs.
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      examples=False, confirm=False)
    assert m.leaked and not m.screened and m.calls == 1 + 5, m.calls

class Cycle:
    def __init__(self):
        self.me = self

LAST = []

def test_the_full_collection_pass_ends_at_a_first_step_that_grew_nothing(monkeypatch):
    # Each call drops the cycle the last one made, after the young
    # collections moved it to the oldest generation: it grows on every step
    # of the first pass and on none after full collections.  Growth must
    # show on both of the full-collection pass's steps, so its first settles
    # it: 3 first-pass calls (none is cheap here), then 1.
    import sys
    import memwatch.pytest_plugin as p
    monkeypatch.setattr(p, "_SCREEN_CHEAP", -1.0)

    def drops_a_cycle():
        LAST[:] = [Cycle()]

    m = check_no_leak(drops_a_cycle, screen=True)
    assert m.screened and not m.leaked
    if sys.version_info < (3, 14):      # (3.14's young collections are incremental)
        assert m.calls == 3 + 1, m.calls
    # A leak still takes both steps, then the census runs.
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      examples=False, confirm=False)
    assert m.leaked and not m.screened and m.calls == 3 + 2 + 5, m.calls

def test_the_census_baseline_reuses_the_full_collection_pass_s_last_collections(monkeypatch):
    # Nothing was called since that pass's last sample, so the census's
    # first reading needs no full collections of its own: 3 for that pass's
    # samples, then 1 for each of the 5 census runs.
    import memwatch.pytest_plugin as p
    settles = []
    real = p._settle
    monkeypatch.setattr(p, "_settle", lambda collect: (settles.append(1), real(collect)))
    monkeypatch.setattr(p, "_SCREEN_CHEAP", -1.0)
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      examples=False, confirm=False)
    assert m.leaked and m.calls == 3 + 2 + 5, m.calls
    assert len(settles) == 3 + 5, len(settles)
    # With warm-up calls after that pass, the census collects first.
    settles.clear()
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      examples=False, confirm=False, warmup=6)
    assert m.leaked and m.calls == 3 + 2 + 1 + 5, m.calls
    assert len(settles) == 3 + 1 + 5, len(settles)
    # Finding examples lists the heap before its call without full
    # collections of its own (the last census's are the latest), and after it
    # with them.
    settles.clear()
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      confirm=False)
    assert m.leaked and m.calls == 3 + 2 + 5, m.calls      # (without the examples' call)
    assert len(settles) == 3 + 5 + 1, len(settles)
    assert m.examples.get("test_screen.Thing"), m.examples

def burn(seconds):
    import time
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def test_a_dear_second_call_goes_from_two_calls_to_the_census_runs(monkeypatch):
    import memwatch.pytest_plugin as p
    monkeypatch.setattr(p, "_SCREEN_DEAR", 0.02)
    n = [0]

    def cheap_once_then_dear():
        # The first call is cheap, so the first pass goes on; its second is
        # dear (the call is made dear from then on).
        n[0] += 1
        KEEP.append(Thing())
        if n[0] > 1:
            burn(0.03)

    m = check_no_leak(cheap_once_then_dear, screen=True, raise_on_leak=False,
                      examples=False, confirm=False)
    # The two first-pass calls are its warm-up, then the 5 runs.
    assert m.leaked and not m.screened and m.calls == 2 + 5, m.calls

def test_a_cheap_test_growing_on_three_census_runs_goes_on_to_the_follow_up(monkeypatch):
    # Its follow-up's calls cost less than the two census runs left, so those
    # are not made: a leak is found over 256 calls after 3 runs, and growth
    # that stops right after the third run is cleared by the follow-up.
    # The rule weighs wall times: a census of this small heap takes a few
    # ms, and one call descheduled for a tenth of that on a loaded machine
    # (CI) tipped it.  Each census is made to cost 0.2 s more (while the
    # test's calls stay microseconds), so only a 0.8 ms hiccup could.
    import time
    import memwatch.pytest_plugin as p
    settle = p._settle
    monkeypatch.setattr(p, "_settle", lambda collect: (time.sleep(0.2), settle(collect))[1])
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      examples=False)
    assert m.leaked and m.runs == 3 and m.confirmed_calls == 256, (m.runs, m.confirmed_calls)
    judged = []
    real = p._growth_possible
    monkeypatch.setattr(p, "_growth_possible",
                        lambda raws, i, *a: (judged.append(i), real(raws, i, *a))[1])
    cache = []

    def fills_after_three_runs():
        if 3 not in judged:
            cache.append(Thing())

    m = check_no_leak(fills_after_three_runs, screen=True, raise_on_leak=False, examples=False)
    assert not m.leaked and m.runs == 3 and "test_screen.Thing" in m.stopped, (m.runs, m.stopped)
    # A dearer call (2 ms: its follow-up costs more than two censuses of this
    # small heap) gets all 5 runs first.
    monkeypatch.setattr(p, "_settle", settle)
    m = check_no_leak(lambda: (KEEP.append(Thing()), burn(0.002)), screen=True,
                      raise_on_leak=False, examples=False)
    assert m.leaked and m.runs == 5 and m.confirmed_calls == 256, (m.runs, m.confirmed_calls)
    monkeypatch.setattr(p, "_FOLLOW_UP_RUNS", 99)       # the rule off: 5 runs
    m = check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                      examples=False)
    assert m.leaked and m.runs == 5, m.runs

HOLD = {}

def cycle():
    a = []
    a.append(a)
    HOLD["last"] = a    # the last call's cycle dies now, kept old by the young collections

def test_garbage_that_died_old_is_cleared_by_the_full_collections():
    # The blocks grow after each young collection; not after a full one.
    m = check_no_leak(cycle, screen=True)
    assert m.screened and not m.leaked and m.calls > 3 and m.deltas == []

# (b"x" * 4000 would be one constant, folded by the compiler.)
@pytest.mark.parametrize("make", [Thing, lambda: {"n": len(KEEP)},
                                  lambda: b"x" * (4000 + len(KEEP) % 2),
                                  lambda: str(len(KEEP)) * 3])
def test_leaks_pass_the_first_pass(make):
    m = check_no_leak(lambda: KEEP.append(make()), screen=True, raise_on_leak=False,
                      examples=False)
    assert not m.screened and m.leaked and m.confirmed_calls == 256
'''


@pytest.mark.parametrize("blocks", ["counting hooks", "getallocatedblocks"])
def test_cheap_first_pass(pytester, run, blocks):
    # Both sources of the block count, each forced: the counting hooks and
    # sys.getallocatedblocks() (which one a check uses depends on the heap).
    share = "-1.0" if blocks == "counting hooks" else "1e9"
    pytester.makeconftest(f"import memwatch.pytest_plugin as p\np._COUNTER_SHARE = {share}\n")
    pytester.makepyfile(test_screen=SCREEN + f"""
def test_the_block_source_was_{blocks.replace(' ', '_')}(monkeypatch):
    import memwatch.pytest_plugin as p
    seen = []
    real = p._Screen.sample
    def sample(self):
        seen.append(self.counter)
        real(self)
    monkeypatch.setattr(p._Screen, "sample", sample)
    check_no_leak(lambda: KEEP.append(Thing()), screen=True, raise_on_leak=False,
                  examples=False, confirm=False)
    assert seen and set(seen) == {{{blocks == "counting hooks"}}}, seen
""")
    result = run("-q", "-p", "no:asyncio")
    result.assert_outcomes(passed=14)


def test_the_census_runs_stop_once_no_growth_on_every_run_is_possible(monkeypatch):
    # Under --memwatch-leaks (screen=True) the measured runs end at the first
    # census after which no type has grown on every run and the bytes have
    # not either: the verdict is settled clean.  A leak still gets all runs.
    from memwatch import pytest_plugin
    monkeypatch.setattr(pytest_plugin._Screen, "grew", lambda self, tolerance, last=2: True)
    m = pytest_plugin.check_no_leak(lambda: None, screen=True)
    assert not m.leaked and not m.screened and m.runs < pytest_plugin.DEFAULT_RUNS
    assert len(m.deltas) == m.runs
    keep = []
    m = pytest_plugin.check_no_leak(lambda: keep.append(object()), screen=True,
                                    raise_on_leak=False, examples=False, confirm=False)
    assert m.leaked and m.runs == pytest_plugin.DEFAULT_RUNS and len(m.deltas) == m.runs
    # Asked for (no screen): every run, as before.
    m = pytest_plugin.check_no_leak(lambda: None)
    assert not m.leaked and m.runs == pytest_plugin.DEFAULT_RUNS
