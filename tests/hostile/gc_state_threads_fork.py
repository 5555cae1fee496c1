"""Point 3: a Python __sizeof__ lets another thread run during a walk.  Its
gc.disable() must not be undone, and a child it forks must have the GC on."""
import gc
import os
import sys
import tempfile
import threading
import warnings

import memwatch

warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork with threads
reached = threading.Event()
resume = threading.Event()


class Slow:
    def __sizeof__(self):
        reached.set()
        resume.wait(10)
        return 64


keep = Slow()


def run(walk, action):
    reached.clear()
    resume.clear()
    gc.enable()
    out = {}

    def other():
        if reached.wait(10):
            out["r"] = action()
        resume.set()

    t = threading.Thread(target=other)
    t.start()
    walk()
    t.join()
    return out.get("r")


def fork_child_gc():
    pid = os.fork()
    if pid == 0:
        os._exit(0 if gc.isenabled() else 7)
    return os.waitpid(pid, 0)[1] == 0


snap = os.path.join(tempfile.mkdtemp(), "s.heapsnapshot")
walks = {
    "census": memwatch.census,
    "heapdiff": lambda: memwatch.HeapDiff().end(),
    "snapshot": lambda: memwatch.write_snapshot(snap),
}
for name, walk in walks.items():
    run(walk, gc.disable)
    assert not gc.isenabled(), f"{name} re-enabled a GC another thread disabled"
    gc.enable()
    if hasattr(os, "fork"):
        assert run(walk, fork_child_gc), f"{name}: child forked mid-walk has the GC off"
    assert gc.isenabled(), name
# The GC state found is the one restored, both ways.
gc.disable()
memwatch.census()
assert not gc.isenabled()
gc.enable()
memwatch.census()
assert gc.isenabled()
print("ok")
