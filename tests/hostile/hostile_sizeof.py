"""Held before issue 10, kept from coming back: __sizeof__ methods that raise,
lie, mutate the heap or re-enter memwatch."""
import gc
import os
import sys
import tempfile

import memwatch
from memwatch.snapshot import load_snapshot


class Raises:
    def __sizeof__(self):
        raise RuntimeError("no size")


class NotInt:
    def __sizeof__(self):
        return "big"


class Negative:
    def __sizeof__(self):
        return -10


class FloatSize:
    def __sizeof__(self):
        return 12.5


class Exits:
    def __sizeof__(self):
        raise SystemExit(3)       # BaseException, not Exception


class Mutates:
    pool = []

    def __sizeof__(self):
        Mutates.pool.extend(object() for _ in range(100))   # the heap grows mid-walk
        Mutates.pool.clear() if len(Mutates.pool) > 10_000 else None
        return 48


class Reenters:
    depth = 0

    def __sizeof__(self):
        if Reenters.depth == 0:
            Reenters.depth += 1
            try:
                memwatch.census()                  # a walk inside a walk
            finally:
                Reenters.depth -= 1
        return 40


class Collects:
    def __sizeof__(self):
        gc.collect()
        return 32


COUNTS = {Raises: 20, NotInt: 20, Negative: 20, FloatSize: 20, Mutates: 20,
          Reenters: 3, Collects: 3}     # the last two are slow: a walk / a collection each
keep = [cls() for cls, n in COUNTS.items() for _ in range(n)]
for _ in range(2):
    c = memwatch.census()
    assert c.sizeof_errors >= 80, c.sizeof_errors   # Raises, NotInt, Negative, FloatSize
    for cls, n in COUNTS.items():
        assert c.count("__main__." + cls.__name__) == n, (cls, c.count("__main__." + cls.__name__))
    with memwatch.HeapDiff() as hd:
        more = [Raises() for _ in range(5)]
    assert {d["what"]: d["+"] for d in hd.result["change"]["details"]}["__main__.Raises"] == 5
    path = os.path.join(tempfile.mkdtemp(), "s.heapsnapshot")
    memwatch.write_snapshot(path)
    assert load_snapshot(path).type_counts()["__main__.Raises"][0] >= 20
    assert memwatch.retainers(Raises, limit=3)
    assert gc.isenabled()
    del more
# A BaseException from __sizeof__ propagates (as sys.getsizeof does), cleanly.
exits = Exits()
try:
    memwatch.census()
except SystemExit:
    pass
assert gc.isenabled()
del exits
assert memwatch.census().count("__main__.Raises") == 20
print("ok")
