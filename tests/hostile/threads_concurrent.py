"""Held before issue 10, kept from coming back: heap calls from many threads
at once while others allocate and free."""
import os
import tempfile
import threading

import memwatch

errors = []
stop = threading.Event()
directory = tempfile.mkdtemp()


def churn():
    pool = []
    while not stop.is_set():
        pool.append({"x": [object() for _ in range(50)]})
        if len(pool) > 200:
            del pool[:100]


def heavy(k):
    try:
        for i in range(3):
            memwatch.census()
            with memwatch.HeapDiff():
                [object() for _ in range(100)]
            memwatch.write_snapshot(os.path.join(directory, f"{k}-{i}.heapsnapshot"))
            memwatch.retainers(dict, limit=2)
    except BaseException as e:      # noqa: BLE001 - collected and reported below
        errors.append(repr(e))


churners = [threading.Thread(target=churn) for _ in range(2)]
workers = [threading.Thread(target=heavy, args=(k,)) for k in range(3)]
for t in churners + workers:
    t.start()
for t in workers:
    t.join(300)
stop.set()
for t in churners:
    t.join(60)
assert not errors, errors
import gc
assert gc.isenabled()
print("ok")
