"""Held before issue 10, kept from coming back: corrupted .heapsnapshot
files give a SnapshotError (one line), never another exception or a crash."""
import json
import os
import random
import tempfile

import memwatch
from memwatch.snapshot import SnapshotError, load_snapshot

rng = random.Random(10)
directory = tempfile.mkdtemp()
good = os.path.join(directory, "good.heapsnapshot")
keep = [{"i": i} for i in range(200)]
memwatch.write_snapshot(good)
raw = open(good, "rb").read()
data = json.loads(raw)
load_snapshot(good).census()

variants = []
for _ in range(40):                                   # byte-level damage
    b = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    variants.append(bytes(b))
for _ in range(15):                                   # truncation
    variants.append(raw[:rng.randrange(len(raw))])
for key in ("nodes", "edges", "strings"):             # structural damage
    for bad in ([], [-1], ["x"], [2 ** 70], None, {}, [1.5]):
        d = json.loads(raw)
        d[key] = bad
        variants.append(json.dumps(d).encode())
for field in ("node_fields", "edge_fields", "node_types", "edge_types"):
    for bad in ([], None, [[]], "x"):
        d = json.loads(raw)
        d["snapshot"]["meta"][field] = bad
        variants.append(json.dumps(d).encode())
variants += [b"", b"[]", b"{}", b"null", b"[" * 100_000, b'{"snapshot":' * 50_000]

path = os.path.join(directory, "bad.heapsnapshot")
loaded = rejected = 0
for v in variants:
    with open(path, "wb") as f:
        f.write(v)
    try:
        snap = load_snapshot(path)
    except SnapshotError as e:
        assert "\n" not in str(e), str(e)
        rejected += 1
        continue
    loaded += 1
    try:
        snap.census()
        for name in list(snap.type_counts())[:3]:
            snap.retainer_paths(name, limit=2)
    except SnapshotError:
        pass
assert rejected > 0
print(f"loaded={loaded} rejected={rejected}", "ok")
