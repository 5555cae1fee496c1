"""Point 2: a suspended greenlet says it is no GC object (tp_is_gc) yet is in
gc.get_objects(): it was counted from the list and again by reference."""
import gc
import os
import sys
import tempfile

try:
    import greenlet
except ImportError:
    print("SKIP: greenlet is not installed")
    sys.exit(0)

import memwatch
from memwatch import _core
from memwatch.snapshot import load_snapshot

from reference import reference_walk


def body():
    greenlet.getcurrent().parent.switch()


gs = [greenlet.greenlet(body) for _ in range(1000)]
for g in gs:
    g.switch()                          # each suspended inside body()
name = memwatch.type_name(greenlet.greenlet)
live = sum(1 for o in gc.get_objects() if type(o) is greenlet.greenlet)
gc.collect()
gc.disable()
raw = _core.walk(keep_objects=True)
ids = [id(o) for o in raw.objects]
assert len(ids) == len(set(ids)), "an object counted twice"
counted = sum(1 for o in raw.objects if type(o) is greenlet.greenlet)
ref = reference_walk()
ref_count = sum(1 for v in ref.values() if v[0] == name)
del raw, ref
gc.enable()
assert counted == ref_count, (counted, ref_count)
assert memwatch.census().count(name) == counted
path = os.path.join(tempfile.mkdtemp(), "g.heapsnapshot")
memwatch.write_snapshot(path)
assert load_snapshot(path).type_counts()[name][0] == counted
# Greenlets that finish free nothing that was not there.
with memwatch.HeapDiff() as hd:
    for g in gs:
        g.switch()                      # run to the end: still referenced by gs
rows = {d["what"]: d for d in hd.result["change"]["details"]}
assert name not in rows or rows[name]["-"] == 0, rows[name]
print("ok")
