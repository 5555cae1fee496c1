"""Point 7: arrays are no GC containers: the big base of a small view, and
what an object array holds, were invisible to census, HeapDiff, snapshots
and retainers.  Also memoryview owners and pandas blocks."""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIP: numpy is not installed")
    sys.exit(0)

import memwatch
from memwatch import _core
from memwatch.snapshot import load_snapshot

BASE_BYTES = 8 * 10 ** 6

view = np.ones(10 ** 6)[::10]                 # the 8 MB base is kept only by the view
objs = np.empty((2, 3), dtype=object)
objs[1, 2] = "x" * 10 ** 6                     # a 1 MB str held only by the array
objs[0, 1] = objs[:, 1:]                       # a view of itself: a cycle through base

raw = _core.walk(keep_objects=True)
ids = [id(o) for o in raw.objects]
assert len(ids) == len(set(ids)), "an object counted twice"
ids = set(ids)
assert id(view.base) in ids and id(objs[1, 2]) in ids
del raw, ids
c = memwatch.census()
assert c.size("numpy.ndarray") >= BASE_BYTES, c.size("numpy.ndarray")
assert c.size("str") >= 10 ** 6

with memwatch.HeapDiff() as hd:
    view2 = np.zeros(10 ** 6)[::100]
rows = {d["what"]: d for d in hd.result["change"]["details"]}
assert rows["numpy.ndarray"]["+"] == 2 and rows["numpy.ndarray"]["size_bytes"] >= BASE_BYTES, rows
with memwatch.HeapDiff() as hd:
    del view2
rows = {d["what"]: d for d in hd.result["change"]["details"]}
assert rows["numpy.ndarray"]["-"] == 2 and rows["numpy.ndarray"]["size_bytes"] <= -BASE_BYTES, rows

path = os.path.join(tempfile.mkdtemp(), "np.heapsnapshot")
memwatch.write_snapshot(path)
snap = load_snapshot(path)
count, size = snap.type_counts()["numpy.ndarray"]
assert size >= BASE_BYTES, (count, size)

paths = memwatch.retainers(view.base, limit=3)
assert any("numpy.ndarray.base" in str(p) for p in paths), paths
# instances=False: a str argument is otherwise a type name ("Session")
paths = memwatch.retainers(objs[1, 2], limit=3, instances=False)
assert any("numpy.ndarray[5]" in str(p) for p in paths), paths

# memoryview owners: the exporter of a slice is reached through the view.
mv = memoryview(bytearray(10 ** 6))[::10]
assert memwatch.census().size("bytearray") >= 10 ** 6
frombuf = np.frombuffer(b"y" * 10 ** 6, dtype=np.uint8)[::1000]
assert memwatch.census().size("bytes") >= 10 ** 6

# Without numpy loaded, memwatch does not import it.
code = "import sys, memwatch; memwatch.census(); memwatch.retainers(dict, limit=1); print('numpy' in sys.modules)"
out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
assert out.stdout.strip() == "False", (out.stdout, out.stderr)

try:
    import pandas as pd
except ImportError:
    pd = None
if pd is not None:
    with memwatch.HeapDiff() as hd:
        df = pd.DataFrame(np.ones((500, 400)))          # one 1.6 MB float block
    rows = {d["what"]: d for d in hd.result["change"]["details"]}
    assert rows["numpy.ndarray"]["size_bytes"] >= 1_600_000, rows.get("numpy.ndarray")
print("ok")
