"""The C census against the pure-Python oracle, and its robustness."""
from __future__ import annotations

import gc
import json
import sys
import weakref
from collections import Counter, defaultdict

import pytest

import memwatch
from memwatch import _core
from memwatch.typestats import Census, TypeStat

from reference import reference_walk


def _getsizeof(obj):
    try:
        size = sys.getsizeof(obj)
    except Exception:
        return type(obj).__basicsize__
    return size


@pytest.fixture
def gc_off():
    was = gc.isenabled()
    gc.disable()
    yield
    if was:
        gc.enable()


class Leaky:
    def __init__(self, i):
        self.i = i
        self.tag = "leaky-%d" % i


def test_self_check_finds_no_mismatch():
    # The inline size paths agree with sys.getsizeof on this interpreter.
    assert _core._SELF_CHECK_MISMATCHES == []


def _census_vs_reference():
    keep = [Leaky(i) for i in range(2000)]  # noqa: F841 (kept alive on purpose)
    raw = _core.walk(keep_objects=True)
    # Sized at once: the oracle's walk below may resize a dict or two.
    sizes = [_getsizeof(o) for o in raw.objects]
    ref = reference_walk()
    return raw, sizes, ref


def test_census_is_a_superset_of_the_reference(gc_off):
    raw, _sizes, ref = _census_vs_reference()
    counted = {id(o) for o in raw.objects}
    assert len(counted) == len(raw.objects) == raw.total_count  # each object once
    created_after = {id(raw), id(raw.objects), id(_sizes)} | {id(s) for s in _sizes}
    missing = Counter(name for key, (name, _size, _obj) in ref.items()
                      if key not in counted and key not in created_after)
    assert not missing, missing


def test_census_sizes_equal_sys_getsizeof_for_every_object(gc_off):
    raw, sizes, ref = _census_vs_reference()
    expected = defaultdict(lambda: [0, 0])
    for obj, size in zip(raw.objects, sizes):
        slot = expected[memwatch.type_name(type(obj))]
        slot[0] += 1
        slot[1] += size
    got = defaultdict(lambda: [0, 0])
    for name, count, size in raw.rows():
        got[name][0] += count
        got[name][1] += size
    assert dict(got) == dict(expected)
    assert raw.total_size == sum(v[1] for v in expected.values())
    # And on every object both reached, the oracle's size is the census's.
    census_size = {id(o): s for o, s in zip(raw.objects, sizes)}
    mismatched = [(name, size, census_size[key]) for key, (name, size, _obj) in ref.items()
                  if key in census_size and census_size[key] != size]
    # Only containers the oracle's own walk touched may have changed size.
    assert len(mismatched) <= 2 and all(m[0] in ("dict", "list") for m in mismatched), mismatched


def test_census_sees_strings_held_only_as_dict_keys(gc_off):
    key = "".join(["memwatch-only-a-key-", str(id(object()))])
    holder = {key: 1}
    raw = _core.walk(keep_objects=True)
    assert any(o is key for o in raw.objects)
    # gc.get_referents() does not report the keys of a str-keyed dict.
    assert not any(o is key for o in gc.get_referents(holder))


def test_census_sees_code_object_constants(gc_off):
    src = "def f():\n    return 'memwatch-constant-only-in-code-%d'\n" % id(object())
    namespace = {}
    exec(compile(src, "<memwatch-test>", "exec"), namespace)
    func = namespace["f"]
    constants = [c for c in func.__code__.co_consts if isinstance(c, str)]
    assert constants
    raw = _core.walk(keep_objects=True)
    counted = {id(o) for o in raw.objects}
    assert id(constants[0]) in counted
    assert gc.get_referents(func.__code__) == []  # invisible to the oracle


def test_tracked_only_counts_exactly_the_gc_tracked_objects(gc_off):
    raw = _core.walk(tracked_only=True, keep_objects=True)
    tracked = gc.get_objects()
    counted = {id(o) for o in raw.objects}
    expected = {id(o) for o in tracked} - {id(raw), id(raw.objects)}
    assert counted == expected
    assert raw.tracked_only and raw.total_count == len(counted)
    assert memwatch.census(tracked_only=True).tracked_only


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_state_is_restored(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        memwatch.census()
        assert gc.isenabled() is enabled
        _core._fail_allocation_after(0)
        with pytest.raises(MemoryError):
            memwatch.census()
        assert gc.isenabled() is enabled
    finally:
        _core._fail_allocation_after(-1)
        (gc.enable if was else gc.disable)()


def test_every_allocation_failure_raises_memoryerror_cleanly():
    outcomes = Counter()
    for n in range(64):
        _core._fail_allocation_after(n)
        try:
            raw = _core.walk(record=True)
        except MemoryError as exc:
            assert "memwatch" in str(exc)
            outcomes["MemoryError"] += 1
        else:
            outcomes["ok"] += 1
            assert raw.total_count > 0
        finally:
            _core._fail_allocation_after(-1)
        assert gc.isenabled()
    assert outcomes["MemoryError"] >= 5 and outcomes["ok"] >= 1


def test_million_long_linked_list_and_deep_nesting():
    class Node:
        __slots__ = ("next",)

    head = None
    for _ in range(1_000_000):
        node = Node()
        node.next = head
        head = node
    nested_list = []
    for _ in range(100_000):
        nested_list = [nested_list]
    # Untracked all the way down: a collection untracks a chain of tuples that
    # holds nothing tracked, so only the walk's own stack reaches the bottom.
    nested_tuple = ("bottom",)
    for _ in range(300_000):
        nested_tuple = (nested_tuple,)
        gc.collect(0)   # untracks the new level: everything below is untracked
    holder = [nested_tuple]  # noqa: F841
    assert not gc.is_tracked(nested_tuple)
    before = memwatch.census()
    assert before.count(memwatch.type_name(Node)) == 1_000_000
    assert before.count("list") >= 100_000
    del holder
    after = memwatch.census()
    assert before.count("tuple") - after.count("tuple") >= 300_000
    del head, nested_list


class RaisingSizeof:
    def __sizeof__(self):
        raise RuntimeError("no size for you")


class AllocatingSizeof:
    created = []

    def __sizeof__(self):
        # Allocates, mutates a container the walk may be looking at, collects.
        AllocatingSizeof.created.append([object() for _ in range(50)])
        gc.collect()
        return 1000


class BadSizeof:
    def __sizeof__(self):
        return "not an int"


def test_hostile_sizeof_methods_do_not_crash_or_corrupt():
    objs = ([RaisingSizeof() for _ in range(10)] + [AllocatingSizeof() for _ in range(10)]
            + [BadSizeof() for _ in range(10)])
    result = memwatch.census()
    assert result.count(memwatch.type_name(RaisingSizeof)) == 10
    assert result.size(memwatch.type_name(RaisingSizeof)) == 10 * RaisingSizeof.__basicsize__
    assert result.size(memwatch.type_name(AllocatingSizeof)) == 10 * sys.getsizeof(AllocatingSizeof())
    assert result.size(memwatch.type_name(BadSizeof)) == 10 * BadSizeof.__basicsize__
    assert result.sizeof_errors >= 20
    assert gc.isenabled()
    del objs
    AllocatingSizeof.created.clear()


def test_census_keeps_nothing_alive():
    obj = Leaky(1)
    ref = weakref.ref(obj)
    result = memwatch.census()
    raw = _core.walk(record=True)
    del obj
    assert ref() is None
    assert result.count(memwatch.type_name(Leaky)) >= 1 and raw.total_count > 0


def test_census_does_not_count_its_own_bookkeeping(gc_off):
    # gc.get_objects() inside the walk returns a list as long as the heap; it
    # must not show up (as one huge list) in the result.
    first = memwatch.census()
    second = memwatch.census()
    assert abs(second.size("list") - first.size("list")) < 8 * 1024
    # The second census sees the first one's result (rows, names), no more.
    assert second.total_count - first.total_count < 4 * len(first.rows) + 100
    raw = _core.walk(keep_objects=True)
    biggest_list = max(sys.getsizeof(o) for o in raw.objects
                       if type(o) is list and o is not raw.objects)
    assert biggest_list < 4 * raw.total_count


def test_type_names_are_qualified_and_never_merge_by_accident(run_script):
    proc = run_script("""
        import json, sys, types, memwatch
        a = types.ModuleType("pkg_a"); b = types.ModuleType("pkg_b")
        exec("class Session: pass", a.__dict__); exec("class Session: pass", b.__dict__)
        class Outer:
            class Inner: pass
        keep = [a.Session() for _ in range(3)] + [b.Session() for _ in range(5)] + [Outer.Inner()]
        c = memwatch.census()
        print(json.dumps({n: c.count(n) for n in ["pkg_a.Session", "pkg_b.Session",
                          "__main__.Outer.Inner", "dict", "str"]}))
        print(memwatch.type_name(dict), memwatch.type_name(Outer.Inner), memwatch.type_name(type(sys)))
    """)
    counts_line, names_line = proc.stdout.strip().splitlines()
    counts = json.loads(counts_line)
    assert counts["pkg_a.Session"] == 3 and counts["pkg_b.Session"] == 5
    assert counts["__main__.Outer.Inner"] == 1
    assert counts["dict"] > 0 and counts["str"] > 0
    assert names_line == "dict __main__.Outer.Inner module"


def test_frozen_objects_are_still_found(run_script):
    # gc.freeze() moves objects out of gc.get_objects(); what they reach and what
    # reaches them must still be counted, exactly as the oracle sees it.
    proc = run_script("""
        import gc, sys, memwatch
        from memwatch import _core
        from reference import reference_walk
        class Frozen: pass
        frozen = [Frozen() for _ in range(100)]      # only a frozen dict holds it
        gc.freeze()
        assert gc.get_freeze_count() > 0 and gc.get_objects() == []

        def check():
            holder = [Frozen() for _ in range(7)]    # new objects, not frozen
            gc.disable()
            ref = reference_walk()
            raw = _core.walk(keep_objects=True)
            counted = {id(o) for o in raw.objects}
            missing = [v[0] for k, v in ref.items() if k not in counted]
            return len(missing), sum(1 for o in raw.objects if type(o) is Frozen)
        print(*check())
    """)
    missing, frozen = proc.stdout.split()
    # Everything the oracle can reach, and the frozen instances it cannot.
    assert int(missing) == 0 and int(frozen) == 107


def test_census_api_shapes():
    keep = [Leaky(i) for i in range(100)]
    old = memwatch.census()
    keep += [Leaky(i) for i in range(50)]
    new = memwatch.census()
    name = memwatch.type_name(Leaky)
    assert isinstance(new, Census) and isinstance(new.rows[0], TypeStat)
    assert new[name].count == old[name].count + 50
    sizes = [r.size for r in new.rows]
    assert sizes == sorted(sizes, reverse=True)
    diffs = new.compare_to(old)
    row = next(d for d in diffs if d.name == name)
    assert row.count_diff == 50 and row.size_diff == 50 * sys.getsizeof(keep[0])
    assert [abs(d.size_diff) for d in diffs] == sorted((abs(d.size_diff) for d in diffs), reverse=True)
    data = json.loads(json.dumps(new.to_dict(limit=5)))
    assert set(data) >= {"nodes", "size_bytes", "size", "types"} and len(data["types"]) == 5
    assert data["nodes"] == new.total_count
    table = new.format(limit=3)
    assert "total" in table and "more types" in table
    assert new.elapsed > 0 and new.overhead_bytes > 0
    with pytest.raises(KeyError, match="no objects of type"):
        new["no.such.Type"]
    assert new.get("no.such.Type") is None and new.count("no.such.Type") == 0
    with pytest.raises(TypeError):
        memwatch.type_name("dict")


def test_census_with_collect_ignores_garbage():
    class Cyclic:
        pass

    for _ in range(500):
        a, b = Cyclic(), Cyclic()
        a.other, b.other = b, a
    del a, b
    gc.disable()
    try:
        assert memwatch.census(collect=True).count(memwatch.type_name(Cyclic)) == 0
    finally:
        gc.enable()


def test_census_from_many_threads_at_once():
    import threading

    errors = []
    results = []

    def worker():
        try:
            for _ in range(3):
                results.append(memwatch.census().total_count)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12 and all(r > 0 for r in results)


def test_sole_references_are_counted_exactly_once(gc_off):
    # Objects whose only reference is the one being followed skip the seen-set.
    # A key of a dict that is not str-keyed is reported twice (by dict_traverse
    # and by the key enumeration), so it must still be counted once; so must a
    # sole-reference string in a list, tuple and instance.
    key = "".join(["sole-key-", str(id(object()))])
    mixed = {1: "one", key: 2}
    # The dict, this local and (before 3.14) the call's argument: from 3.14 on
    # the argument is a borrowed stack reference, which is why a count of 1
    # no longer proves a sole reference there (the C shortcut is off on 3.14+).
    assert sys.getrefcount(key) == (2 if sys.version_info >= (3, 14) else 3)
    del key                               # now the dict holds the only reference
    in_list = ["".join(["sole-in-list-", str(i)]) for i in range(3)]
    in_tuple = tuple("".join(["sole-in-tuple-", str(i)]) for i in range(3))
    # Held by a tracked list: a running frame's locals are not reported by
    # frame_tp_traverse, so an untracked dict held only by a local is unseen.
    holder = [mixed, in_tuple]  # noqa: F841
    raw = _core.walk(keep_objects=True)
    ids = [id(o) for o in raw.objects]
    assert len(ids) == len(set(ids))
    key_id = next(id(k) for k in mixed if isinstance(k, str))
    assert ids.count(key_id) == 1
    for s in in_list + list(in_tuple):
        assert ids.count(id(s)) == 1


def test_sizeof_that_reclasses_a_pending_object_is_counted_consistently():
    # Review finding: a __sizeof__ run after the walk re-classes objects that
    # still wait to be sized; the type table must not grow past its names.
    class Waiting:
        def __sizeof__(self):
            return 64

    class Renamed:
        def __sizeof__(self):
            return 64

    waiting = [Waiting() for _ in range(3)]

    class Reclasser:
        done = False

        def __sizeof__(self):
            if not Reclasser.done:
                Reclasser.done = True
                for w in waiting:
                    w.__class__ = Renamed
            return 64

    trigger = Reclasser()  # noqa: F841
    raw = _core.walk()
    rows = raw.rows()
    assert len(rows) == len(raw.names)
    by_name = {name: (count, size) for name, count, size in rows}
    # Counted and sized under the type they had during the walk, together.
    assert by_name[memwatch.type_name(Waiting)] == (3, 3 * sys.getsizeof(Waiting()))


def test_names_only_the_type_cache_holds_survive_the_walk(run_script):
    # A class attribute looked up and then deleted leaves its name in the type
    # attribute cache, which holds a strong reference to it until the slot is
    # filled again (enum.py does this with '_<cls>__in_progress').  A walk that
    # looked __sizeof__ up through the cache (once per new type) filled slots,
    # so it released such names, freeing strs it had just counted: 3.14's
    # walk reaches them through the interned-strings dict, and keep_objects
    # then took references to freed memory (a crash on 3.14.10, in about one
    # round out of three here; eight rounds).  The walk must release nothing.
    proc = run_script("""
        import json, sys
        from memwatch import _core

        found_total = dead_total = 0
        for rnd in range(8):
            prefix = "mw_cache_only_name_%d_" % rnd

            class Holder:
                pass

            for i in range(3000):
                name = sys.intern(prefix + str(i))
                setattr(Holder, name, i)
                getattr(Holder, name)       # now in a type-cache slot
                delattr(Holder, name)       # the slot keeps the name alive
            del name
            fresh = [type("Fresh%d_%d" % (rnd, i), (), {})() for i in range(300)]
            raw = _core.walk(keep_objects=True)
            found = [o for o in raw.objects
                     if type(o) is str and o.startswith(prefix) and o is not prefix]
            # A kept str is the live, interned original: interning an equal
            # fresh copy returns it (a freed one has left the interned dict).
            dead_total += sum(1 for o in found if sys.intern("".join(list(o))) is not o)
            found_total += len(found)
            del raw, found, fresh
        print(json.dumps({"found": found_total, "dead_kept": dead_total}))
    """)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["dead_kept"] == 0, result


def test_new_objects_matches_a_python_reference():
    # The pytest plugin's example finder: objects of the given types whose
    # address is not among the old ones (sorted array('Q')), order kept.
    import random
    from array import array
    rng = random.Random(7)
    objects = [rng.choice([{}, [], (), 1.5, "s", object(), set()]) for _ in range(3000)]
    objects = [type(o)() if type(o) is not float else rng.random() for o in objects]
    old = rng.sample(objects, 1000)
    before = array("Q", sorted(id(o) for o in old))
    assert _core.sorted_addresses(old) == before
    assert _core.sorted_addresses([]) == array("Q")
    assert _core.sorted_addresses([old[0]]) == array("Q", [id(old[0])])
    for types in [(dict,), (dict, list), (float, object, set), (), (int,), None]:
        expect = [o for o in objects
                  if (types is None or type(o) in types) and id(o) not in set(before)]
        got = _core.new_objects(objects, types, before)
        assert len(got) == len(expect) and all(a is b for a, b in zip(got, expect)), types
    assert _core.new_objects([], (dict,), array("Q")) == []
    assert _core.new_objects(objects, (dict,), array("Q")) == [o for o in objects if type(o) is dict]
    with pytest.raises(ValueError, match="dtype mismatch"):
        _core.new_objects(objects, (dict,), array("d", [1.0]))
    with pytest.raises(TypeError):
        _core.new_objects(tuple(objects), (dict,), before)
    with pytest.raises(TypeError):
        _core.new_objects(objects, [dict], before)
    with pytest.raises(TypeError):
        _core.sorted_addresses(tuple(objects))


@pytest.mark.parametrize("enabled", [True, False])
def test_fill_tuple_free_lists_leaves_them_full_and_the_gc_as_it_was(enabled):
    # The plugin's first pass reads sys.getallocatedblocks() with the tuple
    # free lists full: a second fill then adds no block, and a tuple made and
    # dropped moves none.
    import gc
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        _core.fill_tuple_free_lists()
        assert gc.isenabled() is enabled
        before = sys.getallocatedblocks()
        _core.fill_tuple_free_lists()
        assert abs(sys.getallocatedblocks() - before) <= 2
        # Full: 2000 tuples of a size come from its list (no new block);
        # from an empty list they would be 2000 new blocks.
        for size in (1, 2, 5, 19):
            start = sys.getallocatedblocks()
            held = [tuple(range(size)) for _ in range(2000)]
            assert sys.getallocatedblocks() - start < 100, size
            del held
        assert gc.isenabled() is enabled
        _core._fail_allocation_after(0)     # its room for the tuples cannot be had
        with pytest.raises(MemoryError, match="memwatch: cannot allocate room"):
            _core.fill_tuple_free_lists()
        assert gc.isenabled() is enabled
    finally:
        _core._fail_allocation_after(-1)
        (gc.enable if was else gc.disable)()


# --- the block counter (the pytest plugin's cheap pass reads it) -------------

@pytest.fixture
def block_counter():
    from memwatch import _sampler
    before = _sampler.allocators()
    assert _core.live_blocks() is None      # not running: nothing to read
    yield _sampler.allocators
    _core.stop_block_counter()
    assert _sampler.allocators() == before  # the allocators exactly as they were


def test_the_block_counter_counts_what_getallocatedblocks_counts(block_counter):
    gc.collect()
    assert _core.start_block_counter() is True
    assert _core.start_block_counter() is False        # still in: reused
    # small blocks (pymalloc's pools) and big ones (4 KB buffers, from malloc)
    for make, n in ((lambda: [object() for _ in range(1000)], 1000),
                    (lambda: [bytearray(4096) for _ in range(50)], 100)):
        start, oracle = _core.live_blocks(), sys.getallocatedblocks()
        held = make()
        grown, grown_oracle = _core.live_blocks() - start, sys.getallocatedblocks() - oracle
        # the same blocks, give or take the readings' own ints
        assert abs(grown - grown_oracle) <= 3 and grown >= n, (grown, grown_oracle)
        del held
        # (what is left: the ints read above)
        assert abs(_core.live_blocks() - start) <= 10


def test_the_block_counter_stays_chained_under_tracemalloc(block_counter):
    import tracemalloc
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc already on")
    mine = block_counter()
    _core.start_block_counter()
    counting = block_counter()
    assert counting != mine
    tracemalloc.start()
    try:
        # taking ours out now would drop tracemalloc's hooks with them
        assert _core.stop_block_counter() is False
        start = _core.live_blocks()
        held = [object() for _ in range(200)]     # (no free list: 200 blocks)
        assert _core.live_blocks() - start >= 200          # still counting
        del held
    finally:
        tracemalloc.stop()
    assert block_counter() == counting                     # ours on top again
    assert _core.stop_block_counter() is True
    assert _core.live_blocks() is None


def test_the_block_counter_notices_it_was_dropped(block_counter):
    import tracemalloc
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc already on")
    tracemalloc.start()
    try:
        _core.start_block_counter()          # on top of tracemalloc's hooks
        assert isinstance(_core.live_blocks(), int)
    finally:
        tracemalloc.stop()                   # restores what it found: ours are out
    assert _core.live_blocks() is None
    assert _core.start_block_counter() is True
    assert isinstance(_core.live_blocks(), int)
