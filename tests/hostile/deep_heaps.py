"""Held before issue 10, kept from coming back: a million-long linked list
and deep nesting (no walk may recurse in proportion to heap depth)."""
import os
import sys
import tempfile

import memwatch
from memwatch.snapshot import load_snapshot

N = 100_000


class Tail:
    pass


head = [Tail(), -1]                         # reachable only through the whole chain
for i in range(N):
    head = [head, i]                        # a linked list N deep
nested = {}
d = nested
for i in range(20_000):
    d["k"] = {}
    d = d["k"]
tup = ()
for i in range(20_000):
    tup = (tup,)
c = memwatch.census()
assert c.count("list") >= N and c.count("tuple") >= 20_000 and c.count("dict") >= 20_000
path = os.path.join(tempfile.mkdtemp(), "deep.heapsnapshot")
info = memwatch.write_snapshot(path)
assert info["nodes"] >= N
snap = load_snapshot(path)
assert snap.type_counts()["list"][0] >= N
paths = memwatch.retainers(Tail, limit=1)
assert paths and len(paths[0]) >= N, len(paths[0]) if paths else None
with memwatch.HeapDiff() as hd:
    head = None
rows = {r["what"]: r for r in hd.result["change"]["details"]}
assert rows["list"]["-"] >= N, rows["list"]
print("ok")
