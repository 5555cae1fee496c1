"""memwatch.retainers(): shortest reference paths from the roots."""
from __future__ import annotations

import gc
import sys
import weakref

import pytest
from conftest import allocation_failures

import memwatch
from memwatch.retainer_paths import RetainerPath, RetainerStep


def _class(name, module="app", **ns):
    cls = type(name, (), dict(ns, __module__=module))
    cls.__qualname__ = name
    return cls


def test_the_documented_one_line_form(app_module):
    Session = _class("Session")
    app_module.CACHE = [Session() for _ in range(5)]
    target = app_module.CACHE[3]
    paths = memwatch.retainers(target, limit=1)
    assert len(paths) == 1
    assert str(paths[0]) == "app.handlers -> dict 'CACHE' -> list[3] -> app.Session"
    path = paths[0]
    assert isinstance(path, RetainerPath) and path.root == "app.handlers"
    assert [s.type_name for s in path.steps] == ["module", "dict", "list", "app.Session"]
    assert [(s.kind, s.name) for s in path.steps[1:]] == [("key", "'CACHE'"), ("index", 3),
                                                          (None, None)]
    assert all(isinstance(s, RetainerStep) for s in path)
    assert path.to_dict()["path"] == str(path)


def test_paths_to_the_instances_of_a_type(app_module):
    Session = _class("Session")
    app_module.A = Session()
    app_module.B = {"x": [Session()]}
    paths = memwatch.retainers(Session, limit=5)
    assert [str(p) for p in paths] == ["app.handlers -> dict 'A' -> app.Session",
                                       "app.handlers -> dict 'B' -> dict 'x' -> list[0] -> app.Session"]


def test_several_referrers_nearest_first(app_module):
    Session = _class("Session")
    s = Session()
    app_module.DIRECT = s
    app_module.NESTED = [[s]]
    del s
    paths = memwatch.retainers(app_module.DIRECT, limit=5)
    assert [str(p) for p in paths] == [
        "app.handlers -> dict 'DIRECT' -> app.Session",
        "app.handlers -> dict 'NESTED' -> list[0] -> list[0] -> app.Session"]


def test_attributes_slots_and_closures_are_named(app_module):
    Holder = _class("Holder")
    Slotted = type("Slotted", (), {"__slots__": ("payload",), "__module__": "app"})
    Leaf = _class("Leaf")
    h = Holder()
    h.items = [Slotted()]
    h.items[0].payload = Leaf()

    def make():
        captured = h

        def inner():
            return captured
        return inner
    app_module.HOLDER_FN = make()
    del h
    (path,) = memwatch.retainers(Leaf, limit=1)
    # Instance attributes: inline (3.11+) or in the instance's own __dict__ (3.10).
    attr = "app.Holder.items" if sys.version_info >= (3, 11) else "app.Holder -> dict 'items'"
    assert str(path) == ("app.handlers -> dict 'HOLDER_FN' -> function.__closure__ -> tuple[0] "
                         f"-> cell.cell_contents -> {attr} -> list[0] -> app.Slotted.payload "
                         "-> app.Leaf")


def test_limit_and_no_path():
    Orphan = _class("Orphan")
    local_only = Orphan()
    # Held only by this frame: the caller's own references are no path.
    assert memwatch.retainers(local_only, limit=3) == []
    for bad in (0, -1, 2.0, "3", True, None):
        with pytest.raises(ValueError, match="limit must be an int"):
            memwatch.retainers(local_only, limit=bad)


def test_huge_limit_is_sized_by_what_is_found():
    # (limit + 1) * 4 used to wrap: a heap-buffer-overflow (segfault) for any
    # limit >= 2**62, and a MemoryError around 2**40 for a few instances.
    Few = _class("Few")
    keep = [Few() for _ in range(3)]
    holder = _class("FewHolder")()
    holder.items = keep
    for limit in (2 ** 40, 2 ** 62, sys.maxsize, 2 ** 100):
        assert len(memwatch.retainers(Few, limit=limit)) == 3
        assert len(memwatch.retainers(keep[0], limit=limit)) == 1


def test_does_not_keep_the_target_alive(app_module):
    Session = _class("Session")
    app_module.CACHE = [Session()]
    ref = weakref.ref(app_module.CACHE[0])
    paths = memwatch.retainers(app_module.CACHE[0], limit=1)
    assert paths
    app_module.CACHE.clear()
    gc.collect()
    assert ref() is None
    assert all(isinstance(s.name, (str, int, type(None))) for p in paths for s in p.steps)


def test_never_sees_its_own_bookkeeping(app_module):
    Session = _class("Session")
    app_module.ONLY = Session()
    for _ in range(2):   # a second call must not find the first call's objects
        paths = memwatch.retainers(app_module.ONLY, limit=10)
        assert [str(p) for p in paths] == ["app.handlers -> dict 'ONLY' -> app.Session"]


def test_deep_chain_is_walked_without_recursion(app_module):
    Tail = _class("Tail")
    node = [Tail()]
    for _ in range(200_000):
        node = [node]
    app_module.CHAIN = node
    del node
    (path,) = memwatch.retainers(Tail, limit=1)
    assert len(path.steps) == 200_000 + 4
    assert str(path).endswith("list[0] -> list[0] -> app.Tail")


def test_held_from_outside_the_heap_is_an_external_root():
    Pinned = _class("Pinned")
    obj = Pinned()
    paths = memwatch.retainers(Pinned, limit=1)
    # A running frame's locals are references from outside the heap graph
    # (3.11+); 3.10 frames are objects, and the calling thread's frames are
    # no path, though the object may still be held from outside.
    if sys.version_info >= (3, 11) or paths:
        assert [str(p) for p in paths] == ["app.Pinned (external)"]
        assert paths[0].root == "(external)"
    assert obj


def test_ignore_keeps_the_callers_containers_out_of_paths(app_module):
    Session = _class("Session")
    app_module.CACHE = [Session()]
    mine = {"examples": [app_module.CACHE[0]]}
    paths = memwatch.retainers(app_module.CACHE[0], limit=5)
    assert len(paths) == 2 or sys.version_info < (3, 11)
    paths = memwatch.retainers(app_module.CACHE[0], limit=5, ignore=[mine])
    assert [str(p) for p in paths] == ["app.handlers -> dict 'CACHE' -> list[0] -> app.Session"]
    assert mine


# --- Regressions found in review ------------------------------------------

class _ReviewTarget:
    pass


class _HostileProxy:
    def __getattribute__(self, name):
        raise RuntimeError("outside app context")


def test_search_by_type_runs_no_program_code():
    # isinstance() would call the proxy's __getattribute__ (via __class__);
    # the search compares types in C instead.
    proxy = _HostileProxy()
    holder = {"proxy": proxy, "target": _ReviewTarget()}
    paths = memwatch.retainers(_ReviewTarget, limit=1)
    assert paths and str(paths[0]).endswith(memwatch.type_name(_ReviewTarget))
    assert holder["proxy"] is proxy


def test_one_path_per_distinct_referrer():
    x = _ReviewTarget()
    holder = [x, x, x]
    del x
    paths = memwatch.retainers(holder[0], limit=5)
    assert len({str(p) for p in paths}) == len(paths)
    assert sum(1 for p in paths if "list" in str(p)) == 1


def test_dict_subclass_entries_are_one_edge_each(run_script):
    # Review finding: a dict subclass's values were reported twice (by its
    # tp_traverse and by the named entries), so a reference held from outside
    # the graph (here: from C) was not seen and the object was no root.
    proc = run_script("""
        import collections, ctypes
        from memwatch import _graph
        class D(dict):
            pass
        makers = {
            "subclass-str-keys": lambda x: D(k=x),
            "subclass-int-keys": lambda x: D({1: x}),
            "defaultdict": lambda x: collections.defaultdict(list, k=x),
            "OrderedDict": lambda x: collections.OrderedDict(k=x),
            "Counter": lambda x: collections.Counter({"k": x}),
        }
        for name, make in makers.items():
            x = ["p"]
            d = make(x)
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(x))
            print(name, _graph._debug_refs("x")[1])
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(x))
    """)
    results = dict(line.split() for line in proc.stdout.splitlines())
    assert len(results) == 5 and set(results.values()) == {"True"}, results


def test_paths_through_a_defaultdict_keep_its_key_names():
    import collections

    class Holder:
        pass

    h = Holder()
    h.cache = collections.defaultdict(list)
    h.cache["bob"].append(_ReviewTarget())
    path = str(memwatch.retainers(h.cache["bob"][0], limit=1)[0])
    assert "collections.defaultdict 'bob' -> list[0]" in path


# --- The type form and the object form agree --------------------------------
# The handler that asks "who holds my Sessions?" usually holds one itself (a
# local) and holds the class (an argument).  Both are references from outside
# the heap graph on 3.11+; the search used to visit them in the same
# breadth-first level as the modules, so the type form ended at
# "app.X (external)" (the local) or "type (external) -> ..." (the class
# argument) where the object form, whose target is exempt, found the module.

def test_type_form_finds_the_holders_the_object_form_finds(app_module):
    Item = _class("Item")
    Registry = _class("Registry", items=[Item()])

    def make(captured):
        def handler():
            return captured
        return handler
    Owner = _class("Owner")
    app_module.STORE = [Item(), Item()]              # module global -> list -> instances
    app_module.Registry = Registry                   # class attribute
    app_module.HANDLER = make(Item())                # closure cell
    app_module.REGISTRY = {"current": Item()}        # dict value
    app_module.OWNER = Owner()                       # attribute of a module's instance
    app_module.OWNER.thing = Item()
    # All held by this frame too, as a handler holds what it works on.
    # (Locals, not a list: a list here would be a container the search sees.)
    a, b, c = app_module.STORE[0], Registry.items[0], app_module.HANDLER.__closure__[0].cell_contents
    d, e = app_module.REGISTRY["current"], app_module.OWNER.thing
    expected = {
        "app.handlers -> dict 'STORE' -> list[0] -> app.Item",
        "app.handlers -> dict 'Registry' -> type -> dict 'items' -> list[0] -> app.Item",
        "app.handlers -> dict 'HANDLER' -> function.__closure__ -> tuple[0] "
        "-> cell.cell_contents -> app.Item",
        "app.handlers -> dict 'REGISTRY' -> dict 'current' -> app.Item",
        "app.handlers -> dict 'OWNER' -> app.Owner.thing -> app.Item",
    }

    def same_holder(path):
        # The instance's __dict__ may be a step of its own: on 3.10 always; on
        # 3.14 once naming the attribute has made the dict (vars() would too).
        return str(path).replace("app.Owner -> dict 'thing'", "app.Owner.thing")
    by_object = set()
    for k, obj in enumerate((a, b, c, d, e)):
        (path,) = memwatch.retainers(obj, limit=1, collect=k == 0)
        by_object.add(same_holder(path))
    obj = None
    assert by_object == expected
    # One path per instance, nearest first: the sixth (STORE[1]) is as near as STORE[0].
    by_class = [same_holder(p) for p in memwatch.retainers(Item, limit=6, collect=False)]
    by_name = [same_holder(p) for p in memwatch.retainers("app.Item", limit=6, collect=False)]
    assert by_class == by_name
    assert set(by_class) == expected | {"app.handlers -> dict 'STORE' -> list[1] -> app.Item"}
    assert all(not p.endswith("(external)") for p in by_class)
    assert all(x is not None for x in (a, b, c, d, e))


def test_only_held_from_outside_still_has_its_external_path_last(app_module):
    Item = _class("Item")
    app_module.ONE = Item()
    local_only = Item()       # this frame's: from outside the graph on 3.11+
    paths = [str(p) for p in memwatch.retainers(Item, limit=5)]
    assert paths[0] == "app.handlers -> dict 'ONE' -> app.Item"
    if sys.version_info >= (3, 11):
        assert paths == ["app.handlers -> dict 'ONE' -> app.Item", "app.Item (external)"]
    assert local_only is not None


def test_a_tuple_being_filled_in_another_thread_is_not_disturbed():
    # tuple(generator) resizes the tuple it fills, which needs a reference
    # count of 1.  The search pins every object, then runs Python code (here:
    # a __sizeof__); a pin on another thread's half-filled tuple made that
    # thread's tuple() raise SystemError ("bad argument to internal function").
    import threading
    paused, resume, done = threading.Event(), threading.Event(), threading.Event()
    result = {}

    class SizedInPython:
        calls = 0

        def __sizeof__(self):
            # Runs while the search holds its pins: let the filling thread finish now.
            if not SizedInPython.calls:
                SizedInPython.calls += 1
                resume.set()
                done.wait(60)
            return 64

    def items():
        yield from range(3)
        paused.set()
        resume.wait(60)      # the tuple has 10 slots, 3 filled: it grows after this
        yield from range(30)

    def fill():
        try:
            result["tuple"] = tuple(items())
        except BaseException as e:  # noqa: BLE001 - reported by the test
            result["error"] = e
        done.set()

    keep = SizedInPython()
    worker = threading.Thread(target=fill)
    worker.start()
    assert paused.wait(60)
    memwatch.retainers(_ReviewTarget, limit=1, collect=False)
    worker.join(60)
    assert SizedInPython.calls == 1 and resume.is_set()
    assert "error" not in result, result["error"]
    assert result["tuple"] == (0, 1, 2, *range(30))
    assert keep


def test_one_search_for_many_targets_finds_each_ones_shortest_path(app_module):
    # The pytest plugin's example candidates: shortest_paths_many builds one
    # heap graph for all of them and must find, for each, the chain the
    # one-target search finds; None for one that nothing but the tuple holds.
    from memwatch import _graph
    from memwatch.retainer_paths import _build_path
    Session = _class("Session")
    app_module.CACHE = [Session() for _ in range(3)]
    app_module.NESTED = {"a": {"b": [Session()]}}
    app_module.HOLDER = app_module.CACHE[1]
    app_module.KLASS = _class("Made")
    garbage_free = Session()            # held by this frame only
    targets = (app_module.CACHE[2], app_module.NESTED["a"]["b"][0], app_module.CACHE[1],
               app_module.KLASS, app_module.NESTED["a"], Session())
    mine = [list(targets)]
    chains, roots = _graph.shortest_paths_many(targets, (mine,))
    assert len(chains) == len(targets)
    texts = [str(_build_path(c, roots)) if c is not None else None for c in chains]
    assert texts[:5] == [
        "app.handlers -> dict 'CACHE' -> list[2] -> app.Session",
        "app.handlers -> dict 'NESTED' -> dict 'a' -> dict 'b' -> list[0] -> app.Session",
        "app.handlers -> dict 'HOLDER' -> app.Session",
        "app.handlers -> dict 'KLASS' -> type",
        "app.handlers -> dict 'NESTED' -> dict 'a' -> dict",
    ]
    assert texts[5] is None             # the tuple is no path, nor the ignored list
    for target, chain in zip(targets[:5], chains):
        one, one_roots = _graph.shortest_paths(target, False, 1, (mine, targets))
        assert chain[-1] is target and [id(o) for o in one[0]] == [id(o) for o in chain]
    del chains, one, chain
    assert _graph.shortest_paths_many((), ()) == ([], {})
    assert garbage_free


# -- largest_holder: the container piling up objects that hold nothing ---------------

def test_largest_holder_names_the_container_and_its_count(app_module):
    from memwatch.retainer_paths import largest_holder
    app_module.SMALL = [b"a%d" % i for i in range(10)]
    app_module.KEPT = {"log": [b"x%d" % i * 50 for i in range(3000)]}
    path, count = largest_holder(bytes)
    assert str(path) == "app.handlers -> dict 'KEPT' -> dict 'log' -> list"
    assert count == 3000
    # retainers() on the type finds the instance nearest a root instead
    assert "'KEPT'" not in str(memwatch.retainers(bytes, limit=1)[0])


def test_largest_holder_skips_ignored_containers(app_module):
    from memwatch.retainer_paths import largest_holder
    mine = ["m%d" % i * 20 for i in range(50_000)]
    app_module.KEPT = ["k%d" % i * 20 for i in range(20_000)]
    path, count = largest_holder(str, ignore=(mine,))
    assert str(path) == "app.handlers -> dict 'KEPT' -> list" and count == 20_000
    del mine


def test_largest_holder_held_by_another_threads_local():
    # A running frame's locals are no edges of the graph (3.11+: no objects
    # at all): the list is held from outside the graph, and that is the answer.
    import threading
    from memwatch.retainer_paths import largest_holder
    ready, done, out = threading.Event(), threading.Event(), []

    def worker():
        kept = [("%x" % i) * 30 for i in range(40_000)]
        ready.set()
        done.wait(30)
        out.append(len(kept))

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(30)
        path, count = largest_holder(str)
    finally:
        done.set()
        t.join()
    assert count == 40_000 and path is not None
    assert str(path) == "list (external)" and out == [40_000]


def test_largest_holder_needs_a_type():
    from memwatch.retainer_paths import largest_holder
    with pytest.raises(TypeError, match="needs a type"):
        largest_holder(b"bytes")
    assert largest_holder(type("NeverInstantiated", (), {})) == (None, 0)


def test_largest_holder_on_a_million_long_linked_list(app_module):
    from memwatch.retainer_paths import largest_holder
    head = None
    for _ in range(1_000_000):
        head = [head, b"payload"]
    app_module.CHAIN = head
    app_module.TAIL = [b"t%d" % i for i in range(5000)]
    del head
    path, count = largest_holder(bytes)
    assert str(path) == "app.handlers -> dict 'TAIL' -> list" and count == 5000


def test_largest_holder_allocation_failures_raise_memoryerror_and_restore(app_module):
    from memwatch import _graph
    from memwatch.retainer_paths import largest_holder
    app_module.KEPT = [b"x%d" % i for i in range(5000)]
    sample = app_module.KEPT
    before = sys.getrefcount(sample)
    for n, enabled in allocation_failures(_graph._fail_allocation_after):
        try:
            path, count = largest_holder(bytes)
        except MemoryError:
            pass
        else:
            _graph._fail_allocation_after(-1)
            assert count == 5000 and str(path).endswith("'KEPT' -> list")
            del path
        assert gc.isenabled() == enabled
    assert sys.getrefcount(sample) == before      # every pin released


def test_largest_holder_does_not_count_interned_strings(app_module):
    # Names are no pile: a table of 50k interned names (3.14's own is a dict
    # of 84k held from outside the graph) never outranks 20k new strings.
    from memwatch.retainer_paths import largest_holder
    app_module.NAMES = {sys.intern("name_%d" % i): None for i in range(50_000)}
    app_module.KEPT = ["k%d" % i * 20 for i in range(20_000)]
    path, count = largest_holder(str)
    assert str(path) == "app.handlers -> dict 'KEPT' -> list" and count == 20_000
