"""Point 5: a class whose __module__/__qualname__ is a str subclass that runs
(raising) code on ==, +, hash: naming must run none of it."""
import os
import tempfile

import memwatch
from memwatch.snapshot import load_snapshot


class Evil(str):
    calls = 0

    def __eq__(self, other):
        Evil.calls += 1
        raise RuntimeError("__eq__ ran")

    def __ne__(self, other):
        Evil.calls += 1
        raise RuntimeError("__ne__ ran")

    def __hash__(self):
        Evil.calls += 1
        raise RuntimeError("__hash__ ran")

    def __add__(self, other):
        Evil.calls += 1
        raise RuntimeError("__add__ ran")

    def __radd__(self, other):
        Evil.calls += 1
        raise RuntimeError("__radd__ ran")

    def __str__(self):
        Evil.calls += 1
        raise RuntimeError("__str__ ran")


class Victim:
    pass


Victim.__module__ = Evil("evil.mod")
Victim.__qualname__ = Evil("Vic.tim")
keep = [Victim() for _ in range(7)]
holder = {"victims": keep}

assert memwatch.type_name(Victim) == "evil.mod.Vic.tim"
assert memwatch.census().count("evil.mod.Vic.tim") == 7
with memwatch.HeapDiff() as hd:
    more = [Victim() for _ in range(4)]
rows = {d["what"]: d for d in hd.result["change"]["details"]}
assert rows["evil.mod.Vic.tim"]["+"] == 4, rows.get("evil.mod.Vic.tim")
path = os.path.join(tempfile.mkdtemp(), "evil.heapsnapshot")
memwatch.write_snapshot(path)
assert load_snapshot(path).type_counts()["evil.mod.Vic.tim"][0] == 11
paths = memwatch.retainers(Victim, limit=3)
assert paths and all("evil.mod.Vic.tim" in str(p) for p in paths), paths
assert Evil.calls == 0, Evil.calls
print("ok")
