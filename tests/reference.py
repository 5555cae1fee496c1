"""The independent oracle: a pure-Python heap census.

gc.get_objects() plus the closure over gc.get_referents(), each object sized
with sys.getsizeof().  The C census must agree with it exactly on every object
it reaches; the C census may reach more (dict keys, code object contents)."""
import gc
import sys


def reference_walk(extra_roots=()):
    """Return ``{id(obj): (type_name, size, obj)}`` for every reachable object.

    The objects are kept alive by the returned dict, so ids stay valid while
    the caller compares.  The GC is disabled during the walk."""
    from memwatch.typestats import type_name

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        roots = gc.get_objects()
        roots.extend(extra_roots)
        seen = {}
        own = {id(roots), id(seen)}
        stack = list(roots)
        own.add(id(stack))
        while stack:
            obj = stack.pop()
            key = id(obj)
            if key in seen or key in own:
                continue
            try:
                size = sys.getsizeof(obj)
            except Exception:
                size = type(obj).__basicsize__
            seen[key] = (type_name(type(obj)), size, obj)
            stack.extend(gc.get_referents(obj))
        return seen
    finally:
        if was_enabled:
            gc.enable()
